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

/// Every flag and argument of every subcommand says what it is for.
#[test]
fn every_flag_and_argument_has_help() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let text = arg
                .get_help()
                .or(arg.get_long_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            if text.trim().is_empty() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(format!("{path} {} (the subcommand)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut cmd = binsync::config::Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    let mut count = 0;
    fn count_args(cmd: &clap::Command, n: &mut usize) {
        *n += cmd.get_arguments().count();
        cmd.get_subcommands().for_each(|s| count_args(s, n));
    }
    count_args(&cmd, &mut count);
    assert!(count > 50, "the walk saw only {count} arguments");
    walk(&cmd, "binsync", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:#?}");
}

/// `dlq replay` sends stored batches as they are, once: the batching and retry flags of
/// `run` are not offered there (they were listed, and ignored). The ones it uses are.
#[test]
fn dlq_replay_offers_only_the_flags_it_uses() {
    use clap::Parser;
    let parse = |extra: &[&str]| {
        let mut args = vec!["binsync", "dlq", "--state-dir", "/x", "replay"];
        args.extend(extra);
        binsync::config::Cli::try_parse_from(args)
    };
    for unused in [
        ["--linger", "5ms"].as_slice(),
        &["--batch-rows", "10"],
        &["--batch-bytes", "10"],
        &["--in-flight", "2"],
        &["--max-retries", "2"],
        &["--on-reject", "stop"],
        &["--compact"],
    ] {
        assert!(parse(unused).is_err(), "dlq replay accepts {unused:?}");
    }
    for used in [
        ["--request-timeout", "5s"].as_slice(),
        &["--gzip"],
        &["--auth-header-env", "TOKEN"],
        &["--sink-ca", "/ca.pem"],
        &["--sink", "http://127.0.0.1:1/v1", "3", "4"],
    ] {
        assert!(parse(used).is_ok(), "dlq replay refuses {used:?}");
    }
}

/// `receive` has no config file: `--config` given to it is refused, not silently ignored.
#[test]
fn receive_refuses_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("binsync.toml");
    std::fs::write(&cfg, "log_format = \"text\"\n").unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let (code, _, err) = binsync(
        &[
            "receive",
            "--config",
            cfg.to_str().unwrap(),
            "--discard",
            "--listen",
            &listen,
        ],
        &[],
    );
    assert_one_clear_error(code, &err, &["receive", "--config"]);
}

/// Dropping or replaying a dead letter that does not exist fails, drops nothing, and makes
/// no store in a state dir that has none.
#[test]
fn dlq_commands_on_missing_entries_fail() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    for action in ["drop", "replay"] {
        let (code, _, err) = binsync(&["dlq", "--state-dir", state, action, "99"], &[]);
        assert_one_clear_error(code, &err, &["no dead letter 99"]);
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no store is made"
    );
    let (code, out, err) = binsync(&["dlq", "--state-dir", state, "drop", "--all"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no dead letters"), "{out}");
}

/// The keys a struct accepts, from serde's own "unknown field" message for a key it does not
/// (`expected one of `a`, `b``): the config file's keys, as binsync's loader knows them.
fn accepted_keys(toml: &str) -> Vec<String> {
    let err = toml::from_str::<binsync::config::FileConfig>(toml)
        .expect_err("an unknown key is refused")
        .to_string();
    let list = err
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("no key list in: {err}"));
    list.split(',')
        .map(|k| {
            k.trim()
                .trim_matches(|c: char| c == '`' || c.is_whitespace())
        })
        .map(|k| k.split('`').next().unwrap_or_default().to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

/// config/binsync.example.toml parses with binsync's loader and shows every key the file
/// accepts, the `[http]` table's included (set or commented out).
#[test]
fn the_example_config_parses_and_shows_every_key() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/binsync.example.toml");
    binsync::config::FileConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&path).unwrap();
    // A key shows as `key = ...`, `# key = ...` or a `[key]` table, in its own section.
    let shows = |section: &str, key: &str| {
        let mut current = String::new();
        text.lines().any(|line| {
            let l = line.trim_start_matches('#').trim();
            if l.starts_with('[') && !line.starts_with('#') {
                current = l.trim_matches(['[', ']']).to_string();
                return section.is_empty() && current == key;
            }
            current == section && l.split('=').next().map(str::trim) == Some(key)
        })
    };
    // The commented-out examples are valid values too.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| {
                    k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let all = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(all.path(), &uncommented).unwrap();
    let file = binsync::config::FileConfig::load(all.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(file
        .http
        .is_some_and(|h| h.linger.is_some() && h.on_reject.is_some()));
    let top = accepted_keys("zz_not_a_key = 1\n");
    let http = accepted_keys("[http]\nzz_not_a_key = 1\n");
    assert!(
        top.len() > 20 && top.contains(&"http".to_string()),
        "{top:?}"
    );
    assert!(
        http.len() > 8 && http.contains(&"linger".to_string()),
        "{http:?}"
    );
    let mut absent: Vec<String> = top.iter().filter(|k| !shows("", k)).cloned().collect();
    absent.extend(
        http.iter()
            .filter(|k| !shows("http", k))
            .map(|k| format!("http.{k}")),
    );
    assert!(absent.is_empty(), "not in the example config: {absent:?}");
}

/// The sync API's flags given with a lines sink (stdout, file:) are refused, not ignored
/// (only --sink-ca was); the file's [http] table, shared with other runs, is not.
#[test]
fn http_flags_with_a_lines_sink_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let url = format!("mysql://root@127.0.0.1:{}", common::free_port());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--source",
            &url,
            "--server-id",
            "4343",
            "--state-dir",
            state.to_str().unwrap(),
            "--connect-timeout",
            "1s",
        ];
        args.extend(extra);
        binsync(&args, &[])
    };
    let (code, _, err) = run(&["--linger", "0s", "--gzip"]);
    assert_one_clear_error(code, &err, &["--linger, --gzip", "--sink stdout"]);
    let out = format!("file:{}", dir.path().join("out.jsonl").display());
    let (code, _, err) = run(&["--sink", &out, "--batch-rows", "10"]);
    assert_one_clear_error(code, &err, &["--batch-rows", "nothing"]);

    // From the config file it is no mistake: the run goes on to the source.
    let cfg = dir.path().join("binsync.toml");
    std::fs::write(&cfg, "[http]\nlinger = \"0s\"\n").unwrap();
    let (code, _, err) = run(&["--config", cfg.to_str().unwrap()]);
    assert_one_clear_error(code, &err, &["gave up reaching the source"]);
}
