//! `binsync run`: the stages and how they are joined. This file only wires; each stage lives
//! in the module that owns its concern.
//!
//! ```text
//! source::replication ──Chunk (bounded)──► sink ──Ack (bounded, in order)──► checkpoint::Checkpointer
//!   (reader task + decoder)                 (lines or HTTP, via sink::ledger)
//! ```
//! - Memory is bounded by the channels: a slow or absent sink pauses the reader.
//! - The checkpoint moves only over acknowledged chunks, in order (see [`crate::checkpoint`]).
//! - Shutdown (SIGINT/SIGTERM, or `--exit-at-end` reaching its target) stops the reading;
//!   what was decoded is delivered and checkpointed, then `run` returns. A stop while the
//!   source is still being reached at start-up returns at once: nothing was read.
//! - A full disk (state dir or file sink, [`crate::checkpoint::DiskFull`]) ends the stages;
//!   `run` logs it once, waits with backoff until the state dir's store reopens and takes a
//!   write (and, for the file sink's disk, until a synced write there succeeds), then starts
//!   them again from the last checkpoint saved, exactly as a restart after a crash would
//!   (re-sent operations carry the same `seq`). A stop while waiting ends `run` at once, the
//!   checkpoint at the last one saved.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backoff::{sleep_unless_stopped, Backoff};
use crate::change::Chunk;
use crate::checkpoint::Position;
use crate::checkpoint::{
    is_disk_full, Ack, Checkpoint, CheckpointError, Checkpointer, DiskFull, Store,
};
use crate::config::RunSettings;
use crate::config::SnapshotMode;
use crate::decode::Decoder;
use crate::dlq::Dlq;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::schema::history::{self, SeedGaps};
use crate::schema::Catalog;
use crate::shutdown::Shutdown;
use crate::sink::http::batch::SourceHeader;
use crate::sink::{self, SinkSpec};
use crate::snapshot::handoff::Inbox;
use crate::snapshot::progress;
use crate::snapshot::runner::Runner;
use crate::snapshot::SnapshotError;
use crate::source::failover;
pub use crate::source::replication::Outcome;
use crate::source::replication::Replication;
use crate::source::start::Prepared;
use crate::source::stream::Replica;
use crate::source::ServerInfo;
use crate::source::SourceError;
use crate::source::{schema_seed, SourceConfig};

/// Chunks queued between the decoder and the sink.
const CHUNK_QUEUE: usize = 8;
const ACK_QUEUE: usize = 64;

/// Runs until `shutdown` fires, the end is reached (`--exit-at-end`), or a definite error.
pub async fn run(settings: RunSettings, mut shutdown: Shutdown) -> Result<Outcome> {
    // First: an address that cannot be served stops binsync before it reaches the source.
    crate::metrics::serve::start(&settings.metrics).await?;
    let mut reset = settings.reset;
    // One pace for all the waits: a disk that is full again right after a resume is waited
    // out longer each time; after a healthy stretch the pace starts over.
    let mut backoff = Backoff::new();
    loop {
        let (err, full) = match run_once(&settings, &mut reset, shutdown.clone()).await {
            Err(e) => match e.disk_full().cloned() {
                Some(full) => (e, full),
                None => return Err(e),
            },
            done => return done,
        };
        // Every stage has ended and dropped its handle on the store: it can be reopened.
        crate::metrics::set_phase(crate::metrics::Phase::WaitingForDisk);
        tracing::error!(error = %err, "waiting for disk space; nothing is lost: the checkpoint stays at the last one saved, and binsync goes on from it once there is space");
        if !wait_for_space(&settings, &full, &mut backoff, &mut shutdown).await? {
            tracing::info!(
                "stopped while waiting for disk space; the checkpoint stays at the last one saved"
            );
            return Ok(Outcome::Stopped);
        }
        backoff.succeeded();
        tracing::info!("disk has space again: resuming from the last checkpoint saved");
    }
}

/// Waits (silently: the caller logged the cause once) until the state dir's store opens and
/// takes a write, and, if the full disk is another one (the file sink's: its `fdatasync`
/// failed), until a synced write there succeeds: resuming before would only fill it again. A
/// full file sink met on a write is waited out by the sink itself, in place. False if binsync
/// was stopped first.
async fn wait_for_space(
    settings: &RunSettings,
    full: &DiskFull,
    backoff: &mut Backoff,
    shutdown: &mut Shutdown,
) -> Result<bool> {
    loop {
        if !sleep_unless_stopped(backoff.next_delay(), shutdown).await {
            return Ok(false);
        }
        if full.dir != settings.state_dir {
            match probe_dir(full.dir.clone()).await {
                Err(e) if is_disk_full(&e) => {
                    tracing::debug!(dir = %full.dir.display(), error = %e, "still no space");
                    continue;
                }
                // Space, or another failure: the sink meets it again and reports it.
                _ => {}
            }
        }
        let probed = match Store::open_waiting(&settings.state_dir, Duration::from_secs(3)).await {
            Ok(store) => store.probe().await,
            Err(e) => Err(e),
        };
        match probed {
            Ok(()) => return Ok(true),
            Err(CheckpointError::DiskFull(full)) => {
                tracing::debug!(error = %full, "still no space");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Bytes of the synced write that tells whether a disk takes data again (removed at once).
const PROBE_BYTES: usize = 1 << 20;

/// Writes [`PROBE_BYTES`] into a new file in `dir`, `fdatasync`s and removes it.
async fn probe_dir(dir: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        let path = dir.join(format!(".binsync-space-probe-{}", std::process::id()));
        let written = std::fs::File::create(&path).and_then(|mut f| {
            f.write_all(&vec![0u8; PROBE_BYTES])?;
            f.sync_data()
        });
        let _ = std::fs::remove_file(&path);
        written
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// One run of the stages, from the store's checkpoint; `reset` is cleared once done.
async fn run_once(
    settings: &RunSettings,
    reset: &mut bool,
    mut shutdown: Shutdown,
) -> Result<Outcome> {
    crate::metrics::run_starting();
    let store = if *reset {
        tracing::info!(state_dir = %settings.state_dir.display(), "--reset: discarding the checkpoint");
        let store = Store::open_reset(&settings.state_dir).await?;
        progress::clear(&store).await?;
        // A run started again after a full disk must not forget the checkpoint again.
        *reset = false;
        store
    } else {
        Store::open_waiting(&settings.state_dir, Duration::from_secs(3)).await?
    };
    let checkpoint = store.load()?;
    // For `binsync status` while this run holds the store; its drop writes the last one.
    let _run_status = crate::metrics::run_status::Writer::start(&settings.state_dir);
    if let Some(at) = store.saved_at_unix_ms() {
        crate::metrics::checkpoint_saved(at);
    }

    tracing::info!(source = %settings.source, "connecting");
    let (exit_at_end, start) = (settings.exit_at_end, &settings.start);
    // With several `--source` servers, the first in order that can stream.
    let prepared = failover::prepare(
        &settings.failover,
        checkpoint.as_ref(),
        start,
        exit_at_end,
        &mut shutdown,
    )
    .await?;
    let Some((current, prepared)) = prepared else {
        tracing::info!("stopped before the source was reached; nothing was read");
        return Ok(Outcome::Stopped);
    };
    let src = settings.failover.sources[current].clone();
    let Prepared {
        conn,
        info,
        catalog,
        mut plan,
        target,
    } = prepared;
    tracing::info!(source = %src, server = %info.identity, "connected");
    if let Some(cp) = &checkpoint {
        let ignored = match settings.start_given {
            true => " (--start is ignored; --reset discards the checkpoint)",
            false => "",
        };
        tracing::info!(checkpoint = %cp.position, "resuming from the checkpoint{ignored}");
    }
    tracing::debug!(
        resumed = checkpoint.is_some(),
        point = %plan.point,
        position = %plan.position,
        emit_from = ?plan.emit_from,
        gtid_from_file_header = ?plan.gtid_from_file_header,
        end = ?target,
        "start plan"
    );

    let mut decode = settings.decode.clone();
    for table in &catalog.keyless {
        if let Some((db, name)) = table.split_once('.') {
            if decode.filter.matches(db, name) {
                tracing::warn!(table = %table, "no primary key and no unique NOT NULL key: its entity id is the whole row, and identical rows are told apart only by count (see docs/sync-api.md); add a primary key");
            }
        }
    }
    decode.sequences.extend(catalog.sequences);

    if checkpoint.is_none() {
        if settings.snapshot.wanted_at_start(false) {
            // Decided before the first checkpoint exists, so a crash before the tables are
            // listed still snapshots them on the next start.
            progress::mark_wanted(&store).await?;
        }
        plan.position.seq = store.seq_floor().await?;
        // The start point is where a restart must resume even if nothing is delivered before
        // it (`--start latest` stopped at once would otherwise fall back to `earliest`).
        if plan.resumable() {
            let start = Checkpoint {
                server: info.identity.clone(),
                position: plan.position.clone(),
            };
            store.save(&start).await?;
        }
    }
    // Where the stream begins to act: a MySQL `--start file:NAME:POS` reads from the file's
    // head but acts from POS; a start by GTID alone has no file position.
    let acts_from = plan
        .emit_from
        .clone()
        .or(plan.seed_from.clone())
        .or_else(|| {
            (!plan.position.file.is_empty())
                .then(|| (plan.position.file.clone(), plan.position.offset))
        });
    let history = history_at_start(
        &store,
        &src,
        &decode.filter,
        checkpoint.is_some(),
        (&plan.position, acts_from),
        &mut shutdown,
    )
    .await?;
    let Some((history, gaps)) = history else {
        tracing::info!("stopped before the source was reached; nothing was read");
        return Ok(Outcome::Stopped);
    };
    let Some(snapshot_tables) =
        snapshot_at_start(&store, settings, &src, &info, &decode, &mut shutdown).await?
    else {
        tracing::info!("stopped before the source was reached; nothing was read");
        return Ok(Outcome::Stopped);
    };
    let reserved = progress::reservations_from(&store, plan.position.seq).await?;
    crate::metrics::schema_versions(history::version_count(&store)?);
    let done = snapshot_tables
        .iter()
        .filter(|t| t.state == progress::State::Done)
        .count();
    let rows = snapshot_tables.iter().map(|t| t.rows).sum();
    crate::metrics::snapshot_progress(rows, snapshot_tables.len(), done);
    tracing::info!(start = %plan.point, position = %plan.position, "streaming");

    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(CHUNK_QUEUE);
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>(ACK_QUEUE);
    let sink_task = spawn_sink(&settings.sink, &store, &info, chunk_rx, ack_tx, &shutdown)?;
    let checkpointer_store = store.clone();
    let checkpointer = Checkpointer {
        store,
        server: info.identity.clone(),
    };
    crate::metrics::set_phase(crate::metrics::Phase::Running);
    let checkpointer = tokio::spawn(crate::metrics::staged(
        "checkpointer",
        checkpointer.run(ack_rx),
    ));

    let written_by = plan.written_by.take();
    let reading_from = (plan.position.file.clone(), plan.position.offset);
    let decoder = Decoder::new(
        Arc::new(decode),
        plan.position,
        plan.gtid_from_file_header,
        plan.emit_from,
        // The history names every captured table's columns: no information_schema lookup.
        None,
    )
    .with_history(history)
    .with_seed_gaps(gaps.unknown, gaps.pending);
    let mut decoder = decoder;
    decoder.add_reservations(reserved);
    let replica =
        Replica::new(settings.server_id, &settings.state_dir).with_heartbeat(settings.heartbeat);
    let mut source = Replication::new(src.clone(), info, replica, target, shutdown.clone())
        .position_written_by(written_by)
        .with_failover(settings.failover.clone(), current);
    // The snapshot's connections go to the server streamed from, after a failover too.
    let current_source = source.current_source.clone();
    let mut runner = None;
    if settings.snapshot.mode != SnapshotMode::Never {
        let (link, inbox) = mpsc::channel(16);
        let busy = snapshot_tables
            .iter()
            .any(|t| t.state != progress::State::Done);
        source = source.with_snapshot(Inbox::new(inbox, busy), checkpointer_store.clone());
        let connect: crate::snapshot::runner::Connect = Arc::new(move || {
            let src = current_source
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            Box::pin(async move {
                src.connect_once()
                    .await
                    .map_err(|e| SnapshotError::Connect {
                        transient: matches!(e, crate::source::Failure::Transient(_)),
                        detail: e.to_string(),
                    })
            })
        });
        let r = Runner {
            settings: settings.snapshot.clone(),
            connect,
            store: checkpointer_store.clone(),
            filter: settings.decode.filter.clone(),
            link,
            shutdown: shutdown.clone(),
        };
        runner = Some(tokio::spawn(crate::metrics::staged(
            "snapshot",
            r.run(snapshot_tables),
        )));
    }
    let handed_on = source.handed_on.clone();
    let dead_before = Dlq::open(&checkpointer_store).map_or(0, |d| d.len());
    crate::metrics::dlq_depth(dead_before);
    let catchup = crate::source::catchup::watch(settings.source.clone(), reading_from);
    let source_result =
        crate::metrics::staged("source", source.run(conn, plan.point, decoder, chunk_tx)).await;
    drop(catchup);
    crate::metrics::set_phase(crate::metrics::Phase::Stopping);
    crate::metrics::source_closed();
    if let Some(r) = runner {
        // Its state moves only with the checkpoint: nothing is lost by ending it here.
        r.abort();
    }
    // The source is done (its sender dropped): the sink drains, then the checkpointer.
    let sink_result = sink_task.await.map_err(|e| Error::stage("sink", e))?;
    let cp_result = checkpointer
        .await
        .map_err(|e| Error::stage("checkpointer", e))?;
    // Report the root cause: a failed sink makes the source fail with "sink gone".
    sink_result?;
    let delivered = cp_result?;
    let outcome = source_result?;
    let read = handed_on.load(std::sync::atomic::Ordering::Relaxed);
    let dead = Dlq::open(&checkpointer_store)
        .map_or(0, |d| d.len())
        .saturating_sub(dead_before);
    // Only what the sink confirmed counts as delivered; the rest is said as it is.
    if read > delivered {
        tracing::warn!(
            delivered,
            undelivered = read - delivered,
            "stopped; changes read were not all delivered: the sink did not confirm {} of them, the checkpoint stays before them, and the next start sends them again",
            crate::units::count(read - delivered)
        );
    } else if dead > 0 {
        tracing::warn!(
            delivered,
            dead_letters = dead,
            "stopped; everything read was checkpointed, but {} batches were rejected by the sync API and wait in the dead-letter queue (binsync dlq list)",
            dead
        );
    } else {
        tracing::info!(
            changes = delivered,
            "stopped; everything read was delivered and checkpointed"
        );
    }
    Ok(outcome)
}

/// The schema history a stream starting at `start` decodes with: read back from the state
/// dir when it holds one and a checkpoint (versions above the checkpoint, never delivered,
/// dropped; older ones pruned), or else seeded from the source (read with retries, as
/// start-up reads are) and saved at `start.seq`, valid from `from` (the file position the
/// stream acts from; None: a start by GTID, checked against `start.gtid`). None when
/// stopped before the source answered.
async fn history_at_start(
    store: &Store,
    src: &SourceConfig,
    filter: &Filter,
    resumed: bool,
    (start, from): (&Position, Option<(String, u64)>),
    shutdown: &mut Shutdown,
) -> Result<Option<(Catalog, SeedGaps)>> {
    if resumed && !history::is_empty(store)? {
        let dropped = history::discard_above(store, start.seq).await?;
        let pruned = history::prune_below(store, start.seq).await?;
        let catalog = history::catalog_at(store, start.seq)?;
        let gaps = history::seed_gaps(store, start, &catalog)?;
        tracing::info!(
            tables = catalog.tables.len(),
            undelivered_dropped = dropped,
            pruned,
            "schema history read back"
        );
        return Ok(Some((catalog, gaps)));
    }
    // No history yet (a first start, or a state dir from before binsync kept one), or one
    // left by a start that never saved a checkpoint: seed it afresh.
    history::clear(store).await?;
    let seeded = src
        .with_retries(shutdown, || async {
            let mut conn = src.connect_once().await?;
            schema_seed::seed(&mut conn, src, filter, from.clone(), start.gtid.as_ref()).await
        })
        .await?;
    let Some(seed) = seeded else {
        return Ok(None);
    };
    let gaps = SeedGaps {
        unknown: seed.unknown,
        pending: seed.pending,
    };
    history::save_seed(store, start.seq, &seed.catalog, &gaps).await?;
    tracing::info!(
        tables = seed.catalog.tables.len(),
        at = %format!("{}:{}", seed.at.0, seed.at.1),
        unknown_at_start = gaps.unknown.len(),
        "schema history seeded from the source"
    );
    Ok(Some((seed.catalog, gaps)))
}

/// The tables the snapshot stage starts with: the state dir's progress entries, after
/// listing every captured table when this state dir's first start asked for a snapshot
/// ([`progress::mark_wanted`]). Each table not done is checked now (it exists, has a key
/// chunks can page by), so that a table that can never be read stops the run at once, not
/// hours later. None when stopped while reaching the source.
async fn snapshot_at_start(
    store: &Store,
    settings: &RunSettings,
    src: &SourceConfig,
    info: &ServerInfo,
    decode: &crate::decode::DecodeConfig,
    shutdown: &mut Shutdown,
) -> Result<Option<Vec<progress::TableProgress>>> {
    if settings.snapshot.mode == SnapshotMode::Never {
        return Ok(Some(Vec::new()));
    }
    let mut wanted = progress::is_wanted(store)?;
    let mysql = info.flavor() == crate::gtid::Flavor::Mysql;
    if wanted && mysql && settings.snapshot.mode == SnapshotMode::WhenNeeded {
        tracing::warn!("no snapshot: snapshots of MySQL sources are not supported yet; streaming from the start position only (--snapshot never silences this)");
        progress::unmark_wanted(store).await?;
        wanted = false;
    }
    // Requests waiting since the last run: snapshot work from the start, not only once the
    // runner's first look at them comes (an `--exit-at-end` run could end before it).
    crate::snapshot::runner::take_requests(store, &decode.filter)
        .await
        .map_err(SourceError::Snapshot)?;
    let open = progress::load(store)?
        .iter()
        .any(|t| t.state != progress::State::Done);
    if !wanted && !open {
        return Ok(Some(progress::load(store)?));
    }
    if mysql {
        return Err(SourceError::Snapshot(SnapshotError::MysqlUnsupported.to_string()).into());
    }
    let Some(mut conn) = src.with_retries(shutdown, || src.connect_once()).await? else {
        return Ok(None);
    };
    if wanted {
        // The tables there are now (the stream's start may be older than some of them).
        let now: Vec<(String, String)> = mysql_async::prelude::Queryable::query(
            &mut conn,
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await
        .map_err(|e| SourceError::Snapshot(format!("listing the tables to snapshot: {e}")))?;
        let tables: Vec<progress::TableProgress> = now
            .iter()
            .filter(|(db, name)| {
                decode.filter.matches(db, name)
                    && !decode.sequences.contains(&format!("{db}.{name}"))
            })
            .map(|(db, name)| progress::TableProgress::new(db, name))
            .collect();
        tracing::info!(tables = tables.len(), "snapshot of every captured table");
        progress::save_now(store, tables).await?;
        progress::unmark_wanted(store).await?;
    }
    let tables = progress::load(store)?;
    for t in tables.iter().filter(|t| t.state != progress::State::Done) {
        let key = settings
            .snapshot
            .keys
            .get(&t.qualified())
            .map(|v| v.as_slice());
        match crate::snapshot::TablePlan::load(&mut conn, &t.db, &t.table, None, key).await {
            // Dropped since it was asked for: the snapshot task says so and ends.
            Ok(_) | Err(SnapshotError::NoTable { .. }) => {}
            Err(e) => return Err(SourceError::Snapshot(e.to_string()).into()),
        }
    }
    Ok(Some(tables))
}

/// Starts the sink task for `spec`: it takes chunks from `rx` and sends their acks, in
/// order, to `acks`.
fn spawn_sink(
    spec: &SinkSpec,
    store: &Store,
    info: &ServerInfo,
    rx: mpsc::Receiver<Chunk>,
    acks: mpsc::Sender<Ack>,
    shutdown: &Shutdown,
) -> Result<JoinHandle<Result<()>>> {
    Ok(match spec {
        SinkSpec::Http(cfg) => {
            let cfg = (**cfg).clone();
            let dlq = Dlq::open(store)?;
            let header = SourceHeader::new(&info.identity);
            let shutdown = shutdown.clone();
            tokio::spawn(crate::metrics::staged("sink", async move {
                sink::http::run(cfg, header, dlq, rx, acks, shutdown)
                    .await
                    .map_err(Error::from)
            }))
        }
        SinkSpec::Nats(cfg) => {
            let cfg = (**cfg).clone();
            // The sync API's batch id prefix: the source id unless the state has one saved.
            let source_id = SourceHeader::new(&info.identity).id_prefix.to_string();
            let store = store.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(crate::metrics::staged("sink", async move {
                sink::nats::run(cfg, source_id, store, rx, acks, shutdown)
                    .await
                    .map_err(Error::from)
            }))
        }
        lines => {
            let spec = lines.clone();
            let shutdown = shutdown.clone();
            let alive = crate::metrics::stage("sink");
            tokio::task::spawn_blocking(move || {
                let _alive = alive;
                sink::lines::run_blocking(spec, rx, acks, shutdown).map_err(Error::from)
            })
        }
    })
}
