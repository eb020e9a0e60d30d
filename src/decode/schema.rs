//! Per-table decode plans, built once per table map event.
//!
//! [`TableSchema::from_table_map`] turns a `TABLE_MAP_EVENT` (plus, optionally, what
//! information_schema says in an [`ExtraSchema`]) into one [`ColumnSchema`] per column: its
//! name, its JSON object key (already escaped) and a [`ColumnKind`] that holds everything the
//! row decoder in [`super::value`] needs for that column (byte lengths, fractional-second
//! precision, decimal precision/scale, charset class, ENUM/SET labels), so that decoding a row
//! never looks at the table map again and never allocates per column.
//!
//! Sources of truth, in order:
//! 1. The table map's own column types and type metadata (always present).
//! 2. Its optional metadata (`binlog_row_metadata=MINIMAL` gives signedness and charsets;
//!    `FULL` adds column names, primary key, ENUM/SET labels and their charsets).
//! 3. [`ExtraSchema`] (information_schema), used only for what the binlog did not say: names,
//!    primary key, unsignedness, ENUM/SET labels, binary charset, and always for MariaDB JSON
//!    columns (which the binlog shows as plain LONGTEXT). An `ExtraSchema` whose non-empty
//!    `columns` list has a different length than the table map is stale (a DDL happened in
//!    between) and is ignored entirely.
//! 4. Placeholders: columns without a known name are called `@1`, `@2`, ... (1-based).
//!
//! Invariants:
//! - `columns.len()` equals the table map's column count; `pk` holds valid, distinct column
//!   indexes.
//! - Building a schema fails only when the table map itself is malformed (metadata block or
//!   optional metadata cut short). A column type this decoder cannot decode does not fail the
//!   build: it becomes [`ColumnKind::Unsupported`] and only a row image that carries a non-NULL
//!   value for that column fails, with an error naming the type, column and table.

use std::fmt;

use mysql_common::binlog::events::TableMapEvent;
use mysql_common::proto::MySerialize;

use crate::json::write_json_str;

/// The decoded shape of the table, reused for every row of every rows event that follows the
/// table map.
#[derive(Debug, Clone)]
pub struct TableSchema {
    pub db: String,
    pub table: String,
    pub columns: Vec<ColumnSchema>,
    /// Column indexes of the primary key, in key order. Empty when unknown / no PK.
    pub pk: Vec<usize>,
    /// The table is known to have no primary key: its rows' identity is the whole row, and
    /// their operations say `"keyless":true` (docs/sync-api.md).
    pub keyless: bool,
    /// true when names and PK came from binlog_row_metadata=FULL (not from `extra` or placeholders)
    pub names_from_binlog: bool,
}

#[derive(Debug, Clone)]
pub struct ColumnSchema {
    /// From FULL metadata, else from [`ExtraSchema`], else `@1`, `@2`, ... (1-based).
    pub name: String,
    /// The name already JSON-escaped with quotes and trailing colon, e.g. `b"\"name\":"`.
    pub json_key: Box<[u8]>,
    /// Everything needed to decode this column.
    pub kind: ColumnKind,
}

/// How one column's value is laid out in a row image and how it is written as JSON.
///
/// Lengths and precisions come from the table map's type metadata; they are validated here
/// so the decoder can trust them.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnKind {
    /// `MYSQL_TYPE_NULL`: no bytes, always `null`.
    Null,
    /// TINYINT (1), SMALLINT (2), MEDIUMINT (3), INT (4), BIGINT (8) little-endian bytes.
    Int { bytes: u8, unsigned: bool },
    /// FLOAT: 4 bytes IEEE little-endian.
    Float,
    /// DOUBLE: 8 bytes IEEE little-endian.
    Double,
    /// DECIMAL/NUMERIC (`MYSQL_TYPE_NEWDECIMAL`) in MySQL's binary decimal format.
    Decimal { precision: u8, scale: u8, bytes: u8 },
    /// YEAR: 1 byte, 0 or year - 1900.
    Year,
    /// DATE: 3 bytes little-endian, `day | month << 5 | year << 9`.
    Date,
    /// Old TIME (pre-5.6): 3 bytes, signed `HHMMSS` as an integer.
    Time,
    /// TIME(fsp), 5.6+ format: 3 bytes big-endian + `(fsp+1)/2` fraction bytes.
    Time2 { fsp: u8 },
    /// Old DATETIME (pre-5.6): 8 bytes little-endian `YYYYMMDDHHMMSS` as an integer.
    Datetime,
    /// DATETIME(fsp), 5.6+ format: 5 bytes big-endian + fraction bytes.
    Datetime2 { fsp: u8 },
    /// Old TIMESTAMP: 4 bytes little-endian seconds since the epoch.
    Timestamp,
    /// TIMESTAMP(fsp), 5.6+ format: 4 bytes big-endian seconds + fraction bytes.
    Timestamp2 { fsp: u8 },
    /// BIT(n): `bytes` big-endian bytes (1..=8).
    Bit { bytes: u8 },
    /// ENUM: 1 or 2 byte index; labels when known.
    Enum { size: u8, labels: Option<Labels> },
    /// SET: 1..=8 byte bitmask; labels when known.
    Set { size: u8, labels: Option<Labels> },
    /// CHAR/VARCHAR/BINARY/VARBINARY/TEXT/BLOB: a `len_bytes` (1..=4) little-endian length
    /// prefix, then the bytes, written according to `text`.
    /// `pad_to`: BINARY(n) is stored without its trailing zero bytes; they are restored
    /// (the server returns them too). 0 for every other string type.
    Str {
        len_bytes: u8,
        text: TextKind,
        pad_to: u16,
    },
    /// MySQL JSON (binary JSONB) with a `len_bytes` length prefix.
    Json { len_bytes: u8 },
    /// GEOMETRY: length prefix, 4-byte SRID, WKB.
    Geometry { len_bytes: u8 },
    /// VECTOR (MySQL 9): length prefix, then little-endian f32 values.
    Vector { len_bytes: u8 },
    /// A type the decoder cannot decode; a non-NULL value of it fails the row.
    Unsupported { type_code: u8, reason: &'static str },
}

/// How the bytes of a string column become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// A text charset whose bytes should be UTF-8 (utf8mb3/utf8mb4/ascii/others): a JSON
    /// string when the bytes are valid UTF-8, else base64.
    Utf8,
    /// latin1 (MySQL's latin1 is cp1252): converted to UTF-8.
    Latin1,
    /// ucs2/utf16 (big-endian code units): converted; base64 when invalid.
    Utf16Be,
    /// utf16le: converted; base64 when invalid.
    Utf16Le,
    /// utf32: converted; base64 when invalid.
    Utf32,
    /// binary charset (BINARY, VARBINARY, BLOB): base64.
    Binary,
    /// No charset information: a JSON string when valid UTF-8, else base64.
    Unknown,
    /// Text holding JSON (MariaDB JSON columns): written raw when it parses as JSON, else as
    /// a JSON string.
    JsonText,
}

/// ENUM or SET labels, stored JSON-escaped (without the quotes) in one buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Labels {
    text: Box<[u8]>,
    ends: Box<[u32]>,
}

impl Labels {
    pub(crate) fn from_escaped(parts: &[Vec<u8>]) -> Labels {
        let mut text = Vec::new();
        let mut ends = Vec::with_capacity(parts.len());
        for p in parts {
            text.extend_from_slice(p);
            ends.push(text.len() as u32);
        }
        Labels {
            text: text.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The escaped text (no quotes) of label `i` (0-based).
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries((0..self.len()).map(|i| String::from_utf8_lossy(self.get(i))))
            .finish()
    }
}

/// What the server's information_schema says, for servers/tables without FULL row metadata,
/// and for MariaDB JSON columns (MariaDB's JSON is LONGTEXT + CHECK(json_valid(col)); the binlog can't tell).
#[derive(Debug, Clone, Default)]
pub struct ExtraSchema {
    /// ordinal order; may be empty = unknown
    pub columns: Vec<String>,
    /// may be empty
    pub pk: Vec<usize>,
    /// indexes of columns whose text is JSON
    pub json_columns: Vec<usize>,
    /// indexes of unsigned integer columns (when no FULL metadata)
    pub unsigned: Vec<usize>,
    /// ENUM/SET labels by column index (when no FULL metadata)
    pub enum_labels: Vec<(usize, Vec<String>)>,
    /// string columns with binary charset (when no FULL metadata)
    pub binary: Vec<usize>,
}

/// Why a table map could not be used or a row image could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("row image truncated in column `{column}` of {table}")]
    Truncated { table: String, column: String },
    #[error("row image truncated in its null bitmap ({table})")]
    TruncatedBitmap { table: String },
    #[error("invalid value in column `{column}` of {table}: {detail}")]
    Invalid {
        table: String,
        column: String,
        detail: &'static str,
    },
    #[error("unsupported column type 0x{type_code:02x} in column `{column}` of {table}: {reason}")]
    Unsupported {
        table: String,
        column: String,
        type_code: u8,
        reason: &'static str,
    },
    #[error("rows event for {table} has a column bitmap over {image} columns but its table map has {table_map}: the table map does not describe this rows event")]
    ColumnCount {
        table: String,
        image: usize,
        table_map: usize,
    },
    #[error("malformed table map for {table}: {detail}")]
    BadTableMap { table: String, detail: String },
    #[error("JSON partial update of column `{column}` of {table} cannot be rebuilt: {detail}; set binlog_row_value_options='' on the source to log full JSON values")]
    PartialJson {
        table: String,
        column: String,
        detail: String,
    },
    #[error("decoded row of {table} exceeds 4 GiB of JSON")]
    TooLarge { table: String },
}

// Column type codes (enum_field_types).
pub(crate) mod ty {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const TYPED_ARRAY: u8 = 20;
    /// MariaDB compressed columns.
    pub const VARCHAR_COMPRESSED: u8 = 140;
    pub const BLOB_COMPRESSED: u8 = 141;
    pub const VECTOR: u8 = 242;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}

// Optional metadata field types.
mod opt {
    pub const SIGNEDNESS: u8 = 1;
    pub const DEFAULT_CHARSET: u8 = 2;
    pub const COLUMN_CHARSET: u8 = 3;
    pub const COLUMN_NAME: u8 = 4;
    pub const SET_STR_VALUE: u8 = 5;
    pub const ENUM_STR_VALUE: u8 = 6;
    pub const SIMPLE_PRIMARY_KEY: u8 = 8;
    pub const PRIMARY_KEY_WITH_PREFIX: u8 = 9;
    pub const ENUM_AND_SET_DEFAULT_CHARSET: u8 = 10;
    pub const ENUM_AND_SET_COLUMN_CHARSET: u8 = 11;
}

/// Bytes of type metadata in the table map for a column type; `None` when unknown.
fn meta_len(code: u8, meta: &[u8]) -> Option<usize> {
    use ty::*;
    Some(match code {
        DECIMAL | TINY | SHORT | LONG | NULL | TIMESTAMP | LONGLONG | INT24 | DATE | TIME
        | DATETIME | YEAR | NEWDATE => 0,
        FLOAT | DOUBLE | TIMESTAMP2 | DATETIME2 | TIME2 | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB
        | BLOB | GEOMETRY | JSON | VECTOR | BLOB_COMPRESSED => 1,
        VARCHAR | VAR_STRING | BIT | NEWDECIMAL | ENUM | SET | STRING | VARCHAR_COMPRESSED => 2,
        TYPED_ARRAY => {
            // element type, then that type's metadata (VARCHAR takes 3 bytes here)
            let inner = *meta.first()?;
            let n = if inner == VARCHAR {
                3
            } else {
                meta_len(inner, meta.get(1..)?)?
            };
            1 + n
        }
        _ => return None,
    })
}

/// Charset class of a collation id.
pub(crate) fn text_kind_of_collation(id: u32) -> TextKind {
    // MariaDB: NOPAD variants are base id + 1024; UCA-14.0 collations (10.10+) carry the
    // charset in bits 8..: 8 utf8mb3, 9 utf8mb4, 10 ucs2, 11 utf16, 12 utf32.
    let id = match id {
        1024..=2047 => id - 1024,
        2048..=4095 => {
            return match id >> 8 {
                10 => TextKind::Utf16Be,
                11 => TextKind::Utf16Be,
                12 => TextKind::Utf32,
                _ => TextKind::Utf8,
            }
        }
        _ => id,
    };
    match id {
        63 => TextKind::Binary,
        5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 => TextKind::Latin1,
        35 | 90 | 128..=151 | 159 | 54 | 55 | 101..=124 => TextKind::Utf16Be,
        56 | 62 => TextKind::Utf16Le,
        60 | 61 | 160..=183 => TextKind::Utf32,
        _ => TextKind::Utf8,
    }
}

/// A little cursor over table map bytes.
struct Rd<'a> {
    b: &'a [u8],
}

impl<'a> Rd<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&x, rest) = self.b.split_first()?;
        self.b = rest;
        Some(x)
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (x, rest) = self.b.split_at(n);
        self.b = rest;
        Some(x)
    }
    fn lenenc(&mut self) -> Option<u64> {
        let first = self.u8()?;
        let n = match first {
            0..=0xfa => return Some(first as u64),
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            _ => return None,
        };
        let bytes = self.take(n)?;
        let mut v = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            v |= (*b as u64) << (8 * i);
        }
        Some(v)
    }
    fn lenenc_bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.lenenc()?;
        self.take(usize::try_from(n).ok()?)
    }
}

#[derive(Default)]
struct OptMeta<'a> {
    signedness: Option<&'a [u8]>,
    default_charset: Option<(u32, Vec<(usize, u32)>)>,
    column_charsets: Option<Vec<u32>>,
    names: Option<Vec<&'a [u8]>>,
    set_labels: Option<Vec<Vec<&'a [u8]>>>,
    enum_labels: Option<Vec<Vec<&'a [u8]>>>,
    pk: Vec<u64>,
    has_pk_field: bool,
    es_default_charset: Option<(u32, Vec<(usize, u32)>)>,
    es_column_charsets: Option<Vec<u32>>,
}

fn parse_default_charset(v: &[u8]) -> Option<(u32, Vec<(usize, u32)>)> {
    let mut r = Rd { b: v };
    let def = r.lenenc()? as u32;
    let mut pairs = Vec::new();
    while !r.b.is_empty() {
        let idx = usize::try_from(r.lenenc()?).ok()?;
        let cs = r.lenenc()? as u32;
        pairs.push((idx, cs));
    }
    Some((def, pairs))
}

fn parse_lenenc_list(v: &[u8]) -> Option<Vec<u32>> {
    let mut r = Rd { b: v };
    let mut out = Vec::new();
    while !r.b.is_empty() {
        out.push(r.lenenc()? as u32);
    }
    Some(out)
}

fn parse_str_values(v: &[u8]) -> Option<Vec<Vec<&[u8]>>> {
    let mut r = Rd { b: v };
    let mut out = Vec::new();
    while !r.b.is_empty() {
        let n = r.lenenc()?;
        // each label takes at least one byte: bounds the allocation on garbage
        if n > r.b.len() as u64 {
            return None;
        }
        let mut labels = Vec::with_capacity(n as usize);
        for _ in 0..n {
            labels.push(r.lenenc_bytes()?);
        }
        out.push(labels);
    }
    Some(out)
}

fn parse_optional(data: &[u8]) -> Result<OptMeta<'_>, String> {
    let mut m = OptMeta::default();
    let mut r = Rd { b: data };
    while !r.b.is_empty() {
        let t = r.u8().ok_or("optional metadata cut short")?;
        let v = r
            .lenenc_bytes()
            .ok_or_else(|| format!("optional metadata field {t} cut short"))?;
        let bad = || format!("malformed optional metadata field {t}");
        match t {
            opt::SIGNEDNESS => m.signedness = Some(v),
            opt::DEFAULT_CHARSET => {
                m.default_charset = Some(parse_default_charset(v).ok_or_else(bad)?)
            }
            opt::COLUMN_CHARSET => m.column_charsets = Some(parse_lenenc_list(v).ok_or_else(bad)?),
            opt::COLUMN_NAME => {
                let mut rr = Rd { b: v };
                let mut names = Vec::new();
                while !rr.b.is_empty() {
                    names.push(rr.lenenc_bytes().ok_or_else(bad)?);
                }
                m.names = Some(names);
            }
            opt::SET_STR_VALUE => m.set_labels = Some(parse_str_values(v).ok_or_else(bad)?),
            opt::ENUM_STR_VALUE => m.enum_labels = Some(parse_str_values(v).ok_or_else(bad)?),
            opt::SIMPLE_PRIMARY_KEY => {
                m.has_pk_field = true;
                m.pk.extend(
                    parse_lenenc_list(v)
                        .ok_or_else(bad)?
                        .into_iter()
                        .map(u64::from),
                );
            }
            opt::PRIMARY_KEY_WITH_PREFIX => {
                m.has_pk_field = true;
                let mut rr = Rd { b: v };
                while !rr.b.is_empty() {
                    let idx = rr.lenenc().ok_or_else(bad)?;
                    let _prefix = rr.lenenc().ok_or_else(bad)?;
                    m.pk.push(idx);
                }
            }
            opt::ENUM_AND_SET_DEFAULT_CHARSET => {
                m.es_default_charset = Some(parse_default_charset(v).ok_or_else(bad)?)
            }
            opt::ENUM_AND_SET_COLUMN_CHARSET => {
                m.es_column_charsets = Some(parse_lenenc_list(v).ok_or_else(bad)?)
            }
            // GEOMETRY_TYPE, COLUMN_VISIBILITY, VECTOR_DIMENSIONALITY and future fields are
            // not needed to decode values.
            _ => {}
        }
    }
    Ok(m)
}

/// Spreads DEFAULT_CHARSET / COLUMN_CHARSET over `n` columns (by their index in the group).
fn spread_charsets(
    n: usize,
    default: &Option<(u32, Vec<(usize, u32)>)>,
    per_column: &Option<Vec<u32>>,
) -> Option<Vec<u32>> {
    if let Some(list) = per_column {
        let mut v = list.clone();
        v.resize(n, 0);
        return Some(v);
    }
    let (def, pairs) = default.as_ref()?;
    let mut v = vec![*def; n];
    for &(i, cs) in pairs {
        if let Some(slot) = v.get_mut(i) {
            *slot = cs;
        }
    }
    Some(v)
}

/// The parsed body of a table map, straight from its serialized bytes.
struct RawMap<'a> {
    types: &'a [u8],
    meta: &'a [u8],
    optional: &'a [u8],
}

fn parse_raw(raw: &[u8]) -> Option<RawMap<'_>> {
    let mut r = Rd { b: raw };
    r.take(8)?; // table id (6), flags (2)
    let n = r.u8()? as usize;
    r.take(n + 1)?;
    let n = r.u8()? as usize;
    r.take(n + 1)?;
    let count = usize::try_from(r.lenenc()?).ok()?;
    let types = r.take(count)?;
    let meta = r.lenenc_bytes()?;
    r.take(count.div_ceil(8))?;
    Some(RawMap {
        types,
        meta,
        optional: r.b,
    })
}

fn is_char_type(real: u8) -> bool {
    matches!(
        real,
        ty::STRING
            | ty::VAR_STRING
            | ty::VARCHAR
            | ty::BLOB
            | ty::TINY_BLOB
            | ty::MEDIUM_BLOB
            | ty::LONG_BLOB
            | ty::VARCHAR_COMPRESSED
            | ty::BLOB_COMPRESSED
    )
}

fn is_numeric_type(code: u8) -> bool {
    matches!(
        code,
        ty::TINY
            | ty::SHORT
            | ty::INT24
            | ty::LONG
            | ty::LONGLONG
            | ty::NEWDECIMAL
            | ty::FLOAT
            | ty::DOUBLE
    )
}

/// Bytes of a binary DECIMAL(precision, scale).
pub(crate) fn decimal_bin_size(precision: usize, scale: usize) -> usize {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let intg = precision - scale;
    (intg / 9) * 4 + DIG2BYTES[intg % 9] + (scale / 9) * 4 + DIG2BYTES[scale % 9]
}

fn fsp_of(meta: &[u8]) -> Result<u8, &'static str> {
    match meta.first() {
        Some(&f) if f <= 6 => Ok(f),
        _ => Err("fractional seconds precision above 6"),
    }
}

fn len_bytes_of(meta: &[u8]) -> Result<u8, &'static str> {
    match meta.first() {
        Some(&n @ 1..=4) => Ok(n),
        _ => Err("length prefix size not in 1..=4"),
    }
}

/// The column kind from the type code and metadata; `text` is filled in later for strings.
fn kind_of(code: u8, meta: &[u8], unsigned: bool) -> (u8, ColumnKind) {
    use ColumnKind as K;
    let unsup = |reason| K::Unsupported {
        type_code: code,
        reason,
    };
    let text = TextKind::Unknown;
    let kind = match code {
        ty::NULL => K::Null,
        ty::TINY => K::Int { bytes: 1, unsigned },
        ty::SHORT => K::Int { bytes: 2, unsigned },
        ty::INT24 => K::Int { bytes: 3, unsigned },
        ty::LONG => K::Int { bytes: 4, unsigned },
        ty::LONGLONG => K::Int { bytes: 8, unsigned },
        ty::FLOAT => K::Float,
        ty::DOUBLE => K::Double,
        ty::NEWDECIMAL => {
            let (p, s) = (meta[0], meta[1]);
            if p == 0 || p > 65 || s > 38 || s > p {
                unsup("DECIMAL precision/scale out of range")
            } else {
                K::Decimal {
                    precision: p,
                    scale: s,
                    bytes: decimal_bin_size(p as usize, s as usize) as u8,
                }
            }
        }
        ty::YEAR => K::Year,
        ty::DATE | ty::NEWDATE => K::Date,
        ty::TIME => K::Time,
        ty::DATETIME => K::Datetime,
        ty::TIMESTAMP => K::Timestamp,
        ty::TIME2 => fsp_of(meta).map_or_else(unsup, |fsp| K::Time2 { fsp }),
        ty::DATETIME2 => fsp_of(meta).map_or_else(unsup, |fsp| K::Datetime2 { fsp }),
        ty::TIMESTAMP2 => fsp_of(meta).map_or_else(unsup, |fsp| K::Timestamp2 { fsp }),
        ty::BIT => {
            let bits = meta[1] as usize * 8 + meta[0] as usize;
            let bytes = bits.div_ceil(8);
            if bytes == 0 || bytes > 8 {
                unsup("BIT width not in 1..=64")
            } else {
                K::Bit { bytes: bytes as u8 }
            }
        }
        ty::VARCHAR | ty::VAR_STRING => {
            let max = u16::from_le_bytes([meta[0], meta[1]]);
            K::Str {
                len_bytes: if max > 255 { 2 } else { 1 },
                text,
                pad_to: 0,
            }
        }
        ty::TINY_BLOB | ty::MEDIUM_BLOB | ty::LONG_BLOB | ty::BLOB => len_bytes_of(meta)
            .map_or_else(unsup, |len_bytes| K::Str {
                len_bytes,
                text,
                pad_to: 0,
            }),
        ty::JSON => match meta.first() {
            Some(&n @ 1..=4) => K::Json { len_bytes: n },
            // some servers write 0; the value is always prefixed by a 4-byte length
            _ => K::Json { len_bytes: 4 },
        },
        ty::GEOMETRY => {
            len_bytes_of(meta).map_or_else(unsup, |len_bytes| K::Geometry { len_bytes })
        }
        ty::VECTOR => len_bytes_of(meta).map_or_else(unsup, |len_bytes| K::Vector { len_bytes }),
        ty::STRING => {
            // CHAR/BINARY, ENUM or SET: byte 0 is the real type, with bits 4-5 of a CHAR
            // length above 255 folded in (XOR); byte 1 is the low length byte or pack length.
            let (b0, b1) = (meta[0], meta[1]);
            if b0 == 0 {
                // pre-5.1 style: plain 2-byte length
                let max = u16::from_le_bytes([b0, b1]);
                return (
                    ty::STRING,
                    K::Str {
                        len_bytes: if max > 255 { 2 } else { 1 },
                        text,
                        pad_to: 0,
                    },
                );
            }
            let real = b0 | 0x30;
            match real {
                ty::ENUM => {
                    return (
                        ty::ENUM,
                        match b1 {
                            1 | 2 => K::Enum {
                                size: b1,
                                labels: None,
                            },
                            _ => unsup("ENUM storage size not 1 or 2"),
                        },
                    )
                }
                ty::SET => {
                    return (
                        ty::SET,
                        match b1 {
                            1..=8 => K::Set {
                                size: b1,
                                labels: None,
                            },
                            _ => unsup("SET storage size not in 1..=8"),
                        },
                    )
                }
                ty::STRING => {
                    let max = ((((b0 & 0x30) ^ 0x30) as usize) << 4) | b1 as usize;
                    return (
                        ty::STRING,
                        K::Str {
                            len_bytes: if max > 255 { 2 } else { 1 },
                            text,
                            pad_to: max as u16,
                        },
                    );
                }
                _ => unsup("unknown real type inside MYSQL_TYPE_STRING"),
            }
        }
        ty::ENUM => match meta[1] {
            1 | 2 => K::Enum {
                size: meta[1],
                labels: None,
            },
            _ => unsup("ENUM storage size not 1 or 2"),
        },
        ty::SET => match meta[1] {
            1..=8 => K::Set {
                size: meta[1],
                labels: None,
            },
            _ => unsup("SET storage size not in 1..=8"),
        },
        ty::VARCHAR_COMPRESSED | ty::BLOB_COMPRESSED => {
            unsup("MariaDB compressed column (COMPRESSED attribute)")
        }
        ty::TYPED_ARRAY => unsup("typed array (multi-valued index) values"),
        ty::DECIMAL => unsup("pre-5.0 DECIMAL"),
        _ => unsup("unknown column type"),
    };
    (code, kind)
}

/// Escapes `label` (in the given charset class) as JSON string content without quotes.
fn escape_label(label: &[u8], kind: TextKind) -> Vec<u8> {
    let mut v = Vec::with_capacity(label.len() + 2);
    if kind == TextKind::Latin1 {
        super::value::write_latin1_str(&mut v, label);
    } else {
        write_json_str(&mut v, label);
    }
    // strip the quotes
    v.pop();
    v.remove(0);
    v
}

fn json_key(name: &str) -> Box<[u8]> {
    let mut k = Vec::with_capacity(name.len() + 3);
    write_json_str(&mut k, name.as_bytes());
    k.push(b':');
    k.into_boxed_slice()
}

impl TableSchema {
    /// Builds the decode plan of a table from its table map and, when the binlog lacks names,
    /// signedness, labels or JSON-ness, from information_schema's `extra` (see module docs).
    pub fn from_table_map(
        tme: &TableMapEvent<'_>,
        extra: Option<&ExtraSchema>,
    ) -> Result<TableSchema, DecodeError> {
        Self::from_table_map_with(tme, extra, None)
    }

    /// As [`TableSchema::from_table_map`], knowing whether the writer counts YEAR columns in
    /// the signedness bitmap (MariaDB does, MySQL does not); None guesses from the bitmap's
    /// length, which is ambiguous when both counts fit the same number of bytes.
    pub fn from_table_map_with(
        tme: &TableMapEvent<'_>,
        extra: Option<&ExtraSchema>,
        year_in_signedness: Option<bool>,
    ) -> Result<TableSchema, DecodeError> {
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let mut raw = Vec::with_capacity(256);
        tme.serialize(&mut raw);
        let bad = |detail: String| DecodeError::BadTableMap {
            table: format!("{db}.{table}"),
            detail,
        };
        let map = parse_raw(&raw).ok_or_else(|| bad("event body cut short".into()))?;
        let n = map.types.len();
        let om = parse_optional(map.optional).map_err(bad)?;
        let extra = extra.filter(|e| e.columns.is_empty() || e.columns.len() == n);

        let mut cols = Columns::from_metadata(map.types, map.meta).map_err(|e| bad(e.into()))?;
        cols.apply_signedness(om.signedness, extra, year_in_signedness);
        cols.apply_charsets(&om, extra);
        cols.apply_labels(&om, extra);
        let (names, names_from_binlog) = column_names(n, &om, extra);
        let pk = primary_key(n, &om, extra, names_from_binlog);
        // Known to have no key: the binlog's full metadata or information_schema says so (an
        // empty `pk` without either only means the key is unknown).
        let keyless =
            pk.is_empty() && (names_from_binlog || extra.is_some_and(|e| !e.columns.is_empty()));

        let columns = names
            .into_iter()
            .zip(cols.kinds)
            .map(|(name, kind)| ColumnSchema {
                json_key: json_key(&name),
                name,
                kind,
            })
            .collect();
        Ok(TableSchema {
            db,
            table,
            columns,
            pk,
            keyless,
            names_from_binlog,
        })
    }

    /// `db.table`, for messages.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.db, self.table)
    }
}

/// Marks a column of unknown type and the columns after it in [`Columns::reals`]; not a type
/// code that any group of types matches.
const LOST: u8 = 0xf0;

/// The columns' decode plans while [`TableSchema::from_table_map_with`] builds them, one step
/// per source of truth (see the module docs).
struct Columns<'a> {
    /// The table map's type codes.
    types: &'a [u8],
    /// The real type of each column (CHAR, ENUM and SET hide behind STRING); [`LOST`] past a
    /// column of unknown type.
    reals: Vec<u8>,
    kinds: Vec<ColumnKind>,
}

impl<'a> Columns<'a> {
    /// 1. Types and metadata.
    fn from_metadata(types: &'a [u8], mut meta: &[u8]) -> Result<Self, &'static str> {
        let n = types.len();
        let mut kinds: Vec<ColumnKind> = Vec::with_capacity(n);
        let mut reals: Vec<u8> = Vec::with_capacity(n);
        // Past a column of unknown type the metadata of later columns cannot be located.
        let mut lost = false;
        for &code in types {
            if lost {
                reals.push(LOST);
                kinds.push(ColumnKind::Unsupported {
                    type_code: code,
                    reason: "follows a column of unknown type, so its metadata cannot be located",
                });
                continue;
            }
            match meta_len(code, meta) {
                Some(l) if l <= meta.len() => {
                    let (m, rest) = meta.split_at(l);
                    meta = rest;
                    let (real, kind) = kind_of(code, m, false);
                    reals.push(real);
                    kinds.push(kind);
                }
                Some(_) => return Err("column metadata block cut short"),
                None => {
                    lost = true;
                    reals.push(LOST);
                    kinds.push(ColumnKind::Unsupported {
                        type_code: code,
                        reason: "unknown column type",
                    });
                }
            }
        }
        Ok(Columns {
            types,
            reals,
            kinds,
        })
    }

    /// 2. Signedness (one bit per numeric column, most significant bit first). MySQL counts
    ///    TINYINT..BIGINT, DECIMAL, FLOAT, DOUBLE; some readers also count YEAR, so when only
    ///    that reading fits the field's byte length, it is the one taken.
    fn apply_signedness(
        &mut self,
        bits: Option<&[u8]>,
        extra: Option<&ExtraSchema>,
        year_in_signedness: Option<bool>,
    ) {
        let Some(bits) = bits else {
            if let Some(e) = extra {
                for &i in &e.unsigned {
                    if let Some(ColumnKind::Int { unsigned, .. }) = self.kinds.get_mut(i) {
                        *unsigned = true;
                    }
                }
            }
            return;
        };
        let (types, reals) = (self.types, &self.reals);
        let counted = |i: usize, year: bool| {
            reals[i] != LOST && (is_numeric_type(types[i]) || (year && types[i] == ty::YEAR))
        };
        let count = |year: bool| (0..types.len()).filter(|&i| counted(i, year)).count();
        let with_year = year_in_signedness.unwrap_or_else(|| {
            count(false).div_ceil(8) != bits.len() && count(true).div_ceil(8) == bits.len()
        });
        let mut k = 0usize;
        for i in 0..types.len() {
            if counted(i, with_year) {
                let unsigned = bits.get(k / 8).is_some_and(|b| b & (0x80 >> (k % 8)) != 0);
                if let ColumnKind::Int { unsigned: u, .. } = &mut self.kinds[i] {
                    *u = unsigned;
                }
                k += 1;
            }
        }
    }

    /// 3. Charsets of character columns (MariaDB also counts GEOMETRY as one), and MariaDB's
    ///    JSON columns.
    fn apply_charsets(&mut self, om: &OptMeta<'_>, extra: Option<&ExtraSchema>) {
        let reals = &self.reals;
        let n = reals.len();
        let char_cols_mysql: Vec<usize> = (0..n).filter(|&i| is_char_type(reals[i])).collect();
        let geo = reals.iter().filter(|&&r| r == ty::GEOMETRY).count();
        let mut char_cols = char_cols_mysql.clone();
        if geo > 0 {
            let maria: Vec<usize> = (0..n)
                .filter(|&i| is_char_type(reals[i]) || reals[i] == ty::GEOMETRY)
                .collect();
            let use_maria = match (&om.column_charsets, &om.default_charset) {
                (Some(list), _) => list.len() == maria.len() && list.len() != char_cols_mysql.len(),
                (None, Some((_, pairs))) => pairs.iter().any(|&(ci, _)| {
                    ci >= char_cols_mysql.len()
                        || maria.get(ci).is_some_and(|&c| reals[c] == ty::GEOMETRY)
                }),
                _ => false,
            };
            if use_maria {
                char_cols = maria;
            }
        }
        let charsets = spread_charsets(char_cols.len(), &om.default_charset, &om.column_charsets);
        let binary_extra: Vec<usize> = extra.map(|e| e.binary.clone()).unwrap_or_default();
        for (ci, &col) in char_cols.iter().enumerate() {
            if let ColumnKind::Str { text, .. } = &mut self.kinds[col] {
                *text = match &charsets {
                    Some(cs) => text_kind_of_collation(cs[ci]),
                    None if binary_extra.contains(&col) => TextKind::Binary,
                    None => TextKind::Unknown,
                };
            }
        }
        if let Some(e) = extra {
            for &i in &e.json_columns {
                if let Some(ColumnKind::Str { text, .. }) = self.kinds.get_mut(i) {
                    *text = TextKind::JsonText;
                }
            }
        }
    }

    /// 4. ENUM/SET labels.
    fn apply_labels(&mut self, om: &OptMeta<'_>, extra: Option<&ExtraSchema>) {
        let reals = &self.reals;
        let n = reals.len();
        let es_cols: Vec<usize> = (0..n)
            .filter(|&i| matches!(reals[i], ty::ENUM | ty::SET))
            .collect();
        let es_charsets = spread_charsets(
            es_cols.len(),
            &om.es_default_charset,
            &om.es_column_charsets,
        );
        let es_kind = |col: usize| -> TextKind {
            es_charsets
                .as_ref()
                .and_then(|cs| {
                    es_cols
                        .iter()
                        .position(|&c| c == col)
                        .map(|p| text_kind_of_collation(cs[p]))
                })
                .unwrap_or(TextKind::Utf8)
        };
        for (real, lists) in [(ty::ENUM, &om.enum_labels), (ty::SET, &om.set_labels)] {
            let Some(lists) = lists else { continue };
            let cols = (0..n).filter(|&i| self.reals[i] == real);
            for (col, labels) in cols.zip(lists) {
                let tk = es_kind(col);
                let esc: Vec<Vec<u8>> = labels.iter().map(|l| escape_label(l, tk)).collect();
                match &mut self.kinds[col] {
                    ColumnKind::Enum { labels: slot, .. }
                    | ColumnKind::Set { labels: slot, .. } => {
                        *slot = Some(Labels::from_escaped(&esc))
                    }
                    _ => {}
                }
            }
        }
        if let Some(e) = extra {
            for (col, labels) in &e.enum_labels {
                if let Some(
                    ColumnKind::Enum { labels: slot, .. } | ColumnKind::Set { labels: slot, .. },
                ) = self.kinds.get_mut(*col)
                {
                    if slot.is_none() {
                        let esc: Vec<Vec<u8>> = labels
                            .iter()
                            .map(|l| escape_label(l.as_bytes(), TextKind::Utf8))
                            .collect();
                        *slot = Some(Labels::from_escaped(&esc));
                    }
                }
            }
        }
    }
}

/// 5a. Column names: FULL metadata's, else information_schema's, else `@1`, `@2`, ...; and
/// whether they came from the binlog.
fn column_names(n: usize, om: &OptMeta<'_>, extra: Option<&ExtraSchema>) -> (Vec<String>, bool) {
    let binlog_names = om.names.as_ref().filter(|v| v.len() == n);
    let names = match (binlog_names, extra) {
        (Some(v), _) => v
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect(),
        (None, Some(e)) if e.columns.len() == n => e.columns.clone(),
        _ => (1..=n).map(|i| format!("@{i}")).collect(),
    };
    (names, binlog_names.is_some())
}

/// 5b. The primary key's columns, distinct and in range: FULL metadata's, else
/// information_schema's (unless FULL metadata with names says there is none).
fn primary_key(
    n: usize,
    om: &OptMeta<'_>,
    extra: Option<&ExtraSchema>,
    names_from_binlog: bool,
) -> Vec<usize> {
    let candidates: Vec<usize> = if !om.pk.is_empty() {
        om.pk
            .iter()
            .filter_map(|&i| usize::try_from(i).ok())
            .collect()
    } else if let Some(e) = extra.filter(|_| !om.has_pk_field || !names_from_binlog) {
        e.pk.clone()
    } else {
        Vec::new()
    };
    let mut pk: Vec<usize> = Vec::new();
    for i in candidates {
        if i < n && !pk.contains(&i) {
            pk.push(i);
        }
    }
    pk
}
