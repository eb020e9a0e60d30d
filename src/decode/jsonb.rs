//! MySQL binary JSON (JSONB) to JSON text, and JSON partial-update diffs.
//!
//! JSONB layout: a type byte, then the value. Objects and arrays (small: 2-byte offsets,
//! large: 4-byte offsets) hold an element count, their byte size, key entries (objects:
//! offset + u16 length), value entries (type byte + offset, or the value itself for small
//! scalars), then keys and values; offsets count from the start of the container (after its
//! type byte). Strings are a variable-length length (7 bits a byte, low first) and UTF-8
//! bytes; opaque values are a column type byte, a variable-length length and the bytes.
//!
//! Invariants: every offset and length is checked against the bytes that hold it; nesting
//! is limited to [`MAX_DEPTH`]; the number of values visited is limited by the document's
//! size (a garbage document whose entries all point at the same container would otherwise
//! cost exponential time). Keys are written in stored order (MySQL sorts them by length,
//! then bytes).

use serde_json::Value;

use super::super::schema::ColumnKind;
use super::temporal::{push_packed_date, push_packed_datetime, push_packed_time, write_decimal};
use super::{take, VResult, ValErr};
use crate::json::{push_f64, push_i64, push_u64, write_base64_str, write_json_str};

/// Deeper documents are rejected (MySQL itself allows 100 levels).
pub const MAX_DEPTH: usize = 150;

const SMALL_OBJECT: u8 = 0x0;
const LARGE_OBJECT: u8 = 0x1;
const SMALL_ARRAY: u8 = 0x2;
const LARGE_ARRAY: u8 = 0x3;
const LITERAL: u8 = 0x4;
const INT16: u8 = 0x5;
const UINT16: u8 = 0x6;
const INT32: u8 = 0x7;
const UINT32: u8 = 0x8;
const INT64: u8 = 0x9;
const UINT64: u8 = 0xA;
const DOUBLE: u8 = 0xB;
const STRING: u8 = 0xC;
const OPAQUE: u8 = 0xF;

const BAD: ValErr = ValErr::Invalid("malformed binary JSON");

struct Writer<'o> {
    out: &'o mut Vec<u8>,
    budget: usize,
}

/// Writes JSONB document `doc` as JSON text. An empty document is `null` (as in MySQL).
pub(crate) fn write_jsonb(out: &mut Vec<u8>, doc: &[u8]) -> VResult<()> {
    let Some((&t, body)) = doc.split_first() else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    let mut w = Writer {
        out,
        budget: doc.len() + 1,
    };
    w.value(t, body, 0)
}

#[inline]
fn le(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate() {
        v |= (x as u64) << (8 * i);
    }
    v
}

/// Variable-length length: 7 bits a byte, least significant first, at most 5 bytes.
fn varlen(data: &[u8]) -> VResult<(usize, usize)> {
    let mut len = 0u64;
    for i in 0..5 {
        let b = *data.get(i).ok_or(ValErr::Truncated)?;
        len |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            if len > u32::MAX as u64 {
                return Err(BAD);
            }
            return Ok((len as usize, i + 1));
        }
    }
    Err(BAD)
}

impl Writer<'_> {
    /// A value of type `t` whose bytes start at `data[0]` (and may run to its end).
    fn value(&mut self, t: u8, data: &[u8], depth: usize) -> VResult<()> {
        if self.budget == 0 {
            return Err(ValErr::Invalid("malformed binary JSON: overlapping values"));
        }
        self.budget -= 1;
        match t {
            SMALL_OBJECT | LARGE_OBJECT | SMALL_ARRAY | LARGE_ARRAY => {
                if depth >= MAX_DEPTH {
                    return Err(ValErr::Invalid("binary JSON nested too deeply"));
                }
                self.container(data, t & 1 == 1, t < SMALL_ARRAY, depth + 1)
            }
            LITERAL => self.literal(*data.first().ok_or(ValErr::Truncated)?),
            INT16 => {
                let b = take(data, 0, 2)?;
                push_i64(self.out, i16::from_le_bytes([b[0], b[1]]) as i64);
                Ok(())
            }
            UINT16 => {
                push_u64(self.out, le(take(data, 0, 2)?));
                Ok(())
            }
            INT32 => {
                let b = take(data, 0, 4)?;
                push_i64(
                    self.out,
                    i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
                );
                Ok(())
            }
            UINT32 => {
                push_u64(self.out, le(take(data, 0, 4)?));
                Ok(())
            }
            INT64 => {
                push_i64(self.out, le(take(data, 0, 8)?) as i64);
                Ok(())
            }
            UINT64 => {
                push_u64(self.out, le(take(data, 0, 8)?));
                Ok(())
            }
            DOUBLE => {
                push_f64(self.out, f64::from_bits(le(take(data, 0, 8)?)));
                Ok(())
            }
            STRING => {
                let (n, hl) = varlen(data)?;
                write_json_str(self.out, take(data, hl, n)?);
                Ok(())
            }
            OPAQUE => {
                let ft = *data.first().ok_or(ValErr::Truncated)?;
                let (n, hl) = varlen(&data[1..])?;
                let bytes = take(data, 1 + hl, n)?;
                self.opaque(ft, bytes)
            }
            _ => Err(ValErr::Invalid("unknown binary JSON value type")),
        }
    }

    fn literal(&mut self, b: u8) -> VResult<()> {
        self.out.extend_from_slice(match b {
            0 => b"null",
            1 => b"true",
            2 => b"false",
            _ => return Err(ValErr::Invalid("unknown binary JSON literal")),
        });
        Ok(())
    }

    fn opaque(&mut self, field_type: u8, b: &[u8]) -> VResult<()> {
        use super::super::schema::ty;
        let packed = || -> VResult<i64> {
            Ok(i64::from_le_bytes(
                take(b, 0, 8)?.try_into().map_err(|_| ValErr::Truncated)?,
            ))
        };
        match field_type {
            ty::NEWDECIMAL => {
                let (p, s) = (
                    *b.first().ok_or(ValErr::Truncated)?,
                    *b.get(1).ok_or(ValErr::Truncated)?,
                );
                let (p, s) = (p as usize, s as usize);
                if p == 0 || p > 65 || s > p || s > 38 {
                    return Err(ValErr::Invalid(
                        "binary JSON DECIMAL precision/scale out of range",
                    ));
                }
                let size = super::super::schema::decimal_bin_size(p, s);
                self.out.push(b'"');
                write_decimal(self.out, take(b, 2, size)?, p, s)?;
                self.out.push(b'"');
            }
            ty::DATE | ty::NEWDATE => push_packed_date(self.out, packed()?),
            ty::TIME | ty::TIME2 => push_packed_time(self.out, packed()?, 6),
            ty::DATETIME | ty::TIMESTAMP | ty::DATETIME2 | ty::TIMESTAMP2 => {
                push_packed_datetime(self.out, packed()?, 6, b' ', true)
            }
            _ => {
                self.out.extend_from_slice(b"\"base64:type");
                push_u64(self.out, field_type as u64);
                self.out.push(b':');
                // write_base64_str adds its own quotes: write into place without them
                let at = self.out.len();
                write_base64_str(self.out, b);
                self.out.remove(at);
            }
        }
        Ok(())
    }

    /// An object or array; `c` starts at its element count.
    fn container(&mut self, c: &[u8], large: bool, object: bool, depth: usize) -> VResult<()> {
        let osz = if large { 4 } else { 2 };
        let count = le(take(c, 0, osz)?) as usize;
        let size = le(take(c, osz, osz)?) as usize;
        let c = c.get(..size).ok_or(ValErr::Truncated)?;
        let key_entry = osz + 2;
        let value_entry = 1 + osz;
        let keys_at = 2 * osz;
        let values_at = keys_at + if object { count * key_entry } else { 0 };
        let header_end = values_at
            .checked_add(count.checked_mul(value_entry).ok_or(BAD)?)
            .ok_or(BAD)?;
        if header_end > c.len() {
            return Err(BAD);
        }
        self.out.push(if object { b'{' } else { b'[' });
        for i in 0..count {
            if i > 0 {
                self.out.push(b',');
            }
            if object {
                let e = keys_at + i * key_entry;
                let koff = le(&c[e..e + osz]) as usize;
                let klen = le(&c[e + osz..e + osz + 2]) as usize;
                let key = c.get(koff..koff.checked_add(klen).ok_or(BAD)?).ok_or(BAD)?;
                write_json_str(self.out, key);
                self.out.push(b':');
            }
            let e = values_at + i * value_entry;
            let t = c[e];
            let inline = &c[e + 1..e + 1 + osz];
            match t {
                LITERAL => self.literal(inline[0])?,
                INT16 => push_i64(self.out, i16::from_le_bytes([inline[0], inline[1]]) as i64),
                UINT16 => push_u64(self.out, le(&inline[..2])),
                INT32 if large => push_i64(self.out, le(inline) as u32 as i32 as i64),
                UINT32 if large => push_u64(self.out, le(inline)),
                _ => {
                    let off = le(inline) as usize;
                    if off < header_end || off >= c.len() {
                        return Err(BAD);
                    }
                    if self.budget == 0 {
                        return Err(ValErr::Invalid("malformed binary JSON: overlapping values"));
                    }
                    self.value(t, &c[off..], depth)?;
                }
            }
        }
        self.out.push(if object { b'}' } else { b']' });
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Partial updates
// ---------------------------------------------------------------------------------------------

const DIFF_REPLACE: u8 = 0;
const DIFF_INSERT: u8 = 1;
const DIFF_REMOVE: u8 = 2;

fn lenenc(data: &[u8], pos: usize) -> VResult<(u64, usize)> {
    let first = *data.get(pos).ok_or(ValErr::Truncated)?;
    let n = match first {
        0..=0xfa => return Ok((first as u64, pos + 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return Err(ValErr::Partial("bad packed integer in JSON diff")),
    };
    Ok((le(take(data, pos + 1, n)?), pos + 1 + n))
}

/// One step of a JSON path.
enum Leg {
    Key(String),
    /// Array index, or `last - n` when `from_last`.
    Index {
        n: usize,
        from_last: bool,
    },
}

/// Parses the JSON paths MySQL writes in diffs: `$`, `.key`, `."quoted key"`, `[n]`,
/// `[last]`, `[last-n]`.
fn parse_path(p: &[u8]) -> VResult<Vec<Leg>> {
    let bad = ValErr::Partial("unsupported JSON path in diff");
    let p = std::str::from_utf8(p).map_err(|_| bad)?.trim();
    let mut rest = p.strip_prefix('$').ok_or(bad)?;
    let mut legs = Vec::new();
    while !rest.is_empty() {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('.') {
            let r = r.trim_start();
            if r.starts_with('"') {
                // find the closing quote, honouring backslash escapes
                let b = r.as_bytes();
                let mut i = 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if i >= b.len() {
                    return Err(bad);
                }
                let key: String = serde_json::from_str(&r[..=i]).map_err(|_| bad)?;
                legs.push(Leg::Key(key));
                rest = &r[i + 1..];
            } else {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let key = r[..end].trim();
                if key.is_empty() || key.contains('*') {
                    return Err(bad);
                }
                legs.push(Leg::Key(key.to_string()));
                rest = &r[end..];
            }
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or(bad)?;
            let inner = r[..end].trim();
            let leg = if let Some(l) = inner.strip_prefix("last") {
                let l = l.trim();
                let n = if l.is_empty() {
                    0
                } else {
                    l.strip_prefix('-')
                        .ok_or(bad)?
                        .trim()
                        .parse()
                        .map_err(|_| bad)?
                };
                Leg::Index { n, from_last: true }
            } else {
                Leg::Index {
                    n: inner.parse().map_err(|_| bad)?,
                    from_last: false,
                }
            };
            legs.push(leg);
            rest = &r[end + 1..];
        } else {
            return Err(bad);
        }
    }
    Ok(legs)
}

fn index_of(n: usize, from_last: bool, len: usize) -> Option<usize> {
    if from_last {
        len.checked_sub(1)?.checked_sub(n)
    } else {
        Some(n)
    }
}

fn child_mut<'v>(v: &'v mut Value, leg: &Leg) -> Option<&'v mut Value> {
    match (v, leg) {
        (Value::Object(m), Leg::Key(k)) => m.get_mut(k),
        (Value::Array(a), Leg::Index { n, from_last }) => {
            let i = index_of(*n, *from_last, a.len())?;
            a.get_mut(i)
        }
        // MySQL auto-wraps a scalar for `[0]`
        (v, Leg::Index { n: 0, .. }) => Some(v),
        _ => None,
    }
}

fn apply_diff(doc: &mut Value, op: u8, legs: &[Leg], new: Option<Value>) -> VResult<()> {
    let miss = ValErr::Partial("JSON diff path not found in the before image");
    let Some((last, parents)) = legs.split_last() else {
        // the root itself
        return match (op, new) {
            (DIFF_REPLACE, Some(v)) => {
                *doc = v;
                Ok(())
            }
            _ => Err(ValErr::Partial("JSON diff removes or inserts at the root")),
        };
    };
    let mut cur = doc;
    for leg in parents {
        cur = child_mut(cur, leg).ok_or(miss)?;
    }
    match (op, cur, last) {
        (DIFF_REPLACE, cur, leg) => {
            let slot = child_mut(cur, leg).ok_or(miss)?;
            *slot = new.ok_or(miss)?;
        }
        (DIFF_INSERT, Value::Object(m), Leg::Key(k)) => {
            m.insert(k.clone(), new.ok_or(miss)?);
        }
        (DIFF_INSERT, Value::Array(a), Leg::Index { n, from_last }) => {
            let i = index_of(*n, *from_last, a.len()).unwrap_or(0).min(a.len());
            a.insert(i, new.ok_or(miss)?);
        }
        (DIFF_REMOVE, Value::Object(m), Leg::Key(k)) => {
            m.remove(k).ok_or(miss)?;
        }
        (DIFF_REMOVE, Value::Array(a), Leg::Index { n, from_last }) => {
            let i = index_of(*n, *from_last, a.len())
                .filter(|&i| i < a.len())
                .ok_or(miss)?;
            a.remove(i);
        }
        _ => return Err(ValErr::Partial("JSON diff does not match the before image")),
    }
    Ok(())
}

/// Decodes a JSON column logged as diffs in a partial update's after image: applies them to
/// `before` (the column's JSON text from the before image) and writes the resulting
/// document. Keys of rebuilt objects come out sorted by bytes (not MySQL's storage order).
pub(crate) fn decode_partial_json(
    kind: &ColumnKind,
    data: &[u8],
    pos: usize,
    out: &mut Vec<u8>,
    before: Option<&[u8]>,
) -> VResult<usize> {
    let ColumnKind::Json { len_bytes } = *kind else {
        return Err(ValErr::Partial(
            "partial update bit set on a column that is not JSON",
        ));
    };
    let lb = len_bytes as usize;
    let n = le(take(data, pos, lb)?) as usize;
    let diffs = take(data, pos + lb, n)?;
    let before = before.ok_or(ValErr::Partial(
        "the column is not in the before image (binlog_row_image is not FULL)",
    ))?;
    let mut doc: Value = serde_json::from_slice(before)
        .map_err(|_| ValErr::Partial("before image value is not JSON"))?;
    let mut p = 0;
    let mut scratch = Vec::new();
    let mut ops = 0usize;
    while p < diffs.len() {
        ops += 1;
        if ops > diffs.len() {
            return Err(BAD);
        }
        let op = diffs[p];
        let (plen, np) = lenenc(diffs, p + 1)?;
        let path = take(diffs, np, usize::try_from(plen).map_err(|_| BAD)?)?;
        p = np + path.len();
        let new = if op == DIFF_REMOVE {
            None
        } else if op == DIFF_REPLACE || op == DIFF_INSERT {
            let (vlen, vp) = lenenc(diffs, p)?;
            let v = take(diffs, vp, usize::try_from(vlen).map_err(|_| BAD)?)?;
            p = vp + v.len();
            scratch.clear();
            write_jsonb(&mut scratch, v)?;
            Some(serde_json::from_slice(&scratch).map_err(|_| BAD)?)
        } else {
            return Err(ValErr::Partial("unknown JSON diff operation"));
        };
        let legs = parse_path(path)?;
        apply_diff(&mut doc, op, &legs, new)?;
    }
    serde_json::to_writer(&mut *out, &doc).map_err(|_| BAD)?;
    Ok(pos + lb + n)
}
