//! The receiver's state: a sled store in `--state-dir`, applying batches with the contract's
//! apply rule, and the counters behind `GET /stats` and `dump`.
//!
//! Layout (the default tree):
//!
//! ```text
//! m:format            "binsync-receiver 1"
//! m:stats             Stats as JSON
//! b:<batch_id>        fingerprint (u64 BE) ++ applied at (unix ms, u64 BE)
//! e:<entity>\0<id>    seq (u64 BE) ++ deleted (0|1) ++ after image JSON (empty when deleted)
//! ```
//!
//! Invariants:
//! - Batches are applied one at a time (`apply_lock`), so the rule's read-then-write cannot
//!   race; a batch's entity records, its `b:` record and the counters go in one sled batch,
//!   which sled applies atomically.
//! - A caller answers 2xx only after [`Store::flush`] returned: the batch is on disk.
//! - `b:` records are kept forever (16 bytes plus the id each); they only short-cut exact
//!   re-sends, the per-entity `seq` is what makes replays harmless.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::batch::{Batch, OpKind};
use crate::ReceiveError;

const FORMAT_KEY: &[u8] = b"m:format";
const FORMAT: &[u8] = b"binsync-receiver 1";
const STATS_KEY: &[u8] = b"m:stats";
const BATCH_PREFIX: &[u8] = b"b:";
const ENTITY_PREFIX: &[u8] = b"e:";

/// The counters of `GET /stats` and `dump`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Batches answered 2xx (re-sends included).
    pub batches: u64,
    /// Of those, re-sends of a batch already applied (same batch_id and body).
    pub batches_duplicate: u64,
    /// Operations in batches answered 2xx.
    pub ops_received: u64,
    /// Operations that changed the state.
    pub ops_applied: u64,
    /// Operations dropped because their entity already had that seq or a higher one.
    pub ops_stale: u64,
    /// POSTs answered with a 4xx (bad body, auth, poison, size, media type).
    pub rejected: u64,
    /// POSTs answered with an injected fault.
    pub faults_injected: u64,
}

/// What applying one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub applied: u64,
    pub stale: u64,
    pub duplicate: bool,
}

pub struct Store {
    /// None in `discard` mode: batches are counted, nothing is kept.
    db: Option<sled::Db>,
    dir: PathBuf,
    stats: Mutex<Stats>,
    apply_lock: Mutex<()>,
    /// One flush at a time, held on the blocking thread that flushes: sled 0.34 deadlocks
    /// under concurrent `flush_async` (spacejam/sled#1308), so this store never uses it.
    flush_lock: std::sync::Arc<Mutex<()>>,
}

impl Store {
    /// Opens (creating if needed) the receiver's store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, ReceiveError> {
        Self::open_inner(dir, true)
    }

    /// Opens a store that must already exist (for `dump`).
    pub fn open_existing(dir: &Path) -> Result<Store, ReceiveError> {
        if !dir.join("db").exists() && !dir.join("conf").exists() {
            return Err(ReceiveError::NoState {
                dir: dir.to_path_buf(),
            });
        }
        Self::open_inner(dir, false)
    }

    pub fn discarding() -> Store {
        Store {
            db: None,
            dir: PathBuf::new(),
            stats: Mutex::new(Stats::default()),
            apply_lock: Mutex::new(()),
            flush_lock: Default::default(),
        }
    }

    /// `discard` mode: nothing is stored.
    pub fn is_discarding(&self) -> bool {
        self.db.is_none()
    }

    fn open_inner(dir: &Path, create: bool) -> Result<Store, ReceiveError> {
        if dir.exists() && !dir.is_dir() {
            return Err(ReceiveError::Foreign {
                dir: dir.to_path_buf(),
                detail: "it is a file, not a directory".into(),
            });
        }
        let db = sled_config(dir)
            .open()
            .map_err(|e| classify_open_error(dir, e))?;
        let corrupt = |e: sled::Error| ReceiveError::Corrupt {
            dir: dir.to_path_buf(),
            detail: e.to_string(),
        };
        match db.get(FORMAT_KEY).map_err(corrupt)? {
            Some(f) if f == FORMAT => {}
            Some(f) => {
                return Err(ReceiveError::TooNew {
                    dir: dir.to_path_buf(),
                    format: String::from_utf8_lossy(&f).into_owned(),
                })
            }
            None if db.contains_key(b"checkpoint").map_err(corrupt)?
                || db.contains_key(b"seq_floor").map_err(corrupt)? =>
            {
                return Err(ReceiveError::Foreign {
                    dir: dir.to_path_buf(),
                    detail: "it holds a binsync checkpoint: it is binsync's own --state-dir".into(),
                })
            }
            None if !db.is_empty() => {
                return Err(ReceiveError::Foreign {
                    dir: dir.to_path_buf(),
                    detail: "it holds a sled store written by something else".into(),
                })
            }
            None if !create => {
                return Err(ReceiveError::NoState {
                    dir: dir.to_path_buf(),
                })
            }
            None => {
                db.insert(FORMAT_KEY, FORMAT)
                    .map_err(|e| write_error(dir, e))?;
                db.flush().map_err(|e| write_error(dir, e))?;
            }
        }
        let stats = match db.get(STATS_KEY).map_err(corrupt)? {
            Some(raw) => serde_json::from_slice(&raw).map_err(|e| ReceiveError::Corrupt {
                dir: dir.to_path_buf(),
                detail: format!("counters unreadable: {e}"),
            })?,
            None => Stats::default(),
        };
        Ok(Store {
            db: Some(db),
            dir: dir.to_path_buf(),
            stats: Mutex::new(stats),
            apply_lock: Mutex::new(()),
            flush_lock: Default::default(),
        })
    }

    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    /// Changes counters outside a batch (rejections, faults); persisted, flushed later.
    pub fn count(&self, change: impl FnOnce(&mut Stats)) {
        let mut stats = lock(&self.stats);
        change(&mut stats);
        if let Some(db) = &self.db {
            let json = serde_json::to_vec(&*stats).expect("plain struct serializes");
            if let Err(e) = db.insert(STATS_KEY, json) {
                tracing::warn!(error = %e, dir = %self.dir.display(), "cannot persist the receiver's counters");
            }
        }
    }

    /// Applies a batch atomically with the apply rule; blocking (call off the async threads).
    /// Not durable until [`Store::flush`].
    pub fn apply(&self, batch: &Batch<'_>) -> Result<Applied, ReceiveError> {
        let Some(db) = &self.db else {
            self.count(|s| {
                s.batches += 1;
                s.ops_received += batch.count;
            });
            return Ok(Applied::default());
        };
        let _serial = lock(&self.apply_lock);
        let read = |e: sled::Error| ReceiveError::Corrupt {
            dir: self.dir.clone(),
            detail: e.to_string(),
        };
        let batch_key = [BATCH_PREFIX, batch.batch_id.as_bytes()].concat();
        if let Some(prev) = db.get(&batch_key).map_err(read)? {
            if prev.get(..8) == Some(&batch.fingerprint.to_be_bytes()[..]) {
                self.count(|s| {
                    s.batches += 1;
                    s.batches_duplicate += 1;
                    s.ops_received += batch.count;
                    s.ops_stale += batch.count;
                });
                return Ok(Applied {
                    applied: 0,
                    stale: batch.count,
                    duplicate: true,
                });
            }
            // Same id, other content: a sender that regrouped its batches after a restart.
            // The apply rule below decides per operation, as for any other batch.
            tracing::info!(batch_id = %batch.batch_id, "batch id seen before with other content; applying operation by operation");
        }

        let mut writes = sled::Batch::default();
        // Seqs written by this batch so far: several operations on one id in one batch.
        let mut pending: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut result = Applied::default();
        for (entity, ops) in &batch.entities {
            for op in ops {
                let key = entity_key(entity, &op.id);
                let current = match pending.get(&key) {
                    Some(seq) => Some(*seq),
                    None => db
                        .get(&key)
                        .map_err(read)?
                        .map(|raw| decode_seq(&raw))
                        .transpose()
                        .map_err(|detail| ReceiveError::Corrupt {
                            dir: self.dir.clone(),
                            detail,
                        })?,
                };
                if current.is_some_and(|seq| seq >= op.seq) {
                    result.stale += 1;
                    continue;
                }
                let record = match op.kind {
                    OpKind::Delete => encode_record(op.seq, true, b""),
                    OpKind::Insert | OpKind::Update => {
                        encode_record(op.seq, false, op.after.map_or("{}", |a| a.get()).as_bytes())
                    }
                };
                writes.insert(key.clone(), record);
                pending.insert(key, op.seq);
                result.applied += 1;
            }
        }
        let mut mark = batch.fingerprint.to_be_bytes().to_vec();
        mark.extend_from_slice(&unix_ms().to_be_bytes());
        writes.insert(batch_key, mark);

        let mut stats = lock(&self.stats);
        let mut next = stats.clone();
        next.batches += 1;
        next.ops_received += batch.count;
        next.ops_applied += result.applied;
        next.ops_stale += result.stale;
        writes.insert(
            STATS_KEY,
            serde_json::to_vec(&next).expect("plain struct serializes"),
        );
        db.apply_batch(writes)
            .map_err(|e| write_error(&self.dir, e))?;
        *stats = next;
        Ok(result)
    }

    /// Makes everything applied so far durable.
    pub async fn flush(&self) -> Result<(), ReceiveError> {
        let Some(db) = self.db.clone() else {
            return Ok(());
        };
        let one_at_a_time = self.flush_lock.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            let _only = lock(&one_at_a_time);
            db.flush().map(|_| ())
        })
        .await
        .map_err(|e| ReceiveError::Internal(format!("flushing the store: {e}")))?;
        flushed.map_err(|e| write_error(&self.dir, e))
    }

    /// Closes the store and waits (bounded) until sled's lock on the state dir is released:
    /// sled drops its last handle on a background thread a moment after ours, and `dump`
    /// right after `serve` returns must find the directory free.
    pub async fn close(mut self) {
        let Some(db) = self.db.take() else { return };
        drop(db);
        let lock_file = self.dir.join("db");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match std::fs::File::open(&lock_file).map(|f| f.try_lock()) {
                Ok(Err(std::fs::TryLockError::WouldBlock)) => {}
                // Free (our probe's lock goes with the file), gone, or not lockable: done.
                _ => return,
            }
            if std::time::Instant::now() > deadline {
                tracing::warn!(dir = %self.dir.display(), "sled still holds the state dir's lock");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The whole state as JSON (see [`crate::dump`]).
    pub fn dump(&self) -> Result<Value, ReceiveError> {
        let mut entities = Map::new();
        if let Some(db) = &self.db {
            let corrupt = |detail: String| ReceiveError::Corrupt {
                dir: self.dir.clone(),
                detail,
            };
            for item in db.scan_prefix(ENTITY_PREFIX) {
                let (key, raw) = item.map_err(|e| corrupt(e.to_string()))?;
                let rest = &key[ENTITY_PREFIX.len()..];
                let split = rest
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| corrupt("an entity key without its separator".into()))?;
                let entity = String::from_utf8_lossy(&rest[..split]).into_owned();
                let id = String::from_utf8_lossy(&rest[split + 1..]).into_owned();
                let record = decode_record(&raw).map_err(&corrupt)?;
                let mut obj = Map::new();
                obj.insert("seq".into(), record.seq.into());
                obj.insert("deleted".into(), record.deleted.into());
                if !record.deleted {
                    let values: Value = serde_json::from_slice(record.values)
                        .map_err(|e| corrupt(format!("values of {entity} {id}: {e}")))?;
                    obj.insert("values".into(), values);
                }
                entities
                    .entry(entity)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("inserted as an object")
                    .insert(id, Value::Object(obj));
            }
        }
        let stats = serde_json::to_value(self.stats()).expect("plain struct serializes");
        Ok(serde_json::json!({"stats": stats, "entities": entities}))
    }
}

struct Record<'a> {
    seq: u64,
    deleted: bool,
    values: &'a [u8],
}

fn entity_key(entity: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(ENTITY_PREFIX.len() + entity.len() + 1 + id.len());
    key.extend_from_slice(ENTITY_PREFIX);
    key.extend_from_slice(entity.as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

fn encode_record(seq: u64, deleted: bool, values: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + values.len());
    v.extend_from_slice(&seq.to_be_bytes());
    v.push(u8::from(deleted));
    v.extend_from_slice(values);
    v
}

fn decode_record(raw: &[u8]) -> Result<Record<'_>, String> {
    let seq = decode_seq(raw)?;
    let deleted = match raw[8] {
        0 => false,
        1 => true,
        other => return Err(format!("entity record with deleted flag {other}")),
    };
    Ok(Record {
        seq,
        deleted,
        values: &raw[9..],
    })
}

fn decode_seq(raw: &[u8]) -> Result<u64, String> {
    match raw.get(..9) {
        Some(head) => Ok(u64::from_be_bytes(head[..8].try_into().expect("8 bytes"))),
        None => Err(format!("entity record of {} bytes", raw.len())),
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A panic elsewhere must not wedge the receiver: the data behind these locks stays valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_error(dir: &Path, e: sled::Error) -> ReceiveError {
    ReceiveError::Write {
        dir: dir.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Entities stay on disk; the cache is small. (binsync's own checkpoint store is opened with
/// the same settings; this crate does not depend on binsync, so they are written twice.)
fn sled_config(dir: &Path) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(8 * 1024 * 1024)
        .mode(sled::Mode::LowSpace)
}

/// sled could not lock its directory: another process holds the store.
fn is_lock_error(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                // EAGAIN on Linux: the lock is held.
                || io.raw_os_error() == Some(11)
                || e.to_string().contains("lock")
        }
        _ => false,
    }
}

fn classify_open_error(dir: &Path, e: sled::Error) -> ReceiveError {
    let detail = e.to_string();
    match &e {
        _ if is_lock_error(&e) => ReceiveError::Locked {
            dir: dir.to_path_buf(),
            detail,
        },
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            ReceiveError::Write {
                dir: dir.to_path_buf(),
                detail,
            }
        }
        _ => ReceiveError::Corrupt {
            dir: dir.to_path_buf(),
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch;

    fn body(batch_id: &str, ops: &[(u64, &str, i64, i64)]) -> Vec<u8> {
        let ops: Vec<Value> = ops
            .iter()
            .map(|&(seq, kind, id, price)| {
                let mut v = serde_json::json!({"seq": seq, "op": kind, "db": "shop",
                    "table": "products", "entity": "products", "id": {"id": id}, "gtid": null,
                    "ts": "2026-11-24T07:37:31Z", "row": 0, "file": "f.000001", "offset": 4});
                let image = serde_json::json!({"id": id, "price": price});
                match kind {
                    "insert" => v["after"] = image,
                    "update" => {
                        v["changed"] = serde_json::json!(["price"]);
                        v["before"] = image.clone();
                        v["after"] = image;
                    }
                    _ => v["before"] = image,
                }
                v
            })
            .collect();
        let seqs = ops.iter().map(|o| o["seq"].as_u64().unwrap());
        serde_json::to_vec(&serde_json::json!({"version": 1, "batch_id": batch_id,
            "source": {"flavor": "mysql", "server_id": 1, "server_uuid": "u"},
            "first_seq": seqs.clone().min(), "last_seq": seqs.max(), "count": ops.len(),
            "entities": {"products": ops}}))
        .unwrap()
    }

    fn apply(store: &Store, text: &[u8]) -> Applied {
        store.apply(&batch::parse(text, None).unwrap()).unwrap()
    }

    #[test]
    fn several_ops_on_one_id_in_one_batch_follow_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = apply(
            &store,
            &body(
                "a",
                &[
                    (1, "insert", 1, 10),
                    (2, "update", 1, 11),
                    (3, "delete", 1, 11),
                ],
            ),
        );
        assert_eq!((a.applied, a.stale), (3, 0));
        // A replay of the middle: older than the tombstone.
        let b = apply(
            &store,
            &body("b", &[(2, "update", 1, 11), (4, "insert", 2, 5)]),
        );
        assert_eq!((b.applied, b.stale), (1, 1));
        let dump = store.dump().unwrap();
        assert_eq!(
            dump["entities"]["products"]["{\"id\":1}"],
            serde_json::json!({"seq": 3, "deleted": true})
        );
        assert_eq!(
            dump["entities"]["products"]["{\"id\":2}"]["values"]["price"],
            5
        );
    }

    #[test]
    fn an_exact_resend_is_a_duplicate_and_another_body_is_judged_per_op() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let text = body("x", &[(1, "insert", 1, 10)]);
        assert!(!apply(&store, &text).duplicate);
        let again = apply(&store, &text);
        assert!(again.duplicate);
        assert_eq!(again.stale, 1);
        let other = apply(
            &store,
            &body("x", &[(1, "insert", 1, 10), (2, "insert", 9, 1)]),
        );
        assert_eq!((other.applied, other.stale, other.duplicate), (1, 1, false));
        let s = store.stats();
        assert_eq!(
            (s.batches, s.batches_duplicate, s.ops_applied, s.ops_stale),
            (3, 1, 2, 2)
        );
    }

    #[test]
    fn a_binsync_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(b"checkpoint", b"{}").unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path()).err().expect("must refuse");
        assert!(matches!(err, ReceiveError::Foreign { .. }), "{err}");
        assert!(
            err.to_string().contains("binsync's own --state-dir"),
            "{err}"
        );
    }

    #[test]
    fn dump_of_an_empty_dir_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open_existing(&dir.path().join("nothing"))
            .err()
            .expect("must fail");
        assert!(matches!(err, ReceiveError::NoState { .. }), "{err}");
    }
}
