//! Scenario: `binsync receive --from nats://...`, the reference consumer of the JetStream sink,
//! against a real nats-server (tests/common/nats.rs). The tests publish the messages
//! themselves, shaped as docs/sync-api.md ("JetStream") says binsync's sink publishes them
//! (subject `binsync.<entity token>.<partition>` with FNV-1a of the id, headers
//! `Nats-Msg-Id`, `Binsync-Source`, `Binsync-Seq`, `Binsync-Position`, `Binsync-Contract`,
//! payload one operation), and compare `receive dump` with a model of the source's tables:
//! out-of-order and duplicated delivery, a consumer killed with kill -9 and restarted on its
//! durable, a consumer group split by partition, and a message that is not an operation.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::nats::NatsServer;
use common::Proc;
use serde_json::{json, Value};

const SOURCE: &str = "mariadb-1";

/// The sink's partition of an id: FNV-1a 64 of the id's JSON bytes, mod `partitions`.
fn partition(id: &str, partitions: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % partitions
}

/// The entity token as docs/sync-api.md escapes it.
fn token(entity: &str) -> String {
    entity
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("~{b:02X}"),
        })
        .collect()
}

/// One operation as the sink publishes it.
struct Msg {
    subject: String,
    headers: async_nats::HeaderMap,
    payload: String,
}

fn message(op: &Value, partitions: u64) -> Msg {
    let seq = op["seq"].as_u64().unwrap();
    let entity = op["entity"].as_str().unwrap();
    let part = match op.get("id") {
        Some(id) => partition(&id.to_string(), partitions),
        None => 0,
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{SOURCE}:{seq}").as_str());
    headers.insert("Binsync-Source", SOURCE);
    headers.insert("Binsync-Seq", seq.to_string().as_str());
    headers.insert(
        "Binsync-Position",
        format!("mariadb-bin.000001:{} gtid=0-1-{seq} seq={seq}", 1000 + seq).as_str(),
    );
    headers.insert("Binsync-Contract", "3");
    Msg {
        subject: format!("binsync.{}.{part}", token(entity)),
        headers,
        payload: op.to_string(),
    }
}

async fn jetstream(server: &NatsServer) -> jetstream::Context {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "binsync".into(),
        subjects: vec!["binsync.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create the stream");
    js
}

async fn publish(js: &jetstream::Context, msgs: &[Msg]) {
    let mut acks = Vec::new();
    for m in msgs {
        acks.push(
            js.publish_with_headers(
                m.subject.clone(),
                m.headers.clone(),
                m.payload.clone().into(),
            )
            .await
            .expect("publish"),
        );
        if acks.len() >= 256 {
            for a in acks.drain(..) {
                a.await.expect("publish ack");
            }
        }
    }
    for a in acks {
        a.await.expect("publish ack");
    }
}

fn op(
    seq: u64,
    kind: &str,
    entity: &str,
    id: i64,
    before: Option<i64>,
    after: Option<i64>,
) -> Value {
    let mut v = json!({"seq": seq, "op": kind, "db": "shop", "table": entity, "entity": entity,
        "id": {"id": id}, "gtid": format!("0-1-{seq}"), "ts": "2026-12-03T17:00:00Z", "row": 0,
        "file": "mariadb-bin.000001", "offset": 1000 + seq});
    let row = |n: i64| json!({"id": id, "n": n, "name": format!("row {id} v{n}")});
    if kind == "update" {
        v["changed"] = json!(["n", "name"]);
    }
    if let Some(b) = before {
        v["before"] = row(b);
    }
    if let Some(a) = after {
        v["after"] = row(a);
    }
    v
}

/// A keyless table's operation: `id` is the whole row.
fn keyless(seq: u64, kind: &str, before: Option<i64>, after: Option<i64>) -> Value {
    let row = |n: i64| json!({"tag": format!("t{n}"), "n": n});
    let id = row(after.or(before).unwrap());
    let mut v = json!({"seq": seq, "op": kind, "db": "shop", "table": "tags", "entity": "tags",
        "keyless": true, "id": id, "gtid": format!("0-1-{seq}"), "ts": "2026-12-03T17:00:00Z",
        "row": 0, "file": "mariadb-bin.000001", "offset": 1000 + seq});
    if kind == "update" {
        v["changed"] = json!(["tag", "n"]);
    }
    if let Some(b) = before {
        v["before"] = row(b);
    }
    if let Some(a) = after {
        v["after"] = row(a);
    }
    v
}

/// The source's tables after a history: per entity, id text -> row; keyless: row text -> copies.
#[derive(Default, Debug, PartialEq)]
struct Model {
    rows: BTreeMap<String, BTreeMap<String, Value>>,
    copies: BTreeMap<String, i64>,
}

/// A random history of `n` operations on ids 1..=ids of `entities` (inserts of absent ids,
/// updates and deletes of present ones), and of the keyless `tags` table when `with_keyless`;
/// and the tables it leaves.
fn history(
    n: u64,
    ids: i64,
    entities: &[&str],
    with_keyless: bool,
    seed: u64,
) -> (Vec<Value>, Model) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut model = Model::default();
    let mut present: HashMap<(String, i64), i64> = HashMap::new();
    let mut tags: BTreeMap<i64, i64> = BTreeMap::new();
    let mut ops = Vec::new();
    for seq in 1..=n {
        if with_keyless && rng.u8(..5) == 0 {
            // Few identities, repeated: copies count up and down.
            let t = rng.i64(0..4);
            let have = tags.get(&t).copied().unwrap_or(0);
            if have > 0 && rng.bool() {
                ops.push(keyless(seq, "delete", Some(t), None));
                *tags.get_mut(&t).unwrap() -= 1;
            } else {
                ops.push(keyless(seq, "insert", None, Some(t)));
                *tags.entry(t).or_default() += 1;
            }
            continue;
        }
        let entity = entities[rng.usize(..entities.len())];
        let id = rng.i64(1..=ids);
        let key = (entity.to_string(), id);
        let v = seq as i64;
        match present.get(&key).copied() {
            None => {
                ops.push(op(seq, "insert", entity, id, None, Some(v)));
                present.insert(key, v);
            }
            Some(old) if rng.u8(..4) == 0 => {
                ops.push(op(seq, "delete", entity, id, Some(old), None));
                present.remove(&key);
            }
            Some(old) => {
                ops.push(op(seq, "update", entity, id, Some(old), Some(v)));
                present.insert(key, v);
            }
        }
    }
    for ((entity, id), v) in present {
        let row = json!({"id": id, "n": v, "name": format!("row {id} v{v}")});
        model
            .rows
            .entry(entity)
            .or_default()
            .insert(json!({"id": id}).to_string(), row);
    }
    for (t, c) in tags {
        if c > 0 {
            model
                .copies
                .insert(json!({"tag": format!("t{t}"), "n": t}).to_string(), c);
        }
    }
    (ops, model)
}

/// The live rows of a `receive dump`, in the model's shape.
fn state(dump: &Value) -> Model {
    let mut model = Model::default();
    for (entity, rows) in dump["entities"].as_object().into_iter().flatten() {
        for (id, r) in rows.as_object().unwrap() {
            if r["deleted"] == true {
                continue;
            }
            if entity == "tags" {
                model
                    .copies
                    .insert(id.clone(), r["copies"].as_i64().unwrap());
            } else {
                model
                    .rows
                    .entry(entity.clone())
                    .or_default()
                    .insert(id.clone(), r["values"].clone());
            }
        }
    }
    model
}

#[track_caller]
fn dump(dir: &Path) -> Value {
    let out = std::process::Command::new(common::binsync_bin())
        .args(["receive", "dump", "--state-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn receive(server: &NatsServer, dir: &Path, extra: &[&str]) -> Proc {
    let url = server.url();
    let mut args = vec![
        "receive",
        "--from",
        &url,
        "--nats-stream",
        "binsync",
        "--state-dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&args, &[])
}

#[track_caller]
fn exits_ok(p: &mut Proc, within: Duration) {
    let status = p.wait_timeout(within);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        p.stderr()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_order_and_duplicated_messages_converge_to_the_source_state() {
    let server = NatsServer::start();
    let js = jetstream(&server).await;
    // Two entity types, one needing escaping; keyed rows only: any order converges.
    let (ops, model) = history(3000, 60, &["products", "user.events"], false, 7);
    let mut rng = fastrand::Rng::with_seed(8);
    let mut msgs: Vec<Msg> = ops.iter().map(|o| message(o, 8)).collect();
    // A replay's duplicates (publish without Nats-Msg-Id dedupe: other ids) and any order.
    for i in 0..500 {
        let mut again = message(&ops[rng.usize(..ops.len())], 8);
        again
            .headers
            .insert("Nats-Msg-Id", format!("dup-{i}").as_str());
        msgs.push(again);
    }
    rng.shuffle(&mut msgs);
    publish(&js, &msgs).await;

    let dir = tempfile::tempdir().unwrap();
    let mut p = receive(
        &server,
        dir.path(),
        &["--exit-when-idle", "2s", "--nats-batch", "200"],
    );
    exits_ok(&mut p, Duration::from_secs(120));
    assert!(
        p.stdout()
            .contains("consuming stream binsync subjects binsync.> as durable binsync-receive"),
        "{}",
        p.stdout()
    );
    let d = dump(dir.path());
    assert!(!model.rows["user.events"].is_empty() && !model.rows["products"].is_empty());
    assert_eq!(state(&d), model);
    assert_eq!(d["stats"]["ops_received"], 3500, "{}", d["stats"]);
    assert!(
        d["stats"]["ops_stale"].as_u64().unwrap() >= 500,
        "every duplicate is stale: {}",
        d["stats"]
    );

    // Published again, the whole history changes nothing.
    let again: Vec<Msg> = ops
        .iter()
        .map(|o| {
            let mut m = message(o, 8);
            m.headers
                .insert("Nats-Msg-Id", format!("again-{}", o["seq"]).as_str());
            m
        })
        .collect();
    publish(&js, &again).await;
    let mut p = receive(&server, dir.path(), &["--exit-when-idle", "2s"]);
    exits_ok(&mut p, Duration::from_secs(120));
    let d = dump(dir.path());
    assert_eq!(state(&d), model);
    assert_eq!(
        d["stats"]["ops_received"], 6500,
        "resumed on the durable: {}",
        d["stats"]
    );
}

/// The durable's ack floor (stream sequence) and its unacknowledged count.
async fn durable_progress(js: &jetstream::Context, durable: &str) -> Option<(u64, usize)> {
    let stream = js.get_stream("binsync").await.ok()?;
    let mut c = stream
        .get_consumer::<jetstream::consumer::pull::Config>(durable)
        .await
        .ok()?;
    let info = c.info().await.ok()?;
    Some((info.ack_floor.stream_sequence, info.num_ack_pending))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_killed_with_kill_9_resumes_on_its_durable_and_converges() {
    let server = NatsServer::start();
    let js = jetstream(&server).await;
    // In stream order, with a keyless table: its copies count only if every identity's
    // operations are applied in order, also across the kill.
    let total = 50_000;
    let (ops, model) = history(total, 500, &["orders"], true, 11);
    assert!(!model.copies.is_empty());
    let msgs: Vec<Msg> = ops.iter().map(|o| message(o, 8)).collect();
    publish(&js, &msgs).await;

    let dir = tempfile::tempdir().unwrap();
    let mut first = receive(&server, dir.path(), &["--nats-batch", "50"]);
    let mut killed_at = 0;
    common::wait_until(Duration::from_secs(120), "the consumer half-way", || {
        let progress = futures_block(durable_progress(&js, "binsync-receive"));
        if let Some((floor, _)) = progress {
            killed_at = floor;
        }
        killed_at > total / 10
    });
    first.kill9();
    let (floor, unacked) = durable_progress(&js, "binsync-receive").await.unwrap();
    assert!(floor < total, "killed before the end: floor {floor}");

    let mut second = receive(
        &server,
        dir.path(),
        &["--nats-batch", "50", "--exit-when-idle", "2s"],
    );
    exits_ok(&mut second, Duration::from_secs(120));
    if unacked > 0 {
        assert!(
            second
                .stderr()
                .contains("starting it over at its ack floor"),
            "{unacked} unacked: {}",
            second.stderr()
        );
    }
    let d = dump(dir.path());
    assert_eq!(state(&d), model);
    // Resumed: what the first life applied is not read again, beyond what was unacked.
    let received = d["stats"]["ops_received"].as_u64().unwrap();
    assert!(
        (total..total + 500).contains(&received),
        "received {received} for {total} messages (ack floor at the kill {floor})"
    );
}

/// Runs a future to completion from a sync closure inside the multi-thread runtime.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_consumers_with_partition_filters_together_hold_the_whole_state() {
    let server = NatsServer::start();
    let js = jetstream(&server).await;
    // Published as `--nats-partitions 2` would: each member of the group takes one.
    let (ops, model) = history(4000, 200, &["products", "orders"], false, 21);
    let msgs: Vec<Msg> = ops.iter().map(|o| message(o, 2)).collect();
    publish(&js, &msgs).await;

    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut members: Vec<Proc> = (0..2)
        .map(|k| {
            let filter = format!("binsync.*.{k}");
            let durable = format!("group-{k}");
            receive(
                &server,
                dirs[k].path(),
                &[
                    "--filter",
                    &filter,
                    "--durable",
                    &durable,
                    "--exit-when-idle",
                    "2s",
                ],
            )
        })
        .collect();
    for m in &mut members {
        exits_ok(m, Duration::from_secs(120));
    }
    let mut union = Model::default();
    let mut received = 0;
    for (k, dir) in dirs.iter().enumerate() {
        let d = dump(dir.path());
        received += d["stats"]["ops_received"].as_u64().unwrap();
        let part = state(&d);
        assert!(!part.rows.is_empty(), "member {k} got nothing");
        for (entity, rows) in part.rows {
            for (id, row) in rows {
                assert_eq!(partition(&id, 2), k as u64, "{entity} {id} in member {k}");
                assert!(
                    union
                        .rows
                        .entry(entity.clone())
                        .or_default()
                        .insert(id, row)
                        .is_none(),
                    "a row in both members"
                );
            }
        }
    }
    assert_eq!(union, model);
    assert_eq!(received, 4000, "each message to one member, once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_is_not_an_operation_stops_the_consumer_and_is_not_skipped() {
    let server = NatsServer::start();
    let js = jetstream(&server).await;
    let good = |seq: u64| message(&op(seq, "insert", "products", seq as i64, None, Some(1)), 8);
    publish(&js, &[good(1), good(2), good(3)]).await;
    // Stream sequence 4: not JSON (cut short), with a binsync message's headers.
    let mut bad = good(4);
    bad.payload.truncate(30);
    publish(&js, &[bad, good(5)]).await;

    let dir = tempfile::tempdir().unwrap();
    let mut p = receive(&server, dir.path(), &["--exit-when-idle", "2s"]);
    let status = p.wait_timeout(Duration::from_secs(60)).expect("it stops");
    assert!(!status.success());
    let err = p.stderr();
    assert!(
        err.contains("stream binsync message 4 on binsync.products.")
            && err.contains("is not a valid binsync operation")
            && err.contains("not valid JSON")
            && err.contains("nats stream rmm binsync 4"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let live = |d: &Value| {
        let mut ids: Vec<String> = state(d)
            .rows
            .remove("products")
            .unwrap_or_default()
            .into_keys()
            .collect();
        ids.sort();
        ids
    };
    let d = dump(dir.path());
    assert_eq!(
        live(&d),
        ["{\"id\":1}", "{\"id\":2}", "{\"id\":3}"],
        "applied up to the bad one"
    );

    // Started again, it stops on the same message: it was not acknowledged, nor skipped.
    let mut p = receive(&server, dir.path(), &["--exit-when-idle", "2s"]);
    let status = p.wait_timeout(Duration::from_secs(60)).expect("it stops");
    assert!(!status.success());
    assert!(p.stderr().contains("message 4 on"), "{}", p.stderr());

    // An operation without seq, and one of another source, are refused the same way.
    for (case, needle) in [
        ("no-seq", "missing field `seq`"),
        ("other-source", "comes from source `mysql-9`"),
    ] {
        let server = NatsServer::start();
        let js = jetstream(&server).await;
        let mut m = good(2);
        match case {
            "no-seq" => {
                let mut v: Value = serde_json::from_str(&m.payload).unwrap();
                v.as_object_mut().unwrap().remove("seq");
                m.payload = v.to_string();
            }
            _ => {
                m.headers.insert("Binsync-Source", "mysql-9");
            }
        }
        publish(&js, &[good(1), m]).await;
        let dir = tempfile::tempdir().unwrap();
        let mut p = receive(&server, dir.path(), &["--exit-when-idle", "2s"]);
        let status = p.wait_timeout(Duration::from_secs(60)).expect("it stops");
        assert!(!status.success(), "{case}");
        assert!(
            p.stderr().contains("message 2 on") && p.stderr().contains(needle),
            "{case}: {}",
            p.stderr()
        );
        assert_eq!(live(&dump(dir.path())), ["{\"id\":1}"], "{case}");
    }
}

/// Every message of the stream: (subject, Binsync-Source, Binsync-Seq), read with an
/// ephemeral consumer (headers only).
async fn stream_messages(url: &str, stream_name: &str) -> Vec<(String, String, u64)> {
    use futures_util::StreamExt;
    let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
    let stream = js.get_stream(stream_name).await.expect("the stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            headers_only: true,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("an ephemeral consumer");
    let mut out = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .messages()
            .await
            .expect("fetch");
        let before = out.len();
        while let Some(m) = batch.next().await {
            let m = m.expect("a message");
            let h = m.headers.as_ref().expect("headers");
            let get = |k: &str| h.get(k).map(|v| v.as_str().to_string()).unwrap_or_default();
            out.push((
                m.subject.to_string(),
                get("Binsync-Source"),
                get("Binsync-Seq").parse().expect("Binsync-Seq"),
            ));
        }
        if out.len() == before {
            return out;
        }
    }
}

/// MariaDB → `binsync run --sink nats://` (killed with kill -9 a few times under a writer)
/// → `binsync receive --from nats://` → `receive dump` equals the source tables, and the stream
/// holds each (source, seq) once.
#[test]
fn mariadb_through_the_jetstream_sink_and_receive_from_nats_equals_the_source_tables() {
    use common::workload::{assert_same_state, canonical_id, source_state, State, Writer};
    let db = common::MariaDb::start(common::ServerOpts::default());
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (state, rstate) = (dir.path().join("binsync"), dir.path().join("recv"));
    let (url, state_text) = (db.url(), state.display().to_string());
    let sink = server.url();
    let args = [
        "run",
        "--source",
        &url,
        "--server-id",
        "5151",
        "--state-dir",
        &state_text,
        "--start",
        "earliest",
        "--sink",
        &sink,
        "--nats-partitions",
        "4",
    ];
    let writer = Writer::start(&db, Duration::from_millis(2));
    let mut consumer = receive(&server, &rstate, &[]);
    for _ in 0..4 {
        let mut run = Proc::spawn(&args, &[]);
        std::thread::sleep(Duration::from_millis(fastrand::u64(1500..3000)));
        assert!(run.is_running(), "binsync stopped: {}", run.stderr());
        run.kill9();
    }
    let committed = writer.finish();
    let mut catch_up = args.to_vec();
    catch_up.push("--exit-at-end");
    let mut run = Proc::spawn(&catch_up, &[]);
    exits_ok(&mut run, Duration::from_secs(300));
    // The consumer has run all along; stopped, then drained by a second life.
    consumer.sigterm();
    exits_ok(&mut consumer, Duration::from_secs(60));
    let mut drain = receive(&server, &rstate, &["--exit-when-idle", "2s"]);
    exits_ok(&mut drain, Duration::from_secs(120));

    let d = dump(&rstate);
    let mut got = State::new();
    for (entity, rows) in d["entities"].as_object().unwrap() {
        for (id, r) in rows.as_object().unwrap() {
            if r["deleted"] != true {
                let id: Value = serde_json::from_str(id).unwrap();
                got.insert((entity.clone(), canonical_id(&id)), r["values"].clone());
            }
        }
    }
    eprintln!(
        "writer committed {committed} transactions; consumer stats {}",
        d["stats"]
    );
    assert!(committed > 100, "the writer ran: {committed}");
    assert_same_state(&source_state(&db), &got);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let messages = rt.block_on(stream_messages(&server.url(), "binsync"));
    let mut seen = std::collections::HashSet::new();
    for (subject, source, seq) in &messages {
        assert!(subject.starts_with("binsync."), "{subject}");
        assert!(
            seen.insert((source.clone(), *seq)),
            "({source}, {seq}) twice in the stream"
        );
    }
    let received = d["stats"]["ops_received"].as_u64().unwrap() as usize;
    assert!(
        received >= messages.len(),
        "the consumer read the whole stream: {received} of {}",
        messages.len()
    );
}

/// Mistakes in `receive --from` give one error line naming the fix, and a non-zero exit.
#[tokio::test(flavor = "multi_thread")]
async fn receive_from_mistakes_name_the_fix() {
    let server = NatsServer::start();
    let js = jetstream(&server).await;
    publish(
        &js,
        &[message(&op(1, "insert", "products", 1, None, Some(1)), 8)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let url = server.url();
    let unreachable = format!("nats://127.0.0.1:{}", common::free_port());
    let cases: [(&[&str], &str); 5] = [
        (&["receive", "--from", &url], "no --state-dir"),
        (
            &["receive", "--from", "http://x:1", "--state-dir", state],
            "write nats://HOST:PORT",
        ),
        (
            &["receive", "--from", &unreachable, "--state-dir", state],
            "cannot connect to",
        ),
        (
            &[
                "receive",
                "--from",
                &url,
                "--state-dir",
                state,
                "--filter",
                "other.*.0",
            ],
            "is not a subject under `binsync.`",
        ),
        (
            &[
                "receive",
                "--from",
                &url,
                "--state-dir",
                state,
                "--listen",
                "127.0.0.1:0",
            ],
            "cannot be used with",
        ),
    ];
    for (args, needle) in cases {
        let mut p = Proc::spawn(args, &[]);
        let status = p.wait_timeout(Duration::from_secs(60)).expect("it exits");
        let err = p.stderr();
        assert!(
            !status.success() && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(needle),
            "{args:?} should say `{needle}`: {err}"
        );
    }
    // A durable keeps its filter: another one under the same name is refused, naming the fix.
    let mut first = receive(
        &server,
        dir.path(),
        &[
            "--filter",
            "binsync.*.0",
            "--durable",
            "d",
            "--exit-when-idle",
            "1s",
        ],
    );
    exits_ok(&mut first, Duration::from_secs(60));
    let mut p = receive(
        &server,
        dir.path(),
        &["--filter", "binsync.*.1", "--durable", "d"],
    );
    let status = p.wait_timeout(Duration::from_secs(60)).expect("it exits");
    assert!(!status.success());
    assert!(
        p.stderr()
            .contains("reads subjects `binsync.*.0`, not `binsync.*.1`")
            && p.stderr().contains("give each --filter its own --durable"),
        "{}",
        p.stderr()
    );
}
