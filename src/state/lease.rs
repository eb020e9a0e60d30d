//! The lease: which of several binsync processes on the same stream is the active one.
//!
//! A key `holder` in a bucket of its own (`binsync_lease_<stream>`), value JSON
//! `{holder, renewed_at_unix_ms}`. nats-server 2.9 has no per-key TTL, so time is read on each
//! process's own monotonic clock, never across machines:
//! - A candidate takes the lease when the key is absent (create), or when its revision did not
//!   change for a whole lease period as the candidate saw it (update with that revision).
//! - The holder renews every period/3 by update with the revision it last wrote. Its lease is
//!   valid until the start of its last successful renewal request plus 9/10 of the period: a
//!   candidate first saw that renewal's revision after the request started, and waits a whole
//!   period from then, so the holder's [`Fence`] is invalid before anyone can take over (the
//!   tenth left over covers a publish already in flight and clocks running at slightly
//!   different rates).
//! - A renewal that fails its CAS (someone took the lease) or no renewal before the deadline
//!   (the process was stopped, NATS unreachable) loses the lease: the fence turns invalid for
//!   good and [`Fence::lost`] resolves.
//! - A holder that stops cleanly deletes the key (with its revision), so a standby takes over
//!   at once instead of after a period.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::StateError;
use crate::shutdown::Shutdown;

const KEY: &str = "holder";

/// What the `holder` key says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    holder: String,
    renewed_at_unix_ms: u64,
}

/// Whether this process may still publish: cheap to clone and to check.
#[derive(Clone, Debug)]
pub struct Fence {
    inner: Arc<FenceInner>,
}

#[derive(Debug)]
struct FenceInner {
    /// Instants are kept as nanoseconds after this one.
    origin: Instant,
    deadline_nanos: AtomicU64,
    lost: AtomicBool,
    changed: tokio::sync::watch::Sender<()>,
}

/// The lease is lost: nothing more may be published.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the lease on the stream is lost (another binsync took over, or this one could not renew it in time): nothing more is published by this process")]
pub struct LeaseLost;

impl Fence {
    /// Valid until `deadline` unless extended (a lease just taken, or a test's).
    pub(crate) fn new(deadline: Instant) -> Fence {
        let origin = Instant::now();
        let fence = Fence {
            inner: Arc::new(FenceInner {
                origin,
                deadline_nanos: AtomicU64::new(0),
                lost: AtomicBool::new(false),
                changed: tokio::sync::watch::channel(()).0,
            }),
        };
        fence.extend(deadline);
        fence
    }

    /// The lease is held and its deadline not passed.
    pub fn valid(&self) -> bool {
        !self.inner.lost.load(Ordering::Acquire) && Instant::now() < self.deadline()
    }

    /// `Err` once the lease is lost: what a sink calls before every publish.
    pub fn check(&self) -> Result<(), LeaseLost> {
        if self.valid() {
            Ok(())
        } else {
            self.lose();
            Err(LeaseLost)
        }
    }

    /// Until when the lease is valid, if not renewed again (on this process's monotonic clock).
    pub fn deadline(&self) -> Instant {
        self.inner.origin + Duration::from_nanos(self.inner.deadline_nanos.load(Ordering::Acquire))
    }

    /// Resolves once the lease is lost (at once if it is).
    pub async fn lost(&self) {
        let mut changed = self.inner.changed.subscribe();
        loop {
            if !self.valid() {
                self.lose();
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(self.deadline()) => {}
                _ = changed.changed() => {}
            }
        }
    }

    fn extend(&self, to: Instant) {
        let nanos = to.saturating_duration_since(self.inner.origin).as_nanos() as u64;
        self.inner.deadline_nanos.fetch_max(nanos, Ordering::AcqRel);
        self.inner.changed.send_replace(());
    }

    /// Invalid for good.
    pub(crate) fn lose(&self) {
        if !self.inner.lost.swap(true, Ordering::AcqRel) {
            self.inner.changed.send_replace(());
        }
    }
}

/// The lease, held.
pub struct Lease {
    kv: kv::Store,
    id: String,
    period: Duration,
    revision: u64,
    fence: Fence,
}

/// How long a holder's renewal may keep failing before the lease counts as lost: its deadline.
fn valid_for(period: Duration) -> Duration {
    period * 9 / 10
}

fn value(id: &str) -> bytes::Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    serde_json::to_vec(&Holder {
        holder: id.to_string(),
        renewed_at_unix_ms: now,
    })
    .unwrap_or_default()
    .into()
}

/// Waits as a standby until this process (`id`) holds the lease; None if `shutdown` fired first.
/// Logs once who holds it while waiting, and how long the wait took.
pub async fn acquire(
    kv: &kv::Store,
    id: &str,
    period: Duration,
    shutdown: &mut Shutdown,
) -> Result<Option<Lease>, StateError> {
    let started = Instant::now();
    let poll = (period / 10).clamp(Duration::from_millis(20), Duration::from_secs(1));
    // The revision last seen, and since when (on our clock).
    let mut seen: Option<(u64, Instant)> = None;
    let mut said: Option<String> = None;
    let mut previous = None;
    loop {
        if shutdown.is_requested() {
            return Ok(None);
        }
        let t0 = Instant::now();
        let taken = match kv.entry(KEY).await {
            Ok(None) => try_create(kv, id).await,
            Ok(Some(e)) if e.operation != kv::Operation::Put => try_create(kv, id).await,
            Ok(Some(e)) => {
                let holder = serde_json::from_slice::<Holder>(&e.value)
                    .map_or_else(|_| "an unreadable holder".to_string(), |h| h.holder);
                if said.as_deref() != Some(holder.as_str()) {
                    tracing::info!(holder = %holder, "standby: {holder} holds the lease");
                    said = Some(holder.clone());
                }
                match seen {
                    Some((rev, since)) if rev == e.revision && since.elapsed() >= period => {
                        previous = Some(holder);
                        match kv.update(KEY, value(id), e.revision).await {
                            Ok(r) => Some(r),
                            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                                None
                            }
                            Err(err) => {
                                tracing::debug!(error = %err, "taking the lease");
                                None
                            }
                        }
                    }
                    Some((rev, _)) if rev == e.revision => None,
                    _ => {
                        seen = Some((e.revision, Instant::now()));
                        None
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the lease");
                None
            }
        };
        if let Some(revision) = taken {
            let waited = started.elapsed();
            match &previous {
                Some(p) => {
                    tracing::info!(waited = ?waited, previous = %p, "took over the lease from {p} after {}", humantime::format_duration(round_ms(waited)))
                }
                None => {
                    tracing::info!(waited = ?waited, "took the lease after {}", humantime::format_duration(round_ms(waited)))
                }
            }
            return Ok(Some(Lease {
                kv: kv.clone(),
                id: id.to_string(),
                period,
                revision,
                fence: Fence::new(t0 + valid_for(period)),
            }));
        }
        if !crate::backoff::sleep_unless_stopped(poll, shutdown).await {
            return Ok(None);
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

async fn try_create(kv: &kv::Store, id: &str) -> Option<u64> {
    match kv.create(KEY, value(id)).await {
        Ok(r) => Some(r),
        Err(e) => {
            if e.kind() != kv::CreateErrorKind::AlreadyExists {
                tracing::debug!(error = %e, "taking the free lease");
            }
            None
        }
    }
}

impl Lease {
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Renews the lease every period/3 until it is lost (returns [`LeaseLost`]) or `release`
    /// fires (then deletes the key so a standby takes over at once, and returns Ok).
    pub async fn keep(mut self, mut release: Shutdown) -> Result<(), LeaseLost> {
        let every = self.period / 3;
        loop {
            tokio::select! {
                _ = release.requested() => {
                    self.fence.lose();
                    let _ = tokio::time::timeout(every, self.kv.delete_expect_revision(KEY, Some(self.revision))).await;
                    tracing::info!("lease released");
                    return Ok(());
                }
                _ = self.fence.lost() => {
                    tracing::error!(holder = %self.id, "lease lost: not renewed within its period (this process was stalled, or NATS did not answer)");
                    return Err(LeaseLost);
                }
                _ = tokio::time::sleep(every) => {}
            }
            self.renew().await?;
        }
    }

    /// One renewal: Ok also when it failed in a way that may pass (the deadline decides).
    pub async fn renew(&mut self) -> Result<(), LeaseLost> {
        let t0 = Instant::now();
        let left = self.fence.deadline().saturating_duration_since(t0);
        let update = self.kv.update(KEY, value(&self.id), self.revision);
        match tokio::time::timeout(left.max(Duration::from_millis(1)), update).await {
            Ok(Ok(r)) if self.fence.valid() => {
                self.revision = r;
                self.fence.extend(t0 + valid_for(self.period));
                Ok(())
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                self.fence.lose();
                tracing::error!(holder = %self.id, "lease lost: another binsync holds it now");
                Err(LeaseLost)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the lease could not be renewed; trying again until its deadline");
                Ok(())
            }
            // Renewed only after the deadline (or not answered by then): lost all the same.
            _ => {
                self.fence.lose();
                Err(LeaseLost)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fence_expires_at_its_deadline_and_lost_resolves() {
        let fence = Fence::new(Instant::now() + Duration::from_secs(3));
        assert!(fence.valid() && fence.check().is_ok());
        let lost = {
            let f = fence.clone();
            tokio::spawn(async move { f.lost().await })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        fence.extend(Instant::now() + Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(2900)).await;
        assert!(fence.valid(), "extended");
        assert!(!lost.is_finished());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!fence.valid());
        lost.await.unwrap();
        // Lost stays lost, even if a late renewal tried to extend it.
        fence.extend(Instant::now() + Duration::from_secs(10));
        assert!(fence.check().is_err());
    }
}
