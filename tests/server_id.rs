//! Scenario: two replicas of one MariaDB share a server id (a copied config, a second binsync
//! for another receiver). The server keeps one registration per id and drops the older dump,
//! so each run must learn it with one line that names `--server-id`, never stream on as if
//! nothing happened or retry forever.

mod common;

use std::time::Duration;

use common::{wait_until, MariaDb, Proc, ServerOpts};

fn spawn(db: &MariaDb, state: &std::path::Path, server_id: &str) -> Proc {
    let url = db.url();
    let state_s = state.display().to_string();
    let out = format!("file:{}", state.with_extension("jsonl").display());
    Proc::spawn(
        &[
            "run",
            "--source",
            &url,
            "--server-id",
            server_id,
            "--state-dir",
            &state_s,
            "--sink",
            &out,
            "--start",
            "earliest",
        ],
        &[],
    )
}

fn error_line(p: &Proc) -> String {
    p.stderr()
        .lines()
        .find(|l| l.starts_with("binsync: error:"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_shared_server_id_is_refused_at_start_and_named_when_the_server_drops_us() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1), (2);");
    let dir = tempfile::tempdir().unwrap();

    let mut first = spawn(&db, &dir.path().join("a"), "77");
    wait_until(Duration::from_secs(30), "the first run streams", || {
        first.stderr().contains("streaming")
    });

    // A second binsync (its own state dir) with the same id: it would make the server drop
    // the first, so it is refused before it registers.
    let mut second = spawn(&db, &dir.path().join("b"), "77");
    let st = second
        .wait_timeout(Duration::from_secs(30))
        .expect("the second run ends");
    assert!(!st.success());
    let line = error_line(&second);
    assert!(
        line.contains("server id 77 is already used by another binsync run")
            && line.contains("--server-id"),
        "{line}"
    );
    assert!(
        first.is_running(),
        "the first run goes on: {}",
        first.stderr()
    );

    // A replica that does not ask (a MariaDB replica configured with the same server_id):
    // the server drops the first run's dump (error 4052), which must stop it with the fix.
    let replica = MariaDb::start_replica_of(
        &db,
        ServerOpts {
            server_id: 77,
            ..ServerOpts::default()
        },
    );
    let st = first
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the dropped run goes on: {}", first.stderr()));
    assert!(!st.success());
    let line = error_line(&first);
    assert!(
        line.contains("another replica connected with the same server id")
            && line.contains("--server-id"),
        "{line}"
    );
    drop(replica);
}
