//! The JetStream sink's publishing loop: one message per operation, pipelined with at most
//! `max_in_flight` acks outstanding, retried with the same id until acknowledged.
//!
//! Publishes are plain core-NATS publishes with a reply subject `<inbox>.<n>` (`n` counts
//! sends), and every PubAck comes back on one wildcard subscription `<inbox>.*`, as the Go
//! client's async publish does: no future, timer or inbox per message. The window is refilled
//! in halves (when at most `max_in_flight / 2` are outstanding), so that publishes leave and
//! acks come back in large writes instead of one message per ack.
//!
//! Invariants:
//! - An operation's piece in the [`Ledger`] is done only on its PubAck (`duplicate` too), or
//!   when a scan found it in the stream: never on a send alone.
//! - A failed ack (timeout, lost connection) is retried only after every publish in flight
//!   has settled and a scan ([`scan`]) has read the stream above the failed messages' floor:
//!   what it finds is done without publishing, the rest is published again (same id).
//! - Floors: a message first sent once the highest stream sequence known was `F` can only land
//!   above `F` (the stream orders by arrival; what we knew was stored already). The
//!   `stream_seq` saved with a chunk's checkpoint is the lowest floor of every operation after
//!   that chunk (sent, found by a scan, or still to be sent), so a restart's scan from it sees
//!   every operation beyond the checkpoint that reached the stream.
//! - A stream refusing messages because its limits are reached holds them (`--nats-on-full
//!   wait`: no scan needed, a refused message is not stored) or stops binsync (`stop`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use async_nats::header::{HeaderName, HeaderValue, NATS_MESSAGE_ID};
use async_nats::jetstream;
use async_nats::{HeaderMap, StatusCode, Subject};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::scan::scan;
use super::{subject, NatsConfig, OnFull, STREAM_SEQ_KEY, TREE};
use crate::backoff::{sleep_unless_stopped, Backoff};
use crate::change::Chunk;
use crate::checkpoint::{Records, Store};
use crate::shutdown::Shutdown;
use crate::sink::ledger::{Ack, Ledger, Mark, Ticket};
use crate::sink::SinkError;

/// One operation as a message, kept until its ack.
struct Msg {
    ticket: Ticket,
    /// The chunk's registration number (index into `Publisher::chunks` from `front`).
    chunk: u64,
    seq: u64,
    entity: Arc<str>,
    subject: Subject,
    /// The binlog position after the chunk (shared by its operations).
    position: Option<Arc<str>>,
    payload: Bytes,
    /// The highest stream sequence known when it was first sent: it lands above (None: not
    /// sent yet).
    floor: Option<u64>,
}

/// Why a publish was not acknowledged.
enum Failure {
    /// No ack (timeout, connection lost) or an unexpected answer: it may be in the stream.
    Unknown(String),
    /// The stream's limits refused it: it is not in the stream.
    Full(String),
}

/// A publish's answer: the stream sequence it is stored at (duplicate or not), or why not
/// (the JetStream API error's code and description when the stream gave one).
type Answer = Result<u64, (String, Option<(u64, String)>)>;

/// Sent messages awaiting their acks, in send order: slot `i` holds send number `first + i`
/// (None once settled; settled slots at the front are dropped at once).
#[derive(Default)]
struct Window {
    slots: VecDeque<Option<(Msg, Instant)>>,
    first: u64,
    /// Messages awaiting an ack.
    live: usize,
}

impl Window {
    fn push(&mut self, number: u64, m: Msg, deadline: Instant) {
        if self.slots.is_empty() {
            self.first = number;
        }
        debug_assert_eq!(number, self.first + self.slots.len() as u64);
        self.slots.push_back(Some((m, deadline)));
        self.live += 1;
    }

    /// The message sent as `number`, if it still awaits its ack.
    fn take(&mut self, number: u64) -> Option<Msg> {
        let i = usize::try_from(number.checked_sub(self.first)?).ok()?;
        let (m, _) = self.slots.get_mut(i)?.take()?;
        self.live -= 1;
        self.trim();
        Some(m)
    }

    /// The oldest message awaiting its ack, once its deadline has passed.
    fn expired(&mut self, now: Instant) -> Option<Msg> {
        match self.slots.front() {
            Some(Some((_, deadline))) if *deadline <= now => {}
            _ => return None,
        }
        let (m, _) = self.slots.pop_front().flatten()?;
        self.first += 1;
        self.live -= 1;
        self.trim();
        Some(m)
    }

    /// When the oldest message awaiting its ack times out.
    fn deadline(&self) -> Option<Instant> {
        self.slots.front().and_then(|s| s.as_ref().map(|(_, d)| *d))
    }

    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.first += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }
}

const SOURCE_HEADER: HeaderName = HeaderName::from_static("Binsync-Source");
const SEQ_HEADER: HeaderName = HeaderName::from_static("Binsync-Seq");
const POSITION_HEADER: HeaderName = HeaderName::from_static("Binsync-Position");
const CONTRACT_HEADER: HeaderName = HeaderName::from_static("Binsync-Contract");

pub(super) struct Publisher {
    cfg: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    source: Arc<str>,
    store: Store,
    shutdown: Shutdown,
    ledger: Ledger,
    floors: Floors,
    queue: VecDeque<Msg>,
    in_flight: Window,
    /// PubAcks and errors for every publish: `<inbox>.<send number>`.
    answers: async_nats::Subscriber,
    inbox: String,
    sends: u64,
    /// Subjects built so far, per entity and partition.
    subjects: HashMap<(Arc<str>, u32), Subject>,
    failed: Vec<(Msg, Failure)>,
    /// Seqs beyond the checkpoint found in the stream at start, not yet met: stream sequence.
    skip: HashMap<u64, u64>,
    /// The current episode of unacknowledged publishes: since, messages retried, found.
    outage: Option<(Instant, u64, u64)>,
    /// The current episode of a full stream: since, refusals.
    full: Option<(Instant, u64)>,
    full_backoff: Backoff,
    /// A definite error: the sink stops once in-flight publishes have settled.
    fatal: Option<SinkError>,
    drain_queue: bool,
}

impl Publisher {
    pub(super) async fn new(
        cfg: NatsConfig,
        client: async_nats::Client,
        js: jetstream::Context,
        source: String,
        store: Store,
        shutdown: Shutdown,
    ) -> Result<Publisher, SinkError> {
        let inbox = client.new_inbox();
        // Subscribed before the first publish: the server handles a connection's commands in
        // order, and the client subscribes again after a reconnect.
        let answers =
            client
                .subscribe(format!("{inbox}.*"))
                .await
                .map_err(|e| SinkError::NatsConnect {
                    servers: cfg.url.clone(),
                    detail: format!("subscribing to the publish acknowledgements: {e}"),
                })?;
        Ok(Publisher {
            cfg,
            client,
            js,
            source: source.into(),
            store,
            shutdown,
            ledger: Ledger::new(),
            floors: Floors::default(),
            queue: VecDeque::new(),
            in_flight: Window::default(),
            answers,
            inbox,
            sends: 0,
            subjects: HashMap::new(),
            failed: Vec::new(),
            skip: HashMap::new(),
            outage: None,
            full: None,
            full_backoff: Backoff::new(),
            fatal: None,
            drain_queue: false,
        })
    }

    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Chunk>,
        acks: mpsc::Sender<Ack>,
    ) -> Result<(), SinkError> {
        if !self.start_scan().await? {
            return Ok(());
        }
        let mut input_open = true;
        let max = self.cfg.max_in_flight;
        loop {
            while let Some(ack) = self.pop_ack() {
                if acks.send(ack).await.is_err() {
                    return Ok(());
                }
            }
            if self.fatal.is_some() {
                // Settle what is in flight (and, for an operation refused before it was sent,
                // publish what precedes it) so that the checkpoint stops right before it.
                let drain = self.drain_queue && self.failed.is_empty();
                if self.in_flight.is_empty() && (!drain || self.queue.is_empty()) {
                    return Err(self.fatal.take().expect("checked"));
                }
            } else if !input_open && self.ledger.is_settled() {
                return Ok(());
            } else if !self.failed.is_empty() && self.in_flight.is_empty() {
                // False: shutdown while waiting; what is unacknowledged stays behind the
                // checkpoint.
                if !self.recover().await? {
                    return Ok(());
                }
                continue;
            }
            let sending = self.failed.is_empty() && (self.fatal.is_none() || self.drain_queue);
            // Slots, settled or not, bound the window: memory stays bounded if the oldest ack
            // is late.
            let refill = self.in_flight.slots.len() <= max / 2;
            while sending && refill && self.in_flight.slots.len() < max {
                let Some(m) = self.queue.pop_front() else {
                    break;
                };
                self.send(m).await;
            }
            let deadline = self.in_flight.deadline();
            let take = input_open
                && self.failed.is_empty()
                && self.fatal.is_none()
                && self.queue.len() < max;
            tokio::select! {
                chunk = rx.recv(), if take => match chunk {
                    Some(chunk) => self.take(chunk),
                    None => input_open = false,
                },
                answer = self.answers.next(), if !self.in_flight.is_empty() => {
                    let Some(answer) = answer else {
                        return Err(SinkError::NatsConnect {
                            servers: self.cfg.url.clone(),
                            detail: "the NATS client closed the acknowledgement subscription".into(),
                        });
                    };
                    self.answer(answer);
                    // Whatever else has arrived, before refilling the window.
                    while let Some(Some(answer)) = self.answers.next().now_or_never() {
                        self.answer(answer);
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    let now = Instant::now();
                    while let Some(m) = self.in_flight.expired(now) {
                        self.settle(m, Err((format!("no acknowledgement within {}", crate::units::duration(super::ACK_TIMEOUT)), None)));
                    }
                }
                else => {
                    if self.fatal.is_none() && self.queue.is_empty() && !input_open {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Stops the sink with `e` once what is in flight has settled; `drain_queue`: what is
    /// queued (all before the failed operation) is published first.
    fn stop_with(&mut self, e: SinkError, drain_queue: bool) {
        if self.fatal.is_none() {
            self.fatal = Some(e);
            self.drain_queue = drain_queue;
        }
    }

    /// Reads what this source published above the checkpoint's stream sequence. False: shutdown.
    async fn start_scan(&mut self) -> Result<bool, SinkError> {
        let state = |e: String| SinkError::NatsState {
            dir: self.store.dir().display().to_string(),
            detail: e,
        };
        let last_seq = self
            .store
            .load()
            .map_err(|e| state(e.to_string()))?
            .map_or(0, |cp| cp.position.last_seq());
        let floor = self
            .store
            .db()
            .open_tree(TREE)
            .and_then(|t| t.get(STREAM_SEQ_KEY))
            .map_err(|e| state(e.to_string()))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let mut backoff = Backoff::new();
        let found = loop {
            match scan(
                &self.js,
                &self.cfg.stream,
                &self.cfg.prefix,
                &self.source,
                floor,
                |seq| seq > last_seq,
            )
            .await
            {
                Ok(f) => break f,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the stream back yet (exactly-once scan at start); retrying");
                    if !sleep_unless_stopped(backoff.next_delay(), &mut self.shutdown).await {
                        return Ok(false);
                    }
                }
            }
        };
        self.floors.stored(found.last);
        if !found.seqs.is_empty() {
            tracing::info!(
                operations = found.seqs.len(),
                from_stream_seq = floor + 1,
                to_stream_seq = found.last,
                "operations beyond the checkpoint are already in the stream (a crash before their acks were saved); they are not published again"
            );
        }
        self.floors.skip = found.seqs.values().min().map(|s| s - 1);
        self.skip = found.seqs;
        Ok(true)
    }

    /// Registers `chunk` and queues its operations as messages (those found in the stream at
    /// start are done at once).
    fn take(&mut self, mut chunk: Chunk) {
        let ticket = self.ledger.register(Mark::of(&chunk), chunk.changes.len());
        let number = self.floors.register();
        let position: Option<Arc<str>> = chunk.position.as_ref().map(|p| p.to_string().into());
        let buf = Bytes::from(std::mem::take(&mut chunk.buf));
        let max_payload = self.client.max_payload();
        for c in &chunk.changes {
            if let Some(stream_seq) = self.skip.remove(&c.seq) {
                self.ledger.done(ticket, 1);
                self.floors.lower(number, stream_seq.saturating_sub(1));
                continue;
            }
            let payload = buf.slice(c.line.clone());
            let key = &buf[c.key.clone()];
            let partition = subject::partition(key, self.cfg.partitions);
            let prefix = &self.cfg.prefix;
            let subject = self
                .subjects
                .entry((c.entity.clone(), partition))
                .or_insert_with(|| {
                    let token = subject::escape_token(&c.entity);
                    subject::subject(prefix, &token, partition).into()
                })
                .clone();
            let size = header_len(&self.source, c.seq, position.as_deref()) + payload.len();
            if size > max_payload {
                // What precedes it is published first.
                self.too_large(ticket, c.seq, &c.entity, size, true);
                return;
            }
            self.queue.push_back(Msg {
                ticket,
                chunk: number,
                seq: c.seq,
                entity: c.entity.clone(),
                subject,
                position: position.clone(),
                payload,
                floor: None,
            });
        }
        if self.skip.is_empty() {
            self.floors.skip = None;
        }
    }

    /// Publishes `m` (its first send sets its floor); a send that fails at once is a failure
    /// like a missing ack.
    async fn send(&mut self, mut m: Msg) {
        // `--state nats`: only the lease holder publishes (see `state::check_fence`).
        if let Err(lost) = crate::state::check_fence() {
            self.stop_with(lost.into(), false);
            return;
        }
        if m.floor.is_none() {
            let floor = self.floors.known;
            m.floor = Some(floor);
            self.floors.lower(m.chunk, floor);
        }
        let number = self.sends;
        let reply = format!("{}.{number}", self.inbox);
        let headers = headers(&self.source, m.seq, m.position.as_deref());
        match self
            .client
            .publish_with_reply_and_headers(m.subject.clone(), reply, headers, m.payload.clone())
            .await
        {
            Ok(()) => {
                self.sends += 1;
                self.in_flight
                    .push(number, m, Instant::now() + super::ACK_TIMEOUT);
            }
            Err(e) if e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                let size = header_len(&self.source, m.seq, m.position.as_deref()) + m.payload.len();
                self.too_large(m.ticket, m.seq, &m.entity, size, false)
            }
            Err(e) => self.settle(m, Err((super::error_chain(&e), None))),
        }
    }

    /// An answer on the acknowledgement subscription.
    fn answer(&mut self, reply: async_nats::Message) {
        let number = reply
            .subject
            .rsplit('.')
            .next()
            .and_then(|n| n.parse::<u64>().ok());
        // Not (or no longer) awaited: a late answer of a publish that timed out; the scan
        // after the timeout decides about that message.
        let Some(m) = number.and_then(|n| self.in_flight.take(n)) else {
            return;
        };
        let answer = if reply.status == Some(StatusCode::NO_RESPONDERS) {
            Err((
                format!("no stream listens on {} (no responders)", m.subject),
                None,
            ))
        } else {
            parse_answer(&reply.payload)
        };
        self.settle(m, answer);
    }

    /// Operation `seq` (`size` bytes with its headers) is larger than the server's
    /// max_payload: a definite error (see [`Publisher::stop_with`] for `drain_queue`).
    fn too_large(
        &mut self,
        ticket: Ticket,
        seq: u64,
        entity: &str,
        size: usize,
        drain_queue: bool,
    ) {
        self.ledger.fail(ticket);
        let e = SinkError::NatsTooLarge {
            seq,
            entity: entity.to_string(),
            size,
            max_payload: self.client.max_payload(),
        };
        self.stop_with(e, drain_queue);
    }

    /// A publish settled.
    fn settle(&mut self, m: Msg, answer: Answer) {
        let (detail, js) = match answer {
            Ok(stream_seq) => {
                self.floors.stored(stream_seq);
                self.ledger.done(m.ticket, 1);
                self.healed();
                return;
            }
            Err(e) => e,
        };
        let failure = match js {
            Some((code, desc)) if is_full(code, &desc) => Failure::Full(desc),
            Some((code, desc)) if is_definite(code) => {
                self.ledger.fail(m.ticket);
                let e = SinkError::NatsRefused {
                    stream: self.cfg.stream.clone(),
                    seq: m.seq,
                    entity: m.entity.to_string(),
                    detail: format!("{desc} (JetStream error {code})"),
                };
                self.stop_with(e, false);
                return;
            }
            _ => Failure::Unknown(detail),
        };
        self.failed.push((m, failure));
    }

    /// Every publish in flight has settled and some failed: decide, scan if needed, requeue.
    /// False: shutdown.
    async fn recover(&mut self) -> Result<bool, SinkError> {
        let failed = std::mem::take(&mut self.failed);
        let unknown: Vec<&str> = failed
            .iter()
            .filter_map(|(_, f)| match f {
                Failure::Unknown(d) => Some(d.as_str()),
                Failure::Full(_) => None,
            })
            .collect();
        let mut requeue: Vec<Msg>;
        if unknown.is_empty() {
            let detail = match &failed[0].1 {
                Failure::Full(d) | Failure::Unknown(d) => d.clone(),
            };
            if self.cfg.on_full == OnFull::Stop {
                let first = failed.iter().map(|(m, _)| m).min_by_key(|m| m.seq);
                if let Some(m) = first {
                    self.ledger.fail(m.ticket);
                }
                return Err(SinkError::NatsFull {
                    stream: self.cfg.stream.clone(),
                    detail,
                });
            }
            match &mut self.full {
                Some((_, n)) => *n += failed.len() as u64,
                None => {
                    self.full = Some((Instant::now(), failed.len() as u64));
                    tracing::warn!(stream = %self.cfg.stream, error = %detail, "the stream refuses messages: its limits are reached (discard new); holding them and retrying until it takes them (--nats-on-full wait; raise the stream's limits or remove messages; one line when it does)");
                }
            }
            crate::metrics::sink_retry(None);
            if !sleep_unless_stopped(self.full_backoff.next_delay(), &mut self.shutdown).await {
                return Ok(false);
            }
            requeue = failed.into_iter().map(|(m, _)| m).collect();
        } else {
            let first_error = unknown[0].to_string();
            match &mut self.outage {
                Some((_, n, _)) => *n += failed.len() as u64,
                None => {
                    self.outage = Some((Instant::now(), failed.len() as u64, 0));
                    tracing::warn!(stream = %self.cfg.stream, error = %first_error, "NATS JetStream did not acknowledge publishes; holding them, then reading the stream back and publishing again only what is not there (one line when it heals; each retry at debug level)");
                }
            }
            let floor = failed
                .iter()
                .filter_map(|(m, _)| m.floor)
                .min()
                .unwrap_or(0);
            let wanted: HashSet<u64> = failed.iter().map(|(m, _)| m.seq).collect();
            let mut backoff = Backoff::new();
            let found = loop {
                crate::metrics::sink_retry(None);
                if self.client.connection_state() != async_nats::connection::State::Connected {
                    tracing::debug!(
                        "waiting for the NATS connection before reading the stream back"
                    );
                } else {
                    match scan(
                        &self.js,
                        &self.cfg.stream,
                        &self.cfg.prefix,
                        &self.source,
                        floor,
                        |s| wanted.contains(&s),
                    )
                    .await
                    {
                        Ok(f) => break f,
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot read the stream back yet; retrying")
                        }
                    }
                }
                if !sleep_unless_stopped(backoff.next_delay(), &mut self.shutdown).await {
                    return Ok(false);
                }
            };
            self.floors.stored(found.last);
            requeue = Vec::new();
            let mut landed = 0;
            for (m, _) in failed {
                if found.seqs.contains_key(&m.seq) {
                    landed += 1;
                    self.ledger.done(m.ticket, 1);
                } else {
                    requeue.push(m);
                }
            }
            if let Some((_, _, f)) = &mut self.outage {
                *f += landed;
            }
            tracing::debug!(
                found = landed,
                again = requeue.len(),
                "read the stream back after failed publishes"
            );
            if requeue.is_empty() {
                self.healed();
            }
        }
        requeue.sort_by_key(|m| m.seq);
        for m in requeue.into_iter().rev() {
            self.queue.push_front(m);
        }
        Ok(true)
    }

    /// An ack came: an episode of failures (if any) is over.
    fn healed(&mut self) {
        if let Some((since, retried, found)) = self.outage.take() {
            tracing::info!(outage = %crate::units::duration(since.elapsed()), retried, found_in_stream = found, "NATS JetStream acknowledges again; every held message is published once, nothing was lost");
        }
        if let Some((since, refused)) = self.full.take() {
            self.full_backoff = Backoff::new();
            tracing::info!(waited = %crate::units::duration(since.elapsed()), refused, stream = %self.cfg.stream, "the stream takes messages again");
        }
    }

    /// The next ready ack, with the stream sequence its checkpoint covers.
    fn pop_ack(&mut self) -> Option<Ack> {
        let mut ack = self.ledger.pop_ready()?;
        let floor = self.floors.acked();
        ack.records.push(Records {
            tree: TREE,
            entries: vec![(STREAM_SEQ_KEY.to_vec(), floor.to_be_bytes().to_vec())],
        });
        Some(ack)
    }
}

/// Where in the stream the operations not yet checkpointed can be (see the module's header).
#[derive(Debug, Default)]
struct Floors {
    /// Per registered, unacknowledged chunk (oldest first, numbered from `front`): the lowest
    /// floor of its operations sent or found so far.
    chunks: VecDeque<Option<u64>>,
    front: u64,
    /// The highest stream sequence known to be stored (acks, scans): what is sent from now on
    /// lands above it.
    known: u64,
    /// Below the lowest stream sequence of the operations found by the start scan and not met
    /// yet (while there are any).
    skip: Option<u64>,
}

impl Floors {
    /// The next chunk; its number.
    fn register(&mut self) -> u64 {
        self.chunks.push_back(None);
        self.front + self.chunks.len() as u64 - 1
    }

    /// An operation of chunk `chunk` lies above `floor`.
    fn lower(&mut self, chunk: u64, floor: u64) {
        if let Some(slot) = chunk
            .checked_sub(self.front)
            .and_then(|i| self.chunks.get_mut(i as usize))
        {
            *slot = Some(slot.map_or(floor, |f| f.min(floor)));
        }
    }

    /// The stream holds everything up to `stream_seq`.
    fn stored(&mut self, stream_seq: u64) {
        self.known = self.known.max(stream_seq);
    }

    /// The oldest chunk is acknowledged: the stream sequence below which no operation after
    /// it can lie (sent, found, or to be sent).
    fn acked(&mut self) -> u64 {
        self.chunks.pop_front();
        self.front += 1;
        let later = self.chunks.iter().flatten().min().copied();
        [Some(self.known), later, self.skip]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(0)
    }
}

/// A PubAck (`{"stream":..,"seq":N[,"duplicate":true]}`) or a JetStream API error
/// (`{"error":{"code":503,"err_code":10077,"description":..}}`).
fn parse_answer(payload: &[u8]) -> Answer {
    #[derive(serde::Deserialize)]
    struct Reply {
        seq: Option<u64>,
        error: Option<ApiError>,
    }
    #[derive(serde::Deserialize)]
    struct ApiError {
        #[serde(default)]
        err_code: u64,
        #[serde(default)]
        description: String,
    }
    match serde_json::from_slice::<Reply>(payload) {
        Ok(Reply { error: Some(e), .. }) => Err((
            format!("{} (JetStream error {})", e.description, e.err_code),
            Some((e.err_code, e.description)),
        )),
        Ok(Reply { seq: Some(seq), .. }) => Ok(seq),
        _ => Err((
            format!(
                "unexpected answer to a publish: {}",
                String::from_utf8_lossy(&payload[..payload.len().min(200)])
            ),
            None,
        )),
    }
}

/// A stream at its limits with discard new (nats-server 2.9: 10077 "maximum messages
/// exceeded" / "maximum bytes exceeded" / "maximum messages per subject exceeded"; 10047
/// storage resources exceeded; 10028 memory; 10023 insufficient resources).
fn is_full(code: u64, desc: &str) -> bool {
    match code {
        10047 | 10028 | 10023 => true,
        10077 => desc.contains("maximum"),
        _ => false,
    }
}

/// Refusals no retry can change: the message is larger than the stream's max_msg_size.
fn is_definite(code: u64) -> bool {
    code == 10054
}

/// A message's headers: Nats-Msg-Id `<source>:<seq>` (the server's duplicate window),
/// Binsync-Source, Binsync-Seq, Binsync-Position (when known), Binsync-Contract.
fn headers(source: &str, seq: u64, position: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        NATS_MESSAGE_ID,
        HeaderValue::from(format!("{source}:{seq}")),
    );
    h.insert(SOURCE_HEADER, source);
    h.insert(SEQ_HEADER, HeaderValue::from(seq.to_string()));
    if let Some(p) = position {
        h.insert(POSITION_HEADER, p);
    }
    h.insert(CONTRACT_HEADER, super::CONTRACT);
    h
}

/// The size on the wire of [`headers`]' block (`NATS/1.0\r\n`, `Name: value\r\n`..., `\r\n`),
/// which counts against max_payload with the payload.
fn header_len(source: &str, seq: u64, position: Option<&str>) -> usize {
    let line = |name: &str, value: usize| name.len() + 2 + value + 2;
    let digits = seq.checked_ilog10().unwrap_or(0) as usize + 1;
    "NATS/1.0\r\n".len()
        + line("Nats-Msg-Id", source.len() + 1 + digits)
        + line("Binsync-Source", source.len())
        + line("Binsync-Seq", digits)
        + position.map_or(0, |p| line("Binsync-Position", p.len()))
        + line("Binsync-Contract", super::CONTRACT.len())
        + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_floor_stays_below_every_later_operation() {
        let mut f = Floors::default();
        f.stored(100);
        let a = f.register();
        let b = f.register();
        let c = f.register();
        // a's message sent at 100, b's at 100 (not acked yet), then a's ack says 101.
        f.lower(a, 100);
        f.lower(b, 100);
        f.stored(101);
        // a acked: b may still land anywhere above 100.
        assert_eq!(f.acked(), 100);
        // b's ack (102) and c's send at 102.
        f.stored(102);
        f.lower(c, 102);
        assert_eq!(f.acked(), 102, "b acked: c was sent when 102 was known");
        // Chunks nothing was sent for yet: what is known bounds them.
        f.register();
        f.register();
        f.stored(150);
        assert_eq!(f.acked(), 150);
        // Found by the start scan at 90 (a crash's leftovers), not met yet: the floor stays
        // below it, whatever was acked since.
        f.skip = Some(89);
        let d = f.register();
        f.lower(d, 150);
        assert_eq!(f.acked(), 89, "the chunk before d");
        // Met (skipped) in chunk e at 120: the skip floor goes, e's own floor stays.
        f.skip = None;
        let e = f.register();
        f.lower(e, 119);
        f.stored(300);
        assert_eq!(f.acked(), 119, "an unsent chunk before d acked");
        assert_eq!(f.acked(), 119, "d acked, e not yet");
        assert_eq!(f.acked(), 300, "e acked, nothing after it");
        // Retries never raise a chunk's floor.
        f.register();
        let g = f.register();
        f.lower(g, 300);
        f.lower(g, 310);
        f.stored(400);
        assert_eq!(f.acked(), 300, "the chunk before g");
    }

    #[test]
    fn a_full_stream_is_told_from_other_refusals() {
        // What nats-server 2.9.10 answers with discard new (checked against the real server).
        assert!(is_full(
            10077,
            "maximum messages exceeded (code 503, error code 10077)"
        ));
        assert!(is_full(
            10077,
            "maximum bytes exceeded (code 503, error code 10077)"
        ));
        assert!(is_full(
            10077,
            "maximum messages per subject exceeded (code 503, error code 10077)"
        ));
        assert!(is_full(10047, "insufficient storage resources available"));
        // 10077 is also any other store failure: not a full stream.
        assert!(!is_full(10077, "stream store failed"));
        assert!(!is_full(10054, "message size exceeds maximum allowed"));
        assert!(is_definite(10054));
        assert!(!is_definite(10077));
    }

    #[test]
    fn the_header_block_size_counts_every_line() {
        // What the client writes: `NATS/1.0\r\n`, `Name: value\r\n` per value, `\r\n`.
        let wire = |h: &HeaderMap| {
            let mut w = String::from("NATS/1.0\r\n");
            for (name, values) in h.iter() {
                for v in values {
                    w += &format!("{}: {}\r\n", AsRef::<str>::as_ref(name), v.as_str());
                }
            }
            w + "\r\n"
        };
        for (seq, position) in [
            (0, None),
            (9, Some("f:4 gtid=0-1-5")),
            (10, None),
            (12345, Some("x")),
        ] {
            let h = headers("src-1", seq, position);
            assert_eq!(
                header_len("src-1", seq, position),
                wire(&h).len(),
                "{}",
                wire(&h)
            );
        }
        let h = headers("s", 12, None);
        assert_eq!(
            header_len("s", 12, None),
            "NATS/1.0\r\nNats-Msg-Id: s:12\r\nBinsync-Source: s\r\nBinsync-Seq: 12\r\nBinsync-Contract: 3\r\n\r\n".len()
        );
        assert_eq!(h.get("Binsync-Seq").map(|v| v.as_str()), Some("12"));
    }

    #[test]
    fn answers_are_acks_or_errors() {
        assert_eq!(parse_answer(br#"{"stream":"s","seq":42}"#), Ok(42));
        assert_eq!(
            parse_answer(br#"{"stream":"s","seq":7,"duplicate":true}"#),
            Ok(7)
        );
        let full = parse_answer(
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#,
        );
        assert_eq!(
            full,
            Err((
                "maximum messages exceeded (JetStream error 10077)".into(),
                Some((10077, "maximum messages exceeded".into()))
            ))
        );
        assert!(matches!(parse_answer(b""), Err((_, None))));
        assert!(matches!(parse_answer(br#"{"stream":"s"}"#), Err((_, None))));
    }

    #[test]
    fn the_window_hands_out_each_message_once_and_times_out_the_oldest() {
        let t0 = Instant::now();
        let mut w = Window::default();
        let msg = |seq| Msg {
            ticket: Ledger::new().register(Mark::of(&Chunk::default()), 1),
            chunk: 0,
            seq,
            entity: "e".into(),
            subject: Subject::from("p.e.0"),
            position: None,
            payload: Bytes::new(),
            floor: None,
        };
        for n in 10..14 {
            w.push(n, msg(n), t0 + std::time::Duration::from_secs(n));
        }
        assert_eq!(w.take(11).map(|m| m.seq), Some(11));
        assert!(w.take(11).is_none(), "answered twice");
        assert!(w.take(9).is_none() && w.take(99).is_none());
        assert_eq!(w.deadline(), Some(t0 + std::time::Duration::from_secs(10)));
        assert!(w.expired(t0 + std::time::Duration::from_secs(9)).is_none());
        // 10 expires; 11 was answered, so 12 is next.
        let at = t0 + std::time::Duration::from_secs(12);
        assert_eq!(w.expired(at).map(|m| m.seq), Some(10));
        assert_eq!(w.expired(at).map(|m| m.seq), Some(12));
        assert!(w.expired(at).is_none());
        assert_eq!(w.slots.len(), 1);
        assert_eq!(w.take(13).map(|m| m.seq), Some(13));
        assert!(w.is_empty() && w.slots.is_empty());
        // A new window starts at the next send number.
        w.push(20, msg(20), t0);
        assert_eq!(w.take(20).map(|m| m.seq), Some(20));
    }
}
