//! The receiver's state: an SQLite database in `--state-dir`, the contract's apply rule written
//! as SQL, and the counters behind `GET /stats` and `dump`.
//!
//! This file is meant to be copied: [`SCHEMA`], [`APPLY_KEYED`], [`APPLY_KEYLESS`],
//! [`APPLY_KEYLESS_READ`], [`APPLY_FLOOR`], [`DELETE_BELOW_FLOOR`] and [`APPLY_DDL`] are the
//! whole apply rule
//! (docs/sync-api.md quotes them), and [`Store::apply`] shows how a batch runs through them in
//! one transaction.
//!
//! Files in the state dir: `receiver.sqlite3` (with `-wal` and `-shm` while open) and
//! `receiver.lock`, which the open store holds locked so that `dump` and a second receiver
//! refuse a directory in use.
//!
//! Invariants:
//! - One writer connection, behind a mutex: batches are applied one at a time, each in one
//!   `BEGIN IMMEDIATE` transaction holding its rows, its `batches` record and the counters.
//!   [`Store::apply`] returns once that transaction is committed, in WAL mode with
//!   `synchronous = FULL`: the batch is on disk, and a caller may answer 2xx.
//! - Per (entity type, id) the `entities` row keeps the highest `seq` applied, deletes
//!   included (a tombstone is a row with `copies = 0`); a statement whose `seq` is not above
//!   it changes nothing, which is how a stale operation is told: `changes() = 0`.
//! - Per entity type, `floors` keeps the highest `seq` of a truncate or drop applied (contract
//!   v2). A row operation at or below it changes nothing (it is stale: the rows it touched are
//!   gone), and applying a floor deletes every `entities` row of the type below it, tombstones
//!   included (the floor guards what they guarded). Rows above it were written after the
//!   truncate and stay. Both sides are maxima, so any arrival order ends in the same state.
//!   A snapshot_end (contract v3) with `since` X is a floor at X, as a truncate at `seq` X
//!   would be, and removes the rows written at or below X: every row of the type the source
//!   still has was sent above X.
//! - A read (contract v3) is an upsert of the whole row, guarded like an insert.
//! - Per entity type, `definitions` keeps the newest ddl by `seq`, judged against the stored
//!   definition only: a floor does not make a ddl stale, since a truncate leaves the
//!   definition as it was (a floor of a drop tells a reader the table is gone when its `seq`
//!   is above the definition's).
//! - A table without a primary key (operations marked `"keyless": true`, `id` = all columns)
//!   keeps a count of identical rows in `copies`; the same `seq` guard makes a replay count
//!   nothing twice (see [`APPLY_KEYLESS`]).
//! - Counters changed outside a batch (rejections, faults) are kept in memory and written
//!   with the next batch, and at [`Store::close`].
//! - `batches` records are kept forever (a few dozen bytes each); they only short-cut exact
//!   re-sends, the per-entity `seq` is what makes replays harmless.
//! - A store of the previous format (`binsync-receiver 2`, before contract v2) is upgraded in
//!   place when opened: the two per-type tables are added, nothing else changes.
//! - Memory: SQLite's page cache is 8 MiB; a batch is read from the body it borrows.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{named_params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::batch::{compact_json, Batch, Op, OpKind};
use crate::ReceiveError;

/// The database file in the state dir.
pub const DB_FILE: &str = "receiver.sqlite3";
/// Held locked (flock) while a store is open.
const LOCK_FILE: &str = "receiver.lock";
/// `meta.format`: which layout the database holds. Version 1 was a sled store; version 2 had
/// no `floors` and `definitions` (contract v1 only).
const FORMAT: &str = "binsync-receiver 3";
/// The format upgraded in place to [`FORMAT`] by adding [`TYPE_TABLES`].
const FORMAT_2: &str = "binsync-receiver 2";

/// The per-entity-type tables of contract v2; also what upgrades a format 2 store.
macro_rules! type_tables {
    () => {
        "
CREATE TABLE floors (
    entity    TEXT    PRIMARY KEY,  -- entity type
    seq       INTEGER NOT NULL,     -- highest seq of a truncate or drop applied, or since of a
                                    -- snapshot_end: every operation on the type at or below it
                                    -- is stale
    op        TEXT    NOT NULL,     -- 'truncate', 'drop' or 'snapshot_end': which one set it
    db        TEXT    NOT NULL,
    tbl       TEXT    NOT NULL,
    statement TEXT    NOT NULL      -- '' for a snapshot_end
);
CREATE TABLE definitions (
    entity    TEXT    PRIMARY KEY,  -- entity type
    seq       INTEGER NOT NULL,     -- seq of the newest ddl applied
    db        TEXT    NOT NULL,
    tbl       TEXT    NOT NULL,
    statement TEXT    NOT NULL,
    columns   TEXT,                 -- JSON array of {name, type, nullable, json} in table order;
                                    -- NULL: no table under this name any more (renamed away)
    key_cols  TEXT                  -- JSON array of the primary key's columns ([]: none); NULL
                                    -- with columns
);
"
    };
}

/// The tables, created in one transaction on first start.
pub const SCHEMA: &str = concat!(
    "
CREATE TABLE entities (
    entity   TEXT    NOT NULL,  -- entity type: the name of the list the operation is in
    id       TEXT    NOT NULL,  -- the operation's `id`, JSON text without whitespace, key order kept
    seq      INTEGER NOT NULL,  -- highest seq applied to this row, deletes included
    copies   INTEGER NOT NULL,  -- rows with this id at the source; 0: deleted (a tombstone).
                                -- 0 or 1 for a table with a key; any count for a keyless one
    keyless  INTEGER NOT NULL,  -- 1: written by operations marked \"keyless\": true
    row_json TEXT,              -- the row, column -> value (JSON); NULL when copies = 0
    PRIMARY KEY (entity, id)
);
CREATE TABLE batches (
    batch_id    TEXT    PRIMARY KEY,
    fingerprint INTEGER NOT NULL,  -- FNV-1a 64 of the body: tells a re-send from a regrouped batch
    applied_at  INTEGER NOT NULL   -- unix ms
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,  -- 'format', 'stats'
    value TEXT NOT NULL
);",
    type_tables!()
);

/// Adds [`SCHEMA`]'s per-type tables to a format 2 store.
const TYPE_TABLES: &str = type_tables!();

/// The apply rule for a table with a primary key: an upsert guarded by `seq`.
///
/// insert, update, read: `:copies` = 1, `:row` = `after`; delete: `:copies` = 0, `:row` = NULL (the
/// tombstone keeps the delete's `seq`, so a replayed older insert stays deleted). No row
/// changed (`changes() = 0`): the stored `seq` is as high or higher, or the type's floor (a
/// truncate or drop) is, and the operation is stale.
pub const APPLY_KEYED: &str = "
INSERT INTO entities (entity, id, seq, copies, keyless, row_json)
SELECT :entity, :id, :seq, :copies, 0, :row
 WHERE :seq > (SELECT coalesce(max(seq), 0) FROM floors WHERE entity = :entity)
ON CONFLICT (entity, id) DO UPDATE
   SET seq = excluded.seq, copies = excluded.copies, keyless = 0, row_json = excluded.row_json
 WHERE entities.seq < excluded.seq";

/// The apply rule for a table without a primary key (`"keyless": true`, `id` = all columns):
/// a count of identical rows, guarded by `seq` like [`APPLY_KEYED`].
///
/// insert: `:remove` 0, `:add` 1, `:row` = `after`; delete: `:remove` 1, `:add` 0, `:row` =
/// `before` (a delete at zero stays at zero and still leaves its `seq`); an update is a delete
/// of its before-row and an insert of its after-row, both with its `seq` (one statement with
/// `:remove` 1, `:add` 1 when they are the same row). The guard: binsync sends every
/// operation on one id in `seq` order, so an operation not above the stored `seq` was counted
/// already (a retry, a replay after a crash) and changes nothing; so does one at or below the
/// type's floor, like [`APPLY_KEYED`].
pub const APPLY_KEYLESS: &str = "
INSERT INTO entities (entity, id, seq, copies, keyless, row_json)
SELECT :entity, :id, :seq, :add, 1, CASE WHEN :add > 0 THEN :row END
 WHERE :seq > (SELECT coalesce(max(seq), 0) FROM floors WHERE entity = :entity)
ON CONFLICT (entity, id) DO UPDATE
   SET seq = excluded.seq,
       copies = max(entities.copies - :remove, 0) + :add,
       keyless = 1,
       row_json = CASE WHEN max(entities.copies - :remove, 0) + :add > 0 THEN :row END
 WHERE entities.seq < excluded.seq";

/// A read (contract v3) of a table without a primary key: the snapshot pages such a table by
/// a unique key, so an identity is read at most once and has exactly one row as of the read.
/// It sets the count to 1 (an upsert, like [`APPLY_KEYED`]), whatever copies were counted
/// before: adding one, as an insert does, would count twice a row that a binlog insert after
/// the snapshot began, or an earlier life of the sender, counted already. Same guards.
pub const APPLY_KEYLESS_READ: &str = "
INSERT INTO entities (entity, id, seq, copies, keyless, row_json)
SELECT :entity, :id, :seq, 1, 1, :row
 WHERE :seq > (SELECT coalesce(max(seq), 0) FROM floors WHERE entity = :entity)
ON CONFLICT (entity, id) DO UPDATE
   SET seq = excluded.seq, copies = 1, keyless = 1, row_json = excluded.row_json
 WHERE entities.seq < excluded.seq";

/// truncate, drop (contract v2): raise the entity type's floor to the operation's `seq`;
/// snapshot_end (contract v3): to its `since` (then [`DELETE_BELOW_FLOOR`] runs with
/// `since` plus one: a row written at `since` goes too). `:op` is `truncate`, `drop` or `snapshot_end`
/// (whose `:statement` is ''). No row changed: the floor is as high or higher already, the
/// operation is stale (the rows it removes are gone). Otherwise run [`DELETE_BELOW_FLOOR`].
pub const APPLY_FLOOR: &str = "
INSERT INTO floors (entity, seq, op, db, tbl, statement)
VALUES (:entity, :seq, :op, :db, :tbl, :statement)
ON CONFLICT (entity) DO UPDATE
   SET seq = excluded.seq, op = excluded.op, db = excluded.db, tbl = excluded.tbl,
       statement = excluded.statement
 WHERE floors.seq < excluded.seq";

/// After [`APPLY_FLOOR`] changed the floor: every row of the type last written below it is
/// gone, tombstones and keyless counts included (the floor now guards what a tombstone
/// guarded). A row written above it (an insert after the truncate that arrived first) stays.
pub const DELETE_BELOW_FLOOR: &str = "
DELETE FROM entities WHERE entity = :entity AND seq < :seq";

/// ddl (contract v2): the entity type's definition, the newest by `seq`. `:columns` and
/// `:key_cols` are the JSON text of `columns` and `key`, both NULL when the table no longer
/// exists under this name. Rows are kept. No row changed: a newer definition is stored, the
/// operation is stale. A floor does not make a ddl stale (a truncate keeps the definition).
pub const APPLY_DDL: &str = "
INSERT INTO definitions (entity, seq, db, tbl, statement, columns, key_cols)
VALUES (:entity, :seq, :db, :tbl, :statement, :columns, :key_cols)
ON CONFLICT (entity) DO UPDATE
   SET seq = excluded.seq, db = excluded.db, tbl = excluded.tbl,
       statement = excluded.statement, columns = excluded.columns, key_cols = excluded.key_cols
 WHERE definitions.seq < excluded.seq";

const FIND_BATCH: &str = "SELECT fingerprint FROM batches WHERE batch_id = ?1";
const RECORD_BATCH: &str = "
INSERT INTO batches (batch_id, fingerprint, applied_at) VALUES (?1, ?2, ?3)
ON CONFLICT (batch_id) DO UPDATE
   SET fingerprint = excluded.fingerprint, applied_at = excluded.applied_at";
const SAVE_STATS: &str = "
INSERT INTO meta (key, value) VALUES ('stats', ?1)
ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// The counters of `GET /stats` and `dump`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Batches answered 2xx (re-sends included).
    pub batches: u64,
    /// Of those, re-sends of a batch already applied (same batch_id and body).
    pub batches_duplicate: u64,
    /// Operations in batches answered 2xx, and messages applied from a JetStream stream
    /// (`receive --from nats://`; `batches` stays 0 there).
    pub ops_received: u64,
    /// Operations that changed the state.
    pub ops_applied: u64,
    /// Operations dropped because their entity already had that seq or a higher one, or its
    /// type a floor (truncate, drop) or definition (ddl) at or above it.
    pub ops_stale: u64,
    /// POSTs answered with a 4xx (bad body, auth, poison, size, depth, media type).
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
    /// The one writer; None in `discard` mode: batches are counted, nothing is kept.
    conn: Option<Mutex<Connection>>,
    /// Held locked while the store is open; released when dropped (after `conn`).
    _lock: Option<File>,
    dir: PathBuf,
    stats: Mutex<Stats>,
}

impl Store {
    /// Opens (creating if needed) the receiver's store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, ReceiveError> {
        Self::open_inner(dir, true)
    }

    /// Opens a store that must already exist (for `dump`).
    pub fn open_existing(dir: &Path) -> Result<Store, ReceiveError> {
        Self::open_inner(dir, false)
    }

    pub fn discarding() -> Store {
        Store {
            conn: None,
            _lock: None,
            dir: PathBuf::new(),
            stats: Mutex::new(Stats::default()),
        }
    }

    /// `discard` mode: nothing is stored.
    pub fn is_discarding(&self) -> bool {
        self.conn.is_none()
    }

    fn open_inner(dir: &Path, create: bool) -> Result<Store, ReceiveError> {
        let foreign = |detail: &str| ReceiveError::Foreign {
            dir: dir.to_path_buf(),
            detail: detail.into(),
        };
        if dir.exists() && !dir.is_dir() {
            return Err(foreign("it is a file, not a directory"));
        }
        let path = dir.join(DB_FILE);
        if !path.exists() {
            // sled's files: binsync keeps its checkpoint in sled, and so did this receiver
            // before it stored into SQLite.
            if dir.join("conf").exists() || dir.join("db").exists() {
                return Err(foreign(
                    "it holds a sled store: binsync's own --state-dir, or the state of a receiver from before it stored into SQLite (start that one on an empty --state-dir and re-send from binsync)",
                ));
            }
            if !create {
                return Err(ReceiveError::NoState {
                    dir: dir.to_path_buf(),
                });
            }
            std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
        }
        let lock = take_lock(dir)?;
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let mut conn = Connection::open_with_flags(&path, flags).map_err(|e| db_error(dir, e))?;
        let setup = |conn: &Connection| -> rusqlite::Result<String> {
            // WAL: readers never block the writer; FULL: a commit is on disk when it returns.
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            conn.execute_batch(
                "PRAGMA synchronous = FULL;
                 PRAGMA cache_size = -8192;
                 PRAGMA journal_size_limit = 67108864;",
            )?;
            Ok(mode)
        };
        let mode = setup(&conn).map_err(|e| db_error(dir, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(write_error(
                dir,
                format!("SQLite could not switch to WAL mode (it stays in `{mode}`)"),
            ));
        }
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(|e| db_error(dir, e))?;
        if tables == 0 {
            if !create {
                return Err(ReceiveError::NoState {
                    dir: dir.to_path_buf(),
                });
            }
            let tx = conn.transaction().map_err(|e| db_error(dir, e))?;
            tx.execute_batch(SCHEMA).map_err(|e| db_error(dir, e))?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('format', ?1)",
                [FORMAT],
            )
            .map_err(|e| db_error(dir, e))?;
            tx.commit().map_err(|e| db_error(dir, e))?;
        }
        let format: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|_| foreign("it holds an SQLite database written by something else"))?;
        match format {
            Some(f) if f == FORMAT => {}
            Some(f) if f == FORMAT_2 => {
                // A receiver from before contract v2: add its per-type tables, keep the rest.
                let upgrade = |conn: &mut Connection| -> rusqlite::Result<()> {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    tx.execute_batch(TYPE_TABLES)?;
                    tx.execute("UPDATE meta SET value = ?1 WHERE key = 'format'", [FORMAT])?;
                    tx.commit()
                };
                upgrade(&mut conn).map_err(|e| db_error(dir, e))?;
                tracing::info!(dir = %dir.display(), "receiver store upgraded to {FORMAT} (contract v2: floors and definitions)");
            }
            Some(f) if f.starts_with("binsync-receiver ") => {
                return Err(ReceiveError::TooNew {
                    dir: dir.to_path_buf(),
                    format: f,
                })
            }
            _ => {
                return Err(foreign(
                    "it holds an SQLite database written by something else",
                ))
            }
        }
        let stats: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'stats'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| db_error(dir, e))?;
        let stats = match stats {
            Some(text) => serde_json::from_str(&text).map_err(|e| ReceiveError::Corrupt {
                dir: dir.to_path_buf(),
                detail: format!("counters unreadable: {e}"),
            })?,
            None => Stats::default(),
        };
        Ok(Store {
            conn: Some(Mutex::new(conn)),
            _lock: Some(lock),
            dir: dir.to_path_buf(),
            stats: Mutex::new(stats),
        })
    }

    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    /// Changes counters outside a batch (rejections, faults); written with the next batch.
    pub fn count(&self, change: impl FnOnce(&mut Stats)) {
        change(&mut lock(&self.stats));
    }

    /// Applies a batch with the apply rule in one transaction and commits it (durably);
    /// blocking (call off the async threads). On an error nothing of it is applied.
    pub fn apply(&self, batch: &Batch<'_>) -> Result<Applied, ReceiveError> {
        let Some(conn) = &self.conn else {
            self.count(|s| {
                s.batches += 1;
                s.ops_received += batch.count;
            });
            return Ok(Applied::default());
        };
        let db = |e| db_error(&self.dir, e);
        let mut conn = lock(conn);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        // The fingerprint is a u64 stored bit for bit in an INTEGER: compared, never ordered.
        let fingerprint = batch.fingerprint as i64;
        let seen: Option<i64> = tx
            .query_row(FIND_BATCH, [&*batch.batch_id], |r| r.get(0))
            .optional()
            .map_err(db)?;
        if seen == Some(fingerprint) {
            drop(tx);
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
        if seen.is_some() {
            // Same id, other content: a sender that regrouped its batches after a restart.
            // The apply rule decides per operation, as for any other batch.
            tracing::info!(batch_id = %batch.batch_id, "batch id seen before with other content; applying operation by operation");
        }
        let mut result = Applied::default();
        for (entity, ops) in &batch.entities {
            for op in ops {
                if apply_op(&tx, entity, op).map_err(db)? {
                    result.applied += 1;
                } else {
                    result.stale += 1;
                }
            }
        }
        tx.execute(
            RECORD_BATCH,
            rusqlite::params![&*batch.batch_id, fingerprint, unix_ms()],
        )
        .map_err(db)?;
        let mut stats = lock(&self.stats);
        let mut next = stats.clone();
        next.batches += 1;
        next.ops_received += batch.count;
        next.ops_applied += result.applied;
        next.ops_stale += result.stale;
        tx.execute(SAVE_STATS, [stats_json(&next)]).map_err(db)?;
        tx.commit().map_err(db)?;
        *stats = next;
        Ok(result)
    }

    /// Applies operations that came one by one (a JetStream stream's messages), in one
    /// transaction with the counters, and commits it (durably); blocking (call off the async
    /// threads). Unlike [`Store::apply`] no batch is recorded: the per-entity `seq` alone makes
    /// a redelivery harmless. `pin` is a `meta` entry written in the same transaction if not
    /// there yet (the stream's source, see [`Store::meta`]). On an error nothing is applied.
    pub fn apply_ops(
        &self,
        ops: &[(&str, &Op<'_>)],
        pin: Option<(&str, &str)>,
    ) -> Result<Applied, ReceiveError> {
        let Some(conn) = &self.conn else {
            self.count(|s| s.ops_received += ops.len() as u64);
            return Ok(Applied::default());
        };
        let db = |e| db_error(&self.dir, e);
        let mut conn = lock(conn);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let mut result = Applied::default();
        for (entity, op) in ops {
            if apply_op(&tx, entity, op).map_err(db)? {
                result.applied += 1;
            } else {
                result.stale += 1;
            }
        }
        if let Some((key, value)) = pin {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                [key, value],
            )
            .map_err(db)?;
        }
        let mut stats = lock(&self.stats);
        let mut next = stats.clone();
        next.ops_received += ops.len() as u64;
        next.ops_applied += result.applied;
        next.ops_stale += result.stale;
        tx.execute(SAVE_STATS, [stats_json(&next)]).map_err(db)?;
        tx.commit().map_err(db)?;
        *stats = next;
        Ok(result)
    }

    /// A `meta` entry other than `format` and `stats` (None in `discard` mode).
    pub fn meta(&self, key: &str) -> Result<Option<String>, ReceiveError> {
        let Some(conn) = &self.conn else {
            return Ok(None);
        };
        lock(conn)
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| db_error(&self.dir, e))
    }

    /// Writes the counters (those changed outside batches since the last one).
    pub fn save_counters(&self) -> Result<(), ReceiveError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let json = stats_json(&self.stats());
        lock(conn)
            .execute(SAVE_STATS, [json])
            .map(|_| ())
            .map_err(|e| db_error(&self.dir, e))
    }

    /// Writes the counters and closes the database (SQLite folds the WAL back into the file),
    /// then releases the state dir's lock, so that `dump` works as soon as this returns.
    pub fn close(self) -> Result<(), ReceiveError> {
        let saved = self.save_counters();
        if let Some(conn) = self.conn {
            let conn = conn.into_inner().unwrap_or_else(|p| p.into_inner());
            if let Err((_, e)) = conn.close() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "closing the receiver's database failed");
            }
        }
        saved
    }

    /// The whole state as JSON (see [`crate::dump`]).
    pub fn dump(&self) -> Result<Value, ReceiveError> {
        let mut entities = Map::new();
        if let Some(conn) = &self.conn {
            let corrupt = |detail: String| ReceiveError::Corrupt {
                dir: self.dir.clone(),
                detail,
            };
            let conn = lock(conn);
            let mut rows = conn
                .prepare(
                    "SELECT entity, id, seq, copies, keyless, row_json FROM entities ORDER BY entity, id",
                )
                .map_err(|e| db_error(&self.dir, e))?;
            let mut rows = rows.query([]).map_err(|e| db_error(&self.dir, e))?;
            while let Some(row) = rows.next().map_err(|e| db_error(&self.dir, e))? {
                let read = |e: rusqlite::Error| corrupt(format!("an entities row: {e}"));
                let entity: String = row.get(0).map_err(read)?;
                let id: String = row.get(1).map_err(read)?;
                let seq: i64 = row.get(2).map_err(read)?;
                let copies: i64 = row.get(3).map_err(read)?;
                let keyless: bool = row.get(4).map_err(read)?;
                let values: Option<String> = row.get(5).map_err(read)?;
                let mut obj = Map::new();
                obj.insert("seq".into(), seq.into());
                obj.insert("deleted".into(), (copies == 0).into());
                if keyless {
                    obj.insert("copies".into(), copies.into());
                }
                if copies > 0 {
                    let text = values.ok_or_else(|| {
                        corrupt(format!("{entity} {id} is present but has no values"))
                    })?;
                    let values: Value = serde_json::from_str(&text)
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
        let types = match &self.conn {
            Some(conn) => self.dump_types(&lock(conn))?,
            None => Map::new(),
        };
        let stats = serde_json::to_value(self.stats()).expect("plain struct serializes");
        let mut out = serde_json::json!({"stats": stats, "entities": entities});
        // Only when a v2 operation was applied: a v1 receiver's dump stays as it was.
        if !types.is_empty() {
            out["types"] = Value::Object(types);
        }
        Ok(out)
    }

    /// Per entity type, its floor (`{"seq", "op", "db", "table", "statement"}`, no `statement`
    /// when a snapshot_end set it, `seq` then its `since`) and its newest
    /// definition (`{"seq", "db", "table", "statement", "columns", "key"}`), where it has one.
    fn dump_types(&self, conn: &Connection) -> Result<Map<String, Value>, ReceiveError> {
        let corrupt = |detail: String| ReceiveError::Corrupt {
            dir: self.dir.clone(),
            detail,
        };
        let db = |e| db_error(&self.dir, e);
        let mut types = Map::new();
        let mut put = |entity: String, what: &str, v: Value| {
            types
                .entry(entity)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("inserted as an object")
                .insert(what.into(), v);
        };
        let mut floors = conn
            .prepare("SELECT entity, seq, op, db, tbl, statement FROM floors ORDER BY entity")
            .map_err(db)?;
        let mut rows = floors.query([]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let read = |e: rusqlite::Error| corrupt(format!("a floors row: {e}"));
            let entity: String = row.get(0).map_err(read)?;
            let mut floor = serde_json::json!({
                "seq": row.get::<_, i64>(1).map_err(read)?,
                "op": row.get::<_, String>(2).map_err(read)?,
                "db": row.get::<_, String>(3).map_err(read)?,
                "table": row.get::<_, String>(4).map_err(read)?,
            });
            // A snapshot_end has no statement.
            let statement: String = row.get(5).map_err(read)?;
            if floor["op"] != "snapshot_end" {
                floor["statement"] = Value::String(statement);
            }
            put(entity, "floor", floor);
        }
        let mut defs = conn
            .prepare(
                "SELECT entity, seq, db, tbl, statement, columns, key_cols FROM definitions ORDER BY entity",
            )
            .map_err(db)?;
        let mut rows = defs.query([]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let read = |e: rusqlite::Error| corrupt(format!("a definitions row: {e}"));
            let entity: String = row.get(0).map_err(read)?;
            let json = |i: usize, name: &str| -> Result<Value, ReceiveError> {
                match row.get::<_, Option<String>>(i).map_err(read)? {
                    None => Ok(Value::Null),
                    Some(text) => serde_json::from_str(&text)
                        .map_err(|e| corrupt(format!("{name} of the definition of {entity}: {e}"))),
                }
            };
            let def = serde_json::json!({
                "seq": row.get::<_, i64>(1).map_err(read)?,
                "db": row.get::<_, String>(2).map_err(read)?,
                "table": row.get::<_, String>(3).map_err(read)?,
                "statement": row.get::<_, String>(4).map_err(read)?,
                "columns": json(5, "columns")?,
                "key": json(6, "key")?,
            });
            put(entity, "definition", def);
        }
        Ok(types)
    }
}

/// One operation through the apply rule; false when it was stale (changed nothing).
fn apply_op(tx: &rusqlite::Transaction<'_>, entity: &str, op: &Op<'_>) -> rusqlite::Result<bool> {
    // batch::parse refused any seq above i64::MAX.
    let seq = op.seq as i64;
    match op.kind {
        OpKind::Truncate | OpKind::Drop | OpKind::SnapshotEnd => {
            // A snapshot_end sets the floor to its `since` X (batch::parse checked X is below
            // its own seq, so X + 1 fits) and removes the rows written at or below X: none of
            // them was sent by the snapshot, and an operation at X is stale under the floor,
            // so keeping a row at X would depend on arrival order. A truncate's own seq is
            // its own: no row is at it.
            let (floor, below) = match op.since {
                Some(x) => (x as i64, x as i64 + 1),
                None => (seq, seq),
            };
            let raised = tx.prepare_cached(APPLY_FLOOR)?.execute(named_params! {
                ":entity": entity, ":seq": floor, ":op": op.kind.as_str(), ":db": &*op.db,
                ":tbl": &*op.table, ":statement": op.statement.as_deref().unwrap_or_default(),
            })?;
            if raised > 0 {
                tx.prepare_cached(DELETE_BELOW_FLOOR)?
                    .execute(named_params! { ":entity": entity, ":seq": below })?;
            }
            return Ok(raised > 0);
        }
        OpKind::Ddl => {
            let def = op.definition.as_ref();
            let changed = tx.prepare_cached(APPLY_DDL)?.execute(named_params! {
                ":entity": entity, ":seq": seq, ":db": &*op.db, ":tbl": &*op.table,
                ":statement": op.statement.as_deref().unwrap_or_default(),
                ":columns": def.map(|d| d.columns.as_str()),
                ":key_cols": def.map(|d| d.key.as_str()),
            })?;
            return Ok(changed > 0);
        }
        OpKind::Insert | OpKind::Update | OpKind::Delete | OpKind::Read => {}
    }
    if !op.keyless {
        let (copies, row) = match op.kind {
            OpKind::Delete => (0, None),
            _ => (1, Some(image(op.after))),
        };
        let changed = tx.prepare_cached(APPLY_KEYED)?.execute(named_params! {
            ":entity": entity, ":id": &*op.id, ":seq": seq, ":copies": copies, ":row": row,
        })?;
        return Ok(changed > 0);
    }
    let count = |id: &str, remove: i64, add: i64, row: &str| -> rusqlite::Result<bool> {
        let changed = tx.prepare_cached(APPLY_KEYLESS)?.execute(named_params! {
            ":entity": entity, ":id": id, ":seq": seq, ":remove": remove, ":add": add,
            ":row": row,
        })?;
        Ok(changed > 0)
    };
    match op.kind {
        OpKind::Read => {
            let changed = tx
                .prepare_cached(APPLY_KEYLESS_READ)?
                .execute(named_params! {
                    ":entity": entity, ":id": &*op.id, ":seq": seq, ":row": image(op.after),
                })?;
            Ok(changed > 0)
        }
        OpKind::Insert => count(&op.id, 0, 1, image(op.after)),
        OpKind::Delete => count(&op.id, 1, 0, image(op.before)),
        _ => {
            // An update. The before-row's identity: all its columns, written as binsync
            // writes an id.
            let before_id = compact_json(image(op.before));
            if before_id == op.id {
                count(&op.id, 1, 1, image(op.after))
            } else {
                let removed = count(&before_id, 1, 0, image(op.before))?;
                let added = count(&op.id, 0, 1, image(op.after))?;
                Ok(removed || added)
            }
        }
    }
}

/// An image's JSON text (batch::parse made sure the operation's kind has it).
fn image(v: Option<&serde_json::value::RawValue>) -> &str {
    v.map_or("{}", |v| v.get())
}

/// Locks the state dir for this process; a second store (a running receiver, `dump`) fails.
fn take_lock(dir: &Path) -> Result<File, ReceiveError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| write_error(dir, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ReceiveError::Locked {
            dir: dir.to_path_buf(),
            detail: format!("{} is locked", path.display()),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(write_error(dir, e)),
    }
}

fn stats_json(stats: &Stats) -> String {
    serde_json::to_string(stats).expect("plain struct serializes")
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A panic elsewhere must not wedge the receiver: the data behind these locks stays valid
/// (an open transaction of a panicking apply rolls back when dropped).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_error(dir: &Path, detail: impl std::fmt::Display) -> ReceiveError {
    ReceiveError::Write {
        dir: dir.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// A damaged file is corrupt; anything else (disk full, I/O, permissions) a write failure,
/// which a retry may get past.
fn db_error(dir: &Path, e: rusqlite::Error) -> ReceiveError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => ReceiveError::Corrupt {
            dir: dir.to_path_buf(),
            detail: e.to_string(),
        },
        _ => write_error(dir, e),
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
        envelope(batch_id, "products", ops)
    }

    /// Version 3 when an operation is a read or snapshot_end, else version 2 when one has no
    /// `id` (a ddl, truncate or drop), else version 1.
    fn envelope(batch_id: &str, entity: &str, ops: Vec<Value>) -> Vec<u8> {
        let seqs = ops.iter().map(|o| o["seq"].as_u64().unwrap());
        let version = if ops
            .iter()
            .any(|o| o["op"] == "read" || o["op"] == "snapshot_end")
        {
            3
        } else if ops.iter().all(|o| o.get("id").is_some()) {
            1
        } else {
            2
        };
        serde_json::to_vec(
            &serde_json::json!({"version": version, "batch_id": batch_id,
            "source": {"flavor": "mysql", "server_id": 1, "server_uuid": "u"},
            "first_seq": seqs.clone().min(), "last_seq": seqs.max(), "count": ops.len(),
            "entities": {entity: ops}}),
        )
        .unwrap()
    }

    /// An operation on the keyless table `tags (n INT, s TEXT)`: `id` is the whole row.
    fn keyless(
        seq: u64,
        kind: &str,
        before: Option<(i64, &str)>,
        after: Option<(i64, &str)>,
    ) -> Value {
        let row = |(n, s): (i64, &str)| serde_json::json!({"n": n, "s": s});
        let id = row(after.or(before).unwrap());
        let mut v = serde_json::json!({"seq": seq, "op": kind, "db": "shop", "table": "tags",
            "entity": "tags", "keyless": true, "id": id, "gtid": null,
            "ts": "2026-11-24T07:37:31Z", "row": 0, "file": "f.000001", "offset": 4});
        if let Some(b) = before {
            v["before"] = row(b);
        }
        if let Some(a) = after {
            v["after"] = row(a);
        }
        if kind == "update" {
            v["changed"] = serde_json::json!(["s"]);
        }
        v
    }

    fn apply(store: &Store, text: &[u8]) -> Applied {
        store.apply(&batch::parse(text, None).unwrap()).unwrap()
    }

    /// `{"<id>": copies}` of the live keyless rows.
    fn copies(store: &Store) -> Value {
        let dump = store.dump().unwrap();
        let mut out = Map::new();
        for (id, e) in dump["entities"]["tags"].as_object().into_iter().flatten() {
            if e["deleted"] == false {
                out.insert(id.clone(), e["copies"].clone());
            }
        }
        Value::Object(out)
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

    /// The case: `INSERT (1,'x'),(1,'x'),(2,'y')`, then `UPDATE ... LIMIT 1` and
    /// `DELETE ... LIMIT 1` on a table without a primary key. binsync sends the update of a
    /// keyless row as a delete and an insert (its id, all columns, changes).
    #[test]
    fn identical_rows_of_a_keyless_table_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let x = Some((1, "x"));
        let inserts = envelope(
            "a",
            "tags",
            vec![
                keyless(1, "insert", None, x),
                keyless(2, "insert", None, x),
                keyless(3, "insert", None, Some((2, "y"))),
            ],
        );
        assert_eq!(apply(&store, &inserts).applied, 3);
        // UPDATE tags SET s = 'z' WHERE n = 1 LIMIT 1
        let update = envelope(
            "b",
            "tags",
            vec![
                keyless(4, "delete", x, None),
                keyless(5, "insert", None, Some((1, "z"))),
            ],
        );
        assert_eq!(apply(&store, &update).applied, 2);
        // DELETE FROM tags WHERE n = 2 LIMIT 1
        let delete = envelope(
            "c",
            "tags",
            vec![keyless(6, "delete", Some((2, "y")), None)],
        );
        assert_eq!(apply(&store, &delete).applied, 1);
        let expected = serde_json::json!({"{\"n\":1,\"s\":\"x\"}": 1, "{\"n\":1,\"s\":\"z\"}": 1});
        assert_eq!(copies(&store), expected);

        // Replays, regrouped (as after a sender crash), count nothing twice.
        let replay = envelope(
            "d",
            "tags",
            vec![
                keyless(2, "insert", None, x),
                keyless(3, "insert", None, Some((2, "y"))),
                keyless(4, "delete", x, None),
            ],
        );
        let r = apply(&store, &replay);
        assert_eq!((r.applied, r.stale), (0, 3));
        assert!(apply(&store, &inserts).duplicate);
        assert_eq!(copies(&store), expected);
        // The deleted row stays a tombstone with its seq.
        let dump = store.dump().unwrap();
        assert_eq!(
            dump["entities"]["tags"]["{\"n\":2,\"s\":\"y\"}"],
            serde_json::json!({"seq": 6, "deleted": true, "copies": 0})
        );
    }

    #[test]
    fn a_keyless_update_moves_one_copy_and_a_delete_at_zero_stays_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (x, z) = (Some((1, "x")), Some((1, "z")));
        let ops = vec![
            keyless(1, "insert", None, x),
            keyless(2, "insert", None, x),
            // An update op (another sender than binsync may send one): -1 before, +1 after.
            keyless(3, "update", x, z),
        ];
        assert_eq!(apply(&store, &envelope("a", "tags", ops)).applied, 3);
        assert_eq!(
            copies(&store),
            serde_json::json!({"{\"n\":1,\"s\":\"x\"}": 1, "{\"n\":1,\"s\":\"z\"}": 1})
        );
        let ops = vec![
            keyless(4, "delete", z, None),
            keyless(5, "delete", z, None),
            keyless(6, "insert", None, z),
        ];
        assert_eq!(apply(&store, &envelope("b", "tags", ops)).applied, 3);
        assert_eq!(
            copies(&store),
            serde_json::json!({"{\"n\":1,\"s\":\"x\"}": 1, "{\"n\":1,\"s\":\"z\"}": 1})
        );
    }

    /// A row operation on `products` (id, price), as [`body`] writes them.
    fn row(seq: u64, kind: &str, id: i64, price: i64) -> Value {
        let text = body("x", &[(seq, kind, id, price)]);
        let v: Value = serde_json::from_slice(&text).unwrap();
        v["entities"]["products"][0].clone()
    }

    /// A ddl, truncate or drop of `products` (contract v2).
    fn on_type(seq: u64, kind: &str, entity: &str) -> Value {
        let mut v = serde_json::json!({"seq": seq, "op": kind, "db": "shop", "table": entity,
            "entity": entity, "gtid": null, "ts": "2026-11-24T07:37:31Z", "file": "f.000001",
            "offset": 4, "statement": format!("{} {entity} at {seq}", kind.to_uppercase())});
        if kind == "ddl" {
            v["columns"] = serde_json::json!([
                {"name": "id", "type": "int(11)", "nullable": false, "json": false},
                {"name": "price", "type": "int(11)", "nullable": true, "json": false}]);
            v["key"] = serde_json::json!(["id"]);
        }
        v
    }

    /// Live rows of `products`: `{"<id>": price}`.
    fn prices(store: &Store) -> Value {
        let dump = store.dump().unwrap();
        let mut out = Map::new();
        for (id, e) in dump["entities"]["products"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if e["deleted"] == false {
                out.insert(id.clone(), e["values"]["price"].clone());
            }
        }
        Value::Object(out)
    }

    fn counted(a: Applied) -> (u64, u64) {
        (a.applied, a.stale)
    }

    #[test]
    fn a_truncate_arriving_after_a_newer_insert_keeps_it_and_removes_what_came_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ops = vec![
            row(1, "insert", 1, 10),
            row(2, "insert", 2, 20),
            row(3, "delete", 2, 0),
        ];
        apply(&store, &envelope("a", "products", ops));
        // Seq 5, read after the truncate at 4, travelled in another lane and came first.
        apply(
            &store,
            &envelope("b", "products", vec![row(5, "insert", 3, 30)]),
        );
        let t = apply(
            &store,
            &envelope("c", "products", vec![on_type(4, "truncate", "products")]),
        );
        assert_eq!(counted(t), (1, 0));
        assert_eq!(prices(&store), serde_json::json!({"{\"id\":3}": 30}));
        let dump = store.dump().unwrap();
        // The tombstone of id 2 went too: the floor guards what it guarded.
        assert_eq!(dump["entities"]["products"].as_object().unwrap().len(), 1);
        assert_eq!(
            dump["types"]["products"]["floor"],
            serde_json::json!({"seq": 4, "op": "truncate", "db": "shop", "table": "products",
                "statement": "TRUNCATE products at 4"})
        );
        // An older insert still on its way is stale, and so is the truncate again.
        let late = apply(
            &store,
            &envelope(
                "d",
                "products",
                vec![row(2, "insert", 2, 20), on_type(4, "truncate", "products")],
            ),
        );
        assert_eq!(counted(late), (0, 2));
        assert_eq!(prices(&store), serde_json::json!({"{\"id\":3}": 30}));
    }

    #[test]
    fn a_truncate_arriving_before_older_operations_makes_them_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            counted(apply(
                &store,
                &envelope("a", "products", vec![on_type(10, "truncate", "products")])
            )),
            (1, 0)
        );
        let older = vec![
            row(5, "insert", 1, 10),
            row(6, "update", 1, 11),
            row(7, "delete", 1, 0),
        ];
        assert_eq!(
            counted(apply(&store, &envelope("b", "products", older))),
            (0, 3)
        );
        assert_eq!(store.dump().unwrap()["entities"], serde_json::json!({}));
        // Newer than the floor: applied as usual.
        let newer = vec![row(11, "insert", 1, 12), row(12, "insert", 2, 20)];
        assert_eq!(
            counted(apply(&store, &envelope("c", "products", newer))),
            (2, 0)
        );
        assert_eq!(
            prices(&store),
            serde_json::json!({"{\"id\":1}": 12, "{\"id\":2}": 20})
        );
        // A lower floor changes nothing; a drop above it raises it and takes the rows.
        let lower = apply(
            &store,
            &envelope("d", "products", vec![on_type(8, "drop", "products")]),
        );
        assert_eq!(counted(lower), (0, 1));
        assert_eq!(prices(&store).as_object().unwrap().len(), 2);
        let drop = apply(
            &store,
            &envelope("e", "products", vec![on_type(13, "drop", "products")]),
        );
        assert_eq!(counted(drop), (1, 0));
        assert_eq!(prices(&store), serde_json::json!({}));
        let floor = &store.dump().unwrap()["types"]["products"]["floor"];
        assert_eq!(
            (floor["seq"].clone(), floor["op"].clone()),
            (13.into(), "drop".into())
        );
        // Another entity type keeps its rows and its own (absent) floor.
        let users = apply(
            &store,
            &envelope(
                "f",
                "users",
                vec![{
                    let mut u = row(9, "insert", 1, 1);
                    u["entity"] = "users".into();
                    u
                }],
            ),
        );
        assert_eq!(counted(users), (1, 0));
    }

    /// Identical rows of a keyless table: the floor takes every copy counted before it, and
    /// the order in which the truncate and the rows arrive does not change the result.
    #[test]
    fn keyless_counts_below_the_floor_are_gone_in_either_order() {
        let x = Some((1, "x"));
        let before = || {
            vec![
                keyless(1, "insert", None, x),
                keyless(2, "insert", None, x),
                keyless(3, "insert", None, Some((2, "y"))),
            ]
        };
        let after = || vec![keyless(6, "insert", None, x)];
        let truncate = || vec![on_type(5, "truncate", "tags")];
        let mut results = Vec::new();
        for order in [[0, 1, 2], [1, 0, 2], [1, 2, 0], [2, 1, 0]] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            for (i, which) in order.into_iter().enumerate() {
                let ops = [before(), truncate(), after()][which].clone();
                apply(&store, &envelope(&format!("b{i}"), "tags", ops));
            }
            assert_eq!(
                copies(&store),
                serde_json::json!({"{\"n\":1,\"s\":\"x\"}": 1}),
                "order {order:?}"
            );
            let mut dump = store.dump().unwrap();
            dump.as_object_mut().unwrap().remove("stats");
            results.push(dump);
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:#?}");
    }

    /// binsync crashed after the truncate was applied and sends everything again from an
    /// older checkpoint, grouped otherwise; the receiver itself was killed in between.
    #[test]
    fn a_replay_after_a_truncate_recreates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let inserts = envelope(
            "a",
            "products",
            vec![row(1, "insert", 1, 10), row(2, "insert", 2, 20)],
        );
        let truncate = envelope("b", "products", vec![on_type(3, "truncate", "products")]);
        let later = envelope("c", "products", vec![row(4, "insert", 2, 21)]);
        {
            let store = Store::open(dir.path()).unwrap();
            for text in [&inserts, &truncate, &later] {
                apply(&store, text);
            }
            // Dropped without close: as after kill -9 (each batch was committed).
        }
        let store = Store::open(dir.path()).unwrap();
        let expected = serde_json::json!({"{\"id\":2}": 21});
        assert_eq!(prices(&store), expected);
        // The same batches again: exact re-sends.
        for text in [&inserts, &truncate, &later] {
            assert!(apply(&store, text).duplicate);
        }
        // Regrouped into one batch (another body under the first batch's id).
        let regrouped = envelope(
            "a",
            "products",
            vec![
                row(1, "insert", 1, 10),
                row(2, "insert", 2, 20),
                on_type(3, "truncate", "products"),
                row(4, "insert", 2, 21),
            ],
        );
        assert_eq!(counted(apply(&store, &regrouped)), (0, 4));
        assert_eq!(prices(&store), expected);
    }

    #[test]
    fn a_ddl_keeps_the_rows_and_the_newest_definition() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        apply(
            &store,
            &envelope("a", "products", vec![row(1, "insert", 1, 10)]),
        );
        let ddl = apply(
            &store,
            &envelope("b", "products", vec![on_type(5, "ddl", "products")]),
        );
        assert_eq!(counted(ddl), (1, 0));
        assert_eq!(prices(&store), serde_json::json!({"{\"id\":1}": 10}));
        let def = store.dump().unwrap()["types"]["products"]["definition"].clone();
        assert_eq!(def["seq"], 5);
        assert_eq!(def["statement"], "DDL products at 5");
        assert_eq!(def["key"], serde_json::json!(["id"]));
        assert_eq!(def["columns"][1]["name"], "price");
        // An older ddl arriving late is stale.
        let older = apply(
            &store,
            &envelope("c", "products", vec![on_type(4, "ddl", "products")]),
        );
        assert_eq!(counted(older), (0, 1));
        assert_eq!(
            store.dump().unwrap()["types"]["products"]["definition"]["seq"],
            5
        );
        // Renamed away: the definition says no table, the rows stay.
        let mut gone = on_type(6, "ddl", "products");
        gone["columns"] = Value::Null;
        gone["key"] = Value::Null;
        apply(&store, &envelope("d", "products", vec![gone]));
        let def = &store.dump().unwrap()["types"]["products"]["definition"];
        assert_eq!(
            (
                def["seq"].clone(),
                def["columns"].clone(),
                def["key"].clone()
            ),
            (6.into(), Value::Null, Value::Null)
        );
        assert_eq!(prices(&store), serde_json::json!({"{\"id\":1}": 10}));
    }

    /// A floor does not make an older ddl stale (a truncate keeps the definition), so the
    /// definition is the same whichever of the two arrives first.
    #[test]
    fn a_ddl_and_a_later_truncate_give_one_state_in_either_order() {
        let ops = [
            on_type(8, "ddl", "products"),
            on_type(10, "truncate", "products"),
        ];
        let mut dumps = Vec::new();
        for order in [[0, 1], [1, 0]] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            for i in order {
                let a = apply(
                    &store,
                    &envelope(&format!("b{i}"), "products", vec![ops[i].clone()]),
                );
                assert_eq!(counted(a), (1, 0), "order {order:?}");
            }
            dumps.push(store.dump().unwrap()["types"].clone());
        }
        assert_eq!(dumps[0], dumps[1]);
        assert_eq!(dumps[0]["products"]["definition"]["seq"], 8);
        assert_eq!(dumps[0]["products"]["floor"]["seq"], 10);
    }

    /// Random histories of one entity type (rows inserted, updated, deleted; truncates, drops
    /// and ddls between them), delivered as binsync may: each id's operations in order, but
    /// ids and whole-type operations in any order against each other, in random batches, with
    /// batches sent again. Every delivery ends in the state of the history applied in order.
    #[test]
    fn any_arrival_order_and_replays_converge_to_the_in_order_state() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for round in 0..40 {
            // The source's history: per id, is the row there.
            let mut present = [false; 4];
            let mut history: Vec<Value> = Vec::new();
            for seq in 1..=30u64 {
                let id = rng.usize(..present.len());
                let op = match rng.u8(..10) {
                    0 => on_type(seq, "truncate", "products"),
                    1 => on_type(seq, "drop", "products"),
                    2 => on_type(seq, "ddl", "products"),
                    _ if !present[id] => row(seq, "insert", id as i64, seq as i64),
                    3 => row(seq, "delete", id as i64, 0),
                    _ => row(seq, "update", id as i64, seq as i64),
                };
                match op["op"].as_str().unwrap() {
                    "truncate" | "drop" => present = [false; 4],
                    "insert" => present[id] = true,
                    "delete" => present[id] = false,
                    _ => {}
                }
                history.push(op);
            }
            let state = |store: &Store| {
                let mut d = store.dump().unwrap();
                d.as_object_mut().unwrap().remove("stats");
                d
            };
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            apply(&store, &envelope("in-order", "products", history.clone()));
            let expected = state(&store);

            // One queue per id (its lane keeps its order); each whole-type op on its own.
            let mut queues: Vec<std::collections::VecDeque<Value>> = Vec::new();
            for id in 0..present.len() as i64 {
                queues.push(
                    history
                        .iter()
                        .filter(|o| o["id"]["id"] == id)
                        .cloned()
                        .collect(),
                );
            }
            for o in history.iter().filter(|o| o.get("id").is_none()) {
                queues.push([o.clone()].into());
            }
            let mut arrival = Vec::new();
            while let Some(q) = {
                let live: Vec<usize> = (0..queues.len())
                    .filter(|&i| !queues[i].is_empty())
                    .collect();
                (!live.is_empty()).then(|| live[rng.usize(..live.len())])
            } {
                arrival.push(queues[q].pop_front().unwrap());
            }
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let mut sent: Vec<Vec<u8>> = Vec::new();
            let mut rest = arrival.as_slice();
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len().min(4));
                let mut ops = rest[..n].to_vec();
                rest = &rest[n..];
                // A batch lists an entity type's operations in seq order; each id's own
                // order is kept by sorting.
                ops.sort_by_key(|o| o["seq"].as_u64());
                let text = envelope(&format!("r{round}-{}", sent.len()), "products", ops);
                apply(&store, &text);
                sent.push(text);
                if rng.bool() {
                    let again = sent[rng.usize(..sent.len())].clone();
                    apply(&store, &again);
                }
            }
            assert_eq!(
                state(&store),
                expected,
                "round {round}: arrival {arrival:#?}"
            );
        }
    }

    /// A store written before contract v2 (format 2: no floors, no definitions) opens, keeps
    /// its rows and takes version 2 operations.
    #[test]
    fn a_format_2_store_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let old = Connection::open(dir.path().join(DB_FILE)).unwrap();
            old.execute_batch(
                "CREATE TABLE entities (entity TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL,
                     copies INTEGER NOT NULL, keyless INTEGER NOT NULL, row_json TEXT,
                     PRIMARY KEY (entity, id));
                 CREATE TABLE batches (batch_id TEXT PRIMARY KEY, fingerprint INTEGER NOT NULL,
                     applied_at INTEGER NOT NULL);
                 CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('format', 'binsync-receiver 2');
                 INSERT INTO entities VALUES ('products', '{\"id\":1}', 3, 1, 0, '{\"id\":1,\"price\":7}');",
            )
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(prices(&store), serde_json::json!({"{\"id\":1}": 7}));
        assert!(
            store.dump().unwrap().get("types").is_none(),
            "no v2 state yet"
        );
        let t = apply(
            &store,
            &envelope("a", "products", vec![on_type(4, "truncate", "products")]),
        );
        assert_eq!(counted(t), (1, 0));
        assert_eq!(prices(&store), serde_json::json!({}));
        store.close().unwrap();
        let again = Store::open_existing(dir.path()).unwrap();
        assert_eq!(
            again.dump().unwrap()["types"]["products"]["floor"]["seq"],
            4
        );
        let format: String = lock(again.conn.as_ref().unwrap())
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(format, FORMAT);
    }

    #[test]
    fn a_newer_format_is_refused_as_too_new() {
        let dir = tempfile::tempdir().unwrap();
        {
            let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
            other
                .execute_batch(
                    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                     INSERT INTO meta VALUES ('format', 'binsync-receiver 4');",
                )
                .unwrap();
        }
        let err = Store::open(dir.path()).err().expect("must refuse");
        assert!(matches!(err, ReceiveError::TooNew { .. }), "{err}");
    }

    #[test]
    fn a_binsync_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // sled's files, as binsync's checkpoint store (and the old receiver) leave them.
        std::fs::write(dir.path().join("conf"), b"segment_size: 524288\n").unwrap();
        std::fs::write(dir.path().join("db"), b"").unwrap();
        let err = Store::open(dir.path()).err().expect("must refuse");
        assert!(matches!(err, ReceiveError::Foreign { .. }), "{err}");
        assert!(
            err.to_string().contains("binsync's own --state-dir"),
            "{err}"
        );
    }

    #[test]
    fn another_sqlite_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
        other.execute_batch("CREATE TABLE t (a INT);").unwrap();
        drop(other);
        let err = Store::open(dir.path()).err().expect("must refuse");
        assert!(matches!(err, ReceiveError::Foreign { .. }), "{err}");
    }

    #[test]
    fn dump_of_an_empty_dir_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open_existing(&dir.path().join("nothing"))
            .err()
            .expect("must fail");
        assert!(matches!(err, ReceiveError::NoState { .. }), "{err}");
    }

    #[test]
    fn a_second_store_on_the_same_dir_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.count(|s| s.rejected += 1);
        let err = Store::open_existing(dir.path()).err().expect("locked");
        assert!(matches!(err, ReceiveError::Locked { .. }), "{err}");
        store.close().unwrap();
        let again = Store::open_existing(dir.path()).unwrap();
        assert_eq!(again.stats().rejected, 1, "counters are written at close");
    }

    /// A read of `products` (contract v3): an insert's fields without `row`.
    fn read(seq: u64, id: i64, price: i64) -> Value {
        let mut v = row(seq, "insert", id, price);
        v["op"] = "read".into();
        v.as_object_mut().unwrap().remove("row");
        v
    }

    /// A snapshot_end of `entity` (contract v3).
    fn snapshot_end(seq: u64, since: u64, entity: &str) -> Value {
        serde_json::json!({"seq": seq, "op": "snapshot_end", "db": "shop", "table": entity,
            "entity": entity, "gtid": null, "ts": "2026-11-24T07:37:31Z", "file": "f.000001",
            "offset": 4, "since": since})
    }

    #[test]
    fn a_read_is_an_upsert_of_the_whole_row_under_the_seq_guard() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // id 1 changed after the chunk's position (binlog update at 20, in another lane);
        // id 2 was deleted there; id 3 exists already from an earlier life.
        apply(
            &store,
            &envelope(
                "a",
                "products",
                vec![
                    row(3, "insert", 3, 1),
                    row(20, "update", 1, 99),
                    row(21, "delete", 2, 0),
                ],
            ),
        );
        let r = apply(
            &store,
            &envelope(
                "b",
                "products",
                vec![
                    read(11, 1, 10),
                    read(12, 2, 20),
                    read(13, 3, 30),
                    read(14, 4, 40),
                ],
            ),
        );
        // 11 and 12 are below ids 1 and 2's seq: stale; 13 overwrites id 3; 14 creates id 4.
        assert_eq!(counted(r), (2, 2));
        assert_eq!(
            prices(&store),
            serde_json::json!({"{\"id\":1}": 99, "{\"id\":3}": 30, "{\"id\":4}": 40})
        );
        let dump = store.dump().unwrap();
        assert_eq!(dump["entities"]["products"]["{\"id\":2}"]["deleted"], true);
        assert_eq!(dump["entities"]["products"]["{\"id\":4}"]["seq"], 14);
        // A later binlog delete goes over a read as over an insert; a replay of the read is
        // stale.
        apply(
            &store,
            &envelope("c", "products", vec![row(15, "delete", 4, 0)]),
        );
        let again = apply(&store, &envelope("d", "products", vec![read(14, 4, 40)]));
        assert_eq!(counted(again), (0, 1));
        assert_eq!(
            prices(&store),
            serde_json::json!({"{\"id\":1}": 99, "{\"id\":3}": 30})
        );
    }

    #[test]
    fn a_snapshot_end_deletes_rows_below_since_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // From an earlier life: ids 1..=4 at seqs 1..=4 and a tombstone of id 5. The snapshot
        // began at 10 and re-read ids 2 (at 11) and 3 (at 12); id 4 was last written at 10,
        // the seq before the snapshot (not above since: the snapshot_end removes it, and a
        // late copy of that update is stale); id 6 was inserted at 13; ids 1 and 4 are gone
        // from the source, deleted while binsync was away.
        let ops = vec![
            row(1, "insert", 1, 1),
            row(2, "insert", 2, 2),
            row(3, "insert", 3, 3),
            row(4, "insert", 4, 4),
            row(5, "delete", 5, 0),
            row(10, "update", 4, 44),
        ];
        apply(&store, &envelope("a", "products", ops));
        let ops = vec![
            read(11, 2, 22),
            read(12, 3, 33),
            row(13, "insert", 6, 66),
            snapshot_end(14, 10, "products"),
        ];
        assert_eq!(
            counted(apply(&store, &envelope("b", "products", ops))),
            (4, 0)
        );
        assert_eq!(
            prices(&store),
            serde_json::json!({"{\"id\":2}": 22, "{\"id\":3}": 33, "{\"id\":6}": 66})
        );
        let dump = store.dump().unwrap();
        // The tombstone of id 5 went too: the floor guards it now.
        assert_eq!(dump["entities"]["products"].as_object().unwrap().len(), 3);
        assert_eq!(
            dump["types"]["products"]["floor"],
            serde_json::json!({"seq": 10, "op": "snapshot_end", "db": "shop",
                "table": "products"})
        );
        // Late operations at or below the floor are stale: an insert of id 1 still on its
        // way, a read of a chunk sent before, the snapshot_end again, and an older one.
        let late = vec![
            row(7, "insert", 1, 1),
            read(9, 7, 77),
            row(10, "update", 4, 44),
            snapshot_end(14, 10, "products"),
        ];
        assert_eq!(
            counted(apply(&store, &envelope("c", "products", late))),
            (0, 4)
        );
        let older = apply(
            &store,
            &envelope("d", "products", vec![snapshot_end(6, 5, "products")]),
        );
        assert_eq!(counted(older), (0, 1));
        // An operation above the floor is applied as usual.
        let newer = apply(
            &store,
            &envelope("e", "products", vec![row(15, "insert", 1, 11)]),
        );
        assert_eq!(counted(newer), (1, 0));
        assert_eq!(prices(&store).as_object().unwrap().len(), 4);
        // A truncate above it takes the floor on, a snapshot_end not above it changes nothing.
        apply(
            &store,
            &envelope("f", "products", vec![on_type(16, "truncate", "products")]),
        );
        let under = apply(
            &store,
            &envelope("g", "products", vec![snapshot_end(17, 16, "products")]),
        );
        assert_eq!(counted(under), (0, 1));
        assert_eq!(
            store.dump().unwrap()["types"]["products"]["floor"]["op"],
            "truncate"
        );
        assert_eq!(prices(&store), serde_json::json!({}));
    }

    /// A keyless table's read sets the identity's count to one: the snapshot read the row
    /// once (it pages by a unique key), whatever was counted before.
    #[test]
    fn a_keyless_read_sets_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let x = Some((1, "x"));
        let y = Some((2, "y"));
        // Inserted in the binlog after the snapshot began (seq 5), then read at 6; y read at 7.
        apply(
            &store,
            &envelope("a", "tags", vec![keyless(5, "insert", None, x)]),
        );
        let mut rx = keyless(6, "insert", None, x);
        rx["op"] = "read".into();
        rx.as_object_mut().unwrap().remove("row");
        let mut ry = keyless(7, "insert", None, y);
        ry["op"] = "read".into();
        ry.as_object_mut().unwrap().remove("row");
        let r = apply(&store, &envelope("b", "tags", vec![rx.clone(), ry]));
        assert_eq!(counted(r), (2, 0));
        assert_eq!(
            copies(&store),
            serde_json::json!({"{\"n\":1,\"s\":\"x\"}": 1, "{\"n\":2,\"s\":\"y\"}": 1})
        );
        // A replay of the read counts nothing.
        assert_eq!(
            counted(apply(&store, &envelope("c", "tags", vec![rx]))),
            (0, 1)
        );
        assert_eq!(
            copies(&store)["{\"n\":1,\"s\":\"x\"}"],
            serde_json::json!(1)
        );
    }
}
