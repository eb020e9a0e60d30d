//! `binsync replay`: archived binlog files (backups, files copied off a server) through the
//! same decoder and sinks as a live stream.
//!
//! Every event is read and checked (checksums, lengths); a damaged or truncated file stops the
//! replay with an error naming the file and the byte offset, after delivering everything before
//! it. Nothing is skipped silently. No checkpoint is kept: a replay is a one-shot backfill.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::PathBuf;
use std::sync::Arc;

use mysql_common::binlog::consts::{BinlogVersion, EventType};
use mysql_common::binlog::events::{Event, TransactionPayloadEvent};
use mysql_common::binlog::EventStreamReader;
use tokio::sync::mpsc;

use crate::change::Chunk;
use crate::checkpoint::Position;
use crate::decode::{DecodeConfig, Decoder};
use crate::error::{Error, Result};
use crate::sink::{self, Ack, SinkSpec};
use crate::units;

#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayStats {
    pub files: usize,
    pub events: u64,
    pub changes: u64,
    pub bytes: u64,
}

pub async fn replay(files: &[PathBuf], spec: SinkSpec, cfg: DecodeConfig) -> Result<ReplayStats> {
    if matches!(spec, SinkSpec::Http(_)) {
        return Err(Error::replay(
            "replay into the HTTP sink is not available in this build; use stdout or file:PATH",
        ));
    }
    let (tx, rx) = mpsc::channel::<Chunk>(8);
    let (ack_tx, mut ack_rx) = mpsc::channel::<Ack>(64);
    let sink_task =
        tokio::task::spawn_blocking(move || sink::lines::run_blocking(spec, rx, ack_tx));
    let counter = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(a) = ack_rx.recv().await {
            n += a.changes as u64;
        }
        n
    });
    let result = feed(files, Arc::new(cfg), &tx).await;
    drop(tx);
    sink_task.await.map_err(|e| Error::stage("sink", e))??;
    let delivered = counter.await.map_err(|e| Error::stage("ack counter", e))?;
    let mut stats = result?;
    stats.changes = delivered;
    Ok(stats)
}

async fn feed(
    files: &[PathBuf],
    cfg: Arc<DecodeConfig>,
    tx: &mpsc::Sender<Chunk>,
) -> Result<ReplayStats> {
    let mut decoder = Decoder::new(cfg, Position::default(), None, None, None);
    let mut stats = ReplayStats::default();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let damaged = |offset: u64, detail: String| {
            Error::replay(format!(
                "{}: damaged binlog at byte {offset}: {detail}; events before it were delivered, the rest of the file was not",
                path.display()
            ))
        };
        let file = File::open(path)
            .map_err(|e| Error::replay(format!("cannot open {}: {e}", path.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut magic = [0u8; 4];
        input
            .read_exact(&mut magic)
            .map_err(|e| damaged(0, format!("no binlog header ({e})")))?;
        if magic != *b"\xfebin" {
            return Err(Error::replay(format!(
                "{} is not a binlog file (it does not start with the binlog magic bytes)",
                path.display()
            )));
        }
        decoder.start_file(&name);
        let mut esr = EventStreamReader::new(BinlogVersion::Version4);
        let mut offset = 4u64;
        loop {
            let event = match esr.read(&mut input) {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    return flush_then(&mut decoder, tx, damaged(offset, e.to_string())).await
                }
            };
            offset += u64::from(event.header().event_size());
            stats.events += 1;
            if let Err(e) = decoder.on_event(&event).await {
                let err = Error::replay(format!(
                    "{}: cannot decode the event ending at byte {offset}: {e}; events before it were delivered, the rest of the file was not",
                    path.display()
                ));
                return flush_then(&mut decoder, tx, err).await;
            }
            if event.header().event_type_raw() == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
                if let Err(e) = feed_payload(&mut esr, &event, &mut decoder, &mut stats).await {
                    return flush_then(&mut decoder, tx, damaged(offset, e)).await;
                }
            }
            if let Some(chunk) = decoder.take_chunk(false) {
                send(tx, chunk).await?;
            }
        }
        if let Some(chunk) = decoder.take_chunk(true) {
            send(tx, chunk).await?;
        }
        stats.files += 1;
        stats.bytes += size;
        tracing::info!(file = %path.display(), size = %units::bytes(size), events = %units::count(stats.events), "replayed");
    }
    Ok(stats)
}

/// The events inside a MySQL compressed transaction.
async fn feed_payload(
    esr: &mut EventStreamReader,
    event: &Event,
    decoder: &mut Decoder,
    stats: &mut ReplayStats,
) -> std::result::Result<(), String> {
    let tpe: TransactionPayloadEvent<'_> = event.read_event().map_err(|e| e.to_string())?;
    let payload = tpe.decompressed().map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    let mut payload = payload;
    payload
        .read_to_end(&mut bytes)
        .map_err(|e| format!("transaction payload: {e}"))?;
    let mut cur = Cursor::new(bytes);
    while let Some(inner) = esr
        .read_decompressed(&mut cur)
        .map_err(|e| format!("transaction payload: {e}"))?
    {
        stats.events += 1;
        decoder.on_event(&inner).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn flush_then(
    decoder: &mut Decoder,
    tx: &mpsc::Sender<Chunk>,
    err: Error,
) -> Result<ReplayStats> {
    if let Some(chunk) = decoder.take_chunk(true) {
        send(tx, chunk).await?;
    }
    Err(err)
}

async fn send(tx: &mpsc::Sender<Chunk>, chunk: Chunk) -> Result<()> {
    tx.send(chunk)
        .await
        .map_err(|_| Error::stage("sink", "it stopped taking changes"))
}
