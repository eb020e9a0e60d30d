//! What the source's catalog says about its tables before streaming starts: which are MariaDB
//! SEQUENCE objects (skipped unless named by an `--include`), and which have no row identity
//! (no primary key and no unique key over NOT NULL columns).
//!
//! A keyless table is still captured: its `id` is the whole row (docs/sync-api.md), and
//! identical rows are told apart only by their count. binsync says so once per table at start.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::{classify, Result, SourceConfig};

const SYSTEM_SCHEMAS: &str = "'mysql', 'information_schema', 'performance_schema', 'sys'";

/// Tables by kind, as `db.table`.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub sequences: Vec<String>,
    pub keyless: Vec<String>,
}

impl Catalog {
    pub async fn read(conn: &mut Conn, src: &SourceConfig) -> Result<Catalog> {
        let sequences: Vec<(String, String)> = conn
            .query(format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_TYPE = 'SEQUENCE' AND TABLE_SCHEMA NOT IN ({SYSTEM_SCHEMAS})"
            ))
            .await
            .map_err(|e| classify(e, src))?;
        // A unique index whose columns are all NOT NULL identifies a row; any other table is
        // keyless.
        let keyless: Vec<(String, String)> = conn
            .query(format!(
                "SELECT t.TABLE_SCHEMA, t.TABLE_NAME FROM information_schema.TABLES t \
                 WHERE t.TABLE_TYPE = 'BASE TABLE' AND t.TABLE_SCHEMA NOT IN ({SYSTEM_SCHEMAS}) \
                 AND NOT EXISTS (SELECT 1 FROM information_schema.STATISTICS s \
                   WHERE s.TABLE_SCHEMA = t.TABLE_SCHEMA AND s.TABLE_NAME = t.TABLE_NAME \
                   AND s.NON_UNIQUE = 0 GROUP BY s.INDEX_NAME \
                   HAVING SUM(s.NULLABLE = 'YES') = 0) \
                 ORDER BY 1, 2"
            ))
            .await
            .map_err(|e| classify(e, src))?;
        let join =
            |v: Vec<(String, String)>| v.into_iter().map(|(d, t)| format!("{d}.{t}")).collect();
        Ok(Catalog {
            sequences: join(sequences),
            keyless: join(keyless),
        })
    }
}
