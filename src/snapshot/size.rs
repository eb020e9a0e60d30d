//! How many rows the next chunk asks for: a small controller that aims every chunk's read at
//! a target time, so a table of small rows gets large chunks and a table of wide rows (or a
//! busy server) small ones.
//!
//! Invariants:
//! - The size always stays within `[min, max]`.
//! - One observation moves the size by at most a factor of 2 up (`GROW`) or 4 down
//!   (`SHRINK`), so one outlier (a cold buffer pool, a stall) cannot swing it to an extreme.
//! - A chunk that came back short (the table's end) never makes the next one larger: it says
//!   nothing about how long a full chunk takes.

use std::time::Duration;

/// The most one observation may multiply the size by.
const GROW: f64 = 2.0;
/// The most one observation may divide the size by.
const SHRINK: f64 = 4.0;

#[derive(Debug, Clone)]
pub struct ChunkSizer {
    rows: u32,
    min: u32,
    max: u32,
    target: Duration,
}

impl ChunkSizer {
    /// Starts at `initial` rows (clamped to `[min, max]`; `min` at least 1).
    pub fn new(target: Duration, initial: u32, min: u32, max: u32) -> ChunkSizer {
        let min = min.max(1);
        let max = max.max(min);
        ChunkSizer {
            rows: initial.clamp(min, max),
            min,
            max,
            target,
        }
    }

    /// The size of the next chunk, in rows.
    pub fn rows(&self) -> u32 {
        self.rows
    }

    /// Learns from a chunk that asked for [`Self::rows`] rows, got `got` and took `took`.
    pub fn observe(&mut self, got: u32, took: Duration) {
        let asked = self.rows;
        let full = got >= asked;
        let next = if took.is_zero() || got == 0 {
            // Too fast to measure (or nothing read): grow if it was a full chunk.
            if full {
                asked as f64 * GROW
            } else {
                asked as f64
            }
        } else {
            let ideal = got as f64 * self.target.as_secs_f64() / took.as_secs_f64();
            let lo = asked as f64 / SHRINK;
            let hi = if full {
                asked as f64 * GROW
            } else {
                asked as f64
            };
            ideal.clamp(lo, hi.max(lo))
        };
        self.rows = (next.round() as u64).clamp(self.min as u64, self.max as u64) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `n` chunks to a server that reads `rate` rows per second.
    fn run(s: &mut ChunkSizer, rate: f64, n: usize) {
        for _ in 0..n {
            let rows = s.rows();
            s.observe(rows, Duration::from_secs_f64(rows as f64 / rate));
        }
    }

    #[test]
    fn converges_on_the_target_time_at_a_steady_rate() {
        let mut s = ChunkSizer::new(Duration::from_millis(500), 1000, 100, 1_000_000);
        run(&mut s, 200_000.0, 20);
        assert_eq!(s.rows(), 100_000);
    }

    #[test]
    fn shrinks_when_the_server_slows_down_but_at_most_fourfold_per_chunk() {
        let mut s = ChunkSizer::new(Duration::from_millis(500), 100_000, 100, 1_000_000);
        s.observe(100_000, Duration::from_secs(50));
        assert_eq!(s.rows(), 25_000);
        run(&mut s, 2_000.0, 10);
        assert_eq!(s.rows(), 1_000);
    }

    #[test]
    fn grows_at_most_twofold_per_chunk() {
        let mut s = ChunkSizer::new(Duration::from_millis(500), 1000, 100, 1_000_000);
        s.observe(1000, Duration::from_millis(1));
        assert_eq!(s.rows(), 2000);
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut s = ChunkSizer::new(Duration::from_millis(500), 1000, 500, 4000);
        run(&mut s, 1e9, 10);
        assert_eq!(s.rows(), 4000);
        run(&mut s, 1.0, 10);
        assert_eq!(s.rows(), 500);
        assert_eq!(ChunkSizer::new(Duration::ZERO, 0, 0, 0).rows(), 1);
    }

    #[test]
    fn a_short_last_chunk_does_not_grow_it() {
        let mut s = ChunkSizer::new(Duration::from_millis(500), 1000, 100, 1_000_000);
        s.observe(10, Duration::from_micros(1));
        assert_eq!(s.rows(), 1000);
        s.observe(0, Duration::ZERO);
        assert_eq!(s.rows(), 1000);
        // ...but a slow short one may shrink it.
        s.observe(10, Duration::from_secs(1));
        assert_eq!(s.rows(), 250);
    }
}
