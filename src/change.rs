//! What flows from the decoder to the sinks: a [`Chunk`] of encoded row changes plus the
//! position a restart may resume from once the chunk (and every chunk before it) is delivered.
//!
//! A change is encoded once, by the decoder, as one JSON object (the line the file sink writes
//! and the operation the HTTP sink sends); sinks slice `Chunk::buf` and never re-encode values.

use std::ops::Range;
use std::sync::Arc;

use crate::checkpoint::{Position, Records, ServerIdentity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// A table's definition changed (contract v2): no `id`, the operation names the table.
    Ddl,
    /// Every row of the entity type is gone (contract v2): no `id`.
    Truncate,
    /// The table is gone with its rows (contract v2): no `id`.
    Drop,
    /// A row of the initial snapshot (contract v3): the row as of the chunk's position.
    Read,
    /// A table's snapshot is complete (contract v3): no `id`; rows of the entity type last
    /// written below its `since` are gone from the source.
    SnapshotEnd,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Ddl => "ddl",
            Op::Truncate => "truncate",
            Op::Drop => "drop",
            Op::Read => "read",
            Op::SnapshotEnd => "snapshot_end",
        }
    }

    /// A row change (it has an `id`), as opposed to an operation on the whole entity type.
    pub fn is_row(self) -> bool {
        matches!(self, Op::Insert | Op::Update | Op::Delete | Op::Read)
    }
}

#[derive(Debug, Clone)]
pub struct Change {
    /// Position key: numbers every delivered operation of a source, in commit order, the same
    /// way on every replay.
    pub seq: u64,
    pub op: Op,
    pub entity: Arc<str>,
    /// Of a table without a primary key: its `key` is the whole row, and operations on
    /// identical rows must never be merged (`--compact`).
    pub keyless: bool,
    /// The JSON object of the whole change.
    pub line: Range<usize>,
    /// The entity id (`{"pk":value,...}`) inside `line`; empty for an operation on the whole
    /// entity type (`!op.is_row()`).
    pub key: Range<usize>,
}

#[derive(Debug, Default)]
pub struct Chunk {
    pub buf: Vec<u8>,
    pub changes: Vec<Change>,
    /// Resume point after this chunk; `None` when the chunk ends where no resumable position is
    /// known yet (before the first commit of a stream started from a file position).
    pub position: Option<Position>,
    /// The chunk ends exactly at the end of the stream's binlog as it stood at start-up
    /// (`--exit-at-end`).
    pub at_end: bool,
    /// Writes to save with the checkpoint past this chunk (the schema history's steps, see
    /// `schema::history`), in stream order.
    pub records: Vec<Records>,
    /// The server whose binlog `position`'s file and offset name (set by the source stage
    /// as it hands the chunk on; it changes at a failover, see `source::failover`).
    pub server: Option<Arc<ServerIdentity>>,
    /// Indexes in `changes`, in order, of each change that is the first of its entity type in
    /// its source transaction (snapshot rows belong to none): the delivered-transactions
    /// metric counts them.
    pub txn_firsts: Vec<u32>,
}

impl Chunk {
    pub fn line(&self, c: &Change) -> &[u8] {
        &self.buf[c.line.clone()]
    }

    pub fn key(&self, c: &Change) -> &[u8] {
        &self.buf[c.key.clone()]
    }

    /// What it holds per entity type, for the metrics counted once it is delivered.
    pub fn tally(&self, schema_versions: usize) -> crate::metrics::Tally {
        let mut t = crate::metrics::Tally::default();
        t.versions = schema_versions;
        let mut firsts = self.txn_firsts.iter().peekable();
        for (i, c) in self.changes.iter().enumerate() {
            let first = firsts.next_if(|&&f| f as usize == i).is_some();
            t.add(&c.entity, c.op.as_str(), c.op.is_row(), first);
        }
        t
    }
}
