//! Row images to JSON text, written straight into the caller's buffer.
//!
//! [`decode_image`] reads one row image (the null bitmap over the columns present in the
//! image, then their values) and appends `{"col":value,...}` to an output `Vec<u8>`, recording
//! where each column's value text landed (`spans`) so that keys ([`write_key`]) and changed
//! columns ([`write_changed`]) are derived by copying/comparing bytes, not by decoding again.
//!
//! Invariants:
//! - Nothing is allocated per row or per column: values are formatted into `out` directly
//!   (integers with `itoa`, floats with `zmij`, base64 into reserved space); the caller reuses
//!   `out` and `spans`.
//! - Never panics, whatever the bytes: every read is bounds-checked, lengths in the data are
//!   checked against what is left, JSONB offsets are checked and the work per JSONB document
//!   is bounded by its size. Truncated or garbage input gives a [`DecodeError`] naming the
//!   column and table; on error `out` is truncated back to its length at the call.
//! - The output is always valid JSON (UTF-8, escaped), also for invalid input text: text that
//!   is not valid in its charset is written as base64 instead (see the table below).
//! - Equal values give byte-identical text, so comparing spans finds changed columns.
//!
//! # Value encoding
//!
//! | MySQL type | JSON |
//! |---|---|
//! | NULL (any type) | `null` |
//! | TINYINT..BIGINT, signed or UNSIGNED | number, exact (`18446744073709551615`) |
//! | DECIMAL/NUMERIC(p,s) | string, exact, always `s` fraction digits: `"-1234.50"` |
//! | FLOAT | number, shortest text that reads back as the same f32 (`1.1`) |
//! | DOUBLE | number, shortest text that reads back as the same f64 |
//! | YEAR | number (`1901`..`2155`; the zero year is `0`) |
//! | DATE | `"YYYY-MM-DD"`; zero month or day (`0000-00-00`) → `null` |
//! | DATETIME(fsp) | `"YYYY-MM-DDTHH:MM:SS[.f]"`, exactly fsp fraction digits, no zone; zero month or day → `null` |
//! | TIMESTAMP(fsp) | `"YYYY-MM-DDTHH:MM:SS[.f]Z"` (UTC); `0` → `null` |
//! | TIME(fsp) | `"[-]HH:MM:SS[.f]"`, hours at least 2 digits and may exceed 24 (`"-838:59:59"`) |
//! | CHAR/VARCHAR/TEXT, text charset | string (latin1 = cp1252 and utf16/utf32/ucs2 converted to UTF-8; bytes invalid in their charset → base64 string) |
//! | CHAR/VARCHAR/TEXT, charset unknown (no metadata) | string when valid UTF-8, else base64 string |
//! | BINARY/VARBINARY/BLOB (binary charset) | base64 string (standard alphabet, padded) |
//! | ENUM | the label; index 0 → `""`; labels unknown or index past them → the index as a number |
//! | SET | labels joined by `,` (`"a,c"`); labels unknown or bits past them → the bitmask as a number |
//! | BIT(n) | number (big-endian bytes as u64) |
//! | JSON (MySQL binary JSON) | the JSON value itself; opaque DECIMAL → string `"1.50"`, DATE → `"YYYY-MM-DD"`, DATETIME/TIMESTAMP → `"YYYY-MM-DD HH:MM:SS.ffffff"`, TIME → `"HH:MM:SS.ffffff"` (as MySQL prints them), other opaque → `"base64:typeN:<base64>"` (as MySQL prints them) |
//! | JSON in text (MariaDB JSON, [`ExtraSchema::json_columns`](super::schema::ExtraSchema::json_columns)) | the text itself when it parses as JSON, else a string |
//! | GEOMETRY | base64 string of the WKB (the 4-byte SRID prefix is dropped) |
//! | VECTOR | array of f32 numbers |
//!
//! Generated and invisible columns are ordinary columns of the image.
//!
//! Integers are formatted with `itoa`, floats with `zmij` (shortest round-trip text; large and
//! small magnitudes use an exponent such as `1e+300`, which is valid JSON).
//!
//! JSON partial updates (`PARTIAL_UPDATE_ROWS_EVENT`, `binlog_row_value_options=PARTIAL_JSON`):
//! the after image of such an event must be read with [`decode_partial_after_image`] (its
//! layout differs), which rebuilds each partially updated JSON column by applying its diffs to
//! the column's value in the before image decoded just before. When the before image lacks
//! the column (`binlog_row_image=MINIMAL`) the row fails with [`DecodeError::PartialJson`],
//! whose message names `binlog_row_value_options=''` as the fix.
//!
//! Not decoded (a non-NULL value fails the row with [`DecodeError::Unsupported`], NULLs are
//! fine): MariaDB `COMPRESSED` columns (types 140/141), typed arrays (type 20, never in row
//! images in practice), pre-5.0 `DECIMAL` (type 0) and unknown type codes (and, as their
//! metadata length is unknown, the columns after one).

use bitvec::slice::BitSlice;

use super::schema::{ColumnKind, DecodeError, TableSchema, TextKind};
use crate::json::{
    escape_if_utf8, is_strict_json, needs_escape, push_escape, push_f32, push_f64, push_i64,
    push_u64, trim_json_ws, write_base64_str,
};

#[path = "jsonb.rs"]
pub mod jsonb;
#[path = "temporal.rs"]
pub mod temporal;
#[cfg(test)]
#[path = "tests.rs"]
pub(crate) mod tests;

/// Why one value could not be decoded (turned into a [`DecodeError`] with names by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValErr {
    Truncated,
    Invalid(&'static str),
    Unsupported(u8, &'static str),
    /// A JSON partial update that cannot be rebuilt.
    Partial(&'static str),
}

pub(crate) type VResult<T> = Result<T, ValErr>;

#[inline(always)]
pub(crate) fn take(data: &[u8], pos: usize, n: usize) -> VResult<&[u8]> {
    match pos.checked_add(n) {
        Some(end) if end <= data.len() => Ok(&data[pos..end]),
        _ => Err(ValErr::Truncated),
    }
}

#[inline(always)]
fn le_uint(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate() {
        v |= (x as u64) << (8 * i);
    }
    v
}

#[inline(always)]
pub(crate) fn be_uint(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for &x in b {
        v = (v << 8) | x as u64;
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// Decodes one row image starting at `data[0]` (the null bitmap over the *present* columns, then the values).
/// Appends a JSON object `{"col":value,...}` (present columns only, in column order) to `out`.
/// `spans` is cleared and resized to schema.columns.len(); `spans[i] = Some((start,end))` = byte range in `out`
/// of column i's JSON value text (after the key), None when the column is not in the image.
/// Returns the number of bytes of `data` consumed. Never panics on any input: truncated/garbage -> Err.
///
/// `present` is the rows event's column bitmap for this image (`columns_before_image()` or
/// `columns_after_image()`); bits past the table's column count must be zero.
/// Span offsets are absolute positions in `out` (the caller usually clears `out` first).
pub fn decode_image(
    schema: &TableSchema,
    present: &BitSlice<u8>,
    data: &[u8],
    out: &mut Vec<u8>,
    spans: &mut Vec<Option<(u32, u32)>>,
) -> Result<usize, DecodeError> {
    let start_len = out.len();
    let r = decode_inner(schema, present, data, out, spans, None);
    if r.is_err() {
        out.truncate(start_len);
    }
    r
}

/// Partial-update context: the JSON columns logged as diffs and the before image to apply
/// them to.
struct Partial<'a> {
    /// For each column: true when it is a JSON column whose after value is a list of diffs.
    diff_cols: &'a [bool],
    before_buf: &'a [u8],
    before_spans: &'a [Option<(u32, u32)>],
}

/// Decodes the **after image of a `PARTIAL_UPDATE_ROWS_EVENT`** (MySQL 8 with
/// `binlog_row_value_options=PARTIAL_JSON`), with the same output contract as
/// [`decode_image`].
///
/// Such an after image starts with a packed-integer `value_options` field; when its
/// PARTIAL_JSON_UPDATES bit is set, a bitmap follows with one bit per JSON column of the
/// table, and a JSON column whose bit is set carries a list of diffs (replace/insert/remove
/// at a JSON path) instead of a document. The full new document is rebuilt by applying the
/// diffs to the column's text in the before image of the same row, which the caller decoded
/// just before with [`decode_image`] into `before_buf`/`before_spans`. (The before image of
/// a partial update event has the ordinary format.)
///
/// Fails with [`DecodeError::PartialJson`] (naming `binlog_row_value_options=''` as the fix)
/// when a diffed column is missing from the before image (e.g. `binlog_row_image=MINIMAL`)
/// or a diff does not apply.
pub fn decode_partial_after_image(
    schema: &TableSchema,
    present: &BitSlice<u8>,
    data: &[u8],
    before_buf: &[u8],
    before_spans: &[Option<(u32, u32)>],
    out: &mut Vec<u8>,
    spans: &mut Vec<Option<(u32, u32)>>,
) -> Result<usize, DecodeError> {
    let trunc = || DecodeError::Truncated {
        table: schema.qualified_name(),
        column: "(value options of partial update)".into(),
    };
    let mut pos = 0usize;
    let first = *data.first().ok_or_else(trunc)?;
    let options = match first {
        0..=0xfa => {
            pos += 1;
            first as u64
        }
        0xfc..=0xfe => {
            let n = match first {
                0xfc => 2,
                0xfd => 3,
                _ => 8,
            };
            let b = take(data, 1, n).map_err(|_| trunc())?;
            pos += 1 + n;
            le_uint(b)
        }
        _ => {
            return Err(DecodeError::Invalid {
                table: schema.qualified_name(),
                column: "(value options of partial update)".into(),
                detail: "bad packed integer",
            })
        }
    };
    let mut diff_cols = vec![false; schema.columns.len()];
    if options & 1 != 0 {
        let json_cols: Vec<usize> = schema
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.kind, ColumnKind::Json { .. }))
            .map(|(i, _)| i)
            .collect();
        let bits = take(data, pos, json_cols.len().div_ceil(8)).map_err(|_| trunc())?;
        pos += bits.len();
        for (k, &col) in json_cols.iter().enumerate() {
            diff_cols[col] = bits[k / 8] & (1 << (k % 8)) != 0;
        }
    }
    let start_len = out.len();
    let partial = Partial {
        diff_cols: &diff_cols,
        before_buf,
        before_spans,
    };
    let r =
        decode_inner(schema, present, &data[pos..], out, spans, Some(&partial)).map(|n| n + pos);
    if r.is_err() {
        out.truncate(start_len);
    }
    r
}

fn decode_inner(
    schema: &TableSchema,
    present: &BitSlice<u8>,
    data: &[u8],
    out: &mut Vec<u8>,
    spans: &mut Vec<Option<(u32, u32)>>,
    partial: Option<&Partial<'_>>,
) -> Result<usize, DecodeError> {
    let ncols = schema.columns.len();
    spans.clear();
    spans.resize(ncols, None);
    let present = if present.len() > ncols {
        if present[ncols..].any() {
            return Err(DecodeError::ColumnCount {
                table: schema.qualified_name(),
                image: present.len(),
                table_map: ncols,
            });
        }
        &present[..ncols]
    } else {
        present
    };
    let n_present = present.count_ones();
    let nbytes = n_present.div_ceil(8);
    let nulls = data
        .get(..nbytes)
        .ok_or_else(|| DecodeError::TruncatedBitmap {
            table: schema.qualified_name(),
        })?;
    let mut pos = nbytes;
    out.push(b'{');
    // With binlog_row_image=FULL every column is present: index directly instead of walking
    // the bitmap (measurable on the hot path).
    let all = n_present == ncols;
    let mut ones = present.iter_ones();
    for k in 0..n_present {
        let i = if all {
            k
        } else {
            match ones.next() {
                Some(i) => i,
                None => break,
            }
        };
        let col = &schema.columns[i];
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&col.json_key);
        let start = out.len();
        if nulls[k / 8] & (1 << (k % 8)) != 0 {
            out.extend_from_slice(b"null");
        } else {
            let r = match partial {
                Some(p) if p.diff_cols[i] => {
                    jsonb::decode_partial_json(&col.kind, data, pos, out, p.before(i))
                }
                _ => decode_value(&col.kind, data, pos, out),
            };
            pos = r.map_err(|e| value_error(schema, i, e))?;
        }
        let end = out.len();
        if end > u32::MAX as usize {
            return Err(DecodeError::TooLarge {
                table: schema.qualified_name(),
            });
        }
        spans[i] = Some((start as u32, end as u32));
    }
    out.push(b'}');
    Ok(pos)
}

impl Partial<'_> {
    fn before(&self, col: usize) -> Option<&[u8]> {
        let (s, e) = (*self.before_spans.get(col)?)?;
        self.before_buf.get(s as usize..e as usize)
    }
}

fn value_error(schema: &TableSchema, i: usize, e: ValErr) -> DecodeError {
    let table = schema.qualified_name();
    let column = schema.columns[i].name.clone();
    match e {
        ValErr::Truncated => DecodeError::Truncated { table, column },
        ValErr::Invalid(detail) => DecodeError::Invalid {
            table,
            column,
            detail,
        },
        ValErr::Unsupported(type_code, reason) => DecodeError::Unsupported {
            table,
            column,
            type_code,
            reason,
        },
        ValErr::Partial(detail) => DecodeError::PartialJson {
            table,
            column,
            detail: detail.into(),
        },
    }
}

/// Appends `{"pk1":v,"pk2":v}` using the spans of an image decoded into `buf` (pk columns in key order;
/// when schema.pk is empty use all present columns). Copies the value text from `buf[span]`.
///
/// A key column missing from the image (possible with `binlog_row_image=MINIMAL` only if the
/// table has no PK, or with a stale PK) is left out.
pub fn write_key(
    schema: &TableSchema,
    buf: &[u8],
    spans: &[Option<(u32, u32)>],
    out: &mut Vec<u8>,
) {
    out.push(b'{');
    let mut first = true;
    let mut put = |i: usize, out: &mut Vec<u8>| {
        if let Some(Some((s, e))) = spans.get(i) {
            if let (Some(col), Some(text)) =
                (schema.columns.get(i), buf.get(*s as usize..*e as usize))
            {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(&col.json_key);
                out.extend_from_slice(text);
            }
        }
    };
    if schema.pk.is_empty() {
        for i in 0..spans.len() {
            put(i, out);
        }
    } else {
        for &i in &schema.pk {
            put(i, out);
        }
    }
    out.push(b'}');
}

/// Appends `["c1","c2"]`: names of columns present in both images whose value text differs.
pub fn write_changed(
    schema: &TableSchema,
    before_buf: &[u8],
    before: &[Option<(u32, u32)>],
    after_buf: &[u8],
    after: &[Option<(u32, u32)>],
    out: &mut Vec<u8>,
) {
    out.push(b'[');
    let mut first = true;
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        let (Some((bs, be)), Some((as_, ae))) = (b, a) else {
            continue;
        };
        let bt = before_buf.get(*bs as usize..*be as usize);
        let at = after_buf.get(*as_ as usize..*ae as usize);
        if bt != at {
            if let Some(col) = schema.columns.get(i) {
                if !first {
                    out.push(b',');
                }
                first = false;
                // json_key is `"name":`; the name literal is all but the colon
                out.extend_from_slice(&col.json_key[..col.json_key.len() - 1]);
            }
        }
    }
    out.push(b']');
}

// ---------------------------------------------------------------------------------------------
// Strings in their column's charset (JSON escaping itself is in crate::json)
// ---------------------------------------------------------------------------------------------

/// cp1252 code points for 0x80..=0x9F (MySQL's latin1); the five undefined map to C1 controls.
static CP1252_HIGH: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

#[inline]
fn push_char(out: &mut Vec<u8>, c: char) {
    let mut b = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
}

/// Writes latin1 (cp1252) bytes as a JSON string literal.
pub(crate) fn write_latin1_str(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        if b < 0x80 {
            if needs_escape(b) {
                out.extend_from_slice(&s[start..i]);
                push_escape(out, b);
                start = i + 1;
            }
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        start = i + 1;
        let cp = if b < 0xA0 {
            CP1252_HIGH[(b - 0x80) as usize] as u32
        } else {
            b as u32
        };
        // (C1 controls, for the five bytes cp1252 leaves undefined, are fine in JSON strings)
        if let Some(c) = char::from_u32(cp) {
            push_char(out, c);
        }
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// Writes UTF-16 (BE or LE) or UTF-32 (BE) text as a JSON string; false (and nothing
/// written) when it is not valid in that encoding.
fn write_wide_str(out: &mut Vec<u8>, s: &[u8], kind: TextKind) -> bool {
    let start_len = out.len();
    out.push(b'"');
    let ok = match kind {
        TextKind::Utf32 => {
            if !s.len().is_multiple_of(4) {
                false
            } else {
                s.chunks_exact(4).all(|c| {
                    match char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])) {
                        Some(ch) => {
                            push_text_char(out, ch);
                            true
                        }
                        None => false,
                    }
                })
            }
        }
        _ => {
            if !s.len().is_multiple_of(2) {
                false
            } else {
                let be = kind == TextKind::Utf16Be;
                let units = s.chunks_exact(2).map(|c| {
                    if be {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_le_bytes([c[0], c[1]])
                    }
                });
                char::decode_utf16(units).all(|r| match r {
                    Ok(ch) => {
                        push_text_char(out, ch);
                        true
                    }
                    Err(_) => false,
                })
            }
        }
    };
    if ok {
        out.push(b'"');
    } else {
        out.truncate(start_len);
    }
    ok
}

#[inline]
fn push_text_char(out: &mut Vec<u8>, ch: char) {
    if (ch as u32) < 0x80 && needs_escape(ch as u8) {
        push_escape(out, ch as u8);
    } else {
        push_char(out, ch);
    }
}

/// Text column bytes to JSON per the column's charset class.
pub(crate) fn write_text(out: &mut Vec<u8>, s: &[u8], kind: TextKind) {
    match kind {
        TextKind::Utf8 | TextKind::Unknown => {
            let mark = out.len();
            out.reserve(s.len() + 2);
            out.push(b'"');
            if escape_if_utf8(out, s) {
                out.push(b'"');
            } else {
                out.truncate(mark);
                write_base64_str(out, s);
            }
        }
        TextKind::Latin1 => write_latin1_str(out, s),
        TextKind::Binary => write_base64_str(out, s),
        TextKind::Utf16Be | TextKind::Utf16Le | TextKind::Utf32 => {
            if !write_wide_str(out, s, kind) {
                write_base64_str(out, s);
            }
        }
        TextKind::JsonText => {
            if is_strict_json(s) {
                // valid JSON is valid UTF-8 too; trim the whitespace around it
                let t = trim_json_ws(s);
                out.extend_from_slice(t);
            } else {
                write_text(out, s, TextKind::Utf8);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One value
// ---------------------------------------------------------------------------------------------

/// Reads a `len_bytes` little-endian length prefix and the bytes it announces.
#[inline(always)]
fn take_prefixed(data: &[u8], pos: usize, len_bytes: u8) -> VResult<(&[u8], usize)> {
    let lb = len_bytes as usize;
    let n = le_uint(take(data, pos, lb)?) as usize;
    let body = take(data, pos + lb, n)?;
    Ok((body, pos + lb + n))
}

/// Decodes one non-NULL value of `kind` at `data[pos..]`, appends its JSON, returns the
/// position after it.
pub(crate) fn decode_value(
    kind: &ColumnKind,
    data: &[u8],
    pos: usize,
    out: &mut Vec<u8>,
) -> VResult<usize> {
    match *kind {
        ColumnKind::Int { bytes, unsigned } => {
            let n = bytes as usize;
            let b = take(data, pos, n)?;
            let raw = le_uint(b);
            if unsigned {
                push_u64(out, raw);
            } else {
                let shift = 64 - 8 * n as u32;
                push_i64(out, ((raw << shift) as i64) >> shift);
            }
            Ok(pos + n)
        }
        ColumnKind::Str {
            len_bytes,
            text,
            pad_to,
        } => {
            let (s, next) = take_prefixed(data, pos, len_bytes)?;
            if text == TextKind::Binary && s.len() < pad_to as usize {
                // BINARY(n) lost its trailing zero bytes in the binlog; give them back.
                let mut padded = [0u8; 1024];
                let n = (pad_to as usize).min(padded.len());
                padded[..s.len()].copy_from_slice(s);
                write_text(out, &padded[..n], text);
            } else {
                write_text(out, s, text);
            }
            Ok(next)
        }
        ColumnKind::Float => {
            let b = take(data, pos, 4)?;
            push_f32(out, f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            Ok(pos + 4)
        }
        ColumnKind::Double => {
            let b = take(data, pos, 8)?;
            push_f64(out, f64::from_le_bytes(b.try_into().unwrap()));
            Ok(pos + 8)
        }
        ColumnKind::Decimal {
            precision,
            scale,
            bytes,
        } => {
            let b = take(data, pos, bytes as usize)?;
            out.push(b'"');
            temporal::write_decimal(out, b, precision as usize, scale as usize)?;
            out.push(b'"');
            Ok(pos + bytes as usize)
        }
        ColumnKind::Year => {
            let y = take(data, pos, 1)?[0];
            push_u64(out, if y == 0 { 0 } else { 1900 + y as u64 });
            Ok(pos + 1)
        }
        ColumnKind::Date => temporal::date(data, pos, out),
        ColumnKind::Time => temporal::time_old(data, pos, out),
        ColumnKind::Time2 { fsp } => temporal::time2(data, pos, fsp, out),
        ColumnKind::Datetime => temporal::datetime_old(data, pos, out),
        ColumnKind::Datetime2 { fsp } => temporal::datetime2(data, pos, fsp, out),
        ColumnKind::Timestamp => temporal::timestamp_old(data, pos, out),
        ColumnKind::Timestamp2 { fsp } => temporal::timestamp2(data, pos, fsp, out),
        ColumnKind::Bit { bytes } => {
            let b = take(data, pos, bytes as usize)?;
            push_u64(out, be_uint(b));
            Ok(pos + bytes as usize)
        }
        ColumnKind::Enum { size, ref labels } => {
            let idx = le_uint(take(data, pos, size as usize)?) as usize;
            match labels {
                Some(_) if idx == 0 => out.extend_from_slice(b"\"\""),
                Some(l) if idx <= l.len() => {
                    out.push(b'"');
                    out.extend_from_slice(l.get(idx - 1));
                    out.push(b'"');
                }
                _ => push_u64(out, idx as u64),
            }
            Ok(pos + size as usize)
        }
        ColumnKind::Set { size, ref labels } => {
            let mask = le_uint(take(data, pos, size as usize)?);
            match labels {
                Some(l) if l.len() >= 64 || mask >> l.len() == 0 => {
                    out.push(b'"');
                    let mut first = true;
                    let mut m = mask;
                    while m != 0 {
                        let bit = m.trailing_zeros() as usize;
                        m &= m - 1;
                        if bit < l.len() {
                            if !first {
                                out.push(b',');
                            }
                            first = false;
                            out.extend_from_slice(l.get(bit));
                        }
                    }
                    out.push(b'"');
                }
                _ => push_u64(out, mask),
            }
            Ok(pos + size as usize)
        }
        ColumnKind::Json { len_bytes } => {
            let (doc, next) = take_prefixed(data, pos, len_bytes)?;
            jsonb::write_jsonb(out, doc)?;
            Ok(next)
        }
        ColumnKind::Geometry { len_bytes } => {
            let (g, next) = take_prefixed(data, pos, len_bytes)?;
            write_base64_str(out, g.get(4..).unwrap_or(g));
            Ok(next)
        }
        ColumnKind::Vector { len_bytes } => {
            let (v, next) = take_prefixed(data, pos, len_bytes)?;
            if !v.len().is_multiple_of(4) {
                return Err(ValErr::Invalid("VECTOR length not a multiple of 4"));
            }
            out.push(b'[');
            for (i, c) in v.chunks_exact(4).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_f32(out, f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
            out.push(b']');
            Ok(next)
        }
        ColumnKind::Null => {
            out.extend_from_slice(b"null");
            Ok(pos)
        }
        ColumnKind::Unsupported { type_code, reason } => {
            Err(ValErr::Unsupported(type_code, reason))
        }
    }
}
