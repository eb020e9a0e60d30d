//! Scenario: an operator gives binsync several servers of one replication topology
//! (`--source` several times: a replica first, then another replica, then the primary). When
//! the server streamed from dies, binsync moves to the next one that holds its GTID position
//! and goes on with no gap and no duplicate, `seq` growing across the switch; a server that
//! does not hold the position is skipped with a line saying why, never streamed from.
//!
//! MariaDB: a primary under a writer, two replicas (process harness), the reference receiver
//! over HTTP. MySQL: two test doubles serving the same MySQL-written binlog (the same GTIDs),
//! the first one killed mid-stream.

mod binlog_fixtures;
mod common;
mod mysql_double;

use std::path::Path;
use std::time::Duration;

use common::workload::{
    assert_same_state, file_state, sink_seqs, source_state, Receiver, State, Writer,
};
use common::{sql_quote, wait_until, MariaDb, Proc, ServerOpts};
use mysql_double::{MysqlDouble, Options, Profile};

/// The GTID position of the checkpoint binsync published in `state`.
fn saved_gtid(state: &Path) -> Option<String> {
    let raw = std::fs::read(state.join("status.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    v["gtid"].as_str().map(str::to_string)
}

/// The server the checkpoint binsync published in `state` names.
fn saved_server(state: &Path) -> serde_json::Value {
    let raw = std::fs::read(state.join("status.json")).expect("status.json");
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    v["server"].clone()
}

/// The lines saying binsync switched servers.
fn switches(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("failover: switched"))
        .map(str::to_string)
        .collect()
}

/// `binsync run` from `sources` (in order) into `sink`, from the oldest binlog, no snapshot.
fn spawn_run(sources: &[String], state: &Path, sink: &str, extra: &[&str]) -> Proc {
    let state = state.display().to_string();
    let mut args: Vec<&str> = vec!["run"];
    for s in sources {
        args.extend(["--source", s.as_str()]);
    }
    args.extend([
        "--server-id",
        "7101",
        "--state-dir",
        &state,
        "--sink",
        sink,
        "--start",
        "earliest",
        "--snapshot",
        "never",
        "--connect-timeout",
        "20s",
    ]);
    args.extend(extra);
    Proc::spawn(&args, &[])
}

/// Stops `replica`'s replication and waits until `other` holds everything `replica` has:
/// whatever binsync read from `replica`, `other` holds too, so killing `replica` then makes
/// `other` the next server that holds binsync's position (not merely a lagging one).
fn freeze_behind(replica: &MariaDb, other: &MariaDb) {
    replica.sql("STOP SLAVE");
    let pos = replica.gtid_binlog_pos();
    let r = other.sql(&format!("SELECT MASTER_GTID_WAIT({}, 60)", sql_quote(&pos)));
    assert_eq!(
        r.trim(),
        "0",
        "replica on port {} reaches {pos}",
        other.port()
    );
}

/// The file sink holds the primary's tables, no operation twice, and `seq` grew by one at
/// every line, across the switches too. Returns the state, for the caller's own checks.
fn assert_file_is_the_primary(out: &Path, primary: &MariaDb) -> State {
    let (got, duplicates) = file_state(&out.display().to_string());
    assert_eq!(duplicates, 0, "no operation twice");
    let seqs = sink_seqs(out);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq grows by one across the switch"
    );
    assert_same_state(&source_state(primary), &got);
    got
}

/// Waits until binsync's checkpoint names everything `primary` has written, then stops it.
fn drain_and_stop(p: &mut Proc, state: &Path, primary: &MariaDb) {
    let want = primary.gtid_binlog_pos();
    wait_until(
        Duration::from_secs(120),
        "binsync checkpointed the primary's last transaction",
        || {
            assert!(p.is_running(), "binsync stopped: {}", p.stderr());
            saved_gtid(state).as_deref() == Some(want.as_str())
        },
    );
    p.sigterm();
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("binsync stops on SIGTERM");
    assert!(st.success(), "{}", p.stderr());
}

/// Replica 1 is killed: binsync goes on from replica 2; replica 2 is killed: it goes on from
/// the primary. The receiver ends with the primary's tables, every operation applied once,
/// in order.
#[test]
fn mariadb_fails_over_from_replica_to_replica_to_primary() {
    let primary = MariaDb::start(ServerOpts::default());
    let mut r1 = MariaDb::start_replica_of(&primary, ServerOpts::default());
    let mut r2 = MariaDb::start_replica_of(&primary, ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut recv = Receiver::start(&dir.path().join("receiver"), &[]);
    let writer = Writer::start(&primary, Duration::from_millis(2));
    let sources = [r1.url(), r2.url(), primary.url()];
    let mut p = spawn_run(&sources, &state, &recv.url(), &[]);
    wait_until(Duration::from_secs(60), "delivering from replica 1", || {
        assert!(p.is_running(), "binsync stopped: {}", p.stderr());
        saved_gtid(&state).is_some_and(|g| !g.is_empty()) && writer.committed() > 50
    });
    assert!(switches(&p.stderr()).is_empty(), "{}", p.stderr());

    freeze_behind(&r1, &r2);
    r1.kill9();
    wait_until(Duration::from_secs(60), "failover to replica 2", || {
        assert!(p.is_running(), "binsync stopped: {}", p.stderr());
        !switches(&p.stderr()).is_empty()
    });
    let first = switches(&p.stderr())[0].clone();
    assert!(
        first.contains(&format!(":{} ", r1.port()))
            && first.contains(&format!(":{} ", r2.port()))
            && first.contains("refused")
            && first.contains("resuming after gtid 0-"),
        "one line: from which server to which, why, at which position: {first}"
    );
    // It streams from replica 2 for a while.
    let at_switch = saved_gtid(&state);
    wait_until(Duration::from_secs(60), "delivering from replica 2", || {
        assert!(p.is_running(), "binsync stopped: {}", p.stderr());
        saved_gtid(&state) != at_switch
    });

    r2.kill9();
    wait_until(Duration::from_secs(60), "failover to the primary", || {
        assert!(p.is_running(), "binsync stopped: {}", p.stderr());
        switches(&p.stderr()).len() >= 2
    });
    let second = switches(&p.stderr())[1].clone();
    assert!(
        second.contains(&format!("to mysql://root@127.0.0.1:{} ", primary.port())),
        "{second}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let committed = writer.finish();
    drain_and_stop(&mut p, &state, &primary);
    assert_eq!(switches(&p.stderr()).len(), 2, "{}", p.stderr());
    // The checkpoint's file and offset are the primary's, and say so: a restart with the
    // same list (both replicas gone) resumes on the primary, whose checks of them pass.
    assert_eq!(
        saved_server(&state)["server_id"],
        primary.server_id(),
        "{}",
        p.stderr()
    );
    let mut again = spawn_run(&sources, &state, &recv.url(), &["--exit-at-end"]);
    let st = again
        .wait_timeout(Duration::from_secs(90))
        .expect("the restart ends");
    assert!(st.success(), "{}", again.stderr());
    assert!(
        again.stderr().contains("resuming from the checkpoint"),
        "{}",
        again.stderr()
    );

    let (got, stats) = recv.dump();
    eprintln!("writer committed {committed}; receiver stats: {stats}");
    assert_same_state(&source_state(&primary), &got);
    // An operation delivered twice, or older than one already applied to its entity, would
    // be stale at the receiver.
    assert_eq!(stats["ops_stale"], 0, "{stats}");
    assert_eq!(stats["ops_received"], stats["ops_applied"], "{stats}");
}

/// Between replica 1 and the primary stand a server with a history of its own (same tables,
/// other transactions) and a replica binsync's password is wrong for: when replica 1 dies
/// each is skipped with a line saying why, and binsync goes on from the primary. The file sink shows every `seq` once, growing, without a gap.
#[test]
fn a_server_without_the_position_is_skipped_never_streamed_from() {
    let primary = MariaDb::start(ServerOpts::default());
    let mut r1 = MariaDb::start_replica_of(&primary, ServerOpts::default());
    let r2 = MariaDb::start_replica_of(&primary, ServerOpts::default());
    let stranger = MariaDb::start(ServerOpts::default());
    stranger.sql(common::workload::SCHEMA);
    stranger.sql("INSERT INTO t.items VALUES (1, 1, 'stranger'), (2, 2, 'stranger')");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = dir.path().join("out.jsonl");
    let sink = format!("file:{}", out.display());
    let writer = Writer::start(&primary, Duration::from_millis(2));
    // Replica 2 holds the position, but binsync's password there is wrong.
    let sources = [
        r1.url(),
        stranger.url(),
        r2.url_as("root", "not-the-password"),
        primary.url(),
    ];
    let mut p = spawn_run(&sources, &state, &sink, &[]);
    wait_until(Duration::from_secs(60), "delivering from replica 1", || {
        assert!(p.is_running(), "binsync stopped: {}", p.stderr());
        saved_gtid(&state).is_some_and(|g| !g.is_empty()) && writer.committed() > 50
    });
    r1.kill9();
    wait_until(Duration::from_secs(60), "failover", || {
        assert!(p.is_running(), "binsync stopped: {}", p.stderr());
        !switches(&p.stderr()).is_empty()
    });
    let err = p.stderr();
    eprintln!("{err}");
    let switched = switches(&err);
    assert!(
        switched[0].contains(&format!("to mysql://root@127.0.0.1:{} ", primary.port())),
        "{err}"
    );
    let skipped = err
        .lines()
        .find(|l| l.contains("cannot take over") && l.contains(&format!(":{}", stranger.port())))
        .unwrap_or_else(|| panic!("a line names the skipped server: {err}"));
    assert!(
        skipped.contains("lacks") && skipped.contains("not streamed from"),
        "it says why: {skipped}"
    );
    let refused = err
        .lines()
        .find(|l| l.contains("cannot take over") && l.contains(&format!(":{}", r2.port())))
        .unwrap_or_else(|| panic!("a line names the server that refused binsync: {err}"));
    assert!(
        refused.contains(" ERROR ") && refused.contains("check the user and the password"),
        "a definite failure is an error, naming the fix: {refused}"
    );
    std::thread::sleep(Duration::from_millis(500));
    writer.finish();
    drain_and_stop(&mut p, &state, &primary);

    let got = assert_file_is_the_primary(&out, &primary);
    assert!(
        !got.values().any(|v| v["note"] == "stranger"),
        "nothing of the stranger's history"
    );
}

/// A primary and one replica under a writer on the primary; binsync reads the replica first
/// (`--source` replica, primary) into a file sink, and has delivered from it.
struct ReplicaFirst {
    primary: MariaDb,
    r1: MariaDb,
    _dir: tempfile::TempDir,
    state: std::path::PathBuf,
    out: std::path::PathBuf,
    writer: Writer,
    p: Proc,
}

impl ReplicaFirst {
    fn start(flags: &[&str]) -> ReplicaFirst {
        let primary = MariaDb::start(ServerOpts::default());
        let r1 = MariaDb::start_replica_of(&primary, ServerOpts::default());
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let out = dir.path().join("out.jsonl");
        let sink = format!("file:{}", out.display());
        let writer = Writer::start(&primary, Duration::from_millis(2));
        let sources = [r1.url(), primary.url()];
        let mut p = spawn_run(&sources, &state, &sink, flags);
        wait_until(Duration::from_secs(60), "delivering from replica 1", || {
            assert!(p.is_running(), "binsync stopped: {}", p.stderr());
            saved_gtid(&state).is_some_and(|g| !g.is_empty()) && writer.committed() > 50
        });
        ReplicaFirst {
            primary,
            r1,
            _dir: dir,
            state,
            out,
            writer,
            p,
        }
    }
}

/// Replica 1 hangs (SIGSTOP: connections are accepted, nothing is answered): no refusal to
/// act on, only transient failures (a silent stream, logins that time out). After
/// `--failover-after` of them binsync goes on from the primary.
#[test]
fn a_server_that_keeps_failing_is_left_after_failover_after() {
    let ReplicaFirst {
        primary,
        r1,
        _dir,
        state,
        out,
        writer,
        mut p,
    } = ReplicaFirst::start(&["--failover-after", "2s"]);
    // SAFETY: a plain signal to the test's own child process.
    let stop = |sig| unsafe { libc::kill(r1.pid() as libc::pid_t, sig) };
    assert_eq!(stop(libc::SIGSTOP), 0);
    let switched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(Duration::from_secs(90), "failover to the primary", || {
            assert!(p.is_running(), "binsync stopped: {}", p.stderr());
            !switches(&p.stderr()).is_empty()
        });
    }));
    stop(libc::SIGCONT);
    if let Err(e) = switched {
        std::panic::resume_unwind(e);
    }
    let line = switches(&p.stderr())[0].clone();
    assert!(
        line.contains(&format!("to mysql://root@127.0.0.1:{} ", primary.port()))
            && line.contains("(--failover-after)"),
        "{line}"
    );
    std::thread::sleep(Duration::from_millis(500));
    writer.finish();
    drain_and_stop(&mut p, &state, &primary);
    assert_file_is_the_primary(&out, &primary);
}

/// Replica 1's applier stops while the primary goes on: binsync reads nothing new from it,
/// notices within `--failover-behind` and goes on from the primary, with every `seq` once.
#[test]
fn a_replica_that_stays_behind_is_left_for_the_next_server() {
    let ReplicaFirst {
        primary,
        r1,
        _dir,
        state,
        out,
        writer,
        mut p,
    } = ReplicaFirst::start(&["--failover-behind", "2s"]);
    assert!(switches(&p.stderr()).is_empty(), "{}", p.stderr());
    r1.sql("STOP SLAVE SQL_THREAD");
    wait_until(Duration::from_secs(60), "failover to the primary", || {
        assert!(p.is_running(), "binsync stopped: {}", p.stderr());
        !switches(&p.stderr()).is_empty()
    });
    let line = switches(&p.stderr())[0].clone();
    assert!(
        line.contains(&format!("to mysql://root@127.0.0.1:{} ", primary.port()))
            && line.contains("stayed behind its own source")
            && line.contains("SQL thread No"),
        "{line}"
    );
    std::thread::sleep(Duration::from_millis(500));
    writer.finish();
    drain_and_stop(&mut p, &state, &primary);
    assert_file_is_the_primary(&out, &primary);
}

/// The 8.0 fixture: ENUM/SET rows with full row metadata, five GTIDs of one server.
const ENUM_SET: &str = "mysql-enum-string-set.000001";
/// Events sent before the first dump of ENUM_SET stalls: inside transaction `uuid:4`.
const INSIDE_TXN_4: usize = 13;

fn double(server_id: u32, uuid: Option<&str>, faults: mysql_double::Faults) -> MysqlDouble {
    MysqlDouble::start(
        Profile::Mysql80,
        vec![binlog_fixtures::dir().join(ENUM_SET)],
        Options {
            row_metadata: "FULL".into(),
            server_id,
            server_uuid: uuid.map(str::to_string),
            faults,
            ..Options::default()
        },
    )
}

fn lines(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Two servers of one MySQL topology serve the same binlog (the same GTID set); the first
/// one dies inside a transaction. binsync resumes on the second by GTID set and delivers
/// exactly what a run without failover delivers, with the same `seq`s.
#[test]
fn mysql_fails_over_by_gtid_set_with_no_gap_and_no_duplicate() {
    let tmp = tempfile::tempdir().unwrap();
    // Without failover: what every run must deliver.
    let whole = double(21, None, Default::default());
    let want_out = tmp.path().join("want.jsonl");
    let mut p = spawn_run(
        &[whole.url()],
        &tmp.path().join("want-state"),
        &format!("file:{}", want_out.display()),
        &["--exit-at-end"],
    );
    let st = p.wait_timeout(Duration::from_secs(60)).expect("run ends");
    assert!(st.success(), "{}", p.stderr());
    let want = lines(&want_out);
    assert!(want.len() > 3, "{want:?}");
    drop(whole);

    let a = double(
        11,
        Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
        mysql_double::Faults {
            stall_after_events: Some(INSIDE_TXN_4),
            ..Default::default()
        },
    );
    let b = double(12, None, Default::default());
    let b_port = b.port();
    let out = tmp.path().join("out.jsonl");
    let mut p = spawn_run(
        &[a.url(), b.url()],
        &tmp.path().join("state"),
        &format!("file:{}", out.display()),
        &["--exit-at-end"],
    );
    wait_until(Duration::from_secs(30), "the first server stalls", || {
        a.statements().iter().any(|s| s.starts_with("FAULT"))
    });
    drop(a); // killed mid-stream
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("run hung: {}", p.stderr()));
    let err = p.stderr();
    eprintln!("{err}");
    assert!(st.success(), "{err}");
    let switched = switches(&err);
    assert_eq!(switched.len(), 1, "{err}");
    assert!(
        switched[0].contains(&format!(":{b_port} "))
            && switched[0].contains("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
        "{}",
        switched[0]
    );
    assert_eq!(saved_server(&tmp.path().join("state"))["server_id"], 12);
    let dumps: Vec<String> = b
        .statements()
        .into_iter()
        .filter(|s| s.starts_with("COM_BINLOG_DUMP"))
        .collect();
    assert!(
        dumps.len() == 1 && dumps[0].starts_with("COM_BINLOG_DUMP_GTID"),
        "the second server is asked by GTID set: {dumps:?}"
    );
    let got = lines(&out);
    let strip = |v: &[serde_json::Value]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|l| {
                let mut l = l.clone();
                l.as_object_mut().unwrap().remove("seq");
                l
            })
            .collect()
    };
    assert_eq!(strip(&got), strip(&want), "the same operations, once each");
    let seqs: Vec<u64> = got.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq grows by one across the switch: {seqs:?}"
    );
}

/// Several sources without GTIDs: refused at start, naming the fix; nothing streamed.
#[test]
fn several_sources_without_gtids_are_refused_at_start() {
    let opts = || Options {
        gtid_mode_off: true,
        ..Options::default()
    };
    let file = binlog_fixtures::dir().join("binlog_transaction_with_anonymous_GTID.000001");
    let a = MysqlDouble::start(Profile::Mysql80, vec![file.clone()], opts());
    let b = MysqlDouble::start(
        Profile::Mysql80,
        vec![file],
        Options {
            server_id: 2,
            ..opts()
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let mut p = spawn_run(
        &[a.url(), b.url()],
        &tmp.path().join("state"),
        &format!("file:{}", out.display()),
        &["--exit-at-end"],
    );
    let st = p.wait_timeout(Duration::from_secs(60)).expect("run ends");
    let err = p.stderr();
    assert!(!st.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("binsync: error:"))
        .unwrap_or_default();
    assert!(
        line.contains("several --source") && line.contains("gtid_mode=ON"),
        "{line}"
    );
    assert_eq!(a.dumps() + b.dumps(), 0, "nothing streamed");
}
