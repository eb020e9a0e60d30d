//! JSON text and UTC time, written by hand on the hot path.
//!
//! The decoder writes every change as JSON straight into its output buffer, and the sinks
//! frame batches the same way; these are the pieces they share: JSON string literals (escaped,
//! always valid UTF-8), numbers (`itoa` for integers, `zmij` for the shortest round-trip text
//! of floats), base64 strings, a strict check of JSON text received from the server, and UTC
//! times (`2026-11-24T07:37:31Z`) from Unix time without a calendar crate.
//!
//! Invariants:
//! - Everything appends to the caller's `Vec<u8>` and allocates nothing of its own, except
//!   [`format_utc_micros`] (its `String`) and the serde_json fallback of `is_strict_json`
//!   (JSON text other than the usual shapes).
//! - The output is valid JSON for any input bytes: [`write_json_str`] replaces bytes that are
//!   not UTF-8 with U+FFFD, and `escape_if_utf8` says when the caller must do otherwise.

// ---------------------------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------------------------

/// For each byte: 0 = copy as is, else the character after the backslash (`u` = \u00XX).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `b` (ASCII) must be escaped in a JSON string.
#[inline(always)]
pub(crate) fn needs_escape(b: u8) -> bool {
    ESCAPE[b as usize] != 0
}

/// Appends the escape sequence of a byte for which [`needs_escape`] holds.
#[inline]
pub(crate) fn push_escape(out: &mut Vec<u8>, b: u8) {
    let e = ESCAPE[b as usize];
    if e == b'u' {
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(b >> 4) as usize],
            HEX[(b & 15) as usize],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', e]);
    }
}

/// True when any byte of the word is < 0x20, '"' or '\\' (may also flag bytes above a true
/// hit, never misses one).
#[inline(always)]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let lt20 = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * b'"' as u64);
    let bs = w ^ (ONES * b'\\' as u64);
    let zq = q.wrapping_sub(ONES) & !q;
    let zb = bs.wrapping_sub(ONES) & !bs;
    (lt20 | zq | zb) & HIGH != 0
}

/// Appends valid UTF-8 `s` escaped for a JSON string body (no quotes).
fn escape_utf8(out: &mut Vec<u8>, s: &[u8]) {
    let valid = escape_if_utf8(out, s);
    debug_assert!(valid, "escape_utf8 takes valid UTF-8");
}

/// Appends `s` escaped for a JSON string body and returns true if it is valid UTF-8; returns
/// false otherwise, with `out` partly written (the caller truncates it). One pass: ASCII words
/// with nothing to escape are skipped 8 bytes at a time, and each run of non-ASCII bytes is
/// checked on its own (UTF-8 sequences never contain ASCII bytes, so the text is valid exactly
/// when every such run is).
#[inline]
pub(crate) fn escape_if_utf8(out: &mut Vec<u8>, s: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut start = 0;
    let mut i = 0;
    let n = s.len();
    while i < n {
        if i + 8 <= n {
            let w = u64::from_le_bytes(s[i..i + 8].try_into().unwrap());
            if w & HIGH == 0 && !word_needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let b = s[i];
        if b >= 0x80 {
            let end = s[i..].iter().position(|&c| c < 0x80).map_or(n, |p| i + p);
            if std::str::from_utf8(&s[i..end]).is_err() {
                return false;
            }
            i = end;
        } else {
            if ESCAPE[b as usize] != 0 {
                out.extend_from_slice(&s[start..i]);
                push_escape(out, b);
                start = i + 1;
            }
            i += 1;
        }
    }
    out.extend_from_slice(&s[start..]);
    true
}

/// Writes `s` as a JSON string literal (escaped) to out. Fast path for ASCII.
///
/// Bytes that are not valid UTF-8 are replaced by U+FFFD, so the output is always valid JSON.
#[inline]
pub fn write_json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut rest = s;
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => {
                escape_utf8(out, rest);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                escape_utf8(out, good);
                out.extend_from_slice("\u{FFFD}".as_bytes());
                let skip = e.error_len().unwrap_or(bad.len());
                rest = &bad[skip..];
            }
        }
    }
    out.push(b'"');
}

/// Appends `"<base64>"`.
#[inline]
pub(crate) fn write_base64_str(out: &mut Vec<u8>, bytes: &[u8]) {
    use base64::Engine;
    let n = bytes.len().div_ceil(3) * 4;
    out.push(b'"');
    let at = out.len();
    out.resize(at + n, 0);
    // the slice has exactly the encoded size, so this cannot fail
    let _ = base64::engine::general_purpose::STANDARD.encode_slice(bytes, &mut out[at..]);
    out.push(b'"');
}

// ---------------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------------

#[inline]
pub(crate) fn push_u64(out: &mut Vec<u8>, v: u64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

#[inline]
pub(crate) fn push_i64(out: &mut Vec<u8>, v: i64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

/// Shortest round-trip text of an f64 (`null` for NaN/infinity, which MySQL cannot store).
#[inline]
pub(crate) fn push_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let mut b = zmij::Buffer::new();
        out.extend_from_slice(b.format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

#[inline]
pub(crate) fn push_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        let mut b = zmij::Buffer::new();
        out.extend_from_slice(b.format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

// ---------------------------------------------------------------------------------------------
// Checking JSON text
// ---------------------------------------------------------------------------------------------

/// Whether a text is JSON that strict parsers take as it is: serde_json's
/// `Value` rules (valid UTF-8, no lone surrogate escapes, finite numbers). serde's
/// `IgnoredAny` would let invalid UTF-8 through into the output. The common shapes are settled
/// by [`quick_json`]; anything else (escapes, non-ASCII, exponents, long numbers, deep nesting,
/// invalid text) by serde_json.
#[inline]
pub(crate) fn is_strict_json(s: &[u8]) -> bool {
    quick_json(s).is_some() || serde_json::from_slice::<serde_json::Value>(s).is_ok()
}

/// `Some` when `s` is one JSON value built only of strings of printable ASCII without
/// escapes, numbers of at most 16 characters without an exponent, `true`/`false`/`null`, and
/// at most 32 levels of arrays and objects, with JSON whitespace around tokens; `None` when
/// it is anything else, valid or not (the caller then asks serde_json).
fn quick_json(s: &[u8]) -> Option<()> {
    const MAX_DEPTH: u32 = 32;
    let n = s.len();
    let ws = |mut i: usize| {
        while i < n && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    };
    // A key and its colon at `i`; returns where the value starts.
    let key = |i: usize| -> Option<usize> {
        if *s.get(i)? != b'"' {
            return None;
        }
        let j = ws(quick_str(s, i)?);
        (*s.get(j)? == b':').then_some(j + 1)
    };
    let mut stack = 0u32; // one bit per open container: 1 = object, 0 = array
    let mut depth = 0u32;
    let mut i = 0;
    loop {
        // A value starts at `i` (after whitespace).
        i = ws(i);
        match *s.get(i)? {
            open @ (b'{' | b'[') => {
                if depth == MAX_DEPTH {
                    return None;
                }
                let object = open == b'{';
                stack = stack << 1 | u32::from(object);
                depth += 1;
                i = ws(i + 1);
                if s.get(i) == Some(if object { &b'}' } else { &b']' }) {
                    stack >>= 1;
                    depth -= 1;
                    i += 1;
                } else {
                    if object {
                        i = key(i)?;
                    }
                    continue;
                }
            }
            b'"' => i = quick_str(s, i)?,
            b'-' | b'0'..=b'9' => i = quick_num(s, i)?,
            b't' if s[i..].starts_with(b"true") => i += 4,
            b'f' if s[i..].starts_with(b"false") => i += 5,
            b'n' if s[i..].starts_with(b"null") => i += 4,
            _ => return None,
        }
        // After a value: close containers, or go on to the next element or member.
        loop {
            i = ws(i);
            if depth == 0 {
                return (i == n).then_some(());
            }
            let object = stack & 1 == 1;
            match *s.get(i)? {
                b',' => {
                    i += 1;
                    if object {
                        i = key(ws(i))?;
                    }
                    break;
                }
                b'}' if object => {}
                b']' if !object => {}
                _ => return None,
            }
            stack >>= 1;
            depth -= 1;
            i += 1;
        }
    }
}

/// The end of the string at `i` (its opening quote) if it holds only printable ASCII and no
/// backslash.
fn quick_str(s: &[u8], i: usize) -> Option<usize> {
    let body = s.get(i + 1..)?;
    let end = body
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))?;
    (body[end] == b'"').then_some(i + 1 + end + 1)
}

/// The end of the number at `i` if it is `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, 16 characters at most.
fn quick_num(s: &[u8], i: usize) -> Option<usize> {
    let digits = |mut j: usize| {
        while s.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        j
    };
    let mut j = i + usize::from(s[i] == b'-');
    match *s.get(j)? {
        b'0' => j += 1,
        b'1'..=b'9' => j = digits(j + 1),
        _ => return None,
    }
    if s.get(j) == Some(&b'.') {
        let k = digits(j + 1);
        if k == j + 1 {
            return None;
        }
        j = k;
    }
    if matches!(s.get(j), Some(b'e' | b'E')) || j - i > 16 {
        return None;
    }
    Some(j)
}

/// `s` without the JSON whitespace around it.
#[inline]
pub(crate) fn trim_json_ws(s: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = s.iter().position(|b| !ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

// ---------------------------------------------------------------------------------------------
// UTC time
// ---------------------------------------------------------------------------------------------

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`), for any day count.
#[inline]
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe as i64 + era * 400 + (m <= 2) as i64;
    (y, m, d)
}

/// `2026-11-24T07:37:31Z`, or with `.ffffff` when the time has microseconds.
pub fn format_utc_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, sod % 3600 / 60, sod % 60);
    if frac == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{frac:06}Z")
    }
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before it).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        let mut b = Vec::new();
        push_u64(&mut b, 0);
        b.push(b' ');
        push_u64(&mut b, u64::MAX);
        b.push(b' ');
        push_i64(&mut b, i64::MIN);
        assert_eq!(b, b"0 18446744073709551615 -9223372036854775808");
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc_micros(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_utc_micros(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            format_utc_micros(951_782_400_000_000),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(format_utc_micros(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn civil_days_walk_the_calendar() {
        // Day by day from 1600-01-01 to 2400-12-31, against a plain calendar walk.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_len = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut y, mut m, mut d) = (1600i64, 1u32, 1u32);
        let first = -135_140; // 1600-01-01
        for z in first..first + 801 * 366 {
            assert_eq!(civil_from_days(z), (y, m, d), "day {z}");
            if y == 2400 && m == 12 && d == 31 {
                break;
            }
            d += 1;
            if d > month_len(y, m) {
                (m, d) = (m + 1, 1);
                if m > 12 {
                    (y, m) = (y + 1, 1);
                }
            }
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }

    #[test]
    fn json_strings_escape_like_serde() {
        let mut x: u64 = 42;
        let mut out = Vec::new();
        for len in 0..200usize {
            for _ in 0..5 {
                let s: String = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        match x % 10 {
                            0 => char::from_u32((x >> 8) as u32 % 0x20).unwrap(),
                            1 => '"',
                            2 => '\\',
                            3 => 'é',
                            4 => '😀',
                            _ => char::from(b'a' + (x >> 8) as u8 % 26),
                        }
                    })
                    .collect();
                out.clear();
                write_json_str(&mut out, s.as_bytes());
                let back: String = serde_json::from_slice(&out).unwrap();
                assert_eq!(back, s);
            }
        }
        out.clear();
        write_json_str(&mut out, b"ok\xff\xfe end");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "\"ok\u{FFFD}\u{FFFD} end\""
        );
        out.clear();
        write_json_str(&mut out, b"tab\there\x7f");
        assert_eq!(out, b"\"tab\\there\x7f\"");
    }

    #[test]
    fn one_pass_escaping_checks_utf8_and_round_trips() {
        // Pieces that exercise every branch: plain ASCII runs (word skips), characters to escape,
        // valid 2-4 byte characters, and bytes invalid as UTF-8 or cut sequences.
        let pieces: [&[u8]; 14] = [
            b"abcdefgh",
            b"SKU-0000000001",
            b"\"",
            b"\\",
            b"\n\t\x01\x1f",
            "é".as_bytes(),
            "€".as_bytes(),
            "😀".as_bytes(),
            b"\xff",
            b"\xc3",
            b"\x80",
            b"\xed\xa0\x80",
            b"\xf0\x9f\x98",
            b"x",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let mut s = Vec::new();
            for _ in 0..rng.usize(0..12) {
                s.extend_from_slice(pieces[rng.usize(..pieces.len())]);
            }
            let mut out = vec![b'"'];
            let valid = escape_if_utf8(&mut out, &s);
            assert_eq!(valid, std::str::from_utf8(&s).is_ok(), "input {s:?}");
            if valid {
                out.push(b'"');
                let back: String = serde_json::from_slice(&out)
                    .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
                assert_eq!(back.as_bytes(), &s[..]);
            }
        }
    }

    #[test]
    fn json_text_is_checked_as_strictly_as_serde_json_value() {
        // The usual MariaDB JSON texts take the quick path.
        for t in [
            r#"{"color": "green", "size": 1}"#,
            r#"{"a":[1,-2.5,0,true,false,null,{}],"b":{"c":[]}}"#,
            "  [ ]  ",
            "\"plain\"",
            "-0.125",
        ] {
            assert!(quick_json(t.as_bytes()).is_some(), "{t}");
        }
        // Whatever the text, the answer is serde_json's Value's (the quick path only confirms).
        let pieces: [&[u8]; 30] = [
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"a\"",
            b"\"x y\"",
            b":",
            b",",
            b" ",
            b"\n",
            b"1",
            b"-0",
            b"0.5",
            b"01",
            b"1.",
            b"1e5",
            b"1e400",
            b"12345678901234567890",
            b"true",
            b"nul",
            b"null",
            b"\"\\u00e9\"",
            "\"é\"".as_bytes(),
            b"\xff",
            b"\"\\ud800\"",
            b"\t",
            b"-",
            b"\"\x01\"",
            b"\"\\\"",
            b"x",
        ];
        let mut rng = fastrand::Rng::with_seed(11);
        let mut quick = 0;
        for _ in 0..50_000 {
            let mut s = Vec::new();
            for _ in 0..rng.usize(1..10) {
                s.extend_from_slice(pieces[rng.usize(..pieces.len())]);
            }
            let strict = serde_json::from_slice::<serde_json::Value>(&s).is_ok();
            if quick_json(&s).is_some() {
                quick += 1;
                assert!(
                    strict,
                    "quick path took invalid {:?}",
                    String::from_utf8_lossy(&s)
                );
            }
            assert_eq!(
                is_strict_json(&s),
                strict,
                "{:?}",
                String::from_utf8_lossy(&s)
            );
        }
        assert!(quick > 1_000, "the quick path confirmed only {quick} texts");
        // Deep nesting falls back to serde_json, which stops at 128 levels.
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(is_strict_json(deep(40).as_bytes()));
        assert!(!is_strict_json(deep(200).as_bytes()));
    }
}
