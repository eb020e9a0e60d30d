//! Scenario: an application writes to MariaDB through XA transactions (two-phase commit):
//! `XA START 'x'; INSERT ...; XA END 'x'; XA PREPARE 'x';` and later `XA COMMIT 'x'` or
//! `XA ROLLBACK 'x'`, from another session too. MariaDB 10.5+ logs the prepared part as one
//! event group (its GTID event carries the xid, the rows, `XA END`, an XA_PREPARE event) and
//! the commit or rollback as another, each with a GTID of its own.
//!
//! binsync delivers an XA transaction's rows at its prepare, as a replica applies them: with
//! the GTID and the time of the prepared group, the checkpoint moving only at its end. The
//! XA COMMIT and XA ROLLBACK groups are transactions without rows; a rollback after the
//! prepare cannot take back rows already delivered, so binsync logs a warning naming the xid.
//! `--exit-at-end` returns when the binlog ends with an XA prepared and not committed, and
//! kill -9 between a prepare and its commit loses nothing.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::workload::is_row_change;
use common::{MariaDb, Proc, ServerOpts};

fn run(db: &MariaDb, state: &str, out: &str, exit_at_end: bool) -> Proc {
    let url = db.url();
    let sink = format!("file:{out}");
    let mut args = vec![
        "run",
        "--source",
        &url,
        "--server-id",
        "4545",
        "--state-dir",
        state,
        "--start",
        "earliest",
        "--sink",
        &sink,
    ];
    if exit_at_end {
        args.push("--exit-at-end");
    }
    Proc::spawn(&args, &[])
}

/// Runs binsync with `--exit-at-end`; it must return on its own.
fn catch_up(db: &MariaDb, state: &str, out: &str) -> Proc {
    let mut p = run(db, state, out, true);
    let st = p.wait_timeout(Duration::from_secs(30));
    assert!(
        st.is_some_and(|s| s.success()),
        "the run did not return at the binlog's end: {}",
        p.stderr()
    );
    p
}

/// The row changes in the sink's file (the `ddl` line of the setup's CREATE TABLE left out).
fn lines(out: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(is_row_change)
        .collect()
}

/// The GTID of each XA's prepared group, by xid as MariaDB logs it (`X'7831'` for 'x1'),
/// from the `XA START X'7831',X'',1 GTID 0-1-3` of SHOW BINLOG EVENTS.
fn xa_gtids(db: &MariaDb) -> BTreeMap<String, String> {
    db.rows("SHOW BINLOG EVENTS")
        .into_iter()
        .filter(|r| r[2] == "Gtid")
        .filter_map(|r| {
            let info = r[5].strip_prefix("XA START ")?;
            let (xid, gtid) = info.split_once(" GTID ")?;
            Some((xid.split(',').next()?.to_string(), gtid.to_string()))
        })
        .collect()
}

/// Seconds since the epoch of a `ts` as binsync writes it (`2026-12-03T05:39:40Z`, maybe
/// with a fraction).
fn epoch_seconds(ts: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| ts[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn xa_rows_come_with_their_gtid_and_time_and_exit_at_end_returns() {
    let db = MariaDb::start(ServerOpts::default());
    let started = now();
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v INT)");
    db.sql("INSERT INTO shop.t VALUES (1, 10)");
    db.sql("XA START 'x1'; INSERT INTO shop.t VALUES (2, 20), (3, 30); XA END 'x1'; XA PREPARE 'x1'; XA COMMIT 'x1'");
    db.sql("XA START 'x2'; INSERT INTO shop.t VALUES (4, 40); XA END 'x2'; XA PREPARE 'x2'; XA ROLLBACK 'x2'");
    db.sql(
        "XA START 'x3'; INSERT INTO shop.t VALUES (5, 50); XA END 'x3'; XA COMMIT 'x3' ONE PHASE",
    );
    // Prepared in one session, committed from another.
    db.sql("XA START 'x4'; UPDATE shop.t SET v = 11 WHERE id = 1; XA END 'x4'; XA PREPARE 'x4'");
    db.sql("XA COMMIT 'x4'");
    // The binlog ends with an XA prepared and not (yet) committed.
    db.sql("XA START 'x5'; DELETE FROM shop.t WHERE id = 5; XA END 'x5'; XA PREPARE 'x5'");
    let finished = now();
    let gtids = xa_gtids(&db);
    assert_eq!(
        gtids.keys().collect::<Vec<_>>(),
        ["X'7831'", "X'7832'", "X'7834'", "X'7835'"],
        "the prepared groups in the binlog"
    );

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let out = dir.path().join("changes.jsonl").display().to_string();
    let p = catch_up(&db, &state, &out);

    let rows = lines(&out);
    let by_id = |id: i64, op: &str| -> &serde_json::Value {
        rows.iter()
            .find(|r| r["id"]["id"] == id && r["op"] == op)
            .unwrap_or_else(|| panic!("no {op} of id {id} in {rows:#?}"))
    };
    for (id, op, xid) in [
        (2, "insert", "X'7831'"),
        (3, "insert", "X'7831'"),
        (4, "insert", "X'7832'"),
        (1, "update", "X'7834'"),
        (5, "delete", "X'7835'"),
    ] {
        let r = by_id(id, op);
        assert_eq!(r["gtid"], gtids[xid], "{r}");
        let ts = epoch_seconds(r["ts"].as_str().unwrap());
        assert!(
            (started - 2..=finished + 2).contains(&ts),
            "{r}: ts outside the test's run ({started}..{finished})"
        );
    }
    // XA COMMIT ... ONE PHASE is logged as an ordinary transaction.
    assert!(by_id(5, "insert")["gtid"].is_string());
    assert_eq!(rows.len(), 7, "{rows:#?}");
    // The rolled back XA's row was delivered at its prepare; the warning names it.
    let stderr = p.stderr();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("rolled back after XA PREPARE") && l.contains("X'7832'")),
        "{stderr}"
    );
    // The checkpoint followed every XA group, to the binlog's last GTID (x5's)...
    let mut status = Proc::spawn(&["status", "--state-dir", &state], &[]);
    assert!(status
        .wait_timeout(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    let last = db.gtid_binlog_pos();
    let checkpoint = status.stdout();
    assert!(
        checkpoint
            .lines()
            .any(|l| l.starts_with("checkpoint:") && l.contains(&last)),
        "the checkpoint is not at {last}:\n{checkpoint}"
    );
    // ...so a second run has nothing to send again.
    catch_up(&db, &state, &out);
    assert_eq!(lines(&out), rows, "a second run sent lines again");
}

#[test]
fn kill_9_between_an_xa_prepare_and_its_commit_loses_nothing() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v INT)");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let out = dir.path().join("changes.jsonl").display().to_string();
    let mut p = run(&db, &state, &out, false);
    db.sql(
        "XA START 'k1'; INSERT INTO shop.t VALUES (1, 10), (2, 20); XA END 'k1'; XA PREPARE 'k1'",
    );
    common::wait_until(Duration::from_secs(30), "the prepared rows", || {
        assert!(p.is_running(), "binsync exited: {}", p.stderr());
        lines(&out).len() >= 2
    });
    // Give the checkpoint a moment to follow, sometimes; kill -9 either way.
    std::thread::sleep(Duration::from_millis(fastrand::u64(0..500)));
    p.kill9();
    db.sql("XA COMMIT 'k1'");
    db.sql("XA START 'k2'; INSERT INTO shop.t VALUES (3, 30); XA END 'k2'; XA PREPARE 'k2'; XA COMMIT 'k2'");
    catch_up(&db, &state, &out);

    let gtids = xa_gtids(&db);
    let rows = lines(&out);
    // A restart may send again what was not yet checkpointed, with the same seq and line.
    let mut by_seq: BTreeMap<u64, &serde_json::Value> = BTreeMap::new();
    for r in &rows {
        let seq = r["seq"].as_u64().unwrap();
        if let Some(first) = by_seq.insert(seq, r) {
            assert_eq!(first, r, "seq {seq} sent twice with other content");
        }
    }
    let got: Vec<(i64, &str)> = by_seq
        .values()
        .map(|r| (r["id"]["id"].as_i64().unwrap(), r["gtid"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (1, gtids["X'6b31'"].as_str()),
            (2, gtids["X'6b31'"].as_str()),
            (3, gtids["X'6b32'"].as_str()),
        ],
        "{rows:#?}"
    );
}
