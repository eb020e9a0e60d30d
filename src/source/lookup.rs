//! information_schema as a second opinion on a table's shape: column names and primary key
//! when the binlog has no `binlog_row_metadata=FULL`, and MariaDB's JSON columns (stored as
//! LONGTEXT with a `json_valid` CHECK, which the binlog cannot show).
//!
//! The answer describes the table *now*, not at the time of the change: a DDL in between can
//! mislabel columns. The decoder says so in a warning when it depends on this.
//!
//! A lookup that fails is an error, never an empty answer: `classify` decides, from the
//! driver's error, whether it is transient (the connection was lost, the server is
//! restarting: the pipeline reconnects and the table map, read again, asks again) or definite
//! (a privilege is missing: binsync stops and says which). The connection is opened on first
//! use and dropped after any failure.

use std::time::Duration;

use futures_util::future::BoxFuture;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError};

use super::SourceConfig;
use crate::decode::schema::ExtraSchema;
use crate::decode::{LookupError, SchemaLookup};

/// How long opening the lookup connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct InfoSchemaLookup {
    src: SourceConfig,
    conn: Option<Conn>,
}

impl InfoSchemaLookup {
    pub fn new(src: SourceConfig) -> Self {
        InfoSchemaLookup { src, conn: None }
    }

    async fn fetch(&mut self, db: &str, table: &str) -> Result<ExtraSchema, Failure> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = tokio::time::timeout(CONNECT_TIMEOUT, self.src.connect_once())
                    .await
                    .map_err(|_| Failure::ConnectTimeout)?
                    .map_err(Failure::Connect)?;
                self.conn.insert(conn)
            }
        };
        let cols: Vec<(String, String, String, Option<String>, String)> = conn
            .exec(
                "SELECT COLUMN_NAME, COLUMN_KEY, COLUMN_TYPE, CHARACTER_SET_NAME, DATA_TYPE \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            .await?;
        let pk_names: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
                 ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            .await?;
        // MariaDB only; MySQL has no such CHECK for JSON and lacks the view (5.7) or its
        // TABLE_NAME column (8.0), which is no failure.
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
        let mut extra = ExtraSchema::default();
        for (i, (name, _key, column_type, charset, data_type)) in cols.iter().enumerate() {
            extra.columns.push(name.clone());
            let ct = column_type.to_ascii_lowercase();
            if ct.contains("unsigned") {
                extra.unsigned.push(i);
            }
            if data_type.eq_ignore_ascii_case("json")
                || checks
                    .iter()
                    .any(|c| c.replace(['`', ' '], "") == format!("json_valid({name})"))
            {
                extra.json_columns.push(i);
            }
            if charset.as_deref() == Some("binary") {
                extra.binary.push(i);
            }
            if let Some(labels) = ct
                .strip_prefix("enum(")
                .or_else(|| ct.strip_prefix("set("))
                .and_then(|s| s.strip_suffix(')'))
            {
                // Labels as the server prints them: 'a','b''c'. Case as declared.
                let declared =
                    &column_type[column_type.len() - labels.len() - 1..column_type.len() - 1];
                extra.enum_labels.push((i, split_labels(declared)));
            }
        }
        extra.pk = pk_names
            .iter()
            .filter_map(|n| extra.columns.iter().position(|c| c == n))
            .collect();
        Ok(extra)
    }
}

fn split_labels(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut in_quote = false;
    while let Some(c) = chars.next() {
        match (in_quote, c) {
            (false, '\'') => in_quote = true,
            (true, '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
                cur.push('\'');
            }
            (true, '\'') => {
                in_quote = false;
                out.push(std::mem::take(&mut cur));
            }
            (true, c) => cur.push(c),
            (false, _) => {}
        }
    }
    out
}

impl SchemaLookup for InfoSchemaLookup {
    fn lookup<'a>(
        &'a mut self,
        db: &'a str,
        table: &'a str,
    ) -> BoxFuture<'a, Result<Option<ExtraSchema>, LookupError>> {
        Box::pin(async move {
            match self.fetch(db, table).await {
                Ok(extra) => Ok((!extra.columns.is_empty()).then_some(extra)),
                Err(e) => {
                    self.conn = None;
                    Err(classify(format!("{db}.{table}"), e))
                }
            }
        })
    }
}

/// Why [`InfoSchemaLookup::fetch`] failed.
#[derive(Debug)]
enum Failure {
    Driver(mysql_async::Error),
    ConnectTimeout,
    /// Opening the connection failed, already sorted by the source's `classify`.
    Connect(super::Failure),
}

impl From<mysql_async::Error> for Failure {
    fn from(e: mysql_async::Error) -> Self {
        Failure::Driver(e)
    }
}

/// The one place a lookup failure becomes transient or definite.
fn classify(table: String, failure: Failure) -> LookupError {
    const PRIVILEGE: &str = "GRANT SELECT ON *.* TO the binsync user, or set binlog_row_metadata=FULL on the source so that the binlog names the columns itself";
    const REFUSED: &str =
        "the source refused the binsync user: check its user and password (--source)";
    const OTHER: &str = "binsync stops rather than guess the table's columns; fix the cause on the source, or --exclude the table";
    let e = match failure {
        Failure::ConnectTimeout => {
            return LookupError::Transient {
                table,
                detail: format!("no connection within {CONNECT_TIMEOUT:?}"),
            }
        }
        Failure::Connect(super::Failure::Transient(e)) => {
            return LookupError::Transient {
                table,
                detail: e.to_string(),
            }
        }
        Failure::Connect(e @ (super::Failure::Definite(_) | super::Failure::State(_))) => {
            return LookupError::Definite {
                table,
                detail: e.to_string(),
                fix: "binsync stops rather than guess the table's columns",
            }
        }
        Failure::Driver(e) => e,
    };
    let fix = match &e {
        mysql_async::Error::Io(_) => None,
        // The connection broke or the server answered out of turn; the rest (a row that does
        // not convert, an auth plugin we lack) would fail the same way again.
        mysql_async::Error::Driver(d) => match d {
            DriverError::ConnectionClosed
            | DriverError::PoolDisconnected
            | DriverError::PacketOutOfOrder
            | DriverError::UnexpectedPacket { .. }
            | DriverError::BadCompressedPacketHeader => None,
            _ => Some(OTHER),
        },
        mysql_async::Error::Server(se) => match se.code {
            // Too many connections, shutting down, lock wait timeout, deadlock, query
            // interrupted (KILL QUERY, a restart), connection killed, server gone or lost.
            1040 | 1053 | 1205 | 1213 | 1226 | 1317 | 1927 | 2006 | 2013 => None,
            // Access denied to a database, table or column; a missing global privilege.
            1044 | 1142 | 1143 | 1227 => Some(PRIVILEGE),
            1045 | 1698 => Some(REFUSED),
            _ => Some(OTHER),
        },
        mysql_async::Error::Url(_) | mysql_async::Error::Other(_) => Some(OTHER),
    };
    let detail = e.to_string();
    match fix {
        None => LookupError::Transient { table, detail },
        Some(fix) => LookupError::Definite { table, detail, fix },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_labels_with_quotes() {
        assert_eq!(split_labels("'a','b''c',''"), vec!["a", "b'c", ""]);
    }

    fn server(code: u16) -> Failure {
        Failure::Driver(mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: format!("error {code}"),
            state: "HY000".into(),
        }))
    }

    #[test]
    fn lost_connections_are_transient_missing_privileges_definite() {
        let transient = [
            server(1040),
            server(1053),
            server(2006),
            server(2013),
            server(1927),
            Failure::ConnectTimeout,
            Failure::Driver(mysql_async::Error::Driver(DriverError::ConnectionClosed)),
            Failure::Driver(mysql_async::Error::Io(mysql_async::IoError::Io(
                std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            ))),
        ];
        for f in transient {
            let e = classify("shop.orders".into(), f);
            assert!(matches!(e, LookupError::Transient { .. }), "{e}");
            assert!(e.to_string().contains("shop.orders"), "{e}");
        }
        for code in [1142, 1143, 1227, 1044] {
            let e = classify("shop.orders".into(), server(code));
            assert!(matches!(e, LookupError::Definite { .. }), "{e}");
            assert!(e.to_string().contains("GRANT SELECT"), "{e}");
        }
        let e = classify("shop.orders".into(), server(1045));
        assert!(
            matches!(e, LookupError::Definite { .. }) && e.to_string().contains("password"),
            "{e}"
        );
        let e = classify("shop.orders".into(), server(1064));
        assert!(matches!(e, LookupError::Definite { .. }), "{e}");
    }
}
