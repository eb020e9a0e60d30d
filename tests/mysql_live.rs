//! Scenario: an operator points binsync at MySQL 8.0, 8.4 and 9.x (issue 10). No MySQL server
//! is available here, so `tests/mysql_double` plays one over real MySQL-written binlogs: the
//! same handshake, authentication, statements and dump protocol. A run to the binlog's end
//! must deliver exactly the rows `binsync replay` reads from the same file (given the same
//! table definitions, `--schema-from`); `check` and `status` must work against it too.

mod binlog_fixtures;
mod common;
mod mysql_double;

use std::path::PathBuf;
use std::time::Duration;

use common::Proc;
use mysql_async::prelude::Queryable;
use mysql_double::{ColumnDesc, MysqlDouble, Options, Plugin, Profile, TableDesc};

fn fixture(name: &str) -> PathBuf {
    binlog_fixtures::dir().join(name)
}

/// The 8.0 fixture: ENUM/SET rows with full row metadata, five GTIDs of one server.
const ENUM_SET: &str = "mysql-enum-string-set.000001";
/// The 8.4/9.x fixture: a tagged GTID (`uuid:mytag:3`), minimal row metadata.
const TAGGED: &str = "binlog_transaction_with_GTID_TAG.000001";

/// `test.orders` as the 9.6 server that wrote TAGGED had it (three columns; the binlog has no
/// names). The names here are the test's own: the server's definition (`SHOW CREATE TABLE`,
/// which seeds the schema history) is their only source.
fn orders() -> TableDesc {
    TableDesc {
        db: "test".into(),
        name: "orders".into(),
        columns: vec![
            ColumnDesc::new("id", "int", true),
            ColumnDesc::new("customer", "int", false),
            ColumnDesc::new("total", "decimal(10,2)", false),
        ],
    }
}

fn options_for(file: &str) -> Options {
    let mut o = Options::default();
    if file == TAGGED {
        o.tables = vec![orders()];
    }
    if file == ENUM_SET {
        o.row_metadata = "FULL".into();
    }
    o
}

/// What `binsync replay` prints for `file`, as if the file were called `served` (the double
/// serves its files as `binlog.000001`, ...).
fn replayed_as(file: &str, served: &str) -> Vec<serde_json::Value> {
    let mut rows = replayed(file);
    for r in rows.iter_mut() {
        r["file"] = serde_json::Value::String(served.to_string());
    }
    rows
}

/// What `binsync replay` prints for `file`, given the tables the double describes for it
/// (`replay --schema-from file:`, their `SHOW CREATE TABLE`): without FULL row metadata
/// nor a CREATE in the file, binsync names no column and replay stops.
fn replayed(file: &str) -> Vec<serde_json::Value> {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let path = fixture(file);
    let schema = tmp.path().join("schema.sql");
    let ddl: String = options_for(file)
        .tables
        .iter()
        .map(|t| {
            format!(
                "USE {};\n{};\n",
                mysql_double::backquoted(&t.db),
                t.show_create()
            )
        })
        .collect();
    std::fs::write(&schema, ddl).unwrap();
    let schema_from = format!("file:{}", schema.display());
    let mut p = Proc::spawn(
        &[
            "replay",
            "--binlog-file",
            path.to_str().unwrap(),
            "--schema-from",
            &schema_from,
            "--sink",
            &format!("file:{}", out.display()),
        ],
        &[],
    );
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("replay hung");
    assert!(st.success(), "replay {file}: {}", p.stderr());
    lines_without_seq(&std::fs::read_to_string(out).unwrap_or_default())
}

fn lines_without_seq(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seq");
            v
        })
        .collect()
}

fn run_to_end(double: &MysqlDouble, state: &std::path::Path, out: &std::path::Path) -> Proc {
    run_to_end_with(double, state, out, &[])
}

/// [`run_to_end`] with more flags.
fn run_to_end_with(
    double: &MysqlDouble,
    state: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> Proc {
    let mut p = spawn_run(double, state, out, "earliest", extra);
    p.wait_timeout(Duration::from_secs(60)).expect("run hung");
    p
}

/// `binsync run --start START --exit-at-end` into the file `out`, with more flags.
fn spawn_run(
    double: &MysqlDouble,
    state: &std::path::Path,
    out: &std::path::Path,
    start: &str,
    extra: &[&str],
) -> Proc {
    let url = double.url();
    let sink = format!("file:{}", out.display());
    let mut args = vec![
        "run",
        "--source",
        &url,
        "--server-id",
        "4242",
        "--state-dir",
        state.to_str().unwrap(),
        "--start",
        start,
        "--exit-at-end",
        "--connect-timeout",
        "5s",
        "--sink",
        &sink,
    ];
    args.extend(extra);
    Proc::spawn(&args, &[])
}

fn live_run_matches_replay(profile: Profile, file: &str) {
    let double = MysqlDouble::start(profile, vec![fixture(file)], options_for(file));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let state = tmp.path().join("state");
    let mut p = run_to_end(&double, &state, &out);
    let stderr = p.stderr();
    assert_eq!(
        p.try_status().and_then(|s| s.code()),
        Some(0),
        "binsync run against {profile:?} failed:\n{stderr}\nstatements: {:#?}",
        double.statements()
    );
    assert!(
        double.unknown_statements().is_empty(),
        "the double did not know: {:?}",
        double.unknown_statements()
    );
    let live = lines_without_seq(&std::fs::read_to_string(&out).unwrap_or_default());
    let want = replayed_as(file, &double.file_name(0));
    assert!(!want.is_empty(), "{file} holds rows");
    assert_eq!(live, want, "{profile:?}: live rows differ from replay's");
    let stmts = double.statements();
    assert!(
        stmts
            .iter()
            .any(|s| s.starts_with("COM_REGISTER_SLAVE server_id=4242")),
        "{stmts:?}"
    );
    assert!(
        stmts.iter().any(|s| s.starts_with("COM_BINLOG_DUMP")),
        "{stmts:?}"
    );

    check_with_state_dir_passes(&double, &state);

    // `binsync status` reads the checkpoint and, with --source, the lag.
    let mut st = Proc::spawn(
        &[
            "status",
            "--state-dir",
            state.to_str().unwrap(),
            "--source",
            &double.url(),
        ],
        &[],
    );
    let code = st
        .wait_timeout(Duration::from_secs(30))
        .expect("status hung");
    assert!(
        code.success(),
        "status against {profile:?}: {}{}",
        st.stdout(),
        st.stderr()
    );
}

/// `binsync check --state-dir`: the settings, and whether the source still holds the
/// checkpoint's history (SHOW BINARY LOGS, gtid_executed, SHOW BINLOG EVENTS).
fn check_with_state_dir_passes(double: &MysqlDouble, state: &std::path::Path) {
    let mut p = Proc::spawn(
        &[
            "check",
            "--source",
            &double.url(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[],
    );
    let st = p.wait_timeout(Duration::from_secs(30)).expect("check hung");
    let out = p.stdout();
    assert!(st.success(), "check --state-dir:\n{out}\n{}", p.stderr());
    for name in ["binlog retention", "binlog history"] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(name)),
            "{name} not ok:\n{out}"
        );
    }
}

fn check_passes(profile: Profile, file: &str) {
    let double = MysqlDouble::start(profile, vec![fixture(file)], options_for(file));
    let mut p = Proc::spawn(&["check", "--source", &double.url()], &[]);
    let st = p.wait_timeout(Duration::from_secs(30)).expect("check hung");
    let out = p.stdout();
    assert!(
        st.success(),
        "check against {profile:?}:\n{out}\n{}",
        p.stderr()
    );
    for name in ["log_bin", "binlog_format", "gtid_mode", "REPLICATION SLAVE"] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(name)),
            "{name} not ok:\n{out}"
        );
    }
}

#[test]
fn mysql80_run_to_end_delivers_the_rows_replay_reads() {
    live_run_matches_replay(Profile::Mysql80, ENUM_SET);
}

#[test]
fn mysql84_run_to_end_delivers_the_rows_replay_reads() {
    live_run_matches_replay(Profile::Mysql84, TAGGED);
}

#[test]
fn mysql9x_run_to_end_delivers_the_rows_replay_reads() {
    live_run_matches_replay(Profile::Mysql9x, TAGGED);
}

#[test]
fn mysql80_check_passes() {
    check_passes(Profile::Mysql80, ENUM_SET);
}

#[test]
fn mysql84_check_passes() {
    check_passes(Profile::Mysql84, TAGGED);
}

#[test]
fn mysql9x_check_passes() {
    check_passes(Profile::Mysql9x, TAGGED);
}

/// The double's own handshake, against mysql_async (the driver binsync uses).
async fn connect(double: &MysqlDouble, password: &str) -> Result<mysql_async::Conn, String> {
    // As binsync connects: over TCP, never a socket the server names.
    let url = format!(
        "mysql://cdc:{password}@127.0.0.1:{}?prefer_socket=false",
        double.port()
    );
    mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn caching_sha2_full_then_fast_authentication_and_wrong_password() {
    for profile in Profile::ALL {
        let double = MysqlDouble::start(profile, vec![fixture(ENUM_SET)], Options::default());
        let mut conn = connect(&double, "cdc-pw").await.expect("full auth");
        let v: Option<String> = conn.query_first("SELECT VERSION()").await.unwrap();
        assert_eq!(v.as_deref(), Some(profile.version()));
        drop(conn);
        let _conn = connect(&double, "cdc-pw").await.expect("fast auth");
        let auths: Vec<String> = double
            .statements()
            .into_iter()
            .filter(|s| s.starts_with("AUTH"))
            .collect();
        assert_eq!(
            auths,
            [
                "AUTH caching_sha2_password full (RSA)",
                "AUTH caching_sha2_password fast"
            ],
            "{profile:?}"
        );
        let e = connect(&double, "wrong").await.unwrap_err();
        assert!(e.contains("1045") && e.contains("Access denied"), "{e}");
    }
}

#[tokio::test]
async fn native_password_on_80_and_not_loaded_on_84() {
    let opts = Options {
        plugin: Plugin::MysqlNative,
        ..Options::default()
    };
    let double = MysqlDouble::start(Profile::Mysql80, vec![fixture(ENUM_SET)], opts.clone());
    connect(&double, "cdc-pw")
        .await
        .expect("native auth on 8.0");
    let e = connect(&double, "nope").await.unwrap_err();
    assert!(e.contains("1045"), "{e}");
    let double = MysqlDouble::start(Profile::Mysql84, vec![fixture(ENUM_SET)], opts);
    let e = connect(&double, "cdc-pw").await.unwrap_err();
    assert!(
        e.contains("1524") && e.contains("mysql_native_password"),
        "{e}"
    );
}

#[tokio::test]
async fn show_master_status_is_a_syntax_error_from_84() {
    for profile in Profile::ALL {
        let double = MysqlDouble::start(profile, vec![fixture(ENUM_SET)], Options::default());
        let mut conn = connect(&double, "cdc-pw").await.unwrap();
        let old = conn.query_drop("SHOW MASTER STATUS").await;
        let new = conn.query_drop("SHOW BINARY LOG STATUS").await;
        match profile {
            Profile::Mysql80 => assert!(old.is_ok() && new.is_err(), "{old:?} {new:?}"),
            _ => {
                let e = old.unwrap_err().to_string();
                assert!(e.contains("1064"), "{e}");
                assert!(new.is_ok(), "{new:?}");
            }
        }
        assert!(double.unknown_statements().is_empty());
        let e = conn.query_drop("SELECT frobnicate()").await.unwrap_err();
        assert!(e.to_string().contains("1064"), "{e}");
        assert_eq!(double.unknown_statements(), ["SELECT frobnicate()"]);
    }
}

/// A run without `--exit-at-end` (so no `SHOW MASTER STATUS`) until the rows are delivered,
/// stopped with SIGTERM, then resumed from its checkpoint: by GTID, with the tagged set.
fn streams_and_resumes_by_tagged_gtid(profile: Profile) {
    let double = MysqlDouble::start(profile, vec![fixture(TAGGED)], options_for(TAGGED));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let state = tmp.path().join("state");
    let want = replayed_as(TAGGED, &double.file_name(0));
    let args = |start: &str| -> Vec<String> {
        [
            "run",
            "--source",
            &double.url(),
            "--server-id",
            "4242",
            "--state-dir",
            state.to_str().unwrap(),
            "--start",
            start,
            "--connect-timeout",
            "5s",
            "--sink",
            &format!("file:{}", out.display()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let first = args("earliest");
    let mut p = Proc::spawn(&first.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let delivered = || {
        std::fs::read_to_string(&out)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    common::wait_until(Duration::from_secs(30), "the rows of the fixture", || {
        delivered() >= want.len() || !p.is_running()
    });
    assert!(
        p.is_running(),
        "binsync run against {profile:?} stopped:\n{}\nstatements: {:#?}",
        p.stderr(),
        double.statements()
    );
    p.sigterm();
    let st = p.wait_timeout(Duration::from_secs(30)).expect("stop");
    assert!(st.success(), "{}", p.stderr());
    let live = lines_without_seq(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(live, want, "{profile:?}: live rows differ from replay's");
    assert!(
        double.unknown_statements().is_empty(),
        "{:?}",
        double.statements()
    );
    // The names came from the schema history, seeded from the table's definition, not
    // from an information_schema lookup when its rows came.
    let stmts = double.statements();
    assert!(
        stmts
            .iter()
            .any(|s| s == "SHOW CREATE TABLE `test`.`orders`"),
        "the history was seeded from the table's definition: {stmts:?}"
    );
    assert!(
        !stmts.iter().any(|s| s.contains("COLUMN_NAME, COLUMN_KEY")),
        "no information_schema lookup: {stmts:?}"
    );

    // The restart resumes by GTID: the request holds the tagged GTID, so nothing is re-sent.
    let mut p = Proc::spawn(&first.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let tagged_dump = |d: &MysqlDouble| {
        d.statements()
            .into_iter()
            .filter(|s| s.starts_with("COM_BINLOG_DUMP_GTID"))
            .collect::<Vec<_>>()
    };
    common::wait_until(Duration::from_secs(30), "a GTID dump", || {
        !tagged_dump(&double).is_empty() || !p.is_running()
    });
    let dumps = tagged_dump(&double);
    assert!(
        dumps.iter().any(|d| d.ends_with(":1-13:mytag:1-3")),
        "the resume asks by the tagged GTID: {dumps:?}\n{}",
        p.stderr()
    );
    // Two idle heartbeats (binsync asks for one a second) with nothing new: no row twice.
    let beats = double.idle_heartbeats();
    common::wait_until(Duration::from_secs(10), "two idle heartbeats", || {
        double.idle_heartbeats() >= beats + 2 || !p.is_running()
    });
    assert!(p.is_running(), "{}", p.stderr());
    p.sigterm();
    let st = p.wait_timeout(Duration::from_secs(30)).expect("stop");
    assert!(st.success(), "{}", p.stderr());
    let again = lines_without_seq(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(again, want, "{profile:?}: the resume re-sent rows");
    check_with_state_dir_passes(&double, &state);
}

#[test]
fn mysql84_streams_and_resumes_by_tagged_gtid() {
    streams_and_resumes_by_tagged_gtid(Profile::Mysql84);
}

#[test]
fn mysql9x_streams_and_resumes_by_tagged_gtid() {
    streams_and_resumes_by_tagged_gtid(Profile::Mysql9x);
}

/// One event as a replica receives it: type, log_pos, flags, and the GTID if it is one.
#[derive(Debug)]
struct Received {
    kind: u8,
    log_pos: u32,
    timestamp: u32,
    gtid: Option<String>,
    /// A ROTATE's file.
    rotate_to: Option<String>,
}

/// Reads a dump with mysql_async's own BinlogStream (the reader binsync uses) until `until`.
async fn read_dump(
    double: &MysqlDouble,
    setup: &[&str],
    req: mysql_async::BinlogStreamRequest<'_>,
    until: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    use futures_util::StreamExt;
    let mut conn = connect(double, "cdc-pw").await.unwrap();
    for sql in setup {
        conn.query_drop(*sql).await.unwrap();
    }
    let mut stream = conn.get_binlog_stream(req).await.unwrap();
    let mut got = Vec::new();
    while !until(&got) {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10s")
            .expect("the stream goes on")
            .expect("a well-formed event");
        let h = ev.header();
        use mysql_common::binlog::events::EventData;
        let (mut gtid, mut rotate_to) = (None, None);
        match ev.read_data() {
            Ok(Some(EventData::GtidEvent(g))) => {
                gtid = Some(format!("{}:{}", mysql_double::uuid_text(&g.sid()), g.gno()))
            }
            Ok(Some(EventData::RotateEvent(r))) => rotate_to = Some(r.name().into_owned()),
            _ => {}
        }
        got.push(Received {
            kind: h.event_type_raw(),
            log_pos: h.log_pos(),
            timestamp: h.timestamp(),
            gtid,
            rotate_to,
        });
    }
    got
}

/// The dump protocol itself, as `Binlog_sender` speaks it: a fake ROTATE (timestamp 0,
/// log_pos 0), the FORMAT_DESCRIPTION, the events; transactions the GTID request holds are
/// skipped (a heartbeat marks where they ended); heartbeats while idle at the end.
#[tokio::test]
async fn gtid_dump_skips_held_transactions_then_heartbeats() {
    let double = MysqlDouble::start(
        Profile::Mysql80,
        vec![fixture(ENUM_SET)],
        Options::default(),
    );
    let uuid = double.server_uuid();
    let held: mysql_common::packets::Sid<'static> = format!("{uuid}:1-3").parse().unwrap();
    let req = mysql_async::BinlogStreamRequest::new(77)
        .with_gtid()
        .with_gtid_set(vec![held]);
    // 100 ms heartbeats; wait for two of them after the last event.
    let got = read_dump(
        &double,
        &["SET @master_heartbeat_period = 100000000"],
        req,
        |got| got.iter().rev().take(2).filter(|e| e.kind == 27).count() == 2 && got.len() > 3,
    )
    .await;
    assert_eq!(
        (got[0].kind, got[0].timestamp, got[0].log_pos),
        (4, 0, 0),
        "{got:?}"
    );
    assert_eq!(got[1].kind, 15, "{got:?}");
    let gtids: Vec<&str> = got.iter().filter_map(|e| e.gtid.as_deref()).collect();
    assert_eq!(gtids, [format!("{uuid}:4"), format!("{uuid}:5")], "{got:?}");
    // The skipped transactions end in a heartbeat before the first one sent.
    let first_gtid = got.iter().position(|e| e.gtid.is_some()).unwrap();
    assert_eq!(got[first_gtid - 1].kind, 27, "{got:?}");
    let stmts = double.statements();
    assert!(
        stmts
            .iter()
            .any(|s| s.starts_with("COM_BINLOG_DUMP_GTID") && s.ends_with(&format!("{uuid}:1-3"))),
        "{stmts:?}"
    );
}

/// Two files: the first closes with a real ROTATE to the second, which begins with its own
/// fake ROTATE and FORMAT_DESCRIPTION; a run to the end delivers both files' rows in order.
#[test]
fn mysql80_run_across_a_rotation_delivers_both_files() {
    const SECOND: &str = "mysql_type_bit.000001";
    let opts = Options {
        row_metadata: "FULL".into(),
        ..Options::default()
    };
    let double = MysqlDouble::start(
        Profile::Mysql80,
        vec![fixture(ENUM_SET), fixture(SECOND)],
        opts,
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let mut p = run_to_end(&double, &tmp.path().join("state"), &out);
    assert_eq!(
        p.try_status().and_then(|s| s.code()),
        Some(0),
        "{}\n{:#?}",
        p.stderr(),
        double.statements()
    );
    let live = lines_without_seq(&std::fs::read_to_string(&out).unwrap_or_default());
    let mut want = replayed_as(ENUM_SET, "binlog.000001");
    want.extend(replayed_as(SECOND, "binlog.000002"));
    assert_eq!(live, want);
}

/// The rows of ENUM_SET's transaction `uuid:4` are events 10 to 14 after its
/// FORMAT_DESCRIPTION (GTID, BEGIN, TABLE_MAP, UPDATE_ROWS, XID): 13 sent ends the first dump
/// after its TABLE_MAP, inside the transaction.
const INSIDE_TXN_4: usize = 13;

fn run_with_faults(faults: mysql_double::Faults) -> (MysqlDouble, Proc, Vec<serde_json::Value>) {
    let opts = Options {
        row_metadata: "FULL".into(),
        faults,
        ..Options::default()
    };
    let double = MysqlDouble::start(Profile::Mysql80, vec![fixture(ENUM_SET)], opts);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let p = run_to_end(&double, &tmp.path().join("state"), &out);
    let rows = lines_without_seq(&std::fs::read_to_string(&out).unwrap_or_default());
    (double, p, rows)
}

fn reconnects_and_delivers_every_row_once(faults: mysql_double::Faults) -> MysqlDouble {
    let (double, mut p, rows) = run_with_faults(faults.clone());
    assert_eq!(
        p.try_status().and_then(|s| s.code()),
        Some(0),
        "{faults:?}: {}\n{:#?}",
        p.stderr(),
        double.statements()
    );
    assert_eq!(rows, replayed_as(ENUM_SET, "binlog.000001"), "{faults:?}");
    let stmts = double.statements();
    assert!(
        stmts.iter().any(|s| s.starts_with("FAULT")),
        "the fault fired: {stmts:?}"
    );
    let dumps: Vec<&String> = stmts
        .iter()
        .filter(|s| s.starts_with("COM_BINLOG_DUMP"))
        .collect();
    assert!(
        dumps.len() >= 2
            && dumps[1].starts_with("COM_BINLOG_DUMP_GTID")
            && dumps[1].ends_with(":1-3"),
        "the reconnect resumes after uuid:3 by GTID: {dumps:?}"
    );
    double
}

#[test]
fn a_connection_dropped_inside_a_transaction_is_resumed_without_loss_or_repeat() {
    reconnects_and_delivers_every_row_once(mysql_double::Faults {
        drop_after_events: Some(INSIDE_TXN_4),
        ..Default::default()
    });
}

#[test]
fn a_connection_dropped_inside_a_packet_is_resumed_without_loss_or_repeat() {
    reconnects_and_delivers_every_row_once(mysql_double::Faults {
        drop_after_events: Some(INSIDE_TXN_4),
        drop_mid_payload: true,
        ..Default::default()
    });
}

/// A source that stops sending, heartbeats included, is taken for dead after a silence and
/// reconnected (binsync asks for a heartbeat a second and waits two).
#[test]
fn a_stalled_stream_is_reconnected() {
    reconnects_and_delivers_every_row_once(mysql_double::Faults {
        stall_after_events: Some(INSIDE_TXN_4),
        ..Default::default()
    });
}

/// A server that sends nothing while it looks for the start position (MariaDB sends not even
/// heartbeats while it skips the transactions before a GTID start) is waited for, not taken
/// for dead: two periods of silence count only once the stream has passed its opening
/// events. Otherwise a scan longer than two periods would be cut, restarted at the
/// reconnect, and cut again, for ever.
#[test]
fn a_silent_scan_for_the_start_is_not_taken_for_a_dead_connection() {
    let opts = Options {
        row_metadata: "FULL".into(),
        faults: mysql_double::Faults {
            stall_at_start: Some(Duration::from_millis(1500)),
            ..Default::default()
        },
        ..Options::default()
    };
    let double = MysqlDouble::start(Profile::Mysql80, vec![fixture(ENUM_SET)], opts);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let state = tmp.path().join("state");
    // Silence is judged at 200 ms once the stream runs.
    let mut p = spawn_run(&double, &state, &out, "earliest", &["--heartbeat", "100ms"]);
    let st = p.wait_timeout(Duration::from_secs(60)).expect("run hung");
    let err = p.stderr();
    assert!(st.success(), "{err}");
    assert!(!err.contains("connection lost"), "{err}");
    let stmts = double.statements();
    assert!(
        stmts.iter().any(|s| s.starts_with("FAULT stall at start")),
        "{stmts:?}"
    );
    assert_eq!(double.dumps(), 1, "one dump, never cut: {stmts:?}");
    let rows = lines_without_seq(&std::fs::read_to_string(&out).unwrap_or_default());
    assert_eq!(rows, replayed_as(ENUM_SET, "binlog.000001"));
}

/// A 1236 whose cause is a purged binlog is a definite error that says so.
#[test]
fn error_1236_for_a_purged_file_stops_with_the_purge_named() {
    let (double, mut p, rows) = run_with_faults(mysql_double::Faults {
        dump_error: Some((1236, mysql_double::mysql_1236::FILE_NOT_FOUND.into())),
        ..Default::default()
    });
    let code = p.try_status().and_then(|s| s.code());
    let err = p.stderr();
    assert!(code.is_some_and(|c| c != 0), "{code:?} {err}");
    assert!(rows.is_empty());
    assert_eq!(double.dumps(), 1, "a definite error is not retried");
    let line = err
        .lines()
        .find(|l| l.starts_with("binsync: error:"))
        .unwrap_or_default();
    assert!(
        line.contains("purged") && line.contains(mysql_double::mysql_1236::FILE_NOT_FOUND),
        "{line}"
    );
}

/// `--start gtid:` naming transactions the source has not executed was accepted, checkpointed,
/// and then reported as purged: it is refused at start, naming the source's gtid_executed,
/// before any dump is asked for.
#[test]
fn a_start_gtid_beyond_the_sources_gtid_executed_is_refused() {
    let double = MysqlDouble::start(
        Profile::Mysql80,
        vec![fixture(ENUM_SET)],
        options_for(ENUM_SET),
    );
    let executed = double.gtid_executed();
    let (uuid, _) = executed.split_once(':').expect("a GTID set");
    let beyond = format!("{uuid}:1-1000");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let state = tmp.path().join("state");
    let mut p = spawn_run(&double, &state, &out, &format!("gtid:{beyond}"), &[]);
    let st = p.wait_timeout(Duration::from_secs(60)).expect("run hung");
    let err = p.stderr();
    assert!(!st.success(), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("binsync: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains(&format!("--start gtid:{beyond}"))
            && errors[0].contains(&format!("gtid_executed is {executed}"))
            && !errors[0].contains("purged"),
        "{}",
        errors[0]
    );
    assert_eq!(double.dumps(), 0, "refused before any dump");
    assert!(std::fs::read_to_string(&out).unwrap_or_default().is_empty());
}

/// A 1236 for another cause must not send the operator to restore purged binlogs or to
/// reset: each names its own way out, with the server's words, and is not retried.
#[test]
fn error_1236_for_other_causes_names_the_cause_not_a_purge() {
    for (msg, fix) in [
        (
            mysql_double::mysql_1236::EVENT_TOO_LARGE,
            "raise max_allowed_packet on the source",
        ),
        (
            mysql_double::mysql_1236::REPLICA_HAS_MORE_GTIDS,
            "point --source at a server that has them",
        ),
        (
            mysql_double::mysql_1236::PAST_END,
            "point --source at a server that has them",
        ),
        (
            mysql_double::mysql_1236::SAME_SERVER_ID,
            "another --server-id",
        ),
        (
            mysql_double::mysql_1236::BOGUS_DATA,
            "check the file with mysqlbinlog",
        ),
    ] {
        let (double, mut p, rows) = run_with_faults(mysql_double::Faults {
            dump_error: Some((1236, msg.into())),
            ..Default::default()
        });
        let code = p.try_status().and_then(|s| s.code());
        assert!(code.is_some_and(|c| c != 0), "{msg}: {code:?}");
        assert!(rows.is_empty());
        assert_eq!(double.dumps(), 1, "{msg}: a definite error is not retried");
        let err = p.stderr();
        let line = err
            .lines()
            .find(|l| l.starts_with("binsync: error:"))
            .unwrap_or_default();
        assert!(
            !line.contains("purged") && line.contains(msg) && line.contains(fix),
            "{msg}: {line}"
        );
    }
}

/// Refusals at connect time stop binsync at once with the server's reason (no retries).
#[test]
fn refused_logins_stop_at_once_with_the_reason() {
    let cases: Vec<(&str, Profile, Options, &str)> = vec![
        (
            "wrong password",
            Profile::Mysql80,
            Options {
                password: "other".into(),
                ..Options::default()
            },
            "Access denied for user 'cdc'",
        ),
        (
            "native password on 8.4",
            Profile::Mysql84,
            Options {
                plugin: Plugin::MysqlNative,
                ..Options::default()
            },
            "ALTER USER `cdc` IDENTIFIED WITH caching_sha2_password",
        ),
        (
            "a public key that is no PEM",
            Profile::Mysql84,
            Options {
                bad_public_key: true,
                ..Options::default()
            },
            "sent no usable RSA public key",
        ),
        (
            "require_secure_transport",
            Profile::Mysql84,
            Options {
                require_secure_transport: true,
                ..Options::default()
            },
            "insecure transport are prohibited",
        ),
    ];
    for (what, profile, opts, reason) in cases {
        let double = MysqlDouble::start(profile, vec![fixture(ENUM_SET)], opts);
        let state = tempfile::tempdir().unwrap();
        // binsync's password is the account's; the double's account may want another.
        let url = format!("mysql://cdc:cdc-pw@127.0.0.1:{}", double.port());
        let mut p = Proc::spawn(
            &[
                "run",
                "--source",
                &url,
                "--server-id",
                "4242",
                "--sink",
                "stdout",
                "--state-dir",
                state.path().join("s").to_str().unwrap(),
                "--connect-timeout",
                "20s",
            ],
            &[],
        );
        let st = p
            .wait_timeout(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("{what}: still retrying after 15s: {}", p.stderr()));
        assert!(!st.success(), "{what}");
        let err = p.stderr();
        let line = err
            .lines()
            .find(|l| l.starts_with("binsync: error:"))
            .unwrap_or_default();
        assert!(line.contains(reason), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        // binsync's own client logs in first and stops at the refusal; under --ssl-mode
        // preferred (the default) a driver login may take a second connection (TLS asked,
        // then in clear). A retry would make more.
        assert!(
            double.connections() <= 2,
            "{what}: a refusal is not retried"
        );
    }
}

/// After a reconnect the source has another server_uuid (a failover to another server of
/// the topology, with the same GTIDs): binsync resumes by GTID and delivers every row once.
#[test]
fn a_reconnect_to_a_server_with_another_uuid_resumes_by_gtid() {
    let double = reconnects_and_delivers_every_row_once(mysql_double::Faults {
        drop_after_events: Some(INSIDE_TXN_4),
        server_uuid_after_first_dump: Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into()),
        ..Default::default()
    });
    let stmts = double.statements();
    let fault = stmts.iter().position(|s| s.starts_with("FAULT")).unwrap();
    assert!(
        stmts[fault..].iter().any(|s| s == "SELECT @@server_uuid"),
        "binsync read the new identity after the reconnect: {stmts:?}"
    );
}

/// An event larger than the source's max_allowed_packet (64 MiB, MySQL's default): a row
/// image of a large BLOB updated with binlog_row_image=FULL is one. A replica reads it (its
/// replica_max_allowed_packet is 1 GiB); binsync must deliver every row, or stop saying what
/// to change, never retry forever.
#[test]
fn an_event_above_max_allowed_packet_is_read_or_named() {
    let (double, mut p, rows) = run_with_faults(mysql_double::Faults {
        // Inside transaction uuid:4, after its BEGIN: 65 MiB.
        large_event: Some((12, 65 << 20)),
        ..Default::default()
    });
    let code = p.try_status().and_then(|s| s.code());
    let err = p.stderr();
    if code == Some(0) {
        // The inserted event moves the offsets after it; everything else is the file's.
        let strip = |mut rows: Vec<serde_json::Value>| {
            for r in rows.iter_mut() {
                r.as_object_mut().unwrap().remove("offset");
            }
            rows
        };
        assert_eq!(strip(rows), strip(replayed_as(ENUM_SET, "binlog.000001")));
        assert!(
            double.dumps() <= 1,
            "read in one go, {} dumps",
            double.dumps()
        );
    } else {
        let line = err
            .lines()
            .find(|l| l.starts_with("binsync: error:"))
            .unwrap_or_default();
        assert!(line.contains("max_allowed_packet"), "{code:?}: {err}");
        assert!(double.dumps() <= 2, "retried {} times", double.dumps());
    }
}

/// By GTID the dump begins at the newest file whose PREVIOUS_GTIDS the request holds
/// (find_first_log_not_in_gtid_set), not at the first file.
#[tokio::test]
async fn gtid_dump_begins_at_the_newest_file_the_request_covers() {
    let double = MysqlDouble::start(
        Profile::Mysql80,
        vec![fixture(ENUM_SET), fixture("mysql_type_bit.000001")],
        Options::default(),
    );
    let first: mysql_common::packets::Sid<'static> =
        format!("{}:1-5", double.server_uuid()).parse().unwrap();
    // mysql_type_bit.000001 was written by another server; its PREVIOUS_GTIDS hold 1-2.
    let second: mysql_common::packets::Sid<'static> =
        "fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a:1-2".parse().unwrap();
    let req = mysql_async::BinlogStreamRequest::new(77)
        .with_gtid()
        .with_gtid_set(vec![first, second]);
    let got = read_dump(&double, &[], req, |got| {
        got.iter().any(|e| e.gtid.is_some())
    })
    .await;
    // The fake ROTATE comes before any FORMAT_DESCRIPTION says whether events carry a
    // checksum, so a reader sees its CRC32 as part of the name.
    let to = got[0].rotate_to.clone().unwrap_or_default();
    assert!(to.starts_with("binlog.000002"), "{got:?}");
    let gtids: Vec<&str> = got.iter().filter_map(|e| e.gtid.as_deref()).collect();
    assert_eq!(gtids, ["fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a:3"], "{got:?}");
}

/// A binlog written without checksums (binlog_checksum=NONE, here a 5.6 file without GTIDs):
/// the double's own events (fake ROTATE, heartbeats, the FORMAT_DESCRIPTION it rewrites)
/// carry none either, and binsync streams it by file position.
///
/// The file creates `test.t1` (`a int, b char(50)`, no key) before its rows; the server
/// describes it as it is now, with another shape (a key, `varchar(10)`). The schema history
/// leaves a table created after the start to that CREATE: the rows come out as replay
/// reads them from the file alone, keyless, after the CREATEs' `ddl` lines.
#[test]
fn mysql80_run_over_a_binlog_without_checksums() {
    const NO_CRC: &str = "ver_trunk_row_v2.001";
    let opts = Options {
        tables: vec![TableDesc {
            db: "test".into(),
            name: "t1".into(),
            columns: vec![
                ColumnDesc::new("a", "int", true),
                ColumnDesc::new("b", "varchar(10)", false),
            ],
        }],
        ..Options::default()
    };
    let double = MysqlDouble::start(Profile::Mysql80, vec![fixture(NO_CRC)], opts);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let mut p = run_to_end(&double, &tmp.path().join("state"), &out);
    assert_eq!(
        p.try_status().and_then(|s| s.code()),
        Some(0),
        "{}\n{:#?}",
        p.stderr(),
        double.statements()
    );
    let live = lines_without_seq(&std::fs::read_to_string(&out).unwrap_or_default());
    let want = replayed_as(NO_CRC, "binlog.000001");
    let ops: Vec<&str> = want.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops[..4], ["ddl", "ddl", "ddl", "insert"], "{want:#?}");
    assert!(want[3]["keyless"].as_bool().unwrap(), "{want:#?}");
    assert_eq!(live, want);
}

/// TAGGED with `ALTER TABLE test.orders COMMENT ...` logged before its rows (a transaction of
/// its own, GTID `uuid:14`), and the tables the server describes now.
fn tagged_after_an_alter() -> Options {
    Options {
        statement: Some((1, "test".into(), TAGGED_ALTER.into())),
        ..options_for(TAGGED)
    }
}

const TAGGED_ALTER: &str = "ALTER TABLE orders COMMENT 'the orders'";

/// What the rows of TAGGED must be when binsync knows `test.orders`: named and keyed as the
/// server describes it.
fn assert_orders_rows(live: &[serde_json::Value]) {
    let rows: Vec<&serde_json::Value> = live.iter().filter(|r| r["op"] != "ddl").collect();
    assert!(!rows.is_empty(), "{live:#?}");
    for r in &rows {
        assert_eq!(r["table"], "orders", "{r}");
        let image = r.get("after").or_else(|| r.get("before")).unwrap();
        let mut names: Vec<&String> = image.as_object().unwrap().keys().collect();
        names.sort();
        assert_eq!(names, ["customer", "id", "total"], "{r}");
        assert_eq!(r["id"], serde_json::json!({ "id": image["id"] }), "{r}");
    }
}

/// A DDL statement on a captured table between the start and where binsync seeds its schema
/// history (the definitions it reads then are not those of the start): the seed's scan of the
/// binlog (`SHOW BINLOG EVENTS`) finds it, so the table's definition is unknown from the start
/// up to that statement and the one read at the seed holds after it. TAGGED (minimal
/// metadata) gets an ALTER of `test.orders` before its rows; from the earliest event, the rows
/// after it are named and keyed as the server describes `orders` now.
#[test]
fn a_ddl_between_the_start_and_the_seed_defers_to_the_definition_read_at_the_seed() {
    let double = MysqlDouble::start(
        Profile::Mysql84,
        vec![fixture(TAGGED)],
        tagged_after_an_alter(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let mut p = run_to_end(&double, &tmp.path().join("state"), &out);
    assert_eq!(
        p.try_status().and_then(|s| s.code()),
        Some(0),
        "{}\n{:#?}",
        p.stderr(),
        double.statements()
    );
    let stmts = double.statements();
    assert!(
        stmts
            .iter()
            .any(|s| s == "SHOW BINLOG EVENTS IN 'binlog.000001' FROM 4 LIMIT 20000"),
        "the seed scans from the start: {stmts:?}"
    );
    let live = lines_without_seq(&std::fs::read_to_string(&out).unwrap_or_default());
    // The ALTER dropped nothing; if it is delivered, it is as a `ddl` with the definition it
    // left (the one read at the seed).
    for r in live.iter().filter(|r| r["op"] != "insert") {
        assert_eq!(r["op"], "ddl", "{live:#?}");
        assert_eq!(r["statement"], TAGGED_ALTER, "{live:#?}");
        assert_eq!(r["key"], serde_json::json!(["id"]), "{live:#?}");
    }
    assert_orders_rows(&live);
}

/// `--start gtid:SET` whose set holds the ALTER's transaction: the server never sends that
/// statement (nor anything before the set's end), so the definition read at the seed holds
/// from the start; the rows are named and keyed by it.
#[test]
fn a_gtid_start_after_a_ddl_decodes_with_the_definition_at_the_start() {
    let double = MysqlDouble::start(
        Profile::Mysql84,
        vec![fixture(TAGGED)],
        tagged_after_an_alter(),
    );
    let uuid = double.server_uuid();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let start = format!("gtid:{uuid}:1-14:mytag:1-2");
    let mut p = spawn_run(&double, &tmp.path().join("state"), &out, &start, &[]);
    p.wait_timeout(Duration::from_secs(60)).expect("run hung");
    assert_eq!(
        p.try_status().and_then(|s| s.code()),
        Some(0),
        "{}\n{:#?}",
        p.stderr(),
        double.statements()
    );
    let live = lines_without_seq(&std::fs::read_to_string(&out).unwrap_or_default());
    assert!(live.iter().all(|r| r["op"] != "ddl"), "{live:#?}");
    assert_orders_rows(&live);
}

/// `--start latest` on MySQL with GTIDs (binsync streams by the status row's GTID set): a DDL
/// statement anywhere before that point is not between the start and the seed. The seed
/// reads the binlog from the start on (here: nothing), and `test.orders` is known from the
/// start, not unknown until an ALTER the stream will never see.
#[test]
fn a_latest_start_after_a_ddl_keeps_the_tables_known() {
    let double = MysqlDouble::start(
        Profile::Mysql84,
        vec![fixture(TAGGED)],
        tagged_after_an_alter(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let (code, err) = run_until_end(
        &double,
        &tmp.path().join("state"),
        &tmp.path().join("out.jsonl"),
        "latest",
        Duration::from_secs(60),
    )
    .expect("--start latest ends");
    assert_eq!(code, 0, "{err}");
    let scans: Vec<String> = double
        .statements()
        .into_iter()
        .filter(|s| s.starts_with("SHOW BINLOG EVENTS") && s.ends_with("LIMIT 20000"))
        .collect();
    assert!(
        !scans.iter().any(|s| s.contains(" FROM 4 ")),
        "the seed scans the binlog before the start: {scans:?}"
    );
    assert!(
        err.contains("unknown_at_start=0"),
        "test.orders is known at the start: {err}"
    );
}

/// MySQL `--start file:NAME:POS`: binsync follows the file from its head (to learn its GTID
/// state) and emits from POS. The 5.6 checksum-less file creates `test.t1` (keyless) before
/// POS, its rows come after: they are named as that CREATE says.
#[test]
fn a_file_start_inside_a_file_knows_the_tables_created_before_it() {
    const NO_CRC: &str = "ver_trunk_row_v2.001";
    // After the three CREATEs (their events end at 457), before the first transaction.
    const AT: u64 = 457;
    let opts = Options {
        tables: vec![TableDesc {
            db: "test".into(),
            name: "t1".into(),
            columns: vec![
                ColumnDesc::new("a", "int", false),
                ColumnDesc::new("b", "char(50)", false),
            ],
        }],
        ..Options::default()
    };
    let double = MysqlDouble::start(Profile::Mysql80, vec![fixture(NO_CRC)], opts);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let start = format!("file:binlog.000001:{AT}");
    let mut p = spawn_run(&double, &tmp.path().join("state"), &out, &start, &[]);
    p.wait_timeout(Duration::from_secs(60)).expect("run hung");
    assert_eq!(
        p.try_status().and_then(|s| s.code()),
        Some(0),
        "{}\n{:#?}",
        p.stderr(),
        double.statements()
    );
    let live = lines_without_seq(&std::fs::read_to_string(&out).unwrap_or_default());
    let want: Vec<serde_json::Value> = replayed_as(NO_CRC, "binlog.000001")
        .into_iter()
        .filter(|r| r["offset"].as_u64().unwrap() > AT)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(live, want);
}

/// `binsync status --source` after a run on 8.4 and 9.x: the checkpoint and the lag.
fn status_with_source_after_a_run(profile: Profile) {
    let double = MysqlDouble::start(profile, vec![fixture(TAGGED)], options_for(TAGGED));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let state = tmp.path().join("state");
    let mut p = Proc::spawn(
        &[
            "run",
            "--source",
            &double.url(),
            "--server-id",
            "4242",
            "--state-dir",
            state.to_str().unwrap(),
            "--sink",
            &format!("file:{}", out.display()),
        ],
        &[],
    );
    common::wait_until(Duration::from_secs(30), "the fixture's row", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.lines().count() == 1) || !p.is_running()
    });
    p.sigterm();
    let st = p.wait_timeout(Duration::from_secs(30)).expect("stop");
    assert!(st.success(), "{}", p.stderr());
    let mut s = Proc::spawn(
        &[
            "status",
            "--state-dir",
            state.to_str().unwrap(),
            "--source",
            &double.url(),
        ],
        &[],
    );
    let st = s
        .wait_timeout(Duration::from_secs(30))
        .expect("status hung");
    assert!(
        st.success(),
        "status on {profile:?}: {}{}",
        s.stdout(),
        s.stderr()
    );
}

#[test]
fn mysql84_status_with_source_after_a_run() {
    status_with_source_after_a_run(Profile::Mysql84);
}

#[test]
fn mysql9x_status_with_source_after_a_run() {
    status_with_source_after_a_run(Profile::Mysql9x);
}

/// A second binsync (its own state dir) with the `--server-id` of a running one is refused
/// before it registers: MySQL would keep one registration per id and drop the first run's
/// dump. The replicas are listed with `SHOW REPLICAS`, the only name 8.4 and 9.x know.
fn a_second_run_with_the_same_server_id_is_refused_at_start(profile: Profile) {
    let double = MysqlDouble::start(profile, vec![fixture(TAGGED)], options_for(TAGGED));
    let tmp = tempfile::tempdir().unwrap();
    let spawn = |name: &str| {
        Proc::spawn(
            &[
                "run",
                "--source",
                &double.url(),
                "--server-id",
                "4242",
                "--state-dir",
                tmp.path().join(name).to_str().unwrap(),
                "--sink",
                &format!(
                    "file:{}",
                    tmp.path().join(name).with_extension("jsonl").display()
                ),
            ],
            &[],
        )
    };
    let mut first = spawn("a");
    common::wait_until(Duration::from_secs(30), "the first run streams", || {
        first.stderr().contains("streaming") || !first.is_running()
    });
    assert!(first.is_running(), "{profile:?}: {}", first.stderr());

    let mut second = spawn("b");
    let st = second
        .wait_timeout(Duration::from_secs(30))
        .expect("the second run ends");
    assert!(!st.success(), "{profile:?}");
    let err = second.stderr();
    let line = err
        .lines()
        .find(|l| l.starts_with("binsync: error:"))
        .unwrap_or_default();
    assert!(
        line.contains("server id 4242 is already used by another binsync run")
            && line.contains("--server-id"),
        "{profile:?}: {err}"
    );
    assert_eq!(
        double.dumps(),
        1,
        "{profile:?}: the second run asked for no dump"
    );
    assert!(first.is_running(), "{profile:?}: the first run goes on");
    assert!(
        double.statements().iter().any(|s| s == "SHOW REPLICAS"),
        "{profile:?}"
    );
    assert!(
        double.unknown_statements().is_empty(),
        "{profile:?}: the double did not know: {:?}",
        double.unknown_statements()
    );
    first.sigterm();
    assert!(first.wait_timeout(Duration::from_secs(30)).is_some());
}

#[test]
fn mysql80_a_second_run_with_the_same_server_id_is_refused_at_start() {
    a_second_run_with_the_same_server_id_is_refused_at_start(Profile::Mysql80);
}

#[test]
fn mysql84_a_second_run_with_the_same_server_id_is_refused_at_start() {
    a_second_run_with_the_same_server_id_is_refused_at_start(Profile::Mysql84);
}

#[test]
fn mysql9x_a_second_run_with_the_same_server_id_is_refused_at_start() {
    a_second_run_with_the_same_server_id_is_refused_at_start(Profile::Mysql9x);
}

/// MySQL's default `gtid_mode=OFF`: the files hold ANONYMOUS_GTID events.
const ANONYMOUS: &str = "binlog_transaction_with_anonymous_GTID.000001";

/// A run with `--start START --exit-at-end` into `out`; None if it is still running after
/// `wait` (then it is killed).
fn run_until_end(
    double: &MysqlDouble,
    state: &std::path::Path,
    out: &std::path::Path,
    start: &str,
    wait: Duration,
) -> Option<(i32, String)> {
    let mut p = spawn_run(double, state, out, start, &[]);
    match p.wait_timeout(wait) {
        Some(status) => Some((status.code().unwrap_or(-1), p.stderr())),
        None => {
            p.kill9();
            None
        }
    }
}

/// The head of a binlog file (its FORMAT_DESCRIPTION and PREVIOUS_GTIDS events): what a server
/// writes into a new file after a restart or FLUSH LOGS, before any transaction.
fn empty_binlog_like(file: &str, dir: &std::path::Path) -> PathBuf {
    let bytes = std::fs::read(fixture(file)).unwrap();
    let mut end = 4;
    while end + 19 <= bytes.len() {
        let kind = bytes[end + 4];
        let len = u32::from_le_bytes(bytes[end + 9..end + 13].try_into().unwrap()) as usize;
        // FORMAT_DESCRIPTION (15), PREVIOUS_GTIDS (35).
        if kind != 15 && kind != 35 {
            break;
        }
        end += len;
    }
    assert!(end > 4 && end < bytes.len(), "{file} has a header");
    let path = dir.join("empty.000002");
    std::fs::write(&path, &bytes[..end]).unwrap();
    path
}

/// Finding 5: without GTIDs, `--exit-at-end` on an idle source whose newest binlog holds no
/// transaction yet (after a restart or FLUSH LOGS) must return once it has read that far,
/// not wait forever for a transaction to move its position there.
#[test]
fn exit_at_end_without_gtids_returns_when_the_newest_binlog_is_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = empty_binlog_like(ANONYMOUS, tmp.path());
    let double = MysqlDouble::start(
        Profile::Mysql80,
        vec![fixture(ANONYMOUS), empty],
        Options {
            gtid_mode_off: true,
            ..Options::default()
        },
    );
    let out = tmp.path().join("out.jsonl");
    let run = run_until_end(
        &double,
        &tmp.path().join("state"),
        &out,
        "earliest",
        Duration::from_secs(30),
    );
    let (code, err) = run.expect("--exit-at-end returns on an idle source without GTIDs");
    assert_eq!(code, 0, "{err}");
    let stmts = double.statements();
    assert!(
        stmts
            .iter()
            .any(|s| s.starts_with("COM_BINLOG_DUMP file=binlog.000001")),
        "streamed by file: {stmts:?}"
    );
}

/// Finding 6: without GTIDs a position is a file and offset of one server. A reconnect that
/// reaches another server (a VIP or DNS failover) must stop with a definite error, not ask the
/// new server for the old one's offset.
#[test]
fn a_reconnect_to_another_server_without_gtids_stops_before_streaming() {
    let tmp = tempfile::tempdir().unwrap();
    let double = MysqlDouble::start(
        Profile::Mysql80,
        vec![fixture(ANONYMOUS)],
        Options {
            gtid_mode_off: true,
            faults: mysql_double::Faults {
                drop_after_events: Some(5),
                server_uuid_after_first_dump: Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into()),
                ..Default::default()
            },
            ..Options::default()
        },
    );
    let out = tmp.path().join("out.jsonl");
    let (code, err) = run_until_end(
        &double,
        &tmp.path().join("state"),
        &out,
        "earliest",
        Duration::from_secs(60),
    )
    .expect("the run ends");
    assert_ne!(code, 0, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("binsync: error:"))
        .unwrap_or_default();
    assert!(
        line.contains("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
            && line.contains("file positions only mean something on the server that wrote them"),
        "{line}"
    );
    assert_eq!(double.dumps(), 1, "no dump was asked of the other server");
}

/// Finding 9: MySQL fills SHOW BINARY LOG STATUS in two steps, so a transaction committing
/// meanwhile is after the row's position yet missing from its Executed_Gtid_Set. `--start
/// latest` must take one consistent state: what the first run does not deliver, a resumed
/// run must not deliver later either (before: the first run started at the file position
/// past the transaction, and the resume by GTID then sent it, late and out of order).
#[test]
fn start_latest_takes_one_consistent_state_from_a_racing_status_row() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        row_metadata: "FULL".into(),
        faults: mysql_double::Faults {
            status_gtid_behind: true,
            ..Default::default()
        },
        ..Options::default()
    };
    let double = MysqlDouble::start(Profile::Mysql80, vec![fixture(ENUM_SET)], opts);
    let state = tmp.path().join("state");
    let first = tmp.path().join("first.jsonl");
    let (code, err) = run_until_end(&double, &state, &first, "latest", Duration::from_secs(60))
        .expect("the first run ends");
    assert_eq!(code, 0, "{err}");
    let second = tmp.path().join("second.jsonl");
    let (code, err) = run_until_end(&double, &state, &second, "latest", Duration::from_secs(60))
        .expect("the resumed run ends");
    assert_eq!(code, 0, "{err}");
    let first = lines_without_seq(&std::fs::read_to_string(&first).unwrap_or_default());
    let second = lines_without_seq(&std::fs::read_to_string(&second).unwrap_or_default());
    assert!(second.is_empty(), "the resume delivered more: {second:#?}");
    // The set is the state taken: the transaction it lacks (uuid:5, the last) comes at once.
    let last: Vec<_> = replayed_as(ENUM_SET, "binlog.000001")
        .into_iter()
        .filter(|r| r["gtid"].as_str().is_some_and(|g| g.ends_with(":5")))
        .collect();
    assert!(!last.is_empty());
    assert_eq!(first, last);
}

/// Finding 4's pre-check: a checkpoint that lacks transactions the source has purged is
/// reported as a purge before any dump is asked for, and `check --state-dir` says so too.
#[test]
fn a_checkpoint_behind_gtid_purged_is_named_before_the_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let out = tmp.path().join("out.jsonl");
    let first = MysqlDouble::start(
        Profile::Mysql80,
        vec![fixture(ENUM_SET)],
        options_for(ENUM_SET),
    );
    let (code, err) = run_until_end(&first, &state, &out, "earliest", Duration::from_secs(60))
        .expect("the first run ends");
    assert_eq!(code, 0, "{err}");
    drop(first);
    // The same server, which has meanwhile purged transactions of another source UUID that
    // the checkpoint never saw.
    let purged = MysqlDouble::start(
        Profile::Mysql80,
        vec![fixture(ENUM_SET)],
        Options {
            extra_purged: Some(([0x11; 16], 7)),
            ..options_for(ENUM_SET)
        },
    );
    let (code, err) = run_until_end(&purged, &state, &out, "earliest", Duration::from_secs(60))
        .expect("the resumed run ends");
    assert_ne!(code, 0, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("binsync: error:"))
        .unwrap_or_default();
    assert!(
        line.contains("purged") && line.contains("11111111-1111-1111-1111-111111111111:1-7"),
        "{line}"
    );
    assert_eq!(purged.dumps(), 0, "found before asking for a dump");
    let mut check = Proc::spawn(
        &[
            "check",
            "--source",
            &purged.url(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[],
    );
    let status = check
        .wait_timeout(Duration::from_secs(60))
        .expect("check ends");
    assert!(!status.success());
    let text = format!("{}{}", check.stdout(), check.stderr());
    assert!(text.contains("purged"), "{text}");
}

/// `binsync check` on an account whose privileges come from a MySQL 8 role (finding 11): with
/// the role active at login they count; granted but inactive, check fails and says how to
/// activate it.
#[test]
fn check_counts_privileges_granted_through_an_active_role() {
    for active in [true, false] {
        let double = MysqlDouble::start(
            Profile::Mysql84,
            vec![fixture(ENUM_SET)],
            Options {
                grants: vec!["GRANT USAGE ON *.* TO `cdc`@`%`".into()],
                role: Some((
                    "SELECT, RELOAD, REPLICATION SLAVE, REPLICATION CLIENT".into(),
                    active,
                )),
                ..options_for(ENUM_SET)
            },
        );
        let mut p = Proc::spawn(&["check", "--source", &double.url()], &[]);
        let st = p.wait_timeout(Duration::from_secs(30)).expect("check hung");
        let out = p.stdout();
        let line = |name: &str| {
            out.lines()
                .find(|l| l.contains(name))
                .unwrap_or_default()
                .to_string()
        };
        for name in ["REPLICATION SLAVE", "REPLICATION CLIENT"] {
            if active {
                assert!(line(name).starts_with("ok"), "{name}:\n{out}");
            } else {
                assert!(!line(name).starts_with("ok"), "{name}:\n{out}");
            }
        }
        assert_eq!(st.success(), active, "{out}");
        if !active {
            assert!(
                out.contains("`binsync_role`@`%` is granted but not active at login")
                    && out.contains("SET DEFAULT ROLE ALL TO 'cdc'@'%'"),
                "{out}"
            );
        }
    }
}

/// The events of `file` the double counts for its faults (all but FORMAT_DESCRIPTION) before
/// the first rows event: a drop after that many lands inside a transaction, before its rows.
fn events_before_first_rows(file: &str) -> usize {
    let bytes = std::fs::read(fixture(file)).unwrap();
    let (mut at, mut n) = (4, 0);
    while at + 19 <= bytes.len() {
        let kind = bytes[at + 4];
        // WRITE/UPDATE/DELETE_ROWS v1 (23-25) and v2 (30-32).
        if matches!(kind, 23..=25 | 30..=32) {
            return n;
        }
        if kind != 15 {
            n += 1;
        }
        at += u32::from_le_bytes(bytes[at + 9..at + 13].try_into().unwrap()) as usize;
    }
    panic!("{file} has no rows event");
}

/// The rows `binsync replay` reads from the profile's fixture, as served.
fn fixture_rows(double: &MysqlDouble, file: &str) -> Vec<serde_json::Value> {
    replayed_as(file, &double.file_name(0))
}

/// Acceptance 1 of issue 10 on one profile: `--start latest`, `--start gtid:SET`, kill -9 and
/// resume, and a connection dropped inside a transaction, each delivering exactly the rows
/// replay reads (a row delivered twice around the kill carries the same seq, so a receiver
/// drops the repeat).
fn live_path_on(profile: Profile, file: &str, all_but_last: &str, last_gtid_suffix: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };

    // --start latest: nothing before it.
    let double = MysqlDouble::start(profile, vec![fixture(file)], options_for(file));
    let want = fixture_rows(&double, file);
    let out = tmp.path().join("latest.jsonl");
    let (code, err) = run_until_end(
        &double,
        &tmp.path().join("latest"),
        &out,
        "latest",
        Duration::from_secs(60),
    )
    .expect("--start latest ends");
    assert_eq!(code, 0, "{profile:?}: {err}");
    assert!(read(&out).is_empty(), "{profile:?}");

    // --start gtid:SET: exactly what the set lacks.
    let out = tmp.path().join("gtid.jsonl");
    let start = format!("gtid:{all_but_last}");
    let (code, err) = run_until_end(
        &double,
        &tmp.path().join("gtid"),
        &out,
        &start,
        Duration::from_secs(60),
    )
    .expect("--start gtid: ends");
    assert_eq!(code, 0, "{profile:?}: {err}");
    let last: Vec<_> = want
        .iter()
        .filter(|r| {
            r["gtid"]
                .as_str()
                .is_some_and(|g| g.ends_with(last_gtid_suffix))
        })
        .cloned()
        .collect();
    assert!(!last.is_empty());
    assert_eq!(
        lines_without_seq(&std::fs::read_to_string(&out).unwrap()),
        last,
        "{profile:?}"
    );
    drop(double);

    // kill -9 while the stream is stalled inside the rows, then resume to the end.
    let before_rows = events_before_first_rows(file);
    let double = MysqlDouble::start(
        profile,
        vec![fixture(file)],
        Options {
            faults: mysql_double::Faults {
                stall_after_events: Some(before_rows + 1),
                ..Default::default()
            },
            ..options_for(file)
        },
    );
    let state = tmp.path().join("killed");
    let out = tmp.path().join("killed.jsonl");
    let url = double.url();
    let state_s = state.display().to_string();
    let sink = format!("file:{}", out.display());
    let mut p = Proc::spawn(
        &[
            "run",
            "--source",
            &url,
            "--server-id",
            "4242",
            "--state-dir",
            &state_s,
            "--start",
            "earliest",
            "--sink",
            &sink,
        ],
        &[],
    );
    common::wait_until(Duration::from_secs(30), "the stall", || {
        double.statements().iter().any(|s| s.starts_with("FAULT")) || !p.is_running()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(p.is_running(), "{profile:?}: {}", p.stderr());
    p.kill9();
    let (code, err) = run_until_end(&double, &state, &out, "earliest", Duration::from_secs(60))
        .expect("the resume ends");
    assert_eq!(code, 0, "{profile:?}: {err}");
    let mut by_seq = std::collections::BTreeMap::new();
    for row in read(&out) {
        let seq = row["seq"].as_u64().unwrap();
        let mut bare = row.clone();
        bare.as_object_mut().unwrap().remove("seq");
        if let Some(seen) = by_seq.insert(seq, bare.clone()) {
            assert_eq!(seen, bare, "{profile:?}: seq {seq} names two operations");
        }
    }
    assert_eq!(
        by_seq.into_values().collect::<Vec<_>>(),
        want,
        "{profile:?}: after kill -9"
    );
    drop(double);

    // A connection dropped inside the transaction: the reconnect resumes by GTID, no loss,
    // no repeat.
    let double = MysqlDouble::start(
        profile,
        vec![fixture(file)],
        Options {
            faults: mysql_double::Faults {
                drop_after_events: Some(before_rows),
                ..Default::default()
            },
            ..options_for(file)
        },
    );
    let out = tmp.path().join("dropped.jsonl");
    let (code, err) = run_until_end(
        &double,
        &tmp.path().join("dropped"),
        &out,
        "earliest",
        Duration::from_secs(60),
    )
    .expect("the run ends");
    assert_eq!(code, 0, "{profile:?}: {err}");
    assert_eq!(
        lines_without_seq(&std::fs::read_to_string(&out).unwrap()),
        want,
        "{profile:?}"
    );
    let stmts = double.statements();
    let dumps: Vec<&String> = stmts
        .iter()
        .filter(|s| s.starts_with("COM_BINLOG_DUMP"))
        .collect();
    assert!(
        stmts.iter().any(|s| s.starts_with("FAULT"))
            && dumps.len() >= 2
            && dumps[1].starts_with("COM_BINLOG_DUMP_GTID"),
        "{profile:?}: {dumps:?}"
    );
}

#[test]
fn mysql80_live_path_latest_gtid_kill9_and_drop() {
    live_path_on(
        Profile::Mysql80,
        ENUM_SET,
        "93e95066-a2f4-11ec-9b69-9657f0ae95e2:1-4",
        ":5",
    );
}

#[test]
fn mysql84_live_path_latest_tagged_gtid_kill9_and_drop() {
    live_path_on(
        Profile::Mysql84,
        TAGGED,
        "55778904-0299-11f1-b1b8-4ef0c4956feb:1-13:mytag:1-2",
        ":mytag:3",
    );
}

#[test]
fn mysql9x_live_path_latest_tagged_gtid_kill9_and_drop() {
    live_path_on(
        Profile::Mysql9x,
        TAGGED,
        "55778904-0299-11f1-b1b8-4ef0c4956feb:1-13:mytag:1-2",
        ":mytag:3",
    );
}

/// Liveness counts bytes, not whole events: an 8 MiB event that takes 12 s to arrive over a
/// slow link (no heartbeat comes meanwhile) is read, not taken for a dead connection after 5 s
/// and retried forever (the event is slow in every dump).
#[test]
fn a_big_event_arriving_slowly_is_not_taken_for_silence() {
    let (double, mut p, rows) = run_with_faults(mysql_double::Faults {
        large_event: Some((12, 8 << 20)),
        slow_large_events: Some(Duration::from_secs(12)),
        ..Default::default()
    });
    assert_eq!(
        p.try_status().and_then(|s| s.code()),
        Some(0),
        "{}",
        p.stderr()
    );
    // (Offsets after the inserted event are larger than in the fixture.)
    let without_offsets = |mut rows: Vec<serde_json::Value>| {
        for r in rows.iter_mut() {
            r.as_object_mut().unwrap().remove("offset");
        }
        rows
    };
    assert_eq!(
        without_offsets(rows),
        without_offsets(replayed_as(ENUM_SET, "binlog.000001"))
    );
    assert!(double
        .statements()
        .iter()
        .any(|s| s.starts_with("FAULT slow event")));
    assert_eq!(double.dumps(), 1, "no reconnect: {}", p.stderr());
}

/// A CA and a certificate for 127.0.0.1 signed by it (rcgen), as the double's TLS
/// configuration; the CA's PEM is written to `dir/ca.pem`.
fn double_tls(dir: &std::path::Path) -> (std::sync::Arc<rustls::ServerConfig>, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
    .unwrap();
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    (std::sync::Arc::new(config), ca_pem)
}

/// MySQL 8.4 with TLS, its caching_sha2 cache off: every connection of binsync's (the
/// driver's and the dump's) goes through TLS, and full authentication sends the password
/// inside it, without the server's RSA key.
#[test]
fn caching_sha2_full_authentication_inside_tls_needs_no_rsa() {
    let tmp = tempfile::tempdir().unwrap();
    let (tls, ca) = double_tls(tmp.path());
    let double = MysqlDouble::start(
        Profile::Mysql84,
        vec![fixture(TAGGED)],
        Options {
            tls: Some(tls),
            sha2_cache_off: true,
            ..options_for(TAGGED)
        },
    );
    let out = tmp.path().join("out.jsonl");
    let ca = ca.display().to_string();
    let mut p = run_to_end_with(
        &double,
        &tmp.path().join("state"),
        &out,
        &["--ssl-mode", "verify-identity", "--ssl-ca", &ca],
    );
    assert_eq!(
        p.try_status().and_then(|s| s.code()),
        Some(0),
        "{}",
        p.stderr()
    );
    let live = lines_without_seq(&std::fs::read_to_string(&out).unwrap_or_default());
    let want = replayed_as(TAGGED, &double.file_name(0));
    assert_eq!(live, want);
    let stmts = double.statements();
    let count = |prefix: &str| stmts.iter().filter(|s| s.starts_with(prefix)).count();
    assert!(count("COM_BINLOG_DUMP") > 0, "{stmts:?}");
    assert_eq!(
        count("TLS"),
        count("CONNECT"),
        "every connection: {stmts:?}"
    );
    assert_eq!(
        count("AUTH caching_sha2_password full (TLS)"),
        count("CONNECT"),
        "{stmts:?}"
    );
}

/// MySQL's require_secure_transport (error 3159 for plain TCP): met by the TLS the server
/// offers under the default `preferred`; under `disabled` one line names --ssl-mode.
#[test]
fn require_secure_transport_is_met_by_tls_and_error_3159_names_ssl_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let (tls, _) = double_tls(tmp.path());
    let double = MysqlDouble::start(
        Profile::Mysql84,
        vec![fixture(TAGGED)],
        Options {
            tls: Some(tls),
            require_secure_transport: true,
            ..options_for(TAGGED)
        },
    );
    let out = tmp.path().join("out.jsonl");
    let mut p = run_to_end(&double, &tmp.path().join("state"), &out);
    assert_eq!(
        p.try_status().and_then(|s| s.code()),
        Some(0),
        "{}",
        p.stderr()
    );
    let mut p = run_to_end_with(
        &double,
        &tmp.path().join("state2"),
        &tmp.path().join("out2.jsonl"),
        &["--ssl-mode", "disabled"],
    );
    assert_eq!(
        p.try_status().and_then(|s| s.code()),
        Some(1),
        "{}",
        p.stderr()
    );
    let err = p.stderr();
    let line = err
        .lines()
        .find(|l| l.starts_with("binsync: error:"))
        .unwrap_or_default();
    assert!(
        line.contains("requires TLS")
            && line.contains("3159")
            && line.contains("--ssl-mode required"),
        "{err}"
    );
}
