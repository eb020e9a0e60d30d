//! Scenarios of `binsync run` options a user relies on, each against a real MariaDB:
//! table filters and entity names, `--start latest` and `--start gtid:`, column names from the
//! schema history without FULL row metadata, `binsync status`, JSON logs, and a purged binlog.

mod common;

use std::time::Duration;

use common::workload::is_row_change;
use common::{MariaDb, Proc, ServerOpts};
use serde_json::Value;

/// `binsync run --exit-at-end` against `db` with this state dir and sink.
fn spawn_run(db: &MariaDb, state: &std::path::Path, sink: &str, extra: &[&str]) -> Proc {
    let url = db.url();
    let state_s = state.display().to_string();
    let mut args = vec![
        "run",
        "--source",
        &url,
        "--server-id",
        "4646",
        "--state-dir",
        &state_s,
        "--sink",
        sink,
        "--exit-at-end",
    ];
    args.extend(extra);
    Proc::spawn(&args, &[])
}

fn run(db: &MariaDb, state: &std::path::Path, extra: &[&str]) -> (Vec<Value>, String) {
    let out = state.with_extension("jsonl");
    let mut p = spawn_run(db, state, &format!("file:{}", out.display()), extra);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("binsync did not return");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(st.success(), "binsync failed: {}", p.stderr());
    (lines, p.stderr())
}

fn setup(db: &MariaDb) {
    db.sql(
        "CREATE DATABASE shop; CREATE DATABASE crm;
         CREATE TABLE shop.products (id INT PRIMARY KEY, name VARCHAR(20));
         CREATE TABLE shop.tmp_scratch (id INT PRIMARY KEY);
         CREATE TABLE crm.users (id INT PRIMARY KEY, email VARCHAR(50));
         INSERT INTO shop.products VALUES (1, 'a');
         INSERT INTO shop.tmp_scratch VALUES (1);
         INSERT INTO crm.users VALUES (7, 'x@example.com');",
    );
}

#[test]
fn include_exclude_and_entity_names() {
    let db = MariaDb::start(ServerOpts::default());
    setup(&db);
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = run(
        &db,
        &dir.path().join("s"),
        &[
            "--include",
            "shop.*",
            "--exclude",
            "shop.tmp_*",
            "--entity",
            "shop.products=product",
        ],
    );
    // The filters and the entity name hold for the DDL too: the one included table's
    // CREATE TABLE, then its row.
    let ops: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            let field = |k: &str| l[k].as_str().unwrap();
            (field("op"), field("table"), field("entity"))
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("ddl", "products", "product"),
            ("insert", "products", "product")
        ],
        "{lines:?}"
    );
}

#[test]
fn start_latest_skips_history_and_start_gtid_resumes_after_it() {
    let db = MariaDb::start(ServerOpts::default());
    setup(&db);
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = run(&db, &dir.path().join("latest"), &["--start", "latest"]);
    assert!(lines.is_empty(), "{lines:?}");
    // The start point was checkpointed: the next run (no --start) continues from it.
    db.sql("INSERT INTO crm.users VALUES (20, 'late@example.com')");
    let (lines, stderr) = run(&db, &dir.path().join("latest"), &[]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    // No --start given: nothing is ignored, and the log does not say it is.
    assert!(
        stderr.contains("resuming from the checkpoint") && !stderr.contains("is ignored"),
        "{stderr}"
    );
    assert_eq!(lines[0]["id"]["id"], 20);
    let pos = db.sql("SELECT @@gtid_binlog_pos").trim().to_string();
    db.sql("INSERT INTO crm.users VALUES (8, 'y@example.com')");
    let (lines, _) = run(
        &db,
        &dir.path().join("gtid"),
        &["--start", &format!("gtid:{pos}")],
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["id"]["id"], 8);
    // With a checkpoint, --start is ignored (and says so).
    let (lines, stderr) = run(&db, &dir.path().join("gtid"), &["--start", "earliest"]);
    assert!(
        lines.len() == 1 && stderr.contains("--start is ignored"),
        "{stderr}"
    );
}

/// A run that must stop before it streams: its one error line (and nothing delivered).
fn refused(db: &MariaDb, state: &std::path::Path, extra: &[&str]) -> String {
    let out = state.with_extension("jsonl");
    let mut p = spawn_run(db, state, &format!("file:{}", out.display()), extra);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("binsync did not return");
    let err = p.stderr();
    assert!(!st.success(), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("binsync: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    let sent = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(sent.is_empty(), "nothing is delivered: {sent}");
    errors[0].to_string()
}

/// `binsync status --state-dir`'s checkpoint line.
fn checkpoint_line(state: &std::path::Path) -> String {
    let mut p = Proc::spawn(&["status", "--state-dir", state.to_str().unwrap()], &[]);
    assert!(p.wait_timeout(Duration::from_secs(30)).unwrap().success());
    let out = p.stdout();
    out.lines()
        .find(|l| l.starts_with("checkpoint:"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

/// `--start` must name a point of the source's own history. A GTID it has not written yet
/// was accepted, checkpointed, and then reported as "purged": it is refused at start, before
/// anything is checkpointed, naming the server's position. A binlog file it never had is
/// said to be missing, with the files it has, not "purged"; a file older than its oldest
/// one (really purged) still is.
#[test]
fn start_points_outside_the_servers_history_are_refused_at_start() {
    let db = MariaDb::start(ServerOpts::default());
    setup(&db);
    let dir = tempfile::tempdir().unwrap();
    let pos = db.gtid_binlog_pos();
    let (head, seq) = pos.rsplit_once('-').unwrap();
    let ahead = format!("{head}-{}", seq.parse::<u64>().unwrap() + 100);
    let domain = pos.split('-').next().unwrap();
    let other_server = format!("{domain}-4242-1");
    for (i, gtid) in [ahead, other_server].iter().enumerate() {
        let state = dir.path().join(format!("gtid{i}"));
        let line = refused(&db, &state, &["--start", &format!("gtid:{gtid}")]);
        assert!(
            line.contains(&format!("--start gtid:{gtid}"))
                && line.contains("not in its history")
                && line.contains(&format!("GTID position is {pos}"))
                && line.contains("--start latest")
                && !line.contains("purged"),
            "{line}"
        );
        assert!(checkpoint_line(&state).contains("none"), "not checkpointed");
    }

    // Files: one the server never had (a later number, another name), a position past the
    // end of one it has.
    let (current, _) = db.binlog_position();
    for (start, why) in [
        (
            "file:mariadb-bin.000099:4",
            "has no binlog file mariadb-bin.000099",
        ),
        (
            "file:other-bin.000001:4",
            "has no binlog file other-bin.000001",
        ),
        (
            "file:mariadb-bin.000001:99999999",
            "ends before byte 99999999",
        ),
    ] {
        let line = refused(&db, &dir.path().join("file"), &["--start", start]);
        assert!(
            line.contains(why) && line.contains(&current) && !line.contains("purged"),
            "{line}"
        );
    }

    // A file older than the oldest one left is purged.
    db.sql("FLUSH BINARY LOGS; FLUSH BINARY LOGS;");
    common::wait_until(Duration::from_secs(30), "old binlogs purged", || {
        let (last, _) = db.binlog_position();
        db.sql(&format!("PURGE BINARY LOGS TO '{last}'"));
        db.sql("SHOW BINARY LOGS").lines().count() == 1
    });
    let (oldest, _) = db.binlog_position();
    let line = refused(
        &db,
        &dir.path().join("purged"),
        &["--start", "file:mariadb-bin.000001:4"],
    );
    assert!(line.contains("purged") && line.contains(&oldest), "{line}");
}

/// Without FULL row metadata the binlog names no column: names, key, signedness and ENUM
/// labels come from the schema history (here the CREATE TABLE in the stream, delivered as a
/// `ddl` line). A table whose definition at the start the history cannot know (a DDL changed
/// it between the start and the history's seed) is a definite error naming it, never rows
/// with positional names (`@1`).
#[test]
fn without_full_row_metadata_names_come_from_the_schema_history() {
    let db = MariaDb::start(ServerOpts {
        row_metadata: "MINIMAL",
        ..ServerOpts::default()
    });
    db.sql(
        "CREATE DATABASE t; CREATE TABLE t.x (a INT, k INT UNSIGNED, e ENUM('p','q'), PRIMARY KEY (k));
         INSERT INTO t.x VALUES (-1, 4294967295, 'q');",
    );
    let dir = tempfile::tempdir().unwrap();
    let (lines, stderr) = run(&db, &dir.path().join("s"), &[]);
    // The history is no lookup that a DDL can race: nothing to warn about.
    assert!(
        !stderr.contains("information_schema") && !stderr.contains(" WARN "),
        "{stderr}"
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["op"], "ddl");
    assert_eq!(lines[0]["key"], serde_json::json!(["k"]));
    assert_eq!(lines[1]["id"], serde_json::json!({"k": 4294967295u64}));
    assert_eq!(
        lines[1]["after"],
        serde_json::json!({"a": -1, "k": 4294967295u64, "e": "q"})
    );

    // Started after t.y's CREATE, before an ALTER of it: the definition read at start is
    // the altered one, which does not hold for the row before the ALTER.
    db.sql("CREATE TABLE t.y (id INT PRIMARY KEY, v INT)");
    let (file, offset) = db.binlog_position();
    db.sql(
        "INSERT INTO t.y VALUES (1, 1); ALTER TABLE t.y ADD COLUMN w INT;
         INSERT INTO t.y VALUES (2, 2, 2);",
    );
    let state = dir.path().join("from-file");
    let out = state.with_extension("jsonl");
    let start = format!("file:{file}:{offset}");
    let sink = format!("file:{}", out.display());
    let mut p = spawn_run(&db, &state, &sink, &["--start", &start]);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("binsync did not return");
    let err = p.stderr();
    assert!(!st.success(), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("binsync: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("t.y") && errors[0].contains("will not guess column names"),
        "{err}"
    );
    let sent = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(!sent.contains("\"@1\""), "positional names: {sent}");
    assert!(
        !sent.contains("\"table\":\"y\""),
        "nothing of t.y is sent: {sent}"
    );
}

#[test]
fn status_shows_the_checkpoint_and_the_lag() {
    let db = MariaDb::start(ServerOpts::default());
    setup(&db);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    run(&db, &state, &["--log-format", "json"]);
    let mut p = Proc::spawn(
        &[
            "status",
            "--state-dir",
            state.to_str().unwrap(),
            "--source",
            &db.url(),
        ],
        &[],
    );
    assert!(p.wait_timeout(Duration::from_secs(30)).unwrap().success());
    let out = p.stdout();
    assert!(out.contains("checkpoint: mariadb-bin.000001:"), "{out}");
    assert!(out.contains("lag:        0 B of binlog"), "{out}");
}

#[test]
fn json_logs_are_json() {
    let db = MariaDb::start(ServerOpts::default());
    setup(&db);
    let dir = tempfile::tempdir().unwrap();
    let (_, stderr) = run(&db, &dir.path().join("s"), &["--log-format", "json"]);
    for line in stderr.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(v["level"].is_string(), "{line}");
    }
}

#[test]
fn a_purged_binlog_is_one_clear_error() {
    let db = MariaDb::start(ServerOpts::default());
    setup(&db);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    run(&db, &state, &[]);
    // Changes binsync has not read, then their binlog is purged.
    db.sql("INSERT INTO crm.users VALUES (9, 'z@example.com'); FLUSH BINARY LOGS;");
    db.sql("INSERT INTO crm.users VALUES (10, 'w@example.com'); FLUSH BINARY LOGS;");
    // The server keeps files that crash recovery may still need: purge until it lets go.
    common::wait_until(Duration::from_secs(30), "old binlogs purged", || {
        let status = db.sql("SHOW MASTER STATUS");
        let last = status.split('\t').next().unwrap();
        db.sql(&format!("PURGE BINARY LOGS TO '{last}'"));
        db.sql("SHOW BINARY LOGS").lines().count() == 1
    });
    let mut p = spawn_run(&db, &state, "stdout", &[]);
    let st = p.wait_timeout(Duration::from_secs(60)).expect("returns");
    let err = p.stderr();
    assert!(!st.success(), "{err}\n{}", p.stdout());
    let line = err
        .lines()
        .find(|l| l.starts_with("binsync: error:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("1236") && line.contains("--reset"), "{line}");
    // `check` says the same about retention.
    let (url, state_s) = (db.url(), state.display().to_string());
    let mut c = Proc::spawn(&["check", "--source", &url, "--state-dir", &state_s], &[]);
    let st = c.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(!st.success());
    assert!(
        c.stdout().contains("FAIL binlog retention"),
        "{}",
        c.stdout()
    );
}

#[test]
fn signedness_after_a_year_column_holds_when_starting_mid_file() {
    // MariaDB counts YEAR in the signedness metadata; a stream opened mid-file must know that
    // the writer is MariaDB too (from the format description the server sends first).
    let db = MariaDb::start(ServerOpts::default());
    db.sql("CREATE DATABASE g; CREATE TABLE g.s (id INT PRIMARY KEY, y YEAR, b BIGINT, u BIGINT UNSIGNED)");
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = run(&db, &dir.path().join("s"), &["--start", "latest"]);
    assert!(lines.is_empty());
    db.sql("INSERT INTO g.s VALUES (1, 2024, -5, 18446744073709551615)");
    let (lines, _) = run(&db, &dir.path().join("s"), &[]);
    assert_eq!(
        lines[0]["after"],
        serde_json::json!({"id": 1, "y": 2024, "b": -5, "u": u64::MAX})
    );
}

#[test]
fn sequences_are_skipped_unless_named_and_keyless_tables_are_named_once() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(
        "CREATE DATABASE shop;
         CREATE SEQUENCE shop.ids;
         CREATE TABLE shop.orders (id INT PRIMARY KEY, n BIGINT);
         CREATE TABLE shop.log (msg VARCHAR(20));
         CREATE TABLE shop.tagged (code VARCHAR(5) NOT NULL, UNIQUE KEY (code));
         INSERT INTO shop.orders VALUES (NEXTVAL(shop.ids), 1);
         INSERT INTO shop.log VALUES ('x'), ('x');",
    );
    let dir = tempfile::tempdir().unwrap();
    let (lines, err) = run(&db, &dir.path().join("a"), &[]);
    let tables: Vec<&str> = lines
        .iter()
        .filter(|l| is_row_change(l))
        .map(|l| l["table"].as_str().unwrap())
        .collect();
    assert!(
        !tables.contains(&"ids"),
        "a sequence is no entity: {tables:?}"
    );
    assert_eq!(
        tables.iter().filter(|t| **t == "log").count(),
        2,
        "{tables:?}"
    );
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("no primary key"))
        .collect();
    assert_eq!(warned.len(), 1, "one warning, for shop.log only: {err}");
    assert!(warned[0].contains("shop.log"), "{err}");

    // Without a catalog (an archived binlog), sequences are learnt from their CREATE
    // SEQUENCE statements.
    db.sql(
        "CREATE SEQUENCE shop.later; SELECT NEXTVAL(shop.later);
         INSERT INTO shop.orders VALUES (99, 2); FLUSH BINARY LOGS;",
    );
    let (current, _) = db.binlog_position();
    let mut files: Vec<String> = std::fs::read_dir(db.datadir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("mariadb-bin.0") && *n != current)
        .collect();
    files.sort();
    let mut args = vec!["replay".to_string()];
    for f in &files {
        args.push("--binlog-file".into());
        args.push(db.datadir().join(f).display().to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Proc::spawn(&refs, &[]);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("replay hung");
    assert!(st.success(), "{}", p.stderr());
    let replayed: Vec<Value> = p
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(replayed.iter().any(|l| l["id"]["id"] == 99), "{replayed:?}");
    assert!(
        !replayed
            .iter()
            .any(|l| l["table"] == "later" || l["table"] == "ids"),
        "{replayed:?}"
    );

    // Named exactly by --include, it is captured.
    let (lines, _) = run(
        &db,
        &dir.path().join("c"),
        &["--include", "shop.ids", "--include", "shop.orders"],
    );
    assert!(
        lines
            .iter()
            .any(|l| is_row_change(l) && l["table"] == "ids"),
        "{lines:?}"
    );
}
