//! Scenario: an operator gets something wrong. Each mistake (binlog off, STATEMENT format,
//! wrong password, unreachable host, corrupt state dir, malformed config, a taken server id)
//! gives one `binsync: error:` line that names the fix, and a non-zero exit, never a panic.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, MariaDb, Proc, ServerOpts};

/// Runs binsync to completion; returns (exit code, stdout, stderr).
fn binsync(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut p = Proc::spawn(args, envs);
    let status = p
        .wait_timeout(Duration::from_secs(90))
        .expect("binsync did not exit");
    (status.code().unwrap_or(-1), p.stdout(), p.stderr())
}

/// Exactly one error line, naming `needle`; no panic.
fn assert_one_clear_error(code: i32, stderr: &str, needle: &str) {
    assert_ne!(code, 0, "must fail: {stderr}");
    assert_ne!(code, 101, "panicked: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("binsync: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    assert!(
        errors[0].contains(needle),
        "error line should mention `{needle}`: {}",
        errors[0]
    );
}

fn run_args<'a>(url: &'a str, state: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--source",
        url,
        "--server-id",
        "4242",
        "--state-dir",
        state,
        "--sink",
        "stdout",
        "--exit-at-end",
    ]
}

#[test]
fn check_names_every_wrong_setting_when_binlog_is_off() {
    let db = MariaDb::start(ServerOpts {
        binlog: false,
        ..ServerOpts::default()
    });
    let (code, out, err) = binsync(&["check", "--source", &db.url()], &[]);
    assert_ne!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("log_bin"))
        .unwrap_or_else(|| panic!("no log_bin line: {out}"));
    assert!(
        line.starts_with("FAIL") && line.contains("ON") && line.contains("OFF"),
        "{line}"
    );
    assert!(out.contains("fix: add log_bin"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let url = db.url();
    let (code, _, err) = binsync(&run_args(&url, state.to_str().unwrap()), &[]);
    assert_one_clear_error(code, &err, "log_bin");
}

#[test]
fn check_and_run_refuse_statement_format() {
    let db = MariaDb::start(ServerOpts {
        binlog_format: "STATEMENT",
        ..ServerOpts::default()
    });
    let (code, out, _) = binsync(&["check", "--source", &db.url()], &[]);
    assert_ne!(code, 0);
    let line = out.lines().find(|l| l.contains("binlog_format")).unwrap();
    assert!(
        line.starts_with("FAIL") && line.contains("STATEMENT"),
        "{line}"
    );
    assert!(out.contains("binlog_format=ROW"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let url = db.url();
    let (code, _, err) = binsync(&run_args(&url, state.to_str().unwrap()), &[]);
    assert_one_clear_error(code, &err, "binlog_format=ROW");
}

#[test]
fn check_passes_on_a_well_configured_server() {
    let db = MariaDb::start(ServerOpts::default());
    let (code, out, err) = binsync(&["check", "--source", &db.url()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ready"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn wrong_password_fails_at_once_naming_the_user() {
    let db = MariaDb::start(ServerOpts::default());
    db.create_user(
        "cdc",
        "right",
        "REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.*",
    );
    let url = format!("mysql://cdc@127.0.0.1:{}", db.port());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let started = Instant::now();
    let (code, _, err) = binsync(
        &run_args(&url, state.to_str().unwrap()),
        &[("BINSYNC_SOURCE_PASSWORD", "wrong")],
    );
    assert_one_clear_error(code, &err, "refused user `cdc`");
    assert!(
        !err.contains("wrong"),
        "the password must not be printed: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a wrong password is not retried"
    );

    assert!(err.contains("env BINSYNC_SOURCE_PASSWORD"), "{err}");

    // With --password-env, the error names that variable (it named the default before).
    let mut args = run_args(&url, state.to_str().unwrap());
    args.extend(["--password-env", "CDC_PASSWORD"]);
    let (code, _, err) = binsync(&args, &[("CDC_PASSWORD", "wrong")]);
    assert_one_clear_error(code, &err, "refused user `cdc`");
    assert!(err.contains("env CDC_PASSWORD"), "{err}");
    assert!(!err.contains("BINSYNC_SOURCE_PASSWORD"), "{err}");

    // The right password from the environment works.
    let (code, _, err) = binsync(
        &run_args(&url, state.to_str().unwrap()),
        &[("BINSYNC_SOURCE_PASSWORD", "right")],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unreachable_host_gives_up_after_the_connect_timeout() {
    let port = free_port();
    let url = format!("mysql://root@127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let mut args = run_args(&url, state.to_str().unwrap());
    args.extend(["--connect-timeout", "2s"]);
    let started = Instant::now();
    let (code, _, err) = binsync(&args, &[]);
    let took = started.elapsed();
    assert_one_clear_error(code, &err, "gave up reaching the source");
    assert!(err.contains("retrying"), "each attempt is logged: {err}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "{took:?}"
    );
}

/// `check` is a one-shot: a source nobody listens for is reported at once, with the fix, not
/// retried for the 30 s `run` waits for a restarting server (it took those 30 s before).
#[test]
fn check_against_a_closed_port_fails_fast() {
    let port = free_port();
    let url = format!("mysql://root@127.0.0.1:{port}");
    let started = Instant::now();
    let (code, _, err) = binsync(&["check", "--source", &url], &[]);
    let took = started.elapsed();
    assert_one_clear_error(code, &err, "check --source (host and port)");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("retrying"), "a one-shot: {err}");
    // A behaviour bound (no retries for the connect timeout), not a speed figure.
    assert!(took < Duration::from_secs(10), "{took:?}: {err}");
}

/// A stop while binsync still waits for the source at start-up (the server down or restarting)
/// ends it at once, quietly: nothing was read, so nothing is left to deliver, and it has not
/// given up on the source (it said "gave up ... after 30s" 3 s after starting).
#[test]
fn a_stop_while_still_connecting_exits_0_without_giving_up() {
    let port = free_port();
    let url = format!("mysql://root@127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let mut args = run_args(&url, state.to_str().unwrap());
    args.retain(|a| *a != "--exit-at-end");
    let mut p = Proc::spawn(&args, &[]);
    common::wait_until(Duration::from_secs(30), "a retry", || {
        p.stderr().contains("retrying")
    });
    std::thread::sleep(Duration::from_secs(1));
    p.sigterm();
    let stopping = Instant::now();
    let status = p
        .wait_timeout(Duration::from_secs(10))
        .expect("a stop while connecting must end binsync");
    let err = p.stderr();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(stopping.elapsed() < Duration::from_secs(5), "{err}");
    assert!(!err.contains("gave up"), "{err}");
    assert!(!err.contains("binsync: error:"), "{err}");
    assert!(
        err.contains("stopped before the source was reached"),
        "{err}"
    );
}

#[test]
fn corrupt_state_dir_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("conf"), b"\x00garbage\xff").unwrap();
    std::fs::write(state.join("db"), vec![0xA5u8; 4096]).unwrap();
    // No server needed: the state dir is opened first.
    let url = format!("mysql://root@127.0.0.1:{}", free_port());
    let (code, _, err) = binsync(&run_args(&url, state.to_str().unwrap()), &[]);
    assert_one_clear_error(code, &err, "corrupt");
}

#[test]
fn malformed_config_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("binsync.toml");
    std::fs::write(
        &cfg,
        "source = \"mysql://root@127.0.0.1:1\"\nserver_id = \"not a number\"\n",
    )
    .unwrap();
    let (code, _, err) = binsync(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert_one_clear_error(code, &err, "line 2");
    std::fs::write(&cfg, "sauce = 1\n").unwrap();
    let (code, _, err) = binsync(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert_one_clear_error(code, &err, "sauce");
}

#[test]
fn a_server_id_in_use_is_refused() {
    let db = MariaDb::start(ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let own = db.sql("SELECT @@server_id").trim().to_string();
    let url = db.url();
    let mut args = run_args(&url, state.to_str().unwrap());
    args[4] = &own;
    let (code, _, err) = binsync(&args, &[]);
    assert_one_clear_error(code, &err, "--server-id");

    // A real replica registered with id 9; binsync may not take it.
    let replica = MariaDb::start_replica_of(
        &db,
        ServerOpts {
            server_id: 9,
            ..ServerOpts::default()
        },
    );
    common::wait_until(Duration::from_secs(30), "replica registered", || {
        db.sql("SHOW SLAVE HOSTS")
            .lines()
            .any(|l| l.split('\t').next() == Some("9"))
    });
    let mut args = run_args(&url, state.to_str().unwrap());
    args[4] = "9";
    let (code, _, err) = binsync(&args, &[]);
    assert_one_clear_error(code, &err, "already used by");
    drop(replica);
}

/// Runs binsync with its stdout's reader gone before it prints (as `binsync ... | head -c 0`
/// would leave it); returns (exit code, stderr).
fn with_closed_stdout(args: &[&str]) -> (i32, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_binsync"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap().code().unwrap_or(-1), err)
}

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    std::fs::create_dir(&state).unwrap();
    let state = state.to_str().unwrap();
    for args in [
        vec!["status", "--state-dir", state],
        vec!["dlq", "--state-dir", state, "list"],
    ] {
        let (code, err) = with_closed_stdout(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("error"), "{args:?}: {err}");
    }

    // The stdout sink: binsync stops quietly; only what was written is checkpointed.
    let db = MariaDb::start(ServerOpts::default());
    db.sql("CREATE DATABASE t; CREATE TABLE t.x (id INT PRIMARY KEY); INSERT INTO t.x VALUES (1),(2),(3);");
    let run_state = dir.path().join("run");
    let (code, err) = with_closed_stdout(&run_args(&db.url(), run_state.to_str().unwrap()));
    assert_eq!(code, 0, "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("binsync: error"),
        "{err}"
    );
}
