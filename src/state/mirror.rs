//! The mirror of the sled store into the state bucket (`--state nats`).
//!
//! ```text
//! store writer thread ──Round (bounded, in order)──► Uploader task ──► bucket (wal round, head CAS)
//!   (diff of the whole store after each flushed group)       └──► the group's replies, once committed
//! ```
//! Invariants:
//! - A write to a mirrored store returns only once the bucket holds it (its round committed):
//!   the bucket is never behind what a caller was told is saved, so a standby that takes over
//!   resumes from at least every checkpoint, `seq` floor and source id this holder relied on.
//! - Rounds are committed in the order the writer thread made them; rounds queued together are
//!   committed as one (the ops concatenated, still in order).
//! - The first round of an uploader is always a new generation's base (the writer's first diff
//!   is the whole store), committed by CAS on the head revision read before the restore: a
//!   takeover either wins the head or fails, never interleaves with the previous holder.
//! - After the first failure that is not transient (head changed by another holder, lease
//!   lost, damage) every round fails, at once: the run using the store must end.
//! - A transient NATS error is retried (same bytes, same round) while the lease is valid.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::bucket::{next_gen, Bucket, BucketError, Head, HeadAt};
use super::image::{self, Image, Ops, Tracker};
use super::lease::Fence;
use super::StateError;
use crate::checkpoint::Done;

/// Rounds queued between the writer thread and the uploader (then the writer thread waits).
const QUEUE: usize = 16;
/// A new generation (a base of the whole store) once the wal holds this many rounds...
const MAX_ROUNDS: u64 = 500;
/// ... or this many bytes.
const MAX_WAL_BYTES: usize = 4 << 20;

struct Round {
    ops: Ops,
    replies: Vec<Done>,
}

/// The writer-thread side, given to `checkpoint::set_mirror`.
pub struct StoreMirror {
    tracker: Mutex<Tracker>,
    rounds: mpsc::Sender<Round>,
}

impl crate::checkpoint::Mirror for StoreMirror {
    fn after_flush(&self, db: &sled::Db, replies: Vec<Done>) {
        let diff = self
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .diff(db);
        let ops = match diff {
            Ok(ops) => ops,
            Err(e) => return fail(replies, &e.to_string()),
        };
        // The writer thread is no runtime thread: a blocking send is backpressure, not a stall
        // of the runtime.
        if let Err(back) = self.rounds.blocking_send(Round { ops, replies }) {
            fail(back.0.replies, "the state mirror has stopped");
        }
    }
}

fn fail(replies: Vec<Done>, why: &str) {
    let e = sled::Error::Io(std::io::Error::other(format!(
        "--state nats: the state bucket does not hold this write: {why}"
    )));
    for r in replies {
        r(&Err(e.clone()));
    }
}

/// The async side: commits rounds to the bucket.
pub struct Uploader {
    bucket: Bucket,
    rounds: mpsc::Receiver<Round>,
    /// `head` as this uploader last wrote (or, before its first commit, read) it.
    at: HeadAt,
    holder: String,
    /// Token of this process in generation labels.
    token: String,
    fence: Fence,
    /// The store as committed (so that a new base needs no read of the store).
    image: Image,
    gen: Option<String>,
    round: u64,
    wal_bytes: usize,
}

/// A mirror for a store about to be opened (empty, or restored from `at`), and the uploader to
/// spawn. `at` is the head the restore read: the first commit CASes against it.
pub fn new(bucket: Bucket, at: HeadAt, holder: &str, fence: Fence) -> (Arc<StoreMirror>, Uploader) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let mirror = Arc::new(StoreMirror {
        tracker: Mutex::new(Tracker::default()),
        rounds: tx,
    });
    let uploader = Uploader {
        bucket,
        rounds: rx,
        at,
        holder: holder.to_string(),
        token: token(),
        fence,
        image: Image::new(),
        gen: None,
        round: 0,
        wal_bytes: 0,
    };
    (mirror, uploader)
}

/// A random token for generation labels (key characters only).
pub fn token() -> String {
    let mut s = String::with_capacity(12);
    for _ in 0..12 {
        s.push(fastrand::alphanumeric());
    }
    s
}

impl Uploader {
    /// Commits rounds until the store's writer is gone; the first definite failure fails every
    /// later round and is returned.
    pub async fn run(mut self) -> Result<(), StateError> {
        while let Some(first) = self.rounds.recv().await {
            let mut ops = first.ops;
            let mut replies = first.replies;
            while let Ok(more) = self.rounds.try_recv() {
                ops.extend(more.ops);
                replies.extend(more.replies);
            }
            match self.commit(ops).await {
                Ok(()) => {
                    for r in replies {
                        r(&Ok(()));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "--state nats: the state bucket cannot take the store's writes; this run stops");
                    fail(replies, &e.to_string());
                    self.rounds.close();
                    while let Some(r) = self.rounds.recv().await {
                        fail(r.replies, &e.to_string());
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn commit(&mut self, ops: Ops) -> Result<(), StateError> {
        if ops.is_empty() && self.gen.is_some() {
            return Ok(());
        }
        let bytes = image::encode(&ops);
        image::apply(&mut self.image, ops);
        let compact = self.round >= MAX_ROUNDS || self.wal_bytes + bytes.len() > MAX_WAL_BYTES;
        match &self.gen {
            Some(gen) if !compact => {
                let gen = gen.clone();
                let round = self.round + 1;
                let head = Head {
                    version: 1,
                    gen: gen.clone(),
                    upto_round: round,
                    holder: self.holder.clone(),
                };
                self.retrying(|b, at| {
                    let (gen, bytes, head) = (gen.clone(), bytes.clone(), head.clone());
                    async move {
                        b.put_round(&gen, round, &bytes).await?;
                        b.cas_head(&at, &head).await
                    }
                })
                .await?;
                self.at.head = Some(head);
                self.round = round;
                self.wal_bytes += bytes.len();
            }
            _ => self.new_base().await?,
        }
        Ok(())
    }

    /// Writes the whole store as a new generation and commits it; then purges the older ones.
    async fn new_base(&mut self) -> Result<(), StateError> {
        let gen = next_gen(self.at.head.as_ref(), &self.token);
        let head = Head {
            version: 1,
            gen: gen.clone(),
            upto_round: 0,
            holder: self.holder.clone(),
        };
        let image = Arc::new(std::mem::take(&mut self.image));
        let done = self
            .retrying(|b, at| {
                let (gen, image, head) = (gen.clone(), image.clone(), head.clone());
                async move {
                    b.put_base(&gen, &image).await?;
                    b.cas_head(&at, &head).await
                }
            })
            .await;
        self.image = Arc::try_unwrap(image).unwrap_or_else(|a| (*a).clone());
        done?;
        let counter = head.counter();
        tracing::debug!(gen = %gen, keys = self.image.len(), "state: new generation committed");
        self.at.head = Some(head);
        self.gen = Some(gen);
        self.round = 0;
        self.wal_bytes = 0;
        // Garbage only: a failure here is retried at the next generation.
        if let Err(e) = self.bucket.purge_below(counter).await {
            tracing::warn!(error = %e, "state: old generations not removed yet");
        }
        Ok(())
    }

    /// Runs `attempt` (writes, then the head CAS against `self.at`) until it commits, retrying
    /// transient errors while the lease holds; sets the new head revision.
    async fn retrying<F, Fut>(&mut self, attempt: F) -> Result<(), StateError>
    where
        F: Fn(Bucket, HeadAt) -> Fut,
        Fut: std::future::Future<Output = Result<u64, BucketError>>,
    {
        let mut backoff =
            crate::backoff::Backoff::with(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            if !self.fence.valid() {
                return Err(StateError::LeaseLost);
            }
            match attempt(self.bucket.clone(), self.at.clone()).await {
                Ok(revision) => {
                    self.at.revision = revision;
                    return Ok(());
                }
                Err(BucketError::Nats(detail)) => {
                    tracing::warn!(error = %detail, "state: writing to the bucket failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(BucketError::Conflict) => {
                    self.fence.lose();
                    return Err(StateError::Conflict);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
