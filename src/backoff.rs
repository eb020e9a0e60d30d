//! Capped exponential backoff with full jitter, shared by the source reconnect loop and the
//! HTTP sink's retries.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
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
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// A random delay in [min(50 ms, ceiling), ceiling], where the ceiling doubles per attempt up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_and_jittered() {
        let mut b = Backoff::new();
        let delays: Vec<_> = (0..40).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(30)));
        assert!(delays[..2].iter().all(|d| *d <= Duration::from_millis(200)));
        // Jitter: late delays are not all equal.
        let late: std::collections::HashSet<_> = delays[20..].iter().collect();
        assert!(late.len() > 1);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
