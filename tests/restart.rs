//! Scenario: binsync is stopped again and again while a writer commits inserts, updates and
//! deletes on two tables (one with a composite key). With kill -9, a restart may write again
//! what it wrote but had not checkpointed, each time with the same `seq` and the same content;
//! nothing committed is ever missing. With SIGTERM nothing is written twice. In both cases the
//! state rebuilt from the file sink equals the source tables row by row.

mod common;

use std::time::Duration;

use common::workload::{file_state, source_state, Writer};
use common::{MariaDb, Proc, ServerOpts};

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
