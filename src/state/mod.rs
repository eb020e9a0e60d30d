//! `--state nats`: the state dir's store kept in NATS JetStream key-value buckets, and
//! binsync highly available on it (active/standby with a lease).
//!
//! - [`image`]: the sled store as (tree, key, value) data, diffs between two moments of it.
//! - [`bucket`]: the state bucket's layout (wal rounds, head by CAS, bases), restore.
//! - [`mirror`]: the store's writer thread hands every flushed group's diff to an uploader that
//!   commits it as a round before the writers get their answer.
//! - [`lease`]: the lease and its [`Fence`] (may this process still publish?).
//! - [`ha`]: `binsync run --state nats`: standby until the lease is ours, restore the state dir
//!   (a local cache) from the bucket, run the pipeline as a restart would, stop at once when
//!   the lease is lost.
//!
//! Invariants:
//! - The sled store stays the working store; the state dir is a cache, wiped and restored from
//!   the bucket at each takeover.
//! - The bucket is never behind a write the pipeline was told is saved (see [`mirror`]), and
//!   only the lease holder commits to it: a process that lost the lease fails its next head
//!   CAS, because the new holder commits a new generation at takeover.
//! - A process whose lease is lost publishes nothing more: the sink checks [`check_fence`]
//!   before every publish. (It cannot stop bytes already handed to the socket when it was
//!   frozen: the lease deadline keeps a tenth of the period for them.)

pub mod bucket;
pub mod ha;
pub mod image;
pub mod lease;
pub mod mirror;

use std::sync::RwLock;

pub use lease::{Fence, LeaseLost};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// NATS did not answer or failed in a way that may pass.
    #[error("--state nats: NATS: {0}")]
    Nats(String),
    /// Another binsync holds the state now.
    #[error("--state nats: another binsync changed the state bucket: it holds the lease now, this one stops")]
    Conflict,
    #[error("--state nats: {}", LeaseLost)]
    LeaseLost,
    #[error("--state nats: {0}")]
    Damaged(String),
    /// The local cache (`--state-dir`) cannot be written.
    #[error("--state nats: the local cache {dir}: {detail}; check the disk, or name another --state-dir")]
    Cache {
        dir: std::path::PathBuf,
        detail: String,
    },
    #[error("--state nats: cannot connect to NATS at {url}: {detail}; check the address (and BINSYNC_NATS_* credentials)")]
    Connect { url: String, detail: String },
}

/// The fence of the lease this process holds (`--state nats`), for the sink.
static FENCE: RwLock<Option<Fence>> = RwLock::new(None);

/// Installs (or with None removes) the fence [`check_fence`] consults.
pub fn install_fence(fence: Option<Fence>) {
    *FENCE.write().unwrap_or_else(|p| p.into_inner()) = fence;
}

/// The integration point for a sink: call before every publish. Ok without `--state nats`
/// (no fence installed); with it, Ok only while this process holds the lease. An `Err` is
/// definite for the run: publish nothing more, end the sink.
///
/// Cost: a read lock, two atomic loads and a monotonic clock read. A sink that publishes in a
/// tight loop may instead take [`current_fence`] once and call [`Fence::check`] on it.
pub fn check_fence() -> Result<(), LeaseLost> {
    match &*FENCE.read().unwrap_or_else(|p| p.into_inner()) {
        Some(f) => f.check(),
        None => Ok(()),
    }
}

/// The fence installed now, if any (see [`check_fence`]).
pub fn current_fence() -> Option<Fence> {
    FENCE.read().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
