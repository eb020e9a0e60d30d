//! The schema history on disk: a tree of the state dir's sled store holding every table
//! version with the `seq` of the DDL that made it (issue 11), and a second tree with what the
//! first seed left open ([`SeedGaps`]).
//!
//! Keys are `seq` (8 bytes, big-endian, so sled's order is `seq` order), then `db`, a 0 byte,
//! and the table name; a value is the [`Table`] as JSON, or empty for a table the DDL dropped
//! (renamed away included). Writes go through the store's one writer ([`Store::write`]).
//!
//! Invariants:
//! - A DDL statement's versions ([`records`]) reach the disk only in the same transaction as
//!   the first checkpoint past the statement (the checkpointer's `save_with`): after any
//!   crash the history is exactly as far as the checkpoint. A statement keyed by the `seq` of
//!   the last operation before it (it delivered nothing) is therefore on disk only with a
//!   checkpoint past it; one inside a transaction takes a `seq` of its own, above a
//!   checkpoint inside that transaction.
//! - [`catalog_at`] is the catalog as of a `seq`: for each table, its newest version at or
//!   below it. At start the stream resumes at the checkpoint with `catalog_at(its seq)`;
//!   versions above it ([`discard_above`]) would be read again.
//! - [`prune_below`] keeps, below a `seq`, only each table's newest version: what
//!   [`catalog_at`] needs for any `seq` from there on.
//! - The seed (the first versions, read from the source at `seq` of the start) and
//!   `schema refresh` write their versions and the [`SeedGaps`] in one transaction.

use std::collections::BTreeMap;

use crate::checkpoint::{CheckpointError, Position, Records, Store};

use super::{Catalog, Table};

const TREE: &[u8] = b"schema_history";

/// The history's failures are the store's: a write that fails is a
/// [`CheckpointError`] of the disk (a full one is waited out), a record that does not read
/// back is damage of the store.
type Result<T> = std::result::Result<T, CheckpointError>;

fn key(seq: u64, db: &str, table: &str) -> Vec<u8> {
    let mut k = seq.to_be_bytes().to_vec();
    k.extend_from_slice(db.as_bytes());
    k.push(0);
    k.extend_from_slice(table.as_bytes());
    k
}

fn parse_key(k: &[u8]) -> Option<(u64, String, String)> {
    let seq = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let rest = &k[8..];
    let nul = rest.iter().position(|&b| b == 0)?;
    Some((
        seq,
        String::from_utf8(rest[..nul].to_vec()).ok()?,
        String::from_utf8(rest[nul + 1..].to_vec()).ok()?,
    ))
}

fn damaged(store: &Store, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Damaged {
        dir: store.dir().to_path_buf(),
        detail: format!("its schema history does not read back: {e}"),
    }
}

/// The records a DDL statement's step makes, for the checkpointer to save with the first
/// checkpoint past it: each `(db, table)`'s new version (None: gone) keyed by `seq`.
pub fn records(
    seq: u64,
    versions: &[((String, String), Option<Table>)],
) -> std::result::Result<Records, serde_json::Error> {
    let mut entries = Vec::with_capacity(versions.len());
    for ((db, table), version) in versions {
        let value = match version {
            Some(t) => serde_json::to_vec(t)?,
            None => Vec::new(),
        };
        entries.push((key(seq, db, table), value));
    }
    Ok(Records {
        tree: TREE,
        entries,
    })
}

/// Versions that `records` (a chunk's) add to the history.
pub fn versions_in(records: &[Records]) -> usize {
    records
        .iter()
        .filter(|r| r.tree == TREE)
        .map(|r| r.entries.len())
        .sum()
}

/// How many versions the history holds.
pub fn version_count(store: &Store) -> Result<usize> {
    let tree = store.db().open_tree(TREE).map_err(|e| damaged(store, e))?;
    Ok(tree.len())
}

/// Whether the history holds anything (a state dir from before it existed does not).
pub fn is_empty(store: &Store) -> Result<bool> {
    let tree = store.db().open_tree(TREE).map_err(|e| damaged(store, e))?;
    Ok(tree.is_empty())
}

/// Records the versions a DDL at `seq` made, alone (the tests'; the stream's go with the
/// checkpoint, see the module docs).
#[cfg(test)]
pub async fn record(
    store: &Store,
    seq: u64,
    versions: Vec<((String, String), Option<Table>)>,
) -> Result<()> {
    let r = records(seq, &versions).map_err(|e| damaged(store, e))?;
    store
        .write(
            move |db| {
                let tree = db.open_tree(r.tree)?;
                for (k, v) in r.entries {
                    tree.insert(k, v)?;
                }
                Ok(())
            },
            |_| {},
        )
        .await
        .map_err(|e| store.write_error(e))
}

/// The catalog as of `seq` (see the module docs).
pub fn catalog_at(store: &Store, seq: u64) -> Result<Catalog> {
    let tree = store.db().open_tree(TREE).map_err(|e| damaged(store, e))?;
    let mut newest: BTreeMap<(String, String), Option<Table>> = BTreeMap::new();
    for item in tree.range(..(seq.saturating_add(1)).to_be_bytes().to_vec()) {
        let (k, v) = item.map_err(|e| damaged(store, e))?;
        let Some((_, db, table)) = parse_key(&k) else {
            return Err(damaged(store, "a key that is not seq, db, table"));
        };
        let version = if v.is_empty() {
            None
        } else {
            Some(serde_json::from_slice::<Table>(&v).map_err(|e| damaged(store, e))?)
        };
        newest.insert((db, table), version);
    }
    let mut catalog = Catalog::default();
    for t in newest.into_values().flatten() {
        catalog.insert(t);
    }
    Ok(catalog)
}

/// Drops every version above `seq` (DDL not delivered yet: the stream reads it again).
pub async fn discard_above(store: &Store, seq: u64) -> Result<usize> {
    let from = seq.saturating_add(1).to_be_bytes().to_vec();
    store
        .write(
            move |db| {
                let tree = db.open_tree(TREE)?;
                let mut batch = sled::Batch::default();
                let mut n = 0;
                for item in tree.range(from..) {
                    batch.remove(item?.0);
                    n += 1;
                }
                tree.apply_batch(batch)?;
                Ok(n)
            },
            |_| {},
        )
        .await
        .map_err(|e| store.write_error(e))
}

/// Keeps, at or below `seq`, only each table's newest version (and forgets tables dropped
/// there entirely).
pub async fn prune_below(store: &Store, seq: u64) -> Result<usize> {
    let upto = seq.saturating_add(1).to_be_bytes().to_vec();
    store
        .write(
            move |db| {
                let tree = db.open_tree(TREE)?;
                let mut newest: BTreeMap<(String, String), (sled::IVec, bool)> = BTreeMap::new();
                let mut batch = sled::Batch::default();
                let mut n = 0;
                for item in tree.range(..upto) {
                    let (k, v) = item?;
                    let Some((_, d, t)) = parse_key(&k) else {
                        continue;
                    };
                    if let Some((older, _)) = newest.insert((d, t), (k.clone(), v.is_empty())) {
                        batch.remove(older);
                        n += 1;
                    }
                }
                for (k, gone) in newest.into_values() {
                    if gone {
                        batch.remove(k);
                        n += 1;
                    }
                }
                tree.apply_batch(batch)?;
                Ok(n)
            },
            |_| {},
        )
        .await
        .map_err(|e| store.write_error(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ddl;

    fn versions_of(c: &Catalog, names: &[(&str, &str)]) -> Vec<((String, String), Option<Table>)> {
        names
            .iter()
            .map(|(d, t)| ((d.to_string(), t.to_string()), c.table(d, t).cloned()))
            .collect()
    }

    fn columns(c: &Catalog, t: &str) -> Vec<String> {
        c.table("s", t)
            .map(|t| t.columns.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Versions read back after a restart (the store reopened), each at its own seq; a
    /// crash's undelivered DDL dropped; old versions pruned without changing any answer.
    #[tokio::test]
    async fn versions_by_seq_survive_a_reopen_are_cut_back_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = Catalog::default();
        {
            let store = Store::open(dir.path()).unwrap();
            ddl::apply(&mut live, "s", "CREATE TABLE t (id INT PRIMARY KEY, a INT)").unwrap();
            record(&store, 10, versions_of(&live, &[("s", "t")]))
                .await
                .unwrap();
            ddl::apply(&mut live, "s", "ALTER TABLE t ADD COLUMN b INT").unwrap();
            record(&store, 20, versions_of(&live, &[("s", "t")]))
                .await
                .unwrap();
            ddl::apply(&mut live, "s", "RENAME TABLE t TO u").unwrap();
            record(&store, 30, versions_of(&live, &[("s", "t"), ("s", "u")]))
                .await
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert!(catalog_at(&store, 9).unwrap().tables.is_empty());
        assert_eq!(columns(&catalog_at(&store, 10).unwrap(), "t"), ["id", "a"]);
        assert_eq!(
            columns(&catalog_at(&store, 29).unwrap(), "t"),
            ["id", "a", "b"]
        );
        let at30 = catalog_at(&store, 30).unwrap();
        assert!(at30.table("s", "t").is_none());
        assert_eq!(columns(&at30, "u"), ["id", "a", "b"]);

        // The checkpoint stayed at 25: the rename is read again after the restart.
        assert_eq!(discard_above(&store, 25).await.unwrap(), 2);
        assert_eq!(
            catalog_at(&store, u64::MAX).unwrap(),
            catalog_at(&store, 25).unwrap()
        );

        let before = catalog_at(&store, 25).unwrap();
        assert_eq!(prune_below(&store, 25).await.unwrap(), 1);
        assert_eq!(catalog_at(&store, 25).unwrap(), before);
    }
}

const SEED_TREE: &[u8] = b"schema_seed";

/// Forgets the whole history (before a new seed).
pub async fn clear(store: &Store) -> Result<()> {
    store
        .write(
            |db| {
                db.open_tree(TREE)?.clear()?;
                db.open_tree(SEED_TREE)?.clear()
            },
            |_| {},
        )
        .await
        .map_err(|e| store.write_error(e))
}

/// What the seed left open (see `source::schema_seed::Seed`), kept until the checkpoint is
/// past it: tables unknown at the stream's start, and the versions that hold from a later
/// DDL statement on.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeedGaps {
    pub unknown: Vec<(String, String)>,
    pub pending: Vec<super::Pending>,
}

/// Records the seed's versions at `seq` (the start's) and what it left open, in one write.
pub async fn save_seed(store: &Store, seq: u64, catalog: &Catalog, gaps: &SeedGaps) -> Result<()> {
    let mut batch = sled::Batch::default();
    for t in catalog.tables.values() {
        batch.insert(
            key(seq, &t.db, &t.name),
            serde_json::to_vec(t).map_err(|e| damaged(store, e))?,
        );
    }
    let gaps = serde_json::to_vec(gaps).map_err(|e| damaged(store, e))?;
    write_with_gaps(store, batch, gaps).await
}

/// What the seed left open that a stream resuming at `at` still meets: pending versions
/// at or before `at` were installed by a step saved with the checkpoint; tables known in
/// `catalog` are no longer unknown.
pub fn seed_gaps(store: &Store, at: &Position, catalog: &Catalog) -> Result<SeedGaps> {
    let tree = store
        .db()
        .open_tree(SEED_TREE)
        .map_err(|e| damaged(store, e))?;
    let Some(raw) = tree.get(b"gaps").map_err(|e| damaged(store, e))? else {
        return Ok(SeedGaps::default());
    };
    let mut gaps: SeedGaps = serde_json::from_slice(&raw).map_err(|e| damaged(store, e))?;
    let here = binlog_order(&at.file, at.offset);
    gaps.pending.retain(|p| binlog_order(&p.file, p.end) > here);
    gaps.unknown.retain(|(d, t)| catalog.table(d, t).is_none());
    Ok(gaps)
}

/// Orders positions in one server's binlog: files by their numeric suffix, then offsets.
pub fn binlog_order(file: &str, offset: u64) -> (u64, String, u64) {
    let n = file
        .rsplit('.')
        .next()
        .and_then(|x| x.parse::<u64>().ok())
        .unwrap_or(0);
    (n, file.to_string(), offset)
}

/// `schema refresh`: `tables` as they are now become the versions at `seq` (the checkpoint's),
/// replacing what the history held there, and stop being unknown or pending; `later` are
/// tables as they are now that hold from a DDL statement after the checkpoint on (the last
/// one on them: it may be one the reader could not follow). Right only when that is so (the
/// caller found the statements).
pub async fn refresh(
    store: &Store,
    seq: u64,
    tables: Vec<Table>,
    later: Vec<super::Pending>,
) -> Result<()> {
    let gaps_tree = store
        .db()
        .open_tree(SEED_TREE)
        .map_err(|e| damaged(store, e))?;
    let mut gaps: SeedGaps = match gaps_tree.get(b"gaps").map_err(|e| damaged(store, e))? {
        Some(raw) => serde_json::from_slice(&raw).map_err(|e| damaged(store, e))?,
        None => SeedGaps::default(),
    };
    let mut batch = sled::Batch::default();
    for t in &tables {
        batch.insert(
            key(seq, &t.db, &t.name),
            serde_json::to_vec(t).map_err(|e| damaged(store, e))?,
        );
        gaps.unknown.retain(|(d, n)| !(*d == t.db && *n == t.name));
        gaps.pending
            .retain(|p| !(p.table.db == t.db && p.table.name == t.name));
    }
    for p in later {
        gaps.pending
            .retain(|q| !(q.table.db == p.table.db && q.table.name == p.table.name));
        gaps.pending.push(p);
    }
    let gaps = serde_json::to_vec(&gaps).map_err(|e| damaged(store, e))?;
    write_with_gaps(store, batch, gaps).await
}

/// One version in the history, for `schema history`.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub seq: u64,
    pub db: String,
    pub table: String,
    /// None: the table is gone from here on.
    pub definition: Option<Table>,
}

/// Every version the history holds, in `seq` order.
pub fn versions(store: &Store) -> Result<Vec<Version>> {
    let tree = store.db().open_tree(TREE).map_err(|e| damaged(store, e))?;
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item.map_err(|e| damaged(store, e))?;
        let (seq, db, table) =
            parse_key(&k).ok_or_else(|| damaged(store, "a key that is not seq, db, table"))?;
        let definition = if v.is_empty() {
            None
        } else {
            Some(serde_json::from_slice::<Table>(&v).map_err(|e| damaged(store, e))?)
        };
        out.push(Version {
            seq,
            db,
            table,
            definition,
        });
    }
    Ok(out)
}

/// Applies `batch` to the history and sets the seed's gaps, in one transaction.
async fn write_with_gaps(store: &Store, batch: sled::Batch, gaps: Vec<u8>) -> Result<()> {
    store
        .write(
            move |db| {
                use sled::Transactional;
                let (h, g) = (db.open_tree(TREE)?, db.open_tree(SEED_TREE)?);
                (&h, &g)
                    .transaction(|(h, g)| {
                        h.apply_batch(&batch)?;
                        g.insert(&b"gaps"[..], gaps.clone())?;
                        Ok(())
                    })
                    .map_err(|e| match e {
                        sled::transaction::TransactionError::Storage(e) => e,
                        sled::transaction::TransactionError::Abort(()) => {
                            sled::Error::Unsupported("transaction aborted".into())
                        }
                    })
            },
            |_| {},
        )
        .await
        .map_err(|e| store.write_error(e))
}
