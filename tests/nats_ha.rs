//! Scenario: two `binsync run --state nats` processes on the same source and stream, one active
//! and one standby (a lease in a JetStream key-value bucket), while a writer commits inserts,
//! updates and deletes on two tables (one with a composite key).
//!
//! Both publish into one JetStream stream (`--sink nats://`).
//!
//! - The active one is killed with kill -9: the standby takes over within a few seconds (a
//!   lease period, then the restore), resumes from the state the bucket holds, and nothing is
//!   lost or published twice: the stream applied as a consumer does (per entity the highest
//!   `seq` wins) equals the source tables, every `seq` from the first to the last is there,
//!   and no two messages carry the same (Binsync-Source, Binsync-Seq).
//! - The active one is SIGSTOPped past its lease: the standby takes over; after SIGCONT the old
//!   one says the lease is lost and exits non-zero at once, and the stream holds no message
//!   twice (it published nothing after it woke).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::nats::{
    apply, assert_no_duplicates, gapless, read_stream_blocking, NatsServer, StreamMsg,
};
use common::workload::{source_state, Writer};
use common::{wait_until, MariaDb, Proc, ServerOpts};

const LEASE: &str = "2s";
const STREAM: &str = "ha";

fn spawn(db: &MariaDb, nats: &NatsServer, state: &Path) -> Proc {
    let url = db.url();
    let state = state.display().to_string();
    let sink = nats.url();
    Proc::spawn(
        &[
            "run",
            "--source",
            &url,
            "--server-id",
            "4545",
            "--state-dir",
            &state,
            "--sink",
            &sink,
            "--nats-stream",
            STREAM,
            "--state",
            "nats",
            "--lease",
            LEASE,
        ],
        &[],
    )
}

fn streaming(p: &Proc) -> bool {
    p.stderr().contains("streaming")
}

/// The stream, made before binsync would make it, with a duplicate window of 100 ms (the least nats-server takes) instead of
/// 2 minutes: the server then drops no second copy of a message in these tests, so any
/// operation published twice (by a stale holder, or by the new one) is seen in the stream.
fn create_stream(nats: &NatsServer) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.create_stream(jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["binsync.>".into()],
            duplicate_window: Duration::from_millis(100),
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    });
}

/// Active `a` streaming and standby `b` waiting.
fn pair(db: &MariaDb, nats: &NatsServer, dir: &Path) -> (Proc, Proc) {
    create_stream(nats);
    let a = spawn(db, nats, &dir.join("a"));
    wait_until(Duration::from_secs(60), "a streams", || streaming(&a));
    let b = spawn(db, nats, &dir.join("b"));
    wait_until(Duration::from_secs(30), "b waits as a standby", || {
        b.stderr().contains("standby:")
    });
    assert!(!streaming(&b), "b streams while a holds the lease");
    (a, b)
}

/// Waits until the stream holds the source's rows and every seq, stops `b`, checks the stream.
fn finish(db: &MariaDb, nats: &NatsServer, mut b: Proc) -> Vec<StreamMsg> {
    let want = source_state(db);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let msgs = read_stream_blocking(&nats.url(), STREAM);
        if apply(&msgs) == want && gapless(&msgs) {
            break;
        }
        if Instant::now() > deadline {
            common::workload::assert_same_state(&want, &apply(&msgs));
            panic!("the stream's seqs have gaps");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    b.sigterm();
    let st = b.wait_timeout(Duration::from_secs(30)).expect("b stops");
    assert!(st.success(), "b: {}", b.stderr());
    let msgs = read_stream_blocking(&nats.url(), STREAM);
    assert_no_duplicates(&msgs);
    let sources: HashMap<&str, usize> = msgs.iter().fold(HashMap::new(), |mut m, x| {
        *m.entry(x.header("Binsync-Source")).or_default() += 1;
        m
    });
    assert_eq!(
        sources.len(),
        1,
        "one source id across the takeover: {sources:?}"
    );
    assert_eq!(apply(&msgs), want);
    msgs
}

#[test]
fn the_standby_takes_over_a_killed_active_one_and_nothing_is_lost() {
    let db = MariaDb::start(ServerOpts::default());
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer::start(&db, Duration::from_millis(2));
    let (mut a, b) = pair(&db, &nats, dir.path());
    std::thread::sleep(Duration::from_millis(1500));
    let before = writer.committed();
    a.kill9();
    let killed = Instant::now();
    wait_until(Duration::from_secs(20), "b takes over and streams", || {
        streaming(&b)
    });
    let took = killed.elapsed();
    eprintln!("took over {took:?} after kill -9 (writer had committed {before})");
    assert!(b.stderr().contains("took over the lease"), "{}", b.stderr());
    assert!(took < Duration::from_secs(8), "takeover took {took:?}");
    // `status` on the new holder's cache says what it is.
    let b_dir = dir.path().join("b").display().to_string();
    let mut status = Proc::spawn(&["status", "--state-dir", &b_dir], &[]);
    status
        .wait_timeout(Duration::from_secs(30))
        .expect("status ends");
    assert!(
        status
            .stdout()
            .contains("local cache of bucket binsync_state_ha"),
        "{}",
        status.stdout()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        writer.finish() > before,
        "the writer went on during the takeover"
    );
    let msgs = finish(&db, &nats, b);
    eprintln!("{} messages in the stream", msgs.len());
}

#[test]
fn a_stalled_active_one_is_taken_over_and_exits_when_it_wakes() {
    let db = MariaDb::start(ServerOpts::default());
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer::start(&db, Duration::from_millis(2));
    let (mut a, b) = pair(&db, &nats, dir.path());
    std::thread::sleep(Duration::from_millis(1000));
    unsafe { libc::kill(a.pid() as libc::pid_t, libc::SIGSTOP) };
    wait_until(Duration::from_secs(20), "b takes over and streams", || {
        streaming(&b)
    });
    unsafe { libc::kill(a.pid() as libc::pid_t, libc::SIGCONT) };
    let st = a.wait_timeout(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1000));
    writer.finish();
    // First what a stale holder could break: the stream.
    finish(&db, &nats, b);
    let st = st.expect("a exits once it wakes without its lease");
    assert!(!st.success(), "a exits non-zero");
    assert!(a.stderr().contains("lease lost"), "{}", a.stderr());
}

#[test]
fn state_nats_without_a_nats_sink_and_a_lease_without_it_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s").display().to_string();
    let out = format!("file:{}", dir.path().join("out").display());
    let base = [
        "run",
        "--source",
        "mysql://u@127.0.0.1:1",
        "--server-id",
        "9",
        "--state-dir",
        &state,
        "--sink",
        &out,
    ];
    for (extra, says) in [
        (&["--state", "nats"][..], "use --sink nats://HOST:PORT"),
        (&["--lease", "3s"][..], "--lease is for --state nats only"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let mut p = Proc::spawn(&args, &[]);
        let st = p.wait_timeout(Duration::from_secs(30)).expect("exits");
        assert!(!st.success(), "{extra:?}");
        let err = p.stderr();
        assert!(
            err.lines()
                .any(|l| l.starts_with("binsync: error:") && l.contains(says)),
            "{extra:?}: {err}"
        );
    }
}

/// Three takeovers in a row, each restoring what the previous holder (itself restored) left.
#[test]
fn active_ones_killed_in_turn_hand_over_the_state_each_time() {
    let db = MariaDb::start(ServerOpts::default());
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer::start(&db, Duration::from_millis(2));
    let (mut active, mut standby) = pair(&db, &nats, dir.path());
    for turn in 0..3 {
        std::thread::sleep(Duration::from_millis(fastrand::u64(500..1500)));
        active.kill9();
        wait_until(Duration::from_secs(20), "the standby takes over", || {
            streaming(&standby)
        });
        // The killed one comes back as the standby, on a cache of its own.
        let fresh = spawn(&db, &nats, &dir.path().join(format!("c{turn}")));
        wait_until(Duration::from_secs(30), "a new standby", || {
            fresh.stderr().contains("standby:")
        });
        active = std::mem::replace(&mut standby, fresh);
    }
    writer.finish();
    drop(standby);
    finish(&db, &nats, active);
}
