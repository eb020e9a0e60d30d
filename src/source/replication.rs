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
//! - With several `--source` servers, a server that is down, keeps failing for
//!   `--failover-after`, or fails definitely about itself is left for the next one that holds
//!   the position's GTIDs ([`super::failover`]); the decoder carries on, so `seq` keeps growing
//!   and nothing is lost or repeated. Each chunk names the server its position was read on.
//! - On shutdown it stops reading; what was decoded is handed on (or, if the sink cannot take
//!   it within 10 s, dropped whole and never acknowledged, so it is read again after a
//!   restart). Nothing is handed on after a dropped chunk.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::failover::{self, Failover, Why};
use super::reader::{ReadError, Reader};
use super::start::EndTarget;
use super::stream::{self, Replica, StartPoint};
use super::{Disconnect, Failure, Result, ServerInfo, SourceConfig, SourceError};
use crate::backoff::Backoff;
use crate::change::Chunk;
use crate::checkpoint::Store;
use crate::checkpoint::{Position, ServerIdentity};
use crate::decode::inject::Due;
use crate::decode::Decoder;
use crate::shutdown::Shutdown;
use crate::snapshot::handoff::{Inbox, Injected};
use crate::snapshot::progress;

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
    /// Snapshot chunks to inject, and the store their `seq` rooms are saved in.
    snapshot: Option<(Inbox, Store)>,
    /// Changes handed to the sink so far (the run's last line compares them with the changes
    /// the sink confirmed).
    pub handed_on: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The `--source` servers and when to leave one (see `source::failover`).
    failover: Failover,
    /// Which of them `src` is.
    current: usize,
    /// `src`, for the snapshot runner's connections (they follow a failover).
    pub current_source: Arc<Mutex<SourceConfig>>,
    /// The server each chunk's position was read on (`info`'s, shared by the chunks).
    stamp: Arc<ServerIdentity>,
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
            failover: Failover::single(src.clone()),
            current: 0,
            current_source: Arc::new(Mutex::new(src.clone())),
            stamp: Arc::new(info.identity.clone()),
            src,
            info,
            replica,
            target,
            shutdown,
            written_by: None,
            dropped: false,
            snapshot: None,
            handed_on: Default::default(),
        }
    }

    /// Injects the snapshot chunks of `inbox` into the stream (see `snapshot::handoff`).
    pub fn with_snapshot(mut self, inbox: Inbox, store: Store) -> Replication {
        self.snapshot = Some((inbox, store));
        self
    }

    /// Fails over across `failover`'s servers, `current` being the one `src` is.
    pub fn with_failover(mut self, failover: Failover, current: usize) -> Replication {
        self.failover = failover;
        self.current = current;
        self
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
        let snapshotting = self.snapshot.as_ref().is_some_and(|(s, _)| s.busy());
        if let Some(t) = self.target.as_ref().filter(|_| !snapshotting) {
            if t.reached(decoder.position()) {
                tracing::info!("already at the source's binlog end; nothing to do");
                return Ok(Outcome::CaughtUp);
            }
        }
        let mut conn = Some(first_conn);
        let mut backoff = Backoff::new();
        let mut opened_at = decoder.position().clone();
        // Since when the current server has failed without a stream opening, and why binsync
        // is leaving it (see `source::failover`).
        let mut failing_since: Option<Instant> = None;
        let mut leaving: Option<Why> = None;
        let mut warned_snapshot = false;
        loop {
            let was = self.info.identity.clone();
            let attempt = async {
                match conn.take() {
                    Some(c) => stream::open(c, &self.src, &self.info, &self.replica, &start).await,
                    None => match leaving.clone() {
                        Some(why) => self.fail_over(&opened_at, why).await,
                        None => self.reopen(&opened_at).await,
                    },
                }
            };
            let result = match attempt.await {
                Ok(s) => {
                    backoff.succeeded();
                    failing_since = None;
                    leaving = None;
                    if !was.same_server(&self.info.identity) {
                        // Another server (a failover, or another one behind the address):
                        // the old file and offset mean nothing in its binlog.
                        decoder.forget_file();
                    }
                    let snapshotting = self.snapshot.as_ref().is_some_and(|(s, _)| s.busy());
                    let mut lag = match self.failover.enabled() && !snapshotting {
                        true => failover::LagWatch::start(self.src.clone(), self.failover.behind),
                        false => failover::LagWatch::off(),
                    };
                    let server = self.info.identity.to_string();
                    crate::metrics::source_connected(self.src.to_string(), server);
                    self.pump(s, &mut decoder, &tx, &mut lag).await
                }
                Err(e) => Err(e),
            };
            // Hand on what was decoded, whatever happens next.
            self.flush(&mut decoder, &tx).await?;
            let snapshotting = self.snapshot.as_ref().is_some_and(|(s, _)| s.busy());
            let may_leave = self.failover.enabled() && !snapshotting;
            let e = match result {
                Ok(outcome) => return Ok(outcome),
                Err(Failure::Transient(e)) if !self.shutdown.is_requested() => {
                    crate::metrics::source_lost();
                    Failure::Transient(e)
                }
                Err(Failure::Transient(_)) => return Ok(Outcome::Stopped),
                Err(Failure::Definite(e)) if may_leave && failover::about_the_server(&e) => {
                    Failure::Definite(e)
                }
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
            let since = *failing_since.get_or_insert_with(Instant::now);
            let newly_leaving = leaving.is_none();
            if leaving.is_none() && self.failover.enabled() {
                leaving = match &e {
                    Failure::Transient(Disconnect::Refused { .. }) => {
                        Some(Why::Refused(e.to_string()))
                    }
                    Failure::Transient(Disconnect::Behind(why)) => Some(Why::Behind(why.clone())),
                    Failure::Definite(_) => Some(Why::Definite(e.to_string())),
                    _ if since.elapsed() >= self.failover.after => Some(Why::Persisting {
                        for_: since.elapsed(),
                        last: e.to_string(),
                    }),
                    _ => None,
                };
                if leaving.is_some() && snapshotting {
                    leaving = None;
                    if !warned_snapshot {
                        warned_snapshot = true;
                        tracing::warn!(source = %self.src, "not failing over while the initial snapshot runs (its chunks are read at this server's binlog positions); retrying this server until the snapshot is done");
                    }
                }
            }
            if leaving.is_some() && newly_leaving {
                // Leave at once: the other servers are up, or the round says they are not.
                continue;
            }
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
        let (info, dump) = failover::open_on(
            &self.src,
            self.info.flavor(),
            pos,
            self.written_by.as_ref(),
            &self.replica,
            false,
        )
        .await?;
        self.info = info;
        Ok(dump)
    }

    /// One round over the `--source` servers, from the one after the current (see
    /// `source::failover`): the first that holds `pos` takes over.
    async fn fail_over(&mut self, pos: &Position, why: Why) -> Result<super::dump::Dump> {
        failover::require_gtid(pos, &self.src)?;
        let mut tried = Vec::new();
        for i in self.failover.round(self.current) {
            if self.shutdown.is_requested() {
                // Each try may wait 10 s for a server that does not answer: stop between them.
                return Err(Disconnect::Io("stopping during a failover".into()).into());
            }
            let src = self.failover.sources[i].clone();
            let leaving = i != self.current;
            let opened = failover::open_on(
                &src,
                self.info.flavor(),
                pos,
                self.written_by.as_ref(),
                &self.replica,
                leaving,
            )
            .await;
            match opened {
                Ok((info, dump)) => {
                    if leaving {
                        tracing::warn!(
                            "failover: switched from {} ({}) to {} ({}) because {why}; resuming after gtid {} (seq {})",
                            self.src,
                            self.info.identity,
                            src,
                            info.identity,
                            pos.gtid.as_ref().map(ToString::to_string).unwrap_or_default(),
                            pos.last_seq()
                        );
                    } else {
                        tracing::info!(source = %src, "failover: no other --source could take over; the same server is back");
                    }
                    *self
                        .current_source
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = src.clone();
                    self.src = src;
                    self.info = info;
                    self.current = i;
                    return Ok(dump);
                }
                Err(f @ (Failure::State(_) | Failure::Definite(_))) if !matches!(&f, Failure::Definite(e) if failover::about_the_server(e)) => {
                    return Err(f)
                }
                Err(f) => {
                    let why = failover::why_not(&f);
                    match &f {
                        Failure::Definite(_) => {
                            tracing::error!(source = %src, "failover: this --source cannot take over (not streamed from): {why}")
                        }
                        _ => {
                            tracing::warn!(source = %src, "failover: this --source cannot take over now: {why}")
                        }
                    }
                    tried.push(failover::Tried {
                        source: src.to_string(),
                        failure: f,
                    });
                }
            }
        }
        Err(failover::verdict(tried))
    }

    /// Decodes events until stopped, caught up, or the stream fails. The events are read on
    /// their own task ([`Reader`]); dropping it on return closes the connection.
    async fn pump(
        &mut self,
        stream: super::dump::Dump,
        decoder: &mut Decoder,
        tx: &mpsc::Sender<Chunk>,
        lag: &mut failover::LagWatch,
    ) -> Result<Outcome> {
        let mut reader = Reader::spawn(stream, self.replica.silence());
        loop {
            if let Some(why) = lag.try_fired() {
                return Err(Disconnect::Behind(why).into());
            }
            if !self.snapshot_step(decoder, tx).await? {
                return Ok(Outcome::Stopped);
            }
            // Here too, not only after an event: the snapshot may end while the source is
            // idle, and the next event could be a heartbeat away.
            if let Some(t) = &self.target {
                let snapshotting = self.snapshot.as_ref().is_some_and(|(s, _)| s.busy());
                if !snapshotting
                    && !decoder.in_transaction()
                    && t.reached_reading(decoder.position(), decoder.read_to())
                {
                    return Ok(Outcome::CaughtUp);
                }
            }
            let held = self.snapshot.as_ref().is_some_and(|(s, _)| s.held());
            // Non-blocking first: while events are ready, keep filling the chunk.
            let ready = if held { None } else { reader.try_next() };
            let batch = match ready {
                Some(batch) => batch,
                None => {
                    // Idle: hand on what we have, then wait.
                    if let Some(chunk) = decoder.take_chunk(true) {
                        if !self.send(tx, chunk).await? {
                            return Ok(Outcome::Stopped);
                        }
                    }
                    let inbox = self.snapshot.as_mut().map(|(s, _)| s);
                    tokio::select! {
                        b = reader.next(), if !held => b.unwrap_or(Err(ReadError::Ended)),
                        _ = async {
                            match inbox {
                                Some(s) => s.recv().await,
                                None => std::future::pending().await,
                            }
                        } => continue,
                        _ = self.shutdown.requested() => return Ok(Outcome::Stopped),
                        why = lag.fired() => return Err(Disconnect::Behind(why).into()),
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
            let read_to = decoder.read_to();
            crate::metrics::events_read(&events, &decoder.position().file, read_to);
            for event in &events {
                decoder.on_event(event).await?;
                if !decoder.in_transaction() {
                    if self.snapshot.as_ref().is_some_and(|(s, _)| s.has_pending())
                        && !self.snapshot_step(decoder, tx).await?
                    {
                        return Ok(Outcome::Stopped);
                    }
                    if let Some(t) = &self.target {
                        let snapshotting = self.snapshot.as_ref().is_some_and(|(s, _)| s.busy());
                        if !snapshotting && t.reached_reading(decoder.position(), decoder.read_to())
                        {
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

    /// Takes the snapshot runner's messages and injects every chunk due at the decoder's
    /// position (between transactions). False when stopping dropped a chunk.
    async fn snapshot_step(
        &mut self,
        decoder: &mut Decoder,
        tx: &mpsc::Sender<Chunk>,
    ) -> Result<bool> {
        let Some((inbox, _)) = self.snapshot.as_mut() else {
            return Ok(true);
        };
        inbox.drain();
        if let Some(why) = inbox.failure() {
            return Err(SourceError::Snapshot(why).into());
        }
        loop {
            let Some((inbox, store)) = self.snapshot.as_mut() else {
                return Ok(true);
            };
            let Some((c, due)) = inbox.next_due(decoder) else {
                return Ok(true);
            };
            if due == Due::Passed {
                let _ = c.reply.send(Injected::Stale {
                    buf: c.buf,
                    why: "the stream passed its position".into(),
                    replan: false,
                });
                continue;
            }
            if let Some(why) = Inbox::schema_mismatch(decoder, &c) {
                let _ = c.reply.send(Injected::Stale {
                    buf: c.buf,
                    why,
                    replan: true,
                });
                continue;
            }
            let room = decoder.begin_snapshot_chunk(
                &c.db,
                &c.table,
                c.keyless,
                &c.position.file,
                c.position.offset,
                c.read_at_micros,
                c.budget,
            );
            // The room is on disk before any of its rows can be delivered.
            let store = store.clone();
            progress::reserve(&store, &room)
                .await
                .map_err(Failure::State)?;
            for row in 0..c.buf.rows.len() {
                decoder.snapshot_row(c.buf.id(row), c.buf.after(row));
                if let Some(chunk) = decoder.take_chunk(false) {
                    if !self.send(tx, chunk).await? {
                        return Ok(false);
                    }
                }
            }
            let mut p = c.progress;
            if p.since == 0 {
                p.since = room.seq_before;
            }
            let since = p.since;
            decoder.end_snapshot_chunk(c.last.then_some(since), progress::records(&p));
            let _ = c.reply.send(Injected::Done { buf: c.buf, since });
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
                let mut chunk = chunk;
                if *self.stamp != self.info.identity {
                    self.stamp = Arc::new(self.info.identity.clone());
                }
                chunk.server = Some(self.stamp.clone());
                let changes = chunk.changes.len() as u64;
                let versions = crate::schema::history::versions_in(&chunk.records);
                // Queued before the sink can confirm it (see `metrics::delivered`).
                crate::metrics::handed(chunk.tally(versions));
                p.send(chunk);
                self.handed_on
                    .fetch_add(changes, std::sync::atomic::Ordering::Relaxed);
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
