//! Scenario: a table holding every column type of the decoder's value table (README) is
//! written to, then read twice: decoded from the binlog by `binsync run --exit-at-end`, and
//! read by the snapshot reader in chunks of two rows. Each row's `id` and `after` must be the
//! same bytes both ways: a receiver cannot tell a snapshot `read` from the binlog's rows by
//! their values. Once with `binlog_row_metadata=FULL`, once with MINIMAL (names from
//! information_schema).

mod common;
mod snapshot_util;

use common::{MariaDb, ServerOpts};
use snapshot_util::{binlog_lines, read_table, state_of};

const TABLE: &str = "
CREATE TABLE t.types (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
  bi BIGINT, biu BIGINT UNSIGNED,
  dec1 DECIMAL(10,2), dec2 DECIMAL(30,10), dec3 DECIMAL(5,0), f FLOAT, d DOUBLE,
  dt DATE, dtm0 DATETIME, dtm3 DATETIME(3), dtm6 DATETIME(6),
  ts0 TIMESTAMP NULL DEFAULT NULL, ts6 TIMESTAMP(6) NULL DEFAULT NULL,
  tm0 TIME, tm3 TIME(3), tm6 TIME(6), yr YEAR,
  vc VARCHAR(100) CHARACTER SET utf8mb4, txt TEXT CHARACTER SET utf8mb4,
  l1 VARCHAR(20) CHARACTER SET latin1, lt TEXT CHARACTER SET latin1, ch CHAR(10) CHARACTER SET utf8mb4,
  vb VARBINARY(20), bn BINARY(4), bl BLOB, vbin VARCHAR(10) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  e ENUM('small','medium','large'), el ENUM('é','ü') CHARACTER SET latin1, s SET('a','b','c'),
  b1 BIT(1), b10 BIT(10), b64 BIT(64), j JSON, g GEOMETRY,
  gen_v BIGINT AS (i * 2) VIRTUAL, gen_s INT AS (i + 1) STORED, inv INT INVISIBLE
) ENGINE=InnoDB";

const FULL_ROW: &str = "
INSERT INTO t.types (id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, dec1, dec2, dec3, f, d,
  dt, dtm0, dtm3, dtm6, ts0, ts6, tm0, tm3, tm6, yr, vc, txt, l1, lt, ch, vb, bn, bl, vbin, e, el, s,
  b1, b10, b64, j, g, inv)
VALUES (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
  -9223372036854775808, 18446744073709551615,
  -12345678.90, 12345678901234567890.0123456789, -7, 3.1415927, 27182818284.59045,
  '2024-02-29', '2024-02-29 23:59:59', '2024-02-29 23:59:59.123', '1999-12-31 00:00:00.000001',
  '2024-01-01 12:00:00', '2024-01-01 12:00:00.654321',
  '-838:59:59', '-00:00:00.5', '25:00:00.5', 2155,
  'héllo 😀 \"quoted\" \\\\ back\\n\\ttab', REPEAT('x', 300), 'café', X'80A0FF', 'pad  ',
  X'00FF10', 'ab', X'DEADBEEF', 'Bin',
  'medium', 'ü', 'a,c', b'1', b'1000000001', b'1111111111111111111111111111111111111111111111111111111111111111',
  '{\"k\": [1, 2.5, {\"n\": \"ü\"}], \"t\": true, \"z\": null}', ST_GeomFromText('POINT(1 2)'), 42)";

/// Rows that reach the edges: each of the decoder's special cases.
const EDGE_ROWS: &str = "
SET sql_mode = '';
INSERT INTO t.types (id) VALUES (2);
INSERT INTO t.types (id, dt, dtm0, dtm6, ts0) VALUES (3, '0000-00-00', '0000-00-00 00:00:00', '2024-00-10 00:00:00', '0000-00-00 00:00:00');
INSERT INTO t.types (id, ti, biu, dec1, f, d, tm6, yr, bn, e, s, b64, j, vb, txt, ts6, i)
  VALUES (4, 0, 0, 0.5, -0.0, 1e300, '-12:00:00.000001', 0, X'61', '', '', 0, '[1, \"two\", 3.0e2]', '', '', '1970-01-01 00:00:01.000001', -1);
INSERT INTO t.types (id, f, d, j, vc, l1) VALUES (5, 1.1, 0.30000000000000004, '\"just a string\"', '', 'Œ');
INSERT INTO t.types (id, j, g) VALUES (6, ' { \"spaced\" : 1 } ', ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'));
INSERT INTO t.types (id, i, j) VALUES (7, 7, '12.50');";

fn snapshot_equals_binlog(metadata: &'static str) {
    let db = MariaDb::start(ServerOpts {
        row_metadata: metadata,
        ..ServerOpts::default()
    });
    db.sql("CREATE DATABASE t");
    db.sql(TABLE);
    db.sql(&format!("SET time_zone = '+02:00'; {FULL_ROW}"));
    db.sql(EDGE_ROWS);
    // The state the snapshot sees is the binlog's last state of each row.
    db.sql("UPDATE t.types SET vc = 'changed', i = 5, f = 2.5 WHERE id = 1");
    db.sql("DELETE FROM t.types WHERE id = 2");
    db.sql("UPDATE t.types SET id = 8 WHERE id = 7");

    let lines = binlog_lines(&db);
    let from_binlog = state_of(&lines, "types", |_| true);
    assert_eq!(from_binlog.len(), 6, "{from_binlog:#?}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let chunks = rt.block_on(read_table(&db, "t", "types", 2, |_| {}));
    assert_eq!(chunks.len(), 3, "six rows in chunks of two");
    let end = db.binlog_position();
    let mut from_snapshot = std::collections::BTreeMap::new();
    for c in &chunks {
        // Nothing was written meanwhile: every chunk is as of the binlog's end.
        assert_eq!((c.info.position.file.clone(), c.info.position.offset), end);
        for (id, after) in &c.rows {
            assert!(from_snapshot.insert(id.clone(), after.clone()).is_none());
        }
    }
    for (id, after) in &from_binlog {
        assert_eq!(
            from_snapshot.get(id),
            Some(after),
            "row {id}: snapshot (left) and binlog (right) differ"
        );
    }
    assert_eq!(from_snapshot, from_binlog);

    // And the values are the documented ones (not merely equal): a few of the hard cases.
    let row1 = &from_snapshot[r#"{"id":1}"#];
    for want in [
        r#""biu":18446744073709551615"#,
        r#""f":2.5"#,
        r#""d":27182818284.59045"#,
        r#""ts6":"2024-01-01T10:00:00.654321Z""#,
        r#""tm0":"-838:59:59""#,
        r#""tm3":"-00:00:00.500""#,
        "\"lt\":\"\u{20ac}\u{a0}\u{ff}\"",
        "\"el\":\"\u{fc}\"",
        r#""bn":"YWIAAA==""#,
        r#""b10":513"#,
        "\"j\":{\"k\": [1, 2.5, {\"n\": \"\u{fc}\"}], \"t\": true, \"z\": null}",
        r#""gen_v":10,"gen_s":6,"inv":42}"#,
    ] {
        assert!(row1.contains(want), "{want} not in {row1}");
    }
    let row5 = &from_snapshot[r#"{"id":5}"#];
    assert!(
        row5.contains(r#""f":1.1,"d":0.30000000000000004"#),
        "{row5}"
    );
    let row3 = &from_snapshot[r#"{"id":3}"#];
    assert!(row3.contains(r#""dt":null,"dtm0":null"#), "{row3}");
}

#[test]
fn every_type_reads_as_the_same_json_bytes_as_the_binlog_full_metadata() {
    snapshot_equals_binlog("FULL");
}

#[test]
fn every_type_reads_as_the_same_json_bytes_as_the_binlog_minimal_metadata() {
    snapshot_equals_binlog("MINIMAL");
}
