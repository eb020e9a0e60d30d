//! A table's snapshot plan: its columns in table order with how each value becomes JSON, the
//! key chunks are paged by, and the columns of the `id` object. Read once per table from
//! information_schema (the table as it is when its snapshot starts), with JSON-ness from the
//! schema history when it knows the table.
//!
//! Invariants:
//! - `columns` lists every column in table order, invisible and generated ones included, as a
//!   row image does, so a `read` line's `after` has the binlog's columns in the binlog's order.
//! - The `id` columns are the decoder's: the primary key as the server sees it (a unique NOT
//!   NULL index is promoted to it when there is no PRIMARY KEY, and the binlog's FULL metadata
//!   names it), or every column when the table has none (`keyless`), whatever key the chunks
//!   are paged by.
//! - The paging key is the primary key, else a unique index over NOT NULL columns without
//!   prefix parts (the one with the fewest columns, then by name), else an explicit
//!   `--snapshot-key` choice; nothing else is guessed.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::SnapshotError;
use crate::decode::schema::TextKind;
use crate::json::write_json_str;

/// How one column's value is read and written as JSON (see the table in `decode::value`).
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Int,
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Year,
    Date,
    Datetime {
        fsp: u8,
    },
    Timestamp {
        fsp: u8,
    },
    Time {
        fsp: u8,
    },
    /// Strings of every kind: text in a charset, binary (base64), MariaDB JSON in text.
    Text(TextKind),
    /// MySQL's binary JSON, which the server sends as its JSON text.
    Json,
    Bit,
    /// ENUM and SET: the server sends the label text, in the column's charset.
    Label(TextKind),
    Geometry,
    /// A type the snapshot cannot encode as the decoder does; a non-NULL value fails the chunk.
    Unsupported(String),
}

#[derive(Debug, Clone)]
pub struct PlanColumn {
    pub name: String,
    /// `"name":`, escaped, as the decoder writes it.
    pub json_key: Box<[u8]>,
    pub kind: Kind,
    pub charset: Option<String>,
    pub collation: Option<String>,
    pub nullable: bool,
    /// Part of the table's primary key as the server sees it: its PRIMARY KEY or, without
    /// one, the unique NOT NULL index it promotes (information_schema's `COLUMN_KEY` `PRI`,
    /// and the key `binlog_row_metadata=FULL` names).
    pub primary: bool,
}

#[derive(Debug, Clone)]
pub struct TablePlan {
    pub db: String,
    pub table: String,
    pub columns: Vec<PlanColumn>,
    /// The index chunks are paged by (`PRIMARY` or a unique index's name) and its columns.
    pub page_index: String,
    pub page_key: Vec<usize>,
    /// The columns of the `id` object, in key order.
    pub id: Vec<usize>,
    /// No primary key: `id` is the whole row (`"keyless":true` on its operations).
    pub keyless: bool,
}

impl TablePlan {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.db, self.table)
    }

    /// Reads the plan of `db.table` from information_schema. `history` is the schema
    /// history's version of the table when it has one: its `json` flags say which columns
    /// hold JSON (MariaDB's JSON is LONGTEXT with a CHECK); without it the CHECK constraints
    /// are read. `snapshot_key` is the user's `--snapshot-key` choice of paging columns for a
    /// table without a primary key.
    pub async fn load(
        conn: &mut Conn,
        db: &str,
        table: &str,
        history: Option<&crate::schema::Table>,
        snapshot_key: Option<&[String]>,
    ) -> Result<TablePlan, SnapshotError> {
        type ColRow = (
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            String,
            String,
        );
        let rows: Vec<ColRow> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, \
                 NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, IS_NULLABLE, COLUMN_KEY \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            .await?;
        if rows.is_empty() {
            return Err(SnapshotError::NoTable {
                table: format!("{db}.{table}"),
            });
        }
        let json_cols: Vec<String> = match history {
            Some(t) => t
                .columns
                .iter()
                .filter(|c| c.json)
                .map(|c| c.name.clone())
                .collect(),
            None => json_checks(conn, db, table).await?,
        };
        let columns: Vec<PlanColumn> = rows
            .into_iter()
            .map(
                |(
                    name,
                    data_type,
                    column_type,
                    charset,
                    collation,
                    prec,
                    scale,
                    fsp,
                    nullable,
                    column_key,
                )| {
                    let json = json_cols.iter().any(|j| j.eq_ignore_ascii_case(&name));
                    let kind = kind_of(
                        &data_type,
                        &column_type,
                        charset.as_deref(),
                        prec,
                        scale,
                        fsp,
                        json,
                    );
                    let mut json_key = Vec::with_capacity(name.len() + 3);
                    write_json_str(&mut json_key, name.as_bytes());
                    json_key.push(b':');
                    PlanColumn {
                        name,
                        json_key: json_key.into_boxed_slice(),
                        kind,
                        charset,
                        collation,
                        nullable: nullable.eq_ignore_ascii_case("YES"),
                        primary: column_key.eq_ignore_ascii_case("PRI"),
                    }
                },
            )
            .collect();

        // Unique indexes, their columns in order, with prefix lengths.
        let stats: Vec<(String, String, Option<u64>)> = conn
            .exec(
                "SELECT INDEX_NAME, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
                 ORDER BY INDEX_NAME, SEQ_IN_INDEX",
                (db, table),
            )
            .await?;
        let mut indexes: Vec<(String, Vec<String>, bool)> = Vec::new();
        for (index, column, sub_part) in stats {
            match indexes.last_mut() {
                Some((name, cols, prefix)) if *name == index => {
                    cols.push(column);
                    *prefix |= sub_part.is_some();
                }
                _ => indexes.push((index, vec![column], sub_part.is_some())),
            }
        }
        let mut plan = TablePlan {
            db: db.to_string(),
            table: table.to_string(),
            columns,
            page_index: String::new(),
            page_key: Vec::new(),
            id: Vec::new(),
            keyless: true,
        };
        let (page_index, page_cols, primary) = choose_key(&plan, &indexes, snapshot_key)?;
        plan.page_key = page_cols
            .iter()
            .map(|c| plan.column_index(c))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| SnapshotError::NoKey {
                table: plan.qualified(),
            })?;
        plan.page_index = page_index;
        plan.keyless = !primary;
        plan.id = if plan.keyless {
            (0..plan.columns.len()).collect()
        } else {
            plan.page_key.clone()
        };
        for &k in &plan.page_key {
            let col = &plan.columns[k];
            if !key_kind_supported(&col.kind) {
                return Err(SnapshotError::UnsupportedKey {
                    table: plan.qualified(),
                    column: col.name.clone(),
                    kind: format!("{:?}", col.kind),
                });
            }
        }
        Ok(plan)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// MariaDB's JSON columns: those with a `json_valid(col)` CHECK. (MySQL has no such view
/// column, which is no failure: its JSON columns have their own type.)
async fn json_checks(conn: &mut Conn, db: &str, table: &str) -> Result<Vec<String>, SnapshotError> {
    let checks: Vec<String> = match conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (db, table),
        )
        .await
    {
        Ok(checks) => checks,
        Err(mysql_async::Error::Server(e)) if matches!(e.code, 1054 | 1109) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(checks
        .iter()
        .filter_map(|c| {
            let c = c.replace(['`', ' '], "");
            c.strip_prefix("json_valid(")
                .and_then(|r| r.strip_suffix(')'))
                .map(str::to_string)
        })
        .collect())
}

/// The paging key, and whether it is the server's primary key (then it is also the `id`):
/// the primary key, or the unique NOT NULL index the server promotes to it, else the user's
/// choice, else the narrowest unique index over NOT NULL columns without prefix parts.
fn choose_key(
    plan: &TablePlan,
    indexes: &[(String, Vec<String>, bool)],
    snapshot_key: Option<&[String]>,
) -> Result<(String, Vec<String>, bool), SnapshotError> {
    if let Some((name, cols, _)) = indexes.iter().find(|(n, _, _)| n == "PRIMARY") {
        return Ok((name.clone(), cols.clone(), true));
    }
    let marked = plan.columns.iter().filter(|c| c.primary).count();
    let is_marked = |c: &String| {
        plan.column_index(c)
            .is_some_and(|i| plan.columns[i].primary)
    };
    if let Some((name, cols, _)) = indexes
        .iter()
        .find(|(_, cols, prefix)| !prefix && cols.len() == marked && cols.iter().all(is_marked))
    {
        return Ok((name.clone(), cols.clone(), true));
    }
    let not_null = |c: &String| {
        plan.column_index(c)
            .is_some_and(|i| !plan.columns[i].nullable)
    };
    if let Some(want) = snapshot_key {
        // An index over exactly these columns, in this order, pages efficiently; without one
        // the chunks still read right, each by a scan (the user chose it).
        let index = indexes
            .iter()
            .find(|(_, cols, prefix)| {
                !prefix
                    && cols.len() == want.len()
                    && cols
                        .iter()
                        .zip(want)
                        .all(|(a, b)| a.eq_ignore_ascii_case(b))
            })
            .map(|(n, _, _)| n.clone())
            .unwrap_or_default();
        return Ok((index, want.to_vec(), false));
    }
    indexes
        .iter()
        .filter(|(_, cols, prefix)| !prefix && cols.iter().all(not_null))
        .min_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| a.0.cmp(&b.0)))
        .map(|(n, cols, _)| (n.clone(), cols.clone(), false))
        .ok_or_else(|| SnapshotError::NoKey {
            table: plan.qualified(),
        })
}

/// Key types whose values bind back as comparable parameters (see `chunk`).
fn key_kind_supported(kind: &Kind) -> bool {
    match kind {
        Kind::Int
        | Kind::Float
        | Kind::Double
        | Kind::Decimal { .. }
        | Kind::Year
        | Kind::Date
        | Kind::Datetime { .. }
        | Kind::Timestamp { .. }
        | Kind::Time { .. } => true,
        Kind::Text(t) => *t != TextKind::JsonText,
        Kind::Json | Kind::Bit | Kind::Label(_) | Kind::Geometry | Kind::Unsupported(_) => false,
    }
}

/// A charset name as the decoder classes it (`decode::schema`'s collation table).
pub(crate) fn text_kind(charset: Option<&str>) -> TextKind {
    match charset.map(|c| c.to_ascii_lowercase()).as_deref() {
        Some("binary") => TextKind::Binary,
        Some("latin1") => TextKind::Latin1,
        Some("ucs2") | Some("utf16") => TextKind::Utf16Be,
        Some("utf16le") => TextKind::Utf16Le,
        Some("utf32") => TextKind::Utf32,
        _ => TextKind::Utf8,
    }
}

pub(crate) fn kind_of(
    data_type: &str,
    column_type: &str,
    charset: Option<&str>,
    precision: Option<u64>,
    scale: Option<u64>,
    fsp: Option<u64>,
    json: bool,
) -> Kind {
    let fsp = fsp.unwrap_or(0).min(6) as u8;
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => Kind::Int,
        "float" => Kind::Float,
        "double" | "real" | "double precision" => Kind::Double,
        "decimal" | "numeric" => Kind::Decimal {
            precision: precision.unwrap_or(10).min(65) as u8,
            scale: scale.unwrap_or(0).min(38) as u8,
        },
        "year" => Kind::Year,
        "date" => Kind::Date,
        "datetime" => Kind::Datetime { fsp },
        "timestamp" => Kind::Timestamp { fsp },
        "time" => Kind::Time { fsp },
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
            if json {
                Kind::Text(TextKind::JsonText)
            } else {
                Kind::Text(text_kind(charset))
            }
        }
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            Kind::Text(TextKind::Binary)
        }
        "json" => Kind::Json,
        "bit" => Kind::Bit,
        "enum" | "set" => Kind::Label(text_kind(charset)),
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => Kind::Geometry,
        _ => Kind::Unsupported(column_type.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_to_the_decoders_classes() {
        let k = |dt: &str, cs: Option<&str>| kind_of(dt, dt, cs, Some(10), Some(2), Some(3), false);
        assert_eq!(k("BIGINT", None), Kind::Int);
        assert_eq!(
            k("decimal", None),
            Kind::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(k("datetime", None), Kind::Datetime { fsp: 3 });
        assert_eq!(k("varchar", Some("latin1")), Kind::Text(TextKind::Latin1));
        assert_eq!(k("text", Some("utf8mb4")), Kind::Text(TextKind::Utf8));
        assert_eq!(k("varbinary", None), Kind::Text(TextKind::Binary));
        assert_eq!(k("enum", Some("latin1")), Kind::Label(TextKind::Latin1));
        assert_eq!(k("point", None), Kind::Geometry);
        assert_eq!(
            kind_of(
                "longtext",
                "longtext",
                Some("utf8mb4"),
                None,
                None,
                None,
                true
            ),
            Kind::Text(TextKind::JsonText)
        );
        assert_eq!(k("inet6", None), Kind::Unsupported("inet6".into()));
    }

    #[test]
    fn json_text_bit_labels_and_geometry_cannot_page() {
        assert!(key_kind_supported(&Kind::Text(TextKind::Latin1)));
        assert!(key_kind_supported(&Kind::Timestamp { fsp: 6 }));
        assert!(!key_kind_supported(&Kind::Text(TextKind::JsonText)));
        assert!(!key_kind_supported(&Kind::Label(TextKind::Utf8)));
        assert!(!key_kind_supported(&Kind::Bit));
    }
}
