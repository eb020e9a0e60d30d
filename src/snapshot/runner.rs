//! The snapshot stage: reads the tables the state dir says are to be snapshotted, chunk after
//! chunk, and hands each chunk to the source stage (`handoff`), which injects it into the
//! stream. Runs beside the stream for the whole run, so that `binsync snapshot --table`
//! requests are picked up while streaming goes on.
//!
//! Invariants:
//! - At most `parallel` tables are read at once, each with a connection of its own and at most
//!   one chunk out (memory: `parallel` chunks of at most `max_chunk_bytes`, about).
//! - Progress moves only with the checkpoint (`progress`): a restart resumes after the last
//!   chunk delivered, a chunk read but not delivered is read again.
//! - A transient failure (a lost connection, a deadlock) reads the chunk again on a new
//!   connection after a backoff; anything else ends the run with one line naming the fix
//!   ([`super::handoff::Msg::Failed`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::chunk::{prepare_session, ChunkBuf, ChunkReader};
use super::handoff::{Injected, Msg, ReadyChunk};
use super::plan::TablePlan;
use super::progress::{self, KeyValue, State, TableProgress};
use super::size::ChunkSizer;
use super::SnapshotError;
use crate::backoff::Backoff;
use crate::checkpoint::Store;
use crate::filter::Filter;
use crate::gtid::Flavor;
use crate::shutdown::Shutdown;
use crate::units;

/// `--snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotMode {
    #[default]
    WhenNeeded,
    Initial,
    Never,
}

/// How the snapshot stage reaches the source: a new connection, or why not
/// ([`SnapshotError::Connect`] says whether retrying may help). Given by the pipeline, so that
/// this module needs nothing of `source`, which injects its chunks.
pub type Connect = Arc<
    dyn Fn() -> futures_util::future::BoxFuture<'static, Result<mysql_async::Conn, SnapshotError>>
        + Send
        + Sync,
>;

/// The snapshot stage's settings (`--snapshot*`).
#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    pub mode: SnapshotMode,
    /// `--start` was given (by flag or file): `when-needed` then takes no snapshot.
    pub explicit_start: bool,
    pub parallel: usize,
    /// Rows per second, all tables together.
    pub rate: Option<u64>,
    /// `--snapshot-key`: db.table → paging columns.
    pub keys: HashMap<String, Vec<String>>,
    /// What a chunk's read aims to take.
    pub chunk_target: Duration,
    pub max_chunk_rows: u32,
    /// A chunk's rows are kept under about this many bytes (from the last chunk's row size).
    pub max_chunk_bytes: usize,
    /// How often a running process looks for `binsync snapshot --table` requests.
    pub poll: Duration,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            mode: SnapshotMode::WhenNeeded,
            explicit_start: false,
            parallel: 1,
            rate: None,
            keys: HashMap::new(),
            chunk_target: Duration::from_millis(100),
            max_chunk_rows: 50_000,
            max_chunk_bytes: 16 << 20,
            poll: Duration::from_secs(1),
        }
    }
}

impl SnapshotSettings {
    /// Whether a stream starting now with no snapshot record in the state dir takes one:
    /// `resumed` says the state dir holds a checkpoint.
    pub fn wanted_at_start(&self, resumed: bool) -> bool {
        match self.mode {
            SnapshotMode::Never => false,
            SnapshotMode::Initial => !resumed,
            SnapshotMode::WhenNeeded => !resumed && !self.explicit_start,
        }
    }
}

/// What every table task shares.
struct Ctx {
    settings: SnapshotSettings,
    connect: Connect,
    link: mpsc::Sender<Msg>,
    rate: Option<tokio::sync::Mutex<RateLimit>>,
    shutdown: Shutdown,
    /// Every table's progress as handed on, for `binsync status` (`progress::STATUS_FILE`).
    status: std::sync::Mutex<std::collections::BTreeMap<String, TableProgress>>,
    state_dir: std::path::PathBuf,
}

impl Ctx {
    fn publish(&self, p: &TableProgress) {
        let Ok(mut all) = self.status.lock() else {
            return;
        };
        all.insert(p.qualified(), p.clone());
        let list: Vec<TableProgress> = all.values().cloned().collect();
        let done = list.iter().filter(|t| t.state == State::Done).count();
        let rows = list.iter().map(|t| t.rows).sum();
        crate::metrics::snapshot_progress(rows, list.len(), done);
        progress::write_status(&self.state_dir, &list);
    }
}

/// Rows per second for all tables: each chunk waits until the rows before it fit the rate.
struct RateLimit {
    per_sec: u64,
    start: Instant,
    rows: u64,
}

impl RateLimit {
    /// How long to wait before reading `rows` more.
    fn wait_for(&mut self, rows: u64) -> Duration {
        let due = Duration::from_secs_f64(self.rows as f64 / self.per_sec as f64);
        self.rows += rows;
        due.saturating_sub(self.start.elapsed())
    }
}

/// The stage: runs until the source stage is gone (the link closes) or a definite failure.
pub struct Runner {
    pub settings: SnapshotSettings,
    /// A new connection to the source (with its TLS and credentials).
    pub connect: Connect,
    pub store: Store,
    pub filter: Filter,
    pub link: mpsc::Sender<Msg>,
    pub shutdown: Shutdown,
}

impl Runner {
    pub async fn run(self, tables: Vec<TableProgress>) {
        let link = self.link.clone();
        if let Err(why) = self.run_inner(tables).await {
            tracing::error!(error = %why, "snapshot stopped");
            let _ = link.send(Msg::Failed(why)).await;
        }
    }

    async fn run_inner(self, tables: Vec<TableProgress>) -> Result<(), String> {
        let ctx = Arc::new(Ctx {
            rate: self.settings.rate.map(|per_sec| {
                tokio::sync::Mutex::new(RateLimit {
                    per_sec,
                    start: Instant::now(),
                    rows: 0,
                })
            }),
            settings: self.settings.clone(),
            connect: self.connect.clone(),
            link: self.link.clone(),
            shutdown: self.shutdown.clone(),
            status: std::sync::Mutex::new(
                tables.iter().map(|t| (t.qualified(), t.clone())).collect(),
            ),
            state_dir: self.store.dir().to_path_buf(),
        });
        if let Some(t) = tables.first() {
            ctx.publish(t);
        }
        // On a terminal, a live line (overwritten each second); logs get `Report`'s lines.
        let live = {
            use std::io::IsTerminal;
            std::io::stderr()
                .is_terminal()
                .then(|| tokio::spawn(live_line(ctx.clone())))
        };
        let _live = AbortOnDrop(live);
        let mut queue: VecDeque<TableProgress> = tables
            .into_iter()
            .filter(|t| t.state != State::Done)
            .collect();
        let mut active: JoinSet<(String, Result<(), SnapshotError>)> = JoinSet::new();
        let mut running: Vec<String> = Vec::new();
        let mut busy = None;
        let mut poll = tokio::time::interval(self.settings.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while active.len() < self.settings.parallel {
                // A table asked for again while it is read waits for that read to end.
                let Some(i) = queue.iter().position(|t| !running.contains(&t.qualified())) else {
                    break;
                };
                let Some(t) = queue.remove(i) else { break };
                let name = t.qualified();
                running.push(name.clone());
                let ctx = ctx.clone();
                active.spawn(async move {
                    let r = table_task(&ctx, t).await;
                    (name, r)
                });
            }
            let now_busy = !active.is_empty();
            if busy != Some(now_busy) {
                busy = Some(now_busy);
                if self.link.send(Msg::Busy(now_busy)).await.is_err() {
                    return Ok(());
                }
            }
            tokio::select! {
                Some(done) = active.join_next(), if !active.is_empty() => {
                    let (name, result) = done.map_err(|e| format!("a snapshot task failed: {e}; this is a bug in binsync, please report it"))?;
                    running.retain(|n| *n != name);
                    match result {
                        Ok(()) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
                _ = poll.tick() => {
                    for t in self.requests().await? {
                        if !queue.iter().any(|q| q.qualified() == t.qualified()) {
                            queue.push_back(t);
                        }
                    }
                }
                _ = self.link.closed() => return Ok(()),
            }
        }
    }

    async fn requests(&self) -> Result<Vec<TableProgress>, String> {
        take_requests(&self.store, &self.filter).await
    }
}

/// Turns the requests waiting in the state dir into progress entries (saved), then removes
/// their files. Also called before a run starts streaming, so that a request waiting then
/// counts as snapshot work from the start (`--exit-at-end` waits for it).
pub async fn take_requests(store: &Store, filter: &Filter) -> Result<Vec<TableProgress>, String> {
    let found =
        progress::read_requests(store.dir()).map_err(|e| format!("snapshot request {e}"))?;
    let mut out = Vec::new();
    for (file, tables) in found {
        let mut entries = Vec::new();
        for t in &tables {
            let Some((db, table)) = t.split_once('.') else {
                tracing::warn!(table = %t, file = %file.display(), "snapshot request for a table not written as db.table; ignored");
                continue;
            };
            if !filter.matches(db, table) {
                tracing::warn!(table = %t, "snapshot request for a table this run does not capture (--include/--exclude); ignored");
                continue;
            }
            entries.push(TableProgress::new(db, table));
        }
        progress::save_now(store, entries.clone())
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = std::fs::remove_file(&file) {
            tracing::warn!(file = %file.display(), error = %e, "could not remove a snapshot request taken; it will be taken again");
        }
        for e in &entries {
            tracing::info!(table = %e.qualified(), "snapshot requested");
        }
        out.extend(entries);
    }
    Ok(out)
}

/// Reads one table's chunks until it is done; reconnects after transient failures.
async fn table_task(ctx: &Ctx, mut p: TableProgress) -> Result<(), SnapshotError> {
    let name = p.qualified();
    let mut backoff = Backoff::new();
    let mut buf = ChunkBuf::default();
    let mut sizer = ChunkSizer::new(
        ctx.settings.chunk_target,
        1000,
        100,
        ctx.settings.max_chunk_rows,
    );
    let mut report = Report::new(&p);
    if p.after.is_some() {
        tracing::info!(table = %name, rows_done = p.rows, chunks_done = p.chunks, "snapshot resuming after the last chunk delivered");
    } else {
        tracing::info!(table = %name, "snapshot starting");
    }
    loop {
        match table_pass(ctx, &mut p, &mut buf, &mut sizer, &mut report).await {
            Ok(Pass::Done) => {
                tracing::info!(table = %name, rows = p.rows, chunks = p.chunks, took = %units::duration(report.started.elapsed()), "snapshot done");
                return Ok(());
            }
            Ok(Pass::Gone) => return Ok(()),
            Err(SnapshotError::NoTable { table }) => {
                tracing::warn!(table = %table, "no snapshot: the table is gone from the source");
                return Ok(());
            }
            Ok(Pass::Replan) => continue,
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(table = %name, error = %e, retry_in = %units::duration(delay), "snapshot chunk failed; reading it again");
                let mut shutdown = ctx.shutdown.clone();
                if !crate::backoff::sleep_unless_stopped(delay, &mut shutdown).await {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

enum Pass {
    Done,
    /// The source stage is gone (stopping).
    Gone,
    /// The table's definition changed: read its plan again, then the chunk.
    Replan,
}

/// One connection's worth of chunks.
async fn table_pass(
    ctx: &Ctx,
    p: &mut TableProgress,
    buf: &mut ChunkBuf,
    sizer: &mut ChunkSizer,
    report: &mut Report,
) -> Result<Pass, SnapshotError> {
    let mut conn = (ctx.connect)().await?;
    let flavor = prepare_session(&mut conn).await?;
    if flavor == Flavor::Mysql {
        return Err(SnapshotError::MysqlUnsupported);
    }
    let key = ctx.settings.keys.get(&p.qualified()).map(|v| v.as_slice());
    let plan = TablePlan::load(&mut conn, &p.db, &p.table, None, key).await?;
    if p.estimate == 0 {
        let est: Option<Option<u64>> = mysql_async::prelude::Queryable::exec_first(
            &mut conn,
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&p.db, &p.table),
        )
        .await?;
        p.estimate = est.flatten().unwrap_or(0);
        report.estimate = p.estimate;
    }
    let columns: Vec<String> = plan.columns.iter().map(|c| c.name.clone()).collect();
    let id: Vec<String> = plan
        .id
        .iter()
        .map(|&i| plan.columns[i].name.clone())
        .collect();
    let keyless = plan.keyless;
    let mut reader = ChunkReader::start(&mut conn, plan, flavor).await?;
    if let Some(after) = &p.after {
        let key = after
            .iter()
            .map(KeyValue::to_value)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| SnapshotError::Progress(p.qualified()))?;
        reader.resume_after(key);
    }
    loop {
        let mut limit = sizer.rows();
        if let Some(row_bytes) = report.row_bytes() {
            limit = limit.min((ctx.settings.max_chunk_bytes / row_bytes.max(1)).max(1) as u32);
        }
        if let Some(rate) = &ctx.rate {
            let wait = rate.lock().await.wait_for(u64::from(limit));
            if !wait.is_zero() {
                let mut shutdown = ctx.shutdown.clone();
                if !crate::backoff::sleep_unless_stopped(wait, &mut shutdown).await {
                    return Ok(Pass::Gone);
                }
            }
        }
        // Hold the stream, so that it cannot pass the position the chunk is read at.
        let (ack_tx, ack_rx) = oneshot::channel();
        if ctx.link.send(Msg::Hold(ack_tx)).await.is_err() || ack_rx.await.is_err() {
            return Ok(Pass::Gone);
        }
        let before = reader.last_key().map(<[_]>::to_vec);
        let read = reader.read_next(&mut conn, limit, buf).await;
        let info = match read {
            Ok(Some(info)) => info,
            Ok(None) => {
                let _ = ctx.link.send(Msg::Release).await;
                return Ok(Pass::Done);
            }
            Err(e) => {
                let _ = ctx.link.send(Msg::Release).await;
                return Err(e);
            }
        };
        sizer.observe(info.rows as u32, info.took);
        let mut next = p.clone();
        next.state = if info.last {
            State::Done
        } else {
            State::Running
        };
        if let Some(k) = reader.last_key() {
            next.after = Some(k.iter().map(KeyValue::from_value).collect());
        }
        next.rows += info.rows as u64;
        next.chunks += 1;
        if info.last {
            next.finished_unix_ms = Some(progress::now_ms());
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let bytes = buf.buf.len();
        let chunk = ReadyChunk {
            db: p.db.clone(),
            table: p.table.clone(),
            keyless,
            columns: columns.clone(),
            id: id.clone(),
            position: info.position.clone(),
            read_at_micros: now_micros(),
            buf: std::mem::take(buf),
            budget: u64::from(limit) + 1,
            last: info.last,
            progress: next.clone(),
            reply: reply_tx,
        };
        if ctx.link.send(Msg::Ready(Box::new(chunk))).await.is_err() {
            return Ok(Pass::Gone);
        }
        match reply_rx.await {
            Err(_) => return Ok(Pass::Gone),
            Ok(Injected::Done { buf: b, since }) => {
                *buf = b;
                *p = next;
                p.since = since;
                ctx.publish(p);
                report.chunk(p, info.rows, bytes);
                if info.last {
                    return Ok(Pass::Done);
                }
            }
            Ok(Injected::Stale {
                buf: b,
                why,
                replan,
            }) => {
                *buf = b;
                tracing::info!(table = %p.qualified(), why = %why, "snapshot chunk read again");
                if replan {
                    return Ok(Pass::Replan);
                }
                match before {
                    Some(k) => reader.resume_after(k),
                    None => return Ok(Pass::Replan),
                }
            }
        }
    }
}

struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Every second, one line on the terminal for the tables being read: rows of the estimate,
/// rate, time left.
async fn live_line(ctx: Arc<Ctx>) {
    let mut last: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut shown = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let tables: Vec<TableProgress> = match ctx.status.lock() {
            Ok(all) => all.values().cloned().collect(),
            Err(_) => return,
        };
        let mut parts = Vec::new();
        for t in tables.iter().filter(|t| t.state == State::Running) {
            let name = t.qualified();
            let (rows0, at0) = *last.entry(name.clone()).or_insert((t.rows, Instant::now()));
            let secs = at0.elapsed().as_secs_f64();
            let rate = if secs > 0.5 {
                (t.rows - rows0.min(t.rows)) as f64 / secs
            } else {
                0.0
            };
            let total = t.estimate.max(t.rows);
            let left = if rate > 0.0 {
                units::duration(Duration::from_secs_f64(
                    total.saturating_sub(t.rows) as f64 / rate,
                ))
            } else {
                "?".into()
            };
            parts.push(format!(
                "{name} {}/{} rows, {}/s, {left} left",
                units::count(t.rows),
                units::count(total),
                units::count(rate as u64)
            ));
        }
        if parts.is_empty() {
            if shown {
                eprintln!();
                shown = false;
            }
            continue;
        }
        eprint!("\r\x1b[2Ksnapshot: {}", parts.join(" | "));
        shown = true;
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Progress a person reads: a log line every 10 s per table (rows done of the estimate,
/// rate, time left).
struct Report {
    table: String,
    started: Instant,
    last_line: Instant,
    estimate: u64,
    rows_at_start: u64,
    rows: u64,
    bytes: u64,
}

impl Report {
    fn new(p: &TableProgress) -> Report {
        Report {
            table: p.qualified(),
            started: Instant::now(),
            last_line: Instant::now(),
            estimate: p.estimate,
            rows_at_start: p.rows,
            rows: 0,
            bytes: 0,
        }
    }

    /// Average encoded row size so far.
    fn row_bytes(&self) -> Option<usize> {
        (self.rows > 0).then(|| (self.bytes / self.rows) as usize)
    }

    fn chunk(&mut self, p: &TableProgress, rows: usize, bytes: usize) {
        self.rows += rows as u64;
        self.bytes += bytes as u64;
        if self.last_line.elapsed() < Duration::from_secs(10) {
            return;
        }
        self.last_line = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (p.rows - self.rows_at_start) as f64 / secs;
        let left = self.estimate.saturating_sub(p.rows);
        let eta = if rate > 0.0 {
            units::duration(Duration::from_secs_f64(left as f64 / rate))
        } else {
            "unknown".into()
        };
        tracing::info!(
            table = %self.table,
            rows = %format!("{} of about {}", units::count(p.rows), units::count(self.estimate.max(p.rows))),
            rate = %format!("{}/s", units::count(rate as u64)),
            time_left = %eta,
            "snapshot progress"
        );
    }
}
