//! The checkpoint: where a restart resumes, kept in an embedded sled store in `--state-dir`
//! ([`Store`], in `store.rs`; its one writer thread in `writer.rs`), and the checkpointer stage.
//!
//! Invariants:
//! - The checkpoint only moves after the sink has confirmed (durably written, or acknowledged)
//!   every change up to it, and it is flushed to disk before `save` returns.
//! - It names a transaction boundary (`file`/`offset` just after a commit, and the GTID
//!   position including that commit), optionally plus `partial`: inside a large transaction,
//!   how many of its rows were already delivered. A restart re-reads that transaction from its
//!   start and skips those rows, so nothing is delivered twice after a clean stop.
//! - `seq` numbers delivered operations; a replay from the checkpoint assigns the same numbers
//!   to the same operations, so receivers can drop what they already have. It never goes
//!   backwards: a new store (or a `--reset` one) numbers from a floor at or above the wall
//!   clock in microseconds, kept in the store before anything is sent.
//! - A damaged store is a definite error naming `--reset`, never silently a new store.
//! - A full disk ([`DiskFull`]) is not damage: it never moves the checkpoint and never calls
//!   for `--reset`; `binsync run` waits for space, reopens the store (sled keeps a failed
//!   write's error for the life of its `Db`) and resumes from the last checkpoint saved.
//! - `file`/`offset` are only meaningful on the server named by `server`; GTIDs are not.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::gtid::{Flavor, GtidParseError, GtidPos};

mod store;
mod writer;

#[cfg(test)]
use store::sled_config;
pub use store::Store;
pub use writer::{set_mirror, Done, Mirror};

/// Who wrote the binlog we read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerIdentity {
    pub flavor: Flavor,
    pub server_id: u32,
    /// MySQL's `server_uuid`; MariaDB has none.
    pub server_uuid: Option<String>,
    pub version: String,
}

impl ServerIdentity {
    /// Same server for the purpose of file/offset positions.
    pub fn same_server(&self, other: &ServerIdentity) -> bool {
        self.flavor == other.flavor
            && self.server_id == other.server_id
            && self.server_uuid == other.server_uuid
    }
}

impl std::fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} server_id={}",
            self.flavor, self.version, self.server_id
        )?;
        if let Some(u) = &self.server_uuid {
            write!(f, " server_uuid={u}")?;
        }
        Ok(())
    }
}

/// Rows of a transaction already delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    /// The transaction: its GTID, or `file:offset` of its start without GTIDs.
    pub txn: String,
    /// Index (within the transaction, counting every row event row) of the next row to deliver.
    pub next_row: u64,
    /// `seq` of the last delivered operation.
    pub seq: u64,
}

/// A resumable position (without the server identity).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    pub file: String,
    pub offset: u64,
    pub gtid: Option<GtidPos>,
    /// `seq` of the last operation before `partial`'s transaction (the last one delivered when
    /// `partial` is None).
    pub seq: u64,
    pub partial: Option<Partial>,
}

impl Position {
    /// `seq` of the last delivered operation.
    pub fn last_seq(&self) -> u64 {
        self.partial.as_ref().map_or(self.seq, |p| p.seq)
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)?;
        if let Some(g) = &self.gtid {
            write!(f, " gtid={g}")?;
        }
        write!(f, " seq={}", self.last_seq())?;
        if let Some(p) = &self.partial {
            write!(f, " (inside {} at row {})", p.txn, p.next_row)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub server: ServerIdentity,
    pub position: Position,
}

/// On-disk form: plain JSON so that `binsync status` and a person can read it.
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    server: ServerIdentity,
    file: String,
    offset: u64,
    gtid: Option<String>,
    seq: u64,
    partial: Option<Partial>,
    saved_at_unix_ms: u64,
}

fn stored_to_checkpoint(stored: Stored) -> Result<Checkpoint, GtidParseError> {
    let gtid = match &stored.gtid {
        Some(text) => Some(GtidPos::parse(stored.server.flavor, text)?),
        None => None,
    };
    Ok(Checkpoint {
        server: stored.server,
        position: Position {
            file: stored.file,
            offset: stored.offset,
            gtid,
            seq: stored.seq,
            partial: stored.partial,
        },
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("state dir {dir} is in use by another binsync process (or unreadable: {detail}); stop the other process or pick another --state-dir")]
    Locked { dir: PathBuf, detail: String },
    #[error("state dir {dir} is a file, not a directory; name a directory with --state-dir")]
    NotADirectory { dir: PathBuf },
    /// The store cannot be trusted: starting over silently would renumber `seq` below what
    /// receivers already hold.
    #[error("the checkpoint store in {dir} is damaged ({detail}); binsync does not start over on its own: run once with --reset to move the damaged files aside and start a new store that numbers above everything sent before, or restore the state dir from a backup")]
    Damaged { dir: PathBuf, detail: String },
    #[error(
        "checkpoint in {dir} was written by a newer binsync (format {version}); upgrade binsync"
    )]
    TooNew { dir: PathBuf, version: u32 },
    /// No space (ENOSPC) or quota (EDQUOT) left: retriable (see [`DiskFull`]).
    #[error(transparent)]
    DiskFull(#[from] DiskFull),
    /// The disk refused (read-only, an I/O error, permissions): not damage of the store, and
    /// nothing `--reset` could mend.
    #[error("the checkpoint store in {dir} cannot be written or read: {detail}; check the disk (permissions, a read-only mount, I/O errors in the kernel log), then start binsync again: it resumes from the last checkpoint saved")]
    Write { dir: PathBuf, detail: String },
}

/// No space (ENOSPC) or quota (EDQUOT) left on the disk holding `dir` (the state dir, or the
/// file sink's folder). Its own kind of error ([`crate::error::Transient`]): `binsync run`
/// waits for space, logging this once, and goes on from the last checkpoint saved; nothing
/// is reset, so the message never names `--reset`. (Worded for any command: a `dlq replay`
/// stopped by it just fails.)
#[derive(Debug, Clone, thiserror::Error)]
#[error("the disk holding {} is full ({detail}); free space on {} (or raise its quota)", dir.display(), dir.display())]
pub struct DiskFull {
    pub dir: PathBuf,
    pub detail: String,
}

/// Is this I/O error "no space left" (ENOSPC, 28) or "quota exceeded" (EDQUOT, 122)? Both the
/// raw error and sled's copies of it (which keep only the kind) are recognised.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28 | 122))
        || matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
}

/// Writes that must reach the disk together with the first checkpoint past the part of the
/// stream they describe, in one sled transaction (the schema history's steps: the history is
/// then never ahead of the checkpoint, nor behind it). The module that owns `tree` encodes
/// them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Records {
    pub tree: &'static [u8],
    /// Key and value; an empty value is a value too (not a removal).
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A chunk, and every one before it, is delivered: what the sinks' ordered-ack ledger
/// (`sink::ledger`) sends the checkpointer.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// The chunk's resume point (None before the first resumable position of a stream).
    pub position: Option<Position>,
    /// Changes the chunk held (progress counting).
    pub changes: usize,
    /// The chunk's writes to save with the checkpoint ([`Records`]).
    pub records: Vec<Records>,
    /// The server whose binlog the position's file and offset name, when the source stage
    /// said (it changes at a failover); else the checkpointer's own `server`.
    pub server: Option<std::sync::Arc<ServerIdentity>>,
}

/// The checkpointer stage: saves the position of the newest acknowledged chunk.
///
/// Acks arrive in chunk order from the sink's ordered-ack ledger, each only once its chunk
/// and every one before it is delivered, so the checkpoint never passes an undelivered
/// change. Acks that arrive together are saved with one durable write. A full disk ends the
/// stage with [`CheckpointError::DiskFull`] rather than a retry here: after a failed write
/// sled 0.34 fails every later operation on that `Db` until it is reopened, so the wait and
/// the reopen happen in `pipeline::run`, which then resumes from the last checkpoint saved.
pub struct Checkpointer {
    pub store: Store,
    /// The server the run started on: the checkpoint's server for acks that name none.
    pub server: ServerIdentity,
}

impl Checkpointer {
    /// Runs until the sink closes its ack channel; returns the number of changes delivered.
    pub async fn run(
        self,
        mut acks: tokio::sync::mpsc::Receiver<Ack>,
    ) -> Result<u64, CheckpointError> {
        let mut progress = crate::units::Progress::new("delivered");
        let mut records = Vec::new();
        let mut server = self.server.clone();
        while let Some(first) = acks.recv().await {
            crate::metrics::delivered();
            let mut newest = first.position.map(|p| (p, first.server));
            let mut changes = first.changes as u64;
            records.extend(first.records);
            // Coalesce: one durable write for everything acknowledged meanwhile.
            drain(&mut acks, &mut newest, &mut changes, &mut records);
            // Records wait for a position to go with (a chunk before the first resumable
            // position of a stream has none).
            if let Some((position, writer)) = newest {
                if let Some(w) = writer {
                    // After a failover the positions name the new server's binlog.
                    server.clone_from(&w);
                }
                let cp = Checkpoint {
                    server: server.clone(),
                    position,
                };
                self.store
                    .save_with(&cp, std::mem::take(&mut records))
                    .await?;
                tracing::debug!(position = %cp.position, changes, "checkpoint saved");
            }
            progress.add(changes);
        }
        Ok(progress.total())
    }
}

/// Takes the acks already queued: the newest position and the changes they add.
#[allow(clippy::type_complexity)]
fn drain(
    acks: &mut tokio::sync::mpsc::Receiver<Ack>,
    newest: &mut Option<(Position, Option<std::sync::Arc<ServerIdentity>>)>,
    changes: &mut u64,
    records: &mut Vec<Records>,
) {
    while let Ok(a) = acks.try_recv() {
        crate::metrics::delivered();
        *changes += a.changes as u64;
        records.extend(a.records);
        if let Some(p) = a.position {
            *newest = Some((p, a.server));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_recognised_by_errno_and_by_kind() {
        use std::io::{Error, ErrorKind};
        assert!(is_disk_full(&Error::from_raw_os_error(28)), "ENOSPC");
        assert!(is_disk_full(&Error::from_raw_os_error(122)), "EDQUOT");
        // sled hands out copies that keep the kind only.
        let copy = Error::new(Error::from_raw_os_error(28).kind(), "copied");
        assert!(is_disk_full(&copy));
        assert!(is_disk_full(&Error::new(ErrorKind::QuotaExceeded, "q")));
        assert!(!is_disk_full(&Error::from_raw_os_error(13)), "EACCES");
        assert!(!is_disk_full(&Error::from_raw_os_error(5)), "EIO");
        assert!(!is_disk_full(&Error::other("x")));
    }
}
