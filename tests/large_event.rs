//! A 64 MiB row against a real MariaDB: it is read whatever the server's `max_allowed_packet`
//! (the packet limit a client follows; the dump thread sends events past it), delivered whole
//! to the file sink and to the reference receiver, and binsync's peak memory above its idle
//! baseline stays under three times the event's size.
//!
//! The row is written while the server's limit is raised (128 MiB), and the limit is set back to
//! the default (16 MiB) before binsync connects. The idle baseline is the peak resident set of
//! the same command started at the binlog's end (`--start latest`) once it is streaming.
//!
//! And a small one: a 700 KB value updated (the event holds both images, 1.4 MB) on a server
//! whose `max_allowed_packet` is 1 MiB all along.

mod common;

use std::time::Duration;

use common::workload::Receiver;
use common::{peak_rss, wait_until, MariaDb, Proc, ServerOpts};

/// A 64 MiB LONGBLOB value (the event is a little larger).
const BLOB_BYTES: usize = 64 << 20;

fn server_with_a_big_row() -> (MariaDb, u64, String) {
    let db = MariaDb::start(ServerOpts {
        extra_args: vec!["--max-allowed-packet=128M".into()],
        ..ServerOpts::default()
    });
    db.sql("CREATE DATABASE t; CREATE TABLE t.big (id INT PRIMARY KEY, b LONGBLOB)");
    db.sql("INSERT INTO t.big VALUES (0, 'small')");
    let (_, before) = db.binlog_position();
    db.sql(&format!(
        "INSERT INTO t.big VALUES (1, REPEAT('x', {BLOB_BYTES}))"
    ));
    let (_, after) = db.binlog_position();
    // The row's transaction (GTID, table map, rows, commit): the rows event is nearly all of it.
    let event = after - before;
    let gtid = db.gtid_binlog_pos();
    assert!(
        event > BLOB_BYTES as u64,
        "the row was written ({event} bytes)"
    );
    // MariaDB's default: the client side follows it, the dump thread does not.
    db.sql("SET GLOBAL max_allowed_packet = 16777216");
    (db, event, gtid)
}

fn run_args(db: &MariaDb, state: &std::path::Path, sink: &str, start: &str) -> Vec<String> {
    [
        "run",
        "--source",
        &db.url(),
        "--server-id",
        "6161",
        "--state-dir",
        &state.display().to_string(),
        "--sink",
        sink,
        "--start",
        start,
        // The rows only, not the `ddl` line of the CREATE TABLE.
        "--on-ddl",
        "ignore",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spawn(args: &[String]) -> Proc {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn(&refs, &[])
}

/// Peak RSS of binsync started at the binlog's end, once it streams (nothing to decode).
fn idle_baseline(db: &MariaDb, sink: &str) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(&run_args(db, &dir.path().join("state"), sink, "latest"));
    wait_until(Duration::from_secs(60), "binsync streaming", || {
        p.stderr().contains("streaming")
    });
    std::thread::sleep(Duration::from_secs(1));
    let idle = peak_rss(p.pid());
    p.sigterm();
    assert!(p.wait_timeout(Duration::from_secs(30)).is_some());
    assert!(idle > 0);
    idle
}

fn check_peak(what: &str, peak: u64, idle: u64, event: u64) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "{what}: event {:.1} MiB, idle {:.1} MiB, peak {:.1} MiB: {:.2}x the event above idle",
        mib(event),
        mib(idle),
        mib(peak),
        (peak.saturating_sub(idle)) as f64 / event as f64
    );
    assert!(
        peak.saturating_sub(idle) < 3 * event,
        "{what}: peak RSS above idle is {:.1} MiB, not under 3x the {:.1} MiB event",
        mib(peak.saturating_sub(idle)),
        mib(event)
    );
}

#[test]
fn a_64_mib_row_reaches_the_file_sink_with_peak_memory_under_three_times_the_event() {
    let (db, event, _) = server_with_a_big_row();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("changes.jsonl");
    let sink = format!("file:{}", out.display());
    let idle = idle_baseline(&db, "file:/dev/null");
    let mut p = spawn(&run_args(&db, &dir.path().join("state"), &sink, "earliest"));
    let lines = || {
        std::fs::read(&out)
            .unwrap_or_default()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
    };
    wait_until(Duration::from_secs(180), "both rows in the file", || {
        assert!(p.is_running(), "binsync exited: {}", p.stderr());
        lines() >= 2
    });
    let peak = peak_rss(p.pid());
    p.sigterm();
    assert!(p.wait_timeout(Duration::from_secs(60)).is_some());
    check_peak("file sink", peak, idle, event);

    let text = std::fs::read(&out).unwrap();
    let big = text
        .split(|&b| b == b'\n')
        .find(|l| l.windows(11).any(|w| w == b"{\"id\":1}") || l.len() > BLOB_BYTES)
        .expect("the big row's line");
    let v: serde_json::Value = serde_json::from_slice(big).unwrap();
    assert_eq!(v["id"]["id"], 1);
    let b64 = v["after"]["b"].as_str().expect("a base64 string");
    assert_eq!(b64.len(), BLOB_BYTES.div_ceil(3) * 4, "the whole value");
    assert!(b64.starts_with("eHh4eHh4"), "x bytes, in base64");
}

#[test]
fn a_64_mib_row_reaches_the_receiver_with_peak_memory_under_three_times_the_event() {
    let (db, event, gtid) = server_with_a_big_row();
    let dir = tempfile::tempdir().unwrap();
    let mut recv = Receiver::start(&dir.path().join("receiver"), &[]);
    let idle = idle_baseline(&db, &recv.url());
    let state = dir.path().join("state");
    let mut p = spawn(&run_args(&db, &state, &recv.url(), "earliest"));
    // The checkpoint reaches the big row's GTID only once the receiver took it.
    wait_until(Duration::from_secs(180), "the big row delivered", || {
        assert!(p.is_running(), "binsync exited: {}", p.stderr());
        let status = std::process::Command::new(common::binsync_bin())
            .args(["status", "--state-dir", &state.display().to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&status.stdout).contains(&gtid)
    });
    let peak = peak_rss(p.pid());
    p.sigterm();
    assert!(p.wait_timeout(Duration::from_secs(60)).is_some());
    check_peak("HTTP sink", peak, idle, event);
    let dump = recv.dump_json();
    let big = &dump["entities"]["big"];
    let row = big
        .as_object()
        .and_then(|ids| ids.iter().find(|(id, _)| id.contains('1')))
        .map(|(_, e)| e["values"]["b"].clone())
        .unwrap_or_else(|| panic!("no row 1 at the receiver: {}", big));
    let b64 = row.as_str().expect("a base64 string");
    assert_eq!(b64.len(), BLOB_BYTES.div_ceil(3) * 4, "the whole value");
}

/// Finding 2 of issue 10 as reported: an UPDATE of a 700 KB value on a server whose
/// `max_allowed_packet` is 1 MiB (its default on MySQL 5.7, MariaDB 10.1): the FULL-image
/// event holds the value twice, over the packet limit binsync's client would follow. Before,
/// that was "packet too large", retried forever at the same position.
#[test]
fn a_700_kb_update_over_a_1_mib_packet_limit_is_delivered() {
    let db = MariaDb::start(ServerOpts {
        extra_args: vec!["--max-allowed-packet=1M".into()],
        ..ServerOpts::default()
    });
    db.sql("CREATE DATABASE t; CREATE TABLE t.big (id INT PRIMARY KEY, b LONGBLOB)");
    db.sql("INSERT INTO t.big VALUES (1, REPEAT('x', 700000))");
    let (_, before) = db.binlog_position();
    db.sql("UPDATE t.big SET b = REPEAT('y', 700000) WHERE id = 1");
    let (_, after) = db.binlog_position();
    assert!(after - before > 1 << 20, "the update's event is over 1 MiB");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("changes.jsonl");
    let mut args = run_args(
        &db,
        &dir.path().join("state"),
        &format!("file:{}", out.display()),
        "earliest",
    );
    args.push("--exit-at-end".into());
    let mut p = spawn(&args);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("binsync did not get past the event: {}", p.stderr()));
    assert!(st.success(), "{}", p.stderr());
    let text = std::fs::read_to_string(&out).unwrap();
    let ops: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ops.len(), 2, "{}", p.stderr());
    assert_eq!(ops[1]["op"], "update");
    let b64 = |v: &serde_json::Value| v.as_str().map(str::len).unwrap_or(0);
    assert_eq!(b64(&ops[1]["after"]["b"]), 700000_usize.div_ceil(3) * 4);
    assert_eq!(b64(&ops[1]["before"]["b"]), 700000_usize.div_ceil(3) * 4);
}
