//! Scenario: binsync streams from a MySQL 8.0 source writing compressed transactions
//! (`binlog_transaction_compression=ON`), played by `tests/mysql_double` over variants of
//! the real `transaction_compression.000001` (tests/compressed_fixture). An intact compressed
//! transaction delivers its row as `binsync replay` does; one whose zstd payload is damaged,
//! or decompresses to another size than its header states, stops the run with one error
//! naming the binlog file and the transaction's end position, and the checkpoint does not
//! move past it (a second run stops the same way): never an empty or shortened transaction
//! taken for a whole one.

mod binlog_fixtures;
mod common;
mod compressed_fixture;
mod mysql_double;

use std::path::Path;
use std::time::Duration;

use common::Proc;
use compressed_fixture::{payload_event_end, with_payload, zstd_payload, ZSTD};
use mysql_double::{ColumnDesc, MysqlDouble, Options, Profile, TableDesc};

/// `test.tb1` as information_schema shows it (the binlog has minimal metadata: no names).
fn options() -> Options {
    Options {
        tables: vec![TableDesc {
            db: "test".into(),
            name: "tb1".into(),
            columns: vec![ColumnDesc::new("id", "int", true)],
        }],
        ..Options::default()
    }
}

/// `binsync run` from the earliest event of the double serving `file`, `runs` times over the
/// same state dir (each resuming from the last one's checkpoint), each until it exits or
/// has delivered `rows` rows in all (then stopped with SIGTERM): each run's exit code and
/// stderr, and the lines delivered by them all.
///
/// (Not `--exit-at-end`: the fixture's transactions are anonymous, so the GTID set that
/// marks the binlog's end is empty and already reached before the first event.)
fn runs_over(file: &[u8], runs: usize, rows: usize) -> (Vec<(Option<i32>, String)>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let served = compressed_fixture::write(tmp.path(), file);
    let double = MysqlDouble::start(Profile::Mysql80, vec![served], options());
    let out = tmp.path().join("out.jsonl");
    let state = tmp.path().join("state");
    let lines = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let results = (0..runs)
        .map(|_| {
            let mut p = run(&double, &state, &out);
            common::wait_until(
                Duration::from_secs(30),
                "the run to exit or deliver",
                || !p.is_running() || lines().len() >= rows,
            );
            if p.is_running() {
                p.sigterm();
            }
            p.wait_timeout(Duration::from_secs(30)).expect("run hung");
            (p.try_status().and_then(|s| s.code()), p.stderr())
        })
        .collect();
    (results, lines())
}

fn run(double: &MysqlDouble, state: &Path, out: &Path) -> Proc {
    Proc::spawn(
        &[
            "run",
            "--source",
            &double.url(),
            "--server-id",
            "4242",
            "--state-dir",
            state.to_str().unwrap(),
            "--start",
            "earliest",
            "--connect-timeout",
            "5s",
            "--sink",
            &format!("file:{}", out.display()),
        ],
        &[],
    )
}

/// The run stops with one error naming the served file and where the compressed
/// transaction ends, and so does a second run from its checkpoint: the checkpoint did not
/// move past the transaction. (Its row may have been delivered before the damage showed,
/// positioned inside the transaction, as with a stream cut there; never twice.)
fn assert_stopped(what: &str, file: &[u8], detail: &str) {
    // (A row that came before the damage showed is no reason to stop waiting.)
    let (runs, lines) = runs_over(file, 2, usize::MAX);
    let place = format!(
        "binlog.000001: the compressed transaction ending at byte {}: transaction payload",
        payload_event_end(file)
    );
    for (i, (code, stderr)) in runs.iter().enumerate() {
        assert_eq!(*code, Some(1), "{what}, run {i}: {stderr}");
        let error = stderr
            .lines()
            .find(|l| l.starts_with("binsync: error:"))
            .unwrap_or_else(|| panic!("{what}, run {i}: no error line: {stderr}"));
        assert!(
            error.contains(&place) && error.contains(detail),
            "{what}, run {i}: {error}"
        );
        eprintln!("{what}, run {i}: {error}");
    }
    assert!(lines.len() <= 1, "{what}: {lines:?}");
}

#[test]
fn mysql80_compressed_transaction_delivers_its_row() {
    let file = with_payload(ZSTD, 179, &zstd_payload());
    let (runs, lines) = runs_over(&file, 1, 1);
    assert_eq!(runs[0].0, Some(0), "{}", runs[0].1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let row: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(row["table"], "tb1");
    assert_eq!(row["after"], serde_json::json!({ "id": 1 }));
    assert_eq!(row["file"], "binlog.000001");
    assert_eq!(row["offset"], payload_event_end(&file));
}

#[test]
fn mysql80_damaged_compressed_transaction_stops_the_run_naming_file_and_position() {
    let mut magic = zstd_payload();
    magic[0] ^= 0xff;
    assert_stopped(
        "zstd magic damaged",
        &with_payload(ZSTD, 179, &magic),
        "Unknown frame descriptor",
    );
    let good = zstd_payload();
    assert_stopped(
        "zstd frame cut short",
        &with_payload(ZSTD, 179, &good[..good.len() - 10]),
        "",
    );
}

#[test]
fn mysql80_compressed_transaction_of_another_size_than_stated_stops_the_run() {
    assert_stopped(
        "stated 180 of 179 bytes",
        &with_payload(ZSTD, 180, &zstd_payload()),
        "it decompresses to 179 bytes, its header states 180",
    );
    assert_stopped(
        "stated 1 TiB",
        &with_payload(ZSTD, 1 << 40, &zstd_payload()),
        "its header states 1099511627776",
    );
    assert_stopped(
        "stated 100 of 179 bytes",
        &with_payload(ZSTD, 100, &zstd_payload()),
        "it decompresses to more than the 100 bytes its header states",
    );
}

/// `SHOW BINLOG EVENTS` as the double answers it (what binsync's schema seed pages through
/// for DDL): one row per event, a compressed transaction's events after its
/// Transaction_payload row at the payload's end, none for a payload that does not
/// decompress to its stated size; LIMIT counts the inner rows; a FROM that is not an event
/// boundary is error 1220.
#[tokio::test]
async fn show_binlog_events_unfolds_compressed_transactions() {
    use mysql_async::prelude::Queryable;
    type Row = (String, u64, String, u32, u64, String);
    let tmp = tempfile::tempdir().unwrap();
    let list = |file: Vec<u8>, sql: &str| {
        let sql = sql.to_string();
        let served = compressed_fixture::write(tmp.path(), &file);
        async move {
            let double = MysqlDouble::start(Profile::Mysql80, vec![served], options());
            let url = format!("{}?prefer_socket=false", double.url());
            let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
                .await
                .unwrap();
            let rows: Result<Vec<Row>, _> = conn.query(&sql).await;
            rows.map_err(|e| e.to_string())
        }
    };
    let file = with_payload(ZSTD, 179, &zstd_payload());
    let end = payload_event_end(&file) as u64;
    let rows = list(file.clone(), "SHOW BINLOG EVENTS IN 'binlog.000001'")
        .await
        .unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    let at = kinds
        .iter()
        .position(|k| *k == "Transaction_payload")
        .expect("the payload row");
    assert_eq!(kinds[0], "Format_desc");
    assert_eq!(
        kinds[at..],
        [
            "Transaction_payload",
            "Query",
            "Table_map",
            "Write_rows",
            "Xid"
        ],
        "{rows:#?}"
    );
    let payload = &rows[at];
    assert_eq!(payload.1, compressed_fixture::PAYLOAD_EVENT_AT as u64);
    assert_eq!(payload.4, end);
    assert_eq!(payload.5, "compression='ZSTD', decompressed_size=179 bytes");
    for inner in &rows[at + 1..] {
        assert_eq!((inner.1, inner.4), (end, end), "{inner:?}");
    }
    // BEGIN is logged with LOG_EVENT_SUPPRESS_USE_F: no `use` before it.
    assert_eq!(rows[at + 1].5, "BEGIN");
    assert_eq!(rows[at + 2].5, "table_id: 88 (test.tb1)");
    assert_eq!(rows[at + 3].5, "table_id: 88 flags: STMT_END_F");
    for w in rows[..at].windows(2) {
        assert_eq!(
            w[0].4, w[1].1,
            "each event ends where the next begins: {rows:#?}"
        );
    }

    // LIMIT counts the inner rows; paging on from the last row's end goes past the payload.
    let page = list(
        file.clone(),
        "SHOW BINLOG EVENTS IN 'binlog.000001' FROM 274 LIMIT 2",
    )
    .await
    .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[1].2, "Query");
    let sql = format!("SHOW BINLOG EVENTS IN 'binlog.000001' FROM {end} LIMIT 2");
    let next = list(file.clone(), &sql).await.unwrap();
    assert!(next.iter().all(|r| r.1 >= end), "{next:#?}");

    // A payload of another size than stated: the payload row alone.
    let rows = list(
        with_payload(ZSTD, 180, &zstd_payload()),
        "SHOW BINLOG EVENTS IN 'binlog.000001' FROM 274",
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].2, "Transaction_payload");

    let e = list(
        file,
        "SHOW BINLOG EVENTS IN 'binlog.000001' FROM 275 LIMIT 1",
    )
    .await
    .unwrap_err();
    assert!(e.contains("1220") && e.contains("Wrong offset"), "{e}");
}
