//! The dead-letter queue: batches the sync API rejected (a 4xx other than 408/429), kept in
//! the sled store with the full payload, the response, and the time.
//!
//! Invariant: a rejected batch is written here, durably, before its acknowledgement reaches
//! the checkpointer, so the checkpoint never moves past a change that is neither delivered
//! nor dead-lettered. `binsync dlq replay` re-sends an entry and removes it once accepted.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointError, Store};

const TREE: &str = "dlq";

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
    pub fn open(store: &Store) -> Result<Dlq, CheckpointError> {
        let tree = store
            .db()
            .open_tree(TREE)
            .map_err(|e| CheckpointError::Corrupt {
                dir: store.dir().to_path_buf(),
                detail: e.to_string(),
            })?;
        Ok(Dlq {
            tree,
            store: store.clone(),
        })
    }

    fn write_err(&self, e: impl std::fmt::Display) -> CheckpointError {
        CheckpointError::Write {
            dir: self.store.dir().to_path_buf(),
            detail: e.to_string(),
        }
    }

    /// Stores the entry (assigning its id) and flushes.
    pub async fn push(&self, mut entry: DeadLetter) -> Result<u64, CheckpointError> {
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

    pub fn list(&self) -> Result<Vec<DeadLetter>, CheckpointError> {
        self.tree
            .iter()
            .values()
            .map(|v| {
                let v = v.map_err(|e| self.write_err(e))?;
                serde_json::from_slice(&v).map_err(|e| CheckpointError::Corrupt {
                    dir: self.store.dir().to_path_buf(),
                    detail: format!("dead letter unreadable: {e}"),
                })
            })
            .collect()
    }

    pub fn get(&self, id: u64) -> Result<Option<DeadLetter>, CheckpointError> {
        Ok(self.list()?.into_iter().find(|d| d.id == id))
    }

    pub async fn remove(&self, id: u64) -> Result<bool, CheckpointError> {
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

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
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
        assert!(dlq.remove(id).await.unwrap());
        assert!(!dlq.remove(id).await.unwrap());
        assert_eq!(dlq.len(), 1);
    }
}
