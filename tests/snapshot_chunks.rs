//! Scenarios of reading a table in chunks by key on a real MariaDB: composite keys starting
//! with a latin1 VARCHAR are paged by a range on the primary key (EXPLAIN says so) and every
//! row is read once; a table without a primary key is paged by its unique NOT NULL key, which
//! is also its `id`, as in the binlog; a table with neither is refused naming
//! `--snapshot-key`; and while writers change the table between chunks and during them, every
//! chunk equals the binlog's state of its key range at the chunk's snapshot position, no
//! earlier, no later.

mod common;
mod snapshot_util;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use binsync::snapshot::{prepare_session, ChunkBuf, ChunkReader, SnapshotError, TablePlan};
use common::{MariaDb, ServerOpts};
use mysql_async::prelude::Queryable;
use snapshot_util::{binlog_lines, connect, read_table, state_of};

#[tokio::test(flavor = "multi_thread")]
async fn a_composite_key_led_by_a_latin1_varchar_pages_by_a_primary_key_range() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(
        "CREATE DATABASE t; CREATE TABLE t.p (k VARCHAR(20) CHARACTER SET latin1, n INT, \
         v VARCHAR(10), PRIMARY KEY (k, n)) ENGINE=InnoDB;
         INSERT INTO t.p SELECT CONCAT(ELT(1 + seq % 4, 'caf', 'café', 'CAFÉ ', 'Ærø'), seq % 37), \
           seq, 'x' FROM t.seq_1_to_3000;
         ANALYZE TABLE t.p;",
    );
    let chunks = read_table(&db, "t", "p", 97, |_| {}).await;
    let rows: Vec<&(String, String)> = chunks.iter().flat_map(|c| &c.rows).collect();
    assert_eq!(rows.len(), 3000);
    let ids: std::collections::BTreeSet<&String> = rows.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 3000, "a row was read twice");
    assert!(chunks.iter().all(|c| c.rows.len() <= 97));
    assert_eq!(chunks.len(), 3000usize.div_ceil(97));
    assert!(chunks.last().unwrap().info.last);

    // The query of a chunk after the first is a range scan of the primary key.
    assert_eq!(
        explain_next_chunk(&db, "p").await,
        ("range".into(), "PRIMARY".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_without_primary_key_pages_by_its_unique_not_null_key_which_is_also_its_id() {
    promoted_key_is_the_id("FULL").await;
}

/// With MINIMAL metadata the decoder takes the key from the schema history, whose
/// `Table::key` is the unique NOT NULL key the server promotes, as FULL metadata names it: the
/// binlog's ids agree with the snapshot's under both settings.
#[tokio::test(flavor = "multi_thread")]
async fn a_promoted_unique_key_is_the_id_with_minimal_metadata_too() {
    promoted_key_is_the_id("MINIMAL").await;
}

async fn promoted_key_is_the_id(metadata: &'static str) {
    let db = MariaDb::start(ServerOpts {
        row_metadata: metadata,
        ..ServerOpts::default()
    });
    db.sql(
        "CREATE DATABASE t; CREATE TABLE t.u (a INT NOT NULL, b VARCHAR(10), c INT NULL, \
         UNIQUE KEY nullable (c), UNIQUE KEY ua (a)) ENGINE=InnoDB;
         INSERT INTO t.u SELECT seq, CONCAT('b', seq), NULL FROM t.seq_1_to_50;",
    );
    let mut conn = connect(&db).await;
    prepare_session(&mut conn).await.unwrap();
    let plan = TablePlan::load(&mut conn, "t", "u", None, None)
        .await
        .unwrap();
    // The server promotes `ua` to the primary key, and FULL metadata names it: it is the id.
    assert_eq!(plan.page_index, "ua");
    assert!(!plan.keyless);
    drop(conn);

    let chunks = read_table(&db, "t", "u", 7, |_| {}).await;
    let from_snapshot: BTreeMap<String, String> = chunks.into_iter().flat_map(|c| c.rows).collect();
    let from_binlog = state_of(&binlog_lines(&db), "u", |_| true);
    assert_eq!(from_snapshot.len(), 50);
    assert_eq!(from_snapshot, from_binlog);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_without_any_usable_key_is_refused_naming_snapshot_key() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql("CREATE DATABASE t; CREATE TABLE t.bag (a INT, b INT NULL, UNIQUE KEY (b))");
    let mut conn = connect(&db).await;
    prepare_session(&mut conn).await.unwrap();
    let err = TablePlan::load(&mut conn, "t", "bag", None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, SnapshotError::NoKey { .. }), "{err:?}");
    assert!(
        err.to_string().contains("--snapshot-key t.bag=col"),
        "{err}"
    );
    // The documented way out works.
    let key = vec!["a".to_string()];
    let plan = TablePlan::load(&mut conn, "t", "bag", None, Some(&key))
        .await
        .unwrap();
    assert_eq!(plan.page_key, [0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_chunk_is_the_tables_state_at_its_snapshot_position_while_a_writer_runs() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(
        "CREATE DATABASE t; CREATE TABLE t.w (id INT PRIMARY KEY, v INT, s VARCHAR(20)) ENGINE=InnoDB;
         INSERT INTO t.w SELECT seq * 10, 0, 'start' FROM t.seq_1_to_1000;",
    );
    // Between chunks, a transaction touches rows before, inside and after the next chunk:
    // updates, deletes, inserts in the gaps, and an id change.
    let writes = |n: usize| {
        let n = n as i64;
        db.sql(&format!(
            "START TRANSACTION;
             UPDATE t.w SET v = v + 1, s = 'u{n}' WHERE id % 70 = {m};
             DELETE FROM t.w WHERE id = {del};
             INSERT INTO t.w VALUES ({ins}, {n}, 'new') ON DUPLICATE KEY UPDATE v = -1;
             UPDATE IGNORE t.w SET id = {moved} WHERE id = {from};
             COMMIT;",
            m = (n * 10) % 70,
            del = ((n * 370) % 10000) + 10,
            ins = ((n * 530) % 10000) + 5,
            moved = ((n * 290) % 10000) + 3,
            from = ((n * 610) % 10000) + 10,
        ));
    };
    // Meanwhile, on a connection of its own, another writer commits small transactions as
    // fast as it can, so that commits also land while a chunk's transaction is open.
    let stop = Arc::new(AtomicBool::new(false));
    let mut conn = connect(&db).await;
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = (n * 7919) % 10_000 + 1;
                let txn = [
                    "BEGIN".to_string(),
                    format!(
                        "INSERT INTO t.w VALUES ({id}, {n}, 'bg') \
                         ON DUPLICATE KEY UPDATE v = v + 1, s = 'bg{n}'"
                    ),
                    format!("DELETE FROM t.w WHERE id = {}", (n * 104_729) % 10_000 + 1),
                    "COMMIT".to_string(),
                ];
                for stmt in txn {
                    // A deadlock with the other writer (never with the snapshot's reads,
                    // which lock nothing) rolls this transaction back: go on with the next.
                    if let Err(e) = conn.query_drop(stmt).await {
                        assert!(format!("{e}").contains("Deadlock"), "{e}");
                        conn.query_drop("ROLLBACK").await.unwrap();
                        break;
                    }
                }
            }
            n
        }
    });
    let chunks = read_table(&db, "t", "w", 40, writes).await;
    stop.store(true, Ordering::Relaxed);
    let background = writer.await.unwrap();
    assert!(background > 20, "only {background} background transactions");
    assert!(chunks.len() > 20, "{} chunks", chunks.len());
    let positions: std::collections::BTreeSet<u64> =
        chunks.iter().map(|c| c.info.position.offset).collect();
    assert_eq!(
        positions.len(),
        chunks.len(),
        "every chunk at a position of its own"
    );
    let lines = binlog_lines(&db);

    let key = |id: &str| -> i64 {
        let v: serde_json::Value = serde_json::from_str(id).unwrap();
        v["id"].as_i64().unwrap()
    };
    let mut lower = i64::MIN;
    for (i, c) in chunks.iter().enumerate() {
        let pos = (&c.info.position.file, c.info.position.offset);
        let state = state_of(&lines, "w", |l| (&l.file, l.offset) <= pos);
        let upper = c.rows.last().map(|(id, _)| key(id)).unwrap_or(i64::MAX);
        let expected: Vec<(String, String)> = state
            .into_iter()
            .filter(|(id, _)| (lower + 1..=upper).contains(&key(id)))
            .collect();
        let mut got = c.rows.clone();
        got.sort_by_key(|(id, _)| key(id));
        let mut expected = expected;
        expected.sort_by_key(|(id, _)| key(id));
        assert_eq!(
            got, expected,
            "chunk {i} ({lower}..={upper}) at {pos:?}: snapshot (left) vs binlog state (right)"
        );
        lower = upper;
    }
}

/// EXPLAIN's `type` and `key` for the query of `t.table`'s second chunk.
async fn explain_next_chunk(db: &MariaDb, table: &str) -> (String, String) {
    let mut conn = connect(db).await;
    let flavor = prepare_session(&mut conn).await.unwrap();
    let plan = TablePlan::load(&mut conn, "t", table, None, None)
        .await
        .unwrap();
    assert_eq!(plan.page_index, "PRIMARY");
    let mut reader = ChunkReader::start(&mut conn, plan, flavor).await.unwrap();
    let mut buf = ChunkBuf::default();
    reader.read_next(&mut conn, 5, &mut buf).await.unwrap();
    let (sql, params) = reader.next_chunk_query(5).unwrap();
    let explain: Vec<mysql_async::Row> = conn.exec(format!("EXPLAIN {sql}"), params).await.unwrap();
    let row = &explain[0];
    let field = |name: &str| -> String {
        let i = row
            .columns_ref()
            .iter()
            .position(|c| c.name_str() == name)
            .unwrap();
        match row.as_ref(i).unwrap() {
            mysql_async::Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            v => format!("{v:?}"),
        }
    };
    (field("type"), field("key"))
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_of_every_pageable_type_read_every_row_once_by_a_primary_key_range() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql("CREATE DATABASE t");
    let cases = [
        ("BIGINT UNSIGNED", "18446744073709551615 - seq"),
        (
            "BIGINT",
            "CAST(seq AS SIGNED) * 1000003 - 9223372036854775807",
        ),
        ("DECIMAL(20,5)", "seq / 7 - 3"),
        ("DOUBLE", "seq / 3 - 10"),
        ("FLOAT", "seq / 4 - 10"),
        (
            "DATETIME(6)",
            "'2024-01-01' + INTERVAL seq * 1111 MICROSECOND",
        ),
        ("TIMESTAMP(3)", "FROM_UNIXTIME(1700000000 + seq / 1000)"),
        ("TIME(2)", "SEC_TO_TIME(seq * 3600.25 - 100000)"),
        ("DATE", "'2000-01-01' + INTERVAL seq DAY"),
        ("YEAR", "1901 + seq"),
        ("VARBINARY(8)", "UNHEX(LPAD(HEX(seq * 977), 6, '0'))"),
        ("BINARY(4)", "UNHEX(LPAD(HEX(seq), 2, '0'))"),
        (
            "CHAR(10) CHARACTER SET utf8mb4",
            "CONCAT(ELT(1 + seq % 3, 'a', '\u{c4}', 'b'), seq)",
        ),
        (
            "VARCHAR(10) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            "CONCAT(ELT(1 + seq % 3, 'a', '\u{c4}', 'A'), seq)",
        ),
        (
            "VARCHAR(10) CHARACTER SET latin1 COLLATE latin1_german2_ci",
            "CONCAT(ELT(1 + seq % 3, 'ss', '\u{df}', 'SS'), seq)",
        ),
    ];
    for (i, (ty, expr)) in cases.iter().enumerate() {
        let t = format!("k{i}");
        db.sql(&format!(
            "CREATE TABLE t.{t} (k {ty} NOT NULL, n INT NOT NULL, PRIMARY KEY (k, n)) ENGINE=InnoDB;
             INSERT INTO t.{t} SELECT {expr}, seq % 2 FROM t.seq_1_to_150;
             ANALYZE TABLE t.{t};"
        ));
        let chunks = read_table(&db, "t", &t, 7, |_| {}).await;
        let rows: Vec<&String> = chunks
            .iter()
            .flat_map(|c| &c.rows)
            .map(|(id, _)| id)
            .collect();
        let distinct: std::collections::BTreeSet<&String> = rows.iter().copied().collect();
        assert_eq!((rows.len(), distinct.len()), (150, 150), "key {ty}");
        assert_eq!(
            explain_next_chunk(&db, &t).await,
            ("range".into(), "PRIMARY".into()),
            "key {ty}"
        );
    }
}
