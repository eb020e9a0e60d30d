//! The state bucket's layout (`binsync_state_<stream>`, a JetStream key-value bucket).
//!
//! ```text
//! head                                   JSON Head {gen, upto_round, holder}: the commit point
//! base.<gen>.pNNNN                       the whole store when generation <gen> began
//! wal.<gen>.<round:020>.pNNNN            round 1, 2, ... of <gen>: the changes of one mirror round
//! ```
//! Invariants:
//! - The state is exactly: base of `head.gen`, then its wal rounds 1..=`head.upto_round`, in
//!   order. Keys nothing in `head` names do not exist for a reader (a round written but not
//!   committed by a writer that crashed, or one that lost the lease, is ignored).
//! - `head` only changes by compare-and-set on the revision its writer last saw; a writer whose
//!   CAS fails has lost the bucket to another holder ([`BucketError::Conflict`]) and must stop.
//! - A generation is written by one holder only: its label is a counter above the previous
//!   head's and a token of the writing process, so two holders racing never write the same
//!   keys (a stale one may leave garbage under its own label; it is purged later).
//! - A blob (base or round) is split into parts under the server's max_payload; its first part
//!   starts with a header (part count, length, CRC-32) so that a part missing, cut or left over
//!   from an earlier attempt is detected, never read as state.
//! - Old generations are removed by purging their subjects from the bucket's stream (a KV
//!   delete would leave a marker per key forever), only those with a counter below the one the
//!   remover just committed: never a later holder's keys.

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

use super::image::{self, Image, Ops};
use super::StateError;

const HEAD: &str = "head";
const MAGIC: &[u8; 4] = b"BSS1";
const HEADER: usize = 4 + 4 + 8 + 4;

/// The commit point of the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub version: u32,
    /// The generation: `<counter:010>-<token>`.
    pub gen: String,
    /// The last committed wal round of `gen` (0: the base alone).
    pub upto_round: u64,
    /// Who committed it (the lease holder's id), for people reading the bucket.
    pub holder: String,
}

impl Head {
    pub fn counter(&self) -> u64 {
        gen_counter(&self.gen).unwrap_or(0)
    }
}

fn gen_counter(label: &str) -> Option<u64> {
    label.split('-').next()?.parse().ok()
}

/// `head` as last read: its value (None: no state yet) and the revision to CAS against (0: the
/// key never existed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadAt {
    pub head: Option<Head>,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// Someone else wrote `head` since we read it: another holder.
    #[error("the state bucket's head was changed by another binsync (it holds the lease now)")]
    Conflict,
    /// The server did not answer, or answered with an error that may pass.
    #[error("NATS: {0}")]
    Nats(String),
    /// The bucket holds something binsync cannot read.
    #[error("the state bucket {bucket} is damaged at {key}: {detail}; delete the bucket (nats kv rm {bucket}) and start binsync with --reset, or restore it from a backup")]
    Damaged {
        bucket: String,
        key: String,
        detail: String,
    },
}

impl From<BucketError> for StateError {
    fn from(e: BucketError) -> StateError {
        match e {
            BucketError::Nats(d) => StateError::Nats(d),
            BucketError::Conflict => StateError::Conflict,
            e @ BucketError::Damaged { .. } => StateError::Damaged(e.to_string()),
        }
    }
}

fn nats(what: &str, e: impl std::fmt::Display) -> BucketError {
    BucketError::Nats(format!("{what}: {e}"))
}

/// The state bucket of one stream.
#[derive(Clone)]
pub struct Bucket {
    kv: kv::Store,
    name: String,
    /// The largest part written (under the server's max_payload).
    part_max: usize,
}

impl Bucket {
    /// Opens `name`, creating it (history 1, file storage, `replicas`) if it is missing.
    pub async fn open(
        client: &async_nats::Client,
        name: &str,
        replicas: usize,
    ) -> Result<Bucket, BucketError> {
        let js = jetstream::new(client.clone());
        let kv = open_kv(&js, name, replicas).await?;
        // Headroom for the headers and the subject.
        let part_max = client
            .server_info()
            .max_payload
            .saturating_sub(4096)
            .max(1024);
        Ok(Bucket {
            kv,
            name: name.to_string(),
            part_max,
        })
    }

    #[cfg(test)]
    pub fn with_part_max(mut self, part_max: usize) -> Bucket {
        self.part_max = part_max;
        self
    }

    pub fn kv(&self) -> &kv::Store {
        &self.kv
    }

    pub async fn head(&self) -> Result<HeadAt, BucketError> {
        let entry = self
            .kv
            .entry(HEAD)
            .await
            .map_err(|e| nats("reading the state head", e))?;
        let Some(entry) = entry else {
            return Ok(HeadAt {
                head: None,
                revision: 0,
            });
        };
        if entry.operation != kv::Operation::Put {
            return Ok(HeadAt {
                head: None,
                revision: entry.revision,
            });
        }
        let head: Head = serde_json::from_slice(&entry.value).map_err(|e| self.damaged(HEAD, e))?;
        Ok(HeadAt {
            head: Some(head),
            revision: entry.revision,
        })
    }

    /// Replaces `head` if it is still at `at.revision`; the new revision.
    pub async fn cas_head(&self, at: &HeadAt, head: &Head) -> Result<u64, BucketError> {
        let value = serde_json::to_vec(head).unwrap_or_default().into();
        let done = if at.revision == 0 {
            self.kv
                .create(HEAD, value)
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => BucketError::Conflict,
                    _ => nats("committing the state head", e),
                })
        } else {
            self.kv
                .update(HEAD, value, at.revision)
                .await
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => BucketError::Conflict,
                    _ => nats("committing the state head", e),
                })
        };
        match done {
            // The CAS may have landed and only its answer been lost: then `head` is ours.
            Err(BucketError::Nats(detail)) => {
                let now = self.head().await?;
                if now.head.as_ref() == Some(head) {
                    Ok(now.revision)
                } else if now.revision != at.revision {
                    Err(BucketError::Conflict)
                } else {
                    Err(BucketError::Nats(detail))
                }
            }
            other => other,
        }
    }

    /// The whole state `head` names.
    pub async fn read(&self, head: &Head) -> Result<Image, BucketError> {
        let mut state = Image::new();
        image::apply(&mut state, self.read_ops(&base_key(&head.gen)).await?);
        for round in 1..=head.upto_round {
            image::apply(&mut state, self.read_ops(&wal_key(&head.gen, round)).await?);
        }
        Ok(state)
    }

    async fn read_ops(&self, prefix: &str) -> Result<Ops, BucketError> {
        let bytes = self.get_blob(prefix).await?;
        image::decode(&bytes).map_err(|e| self.damaged(prefix, e))
    }

    /// Writes a new generation's base (`state`), not yet committed.
    pub async fn put_base(&self, gen: &str, state: &Image) -> Result<(), BucketError> {
        self.put_blob(&base_key(gen), &image::encode(&image::puts(state)))
            .await
    }

    /// Writes round `round` of `gen`, not yet committed.
    pub async fn put_round(&self, gen: &str, round: u64, bytes: &[u8]) -> Result<(), BucketError> {
        self.put_blob(&wal_key(gen, round), bytes).await
    }

    async fn put_blob(&self, prefix: &str, bytes: &[u8]) -> Result<(), BucketError> {
        let first_room = self.part_max - HEADER;
        let mut parts: Vec<&[u8]> = vec![&bytes[..bytes.len().min(first_room)]];
        let mut rest = &bytes[parts[0].len()..];
        while !rest.is_empty() {
            let (p, r) = rest.split_at(rest.len().min(self.part_max));
            parts.push(p);
            rest = r;
        }
        let mut first = Vec::with_capacity(HEADER + parts[0].len());
        first.extend_from_slice(MAGIC);
        first.extend_from_slice(&(parts.len() as u32).to_be_bytes());
        first.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        first.extend_from_slice(&crc32fast::hash(bytes).to_be_bytes());
        first.extend_from_slice(parts[0]);
        // The later parts first: the first names them, and a reader starts there.
        for (i, p) in parts.iter().enumerate().skip(1) {
            self.kv
                .put(part_key(prefix, i), bytes::Bytes::copy_from_slice(p))
                .await
                .map_err(|e| nats("writing the state", e))?;
        }
        self.kv
            .put(part_key(prefix, 0), first.into())
            .await
            .map_err(|e| nats("writing the state", e))?;
        Ok(())
    }

    async fn get_blob(&self, prefix: &str) -> Result<Vec<u8>, BucketError> {
        let get = |key: String| async move {
            match self.kv.get(key.as_str()).await {
                Ok(Some(v)) => Ok(v),
                Ok(None) => Err(self.damaged(&key, "missing")),
                Err(e) => Err(nats("reading the state", e)),
            }
        };
        let first = get(part_key(prefix, 0)).await?;
        if first.len() < HEADER || &first[..4] != MAGIC {
            return Err(self.damaged(prefix, "no blob header"));
        }
        let n = u32::from_be_bytes([first[4], first[5], first[6], first[7]]) as usize;
        let mut len = [0u8; 8];
        len.copy_from_slice(&first[8..16]);
        let len = u64::from_be_bytes(len) as usize;
        let crc = u32::from_be_bytes([first[16], first[17], first[18], first[19]]);
        let mut bytes = first[HEADER..].to_vec();
        for i in 1..n {
            bytes.extend_from_slice(&get(part_key(prefix, i)).await?);
        }
        if bytes.len() != len || crc32fast::hash(&bytes) != crc {
            return Err(self.damaged(
                prefix,
                format!(
                    "{} bytes, or a checksum, where its header says {len}",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// Purges every generation whose counter is below `counter` (never a later holder's).
    pub async fn purge_below(&self, counter: u64) -> Result<usize, BucketError> {
        use futures_util::TryStreamExt;
        let keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(|e| nats("listing the state bucket", e))?
            .try_collect()
            .await
            .map_err(|e| nats("listing the state bucket", e))?;
        let mut old: Vec<(String, String)> = keys
            .iter()
            .filter_map(|k| {
                let mut it = k.split('.');
                let kind = it.next()?;
                let gen = it.next()?;
                (matches!(kind, "base" | "wal") && gen_counter(gen).is_some_and(|c| c < counter))
                    .then(|| (kind.to_string(), gen.to_string()))
            })
            .collect();
        old.sort();
        old.dedup();
        for (kind, gen) in &old {
            self.kv
                .stream
                .purge()
                .filter(format!("$KV.{}.{kind}.{gen}.>", self.name))
                .await
                .map_err(|e| nats("removing an old generation of the state", e))?;
        }
        Ok(old.len())
    }

    fn damaged(&self, key: &str, detail: impl std::fmt::Display) -> BucketError {
        BucketError::Damaged {
            bucket: self.name.clone(),
            key: key.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// Opens the bucket `name`, creating it if missing.
pub async fn open_kv(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<kv::Store, BucketError> {
    if let Ok(kv) = js.get_key_value(name).await {
        return Ok(kv);
    }
    // The stream a key-value bucket is, made directly: async-nats' `create_key_value` first
    // reads the account info, which it cannot parse from nats-server 2.9 (fields added in
    // 2.10). The same settings as the NATS clients give a bucket: one value per key
    // (history 1), rollups allowed (purges), direct gets, discard new.
    let created = js
        .create_stream(jetstream::stream::Config {
            name: format!("KV_{name}"),
            description: Some("binsync --state nats".into()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_bytes: -1,
            max_message_size: -1,
            storage: jetstream::stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            num_replicas: replicas.max(1),
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await;
    match js.get_key_value(name).await {
        Ok(kv) => Ok(kv),
        Err(e) => Err(match created {
            Err(c) => nats(&format!("creating the bucket {name}"), c),
            Ok(_) => nats(&format!("opening the bucket {name}"), e),
        }),
    }
}

/// A new generation label above `previous`: `<counter:010>-<token>`.
pub fn next_gen(previous: Option<&Head>, token: &str) -> String {
    format!("{:010}-{token}", previous.map_or(0, |h| h.counter()) + 1)
}

fn base_key(gen: &str) -> String {
    format!("base.{gen}")
}

fn wal_key(gen: &str, round: u64) -> String {
    format!("wal.{gen}.{round:020}")
}

fn part_key(prefix: &str, i: usize) -> String {
    format!("{prefix}.p{i:04}")
}
