//! Scenario (issue 11, first step): `binsync schema show` against a real MariaDB prints each
//! tracked table as the schema history will first hold it: its `SHOW CREATE TABLE` read by the
//! same DDL reader that follows the binlog. MariaDB's own spelling is the hard part: JSON as
//! LONGTEXT with a json_valid CHECK, `bigint(20) unsigned`, quoted identifiers, defaults.

mod common;

use std::time::Duration;

use common::{MariaDb, Proc, ServerOpts};
use serde_json::Value;

#[test]
fn schema_show_reads_mariadb_definitions_as_the_history_will() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(
        "CREATE DATABASE app;\n\
         CREATE TABLE app.items (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT, `name` VARCHAR(40) NOT NULL DEFAULT 'x', \
           doc JSON, kind ENUM('a','b c','d''e') DEFAULT 'a', flags SET('x','y'), raw VARBINARY(16), \
           price DECIMAL(10,2) UNSIGNED, at DATETIME(3), twice INT AS (id * 2) VIRTUAL, PRIMARY KEY (id));\n\
         CREATE TABLE app.pairs (a INT NOT NULL, `b-c` VARCHAR(5) NOT NULL, v TEXT, PRIMARY KEY (`b-c`, a));\n\
         CREATE TABLE app.nokey (x INT);\n\
         CREATE DATABASE other; CREATE TABLE other.t (id INT PRIMARY KEY);",
    );
    let mut p = Proc::spawn(
        &[
            "schema",
            "show",
            "--source",
            &db.url(),
            "--include",
            "app.*",
        ],
        &[],
    );
    let st = p
        .wait_timeout(Duration::from_secs(30))
        .expect("schema show hung");
    assert!(st.success(), "{}", p.stderr());
    let tables: Vec<Value> = p
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = tables
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["items", "nokey", "pairs"], "--include app.* only");

    let items = &tables[0];
    let col = |t: &Value, name: &str| -> Value {
        t["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {t}"))
    };
    let cols: Vec<&str> = items["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        ["id", "name", "doc", "kind", "flags", "raw", "price", "at", "twice"]
    );
    assert_eq!(items["pk"], serde_json::json!(["id"]));
    assert_eq!(items["complete"], true);
    assert_eq!(col(items, "id")["unsigned"], true);
    assert_eq!(col(items, "id")["nullable"], false);
    assert_eq!(
        col(items, "doc")["json"],
        true,
        "MariaDB's JSON is LONGTEXT + json_valid"
    );
    assert_eq!(col(items, "name")["json"], false);
    assert_eq!(
        col(items, "kind")["labels"],
        serde_json::json!(["a", "b c", "d'e"])
    );
    assert_eq!(col(items, "flags")["labels"], serde_json::json!(["x", "y"]));
    assert_eq!(col(items, "raw")["binary"], true);
    assert_eq!(col(items, "price")["unsigned"], true);
    assert_eq!(col(items, "twice")["generated"], true);

    let pairs = &tables[2];
    assert_eq!(
        pairs["pk"],
        serde_json::json!(["b-c", "a"]),
        "key order, quoted names"
    );
    assert_eq!(tables[1]["pk"], serde_json::json!([]));
}
