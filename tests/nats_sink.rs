//! The NATS JetStream sink (`--sink nats://`) against real nats-server processes and MariaDB:
//! what a message holds (one per operation, subject, partition, headers, the file sink's
//! JSON), and exactly-once publishing through binsync crashes, nats-server crashes, an outage
//! longer than the stream's duplicate window, the loss of a cluster node, an operation larger
//! than max_payload and a full stream.
//!
//! The stream is read back with async-nats; the consumer's state is rebuilt with the apply
//! rule of the contract (per (entity, id) the highest seq wins; a delete is a tombstone) and
//! compared with the source tables row by row; no two messages may carry the same
//! (Binsync-Source, Binsync-Seq).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use common::nats::{
    apply, assert_no_duplicates, assert_no_gaps, connect, gapless, read_stream_blocking,
    NatsCluster, NatsServer, StreamMsg,
};
use common::workload::{source_state, Writer};
use common::{wait_until, MariaDb, Proc, ServerOpts};
use serde_json::Value;

fn spawn_run(db: &MariaDb, state: &Path, sink: &str, extra: &[&str]) -> Proc {
    let url = db.url();
    let state = state.display().to_string();
    let mut args = vec![
        "run",
        "--source",
        &url,
        "--server-id",
        "4747",
        "--state-dir",
        &state,
        "--sink",
        sink,
    ];
    args.extend(extra);
    Proc::spawn(&args, &[])
}

/// `binsync run --exit-at-end` into `sink`: it must succeed.
fn catch_up(db: &MariaDb, state: &Path, sink: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["--exit-at-end"];
    args.extend(extra);
    let mut p = spawn_run(db, state, sink, &args);
    let st = p
        .wait_timeout(Duration::from_secs(120))
        .expect("catch-up did not finish in 120 s");
    assert!(st.success(), "catch-up failed: {}", p.stderr());
    p
}

/// Waits until the stream's state equals the source tables and holds every seq (a running
/// binsync caught up).
fn wait_for_source_state(
    db: &MariaDb,
    urls: &str,
    stream: &str,
    timeout: Duration,
) -> Vec<StreamMsg> {
    let want = source_state(db);
    let deadline = Instant::now() + timeout;
    loop {
        let msgs = read_stream_blocking(urls, stream);
        let got = apply(&msgs);
        // The state can match before every seq is in: a message retried after a failure may
        // be an update that a later one (already in) supersedes.
        if got == want && gapless(&msgs) {
            return msgs;
        }
        if Instant::now() > deadline {
            common::workload::assert_same_state(&want, &got);
            assert_no_gaps(&msgs);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The exact bytes of the `"id":{...}` value in a payload.
fn raw_id(line: &str) -> &str {
    let start = line.find(",\"id\":{").expect("an id") + ",\"id\":".len();
    let mut depth = 0;
    for (i, c) in line[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &line[start..start + i + 1];
                }
            }
            _ => {}
        }
    }
    panic!("unterminated id in {line}")
}

/// FNV-1a 64 (written again here, from the reference's constants, to check the sink's).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

// -------------------------------------------------------------------------------------------
// 1. What a message holds
// -------------------------------------------------------------------------------------------

#[test]
fn each_operation_is_one_message_with_its_subject_partition_headers_and_the_file_sinks_json() {
    let db = MariaDb::start(ServerOpts::default());
    let nats = NatsServer::start();
    db.sql(
        "CREATE DATABASE t;
         CREATE TABLE t.items (id INT PRIMARY KEY, v INT, note VARCHAR(20));
         CREATE TABLE t.pairs (a INT, b VARCHAR(10), v INT, PRIMARY KEY (a, b));
         CREATE TABLE t.odd (id INT PRIMARY KEY, v INT);
         INSERT INTO t.items VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 3, 'c');
         UPDATE t.items SET v = 20 WHERE id = 2;
         DELETE FROM t.items WHERE id = 3;
         INSERT INTO t.pairs VALUES (1, 'x', 1), (1, 'y', 2), (2, 'x', 3);
         UPDATE t.pairs SET v = 9 WHERE a = 1 AND b = 'y';
         DELETE FROM t.pairs WHERE a = 2;
         INSERT INTO t.odd VALUES (7, 7);
         BEGIN; INSERT INTO t.items VALUES (10, 10, 'big txn'); UPDATE t.odd SET v = 8; COMMIT;",
    );
    let dir = tempfile::tempdir().unwrap();
    let entity = ["--entity", "t.odd=user events.v1*"];
    let sink = format!("{},127.0.0.1:1", nats.url());
    let p = catch_up(
        &db,
        &dir.path().join("nats-state"),
        &sink,
        &[entity[0], entity[1], "--nats-partitions", "4"],
    );
    eprintln!("{}", p.stderr());
    let file = dir.path().join("changes.jsonl");
    catch_up(
        &db,
        &dir.path().join("file-state"),
        &format!("file:{}", file.display()),
        &entity,
    );
    let lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let msgs = read_stream_blocking(&nats.url(), "binsync");
    assert_eq!(
        msgs.len(),
        lines.len(),
        "one message per operation ({}):\n{}",
        lines.len(),
        p.stderr()
    );
    assert_no_duplicates(&msgs);
    // Both runs number from their own new store: compare seqs from each run's first one.
    let mut by_seq: Vec<&StreamMsg> = msgs.iter().collect();
    by_seq.sort_by_key(|m| m.seq());
    let base_nats = by_seq[0].seq();
    let base_file = serde_json::from_str::<Value>(&lines[0]).unwrap()["seq"]
        .as_u64()
        .unwrap();
    let source = by_seq[0].header("Binsync-Source").to_string();
    assert!(source.starts_with("mariadb-"), "source id {source}");
    let mut ops = HashMap::new();
    for (m, line) in by_seq.iter().zip(&lines) {
        let mut want: Value = serde_json::from_str(line).unwrap();
        let mut got = m.json();
        let seq = m.seq();
        assert_eq!(
            got["seq"].as_u64(),
            Some(seq),
            "Binsync-Seq is the payload's seq"
        );
        assert_eq!(
            seq - base_nats,
            want["seq"].as_u64().unwrap() - base_file,
            "same order"
        );
        // The payload is the file sink's line, but for the run's own seq.
        got["seq"] = Value::Null;
        want["seq"] = Value::Null;
        assert_eq!(got, want, "payload of seq {seq}");
        assert_eq!(m.header("Nats-Msg-Id"), format!("{source}:{seq}"));
        assert_eq!(m.header("Binsync-Source"), source);
        assert_eq!(m.header("Binsync-Contract"), "3");
        let pos = m.header("Binsync-Position");
        assert!(
            pos.contains(':') && pos.contains(" seq="),
            "position header {pos}"
        );
        let pos_seq: u64 = pos
            .split(" seq=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            pos_seq >= seq,
            "the position after the chunk, {pos}, is at or after seq {seq}"
        );
        let entity = got["entity"].as_str().unwrap();
        let token = match entity {
            "user events.v1*" => "user~20events~2Ev1~2A",
            other => other,
        };
        let op = got["op"].as_str().unwrap().to_string();
        let partition = if matches!(op.as_str(), "insert" | "update" | "delete") {
            let raw = raw_id(std::str::from_utf8(&m.payload).unwrap());
            fnv1a(raw.as_bytes()) % 4
        } else {
            0
        };
        assert_eq!(m.subject, format!("binsync.{token}.{partition}"), "{got}");
        *ops.entry((entity.to_string(), op)).or_insert(0) += 1;
    }
    // The mix the statements made (the ddl of each CREATE TABLE too).
    assert_eq!(ops.get(&("items".into(), "insert".into())), Some(&4));
    assert_eq!(ops.get(&("items".into(), "delete".into())), Some(&1));
    assert_eq!(ops.get(&("pairs".into(), "update".into())), Some(&1));
    assert_eq!(ops.get(&("pairs".into(), "delete".into())), Some(&1));
    assert_eq!(
        ops.get(&("user events.v1*".into(), "update".into())),
        Some(&1)
    );
    assert!(ops.contains_key(&("pairs".into(), "ddl".into())));
    // Every partition of items' ids is used as the hash says (not all in one).
    let parts: HashSet<&str> = msgs
        .iter()
        .filter(|m| m.subject.starts_with("binsync.items."))
        .map(|m| m.subject.rsplit('.').next().unwrap())
        .collect();
    assert!(
        parts.len() > 1,
        "items' operations spread over partitions: {parts:?}"
    );
    // A second run with nothing new publishes nothing.
    catch_up(
        &db,
        &dir.path().join("nats-state"),
        &sink,
        &[entity[0], entity[1], "--nats-partitions", "4"],
    );
    assert_eq!(
        read_stream_blocking(&nats.url(), "binsync").len(),
        msgs.len()
    );
}

#[test]
fn an_existing_stream_without_the_prefix_subjects_is_a_definite_error() {
    let db = MariaDb::start(ServerOpts::default());
    let nats = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let js = jetstream::new(connect(&nats.url()).await);
        js.create_stream(stream::Config {
            name: "binsync".into(),
            subjects: vec!["other.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_run(&db, &dir.path().join("s"), &nats.url(), &["--exit-at-end"]);
    let st = p.wait_timeout(Duration::from_secs(60)).expect("it stops");
    assert!(!st.success());
    let err = p.stderr();
    assert!(
        err.contains("binsync.>") && err.contains("other.>") && err.contains("--nats-stream"),
        "{err}"
    );
}

// -------------------------------------------------------------------------------------------
// 2. kill -9 binsync, again and again
// -------------------------------------------------------------------------------------------

#[test]
fn kill_9_twenty_times_under_a_writer_publishes_each_operation_once() {
    let db = MariaDb::start(ServerOpts::default());
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let writer = Writer::start(&db, Duration::from_millis(2));
    let started = Instant::now();
    let mut found = 0;
    for round in 0..20 {
        let mut p = spawn_run(&db, &state, &nats.url(), &[]);
        std::thread::sleep(Duration::from_millis(fastrand::u64(400..1400)));
        p.kill9();
        // How often a restart met operations beyond its checkpoint in the stream (timing).
        found += p.stderr().matches("already in the stream").count();
        eprintln!(
            "round {round}: killed; writer committed {}",
            writer.committed()
        );
    }
    eprintln!("{found} restarts skipped operations found in the stream");
    writer.finish();
    catch_up(&db, &state, &nats.url(), &[]);
    let msgs = read_stream_blocking(&nats.url(), "binsync");
    let n = assert_no_duplicates(&msgs);
    assert_no_gaps(&msgs);
    common::workload::assert_same_state(&source_state(&db), &apply(&msgs));
    eprintln!("{n} messages, {:?}", started.elapsed());
}

// -------------------------------------------------------------------------------------------
// 3. nats-server killed and restarted
// -------------------------------------------------------------------------------------------

#[test]
fn nats_server_killed_and_restarted_mid_stream_loses_and_repeats_nothing() {
    let db = MariaDb::start(ServerOpts::default());
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let writer = Writer::start(&db, Duration::from_millis(2));
    let mut p = spawn_run(&db, &state, &nats.url(), &[]);
    wait_until(Duration::from_secs(30), "messages in the stream", || {
        read_stream_blocking(&nats.url(), "binsync").len() > 200
    });
    for _ in 0..2 {
        nats.kill9();
        std::thread::sleep(Duration::from_millis(1500));
        nats.restart();
        std::thread::sleep(Duration::from_millis(1500));
    }
    writer.finish();
    let msgs = wait_for_source_state(&db, &nats.url(), "binsync", Duration::from_secs(90));
    assert!(
        p.is_running(),
        "binsync rode out the outages: {}",
        p.stderr()
    );
    assert_no_duplicates(&msgs);
    assert_no_gaps(&msgs);
    // Whether publishes were in flight at the kill (a WARN, then an INFO when it heals) or
    // only buffered in the client meanwhile depends on timing: both must lose nothing.
    eprintln!("{}", p.stderr());
    p.sigterm();
    p.wait_timeout(Duration::from_secs(30)).expect("stops");
}

// -------------------------------------------------------------------------------------------
// 4. An outage longer than the duplicate window, then a crash
// -------------------------------------------------------------------------------------------

#[test]
fn a_crash_after_an_outage_longer_than_the_duplicate_window_publishes_nothing_twice() {
    let db = MariaDb::start(ServerOpts::default());
    let nats = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let js = jetstream::new(connect(&nats.url()).await);
        js.create_stream(stream::Config {
            name: "binsync".into(),
            subjects: vec!["binsync.>".into()],
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let writer = Writer::start(&db, Duration::from_millis(1));
    let mut p = spawn_run(&db, &state, &nats.url(), &[]);
    wait_until(Duration::from_secs(30), "messages in the stream", || {
        read_stream_blocking(&nats.url(), "binsync").len() > 100
    });
    // Acks stop coming back; binsync keeps publishing into the server's socket buffer.
    nats.pause();
    std::thread::sleep(Duration::from_millis(1500));
    p.kill9();
    // The server now stores what the dead connection sent, beyond the checkpoint.
    nats.resume();
    let mut last = 0;
    wait_until(Duration::from_secs(30), "the stream settles", || {
        std::thread::sleep(Duration::from_millis(500));
        let n = read_stream_blocking(&nats.url(), "binsync").len();
        let settled = n == last;
        last = n;
        settled
    });
    // Longer than the duplicate window: Nats-Msg-Id no longer protects.
    std::thread::sleep(Duration::from_secs(3));
    let mut p = spawn_run(&db, &state, &nats.url(), &[]);
    std::thread::sleep(Duration::from_secs(2));
    writer.finish();
    let msgs = wait_for_source_state(&db, &nats.url(), "binsync", Duration::from_secs(60));
    assert_no_duplicates(&msgs);
    assert_no_gaps(&msgs);
    let err = p.stderr();
    assert!(
        err.contains("already in the stream"),
        "the restart found operations beyond its checkpoint in the stream (else this test proves nothing): {err}"
    );
    p.sigterm();
    p.wait_timeout(Duration::from_secs(30)).expect("stops");
}

// -------------------------------------------------------------------------------------------
// 5. A cluster of three loses a node
// -------------------------------------------------------------------------------------------

#[test]
fn an_r3_stream_on_three_nodes_loses_one_and_nothing_is_lost_or_repeated() {
    let db = MariaDb::start(ServerOpts::default());
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let writer = Writer::start(&db, Duration::from_millis(2));
    let mut p = spawn_run(&db, &state, &urls, &["--nats-replicas", "3"]);
    wait_until(Duration::from_secs(60), "messages in the stream", || {
        read_stream_blocking(&urls, "binsync").len() > 200
    });
    let alive = {
        let hosts: Vec<String> = cluster.nodes[1..]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("nats://{}", hosts.join(","))
    };
    cluster.nodes[0].kill9();
    std::thread::sleep(Duration::from_secs(3));
    writer.finish();
    let msgs = wait_for_source_state(&db, &alive, "binsync", Duration::from_secs(90));
    assert!(p.is_running(), "{}", p.stderr());
    assert_no_duplicates(&msgs);
    assert_no_gaps(&msgs);
    p.sigterm();
    p.wait_timeout(Duration::from_secs(30)).expect("stops");
}

// -------------------------------------------------------------------------------------------
// 6. An operation larger than max_payload
// -------------------------------------------------------------------------------------------

#[test]
fn an_operation_larger_than_max_payload_stops_with_one_line_naming_it() {
    let db = MariaDb::start(ServerOpts::default());
    let nats = NatsServer::start_with_config("max_payload: 65536\n");
    db.sql(
        "CREATE DATABASE t;
         CREATE TABLE t.docs (id INT PRIMARY KEY, body LONGTEXT);
         INSERT INTO t.docs VALUES (1, 'small');
         INSERT INTO t.docs VALUES (2, REPEAT('x', 100000));
         INSERT INTO t.docs VALUES (3, 'after');",
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut p = spawn_run(&db, &state, &nats.url(), &["--exit-at-end"]);
    let st = p.wait_timeout(Duration::from_secs(60)).expect("it stops");
    assert!(!st.success(), "{}", p.stderr());
    let err = p.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("max_payload")).collect();
    assert_eq!(lines.len(), 1, "one line names max_payload: {err}");
    assert!(
        lines[0].contains("docs") && lines[0].contains("65536"),
        "{}",
        lines[0]
    );
    let msgs = read_stream_blocking(&nats.url(), "binsync");
    let big_seq = msgs
        .iter()
        .find(|m| m.json()["after"]["id"] == 1)
        .map(|m| m.seq() + 1)
        .expect("the small row before it was published");
    assert!(lines[0].contains(&format!("seq {big_seq}")), "{}", lines[0]);
    assert!(
        msgs.iter().all(|m| m.seq() < big_seq),
        "nothing from the big row on"
    );
    let saved = common::workload::saved_seq(&state);
    assert!(
        saved.is_none_or(|s| s < big_seq),
        "checkpoint {saved:?} not past {big_seq}"
    );
}

// -------------------------------------------------------------------------------------------
// 7. A full stream
// -------------------------------------------------------------------------------------------

async fn set_max_msgs(urls: &str, max: i64) {
    let js = jetstream::new(connect(urls).await);
    let mut s = js.get_stream("binsync").await.unwrap();
    let mut cfg = s.info().await.unwrap().config.clone();
    cfg.max_messages = max;
    js.update_stream(cfg).await.unwrap();
}

#[test]
fn a_full_stream_stops_or_waits_and_loses_nothing() {
    let db = MariaDb::start(ServerOpts::default());
    let nats = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let js = jetstream::new(connect(&nats.url()).await);
        js.create_stream(stream::Config {
            name: "binsync".into(),
            subjects: vec!["binsync.>".into()],
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_messages: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    db.sql(common::workload::SCHEMA);
    for i in 0..30 {
        db.sql(&format!("INSERT INTO t.items VALUES ({i}, {i}, 'r')"));
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut p = spawn_run(
        &db,
        &state,
        &nats.url(),
        &["--exit-at-end", "--nats-on-full", "stop"],
    );
    let st = p.wait_timeout(Duration::from_secs(60)).expect("it stops");
    assert!(!st.success());
    let err = p.stderr();
    eprintln!("{err}");
    assert!(
        err.contains("--nats-on-full") && err.contains("full") && err.contains("binsync"),
        "{err}"
    );
    assert_eq!(read_stream_blocking(&nats.url(), "binsync").len(), 10);
    // wait: holds, says so once, and goes on when the limit is raised.
    let mut p = spawn_run(&db, &state, &nats.url(), &["--exit-at-end"]);
    wait_until(Duration::from_secs(30), "the full-stream warning", || {
        p.stderr().contains("refuses messages")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(p.is_running());
    assert_eq!(
        p.stderr().matches("refuses messages").count(),
        1,
        "one WARN per episode"
    );
    rt.block_on(set_max_msgs(&nats.url(), -1));
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("it finishes");
    assert!(st.success(), "{}", p.stderr());
    let msgs = read_stream_blocking(&nats.url(), "binsync");
    assert_no_duplicates(&msgs);
    assert_no_gaps(&msgs);
    common::workload::assert_same_state(&source_state(&db), &apply(&msgs));
}

// -------------------------------------------------------------------------------------------
// Credentials
// -------------------------------------------------------------------------------------------

#[test]
fn credentials_come_from_the_environment_and_a_wrong_one_is_one_clear_line() {
    let db = MariaDb::start(ServerOpts::default());
    let nats = NatsServer::start_with_config("authorization { token: \"s3cret\" }\n");
    db.sql(common::workload::SCHEMA);
    db.sql("INSERT INTO t.items VALUES (1, 1, 'a')");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (url, state_arg) = (db.url(), state.display().to_string());
    let args = [
        "run",
        "--source",
        &url,
        "--server-id",
        "4747",
        "--state-dir",
        &state_arg,
        "--sink",
        &nats.url(),
        "--exit-at-end",
    ];
    let mut p = Proc::spawn(&args, &[("BINSYNC_NATS_TOKEN", "wrong")]);
    let st = p.wait_timeout(Duration::from_secs(60)).expect("it stops");
    assert!(!st.success());
    let err = p.stderr();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("BINSYNC_NATS_TOKEN"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("binsync: error") && !err.contains("wrong"),
        "{err}"
    );
    let mut p = Proc::spawn(&args, &[("BINSYNC_NATS_TOKEN", "s3cret")]);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("it finishes");
    assert!(st.success(), "{}", p.stderr());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = rt.block_on(async {
        let client = async_nats::ConnectOptions::with_token("s3cret".into())
            .connect(nats.url())
            .await
            .unwrap();
        let mut s = jetstream::new(client).get_stream("binsync").await.unwrap();
        s.info().await.unwrap().state.messages
    });
    assert!(
        n >= 1,
        "the insert (and the schema's ddl) were published: {n}"
    );
}

// -------------------------------------------------------------------------------------------
// TLS
// -------------------------------------------------------------------------------------------

#[test]
fn tls_with_a_custom_ca_works_and_without_it_is_one_line_naming_sink_ca() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let pki = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = pki.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "binsync test ca");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let ca_pem = write("ca.pem", &ca.pem());
    let leaf =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    let cert_pem = write("server.pem", &cert.pem());
    let key_pem = write("server.key", &key.serialize_pem());
    let nats = NatsServer::start_with_config(&format!(
        "tls {{ cert_file: \"{cert_pem}\", key_file: \"{key_pem}\" }}\n"
    ));
    let db = MariaDb::start(ServerOpts::default());
    db.sql(common::workload::SCHEMA);
    db.sql("INSERT INTO t.items VALUES (1, 1, 'a')");
    let dir = tempfile::tempdir().unwrap();
    let tls_url = nats.url().replace("nats://", "tls://");
    // Not signed by a CA this machine trusts: one line naming --sink-ca.
    let mut p = spawn_run(&db, &dir.path().join("a"), &tls_url, &["--exit-at-end"]);
    let st = p.wait_timeout(Duration::from_secs(60)).expect("it stops");
    assert!(!st.success());
    let err = p.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("--sink-ca")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("binsync: error"), "{err}");
    // With the CA: published.
    let p = catch_up(
        &db,
        &dir.path().join("b"),
        &tls_url,
        &["--sink-ca", &ca_pem],
    );
    assert!(p.stderr().contains("publishing to NATS JetStream"));
}
