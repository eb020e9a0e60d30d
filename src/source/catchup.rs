//! The catch-up report: when `binsync run` starts behind the source's binlog end, where it
//! reads, how far behind it is in bytes and in time, how fast it reads, and when it should be
//! caught up, until it is. On a terminal (stderr) a live line rewritten every second; else a
//! log line at once and every [`LOG_EVERY`], and one line when caught up.
//!
//! - Bytes behind: the source's binlog end, as its file list and sizes say (`SHOW BINARY
//!   LOGS`, asked every [`REFRESH`] on a connection of its own), less the read position. It
//!   is also the `binsync_binlog_bytes_behind` gauge, measured for the whole run.
//! - Time behind is the lag (`crate::metrics::lag`); the rate is binlog bytes read per second
//!   over the last [`RATE_WINDOW`]; the time to go divides the bytes behind by that rate less
//!   the rate the source's binlog grows.
//! - Caught up: the source's last word was a heartbeat and the sink confirmed everything read;
//!   or (a busy source sends no heartbeat) at most [`SLACK`] is left to read and the lag is
//!   under [`DELIVERED_LAG`]. Reading fast into a sink that is down is not catching up.
//! - Nothing here touches the stream: it reads what `crate::metrics` keeps. A failed query is
//!   tried again at the next refresh (the stream has its own reconnects and errors).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{binary_logs, SourceConfig};
use crate::units;

/// How often the source's binlog list is read.
pub const REFRESH: Duration = Duration::from_secs(3);
/// How often a log line is written while behind (not on a terminal).
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Behind by at most this much is caught up (a busy source is never at zero)...
const SLACK: u64 = 1 << 20;
/// ...once what was read is delivered, too: the lag is under this.
const DELIVERED_LAG: Duration = Duration::from_secs(5);
/// The ticks are a second apart: a line due within this of a tick is written at it.
const TICK_SLACK: Duration = Duration::from_millis(500);
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// The report's task; dropping it ends the report (and the live line, if shown).
pub struct Watch {
    task: tokio::task::JoinHandle<()>,
    shown: Arc<AtomicBool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
        if self.shown.load(Ordering::Relaxed) {
            eprintln!();
        }
    }
}

/// Starts watching `src`'s binlog end; `start` is where the stream starts reading.
pub fn watch(src: SourceConfig, start: (String, u64)) -> Watch {
    let shown = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(report(src, start, shown.clone()));
    Watch { task, shown }
}

/// Binlog bytes from `file`:`offset` to the end of the files listed (oldest first); None when
/// the file is not listed (purged, or another server's).
pub fn bytes_behind(logs: &[(String, u64)], file: &str, offset: u64) -> Option<u64> {
    let i = logs.iter().position(|(f, _)| f == file)?;
    Some(logs[i].1.saturating_sub(offset) + logs[i + 1..].iter().map(|(_, size)| size).sum::<u64>())
}

enum State {
    /// Not measured yet.
    Unknown,
    Behind {
        since: Instant,
        read_at_start: u64,
        last_line: Instant,
    },
    /// Caught up (or never behind): only the gauge is kept.
    Done,
}

async fn report(src: SourceConfig, start: (String, u64), shown: Arc<AtomicBool>) {
    let tty = std::io::stderr().is_terminal();
    let mut conn: Option<mysql_async::Conn> = None;
    let mut refreshed: Option<Instant> = None;
    let mut logs: Vec<(String, u64)> = Vec::new();
    // (when, the binlog's total size) at the last two refreshes: how fast it grows.
    let mut growth: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut reads: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut state = State::Unknown;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if refreshed.is_none_or(|t| t.elapsed() >= REFRESH) {
            refreshed = Some(Instant::now());
            match list(&src, &mut conn).await {
                Some(l) => {
                    growth.push_back((Instant::now(), l.iter().map(|(_, s)| s).sum()));
                    if growth.len() > 2 {
                        growth.pop_front();
                    }
                    logs = l;
                }
                None => continue,
            }
        }
        let (mut file, mut offset) = crate::metrics::read_position();
        if file.is_empty() {
            (file, offset) = start.clone();
        }
        let Some(behind) = bytes_behind(&logs, &file, offset) else {
            crate::metrics::bytes_behind(None);
            continue;
        };
        crate::metrics::bytes_behind(Some(behind));
        let read = crate::metrics::bytes_read();
        reads.push_back((Instant::now(), read));
        while reads
            .front()
            .is_some_and(|(t, _)| t.elapsed() > RATE_WINDOW)
        {
            reads.pop_front();
        }
        match &mut state {
            State::Unknown if behind > SLACK => {
                state = State::Behind {
                    since: Instant::now(),
                    read_at_start: read,
                    last_line: Instant::now(),
                };
                if !tty {
                    log_line(&file, offset, behind, &reads, &growth);
                }
            }
            State::Unknown => state = State::Done,
            State::Behind {
                since,
                read_at_start,
                last_line,
            } => {
                if caught_up(behind) {
                    if shown.swap(false, Ordering::Relaxed) {
                        eprint!("\r\x1b[2K");
                    }
                    tracing::info!(
                        took = %units::duration(since.elapsed()),
                        read = %units::bytes(read - *read_at_start),
                        position = %format!("{file}:{offset}"),
                        "caught up with the source's binlog end"
                    );
                    state = State::Done;
                } else if tty {
                    eprint!(
                        "\r\x1b[2Kcatch-up: {}",
                        summary(&file, offset, behind, &reads, &growth)
                    );
                    shown.store(true, Ordering::Relaxed);
                } else if last_line.elapsed() + TICK_SLACK >= LOG_EVERY {
                    *last_line = Instant::now();
                    log_line(&file, offset, behind, &reads, &growth);
                }
            }
            State::Done => {}
        }
    }
}

/// Caught up: the source had nothing newer (a heartbeat) and the sink confirmed everything
/// read, or, on a busy source, little is left to read and what was read is delivered.
fn caught_up(behind: u64) -> bool {
    crate::metrics::caught_up()
        || (behind <= SLACK && crate::metrics::lag().is_some_and(|l| l < DELIVERED_LAG))
}

/// The source's binlog files and sizes, on the report's own connection (made again after
/// a failure).
async fn list(
    src: &SourceConfig,
    conn: &mut Option<mysql_async::Conn>,
) -> Option<Vec<(String, u64)>> {
    if conn.is_none() {
        match src.connect_once().await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                tracing::debug!(error = %e, "catch-up report: cannot reach the source now");
                return None;
            }
        }
    }
    let c = conn.as_mut()?;
    match binary_logs(c, src).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::debug!(error = %e, "catch-up report: SHOW BINARY LOGS failed");
            *conn = None;
            None
        }
    }
}

/// Bytes read per second over the window (None: one sample yet), and how fast the binlog
/// grows.
fn rates(
    reads: &VecDeque<(Instant, u64)>,
    growth: &VecDeque<(Instant, u64)>,
) -> (Option<f64>, f64) {
    let per_sec = |q: &VecDeque<(Instant, u64)>| match (q.front(), q.back()) {
        (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
            Some(b1.saturating_sub(*b0) as f64 / t1.duration_since(*t0).as_secs_f64())
        }
        _ => None,
    };
    (per_sec(reads), per_sec(growth).unwrap_or(0.0))
}

fn rate_text(rate: Option<f64>) -> String {
    rate.map_or_else(|| "?".into(), |r| format!("{}/s", units::bytes(r as u64)))
}

/// `FILE:POS, 1.2 GiB and 3m 10s behind, reading 45.0 MiB/s, about 30 s to go`
fn summary(
    file: &str,
    offset: u64,
    behind: u64,
    reads: &VecDeque<(Instant, u64)>,
    growth: &VecDeque<(Instant, u64)>,
) -> String {
    let (rate, grows) = rates(reads, growth);
    format!(
        "at {file}:{offset}, {} and {} behind, reading {}, {}",
        units::bytes(behind),
        lag_text(),
        rate_text(rate),
        eta_text(behind, rate, grows)
    )
}

fn lag_text() -> String {
    crate::metrics::lag().map_or_else(|| "an unknown time".into(), units::duration)
}

fn eta_text(behind: u64, rate: Option<f64>, grows: f64) -> String {
    if behind <= SLACK {
        return "everything read; waiting for the sink to confirm it".into();
    }
    let Some(rate) = rate else {
        return "time to go not known yet".into();
    };
    let gain = rate - grows;
    if gain > 0.0 {
        format!(
            "about {} to go",
            units::duration(Duration::from_secs_f64(behind as f64 / gain))
        )
    } else if rate > 0.0 {
        "not gaining: the source writes as fast as binsync reads".into()
    } else {
        "not reading now (the sink is slow or down, or the source is not reached)".into()
    }
}

fn log_line(
    file: &str,
    offset: u64,
    behind: u64,
    reads: &VecDeque<(Instant, u64)>,
    growth: &VecDeque<(Instant, u64)>,
) {
    let (rate, grows) = rates(reads, growth);
    tracing::info!(
        position = %format!("{file}:{offset}"),
        behind = %units::bytes(behind),
        lag = %lag_text(),
        rate = %rate_text(rate),
        eta = %eta_text(behind, rate, grows),
        "catching up with the source's binlog end"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_behind_adds_the_rest_of_the_file_and_every_later_one() {
        let logs = vec![
            ("b.000001".to_string(), 1000),
            ("b.000002".to_string(), 500),
            ("b.000003".to_string(), 200),
        ];
        assert_eq!(bytes_behind(&logs, "b.000002", 100), Some(400 + 200));
        assert_eq!(bytes_behind(&logs, "b.000003", 200), Some(0));
        assert_eq!(bytes_behind(&logs, "b.000001", 4), Some(996 + 700));
        assert_eq!(bytes_behind(&logs, "b.000009", 4), None, "not listed");
    }

    #[test]
    fn the_time_to_go_says_when_it_cannot_be_told() {
        let mib = 1 << 20;
        assert_eq!(
            eta_text(100 * mib, Some(10.0 * mib as f64), 0.0),
            "about 10.0 s to go"
        );
        assert!(eta_text(100 * mib, Some(100.0), 100.0).starts_with("not gaining"));
        assert!(eta_text(100 * mib, Some(0.0), 0.0).starts_with("not reading"));
        assert_eq!(eta_text(100 * mib, None, 0.0), "time to go not known yet");
        assert!(eta_text(1000, Some(0.0), 0.0).starts_with("everything read"));
    }
}
