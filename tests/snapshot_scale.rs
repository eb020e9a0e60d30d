//! Issue 12's load scenario on a real MariaDB: 1,000,000 rows in three tables (an INT key, a
//! composite key, a VARCHAR key) snapshotted two tables at a time into the reference receiver
//! while a writer inserts, updates, deletes and changes primary keys in all three the whole
//! time. The receiver's final state must equal the source's tables row by row.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::workload::{canonical_id, Receiver, State};
use common::{wait_until, MariaDb, Proc, ServerOpts};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

const ITEMS: u64 = 500_000;
const PAIRS: u64 = 300_000;
const NAMES: u64 = 200_000;

fn load(db: &MariaDb) {
    db.sql(&format!(
        "CREATE DATABASE t;
         CREATE TABLE t.items (id INT PRIMARY KEY, v INT, note VARCHAR(20));
         CREATE TABLE t.pairs (a INT, b INT, v INT, PRIMARY KEY (a, b));
         CREATE TABLE t.names (name VARCHAR(40) PRIMARY KEY, v INT) CHARACTER SET utf8mb4;
         INSERT INTO t.items SELECT seq, seq % 1000, CONCAT('n', seq) FROM t.seq_1_to_{ITEMS};
         INSERT INTO t.pairs SELECT seq DIV 100, seq % 100, seq FROM t.seq_0_to_{};
         INSERT INTO t.names SELECT CONCAT('k', seq, 'é'), seq FROM t.seq_1_to_{NAMES};",
        PAIRS - 1
    ));
}

/// Commits small transactions on all three tables until stopped: inserts, updates, deletes,
/// and primary-key changes (which the binlog carries as updates of the key).
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(db: &MariaDb) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let (s, c, url) = (stop.clone(), committed.clone(), db.url());
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
                let mut n: u64 = 0;
                while !s.load(Ordering::Relaxed) {
                    n += 1;
                    let r = |m: u64| fastrand::u64(1..m);
                    let (i1, i2, i3, i4) = (r(ITEMS), r(ITEMS), r(ITEMS), r(ITEMS));
                    let (p1, p2, p3) = (r(PAIRS), r(PAIRS), r(PAIRS));
                    let (k1, k2, k3) = (r(NAMES), r(NAMES), r(NAMES));
                    let sql = format!(
                        "BEGIN;
                         INSERT INTO t.items VALUES ({new}, 1, 'w') ON DUPLICATE KEY UPDATE v = v + 1;
                         UPDATE t.items SET v = v + 1, note = 'u' WHERE id = {i1};
                         DELETE FROM t.items WHERE id = {i2};
                         UPDATE IGNORE t.items SET id = id + 2000000 WHERE id = {i3};
                         UPDATE t.items SET note = NULL WHERE id = {i4};
                         UPDATE t.pairs SET v = v + 1 WHERE a = {p1} DIV 100 AND b = {p1} % 100;
                         DELETE FROM t.pairs WHERE a = {p2} DIV 100 AND b = {p2} % 100;
                         UPDATE IGNORE t.pairs SET a = a + 1000000 WHERE a = {p3} DIV 100 AND b = {p3} % 100;
                         INSERT INTO t.pairs VALUES ({new}, 7, 0) ON DUPLICATE KEY UPDATE v = v + 1;
                         UPDATE t.names SET v = v + 1 WHERE name = 'k{k1}é';
                         DELETE FROM t.names WHERE name = 'k{k2}é';
                         UPDATE IGNORE t.names SET name = CONCAT('m', name) WHERE name = 'k{k3}é';
                         INSERT INTO t.names VALUES ('new{n}', {n}) ON DUPLICATE KEY UPDATE v = v + 1;
                         COMMIT;",
                        new = 3_000_000 + n,
                    );
                    conn.query_drop(sql).await.unwrap();
                    c.fetch_add(1, Ordering::Relaxed);
                }
            });
        });
        Writer {
            stop,
            committed,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        self.committed.load(Ordering::Relaxed)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn source_state(db: &MariaDb) -> State {
    let mut m = BTreeMap::new();
    let num = |s: &str| -> Value {
        if s == "NULL" {
            Value::Null
        } else {
            json!(s.parse::<i64>().unwrap())
        }
    };
    let text = |s: &str| -> Value {
        if s == "NULL" {
            Value::Null
        } else {
            json!(s)
        }
    };
    for l in db.sql("SELECT id, v, note FROM t.items").lines() {
        let f: Vec<&str> = l.split('\t').collect();
        m.insert(
            ("items".into(), canonical_id(&json!({"id": num(f[0])}))),
            json!({"id": num(f[0]), "v": num(f[1]), "note": text(f[2])}),
        );
    }
    for l in db.sql("SELECT a, b, v FROM t.pairs").lines() {
        let f: Vec<&str> = l.split('\t').collect();
        m.insert(
            (
                "pairs".into(),
                canonical_id(&json!({"a": num(f[0]), "b": num(f[1])})),
            ),
            json!({"a": num(f[0]), "b": num(f[1]), "v": num(f[2])}),
        );
    }
    for l in db.sql("SELECT name, v FROM t.names").lines() {
        let f: Vec<&str> = l.split('\t').collect();
        m.insert(
            ("names".into(), canonical_id(&json!({"name": f[0]}))),
            json!({"name": f[0], "v": num(f[1])}),
        );
    }
    m
}

#[test]
fn a_million_rows_snapshotted_under_a_writer_end_equal_in_the_reference_receiver() {
    let db = MariaDb::start(ServerOpts::default());
    load(&db);
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(&dir.path().join("receiver"), &[]);
    let state = dir.path().join("state");
    let writer = Writer::start(&db);
    let url = db.url();
    let sink = receiver.url();
    let state_arg = state.display().to_string();
    let mut run = Proc::spawn(
        &[
            "run",
            "--source",
            &url,
            "--server-id",
            "4611",
            "--state-dir",
            &state_arg,
            "--sink",
            &sink,
            "--snapshot-parallel",
            "2",
        ],
        &[("BINSYNC_SNAPSHOT", "when-needed")],
    );
    wait_until(
        Duration::from_secs(600),
        "the snapshot of all three tables",
        || {
            assert!(run.is_running(), "binsync ended: {}", run.stderr());
            let status =
                std::fs::read_to_string(state.join("snapshot-status.json")).unwrap_or_default();
            let tables: Vec<Value> = serde_json::from_str(&status).unwrap_or_default();
            tables.len() == 3 && tables.iter().all(|t| t["state"] == "done")
        },
    );
    let committed = writer.finish();
    assert!(
        committed > 20,
        "the writer committed {committed} transactions"
    );
    // Everything written is in the checkpoint, then stop.
    let last = db.gtid_binlog_pos();
    wait_until(Duration::from_secs(300), "the stream caught up", || {
        std::fs::read_to_string(state.join("status.json")).is_ok_and(|s| s.contains(&last))
    });
    run.sigterm();
    assert!(run
        .wait_timeout(Duration::from_secs(60))
        .expect("binsync stops")
        .success());
    let stderr = run.stderr();
    assert!(
        stderr.matches("snapshot done").count() == 3,
        "each table's snapshot ends once: {stderr}"
    );
    let (got, _) = receiver.dump();
    let want = source_state(&db);
    assert!(want.len() > 900_000, "{} rows", want.len());
    common::workload::assert_same_state(&want, &got);
}
