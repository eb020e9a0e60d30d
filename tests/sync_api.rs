//! Scenarios of the sync API delivery, each against a real MariaDB, the real `binsync`
//! binary and the reference receiver (`binsync receive`), with a writer committing inserts,
//! updates and deletes on two tables (one with a composite key) the whole time. Each ends by
//! comparing the receiver's state with the source tables row by row, and prints how many
//! operations the receiver dropped as already applied.
//!
//! 1. kill -9 binsync at 20+ random moments, restarting it each time;
//! 2. the receiver down for 30 s, then back; the receiver failing 30% of requests (500/429);
//! 3. the MariaDB server killed and restarted mid-stream;
//! 4. a poisoned batch rejected with 400 lands in the dead-letter queue, the stream goes on,
//!    and `dlq replay` delivers it once the receiver accepts it;
//! 5. SIGTERM during a 100k-row transaction: clean exit, resume, nothing applied twice;
//! 6. the receiver down for a few seconds with several batches held: one WARN for the outage,
//!    one summary when it heals, every change delivered.
//!
//! Also: every payload binsync sends validates against docs/sync-api.schema.json.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::workload::{source_state, Receiver, State, Writer};
use common::{peak_rss, wait_until, MariaDb, Proc, ServerOpts};

struct Binsync {
    args: Vec<String>,
    proc: Option<Proc>,
}

impl Binsync {
    fn new(db: &MariaDb, state: &Path, url: &str, extra: &[&str]) -> Binsync {
        let mut args: Vec<String> = [
            "run",
            "--source",
            &db.url(),
            "--server-id",
            "5151",
            "--state-dir",
            &state.display().to_string(),
            "--sink",
            url,
            "--start",
            "earliest",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Binsync { args, proc: None }
    }

    fn start(&mut self) {
        let refs: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.proc = Some(Proc::spawn(&refs, &[]));
    }

    fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("started")
    }

    /// Runs to the end of the binlog (`--exit-at-end`) and checks it exits 0.
    fn catch_up(&mut self) {
        self.catch_up_saying();
    }

    /// [`Self::catch_up`], returning the run's stderr.
    fn catch_up_saying(&mut self) -> String {
        let mut args = self.args.clone();
        args.push("--exit-at-end".into());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = Proc::spawn(&refs, &[]);
        let st = p
            .wait_timeout(Duration::from_secs(300))
            .unwrap_or_else(|| panic!("catch-up did not finish: {}", p.stderr()));
        assert!(st.success(), "catch-up failed: {}", p.stderr());
        p.stderr()
    }
}

fn tmp() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("binsync-state");
    let recv = dir.path().join("receiver-state");
    (dir, state, recv)
}

fn assert_same(receiver: &State, source: &State, stats: &serde_json::Value) {
    eprintln!("receiver stats: {stats}");
    assert_eq!(receiver.len(), source.len(), "entity count differs");
    for (k, v) in source {
        assert_eq!(receiver.get(k), Some(v), "entity {k:?}");
    }
}

#[test]
fn kill_9_twenty_times_converges_to_the_source() {
    let db = MariaDb::start(ServerOpts::default());
    let (_d, state, rstate) = tmp();
    let mut recv = Receiver::start(&rstate, &[]);
    let writer = Writer::start(&db, Duration::from_millis(2));
    let mut b = Binsync::new(&db, &state, &recv.url(), &[]);
    for _ in 0..22 {
        b.start();
        std::thread::sleep(Duration::from_millis(fastrand::u64(200..900)));
        b.proc().kill9();
    }
    let committed = writer.finish();
    b.catch_up();
    let (got, stats) = recv.dump();
    eprintln!("writer committed {committed} transactions");
    assert_same(&got, &source_state(&db), &stats);
}

#[test]
fn receiver_outage_of_30s_and_30_percent_failures() {
    let db = MariaDb::start(ServerOpts::default());
    let (_d, state, rstate) = tmp();
    let mut recv = Receiver::start(&rstate, &["--fault-rate", "0.3", "--faults", "500,429"]);
    let writer = Writer::start(&db, Duration::from_millis(2));
    let mut b = Binsync::new(&db, &state, &recv.url(), &[]);
    b.start();
    std::thread::sleep(Duration::from_secs(5));
    // Down for 30 s: binsync retries and its reader pauses; nothing is lost.
    recv.stop();
    std::thread::sleep(Duration::from_secs(30));
    assert!(
        b.proc().wait_timeout(Duration::ZERO).is_none(),
        "binsync must keep running: {}",
        b.proc().stderr()
    );
    recv.restart_with(&["--fault-rate", "0.3", "--faults", "500,429"]);
    std::thread::sleep(Duration::from_secs(5));
    writer.finish();
    b.proc().sigterm();
    let st = b
        .proc()
        .wait_timeout(Duration::from_secs(60))
        .expect("SIGTERM stops binsync");
    assert!(st.success(), "{}", b.proc().stderr());
    // The rest without faults.
    recv.restart_with(&[]);
    b.catch_up();
    let (got, stats) = recv.dump();
    assert!(
        stats["faults_injected"].as_u64().unwrap_or(0) > 0,
        "faults were injected: {stats}"
    );
    assert_same(&got, &source_state(&db), &stats);
}

#[test]
fn source_server_killed_and_restarted_mid_stream() {
    let mut db = MariaDb::start(ServerOpts::default());
    let (_d, state, rstate) = tmp();
    let mut recv = Receiver::start(&rstate, &[]);
    let writer = Writer::start(&db, Duration::from_millis(2));
    let mut b = Binsync::new(&db, &state, &recv.url(), &[]);
    b.start();
    std::thread::sleep(Duration::from_secs(3));
    db.kill9();
    std::thread::sleep(Duration::from_secs(3));
    db.restart();
    std::thread::sleep(Duration::from_secs(5));
    let committed = writer.finish();
    assert!(
        b.proc().wait_timeout(Duration::ZERO).is_none(),
        "binsync must survive a source restart: {}",
        b.proc().stderr()
    );
    assert!(
        b.proc().stderr().contains("reconnecting"),
        "{}",
        b.proc().stderr()
    );
    b.proc().sigterm();
    assert!(b
        .proc()
        .wait_timeout(Duration::from_secs(60))
        .expect("stops")
        .success());
    b.catch_up();
    let (got, stats) = recv.dump();
    eprintln!("writer committed {committed} transactions");
    assert_same(&got, &source_state(&db), &stats);
}

#[test]
fn poisoned_batch_goes_to_the_dead_letter_queue_and_is_replayed() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(common::workload::SCHEMA);
    let (_d, state, rstate) = tmp();
    let mut recv = Receiver::start(&rstate, &["--reject-containing", "poison"]);
    db.sql("INSERT INTO t.items VALUES (1, 1, 'fine')");
    db.sql("INSERT INTO t.items VALUES (2, 2, 'poison')");
    db.sql("INSERT INTO t.items VALUES (3, 3, 'fine')");
    // One change per batch so only the poisoned one is rejected.
    let mut b = Binsync::new(&db, &state, &recv.url(), &["--batch-rows", "1"]);
    let said = b.catch_up_saying();
    // The run's last line names the dead letter; it does not say everything was delivered.
    assert!(
        said.contains("1 batches were rejected by the sync API")
            && !said.contains("everything read was delivered"),
        "{said}"
    );
    db.sql("INSERT INTO t.items VALUES (4, 4, 'later')");
    b.catch_up();
    let (got, _) = recv.dump();
    assert_eq!(
        got.len(),
        3,
        "the stream went on past the poisoned batch: {got:?}"
    );

    let dlq = |args: &[&str]| {
        let mut full = vec!["dlq", "--state-dir"];
        let s = state.display().to_string();
        full.push(&s);
        full.extend(args);
        let owned: Vec<String> = full.iter().map(|x| x.to_string()).collect();
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let mut p = Proc::spawn(&refs, &[]);
        let st = p
            .wait_timeout(Duration::from_secs(60))
            .expect("dlq command hung");
        (st.success(), p.stdout(), p.stderr())
    };
    let (ok, list, err) = dlq(&["list"]);
    assert!(ok, "{err}");
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.contains("HTTP 400"), "{list}");
    let id = list.split_whitespace().next().unwrap().to_string();
    let (ok, shown, _) = dlq(&["show", &id]);
    assert!(
        ok && shown.contains("poison") && shown.contains("\"status\": 400"),
        "{shown}"
    );

    // Still rejected: stays in the queue.
    recv.restart_with(&["--reject-containing", "poison"]);
    let (ok, out, _) = dlq(&["replay", "--sink", &recv.url()]);
    assert!(!ok, "{out}");
    // Accepted now: delivered and removed.
    recv.restart_with(&[]);
    let (ok, out, err) = dlq(&["replay", "--sink", &recv.url()]);
    assert!(ok, "{out}{err}");
    let (_, list, _) = dlq(&["list"]);
    assert!(list.contains("no dead letters"), "{list}");
    let (got, stats) = recv.dump();
    assert_same(&got, &source_state(&db), &stats);
}

#[test]
fn sigterm_during_a_100k_row_transaction_applies_nothing_twice() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(common::workload::SCHEMA);
    db.sql("INSERT INTO t.items SELECT seq, seq, 'big' FROM t.seq_1_to_100000");
    let (_d, state, rstate) = tmp();
    let mut recv = Receiver::start(&rstate, &[]);
    // Small batches and one lane: the transaction takes many round trips.
    let mut b = Binsync::new(
        &db,
        &state,
        &recv.url(),
        &["--batch-rows", "200", "--in-flight", "1"],
    );
    b.start();
    let stats_url = format!("http://{}/stats", recv.addr);
    wait_until(Duration::from_secs(60), "some batches applied", || {
        stats(&stats_url)
            .map(|s| s["ops_applied"].as_u64().unwrap_or(0) > 1000)
            .unwrap_or(false)
    });
    b.proc().sigterm();
    let stopped = Instant::now();
    let st = b
        .proc()
        .wait_timeout(Duration::from_secs(60))
        .expect("SIGTERM stops binsync");
    assert!(st.success(), "{}", b.proc().stderr());
    let applied_at_stop = stats(&stats_url).unwrap()["ops_applied"].as_u64().unwrap();
    eprintln!(
        "stopped in {:?} with {applied_at_stop} of 100000 applied",
        stopped.elapsed()
    );
    assert!(applied_at_stop < 100_000, "the stop came mid-transaction");
    b.catch_up();
    let (got, stats) = recv.dump();
    assert_eq!(
        stats["ops_stale"].as_u64(),
        Some(0),
        "nothing re-sent after a clean stop: {stats}"
    );
    assert_same(&got, &source_state(&db), &stats);
}

/// binsync's `/metrics` text at `addr`.
fn metrics_text(addr: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })
}

fn stats(url: &str) -> Option<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        serde_json::from_str(&reqwest::get(url).await.ok()?.text().await.ok()?).ok()
    })
}

#[test]
fn payloads_validate_against_the_published_schema() {
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/sync-api.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    // Capture real payloads: a receiver that only records bodies.
    let (addr, bodies) = capture_server();
    let db = MariaDb::start(ServerOpts::default());
    db.sql(common::workload::SCHEMA);
    db.sql("INSERT INTO t.items VALUES (1, 1, 'a'), (2, 2, 'b'); UPDATE t.items SET v = 5 WHERE id = 1; DELETE FROM t.items WHERE id = 2; INSERT INTO t.pairs VALUES (1, 2, 3)");
    let (d, state, _) = tmp();
    let mut b = Binsync::new(&db, &state, &format!("http://{addr}/sync"), &["--gzip"]);
    b.catch_up();
    let plain_batches = bodies.lock().unwrap().len();
    // Compacted batches are valid operations too.
    let mut c = Binsync::new(
        &db,
        &d.path().join("compact-state"),
        &format!("http://{addr}/sync"),
        &["--compact", "--linger", "200ms", "--in-flight", "1"],
    );
    c.catch_up();
    let bodies = bodies.lock().unwrap().clone();
    assert!(!bodies.is_empty());
    let mut ops = 0;
    for body in &bodies {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        if let Err(e) = validator.validate(&v) {
            panic!("payload does not validate: {e}\n{v:#}");
        }
        ops += v["count"].as_u64().unwrap();
    }
    let plain: u64 = bodies[..plain_batches]
        .iter()
        .map(|b| {
            serde_json::from_slice::<serde_json::Value>(b).unwrap()["count"]
                .as_u64()
                .unwrap()
        })
        .sum();
    // Five row operations and the two CREATE TABLE statements as ddl operations.
    assert_eq!(plain, 7);
    // Ids 1 (insert, update) and 2 (insert, delete) each merge into one operation; the ddl
    // operations are never merged.
    assert_eq!(ops - plain, 5, "compaction merges operations on one id");
}

#[test]
fn an_operation_larger_than_batch_bytes_travels_alone() {
    let (addr, bodies) = capture_server();
    let db = MariaDb::start(ServerOpts::default());
    db.sql("CREATE DATABASE t; CREATE TABLE t.items (id INT PRIMARY KEY, v INT, note LONGTEXT)");
    // Small rows, one 300 KB row, small rows again, in one transaction: with 64 KiB batches
    // the big row must not share its batch (it would make a body the receiver may refuse).
    db.sql(
        "BEGIN; INSERT INTO t.items VALUES (1, 1, 'a'), (2, 2, 'b');
         INSERT INTO t.items VALUES (3, 3, REPEAT('x', 300000));
         INSERT INTO t.items VALUES (4, 4, 'c'); COMMIT;",
    );
    let (_d, state, _) = tmp();
    let mut b = Binsync::new(
        &db,
        &state,
        &format!("http://{addr}/sync"),
        &[
            "--batch-bytes",
            "65536",
            "--in-flight",
            "1",
            "--linger",
            "200ms",
        ],
    );
    b.catch_up();
    let bodies = bodies.lock().unwrap().clone();
    let mut counts = Vec::new();
    for body in &bodies {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        // Row operations (the CREATE TABLE's ddl operation has no id).
        let ids: Vec<i64> = v["entities"]["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|op| op["op"] != "ddl")
            .map(|op| op["id"]["id"].as_i64().unwrap())
            .collect();
        if ids.contains(&3) {
            assert_eq!(ids, [3], "the big operation shares its batch");
            assert_eq!(v["count"], 1, "the big operation shares its batch: {v}");
        }
        counts.push(ids.len());
    }
    assert_eq!(counts.iter().sum::<usize>(), 4, "{counts:?}");
}

#[test]
fn duplicate_rows_of_a_keyless_table_stay_right_at_the_receiver() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(
        "CREATE DATABASE t; CREATE TABLE t.tags (n INT, name VARCHAR(10));
         INSERT INTO t.tags VALUES (1, 'x'), (1, 'x'), (2, 'y');
         UPDATE t.tags SET name = 'z' WHERE n = 1 LIMIT 1;
         DELETE FROM t.tags WHERE n = 1 LIMIT 1;
         INSERT INTO t.tags VALUES (2, 'y');",
    );
    let (_d, state, recv_dir) = tmp();
    let mut recv = Receiver::start(&recv_dir, &[]);
    for extra in [&[][..], &["--compact", "--linger", "200ms"][..]] {
        let mut b = Binsync::new(&db, &state, &recv.url(), extra);
        b.catch_up();
        // The source: (1,'z') or (1,'x') once (whichever LIMIT 1 left), (2,'y') twice.
        let mut source: BTreeMap<String, i64> = BTreeMap::new();
        for row in db.rows("SELECT n, name, COUNT(*) FROM t.tags GROUP BY n, name") {
            let id = format!("{{\"n\":{},\"name\":\"{}\"}}", row[0], row[1]);
            source.insert(id, row[2].parse().unwrap());
        }
        let dump = recv.dump_json();
        let mut got: BTreeMap<String, i64> = BTreeMap::new();
        for (id, e) in dump["entities"]["tags"].as_object().unwrap() {
            let copies = e["copies"].as_i64().unwrap_or(0);
            if copies > 0 {
                got.insert(id.clone(), copies);
            }
        }
        assert_eq!(
            got, source,
            "receiver counts against the source ({extra:?})"
        );
        // Again from scratch, compacting this time (dump_json stopped the receiver).
        std::fs::remove_dir_all(&state).unwrap();
        std::fs::remove_dir_all(&recv_dir).unwrap();
        recv = Receiver::start(&recv_dir, &[]);
    }
}

/// A minimal HTTP/1.1 server that records (gunzipped) request bodies and answers 200.
fn capture_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let store = store.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut len = 0usize;
                    let mut gzip = false;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end().to_ascii_lowercase();
                        if h.is_empty() {
                            break;
                        }
                        if let Some(v) = h.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if h.starts_with("content-encoding:") && h.contains("gzip") {
                            gzip = true;
                        }
                    }
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
                    if gzip {
                        let mut plain = Vec::new();
                        flate2::read::GzDecoder::new(&body[..])
                            .read_to_end(&mut plain)
                            .unwrap();
                        body = plain;
                    }
                    store.lock().unwrap().push(body);
                    out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    (addr, bodies)
}

/// A stop while the sync API is down: exit 0, and the last line says how many changes were
/// not delivered and will be sent again, never that everything was; the next start sends them.
#[test]
fn a_stop_during_a_sink_outage_says_what_was_not_delivered() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(common::workload::SCHEMA);
    let (_d, state, rstate) = tmp();
    let mut recv = Receiver::start(&rstate, &[]);
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let mut b = Binsync::new(&db, &state, &recv.url(), &["--metrics-listen", &metrics]);
    b.start();
    db.sql("INSERT INTO t.items VALUES (1, 1, 'before')");
    // Confirmed to binsync, not only applied by the receiver: a receiver stopped between
    // applying a batch and answering leaves that batch unconfirmed too.
    wait_until(
        Duration::from_secs(60),
        "the first row delivered and confirmed",
        || {
            let text = metrics_text(&metrics).unwrap_or_default();
            let sum = |name: &str, with: &str| -> f64 {
                text.lines()
                    .filter(|l| l.starts_with(name) && l.contains(with))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            };
            sum("binsync_row_changes_delivered_total{", "op=\"insert\"") >= 1.0
                && text.lines().any(|l| l == "binsync_chunks_unconfirmed 0")
        },
    );
    recv.stop();
    db.sql("INSERT INTO t.items VALUES (2, 2, 'during'), (3, 3, 'during')");
    std::thread::sleep(Duration::from_secs(2));
    b.proc().sigterm();
    let st = b
        .proc()
        .wait_timeout(Duration::from_secs(60))
        .expect("stops");
    let said = b.proc().stderr();
    assert!(st.success(), "{said}");
    assert!(
        said.contains("changes read were not all delivered")
            && said.contains("undelivered=2")
            && !said.contains("everything read was delivered"),
        "{said}"
    );
    recv.restart_with(&[]);
    b.catch_up();
    let (got, stats) = recv.dump();
    assert_same(&got, &source_state(&db), &stats);
}

/// The receiver down for a few seconds while batches of every lane wait: binsync logs one
/// WARN when the outage starts and one summary when it heals (how long, how many batches and
/// retries, nothing lost), not a line per retry; the receiver ends with every change.
#[test]
fn a_receiver_outage_logs_one_warning_and_one_summary() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(common::workload::SCHEMA);
    let (_d, state, rstate) = tmp();
    let mut recv = Receiver::start(&rstate, &[]);
    let mut b = Binsync::new(&db, &state, &recv.url(), &[]);
    b.start();
    db.sql("INSERT INTO t.items VALUES (1, 1, 'before')");
    let stats_url = format!("http://{}/stats", recv.addr);
    wait_until(Duration::from_secs(60), "the first row delivered", || {
        stats(&stats_url).is_some_and(|s| s["ops_applied"].as_u64().unwrap_or(0) >= 1)
    });
    recv.stop();
    // One transaction per row, over 20 ids: batches on every lane, each retried a few times.
    for i in 2..=21 {
        db.sql(&format!("INSERT INTO t.items VALUES ({i}, {i}, 'during')"));
    }
    std::thread::sleep(Duration::from_secs(4));
    recv.restart_with(&[]);
    wait_until(Duration::from_secs(60), "the outage's summary", || {
        b.proc().stderr().contains("takes batches again")
    });
    b.proc().sigterm();
    let st = b
        .proc()
        .wait_timeout(Duration::from_secs(60))
        .expect("stops");
    let said = b.proc().stderr();
    assert!(st.success(), "{said}");
    let warns: Vec<&str> = said.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warns.len(), 1, "one WARN for the outage:\n{said}");
    assert!(warns[0].contains("not taking batches"), "{said}");
    let heals: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("takes batches again"))
        .collect();
    assert_eq!(heals.len(), 1, "one summary:\n{said}");
    assert!(heals[0].contains("nothing was lost"), "{said}");
    let batches: u64 = heals[0]
        .split_whitespace()
        .find_map(|f| f.strip_prefix("batches=")?.parse().ok())
        .expect("the summary counts the batches");
    assert!(batches >= 2, "several batches held: {said}");
    let (got, stats) = recv.dump();
    assert_same(&got, &source_state(&db), &stats);
    assert_eq!(got.len(), 21);
}

#[test]
fn memory_stays_bounded_during_a_60s_receiver_outage() {
    let db = MariaDb::start(ServerOpts::default());
    let (_d, state, rstate) = tmp();
    let mut recv = Receiver::start(&rstate, &[]);
    let writer = Writer::start(&db, Duration::ZERO);
    let mut b = Binsync::new(&db, &state, &recv.url(), &[]);
    b.start();
    std::thread::sleep(Duration::from_secs(3));
    recv.stop();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            b.proc().wait_timeout(Duration::ZERO).is_none(),
            "{}",
            b.proc().stderr()
        );
    }
    let peak = peak_rss(b.proc().pid());
    let committed = writer.finish();
    eprintln!(
        "peak RSS of binsync during a 60 s receiver outage under load: {:.1} MiB ({committed} transactions committed meanwhile)",
        peak as f64 / (1024.0 * 1024.0)
    );
    assert!(
        peak > 0 && peak < 200 * 1024 * 1024,
        "peak RSS {peak} bytes"
    );
    recv.restart_with(&[]);
    b.proc().sigterm();
    assert!(b
        .proc()
        .wait_timeout(Duration::from_secs(60))
        .expect("stops")
        .success());
    b.catch_up();
    let (got, stats) = recv.dump();
    assert_same(&got, &source_state(&db), &stats);
}
