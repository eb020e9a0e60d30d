//! `binsync replay`: archived binlog files (backups, files copied off a server) through the
//! same decoder and sinks as a live stream.
//!
//! Every event is read and checked (checksums, lengths); a damaged or truncated file stops the
//! replay with an error naming the file and the byte offset, after delivering everything before
//! it. Nothing is skipped silently. No checkpoint is kept: a replay is a one-shot backfill.
//!
//! [`BinlogFile`] reads a file's events in the order a live stream delivers them; the tests of
//! real binlog files read them the same way.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mysql_common::binlog::consts::{BinlogChecksumAlg, BinlogVersion, EventType};
use mysql_common::binlog::events::Event;
use mysql_common::binlog::EventStreamReader;
use tokio::sync::mpsc;

use crate::change::Chunk;
use crate::checkpoint::Position;
use crate::decode::frame::{check_checksum, read_frame, Payload, CHECKSUM_LEN};
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
    replay_with_history(files, spec, cfg, None).await
}

/// [`replay`], decoding tables without FULL metadata with `history` (the catalog as of the
/// first file's start, advanced by the DDL in the files; without it, what the files' DDL
/// says) instead of positional names.
pub async fn replay_with_history(
    files: &[PathBuf],
    spec: SinkSpec,
    cfg: DecodeConfig,
    history: Option<crate::schema::Catalog>,
) -> Result<ReplayStats> {
    if matches!(spec, SinkSpec::Http(_) | SinkSpec::Nats(_)) {
        return Err(Error::replay(
            "replay into the HTTP or NATS sink is not available in this build; use stdout or file:PATH",
        ));
    }
    let (tx, rx) = mpsc::channel::<Chunk>(8);
    let (ack_tx, mut ack_rx) = mpsc::channel::<Ack>(64);
    // No stop signal of its own: a full disk is waited out until space is back or the
    // process is interrupted (replay installs no signal handler).
    let sink_task = tokio::task::spawn_blocking(move || {
        sink::lines::run_blocking(spec, rx, ack_tx, crate::shutdown::Shutdown::never())
    });
    let counter = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(a) = ack_rx.recv().await {
            n += a.changes as u64;
        }
        n
    });
    let result = feed(files, Arc::new(cfg), history, &tx).await;
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
    history: Option<crate::schema::Catalog>,
    tx: &mpsc::Sender<Chunk>,
) -> Result<ReplayStats> {
    // Tables neither `--schema-from` nor a CREATE in the files describes are unknown: their
    // rows need FULL metadata (never positional names).
    let mut decoder = Decoder::new(cfg, Position::default(), None, None, None)
        .with_partial_history(history.unwrap_or_default());
    let mut stats = ReplayStats::default();
    for path in files {
        let mut file = BinlogFile::open(path)?;
        decoder.start_file(file.name());
        loop {
            let event = match file.next_event() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => return flush_then(&mut decoder, tx, e).await,
            };
            stats.events += 1;
            if let Err(e) = decoder.on_event(&event).await {
                return flush_then(&mut decoder, tx, file.cannot_decode(e)).await;
            }
            if let Some(chunk) = decoder.take_chunk(false) {
                send(tx, chunk).await?;
            }
        }
        if let Some(chunk) = decoder.take_chunk(true) {
            send(tx, chunk).await?;
        }
        stats.files += 1;
        stats.bytes += file.size();
        tracing::info!(file = %path.display(), size = %units::bytes(file.size()), events = %units::count(stats.events), "replayed");
    }
    Ok(stats)
}

/// One archived binlog file's events, in the order a live stream delivers them to the
/// decoder: each event read and checked (lengths, checksums), and the events inside a MySQL
/// compressed transaction right after their TRANSACTION_PAYLOAD event.
///
/// `binsync replay` feeds them to a [`Decoder`] (`on_event`, then `take_chunk`); so do the
/// tests of real binlog files.
pub struct BinlogFile {
    path: PathBuf,
    name: String,
    size: u64,
    input: BufReader<File>,
    esr: EventStreamReader,
    /// Where the next event starts (the end of the last one read outside a payload).
    offset: u64,
    /// The rest of the compressed transaction being read, and where its event starts.
    payload: Option<(u64, Payload)>,
    /// The events after the last format description end with a checksum.
    checksums: bool,
    /// The bytes of the event being read.
    frame: Vec<u8>,
}

impl BinlogFile {
    /// Opens `path` and checks that it starts with the binlog magic bytes.
    pub fn open(path: &Path) -> Result<BinlogFile> {
        let file = File::open(path)
            .map_err(|e| Error::replay(format!("cannot open {}: {e}", path.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut f = BinlogFile {
            path: path.to_path_buf(),
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size,
            input: BufReader::with_capacity(1 << 20, file),
            esr: EventStreamReader::new(BinlogVersion::Version4),
            offset: 0,
            payload: None,
            checksums: false,
            frame: Vec::new(),
        };
        let mut magic = [0u8; 4];
        f.input
            .read_exact(&mut magic)
            .map_err(|e| f.damaged(0, format!("no binlog header ({e})")))?;
        if magic != *b"\xfebin" {
            return Err(Error::replay(format!(
                "{} is not a binlog file (it does not start with the binlog magic bytes)",
                path.display()
            )));
        }
        f.offset = 4;
        Ok(f)
    }

    /// The file's name, as a position names it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes in the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next event, `None` at the end of the file; an error naming the file and the byte
    /// offset when the file is damaged or cut short there.
    ///
    /// Each event's bytes are read whole before mysql_common parses them: it panics on an
    /// event cut short, and on one shorter than its checksum.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        if let Some((start, payload)) = &mut self.payload {
            let start = *start;
            match payload.next(&mut self.esr, &mut self.frame) {
                Ok(Some(inner)) => return Ok(Some(inner)),
                Ok(None) => self.payload = None,
                Err(e) => {
                    self.payload = None;
                    return Err(self.damaged(start, e));
                }
            }
        }
        let start = self.offset;
        let trailer = if self.checksums { CHECKSUM_LEN } else { 0 };
        let event = match read_frame(&mut self.input, &mut self.frame, trailer) {
            Ok(true) if self.frame[4] == EventType::FORMAT_DESCRIPTION_EVENT as u8 => {
                self.esr.read(&self.frame[..]).map_err(|e| e.to_string())
            }
            // Checked before mysql_common reads it: a damaged length makes a plausible event
            // of the wrong bytes.
            Ok(true) if self.checksums => check_checksum(&self.frame)
                .and_then(|()| self.esr.read(&self.frame[..]).map_err(|e| e.to_string())),
            Ok(true) => self.esr.read(&self.frame[..]).map_err(|e| e.to_string()),
            Ok(false) => return Ok(None),
            Err(e) => Err(e),
        };
        let event = match event {
            Ok(Some(e)) => e,
            Ok(None) => return Err(self.damaged(start, "empty event".into())),
            Err(e) => return Err(self.damaged(start, e)),
        };
        let raw_type = event.header().event_type_raw();
        if raw_type == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
            // Its own footer says whether it, and the events after it, end with a CRC32.
            self.checksums = match event.footer().get_checksum_alg() {
                Ok(None | Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_OFF)) => false,
                Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)) => true,
                Err(e) => return Err(self.damaged(start, format!("format description: {e}"))),
            };
            if self.checksums {
                check_checksum(&self.frame).map_err(|e| self.damaged(start, e))?;
            }
        }
        self.offset += u64::from(event.header().event_size());
        if raw_type == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            // The payload is read out of the event's bytes: the next event gets a new buffer.
            let frame = std::mem::take(&mut self.frame);
            let payload = Payload::open(frame, trailer).map_err(|e| self.damaged(start, e))?;
            self.payload = Some((start, payload));
        }
        Ok(Some(event))
    }

    /// The decoder refused the last event read.
    pub fn cannot_decode(&self, e: impl std::fmt::Display) -> Error {
        Error::replay(format!(
            "{}: cannot decode the event ending at byte {}: {e}; events before it were delivered, the rest of the file was not",
            self.path.display(),
            self.offset
        ))
    }

    /// The event starting at byte `at` cannot be read.
    fn damaged(&self, at: u64, detail: String) -> Error {
        Error::replay(format!(
            "{}: damaged binlog at byte {at}: {detail}; events before it were delivered, the rest of the file was not",
            self.path.display()
        ))
    }
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
