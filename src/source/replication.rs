//! The source stage: reads the binlog as a replica and hands the decoded changes on as
//! [`Chunk`]s, through a bounded channel.
//!
//! Invariants:
//! - A full sink channel pauses it (backpressure): memory is bounded by the channel sizes
//!   times the chunk size, whatever the transaction size or sink speed.
//! - A [`Failure::Transient`] error (a dropped connection, a restarting server) is retried forever with [`Backoff`], from the decoder's own position: what was
//!   decoded is handed on first, and the rows of a transaction cut in the middle are skipped
//!   when it comes again, so nothing reaches the sink twice. A definite error ends the stage.
//! - Every reconnect first asks the server what it is and checks that it still holds the
//!   history of the position it resumes from ([`super::history`]): a server restarted after
//!   a `RESET MASTER`, or restored from a backup, stops the stage with a definite error
//!   instead of streaming a new history from the old position.
//! - A stream that ends is an error (transient), never success.
//! - On shutdown it stops reading; what was decoded is handed on (or, if the sink cannot take
//!   it within 10 s, dropped whole and never acknowledged, so it is read again after a
//!   restart). Nothing is handed on after a dropped chunk.

use std::time::Duration;

use tokio::sync::mpsc;

use super::history;
use super::reader::{ReadError, Reader};
use super::start::EndTarget;
use super::stream::{self, Replica, StartPoint, HEARTBEAT};
use super::{Disconnect, Failure, Result, ServerInfo, SourceConfig, SourceError};
use crate::backoff::Backoff;
use crate::change::Chunk;
use crate::checkpoint::{Position, ServerIdentity};
use crate::decode::Decoder;
use crate::shutdown::Shutdown;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `--exit-at-end`: everything up to the binlog end at start-up is handed on.
    CaughtUp,
    /// Asked to stop.
    Stopped,
}

/// The source stage's settings and state; see the module docs.
pub struct Replication {
    pub src: SourceConfig,
    pub info: ServerInfo,
    /// Who we register as.
    pub replica: Replica,
    /// Where to stop (`--exit-at-end`).
    pub target: Option<EndTarget>,
    pub shutdown: Shutdown,
    /// The server whose binlog the decoder's file and offset name: the checkpoint's writer
    /// until the stream moves them, then the server streamed from (None: unknown, and then
    /// they are not checked at a reconnect).
    written_by: Option<ServerIdentity>,
    /// A chunk was dropped while stopping (see [`Replication::send`]).
    dropped: bool,
}

impl Replication {
    pub fn new(
        src: SourceConfig,
        info: ServerInfo,
        replica: Replica,
        target: Option<EndTarget>,
        shutdown: Shutdown,
    ) -> Replication {
        Replication {
            src,
            info,
            replica,
            target,
            shutdown,
            written_by: None,
            dropped: false,
        }
    }

    /// Names the server whose binlog the start position's file and offset are in
    /// ([`super::start::StartPlan::written_by`]), so that a reconnect before the stream moves
    /// them can check them.
    pub fn position_written_by(mut self, server: Option<ServerIdentity>) -> Replication {
        self.written_by = server;
        self
    }

    /// Streams from `start` on `first_conn` (then on new connections) until stopped, caught
    /// up, or a definite error.
    pub async fn run(
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
        let mut opened_at = decoder.position().clone();
        loop {
            let attempt = async {
                match conn.take() {
                    Some(c) => stream::open(c, &self.src, &self.info, &self.replica, &start).await,
                    None => self.reopen(&opened_at).await,
                }
            };
            let result = match attempt.await {
                Ok(s) => {
                    backoff.succeeded();
                    self.pump(s, &mut decoder, &tx).await
                }
                Err(e) => Err(e),
            };
            // Hand on what was decoded, whatever happens next.
            self.flush(&mut decoder, &tx).await?;
            let e = match result {
                Ok(outcome) => return Ok(outcome),
                Err(Failure::Transient(e)) if !self.shutdown.is_requested() => e,
                Err(Failure::Transient(_)) => return Ok(Outcome::Stopped),
                Err(definite) => return Err(definite),
            };
            // Resume from the decoder's own position.
            let pos = decoder.restart();
            if (&pos.file, pos.offset) != (&opened_at.file, opened_at.offset) {
                // The stream moved them: they are in the binlog of the server streamed from.
                self.written_by = Some(self.info.identity.clone());
            }
            opened_at = pos;
            start = StartPoint::resume(&opened_at, self.info.gtid_enabled());
            let delay = backoff.next_delay();
            tracing::warn!(error = %e, attempt = backoff.attempts(), retry_in = %crate::units::duration(delay), from = %start, "source connection lost; reconnecting");
            if !crate::backoff::sleep_unless_stopped(delay, &mut self.shutdown).await {
                return Ok(Outcome::Stopped);
            }
        }
    }

    /// A new connection, and a stream on it from `pos`, once the server it reaches is known
    /// (it may have been restarted, reset, restored or replaced) and still holds the history
    /// of `pos`.
    async fn reopen(&mut self, pos: &Position) -> Result<super::dump::Dump> {
        let mut c = self.src.connect_once().await?;
        let info = ServerInfo::read(&mut c, &self.src).await?;
        if info.flavor() != self.info.flavor() {
            return Err(SourceError::ServerChanged {
                checkpoint: self.info.identity.to_string(),
                now: info.identity.to_string(),
            }
            .into());
        }
        history::verify(&mut c, &self.src, &info, pos, self.written_by.as_ref()).await?;
        self.info = info;
        let start = StartPoint::resume(pos, self.info.gtid_enabled());
        stream::open(c, &self.src, &self.info, &self.replica, &start).await
    }

    /// Decodes events until stopped, caught up, or the stream fails. The events are read on
    /// their own task ([`Reader`]); dropping it on return closes the connection.
    async fn pump(
        &mut self,
        stream: super::dump::Dump,
        decoder: &mut Decoder,
        tx: &mpsc::Sender<Chunk>,
    ) -> Result<Outcome> {
        let mut reader = Reader::spawn(stream, HEARTBEAT * 5);
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
                        _ = self.shutdown.requested() => return Ok(Outcome::Stopped),
                        // A failed sink or checkpointer (a full disk, say) ends the run now,
                        // not at the next event.
                        // (The HTTP sink may close on the stop signal before this task sees it.)
                        _ = tx.closed() => {
                            if self.shutdown.is_requested() {
                                return Ok(Outcome::Stopped);
                            }
                            return Err(SourceError::SinkClosed.into());
                        }
                    }
                }
            };
            let events = batch.map_err(|e| match e {
                ReadError::Failed(e) => e,
                ReadError::Ended => Disconnect::StreamEnded.into(),
            })?;
            for event in &events {
                decoder.on_event(event).await?;
                if !decoder.in_transaction() {
                    if let Some(t) = &self.target {
                        if t.reached_reading(decoder.position(), decoder.read_to()) {
                            return Ok(Outcome::CaughtUp);
                        }
                    }
                }
                if let Some(chunk) = decoder.take_chunk(false) {
                    if !self.send(tx, chunk).await? {
                        return Ok(Outcome::Stopped);
                    }
                }
                if self.shutdown.is_requested() {
                    return Ok(Outcome::Stopped);
                }
            }
        }
    }

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
        let permit = if self.shutdown.is_requested() {
            tokio::time::timeout(Duration::from_secs(10), tx.reserve()).await
        } else {
            tokio::select! {
                p = tx.reserve() => Ok(p),
                // Stopping: give the sink a bounded time to take it.
                _ = self.shutdown.requested() => {
                    tokio::time::timeout(Duration::from_secs(10), tx.reserve()).await
                }
            }
        };
        match permit {
            Ok(Ok(p)) => {
                p.send(chunk);
                Ok(true)
            }
            // The sink may close on the stop signal before this task sees it.
            Ok(Err(_)) if !self.shutdown.is_requested() => Err(SourceError::SinkClosed.into()),
            _ => {
                self.dropped = true;
                Ok(false)
            }
        }
    }
}
