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
//!   what was decoded is delivered and checkpointed, then `run` returns.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::change::Chunk;
use crate::checkpoint::{Ack, Checkpoint, Checkpointer, Store};
use crate::config::RunSettings;
use crate::decode::Decoder;
use crate::dlq::Dlq;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::sink::http::batch::SourceHeader;
use crate::sink::{self, SinkSpec};
use crate::source::lookup::InfoSchemaLookup;
pub use crate::source::replication::Outcome;
use crate::source::replication::Replication;
use crate::source::start::{self, Prepared};
use crate::source::ServerInfo;

/// Chunks queued between the decoder and the sink.
const CHUNK_QUEUE: usize = 8;
const ACK_QUEUE: usize = 64;

/// Runs until `shutdown` fires, the end is reached (`--exit-at-end`), or a definite error.
pub async fn run(settings: RunSettings, mut shutdown: Shutdown) -> Result<Outcome> {
    let store = if settings.reset {
        tracing::info!(state_dir = %settings.state_dir.display(), "--reset: discarding the checkpoint");
        Store::open_reset(&settings.state_dir).await?
    } else {
        Store::open_waiting(&settings.state_dir, std::time::Duration::from_secs(3)).await?
    };
    let checkpoint = store.load()?;

    let src = settings.source.clone();
    tracing::info!(source = %src, "connecting");
    let (exit_at_end, start) = (settings.exit_at_end, &settings.start);
    let prepared = src
        .with_retries(&mut shutdown, || {
            start::prepare(&src, checkpoint.as_ref(), start, exit_at_end)
        })
        .await?;
    let Prepared {
        conn,
        info,
        catalog,
        mut plan,
        target,
    } = prepared;
    tracing::info!(server = %info.identity, "connected");

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
    tracing::info!(start = %plan.point, position = %plan.position, "streaming");

    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(CHUNK_QUEUE);
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>(ACK_QUEUE);
    let sink_task = spawn_sink(&settings.sink, &store, &info, chunk_rx, ack_tx, &shutdown)?;
    let checkpointer = Checkpointer {
        store,
        server: info.identity.clone(),
        shutdown: shutdown.clone(),
    };
    let checkpointer = tokio::spawn(checkpointer.run(ack_rx));

    let written_by = plan.written_by.take();
    let lookup = Box::new(InfoSchemaLookup::new(src.clone()));
    let decoder = Decoder::new(
        Arc::new(decode),
        plan.position,
        plan.gtid_from_file_header,
        plan.emit_from,
        Some(lookup),
    );
    let source = Replication::new(src, info, settings.server_id, target, shutdown)
        .position_written_by(written_by);
    let source_result = source.run(conn, plan.point, decoder, chunk_tx).await;
    // The source is done (its sender dropped): the sink drains, then the checkpointer.
    let sink_result = sink_task.await.map_err(|e| Error::stage("sink", e))?;
    let cp_result = checkpointer
        .await
        .map_err(|e| Error::stage("checkpointer", e))?;
    // Report the root cause: a failed sink makes the source fail with "sink gone".
    sink_result?;
    let delivered = cp_result?;
    let outcome = source_result?;
    tracing::info!(
        changes = delivered,
        "stopped; everything read was delivered and checkpointed"
    );
    Ok(outcome)
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
            tokio::spawn(async move {
                sink::http::run(cfg, header, dlq, rx, acks, shutdown)
                    .await
                    .map_err(Error::from)
            })
        }
        lines => {
            let spec = lines.clone();
            tokio::task::spawn_blocking(move || {
                sink::lines::run_blocking(spec, rx, acks).map_err(Error::from)
            })
        }
    })
}
