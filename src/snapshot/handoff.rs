//! How snapshot chunks reach the stream: the messages between the snapshot runner's table
//! tasks and the source stage, and the source stage's side of them ([`Inbox`]).
//!
//! A table task reads a chunk in three steps:
//! 1. [`Msg::Hold`]: the source stage stops pulling binlog events (it acknowledges once it
//!    has decoded every event it took), so the stream cannot pass the position the chunk is
//!    about to be read at. The reader task keeps the server's events in its bounded queue.
//! 2. The chunk's consistent-snapshot read, which gives its binlog position P, at or after
//!    every event the stream decoded.
//! 3. [`Msg::Ready`] (or [`Msg::Release`] after a failed read) ends the hold; the stream goes
//!    on and injects the chunk where it reaches P (`decode::inject`), then answers with
//!    [`Injected`]. A table task has at most one chunk out, so memory follows the chunk size.

use tokio::sync::{mpsc, oneshot};

use super::chunk::{ChunkBuf, SnapshotPosition};
use super::progress::TableProgress;
use crate::decode::inject::Due;
use crate::decode::Decoder;

/// From the snapshot runner to the source stage.
pub enum Msg {
    /// Stop pulling events, then acknowledge.
    Hold(oneshot::Sender<()>),
    /// A chunk, read during a hold that this ends.
    Ready(Box<ReadyChunk>),
    /// A hold ends without a chunk (the read failed).
    Release,
    /// The snapshot cannot go on; the message names the fix. Ends the run.
    Failed(String),
    /// Whether tables are being snapshotted (`--exit-at-end` waits while they are).
    Busy(bool),
}

/// A chunk read and encoded, waiting for the stream to reach its position.
pub struct ReadyChunk {
    pub db: String,
    pub table: String,
    pub keyless: bool,
    /// The column names the rows were encoded with, and the id's columns.
    pub columns: Vec<String>,
    pub id: Vec<String>,
    pub position: SnapshotPosition,
    /// When the chunk was read (the operations' `ts`).
    pub read_at_micros: i64,
    pub buf: ChunkBuf,
    /// `seq` values the chunk takes (see `decode::inject`).
    pub budget: u64,
    /// The table's last chunk: a `snapshot_end` follows its rows.
    pub last: bool,
    /// The table's progress once this chunk is delivered (`since` 0: set at injection).
    pub progress: TableProgress,
    pub reply: oneshot::Sender<Injected>,
}

/// What became of a chunk; the buffer comes back for the next one.
pub enum Injected {
    /// Handed on; `since` is the table's snapshot start (see [`TableProgress::since`]).
    Done { buf: ChunkBuf, since: u64 },
    /// Not injected: read it again (the stream passed it), after reading the table's plan
    /// again when `replan` (its definition changed).
    Stale {
        buf: ChunkBuf,
        why: String,
        replan: bool,
    },
}

/// The source stage's end of the link.
pub struct Inbox {
    rx: mpsc::Receiver<Msg>,
    holds: usize,
    pending: Vec<ReadyChunk>,
    closed: bool,
    failed: Option<String>,
    busy: bool,
}

impl Inbox {
    /// `busy`: whether the runner starts with tables to snapshot.
    pub fn new(rx: mpsc::Receiver<Msg>, busy: bool) -> Inbox {
        Inbox {
            rx,
            holds: 0,
            pending: Vec::new(),
            closed: false,
            failed: None,
            busy,
        }
    }

    /// Whether snapshot work is under way (chunks waiting, or tables being read).
    pub fn busy(&self) -> bool {
        !self.closed && (self.busy || !self.pending.is_empty())
    }

    /// Whether a chunk waits for the stream.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the stream must not pull events now.
    pub fn held(&self) -> bool {
        self.holds > 0
    }

    /// The snapshot's definite failure, once.
    pub fn failure(&mut self) -> Option<String> {
        self.failed.take()
    }

    /// Takes every message waiting, without blocking. Call only where no event is being
    /// decoded: a hold is acknowledged here.
    pub fn drain(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.take(m);
        }
    }

    /// Waits for the next message (forever once the runner is gone). Cancel-safe.
    pub async fn recv(&mut self) {
        if self.closed {
            return std::future::pending().await;
        }
        match self.rx.recv().await {
            Some(m) => self.take(m),
            None => self.closed = true,
        }
    }

    fn take(&mut self, m: Msg) {
        match m {
            Msg::Hold(ack) => {
                self.holds += 1;
                if ack.send(()).is_err() {
                    self.holds -= 1;
                }
            }
            Msg::Ready(c) => {
                self.holds = self.holds.saturating_sub(1);
                self.pending.push(*c);
            }
            Msg::Release => self.holds = self.holds.saturating_sub(1),
            Msg::Failed(why) => self.failed = Some(why),
            Msg::Busy(b) => self.busy = b,
        }
    }

    /// A waiting chunk that is due now or stale, if any.
    pub fn next_due(&mut self, decoder: &Decoder) -> Option<(ReadyChunk, Due)> {
        let i = self.pending.iter().position(|c| {
            decoder.snapshot_due(&c.position.file, c.position.offset) != Due::NotYet
        })?;
        let c = self.pending.swap_remove(i);
        let due = decoder.snapshot_due(&c.position.file, c.position.offset);
        Some((c, due))
    }

    /// Why `c` no longer fits its table as the stream knows it at `c`'s position (a DDL
    /// passed between the plan and the chunk's read), if it does not.
    pub fn schema_mismatch(decoder: &Decoder, c: &ReadyChunk) -> Option<String> {
        let t = decoder.table_definition(&c.db, &c.table)?;
        if !t.complete {
            return None;
        }
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        let same_columns = names.len() == c.columns.len()
            && names
                .iter()
                .zip(&c.columns)
                .all(|(a, b)| a.eq_ignore_ascii_case(b));
        // The id's columns as the decoder takes them (a promoted unique key included).
        let key = t.key();
        let same_key = key.is_empty()
            || (key.len() == c.id.len()
                && key
                    .iter()
                    .zip(&c.id)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b)));
        (!same_columns || !same_key).then(|| {
            format!(
                "{}.{} changed (now columns {:?}, key {:?})",
                c.db, c.table, names, key
            )
        })
    }
}
