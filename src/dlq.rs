//! The dead-letter queue: batches the sync API rejected (a 4xx other than 408/429), kept in
//! the sled store with the full payload, the response, and the time.
//!
//! Invariant: a rejected batch is written here, durably, before its acknowledgement reaches
//! the checkpointer, so the checkpoint never moves past a change that is neither delivered
//! nor dead-lettered. `binsync dlq replay` re-sends an entry and removes it once accepted.
//!
//! Writes go through the store's one writer thread ([`Store::write`]), never a flush of
//! their own. After each write, a copy of the entry is published as
//! `dlq.published/<id>.json` in the state dir (removed with the entry), so that `binsync dlq
//! list` and `dlq show` work while a running binsync holds the store.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{is_disk_full, DiskFull, Store};

const TREE: &str = "dlq";
/// The folder in the state dir holding a read-only copy of each entry.
const PUBLISHED: &str = "dlq.published";

/// Why the dead-letter queue could not be used. The queue lives in the state dir's sled
/// store, so each failure names that directory.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot open the dead-letter queue in {dir}: {detail}; check that the state dir is readable and writable")]
    Open { dir: PathBuf, detail: String },
    #[error("cannot write the dead-letter queue in {dir}: {detail}; check the disk (space, permissions, health), then start binsync again: the rejected batch is sent again")]
    Write { dir: PathBuf, detail: String },
    /// No space or quota left for a dead letter: retriable; the checkpoint stays before the
    /// rejected batch, so it is sent again (and kept) once there is space.
    #[error(transparent)]
    DiskFull(#[from] DiskFull),
    #[error("cannot read the dead-letter queue in {dir}: {detail}; check the disk (permissions, health), or restore the state dir from a backup")]
    Read { dir: PathBuf, detail: String },
    #[error("dead letter {entry} in {dir} is unreadable ({detail}); remove it with `binsync dlq drop {entry}`")]
    Corrupt {
        dir: PathBuf,
        entry: String,
        detail: String,
    },
}

/// Lets `?` carry a dead-letter failure out of the `binsync dlq` commands: the queue belongs
/// to the HTTP sink.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: u64,
    pub batch_id: String,
    pub url: String,
    /// HTTP status, or None when retries were exhausted without a response.
    pub status: Option<u16>,
    /// The response body (first 64 KiB) or the last error.
    pub response: String,
    pub at_unix_ms: u64,
    pub count: usize,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The request body, as sent (uncompressed JSON).
    pub payload: String,
}

#[derive(Clone)]
pub struct Dlq {
    tree: sled::Tree,
    store: Store,
    /// The state dir's folder of published copies, one `<id>.json` per entry.
    published: PathBuf,
}

impl Dlq {
    /// Opens the queue and brings its published copies up to date.
    pub fn open(store: &Store) -> Result<Dlq, DlqError> {
        let tree = store.db().open_tree(TREE).map_err(|e| DlqError::Open {
            dir: store.dir().to_path_buf(),
            detail: e.to_string(),
        })?;
        let dlq = Dlq {
            tree,
            store: store.clone(),
            published: store.dir().join(PUBLISHED),
        };
        dlq.republish()?;
        Ok(dlq)
    }

    /// How many entries wait.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    fn write_err(&self, e: sled::Error) -> DlqError {
        if let sled::Error::Io(io) = &e {
            if is_disk_full(io) {
                return DiskFull {
                    dir: self.store.dir().to_path_buf(),
                    detail: e.to_string(),
                }
                .into();
            }
        }
        DlqError::Write {
            dir: self.store.dir().to_path_buf(),
            detail: e.to_string(),
        }
    }

    fn read_err(&self, e: impl std::fmt::Display) -> DlqError {
        DlqError::Read {
            dir: self.store.dir().to_path_buf(),
            detail: e.to_string(),
        }
    }

    /// Stores the entry (assigning its id), flushed before this returns, then publishes it.
    pub async fn push(&self, mut entry: DeadLetter) -> Result<u64, DlqError> {
        let changes = entry.count;
        let tree = self.tree.clone();
        let published = self.published.clone();
        let id = self
            .store
            .write(
                move |db| {
                    entry.id = db.generate_id()? + 1;
                    let bytes = serde_json::to_vec(&entry).expect("plain struct serializes");
                    tree.insert(entry.id.to_be_bytes(), bytes)?;
                    Ok(entry)
                },
                move |entry| publish(&published, entry),
            )
            .await
            .map_err(|e| self.write_err(e))?
            .id;
        crate::metrics::dlq_depth(self.len());
        crate::metrics::dead_lettered(changes);
        Ok(id)
    }

    /// Every entry, oldest first.
    pub fn list(&self) -> Result<Vec<DeadLetter>, DlqError> {
        self.tree
            .iter()
            .map(|kv| {
                let (key, value) = kv.map_err(|e| self.read_err(e))?;
                self.decode(&key, &value)
            })
            .collect()
    }

    pub fn get(&self, id: u64) -> Result<Option<DeadLetter>, DlqError> {
        let key = id.to_be_bytes();
        match self.tree.get(key).map_err(|e| self.read_err(e))? {
            Some(value) => self.decode(&key, &value).map(Some),
            None => Ok(None),
        }
    }

    fn decode(&self, key: &[u8], value: &[u8]) -> Result<DeadLetter, DlqError> {
        serde_json::from_slice(value).map_err(|e| DlqError::Corrupt {
            dir: self.store.dir().to_path_buf(),
            entry: match <[u8; 8]>::try_from(key) {
                Ok(id) => u64::from_be_bytes(id).to_string(),
                Err(_) => format!("{key:02x?}"),
            },
            detail: e.to_string(),
        })
    }

    /// Removes the entry (flushed before this returns) and its published copy.
    pub async fn remove(&self, id: u64) -> Result<bool, DlqError> {
        let tree = self.tree.clone();
        let published = self.published.clone();
        self.store
            .write(
                move |_| Ok(tree.remove(id.to_be_bytes())?.is_some()),
                move |_| {
                    let _ = std::fs::remove_file(published.join(format!("{id}.json")));
                },
            )
            .await
            .map_err(|e| self.write_err(e))
            .inspect(|_| crate::metrics::dlq_depth(self.len()))
    }

    /// The entries as the binsync holding the store published them (for `dlq list` and
    /// `dlq show` while a run holds the store), oldest first. Not a copy to trust for replay:
    /// it is not fsynced.
    pub fn read_published(dir: &Path) -> Result<Vec<DeadLetter>, DlqError> {
        let folder = dir.join(PUBLISHED);
        let read_err = |e: std::io::Error| DlqError::Read {
            dir: dir.to_path_buf(),
            detail: format!("{}: {e}", folder.display()),
        };
        let mut entries = Vec::new();
        let listing = match std::fs::read_dir(&folder) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(entries),
            Err(e) => return Err(read_err(e)),
        };
        for file in listing {
            let path = file.map_err(read_err)?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            // An entry removed meanwhile, or half written: skip it.
            let Ok(raw) = std::fs::read(&path) else {
                continue;
            };
            if let Ok(entry) = serde_json::from_slice::<DeadLetter>(&raw) {
                entries.push(entry);
            }
        }
        entries.sort_by_key(|e| e.id);
        Ok(entries)
    }

    /// Makes the published folder match the queue (after a crash between a write and its
    /// copy, or a queue changed by an older binsync).
    fn republish(&self) -> Result<(), DlqError> {
        let _ = std::fs::create_dir_all(&self.published);
        let mut held = std::collections::BTreeSet::new();
        for kv in self.tree.iter() {
            let (key, value) = kv.map_err(|e| self.read_err(e))?;
            let Ok(entry) = self.decode(&key, &value) else {
                continue;
            };
            held.insert(format!("{}.json", entry.id));
            if !self.published.join(format!("{}.json", entry.id)).exists() {
                publish(&self.published, &entry);
            }
        }
        if let Ok(listing) = std::fs::read_dir(&self.published) {
            for file in listing.flatten() {
                if !held.contains(file.file_name().to_string_lossy().as_ref()) {
                    let _ = std::fs::remove_file(file.path());
                }
            }
        }
        Ok(())
    }
}

/// Writes the read-only copy of one entry (informational, not fsynced).
fn publish(folder: &Path, entry: &DeadLetter) {
    let _ = std::fs::create_dir_all(folder);
    let tmp = folder.join(format!(".{}.tmp", entry.id));
    let bytes = serde_json::to_vec(entry).expect("plain struct serializes");
    if std::fs::write(&tmp, bytes).is_ok() {
        let _ = std::fs::rename(&tmp, folder.join(format!("{}.json", entry.id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn push_list_remove_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dlq = Dlq::open(&store).unwrap();
        let entry = DeadLetter {
            id: 0,
            batch_id: "b1".into(),
            url: "http://x".into(),
            status: Some(400),
            response: "bad".into(),
            at_unix_ms: 1,
            count: 2,
            first_seq: 5,
            last_seq: 6,
            payload: "{}".into(),
        };
        let id = dlq.push(entry.clone()).await.unwrap();
        let id2 = dlq.push(entry.clone()).await.unwrap();
        assert!(id2 > id);
        drop((dlq, store));
        // sled's own flusher thread may hold the directory's lock a moment longer.
        let store = Store::open_waiting(dir.path(), std::time::Duration::from_secs(3))
            .await
            .unwrap();
        let dlq = Dlq::open(&store).unwrap();
        assert_eq!(dlq.list().unwrap().len(), 2);
        assert_eq!(dlq.get(id).unwrap().unwrap().batch_id, "b1");
        assert!(dlq.get(id2 + 1).unwrap().is_none());
        assert!(dlq.remove(id).await.unwrap());
        assert!(!dlq.remove(id).await.unwrap());
        assert_eq!(dlq.list().unwrap().len(), 1);
    }

    #[test]
    fn an_unreadable_entry_is_named_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dlq = Dlq::open(&store).unwrap();
        dlq.tree
            .insert(7u64.to_be_bytes(), &b"{not json"[..])
            .unwrap();
        let err = dlq.list().unwrap_err();
        assert!(matches!(err, DlqError::Corrupt { ref entry, .. } if entry == "7"));
        assert!(
            err.to_string().contains("binsync dlq drop 7"),
            "names the way out: {err}"
        );
        assert!(matches!(dlq.get(7), Err(DlqError::Corrupt { .. })));
    }

    /// sled 0.34 deadlocks when `flush_async` runs from several tasks at once
    /// (spacejam/sled#1308, #1241): each call holds a thread of sled's small I/O pool while it
    /// waits in `make_stable` for a log write that sled queues on that same pool, so once
    /// every pool thread waits (7 or more calls at once; 6 never hung in our runs), none
    /// returns. Here 8 tasks save checkpoints and 8 write dead letters at once, through the
    /// store as binsync uses it: all must return, as the store's one writer thread is its only
    /// flusher. Before that writer (0ade6c0: a `flush_async` per save and per dead letter)
    /// this hung within milliseconds in every run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_checkpoint_saves_and_dead_letters_do_not_deadlock() {
        use crate::checkpoint::{Checkpoint, Position, ServerIdentity};
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        use std::time::{Duration, Instant};

        const TASKS: u64 = 16;
        const ROUNDS: u64 = 100;
        const PATIENCE: Duration = Duration::from_secs(60);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dlq = Dlq::open(&store).unwrap();
        let server = ServerIdentity {
            flavor: crate::gtid::Flavor::Mysql,
            server_id: 1,
            server_uuid: None,
            version: "8.4".into(),
        };
        let start = Instant::now();
        // Writes returned, and when the last one did (ms after the start).
        let done = Arc::new(AtomicU64::new(0));
        let last_ms = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let (store, dlq, server) = (store.clone(), dlq.clone(), server.clone());
            let (done, last_ms) = (done.clone(), last_ms.clone());
            tasks.spawn(async move {
                for i in 0..ROUNDS {
                    if t % 2 == 0 {
                        let position = Position {
                            file: "binlog.000001".into(),
                            offset: 4 + t * ROUNDS + i,
                            seq: t * ROUNDS + i,
                            ..Position::default()
                        };
                        let cp = Checkpoint {
                            server: server.clone(),
                            position,
                        };
                        store.save(&cp).await.unwrap();
                    } else {
                        let entry = DeadLetter {
                            id: 0,
                            batch_id: format!("b{t}-{i}"),
                            url: "http://x".into(),
                            status: Some(400),
                            response: "bad".into(),
                            at_unix_ms: 1,
                            count: 1,
                            first_seq: i,
                            last_seq: i,
                            payload: "{}".into(),
                        };
                        dlq.push(entry).await.unwrap();
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    last_ms.fetch_max(start.elapsed().as_millis() as u64, Ordering::SeqCst);
                }
            });
        }
        let all = async {
            while let Some(task) = tasks.join_next().await {
                task.unwrap();
            }
        };
        if tokio::time::timeout(PATIENCE, all).await.is_err() {
            // sled flushes again when its last handle is dropped, which would hang the test
            // instead of failing it: keep one handle for good.
            std::mem::forget(dlq.clone());
            panic!(
                "deadlock: {} of {} checkpoint saves and dead-letter writes from {TASKS} \
                 concurrent tasks returned within {PATIENCE:?}, the last {} ms after the start; \
                 the rest never did (sled 0.34's asynchronous flush called from several tasks at once, \
                 spacejam/sled#1308)",
                done.load(Ordering::SeqCst),
                TASKS * ROUNDS,
                last_ms.load(Ordering::SeqCst),
            );
        }
        assert_eq!(dlq.list().unwrap().len() as u64, TASKS / 2 * ROUNDS);
        let saved = store.load().unwrap().expect("a checkpoint was saved");
        assert_eq!(saved.position.file, "binlog.000001");
    }
}
