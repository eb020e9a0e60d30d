//! `binsync run`: the stages and how they are joined.
//!
//! ```text
//! reader --events, bounded--> decoder --Chunk, bounded--> sink --Ack, bounded--> checkpointer
//! ```
//! - The source stage reads the binlog as a replica ([`Reader`], its own task) and cuts the
//!   decoded changes into chunks.
//!   A full sink channel pauses it (backpressure), so memory is bounded by the channel sizes
//!   times the chunk size, whatever the transaction size or sink speed.
//! - A dropped connection is retried forever with capped, jittered backoff, from the decoder's
//!   own position (what is queued is still delivered; nothing is read twice into the sink).
//! - The checkpointer saves the position of the newest acknowledged chunk. Acks arrive in
//!   chunk order, so the checkpoint never passes an undelivered change.
//! - Shutdown (SIGINT/SIGTERM or `--exit-at-end` reaching the target) stops the reading; what
//!   was decoded is delivered and checkpointed, then `run` returns.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::backoff::Backoff;
use crate::change::Chunk;
use crate::checkpoint::{Checkpoint, Position, ServerIdentity, Store};
use crate::config::RunSettings;
use crate::decode::{DecodeConfig, Decoder, SchemaLookup};
use crate::dlq::Dlq;
use crate::error::{Error, Result};
use crate::gtid::{Flavor, GtidPos};
use crate::sink::http::batch::SourceHeader;
use crate::sink::{self, Ack, SinkSpec};
use crate::source::lookup::InfoSchemaLookup;
use crate::source::reader::{ReadError, Reader};
use crate::source::stream::{self, StartPoint, HEARTBEAT};
use crate::source::{
    binary_logs, binlog_end, binlog_end_target, ServerInfo, SourceConfig, SourceError,
};
use crate::start::StartSpec;
use crate::units;

/// Chunks queued between the decoder and the sink.
const CHUNK_QUEUE: usize = 8;
const ACK_QUEUE: usize = 64;
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `--exit-at-end`: everything up to the binlog end at start-up is delivered.
    CaughtUp,
    /// Asked to stop.
    Stopped,
}

/// Where the server's binlog ended at start-up.
#[derive(Debug, Clone)]
struct EndTarget {
    file: String,
    offset: u64,
    gtid: Option<GtidPos>,
}

impl EndTarget {
    fn reached(&self, pos: &Position) -> bool {
        if let (Some(have), Some(want)) = (&pos.gtid, &self.gtid) {
            let covered = match (have, want) {
                (GtidPos::Mysql(h), GtidPos::Mysql(w)) => h.is_superset_of(w),
                (GtidPos::Mariadb(h), GtidPos::Mariadb(w)) => h.is_superset_of(w),
                _ => false,
            };
            if covered {
                return true;
            }
        }
        match (file_number(&pos.file), file_number(&self.file)) {
            (Some(a), Some(b)) => (a, pos.offset) >= (b, self.offset),
            _ => false,
        }
    }
}

/// `mysql-bin.000042` -> 42.
fn file_number(name: &str) -> Option<u64> {
    name.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
}

/// Runs until `shutdown` resolves, the end is reached (`--exit-at-end`), or a definite error.
pub async fn run(
    settings: RunSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Outcome> {
    let store = Store::open(&settings.state_dir)?;
    if settings.reset {
        tracing::info!(state_dir = %settings.state_dir.display(), "--reset: discarding the checkpoint");
        store.reset().await?;
    }
    let checkpoint = store.load()?;

    let src = settings.source.clone();
    tracing::info!(source = %src, "connecting");
    let mut conn = src.connect().await?;
    let info = ServerInfo::read(&mut conn, &src).await?;
    tracing::info!(server = %info.identity, "connected");
    info.require_streamable()?;

    let (mut start_pos, start_point, from_header, emit_from) =
        plan_start(&mut conn, &src, &info, checkpoint.as_ref(), &settings.start).await?;
    if checkpoint.is_none() {
        start_pos.seq = store.seq_floor();
        // The start point is where a restart must resume even if nothing is delivered before
        // it (`--start latest` stopped at once would otherwise fall back to `earliest`). Not for
        // a MySQL file start read from the head of its file: that position is not resumable.
        if emit_from.is_none() {
            store
                .save(&Checkpoint {
                    server: info.identity.clone(),
                    position: start_pos.clone(),
                })
                .await?;
        }
    }
    let target = if settings.exit_at_end {
        let (file, offset, gtid) = binlog_end_target(&mut conn, &src, info.flavor()).await?;
        let gtid = gtid
            .filter(|g| !g.is_empty())
            .and_then(|g| GtidPos::parse(info.flavor(), &g).ok());
        Some(EndTarget { file, offset, gtid })
    } else {
        None
    };
    tracing::info!(start = %start_point, position = %start_pos, "streaming");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(CHUNK_QUEUE);
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>(ACK_QUEUE);
    // Bridge until the stages share one `Shutdown` (the sink observes it while retrying).
    let mut sink_stop = stop_rx.clone();
    let sink_shutdown = crate::shutdown::Shutdown::on(async move {
        if sink_stop.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    let sink_task = spawn_sink(&settings, &store, &info, chunk_rx, ack_tx, sink_shutdown)?;
    let checkpointer = tokio::spawn(checkpointer(store, info.identity.clone(), ack_rx));

    let cfg = Arc::new(DecodeConfig {
        filter: settings.filter.clone(),
        entities: settings.entities.clone(),
        ..DecodeConfig::default()
    });
    let lookup: Box<dyn SchemaLookup> = Box::new(InfoSchemaLookup::new(src.clone()));
    let decoder = Decoder::new(cfg, start_pos, from_header, emit_from, Some(lookup));
    let source = SourceStage {
        src,
        info,
        server_id: settings.server_id,
        target,
        stop: stop_rx,
        dropped: false,
    };
    let source_result = source.run(conn, start_point, decoder, chunk_tx).await;
    // The source is done (its sender dropped): the sink drains, then the checkpointer.
    let sink_result = sink_task
        .await
        .map_err(|e| Error::Internal(format!("sink task: {e}")))?;
    let cp_result = checkpointer
        .await
        .map_err(|e| Error::Internal(format!("checkpointer task: {e}")))?;
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

fn spawn_sink(
    settings: &RunSettings,
    store: &Store,
    info: &ServerInfo,
    rx: mpsc::Receiver<Chunk>,
    acks: mpsc::Sender<Ack>,
    shutdown: crate::shutdown::Shutdown,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let spec = settings.sink.clone();
    match (&spec, &settings.http) {
        (SinkSpec::Http(_), Some(cfg)) => {
            let cfg = cfg.clone();
            let dlq = Dlq::open(store)?;
            let header = SourceHeader::new(&info.identity);
            Ok(tokio::spawn(async move {
                sink::http::run(cfg, header, dlq, rx, acks, shutdown)
                    .await
                    .map_err(Error::from)
            }))
        }
        (SinkSpec::Http(url), None) => Err(Error::Internal(format!("no HTTP settings for {url}"))),
        _ => Ok(tokio::task::spawn_blocking(move || {
            sink::lines::run_blocking(spec, rx, acks).map_err(Error::from)
        })),
    }
}

/// Saves the newest acknowledged position; returns the number of changes delivered.
async fn checkpointer(
    store: Store,
    server: ServerIdentity,
    mut acks: mpsc::Receiver<Ack>,
) -> Result<u64> {
    let mut delivered = 0u64;
    let mut last_log = Instant::now();
    let mut since_log = 0u64;
    while let Some(first) = acks.recv().await {
        let mut newest = first.position;
        delivered += first.changes as u64;
        since_log += first.changes as u64;
        // Coalesce: one durable write for everything acknowledged meanwhile.
        while let Ok(a) = acks.try_recv() {
            delivered += a.changes as u64;
            since_log += a.changes as u64;
            if a.position.is_some() {
                newest = a.position;
            }
        }
        if let Some(position) = newest {
            store
                .save(&Checkpoint {
                    server: server.clone(),
                    position,
                })
                .await?;
        }
        if last_log.elapsed() >= PROGRESS_EVERY {
            let secs = last_log.elapsed().as_secs_f64();
            tracing::info!(
                delivered = %units::count(delivered),
                rate = %format!("{}/s", units::count((since_log as f64 / secs) as u64)),
                "progress"
            );
            last_log = Instant::now();
            since_log = 0;
        }
    }
    Ok(delivered)
}

/// Decides where the stream begins: the checkpoint, else `--start`.
async fn plan_start(
    conn: &mut mysql_async::Conn,
    src: &SourceConfig,
    info: &ServerInfo,
    checkpoint: Option<&Checkpoint>,
    start: &StartSpec,
) -> Result<(Position, StartPoint, Option<Flavor>, Option<(String, u64)>)> {
    let flavor = info.flavor();
    if let Some(cp) = checkpoint {
        tracing::info!(checkpoint = %cp.position, "resuming from the checkpoint (--start is ignored; --reset discards the checkpoint)");
        if cp.server.flavor != flavor {
            return Err(SourceError::ServerChanged {
                checkpoint: cp.server.to_string(),
                now: info.identity.to_string(),
            }
            .into());
        }
        let pos = cp.position.clone();
        return match (&pos.gtid, info.gtid_enabled()) {
            (Some(g), true) => Ok((pos.clone(), StartPoint::Gtid(g.clone()), None, None)),
            _ if cp.server.same_server(&info.identity) => Ok((
                pos.clone(),
                StartPoint::File {
                    file: pos.file.clone(),
                    offset: pos.offset,
                },
                None,
                None,
            )),
            _ => Err(SourceError::ServerChanged {
                checkpoint: cp.server.to_string(),
                now: info.identity.to_string(),
            }
            .into()),
        };
    }
    let learn = info.gtid_enabled().then_some(flavor);
    match start {
        StartSpec::Earliest => {
            let logs = binary_logs(conn, src).await?;
            let first = logs
                .first()
                .map(|(n, _)| n.clone())
                .ok_or(SourceError::BinlogOff)?;
            let pos = Position {
                file: first.clone(),
                offset: 4,
                ..Position::default()
            };
            Ok((
                pos,
                StartPoint::File {
                    file: first,
                    offset: 4,
                },
                learn,
                None,
            ))
        }
        StartSpec::Latest => {
            let (file, offset, gtid) = binlog_end(conn, src, flavor).await?;
            let gtid = match gtid.filter(|_| info.gtid_enabled()) {
                Some(text) => Some(
                    GtidPos::parse(flavor, &text).map_err(|e| Error::Internal(e.to_string()))?,
                ),
                None => None,
            };
            let pos = Position {
                file: file.clone(),
                offset,
                gtid,
                ..Position::default()
            };
            Ok((pos, StartPoint::File { file, offset }, None, None))
        }
        StartSpec::Gtid(text) => {
            let g = GtidPos::parse(flavor, text).map_err(|e| {
                Error::Config(crate::config::ConfigError(format!(
                    "--start gtid:{text}: {e} (this source is {flavor}, which writes {})",
                    match flavor {
                        Flavor::Mysql => "uuid:1-5 sets",
                        Flavor::Mariadb => "domain-server-seq lists",
                    }
                )))
            })?;
            if !info.gtid_enabled() {
                return Err(SourceError::Unsupported(
                    "--start gtid: the source has gtid_mode OFF; use --start file:NAME:POS".into(),
                )
                .into());
            }
            let pos = Position {
                gtid: Some(g.clone()),
                ..Position::default()
            };
            Ok((pos, StartPoint::Gtid(g), None, None))
        }
        StartSpec::File { name, pos } => match flavor {
            Flavor::Mariadb => {
                let gtid: Option<String> = crate::source::query_one(
                    conn,
                    src,
                    &format!(
                        "SELECT BINLOG_GTID_POS('{}', {pos})",
                        name.replace('\'', "")
                    ),
                )
                .await?;
                let gtid = gtid.and_then(|g| GtidPos::parse(flavor, &g).ok());
                let p = Position {
                    file: name.clone(),
                    offset: *pos,
                    gtid,
                    ..Position::default()
                };
                Ok((
                    p,
                    StartPoint::File {
                        file: name.clone(),
                        offset: *pos,
                    },
                    None,
                    None,
                ))
            }
            Flavor::Mysql => {
                // Read the file from its head to learn the GTID set at `pos`, emitting from `pos`.
                let p = Position {
                    file: name.clone(),
                    offset: 4,
                    ..Position::default()
                };
                Ok((
                    p,
                    StartPoint::File {
                        file: name.clone(),
                        offset: 4,
                    },
                    learn,
                    Some((name.clone(), *pos)),
                ))
            }
        },
    }
}

struct SourceStage {
    src: SourceConfig,
    info: ServerInfo,
    server_id: u32,
    target: Option<EndTarget>,
    stop: watch::Receiver<bool>,
    /// A chunk was dropped while stopping (see [`SourceStage::send`]).
    dropped: bool,
}

impl SourceStage {
    async fn run(
        mut self,
        first_conn: mysql_async::Conn,
        mut start: StartPoint,
        mut decoder: Decoder,
        tx: mpsc::Sender<Chunk>,
    ) -> Result<Outcome> {
        if let Some(t) = &self.target {
            if t.reached(decoder.position()) {
                tracing::info!("already at the source's binlog end; nothing to do");
                return Ok(Outcome::CaughtUp);
            }
        }
        let mut conn = Some(first_conn);
        let mut backoff = Backoff::new();
        loop {
            let attempt = async {
                let c = match conn.take() {
                    Some(c) => c,
                    None => self.src.connect_once().await?,
                };
                stream::open(c, &self.src, &self.info, self.server_id, &start).await
            };
            let result = match attempt.await {
                Ok(s) => self.pump(s, &mut decoder, &tx, &mut backoff).await,
                Err(e) => Err(Error::Source(e)),
            };
            match result {
                Ok(outcome) => {
                    self.flush(&mut decoder, &tx).await?;
                    return Ok(outcome);
                }
                Err(e) if e.is_retriable() && !*self.stop.borrow() => {
                    // Hand on what was decoded, then resume from the decoder's own position.
                    self.flush(&mut decoder, &tx).await?;
                    let pos = decoder.restart();
                    start = match (&pos.gtid, self.info.gtid_enabled()) {
                        (Some(g), true) => StartPoint::Gtid(g.clone()),
                        _ => StartPoint::File {
                            file: pos.file.clone(),
                            offset: pos.offset,
                        },
                    };
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, from = %start, "source connection lost; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.changed() => {}
                    }
                    if *self.stop.borrow() {
                        return Ok(Outcome::Stopped);
                    }
                }
                Err(e) => {
                    self.flush(&mut decoder, &tx).await?;
                    return Err(e);
                }
            }
        }
    }

    /// Decodes events until stopped, caught up, or the stream fails. The events are read on
    /// their own task ([`Reader`]); dropping it on return closes the connection.
    async fn pump(
        &mut self,
        stream: mysql_async::BinlogStream,
        decoder: &mut Decoder,
        tx: &mpsc::Sender<Chunk>,
        backoff: &mut Backoff,
    ) -> Result<Outcome> {
        let mut reader = Reader::spawn(stream, HEARTBEAT * 5);
        let mut healthy_since = Instant::now();
        loop {
            // Non-blocking first: while events are ready, keep filling the chunk.
            let batch = match reader.try_next() {
                Some(batch) => batch,
                None => {
                    // Idle: hand on what we have, then wait.
                    if let Some(chunk) = decoder.take_chunk(true) {
                        if !self.send(tx, chunk).await? {
                            return Ok(Outcome::Stopped);
                        }
                    }
                    tokio::select! {
                        b = reader.next() => b.unwrap_or(Err(ReadError::Ended)),
                        _ = self.stop.changed() => return Ok(Outcome::Stopped),
                    }
                }
            };
            let events = batch.map_err(|e| match e {
                ReadError::Driver(e) => SourceError::classify(e, &self.src),
                ReadError::Ended => SourceError::StreamEnded,
                ReadError::Silent(d) => SourceError::Silent(d),
            })?;
            for event in &events {
                decoder.on_event(event).await?;
                if !decoder.in_transaction() {
                    if let Some(t) = &self.target {
                        if t.reached(decoder.position()) {
                            decoder.mark_at_end();
                            return Ok(Outcome::CaughtUp);
                        }
                    }
                }
                if let Some(chunk) = decoder.take_chunk(false) {
                    if !self.send(tx, chunk).await? {
                        return Ok(Outcome::Stopped);
                    }
                }
                if *self.stop.borrow() {
                    return Ok(Outcome::Stopped);
                }
            }
            if healthy_since.elapsed() > Duration::from_secs(30) {
                backoff.reset();
                healthy_since = Instant::now();
            }
        }
    }
}

impl SourceStage {
    async fn flush(&mut self, decoder: &mut Decoder, tx: &mpsc::Sender<Chunk>) -> Result<()> {
        if let Some(chunk) = decoder.take_chunk(true) {
            self.send(tx, chunk).await?;
        }
        Ok(())
    }

    /// Hands a chunk to the sink, waiting while it is full. Returns false when binsync is
    /// stopping and the sink cannot take it (down, or not draining within 10 s): the chunk is
    /// dropped undelivered and, never acknowledged, read again after the restart. Nothing is
    /// sent after a dropped chunk, so no later position can be acknowledged past it.
    async fn send(&mut self, tx: &mpsc::Sender<Chunk>, chunk: Chunk) -> Result<bool> {
        if self.dropped {
            return Ok(false);
        }
        loop {
            let stopping = *self.stop.borrow();
            let permit = if stopping {
                tokio::time::timeout(Duration::from_secs(10), tx.reserve()).await
            } else {
                tokio::select! {
                    p = tx.reserve() => Ok(p),
                    _ = self.stop.changed() => continue,
                }
            };
            return match permit {
                Ok(Ok(p)) => {
                    p.send(chunk);
                    Ok(true)
                }
                // The sink may close on the stop signal before this task sees it.
                Ok(Err(_)) if !*self.stop.borrow() => {
                    Err(Error::Internal("the sink stopped".into()))
                }
                _ => {
                    self.dropped = true;
                    Ok(false)
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut b = Backoff::new();
        let delays: Vec<_> = (0..40).map(|_| b.next_delay()).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_millis(50) && *d <= Duration::from_secs(30)));
        assert!(delays[..2].iter().all(|d| *d <= Duration::from_millis(200)));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn end_target_by_file_and_gtid() {
        let t = EndTarget {
            file: "mariadb-bin.000002".into(),
            offset: 500,
            gtid: Some(GtidPos::parse(Flavor::Mariadb, "0-1-10").unwrap()),
        };
        let mut p = Position {
            file: "mariadb-bin.000001".into(),
            offset: 9000,
            ..Position::default()
        };
        assert!(!t.reached(&p));
        p.file = "mariadb-bin.000002".into();
        p.offset = 500;
        assert!(t.reached(&p));
        let g = Position {
            file: "x".into(),
            gtid: Some(GtidPos::parse(Flavor::Mariadb, "0-1-10").unwrap()),
            ..Position::default()
        };
        assert!(t.reached(&g));
    }
}
