//! Scenario: the decoder needs information_schema for a table the binlog does not fully
//! describe (no `binlog_row_metadata=FULL`: no column names; MariaDB: JSON columns look like
//! LONGTEXT), and the lookup fails. The table map must fail with the lookup's own error,
//! transient or definite, never turn into rows with positional names (`@1`, `@2`, ...) or
//! MariaDB JSON as strings; a failure is not cached, so a retry (the same decoder after
//! `restart()`, reading the events again, as the pipeline does after a reconnect) asks again
//! and, when the server answers, emits the real names.
//!
//! The events are real ones, from `shared/fixtures/mysql-binlogs/`.

mod binlog_fixtures;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use binsync::decode::schema::ExtraSchema;
use binsync::decode::{DecodeConfig, Decoder, LookupError, SchemaLookup, StreamError};
use binsync::replay::BinlogFile;
use binsync::Position;
use futures_util::future::BoxFuture;

/// Fails the first `failures` lookups with `error`, then answers `answer`.
struct FlakyLookup {
    calls: Arc<AtomicUsize>,
    failures: usize,
    error: fn(String) -> LookupError,
    answer: ExtraSchema,
}

impl SchemaLookup for FlakyLookup {
    fn lookup<'a>(
        &'a mut self,
        db: &'a str,
        table: &'a str,
    ) -> BoxFuture<'a, Result<Option<ExtraSchema>, LookupError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let result = if n < self.failures {
            Err((self.error)(format!("{db}.{table}")))
        } else {
            Ok(Some(self.answer.clone()))
        };
        Box::pin(async move { result })
    }
}

fn connection_lost(table: String) -> LookupError {
    LookupError::Transient {
        table,
        detail: "Input/output error: connection reset by peer".into(),
    }
}

fn no_privilege(table: String) -> LookupError {
    LookupError::Definite {
        table,
        detail: "ERROR 1142 (42000): SELECT command denied".into(),
        fix: "GRANT SELECT ON *.* TO the binsync user",
    }
}

fn decoder(lookup: FlakyLookup) -> Decoder {
    Decoder::new(
        Arc::new(DecodeConfig::default()),
        Position::default(),
        None,
        None,
        Some(Box::new(lookup)),
    )
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

fn positional(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.contains("\"@1\"")).collect()
}

#[tokio::test]
async fn a_lost_connection_during_a_lookup_is_retried_not_turned_into_positional_names() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut d = decoder(FlakyLookup {
        calls: calls.clone(),
        failures: 1,
        error: connection_lost,
        answer: ExtraSchema {
            columns: ["a", "b", "c", "d", "e"].map(String::from).to_vec(),
            pk: vec![0],
            ..Default::default()
        },
    });
    // minimal_row_metadata.000001: MINIMAL metadata, one insert into noria.t1 (5 columns).
    let (lines, failed) = pass(&mut d, "minimal_row_metadata.000001").await;
    assert_eq!(positional(&lines), Vec::<&String>::new());
    let e = failed.expect("the failed lookup stops the pass");
    assert!(
        matches!(&e, StreamError::Lookup(LookupError::Transient { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("noria.t1"), "{e}");

    d.restart();
    let (lines, failed) = pass(&mut d, "minimal_row_metadata.000001").await;
    assert!(failed.is_none(), "{failed:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the failure was not cached"
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(r#""id":{"a":1}"#)
            && lines[0].ends_with(r#""after":{"a":1,"c":"a","e":3230202323}}"#),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn mariadb_json_stays_json_after_a_failed_lookup() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut d = decoder(FlakyLookup {
        calls: calls.clone(),
        failures: 1,
        error: connection_lost,
        answer: ExtraSchema {
            columns: ["id", "topic", "event_type", "event", "created"]
                .map(String::from)
                .to_vec(),
            pk: vec![0],
            json_columns: vec![3],
            ..Default::default()
        },
    });
    // mariadb-bin.000001: FULL metadata, so names; `event` is a JSON column the binlog shows
    // as LONGBLOB.
    let (lines, failed) = pass(&mut d, "mariadb-bin.000001").await;
    assert_eq!(lines, Vec::<String>::new(), "no row before its table map");
    assert!(failed.is_some_and(|e| matches!(e, StreamError::Lookup(LookupError::Transient { .. }))));

    d.restart();
    let (lines, failed) = pass(&mut d, "mariadb-bin.000001").await;
    assert!(failed.is_none(), "{failed:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert!(line.contains(r#""event":{"foo":1}"#), "{line}");
    }
}

#[tokio::test]
async fn a_definite_lookup_failure_stops_with_its_fix_and_is_asked_again_next_time() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut d = decoder(FlakyLookup {
        calls: calls.clone(),
        failures: usize::MAX,
        error: no_privilege,
        answer: ExtraSchema::default(),
    });
    for attempt in 1..=2 {
        let (lines, failed) = pass(&mut d, "minimal_row_metadata.000001").await;
        assert_eq!(lines, Vec::<String>::new());
        let e = failed.expect("the failed lookup stops the pass");
        assert!(
            matches!(e, StreamError::Lookup(LookupError::Definite { .. })),
            "{e}"
        );
        assert!(
            e.to_string().contains("noria.t1") && e.to_string().contains("GRANT SELECT"),
            "{e}"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            attempt,
            "asked again, not cached"
        );
        d.restart();
    }
}
