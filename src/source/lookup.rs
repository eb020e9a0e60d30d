//! information_schema as a second opinion on a table's shape: column names and primary key
//! when the binlog has no `binlog_row_metadata=FULL`, and MariaDB's JSON columns (stored as
//! LONGTEXT with a `json_valid` CHECK, which the binlog cannot show).
//!
//! The answer describes the table *now*, not at the time of the change: a DDL in between can
//! mislabel columns. The decoder says so in a warning when it depends on this.

use futures_util::future::BoxFuture;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::SourceConfig;
use crate::decode::schema::ExtraSchema;
use crate::decode::SchemaLookup;

pub struct InfoSchemaLookup {
    src: SourceConfig,
    conn: Option<Conn>,
}

impl InfoSchemaLookup {
    pub fn new(src: SourceConfig) -> Self {
        InfoSchemaLookup { src, conn: None }
    }

    async fn fetch(&mut self, db: &str, table: &str) -> Result<ExtraSchema, mysql_async::Error> {
        if self.conn.is_none() {
            self.conn = Some(
                self.src
                    .connect_once()
                    .await
                    .map_err(|e| mysql_async::Error::Other(e.to_string().into()))?,
            );
        }
        let conn = self.conn.as_mut().expect("connected above");
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
        // MariaDB only; MySQL has no such CHECK for JSON and may lack the view's columns.
        let checks: Vec<String> = conn
            .exec(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
                (db, table),
            )
            .await
            .unwrap_or_default();
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
    fn lookup<'a>(&'a mut self, db: &'a str, table: &'a str) -> BoxFuture<'a, Option<ExtraSchema>> {
        Box::pin(async move {
            match self.fetch(db, table).await {
                Ok(extra) if !extra.columns.is_empty() => Some(extra),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(table = %format!("{db}.{table}"), error = %e, "information_schema lookup failed; columns keep positional names");
                    self.conn = None;
                    None
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn enum_labels_with_quotes() {
        assert_eq!(super::split_labels("'a','b''c',''"), vec!["a", "b'c", ""]);
    }
}
