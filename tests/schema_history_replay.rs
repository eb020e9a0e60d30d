//! Scenario (issue 11): a MariaDB with MariaDB's default `binlog_row_metadata=MINIMAL` (no
//! column names in the binlog) whose table changes shape between rows; its binlog replayed
//! with `--schema-from`. Each row must come out with the names of its own schema version
//! (the DDL in the file advances the history), MariaDB JSON as JSON; and rows the history's
//! version does not fit must stop the replay with one clear line, never positional names.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{MariaDb, Proc, ServerOpts};
use serde_json::{json, Value};

fn minimal() -> MariaDb {
    MariaDb::start(ServerOpts {
        row_metadata: "MINIMAL",
        ..ServerOpts::default()
    })
}

fn replay(db: &MariaDb, files: &[PathBuf], schema_from: bool) -> (bool, Vec<Value>, String) {
    let url = db.url();
    let mut args: Vec<String> = vec!["replay".into(), "--include".into(), "app.*".into()];
    if schema_from {
        args.extend(["--schema-from".into(), url]);
    }
    args.push("--binlog-file".into());
    args.extend(files.iter().map(|f| f.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Proc::spawn(&refs, &[]);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("replay hung");
    let rows = p
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (st.success(), rows, p.stderr())
}

/// The row images, in order (the DDL operations between them left out).
fn images(rows: &[Value]) -> Vec<Value> {
    rows.iter()
        .filter(|r| r.get("after").is_some())
        .map(|r| r["after"].clone())
        .collect()
}

#[test]
fn each_row_has_the_names_of_its_own_version_and_a_misfit_stops() {
    let db = minimal();
    db.sql(
        "CREATE DATABASE app;\n\
         CREATE TABLE app.t (id INT PRIMARY KEY, a INT);\n\
         FLUSH BINARY LOGS;\n\
         INSERT INTO app.t VALUES (1, 10);\n\
         ALTER TABLE app.t ADD COLUMN b VARCHAR(5) FIRST;\n\
         INSERT INTO app.t VALUES ('x', 2, 20);\n\
         ALTER TABLE app.t DROP COLUMN a, ADD COLUMN doc JSON;\n\
         INSERT INTO app.t VALUES ('y', 3, '{\"k\": [1]}');\n\
         FLUSH BINARY LOGS;",
    );
    let dir = db.datadir();
    let first = dir.join("mariadb-bin.000001");
    let second = dir.join("mariadb-bin.000002");

    // From the file with the CREATE on: every row with its own names, JSON as JSON.
    let (ok, rows, err) = replay(&db, &[first, second.clone()], true);
    assert!(ok, "{err}");
    assert_eq!(
        images(&rows),
        [
            json!({"id": 1, "a": 10}),
            json!({"b": "x", "id": 2, "a": 20}),
            json!({"b": "y", "id": 3, "doc": {"k": [1]}}),
        ],
        "{err}"
    );
    let rows_only: Vec<&Value> = rows.iter().filter(|r| r.get("id").is_some()).collect();
    assert_eq!(rows_only[2]["id"], json!({"id": 3}));
    // The DDL, as contract v2's ddl operations with each new definition.
    let ddl: Vec<(&str, Vec<&str>)> = rows
        .iter()
        .filter(|r| r["op"] == "ddl")
        .map(|r| {
            let names = r["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            (r["statement"].as_str().unwrap(), names)
        })
        .collect();
    assert_eq!(ddl.len(), 3, "{rows:?}");
    assert!(ddl[0].0.starts_with("CREATE TABLE"), "{ddl:?}");
    assert_eq!(ddl[0].1, ["id", "a"]);
    assert!(ddl[1].0.contains("ADD COLUMN b"), "{ddl:?}");
    assert_eq!(ddl[1].1, ["b", "id", "a"]);
    assert_eq!(ddl[2].1, ["b", "id", "doc"]);
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // From the second file alone, the history starts from the table as it is now (b, id,
    // doc): the first row (id, a) does not fit it. Without the history those rows came out
    // as @1, @2.
    let (ok, rows, err) = replay(&db, std::slice::from_ref(&second), true);
    assert!(!ok, "{rows:?}");
    assert!(rows.is_empty(), "nothing before the misfit: {rows:?}");
    let line = err
        .lines()
        .find(|l| l.starts_with("binsync: error:"))
        .unwrap_or_default();
    assert!(
        line.contains("app.t")
            && line.contains("mariadb-bin.000002")
            && line.contains("will not guess")
            && line.contains("binlog_row_metadata=FULL"),
        "{err}"
    );
    // Without a history, MINIMAL metadata has no names to give: refused, never @1, @2.
    let (ok, rows, err) = replay(&db, &[second], false);
    assert!(!ok && rows.is_empty(), "{rows:?}");
    assert!(
        err.contains("--schema-from") && !err.contains("\"@1\""),
        "{err}"
    );
}
