//! A strict JSON validator-and-skimmer for sync API batch bodies: what `binsync receive
//! --discard` (the benchmark receiver) parses every body with.
//!
//! [`skim`] reads every byte of a batch body and accepts it exactly when
//! `serde_json::from_slice::<serde_json::Value>` would (RFC 8259 as serde_json applies it) *and*
//! the top level is an object whose `"version"` and `"count"` are unsigned integers (fit `u64`;
//! no sign, fraction or exponent) and whose `"batch_id"` is a string. It keeps only those three.
//!
//! What is validated, everywhere in the document:
//! - grammar: objects, arrays, `true`/`false`/`null`, strings, numbers; no trailing commas;
//!   whitespace is space, tab, CR and LF only; nothing but whitespace after the value;
//! - strings: no raw control characters (< 0x20); escapes are `\" \\ \/ \b \f \n \r \t \uXXXX`;
//!   a `\u` high surrogate must be followed by a `\u` low surrogate and a low surrogate may not
//!   stand alone (serde_json's rules when it decodes into `String`); the raw bytes are valid
//!   UTF-8 (no overlongs, no UTF-8-encoded surrogates, nothing above U+10FFFF, no truncation);
//! - numbers: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, and, like serde_json
//!   (built with `float_roundtrip`, as here), a number whose correctly rounded f64 value is
//!   infinite is rejected (`1e400`);
//! - nesting: at most [`MAX_DEPTH`] (127) arrays/objects open at once, the top-level object
//!   included — serde_json's recursion limit. The parser is iterative (a bit stack), so the
//!   limit is only there to match serde_json, not to protect the call stack.
//!
//! Duplicate keys: allowed anywhere; for the envelope keys the *last* occurrence wins (and is the
//! one whose type is checked), as with `serde_json::Value`. (A `#[derive(Deserialize)]` struct
//! would instead reject a duplicated envelope key.)
//!
//! Versus the receiver's current `serde_json::from_slice::<Skim>` (derived struct with
//! `entities: IgnoredAny`), which is laxer inside values it ignores and stricter on the shape:
//! `IgnoredAny` does not decode strings, so it accepts lone `\uD800`/`\uDC00` escapes and
//! invalid UTF-8 inside ignored values, and it accepts out-of-range numbers such as `1e400`
//! (all rejected here, as by `Value`); the derived struct also requires `"entities"` (not
//! required here) and rejects a duplicated envelope key (last wins here).
//!
//! How it is fast (about 1.8x `serde_json` with `IgnoredAny` on a compact batch; see
//! `examples/bench.rs`), in safe Rust without SIMD intrinsics:
//! - strings are the bulk of a batch, so their end is found from a bitmap: 64 bytes at a time,
//!   eight 8-byte words are classified with SWAR bit tricks (`"`, `\`, control, non-ASCII) and
//!   folded into one `u64` (an 8x8 bit transpose), 4 KiB ahead of the parser in a tight loop.
//!   The parser then finds a string's end with a shift and a trailing-zero count, which keeps
//!   the chain of dependent instructions from one token to the next short;
//! - the compact forms between tokens (`"key":`, `,"`, `,` in arrays) are checked together
//!   first, whitespace only when they do not match; short numbers are judged from one word;
//! - one forward pass, no recursion (a bit stack), no allocation on the success path (except a
//!   `batch_id` holding escapes), UTF-8 validated with `std::str::from_utf8` only on the
//!   non-ASCII runs of strings (all ASCII elsewhere: any other byte is a syntax error).

use std::borrow::Cow;

/// The most arrays/objects that may be open at once, the top-level object included.
/// serde_json's recursion limit: it fails on the 128th nested container.
pub const MAX_DEPTH: u32 = 127;

/// What the discard receiver needs from a batch envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub version: u64,
    pub batch_id: Cow<'a, str>,
    pub count: u64,
}

/// Validates `text` as one strict JSON object carrying the envelope keys (see the crate docs) and
/// returns them; the error is a short message with the byte offset where parsing stopped.
pub fn skim(text: &[u8]) -> Result<Envelope<'_>, String> {
    envelope(text).map_err(|e| format!("{} at byte {}", e.msg, e.at))
}

/// Cheap internal error: no allocation until `skim` renders it.
#[derive(Debug)]
struct Error {
    at: usize,
    msg: &'static str,
}

type Res<T> = Result<T, Error>;

#[cold]
fn fail<T>(buf: &[u8], at: usize, msg: &'static str) -> Res<T> {
    // Every "unexpected byte" at the end of the input is really a truncation.
    let msg = if at >= buf.len() {
        "unexpected end of input"
    } else {
        msg
    };
    Err(Error { at, msg })
}

/// Which envelope key a top-level member is.
#[derive(Clone, Copy)]
enum Key {
    Version,
    BatchId,
    Count,
    Other,
}

/// The last value seen for an envelope key: `None` = absent, else its offset and `None` when it
/// has the wrong type.
type Slot<T> = Option<(usize, Option<T>)>;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The 8 bytes at `pos` as a little-endian word (byte `pos` lowest), if there are 8.
#[inline(always)]
fn word(buf: &[u8], pos: usize) -> Option<u64> {
    let chunk = buf.get(pos..pos + 8)?;
    Some(u64::from_le_bytes(chunk.try_into().unwrap()))
}

/// High bit set in each byte of `w` that a string scan must stop at: `"`, `\`, a control byte
/// (< 0x20) or a non-ASCII byte (>= 0x80). Classic has-zero-byte tricks, minus their usual
/// `& !x` terms (those only drop bytes >= 0x80, which `| w` flags anyway). There are no misses,
/// but a borrow out of a real hit can also flag the byte just above it when that byte is one more
/// than a hit (`"#`, `\]`, a control byte then a space); the scan looks at every flagged byte
/// and steps over such false alarms.
#[inline(always)]
fn string_stops(w: u64) -> u64 {
    let quote = (w ^ (ONES * b'"' as u64)).wrapping_sub(ONES);
    let backslash = (w ^ (ONES * b'\\' as u64)).wrapping_sub(ONES);
    let control = w.wrapping_sub(ONES * 0x20);
    (quote | backslash | control | w) & HIGHS
}

/// String-stop bitmaps of the input (see `chunk_stops`), computed `AHEAD` 64-byte blocks at a
/// time, ahead of the parser. Finding where a string ends is then a shift and a trailing-zero
/// count on a register instead of a load-classify-count on every 8 bytes: that shortens the
/// chain of dependent instructions from one token's end to the next token's start, which is
/// what bounds a parser on short tokens; and classifying in batches keeps that work out of the
/// chain.
struct Stops<'a> {
    buf: &'a [u8],
    /// Where the block that `bits` describes starts (a multiple of 64).
    start: usize,
    /// Bit i set: byte `start + i` stops a string scan (see `string_stops`), or is past the end
    /// of the input.
    bits: u64,
    /// The bitmaps of the `AHEAD` blocks from `map_start` on, computed together in one tight
    /// loop (better throughput than one at a time, and well before the parser needs them).
    map: [u64; AHEAD],
    map_start: usize,
}

/// Blocks classified per batch (4 KiB of input).
const AHEAD: usize = 64;

impl<'a> Stops<'a> {
    fn new(buf: &'a [u8]) -> Self {
        let mut st = Stops {
            buf,
            start: 0,
            bits: 0,
            map: [0; AHEAD],
            map_start: 0,
        };
        st.fill(0);
        st.bits = st.map[0];
        st
    }

    /// Classifies the `AHEAD` blocks from `from` on.
    fn fill(&mut self, from: usize) {
        self.map_start = from;
        let buf = self.buf;
        match buf.get(from..from + 64 * AHEAD) {
            Some(chunk) => {
                for (bits, block) in self.map.iter_mut().zip(chunk.chunks_exact(64)) {
                    *bits = chunk_stops(block.try_into().unwrap());
                }
            }
            None => {
                // The end of the input: a partial block padded, then blocks with nothing left.
                for (i, bits) in self.map.iter_mut().enumerate() {
                    let start = from + 64 * i;
                    *bits = if start < buf.len() {
                        block_stops(buf, start)
                    } else {
                        u64::MAX
                    };
                }
            }
        }
    }

    /// The first string-stop position at or after `pos` (at most `buf.len()`). Positions only
    /// ever grow, so the current block is never behind `pos`.
    #[inline(always)]
    fn next(&mut self, pos: usize) -> usize {
        debug_assert!(pos >= self.start, "string scans must move forward");
        let rel = pos - self.start;
        let bits = if rel < 64 { self.bits >> rel } else { 0 };
        if bits != 0 {
            return pos + bits.trailing_zeros() as usize;
        }
        self.next_in_later_blocks(pos)
    }

    #[inline(never)]
    fn next_in_later_blocks(&mut self, mut pos: usize) -> usize {
        loop {
            if self.start + 64 <= pos {
                self.start = pos & !63;
                let i = (self.start - self.map_start) / 64;
                if i >= AHEAD {
                    self.fill(self.start);
                    self.bits = self.map[0];
                } else {
                    self.bits = self.map[i];
                }
            }
            let bits = self.bits >> (pos - self.start);
            if bits != 0 {
                return pos + bits.trailing_zeros() as usize;
            }
            pos = self.start + 64; // nothing left in this block
        }
    }
}

/// The string-stop bitmap of the block at `start`; bytes past the end of `buf` count as stops.
#[inline(always)]
fn block_stops(buf: &[u8], start: usize) -> u64 {
    match buf.get(start..start + 64) {
        Some(chunk) => chunk_stops(chunk.try_into().unwrap()),
        None => tail_stops(buf, start),
    }
}

/// The last, partial block (and any past the end): padded with zeros, which read as control
/// bytes and so as stops.
#[cold]
#[inline(never)]
fn tail_stops(buf: &[u8], start: usize) -> u64 {
    let mut padded = [0u8; 64];
    let tail = buf.get(start..).unwrap_or(&[]);
    padded[..tail.len()].copy_from_slice(tail);
    chunk_stops(&padded)
}

/// The string-stop bitmap of 64 bytes: bit i set when byte i stops a string scan.
#[inline(always)]
fn chunk_stops(chunk: &[u8; 64]) -> u64 {
    // Word j's flag for its byte i (bit 8i+7 of its mask) goes to bit 8i+j: byte i of `x` then
    // holds the flags of byte i of all eight words, an 8x8 bit matrix to transpose into "bit
    // 8j+i" (Hacker's Delight, transpose8). Cheaper than gathering each word on its own.
    let mut x = 0;
    for (j, w) in chunk.chunks_exact(8).enumerate() {
        x |= string_stops(u64::from_le_bytes(w.try_into().unwrap())) >> (7 - j);
    }
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x ^= t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x ^= t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^ t ^ (t << 28)
}

/// High bit set in each byte of `w` that is not an ASCII digit. Exact for the lowest flagged
/// byte (only that one is used): ASCII digits below it neither carry nor borrow.
#[inline(always)]
fn non_digits(w: u64) -> u64 {
    (w.wrapping_add(ONES * 0x46) | w.wrapping_sub(ONES * 0x30) | w) & HIGHS
}

#[inline(always)]
fn is_digit(c: u8) -> bool {
    c.wrapping_sub(b'0') < 10
}

/// The byte at `pos`, or 0 at the end of the input. 0 is never valid where we peek outside
/// strings, so callers need no separate end check; `fail` turns it into "unexpected end".
#[inline(always)]
fn at(buf: &[u8], pos: usize) -> u8 {
    buf.get(pos).copied().unwrap_or(0)
}

/// Skips whitespace from `pos`; returns the next byte (0 at the end) and its position. Compact
/// JSON has almost no whitespace, so the common case is a single compare.
#[inline(always)]
fn token(buf: &[u8], pos: usize) -> (u8, usize) {
    let c = at(buf, pos);
    if c > b' ' {
        (c, pos)
    } else {
        skip_ws(buf, pos)
    }
}

#[inline(never)]
fn skip_ws(buf: &[u8], mut pos: usize) -> (u8, usize) {
    const SPACES: u64 = u64::from_ne_bytes([b' '; 8]);
    loop {
        match at(buf, pos) {
            b' ' | b'\t' | b'\n' | b'\r' => {
                pos += 1;
                // The indentation of pretty-printed JSON: count a run of spaces 8 at a time
                // (the lowest non-zero byte of `w ^ SPACES` is the first non-space).
                while let Some(w) = word(buf, pos) {
                    let spaces = ((w ^ SPACES).trailing_zeros() / 8) as usize;
                    pos += spaces;
                    if spaces < 8 {
                        break;
                    }
                }
            }
            c => return (c, pos),
        }
    }
}

fn envelope(buf: &[u8]) -> Res<Envelope<'_>> {
    let st = &mut Stops::new(buf);
    let (c, mut pos) = token(buf, 0);
    if c != b'{' {
        return fail(buf, pos, "expected '{' (a batch is a JSON object)");
    }
    pos += 1;
    let mut version: Slot<u64> = None;
    let mut count: Slot<u64> = None;
    // The raw body of the last "batch_id" if it is a string.
    let mut batch_id: Slot<&[u8]> = None;

    // Where the object closes: a missing key is reported there.
    let close;
    let (c, p) = token(buf, pos);
    pos = p;
    if c == b'}' {
        close = pos;
        pos += 1;
    } else {
        loop {
            let (c, p) = token(buf, pos);
            if c != b'"' {
                return fail(buf, p, "expected a string key");
            }
            pos = string(buf, st, p + 1)?;
            let raw = &buf[p + 1..pos - 1];
            let key = if raw.contains(&b'\\') {
                key_of(unescape(raw).as_bytes())
            } else {
                key_of(raw)
            };
            let (c, p) = token(buf, pos);
            if c != b':' {
                return fail(buf, p, "expected ':'");
            }
            let (first, start) = token(buf, p + 1);
            pos = value(buf, st, start, 1)?;
            let raw = &buf[start..pos];
            match key {
                Key::Version => version = Some((start, parse_u64(raw))),
                Key::Count => count = Some((start, parse_u64(raw))),
                Key::BatchId => {
                    batch_id = Some((start, (first == b'"').then(|| &raw[1..raw.len() - 1])))
                }
                Key::Other => {}
            }
            let (c, p) = token(buf, pos);
            pos = p + 1;
            match c {
                b',' => {}
                b'}' => {
                    close = p;
                    break;
                }
                _ => return fail(buf, p, "expected ',' or '}'"),
            }
        }
    }
    let (_, p) = token(buf, pos);
    if p < buf.len() {
        return fail(buf, p, "trailing characters after the batch object");
    }

    let missing = |msg| Err(Error { at: close, msg });
    let mistyped = |at, msg| Err(Error { at, msg });
    let version = match version {
        None => return missing("missing \"version\""),
        Some((at, None)) => return mistyped(at, "\"version\" is not an unsigned integer"),
        Some((_, Some(v))) => v,
    };
    let count = match count {
        None => return missing("missing \"count\""),
        Some((at, None)) => return mistyped(at, "\"count\" is not an unsigned integer"),
        Some((_, Some(v))) => v,
    };
    let batch_id = match batch_id {
        None => return missing("missing \"batch_id\""),
        Some((at, None)) => return mistyped(at, "\"batch_id\" is not a string"),
        Some((_, Some(raw))) if raw.contains(&b'\\') => Cow::Owned(unescape(raw)),
        // Already validated as UTF-8 by the string scan; re-checking a short id is cheap and
        // keeps this crate free of `unsafe`.
        Some((at, Some(raw))) => match std::str::from_utf8(raw) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => return mistyped(at, "invalid UTF-8 in \"batch_id\""),
        },
    };
    Ok(Envelope {
        version,
        batch_id,
        count,
    })
}

/// Parses the value starting at `pos` (a non-whitespace byte) with `depth` containers already
/// open around it; returns the position after it. Containers are handled with a loop and a bit
/// stack (1 = object, 0 = array) rather than recursion, and `pos` lives in a local so that it
/// stays in a register. Compact JSON takes fast paths that check the bytes it has between
/// tokens (`":`, `,"`) together; anything else (whitespace, errors) takes the general path.
#[inline(always)]
fn value(buf: &[u8], st: &mut Stops, mut pos: usize, depth: u32) -> Res<usize> {
    let base = depth;
    let mut depth = depth;
    let mut stack: u128 = 0;
    let mut c = at(buf, pos);
    'value: loop {
        if c == b'"' {
            pos = string(buf, st, pos + 1)?;
        } else if is_digit(c) || c == b'-' {
            pos = number(buf, pos, c)?;
        } else if c == b'{' || c == b'[' {
            if depth >= MAX_DEPTH {
                return fail(buf, pos, "nesting deeper than 127 levels");
            }
            let is_object = c == b'{';
            let (next, p) = token(buf, pos + 1);
            pos = p;
            if next != c + 2 {
                depth += 1;
                stack = (stack << 1) | is_object as u128;
                (c, pos) = if is_object {
                    member(buf, st, pos)?
                } else {
                    (next, pos)
                };
                continue 'value;
            }
            pos += 1; // `{}` or `[]`: a complete value ('}' and ']' are '{' and '[' + 2)
        } else {
            pos = match c {
                b't' => literal(buf, pos, b"true")?,
                b'f' => literal(buf, pos, b"false")?,
                b'n' => literal(buf, pos, b"null")?,
                _ => return fail(buf, pos, "expected a value"),
            };
        }
        // A value is complete: close containers until one wants another element.
        loop {
            if depth == base {
                return Ok(pos);
            }
            let in_object = stack & 1 == 1;
            if let Some(&[b',', next]) = buf.get(pos..pos + 2) {
                // Compact: `,"` in an object, `,` and the next value in an array.
                if in_object && next == b'"' {
                    (c, pos) = member(buf, st, pos + 1)?;
                    continue 'value;
                } else if !in_object && next > b' ' {
                    (c, pos) = (next, pos + 1);
                    continue 'value;
                }
            }
            let (next, p) = token(buf, pos);
            pos = p + 1;
            if next == b',' {
                (c, pos) = if in_object {
                    member(buf, st, pos)?
                } else {
                    token(buf, pos)
                };
                continue 'value;
            }
            if next != if in_object { b'}' } else { b']' } {
                let msg = if in_object {
                    "expected ',' or '}'"
                } else {
                    "expected ',' or ']'"
                };
                return fail(buf, p, msg);
            }
            depth -= 1;
            stack >>= 1;
        }
    }
}

/// `"key" :` of an object member from `pos` (whitespace allowed around); returns the first
/// byte of the member's value and its position.
#[inline(always)]
fn member(buf: &[u8], st: &mut Stops, pos: usize) -> Res<(u8, usize)> {
    if at(buf, pos) != b'"' {
        return member_general(buf, st, pos);
    }
    let stop = st.next(pos + 1);
    // Compact: `"key":` and the value right after, checked in one go.
    if let Some(&[b'"', b':', c]) = buf.get(stop..stop + 3) {
        if c > b' ' {
            return Ok((c, stop + 2));
        }
    }
    let end = string_from_stop(buf, st, stop)?;
    colon(buf, end)
}

#[inline(never)]
fn member_general(buf: &[u8], st: &mut Stops, pos: usize) -> Res<(u8, usize)> {
    let (c, p) = token(buf, pos);
    if c != b'"' {
        return fail(buf, p, "expected a string key");
    }
    let end = string(buf, st, p + 1)?;
    colon(buf, end)
}

/// `:` after a key at `pos` (whitespace allowed around); returns the next token.
#[inline(never)]
fn colon(buf: &[u8], pos: usize) -> Res<(u8, usize)> {
    let (c, p) = token(buf, pos);
    if c != b':' {
        return fail(buf, p, "expected ':'");
    }
    Ok(token(buf, p + 1))
}

#[inline(always)]
fn literal(buf: &[u8], pos: usize, word: &'static [u8]) -> Res<usize> {
    if buf.get(pos..pos + word.len()) == Some(word) {
        Ok(pos + word.len())
    } else {
        fail(buf, pos, "invalid literal (expected true, false or null)")
    }
}

/// Scans a string body from `pos` (just past the opening quote); returns the position just past
/// the closing quote.
#[inline(always)]
fn string(buf: &[u8], st: &mut Stops, pos: usize) -> Res<usize> {
    let stop = st.next(pos);
    if at(buf, stop) == b'"' {
        return Ok(stop + 1);
    }
    string_from_stop(buf, st, stop)
}

/// Goes on with a string scan from a stop byte that may not be the closing quote: escapes,
/// non-ASCII runs, errors. Returns the position just past the closing quote.
#[inline(never)]
fn string_from_stop(buf: &[u8], st: &mut Stops, mut stop: usize) -> Res<usize> {
    loop {
        let pos = match buf.get(stop) {
            Some(b'"') => return Ok(stop + 1),
            Some(b'\\') => escape(buf, stop + 1)?,
            Some(0x80..) => utf8_run(buf, stop)?,
            Some(0..=0x1f) => return fail(buf, stop, "control character in string"),
            // A false alarm of the borrow trick in `string_stops` (e.g. the `]` of `\\]`).
            Some(_) => stop + 1,
            None => {
                return Err(Error {
                    at: stop,
                    msg: "unterminated string",
                });
            }
        };
        stop = st.next(pos);
    }
}

/// Checks the escape whose letter is at `pos` (just past the `\`); returns the position after it.
#[cold]
fn escape(buf: &[u8], pos: usize) -> Res<usize> {
    match at(buf, pos) {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(pos + 1),
        b'u' => {
            let n = hex4(buf, pos + 1)?;
            let after = pos + 5;
            match n {
                0xDC00..=0xDFFF => fail(buf, pos - 1, "lone low surrogate in \\u escape"),
                0xD800..=0xDBFF => {
                    // serde_json (decoding into String) needs the low half right after.
                    if at(buf, after) != b'\\' || at(buf, after + 1) != b'u' {
                        return fail(buf, after, "high surrogate not followed by a \\u escape");
                    }
                    match hex4(buf, after + 2)? {
                        0xDC00..=0xDFFF => Ok(after + 6),
                        _ => fail(buf, after, "high surrogate not followed by a low surrogate"),
                    }
                }
                _ => Ok(after),
            }
        }
        _ => fail(buf, pos, "invalid escape"),
    }
}

/// The end of the run of ASCII digits starting at `pos`.
#[inline(always)]
fn digits(buf: &[u8], mut pos: usize) -> usize {
    while let Some(w) = word(buf, pos) {
        let stops = non_digits(w);
        if stops != 0 {
            return pos + (stops.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    while is_digit(at(buf, pos)) {
        pos += 1;
    }
    pos
}

/// Validates the number at `start` (grammar, and serde_json's f64 range check); returns its end.
#[inline(always)]
fn number(buf: &[u8], start: usize, first: u8) -> Res<usize> {
    // Fast path: a non-negative number without exponent that ends inside the 8-byte word
    // starting at it (the bulk of the numbers in a batch: ids, sequence numbers, flags,
    // prices), judged from that word alone.
    if let Some(w) = word(buf, start) {
        let stops = non_digits(w);
        if stops != 0 {
            let int = (stops.trailing_zeros() / 8) as usize;
            let next = (w >> (8 * int)) as u8;
            // int == 0 is a `-`; a leading `0` must stand alone.
            if int > 0 && (first != b'0' || int == 1) {
                if next != b'.' && next | 0x20 != b'e' {
                    return Ok(start + int);
                }
                if next == b'.' && int < 6 {
                    // The bytes shifted in are zero, a non-digit: the count stops in the word.
                    let frac = (non_digits(w >> (8 * (int + 1))).trailing_zeros() / 8) as usize;
                    let end = int + 1 + frac;
                    if frac > 0 && end < 8 && (w >> (8 * end)) as u8 | 0x20 != b'e' {
                        return Ok(start + end);
                    }
                }
            }
        }
    }
    number_general(buf, start, first)
}

#[inline(never)]
fn number_general(buf: &[u8], start: usize, first: u8) -> Res<usize> {
    let int_start = start + (first == b'-') as usize;
    let mut pos = digits(buf, int_start);
    let int_digits = pos - int_start;
    if int_digits == 0 {
        return fail(buf, pos, "invalid number");
    }
    if at(buf, int_start) == b'0' && int_digits > 1 {
        return fail(buf, int_start + 1, "invalid number (leading zero)");
    }
    // Only long or exponent-bearing numbers can overflow f64 (see `f64_is_finite`).
    let mut may_overflow = int_digits > 300;
    let mut c = at(buf, pos);
    if c == b'.' {
        let frac_end = digits(buf, pos + 1);
        if frac_end == pos + 1 {
            return fail(buf, frac_end, "invalid number (no digit after '.')");
        }
        pos = frac_end;
        c = at(buf, pos);
    }
    if c | 0x20 == b'e' {
        pos += 1;
        if matches!(at(buf, pos), b'+' | b'-') {
            pos += 1;
        }
        let exp_end = digits(buf, pos);
        if exp_end == pos {
            return fail(buf, pos, "invalid number (no digit in exponent)");
        }
        // Below 10^200 * 10^99 the value is far from f64::MAX.
        may_overflow |= exp_end - pos > 2 || int_digits > 200;
        pos = exp_end;
    }
    if may_overflow && !f64_is_finite(&buf[start..pos]) {
        return fail(buf, start, "number out of range");
    }
    Ok(pos)
}

/// Validates the run of non-ASCII bytes starting at `start`; returns where it ends. A valid
/// multi-byte character never contains an ASCII byte, so checking each maximal non-ASCII run on
/// its own is the same as checking the whole string.
#[cold]
fn utf8_run(buf: &[u8], start: usize) -> Res<usize> {
    let end = buf[start..]
        .iter()
        .position(|&b| b < 0x80)
        .map_or(buf.len(), |n| start + n);
    match std::str::from_utf8(&buf[start..end]) {
        Ok(_) => Ok(end),
        Err(e) => fail(buf, start + e.valid_up_to(), "invalid UTF-8 in string"),
    }
}

/// The value of four hex digits at `pos`.
fn hex4(buf: &[u8], pos: usize) -> Res<u32> {
    let mut n = 0;
    for i in pos..pos + 4 {
        let d = match buf.get(i) {
            Some(&c @ b'0'..=b'9') => c - b'0',
            Some(&c @ b'a'..=b'f') => c - b'a' + 10,
            Some(&c @ b'A'..=b'F') => c - b'A' + 10,
            _ => return fail(buf, i, "invalid \\u escape (expected 4 hex digits)"),
        };
        n = n * 16 + d as u32;
    }
    Ok(n)
}

fn key_of(key: &[u8]) -> Key {
    match key {
        b"version" => Key::Version,
        b"batch_id" => Key::BatchId,
        b"count" => Key::Count,
        _ => Key::Other,
    }
}

/// An unsigned integer token (digits only, fits u64), as serde's `u64` and `Value::as_u64` take.
fn parse_u64(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || !raw.iter().all(|&c| is_digit(c)) {
        return None; // not a number, or signed/fraction/exponent (`-0` and `1.0` included)
    }
    raw.iter().try_fold(0u64, |n, &c| {
        n.checked_mul(10)?.checked_add((c - b'0') as u64)
    })
}

/// Decodes an already validated string body (without quotes).
fn unescape(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.iter().position(|&c| c == b'\\') {
        out.push_str(std::str::from_utf8(&rest[..i]).expect("validated UTF-8"));
        let ch = match rest[i + 1] {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(rest, i + 2).expect("validated escape");
                let cp = if (0xD800..0xDC00).contains(&hi) {
                    let lo = hex4(rest, i + 8).expect("validated escape");
                    rest = &rest[6..]; // the second \uXXXX
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                rest = &rest[4..]; // the 4 hex digits
                char::from_u32(cp).expect("validated code point")
            }
            c => c as char, // '"', '\\', '/'
        };
        out.push(ch);
        rest = &rest[i + 2..];
    }
    out.push_str(std::str::from_utf8(rest).expect("validated UTF-8"));
    out
}

/// Whether a number (already checked against the grammar) is a finite f64, as serde_json
/// (built with `float_roundtrip`, correctly rounded) requires: `1e400` is refused.
fn f64_is_finite(num: &[u8]) -> bool {
    std::str::from_utf8(num)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_json's verdict: `from_slice::<Value>` accepts it and the envelope keys are there with
    /// the right types (the last duplicate wins, as in `serde_json::Map`).
    fn serde_envelope(text: &[u8]) -> Option<(u64, String, u64)> {
        let serde_json::Value::Object(map) = serde_json::from_slice(text).ok()? else {
            return None;
        };
        Some((
            map.get("version")?.as_u64()?,
            map.get("batch_id")?.as_str()?.to_owned(),
            map.get("count")?.as_u64()?,
        ))
    }

    /// Asserts that skim and serde_json agree on `text`, and returns skim's verdict.
    fn agree(text: &[u8]) -> Result<Envelope<'_>, String> {
        let ours = skim(text);
        let theirs = serde_envelope(text);
        match (&ours, &theirs) {
            (Ok(e), Some((v, b, c))) => {
                assert_eq!(
                    (e.version, &*e.batch_id, e.count),
                    (*v, b.as_str(), *c),
                    "{}",
                    show(text)
                )
            }
            (Err(_), None) => {}
            _ => panic!("skim {ours:?} but serde {theirs:?} for {}", show(text)),
        }
        ours
    }

    fn show(text: &[u8]) -> String {
        let s = String::from_utf8_lossy(text);
        if s.len() > 300 {
            format!(
                "{}… ({} bytes)",
                &s[..s.floor_char_boundary(300)],
                text.len()
            )
        } else {
            format!("{s:?}")
        }
    }

    /// The value embedded in an otherwise valid envelope.
    fn wrap(value: &[u8]) -> Vec<u8> {
        let mut v = br#"{"version":1,"batch_id":"b-1","count":2,"x":"#.to_vec();
        v.extend_from_slice(value);
        v.push(b'}');
        v
    }

    #[track_caller]
    fn valid(value: &[u8]) {
        let text = wrap(value);
        if let Err(e) = agree(&text) {
            panic!("rejected {}: {e}", show(value));
        }
    }

    #[track_caller]
    fn invalid(value: &[u8]) {
        let text = wrap(value);
        if let Ok(e) = agree(&text) {
            panic!("accepted {}: {e:?}", show(value));
        }
    }

    #[test]
    fn envelope_fields() {
        let text = br#"{"version":1,"batch_id":"mariadb-1-1-1000","source":{"flavor":"mariadb","server_id":1,"server_uuid":null},"first_seq":1,"last_seq":1000,"count":1000,"entities":{"products":[]}}"#;
        let e = agree(text).unwrap();
        assert_eq!(
            e,
            Envelope {
                version: 1,
                batch_id: Cow::Borrowed("mariadb-1-1-1000"),
                count: 1000
            }
        );
        assert!(matches!(e.batch_id, Cow::Borrowed(_)));
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let text = b" \r\n\t{ \"count\" : 7 ,\n\"batch_id\"\t:\"b\" , \"version\" : 18446744073709551615 } \n";
        let e = agree(text).unwrap();
        assert_eq!((e.version, &*e.batch_id, e.count), (u64::MAX, "b", 7));
    }

    #[test]
    fn escaped_batch_id_is_decoded() {
        let text =
            br#"{"version":1,"batch_id":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00\u0000","count":1}"#;
        let e = agree(text).unwrap();
        assert_eq!(e.batch_id, "a\"b\\c/d\u{8}\u{c}\n\r\té😀\0");
        assert!(matches!(e.batch_id, Cow::Owned(_)));
        let text = "{\"version\":1,\"batch_id\":\"é😀\",\"count\":1}".as_bytes();
        assert_eq!(agree(text).unwrap().batch_id, "é😀");
    }

    #[test]
    fn escaped_keys_are_decoded() {
        let text = br#"{"vers\u0069on":1,"batch\u005fid":"b","\u0063ount":2}"#;
        let e = agree(text).unwrap();
        assert_eq!((e.version, &*e.batch_id, e.count), (1, "b", 2));
    }

    #[test]
    fn missing_or_mistyped_envelope_keys() {
        for text in [
            &br#"{"batch_id":"b","count":1}"#[..],
            br#"{"version":1,"count":1}"#,
            br#"{"version":1,"batch_id":"b"}"#,
            br#"{}"#,
            br#"{"Version":1,"batch_id":"b","count":1}"#,
            br#"{"version ":1,"batch_id":"b","count":1}"#,
            br#"{"version":"1","batch_id":"b","count":1}"#,
            br#"{"version":1.0,"batch_id":"b","count":1}"#,
            br#"{"version":1e0,"batch_id":"b","count":1}"#,
            br#"{"version":-1,"batch_id":"b","count":1}"#,
            br#"{"version":-0,"batch_id":"b","count":1}"#,
            br#"{"version":null,"batch_id":"b","count":1}"#,
            br#"{"version":[1],"batch_id":"b","count":1}"#,
            br#"{"version":18446744073709551616,"batch_id":"b","count":1}"#,
            br#"{"version":1,"batch_id":1,"count":1}"#,
            br#"{"version":1,"batch_id":null,"count":1}"#,
            br#"{"version":1,"batch_id":["b"],"count":1}"#,
            br#"{"version":1,"batch_id":{"b":1},"count":1}"#,
            br#"{"version":1,"batch_id":"b","count":true}"#,
            br#"{"version":1,"batch_id":"b","count":0.5}"#,
            br#"{"version":1,"batch_id":"b","count":99999999999999999999}"#,
            br#"{"version":1,"batch_id":"b","nested":{"count":1}}"#,
        ] {
            assert!(agree(text).is_err(), "{}", show(text));
        }
    }

    #[test]
    fn error_messages_carry_offsets() {
        assert_eq!(skim(b"").unwrap_err(), "unexpected end of input at byte 0");
        assert_eq!(
            skim(b"  ").unwrap_err(),
            "unexpected end of input at byte 2"
        );
        assert_eq!(
            skim(b"[]").unwrap_err(),
            "expected '{' (a batch is a JSON object) at byte 0"
        );
        assert_eq!(
            skim(br#"{"version":1,}"#).unwrap_err(),
            "expected a string key at byte 13"
        );
        assert_eq!(
            skim(br#"{"version":01}"#).unwrap_err(),
            "invalid number (leading zero) at byte 12"
        );
        assert_eq!(
            skim(br#"{"a":"b"} x"#).unwrap_err(),
            "trailing characters after the batch object at byte 10"
        );
        assert_eq!(
            skim(br#"{"a":"b"#).unwrap_err(),
            "unterminated string at byte 7"
        );
        assert_eq!(
            skim(br#"{"batch_id":"b","count":1}"#).unwrap_err(),
            "missing \"version\" at byte 25"
        );
        assert_eq!(
            skim(br#"{"version":"1","batch_id":"b","count":1}"#).unwrap_err(),
            "\"version\" is not an unsigned integer at byte 11"
        );
        assert_eq!(
            skim(b"{\"a\":\"\x01\"}").unwrap_err(),
            "control character in string at byte 6"
        );
        assert_eq!(
            skim(b"{\"a\":\"\xc3\x28\"}").unwrap_err(),
            "invalid UTF-8 in string at byte 6"
        );
    }

    #[test]
    fn duplicate_keys_last_wins() {
        // Like serde_json::Value (a derived struct would reject these).
        let e = agree(
            br#"{"version":"x","batch_id":1,"count":[],"version":2,"batch_id":"b","count":3}"#,
        )
        .unwrap();
        assert_eq!((e.version, &*e.batch_id, e.count), (2, "b", 3));
        assert!(agree(br#"{"version":1,"batch_id":"b","count":3,"version":"x"}"#).is_err());
        assert!(agree(br#"{"version":1,"batch_id":"b","count":3,"batch_id":null}"#).is_err());
        let e = agree(br#"{"version":1,"batch_id":"a","count":3,"batch_id":"z\n"}"#).unwrap();
        assert_eq!(e.batch_id, "z\n");
        valid(br#"{"a":1,"a":[2],"a":{"a":"a"}}"#);
    }

    #[test]
    fn top_level_shape() {
        for text in [
            &b""[..],
            b" \n\t\r",
            b"null",
            b"1",
            b"\"version\"",
            b"[]",
            br#"[{"version":1,"batch_id":"b","count":1}]"#,
            b"{",
            br#"{"version":1,"batch_id":"b","count":1"#,
            br#"{"version":1,"batch_id":"b","count":1}}"#,
            br#"{"version":1,"batch_id":"b","count":1}{}"#,
            br#"{"version":1,"batch_id":"b","count":1} x"#,
            br#"{"version":1,"batch_id":"b","count":1},"#,
            b"{\"version\":1,\"batch_id\":\"b\",\"count\":1}\0",
            b"{\"version\":1,\"batch_id\":\"b\",\"count\":1}\x0c",
            b"\xef\xbb\xbf{\"version\":1,\"batch_id\":\"b\",\"count\":1}",
            b"\x0c{\"version\":1,\"batch_id\":\"b\",\"count\":1}",
        ] {
            assert!(agree(text).is_err(), "{}", show(text));
        }
        assert!(agree(b"{\"version\":1,\"batch_id\":\"b\",\"count\":1} \t\r\n ").is_ok());
    }

    #[test]
    fn literals() {
        for v in ["null", "true", "false", " true ", "[true,false,null]"] {
            valid(v.as_bytes());
        }
        for v in [
            "nul",
            "nulll",
            "tru",
            "True",
            "NULL",
            "fals",
            "falsey",
            "t",
            "n",
            "nan",
            "NaN",
            "Infinity",
            "-Infinity",
            "undefined",
            "[true false]",
            "truefalse",
        ] {
            invalid(v.as_bytes());
        }
    }

    #[test]
    fn numbers() {
        for v in [
            "0",
            "-0",
            "1",
            "-1",
            "9",
            "10",
            "1234567890",
            "-1234567890",
            "0.0",
            "-0.0",
            "0.5",
            "1.5",
            "123.456",
            "1e5",
            "1E5",
            "1e+5",
            "1e-5",
            "1E+2",
            "1E-2",
            "0e0",
            "-0e-0",
            "0.1e1",
            "1.0E+10",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "1e308",
            "1.7976931348623157e308",
            "-1.7976931348623157e308",
            "1e-400",
            "-1e-400",
            "0e400",
            "0e99999999999",
            "0.0e99999999999",
            "1e-99999999999",
            "4.9e-324",
            "1e0000000000000000000000000000001",
            "[1,-2,3.5,4e1]",
        ] {
            valid(v.as_bytes());
        }
        for v in [
            "01",
            "00",
            "-01",
            "001.5",
            "-",
            "--1",
            "+1",
            "- 1",
            "1.",
            "-1.",
            "1.e5",
            ".5",
            "-.5",
            "1e",
            "1E",
            "1e+",
            "1e-",
            "1e+-1",
            "1ee5",
            "1.5.5",
            "0x10",
            "1_000",
            "1,",
            "0.",
            "1.5e",
            "٣",
            "1e400",
            "-1e400",
            "1e309",
            "1e99999999999",
            "-1e99999999999",
            "1e2147483648",
            "[1 2]",
        ] {
            invalid(v.as_bytes());
        }
        // Long mantissas: agree with serde_json on where infinity starts.
        let big = |digits: usize, tail: &str| format!("1{}{tail}", "0".repeat(digits));
        for (digits, tail) in [
            (307, ""),
            (308, ""),
            (309, ""),
            (400, ""),
            (400, "e-400"),
            (400, "e-91"),
            (400, "e-92"),
            (400, ".5"),
            (250, "e58"),
            (250, "e59"),
            (20, ".123e288"),
            (20, ".123e289"),
            (0, ".0000000000000000000000000000001e330"),
            (300, "e8"),
            (300, "e9"),
            (290, "e18"),
            (290, "e19"),
            (201, "e1"),
            (199, "e109"),
            (199, "e110"),
        ] {
            let n = big(digits, tail);
            let ours = skim(&wrap(n.as_bytes())).is_ok();
            let serde = serde_envelope(&wrap(n.as_bytes())).is_some();
            assert_eq!(ours, serde, "1+{digits} zeros then {tail:?}");
        }
        assert!(skim(&wrap(big(307, "").as_bytes())).is_ok());
        assert!(skim(&wrap(big(309, "").as_bytes())).is_err());
    }

    #[test]
    fn number_ends_on_every_word_offset() {
        for len in 1..40 {
            let digits: String = (0..len).map(|i| char::from(b'1' + (i % 9) as u8)).collect();
            for v in [
                digits.clone(),
                format!("-{digits}"),
                format!("{digits}.{digits}"),
                format!("{digits}e{len}"),
                format!("[{digits},{digits}]"),
                format!("0.{digits}"),
            ] {
                valid(v.as_bytes());
            }
            for v in [
                format!("0{digits}"),
                format!("{digits}."),
                format!("{digits}e"),
                format!("{digits}x"),
            ] {
                invalid(v.as_bytes());
            }
        }
    }

    #[test]
    fn strings_and_escapes() {
        for v in [
            r#""""#,
            r#""a""#,
            r#""\"""#,
            r#""\\""#,
            r#""\/""#,
            r#""\b\f\n\r\t""#,
            r#""\u0000""#,
            r#""\u001f""#,
            r#""\u00e9\u00E9""#,
            r#""\uffff""#,
            r#""\uFFFE""#,
            r#""\ud800\udc00""#,
            r#""\uD83D\uDE00""#,
            r#""\udbff\udfff""#,
            r#""a\u0041b""#,
            r#""\\u12""#,
            "\"\x7f\"",
            "\"'\"",
            "\" \"",
            "\"/*\"",
        ] {
            valid(v.as_bytes());
        }
        for v in [
            r#"""#,
            r#""a"#,
            r#""\""#,
            r#""\a""#,
            r#""\x41""#,
            r#""\'""#,
            r#""\U0041""#,
            r#""\u""#,
            r#""\u1""#,
            r#""\u12""#,
            r#""\u123""#,
            r#""\u123g""#,
            r#""\uGGGG""#,
            r#""\u 123""#,
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\udfff""#,
            r#""\ud800\u0041""#,
            r#""\ud800\ud800""#,
            r#""\ud800\ud800\udc00""#,
            r#""\ud800x""#,
            r#""\ud800\n""#,
            r#""\ud800\""#,
            r#""\udc00\ud800""#,
            r#""\ud800\u""#,
            r#""\ud800\udc0""#,
            r#""\ud800\\udc00""#,
            "'a'",
            "\"a\"\"b\"",
        ] {
            invalid(v.as_bytes());
        }
        for c in (0u8..0x20).chain([0x7f]) {
            let v = [b'"', b'a', c, b'b', b'"'];
            if c == 0x7f {
                valid(&v)
            } else {
                invalid(&v)
            }
        }
    }

    #[test]
    fn utf8() {
        for v in [
            "\"é\"",
            "\"€\"",
            "\"😀\"",
            "\"\u{10FFFF}\"",
            "\"\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}\"",
            "\"aé€😀é€😀aaaaaaaaaaaaaaaaaaaaaaaaaaaé\"",
            "\"\u{FEFF}\"",
            "\"\u{D7FF}\u{E000}\"",
        ] {
            valid(v.as_bytes());
        }
        for v in [
            &b"\"\x80\""[..], // lone continuation byte
            b"\"\xbf\"",
            b"\"\xc0\x80\"",     // overlong NUL
            b"\"\xc1\xbf\"",     // overlong
            b"\"\xe0\x80\x80\"", // overlong 3-byte
            b"\"\xe0\x9f\xbf\"",
            b"\"\xf0\x80\x80\x80\"", // overlong 4-byte
            b"\"\xf0\x8f\xbf\xbf\"",
            b"\"\xed\xa0\x80\"",             // U+D800 encoded in UTF-8
            b"\"\xed\xbf\xbf\"",             // U+DFFF
            b"\"\xed\xa0\xbd\xed\xb8\x80\"", // CESU-8 pair
            b"\"\xf4\x90\x80\x80\"",         // U+110000
            b"\"\xf5\x80\x80\x80\"",
            b"\"\xf8\x88\x80\x80\x80\"",
            b"\"\xfe\"",
            b"\"\xff\"",
            b"\"\xc3\"",         // truncated 2-byte
            b"\"\xe2\x82\"",     // truncated 3-byte
            b"\"\xf0\x9f\x98\"", // truncated 4-byte
            b"\"\xc3a\"",
            b"\"\xe2\x82a\"",
            b"\"\xc3\xa9\xa9\"", // extra continuation
            b"\"\xc3",           // truncated at end of input
            b"\xc3\xa9",         // non-ASCII outside a string
            b"[\xc2\xa0]",       // NBSP is not whitespace
        ] {
            invalid(v);
        }
    }

    #[test]
    fn special_byte_on_every_word_offset() {
        // Strings of every length around the 8-byte scan, with each kind of byte that stops it at
        // each position; also run off the end of the input at each length.
        let specials: [&[u8]; 9] = [
            b"\\n",
            b"\\u00e9",
            b"\xc3\xa9",
            b"\xf0\x9f\x98\x80",
            b"\x01",
            b"\\",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\x7f",
        ];
        for len in 0..24 {
            for at in 0..=len {
                for sp in specials {
                    let mut v = vec![b'"'];
                    v.extend(std::iter::repeat_n(b'a', at));
                    v.extend_from_slice(sp);
                    v.extend(std::iter::repeat_n(b'b', len - at));
                    v.push(b'"');
                    agree(&wrap(&v)).ok();
                    v.pop();
                    agree(&wrap(&v)).ok();
                    // Unterminated at the very end of the input.
                    let mut t = br#"{"version":1,"batch_id":"b","count":2,"x":"#.to_vec();
                    t.extend_from_slice(&v);
                    assert!(agree(&t).is_err());
                }
            }
        }
        // Every truncation of a valid document is invalid.
        let full =
            wrap("[\"aé😀\\u00e9\\ud83d\\ude00\",-1.5e+3,{\"k\":[true,false,null]}]".as_bytes());
        assert!(agree(&full).is_ok());
        for n in 0..full.len() {
            assert!(agree(&full[..n]).is_err(), "{}", show(&full[..n]));
        }
    }

    #[test]
    fn arrays_and_objects() {
        for v in [
            "[]",
            "{}",
            "[ ]",
            "{ }",
            "[[]]",
            "[{}]",
            "{\"a\":{}}",
            "[1]",
            "[1,2,3]",
            "[[1],[2,[3]]]",
            "{\"a\":1,\"b\":[1,{\"c\":null}]}",
            "{\"\":0}",
            " [ 1 , [ ] , { } ] ",
            "[\"a\",\"b\"]",
            "{\"a\" : 1 , \"b\" :\n2}",
        ] {
            valid(v.as_bytes());
        }
        for v in [
            "[",
            "]",
            "{",
            "}",
            "[1,]",
            "[,1]",
            "[,]",
            "[1,,2]",
            "[1 2]",
            "{\"a\":1,}",
            "{,}",
            "{,\"a\":1}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\" 1}",
            "{\"a\"::1}",
            "{a:1}",
            "{'a':1}",
            "{1:1}",
            "{null:1}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":1;\"b\":2}",
            "[1}",
            "{\"a\":1]",
            "[}",
            "{]",
            "[[]",
            "[]]",
            "{\"a\":1}}",
            "[\"a\":1]",
            "{\"a\",1}",
        ] {
            invalid(v.as_bytes());
        }
    }

    #[test]
    fn whitespace() {
        valid(
            b" \t\r\n[ \t\r\n1 \t\r\n, \t\r\n{ \t\r\n\"a\" \t\r\n: \t\r\n2 \t\r\n} \t\r\n] \t\r\n",
        );
        for n in 0..40 {
            let pad = " ".repeat(n);
            valid(format!("[{pad}1,\n{pad}\t{pad}2{pad}]").as_bytes());
            invalid(format!("[{pad}\x0b1]").as_bytes());
            let text = format!("{{\"version\":1,\"batch_id\":\"b\",\"count\":1}}{pad}");
            assert!(agree(text.as_bytes()).is_ok());
            assert!(agree(format!("{text}x").as_bytes()).is_err());
        }
        for ws in [b'\x0b', b'\x0c', b'\x00', 0xa0, 0x85] {
            invalid(&[b'[', ws, b'1', b']']);
            invalid(&[b'[', b'1', ws, b']']);
        }
    }

    #[test]
    fn nesting_limit() {
        // serde_json fails on the 128th open container; the batch object is the first.
        let nest =
            |n: usize, open: &str, close: &str| format!("{}0{}", open.repeat(n), close.repeat(n));
        for (open, close) in [("[", "]"), ("{\"k\":[", "]}"), ("[{\"k\":", "}]")] {
            let per = if open.len() == 1 { 1 } else { 2 };
            for n in [1, 60, 126 / per, 126 / per + 1, 127 / per + 1, 200] {
                let v = nest(n, open, close);
                let ok = n * per <= 126;
                assert_eq!(agree(&wrap(v.as_bytes())).is_ok(), ok, "{n} x {open}");
            }
        }
        // Exactly at the limit with non-empty innermost containers, and siblings after unwinding.
        let deep = |n: usize| {
            format!(
                "[{}1{},{}2{}]",
                "[".repeat(n),
                "]".repeat(n),
                "{\"k\":".repeat(n),
                "}".repeat(n)
            )
        };
        assert!(agree(&wrap(deep(125).as_bytes())).is_ok());
        assert!(agree(&wrap(deep(126).as_bytes())).is_err());
        // Very deep input fails cleanly (no recursion to overflow).
        let v = "[".repeat(1_000_000);
        assert!(skim(&wrap(v.as_bytes())).is_err());
    }

    #[test]
    fn long_and_block_crossing_strings() {
        for len in [
            0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000, 100_000,
        ] {
            let s = "x".repeat(len);
            valid(format!("\"{s}\"").as_bytes());
            valid(format!("\"{s}é{s}\\n{s}\"").as_bytes());
            invalid(format!("\"{s}\x01{s}\"").as_bytes());
            let text = format!(r#"{{"version":1,"batch_id":"{s}","count":1}}"#);
            assert_eq!(agree(text.as_bytes()).unwrap().batch_id.len(), len);
        }
    }

    #[test]
    fn scan_false_alarms_are_stepped_over() {
        // The SWAR test also flags the byte after a hit when it is one more than the hit.
        for v in [
            r##""#""##,
            r##""a#""##,
            r##""\\]""##,
            r##""\\]]]""##,
            r##""\"#""##,
            r##""\\\\]""##,
            r###"["#","##","\\]"]"###,
            r##"{"#":"#"}"##,
            r##""\n ""##,
            r##""\u0041#""##,
        ] {
            valid(v.as_bytes());
        }
        invalid(b"\"\x1f \"");
        invalid(b"\"\x1f!\"");
    }

    #[test]
    fn short_number_fast_path_edges() {
        for v in [
            "0.25",
            "1.5",
            "12.5e1",
            "1.2345678",
            "123456.7",
            "1234567",
            "12345678",
            "0.0",
            "9.99,",
            "[0.25,1.5]",
            "{\"w\":0.25}",
            "7",
            "[7]",
            "-7.5",
            "0.5E3",
        ] {
            let v = v.trim_end_matches(',');
            valid(v.as_bytes());
        }
        for v in [
            "0.", "1.e", "01.5", "00", "1.5e", "1.5.5", "0.5x", "12.", "1.-", "-.5", "0x1",
        ] {
            invalid(v.as_bytes());
        }
    }

    #[test]
    fn tricky_content_at_every_offset_across_batches() {
        // Move escapes, non-ASCII, false alarms and errors across the 64-byte blocks and the 4 KiB
        // classification batches.
        let payloads: [&[u8]; 8] = [
            br#""\"\\\u00e9\ud83d\ude00""#,
            "\"é😀\"".as_bytes(),
            br##""#\\]""##,
            br#"-0.25e-3"#,
            b"\"\x01\"",
            b"\"\xed\xa0\x80\"",
            br#""\ud800""#,
            b"\"\xc3\"",
        ];
        for pad in (0..140).chain(3990..4110) {
            for p in payloads {
                let mut v = format!("[\"{}\",", "p".repeat(pad)).into_bytes();
                v.extend_from_slice(p);
                v.extend_from_slice(b",\"end\"]");
                agree(&wrap(&v)).ok();
            }
        }
    }

    /// A batch shaped like the sync API's (see examples/bench.rs), compact and pretty-printed.
    #[test]
    fn batch_shaped_body() {
        let op = |i: usize| {
            format!(
                r#"{{"seq":{},"op":"update","db":"bench","table":"products","entity":"products","id":{{"id":{i}}},"gtid":"0-1-{i}","ts":"2026-11-24T11:20:43Z","row":0,"file":"mariadb-bin.000001","offset":{},"changed":["price","stock"],"before":{{"id":{i},"name":"Product {i} grinder é","price":"1.01","stock":1,"weight":0.25,"attrs":{{"color": "green", "size": 1}},"active":1,"status":"active"}},"after":null}}"#,
                200_000 + i,
                36_118_116 + i * 1021
            )
        };
        let ops: Vec<String> = (0..300).map(op).collect();
        let body = format!(
            r#"{{"version":1,"batch_id":"mariadb-1-1-300","source":{{"flavor":"mariadb","server_id":1,"server_uuid":null}},"first_seq":1,"last_seq":300,"count":300,"entities":{{"products":[{}]}}}}"#,
            ops.join(",")
        );
        let e = agree(body.as_bytes()).unwrap();
        assert_eq!(
            (e.version, &*e.batch_id, e.count),
            (1, "mariadb-1-1-300", 300)
        );
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        assert_eq!(agree(&pretty).unwrap().count, 300);
        // Break it in a few places.
        for at in [1, 100, body.len() / 2, body.len() - 2] {
            let mut broken = body.clone().into_bytes();
            broken.insert(at, 0x01);
            assert!(agree(&broken).is_err());
        }
    }
}
