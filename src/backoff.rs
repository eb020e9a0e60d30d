//! Capped exponential backoff with full jitter: the one retry pace of binsync (source
//! reconnects, the HTTP sink's retries, waiting for disk space). Every wait observes the
//! [`Shutdown`] signal, so a stop is never stuck behind a backoff.

use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;

/// How long a retried operation must have been healthy before the pace starts over.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
    /// When the operation last came back after a failure (see [`Backoff::succeeded`]).
    healthy_since: Option<Instant>,
}

impl Backoff {
    /// 100 ms doubling up to 30 s.
    pub fn new() -> Self {
        Self::with(Duration::from_millis(100), Duration::from_secs(30))
    }

    pub fn with(base: Duration, cap: Duration) -> Self {
        Backoff {
            attempt: 0,
            base,
            cap,
            healthy_since: None,
        }
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The operation works again (a connection opened). If it is still working
    /// [`HEALTHY_AFTER`] later, when the next failure comes, the pace starts over from the
    /// shortest delay: a server restarted twice in a day does not wait as if it had failed
    /// twice in a row, even when nothing happened in between (an idle stream).
    pub fn succeeded(&mut self) {
        if self.healthy_since.is_none() {
            self.healthy_since = Some(Instant::now());
        }
    }

    /// A random delay in [min(50 ms, ceiling), ceiling], where the ceiling doubles per attempt
    /// up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        if self
            .healthy_since
            .is_some_and(|t| t.elapsed() >= HEALTHY_AFTER)
        {
            self.attempt = 0;
        }
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        self.healthy_since = None;
        let hi = ceiling.as_millis() as u64;
        let lo = 50.min(hi);
        Duration::from_millis(fastrand::u64(lo..=hi.max(lo)))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Sleeps for `delay` (a server's `Retry-After`, say); false if shutdown came first.
pub async fn sleep_unless_stopped(delay: Duration, shutdown: &mut Shutdown) -> bool {
    if shutdown.is_requested() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.requested() => false,
    }
}

/// [`sleep_unless_stopped`] for a blocking thread (the file sink's): polls the signal, so a
/// stop ends the wait within 50 ms.
pub fn sleep_blocking_unless_stopped(delay: Duration, shutdown: &Shutdown) -> bool {
    let until = Instant::now() + delay;
    loop {
        if shutdown.is_requested() {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_and_jittered() {
        let mut b = Backoff::new();
        let delays: Vec<_> = (0..40).map(|_| b.next_delay()).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_millis(50) && *d <= Duration::from_secs(30)));
        assert!(delays[..2].iter().all(|d| *d <= Duration::from_millis(200)));
        // Jitter: late delays are not all equal.
        let late: std::collections::HashSet<_> = delays[20..].iter().collect();
        assert!(late.len() > 1);
        let mut fresh = Backoff::new();
        assert!(fresh.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn resets_only_after_staying_healthy() {
        let mut b = Backoff::new();
        for _ in 0..6 {
            b.next_delay();
        }
        b.succeeded();
        b.next_delay();
        assert_eq!(b.attempts(), 7, "back for a moment only: the pace goes on");
        b.succeeded();
        // As if the connection had opened HEALTHY_AFTER ago and stayed up.
        b.healthy_since = Some(Instant::now() - HEALTHY_AFTER);
        let first = b.next_delay();
        assert_eq!(b.attempts(), 1, "healthy for long enough: start over");
        assert!(first <= Duration::from_millis(100), "{first:?}");
        assert!(
            b.healthy_since.is_none(),
            "a failure ends the healthy stretch"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_shutdown() {
        let (trigger, mut s) = crate::shutdown::channel();
        let mut b = Backoff::with(Duration::from_secs(3600), Duration::from_secs(3600));
        b.attempt = 10;
        let waiting = tokio::spawn(async move {
            let delay = b.next_delay();
            sleep_unless_stopped(delay, &mut s).await
        });
        tokio::task::yield_now().await;
        trigger.fire();
        assert!(!waiting.await.unwrap(), "shutdown cuts the wait short");
        let (_t, mut s) = crate::shutdown::channel();
        assert!(sleep_unless_stopped(Duration::from_millis(10), &mut s).await);
    }
}
