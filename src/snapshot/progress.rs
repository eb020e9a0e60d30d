//! What the state dir remembers of snapshots, and the `seq` room each chunk took.
//!
//! - **Per table** (tree `snapshot`, key `db.table`): a [`TableProgress`], written only with
//!   the checkpoint past the chunk it describes ([`records`], saved in the same sled
//!   transaction), so the progress is never ahead of what was delivered nor behind it. A
//!   restart reads the next chunk after [`TableProgress::after`].
//! - **Per injected chunk** (tree `snapshot_reserved`): a [`Reservation`], written *before*
//!   the chunk's first row leaves the source stage. A chunk takes `budget` `seq` values at
//!   the stream position where it is injected, whatever its row count; a restart from a
//!   checkpoint before that position skips the same room there (the decoder's
//!   `apply_reservations`), so every binlog operation after it keeps the `seq` it had the
//!   first time, even if the chunk itself is read again and lands elsewhere.
//! - **Requests** (`binsync snapshot --table`): files in `<state-dir>/snapshot-requests/`,
//!   written by another process (the store is locked by the running one); the runner turns
//!   each into progress entries in the store and only then removes the file.

use std::path::{Path, PathBuf};

use mysql_async::Value;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointError, Records, Store};

pub const TREE: &[u8] = b"snapshot";
pub const RESERVED_TREE: &[u8] = b"snapshot_reserved";
/// The folder of `binsync snapshot --table` requests inside the state dir.
pub const REQUESTS_DIR: &str = "snapshot-requests";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Asked for; no chunk delivered yet.
    Pending,
    Running,
    Done,
}

/// One table's snapshot, as far as it was delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableProgress {
    pub db: String,
    pub table: String,
    pub state: State,
    /// The `seq` before the table's first chunk: every row the snapshot delivers has a
    /// greater one (0 until the first chunk is injected). `snapshot_end` carries it.
    pub since: u64,
    /// The key of the last row delivered (None: no chunk yet).
    pub after: Option<Vec<KeyValue>>,
    pub rows: u64,
    pub chunks: u64,
    /// information_schema's row estimate when the table's snapshot began.
    pub estimate: u64,
    pub started_unix_ms: u64,
    pub finished_unix_ms: Option<u64>,
}

impl TableProgress {
    pub fn new(db: &str, table: &str) -> TableProgress {
        TableProgress {
            db: db.to_string(),
            table: table.to_string(),
            state: State::Pending,
            since: 0,
            after: None,
            rows: 0,
            chunks: 0,
            estimate: 0,
            started_unix_ms: now_ms(),
            finished_unix_ms: None,
        }
    }

    pub fn qualified(&self) -> String {
        format!("{}.{}", self.db, self.table)
    }
}

/// A key value as stored: the server's value, lossless.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyValue {
    Null,
    /// Hex of the bytes.
    Bytes(String),
    Int(i64),
    Uint(u64),
    Float(f32),
    Double(f64),
    Date(u16, u8, u8, u8, u8, u8, u32),
    Time(bool, u32, u8, u8, u8, u32),
}

impl KeyValue {
    pub fn from_value(v: &Value) -> KeyValue {
        match v {
            Value::NULL => KeyValue::Null,
            Value::Bytes(b) => KeyValue::Bytes(b.iter().map(|x| format!("{x:02x}")).collect()),
            Value::Int(i) => KeyValue::Int(*i),
            Value::UInt(u) => KeyValue::Uint(*u),
            Value::Float(f) => KeyValue::Float(*f),
            Value::Double(d) => KeyValue::Double(*d),
            Value::Date(y, m, d, h, mi, s, us) => KeyValue::Date(*y, *m, *d, *h, *mi, *s, *us),
            Value::Time(neg, d, h, m, s, us) => KeyValue::Time(*neg, *d, *h, *m, *s, *us),
        }
    }

    pub fn to_value(&self) -> Option<Value> {
        Some(match self {
            KeyValue::Null => Value::NULL,
            KeyValue::Bytes(hex) => {
                if hex.len() % 2 != 0 {
                    return None;
                }
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
                Value::Bytes(bytes)
            }
            KeyValue::Int(i) => Value::Int(*i),
            KeyValue::Uint(u) => Value::UInt(*u),
            KeyValue::Float(f) => Value::Float(*f),
            KeyValue::Double(d) => Value::Double(*d),
            KeyValue::Date(y, m, d, h, mi, s, us) => Value::Date(*y, *m, *d, *h, *mi, *s, *us),
            KeyValue::Time(neg, d, h, m, s, us) => Value::Time(*neg, *d, *h, *m, *s, *us),
        })
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn damaged(store: &Store, what: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Damaged {
        dir: store.dir().to_path_buf(),
        detail: format!("snapshot progress unreadable: {what}"),
    }
}

/// The key that says "snapshot every captured table" until they are listed (not a table
/// name: those have a dot).
const WANTED: &[u8] = b"*wanted";

/// Records that this state dir's first start asked for a snapshot of every captured table;
/// saved before the first checkpoint, so a crash before the tables are listed keeps it.
pub async fn mark_wanted(store: &Store) -> Result<(), CheckpointError> {
    store
        .write(
            |db| db.open_tree(TREE)?.insert(WANTED, &[1u8]).map(|_| ()),
            |_| {},
        )
        .await
        .map_err(|e| store.write_error(e))
}

pub fn is_wanted(store: &Store) -> Result<bool, CheckpointError> {
    let tree = store.db().open_tree(TREE).map_err(|e| damaged(store, e))?;
    tree.contains_key(WANTED).map_err(|e| damaged(store, e))
}

/// After the tables were listed ([`save_now`]).
pub async fn unmark_wanted(store: &Store) -> Result<(), CheckpointError> {
    store
        .write(|db| db.open_tree(TREE)?.remove(WANTED).map(|_| ()), |_| {})
        .await
        .map_err(|e| store.write_error(e))
}

/// Every table's progress, in key order.
pub fn load(store: &Store) -> Result<Vec<TableProgress>, CheckpointError> {
    let tree = store.db().open_tree(TREE).map_err(|e| damaged(store, e))?;
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item.map_err(|e| damaged(store, e))?;
        if k.starts_with(b"*") {
            continue;
        }
        out.push(serde_json::from_slice(&v).map_err(|e| damaged(store, e))?);
    }
    Ok(out)
}

/// The write that saves `p` with the checkpoint past its chunk.
pub fn records(p: &TableProgress) -> Records {
    Records {
        tree: TREE,
        entries: vec![(
            p.qualified().into_bytes(),
            serde_json::to_vec(p).expect("plain struct serializes"),
        )],
    }
}

/// Saves progress entries now (new requests, outside any chunk).
pub async fn save_now(store: &Store, entries: Vec<TableProgress>) -> Result<(), CheckpointError> {
    store
        .write(
            move |db| {
                let tree = db.open_tree(TREE)?;
                for p in &entries {
                    tree.insert(
                        p.qualified().as_bytes(),
                        serde_json::to_vec(p).expect("plain struct serializes"),
                    )?;
                }
                Ok(())
            },
            |_| {},
        )
        .await
        .map_err(|e| store.write_error(e))
}

pub use crate::decode::inject::Reservation;

/// A reservation's key in [`RESERVED_TREE`]: `seq_before`, `offset`, `file` (ordered by `seq`).
fn reservation_key(r: &Reservation) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + r.file.len());
    k.extend_from_slice(&r.seq_before.to_be_bytes());
    k.extend_from_slice(&r.offset.to_be_bytes());
    k.extend_from_slice(r.file.as_bytes());
    k
}

fn reservation_from_entry(k: &[u8], v: &[u8]) -> Option<Reservation> {
    Some(Reservation {
        seq_before: u64::from_be_bytes(k.get(..8)?.try_into().ok()?),
        offset: u64::from_be_bytes(k.get(8..16)?.try_into().ok()?),
        file: String::from_utf8(k.get(16..)?.to_vec()).ok()?,
        budget: u64::from_be_bytes(v.try_into().ok()?),
    })
}

/// Writes `r` to disk (fsync) before its chunk is handed on.
pub async fn reserve(store: &Store, r: &Reservation) -> Result<(), CheckpointError> {
    let (k, v) = (reservation_key(r), r.budget.to_be_bytes());
    store
        .write(move |db| db.open_tree(RESERVED_TREE)?.insert(k, &v), |_| {})
        .await
        .map(|_| ())
        .map_err(|e| store.write_error(e))
}

/// The reservations at or above `seq` (a restart from a checkpoint at `seq` meets them); the
/// ones below are dropped from the store.
pub async fn reservations_from(
    store: &Store,
    seq: u64,
) -> Result<Vec<Reservation>, CheckpointError> {
    let tree = store
        .db()
        .open_tree(RESERVED_TREE)
        .map_err(|e| damaged(store, e))?;
    let mut keep = Vec::new();
    let mut old = Vec::new();
    for item in tree.iter() {
        let (k, v) = item.map_err(|e| damaged(store, e))?;
        let r = reservation_from_entry(&k, &v)
            .ok_or_else(|| damaged(store, "a seq reservation of another format"))?;
        if r.seq_before >= seq {
            keep.push(r);
        } else {
            old.push(k.to_vec());
        }
    }
    if !old.is_empty() {
        store
            .write(
                move |db| {
                    let tree = db.open_tree(RESERVED_TREE)?;
                    for k in old {
                        tree.remove(k)?;
                    }
                    Ok(())
                },
                |_| {},
            )
            .await
            .map_err(|e| store.write_error(e))?;
    }
    Ok(keep)
}

/// The running process's copy of the tables' progress, for `binsync status` (the store is
/// locked while it runs): informational, written per chunk handed on, not fsynced.
pub const STATUS_FILE: &str = "snapshot-status.json";

pub fn write_status(state_dir: &Path, tables: &[TableProgress]) {
    let tmp = state_dir.join(".snapshot-status.json.tmp");
    if let Ok(body) = serde_json::to_vec(tables) {
        if std::fs::write(&tmp, body).is_ok() {
            let _ = std::fs::rename(&tmp, state_dir.join(STATUS_FILE));
        }
    }
}

pub fn read_status(state_dir: &Path) -> Vec<TableProgress> {
    std::fs::read(state_dir.join(STATUS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Forgets every snapshot record (`--reset`).
pub async fn clear(store: &Store) -> Result<(), CheckpointError> {
    let _ = std::fs::remove_file(store.dir().join(STATUS_FILE));
    store
        .write(
            |db| {
                db.open_tree(TREE)?.clear()?;
                db.open_tree(RESERVED_TREE)?.clear()
            },
            |_| {},
        )
        .await
        .map_err(|e| store.write_error(e))
}

/// `binsync snapshot --table`: records a request for `tables` in the state dir, for the
/// running process (or the next run) to pick up. Returns the request file.
pub fn write_request(state_dir: &Path, tables: &[String]) -> std::io::Result<PathBuf> {
    let dir = state_dir.join(REQUESTS_DIR);
    std::fs::create_dir_all(&dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("{nanos}-{}.json", std::process::id());
    let tmp = dir.join(format!(".{name}.tmp"));
    let body = serde_json::to_vec(&serde_json::json!({ "tables": tables })).expect("json");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    let path = dir.join(name);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The requests waiting in the state dir: (file, tables), oldest first. A file that cannot be
/// read as a request is named in the error.
pub fn read_requests(state_dir: &Path) -> Result<Vec<(PathBuf, Vec<String>)>, String> {
    let dir = state_dir.join(REQUESTS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        #[derive(Deserialize)]
        struct Request {
            tables: Vec<String>,
        }
        let text = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let r: Request = serde_json::from_slice(&text).map_err(|e| {
            format!(
                "{}: not a snapshot request ({e}); remove the file",
                f.display()
            )
        })?;
        out.push((f, r.tables));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_round_trip() {
        for v in [
            Value::NULL,
            Value::Bytes(b"a\x00\xffz".to_vec()),
            Value::Int(-5),
            Value::UInt(u64::MAX),
            Value::Double(1.5),
            Value::Date(2024, 2, 29, 23, 59, 58, 123456),
            Value::Time(true, 3, 4, 5, 6, 7),
        ] {
            let k = KeyValue::from_value(&v);
            let text = serde_json::to_string(&k).unwrap();
            let back: KeyValue = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_value(), Some(v));
        }
        assert_eq!(KeyValue::Bytes("abc".into()).to_value(), None);
    }

    #[test]
    fn reservations_keep_their_fields() {
        let r = Reservation {
            file: "mariadb-bin.000002".into(),
            offset: 1234,
            seq_before: 99,
            budget: 1001,
        };
        let back = reservation_from_entry(&reservation_key(&r), &r.budget.to_be_bytes()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn requests_round_trip_through_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_requests(dir.path()).unwrap().is_empty());
        let f = write_request(dir.path(), &["shop.a".into(), "shop.b".into()]).unwrap();
        let got = read_requests(dir.path()).unwrap();
        assert_eq!(
            got,
            vec![(f, vec!["shop.a".to_string(), "shop.b".to_string()])]
        );
    }
}
