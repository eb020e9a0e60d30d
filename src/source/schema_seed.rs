//! The schema history's first versions, read from the source: each tracked table's
//! `SHOW CREATE TABLE`, read by the same DDL reader that follows the binlog
//! ([`crate::schema::ddl`]), so a table seeded here and one created in the stream are the same
//! value. (information_schema would need its own translation of types, JSON checks and keys.)
//!
//! Consistency with a binlog position is the caller's: this reads the tables as they are now.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::{classify, Failure, Result, SourceConfig, SourceError};
use crate::filter::Filter;
use crate::schema::{ddl, Catalog};

const SYSTEM_SCHEMAS: &str = "'mysql', 'information_schema', 'performance_schema', 'sys'";

/// The base tables `filter` tracks, as `(db, table)`, in name order.
pub async fn tracked_tables(
    conn: &mut Conn,
    src: &SourceConfig,
    filter: &Filter,
) -> Result<Vec<(String, String)>> {
    let all: Vec<(String, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ({SYSTEM_SCHEMAS}) ORDER BY 1, 2"
        ))
        .await
        .map_err(|e| classify(e, src))?;
    Ok(all
        .into_iter()
        .filter(|(d, t)| filter.matches(d, t))
        .collect())
}

/// A catalog of `tables` as the server describes them now. A definition the DDL reader cannot
/// read is a definite error naming the table (never a guessed shape).
pub async fn read(
    conn: &mut Conn,
    src: &SourceConfig,
    tables: &[(String, String)],
) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    for (db, table) in tables {
        let sql = format!("SHOW CREATE TABLE {}.{}", quote(db), quote(table));
        let row: Option<(String, String)> =
            conn.query_first(sql).await.map_err(|e| classify(e, src))?;
        let Some((_, create)) = row else {
            // Dropped since it was listed: nothing to describe.
            continue;
        };
        ddl::apply(&mut catalog, db, &create).map_err(|e| -> Failure {
            SourceError::Unsupported(format!(
                "cannot read the definition of {db}.{table} for the schema history ({e}); report it with the statement, and meanwhile set binlog_row_metadata=FULL on the source"
            ))
            .into()
        })?;
    }
    Ok(catalog)
}

/// A backquoted identifier.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}
