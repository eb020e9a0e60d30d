//! Reading back what this source published to the stream: the half of exactly-once that the
//! duplicate window cannot give.
//!
//! [`scan`] reads the stream from a floor (exclusive) to its last sequence at the moment of
//! the call, headers only, with an ordered ephemeral consumer filtered on `PREFIX.>`, and
//! returns the `Binsync-Seq`s carrying our `Binsync-Source` that the caller asks for, with
//! the stream sequence each one landed at. Every publish that was sent before the call and
//! landed lies at or below that last sequence, so after a scan "not found" means "not in the
//! stream": the caller may publish it again. Errors here are all transient (the connection,
//! a leader election): the caller scans again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

/// How long the scan waits for the next message before it counts as failed (and is redone).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a scan found: binsync seq → stream sequence, and the stream's last sequence it read to.
#[derive(Debug, Default)]
pub struct Found {
    pub seqs: HashMap<u64, u64>,
    pub last: u64,
    /// Messages read (all sources).
    pub read: u64,
}

/// Reads stream `stream` above `floor` (subjects `PREFIX.>`); keeps the seqs of `source` for
/// which `wanted` holds.
pub async fn scan(
    js: &jetstream::Context,
    stream: &str,
    prefix: &str,
    source: &str,
    floor: u64,
    wanted: impl Fn(u64) -> bool,
) -> Result<Found, String> {
    let mut s = js
        .get_stream(stream)
        .await
        .map_err(|e| format!("stream {stream}: {}", super::error_chain(&e)))?;
    let info = s
        .info()
        .await
        .map_err(|e| format!("stream {stream} info: {}", super::error_chain(&e)))?;
    let last = info.state.last_sequence;
    let mut found = Found {
        last,
        ..Found::default()
    };
    if last <= floor || info.state.messages == 0 {
        return Ok(found);
    }
    let start = (floor + 1).max(info.state.first_sequence);
    let consumer = s
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: format!("{prefix}.>"),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("scan consumer on {stream}: {}", super::error_chain(&e)))?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(found);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("scan of {stream}: {}", super::error_chain(&e)))?;
    let started = Instant::now();
    let mut logged = Instant::now();
    loop {
        let next = tokio::time::timeout(IDLE_TIMEOUT, messages.next())
            .await
            .map_err(|_| format!("scan of {stream}: no message for {IDLE_TIMEOUT:?}"))?;
        let msg = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(format!("scan of {stream}: {}", super::error_chain(&e))),
            None => return Err(format!("scan of {stream}: the consumer ended")),
        };
        let (stream_seq, pending) = {
            let i = msg.info().map_err(|e| format!("scan of {stream}: {e}"))?;
            (i.stream_sequence, i.pending)
        };
        if stream_seq > last {
            break;
        }
        found.read += 1;
        if let Some(h) = &msg.headers {
            let ours = h
                .get("Binsync-Source")
                .is_some_and(|v| v.as_str() == source);
            let seq = h
                .get("Binsync-Seq")
                .and_then(|v| v.as_str().parse::<u64>().ok());
            if let (true, Some(seq)) = (ours, seq) {
                if wanted(seq) {
                    found.seqs.insert(seq, stream_seq);
                }
            }
        }
        if stream_seq >= last || pending == 0 {
            break;
        }
        if logged.elapsed() >= Duration::from_secs(5) {
            logged = Instant::now();
            tracing::info!(stream = %stream, at = stream_seq, to = last, read = found.read, "reading the stream back before publishing (exactly-once scan)");
        }
    }
    tracing::debug!(stream = %stream, from = start, to = last, read = found.read, found = found.seqs.len(), took = ?started.elapsed(), "scan done");
    Ok(found)
}
