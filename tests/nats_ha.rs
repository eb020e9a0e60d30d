//! Scenario: two `binsync run --state nats` processes on the same source and stream, one active
//! and one standby (a lease in a JetStream key-value bucket), while a writer commits inserts,
//! updates and deletes on two tables (one with a composite key).
//!
//! - The active one is killed with kill -9: the standby takes over within a few seconds (a
//!   lease period, then the restore), resumes from the state the bucket holds, and nothing is
//!   lost: the changes rebuilt from the sink equal the source tables, and every `seq` written
//!   again carries the very operation it carried before (the numbering went on, not over).
//! - The active one is SIGSTOPped past its lease: the standby takes over; after SIGCONT the old
//!   one says the lease is lost and exits non-zero at once.
//!
//! Until the JetStream sink exists these runs write to one shared file sink (only the lease
//! holder writes it) and take the NATS server from the hidden `--state-nats` flag.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::nats::NatsServer;
use common::workload::{delivered, file_state, source_state, Writer};
use common::{wait_until, MariaDb, Proc, ServerOpts};

const LEASE: &str = "2s";

fn spawn(db: &MariaDb, nats: &NatsServer, state: &Path, out: &Path) -> Proc {
    let url = db.url();
    let state = state.display().to_string();
    let sink = format!("file:{}", out.display());
    let nats_url = nats.url();
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
            "--state",
            "nats",
            "--lease",
            LEASE,
            "--state-nats",
            &nats_url,
        ],
        &[],
    )
}

fn streaming(p: &Proc) -> bool {
    p.stderr().contains("streaming")
}

/// Active `a` streaming and standby `b` waiting.
fn pair(db: &MariaDb, nats: &NatsServer, dir: &Path, out: &Path) -> (Proc, Proc) {
    let a = spawn(db, nats, &dir.join("a"), out);
    wait_until(Duration::from_secs(60), "a streams", || streaming(&a));
    let b = spawn(db, nats, &dir.join("b"), out);
    wait_until(Duration::from_secs(30), "b waits as a standby", || {
        b.stderr().contains("standby:")
    });
    assert!(!streaming(&b), "b streams while a holds the lease");
    (a, b)
}

/// Waits until the sink holds the source's rows, stops `b` and checks the whole file.
fn finish(db: &MariaDb, mut b: Proc, out: &Path) {
    let want = source_state(db);
    wait_until(
        Duration::from_secs(90),
        "the sink to hold every row",
        || delivered(out) == want,
    );
    b.sigterm();
    let st = b.wait_timeout(Duration::from_secs(30)).expect("b stops");
    assert!(st.success(), "b: {}", b.stderr());
    // No gap in `seq`, and a line written again is the very line written before.
    let (rebuilt, again) = file_state(&out.display().to_string());
    eprintln!("written again after the takeover: {again} lines");
    assert_eq!(rebuilt, want);
}

#[test]
fn the_standby_takes_over_a_killed_active_one_and_nothing_is_lost() {
    let db = MariaDb::start(ServerOpts::default());
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("changes.jsonl");
    let writer = Writer::start(&db, Duration::from_millis(2));
    let (mut a, b) = pair(&db, &nats, dir.path(), &out);
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
            .contains("local cache of bucket binsync_state_binsync"),
        "{}",
        status.stdout()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        writer.finish() > before,
        "the writer went on during the takeover"
    );
    finish(&db, b, &out);
}

#[test]
fn a_stalled_active_one_is_taken_over_and_exits_when_it_wakes() {
    let db = MariaDb::start(ServerOpts::default());
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("changes.jsonl");
    let writer = Writer::start(&db, Duration::from_millis(2));
    let (mut a, b) = pair(&db, &nats, dir.path(), &out);
    std::thread::sleep(Duration::from_millis(1000));
    unsafe { libc::kill(a.pid() as libc::pid_t, libc::SIGSTOP) };
    wait_until(Duration::from_secs(20), "b takes over and streams", || {
        streaming(&b)
    });
    unsafe { libc::kill(a.pid() as libc::pid_t, libc::SIGCONT) };
    let st = a
        .wait_timeout(Duration::from_secs(10))
        .expect("a exits once it wakes without its lease");
    assert!(!st.success(), "a exits non-zero");
    assert!(a.stderr().contains("lease lost"), "{}", a.stderr());
    std::thread::sleep(Duration::from_millis(1000));
    writer.finish();
    finish(&db, b, &out);
}
