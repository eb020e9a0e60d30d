//! Scenarios of issue 11 on a real MariaDB, each with FULL and with MINIMAL (the servers'
//! default) `binlog_row_metadata`: a table changes shape between rows in every way the issue
//! lists (add a column, also FIRST and AFTER; drop; reorder; a type change; a rename; ENUM
//! labels added; a JSON column; a primary key changed; a table renamed, truncated, dropped
//! and created again with other columns; a gh-ost cut-over), once while binsync is stopped
//! (it then catches up across all of it) and once while it runs. Every row in the sink must
//! carry the names and values of its own schema version, as the source held it when written;
//! the DDL comes as contract v2 operations with each new definition.

mod common;
mod snapshot_util;

use std::path::Path;
use std::time::Duration;

use common::workload::{file_state, spawn_file_run};
use common::{wait_until, MariaDb, Proc, ServerOpts};
use serde_json::{json, Value};

fn server(metadata: &'static str) -> MariaDb {
    MariaDb::start(ServerOpts {
        row_metadata: metadata,
        ..ServerOpts::default()
    })
}

/// A statement, and the row image the sink must show for the one row it writes (entity,
/// `after`), if it writes one.
struct Step {
    sql: &'static str,
    row: Option<(&'static str, Value)>,
}

fn ddl(sql: &'static str) -> Step {
    Step { sql, row: None }
}

fn row(sql: &'static str, entity: &'static str, after: Value) -> Step {
    Step {
        sql,
        row: Some((entity, after)),
    }
}

/// The changes, after `app.t (id, a, e, u)` and `app.g (id, v)` exist with one row each.
fn changes() -> Vec<Step> {
    vec![
        ddl("ALTER TABLE app.t ADD COLUMN b VARCHAR(10) AFTER id"),
        row(
            "INSERT INTO app.t VALUES (2, 'two', 20, 'y', 18446744073709551615)",
            "t",
            json!({"id": 2, "b": "two", "a": 20, "e": "y", "u": 18446744073709551615u64}),
        ),
        ddl("ALTER TABLE app.t ADD COLUMN f SMALLINT FIRST"),
        row(
            "INSERT INTO app.t VALUES (3, 3, 'three', 30, 'x', 3)",
            "t",
            json!({"f": 3, "id": 3, "b": "three", "a": 30, "e": "x", "u": 3}),
        ),
        ddl("ALTER TABLE app.t DROP COLUMN a"),
        row(
            "INSERT INTO app.t VALUES (4, 4, 'four', 'y', 4)",
            "t",
            json!({"f": 4, "id": 4, "b": "four", "e": "y", "u": 4}),
        ),
        // Reorder, and a type change on the way.
        ddl("ALTER TABLE app.t MODIFY COLUMN f BIGINT AFTER u"),
        row(
            "INSERT INTO app.t VALUES (5, 'five', 'x', 5, 5000000000)",
            "t",
            json!({"id": 5, "b": "five", "e": "x", "u": 5, "f": 5000000000u64}),
        ),
        ddl("ALTER TABLE app.t CHANGE COLUMN b c VARCHAR(40)"),
        row(
            "INSERT INTO app.t VALUES (6, 'six', 'y', 6, 6)",
            "t",
            json!({"id": 6, "c": "six", "e": "y", "u": 6, "f": 6}),
        ),
        ddl("ALTER TABLE app.t MODIFY COLUMN e ENUM('x','y','z')"),
        row(
            "INSERT INTO app.t VALUES (7, 'seven', 'z', 7, 7)",
            "t",
            json!({"id": 7, "c": "seven", "e": "z", "u": 7, "f": 7}),
        ),
        ddl("ALTER TABLE app.t ADD COLUMN doc JSON"),
        row(
            "INSERT INTO app.t VALUES (8, 'eight', 'x', 8, 8, '{\"k\": [8]}')",
            "t",
            json!({"id": 8, "c": "eight", "e": "x", "u": 8, "f": 8, "doc": {"k": [8]}}),
        ),
        ddl("ALTER TABLE app.t DROP PRIMARY KEY, ADD PRIMARY KEY (e, id)"),
        row(
            "INSERT INTO app.t VALUES (9, 'nine', 'y', 9, 9, NULL)",
            "t",
            json!({"id": 9, "c": "nine", "e": "y", "u": 9, "f": 9, "doc": null}),
        ),
        ddl("RENAME TABLE app.t TO app.t2"),
        row(
            "INSERT INTO app.t2 VALUES (10, 'ten', 'z', 10, 10, '[10]')",
            "t2",
            json!({"id": 10, "c": "ten", "e": "z", "u": 10, "f": 10, "doc": [10]}),
        ),
        ddl("TRUNCATE TABLE app.t2"),
        row(
            "INSERT INTO app.t2 VALUES (11, 'eleven', 'x', 11, 11, NULL)",
            "t2",
            json!({"id": 11, "c": "eleven", "e": "x", "u": 11, "f": 11, "doc": null}),
        ),
        ddl("DROP TABLE app.t2"),
        ddl("CREATE TABLE app.t2 (k VARCHAR(8) PRIMARY KEY, n DECIMAL(6,2))"),
        row(
            "INSERT INTO app.t2 VALUES ('k12', 12.5)",
            "t2",
            json!({"k": "k12", "n": "12.50"}),
        ),
        // A gh-ost cut-over of app.g: a shadow table altered and filled, then swapped in.
        ddl("CREATE TABLE app._g_gho LIKE app.g"),
        ddl("ALTER TABLE app._g_gho ADD COLUMN w INT NOT NULL DEFAULT 7 FIRST"),
        ddl("INSERT INTO app._g_gho (id, v) SELECT id, v FROM app.g"),
        ddl("RENAME TABLE app.g TO app._g_del, app._g_gho TO app.g"),
        ddl("DROP TABLE app._g_del"),
        row(
            "INSERT INTO app.g VALUES (1, 2, 'g2')",
            "g",
            json!({"w": 1, "id": 2, "v": "g2"}),
        ),
    ]
}

const SETUP: &str = "CREATE DATABASE app;\n\
    CREATE TABLE app.t (id INT PRIMARY KEY, a INT, e ENUM('x','y'), u BIGINT UNSIGNED);\n\
    CREATE TABLE app.g (id INT PRIMARY KEY, v VARCHAR(8));\n\
    INSERT INTO app.t VALUES (1, 10, 'x', 1);\n\
    INSERT INTO app.g VALUES (1, 'g1');";

/// The first rows, as the setup wrote them.
fn first_rows() -> Vec<(&'static str, Value)> {
    vec![
        ("t", json!({"id": 1, "a": 10, "e": "x", "u": 1})),
        ("g", json!({"id": 1, "v": "g1"})),
    ]
}

fn lines(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Inserts (entity, after) in the order the sink holds them, each `seq` once (a restart
/// after kill -9 writes again, with the same `seq`, what was not checkpointed); the gh-ost
/// copy's inserts are left out (into a table binsync does not capture).
fn inserted(lines: &[Value]) -> Vec<(String, Value)> {
    let mut seen = std::collections::HashSet::new();
    lines
        .iter()
        .filter(|l| l["op"] == "insert" && seen.insert(l["seq"].as_u64()))
        .map(|l| {
            (
                l["entity"].as_str().unwrap().to_string(),
                l["after"].clone(),
            )
        })
        .collect()
}

fn expected(steps: &[Step]) -> Vec<(String, Value)> {
    first_rows()
        .into_iter()
        .chain(steps.iter().filter_map(|s| s.row.clone()))
        .map(|(e, v)| (e.to_string(), v))
        .collect()
}

fn run_to_end(db: &MariaDb, state: &Path, out: &Path) -> Proc {
    let mut p = spawn_file_run(
        db,
        "4711",
        state,
        out,
        &["--include", "app.*", "--exclude", "app._*", "--exit-at-end"],
    );
    let st = p.wait_timeout(Duration::from_secs(120)).expect("run hung");
    assert!(st.success(), "{}", p.stderr());
    p
}

/// The checks every scenario ends with: each row with its own version's names and values;
/// the DDL delivered as operations; no positional name anywhere; numbering without gaps or
/// replays (checked by `file_state`).
fn check_sink(out: &Path, steps: &[Step], err: &str) {
    check_sink_with(out, steps, err, false)
}

/// [`check_sink`]; `replays`: lines written again after a kill -9 may come (each identical to
/// its first writing, which `file_state` checks).
fn check_sink_with(out: &Path, steps: &[Step], err: &str, replays: bool) {
    let all = lines(out);
    assert_eq!(inserted(&all), expected(steps), "{err}");
    let text = std::fs::read_to_string(out).unwrap();
    assert!(!text.contains("\"@1\""), "positional names: {text}");
    let ops: Vec<(&str, &str)> = all
        .iter()
        .filter(|l| l.get("statement").is_some())
        .map(|l| (l["op"].as_str().unwrap(), l["table"].as_str().unwrap()))
        .collect();
    assert!(ops.contains(&("truncate", "t2")), "{ops:?}");
    assert!(ops.contains(&("drop", "t2")), "{ops:?}");
    // The cut-over: g's new definition (w first), as a ddl for g.
    let g: Vec<&Value> = all
        .iter()
        .filter(|l| l["op"] == "ddl" && l["table"] == "g")
        .collect();
    let last = g.last().expect("a ddl for g");
    assert_eq!(
        last["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["w", "id", "v"]
    );
    // The key change shows in the ids and in the ddl's key.
    let nine = all.iter().find(|l| l["after"]["id"] == 9).expect("row 9");
    assert_eq!(nine["id"], json!({"e": "y", "id": 9}));
    assert!(all
        .iter()
        .any(|l| l["op"] == "ddl" && l["key"] == json!(["e", "id"])));
    // Numbering: no gap, no line twice; truncate and drop empty their entity type.
    let (state, dups) = file_state(&out.display().to_string());
    assert!(
        replays || dups == 0,
        "{dups} lines written twice without a crash"
    );
    let t2: Vec<_> = state.keys().filter(|(t, _)| t == "t2").collect();
    assert_eq!(t2.len(), 1, "only k12 survives the drop: {state:?}");
}

fn stopped_while_the_tables_change(metadata: &'static str) {
    let db = server(metadata);
    db.sql(SETUP);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    // The first run seeds the history (from the binlog's start: the CREATEs come in it).
    run_to_end(&db, &state, &out);
    assert_eq!(inserted(&lines(&out)).len(), 2);
    let steps = changes();
    for s in &steps {
        db.sql(s.sql);
    }
    let p = run_to_end(&db, &state, &out);
    check_sink(&out, &steps, &p.stderr());

    replay_gives_the_same_lines(&db, dir.path(), &out);
}

/// The server's binlog through `replay`, which learns the tables from the CREATEs in it,
/// gives the live run's lines (its `seq` aside).
fn replay_gives_the_same_lines(db: &MariaDb, dir: &Path, out: &Path) {
    let mut files: Vec<String> = std::fs::read_dir(db.datadir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("mariadb-bin.0")
        })
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    let replayed = dir.join("replayed.jsonl");
    let sink = format!("file:{}", replayed.display());
    let mut args = vec![
        "replay",
        "--include",
        "app.*",
        "--exclude",
        "app._*",
        "--sink",
        &sink,
        "--binlog-file",
    ];
    args.extend(files.iter().map(String::as_str));
    let mut r = Proc::spawn(&args, &[]);
    let st = r
        .wait_timeout(Duration::from_secs(60))
        .expect("replay hung");
    assert!(st.success(), "{}", r.stderr());
    let without_seq = |v: &[Value]| -> Vec<Value> {
        v.iter()
            .map(|l| {
                let mut l = l.clone();
                l.as_object_mut().unwrap().remove("seq");
                l
            })
            .collect()
    };
    assert_eq!(without_seq(&lines(&replayed)), without_seq(&lines(out)));
}

fn running_while_the_tables_change(metadata: &'static str) {
    let db = server(metadata);
    db.sql(SETUP);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let mut p = spawn_file_run(
        &db,
        "4712",
        &state,
        &out,
        &["--include", "app.*", "--exclude", "app._*"],
    );
    wait_until(Duration::from_secs(60), "the first rows", || {
        inserted(&lines(&out)).len() == 2
    });
    let steps = changes();
    for s in &steps {
        db.sql(s.sql);
        // Now and then give binsync time to catch up, so DDL lands both ahead of it and
        // behind it.
        if s.row.is_some() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let want = expected(&steps).len();
    wait_until(Duration::from_secs(60), "every row", || {
        inserted(&lines(&out)).len() >= want || !p.is_running()
    });
    p.sigterm();
    let st = p.wait_timeout(Duration::from_secs(30)).expect("stop hung");
    assert!(st.success(), "{}", p.stderr());
    check_sink(&out, &steps, &p.stderr());
    replay_gives_the_same_lines(&db, dir.path(), &out);
}

#[test]
fn stopped_while_the_tables_change_full() {
    stopped_while_the_tables_change("FULL");
}

#[test]
fn stopped_while_the_tables_change_minimal() {
    stopped_while_the_tables_change("MINIMAL");
}

#[test]
fn running_while_the_tables_change_full() {
    running_while_the_tables_change("FULL");
}

#[test]
fn running_while_the_tables_change_minimal() {
    running_while_the_tables_change("MINIMAL");
}

/// `binsync schema ...` on a state dir.
fn schema_cmd(args: &[&str]) -> (bool, String, String) {
    let mut p = Proc::spawn(&[&["schema"], args].concat(), &[]);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("schema hung");
    (st.success(), p.stdout(), p.stderr())
}

fn run_to_end_result(db: &MariaDb, state: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["--include", "app.*", "--exit-at-end"];
    args.extend(extra);
    let mut p = spawn_file_run(db, "4713", state, out, &args);
    let st = p.wait_timeout(Duration::from_secs(120)).expect("run hung");
    (st.success(), p.stderr())
}

#[test]
fn an_unreadable_ddl_stops_with_the_way_out_and_schema_refresh_resolves_it() {
    for metadata in ["MINIMAL", "FULL"] {
        an_unreadable_ddl_stops_with_the_way_out_and_schema_refresh_resolves_it_with(metadata);
    }
}

fn an_unreadable_ddl_stops_with_the_way_out_and_schema_refresh_resolves_it_with(
    metadata: &'static str,
) {
    let db = server(metadata);
    db.sql(
        "CREATE DATABASE app;\n\
         CREATE TABLE app.t (id INT PRIMARY KEY, s VARCHAR(10)) CHARACTER SET latin1;\n\
         INSERT INTO app.t VALUES (1, 'one');",
    );
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let (ok, err) = run_to_end_result(&db, &state, &out, &[]);
    assert!(ok, "{err}");
    db.sql(
        "INSERT INTO app.t VALUES (2, 'two');\n\
         ALTER TABLE app.t CONVERT TO CHARACTER SET utf8mb4, ADD COLUMN n INT;\n\
         INSERT INTO app.t VALUES (3, 'three', 3);",
    );
    let (ok, err) = run_to_end_result(&db, &state, &out, &[]);
    assert!(
        !ok,
        "an unreadable DDL on a captured table must stop binsync: {err}"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("binsync: error:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("app.t")
            && line.contains("binlog_row_metadata=FULL")
            && line.contains("binsync schema refresh --table app.t"),
        "{err}"
    );
    let rows = inserted(&lines(&out));
    assert_eq!(
        rows.len(),
        2,
        "row 2 (before the DDL) may come, nothing after: {rows:?}"
    );

    let state_arg = state.display().to_string();
    let url = db.url();
    let (ok, stdout, err) = schema_cmd(&[
        "refresh",
        "--state-dir",
        &state_arg,
        "--source",
        &url,
        "--table",
        "app.t",
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("CONVERT TO CHARACTER SET"),
        "holds from the statement: {stdout}"
    );
    let (ok, err) = run_to_end_result(&db, &state, &out, &[]);
    assert!(ok, "{err}");
    assert_eq!(
        inserted(&lines(&out)),
        [
            ("t".to_string(), json!({"id": 1, "s": "one"})),
            ("t".to_string(), json!({"id": 2, "s": "two"})),
            ("t".to_string(), json!({"id": 3, "s": "three", "n": 3})),
        ],
        "{err}"
    );
    let (ok, history, err) = schema_cmd(&["history", "--state-dir", &state_arg]);
    assert!(ok && history.contains("\"n\""), "{err}{history}");
}

#[test]
fn the_history_is_read_back_after_kill_9() {
    for metadata in ["MINIMAL", "FULL"] {
        the_history_is_read_back_after_kill_9_with(metadata);
    }
}

fn the_history_is_read_back_after_kill_9_with(metadata: &'static str) {
    let db = server(metadata);
    db.sql(SETUP);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let steps = changes();
    let (first, second) = steps.split_at(steps.len() / 2);
    let spawn = || {
        spawn_file_run(
            &db,
            "4714",
            &state,
            &out,
            &["--include", "app.*", "--exclude", "app._*"],
        )
    };
    let mut p = spawn();
    for s in first {
        db.sql(s.sql);
    }
    let want = 2 + first.iter().filter(|s| s.row.is_some()).count();
    wait_until(Duration::from_secs(60), "the first half", || {
        inserted(&lines(&out)).len() >= want || !p.is_running()
    });
    p.kill9();
    for s in second {
        db.sql(s.sql);
    }
    let mut p = spawn();
    let want = expected(&steps).len();
    wait_until(Duration::from_secs(60), "every row", || {
        inserted(&lines(&out)).len() >= want || !p.is_running()
    });
    p.sigterm();
    let st = p.wait_timeout(Duration::from_secs(30)).expect("stop hung");
    assert!(st.success(), "{}", p.stderr());
    assert!(
        p.stderr().contains("schema history read back"),
        "{}",
        p.stderr()
    );
    check_sink_with(&out, &steps, &p.stderr(), true);
}

#[test]
fn a_first_start_behind_a_ddl_on_a_table_created_before_the_binlog() {
    for metadata in ["MINIMAL", "FULL"] {
        let db = server(metadata);
        db.sql(
            "CREATE DATABASE app;\n\
             CREATE TABLE app.t (id INT PRIMARY KEY, a INT);\n\
             FLUSH BINARY LOGS;",
        );
        // MariaDB keeps a file it still needs for crash recovery (its binlog checkpoint
        // moves on a moment later): purge until the CREATE is gone for good.
        wait_until(Duration::from_secs(30), "the first binlog purged", || {
            db.sql("PURGE BINARY LOGS TO 'mariadb-bin.000002'");
            !db.sql("SHOW BINARY LOGS").contains("mariadb-bin.000001")
        });
        db.sql(
            "INSERT INTO app.t VALUES (1, 10);\n\
             ALTER TABLE app.t ADD COLUMN b VARCHAR(5) FIRST;\n\
             INSERT INTO app.t VALUES ('x', 2, 20);",
        );
        let dir = tempfile::tempdir().unwrap();
        let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
        let (ok, err) = run_to_end_result(&db, &state, &out, &[]);
        if metadata == "MINIMAL" {
            // Row 1 was written under a definition nobody knows now: refused, never guessed.
            assert!(!ok, "{err}");
            assert!(err.contains("app.t") && err.contains("unknown"), "{err}");
            assert!(inserted(&lines(&out)).is_empty());
        } else {
            // The binlog names the columns; from the ALTER on the seed's definition holds.
            assert!(ok, "{err}");
            assert_eq!(
                inserted(&lines(&out)),
                [
                    ("t".to_string(), json!({"id": 1, "a": 10})),
                    ("t".to_string(), json!({"b": "x", "id": 2, "a": 20})),
                ]
            );
        }
    }
}

#[test]
fn on_ddl_stop_keeps_the_checkpoint_before_the_statement_and_ignore_passes_it() {
    let db = server("FULL");
    db.sql(SETUP);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let (ok, err) = run_to_end_result(&db, &state, &out, &[]);
    assert!(ok, "{err}");
    db.sql(
        "ALTER TABLE app.g ADD COLUMN x INT;\n\
         ALTER TABLE app.t ADD COLUMN x INT;\n\
         INSERT INTO app.t VALUES (2, 20, 'y', 2, 2);",
    );
    let (ok, err) = run_to_end_result(&db, &state, &out, &["--on-ddl", "app.t=stop"]);
    assert!(!ok);
    assert!(
        err.contains("app.t") && err.contains("--on-ddl app.t=emit"),
        "{err}"
    );
    assert_eq!(
        inserted(&lines(&out)).len(),
        2,
        "nothing after the statement"
    );
    let (ok, err) = run_to_end_result(&db, &state, &out, &["--on-ddl", "app.t=ignore"]);
    assert!(ok, "{err}");
    let all = lines(&out);
    assert_eq!(
        inserted(&all).last().unwrap().1,
        json!({"id": 2, "a": 20, "e": "y", "u": 2, "x": 2})
    );
    // After the two CREATEs of the first run: g's ALTER is delivered, t's is not.
    let later: Vec<&str> = all
        .iter()
        .filter(|l| l["op"] == "ddl")
        .skip(2)
        .map(|l| l["statement"].as_str().unwrap())
        .collect();
    assert_eq!(later, ["ALTER TABLE app.g ADD COLUMN x INT"]);
}

#[test]
fn a_transient_failure_while_seeding_the_history_is_retried_never_turned_into_positional_names() {
    for metadata in ["MINIMAL", "FULL"] {
        a_transient_failure_while_seeding_the_history_is_retried_never_turned_into_positional_names_with(metadata);
    }
}

fn a_transient_failure_while_seeding_the_history_is_retried_never_turned_into_positional_names_with(
    metadata: &'static str,
) {
    let db = server(metadata);
    db.sql(SETUP);
    db.create_user(
        "cdc",
        "pw",
        "REPLICATION SLAVE, BINLOG MONITOR, REPLICATION CLIENT, SELECT ON *.*",
    );
    // One connection for the account: the start-up connection binsync keeps takes it, so
    // the seed's own connection meets the account's limit (1226, transient).
    db.sql("ALTER USER 'cdc'@'%' WITH MAX_USER_CONNECTIONS 1");
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let url = format!("mysql://cdc:pw@127.0.0.1:{}", db.port());
    let (state_arg, sink) = (
        state.display().to_string(),
        format!("file:{}", out.display()),
    );
    let mut p = Proc::spawn(
        &[
            "run",
            "--source",
            &url,
            "--server-id",
            "4715",
            "--state-dir",
            &state_arg,
            "--sink",
            &sink,
            "--include",
            "app.*",
            "--exit-at-end",
        ],
        &[],
    );
    wait_until(Duration::from_secs(30), "a retried seed", || {
        p.stderr().contains("max_user_connections") || !p.is_running()
    });
    let err = p.stderr();
    assert!(
        err.contains("connected") && !err.contains("schema history seeded"),
        "the failure met the seed, after the start-up connection: {err}"
    );
    db.sql("ALTER USER 'cdc'@'%' WITH MAX_USER_CONNECTIONS 0");
    let st = p.wait_timeout(Duration::from_secs(60)).expect("run hung");
    assert!(st.success(), "{}", p.stderr());
    assert!(p.stderr().contains("schema history seeded"));
    assert_eq!(
        inserted(&lines(&out)),
        [
            ("t".to_string(), json!({"id": 1, "a": 10, "e": "x", "u": 1})),
            ("g".to_string(), json!({"id": 1, "v": "g1"})),
        ]
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The source's rows of `db.table` as the sync API shows them: id object → row object.
fn source_rows(
    db: &MariaDb,
    table: &str,
    key: &[&str],
) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    for row in db.rows_with_names(&format!("SELECT * FROM app.{table}")) {
        let obj: serde_json::Map<String, Value> = row
            .iter()
            .map(|(k, v)| {
                let v = match v.parse::<i64>() {
                    Ok(n) if !k.starts_with('k') && k != "n" => json!(n),
                    _ if v == "NULL" => Value::Null,
                    _ => json!(v),
                };
                (k.clone(), v)
            })
            .collect();
        let id: serde_json::Map<String, Value> = key
            .iter()
            .map(|k| (k.to_string(), obj[*k].clone()))
            .collect();
        out.insert(
            common::workload::canonical_id(&Value::Object(id)),
            Value::Object(obj),
        );
    }
    out
}

#[test]
fn the_receiver_applies_ddl_truncate_and_drop_and_a_replay_after_kill_9_recreates_nothing() {
    let db = server("MINIMAL");
    db.sql(SETUP);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut receiver = common::workload::Receiver::start(&dir.path().join("recv"), &[]);
    let url = receiver.url();
    let state_arg = state.display().to_string();
    let src = db.url();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--source",
            &src,
            "--server-id",
            "4716",
            "--state-dir",
            &state_arg,
            "--sink",
            &url,
            "--include",
            "app.*",
            "--exclude",
            "app._*",
        ];
        args.extend(extra);
        Proc::spawn(&args, &[])
    };
    let to_end = |what: &str| {
        let mut p = run(&["--exit-at-end"]);
        let st = p.wait_timeout(Duration::from_secs(120)).expect("run hung");
        assert!(st.success(), "{what}: {}", p.stderr());
    };
    to_end("the setup's rows");
    // What a kill -9 leaves: a checkpoint behind operations the receiver already applied.
    let behind = dir.path().join("state-behind");
    copy_dir(&state, &behind);
    db.sql(
        "INSERT INTO app.t VALUES (92, 20, 'y', 2), (93, 30, 'x', 3);\n\
         TRUNCATE TABLE app.t;\n\
         INSERT INTO app.t VALUES (1, 40, 'y', 4);",
    );
    to_end("rows and a truncate");
    std::fs::remove_dir_all(&state).unwrap();
    copy_dir(&behind, &state);
    // The replay sends rows 92 and 93 again below the truncate's floor: never re-created.
    let steps = changes();
    for s in &steps {
        db.sql(s.sql);
    }
    to_end("the replay and the schema changes");
    let (state, _) = receiver.dump();
    let held = |entity: &str| -> std::collections::BTreeMap<String, Value> {
        state
            .iter()
            .filter(|((e, _), _)| e == entity)
            .map(|((_, id), v)| (id.clone(), v.clone()))
            .collect()
    };
    // t is gone (renamed to t2, truncated, dropped); t2 was created again with other columns.
    assert_eq!(held("t2"), source_rows(&db, "t2", &["k"]));
    // t was renamed away (a ddl without columns: the receiver keeps what it holds, see
    // docs/sync-api.md): rows 1 to 9 as t held them at the rename; 92 and 93, truncated
    // before, are not re-created by the replay (the truncate's floor).
    let ids: Vec<i64> = held("t")
        .values()
        .map(|v| v["id"].as_i64().unwrap())
        .collect();
    let mut ids = ids;
    ids.sort();
    assert_eq!(ids, (1..=9).collect::<Vec<_>>());
    assert_eq!(
        held("t")[r#"{"id":1}"#]["a"],
        json!(40),
        "the row inserted after the truncate"
    );
    // g after the cut-over: the same ids; the rows written before it keep the columns they
    // were delivered with (the copy into the shadow table is not captured), each equal to
    // the source's value.
    let (have, want) = (held("g"), source_rows(&db, "g", &["id"]));
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (id, row) in &have {
        for (col, v) in row.as_object().unwrap() {
            assert_eq!(&want[id][col], v, "g {id} {col}");
        }
    }
}

#[test]
fn a_table_map_that_does_not_fit_the_history_stops_binsync() {
    let db = server("MINIMAL");
    db.sql(SETUP);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let (ok, err) = run_to_end_result(&db, &state, &out, &[]);
    assert!(ok, "{err}");
    // A DDL the binlog never saw (sql_log_bin=0, as rolling schema changes do), then a row
    // of the new shape: the table map has a column the history does not.
    db.sql(
        "SET SESSION sql_log_bin = 0;\n\
         ALTER TABLE app.t ADD COLUMN extra INT;\n\
         SET SESSION sql_log_bin = 1;\n\
         INSERT INTO app.t VALUES (2, 20, 'y', 2, 99);",
    );
    let (ok, err) = run_to_end_result(&db, &state, &out, &[]);
    assert!(!ok, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("binsync: error:"))
        .unwrap_or_default();
    assert!(
        line.contains("app.t")
            && line.contains("will not guess")
            && line.contains("schema refresh"),
        "{err}"
    );
    assert_eq!(inserted(&lines(&out)).len(), 2, "nothing of the misfit row");
}

/// A table without PRIMARY KEY whose unique keys change: after each statement the id is the
/// key MariaDB promotes (what information_schema marks `PRI` and FULL metadata names), with
/// FULL and with MINIMAL metadata alike (MINIMAL takes it from the schema history). Covers
/// nullability changes (an older NOT NULL key stays ahead), DROP INDEX, CREATE UNIQUE INDEX,
/// a statement sqlparser cannot read (DROP KEY) with an ADD CONSTRAINT ... UNIQUE beside it, a
/// renamed column and index, and a PRIMARY KEY added last.
fn promoted_unique_keys_follow_the_ddl_with(metadata: &'static str) {
    let db = server(metadata);
    db.sql(
        "CREATE DATABASE app; CREATE TABLE app.k (a INT NOT NULL, b INT NULL, c INT NOT NULL, \
         UNIQUE KEY ub (b), UNIQUE KEY ua (a)) ENGINE=InnoDB",
    );
    // (statement before the row, the key after it, the row's id)
    let steps: [(&str, &[&str], &str); 8] = [
        ("", &["a"], r#"{"a":1}"#),
        (
            "ALTER TABLE app.k MODIFY b INT NOT NULL",
            &["a"],
            r#"{"a":2}"#,
        ),
        ("ALTER TABLE app.k MODIFY a INT NULL", &["b"], r#"{"b":3}"#),
        (
            "ALTER TABLE app.k DROP INDEX ub",
            &[],
            r#"{"a":4,"b":4,"c":4}"#,
        ),
        (
            "CREATE UNIQUE INDEX cb ON app.k (c, b)",
            &["c", "b"],
            r#"{"c":5,"b":5}"#,
        ),
        (
            "ALTER TABLE app.k DROP KEY cb, ADD CONSTRAINT uc UNIQUE (c), ALGORITHM=COPY",
            &["c"],
            r#"{"c":6}"#,
        ),
        (
            "ALTER TABLE app.k RENAME COLUMN c TO d; ALTER TABLE app.k RENAME INDEX uc TO ud",
            &["d"],
            r#"{"d":7}"#,
        ),
        (
            "DROP INDEX ud ON app.k; ALTER TABLE app.k ADD PRIMARY KEY (b)",
            &["b"],
            r#"{"b":8}"#,
        ),
    ];
    for (i, (sql, key, _)) in steps.iter().enumerate() {
        if !sql.is_empty() {
            db.sql(sql);
        }
        // The server's own answer, as a set (information_schema lists columns in table order).
        let mut pri: Vec<String> = db
            .sql(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'app' \
                 AND TABLE_NAME = 'k' AND COLUMN_KEY = 'PRI'",
            )
            .lines()
            .map(str::to_string)
            .collect();
        pri.sort();
        let mut want: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        want.sort();
        assert_eq!(pri, want, "the server's key after {sql:?}");
        let n = i + 1;
        db.sql(&format!("INSERT INTO app.k VALUES ({n}, {n}, {n})"));
    }
    let ids: Vec<String> = snapshot_util::binlog_lines(&db)
        .into_iter()
        .filter(|l| l.table == "k" && l.op == "insert")
        .map(|l| l.id)
        .collect();
    let want: Vec<&str> = steps.iter().map(|(_, _, id)| *id).collect();
    assert_eq!(ids, want, "{metadata}");
}

#[test]
fn promoted_unique_keys_follow_the_ddl_full() {
    promoted_unique_keys_follow_the_ddl_with("FULL");
}

#[test]
fn promoted_unique_keys_follow_the_ddl_minimal() {
    promoted_unique_keys_follow_the_ddl_with("MINIMAL");
}
