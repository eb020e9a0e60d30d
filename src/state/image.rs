//! The store as data: every (tree, key, value) of a sled `Db`, the difference between two
//! moments of it ([`Ops`]), and their bytes in the bucket.
//!
//! Invariants:
//! - [`Tracker::diff`] compares the whole `Db` (every tree, the default one included) with what
//!   it returned last, so applying every returned [`Ops`] in order to an empty store rebuilds
//!   the `Db` exactly. It keeps a hash per key, not the values (the state is small, but the
//!   values need not be kept twice on the writer thread).
//! - [`decode`] never panics: bytes from the bucket that do not parse are an error.
//! - The default tree is always reached through the `Db` itself, never `open_tree` by its name
//!   (sled would give a second handle on the same tree, with a root of its own).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};

/// sled's name of the default tree.
const DEFAULT_TREE: &[u8] = b"__sled__default";

const PUT: u8 = 1;
const DEL: u8 = 2;

/// One change to one key of one tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        tree: Vec<u8>,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Del {
        tree: Vec<u8>,
        key: Vec<u8>,
    },
}

pub type Ops = Vec<Op>;

/// The whole store as one ordered map, (tree, key) to value.
pub type Image = BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>;

/// Applies `ops` in order to `image`.
pub fn apply(image: &mut Image, ops: Ops) {
    for op in ops {
        match op {
            Op::Put { tree, key, value } => {
                image.insert((tree, key), value);
            }
            Op::Del { tree, key } => {
                image.remove(&(tree, key));
            }
        }
    }
}

/// `image` as puts (a base to restore from).
pub fn puts(image: &Image) -> Ops {
    image
        .iter()
        .map(|((tree, key), value)| Op::Put {
            tree: tree.clone(),
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

/// Applies `ops` to `db` (no flush: the caller's write path flushes).
pub fn apply_to_db(db: &sled::Db, ops: &[Op]) -> sled::Result<()> {
    for op in ops {
        let (tree, key) = match op {
            Op::Put { tree, key, .. } | Op::Del { tree, key } => (tree, key),
        };
        let t;
        let tree: &sled::Tree = if tree == DEFAULT_TREE {
            db
        } else {
            t = db.open_tree(tree)?;
            &t
        };
        match op {
            Op::Put { value, .. } => {
                tree.insert(key, value.as_slice())?;
            }
            Op::Del { .. } => {
                tree.remove(key)?;
            }
        }
    }
    Ok(())
}

/// Every (tree, key, value) of `db`.
pub fn read_db(db: &sled::Db) -> sled::Result<Image> {
    let mut image = Image::new();
    for name in db.tree_names() {
        let t;
        let tree: &sled::Tree = if name == DEFAULT_TREE {
            db
        } else {
            t = db.open_tree(&name)?;
            &t
        };
        for kv in tree.iter() {
            let (k, v) = kv?;
            image.insert((name.to_vec(), k.to_vec()), v.to_vec());
        }
    }
    Ok(image)
}

/// What the writer thread remembers of the store as last handed on: a hash per (tree, key).
#[derive(Default)]
pub struct Tracker {
    seen: HashMap<(Vec<u8>, Vec<u8>), u64>,
    hasher: std::collections::hash_map::RandomState,
}

impl Tracker {
    /// The changes since the last call (everything, the first time), in a deterministic order:
    /// puts by tree and key, then removals.
    pub fn diff(&mut self, db: &sled::Db) -> sled::Result<Ops> {
        let mut ops = Vec::new();
        let mut now: HashMap<(Vec<u8>, Vec<u8>), u64> = HashMap::with_capacity(self.seen.len());
        let mut names = db.tree_names();
        names.sort();
        for name in names {
            let t;
            let tree: &sled::Tree = if name == DEFAULT_TREE {
                db
            } else {
                t = db.open_tree(&name)?;
                &t
            };
            for kv in tree.iter() {
                let (k, v) = kv?;
                let mut h = self.hasher.build_hasher();
                h.write(&v);
                let hash = h.finish();
                let id = (name.to_vec(), k.to_vec());
                if self.seen.get(&id) != Some(&hash) {
                    ops.push(Op::Put {
                        tree: id.0.clone(),
                        key: id.1.clone(),
                        value: v.to_vec(),
                    });
                }
                now.insert(id, hash);
            }
        }
        let mut gone: Vec<_> = self
            .seen
            .keys()
            .filter(|id| !now.contains_key(*id))
            .cloned()
            .collect();
        gone.sort();
        ops.extend(gone.into_iter().map(|(tree, key)| Op::Del { tree, key }));
        self.seen = now;
        Ok(ops)
    }
}

/// The bytes of `ops`: per op a kind byte, then tree, key (and value for a put), each as a
/// big-endian u32 length and the bytes.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    let field = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    };
    for op in ops {
        match op {
            Op::Put { tree, key, value } => {
                out.push(PUT);
                field(&mut out, tree);
                field(&mut out, key);
                field(&mut out, value);
            }
            Op::Del { tree, key } => {
                out.push(DEL);
                field(&mut out, tree);
                field(&mut out, key);
            }
        }
    }
    out
}

/// [`encode`]'s inverse; a description of the damage if `bytes` are not its output.
pub fn decode(mut bytes: &[u8]) -> Result<Ops, String> {
    fn field<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], String> {
        if bytes.len() < 4 {
            return Err("a length cut short".into());
        }
        let (len, rest) = bytes.split_at(4);
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if rest.len() < len {
            return Err(format!("a field of {len} bytes with {} left", rest.len()));
        }
        let (f, rest) = rest.split_at(len);
        *bytes = rest;
        Ok(f)
    }
    let mut ops = Vec::new();
    while let Some((&kind, rest)) = bytes.split_first() {
        bytes = rest;
        let tree = field(&mut bytes)?.to_vec();
        let key = field(&mut bytes)?.to_vec();
        ops.push(match kind {
            PUT => Op::Put {
                tree,
                key,
                value: field(&mut bytes)?.to_vec(),
            },
            DEL => Op::Del { tree, key },
            k => return Err(format!("an operation of unknown kind {k}")),
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diffs_rebuild_the_store_trees_and_removals_included() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let mut tracker = Tracker::default();
        let mut rebuilt = Image::new();
        db.insert(b"checkpoint", &b"one"[..]).unwrap();
        db.open_tree("dlq")
            .unwrap()
            .insert(b"k1", &b"v1"[..])
            .unwrap();
        apply(&mut rebuilt, tracker.diff(&db).unwrap());
        assert_eq!(rebuilt, read_db(&db).unwrap());
        assert!(tracker.diff(&db).unwrap().is_empty(), "no change, no ops");
        db.insert(b"checkpoint", &b"two"[..]).unwrap();
        db.open_tree("dlq").unwrap().remove(b"k1").unwrap();
        db.open_tree("history")
            .unwrap()
            .insert(b"\x00\x01", &b""[..])
            .unwrap();
        let ops = tracker.diff(&db).unwrap();
        assert_eq!(ops.len(), 3, "{ops:?}");
        apply(&mut rebuilt, decode(&encode(&ops)).unwrap());
        assert_eq!(rebuilt, read_db(&db).unwrap());
        db.drop_tree("history").unwrap();
        apply(&mut rebuilt, tracker.diff(&db).unwrap());
        assert_eq!(rebuilt, read_db(&db).unwrap());
        assert!(rebuilt.contains_key(&(DEFAULT_TREE.to_vec(), b"checkpoint".to_vec())));
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let ops = vec![
            Op::Put {
                tree: b"t".to_vec(),
                key: b"k".to_vec(),
                value: vec![7; 100],
            },
            Op::Del {
                tree: b"t".to_vec(),
                key: b"x".to_vec(),
            },
        ];
        let bytes = encode(&ops);
        assert_eq!(decode(&bytes).unwrap(), ops);
        // A cut between two operations decodes to fewer (the blob's length and checksum catch
        // that, see `bucket`); anywhere else it is an error.
        for cut in 1..bytes.len() {
            if let Ok(got) = decode(&bytes[..cut]) {
                assert_eq!(got, ops[..1], "cut at {cut}");
            }
        }
        assert!(decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
