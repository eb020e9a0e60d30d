//! The reader: binlog events off the replica connection, on a task of their own, so that
//! socket reads, packet framing and event parsing run on one core while the
//! decoder works on another.
//!
//! Invariants:
//! - Events arrive in stream order, in batches; a batch is cut at [`BATCH_EVENTS`] events or
//!   [`BATCH_BYTES`] bytes, whichever comes first, and only ever holds events that were already
//!   received (the reader never waits to fill a batch). At most [`QUEUED_BATCHES`] batches wait,
//!   so memory is bounded by about `QUEUED_BATCHES * BATCH_BYTES` plus one event.
//! - The first failure (a connection or server error, a damaged event, the end of the
//!   stream, or `silence` without a byte, not even a heartbeat) is the last item; the task then ends and drops the connection.
//! - Dropping the [`Reader`] stops its task and closes the connection at once, so a reconnect
//!   never finds our previous dump thread still registered under the same server id.

use std::time::Duration;

use mysql_common::binlog::events::Event;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::dump::Dump;
use super::Failure;

/// Events per batch at most: enough to amortise the hand-over, few enough to keep latency low.
pub const BATCH_EVENTS: usize = 64;
/// Bytes of event data per batch at most (a batch closes after the event that crosses it).
pub const BATCH_BYTES: usize = 256 << 10;
/// Batches waiting for the decoder.
pub const QUEUED_BATCHES: usize = 4;

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The connection failed, the server sent an error, or an event could not be read
    /// (decided where it arose: transient or definite).
    Failed(Failure),
    /// The server closed the stream.
    Ended,
}

pub type Batch = Result<Vec<Event>, ReadError>;

/// The receiving end; see the module docs.
pub struct Reader {
    rx: mpsc::Receiver<Batch>,
    task: JoinHandle<()>,
}

impl Reader {
    /// Starts reading `dump` on a new task. `silence`: how long the server may send no byte.
    pub fn spawn(dump: Dump, silence: Duration) -> Reader {
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let task = tokio::spawn(read_loop(dump, silence, tx));
        Reader { rx, task }
    }

    /// The next batch, waiting for it. `None` only after the last item was taken.
    pub async fn next(&mut self) -> Option<Batch> {
        self.rx.recv().await
    }

    /// The next batch if one is ready.
    pub fn try_next(&mut self) -> Option<Batch> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_loop(mut dump: Dump, silence: Duration, tx: mpsc::Sender<Batch>) {
    loop {
        // Wait for the first event of a batch, or for the decoder to go away (reading is
        // abandoned mid-packet only then, with the connection).
        let first = tokio::select! {
            r = dump.next(silence) => r,
            _ = tx.closed() => return,
        };
        let first = match first {
            Ok(Some(ev)) => ev,
            Ok(None) => return fail(&tx, ReadError::Ended).await,
            Err(e) => return fail(&tx, ReadError::Failed(e)).await,
        };
        let mut bytes = first.data().len();
        let mut batch = Vec::with_capacity(BATCH_EVENTS);
        batch.push(first);
        let mut failure = None;
        // Then whatever is already here: only events that need no wait on the network (a
        // read is never abandoned half-way, which would lose the stream's framing).
        while batch.len() < BATCH_EVENTS && bytes < BATCH_BYTES && dump.has_ready() {
            match dump.next(silence).await {
                Ok(Some(ev)) => {
                    bytes += ev.data().len();
                    batch.push(ev);
                }
                Ok(None) => {
                    failure = Some(ReadError::Ended);
                    break;
                }
                Err(e) => {
                    failure = Some(ReadError::Failed(e));
                    break;
                }
            }
        }
        if tx.send(Ok(batch)).await.is_err() {
            return;
        }
        if let Some(e) = failure {
            return fail(&tx, e).await;
        }
    }
}

async fn fail(tx: &mpsc::Sender<Batch>, e: ReadError) {
    let _ = tx.send(Err(e)).await;
}
