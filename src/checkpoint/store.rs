//! The sled store in `--state-dir`: the checkpoint, the `seq` floor, and (opened through
//! [`Store::db`]) the dead-letter queue's tree.
//!
//! - Every write goes through [`Store::write`], to the store's one writer thread
//!   (`writer.rs`), the only caller of flush. Reads go to sled directly.
//! - `status.json` is a copy of the last checkpoint saved, written after the flush (so it is
//!   never ahead of the store) for `binsync status` while a run holds sled's lock.
//! - Damage is detected at open, before anything is sent: a `conf` without its `db` (missing
//!   or empty), a store sled cannot open (it finds a file short or corrupt; a disk that
//!   refuses, read-only or failing, is [`CheckpointError::Write`] instead), a checkpoint
//!   record that does not parse, or a `status.json` ahead of the store (the store lost what
//!   it had saved: truncated). Each is [`CheckpointError::Damaged`], naming `--reset`;
//!   [`Store::open_reset`] moves the damaged files aside and starts a new store numbering
//!   above everything before.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::writer::Writer;
use super::{is_disk_full, stored_to_checkpoint, Checkpoint, CheckpointError, DiskFull, Stored};

const KEY: &[u8] = b"checkpoint";
const SEQ_FLOOR_KEY: &[u8] = b"seq_floor";
/// When the store was made (its first record; see `Store::open`).
const CREATED_KEY: &[u8] = b"created";
/// Written by [`Store::probe`] only; never read.
const PROBE_KEY: &[u8] = b"probe";
const FORMAT_VERSION: u32 = 1;
const STATUS_FILE: &str = "status.json";

/// `seq` stays below this (2^53): JavaScript receivers read numbers as doubles. The wall-clock
/// floor (microseconds since 1970, about 1.8 * 10^15 in 2026) leaves room for about 7 * 10^15
/// operations, or the wall clock until the year 2255.
pub(crate) const SEQ_LIMIT: u64 = 1 << 53;

/// The sled store in `--state-dir`. Clones share it; the last one dropped closes it (and waits
/// for its writer thread, so that sled's lock on the directory is released on return).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    dir: PathBuf,
    writer: Writer,
}

impl Store {
    /// Opens (or creates) the store; a damaged one is [`CheckpointError::Damaged`].
    /// [`Store::open`] for the process that will own the store (`binsync run`): a lock held
    /// only for a moment (a `status` or `dlq list` reading the store as `run` starts) is
    /// waited out for up to `patience`, not reported as another binsync.
    pub async fn open_waiting(dir: &Path, patience: Duration) -> Result<Store, CheckpointError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match Store::open(dir) {
                Err(CheckpointError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// A store was created in `dir` (readers check this rather than create one).
    pub fn exists(dir: &Path) -> bool {
        dir.join("conf").exists()
    }

    pub fn open(dir: &Path) -> Result<Store, CheckpointError> {
        if dir.exists() && !dir.is_dir() {
            return Err(CheckpointError::NotADirectory {
                dir: dir.to_path_buf(),
            });
        }
        let damaged = |detail: String| CheckpointError::Damaged {
            dir: dir.to_path_buf(),
            detail,
        };
        let existed = dir.join("conf").exists();
        if existed {
            match std::fs::metadata(dir.join("db")) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(damaged("its db file is missing".into()))
                }
                Ok(m) if m.len() == 0 => return Err(damaged("its db file is empty".into())),
                _ => {}
            }
        }
        // sled's background flusher of a store this process just closed may hold the lock a
        // moment longer: a lock still held after half a second is another holder.
        let mut tries = 0;
        let db = loop {
            match sled_config(dir).open() {
                Err(e) if is_lock_error(&e) && tries < 10 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other.map_err(|e| classify_open_error(dir, e))?,
            }
        };
        if !existed {
            // A new store holds a record from the start (flushed before anything else), so
            // that an existing store without any has lost what it held: a disk that failed
            // under it (an I/O error, a file system rolled back) and took `status.json` too
            // would otherwise pass for a fresh state dir, and `seq` would start over.
            db.insert(CREATED_KEY, &now_micros().to_be_bytes())
                .and_then(|_| db.flush())
                .map_err(|e| write_error(dir, e))?;
        } else if [CREATED_KEY, SEQ_FLOOR_KEY, KEY]
            .iter()
            .all(|k| !db.contains_key(k).unwrap_or(true))
        {
            return Err(damaged(
                "it holds no records though it was created before (a disk that failed or was rolled back under it)".into(),
            ));
        }
        let writer = Writer::start(db.clone(), super::writer::mirror_for(dir)).map_err(|e| {
            CheckpointError::Write {
                dir: dir.to_path_buf(),
                detail: format!("cannot start the store's writer thread: {e}"),
            }
        })?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                dir: dir.to_path_buf(),
                writer,
            }),
        };
        store.check_against_published()?;
        Ok(store)
    }

    /// `--reset`: forgets the checkpoint (the dead-letter queue stays) and opens the store.
    /// `seq` goes on above the old last `seq` and the wall clock. A damaged store is moved
    /// aside into `damaged-<unix time>/` inside the state dir (dead letters included) and a
    /// new one starts above the `seq` its `status.json` showed and the wall clock.
    pub async fn open_reset(dir: &Path) -> Result<Store, CheckpointError> {
        match Store::open(dir) {
            Ok(store) => {
                store.reset().await?;
                Ok(store)
            }
            Err(CheckpointError::Damaged { detail, .. }) => {
                let published = Store::read_published(dir).map_or(0, |c| c.position.last_seq());
                let aside = move_aside(dir)?;
                tracing::warn!(state_dir = %dir.display(), damaged = %detail, moved_to = %aside.display(),
                    "--reset: the damaged store (with its dead letters) is kept aside; starting a new one");
                let store = Store::open(dir)?;
                store.set_floor(published.max(now_micros())).await?;
                Ok(store)
            }
            Err(e) => Err(e),
        }
    }

    /// For reads and for opening trees; every write goes through [`Store::write`].
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Applies `apply` on the store's writer thread and flushes it; then runs `published` there
    /// (writing a read-only copy for other processes, say) and returns `apply`'s result. Neither
    /// closure may hold a `Store`.
    pub async fn write<T: Send + 'static>(
        &self,
        apply: impl FnOnce(&sled::Db) -> sled::Result<T> + Send + 'static,
        published: impl FnOnce(&T) + Send + 'static,
    ) -> sled::Result<T> {
        self.inner.writer.write(apply, published).await
    }

    pub fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let damaged = |detail: String| CheckpointError::Damaged {
            dir: self.dir().to_path_buf(),
            detail,
        };
        let Some(raw) = self.db().get(KEY).map_err(|e| damaged(e.to_string()))? else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_slice(&raw)
            .map_err(|e| damaged(format!("checkpoint record unreadable: {e}")))?;
        if stored.version > FORMAT_VERSION {
            return Err(CheckpointError::TooNew {
                dir: self.dir().to_path_buf(),
                version: stored.version,
            });
        }
        stored_to_checkpoint(stored)
            .map(Some)
            .map_err(|e| damaged(e.to_string()))
    }

    /// When the checkpoint held was saved (Unix ms), if there is one.
    pub fn saved_at_unix_ms(&self) -> Option<u64> {
        let raw = self.db().get(KEY).ok()??;
        serde_json::from_slice::<Stored>(&raw)
            .ok()
            .map(|s| s.saved_at_unix_ms)
    }

    /// Writes and flushes (fsync) the checkpoint, then publishes its copy (`status.json`).
    pub async fn save(&self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        self.save_with(cp, Vec::new()).await
    }

    /// [`Store::save`], and `records` written in the same sled transaction: after a crash
    /// either all of it is on disk or none.
    pub async fn save_with(
        &self,
        cp: &Checkpoint,
        records: Vec<super::Records>,
    ) -> Result<(), CheckpointError> {
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
        let saved_at = stored.saved_at_unix_ms;
        let bytes = serde_json::to_vec(&stored).expect("plain struct serializes");
        let value = sled::IVec::from(&bytes[..]);
        let dir = self.dir().to_path_buf();
        self.write(
            move |db| {
                if records.is_empty() {
                    return db.insert(KEY, value).map(|_| ());
                }
                use sled::Transactional;
                // The checkpoint's tree first, then each tree the records name.
                let mut names: Vec<&'static [u8]> = Vec::new();
                for r in &records {
                    if !names.contains(&r.tree) {
                        names.push(r.tree);
                    }
                }
                let mut trees: Vec<sled::Tree> = vec![(**db).clone()];
                for n in &names {
                    trees.push(db.open_tree(n)?);
                }
                trees
                    .as_slice()
                    .transaction(|t| {
                        t[0].insert(KEY, value.clone())?;
                        for r in &records {
                            let i = 1 + names.iter().position(|n| *n == r.tree).unwrap_or(0);
                            for (k, v) in &r.entries {
                                t[i].insert(k.as_slice(), v.as_slice())?;
                            }
                        }
                        Ok(())
                    })
                    .map_err(|e| match e {
                        sled::transaction::TransactionError::Storage(e) => e,
                        sled::transaction::TransactionError::Abort(()) => {
                            sled::Error::Unsupported("transaction aborted".into())
                        }
                    })
            },
            // Informational only (never read to resume, only to detect a store that lost
            // what it saved), so not fsynced.
            move |_| {
                let tmp = dir.join(".status.json.tmp");
                if std::fs::write(&tmp, &bytes).is_ok() {
                    let _ = std::fs::rename(&tmp, dir.join(STATUS_FILE));
                }
            },
        )
        .await
        .map_err(|e| self.write_error(e))?;
        crate::metrics::checkpoint_saved(saved_at);
        Ok(())
    }

    /// Whether a write reaches the disk (after a disk-full failure, on a freshly opened store:
    /// sled fails every operation on a `Db` that once failed a write).
    pub async fn probe(&self) -> Result<(), CheckpointError> {
        let now = now_micros();
        self.write(
            move |db| db.insert(PROBE_KEY, &now.to_be_bytes()).map(|_| ()),
            |_| {},
        )
        .await
        .map_err(|e| self.write_error(e))
    }

    /// Where numbering starts without a checkpoint: the floor kept in the store, set (and
    /// flushed) from the wall clock in microseconds the first time, so that a state dir
    /// created again numbers above anything sent before, and a restart before the first
    /// checkpoint numbers the same operations the same way.
    pub async fn seq_floor(&self) -> Result<u64, CheckpointError> {
        if let Some(floor) = self.stored_floor() {
            return Ok(floor);
        }
        let floor = now_micros();
        if floor >= SEQ_LIMIT {
            tracing::warn!(
                floor,
                "the wall clock is past 2^53 microseconds: seq no longer fits a JavaScript number"
            );
        }
        self.set_floor(floor).await?;
        Ok(floor)
    }

    fn stored_floor(&self) -> Option<u64> {
        self.db()
            .get(SEQ_FLOOR_KEY)
            .ok()
            .flatten()
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
    }

    async fn set_floor(&self, floor: u64) -> Result<(), CheckpointError> {
        self.write(
            move |db| db.insert(SEQ_FLOOR_KEY, &floor.to_be_bytes()).map(|_| ()),
            |_| {},
        )
        .await
        .map_err(|e| self.write_error(e))
    }

    /// The last checkpoint as a running binsync published it (see [`Store::save`]).
    pub fn read_published(dir: &Path) -> Option<Checkpoint> {
        let raw = std::fs::read(dir.join(STATUS_FILE)).ok()?;
        stored_to_checkpoint(serde_json::from_slice(&raw).ok()?).ok()
    }

    /// Forgets the checkpoint (the dead-letter queue stays). The floor becomes the highest of
    /// the old last `seq`, the old floor, `status.json`'s and the wall clock: `seq` keeps
    /// growing, as receivers that drop "older" operations would otherwise drop everything.
    /// `status.json` is removed after the flush (there is no checkpoint to show).
    pub async fn reset(&self) -> Result<(), CheckpointError> {
        let last = self.load()?.map_or(0, |c| c.position.last_seq());
        let published = Store::read_published(self.dir()).map_or(0, |c| c.position.last_seq());
        let floor = last
            .max(published)
            .max(self.stored_floor().unwrap_or(0))
            .max(now_micros());
        let status = self.dir().join(STATUS_FILE);
        self.write(
            move |db| {
                db.insert(SEQ_FLOOR_KEY, &floor.to_be_bytes())?;
                db.remove(KEY).map(|_| ())
            },
            move |_| {
                let _ = std::fs::remove_file(&status);
            },
        )
        .await
        .map_err(|e| self.write_error(e))
    }

    /// `status.json` ahead of the store: the store lost what it had flushed.
    fn check_against_published(&self) -> Result<(), CheckpointError> {
        let Some(published) = Store::read_published(self.dir()) else {
            return Ok(());
        };
        let held = self
            .load()?
            .map_or(0, |c| c.position.last_seq())
            .max(self.stored_floor().unwrap_or(0));
        let shown = published.position.last_seq();
        if shown > held {
            return Err(CheckpointError::Damaged {
                dir: self.dir().to_path_buf(),
                detail: format!(
                    "{STATUS_FILE} shows a checkpoint at seq {shown}, the store holds {}",
                    if held == 0 {
                        "none".to_string()
                    } else {
                        format!("only seq {held}")
                    }
                ),
            });
        }
        Ok(())
    }

    pub(crate) fn write_error(&self, e: sled::Error) -> CheckpointError {
        write_error(self.dir(), e)
    }
}

/// A failed write to the store in `dir`: a full disk, or the disk refusing.
fn write_error(dir: &Path, e: sled::Error) -> CheckpointError {
    let (dir, detail) = (dir.to_path_buf(), e.to_string());
    match &e {
        sled::Error::Io(io) if is_disk_full(io) => DiskFull { dir, detail }.into(),
        _ => CheckpointError::Write { dir, detail },
    }
}

/// Microseconds since the Unix epoch.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Moves everything in `dir` (but earlier `damaged-*` folders) into a new `damaged-<unix
/// time>` folder there; returns it.
fn move_aside(dir: &Path) -> Result<PathBuf, CheckpointError> {
    let fail = |e: std::io::Error| CheckpointError::Write {
        dir: dir.to_path_buf(),
        detail: format!("moving the damaged store aside: {e}"),
    };
    let secs = now_micros() / 1_000_000;
    let mut aside = dir.join(format!("damaged-{secs}"));
    let mut n = 1;
    while aside.exists() {
        aside = dir.join(format!("damaged-{secs}-{n}"));
        n += 1;
    }
    std::fs::create_dir(&aside).map_err(fail)?;
    for entry in std::fs::read_dir(dir).map_err(fail)? {
        let entry = entry.map_err(fail)?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("damaged-") {
            continue;
        }
        std::fs::rename(entry.path(), aside.join(&name)).map_err(fail)?;
    }
    Ok(aside)
}

/// How binsync opens its sled store: a small cache, so that memory stays bounded whatever the
/// store holds.
pub(crate) fn sled_config(dir: &Path) -> sled::Config {
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
        sled::Error::Io(io) if is_disk_full(io) => DiskFull {
            dir: dir.to_path_buf(),
            detail,
        }
        .into(),
        // The disk refuses (EROFS after a journal abort, EIO, EACCES): the store may be
        // fine, and `--reset` would only renumber everything. A short or garbled file is damage.
        sled::Error::Io(io)
            if !matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            CheckpointError::Write {
                dir: dir.to_path_buf(),
                detail,
            }
        }
        _ => CheckpointError::Damaged {
            dir: dir.to_path_buf(),
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Partial, Position, ServerIdentity};
    use crate::gtid::{Flavor, GtidPos};

    fn identity() -> ServerIdentity {
        ServerIdentity {
            flavor: Flavor::Mariadb,
            server_id: 1,
            server_uuid: None,
            version: "10.11".into(),
        }
    }

    fn checkpoint(seq: u64) -> Checkpoint {
        Checkpoint {
            server: identity(),
            position: Position {
                file: "mariadb-bin.000002".into(),
                offset: 1234,
                gtid: Some(GtidPos::parse(Flavor::Mariadb, "0-1-77").unwrap()),
                seq,
                partial: Some(Partial {
                    txn: "0-1-78".into(),
                    next_row: 10,
                    seq: seq + 10,
                }),
            },
        }
    }

    #[tokio::test]
    async fn save_load_reset_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let cp = checkpoint(500);
        store.save(&cp).await.unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp));
        assert!(Store::read_published(dir.path()).is_some());
        let before = now_micros();
        store.reset().await.unwrap();
        assert_eq!(store.load().unwrap(), None);
        let floor = store.seq_floor().await.unwrap();
        assert!(floor >= before && floor < SEQ_LIMIT, "{floor}");
        assert!(Store::read_published(dir.path()).is_none());
        drop(store);
        // A reset store is not mistaken for a damaged one.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.seq_floor().await.unwrap(), floor);
    }

    #[tokio::test]
    async fn a_reset_keeps_a_last_seq_above_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let high = SEQ_LIMIT - 1000;
        store.save(&checkpoint(high)).await.unwrap();
        store.reset().await.unwrap();
        assert_eq!(store.seq_floor().await.unwrap(), high + 10);
    }

    #[tokio::test]
    async fn a_fresh_floor_is_the_wall_clock_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let before = now_micros();
        let store = Store::open(dir.path()).unwrap();
        let floor = store.seq_floor().await.unwrap();
        assert!(floor >= before && floor <= now_micros(), "{floor}");
        drop(store);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.seq_floor().await.unwrap(),
            floor,
            "same numbering on restart"
        );
    }

    #[test]
    fn a_disk_that_refuses_is_not_damage() {
        let dir = Path::new("/state");
        for refused in [
            std::io::Error::from_raw_os_error(30), // EROFS: a journal aborted
            std::io::Error::from_raw_os_error(5),  // EIO
            std::io::Error::from_raw_os_error(13), // EACCES
            std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem),
        ] {
            let err = classify_open_error(dir, sled::Error::Io(refused));
            assert!(matches!(err, CheckpointError::Write { .. }), "{err}");
            assert!(!err.to_string().contains("--reset"), "{err}");
        }
        for damage in [
            sled::Error::Io(std::io::ErrorKind::UnexpectedEof.into()),
            sled::Error::Corruption { at: None, bt: () },
        ] {
            let err = classify_open_error(dir, damage);
            assert!(matches!(err, CheckpointError::Damaged { .. }), "{err}");
        }
    }

    #[test]
    fn garbage_state_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("conf"), b"\x00\x01garbage").unwrap();
        std::fs::write(dir.path().join("db"), b"garbage garbage garbage").unwrap();
        let err = Store::open(dir.path()).err().expect("must fail");
        assert!(matches!(err, CheckpointError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("--reset"), "{err}");
        let file = dir.path().join("plainfile");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            Store::open(&file),
            Err(CheckpointError::NotADirectory { .. })
        ));
    }

    async fn saved_store(seq: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save(&checkpoint(seq)).await.unwrap();
        dir
    }

    /// A store whose records are all gone (the disk under it failed and took `status.json`
    /// too) is damage, not a fresh state dir: `seq` would start over.
    #[tokio::test]
    async fn a_store_that_lost_every_record_is_damage_not_a_new_one() {
        let dir = saved_store(900).await;
        std::fs::remove_file(dir.path().join(STATUS_FILE)).ok();
        {
            let db = sled_config(dir.path()).open().unwrap();
            db.clear().unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path()).err().expect("damaged");
        assert!(matches!(err, CheckpointError::Damaged { .. }), "{err}");
        // A new store, and one that never got further than its creation, open as before.
        let fresh = tempfile::tempdir().unwrap();
        drop(Store::open(fresh.path()).unwrap());
        let again = Store::open(fresh.path()).unwrap();
        assert_eq!(again.load().unwrap(), None);
    }

    #[tokio::test]
    async fn a_lost_db_file_is_damage_and_reset_moves_it_aside() {
        for how in ["delete", "empty"] {
            let dir = saved_store(700).await;
            let db = dir.path().join("db");
            match how {
                "delete" => std::fs::remove_file(&db).unwrap(),
                _ => std::fs::write(&db, b"").unwrap(),
            }
            let err = Store::open(dir.path()).err().expect("damaged");
            assert!(
                matches!(err, CheckpointError::Damaged { .. })
                    && err.to_string().contains("--reset"),
                "{how}: {err}"
            );
            let store = Store::open_reset(dir.path()).await.unwrap();
            assert_eq!(store.load().unwrap(), None);
            assert!(store.seq_floor().await.unwrap() >= 710);
            let aside: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("damaged-"))
                .collect();
            assert_eq!(aside.len(), 1, "{how}");
            assert!(aside[0].path().join("conf").exists());
        }
    }

    #[tokio::test]
    async fn a_status_file_ahead_of_the_store_is_damage() {
        let dir = saved_store(700).await;
        let status = dir.path().join(STATUS_FILE);
        let text = std::fs::read_to_string(&status).unwrap();
        std::fs::write(&status, text.replace("\"seq\":710", "\"seq\":910")).unwrap();
        let err = Store::open(dir.path()).err().expect("damaged");
        assert!(err.to_string().contains("seq 910"), "{err}");
        let store = Store::open_reset(dir.path()).await.unwrap();
        assert!(store.seq_floor().await.unwrap() > 910);
    }
}
