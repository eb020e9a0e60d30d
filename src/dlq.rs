//! The dead-letter queue: batches the sync API rejected (a 4xx other than 408/429), kept in
//! the sled store with the full payload, the response, and the time.
//!
//! Invariant: a rejected batch is written here, durably, before its acknowledgement reaches
//! the checkpointer, so the checkpoint never moves past a change that is neither delivered
//! nor dead-lettered. `binsync dlq replay` re-sends an entry and removes it once accepted.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Store;

const TREE: &str = "dlq";

/// Why the dead-letter queue could not be used. The queue lives in the state dir's sled
/// store, so each failure names that directory.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot open the dead-letter queue in {dir}: {detail}; check that the state dir is readable and writable")]
    Open { dir: PathBuf, detail: String },
    #[error("cannot write the dead-letter queue in {dir}: {detail}; check the disk (space, permissions), then restart: the rejected batch is sent again")]
    Write { dir: PathBuf, detail: String },
    #[error("cannot read the dead-letter queue in {dir}: {detail}; check the disk, or move the state dir away and restore it from a backup")]
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
}

impl Dlq {
    pub fn open(store: &Store) -> Result<Dlq, DlqError> {
        let tree = store.db().open_tree(TREE).map_err(|e| DlqError::Open {
            dir: store.dir().to_path_buf(),
            detail: e.to_string(),
        })?;
        Ok(Dlq {
            tree,
            store: store.clone(),
        })
    }

    fn write_err(&self, e: impl std::fmt::Display) -> DlqError {
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

    /// Stores the entry (assigning its id) and flushes.
    pub async fn push(&self, mut entry: DeadLetter) -> Result<u64, DlqError> {
        let id = self
            .store
            .db()
            .generate_id()
            .map_err(|e| self.write_err(e))?
            + 1;
        entry.id = id;
        let bytes = serde_json::to_vec(&entry).expect("plain struct serializes");
        self.tree
            .insert(id.to_be_bytes(), bytes)
            .map_err(|e| self.write_err(e))?;
        self.tree
            .flush_async()
            .await
            .map_err(|e| self.write_err(e))?;
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

    pub async fn remove(&self, id: u64) -> Result<bool, DlqError> {
        let had = self
            .tree
            .remove(id.to_be_bytes())
            .map_err(|e| self.write_err(e))?
            .is_some();
        self.tree
            .flush_async()
            .await
            .map_err(|e| self.write_err(e))?;
        Ok(had)
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
        let store = Store::open(dir.path()).unwrap();
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
}
