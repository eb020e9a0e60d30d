//! What the stages of `binsync run` report about themselves, kept in one place, and what is
//! made of it: Prometheus text, `/healthz` and `/readyz` ([`serve`], `--metrics-listen`), the
//! catch-up line (`source::catchup`), and `run-status.json` for `binsync status`
//! ([`run_status`]).
//!
//! Invariants:
//! - A stage reports with one small call here: a few atomic operations, or, once per chunk or
//!   batch, a short lock. Nothing here waits on I/O, so no stage is slowed by a scrape.
//! - Counts with labels (per entity type, per cause) and histograms go to the `metrics`
//!   crate's recorder when they happen. Without `--metrics-listen` no recorder is installed
//!   and those calls do nothing. Everything else is kept in [`Stats`] and read when asked (at
//!   a scrape it is copied into the recorder first).
//! - Delivered counts move on the ack path, never when read: a chunk's [`Tally`] is queued
//!   when the source hands the chunk on and counted when the chunk's ack reaches the
//!   checkpointer (every chunk gets one ack, in order, see `sink::ledger`). A chunk whose
//!   batch was dead-lettered is acknowledged too: it counts as delivered here and in the DLQ
//!   counters (`binsync_dead_lettered_changes_total`).
//! - Lag ([`lag`]) is zero only when the source's last word was a heartbeat (it had nothing
//!   newer to send) and every chunk handed on is confirmed; otherwise it is the time since the
//!   newest source timestamp confirmed delivered, or since binsync was last caught up,
//!   whichever is later. Unknown (None) until either is known.
//!
//! This module uses no other module of binsync but `units`: every stage may call it.

pub mod run_status;
pub mod serve;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use serve::MetricsError;

/// `--metrics-listen` and `--ready-max-lag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (None: not served).
    pub listen: Option<SocketAddr>,
    /// `/readyz` answers 503 while the lag is above this.
    pub ready_max_lag: Duration,
}

pub const DEFAULT_READY_MAX_LAG: Duration = Duration::from_secs(10);

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            listen: None,
            ready_max_lag: DEFAULT_READY_MAX_LAG,
        }
    }
}

/// Where `binsync run` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Reaching the source, reading the schema, preparing the start.
    Starting = 0,
    /// The stages run.
    Running = 1,
    /// The disk is full: the stages ended; binsync waits for space.
    WaitingForDisk = 2,
    /// Stopping (a stop was asked for, the end was reached, or a definite error).
    Stopping = 3,
}

/// A chunk handed on, waiting for its ack.
struct Handed {
    tally: Tally,
    /// Source timestamp (Unix seconds) of the newest event read when it was handed on.
    source_secs: u64,
}

/// The counters and gauges kept here (see the module docs).
struct Stats {
    phase: AtomicU8,
    /// The stages of the current run and whether each still runs.
    stages: Mutex<Vec<(&'static str, bool)>>,
    connected: AtomicBool,
    reconnects: AtomicU64,
    /// The source in use: its URL (no password) and what the server is.
    source: Mutex<Option<(String, String)>>,
    bytes_read: AtomicU64,
    events_read: AtomicU64,
    heartbeats: AtomicU64,
    read_file: Mutex<String>,
    read_offset: AtomicU64,
    /// The last event read was a heartbeat: the source had nothing newer.
    idle: AtomicBool,
    handed: Mutex<VecDeque<Handed>>,
    newest_read_secs: AtomicU64,
    delivered_secs: AtomicU64,
    /// Wall clock (Unix ms) when binsync was last seen caught up.
    caught_up_ms: AtomicU64,
    delivered_changes: AtomicU64,
    checkpoint_ms: AtomicU64,
    dlq_depth: AtomicU64,
    dead_lettered: AtomicU64,
    schema_versions: AtomicU64,
    snapshot_rows: AtomicU64,
    snapshot_tables: AtomicU64,
    snapshot_done: AtomicU64,
    batches_in_flight: AtomicU64,
    /// Binlog bytes between the read position and the source's end (u64::MAX: unknown).
    bytes_behind: AtomicU64,
}

static STATS: Stats = Stats {
    phase: AtomicU8::new(Phase::Starting as u8),
    stages: Mutex::new(Vec::new()),
    connected: AtomicBool::new(false),
    reconnects: AtomicU64::new(0),
    source: Mutex::new(None),
    bytes_read: AtomicU64::new(0),
    events_read: AtomicU64::new(0),
    heartbeats: AtomicU64::new(0),
    read_file: Mutex::new(String::new()),
    read_offset: AtomicU64::new(0),
    idle: AtomicBool::new(false),
    handed: Mutex::new(VecDeque::new()),
    newest_read_secs: AtomicU64::new(0),
    delivered_secs: AtomicU64::new(0),
    caught_up_ms: AtomicU64::new(0),
    delivered_changes: AtomicU64::new(0),
    checkpoint_ms: AtomicU64::new(0),
    dlq_depth: AtomicU64::new(0),
    dead_lettered: AtomicU64::new(0),
    schema_versions: AtomicU64::new(0),
    snapshot_rows: AtomicU64::new(0),
    snapshot_tables: AtomicU64::new(0),
    snapshot_done: AtomicU64::new(0),
    batches_in_flight: AtomicU64::new(0),
    bytes_behind: AtomicU64::new(u64::MAX),
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves plain data: keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------------------------------------
// What the stages call
// ---------------------------------------------------------------------------------------------

pub fn set_phase(p: Phase) {
    STATS.phase.store(p as u8, Relaxed);
}

pub fn phase() -> Phase {
    match STATS.phase.load(Relaxed) {
        0 => Phase::Starting,
        1 => Phase::Running,
        2 => Phase::WaitingForDisk,
        _ => Phase::Stopping,
    }
}

/// The stages of a new run (`pipeline::run_once`): the chunks of an earlier one will never
/// be acknowledged, and nothing is connected yet.
pub fn run_starting() {
    set_phase(Phase::Starting);
    lock(&STATS.stages).clear();
    lock(&STATS.handed).clear();
    STATS.connected.store(false, Relaxed);
    STATS.idle.store(false, Relaxed);
}

/// Runs `work` as the stage `name`: `/healthz` fails once it has ended while the run goes on.
pub async fn staged<F: std::future::Future>(name: &'static str, work: F) -> F::Output {
    let _alive = stage(name);
    work.await
}

/// Marks the stage `name` as running until the guard drops.
pub fn stage(name: &'static str) -> StageGuard {
    let mut stages = lock(&STATS.stages);
    match stages.iter_mut().find(|(n, _)| *n == name) {
        Some(s) => s.1 = true,
        None => stages.push((name, true)),
    }
    StageGuard(name)
}

pub struct StageGuard(&'static str);

impl Drop for StageGuard {
    fn drop(&mut self) {
        if let Some(s) = lock(&STATS.stages).iter_mut().find(|(n, _)| *n == self.0) {
            s.1 = false;
        }
    }
}

/// The replication stream from `url` (a server that is `server`) is open.
pub fn source_connected(url: String, server: String) {
    *lock(&STATS.source) = Some((url, server));
    // Not idle until the server says so with a heartbeat.
    STATS.idle.store(false, Relaxed);
    STATS.connected.store(true, Relaxed);
}

/// The replication stream failed (binsync reconnects, or stops).
pub fn source_lost() {
    if STATS.connected.swap(false, Relaxed) {
        STATS.reconnects.fetch_add(1, Relaxed);
    }
}

/// The source stage stopped reading (a stop, the end, an error): not a lost connection.
pub fn source_closed() {
    STATS.connected.store(false, Relaxed);
}

const HEARTBEAT_EVENT: u8 = 27;
const HEARTBEAT_EVENT_V2: u8 = 41;
/// Events whose time is a transaction's on the source: the GTID that opens it (MariaDB 162,
/// MySQL 33 and 34), the XID or XA_PREPARE (16, 38) or the statement (2) that ends it. Not
/// the events a file or a stream opens with, whose time is the file's.
const TRANSACTION_EVENTS: [u8; 6] = [2, 16, 33, 34, 38, 162];

/// A batch of events read from the stream, the decoder now at `file`:`offset`.
pub fn events_read(events: &[mysql_common::binlog::events::Event], file: &str, offset: u64) {
    let (mut bytes, mut count, mut beats, mut newest) = (0u64, 0u64, 0u64, None);
    let mut idle = None;
    for ev in events {
        let h = ev.header();
        if matches!(h.event_type_raw(), HEARTBEAT_EVENT | HEARTBEAT_EVENT_V2) {
            beats += 1;
            idle = Some(true);
            continue;
        }
        count += 1;
        // Events inside a compressed transaction (log_pos 0) are in its payload's bytes; the
        // events a stream opens with (a fake rotate) are in no file.
        if h.log_pos() != 0 {
            bytes += u64::from(h.event_size());
            idle = Some(false);
        }
        if TRANSACTION_EVENTS.contains(&h.event_type_raw()) && h.timestamp() > 0 {
            newest = Some(u64::from(h.timestamp()));
        }
    }
    STATS.bytes_read.fetch_add(bytes, Relaxed);
    STATS.events_read.fetch_add(count, Relaxed);
    STATS.heartbeats.fetch_add(beats, Relaxed);
    if let Some(secs) = newest {
        // The newest in stream order (a source's clock may step back: told as it is).
        STATS.newest_read_secs.store(secs, Relaxed);
    }
    if let Some(idle) = idle {
        STATS.idle.store(idle, Relaxed);
    }
    {
        let mut f = lock(&STATS.read_file);
        if *f != file {
            f.clear();
            f.push_str(file);
        }
    }
    STATS.read_offset.store(offset, Relaxed);
    if idle == Some(true) && lock(&STATS.handed).is_empty() {
        STATS.caught_up_ms.store(now_ms(), Relaxed);
    }
}

/// The source hands a chunk with this tally to the sink.
pub fn handed(tally: Tally) {
    let source_secs = STATS.newest_read_secs.load(Relaxed);
    lock(&STATS.handed).push_back(Handed { tally, source_secs });
}

/// The checkpointer received the next chunk's ack: the sink confirmed it.
pub fn delivered() {
    let (next, empty) = {
        let mut q = lock(&STATS.handed);
        let next = q.pop_front();
        (next, q.is_empty())
    };
    let Some(h) = next else { return };
    if h.source_secs > 0 {
        STATS.delivered_secs.store(h.source_secs, Relaxed);
    }
    STATS
        .schema_versions
        .fetch_add(h.tally.versions as u64, Relaxed);
    let mut changes = 0;
    for e in h.tally.entities {
        let entity = ::metrics::SharedString::from(e.entity);
        for (op, row, n) in e.ops {
            changes += n;
            let name = if row {
                ROW_CHANGES_DELIVERED
            } else {
                ENTITY_OPERATIONS_DELIVERED
            };
            ::metrics::counter!(name, "entity" => entity.clone(), "op" => op).increment(n);
        }
        if e.txns > 0 {
            ::metrics::counter!(TRANSACTIONS_DELIVERED, "entity" => entity).increment(e.txns);
        }
    }
    STATS.delivered_changes.fetch_add(changes, Relaxed);
    if empty && STATS.idle.load(Relaxed) {
        STATS.caught_up_ms.store(now_ms(), Relaxed);
    }
}

/// A checkpoint was saved (flushed) at `at_ms`.
pub fn checkpoint_saved(at_ms: u64) {
    STATS.checkpoint_ms.fetch_max(at_ms, Relaxed);
}

/// The dead-letter queue now holds `depth` entries.
pub fn dlq_depth(depth: usize) {
    STATS.dlq_depth.store(depth as u64, Relaxed);
}

/// A batch of `changes` changes went to the dead-letter queue.
pub fn dead_lettered(changes: usize) {
    STATS.dead_lettered.fetch_add(changes as u64, Relaxed);
}

/// The schema history holds `n` versions (at start; DDL adds through [`Tally::versions`]).
pub fn schema_versions(n: usize) {
    STATS.schema_versions.store(n as u64, Relaxed);
}

/// The snapshot's progress: rows read so far over all tables, tables listed and done.
pub fn snapshot_progress(rows: u64, tables: usize, done: usize) {
    STATS.snapshot_rows.store(rows, Relaxed);
    STATS.snapshot_tables.store(tables as u64, Relaxed);
    STATS.snapshot_done.store(done as u64, Relaxed);
}

/// The binlog bytes between the read position and the source's end (None: unknown).
pub fn bytes_behind(bytes: Option<u64>) {
    STATS.bytes_behind.store(bytes.unwrap_or(u64::MAX), Relaxed);
}

/// The sync API sink retries a batch; `status`: the HTTP status that caused it (None: no
/// response, a timeout or a connection error).
pub fn sink_retry(status: Option<u16>) {
    let cause = match status {
        None => "no_response",
        Some(408) => "http_408",
        Some(429) => "http_429",
        Some(_) => "http_5xx",
    };
    ::metrics::counter!(SINK_RETRIES, "cause" => cause).increment(1);
}

/// A batch of `rows` operations is being sent; dropping the guard ends it.
pub fn batch_sending(rows: usize) -> BatchInFlight {
    STATS.batches_in_flight.fetch_add(1, Relaxed);
    ::metrics::histogram!(BATCH_ROWS).record(rows as f64);
    BatchInFlight {
        started: std::time::Instant::now(),
    }
}

pub struct BatchInFlight {
    started: std::time::Instant,
}

impl BatchInFlight {
    /// The sync API confirmed the batch: its delivery latency counts.
    pub fn delivered(self) {
        ::metrics::histogram!(BATCH_DELIVERY_SECONDS).record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for BatchInFlight {
    fn drop(&mut self) {
        STATS.batches_in_flight.fetch_sub(1, Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// A chunk's counts
// ---------------------------------------------------------------------------------------------

/// What a chunk carries, per entity type: operations by kind, and the transactions that
/// touched it. Built by the source stage (`change::Chunk::tally`), counted on the ack.
#[derive(Debug, Default)]
pub struct Tally {
    entities: Vec<EntityCount>,
    /// Versions this chunk adds to the schema history.
    pub versions: usize,
}

#[derive(Debug)]
struct EntityCount {
    entity: Arc<str>,
    /// (op, is a row change, count)
    ops: Vec<(&'static str, bool, u64)>,
    txns: u64,
}

impl Tally {
    /// One operation `op` on `entity` (`row`: a row change, not an operation on the type);
    /// `first_in_txn`: the first of its entity type in its source transaction.
    pub fn add(&mut self, entity: &Arc<str>, op: &'static str, row: bool, first_in_txn: bool) {
        // Chunks hold long runs of one entity type: the last one first.
        let i = match self
            .entities
            .iter()
            .rposition(|e| Arc::ptr_eq(&e.entity, entity) || e.entity == *entity)
        {
            Some(i) => i,
            None => {
                self.entities.push(EntityCount {
                    entity: entity.clone(),
                    ops: Vec::new(),
                    txns: 0,
                });
                self.entities.len() - 1
            }
        };
        let e = &mut self.entities[i];
        match e.ops.iter_mut().find(|(o, _, _)| *o == op) {
            Some(o) => o.2 += 1,
            None => e.ops.push((op, row, 1)),
        }
        if first_in_txn {
            e.txns += 1;
        }
    }

    /// Operations counted, all entity types together.
    pub fn changes(&self) -> u64 {
        self.entities
            .iter()
            .flat_map(|e| e.ops.iter().map(|o| o.2))
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// What is read back
// ---------------------------------------------------------------------------------------------

/// How far behind the source binsync is (see the module docs); None while unknown.
pub fn lag() -> Option<Duration> {
    if caught_up() {
        return Some(Duration::ZERO);
    }
    let delivered = STATS.delivered_secs.load(Relaxed).saturating_mul(1000);
    let base = delivered.max(STATS.caught_up_ms.load(Relaxed));
    (base > 0).then(|| Duration::from_millis(now_ms().saturating_sub(base)))
}

/// The source's last word was a heartbeat and the sink confirmed everything handed on.
pub fn caught_up() -> bool {
    STATS.connected.load(Relaxed) && STATS.idle.load(Relaxed) && lock(&STATS.handed).is_empty()
}

pub fn connected() -> bool {
    STATS.connected.load(Relaxed)
}

/// The source in use: its URL and what the server is.
pub fn source() -> Option<(String, String)> {
    lock(&STATS.source).clone()
}

/// The binlog file and offset read up to.
pub fn read_position() -> (String, u64) {
    (
        lock(&STATS.read_file).clone(),
        STATS.read_offset.load(Relaxed),
    )
}

pub fn bytes_read() -> u64 {
    STATS.bytes_read.load(Relaxed)
}

/// Changes the sink confirmed since the process started.
pub fn delivered_changes() -> u64 {
    STATS.delivered_changes.load(Relaxed)
}

pub fn dlq_entries() -> u64 {
    STATS.dlq_depth.load(Relaxed)
}

/// Seconds since the last checkpoint was saved (None: none saved yet).
pub fn checkpoint_age() -> Option<Duration> {
    let at = STATS.checkpoint_ms.load(Relaxed);
    (at > 0).then(|| Duration::from_millis(now_ms().saturating_sub(at)))
}

/// Why `/healthz` fails, if it does.
pub fn unhealthy() -> Option<String> {
    match phase() {
        Phase::Starting => None,
        Phase::WaitingForDisk => Some("waiting for disk space; the stages are stopped".into()),
        Phase::Stopping => Some("stopping".into()),
        Phase::Running => lock(&STATS.stages)
            .iter()
            .find(|(_, alive)| !alive)
            .map(|(name, _)| format!("the {name} stage has ended")),
    }
}

/// Why `/readyz` fails, if it does.
pub fn not_ready(max_lag: Duration) -> Option<String> {
    if let Some(why) = unhealthy() {
        return Some(why);
    }
    if !connected() {
        return Some("not connected to the source".into());
    }
    match lag() {
        None => Some(
            "lag not known yet: nothing delivered and no heartbeat from the source since the start"
                .into(),
        ),
        Some(lag) if lag > max_lag => Some(format!(
            "lag {} is above --ready-max-lag {}",
            crate::units::duration(lag),
            crate::units::duration(max_lag)
        )),
        Some(_) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Names (README, "Metrics", documents each)
// ---------------------------------------------------------------------------------------------

pub const LAG_SECONDS: &str = "binsync_replication_lag_seconds";
pub const CONNECTED: &str = "binsync_source_connected";
pub const RECONNECTS: &str = "binsync_source_reconnects_total";
pub const BYTES_READ: &str = "binsync_binlog_bytes_read_total";
pub const EVENTS_READ: &str = "binsync_binlog_events_read_total";
pub const HEARTBEATS: &str = "binsync_source_heartbeats_total";
pub const BYTES_BEHIND: &str = "binsync_binlog_bytes_behind";
pub const ROW_CHANGES_DELIVERED: &str = "binsync_row_changes_delivered_total";
pub const ENTITY_OPERATIONS_DELIVERED: &str = "binsync_entity_operations_delivered_total";
pub const TRANSACTIONS_DELIVERED: &str = "binsync_transactions_delivered_total";
pub const CHANGES_DELIVERED: &str = "binsync_changes_delivered_total";
pub const CHUNKS_UNCONFIRMED: &str = "binsync_chunks_unconfirmed";
pub const BATCH_ROWS: &str = "binsync_sink_batch_rows";
pub const BATCH_DELIVERY_SECONDS: &str = "binsync_sink_batch_delivery_seconds";
pub const BATCHES_IN_FLIGHT: &str = "binsync_sink_batches_in_flight";
pub const SINK_RETRIES: &str = "binsync_sink_retries_total";
pub const DLQ_ENTRIES: &str = "binsync_dlq_entries";
pub const DEAD_LETTERED: &str = "binsync_dead_lettered_changes_total";
pub const CHECKPOINT_AGE: &str = "binsync_checkpoint_age_seconds";
pub const SCHEMA_VERSIONS: &str = "binsync_schema_history_versions";
pub const SNAPSHOT_ROWS: &str = "binsync_snapshot_rows_read";
pub const SNAPSHOT_TABLES: &str = "binsync_snapshot_tables";
pub const SNAPSHOT_TABLES_DONE: &str = "binsync_snapshot_tables_done";
pub const UP: &str = "binsync_up";

/// Copies what [`Stats`] keeps into the recorder, just before it renders.
fn export() {
    use ::metrics::{counter, gauge};
    let s = &STATS;
    match lag() {
        Some(l) => gauge!(LAG_SECONDS).set(l.as_secs_f64()),
        None => gauge!(LAG_SECONDS).set(f64::NAN),
    }
    gauge!(CONNECTED).set(if connected() { 1.0 } else { 0.0 });
    gauge!(UP).set(if unhealthy().is_none() { 1.0 } else { 0.0 });
    counter!(RECONNECTS).absolute(s.reconnects.load(Relaxed));
    counter!(BYTES_READ).absolute(s.bytes_read.load(Relaxed));
    counter!(EVENTS_READ).absolute(s.events_read.load(Relaxed));
    counter!(HEARTBEATS).absolute(s.heartbeats.load(Relaxed));
    match s.bytes_behind.load(Relaxed) {
        u64::MAX => gauge!(BYTES_BEHIND).set(f64::NAN),
        b => gauge!(BYTES_BEHIND).set(b as f64),
    }
    counter!(CHANGES_DELIVERED).absolute(s.delivered_changes.load(Relaxed));
    gauge!(CHUNKS_UNCONFIRMED).set(lock(&s.handed).len() as f64);
    gauge!(BATCHES_IN_FLIGHT).set(s.batches_in_flight.load(Relaxed) as f64);
    gauge!(DLQ_ENTRIES).set(s.dlq_depth.load(Relaxed) as f64);
    counter!(DEAD_LETTERED).absolute(s.dead_lettered.load(Relaxed));
    match checkpoint_age() {
        Some(a) => gauge!(CHECKPOINT_AGE).set(a.as_secs_f64()),
        None => gauge!(CHECKPOINT_AGE).set(f64::NAN),
    }
    gauge!(SCHEMA_VERSIONS).set(s.schema_versions.load(Relaxed) as f64);
    gauge!(SNAPSHOT_ROWS).set(s.snapshot_rows.load(Relaxed) as f64);
    gauge!(SNAPSHOT_TABLES).set(s.snapshot_tables.load(Relaxed) as f64);
    gauge!(SNAPSHOT_TABLES_DONE).set(s.snapshot_done.load(Relaxed) as f64);
}

/// Each metric's HELP text.
fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(LAG_SECONDS, "Seconds binsync is behind the source: 0 when the source's last word was a heartbeat and the sink confirmed everything read; else the time since the newest source event timestamp the sink confirmed (or since binsync was last caught up, if later). NaN until known.");
    describe_gauge!(
        CONNECTED,
        "1 while the replication stream from the source is open, else 0."
    );
    describe_gauge!(
        UP,
        "1 while binsync and its stages run (as /healthz answers 200), else 0."
    );
    describe_counter!(
        RECONNECTS,
        "Replication connections lost since the process started (each followed by reconnecting)."
    );
    describe_counter!(
        BYTES_READ,
        "Binlog bytes read from the source (whole events, headers included)."
    );
    describe_counter!(
        EVENTS_READ,
        "Binlog events read from the source, heartbeats not included."
    );
    describe_counter!(HEARTBEATS, "Heartbeats received from the source.");
    describe_gauge!(BYTES_BEHIND, "Binlog bytes between binsync's read position and the source's binlog end, as last measured (every few seconds); NaN until measured.");
    describe_counter!(ROW_CHANGES_DELIVERED, "Row changes (insert, update, delete, read) the sink confirmed, per entity type and operation.");
    describe_counter!(ENTITY_OPERATIONS_DELIVERED, "Operations on a whole entity type (ddl, truncate, drop, snapshot_end) the sink confirmed, per entity type and operation.");
    describe_counter!(
        TRANSACTIONS_DELIVERED,
        "Source transactions the sink confirmed, per entity type they touched."
    );
    describe_counter!(
        CHANGES_DELIVERED,
        "Operations of every kind the sink confirmed."
    );
    describe_gauge!(
        CHUNKS_UNCONFIRMED,
        "Chunks handed to the sink and not yet confirmed."
    );
    describe_histogram!(BATCH_ROWS, "Operations per batch sent to the sync API.");
    describe_histogram!(BATCH_DELIVERY_SECONDS, "Seconds from a batch's first POST to the sync API's 2xx, retries included (delivered batches only).");
    describe_gauge!(
        BATCHES_IN_FLIGHT,
        "Batches being sent to the sync API (retries included)."
    );
    describe_counter!(SINK_RETRIES, "Batches sent again to the sync API, by cause: http_408, http_429, http_5xx, no_response (timeout or connection error).");
    describe_gauge!(
        DLQ_ENTRIES,
        "Entries in the dead-letter queue (binsync dlq list)."
    );
    describe_counter!(
        DEAD_LETTERED,
        "Operations put in the dead-letter queue since the process started."
    );
    describe_gauge!(CHECKPOINT_AGE, "Seconds since the last checkpoint was saved (it moves only when the sink confirms changes, so it grows while the source is idle); NaN before the first.");
    describe_gauge!(
        SCHEMA_VERSIONS,
        "Table versions in the schema history kept in the state dir."
    );
    describe_gauge!(
        SNAPSHOT_ROWS,
        "Rows the snapshot has read, all tables together, over all runs of this state dir."
    );
    describe_gauge!(SNAPSHOT_TABLES, "Tables the snapshot has to load.");
    describe_gauge!(SNAPSHOT_TABLES_DONE, "Tables whose snapshot is complete.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_each_transaction_once_per_entity_type() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let mut t = Tally::default();
        // The end of a transaction counted in an earlier chunk: its rows count, it does not.
        t.add(&a, "insert", true, false);
        t.add(&a, "insert", true, true);
        t.add(&a, "update", true, false);
        t.add(&b, "delete", true, true);
        t.add(&a, "ddl", false, true);
        assert_eq!(t.changes(), 5);
        let e = &t.entities[0];
        assert_eq!(
            e.ops,
            vec![("insert", true, 2), ("update", true, 1), ("ddl", false, 1)]
        );
        assert_eq!(e.txns, 2);
        assert_eq!(t.entities[1].txns, 1);
    }
}
