//! Snapshot rows put into the stream (issue 12): a chunk read at binlog position P is
//! injected between two transactions, exactly where the stream reaches P, so its rows take
//! `seq` values from the same counter as the binlog's operations and order correctly
//! against them for every entity id.
//!
//! Invariants:
//! - A chunk is injected only between transactions, at the first point where the stream's
//!   read position reaches P ([`Decoder::snapshot_due`]); a chunk whose P the stream already
//!   passed (a commit after P was decoded) is never injected: it would undo newer changes.
//! - A chunk takes a fixed `budget` of `seq` values (its row limit, plus one for a
//!   `snapshot_end`), whatever its row count: the counter after it is `seq_before + budget`.
//!   The source stage saves that room (a `snapshot::progress::Reservation`) before the first
//!   row leaves, and a restart that replays the stream through the same point skips the same
//!   room there ([`Decoder::add_reservations`]), so binlog operations keep their `seq`.
//! - Chunks taken while a chunk is being injected resume before it (its `seq_before`): a
//!   restart skips its room and reads it again; only the chunk that ends the injection
//!   carries the table's progress records and the position after the room.

use std::cmp::Ordering;
use std::sync::Arc;

use super::Decoder;
use crate::change::{Change, Op};
use crate::checkpoint::Records;
use crate::json::{format_utc_micros, push_u64, write_json_str};

/// `seq` room taken by a chunk injected where the stream's last commit was `file:offset`
/// and its `seq` was `seq_before` (saved by `snapshot::progress`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub file: String,
    pub offset: u64,
    pub seq_before: u64,
    pub budget: u64,
}

/// Whether a chunk read at a binlog position can be injected now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The stream has not reached it yet (or is inside a transaction).
    NotYet,
    Now,
    /// A transaction committed after it was decoded already: the chunk is stale.
    Passed,
}

/// A chunk being injected (see the module docs).
pub(super) struct Injecting {
    seq_before: u64,
    budget: u64,
    /// `"db":..,"table":..,"entity":..,` (and `"keyless":true,`).
    meta_json: Box<[u8]>,
    /// `"gtid":null,"ts":"..","file":"..","offset":N`
    tail_json: Box<[u8]>,
    entity: Arc<str>,
    keyless: bool,
}

/// Binlog file order: by numeric suffix when both names have one (`.999999` < `.1000000`).
fn cmp_files(a: &str, b: &str) -> Ordering {
    let num = |f: &str| f.rsplit_once('.').and_then(|(_, n)| n.parse::<u64>().ok());
    match (num(a), num(b)) {
        (Some(x), Some(y))
            if a.rsplit_once('.').map(|p| p.0) == b.rsplit_once('.').map(|p| p.0) =>
        {
            x.cmp(&y)
        }
        _ => a.cmp(b),
    }
}

fn cmp_pos(a: (&str, u64), b: (&str, u64)) -> Ordering {
    cmp_files(a.0, b.0).then(a.1.cmp(&b.1))
}

impl Decoder {
    /// Whether a chunk read at `file:offset` is due (see [`Due`]).
    pub fn snapshot_due(&self, file: &str, offset: u64) -> Due {
        let (last_file, last_offset) = &self.last_commit;
        if cmp_pos((last_file, *last_offset), (file, offset)) == Ordering::Greater {
            return Due::Passed;
        }
        if self.txn.is_some() || self.emit_from.is_some() || self.resume.is_some() {
            return Due::NotYet;
        }
        if cmp_pos((&self.boundary.file, self.read_to()), (file, offset)) == Ordering::Less {
            return Due::NotYet;
        }
        Due::Now
    }

    /// Rooms taken by chunks of an earlier run (from the state dir), skipped where the
    /// stream reaches them again.
    pub fn add_reservations(&mut self, rs: impl IntoIterator<Item = Reservation>) {
        self.reserved.extend(rs);
    }

    /// Skips the rooms reserved at this point of the stream (between transactions).
    pub(super) fn apply_reservations(&mut self) {
        while let Some(i) = self.reserved.iter().position(|r| {
            r.seq_before == self.seq
                && r.offset == self.boundary.offset
                && r.file == self.boundary.file
        }) {
            let r = self.reserved.swap_remove(i);
            self.seq += r.budget;
            self.boundary.seq = self.seq;
            self.position_dirty = true;
        }
        // Rooms behind the counter can never match again.
        let seq = self.seq;
        self.reserved.retain(|r| r.seq_before >= seq);
    }

    /// Starts injecting a chunk of `db.table` read at `file:offset` (due now), taking
    /// `budget` `seq` values; returns the room to save before any of its rows is handed on.
    #[allow(clippy::too_many_arguments)]
    pub fn begin_snapshot_chunk(
        &mut self,
        db: &str,
        table: &str,
        keyless: bool,
        file: &str,
        offset: u64,
        read_at_micros: i64,
        budget: u64,
    ) -> Reservation {
        self.apply_reservations();
        let (entity, meta) = self.table_meta(db, table, keyless);
        let mut tail = Vec::with_capacity(96);
        tail.extend_from_slice(b"\"gtid\":null,\"ts\":\"");
        tail.extend_from_slice(format_utc_micros(read_at_micros).as_bytes());
        tail.extend_from_slice(b"\",\"file\":");
        write_json_str(&mut tail, file.as_bytes());
        tail.extend_from_slice(b",\"offset\":");
        push_u64(&mut tail, offset);
        let r = Reservation {
            file: self.boundary.file.clone(),
            offset: self.boundary.offset,
            seq_before: self.seq,
            budget,
        };
        self.injecting = Some(Injecting {
            seq_before: self.seq,
            budget,
            meta_json: meta.into_boxed_slice(),
            tail_json: tail.into_boxed_slice(),
            entity,
            keyless,
        });
        r
    }

    /// One row of the chunk being injected: its `id` and `after` objects as the snapshot
    /// reader encoded them.
    pub fn snapshot_row(&mut self, id: &[u8], after: &[u8]) {
        let Some(inj) = &self.injecting else { return };
        debug_assert!(self.seq < inj.seq_before + inj.budget);
        self.seq += 1;
        let buf = &mut self.chunk.buf;
        let start = buf.len();
        buf.extend_from_slice(b"{\"seq\":");
        push_u64(buf, self.seq);
        buf.extend_from_slice(b",\"op\":\"read\",");
        buf.extend_from_slice(&inj.meta_json);
        buf.extend_from_slice(b"\"id\":");
        let key_start = buf.len();
        buf.extend_from_slice(id);
        let key_end = buf.len();
        buf.push(b',');
        buf.extend_from_slice(&inj.tail_json);
        buf.extend_from_slice(b",\"after\":");
        buf.extend_from_slice(after);
        buf.push(b'}');
        self.chunk.changes.push(Change {
            seq: self.seq,
            op: Op::Read,
            entity: inj.entity.clone(),
            keyless: inj.keyless,
            line: start..buf.len(),
            key: key_start..key_end,
        });
    }

    /// Ends the chunk being injected: a `snapshot_end` carrying `since` when it was the
    /// table's last, the counter moved past the chunk's room, and `records` (the table's
    /// progress) saved with the checkpoint past it.
    pub fn end_snapshot_chunk(&mut self, snapshot_end: Option<u64>, records: Records) {
        let Some(inj) = self.injecting.take() else {
            return;
        };
        if let Some(since) = snapshot_end {
            self.seq += 1;
            let buf = &mut self.chunk.buf;
            let start = buf.len();
            buf.extend_from_slice(b"{\"seq\":");
            push_u64(buf, self.seq);
            buf.extend_from_slice(b",\"op\":\"snapshot_end\",");
            let meta = &inj.meta_json;
            // Without `"keyless":true,`: the operation is on the whole entity type.
            let meta = if inj.keyless {
                &meta[..meta.len() - b"\"keyless\":true,".len()]
            } else {
                &meta[..]
            };
            buf.extend_from_slice(meta);
            buf.extend_from_slice(&inj.tail_json);
            buf.extend_from_slice(b",\"since\":");
            push_u64(buf, since);
            buf.push(b'}');
            let end = buf.len();
            self.chunk.changes.push(Change {
                seq: self.seq,
                op: Op::SnapshotEnd,
                entity: inj.entity.clone(),
                keyless: false,
                line: start..end,
                key: end..end,
            });
        }
        self.seq = inj.seq_before + inj.budget;
        self.boundary.seq = self.seq;
        self.chunk.records.push(records);
        self.position_dirty = true;
    }

    /// The `seq` a chunk taken now resumes from: before the chunk being injected, if any.
    pub(super) fn injecting_seq_before(&self) -> Option<u64> {
        self.injecting.as_ref().map(|i| i.seq_before)
    }

    /// The history's definition of `db.table` at the stream's position (None: no history
    /// kept, or the table is unknown to it).
    pub fn table_definition(&self, db: &str, table: &str) -> Option<&crate::schema::Table> {
        self.history.as_ref()?.table(db, table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Position;
    use crate::decode::DecodeConfig;

    fn decoder_at(seq: u64) -> Decoder {
        let start = Position {
            file: "b.000001".into(),
            offset: 400,
            seq,
            ..Position::default()
        };
        Decoder::new(Arc::new(DecodeConfig::default()), start, None, None, None)
    }

    fn progress() -> Records {
        Records {
            tree: b"snapshot",
            entries: vec![(b"d.t".to_vec(), b"{}".to_vec())],
        }
    }

    /// The first run injects a chunk of 2 rows with a room of 5; a replay from before it
    /// skips the same room there: the counter after the point is the same either way.
    #[test]
    fn a_replay_skips_the_room_a_chunk_took_at_the_same_point() {
        let mut first = decoder_at(10);
        assert_eq!(first.snapshot_due("b.000001", 400), Due::Now);
        assert_eq!(first.snapshot_due("b.000001", 500), Due::NotYet);
        assert_eq!(first.snapshot_due("b.000000", 900), Due::Passed);
        let room = first.begin_snapshot_chunk("d", "t", false, "b.000001", 400, 0, 5);
        assert_eq!(
            room,
            Reservation {
                file: "b.000001".into(),
                offset: 400,
                seq_before: 10,
                budget: 5
            }
        );
        first.snapshot_row(br#"{"id":1}"#, br#"{"id":1,"v":2}"#);
        // A chunk taken inside the injection resumes before it.
        let mid = first.take_chunk(true).unwrap();
        assert_eq!(mid.position.as_ref().unwrap().seq, 10);
        assert_eq!(mid.changes[0].seq, 11);
        assert_eq!(
            std::str::from_utf8(mid.line(&mid.changes[0])).unwrap(),
            r#"{"seq":11,"op":"read","db":"d","table":"t","entity":"t","id":{"id":1},"gtid":null,"ts":"1970-01-01T00:00:00Z","file":"b.000001","offset":400,"after":{"id":1,"v":2}}"#
        );
        first.snapshot_row(br#"{"id":2}"#, br#"{"id":2,"v":3}"#);
        first.end_snapshot_chunk(Some(10), progress());
        let done = first.take_chunk(true).unwrap();
        assert_eq!(
            done.position.as_ref().unwrap().seq,
            15,
            "the room is used up whole"
        );
        assert_eq!(done.records, vec![progress()]);
        let end = done.line(&done.changes[1]);
        assert!(
            std::str::from_utf8(end)
                .unwrap()
                .contains(r#""op":"snapshot_end","db":"d","table":"t","entity":"t","gtid":null"#),
            "{}",
            String::from_utf8_lossy(end)
        );

        let mut replay = decoder_at(10);
        replay.add_reservations([room.clone()]);
        replay.apply_reservations();
        assert_eq!(replay.seq, 15);
        assert_eq!(replay.take_chunk(true).unwrap().position.unwrap().seq, 15);

        // A room of another point, or behind the counter, is not taken.
        let mut other = decoder_at(10);
        other.add_reservations([Reservation {
            offset: 300,
            ..room.clone()
        }]);
        other.apply_reservations();
        assert_eq!(other.seq, 10);
        let mut behind = decoder_at(20);
        behind.add_reservations([room]);
        behind.apply_reservations();
        assert_eq!(behind.seq, 20);
        assert!(behind.reserved.is_empty());
    }

    #[test]
    fn binlog_files_order_by_their_number() {
        assert_eq!(cmp_files("b.000009", "b.000010"), Ordering::Less);
        assert_eq!(cmp_files("b.999999", "b.1000000"), Ordering::Less);
        assert_eq!(cmp_files("b.000010", "b.000010"), Ordering::Equal);
        assert_eq!(cmp_pos(("b.000001", 900), ("b.000002", 4)), Ordering::Less);
    }
}
