//! The checkpoint: where a restart resumes, kept in an embedded sled store in `--state-dir`.
//!
//! Invariants:
//! - The checkpoint only moves after the sink has confirmed (durably written, or acknowledged)
//!   every change up to it, and it is flushed to disk before `save` returns.
//! - It names a transaction boundary (`file`/`offset` just after a commit, and the GTID
//!   position including that commit), optionally plus `partial`: inside a large transaction,
//!   how many of its rows were already delivered. A restart re-reads that transaction from its
//!   start and skips those rows, so nothing is delivered twice after a clean stop.
//! - `seq` numbers delivered operations; a replay from the checkpoint assigns the same numbers
//!   to the same operations, so receivers can drop what they already have.
//! - `file`/`offset` are only meaningful on the server named by `server`; GTIDs are not.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::gtid::{Flavor, GtidParseError, GtidPos};

const KEY: &[u8] = b"checkpoint";
const SEQ_FLOOR_KEY: &[u8] = b"seq_floor";
const FORMAT_VERSION: u32 = 1;

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

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("state dir {dir} is in use by another binsync process (or unreadable: {detail}); stop the other process or pick another --state-dir")]
    Locked { dir: PathBuf, detail: String },
    #[error("state dir {dir} is corrupt ({detail}); move it away and start again with --start, or restore it from a backup")]
    Corrupt { dir: PathBuf, detail: String },
    #[error(
        "checkpoint in {dir} was written by a newer binsync (format {version}); upgrade binsync"
    )]
    TooNew { dir: PathBuf, version: u32 },
    #[error(
        "writing the checkpoint to {dir} failed: {detail}; check the disk (space, permissions)"
    )]
    Write { dir: PathBuf, detail: String },
}

/// The sled store in `--state-dir`. Other parts (the dead-letter queue) open their own trees
/// through [`Store::db`].
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, CheckpointError> {
        if dir.exists() && !dir.is_dir() {
            return Err(CheckpointError::Corrupt {
                dir: dir.to_path_buf(),
                detail: "it is a file, not a directory".into(),
            });
        }
        let db = sled_config(dir)
            .open()
            .map_err(|e| classify_open_error(dir, e))?;
        Ok(Store {
            db,
            dir: dir.to_path_buf(),
        })
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let corrupt = |detail: String| CheckpointError::Corrupt {
            dir: self.dir.clone(),
            detail,
        };
        let Some(raw) = self.db.get(KEY).map_err(|e| corrupt(e.to_string()))? else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_slice(&raw)
            .map_err(|e| corrupt(format!("checkpoint record unreadable: {e}")))?;
        if stored.version > FORMAT_VERSION {
            return Err(CheckpointError::TooNew {
                dir: self.dir.clone(),
                version: stored.version,
            });
        }
        stored_to_checkpoint(stored)
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }

    /// Writes and flushes (fsync) the checkpoint.
    pub async fn save(&self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        let stored = Stored {
            version: FORMAT_VERSION,
            server: cp.server.clone(),
            file: cp.position.file.clone(),
            offset: cp.position.offset,
            gtid: cp.position.gtid.as_ref().map(|g| g.to_string()),
            seq: cp.position.seq,
            partial: cp.position.partial.clone(),
            saved_at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let bytes = serde_json::to_vec(&stored).expect("plain struct serializes");
        let write = |e: sled::Error| CheckpointError::Write {
            dir: self.dir.clone(),
            detail: e.to_string(),
        };
        self.db.insert(KEY, &bytes[..]).map_err(write)?;
        self.db.flush_async().await.map_err(write)?;
        // A copy for `binsync status` while the store is locked by a running binsync; it is
        // informational only (never read to resume), so it is not fsynced.
        let tmp = self.dir.join(".status.json.tmp");
        if std::fs::write(&tmp, &bytes).is_ok() {
            let _ = std::fs::rename(&tmp, self.dir.join(STATUS_FILE));
        }
        Ok(())
    }

    /// Where numbering starts without a checkpoint: after the last `seq` of a reset one.
    pub fn seq_floor(&self) -> u64 {
        self.db
            .get(SEQ_FLOOR_KEY)
            .ok()
            .flatten()
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes)
    }

    /// The last checkpoint as a running binsync published it (see [`Store::save`]).
    pub fn read_published(dir: &Path) -> Option<Checkpoint> {
        let raw = std::fs::read(dir.join(STATUS_FILE)).ok()?;
        stored_to_checkpoint(serde_json::from_slice(&raw).ok()?).ok()
    }

    /// `--reset`: forget the checkpoint (the dead-letter queue stays). The operation counter
    /// is kept as a floor, so that `seq` keeps growing: receivers that drop "older" operations
    /// would otherwise drop everything after a reset.
    pub async fn reset(&self) -> Result<(), CheckpointError> {
        let write = |e: sled::Error| CheckpointError::Write {
            dir: self.dir.clone(),
            detail: e.to_string(),
        };
        if let Some(cp) = self.load()? {
            let floor = cp.position.last_seq().max(self.seq_floor());
            self.db
                .insert(SEQ_FLOOR_KEY, &floor.to_be_bytes())
                .map_err(write)?;
        }
        self.db.remove(KEY).map_err(write)?;
        self.db.flush_async().await.map_err(write)?;
        Ok(())
    }
}

const STATUS_FILE: &str = "status.json";

/// How binsync opens every sled store (its own, and the reference receiver's): a small cache,
/// so that memory stays bounded whatever the store holds.
pub fn sled_config(dir: &Path) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(8 * 1024 * 1024)
        .mode(sled::Mode::LowSpace)
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

/// sled could not lock its directory: another process holds the store.
pub fn is_lock_error(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.raw_os_error() == Some(11)
                || e.to_string().contains("lock")
        }
        _ => false,
    }
}

fn classify_open_error(dir: &Path, e: sled::Error) -> CheckpointError {
    let detail = e.to_string();
    match &e {
        _ if is_lock_error(&e) => CheckpointError::Locked {
            dir: dir.to_path_buf(),
            detail,
        },
        _ => CheckpointError::Corrupt {
            dir: dir.to_path_buf(),
            detail,
        },
    }
}

/// A chunk, and every one before it, is delivered: what the sinks' ordered-ack ledger
/// (`sink::ledger`) sends the checkpointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The chunk's resume point (None before the first resumable position of a stream).
    pub position: Option<Position>,
    /// Changes the chunk held (progress counting).
    pub changes: usize,
}

/// The checkpointer stage: saves the position of the newest acknowledged chunk.
///
/// Acks arrive in chunk order from the sink's ordered-ack ledger, each only once its chunk
/// and every one before it is delivered, so the checkpoint never passes an undelivered
/// change. Acks that arrive together are saved with one durable write.
pub struct Checkpointer {
    pub store: Store,
    pub server: ServerIdentity,
}

impl Checkpointer {
    /// Runs until the sink closes its ack channel; returns the number of changes delivered.
    pub async fn run(
        self,
        mut acks: tokio::sync::mpsc::Receiver<Ack>,
    ) -> Result<u64, CheckpointError> {
        let mut progress = crate::units::Progress::new("delivered");
        while let Some(first) = acks.recv().await {
            let mut newest = first.position;
            let mut changes = first.changes as u64;
            // Coalesce: one durable write for everything acknowledged meanwhile.
            while let Ok(a) = acks.try_recv() {
                changes += a.changes as u64;
                if a.position.is_some() {
                    newest = a.position;
                }
            }
            if let Some(position) = newest {
                self.store
                    .save(&Checkpoint {
                        server: self.server.clone(),
                        position,
                    })
                    .await?;
            }
            progress.add(changes);
        }
        Ok(progress.total())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ServerIdentity {
        ServerIdentity {
            flavor: Flavor::Mariadb,
            server_id: 1,
            server_uuid: None,
            version: "10.11".into(),
        }
    }

    #[tokio::test]
    async fn save_load_reset_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let cp = Checkpoint {
            server: identity(),
            position: Position {
                file: "mariadb-bin.000002".into(),
                offset: 1234,
                gtid: Some(GtidPos::parse(Flavor::Mariadb, "0-1-77").unwrap()),
                seq: 500,
                partial: Some(Partial {
                    txn: "0-1-78".into(),
                    next_row: 10,
                    seq: 510,
                }),
            },
        };
        store.save(&cp).await.unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp));
        store.reset().await.unwrap();
        assert_eq!(store.load().unwrap(), None);
        assert_eq!(store.seq_floor(), 510, "numbering continues after a reset");
    }

    #[test]
    fn garbage_state_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("conf"), b"\x00\x01garbage").unwrap();
        std::fs::write(dir.path().join("db"), b"garbage garbage garbage").unwrap();
        let err = Store::open(dir.path()).err().expect("must fail");
        assert!(err.to_string().contains("--start"), "{err}");
        let file = dir.path().join("plainfile");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            Store::open(&file),
            Err(CheckpointError::Corrupt { .. })
        ));
    }
}
