//! Does a table-map event fit the table version the history holds? Checked at every table
//! map decoded with the history (not per row): a mismatch means the history is wrong for this
//! position, and decoding on would put values under the wrong names.
//!
//! Compared: the column count, and each column's binlog type against its declared type:
//! integer width, decimal precision and scale, temporal type and fractional digits, BIT
//! width, ENUM/SET storage size against the number of labels, and the length-prefix size of
//! TEXT/BLOB/JSON columns. Not compared (the event does not carry it, or not reliably):
//! signedness, CHAR/VARCHAR lengths (they are in bytes, which depend on the charset).

use sqlparser::ast::{DataType, ExactNumberInfo};

use super::schema::{ColumnKind, ExtraSchema, TableSchema};
use crate::schema::{Column, Table};

/// Why a table map does not fit a table version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks `binlog` (the decode plan built from the table map alone) against `table`.
pub fn check(table: &Table, binlog: &TableSchema) -> Result<(), Mismatch> {
    if !table.complete {
        return Err(Mismatch(format!(
            "the history does not know the columns of {} (created by CREATE ... AS SELECT, or changed by a statement it could not read)",
            table.qualified()
        )));
    }
    if table.columns.len() != binlog.columns.len() {
        return Err(Mismatch(format!(
            "the binlog has {} columns for {}, the history's version {}",
            binlog.columns.len(),
            table.qualified(),
            table.columns.len()
        )));
    }
    for (i, (col, b)) in table.columns.iter().zip(&binlog.columns).enumerate() {
        if let Err(why) = fits(col, &b.kind) {
            return Err(Mismatch(format!(
                "column {} of {} is {} in the history, but the binlog has {why}",
                i + 1,
                table.qualified(),
                col.data_type
            )));
        }
    }
    Ok(())
}

fn int_bytes(t: &DataType) -> Option<u8> {
    use DataType::*;
    Some(match t {
        TinyInt(_) | TinyIntUnsigned(_) | Bool | Boolean => 1,
        SmallInt(_) | SmallIntUnsigned(_) => 2,
        MediumInt(_) | MediumIntUnsigned(_) => 3,
        Int(_) | IntUnsigned(_) | Integer(_) | IntegerUnsigned(_) => 4,
        BigInt(_) | BigIntUnsigned(_) => 8,
        _ => return None,
    })
}

fn decimal(info: &ExactNumberInfo) -> (u64, i64) {
    match info {
        ExactNumberInfo::None => (10, 0),
        ExactNumberInfo::Precision(p) => (*p, 0),
        ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
    }
}

/// The length-prefix bytes of a TEXT/BLOB type (TINY 1, plain 2, MEDIUM 3, LONG 4).
fn blob_prefix(t: &DataType) -> Option<u8> {
    use DataType::*;
    Some(match t {
        TinyText | TinyBlob => 1,
        Text | Blob(_) => 2,
        MediumText | MediumBlob => 3,
        LongText | LongBlob => 4,
        _ => return None,
    })
}

/// `Ok` when the binlog `kind` can hold `col`; else what the binlog has instead.
fn fits(col: &Column, kind: &ColumnKind) -> Result<(), String> {
    use DataType as D;
    let t = match &col.data_type {
        D::Zerofill(inner) => inner.as_ref(),
        t => t,
    };
    let ok = match (t, kind) {
        (t, ColumnKind::Int { bytes, .. }) if int_bytes(t).is_some() => {
            int_bytes(t) == Some(*bytes)
        }
        (D::Float(info) | D::FloatUnsigned(info), k) => match info {
            // FLOAT(p) with p > 24 is a DOUBLE.
            ExactNumberInfo::Precision(p) | ExactNumberInfo::PrecisionAndScale(p, _) if *p > 24 => {
                matches!(k, ColumnKind::Double)
            }
            _ => matches!(k, ColumnKind::Float),
        },
        (
            D::Double(_)
            | D::DoubleUnsigned(_)
            | D::DoublePrecision
            | D::DoublePrecisionUnsigned
            | D::Real
            | D::RealUnsigned,
            ColumnKind::Double,
        ) => true,
        (
            D::Decimal(info)
            | D::DecimalUnsigned(info)
            | D::Numeric(info)
            | D::Dec(info)
            | D::DecUnsigned(info),
            ColumnKind::Decimal {
                precision, scale, ..
            },
        ) => decimal(info) == (u64::from(*precision), i64::from(*scale)),
        (D::Date, ColumnKind::Date) => true,
        (D::Datetime(fsp), ColumnKind::Datetime2 { fsp: b }) => fsp.unwrap_or(0) == u64::from(*b),
        (D::Datetime(_), ColumnKind::Datetime) => true,
        (D::Timestamp(fsp, _), ColumnKind::Timestamp2 { fsp: b }) => {
            fsp.unwrap_or(0) == u64::from(*b)
        }
        (D::Timestamp(_, _), ColumnKind::Timestamp) => true,
        (D::Time(fsp, _), ColumnKind::Time2 { fsp: b }) => fsp.unwrap_or(0) == u64::from(*b),
        (D::Time(_, _), ColumnKind::Time) => true,
        (D::Custom(name, _), ColumnKind::Year) => name.to_string().eq_ignore_ascii_case("year"),
        (D::Bit(n), ColumnKind::Bit { bytes }) => n.unwrap_or(1).div_ceil(8) == u64::from(*bytes),
        (D::Enum(members, _), ColumnKind::Enum { size, .. }) => {
            (if members.len() > 255 { 2 } else { 1 }) == *size
        }
        (D::Set(labels), ColumnKind::Set { size, .. }) => {
            let bytes = labels.len().div_ceil(8).max(1);
            let bytes = if bytes > 4 { 8 } else { bytes };
            bytes == usize::from(*size)
        }
        (D::JSON, ColumnKind::Json { .. }) => true,
        // MariaDB's JSON is LONGTEXT.
        (D::JSON, ColumnKind::Str { len_bytes, .. }) => *len_bytes == 4,
        (t, ColumnKind::Str { len_bytes, .. }) if blob_prefix(t).is_some() => {
            blob_prefix(t) == Some(*len_bytes)
        }
        (
            D::Char(_)
            | D::Character(_)
            | D::Varchar(_)
            | D::CharacterVarying(_)
            | D::CharVarying(_)
            | D::Nvarchar(_)
            | D::Binary(_)
            | D::Varbinary(_),
            ColumnKind::Str { len_bytes, .. },
        ) => *len_bytes <= 2,
        (D::GeometricType(_), ColumnKind::Geometry { .. }) => true,
        (D::Custom(name, _), ColumnKind::Geometry { .. }) => {
            let n = name.to_string().to_ascii_uppercase();
            [
                "GEOMETRY",
                "POINT",
                "LINESTRING",
                "POLYGON",
                "MULTIPOINT",
                "MULTILINESTRING",
                "MULTIPOLYGON",
                "GEOMETRYCOLLECTION",
                "GEOMCOLLECTION",
            ]
            .contains(&n.as_str())
        }
        (D::Custom(name, _), ColumnKind::Vector { .. }) => {
            name.to_string().eq_ignore_ascii_case("vector")
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(describe(kind))
    }
}

fn describe(kind: &ColumnKind) -> String {
    match kind {
        ColumnKind::Int { bytes, .. } => format!("a {bytes}-byte integer"),
        ColumnKind::Decimal {
            precision, scale, ..
        } => format!("DECIMAL({precision},{scale})"),
        ColumnKind::Str { len_bytes, .. } => format!("a string with a {len_bytes}-byte length"),
        ColumnKind::Enum { size, .. } => format!("an ENUM stored in {size} byte(s)"),
        ColumnKind::Set { size, .. } => format!("a SET stored in {size} byte(s)"),
        other => format!("{other:?}"),
    }
}

/// What the history says that the binlog does not (without FULL metadata), in the form the
/// decoder takes it from information_schema: names, key, JSON-ness, signedness, labels,
/// binary strings.
pub fn extra(table: &Table) -> ExtraSchema {
    let indexes = |f: &dyn Fn(&Column) -> bool| -> Vec<usize> {
        table
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| f(c))
            .map(|(i, _)| i)
            .collect()
    };
    ExtraSchema {
        columns: table.columns.iter().map(|c| c.name.clone()).collect(),
        // The id's columns: the primary key as the server sees it (a promoted unique key).
        pk: table.key_indexes(),
        json_columns: indexes(&|c| c.json),
        unsigned: indexes(&|c| c.unsigned()),
        enum_labels: table
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let labels = c.labels();
                (!labels.is_empty()).then_some((i, labels))
            })
            .collect(),
        binary: indexes(&|c| c.binary),
    }
}

#[cfg(test)]
mod tests;
