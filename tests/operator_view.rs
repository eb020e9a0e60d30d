//! Scenarios of an operator's first use (issue 13, "an honest operator's view"): what binsync
//! says and does when asked to debug, pointed at a directory that is not there, given a flag
//! that would do nothing, or asked to drop a dead letter that does not exist. Each answer is
//! one clear line and a non-zero exit, or a true statement of what happens; nothing is
//! created on the way.

mod common;

use std::time::Duration;

use common::{MariaDb, Proc, ServerOpts};
use serde_json::Value;

/// Runs binsync to completion; returns (exit code, stdout, stderr).
fn binsync(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut p = Proc::spawn(args, envs);
    let status = p
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("binsync {args:?} did not exit: {}", p.stderr()));
    (status.code().unwrap_or(-1), p.stdout(), p.stderr())
}

/// Exactly one `binsync: error:` line, naming every one of `needles`; no panic.
fn assert_one_clear_error(code: i32, stderr: &str, needles: &[&str]) {
    assert_ne!(code, 0, "must fail: {stderr}");
    assert_ne!(code, 101, "panicked: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("binsync: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    for needle in needles {
        assert!(errors[0].contains(needle), "`{needle}` in: {}", errors[0]);
    }
}

/// `BINSYNC_LOG=debug` shows binsync's own stages (connect, the start plan, a rotation, the
/// sink's writes, checkpoints) and none of the libraries' internals (sled logged hundreds of
/// lines about its page cache, and nothing of binsync's); a library named explicitly is
/// still shown. The run's first lines name the sink in use.
#[test]
fn debug_logs_show_binsync_stages_and_no_library_internals() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY);
         INSERT INTO shop.t VALUES (1); FLUSH BINARY LOGS; INSERT INTO shop.t VALUES (2);",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let sink = format!("file:{}", out.display());
    let run = |state: &str, log: &str| {
        let state = dir.path().join(state);
        let url = db.url();
        let args = [
            "run",
            "--source",
            &url,
            "--server-id",
            "4343",
            "--state-dir",
            state.to_str().unwrap(),
            "--sink",
            &sink,
            "--start",
            "earliest",
            "--exit-at-end",
            "--log-format",
            "json",
        ];
        let (code, _, err) = binsync(&args, &[("BINSYNC_LOG", log)]);
        assert_eq!(code, 0, "{err}");
        err.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect::<Vec<Value>>()
    };
    let lines = run("s1", "debug");
    let debug: Vec<&Value> = lines
        .iter()
        .filter(|l| matches!(l["level"].as_str(), Some("DEBUG" | "TRACE")))
        .collect();
    for l in &debug {
        let target = l["target"].as_str().unwrap_or_default();
        assert!(target.starts_with("binsync"), "a library's debug line: {l}");
    }
    let messages: Vec<&str> = debug
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    for stage in [
        "connected",
        "start plan",
        "binlog dump requested",
        "next binlog file",
        "lines written",
        "checkpoint saved",
    ] {
        assert!(
            messages.contains(&stage),
            "no `{stage}` debug line: {messages:?}"
        );
    }
    // The rotation names the file FLUSH BINARY LOGS began.
    let files: Vec<&str> = debug
        .iter()
        .filter(|l| l["fields"]["message"] == "next binlog file")
        .filter_map(|l| l["fields"]["file"].as_str())
        .collect();
    assert!(
        files.len() == 1 && files[0].ends_with(".000002"),
        "{files:?}"
    );
    let sink_line = lines
        .iter()
        .find(|l| l["fields"]["message"] == "changes go to the sink")
        .unwrap_or_else(|| panic!("no line names the sink: {lines:?}"));
    assert_eq!(sink_line["fields"]["sink"].as_str(), Some(sink.as_str()));

    // Named explicitly, a library's debug lines come back.
    let lines = run("s2", "debug,sled=debug");
    assert!(
        lines.iter().any(
            |l| l["target"].as_str().is_some_and(|t| t.starts_with("sled"))
                && l["level"] == "DEBUG"
        ),
        "sled=debug shows sled's lines"
    );
}

/// A filter binsync cannot read is said, not replaced by the default.
#[test]
fn a_malformed_log_filter_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let (code, _, err) = binsync(
        &["status", "--state-dir", state],
        &[("BINSYNC_LOG", "sled=loud")],
    );
    assert_one_clear_error(code, &err, &["BINSYNC_LOG", "sled=loud"]);
}

/// `status` on a directory that is not there says so (a typo would otherwise read as "no
/// checkpoint") and creates nothing.
#[test]
fn status_on_a_missing_state_dir_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-here");
    let (code, _, err) = binsync(&["status", "--state-dir", missing.to_str().unwrap()], &[]);
    assert_one_clear_error(code, &err, &["not-here", "does not exist"]);
    assert!(!missing.exists(), "status created {}", missing.display());

    // An existing directory without a store: no checkpoint yet, exit 0, still nothing made.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, out, err) = binsync(&["status", "--state-dir", empty.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("checkpoint: none"), "{out}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

/// `--sink file:` in a directory that does not exist is refused before anything starts (it
/// was created silently, with any parents), for `run` and `replay` alike.
#[test]
fn a_file_sink_in_a_missing_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo").join("deeper");
    let sink = format!("file:{}", missing.join("out.jsonl").display());
    let state = dir.path().join("state");
    let url = format!("mysql://root@127.0.0.1:{}", common::free_port());
    let (code, _, err) = binsync(
        &[
            "run",
            "--source",
            &url,
            "--server-id",
            "4343",
            "--state-dir",
            state.to_str().unwrap(),
            "--sink",
            &sink,
            "--connect-timeout",
            "1s",
        ],
        &[],
    );
    assert_one_clear_error(
        code,
        &err,
        &[&missing.display().to_string(), "does not exist"],
    );
    assert!(!dir.path().join("typo").exists());

    let binlog = dir.path().join("binlog.000001");
    std::fs::write(&binlog, b"\xfebin").unwrap();
    let (code, _, err) = binsync(
        &[
            "replay",
            "--binlog-file",
            binlog.to_str().unwrap(),
            "--sink",
            &sink,
        ],
        &[],
    );
    assert_one_clear_error(code, &err, &[&missing.display().to_string()]);
    assert!(!dir.path().join("typo").exists());
}

/// `run --help` says where changes go without `--sink`, and a run without it says so when
/// it starts.
#[test]
fn the_default_stdout_sink_is_said_in_help_and_at_start() {
    let (code, out, err) = binsync(&["run", "--help"], &[]);
    assert_eq!(code, 0, "{err}");
    let sink_help: String = out
        .split("--sink <SINK>")
        .nth(1)
        .unwrap_or_else(|| panic!("no --sink in: {out}"))
        .split("\n      --")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        sink_help.contains("`stdout` (the default"),
        "--sink help: {sink_help}"
    );

    let db = MariaDb::start(ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let url = db.url();
    let (code, _, err) = binsync(
        &[
            "run",
            "--source",
            &url,
            "--server-id",
            "4343",
            "--state-dir",
            state.to_str().unwrap(),
            "--exit-at-end",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.contains("changes go to stdout") && first.contains("--sink"),
        "the first line names the sink: {err}"
    );
}
