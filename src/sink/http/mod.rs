//! The sync API sink: changes grouped per entity type, POSTed in batches (docs/sync-api.md).
//!
//! - Changes are spread over `in_flight` lanes by entity id; each lane sends one batch at a
//!   time, so operations on one id arrive in commit order while other lanes proceed.
//! - A batch closes at `batch_rows` rows, `batch_bytes` bytes, or `linger` after its first row.
//! - Retriable failures (408, 429, 5xx, timeouts, connection errors) are retried forever by
//!   default (`max_retries` caps it), with capped, jittered backoff and `Retry-After`.
//!   A rejected batch (other 4xx) goes to the dead-letter queue before it counts as handled
//!   (`--on-reject stop` ends binsync instead).
//! - A chunk is acknowledged to the checkpointer only when no batch holding any of its
//!   changes, or any earlier change, is still unhandled: the checkpoint advances over a
//!   contiguous run of delivered batches only.
//! - Every queue here is bounded (one batch waiting per lane), so a slow or absent receiver
//!   stops the reader instead of filling memory.

pub mod batch;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use self::batch::{lane_of, Batch, Builder, SourceHeader};
use super::retry::{classify, Verdict};
use super::{Ack, SinkError};
use crate::backoff::Backoff;
use crate::change::Chunk;
use crate::dlq::{DeadLetter, Dlq};
use crate::json::now_unix_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnReject {
    /// Keep the batch in the dead-letter queue and go on.
    Dlq,
    /// Stop binsync with an error (the checkpoint stays before the batch).
    Stop,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub url: String,
    /// The `Authorization` header value (from an environment variable; never logged).
    pub authorization: Option<String>,
    pub gzip: bool,
    pub batch_rows: usize,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub in_flight: usize,
    pub request_timeout: Duration,
    /// None: retry retriable failures forever.
    pub max_retries: Option<u32>,
    pub on_reject: OnReject,
    /// Merge several operations on one entity id within a batch (see [`batch::merge_ops`]).
    pub compact: bool,
}

impl HttpConfig {
    pub fn new(url: String) -> Self {
        HttpConfig {
            url,
            authorization: None,
            gzip: false,
            batch_rows: 1000,
            batch_bytes: 1 << 20,
            linger: Duration::from_millis(5),
            in_flight: 4,
            request_timeout: Duration::from_secs(30),
            max_retries: None,
            on_reject: OnReject::Dlq,
            compact: false,
        }
    }

    pub fn client(&self) -> Result<reqwest::Client, SinkError> {
        reqwest::Client::builder()
            .timeout(self.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            // 3xx is a rejection in the contract; following it would turn the POST into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| SinkError::Config(format!("HTTP client: {e}")))
    }
}

/// How one batch ended.
enum Handled {
    Delivered,
    DeadLettered,
    /// `--on-reject stop`, or the DLQ could not be written.
    Failed(SinkError),
    /// Shutdown while retrying: not delivered, the checkpoint stays before it.
    Abandoned,
}

struct LaneResult {
    min_seq: u64,
    handled: Handled,
}

/// What is not yet handled, and whether the sink must stop.
#[derive(Default)]
struct Tally {
    /// Unhandled batches (open builders included), by their smallest seq.
    unhandled: BTreeMap<u64, usize>,
    failure: Option<SinkError>,
    abandoned: bool,
}

impl Tally {
    fn opened(&mut self, min_seq: u64) {
        *self.unhandled.entry(min_seq).or_default() += 1;
    }

    fn record(&mut self, res: LaneResult) {
        match res.handled {
            Handled::Delivered | Handled::DeadLettered => {
                if let Some(n) = self.unhandled.get_mut(&res.min_seq) {
                    *n -= 1;
                    if *n == 0 {
                        self.unhandled.remove(&res.min_seq);
                    }
                }
            }
            Handled::Failed(e) => {
                if self.failure.is_none() {
                    self.failure = Some(e);
                }
            }
            Handled::Abandoned => self.abandoned = true,
        }
    }
}

/// Runs the sink until the chunk channel closes (then delivers what is buffered) or shutdown.
pub async fn run(
    cfg: HttpConfig,
    source: SourceHeader,
    dlq: Dlq,
    mut rx: mpsc::Receiver<Chunk>,
    acks: mpsc::Sender<Ack>,
    stop: watch::Receiver<bool>,
) -> Result<(), SinkError> {
    let client = cfg.client()?;
    let lanes = cfg.in_flight.max(1);
    // Lanes report here; `dispatch` keeps reading while it waits for a lane.
    let (res_tx, mut res_rx) = mpsc::channel::<LaneResult>(lanes * 4);
    let mut lane_txs = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (tx, lane_rx) = mpsc::channel::<Batch>(1);
        lane_txs.push(tx);
        tokio::spawn(lane(
            client.clone(),
            cfg.clone(),
            dlq.clone(),
            lane_rx,
            res_tx.clone(),
            stop.clone(),
        ));
    }
    drop(res_tx);

    let new_builder = || {
        if cfg.compact {
            Builder::compacting()
        } else {
            Builder::default()
        }
    };
    let mut builders: Vec<Builder> = (0..lanes).map(|_| new_builder()).collect();
    let mut tally = Tally::default();
    // Chunks waiting for their changes to be handled: (last seq covered, ack).
    let mut waiting: VecDeque<(u64, Ack)> = VecDeque::new();
    let mut last_seq = 0u64;
    let mut input_open = true;

    loop {
        let deadline = builders
            .iter()
            .filter_map(|b| b.opened)
            .min()
            .map(|t| t + cfg.linger);
        tokio::select! {
            chunk = rx.recv(), if input_open => {
                match chunk {
                    Some(chunk) => {
                        let chunk = std::sync::Arc::new(chunk);
                        for c in &chunk.changes {
                            let lane = lane_of(&c.entity, chunk.key(c), lanes);
                            let b = &mut builders[lane];
                            if b.is_empty() {
                                tally.opened(c.seq);
                            }
                            b.push(&chunk, c);
                            if b.count >= cfg.batch_rows || b.bytes >= cfg.batch_bytes {
                                dispatch(b, &source, &lane_txs[lane], &mut res_rx, &mut tally).await;
                            }
                        }
                        let covered = chunk
                            .position
                            .as_ref()
                            .map(|p| p.last_seq())
                            .into_iter()
                            .chain(chunk.changes.last().map(|c| c.seq))
                            .max()
                            .unwrap_or(last_seq);
                        last_seq = last_seq.max(covered);
                        waiting.push_back((last_seq, Ack::for_chunk(&chunk)));
                    }
                    None => {
                        input_open = false;
                        for (i, b) in builders.iter_mut().enumerate() {
                            if !b.is_empty() {
                                dispatch(b, &source, &lane_txs[i], &mut res_rx, &mut tally).await;
                            }
                        }
                    }
                }
            }
            res = res_rx.recv() => {
                let Some(res) = res else { break };
                tally.record(res);
            }
            _ = sleep_until(deadline) => {
                let now = tokio::time::Instant::now().into_std();
                for (i, b) in builders.iter_mut().enumerate() {
                    if b.opened.is_some_and(|t| t + cfg.linger <= now) {
                        dispatch(b, &source, &lane_txs[i], &mut res_rx, &mut tally).await;
                    }
                }
            }
        }
        // Acknowledge, in order, every chunk with nothing unhandled at or before its end.
        let low = tally.unhandled.keys().next().copied();
        while let Some((covered, _)) = waiting.front() {
            if low.is_some_and(|l| l <= *covered) {
                break;
            }
            let (_, ack) = waiting.pop_front().expect("front exists");
            if acks.send(ack).await.is_err() {
                return Ok(());
            }
        }
        if tally.failure.is_some() || tally.abandoned {
            // What is not acknowledged stays behind the checkpoint and is sent again later.
            break;
        }
        if !input_open && tally.unhandled.is_empty() && waiting.is_empty() {
            break;
        }
    }
    drop(lane_txs);
    match tally.failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Hands a finished batch to its lane, taking lane results meanwhile: a lane blocked on
/// reporting must never wait for us while we wait for it.
async fn dispatch(
    builder: &mut Builder,
    source: &SourceHeader,
    lane: &mpsc::Sender<Batch>,
    results: &mut mpsc::Receiver<LaneResult>,
    tally: &mut Tally,
) {
    let batch = builder.finish(source);
    loop {
        tokio::select! {
            permit = lane.reserve() => {
                // A closed lane means shutdown; the batch stays unhandled, the checkpoint before it.
                if let Ok(p) = permit {
                    p.send(batch);
                }
                return;
            }
            res = results.recv() => match res {
                Some(r) => tally.record(r),
                None => return,
            },
        }
    }
}

/// Sends this lane's batches one at a time.
async fn lane(
    client: reqwest::Client,
    cfg: HttpConfig,
    dlq: Dlq,
    mut rx: mpsc::Receiver<Batch>,
    results: mpsc::Sender<LaneResult>,
    mut stop: watch::Receiver<bool>,
) {
    while let Some(batch) = rx.recv().await {
        let handled = deliver(&client, &cfg, &dlq, &batch, &mut stop).await;
        let last = matches!(handled, Handled::Abandoned | Handled::Failed(_));
        if results
            .send(LaneResult {
                min_seq: batch.min_seq,
                handled,
            })
            .await
            .is_err()
            || last
        {
            return;
        }
    }
}

/// The outcome of one POST.
enum Attempt {
    Status(u16, Option<String>, String),
    Error(String),
}

async fn post(
    client: &reqwest::Client,
    cfg: &HttpConfig,
    batch: &Batch,
    body: &bytes_body::Body,
) -> Attempt {
    let mut req = client
        .post(&cfg.url)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", &batch.id)
        .header("X-Binsync-Contract", "1");
    if cfg.gzip {
        req = req.header("Content-Encoding", "gzip");
    }
    if let Some(a) = &cfg.authorization {
        req = req.header("Authorization", a);
    }
    match req.body(body.clone().into_reqwest()).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let text = if (200..300).contains(&status) {
                String::new()
            } else {
                let mut t = resp.text().await.unwrap_or_default();
                t.truncate(64 * 1024);
                t
            };
            Attempt::Status(status, retry_after, text)
        }
        Err(e) => Attempt::Error(error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn deliver(
    client: &reqwest::Client,
    cfg: &HttpConfig,
    dlq: &Dlq,
    batch: &Batch,
    stop: &mut watch::Receiver<bool>,
) -> Handled {
    let body = match bytes_body::Body::new(&batch.body, cfg.gzip) {
        Ok(b) => b,
        Err(e) => return Handled::Failed(SinkError::Config(format!("gzip: {e}"))),
    };
    let mut backoff = Backoff::with(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        let attempt = post(client, cfg, batch, &body).await;
        let (verdict, status, detail) = match attempt {
            Attempt::Status(s, ra, text) => (classify(s, ra.as_deref()), Some(s), text),
            Attempt::Error(e) => (Verdict::Retry { after: None }, None, e),
        };
        match verdict {
            Verdict::Delivered => {
                if backoff.attempts() > 0 {
                    tracing::info!(batch = %batch.id, retries = backoff.attempts(), "batch delivered after retries");
                }
                return Handled::Delivered;
            }
            Verdict::Reject => return reject(cfg, dlq, batch, status, detail).await,
            Verdict::Retry { after } => {
                if cfg.max_retries.is_some_and(|m| backoff.attempts() >= m) {
                    tracing::warn!(batch = %batch.id, "retries exhausted");
                    return reject(
                        cfg,
                        dlq,
                        batch,
                        status,
                        format!("retries exhausted; last: {detail}"),
                    )
                    .await;
                }
                let delay = after.unwrap_or_else(|| backoff.next_delay());
                if after.is_some() {
                    backoff.next_delay();
                }
                let what = status.map_or_else(|| detail.clone(), |s| format!("HTTP {s}"));
                tracing::warn!(batch = %batch.id, attempt = backoff.attempts(), retry_in = %crate::units::duration(delay), error = %what, "sync API did not take the batch; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    return Handled::Abandoned;
                }
            }
        }
    }
}

async fn reject(
    cfg: &HttpConfig,
    dlq: &Dlq,
    batch: &Batch,
    status: Option<u16>,
    detail: String,
) -> Handled {
    let status_text = status.map_or_else(|| "no response".to_string(), |s| format!("HTTP {s}"));
    if cfg.on_reject == OnReject::Stop {
        return Handled::Failed(SinkError::Rejected {
            batch: batch.id.clone(),
            status: status_text,
            detail,
        });
    }
    let entry = DeadLetter {
        id: 0,
        batch_id: batch.id.clone(),
        url: cfg.url.clone(),
        status,
        response: detail,
        at_unix_ms: now_unix_ms(),
        count: batch.count,
        first_seq: batch.min_seq,
        last_seq: batch.max_seq,
        payload: String::from_utf8_lossy(&batch.body).into_owned(),
    };
    match dlq.push(entry).await {
        Ok(id) => {
            tracing::error!(batch = %batch.id, dead_letter = id, status = %status_text, "sync API rejected the batch; kept in the dead-letter queue (binsync dlq show {id})");
            Handled::DeadLettered
        }
        Err(e) => Handled::Failed(SinkError::Config(format!("dead-letter queue: {e}"))),
    }
}

/// POST bodies, gzipped once and shared by every retry.
mod bytes_body {
    use std::io::Write;

    #[derive(Clone)]
    pub struct Body(bytes::Bytes);

    impl Body {
        pub fn new(raw: &bytes::Bytes, gzip: bool) -> std::io::Result<Body> {
            if !gzip {
                return Ok(Body(raw.clone()));
            }
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(raw)?;
            Ok(Body(enc.finish()?.into()))
        }

        pub fn into_reqwest(self) -> reqwest::Body {
            reqwest::Body::from(self.0)
        }
    }
}

/// Re-sends dead letters (`binsync dlq replay`): one attempt each; accepted entries are removed.
pub async fn replay_dead_letters(
    cfg: &HttpConfig,
    dlq: &Dlq,
    ids: Option<&[u64]>,
) -> Result<(usize, usize), SinkError> {
    let client = cfg.client()?;
    let entries = dlq.list().map_err(|e| SinkError::Config(e.to_string()))?;
    let (mut ok, mut failed) = (0, 0);
    for entry in entries
        .into_iter()
        .filter(|e| ids.is_none_or(|ids| ids.contains(&e.id)))
    {
        let batch = Batch {
            id: entry.batch_id.clone(),
            body: entry.payload.clone().into_bytes().into(),
            count: entry.count,
            min_seq: entry.first_seq,
            max_seq: entry.last_seq,
        };
        let body = bytes_body::Body::new(&batch.body, cfg.gzip)
            .map_err(|e| SinkError::Config(e.to_string()))?;
        match post(&client, cfg, &batch, &body).await {
            Attempt::Status(s, _, _) if (200..300).contains(&s) => {
                dlq.remove(entry.id)
                    .await
                    .map_err(|e| SinkError::Config(e.to_string()))?;
                println!(
                    "dead letter {}: delivered ({} changes), removed",
                    entry.id, entry.count
                );
                ok += 1;
            }
            Attempt::Status(s, _, text) => {
                println!(
                    "dead letter {}: HTTP {s}: {}",
                    entry.id,
                    text.lines().next().unwrap_or("")
                );
                failed += 1;
            }
            Attempt::Error(e) => {
                println!("dead letter {}: {e}", entry.id);
                failed += 1;
            }
        }
    }
    Ok((ok, failed))
}
