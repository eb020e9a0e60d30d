//! Scenario: the decoder meets a table the binlog does not fully describe (no
//! `binlog_row_metadata=FULL`: no column names; MariaDB: JSON columns look like LONGTEXT).
//! What the binlog does not say comes from the schema history's version of the table, the one
//! valid where the rows were written (`binsync run` and `replay` no longer ask
//! information_schema, which knows a table only as it is now). A table the history does not
//! hold, holds as unknown at the stream's start, or holds in a version that does not fit the
//! table map is a definite error naming it, never rows with positional names (`@1`, `@2`,
//! ...), and it stays one when the events are read again (the same decoder after `restart()`,
//! as the pipeline does after a reconnect).
//!
//! The events are real ones, from `shared/fixtures/mysql-binlogs/`. (MariaDB's JSON columns
//! named by the history are checked on a live server: `tests/lookup_mariadb.rs`,
//! `tests/schema_live.rs`; the one MariaDB fixture has no JSON column, only a BLOB.)

mod binlog_fixtures;

use std::sync::Arc;

use binsync::decode::{DecodeConfig, Decoder, StreamError};
use binsync::replay::BinlogFile;
use binsync::schema::{ddl, Catalog};
use binsync::Position;

/// MINIMAL metadata (MySQL 8.0): one insert into `noria.t1` (5 columns), a minimal row image.
const MINIMAL: &str = "minimal_row_metadata.000001";
/// `noria.t1` as its table map describes it: INT NOT NULL, BLOB, BINARY(8) (a CHAR(2) in
/// utf8mb4), INT, INT UNSIGNED.
const T1: &str =
    "CREATE TABLE noria.t1 (a INT NOT NULL PRIMARY KEY, b TEXT, c CHAR(2), d INT, e INT UNSIGNED)";

/// A history holding the tables `sql` creates.
fn history(sql: &str) -> Catalog {
    let mut catalog = Catalog::default();
    ddl::apply(&mut catalog, "", sql).unwrap();
    catalog
}

/// A decoder as `binsync run` makes one: the history claims to know every captured table.
fn decoder(history: Catalog) -> Decoder {
    Decoder::new(
        Arc::new(DecodeConfig::default()),
        Position::default(),
        None,
        None,
        None,
    )
    .with_history(history)
}

/// Feeds a fixture's events through the decoder like the live stream does (`on_event`, then
/// `take_chunk`); returns the lines handed on and the error that stopped the pass, if any.
async fn pass(d: &mut Decoder, fixture: &str) -> (Vec<String>, Option<StreamError>) {
    let mut file = BinlogFile::open(&binlog_fixtures::dir().join(fixture)).unwrap();
    d.start_file(file.name());
    let mut lines = Vec::new();
    let mut take = |d: &mut Decoder, idle: bool| {
        if let Some(chunk) = d.take_chunk(idle) {
            for c in &chunk.changes {
                lines.push(String::from_utf8(chunk.line(c).to_vec()).unwrap());
            }
        }
    };
    let mut failed = None;
    while let Some(ev) = file.next_event().unwrap() {
        if let Err(e) = d.on_event(&ev).await {
            failed = Some(e);
            break;
        }
        take(d, false);
    }
    take(d, true);
    (lines, failed)
}

#[tokio::test]
async fn without_names_in_the_binlog_the_rows_are_named_by_the_history() {
    let mut d = decoder(history(T1));
    let (lines, failed) = pass(&mut d, MINIMAL).await;
    assert!(failed.is_none(), "{failed:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(r#""id":{"a":1}"#)
            && lines[0].ends_with(r#""after":{"a":1,"c":"a","e":3230202323}}"#),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn a_table_the_history_cannot_describe_is_a_definite_error_never_positional_names() {
    let cases = [
        (
            "not in the history",
            decoder(Catalog::default()),
            "holds no such table",
        ),
        (
            "changed between the start and the seed",
            decoder(Catalog::default())
                .with_seed_gaps([("noria".to_string(), "t1".to_string())], Vec::new()),
            "its definition here is unknown",
        ),
        (
            "a version with a column less",
            decoder(history(
                "CREATE TABLE noria.t1 (a INT NOT NULL PRIMARY KEY, b TEXT, c CHAR(2), d INT)",
            )),
            "the binlog has 5 columns",
        ),
        (
            "a version with another type",
            decoder(history(&T1.replace("d INT", "d BIGINT"))),
            "column 4 of noria.t1 is BIGINT",
        ),
    ];
    for (what, mut d, says) in cases {
        for attempt in 1..=2 {
            let (lines, failed) = pass(&mut d, MINIMAL).await;
            assert_eq!(lines, Vec::<String>::new(), "{what}, pass {attempt}");
            let e = failed.unwrap_or_else(|| panic!("{what}, pass {attempt}: no error"));
            assert!(
                matches!(e, StreamError::SchemaHistory { .. }),
                "{what}, pass {attempt}: {e:?}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains("noria.t1")
                    && msg.contains(says)
                    && msg.contains("will not guess column names"),
                "{what}, pass {attempt}: {msg}"
            );
            d.restart();
        }
    }
}
