#![recursion_limit = "256"]
//! Scenario: every column type a user stores comes out of binsync as the exact JSON value
//! documented in the README's value table. A real MariaDB (binlog ROW, FULL metadata) takes
//! inserts, an update and a delete; `binsync run --exit-at-end` writes them to a file sink;
//! each value is compared with the expected JSON, column by column.

mod common;

use common::{MariaDb, Proc, ServerOpts};
use serde_json::{json, Value};
use std::time::Duration;

const TABLE: &str = "
CREATE TABLE t.types (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
  bi BIGINT, biu BIGINT UNSIGNED,
  dec1 DECIMAL(10,2), dec2 DECIMAL(30,10), dec3 DECIMAL(5,0), f FLOAT, d DOUBLE,
  dt DATE, dtm0 DATETIME, dtm3 DATETIME(3), dtm6 DATETIME(6),
  ts0 TIMESTAMP NULL DEFAULT NULL, ts6 TIMESTAMP(6) NULL DEFAULT NULL,
  tm0 TIME, tm6 TIME(6), yr YEAR,
  vc VARCHAR(100) CHARACTER SET utf8mb4, txt TEXT CHARACTER SET utf8mb4,
  l1 VARCHAR(20) CHARACTER SET latin1, ch CHAR(10) CHARACTER SET utf8mb4,
  vb VARBINARY(20), bn BINARY(4), bl BLOB, vbin VARCHAR(10) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  e ENUM('small','medium','large'), s SET('a','b','c'),
  b1 BIT(1), b64 BIT(64), j JSON, g GEOMETRY,
  gen_v BIGINT AS (i * 2) VIRTUAL, gen_s INT AS (i + 1) STORED, inv INT INVISIBLE
) ENGINE=InnoDB";

const FULL_ROW: &str = "
INSERT INTO t.types (id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, dec1, dec2, dec3, f, d,
  dt, dtm0, dtm3, dtm6, ts0, ts6, tm0, tm6, yr, vc, txt, l1, ch, vb, bn, bl, vbin, e, s, b1, b64, j, g, inv)
VALUES (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
  -9223372036854775808, 18446744073709551615,
  -12345678.90, 12345678901234567890.0123456789, -7, 1.5, 27182818284.59045,
  '2024-02-29', '2024-02-29 23:59:59', '2024-02-29 23:59:59.123', '1999-12-31 00:00:00.000001',
  '2024-01-01 12:00:00', '2024-01-01 12:00:00.654321',
  '-838:59:59', '25:00:00.5', 2155,
  'héllo 😀 \"quoted\" \\\\ back', REPEAT('x', 300), 'café', 'pad',
  X'00FF10', 'ab', X'DEADBEEF', 'Bin',
  'medium', 'a,c', b'1', b'1111111111111111111111111111111111111111111111111111111111111111',
  '{\"k\": [1, 2.5, {\"n\": \"ü\"}], \"t\": true, \"z\": null}', ST_GeomFromText('POINT(1 2)'), 42)";

fn expected_full_row() -> Value {
    json!({
        "id": 1, "ti": -128, "tiu": 255, "si": -32768, "siu": 65535,
        "mi": -8388608, "miu": 16777215, "i": -2147483648i64, "iu": 4294967295u64,
        "bi": i64::MIN, "biu": u64::MAX,
        "dec1": "-12345678.90", "dec2": "12345678901234567890.0123456789", "dec3": "-7",
        "f": 1.5, "d": 2.718281828459045e10,
        "dt": "2024-02-29", "dtm0": "2024-02-29T23:59:59", "dtm3": "2024-02-29T23:59:59.123",
        "dtm6": "1999-12-31T00:00:00.000001",
        // Inserted with time_zone '+02:00': TIMESTAMP comes out in UTC.
        "ts0": "2024-01-01T10:00:00Z", "ts6": "2024-01-01T10:00:00.654321Z",
        "tm0": "-838:59:59", "tm6": "25:00:00.500000", "yr": 2155,
        "vc": "héllo 😀 \"quoted\" \\ back", "txt": "x".repeat(300), "l1": "café", "ch": "pad",
        "vb": "AP8Q", "bn": "YWIAAA==", "bl": "3q2+7w==", "vbin": "Bin",
        "e": "medium", "s": "a,c", "b1": 1, "b64": u64::MAX,
        "j": {"k": [1, 2.5, {"n": "ü"}], "t": true, "z": null},
        "g": "AQEAAAAAAAAAAADwPwAAAAAAAABA",
        "gen_v": -4294967296i64, "gen_s": -2147483647, "inv": 42
    })
}

fn run_to_file(db: &MariaDb) -> Vec<Value> {
    parse_lines(&run_to_text(db))
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

fn run_to_text(db: &MariaDb) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("changes.jsonl");
    let state = dir.path().join("state");
    let mut p = Proc::spawn(
        &[
            "run",
            "--source",
            &db.url(),
            "--server-id",
            "777",
            "--state-dir",
            state.to_str().unwrap(),
            "--sink",
            &format!("file:{}", out.display()),
            "--start",
            "earliest",
            // The rows only, not the `ddl` line of the setup's CREATE TABLE.
            "--on-ddl",
            "ignore",
            "--exit-at-end",
        ],
        &[],
    );
    let status = p
        .wait_timeout(Duration::from_secs(60))
        .expect("binsync --exit-at-end did not return");
    assert!(status.success(), "binsync failed: {}", p.stderr());
    std::fs::read_to_string(&out).unwrap()
}

fn assert_columns(image: &Value, expected: &Value) {
    for (col, want) in expected.as_object().unwrap() {
        assert_eq!(&image[col], want, "column `{col}`");
    }
}

#[test]
fn every_type_comes_out_as_its_exact_json_value() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql("CREATE DATABASE t");
    db.sql(TABLE);
    db.sql(&format!("SET time_zone = '+02:00'; {FULL_ROW}"));
    // NULL in every nullable type.
    db.sql("INSERT INTO t.types (id) VALUES (2)");
    // Zero dates are null (documented).
    db.sql("SET sql_mode = ''; INSERT INTO t.types (id, dt, dtm0, dtm6) VALUES (3, '0000-00-00', '0000-00-00 00:00:00', '2024-00-10 00:00:00')");
    db.sql("UPDATE t.types SET vc = 'changed', i = 5 WHERE id = 1");
    db.sql("DELETE FROM t.types WHERE id = 2");

    let started_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let lines = run_to_file(&db);
    assert_eq!(lines.len(), 5, "{lines:#?}");

    let insert = &lines[0];
    assert_eq!(insert["op"], "insert");
    assert_eq!(insert["db"], "t");
    assert_eq!(insert["table"], "types");
    assert_eq!(insert["entity"], "types");
    assert_eq!(insert["id"], json!({"id": 1}));
    assert_eq!(insert["row"], 0);
    let gtid = insert["gtid"].as_str().unwrap();
    assert!(
        gtid.starts_with("0-") && gtid.split('-').count() == 3,
        "{gtid}"
    );
    assert!(insert["ts"].as_str().unwrap().ends_with('Z'));
    assert_columns(&insert["after"], &expected_full_row());

    let nulls = &lines[1]["after"];
    for (col, v) in nulls.as_object().unwrap() {
        if !["id", "gen_v", "gen_s"].contains(&col.as_str()) {
            assert_eq!(v, &Value::Null, "column `{col}` of the NULL row");
        }
    }

    let zero = &lines[2]["after"];
    assert_eq!(zero["dt"], Value::Null);
    assert_eq!(zero["dtm0"], Value::Null);
    assert_eq!(zero["dtm6"], Value::Null);

    let update = &lines[3];
    assert_eq!(update["op"], "update");
    assert_eq!(update["before"]["vc"], "héllo 😀 \"quoted\" \\ back");
    assert_eq!(update["after"]["vc"], "changed");
    assert_eq!(update["after"]["i"], 5);
    let changed: Vec<&str> = update["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        changed.contains(&"vc") && changed.contains(&"i") && changed.contains(&"gen_s"),
        "{changed:?}"
    );
    assert!(!changed.contains(&"d"), "{changed:?}");

    let delete = &lines[4];
    assert_eq!(delete["op"], "delete");
    assert_eq!(delete["id"], json!({"id": 2}));
    assert!(delete.get("after").is_none());
    assert_eq!(delete["before"]["id"], 2);

    // A new state dir numbers from the wall clock (microseconds), below 2^53, consecutively.
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    let first = seqs[0];
    assert!(first > started_micros && first < 1 << 53, "{seqs:?}");
    assert_eq!(seqs, (first..first + 5).collect::<Vec<_>>());
}

#[test]
fn composite_keys_and_key_changing_updates() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(
        "CREATE DATABASE t; CREATE TABLE t.pairs (a INT, b VARCHAR(10), v INT, PRIMARY KEY (b, a))",
    );
    db.sql("INSERT INTO t.pairs VALUES (1, 'x', 10)");
    db.sql("UPDATE t.pairs SET v = 11 WHERE a = 1");
    db.sql("UPDATE t.pairs SET a = 2 WHERE a = 1");
    let text = run_to_text(&db);
    let lines = parse_lines(&text);
    let ops: Vec<(&str, Value)> = lines
        .iter()
        .map(|l| (l["op"].as_str().unwrap(), l["id"].clone()))
        .collect();
    assert_eq!(
        ops,
        vec![
            ("insert", json!({"b": "x", "a": 1})),
            ("update", json!({"b": "x", "a": 1})),
            // A primary-key change is a delete of the old entity and an insert of the new.
            ("delete", json!({"b": "x", "a": 1})),
            ("insert", json!({"b": "x", "a": 2})),
        ]
    );
    // Key order is the primary key's order, not the table's.
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains(r#""id":{"b":"x","a":1}"#),
        "{text}"
    );
}
