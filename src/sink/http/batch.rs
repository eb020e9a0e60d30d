//! Building one request body of the sync API (see docs/sync-api.md): operations grouped per
//! entity type, in `seq` order within each group, copied from the decoder's encoded lines.
//!
//! Operations on a whole entity type (ddl, truncate, drop) go into their type's list like row
//! operations, in `seq` order with them, and are never merged by `--compact` (they have no
//! id). The body's `version` is the envelope's contract version; the sink makes sure a
//! version 1 body gets row operations only.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use crate::change::{Change, Chunk};
use crate::sink::ledger::{Pieces, Ticket};

/// What the batch header says about the source.
#[derive(Debug, Clone)]
pub struct SourceHeader {
    /// `"source":{...}` ready to splice in.
    pub json: Arc<str>,
    /// Prefix of batch ids, e.g. `mariadb-1`.
    pub id_prefix: Arc<str>,
}

impl SourceHeader {
    pub fn new(identity: &crate::checkpoint::ServerIdentity) -> Self {
        let json = serde_json::json!({
            "flavor": identity.flavor,
            "server_id": identity.server_id,
            "server_uuid": identity.server_uuid,
        });
        let id_prefix = match &identity.server_uuid {
            Some(u) => format!("{}-{u}", identity.flavor),
            None => format!("{}-{}", identity.flavor, identity.server_id),
        };
        SourceHeader {
            json: format!("\"source\":{json}").into(),
            id_prefix: id_prefix.into(),
        }
    }
}

/// What every body of a run starts with: the source and the contract version.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub source: SourceHeader,
    /// The body's `version`, also sent as `X-Binsync-Contract`.
    pub contract: u8,
}

/// One operation's JSON, inside the chunk it came in.
type LineRef = (Arc<Chunk>, Range<usize>);

/// A batch being filled.
#[derive(Default)]
pub struct Builder {
    /// Operations by entity type, as ranges of the chunks they came in: the body is written
    /// in one copy when the batch closes.
    refs: BTreeMap<Arc<str>, Vec<LineRef>>,
    /// Merged operations by entity type (`--compact` only).
    groups: BTreeMap<Arc<str>, Vec<u8>>,
    /// Set with `--compact`: operations kept apart so that several on one id can merge.
    compactor: Option<Compactor>,
    pub count: usize,
    pub bytes: usize,
    pub min_seq: u64,
    pub max_seq: u64,
    /// When its first change came (tokio's clock, which tests can pause).
    pub opened: Option<Instant>,
    /// The chunks its changes came from: one piece per change pushed.
    pieces: Pieces,
}

impl Builder {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// A builder that merges operations on the same entity id (see [`merge_ops`]).
    pub fn compacting() -> Self {
        Builder {
            compactor: Some(Compactor::default()),
            ..Builder::default()
        }
    }

    /// Adds change `c` of `chunk`, registered in the ledger as `ticket`.
    pub fn push(&mut self, chunk: &Arc<Chunk>, ticket: Ticket, c: &Change) {
        let line = chunk.line(c);
        if let Some(comp) = self
            .compactor
            .as_mut()
            .filter(|_| c.keyless || !c.op.is_row())
        {
            // Identical rows of a keyless table are counted by the receiver, and an operation
            // on a whole entity type has no id: never merged.
            comp.ops
                .push((c.entity.clone(), c.seq, Some(line.to_vec())));
            comp.live += 1;
        } else if let Some(comp) = self.compactor.as_mut() {
            let key = (c.entity.clone(), chunk.key(c).to_vec());
            let merged = match comp.latest.get(&key) {
                Some(&slot) => {
                    let earlier = comp.ops[slot].2.take().expect("latest slot is live");
                    comp.live -= 1;
                    merge_ops(&earlier, line)
                }
                None => line.to_vec(),
            };
            comp.latest.insert(key, comp.ops.len());
            comp.ops.push((c.entity.clone(), c.seq, Some(merged)));
            comp.live += 1;
        } else {
            self.refs
                .entry(c.entity.clone())
                .or_default()
                .push((chunk.clone(), c.line.clone()));
        }
        if self.count == 0 {
            self.min_seq = c.seq;
            self.opened = Some(Instant::now());
        }
        self.pieces.add(ticket);
        self.count += 1;
        self.bytes += line.len() + 1;
        self.max_seq = self.max_seq.max(c.seq);
    }

    /// Operations the body will hold (fewer than pushed when compacting).
    fn ops_in_body(&self) -> usize {
        self.compactor.as_ref().map_or(self.count, |c| c.live)
    }

    /// The request body; leaves the builder empty.
    pub fn finish(&mut self, envelope: &Envelope) -> Batch {
        let source = &envelope.source;
        let id = format!("{}-{}-{}", source.id_prefix, self.min_seq, self.max_seq);
        if let Some(comp) = self.compactor.as_mut() {
            for (entity, _, op) in comp.ops.drain(..) {
                if let Some(op) = op {
                    let group = self.groups.entry(entity).or_default();
                    if !group.is_empty() {
                        group.push(b',');
                    }
                    group.extend_from_slice(&op);
                }
            }
        }
        let ops_in_body = self.ops_in_body();
        // Large operations are shared, not copied: no room for them.
        let shared: usize = self
            .refs
            .values()
            .flatten()
            .map(|(_, range)| range.len())
            .filter(|&n| n >= SHARED_OP_BYTES)
            .sum();
        let mut body = Vec::with_capacity(self.bytes - shared + 256);
        body.extend_from_slice(b"{\"version\":");
        crate::json::push_u64(&mut body, u64::from(envelope.contract));
        body.extend_from_slice(b",\"batch_id\":");
        crate::json::write_json_str(&mut body, id.as_bytes());
        body.push(b',');
        body.extend_from_slice(source.json.as_bytes());
        body.extend_from_slice(b",\"first_seq\":");
        crate::json::push_u64(&mut body, self.min_seq);
        body.extend_from_slice(b",\"last_seq\":");
        crate::json::push_u64(&mut body, self.max_seq);
        body.extend_from_slice(b",\"count\":");
        crate::json::push_u64(&mut body, ops_in_body as u64);
        body.extend_from_slice(b",\"entities\":{");
        let mut first_group = true;
        let mut open_group = |body: &mut Vec<u8>, entity: &str| {
            if !std::mem::take(&mut first_group) {
                body.push(b',');
            }
            crate::json::write_json_str(body, entity.as_bytes());
            body.extend_from_slice(b":[");
        };
        let mut payload = Payload::default();
        for (entity, ops) in std::mem::take(&mut self.refs) {
            open_group(&mut body, &entity);
            for (i, (chunk, range)) in ops.into_iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                if range.len() >= SHARED_OP_BYTES {
                    payload.push(std::mem::take(&mut body).into());
                    payload.push(Bytes::from_owner(ChunkLine(chunk, range)));
                } else {
                    body.extend_from_slice(&chunk.buf[range]);
                }
            }
            body.push(b']');
        }
        for (entity, ops) in std::mem::take(&mut self.groups) {
            open_group(&mut body, &entity);
            body.extend_from_slice(&ops);
            body.push(b']');
        }
        body.extend_from_slice(b"}}");
        payload.push(body.into());
        let batch = Batch {
            id,
            contract: envelope.contract,
            body: payload,
            count: ops_in_body,
            min_seq: self.min_seq,
            max_seq: self.max_seq,
            pieces: std::mem::take(&mut self.pieces),
        };
        let compacting = self.compactor.is_some();
        *self = if compacting {
            Builder::compacting()
        } else {
            Builder::default()
        };
        batch
    }
}

#[derive(Default)]
struct Compactor {
    /// (entity, seq, op JSON) in arrival order; None where an op was merged into a later one.
    ops: Vec<(Arc<str>, u64, Option<Vec<u8>>)>,
    /// (entity, id) -> index in `ops` of its newest op.
    latest: std::collections::HashMap<(Arc<str>, Vec<u8>), usize>,
    live: usize,
}

/// Merges two operations on one entity id (`--compact`): the result carries the later op's
/// `seq`, `gtid`, `ts` and position; its `before` is the earlier op's (the state before the
/// batch), its `after` the later op's; `changed` is recomputed from the two images. Kinds
/// (docs/sync-api.md, Compaction): anything+delete = delete; with an insert on either side =
/// insert; otherwise update. Column order inside the merged images becomes alphabetical.
pub fn merge_ops(earlier: &[u8], later: &[u8]) -> Vec<u8> {
    use serde_json::Value;
    let (Ok(first), Ok(mut last)) = (
        serde_json::from_slice::<Value>(earlier),
        serde_json::from_slice::<Value>(later),
    ) else {
        return later.to_vec(); // our own encoder wrote both; unreachable in practice
    };
    let kind = |v: &Value| v["op"].as_str().unwrap_or("").to_string();
    let (fk, lk) = (kind(&first), kind(&last));
    let merged = if lk == "delete" {
        "delete"
    } else if fk == "insert" || lk == "insert" || fk == "read" || lk == "read" {
        // The row was (re)created within the batch, or read whole by the snapshot: the
        // receiver applies the result as a whole row.
        "insert"
    } else {
        "update"
    };
    let before = first
        .get("before")
        .cloned()
        .or_else(|| last.get("before").cloned());
    let Some(obj) = last.as_object_mut() else {
        return later.to_vec();
    };
    obj.insert("op".into(), Value::from(merged));
    match merged {
        "insert" => {
            obj.remove("before");
            obj.remove("changed");
        }
        "delete" => {
            obj.remove("after");
            obj.remove("changed");
            if let Some(b) = before {
                obj.insert("before".into(), b);
            }
        }
        _ => {
            if let Some(b) = before {
                let after = obj.get("after").cloned().unwrap_or(Value::Null);
                let changed: Vec<Value> = after
                    .as_object()
                    .map(|a| {
                        a.iter()
                            .filter(|(k, v)| b.get(k.as_str()) != Some(v))
                            .map(|(k, _)| Value::from(k.as_str()))
                            .collect()
                    })
                    .unwrap_or_default();
                obj.insert("changed".into(), Value::Array(changed));
                obj.insert("before".into(), b);
            }
        }
    }
    serde_json::to_vec(&last).unwrap_or_else(|_| later.to_vec())
}

/// Operations at least this long go into a body by reference to their chunk, not copied.
const SHARED_OP_BYTES: usize = 1 << 20;

/// A request body in parts, shared by every retry without copying: the envelope and small
/// operations copied together, and each large operation (a big BLOB) referenced where the
/// decoder wrote it, so a big row is never held twice.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    parts: Vec<Bytes>,
    len: usize,
}

impl Payload {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The whole body in one buffer (dead letters; tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for p in &self.parts {
            v.extend_from_slice(p);
        }
        v
    }

    fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.len += part.len();
            self.parts.push(part);
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Payload {
        let mut p = Payload::default();
        p.push(v.into());
        p
    }
}

/// One operation's bytes inside its chunk, as the owner of a [`Bytes`].
struct ChunkLine(Arc<Chunk>, std::ops::Range<usize>);

impl AsRef<[u8]> for ChunkLine {
    fn as_ref(&self) -> &[u8] {
        &self.0.buf[self.1.clone()]
    }
}

/// A finished request body.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Also the Idempotency-Key.
    pub id: String,
    /// The body's `version`: the `X-Binsync-Contract` header to send it with.
    pub contract: u8,
    pub body: Payload,
    pub count: usize,
    pub min_seq: u64,
    pub max_seq: u64,
    /// The chunks whose changes it holds (empty for a dead letter sent again).
    pub pieces: Pieces,
}

/// What a change is laned by (see [`lane_of`]): its id, or the empty key of its entity type's
/// own lane for the changes that must keep their order against the type's truncates.
///
/// ddl, truncate and drop have no id: they take the type's lane. So does every row operation
/// of a table without a primary key: a receiver keeps a count per identical row, and a count
/// mixes copies inserted before a truncate with copies inserted after it; only arrival in
/// `seq` order (one lane) lets the truncate's floor remove exactly the older ones. Rows with
/// a key need no such order (each row's `seq` tells it), and keep spreading over the lanes.
pub fn lane_key<'a>(chunk: &'a Chunk, c: &Change) -> &'a [u8] {
    if c.keyless {
        b""
    } else {
        chunk.key(c)
    }
}

/// Which lane (in-flight slot) an entity id belongs to: all operations on one id go through
/// one lane, in order, which is what keeps per-entity ordering with several batches in flight.
pub fn lane_of(entity: &str, key: &[u8], lanes: usize) -> usize {
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in entity.as_bytes().iter().chain([0u8].iter()).chain(key) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % lanes.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Op;
    use crate::sink::ledger::{Ledger, Mark};

    fn chunk_with(entries: &[(&str, u64, &str)]) -> Chunk {
        let mut chunk = Chunk::default();
        for (entity, seq, line) in entries {
            let start = chunk.buf.len();
            chunk.buf.extend_from_slice(line.as_bytes());
            chunk.changes.push(Change {
                seq: *seq,
                op: Op::Insert,
                entity: Arc::from(*entity),
                keyless: false,
                line: start..chunk.buf.len(),
                key: start..start,
            });
        }
        chunk
    }

    #[test]
    fn groups_per_entity_in_order() {
        let chunk = Arc::new(chunk_with(&[
            ("users", 1, "{\"seq\":1}"),
            ("items", 2, "{\"seq\":2}"),
            ("users", 3, "{\"seq\":3}"),
        ]));
        let mut ledger = Ledger::new();
        let ticket = ledger.register(Mark::of(&chunk), chunk.changes.len());
        let mut b = Builder::default();
        for c in &chunk.changes {
            b.push(&chunk, ticket, c);
        }
        let batch = b.finish(&envelope(2));
        assert!(b.is_empty());
        // The batch holds every change of the chunk: once delivered, the chunk is.
        ledger.done_all(&batch.pieces);
        assert_eq!(ledger.pop_ready().map(|a| a.changes), Some(3));
        let v: serde_json::Value = serde_json::from_slice(&batch.body.to_vec()).unwrap();
        assert_eq!(v["batch_id"], "mariadb-1-1-3");
        assert_eq!(v["count"], 3);
        assert_eq!(
            v["entities"]["users"],
            serde_json::json!([{"seq": 1}, {"seq": 3}])
        );
        assert_eq!(v["entities"]["items"], serde_json::json!([{"seq": 2}]));
    }

    #[test]
    fn compaction_merges_ops_on_one_id() {
        let ins = r#"{"seq":1,"op":"insert","id":{"id":1},"after":{"id":1,"v":1}}"#;
        let upd = r#"{"seq":2,"op":"update","id":{"id":1},"changed":["v"],"before":{"id":1,"v":1},"after":{"id":1,"v":2}}"#;
        let upd2 = r#"{"seq":3,"op":"update","id":{"id":1},"changed":["v"],"before":{"id":1,"v":2},"after":{"id":1,"v":3}}"#;
        let del = r#"{"seq":4,"op":"delete","id":{"id":1},"before":{"id":1,"v":3}}"#;
        let v = |b: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
        assert_eq!(
            v(merge_ops(ins.as_bytes(), upd.as_bytes())),
            serde_json::json!({"seq":2,"op":"insert","id":{"id":1},"after":{"id":1,"v":2}})
        );
        assert_eq!(
            v(merge_ops(upd.as_bytes(), upd2.as_bytes())),
            serde_json::json!({"seq":3,"op":"update","id":{"id":1},"changed":["v"],"before":{"id":1,"v":1},"after":{"id":1,"v":3}})
        );
        assert_eq!(
            v(merge_ops(upd.as_bytes(), del.as_bytes())),
            serde_json::json!({"seq":4,"op":"delete","id":{"id":1},"before":{"id":1,"v":1}})
        );
        // In a builder: three ops on id 1 and one on id 2 become two ops, in seq order.
        let chunk = chunk_with(&[
            ("t", 1, ins),
            ("t", 2, upd),
            ("t", 3, r#"{"seq":3,"op":"insert","id":{"id":2}}"#),
            ("t", 4, &upd2.replace("\"seq\":3", "\"seq\":4")),
        ]);
        let mut chunk = chunk;
        let keys: Vec<std::ops::Range<usize>> = chunk
            .changes
            .iter()
            .map(|c| {
                let line = &chunk.buf[c.line.clone()];
                let at = line.windows(5).position(|w| w == b"\"id\":").unwrap() + 5;
                let len = line[at..].iter().position(|&b| b == b'}').unwrap() + 1;
                c.line.start + at..c.line.start + at + len
            })
            .collect();
        for (c, k) in chunk.changes.iter_mut().zip(keys) {
            c.key = k;
        }
        let chunk = Arc::new(chunk);
        let mut ledger = Ledger::new();
        let ticket = ledger.register(Mark::of(&chunk), chunk.changes.len());
        let mut b = Builder::compacting();
        for c in &chunk.changes {
            b.push(&chunk, ticket, c);
        }
        let batch = b.finish(&envelope(2));
        // Merged operations still count as delivered pieces of their chunk.
        ledger.done_all(&batch.pieces);
        assert_eq!(ledger.pop_ready().map(|a| a.changes), Some(4));
        let body: serde_json::Value = serde_json::from_slice(&batch.body.to_vec()).unwrap();
        assert_eq!(body["count"], 2);
        let seqs: Vec<u64> = body["entities"]["t"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![3, 4]);
        assert_eq!(body["entities"]["t"][1]["op"], "insert");
        assert_eq!(body["entities"]["t"][1]["after"]["v"], 3);
        assert!(b.is_empty());
    }

    fn envelope(contract: u8) -> Envelope {
        Envelope {
            source: SourceHeader {
                json: "\"source\":{\"flavor\":\"mariadb\",\"server_id\":1,\"server_uuid\":null}"
                    .into(),
                id_prefix: "mariadb-1".into(),
            },
            contract,
        }
    }

    /// A chunk of operations as the decoder encodes them: `(entity, seq, op, line)`; a row
    /// operation's key is its `"id"` object inside the line, an operation on the whole type
    /// has an empty key.
    fn encoded(entries: &[(&str, u64, Op, String)]) -> Arc<Chunk> {
        let mut chunk = Chunk::default();
        for (entity, seq, op, line) in entries {
            let start = chunk.buf.len();
            chunk.buf.extend_from_slice(line.as_bytes());
            let key = match line.find("\"id\":") {
                Some(at) if op.is_row() => {
                    let from = start + at + 5;
                    let len = line[at + 5..].find('}').unwrap() + 1;
                    from..from + len
                }
                _ => start..start,
            };
            chunk.changes.push(Change {
                seq: *seq,
                op: *op,
                entity: Arc::from(*entity),
                keyless: false,
                line: start..chunk.buf.len(),
                key,
            });
        }
        Arc::new(chunk)
    }

    fn row_line(seq: u64, op: &str, id: i64, v: i64) -> String {
        let image = format!("{{\"id\":{id},\"v\":{v}}}");
        let images = match op {
            "insert" => format!("\"after\":{image}"),
            "delete" => format!("\"before\":{image}"),
            _ => format!("\"changed\":[\"v\"],\"before\":{image},\"after\":{image}"),
        };
        format!("{{\"seq\":{seq},\"op\":\"{op}\",\"entity\":\"t\",\"id\":{{\"id\":{id}}},\"row\":0,{images}}}")
    }

    fn type_line(seq: u64, op: &str) -> String {
        format!("{{\"seq\":{seq},\"op\":\"{op}\",\"entity\":\"t\",\"statement\":\"{op} t\"}}")
    }

    /// Every change of `chunk` through one builder, finished as a version `contract` body:
    /// the body read as JSON, and its text.
    fn build(mut b: Builder, chunk: &Arc<Chunk>, contract: u8) -> (serde_json::Value, String) {
        let mut ledger = Ledger::new();
        let ticket = ledger.register(Mark::of(chunk), chunk.changes.len());
        for c in &chunk.changes {
            b.push(chunk, ticket, c);
        }
        let batch = b.finish(&envelope(contract));
        assert_eq!(batch.contract, contract);
        ledger.done_all(&batch.pieces);
        assert_eq!(
            ledger.pop_ready().map(|a| a.changes),
            Some(chunk.changes.len()),
            "every change counts as delivered with its batch"
        );
        let text = String::from_utf8(batch.body.to_vec()).unwrap();
        (serde_json::from_str(&text).unwrap(), text)
    }

    #[test]
    fn the_body_carries_the_configured_contract_version() {
        let chunk = encoded(&[("t", 1, Op::Insert, row_line(1, "insert", 1, 1))]);
        for contract in [1, 2] {
            for b in [Builder::default(), Builder::compacting()] {
                let (body, text) = build(b, &chunk, contract);
                assert_eq!(body["version"], contract);
                assert!(
                    text.starts_with(&format!("{{\"version\":{contract},")),
                    "{text}"
                );
            }
        }
    }

    /// ddl, truncate and drop go into their entity type's list in seq order with the rows,
    /// and `--compact` never merges them: not with each other (their key is the same empty
    /// text), not with a row operation.
    #[test]
    fn operations_on_a_whole_type_stay_in_their_list_and_are_never_merged() {
        let chunk = encoded(&[
            ("t", 1, Op::Insert, row_line(1, "insert", 1, 1)),
            ("t", 2, Op::Ddl, type_line(2, "ddl")),
            (
                "u",
                3,
                Op::Insert,
                row_line(3, "insert", 1, 1).replace("\"t\"", "\"u\""),
            ),
            ("t", 4, Op::Truncate, type_line(4, "truncate")),
            ("t", 5, Op::Truncate, type_line(5, "truncate")),
            ("t", 6, Op::Insert, row_line(6, "insert", 2, 6)),
            ("t", 7, Op::Update, row_line(7, "update", 2, 7)),
            ("t", 8, Op::Drop, type_line(8, "drop")),
            ("t", 9, Op::Ddl, type_line(9, "ddl")),
        ]);
        let seqs = |body: &serde_json::Value, entity: &str| -> Vec<(u64, String)> {
            body["entities"][entity]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    (
                        o["seq"].as_u64().unwrap(),
                        o["op"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let ops = |list: &[(u64, &str)]| -> Vec<(u64, String)> {
            list.iter().map(|&(s, o)| (s, o.to_string())).collect()
        };
        let (plain, _) = build(Builder::default(), &chunk, 2);
        assert_eq!(plain["count"], 9);
        assert_eq!(
            seqs(&plain, "t"),
            ops(&[
                (1, "insert"),
                (2, "ddl"),
                (4, "truncate"),
                (5, "truncate"),
                (6, "insert"),
                (7, "update"),
                (8, "drop"),
                (9, "ddl")
            ])
        );
        assert_eq!(seqs(&plain, "u"), ops(&[(3, "insert")]));
        let (compact, _) = build(Builder::compacting(), &chunk, 2);
        // Only id 2's insert and update merge (into an insert at 7).
        assert_eq!(compact["count"], 8);
        assert_eq!(
            seqs(&compact, "t"),
            ops(&[
                (1, "insert"),
                (2, "ddl"),
                (4, "truncate"),
                (5, "truncate"),
                (7, "insert"),
                (8, "drop"),
                (9, "ddl")
            ])
        );
        let truncate = &compact["entities"]["t"][2];
        assert_eq!(
            truncate,
            &serde_json::from_str::<serde_json::Value>(&type_line(4, "truncate")).unwrap()
        );
        assert_eq!(compact["first_seq"], 1);
        assert_eq!(compact["last_seq"], 9);
    }

    /// Every row operation of a keyless table travels in the lane of its type's truncates, so
    /// that they reach the receiver in seq order; keyed rows still spread over the lanes.
    #[test]
    fn keyless_rows_share_the_lane_of_their_types_truncates() {
        let mut entries = vec![("t", 1, Op::Truncate, type_line(1, "truncate"))];
        for i in 0..50 {
            entries.push((
                "t",
                2 + i,
                Op::Insert,
                row_line(2 + i, "insert", i as i64, 0),
            ));
        }
        let mut chunk = Arc::try_unwrap(encoded(&entries)).ok().unwrap();
        let keyed = Arc::new(Chunk {
            buf: chunk.buf.clone(),
            changes: chunk.changes.clone(),
            ..Chunk::default()
        });
        for c in &mut chunk.changes {
            c.keyless = c.op.is_row();
        }
        let keyless = Arc::new(chunk);
        for lanes in [1, 2, 4, 7] {
            let lane =
                |chunk: &Arc<Chunk>, c: &Change| lane_of(&c.entity, lane_key(chunk, c), lanes);
            let truncate = lane(&keyless, &keyless.changes[0]);
            assert!(
                keyless
                    .changes
                    .iter()
                    .all(|c| lane(&keyless, c) == truncate),
                "{lanes} lanes"
            );
            let used: std::collections::HashSet<usize> =
                keyed.changes.iter().map(|c| lane(&keyed, c)).collect();
            assert_eq!(used.len(), lanes, "keyed rows spread over {lanes} lanes");
        }
    }

    #[test]
    fn lanes_are_stable_and_spread() {
        assert_eq!(
            lane_of("users", b"{\"id\":1}", 4),
            lane_of("users", b"{\"id\":1}", 4)
        );
        let used: std::collections::HashSet<usize> = (0..100)
            .map(|i| lane_of("users", format!("{{\"id\":{i}}}").as_bytes(), 4))
            .collect();
        assert_eq!(used.len(), 4);
        assert_eq!(lane_of("x", b"y", 1), 0);
    }
}
