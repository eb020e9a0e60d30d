//! Building one request body of the sync API (see docs/sync-api.md): operations grouped per
//! entity type, in `seq` order within each group, copied from the decoder's encoded lines.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::change::{Change, Chunk};

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

/// A batch being filled.
#[derive(Default)]
pub struct Builder {
    groups: BTreeMap<Arc<str>, Vec<u8>>,
    pub count: usize,
    pub bytes: usize,
    pub min_seq: u64,
    pub max_seq: u64,
    pub opened: Option<Instant>,
}

impl Builder {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn push(&mut self, chunk: &Chunk, c: &Change) {
        let line = chunk.line(c);
        let group = self.groups.entry(c.entity.clone()).or_default();
        if !group.is_empty() {
            group.push(b',');
        }
        group.extend_from_slice(line);
        if self.count == 0 {
            self.min_seq = c.seq;
            self.opened = Some(Instant::now());
        }
        self.count += 1;
        self.bytes += line.len() + 1;
        self.max_seq = self.max_seq.max(c.seq);
    }

    /// The request body; leaves the builder empty.
    pub fn finish(&mut self, source: &SourceHeader) -> Batch {
        let id = format!("{}-{}-{}", source.id_prefix, self.min_seq, self.max_seq);
        let mut body = Vec::with_capacity(self.bytes + 256);
        body.extend_from_slice(b"{\"version\":1,\"batch_id\":");
        crate::decode::value::write_json_str(&mut body, id.as_bytes());
        body.push(b',');
        body.extend_from_slice(source.json.as_bytes());
        body.extend_from_slice(b",\"first_seq\":");
        crate::decode::push_u64(&mut body, self.min_seq);
        body.extend_from_slice(b",\"last_seq\":");
        crate::decode::push_u64(&mut body, self.max_seq);
        body.extend_from_slice(b",\"count\":");
        crate::decode::push_u64(&mut body, self.count as u64);
        body.extend_from_slice(b",\"entities\":{");
        for (i, (entity, ops)) in std::mem::take(&mut self.groups).into_iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            crate::decode::value::write_json_str(&mut body, entity.as_bytes());
            body.extend_from_slice(b":[");
            body.extend_from_slice(&ops);
            body.push(b']');
        }
        body.extend_from_slice(b"}}");
        let batch = Batch {
            id,
            body,
            count: self.count,
            min_seq: self.min_seq,
            max_seq: self.max_seq,
        };
        *self = Builder::default();
        batch
    }
}

/// A finished request body.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Also the Idempotency-Key.
    pub id: String,
    pub body: Vec<u8>,
    pub count: usize,
    pub min_seq: u64,
    pub max_seq: u64,
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

    fn chunk_with(entries: &[(&str, u64, &str)]) -> Chunk {
        let mut chunk = Chunk::default();
        for (entity, seq, line) in entries {
            let start = chunk.buf.len();
            chunk.buf.extend_from_slice(line.as_bytes());
            chunk.changes.push(Change {
                seq: *seq,
                op: Op::Insert,
                entity: Arc::from(*entity),
                line: start..chunk.buf.len(),
                key: start..start,
            });
        }
        chunk
    }

    #[test]
    fn groups_per_entity_in_order() {
        let chunk = chunk_with(&[
            ("users", 1, "{\"seq\":1}"),
            ("items", 2, "{\"seq\":2}"),
            ("users", 3, "{\"seq\":3}"),
        ]);
        let mut b = Builder::default();
        for c in &chunk.changes {
            b.push(&chunk, c);
        }
        let src = SourceHeader {
            json: "\"source\":{\"flavor\":\"mariadb\",\"server_id\":1,\"server_uuid\":null}".into(),
            id_prefix: "mariadb-1".into(),
        };
        let batch = b.finish(&src);
        assert!(b.is_empty());
        let v: serde_json::Value = serde_json::from_slice(&batch.body).unwrap();
        assert_eq!(v["batch_id"], "mariadb-1-1-3");
        assert_eq!(v["count"], 3);
        assert_eq!(
            v["entities"]["users"],
            serde_json::json!([{"seq": 1}, {"seq": 3}])
        );
        assert_eq!(v["entities"]["items"], serde_json::json!([{"seq": 2}]));
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
