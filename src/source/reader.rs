//! The reader: binlog events off the replica connection, on a task of their own, so that
//! socket reads, packet framing and the driver's event copies run on one core while the
//! decoder works on another.
//!
//! Invariants:
//! - Events arrive in stream order, in batches; a batch is cut at [`BATCH_EVENTS`] events or
//!   [`BATCH_BYTES`] bytes, whichever comes first, and only ever holds events that were already
//!   received (the reader never waits to fill a batch). At most [`QUEUED_BATCHES`] batches wait,
//!   so memory is bounded by about `QUEUED_BATCHES * BATCH_BYTES` plus one event.
//! - The first failure (a driver error, the end of the stream, or `silence` without even a
//!   heartbeat) is the last item; the task then ends and drops the connection.
//! - Dropping the [`Reader`] stops its task and closes the connection at once, so a reconnect
//!   never finds our previous dump thread still registered under the same server id.

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use mysql_async::binlog::events::Event;
use mysql_async::BinlogStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Events per batch at most: enough to amortise the hand-over, few enough to keep latency low.
pub const BATCH_EVENTS: usize = 64;
/// Bytes of event data per batch at most (a batch closes after the event that crosses it).
pub const BATCH_BYTES: usize = 256 << 10;
/// Batches waiting for the decoder.
pub const QUEUED_BATCHES: usize = 4;

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The driver failed (I/O, protocol, or an error packet from the server).
    Driver(mysql_async::Error),
    /// The server closed the stream.
    Ended,
    /// Nothing, not even a heartbeat, for this long.
    Silent(Duration),
}

pub type Batch = Result<Vec<Event>, ReadError>;

/// The receiving end; see the module docs.
pub struct Reader {
    rx: mpsc::Receiver<Batch>,
    task: JoinHandle<()>,
}

impl Reader {
    /// Starts reading `stream` on a new task.
    pub fn spawn(stream: BinlogStream, silence: Duration) -> Reader {
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let task = tokio::spawn(read_loop(stream, silence, tx));
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

async fn read_loop(mut stream: BinlogStream, silence: Duration, tx: mpsc::Sender<Batch>) {
    loop {
        // Wait (up to `silence`) for the first event of a batch, or for the decoder to go away.
        let first = tokio::select! {
            r = tokio::time::timeout(silence, stream.next()) => r,
            _ = tx.closed() => return,
        };
        let first = match first {
            Ok(Some(Ok(ev))) => ev,
            Ok(Some(Err(e))) => return fail(&tx, ReadError::Driver(e)).await,
            Ok(None) => return fail(&tx, ReadError::Ended).await,
            Err(_) => return fail(&tx, ReadError::Silent(silence)).await,
        };
        let mut bytes = first.data().len();
        let mut batch = Vec::with_capacity(BATCH_EVENTS);
        batch.push(first);
        let mut failure = None;
        // Then whatever is already here, without waiting.
        while batch.len() < BATCH_EVENTS && bytes < BATCH_BYTES {
            match stream.next().now_or_never() {
                Some(Some(Ok(ev))) => {
                    bytes += ev.data().len();
                    batch.push(ev);
                }
                Some(Some(Err(e))) => {
                    failure = Some(ReadError::Driver(e));
                    break;
                }
                Some(None) => {
                    failure = Some(ReadError::Ended);
                    break;
                }
                None => break,
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
