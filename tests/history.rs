//! Scenario: the source's history goes backwards under binsync. A `RESET MASTER` (or a
//! restored backup) after a checkpoint starts the binlog and the GTID sequence over; resuming
//! from the checkpoint's GTID would skip the new history's first transactions without a word.
//! binsync must instead stop with one error line that names what happened and the way out,
//! at start and at a reconnect, and `binsync check --state-dir` must FAIL. A normal resume
//! (after a rotation, after a server restart, across a reconnect) must go on as before.

mod common;

use std::path::Path;
use std::time::Duration;

use common::workload::is_row_change;
use common::{wait_until, MariaDb, Proc, ServerOpts};

const WAIT: Duration = Duration::from_secs(60);

/// `binsync run` into a JSON-lines file (`--exit-at-end` when `to_end`).
fn spawn_run(db: &MariaDb, state: &Path, out: &Path, to_end: bool) -> Proc {
    let (url, state, sink) = (
        db.url(),
        state.display().to_string(),
        format!("file:{}", out.display()),
    );
    let mut args = vec![
        "run",
        "--source",
        &url,
        "--server-id",
        "4747",
        "--state-dir",
        &state,
        "--sink",
        &sink,
    ];
    if to_end {
        args.push("--exit-at-end");
    }
    Proc::spawn(&args, &[])
}

/// The `id` of each row change in the sink's file, in order (the `ddl` lines of the setup's
/// CREATE TABLE left out).
fn ids(out: &Path) -> Vec<i64> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(is_row_change)
        .map(|v| v["id"]["id"].as_i64().unwrap())
        .collect()
}

/// Runs to the binlog end and returns the ids it emitted; panics unless it succeeds.
fn run_to_end(db: &MariaDb, state: &Path, out: &Path) -> Vec<i64> {
    let _ = std::fs::remove_file(out);
    let mut p = spawn_run(db, state, out, true);
    let st = p.wait_timeout(WAIT).expect("binsync did not return");
    assert!(st.success(), "binsync failed: {}", p.stderr());
    ids(out)
}

/// `binsync check --state-dir`: (success, stdout).
fn check(db: &MariaDb, state: &Path) -> (bool, String) {
    let (url, state) = (db.url(), state.display().to_string());
    let mut c = Proc::spawn(&["check", "--source", &url, "--state-dir", &state], &[]);
    let st = c.wait_timeout(WAIT).expect("check did not return");
    (st.success(), c.stdout())
}

/// The single `binsync: error:` line of a failed run.
fn one_error_line(p: &Proc) -> String {
    let err = p.stderr();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("binsync: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    lines[0].to_string()
}

fn assert_names_the_reset_and_the_way_out(line: &str) {
    for needle in [
        "RESET MASTER",
        "history",
        "--reset --snapshot initial",
        "reloads every captured table",
    ] {
        assert!(line.contains(needle), "`{needle}` missing: {line}");
    }
}

/// The table, then one transaction per row: ids `1..=rows`.
fn history(db: &MariaDb, rows: u32) {
    db.sql("CREATE DATABASE h; CREATE TABLE h.t (id INT PRIMARY KEY, v VARCHAR(40))");
    insert(db, 1..=rows);
}

fn insert(db: &MariaDb, ids: std::ops::RangeInclusive<u32>) {
    let sql: String = ids
        .map(|i| format!("INSERT INTO h.t VALUES ({i}, 'row {i}');\n"))
        .collect();
    db.sql(&sql);
}

/// `RESET MASTER`, the rows emptied without a trace in the new binlog, then `rows` inserts:
/// the new history's GTIDs are 0-S-1..0-S-rows.
fn reset_and_rewrite(db: &MariaDb, rows: u32) {
    db.sql("RESET MASTER; SET SESSION sql_log_bin = 0; DELETE FROM h.t;");
    insert(db, 1..=rows);
}

/// The reproduction: checkpoint at GTID 0-S-86, binsync stopped, RESET MASTER, 200 inserts
/// (GTIDs 0-S-1..0-S-200). Before the fix the next run emitted ids 87.. and exited 0.
#[test]
fn a_reset_master_between_runs_is_one_clear_error_and_check_fails() {
    let db = MariaDb::start(ServerOpts::default());
    history(&db, 84); // 2 DDL + 84 inserts: GTID 0-S-86
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("s"), dir.path().join("out.jsonl"));
    assert_eq!(run_to_end(&db, &state, &out).len(), 84);
    assert!(
        db.gtid_binlog_pos().ends_with("-86"),
        "{}",
        db.gtid_binlog_pos()
    );

    reset_and_rewrite(&db, 200);
    assert!(db.gtid_binlog_pos().ends_with("-200"));
    let _ = std::fs::remove_file(&out);
    let mut p = spawn_run(&db, &state, &out, true);
    let st = p.wait_timeout(WAIT).expect("binsync did not return");
    assert!(!st.success(), "must fail: {}", p.stderr());
    assert_ne!(st.code(), Some(101), "panicked: {}", p.stderr());
    assert_names_the_reset_and_the_way_out(&one_error_line(&p));
    let sent = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(
        sent, "",
        "no change may be emitted, nor any other operation"
    );

    let (ok, report) = check(&db, &state);
    assert!(!ok, "{report}");
    let line = report
        .lines()
        .find(|l| l.contains("binlog history"))
        .unwrap_or_else(|| panic!("no history finding: {report}"));
    assert!(line.starts_with("FAIL"), "{report}");
    assert!(report.contains("--reset"), "{report}");
}

/// A RESET MASTER with nothing written since: the server's GTID state is empty.
#[test]
fn a_reset_master_with_nothing_after_it_is_caught_too() {
    let db = MariaDb::start(ServerOpts::default());
    history(&db, 3);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("s"), dir.path().join("out.jsonl"));
    assert_eq!(run_to_end(&db, &state, &out).len(), 3);
    db.sql("RESET MASTER");
    let mut p = spawn_run(&db, &state, &out, true);
    let st = p.wait_timeout(WAIT).expect("binsync did not return");
    assert!(!st.success(), "must fail: {}", p.stderr());
    assert_names_the_reset_and_the_way_out(&one_error_line(&p));
}

/// No false alarm: resuming after rotations (the checkpoint's file closed, or the checkpoint
/// at a file's head) and after a server restart, and `check` says ready each time.
#[test]
fn a_normal_resume_after_rotation_and_restart_still_works() {
    let mut db = MariaDb::start(ServerOpts::default());
    history(&db, 5);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("s"), dir.path().join("out.jsonl"));
    assert_eq!(run_to_end(&db, &state, &out), vec![1, 2, 3, 4, 5]);

    insert(&db, 6..=7);
    db.sql("FLUSH BINARY LOGS");
    insert(&db, 8..=8);
    assert_eq!(run_to_end(&db, &state, &out), vec![6, 7, 8]);

    // The checkpoint ends its file; then the file is closed and nothing follows yet.
    db.sql("FLUSH BINARY LOGS");
    assert_eq!(run_to_end(&db, &state, &out), Vec::<i64>::new());
    let (ok, report) = check(&db, &state);
    assert!(ok && report.contains("ok   binlog history"), "{report}");
    insert(&db, 9..=9);
    assert_eq!(run_to_end(&db, &state, &out), vec![9]);

    db.restart();
    insert(&db, 10..=11);
    assert_eq!(run_to_end(&db, &state, &out), vec![10, 11]);
    let (ok, report) = check(&db, &state);
    assert!(ok && report.contains("ok   binlog history"), "{report}");
}

/// No false alarm at a reconnect: the server restarts under a running binsync, which
/// reconnects, checks the history and goes on.
#[test]
fn a_server_restart_under_a_running_binsync_resumes() {
    let mut db = MariaDb::start(ServerOpts::default());
    history(&db, 3);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("s"), dir.path().join("out.jsonl"));
    let mut p = spawn_run(&db, &state, &out, false);
    wait_until(WAIT, "the first rows", || ids(&out).len() == 3);
    db.restart();
    insert(&db, 4..=6);
    db.sql("FLUSH BINARY LOGS");
    insert(&db, 7..=7);
    wait_until(WAIT, "the rows after the restart", || ids(&out).len() == 7);
    assert!(p.is_running(), "{}", p.stderr());
    assert!(p.stderr().contains("reconnecting"), "{}", p.stderr());
    p.sigterm();
    let st = p.wait_timeout(WAIT).expect("binsync did not stop");
    assert!(st.success(), "{}", p.stderr());
    assert_eq!(ids(&out), (1..=7).collect::<Vec<_>>());
}

/// RESET MASTER under a running binsync: when the server restarts, the reconnect finds the
/// new history and binsync stops with the error rather than stream it from the old position.
#[test]
fn a_reset_master_under_a_running_binsync_stops_it_at_the_reconnect() {
    let mut db = MariaDb::start(ServerOpts::default());
    history(&db, 84);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("s"), dir.path().join("out.jsonl"));
    let mut p = spawn_run(&db, &state, &out, false);
    wait_until(WAIT, "the first rows", || ids(&out).len() == 84);

    reset_and_rewrite(&db, 200);
    db.restart();
    let st = p
        .wait_timeout(WAIT)
        .unwrap_or_else(|| panic!("binsync went on: {}", p.stderr()));
    assert!(!st.success(), "must fail: {}", p.stderr());
    assert_names_the_reset_and_the_way_out(&one_error_line(&p));
    let emitted = ids(&out);
    assert!(
        emitted.len() == 84 && emitted.iter().copied().eq(1..=84),
        "nothing of the new history may be emitted from the old position: {emitted:?}"
    );
}

/// RESET MASTER under a running binsync, without a restart: MariaDB ends the dump stream, and
/// the reconnect finds the new history.
#[test]
fn a_reset_master_under_a_running_binsync_stops_it_when_the_stream_ends() {
    let db = MariaDb::start(ServerOpts::default());
    history(&db, 84);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("s"), dir.path().join("out.jsonl"));
    let mut p = spawn_run(&db, &state, &out, false);
    wait_until(WAIT, "the first rows", || ids(&out).len() == 84);

    reset_and_rewrite(&db, 200);
    let st = p
        .wait_timeout(WAIT)
        .unwrap_or_else(|| panic!("binsync went on: {}", p.stderr()));
    assert!(!st.success(), "must fail: {}", p.stderr());
    assert_names_the_reset_and_the_way_out(&one_error_line(&p));
    assert!(ids(&out).iter().copied().eq(1..=84), "{:?}", ids(&out));
}

/// No false alarm after a failover: the checkpoint's file and offset are the old primary's,
/// so only the GTID coverage is checked on the replica, and the resume by GTID goes on.
#[test]
fn a_resume_by_gtid_on_a_replica_still_works() {
    let primary = MariaDb::start(ServerOpts::default());
    let replica = MariaDb::start_replica_of(&primary, ServerOpts::default());
    history(&primary, 3);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("s"), dir.path().join("out.jsonl"));
    assert_eq!(run_to_end(&primary, &state, &out), vec![1, 2, 3]);
    insert(&primary, 4..=5);
    replica.sync_with(&primary);
    assert_eq!(run_to_end(&replica, &state, &out), vec![4, 5]);
}
