//! Scenario: binsync is stopped again and again while a writer commits inserts, updates and
//! deletes on two tables (one with a composite key). With kill -9, a restart may write again
//! what it wrote but had not checkpointed, each time with the same `seq` and the same content;
//! nothing committed is ever missing. With SIGTERM nothing is written twice. In both cases the
//! state rebuilt from the file sink equals the source tables row by row.
//!
//! The other side: the source restarts under a running binsync. Its reconnect pace escalates
//! during one outage and starts over once the connection has been healthy for a while
//! (`backoff::HEALTHY_AFTER`, 30 s), so a second restart is retried at once again.

mod common;

use std::time::{Duration, Instant};

use common::workload::{file_state, is_row_change, source_state, Writer};
use common::{wait_until, MariaDb, Proc, ServerOpts};
use serde_json::Value;

fn spawn(db: &MariaDb, state: &str, out: &str, exit_at_end: bool) -> Proc {
    let url = db.url();
    let sink = format!("file:{out}");
    let mut args = vec![
        "run",
        "--source",
        &url,
        "--server-id",
        "4343",
        "--state-dir",
        state,
        "--sink",
        &sink,
    ];
    if exit_at_end {
        args.push("--exit-at-end");
    }
    Proc::spawn(&args, &[])
}

fn catch_up(db: &MariaDb, state: &str, out: &str) {
    let mut p = spawn(db, state, out, true);
    let st = p
        .wait_timeout(Duration::from_secs(120))
        .expect("catch-up did not finish");
    assert!(st.success(), "catch-up failed: {}", p.stderr());
}

#[test]
fn kill_9_at_random_points_loses_nothing() {
    let db = MariaDb::start(ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let out = dir.path().join("changes.jsonl").display().to_string();
    let writer = Writer::start(&db, Duration::ZERO);
    for round in 0..8 {
        let mut p = spawn(&db, &state, &out, false);
        std::thread::sleep(Duration::from_millis(fastrand::u64(300..1500)));
        p.kill9();
        eprintln!(
            "round {round}: killed; writer committed {}",
            writer.committed()
        );
    }
    writer.finish();
    catch_up(&db, &state, &out);
    let (rebuilt, duplicates) = file_state(&out);
    eprintln!("re-delivered after kill -9: {duplicates} lines");
    assert_eq!(rebuilt, source_state(&db));
}

#[test]
fn sigterm_at_random_points_delivers_each_change_once() {
    let db = MariaDb::start(ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let out = dir.path().join("changes.jsonl").display().to_string();
    let writer = Writer::start(&db, Duration::ZERO);
    for _ in 0..5 {
        let mut p = spawn(&db, &state, &out, false);
        std::thread::sleep(Duration::from_millis(fastrand::u64(400..1500)));
        p.sigterm();
        let st = p
            .wait_timeout(Duration::from_secs(30))
            .expect("SIGTERM did not stop binsync");
        assert!(st.success(), "SIGTERM exit must be 0: {}", p.stderr());
    }
    writer.finish();
    catch_up(&db, &state, &out);
    let (rebuilt, duplicates) = file_state(&out);
    assert_eq!(duplicates, 0, "SIGTERM must not cause re-delivery");
    assert_eq!(rebuilt, source_state(&db));
}

#[test]
fn sigterm_inside_a_large_transaction_resumes_without_duplicates() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(common::workload::SCHEMA);
    // One transaction of 60k rows.
    db.sql("INSERT INTO t.items SELECT seq, seq, 'big' FROM t.seq_1_to_60000");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let out = dir.path().join("changes.jsonl").display().to_string();
    let mut p = spawn(&db, &state, &out, false);
    common::wait_until(Duration::from_secs(60), "first rows written", || {
        std::fs::metadata(&out)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    });
    p.sigterm();
    assert!(p
        .wait_timeout(Duration::from_secs(30))
        .expect("stops")
        .success());
    catch_up(&db, &state, &out);
    let (rebuilt, duplicates) = file_state(&out);
    assert_eq!(duplicates, 0);
    assert_eq!(rebuilt.len(), 60_000);
    assert_eq!(rebuilt, source_state(&db));
}

#[test]
fn exit_at_end_returns_once_caught_up_and_again_with_nothing_new() {
    let db = MariaDb::start(ServerOpts::default());
    let writer = Writer::start(&db, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(500));
    writer.finish();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let out = dir.path().join("changes.jsonl").display().to_string();
    catch_up(&db, &state, &out);
    let (rebuilt, _) = file_state(&out);
    assert_eq!(rebuilt, source_state(&db));
    let size = std::fs::metadata(&out).unwrap().len();
    catch_up(&db, &state, &out);
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        size,
        "nothing new, nothing written"
    );
}

/// The "source connection lost; reconnecting" lines of a JSON log: (attempt, retry_in).
fn reconnects(stderr: &str) -> Vec<(u64, Duration)> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "source connection lost; reconnecting")
        .map(|v| {
            let f = &v["fields"];
            let attempt = f["attempt"].as_u64().expect("attempt");
            // units::duration: "87 ms", "1.6 s", "1m 05s".
            let text = f["retry_in"].as_str().expect("retry_in");
            let delay = if let Some(ms) = text.strip_suffix(" ms") {
                Duration::from_millis(ms.parse().unwrap())
            } else if let Some(s) = text.strip_suffix(" s") {
                Duration::from_secs_f64(s.parse().unwrap())
            } else {
                Duration::from_secs(60)
            };
            (attempt, delay)
        })
        .collect()
}

#[test]
fn a_second_source_restart_after_a_healthy_stretch_is_retried_at_once_again() {
    let mut db = MariaDb::start(ServerOpts::default());
    db.sql("CREATE DATABASE t; CREATE TABLE t.a (id INT PRIMARY KEY); INSERT INTO t.a VALUES (1)");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let out = dir.path().join("changes.jsonl").display().to_string();
    let url = db.url();
    let sink = format!("file:{out}");
    let args = [
        "run",
        "--source",
        &url,
        "--server-id",
        "4344",
        "--state-dir",
        &state,
        "--sink",
        &sink,
        "--log-format",
        "json",
    ];
    let mut p = Proc::spawn(&args, &[]);
    // Row changes only: the `ddl` line of the CREATE TABLE must not pass for a row.
    let rows = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter(|l| is_row_change(&serde_json::from_str(l).unwrap()))
            .count()
    };
    let wait_rows =
        |n: usize, what: &str| wait_until(Duration::from_secs(30), what, || rows() >= n);
    wait_rows(1, "the first row");

    // A first outage, long enough for the pace to escalate: 100 ms, 200 ms, 400 ms, ...
    db.stop();
    std::thread::sleep(Duration::from_secs(2));
    db.restart();
    db.sql("INSERT INTO t.a VALUES (2)");
    wait_rows(2, "the row after the first restart");
    // binsync has been connected since before the row came through.
    let healthy_from = Instant::now();
    let first = reconnects(&p.stderr());
    assert!(
        first.len() >= 4,
        "the pace escalates during an outage: {first:?}"
    );

    // Healthy for longer than HEALTHY_AFTER (30 s), then the second restart.
    std::thread::sleep(Duration::from_secs(31).saturating_sub(healthy_from.elapsed()));
    assert!(p.is_running(), "{}", p.stderr());
    db.restart();
    db.sql("INSERT INTO t.a VALUES (3)");
    wait_rows(3, "the row after the second restart");
    let all = reconnects(&p.stderr());
    let (attempt, retry_in) = *all
        .get(first.len())
        .unwrap_or_else(|| panic!("no reconnect line after the second restart: {all:?}"));
    eprintln!("first outage: {first:?}; second restart: attempt {attempt}, retry_in {retry_in:?}");
    assert_eq!(attempt, 1, "the pace starts over: {all:?}");
    assert!(
        retry_in <= Duration::from_millis(100),
        "the first retry after a healthy stretch waits the initial delay: {all:?}"
    );
}
