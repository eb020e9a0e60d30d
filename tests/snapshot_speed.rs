//! Scenario (ignored, a measurement): how fast the snapshot reader reads a table of the
//! benchmark's shape (10 columns) with the chunk size left to [`ChunkSizer`], next to
//! `mariadb-dump --single-transaction --quick` of the same table. Run it in release mode:
//! `cargo test --release --test snapshot_speed -- --ignored --nocapture`.

mod common;
mod snapshot_util;

use std::time::{Duration, Instant};

use binsync::snapshot::{prepare_session, ChunkBuf, ChunkReader, ChunkSizer, TablePlan};
use common::{MariaDb, ServerOpts};
use snapshot_util::connect;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run in release mode with --nocapture"]
async fn snapshot_read_rate_next_to_mariadb_dump() {
    let rows: u64 = std::env::var("SNAPSHOT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let db = MariaDb::start(ServerOpts {
        extra_args: vec!["--innodb-buffer-pool-size=256M".into()],
        ..ServerOpts::default()
    });
    db.sql(&format!(
        "CREATE DATABASE t; CREATE TABLE t.bench (id BIGINT PRIMARY KEY, a INT, b BIGINT, \
         c VARCHAR(40), d DECIMAL(12,2), e DATETIME(6), f DOUBLE, g VARCHAR(100), h TINYINT, \
         i TIMESTAMP NULL) ENGINE=InnoDB;
         INSERT INTO t.bench SELECT seq, seq % 1000, seq * 7, CONCAT('name-', seq), seq / 100, \
           '2024-01-01' + INTERVAL seq SECOND, seq / 3, REPEAT('x', 60), seq % 100, \
           '2024-01-01' + INTERVAL seq SECOND FROM t.seq_1_to_{rows};"
    ));
    // Warm the buffer pool for both readers alike.
    db.sql("SELECT COUNT(*) FROM t.bench");

    let mut dump = std::process::Command::new("mariadb-dump");
    dump.args([
        "-uroot",
        "-h127.0.0.1",
        &format!("-P{}", db.port()),
        "--single-transaction",
        "--quick",
        "t",
        "bench",
    ])
    .stdout(std::process::Stdio::null());
    let started = Instant::now();
    let status = dump.status().unwrap();
    let dump_took = started.elapsed();
    assert!(status.success());

    let mut conn = connect(&db).await;
    let flavor = prepare_session(&mut conn).await.unwrap();
    let plan = TablePlan::load(&mut conn, "t", "bench", None, None)
        .await
        .unwrap();
    let started = Instant::now();
    let mut reader = ChunkReader::start(&mut conn, plan, flavor).await.unwrap();
    let mut sizer = ChunkSizer::new(Duration::from_millis(200), 1000, 100, 200_000);
    let mut buf = ChunkBuf::default();
    let (mut read, mut chunks, mut peak_buf) = (0u64, 0u64, 0usize);
    while let Some(info) = reader
        .read_next(&mut conn, sizer.rows(), &mut buf)
        .await
        .unwrap()
    {
        sizer.observe(info.rows as u32, info.took);
        read += info.rows as u64;
        chunks += 1;
        peak_buf = peak_buf.max(buf.buf.capacity());
    }
    let took = started.elapsed();
    assert_eq!(read, rows);
    eprintln!(
        "snapshot: {rows} rows in {took:?} ({:.0} rows/s), {chunks} chunks, last size {}, \
         peak chunk buffer {} KiB; mariadb-dump: {dump_took:?} ({:.0} rows/s); ratio {:.2}",
        rows as f64 / took.as_secs_f64(),
        sizer.rows(),
        peak_buf / 1024,
        rows as f64 / dump_took.as_secs_f64(),
        took.as_secs_f64() / dump_took.as_secs_f64(),
    );
}
