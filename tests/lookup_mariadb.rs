//! Scenario: a table was created before the oldest binlog binsync reads (its CREATE TABLE
//! purged), on a MariaDB without FULL row metadata. binsync no longer asks information_schema
//! per table while it streams: at its first start it reads each captured table's definition
//! from the source (`SHOW CREATE TABLE`, the schema history's seed), and that names the
//! columns, the key, the unsigned integers, the ENUM labels and MariaDB's JSON columns (LONGTEXT
//! with a CHECK). A user who cannot see the table (no privilege on it: the server hides it
//! from the seed) gets a definite error naming it, never rows with positional names (`@1`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{wait_until, MariaDb, Proc, ServerOpts};
use serde_json::{json, Value};

/// A MINIMAL-metadata server whose only binlog starts after `shop.orders` was created; one
/// row in it.
fn server_with_a_table_older_than_its_binlog() -> MariaDb {
    let db = MariaDb::start(ServerOpts {
        row_metadata: "MINIMAL",
        ..ServerOpts::default()
    });
    db.sql(
        "CREATE DATABASE shop;
         CREATE TABLE shop.orders (id INT PRIMARY KEY, note JSON, state ENUM('new','paid'),
           qty INT UNSIGNED);
         FLUSH BINARY LOGS;",
    );
    // The server keeps files that crash recovery may still need: purge until it lets go.
    let (current, _) = db.binlog_position();
    wait_until(Duration::from_secs(30), "the CREATE purged", || {
        db.sql(&format!("PURGE BINARY LOGS TO '{current}'"));
        db.rows("SHOW BINARY LOGS").len() == 1
    });
    db.sql("INSERT INTO shop.orders VALUES (1, '{\"n\": [1, 2]}', 'paid', 4294967295)");
    db
}

/// `binsync run --start earliest --exit-at-end` from `url`: (exit success, sink lines, stderr).
fn run(url: &str, dir: &Path) -> (bool, Vec<Value>, String) {
    let state = dir.join("state").display().to_string();
    let out = dir.join("out.jsonl");
    let sink = format!("file:{}", out.display());
    let mut p = Proc::spawn(
        &[
            "run",
            "--source",
            url,
            "--server-id",
            "5151",
            "--state-dir",
            &state,
            "--sink",
            &sink,
            "--start",
            "earliest",
            "--exit-at-end",
        ],
        &[],
    );
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("binsync did not return");
    let lines = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (st.success(), lines, p.stderr())
}

#[test]
fn a_table_older_than_the_binlog_is_named_by_its_definition_read_at_start() {
    let db = server_with_a_table_older_than_its_binlog();
    let dir = tempfile::tempdir().unwrap();
    let (ok, lines, stderr) = run(&db.url(), dir.path());
    assert!(ok, "{stderr}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["op"], "insert");
    assert_eq!(lines[0]["id"], json!({"id": 1}));
    assert_eq!(
        lines[0]["after"],
        json!({"id": 1, "note": {"n": [1, 2]}, "state": "paid", "qty": 4294967295u64})
    );
}

#[test]
fn a_user_without_privileges_on_the_table_gets_a_definite_error_not_positional_names() {
    let db = server_with_a_table_older_than_its_binlog();
    // What binsync's replication needs, but no SELECT: the server hides the table from it.
    db.create_user("repl", "pw", "REPLICATION SLAVE, REPLICATION CLIENT");
    let dir = tempfile::tempdir().unwrap();
    let (ok, lines, stderr) = run(&db.url_as("repl", "pw"), dir.path());
    assert!(!ok, "{stderr}");
    assert_eq!(lines, Vec::<Value>::new(), "nothing delivered");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("binsync: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("shop.orders") && errors[0].contains("will not guess column names"),
        "{stderr}"
    );
}
