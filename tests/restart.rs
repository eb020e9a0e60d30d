//! Scenario: binsync is stopped again and again while a writer commits inserts, updates and
//! deletes on two tables (one with a composite key). With kill -9, a restart may write again
//! what it wrote but had not checkpointed, each time with the same `seq` and the same content;
//! nothing committed is ever missing. With SIGTERM nothing is written twice. In both cases the
//! state rebuilt from the file sink equals the source tables row by row.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{MariaDb, Proc, ServerOpts};
use mysql_async::prelude::Queryable;
use serde_json::Value;

struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(db: &MariaDb) -> Writer {
        db.sql(
            "CREATE DATABASE IF NOT EXISTS t;
             CREATE TABLE IF NOT EXISTS t.items (id INT PRIMARY KEY, v INT, note VARCHAR(20));
             CREATE TABLE IF NOT EXISTS t.pairs (a INT, b INT, v INT, PRIMARY KEY (a, b));",
        );
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let url = db.url();
        let (s, c) = (stop.clone(), committed.clone());
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
                let mut i: i64 = 1_000_000 * (fastrand::i64(1..1000));
                while !s.load(Ordering::Relaxed) {
                    i += 1;
                    let sql = format!(
                        "BEGIN;
                         INSERT INTO t.items VALUES ({i}, {i}, 'n{i}');
                         UPDATE t.items SET v = v + 1, note = 'u' WHERE id = {};
                         DELETE FROM t.items WHERE id = {} AND {i} % 3 = 0;
                         INSERT INTO t.pairs VALUES ({}, {}, 0) ON DUPLICATE KEY UPDATE v = v + 1;
                         COMMIT;",
                        i - 1,
                        i - 5,
                        i % 7,
                        i % 5
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

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
    }
}

fn spawn(db: &MariaDb, state: &str, out: &str, exit_at_end: bool) -> Proc {
    let mut args = vec![
        "run", "--source", &db.url(), "--server-id", "4343", "--state-dir", state, "--sink",
    ];
    let sink = format!("file:{out}");
    args.push(&sink);
    if exit_at_end {
        args.push("--exit-at-end");
    }
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    Proc::spawn(&refs, &[])
}

/// Reads the sink file: checks numbering, drops re-deliveries (after checking they are
/// identical), and returns (entity state, number of re-delivered lines).
fn rebuild(out: &str) -> (BTreeMap<(String, String), Value>, usize) {
    let text = std::fs::read_to_string(out).unwrap();
    let mut by_seq: Vec<String> = Vec::new();
    let mut state = BTreeMap::new();
    let mut duplicates = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line}: {e}"));
        let seq = v["seq"].as_u64().unwrap() as usize;
        assert!(seq >= 1 && seq <= by_seq.len() + 1, "gap before seq {seq} (have {})", by_seq.len());
        if seq <= by_seq.len() {
            assert_eq!(by_seq[seq - 1], line, "a replay changed seq {seq}");
            duplicates += 1;
            continue;
        }
        by_seq.push(line.to_string());
        let key = (v["table"].as_str().unwrap().to_string(), v["id"].to_string());
        match v["op"].as_str().unwrap() {
            "delete" => {
                state.remove(&key);
            }
            _ => {
                state.insert(key, v["after"].clone());
            }
        }
    }
    (state, duplicates)
}

fn source_state(db: &MariaDb) -> BTreeMap<(String, String), Value> {
    let mut m = BTreeMap::new();
    for line in db.sql("SELECT id, v, note FROM t.items").lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let id: i64 = f[0].parse().unwrap();
        let v = serde_json::json!({"id": id, "v": f[1].parse::<i64>().unwrap(), "note": f[2]});
        m.insert(("items".to_string(), serde_json::json!({"id": id}).to_string()), v);
    }
    for line in db.sql("SELECT a, b, v FROM t.pairs").lines() {
        let f: Vec<i64> = line.split('\t').map(|x| x.parse().unwrap()).collect();
        let v = serde_json::json!({"a": f[0], "b": f[1], "v": f[2]});
        m.insert(
            ("pairs".to_string(), serde_json::json!({"a": f[0], "b": f[1]}).to_string()),
            v,
        );
    }
    m
}

fn catch_up(db: &MariaDb, state: &str, out: &str) {
    let mut p = spawn(db, state, out, true);
    let st = p.wait_timeout(Duration::from_secs(120)).expect("catch-up did not finish");
    assert!(st.success(), "catch-up failed: {}", p.stderr());
}

#[test]
fn kill_9_at_random_points_loses_nothing() {
    let db = MariaDb::start(ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let out = dir.path().join("changes.jsonl").display().to_string();
    let writer = Writer::start(&db);
    for round in 0..8 {
        let mut p = spawn(&db, &state, &out, false);
        std::thread::sleep(Duration::from_millis(fastrand::u64(300..1500)));
        p.kill9();
        eprintln!("round {round}: killed; writer committed {}", writer.committed());
    }
    writer.finish();
    catch_up(&db, &state, &out);
    let (rebuilt, duplicates) = rebuild(&out);
    eprintln!("re-delivered after kill -9: {duplicates} lines");
    assert_eq!(rebuilt, source_state(&db));
}

#[test]
fn sigterm_at_random_points_delivers_each_change_once() {
    let db = MariaDb::start(ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let out = dir.path().join("changes.jsonl").display().to_string();
    let writer = Writer::start(&db);
    for _ in 0..5 {
        let mut p = spawn(&db, &state, &out, false);
        std::thread::sleep(Duration::from_millis(fastrand::u64(400..1500)));
        p.sigterm();
        let st = p.wait_timeout(Duration::from_secs(30)).expect("SIGTERM did not stop binsync");
        assert!(st.success(), "SIGTERM exit must be 0: {}", p.stderr());
    }
    writer.finish();
    catch_up(&db, &state, &out);
    let (rebuilt, duplicates) = rebuild(&out);
    assert_eq!(duplicates, 0, "SIGTERM must not cause re-delivery");
    assert_eq!(rebuilt, source_state(&db));
}

#[test]
fn sigterm_inside_a_large_transaction_resumes_without_duplicates() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql("CREATE DATABASE t; CREATE TABLE t.items (id INT PRIMARY KEY, v INT, note VARCHAR(20)); CREATE TABLE t.pairs (a INT, b INT, v INT, PRIMARY KEY (a, b));");
    // One transaction of 60k rows.
    db.sql(
        "SET SESSION cte_max_recursion_depth = 100000;
         INSERT INTO t.items WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 60000)
         SELECT n, n, 'big' FROM s;",
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let out = dir.path().join("changes.jsonl").display().to_string();
    let mut p = spawn(&db, &state, &out, false);
    common::wait_until(Duration::from_secs(60), "first rows written", || {
        std::fs::metadata(&out).map(|m| m.len() > 0).unwrap_or(false)
    });
    p.sigterm();
    assert!(p.wait_timeout(Duration::from_secs(30)).expect("stops").success());
    catch_up(&db, &state, &out);
    let (rebuilt, duplicates) = rebuild(&out);
    assert_eq!(duplicates, 0);
    assert_eq!(rebuilt.len(), 60_000);
    assert_eq!(rebuilt, source_state(&db));
}

#[test]
fn exit_at_end_returns_once_caught_up_and_again_with_nothing_new() {
    let db = MariaDb::start(ServerOpts::default());
    let writer = Writer::start(&db);
    std::thread::sleep(Duration::from_millis(500));
    writer.finish();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let out = dir.path().join("changes.jsonl").display().to_string();
    catch_up(&db, &state, &out);
    let (rebuilt, _) = rebuild(&out);
    assert_eq!(rebuilt, source_state(&db));
    let size = std::fs::metadata(&out).unwrap().len();
    catch_up(&db, &state, &out);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), size, "nothing new, nothing written");
}
