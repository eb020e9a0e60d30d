//! Scenario: a sender talks to the reference receiver (`binsync receive`) over real HTTP on
//! 127.0.0.1, the way binsync's HTTP sink does. Each test is one thing an operator or a sender
//! author would see: the apply rule (newer seq wins, older is counted stale, deletes leave
//! tombstones), gzip bodies, refusals with a reason (400, 401, 413, 415), each injected fault,
//! poisoned batches, idempotent re-sends, state that survives a restart, and `dump`; contract
//! v2's operations on a whole entity type (truncate, drop, ddl) and the version checks;
//! contract v3's initial snapshot (read, snapshot_end); and that the contract document, its
//! JSON Schema and the receiver agree.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use binsync_receiver::{self as receive, Fault, ReceiveError, ReceiveOptions};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A receiver running in this process on 127.0.0.1:<free port>.
struct Receiver {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ReceiveError>>,
}

impl Receiver {
    async fn start(opts: ReceiveOptions) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(receive::run(listener, opts, async {
            let _ = rx.await;
        }));
        // The listener is bound already; the first answer means the store is open too.
        let health = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        Receiver {
            addr,
            stop: Some(tx),
            task,
        }
    }

    async fn plain(dir: &Path) -> Receiver {
        Receiver::start(options(dir)).await
    }

    fn url(&self) -> String {
        format!("http://{}/sync", self.addr)
    }

    async fn stats(&self) -> Value {
        let text = reqwest::get(format!("http://{}/stats", self.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Stops it and waits (bounded) for `run` to return.
    async fn stop(mut self) -> Result<(), ReceiveError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the receiver did not stop within 30 s")
            .expect("the receiver task panicked")
    }
}

fn options(dir: &Path) -> ReceiveOptions {
    ReceiveOptions::new("127.0.0.1:0".parse().unwrap(), dir)
}

fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("receiver");
    (tmp, dir)
}

// ----- building bodies the way binsync does -------------------------------------------------

fn op(seq: u64, kind: &str, entity: &str, id: i64, price: i64) -> Value {
    let mut v = json!({"seq": seq, "op": kind, "db": "shop", "table": entity, "entity": entity,
        "id": {"id": id}, "gtid": format!("0-1-{seq}"), "ts": "2026-11-24T07:37:31Z",
        "row": 0, "file": "mariadb-bin.000001", "offset": 1000 + seq});
    let image = json!({"id": id, "price": price, "note": format!("n{id}")});
    match kind {
        "insert" => v["after"] = image,
        "update" => {
            v["changed"] = json!(["price"]);
            v["before"] = json!({"id": id, "price": price - 1, "note": format!("n{id}")});
            v["after"] = image;
        }
        "delete" => v["before"] = image,
        other => panic!("no op kind {other}"),
    }
    v
}

fn insert(seq: u64, id: i64, price: i64) -> Value {
    op(seq, "insert", "products", id, price)
}

fn update(seq: u64, id: i64, price: i64) -> Value {
    op(seq, "update", "products", id, price)
}

fn delete(seq: u64, id: i64) -> Value {
    op(seq, "delete", "products", id, 0)
}

/// A ddl, truncate or drop of `entity` (contract v2), as binsync's decoder writes it.
fn on_type(seq: u64, kind: &str, entity: &str) -> Value {
    let mut v = json!({"seq": seq, "op": kind, "db": "shop", "table": entity, "entity": entity,
        "gtid": format!("0-1-{seq}"), "ts": "2026-11-24T07:37:31Z",
        "file": "mariadb-bin.000001", "offset": 1000 + seq});
    let statement = match kind {
        "ddl" => {
            v["columns"] = json!([
                {"name": "id", "type": "int(11)", "nullable": false, "json": false},
                {"name": "price", "type": "int(11)", "nullable": true, "json": false},
                {"name": "note", "type": "varchar(20)", "nullable": true, "json": false}]);
            v["key"] = json!(["id"]);
            format!("ALTER TABLE {entity} ADD COLUMN note VARCHAR(20)")
        }
        "truncate" => format!("TRUNCATE TABLE {entity}"),
        "drop" => format!("DROP TABLE {entity}"),
        other => panic!("no operation on a type {other}"),
    };
    v["statement"] = json!(statement);
    v
}

/// A read of `products` (contract v3), as binsync's snapshot writes it: an insert's fields
/// without `gtid` and `row`, at the chunk's position.
fn read(seq: u64, id: i64, price: i64) -> Value {
    let mut v = insert(seq, id, price);
    v["op"] = json!("read");
    v["gtid"] = Value::Null;
    v.as_object_mut().unwrap().remove("row");
    v
}

/// The snapshot_end of `entity` (contract v3).
fn snapshot_end(seq: u64, since: u64, entity: &str) -> Value {
    json!({"seq": seq, "op": "snapshot_end", "db": "shop", "table": entity, "entity": entity,
        "gtid": null, "ts": "2026-11-24T07:37:31Z", "file": "mariadb-bin.000001",
        "offset": 1000 + seq, "since": since})
}

/// A version 3 batch of `ops`.
fn batch_v3(ops: Vec<Value>) -> Value {
    let mut b = batch(ops);
    b["version"] = json!(3);
    b
}

/// A version 2 batch of `ops`.
fn batch_v2(ops: Vec<Value>) -> Value {
    let mut b = batch(ops);
    b["version"] = json!(2);
    b
}

/// A batch of `ops` (grouped per entity, in the given order), with binsync's batch id.
fn batch(ops: Vec<Value>) -> Value {
    let seqs: Vec<u64> = ops.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
    let (first, last) = (*seqs.iter().min().unwrap(), *seqs.iter().max().unwrap());
    let mut entities = serde_json::Map::new();
    for o in &ops {
        entities
            .entry(o["entity"].as_str().unwrap().to_string())
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .unwrap()
            .push(o.clone());
    }
    json!({"version": 1, "batch_id": format!("mariadb-1-{first}-{last}"),
        "source": {"flavor": "mariadb", "server_id": 1, "server_uuid": null},
        "first_seq": first, "last_seq": last, "count": ops.len(), "entities": entities})
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// POSTs `bytes` with the contract's headers plus `extra`.
async fn post_raw(
    url: &str,
    bytes: Vec<u8>,
    extra: &[(&str, &str)],
) -> Result<Reply, reqwest::Error> {
    post_with(&client(), url, bytes, extra).await
}

async fn post_with(
    client: &reqwest::Client,
    url: &str,
    bytes: Vec<u8>,
    extra: &[(&str, &str)],
) -> Result<Reply, reqwest::Error> {
    let mut req = client.post(url).header("Content-Type", "application/json");
    if !extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("x-binsync-contract"))
    {
        req = req.header("X-Binsync-Contract", "1");
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.body(bytes).send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// POSTs `body` as binsync would: its batch id as `Idempotency-Key`, its version as
/// `X-Binsync-Contract`.
async fn post(url: &str, body: &Value) -> Reply {
    let key = body["batch_id"].as_str().unwrap().to_string();
    let version = body["version"].to_string();
    post_raw(
        url,
        serde_json::to_vec(body).unwrap(),
        &[("Idempotency-Key", &key), ("X-Binsync-Contract", &version)],
    )
    .await
    .expect("request failed")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn entity<'a>(dump: &'a Value, name: &str, id: i64) -> &'a Value {
    &dump["entities"][name][format!("{{\"id\":{id}}}")]
}

// ----- the apply rule -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_seq_wins_and_an_older_replay_is_counted_stale() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let a = post(&r.url(), &batch(vec![insert(1, 1, 10), update(3, 1, 30)])).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["applied"], 2);
    // A replay of seq 2 (older than what is stored) is acknowledged and dropped.
    let b = post(&r.url(), &batch(vec![update(2, 1, 20)])).await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(
        (b.body["applied"].clone(), b.body["stale"].clone()),
        (json!(0), json!(1))
    );
    let stats = r.stats().await;
    assert_eq!(stats["ops_applied"], 2);
    assert_eq!(stats["ops_stale"], 1);
    r.stop().await.unwrap();

    let dump = receive::dump(&dir).unwrap();
    assert_eq!(
        *entity(&dump, "products", 1),
        json!({"seq": 3, "deleted": false, "values": {"id": 1, "price": 30, "note": "n1"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_leaves_a_tombstone_that_outranks_older_replays() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    assert_eq!(
        post(&r.url(), &batch(vec![insert(1, 7, 1), delete(2, 7)]))
            .await
            .status,
        200
    );
    // The insert again (a replay): the tombstone's seq 2 is higher.
    let replay = post(&r.url(), &batch(vec![insert(1, 7, 1)])).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.body["stale"], 1);
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    assert_eq!(
        *entity(&dump, "products", 7),
        json!({"seq": 2, "deleted": true})
    );

    // A later insert of the same id brings it back.
    let r = Receiver::plain(&dir).await;
    assert_eq!(
        post(&r.url(), &batch(vec![insert(9, 7, 99)])).await.status,
        200
    );
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    assert_eq!(entity(&dump, "products", 7)["deleted"], false);
    assert_eq!(entity(&dump, "products", 7)["values"]["price"], 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_with_replays_converge_to_the_highest_seq_per_id() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    // 4 lanes (like binsync's in-flight batches), ids partitioned by lane; every batch is also
    // re-sent later (a crash replay) with a different grouping.
    let mut lanes = Vec::new();
    for lane in 0..4i64 {
        let url = r.url();
        lanes.push(tokio::spawn(async move {
            let client = client();
            let mut seq = lane as u64 * 10_000;
            let mut sent = Vec::new();
            for round in 0..25i64 {
                let ops: Vec<Value> = (0..4)
                    .map(|k| {
                        seq += 1;
                        let id = lane * 100 + k;
                        if round == 0 {
                            insert(seq, id, round)
                        } else {
                            update(seq, id, round)
                        }
                    })
                    .collect();
                sent.extend(ops.clone());
                let body = batch(ops);
                let key = body["batch_id"].as_str().unwrap().to_string();
                let reply = post_with(
                    &client,
                    &url,
                    serde_json::to_vec(&body).unwrap(),
                    &[("Idempotency-Key", &key)],
                )
                .await
                .unwrap();
                assert_eq!(reply.status, 200, "{}", reply.body);
            }
            // Replay everything in batches of 7: all stale.
            for chunk in sent.chunks(7) {
                let reply = post(&url, &batch(chunk.to_vec())).await;
                assert_eq!(reply.status, 200, "{}", reply.body);
                assert_eq!(reply.body["applied"], 0, "{}", reply.body);
            }
        }));
    }
    for lane in lanes {
        lane.await.unwrap();
    }
    let stats = r.stats().await;
    assert_eq!(stats["ops_applied"], 400);
    assert_eq!(stats["ops_stale"], 400);
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    assert_eq!(dump["entities"]["products"].as_object().unwrap().len(), 16);
    for lane in 0..4i64 {
        for k in 0..4 {
            let e = entity(&dump, "products", lane * 100 + k);
            assert_eq!(e["values"]["price"], 24, "{e}");
            assert_eq!(e["seq"], lane as u64 * 10_000 + 96 + k as u64 + 1, "{e}");
        }
    }
}

// ----- bodies -------------------------------------------------------------------------------

/// An operation on `shop.tags (n INT, s VARCHAR)`, a table without a primary key: binsync
/// marks it `"keyless": true` and its `id` is the whole row.
fn tag(seq: u64, kind: &str, n: i64, s: &str) -> Value {
    let row = json!({"n": n, "s": s});
    let mut v = json!({"seq": seq, "op": kind, "db": "shop", "table": "tags", "entity": "tags",
        "keyless": true, "id": row, "gtid": null, "ts": "2026-11-24T07:37:31Z", "row": 0,
        "file": "mariadb-bin.000001", "offset": 1000 + seq});
    v[if kind == "delete" { "before" } else { "after" }] = row;
    v
}

/// The issue's scenario: `INSERT INTO tags VALUES (1,'x'),(1,'x'),(2,'y')`, then
/// `UPDATE tags SET n=2, s='y' WHERE n=1 LIMIT 1` (binsync sends a delete and an insert: the
/// row's identity changes) and `DELETE FROM tags WHERE n=2 LIMIT 1`. The source keeps one
/// (1,'x') and one (2,'y'); the receiver must too, also after replays. (With the keyed rule
/// the delete of one (1,'x') deleted both.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_table_keeps_a_count_per_identical_row_through_replays() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let ops = [
        tag(1, "insert", 1, "x"),
        tag(2, "insert", 1, "x"),
        tag(3, "insert", 2, "y"),
        tag(4, "delete", 1, "x"),
        tag(5, "insert", 2, "y"),
        tag(6, "delete", 2, "y"),
    ];
    let first = post(&r.url(), &batch(ops[..3].to_vec())).await;
    assert_eq!(first.body["applied"], 3, "{}", first.body);
    let second = post(&r.url(), &batch(ops[3..].to_vec())).await;
    assert_eq!(second.body["applied"], 3, "{}", second.body);
    // A sender that crashed replays, grouped otherwise: nothing counts twice.
    let replay = post(&r.url(), &batch(ops[1..5].to_vec())).await;
    assert_eq!(replay.body["applied"], 0, "{}", replay.body);
    assert_eq!(replay.body["stale"], 4, "{}", replay.body);
    r.stop().await.unwrap();

    let dump = receive::dump(&dir).unwrap();
    let tags = &dump["entities"]["tags"];
    assert_eq!(
        tags["{\"n\":1,\"s\":\"x\"}"],
        json!({"seq": 4, "deleted": false, "copies": 1, "values": {"n": 1, "s": "x"}})
    );
    assert_eq!(
        tags["{\"n\":2,\"s\":\"y\"}"],
        json!({"seq": 6, "deleted": false, "copies": 1, "values": {"n": 2, "s": "y"}})
    );
}

/// Duplicates that stay: two identical rows inserted, one deleted, one left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_one_of_two_identical_rows_leaves_the_other() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let reply = post(
        &r.url(),
        &batch(vec![
            tag(1, "insert", 1, "x"),
            tag(2, "insert", 1, "x"),
            tag(3, "delete", 1, "x"),
        ]),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    let row = &dump["entities"]["tags"]["{\"n\":1,\"s\":\"x\"}"];
    assert_eq!(row["deleted"], false, "{row}");
    assert_eq!(row["copies"], 1, "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_body_is_accepted_and_a_broken_one_is_refused() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let body = batch(vec![insert(1, 1, 10), op(2, "insert", "users", 5, 0)]);
    let reply = post_raw(
        &r.url(),
        gzip(&serde_json::to_vec(&body).unwrap()),
        &[("Content-Encoding", "gzip")],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["applied"], 2);

    let broken = post_raw(
        &r.url(),
        b"\x1f\x8b not really".to_vec(),
        &[("Content-Encoding", "gzip")],
    )
    .await
    .unwrap();
    assert_eq!(broken.status, 400);
    assert!(
        broken.body["error"].as_str().unwrap().contains("gunzip"),
        "{}",
        broken.body
    );
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    assert_eq!(entity(&dump, "users", 5)["seq"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_refused_with_400_naming_the_reason() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let reason = |reply: &Reply| reply.body["error"].as_str().unwrap_or("").to_string();

    let not_json = post_raw(&r.url(), b"hello".to_vec(), &[]).await.unwrap();
    assert_eq!(not_json.status, 400);
    assert!(reason(&not_json).contains("JSON"), "{}", not_json.body);

    let mut v4 = batch(vec![insert(1, 1, 1)]);
    v4["version"] = json!(4);
    // Under a header the receiver knows: the body's version is what is refused.
    let v4 = post_raw(&r.url(), serde_json::to_vec(&v4).unwrap(), &[])
        .await
        .unwrap();
    assert_eq!(v4.status, 400);
    assert!(reason(&v4).contains("version 4"), "{}", v4.body);

    let mut missing = batch(vec![insert(1, 1, 1)]);
    missing.as_object_mut().unwrap().remove("count");
    let missing = post(&r.url(), &missing).await;
    assert_eq!(missing.status, 400);
    assert!(
        reason(&missing).contains("missing field `count`"),
        "{}",
        missing.body
    );

    let mut no_after = insert(1, 1, 1);
    no_after.as_object_mut().unwrap().remove("after");
    let no_after = post(&r.url(), &batch(vec![no_after])).await;
    assert_eq!(no_after.status, 400);
    assert!(
        reason(&no_after).contains("an insert needs `after`"),
        "{}",
        no_after.body
    );

    let key_mismatch = post_raw(
        &r.url(),
        serde_json::to_vec(&batch(vec![insert(1, 1, 1)])).unwrap(),
        &[("Idempotency-Key", "something-else")],
    )
    .await
    .unwrap();
    assert_eq!(key_mismatch.status, 400);
    assert!(
        reason(&key_mismatch).contains("Idempotency-Key"),
        "{}",
        key_mismatch.body
    );

    let text_plain = client()
        .post(r.url())
        .header("Content-Type", "text/plain")
        .body(serde_json::to_vec(&batch(vec![insert(1, 1, 1)])).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(text_plain.status(), 415);

    let stats = r.stats().await;
    assert_eq!(stats["rejected"], 6, "{stats}");
    assert_eq!(stats["ops_applied"], 0, "{stats}");
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_beyond_max_body_bytes_is_413_even_when_it_only_grows_on_gunzip() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::start(ReceiveOptions {
        max_body_bytes: 1 << 20,
        ..options(&dir)
    })
    .await;
    let plain = post_raw(&r.url(), vec![b' '; (1 << 20) + 1], &[])
        .await
        .unwrap();
    let bomb = gzip(&vec![b' '; (1 << 20) + 1]);
    assert!(bomb.len() < 1 << 20);
    let inflated = post_raw(&r.url(), bomb, &[("Content-Encoding", "gzip")])
        .await
        .unwrap();
    for reply in [plain, inflated] {
        assert_eq!(reply.status, 413, "{}", reply.body);
        let reason = reply.body["error"].as_str().unwrap();
        assert!(reason.contains("1 MiB"), "{reason}");
        assert!(reason.contains("--max-body-bytes"), "{reason}");
    }
    assert_eq!(r.stats().await["rejected"], 2);
    r.stop().await.unwrap();
}

/// The default limit (256 MiB) lets a batch of one 70 MB row through: a row that large must
/// not be undeliverable forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_row_of_70_mb_is_delivered_with_the_default_limit() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let mut big = insert(1, 1, 1);
    big["after"]["note"] = json!("x".repeat(70_000_000));
    let reply = post(&r.url(), &batch(vec![big])).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    let note = entity(&dump, "products", 1)["values"]["note"]
        .as_str()
        .unwrap();
    assert_eq!(note.len(), 70_000_000);
}

/// JSON nested `levels` deep: `[[...[1]...]]`.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!([inner]))
}

/// The body is depth 1 and a column value starts at depth 6: with the default `--max-depth`
/// 110 a value may nest 105 levels (MySQL's JSON allows 100). Deeper is refused before anything is applied, so that the
/// store stays readable (it used to be answered 200, and `dump` then refused the whole store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_nested_deeper_than_max_depth_is_400_and_the_store_stays_readable() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let mut fits = insert(1, 1, 1);
    fits["after"]["doc"] = nested(105);
    assert_eq!(post(&r.url(), &batch(vec![fits])).await.status, 200);
    let mut deep = insert(2, 2, 1);
    deep["after"]["doc"] = nested(127);
    let other = insert(3, 3, 1);
    let reply = post(&r.url(), &batch(vec![deep, other])).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reason = reply.body["error"].as_str().unwrap();
    assert!(reason.contains("more than 110 deep"), "{reason}");
    assert!(reason.contains("--max-depth"), "{reason}");
    let mut just_over = insert(4, 4, 1);
    just_over["after"]["doc"] = nested(106);
    assert_eq!(post(&r.url(), &batch(vec![just_over])).await.status, 400);
    r.stop().await.unwrap();

    let dump = receive::dump(&dir).expect("the store stays readable");
    assert_eq!(entity(&dump, "products", 1)["values"]["doc"], nested(105));
    for id in [2, 3, 4] {
        assert!(
            entity(&dump, "products", id).is_null(),
            "nothing of it applied"
        );
    }
    assert_eq!(dump["stats"]["rejected"], 2);
}

/// The highest `--max-depth` still leaves what it accepts readable by `dump`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_max_depth_keeps_dump_readable() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::start(ReceiveOptions {
        max_depth: receive::MAX_DEPTH_LIMIT,
        ..options(&dir)
    })
    .await;
    let mut deep = insert(1, 1, 1);
    deep["after"]["doc"] = nested(receive::MAX_DEPTH_LIMIT - 5);
    assert_eq!(post(&r.url(), &batch(vec![deep])).await.status, 200);
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    let text = serde_json::to_string(&dump).unwrap();
    let again: Value = serde_json::from_str(&text).expect("dump's output parses with serde_json");
    assert_eq!(
        entity(&again, "products", 1)["values"]["doc"],
        nested(receive::MAX_DEPTH_LIMIT - 5)
    );
}

// ----- authorization ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_authorization_is_401_and_the_right_one_passes() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::start(ReceiveOptions {
        auth: Some("Bearer s3cret-token".into()),
        ..options(&dir)
    })
    .await;
    let body = serde_json::to_vec(&batch(vec![insert(1, 1, 1)])).unwrap();

    let none = post_raw(&r.url(), body.clone(), &[]).await.unwrap();
    assert_eq!(none.status, 401);
    let wrong = post_raw(&r.url(), body.clone(), &[("Authorization", "Bearer guess")])
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);
    assert!(!wrong.body.to_string().contains("s3cret"), "{}", wrong.body);
    let right = post_raw(&r.url(), body, &[("Authorization", "Bearer s3cret-token")])
        .await
        .unwrap();
    assert_eq!(right.status, 200, "{}", right.body);

    // Health and counters stay open.
    let health = reqwest::get(format!("http://{}/healthz", r.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(r.stats().await["rejected"], 2);
    r.stop().await.unwrap();
}

// ----- faults -------------------------------------------------------------------------------

fn faulty(dir: &Path, fault: Fault) -> ReceiveOptions {
    ReceiveOptions {
        fault_rate: 1.0,
        faults: vec![fault],
        ..options(dir)
    }
}

/// Nothing of a faulted batch is applied, and the fault is counted.
async fn assert_nothing_applied(r: Receiver, dir: &Path, faults: u64) {
    let stats = r.stats().await;
    assert_eq!(stats["faults_injected"], faults, "{stats}");
    assert_eq!(stats["ops_applied"], 0, "{stats}");
    r.stop().await.unwrap();
    let dump = receive::dump(dir).unwrap();
    assert_eq!(dump["entities"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_500_answers_500_and_applies_nothing() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::start(faulty(&dir, Fault::Status500)).await;
    let reply = post(&r.url(), &batch(vec![insert(1, 1, 1)])).await;
    assert_eq!(reply.status, 500);
    assert_nothing_applied(r, &dir, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_429_answers_429_with_retry_after() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::start(faulty(&dir, Fault::Status429)).await;
    let reply = post(&r.url(), &batch(vec![insert(1, 1, 1)])).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.headers["retry-after"], "1");
    assert_nothing_applied(r, &dir, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_hang_never_answers_and_does_not_delay_shutdown() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::start(faulty(&dir, Fault::Hang)).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = post_with(
        &impatient,
        &r.url(),
        serde_json::to_vec(&batch(vec![insert(1, 1, 1)])).unwrap(),
        &[],
    )
    .await
    .err()
    .expect("a hanging receiver must not answer");
    assert!(err.is_timeout(), "{err:?}");

    // A second request hangs while the receiver is told to stop: it stops at once anyway.
    let url = r.url();
    let pending = tokio::spawn(async move {
        post_raw(
            &url,
            serde_json::to_vec(&batch(vec![insert(2, 2, 2)])).unwrap(),
            &[],
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.stats().await["faults_injected"] != 2 {
        assert!(Instant::now() < deadline, "second request never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopping = Instant::now();
    let stats = r.stats().await;
    assert_eq!(stats["ops_applied"], 0);
    r.stop().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    assert!(
        pending.await.unwrap().is_err(),
        "the hung request must end without an answer"
    );
    assert_eq!(receive::dump(&dir).unwrap()["stats"]["faults_injected"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_drop_closes_the_connection_without_a_response() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::start(faulty(&dir, Fault::Drop)).await;
    let err = post_raw(
        &r.url(),
        serde_json::to_vec(&batch(vec![insert(1, 1, 1)])).unwrap(),
        &[],
    )
    .await
    .err()
    .expect("a dropped connection has no response");
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    assert_nothing_applied(r, &dir, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_sender_gets_everything_through_random_faults() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::start(ReceiveOptions {
        fault_rate: 0.5,
        faults: vec![Fault::Status500, Fault::Status429, Fault::Drop],
        ..options(&dir)
    })
    .await;
    let client = client();
    let mut attempts = 0;
    for i in 1..=20u64 {
        let body = batch(vec![insert(i, i as i64, i as i64)]);
        loop {
            attempts += 1;
            let reply = post_with(&client, &r.url(), serde_json::to_vec(&body).unwrap(), &[]).await;
            if matches!(&reply, Ok(rep) if rep.status == 200) {
                break;
            }
        }
    }
    let stats = r.stats().await;
    assert_eq!(stats["ops_applied"], 20, "{stats}");
    assert_eq!(stats["faults_injected"], attempts - 20, "{stats}");
    assert!(
        attempts > 20,
        "with a 50% fault rate some attempts must fail"
    );
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    assert_eq!(dump["entities"]["products"].as_object().unwrap().len(), 20);
}

// ----- poisoned batches ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_batch_is_rejected_with_400_and_nothing_of_it_applied() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::start(ReceiveOptions {
        reject_containing: Some("POISON".into()),
        ..options(&dir)
    })
    .await;
    let mut bad = insert(2, 2, 2);
    bad["after"]["note"] = json!("contains POISON here");
    let reply = post(&r.url(), &batch(vec![insert(1, 1, 1), bad])).await;
    assert_eq!(reply.status, 400);
    let reason = reply.body["error"].as_str().unwrap();
    assert!(
        reason.contains("poisoned") && reason.contains("seq 2"),
        "{reason}"
    );
    let clean = post(&r.url(), &batch(vec![insert(3, 3, 3)])).await;
    assert_eq!(clean.status, 200);
    let stats = r.stats().await;
    assert_eq!(
        (stats["rejected"].clone(), stats["ops_applied"].clone()),
        (json!(1), json!(1))
    );
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    assert!(
        entity(&dump, "products", 1).is_null(),
        "a rejected batch is applied not at all"
    );
}

// ----- durability and idempotency -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_counters_survive_a_restart_and_dump_shows_them() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let composite = json!({"seq": 3, "op": "insert", "db": "shop", "table": "pairs",
        "entity": "pairs", "id": {"b": 2, "a": 1}, "gtid": null, "ts": "2026-11-24T07:37:31.5Z",
        "row": 1, "file": "mariadb-bin.000001", "offset": 9, "after": {"a": 1, "b": 2, "v": "x"}});
    // binsync writes a composite id in key order (b, a here), which serde_json would sort.
    let body = batch(vec![insert(1, 1, 10), update(2, 1, 11), composite]);
    let text = serde_json::to_string(&body)
        .unwrap()
        .replace("\"id\":{\"a\":1,\"b\":2}", "\"id\":{\"b\":2, \"a\":1}");
    assert!(text.contains("{\"b\":2, \"a\":1}"));
    let reply = post_raw(&r.url(), text.into_bytes(), &[]).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    r.stop().await.unwrap();

    let dump = receive::dump(&dir).unwrap();
    assert_eq!(entity(&dump, "products", 1)["values"]["price"], 11);
    // The id keeps the key's column order, as sent, without insignificant whitespace.
    assert_eq!(
        dump["entities"]["pairs"]["{\"b\":2,\"a\":1}"]["values"]["v"],
        "x"
    );
    assert_eq!(dump["stats"]["batches"], 1);
    assert_eq!(dump["stats"]["ops_applied"], 3);

    let r = Receiver::plain(&dir).await;
    assert_eq!(r.stats().await["ops_applied"], 3, "counters are persisted");
    let replay = post(&r.url(), &batch(vec![update(2, 1, 11)])).await;
    assert_eq!(replay.body["stale"], 1);
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    assert_eq!(dump["stats"]["batches"], 2);
    assert_eq!(dump["stats"]["ops_stale"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_batch_twice_is_acknowledged_twice_and_applied_once() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let body = batch(vec![insert(1, 1, 1), insert(2, 2, 2)]);
    let first = post(&r.url(), &body).await;
    let second = post(&r.url(), &body).await;
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.body["duplicate"], false);
    assert_eq!(second.body["duplicate"], true);
    let stats = r.stats().await;
    assert_eq!(stats["batches"], 2);
    assert_eq!(stats["batches_duplicate"], 1);
    assert_eq!(stats["ops_applied"], 2);
    assert_eq!(stats["ops_stale"], 2);
    r.stop().await.unwrap();
}

// ----- contract v2: operations on a whole entity type ---------------------------------------

/// The truncate travels in another lane than the rows: here it arrives after a newer insert
/// and before an older one, and a replay of everything changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_over_http_removes_older_rows_in_any_arrival_order_and_replays() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let first = batch(vec![insert(1, 1, 10), insert(2, 2, 20)]);
    let newer = batch(vec![insert(6, 3, 30)]);
    let truncate = batch_v2(vec![on_type(5, "truncate", "products")]);
    let older = batch(vec![insert(4, 4, 40)]);
    for (b, applied, stale) in [
        (&first, 2, 0),
        (&newer, 1, 0),
        (&truncate, 1, 0),
        (&older, 0, 1),
    ] {
        let reply = post(&r.url(), b).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            (reply.body["applied"].clone(), reply.body["stale"].clone()),
            (json!(applied), json!(stale))
        );
    }
    // A replay of all of it in one version 2 batch (another grouping after a crash).
    let replay = batch_v2(vec![
        insert(1, 1, 10),
        insert(2, 2, 20),
        insert(4, 4, 40),
        on_type(5, "truncate", "products"),
        insert(6, 3, 30),
    ]);
    let reply = post(&r.url(), &replay).await;
    assert_eq!((reply.status, reply.body["stale"].clone()), (200, json!(5)));
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    let ids: Vec<&String> = dump["entities"]["products"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(ids, ["{\"id\":3}"]);
    assert_eq!(dump["types"]["products"]["floor"]["seq"], 5);
    assert_eq!(
        dump["types"]["products"]["floor"]["statement"],
        "TRUNCATE TABLE products"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_is_recorded_and_dump_shows_it_beside_the_rows() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let reply = post(
        &r.url(),
        &batch_v2(vec![
            insert(1, 1, 10),
            on_type(2, "ddl", "products"),
            update(3, 1, 11),
        ]),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body["applied"].clone()),
        (200, json!(3)),
        "{}",
        reply.body
    );
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    assert_eq!(entity(&dump, "products", 1)["values"]["price"], 11);
    let def = &dump["types"]["products"]["definition"];
    assert_eq!(def["seq"], 2);
    assert_eq!(def["key"], json!(["id"]));
    assert_eq!(
        def["columns"][2],
        json!({"name": "note", "type": "varchar(20)", "nullable": true, "json": false})
    );
    assert!(dump["types"]["products"].get("floor").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_checked_against_the_operations_and_the_header() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let reason = |reply: &Reply| reply.body["error"].as_str().unwrap_or("").to_string();
    // A version 1 body must not carry a version 2 operation.
    let v1_truncate = post(
        &r.url(),
        &batch(vec![insert(1, 1, 1), on_type(2, "truncate", "products")]),
    )
    .await;
    assert_eq!(v1_truncate.status, 400);
    assert!(
        reason(&v1_truncate).contains("a `truncate` operation needs contract version 2"),
        "{}",
        v1_truncate.body
    );
    // The header and the body must name the same version.
    let body = serde_json::to_vec(&batch_v2(vec![insert(1, 1, 1)])).unwrap();
    let mismatch = post_raw(&r.url(), body.clone(), &[("X-Binsync-Contract", "1")])
        .await
        .unwrap();
    assert_eq!(mismatch.status, 400);
    assert!(
        reason(&mismatch).contains("header says 1 but the body's version is 2"),
        "{}",
        mismatch.body
    );
    let unknown = post_raw(&r.url(), body.clone(), &[("X-Binsync-Contract", "4")])
        .await
        .unwrap();
    assert_eq!(unknown.status, 400);
    assert!(
        reason(&unknown).contains("contracts 1, 2 and 3"),
        "{}",
        unknown.body
    );
    // Nothing of those was applied; a version 2 body of row operations only is fine.
    let ok = post_raw(&r.url(), body, &[("X-Binsync-Contract", "2")])
        .await
        .unwrap();
    assert_eq!(
        (ok.status, ok.body["applied"].clone()),
        (200, json!(1)),
        "{}",
        ok.body
    );
    let stats = r.stats().await;
    assert_eq!(
        (stats["rejected"].clone(), stats["ops_applied"].clone()),
        (json!(3), json!(1))
    );
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_mode_takes_version_2_and_checks_the_header() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::start(ReceiveOptions {
        discard: true,
        ..options(&dir)
    })
    .await;
    let reply = post(
        &r.url(),
        &batch_v2(vec![insert(1, 1, 1), on_type(2, "drop", "products")]),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut v3 = batch(vec![insert(1, 1, 1)]);
    v3["version"] = json!(3);
    let body = serde_json::to_vec(&v3).unwrap();
    assert_eq!(post_raw(&r.url(), body, &[]).await.unwrap().status, 400);
    let body = serde_json::to_vec(&batch(vec![insert(1, 1, 1)])).unwrap();
    let mismatch = post_raw(&r.url(), body, &[("X-Binsync-Contract", "2")])
        .await
        .unwrap();
    assert_eq!(mismatch.status, 400);
    r.stop().await.unwrap();
}

// ----- modes, misuse and the operator's view ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_mode_acknowledges_without_storing() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::start(ReceiveOptions {
        discard: true,
        ..options(&dir)
    })
    .await;
    let reply = post(&r.url(), &batch(vec![insert(1, 1, 1), insert(2, 2, 2)])).await;
    assert_eq!(reply.status, 200);
    let bad = post_raw(&r.url(), b"{}".to_vec(), &[]).await.unwrap();
    assert_eq!(bad.status, 400, "discard mode still checks bodies");
    let stats = r.stats().await;
    assert_eq!(stats["ops_received"], 2);
    assert_eq!(stats["ops_applied"], 0);
    r.stop().await.unwrap();
    let err = receive::dump(&dir).unwrap_err();
    assert!(matches!(err, ReceiveError::NoState { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_while_the_receiver_runs_says_to_stop_it() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    let err = receive::dump(&dir).unwrap_err();
    assert!(matches!(err, ReceiveError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("stop it"), "{err}");
    r.stop().await.unwrap();
    assert!(receive::dump(&dir).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_names_the_fix() {
    let (_tmp, dir) = state_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opts = ReceiveOptions::new(taken.local_addr().unwrap(), &dir);
    let err = receive::serve(opts, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, ReceiveError::AddrInUse { .. }), "{err}");
    assert!(err.to_string().contains("pick another --listen"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_listens_answers_health_and_stops_on_its_shutdown_future() {
    let (_tmp, dir) = state_dir();
    // `serve` binds itself; find a free port first (the `listening on` line is for processes).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(receive::serve(ReceiveOptions::new(addr, &dir), async {
        let _ = rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match reqwest::get(format!("http://{addr}/healthz")).await {
            Ok(r) if r.status() == 200 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("receiver never became healthy: {other:?}"),
        }
    }
    let reply = post(&format!("http://{addr}/"), &batch(vec![insert(1, 1, 1)])).await;
    assert_eq!(reply.status, 200);
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(receive::dump(&dir).unwrap()["stats"]["ops_applied"], 1);
}

// ----- the command line (`binsync receive`, as wired in main.rs) ----------------------------

/// `binsync receive ...` with stdout piped; stderr is kept for error messages.
fn receiver_process(args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_binsync"))
        .arg("receive")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binsync runs")
}

fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("binsync receive did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_its_address_stops_on_sigterm_and_dump_prints_the_state() {
    use std::io::BufRead;
    let (_tmp, dir) = state_dir();
    let dir_text = dir.to_str().unwrap();
    let mut child = receiver_process(&["--listen", "127.0.0.1:0", "--state-dir", dir_text]);
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first stdout line: {line:?}"))
        .to_string();

    let reply = post(&format!("http://{addr}/"), &batch(vec![insert(1, 1, 10)])).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // SIGTERM: finish, flush, exit 0.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_binsync"))
        .args(["receive", "dump", "--state-dir", dir_text])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entity(&dump, "products", 1)["values"]["price"], 10);
}

#[test]
fn the_command_names_the_fix_when_the_address_is_taken() {
    let (_tmp, dir) = state_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = receiver_process(&["--listen", &addr, "--state-dir", dir.to_str().unwrap()]);
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("pick another --listen"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// ----- contract v3: the initial snapshot ---------------------------------------------------

/// A re-snapshot after binsync was away: reads bring rows back as of their chunk, a newer
/// binlog change of an id wins over an older read of it whatever the arrival order, and the
/// snapshot_end removes the rows deleted on the source while nobody looked. `dump` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_brings_the_state_to_the_source_and_removes_rows_deleted_unseen() {
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    // An earlier life: ids 1 to 4, id 5 deleted.
    let before = post(
        &r.url(),
        &batch(vec![
            insert(1, 1, 10),
            insert(2, 2, 20),
            insert(3, 3, 30),
            insert(4, 4, 40),
            insert(5, 5, 50),
            delete(6, 5),
        ]),
    )
    .await;
    assert_eq!(before.status, 200, "{}", before.body);
    // binsync away: id 4 deleted, id 2 changed, id 7 created on the source. The snapshot
    // begins at 100; id 2 changes again in the binlog at 104, after its chunk was read (and
    // that update arrives before the read, in another lane).
    let newer = post(&r.url(), &batch_v3(vec![update(104, 2, 22)])).await;
    assert_eq!(newer.status, 200, "{}", newer.body);
    let chunk = batch_v3(vec![
        read(101, 1, 11),
        read(102, 2, 21),
        read(103, 7, 70),
        snapshot_end(105, 100, "products"),
    ]);
    let reply = post(&r.url(), &chunk).await;
    assert_eq!(
        (
            reply.status,
            reply.body["applied"].clone(),
            reply.body["stale"].clone()
        ),
        (200, json!(3), json!(1)),
        "{}",
        reply.body
    );
    // A crash replay: the same chunk again changes nothing; an older insert of id 4 still on
    // its way is below the floor.
    let replay = post(
        &r.url(),
        &batch_v3(vec![insert(4, 4, 40), read(101, 1, 11)]),
    )
    .await;
    assert_eq!(
        (replay.status, replay.body["applied"].clone()),
        (200, json!(0)),
        "{}",
        replay.body
    );
    // A version 2 body may not carry them: 400 naming the version, nothing applied.
    let v2 = post(&r.url(), &batch_v2(vec![read(200, 8, 80)])).await;
    assert_eq!(v2.status, 400);
    assert!(
        v2.body["error"]
            .as_str()
            .unwrap()
            .contains("a `read` operation needs contract version 3, but the body says version 2"),
        "{}",
        v2.body
    );
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    let live: Vec<(String, Value)> = dump["entities"]["products"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, e)| (id.clone(), e["values"]["price"].clone()))
        .collect();
    assert_eq!(
        live,
        [
            (r#"{"id":1}"#.to_string(), json!(11)),
            (r#"{"id":2}"#.to_string(), json!(22)),
            (r#"{"id":7}"#.to_string(), json!(70)),
        ],
        "{dump}"
    );
    assert_eq!(entity(&dump, "products", 2)["seq"], 104);
    assert_eq!(
        dump["types"]["products"]["floor"],
        json!({"seq": 100, "op": "snapshot_end", "db": "shop", "table": "products"})
    );
    assert_eq!(dump["stats"]["ops_applied"], 6 + 1 + 3);
}

// ----- the published schema -----------------------------------------------------------------

/// The receiver and docs/sync-api.schema.json agree on every body below: what one accepts the
/// other accepts. The last group is what a schema cannot say; the receiver refuses it anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_schema_and_the_receiver_agree() {
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/sync-api.schema.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let (_tmp, dir) = state_dir();
    // A storing receiver: `--discard` checks only the envelope, not the operations.
    let r = Receiver::start(options(&dir)).await;

    type Edit = fn(&mut Value);
    let one = || batch(vec![update(5, 1, 2)]);
    // Contract v2: a ddl.
    let two = || batch_v2(vec![on_type(5, "ddl", "products")]);
    let valid: Vec<(&str, Value)> = vec![
        ("update", one()),
        (
            "insert, update, delete",
            batch(vec![insert(1, 1, 1), update(2, 1, 2), delete(3, 1)]),
        ),
        (
            "two entity types",
            batch(vec![insert(1, 1, 1), op(2, "delete", "users", 3, 0)]),
        ),
        ("mysql source, no gtid, fractional ts", {
            let mut b = one();
            b["source"] = json!({"flavor": "mysql", "server_id": 7, "server_uuid": "3e11fa47-71ca-11e1-9e33-c80aa9429562"});
            b["entities"]["products"][0]["gtid"] = Value::Null;
            b["entities"]["products"][0]["ts"] = json!("2026-11-24T07:37:31.123456Z");
            b
        }),
        (
            "a keyless table's operation",
            batch(vec![tag(5, "insert", 1, "x")]),
        ),
        ("composite id, any JSON values", {
            let mut b = one();
            b["entities"]["products"][0]["id"] = json!({"a": 1, "b": "x"});
            b["entities"]["products"][0]["after"]["doc"] = json!({"nested": [1, null, true]});
            b
        }),
        (
            "version 2 with row operations only",
            batch_v2(vec![update(5, 1, 2)]),
        ),
        (
            "ddl, truncate and drop among row operations",
            batch_v2(vec![
                insert(1, 1, 1),
                on_type(2, "ddl", "products"),
                on_type(3, "truncate", "products"),
                insert(4, 1, 2),
                on_type(5, "drop", "products"),
                tag(6, "insert", 1, "x"),
                on_type(7, "truncate", "tags"),
            ]),
        ),
        ("a ddl renamed away", {
            let mut b = two();
            b["entities"]["products"][0]["columns"] = Value::Null;
            b["entities"]["products"][0]["key"] = Value::Null;
            b
        }),
        ("a ddl of a table without a primary key", {
            let mut b = two();
            b["entities"]["products"][0]["key"] = json!([]);
            b
        }),
        (
            "version 3: reads and a snapshot_end among the others",
            batch_v3(vec![
                insert(1, 1, 1),
                on_type(2, "truncate", "products"),
                read(3, 2, 2),
                read(4, 3, 3),
                snapshot_end(5, 2, "products"),
                tag(6, "insert", 1, "x"),
            ]),
        ),
        ("a keyless read, since 0", {
            let mut r = tag(6, "insert", 1, "x");
            r["op"] = json!("read");
            r.as_object_mut().unwrap().remove("row");
            batch_v3(vec![r, snapshot_end(7, 0, "tags")])
        }),
    ];
    let three = || batch_v3(vec![read(5, 1, 1), snapshot_end(6, 4, "products")]);
    let edits_v3: Vec<(&str, Edit)> = vec![
        ("a read in a version 2 body", |b| b["version"] = json!(2)),
        ("a read in a version 1 body", |b| b["version"] = json!(1)),
        ("a snapshot_end in a version 2 body", |b| {
            *b = batch_v2(vec![snapshot_end(6, 4, "products")]);
        }),
        ("a read with a row index", |b| {
            ddl(b).insert("row".into(), json!(0));
        }),
        ("a read without after", |b| {
            ddl(b).remove("after");
        }),
        ("a read without id", |b| {
            ddl(b).remove("id");
        }),
        ("a read with before", |b| {
            ddl(b).insert("before".into(), json!({"id": 1}));
        }),
        ("a read with since", |b| {
            ddl(b).insert("since".into(), json!(1));
        }),
        ("a snapshot_end without since", |b| {
            b["entities"]["products"][1]
                .as_object_mut()
                .unwrap()
                .remove("since");
        }),
        ("a snapshot_end with an id", |b| {
            b["entities"]["products"][1]["id"] = json!({"id": 1});
        }),
        ("a snapshot_end with a statement", |b| {
            b["entities"]["products"][1]["statement"] = json!("SELECT 1");
        }),
        ("a snapshot_end with keyless", |b| {
            b["entities"]["products"][1]["keyless"] = json!(true);
        }),
        ("since negative", |b| {
            b["entities"]["products"][1]["since"] = json!(-1);
        }),
        ("since a string", |b| {
            b["entities"]["products"][1]["since"] = json!("4");
        }),
        ("a truncate with since", |b| {
            *b = batch_v3(vec![on_type(5, "truncate", "products")]);
            ddl(b).insert("since".into(), json!(1));
        }),
    ];
    let beyond_schema_v3: Vec<(&str, Edit)> = vec![
        ("since not below the snapshot_end's seq", |b| {
            b["entities"]["products"][1]["since"] = json!(6);
        }),
        ("since beyond what the receiver stores", |b| {
            b["entities"]["products"][1]["since"] = json!(u64::MAX);
        }),
    ];
    let edits: Vec<(&str, Edit)> = vec![
        ("version 4", |b| b["version"] = json!(4)),
        ("no count", |b| {
            b.as_object_mut().unwrap().remove("count");
        }),
        ("count 0", |b| b["count"] = json!(0)),
        ("unknown envelope field", |b| b["extra"] = json!(1)),
        ("empty batch_id", |b| b["batch_id"] = json!("")),
        ("source without server_uuid", |b| {
            b["source"].as_object_mut().unwrap().remove("server_uuid");
        }),
        ("unknown flavor", |b| {
            b["source"]["flavor"] = json!("postgres")
        }),
        ("no entities", |b| b["entities"] = json!({})),
        ("an empty list", |b| b["entities"]["users"] = json!([])),
        ("unknown op field", |b| {
            b["entities"]["products"][0]["extra"] = json!(1)
        }),
        ("op upsert", |b| {
            b["entities"]["products"][0]["op"] = json!("upsert")
        }),
        ("seq 0", |b| {
            b["entities"]["products"][0]["seq"] = json!(0);
            b["first_seq"] = json!(0);
        }),
        ("seq as a string", |b| {
            b["entities"]["products"][0]["seq"] = json!("5")
        }),
        ("no gtid", |b| {
            b["entities"]["products"][0]
                .as_object_mut()
                .unwrap()
                .remove("gtid");
        }),
        ("ts not UTC", |b| {
            b["entities"]["products"][0]["ts"] = json!("2026-11-24 07:37:31")
        }),
        ("id empty", |b| {
            b["entities"]["products"][0]["id"] = json!({})
        }),
        ("id an array", |b| {
            b["entities"]["products"][0]["id"] = json!([1])
        }),
        ("update without changed", |b| {
            b["entities"]["products"][0]
                .as_object_mut()
                .unwrap()
                .remove("changed");
        }),
        ("changed twice the same", |b| {
            b["entities"]["products"][0]["changed"] = json!(["price", "price"])
        }),
        ("changed not strings", |b| {
            b["entities"]["products"][0]["changed"] = json!([1])
        }),
        ("before an array", |b| {
            b["entities"]["products"][0]["before"] = json!([1])
        }),
        ("insert with before", |b| {
            b["entities"]["products"][0]["op"] = json!("insert")
        }),
        ("changed null", |b| {
            b["entities"]["products"][0]["changed"] = Value::Null
        }),
        ("insert with before null", |b| {
            let op = &mut b["entities"]["products"][0];
            op["op"] = json!("insert");
            op.as_object_mut().unwrap().remove("changed");
            op["before"] = Value::Null;
        }),
        ("delete with after", |b| {
            b["entities"]["products"][0]["op"] = json!("delete")
        }),
        ("keyless false", |b| {
            b["entities"]["products"][0]["keyless"] = json!(false)
        }),
        ("keyless null", |b| {
            b["entities"]["products"][0]["keyless"] = Value::Null
        }),
    ];
    let edits_v2: Vec<(&str, Edit)> = vec![
        ("a ddl in a version 1 body", |b| b["version"] = json!(1)),
        ("a truncate in a version 1 body", |b| {
            *b = batch(vec![on_type(5, "truncate", "products")]);
        }),
        ("a ddl with an id", |b| {
            ddl(b).insert("id".into(), json!({"id": 1}));
        }),
        ("a ddl with a row index", |b| {
            ddl(b).insert("row".into(), json!(0));
        }),
        ("a ddl with keyless", |b| {
            ddl(b).insert("keyless".into(), json!(true));
        }),
        ("a ddl with before", |b| {
            ddl(b).insert("before".into(), json!({"id": 1}));
        }),
        ("a ddl without statement", |b| {
            ddl(b).remove("statement");
        }),
        ("an empty statement", |b| {
            ddl(b).insert("statement".into(), json!(""));
        }),
        ("statement null", |b| {
            ddl(b).insert("statement".into(), Value::Null);
        }),
        ("a ddl without columns", |b| {
            ddl(b).remove("columns");
        }),
        ("a ddl without key", |b| {
            ddl(b).remove("key");
        }),
        ("columns null, key given", |b| {
            ddl(b).insert("columns".into(), Value::Null);
        }),
        ("key null, columns given", |b| {
            ddl(b).insert("key".into(), Value::Null);
        }),
        ("no columns", |b| {
            ddl(b).insert("columns".into(), json!([]));
        }),
        ("a column with another field", |b| {
            ddl(b)["columns"][0]["default"] = json!(0);
        }),
        ("a column without json", |b| {
            ddl(b)["columns"][0].as_object_mut().unwrap().remove("json");
        }),
        ("a column as an array", |b| {
            ddl(b)["columns"][0] = json!(["id", "int(11)", false, false]);
        }),
        ("a key column twice", |b| {
            ddl(b).insert("key".into(), json!(["id", "id"]));
        }),
        ("a truncate with columns", |b| {
            ddl(b).insert("op".into(), json!("truncate"));
        }),
        ("a drop with key null", |b| {
            let o = ddl(b);
            o.insert("op".into(), json!("drop"));
            o.remove("columns");
            o.insert("key".into(), Value::Null);
        }),
        ("an insert with a statement", |b| {
            let o = ddl(b);
            o.insert("op".into(), json!("insert"));
            o.remove("columns");
            o.remove("key");
            o.insert("id".into(), json!({"id": 1}));
            o.insert("row".into(), json!(0));
            o.insert("after".into(), json!({"id": 1}));
        }),
        ("an insert without row", |b| {
            *b = batch_v2(vec![insert(5, 1, 1)]);
            b["entities"]["products"][0]
                .as_object_mut()
                .unwrap()
                .remove("row");
        }),
        ("a delete without id", |b| {
            *b = batch_v2(vec![delete(5, 1)]);
            b["entities"]["products"][0]
                .as_object_mut()
                .unwrap()
                .remove("id");
        }),
    ];
    let beyond_schema_v2: Vec<(&str, Edit)> = vec![
        ("a key column not in columns", |b| {
            ddl(b).insert("key".into(), json!(["sku"]));
        }),
        ("a column name twice", |b| {
            let first = ddl(b)["columns"][0].clone();
            ddl(b)["columns"][1] = first;
        }),
    ];
    let beyond_schema: Vec<(&str, Edit)> = vec![
        ("count differs", |b| b["count"] = json!(2)),
        ("seq outside first..last", |b| b["last_seq"] = json!(4)),
        ("entity differs from its list", |b| {
            b["entities"]["products"][0]["entity"] = json!("users")
        }),
        ("seq not rising", |b| {
            let first = b["entities"]["products"][0].clone();
            b["entities"]["products"] = json!([first.clone(), first]);
            b["count"] = json!(2);
        }),
    ];

    let accepted = |body: Value| {
        let url = r.url();
        async move {
            let bytes = serde_json::to_vec(&body).unwrap();
            // The header as binsync sets it: the body's version (judged on its own here).
            let contract = body["version"].to_string();
            let contract = if contract.len() == 1 {
                contract
            } else {
                "1".into()
            };
            let reply = post_raw(&url, bytes, &[("X-Binsync-Contract", &contract)])
                .await
                .unwrap();
            assert!(reply.status == 200 || reply.status == 400, "{}", reply.body);
            reply.status == 200
        }
    };
    for (name, body) in valid {
        assert!(validator.is_valid(&body), "schema refuses valid `{name}`");
        assert!(accepted(body).await, "receiver refuses valid `{name}`");
    }
    for (name, edit) in edits {
        let mut body = one();
        edit(&mut body);
        assert!(!validator.is_valid(&body), "schema accepts `{name}`");
        assert!(!accepted(body).await, "receiver accepts `{name}`");
    }
    for (name, edit) in beyond_schema {
        let mut body = one();
        edit(&mut body);
        assert!(validator.is_valid(&body), "`{name}` is beyond a schema");
        assert!(!accepted(body).await, "receiver accepts `{name}`");
    }
    assert!(validator.is_valid(&two()) && accepted(two()).await);
    for (name, edit) in edits_v2 {
        let mut body = two();
        edit(&mut body);
        assert!(!validator.is_valid(&body), "schema accepts `{name}`");
        assert!(!accepted(body).await, "receiver accepts `{name}`");
    }
    for (name, edit) in beyond_schema_v2 {
        let mut body = two();
        edit(&mut body);
        assert!(validator.is_valid(&body), "`{name}` is beyond a schema");
        assert!(!accepted(body).await, "receiver accepts `{name}`");
    }
    assert!(validator.is_valid(&three()) && accepted(three()).await);
    for (name, edit) in edits_v3 {
        let mut body = three();
        edit(&mut body);
        assert!(!validator.is_valid(&body), "schema accepts `{name}`");
        assert!(!accepted(body).await, "receiver accepts `{name}`");
    }
    for (name, edit) in beyond_schema_v3 {
        let mut body = three();
        edit(&mut body);
        assert!(validator.is_valid(&body), "`{name}` is beyond a schema");
        assert!(!accepted(body).await, "receiver accepts `{name}`");
    }
    r.stop().await.unwrap();
}

/// The first operation of the body's `products` list, to edit.
fn ddl(b: &mut Value) -> &mut serde_json::Map<String, Value> {
    b["entities"]["products"][0].as_object_mut().unwrap()
}

/// The operations on a whole entity type shown in docs/sync-api.md are valid: each validates
/// against the published schema in a version 2 body and is applied by the receiver; in a
/// version 1 body both refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_examples_of_ddl_truncate_and_drop_are_valid_version_2() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/sync-api.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let doc = std::fs::read_to_string(root.join("docs/sync-api.md")).unwrap();
    let examples: Vec<Value> = doc
        .lines()
        .filter(|l| l.starts_with("{\"seq\":"))
        .filter(|l| {
            ["ddl", "truncate", "drop"]
                .iter()
                .any(|k| l.contains(&format!("\"op\":\"{k}\"")))
        })
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for kind in ["ddl", "truncate", "drop"] {
        assert!(
            examples.iter().any(|e| e["op"] == kind),
            "the document shows no `{kind}`"
        );
    }
    assert!(
        examples
            .iter()
            .any(|e| e["op"] == "ddl" && e["columns"].is_null()),
        "the document shows no ddl of a table renamed away"
    );
    let (_tmp, dir) = state_dir();
    let r = Receiver::plain(&dir).await;
    for example in &examples {
        let v2 = batch_v2(vec![example.clone()]);
        if let Err(e) = validator.validate(&v2) {
            panic!("the document's example does not validate: {e}\n{example}");
        }
        let reply = post(&r.url(), &v2).await;
        assert_eq!(
            (reply.status, reply.body["applied"].clone()),
            (200, json!(1)),
            "{example}: {}",
            reply.body
        );
        let v1 = batch(vec![example.clone()]);
        assert!(
            !validator.is_valid(&v1),
            "schema takes it in version 1: {example}"
        );
        assert_eq!(post(&r.url(), &v1).await.status, 400, "{example}");
    }
    r.stop().await.unwrap();
    let dump = receive::dump(&dir).unwrap();
    assert_eq!(dump["types"]["carts"]["floor"]["op"], "truncate");
    assert_eq!(
        dump["types"]["archive"]["definition"]["columns"],
        Value::Null
    );
}

/// docs/sync-api.md carries the schema inline; it must be the published file.
#[test]
fn the_schema_in_the_contract_document_is_the_published_file() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(docs.join("sync-api.schema.json")).unwrap())
            .unwrap();
    let doc = std::fs::read_to_string(docs.join("sync-api.md")).unwrap();
    let section = doc
        .split("\n## JSON Schema\n")
        .nth(1)
        .expect("a `## JSON Schema` section");
    let inline = section
        .split("```json\n")
        .nth(1)
        .and_then(|s| s.split("\n```").next())
        .expect("a json block in the section");
    let inline: Value = serde_json::from_str(inline).expect("the inline schema is JSON");
    assert_eq!(inline, file, "update the inline schema in docs/sync-api.md");
}

/// docs/sync-api.md quotes the receiver's schema and apply statements; they must be its own.
#[test]
fn the_sql_in_the_contract_document_is_the_receivers() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/sync-api.md"))
            .unwrap();
    for (name, sql) in [
        ("SCHEMA", receive::sql::SCHEMA),
        ("APPLY_KEYED", receive::sql::APPLY_KEYED),
        ("APPLY_KEYLESS", receive::sql::APPLY_KEYLESS),
    ] {
        assert!(
            doc.contains(sql.trim()),
            "docs/sync-api.md does not quote store.rs's {name} as it is"
        );
    }
}
