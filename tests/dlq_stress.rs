//! Scenario: the receiver rejects every batch holding a delete while a writer commits inserts,
//! updates and deletes, and binsync runs 8 batches in flight of 20 rows: dead letters pile up
//! by the dozen, written by several lanes at once while the checkpoint moves. binsync is
//! killed (-9) and restarted, and stopped with SIGTERM, a few times. This once froze the
//! checkpoint for good (sled's concurrent `flush_async` deadlock); now every SIGTERM must end
//! within 30 s, and `dlq list` / `dlq show` answer while binsync holds the store (from the
//! copy it publishes).
//!
//! At the end every source change is either applied at the receiver or in the dead-letter
//! queue: with the receiver accepting everything again, `dlq replay` delivers the dead letters
//! and the receiver's state equals the source tables row by row.
//!
//! `BINSYNC_STRESS_ROUNDS` (default 5, each 3-6 s of writing) makes it longer.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::workload::{source_state, Receiver, Writer};
use common::{wait_until, MariaDb, Proc, ServerOpts};

const REJECT: &str = "\"op\":\"delete\"";
const SIGTERM_BOUND: Duration = Duration::from_secs(30);

fn dlq(state: &Path, args: &[&str]) -> (bool, String, String) {
    let s = state.display().to_string();
    let mut full = vec!["dlq", "--state-dir", &s];
    full.extend(args);
    let mut p = Proc::spawn(&full, &[]);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("dlq command hung");
    (st.success(), p.stdout(), p.stderr())
}

#[test]
fn rejected_deletes_under_load_with_kills_never_freeze_the_store() {
    let rounds: usize = std::env::var("BINSYNC_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let db = MariaDb::start(ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("binsync-state");
    let mut recv = Receiver::start(
        &dir.path().join("receiver-state"),
        &["--reject-containing", REJECT],
    );
    let writer = Writer::start(&db, Duration::from_millis(1));
    let url = db.url();
    let state_arg = state.display().to_string();
    let sink = recv.url();
    let args = [
        "run",
        "--source",
        &url,
        "--server-id",
        "6161",
        "--state-dir",
        &state_arg,
        "--sink",
        &sink,
        "--start",
        "earliest",
        "--in-flight",
        "8",
        "--batch-rows",
        "20",
    ];
    let mut checked_dlq_while_running = false;
    for round in 0..rounds {
        let mut p = Proc::spawn(&args, &[]);
        let ran = Instant::now();
        if !checked_dlq_while_running && round > 0 {
            // Not before binsync holds the store: a `dlq` command opening it first would make
            // this run fail with "in use".
            wait_until(Duration::from_secs(30), "binsync streaming", || {
                p.stderr().contains("streaming")
            });
            wait_until(
                Duration::from_secs(30),
                "dead letters listed while running",
                || {
                    let (ok, out, _) = dlq(&state, &["list"]);
                    ok && out.contains("HTTP 400")
                },
            );
            let (ok, out, err) = dlq(&state, &["list"]);
            assert!(
                ok && err.contains("in use by a running binsync"),
                "{out}{err}"
            );
            assert!(p.is_running(), "binsync still holds the store");
            let id = out.split_whitespace().next().unwrap().to_string();
            let (ok, shown, err) = dlq(&state, &["show", &id]);
            assert!(
                ok && shown.contains("\"status\": 400") && shown.contains("delete"),
                "{shown}{err}"
            );
            checked_dlq_while_running = true;
        }
        let left = Duration::from_millis(fastrand::u64(3000..6000)).saturating_sub(ran.elapsed());
        std::thread::sleep(left);
        assert!(
            p.is_running(),
            "round {round}: binsync stopped: {}",
            p.stderr()
        );
        if round % 2 == 0 {
            p.kill9();
            eprintln!(
                "round {round}: killed -9; writer committed {}",
                writer.committed()
            );
        } else {
            p.sigterm();
            let stopping = Instant::now();
            let st = p.wait_timeout(SIGTERM_BOUND).unwrap_or_else(|| {
                panic!("round {round}: SIGTERM did not stop binsync within {SIGTERM_BOUND:?}")
            });
            assert!(st.success(), "round {round}: {}", p.stderr());
            eprintln!("round {round}: SIGTERM took {:?}", stopping.elapsed());
        }
    }
    assert!(checked_dlq_while_running || rounds < 2);
    let committed = writer.finish();

    // The rest, to the end of the binlog: it must get there (the checkpoint moves).
    let mut catch_up: Vec<&str> = args.to_vec();
    catch_up.push("--exit-at-end");
    let mut p = Proc::spawn(&catch_up, &[]);
    let st = p
        .wait_timeout(Duration::from_secs(180))
        .unwrap_or_else(|| panic!("catch-up did not finish: {}", p.stderr()));
    assert!(st.success(), "catch-up failed: {}", p.stderr());

    let (ok, list, err) = dlq(&state, &["list"]);
    assert!(ok, "{err}");
    let dead = list.lines().filter(|l| l.contains("HTTP 400")).count();
    eprintln!("writer committed {committed} transactions; {dead} dead letters");
    assert!(dead >= 10, "the receiver rejected deletes: {list}");

    // Everything rejected is in the queue: delivered now, the receiver equals the source.
    recv.restart_with(&[]);
    let (ok, out, err) = dlq(&state, &["replay", "--sink", &recv.url()]);
    assert!(ok, "{out}{err}");
    let (got, stats) = recv.dump();
    eprintln!("receiver stats: {stats}");
    let source = source_state(&db);
    assert_eq!(got.len(), source.len(), "entity count differs");
    for (k, v) in &source {
        assert_eq!(got.get(k), Some(v), "entity {k:?}");
    }
}
