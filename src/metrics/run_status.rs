//! `run-status.json` in the state dir: what a running `binsync run` publishes every
//! [`EVERY`] for `binsync status`, which cannot open the store the run holds locked. Written
//! whole to a temporary file and renamed over the old one (a reader never sees half of it),
//! not fsynced (informational). The last write, as the run ends, sets `ended_unix_ms`; a
//! file without it whose writer no longer holds the state dir was left by a run that died.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const FILE: &str = "run-status.json";
/// How often a running binsync rewrites it.
pub const EVERY: Duration = Duration::from_secs(2);
/// The window of the throughput figure.
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub pid: u32,
    pub started_unix_ms: u64,
    pub updated_unix_ms: u64,
    /// Set by the last write of a run that ended (stopped, caught up, or failed).
    pub ended_unix_ms: Option<u64>,
    /// The source in use: its URL (never a password) and what the server is.
    pub source: Option<String>,
    pub server: Option<String>,
    pub connected: bool,
    /// See `metrics::lag`; None: not known.
    pub lag_seconds: Option<f64>,
    pub caught_up: bool,
    /// Changes the sink confirmed since the process started.
    pub delivered_changes: u64,
    /// Changes confirmed per second over the last minute (or since the start, if shorter).
    pub changes_per_second: f64,
    /// The seconds that figure covers.
    pub throughput_window_seconds: f64,
    /// `file:offset` read up to.
    pub read_position: Option<String>,
    /// Binlog bytes between the read position and the source's end, as last measured.
    pub bytes_behind: Option<u64>,
    pub dlq_entries: u64,
}

/// Rewrites the state dir's `run-status.json` every [`EVERY`] while it lives; its drop
/// writes the last one (`ended_unix_ms` set).
pub struct Writer {
    task: tokio::task::JoinHandle<()>,
    dir: PathBuf,
    started_unix_ms: u64,
}

impl Writer {
    /// Starts writing into `dir` (whose store this process holds).
    pub fn start(dir: &Path) -> Writer {
        let started_unix_ms = super::now_ms();
        let d = dir.to_path_buf();
        let task = tokio::spawn(async move {
            let mut samples = VecDeque::new();
            let mut tick = tokio::time::interval(EVERY);
            loop {
                tick.tick().await;
                let status = snapshot(started_unix_ms, &mut samples, None);
                write(&d, &status);
            }
        });
        Writer {
            task,
            dir: dir.to_path_buf(),
            started_unix_ms,
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
        let mut samples = VecDeque::new();
        let status = snapshot(self.started_unix_ms, &mut samples, Some(super::now_ms()));
        // The throughput of the last minute is kept from the last periodic write.
        let last = read(&self.dir);
        let status = match last {
            Some(l) if l.started_unix_ms == self.started_unix_ms => RunStatus {
                changes_per_second: l.changes_per_second,
                throughput_window_seconds: l.throughput_window_seconds,
                ..status
            },
            _ => status,
        };
        write(&self.dir, &status);
    }
}

/// The status now; `samples` (time, delivered) keep the last minute for the throughput.
fn snapshot(
    started_unix_ms: u64,
    samples: &mut VecDeque<(std::time::Instant, u64)>,
    ended: Option<u64>,
) -> RunStatus {
    let now = std::time::Instant::now();
    let delivered = super::delivered_changes();
    samples.push_back((now, delivered));
    while samples
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
    {
        samples.pop_front();
    }
    let (t0, d0) = samples.front().copied().unwrap_or((now, delivered));
    let secs = now.duration_since(t0).as_secs_f64();
    let rate = if secs > 0.0 {
        delivered.saturating_sub(d0) as f64 / secs
    } else {
        0.0
    };
    let (file, offset) = super::read_position();
    let source = super::source();
    let behind = super::STATS
        .bytes_behind
        .load(std::sync::atomic::Ordering::Relaxed);
    RunStatus {
        pid: std::process::id(),
        started_unix_ms,
        updated_unix_ms: super::now_ms(),
        ended_unix_ms: ended,
        source: source.as_ref().map(|s| s.0.clone()),
        server: source.map(|s| s.1),
        connected: super::connected(),
        lag_seconds: super::lag().map(|l| l.as_secs_f64()),
        caught_up: super::caught_up(),
        delivered_changes: delivered,
        changes_per_second: rate,
        throughput_window_seconds: secs,
        read_position: (!file.is_empty()).then(|| format!("{file}:{offset}")),
        bytes_behind: (behind != u64::MAX).then_some(behind),
        dlq_entries: super::dlq_entries(),
    }
}

fn write(dir: &Path, status: &RunStatus) {
    let tmp = dir.join(".run-status.json.tmp");
    if let Ok(body) = serde_json::to_vec_pretty(status) {
        if std::fs::write(&tmp, body).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(FILE));
        }
    }
}

/// What the last (or the running) binsync published in `dir`, if anything.
pub fn read(dir: &Path) -> Option<RunStatus> {
    let raw = std::fs::read(dir.join(FILE)).ok()?;
    serde_json::from_slice(&raw).ok()
}
