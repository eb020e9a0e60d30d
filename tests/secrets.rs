//! Scenario: an operator passes passwords in URLs (the source's, and HTTP basic auth in the
//! sink's), some of them mistyped. No log line, error, or `status`/`check`/`dlq` output of
//! binsync ever shows them; the sink's credentials still reach the receiver, as a header.

mod common;

use std::time::Duration;

use common::workload::Receiver;
use common::{MariaDb, Proc, ServerOpts};

const SOURCE_PW: &str = "SrcSecret_7781";
const SINK_PW: &str = "HookSecret_9920";

fn binsync(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let mut p = Proc::spawn(args, envs);
    let status = p
        .wait_timeout(Duration::from_secs(90))
        .expect("binsync did not exit");
    (
        status.code().unwrap_or(-1),
        format!("{}{}", p.stdout(), p.stderr()),
    )
}

fn assert_no_secret(what: &str, out: &str) {
    for pw in [SOURCE_PW, SINK_PW] {
        assert!(!out.contains(pw), "{what} shows a password: {out}");
    }
}

#[test]
fn no_password_in_any_output() {
    let db = MariaDb::start(ServerOpts::default());
    db.create_user(
        "cdc",
        SOURCE_PW,
        "REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.*",
    );
    db.sql(
        "CREATE DATABASE t; CREATE TABLE t.x (id INT PRIMARY KEY); INSERT INTO t.x VALUES (1),(2);",
    );
    let dir = tempfile::tempdir().unwrap();
    // The receiver accepts only the Basic header made from the sink URL's credentials.
    let basic = "Basic aG9vazpIb29rU2VjcmV0Xzk5MjA="; // base64("hook:HookSecret_9920")
    let recv_env = [("HOOK_AUTH", basic)];
    let mut recv = Receiver::start_with_env(
        &dir.path().join("recv"),
        "127.0.0.1:0",
        &["--auth-header-env", "HOOK_AUTH"],
        &recv_env,
    );
    let source = format!("mysql://cdc:{SOURCE_PW}@127.0.0.1:{}", db.port());
    let sink = format!("http://hook:{SINK_PW}@{}/sync", recv.addr);
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let (code, out) = binsync(
        &[
            "run",
            "--source",
            &source,
            "--server-id",
            "4242",
            "--state-dir",
            state,
            "--sink",
            &sink,
            "--exit-at-end",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert_no_secret("run", &out);
    let (state_at_receiver, stats) = recv.dump();
    assert_eq!(
        state_at_receiver.len(),
        2,
        "the receiver took the changes with the header: {stats}"
    );

    for (what, args) in [
        (
            "status",
            vec!["status", "--state-dir", state, "--source", &source],
        ),
        (
            "check",
            vec!["check", "--source", &source, "--state-dir", state],
        ),
        ("dlq list", vec!["dlq", "--state-dir", state, "list"]),
    ] {
        let (_, out) = binsync(&args, &[]);
        assert_no_secret(what, &out);
    }

    // Mistyped URLs: the error names the mistake, never the password.
    let port = db.port().to_string();
    for bad in [
        format!("mysql:/cdc:{SOURCE_PW}@127.0.0.1:{port}"),
        format!("mysql//cdc:{SOURCE_PW}@127.0.0.1:{port}"),
        format!("cdc:{SOURCE_PW}@127.0.0.1:{port}"),
    ] {
        let (code, out) = binsync(&["check", "--source", &bad], &[]);
        assert_ne!(code, 0, "{out}");
        assert!(out.contains("binsync: error:"), "{out}");
        assert_no_secret("a mistyped --source", &out);
    }
    for bad in [
        format!("htp://hook:{SINK_PW}@127.0.0.1/x"),
        format!("http://hook:{SINK_PW}@[::1/x"),
    ] {
        let (code, out) = binsync(
            &[
                "run",
                "--source",
                &source,
                "--server-id",
                "4242",
                "--state-dir",
                state,
                "--sink",
                &bad,
            ],
            &[],
        );
        assert_ne!(code, 0, "{out}");
        assert_no_secret("a mistyped --sink", &out);
    }
}
