//! `binsync receive --from nats://...`: the reference consumer of binsync's JetStream sink
//! (docs/sync-api.md, "JetStream"). It reads a stream through a durable pull consumer and
//! applies its messages, one operation each, into the same SQLite store as the HTTP
//! receiver, with the same apply rule; `dump` reads it the same way.
//!
//! Invariants:
//! - A message is acknowledged only after the transaction holding its operation is committed
//!   (WAL, `synchronous = FULL`): the store never misses an acknowledged message. Messages are
//!   fetched in groups (up to `batch`), checked, applied in one transaction, then acked.
//! - A redelivery (a crash between commit and ack, a lost ack, an expired ack wait) is
//!   harmless: the apply rule keeps per (entity type, id) the highest `seq`, so an operation
//!   applied before is stale.
//! - Operations are applied in the consumer's delivery order, which is the stream's order: one
//!   pull is outstanding at a time, and a durable that has messages delivered but not acked
//!   when this process attaches to it (an earlier run died, or the connection broke while
//!   messages were on the way) is re-created at its ack floor, so those come again, first,
//!   before anything newer. Rows of keyed tables do not need it (any order converges); the
//!   counts of keyless tables do (see docs/sync-api.md, tables without a primary key).
//! - A message that is not a binsync operation (no or wrong headers, a payload that is not
//!   one valid operation, a subject that does not name its entity) stops the consumer with a
//!   definite error naming the message: the messages before it are applied and acked, it and
//!   the ones after it are not. Skipping it would leave the store silently different from
//!   the source; stopping keeps the store equal to a prefix of the stream.
//! - The store is pinned to one source (`Binsync-Source`, kept in `meta` under `nats_source`):
//!   `seq`s of two sources are not comparable, so a message of another source is refused the
//!   same way.
//! - Memory: at most `batch` messages and about `max(16 MiB, 2 x max_payload)` bytes are held.

use std::borrow::Cow;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, consumer::pull};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::batch::{self, Op, CONTRACT_VERSIONS};
use crate::store::Store;
use crate::{NatsCredentials, ReceiveError, StreamOptions};

/// `meta` key of the source the store holds operations of.
const SOURCE_KEY: &str = "nats_source";
/// How long an empty pull waits on the server for a first message.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// The longest one pull may take (the server answers a pull at once, or within
/// [`IDLE_WAIT`] when the stream has nothing new).
const PULL_DEADLINE: Duration = Duration::from_secs(15);
/// Waits between attempts after a transient error, doubling up to the last.
const BACKOFF: [u64; 5] = [250, 500, 1000, 2000, 5000];

/// The escaped subject token of an entity type: bytes `[A-Za-z0-9_-]` stay, every other byte
/// becomes `~XX` (two uppercase hex digits; `~` itself is `~7E`). `user.events` ->
/// `user~2Eevents`.
pub fn subject_token(entity: &str) -> String {
    let mut out = String::with_capacity(entity.len());
    for &b in entity.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out
}

pub async fn consume(
    opts: StreamOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiveError> {
    opts.validate()?;
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let dir = opts.state_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| ReceiveError::Internal(format!("opening the store: {e}")))??;
    let store = Arc::new(store);
    let result = Consumer::new(opts, store.clone(), stop).await;
    let result = match result {
        Ok(mut c) => c.run().await,
        Err(e) => Err(e),
    };
    // Every clone went with the consumer: close the store (counters, WAL, lock).
    match Arc::try_unwrap(store) {
        Ok(store) => {
            let closed = tokio::task::spawn_blocking(move || store.close())
                .await
                .map_err(|e| ReceiveError::Internal(format!("closing the store: {e}")))?;
            result.and(closed)
        }
        Err(_) => result.and(Err(ReceiveError::Internal(
            "the store is still in use at exit".into(),
        ))),
    }
}

struct Consumer {
    opts: StreamOptions,
    store: Arc<Store>,
    client: async_nats::Client,
    js: jetstream::Context,
    stop: watch::Receiver<bool>,
    /// The subject the durable reads: `--filter`, or `PREFIX.>`.
    filter: String,
    /// The source the store holds (None until the first message is applied).
    source: Option<String>,
    /// Bytes one pull may bring.
    max_bytes: usize,
}

/// What one pull brought: its messages, and the error that ended it early, if any.
type Pulled = (Vec<jetstream::Message>, Option<String>);

impl Consumer {
    async fn new(
        opts: StreamOptions,
        store: Arc<Store>,
        stop: watch::Receiver<bool>,
    ) -> Result<Consumer, ReceiveError> {
        let source = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.meta(SOURCE_KEY))
                .await
                .map_err(|e| ReceiveError::Internal(format!("reading the store: {e}")))??
        };
        let client = connect(&opts).await?;
        let max_bytes = (client.server_info().max_payload * 2).max(16 << 20);
        let js = jetstream::new(client.clone());
        let filter = opts
            .filter
            .clone()
            .unwrap_or_else(|| format!("{}.>", opts.subject_prefix));
        Ok(Consumer {
            opts,
            store,
            client,
            js,
            stop,
            filter,
            source,
            max_bytes,
        })
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `d`, or less when a stop is requested.
    async fn pause(&mut self, d: Duration) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    async fn run(&mut self) -> Result<(), ReceiveError> {
        let Some(mut consumer) = self.attach(true).await? else {
            return Ok(());
        };
        let mut last_message = Instant::now();
        let mut failures = 0usize;
        while !self.stopping() {
            let mut stop = self.stop.clone();
            let pulled = tokio::select! {
                p = self.pull(&consumer) => p,
                _ = stop.wait_for(|s| *s) => break,
            };
            let (messages, error) = pulled;
            if !messages.is_empty() {
                last_message = Instant::now();
                self.apply(messages).await?;
            }
            if let Some(e) = error {
                let wait = BACKOFF[failures.min(BACKOFF.len() - 1)];
                failures += 1;
                tracing::warn!(stream = %self.opts.stream, error = %e, "pulling from the stream failed; attaching again in {wait} ms");
                self.pause(Duration::from_millis(wait)).await;
                match self.attach(false).await? {
                    Some(c) => consumer = c,
                    None => break,
                }
                continue;
            }
            failures = 0;
            if let Some(idle) = self.opts.exit_when_idle {
                if last_message.elapsed() >= idle && self.drained(&mut consumer).await {
                    tracing::info!(stream = %self.opts.stream, durable = %self.opts.durable, "no new message for {idle:?} and everything applied; exiting (--exit-when-idle)");
                    break;
                }
            }
        }
        // Acks are sent without waiting for the server: let them leave before exiting.
        if let Err(e) = self.client.flush().await {
            tracing::warn!(error = %e, "flushing the last acks failed; their messages will be delivered again (harmless: they are applied)");
        }
        Ok(())
    }

    /// Whether the durable has nothing left to deliver and nothing unacknowledged.
    async fn drained(&self, consumer: &mut consumer::PullConsumer) -> bool {
        if self.client.flush().await.is_err() {
            return false;
        }
        match consumer.info().await {
            Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
            Err(e) => {
                tracing::debug!(error = %e, "consumer info");
                false
            }
        }
    }

    /// Finds the stream (waiting for it to exist) and the durable (creating it if missing);
    /// a durable with messages delivered but unacknowledged is re-created at its ack floor.
    /// `first`: prints the `consuming` line. None: a stop was requested meanwhile.
    async fn attach(
        &mut self,
        first: bool,
    ) -> Result<Option<consumer::PullConsumer>, ReceiveError> {
        let mut failures = 0usize;
        let mut waiting_logged = false;
        let started = Instant::now();
        loop {
            if self.stopping() {
                return Ok(None);
            }
            match self.try_attach().await {
                Ok(c) => {
                    if first {
                        let mut out = std::io::stdout().lock();
                        writeln!(
                            out,
                            "consuming stream {} subjects {} as durable {}",
                            self.opts.stream, self.filter, self.opts.durable
                        )
                        .and_then(|_| out.flush())
                        .map_err(ReceiveError::Stdout)?;
                    }
                    return Ok(Some(c));
                }
                Err(Attach::Definite(e)) => return Err(e),
                Err(Attach::NoStream) => {
                    if !waiting_logged {
                        tracing::info!(stream = %self.opts.stream, "the stream does not exist yet; waiting for binsync to create it");
                        waiting_logged = true;
                    }
                    if let Some(idle) = self.opts.exit_when_idle {
                        if started.elapsed() >= idle {
                            tracing::warn!(stream = %self.opts.stream, "no such stream for {idle:?}; exiting (--exit-when-idle)");
                            return Ok(None);
                        }
                    }
                    self.pause(IDLE_WAIT).await;
                }
                Err(Attach::Transient(e)) => {
                    let wait = BACKOFF[failures.min(BACKOFF.len() - 1)];
                    failures += 1;
                    tracing::warn!(stream = %self.opts.stream, error = %e, "cannot reach the stream; trying again in {wait} ms");
                    self.pause(Duration::from_millis(wait)).await;
                }
            }
        }
    }

    async fn try_attach(&self) -> Result<consumer::PullConsumer, Attach> {
        use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
        use async_nats::jetstream::stream::ConsumerErrorKind;
        use async_nats::jetstream::ErrorCode;
        let name = &self.opts.stream;
        let stream = match self.js.get_stream(name).await {
            Ok(s) => s,
            Err(e) => {
                return Err(match e.kind() {
                    GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => Attach::NoStream,
                    GetStreamErrorKind::JetStream(j) => Attach::Definite(ReceiveError::Nats(format!(
                        "stream {name}: {j}; check --nats-stream and the account's JetStream permissions"
                    ))),
                    _ => Attach::Transient(e.to_string()),
                })
            }
        };
        let durable = &self.opts.durable;
        let existing = match stream.consumer_info(durable).await {
            Ok(info) => Some(info),
            Err(e) => match e.kind() {
                ConsumerInfoErrorKind::NotFound => None,
                ConsumerInfoErrorKind::JetStream(j) => {
                    return Err(Attach::Definite(ReceiveError::Nats(format!(
                        "durable {durable} on stream {name}: {j}"
                    ))))
                }
                _ => return Err(Attach::Transient(e.to_string())),
            },
        };
        let config = |deliver_policy| pull::Config {
            durable_name: Some(durable.clone()),
            description: Some("binsync receive: applies the stream into an SQLite store".into()),
            deliver_policy,
            ack_policy: consumer::AckPolicy::Explicit,
            filter_subject: self.filter.clone(),
            // Bounds what an earlier run can leave unacknowledged; a little above one pull, so
            // that acks still on their way do not stall the next pull.
            max_ack_pending: (self.opts.batch * 4) as i64,
            ..Default::default()
        };
        let stream = &stream;
        let create = |deliver_policy| async move {
            stream
                .create_consumer(config(deliver_policy))
                .await
                .map_err(|e| match e.kind() {
                    ConsumerErrorKind::JetStream(j) => Attach::Definite(ReceiveError::Nats(format!(
                        "creating durable {durable} on stream {name} (subjects {}): {j}; check --filter against the stream's subjects (`nats stream info {name}`)", self.filter
                    ))),
                    _ => Attach::Transient(e.to_string()),
                })
        };
        let Some(info) = existing else {
            tracing::info!(stream = %name, durable = %durable, subjects = %self.filter, "creating the durable consumer");
            return create(consumer::DeliverPolicy::All).await;
        };
        if info.config.filter_subject != self.filter {
            return Err(Attach::Definite(ReceiveError::Options(format!(
                "durable {durable} on stream {name} reads subjects `{}`, not `{}`: give each --filter its own --durable, or delete the durable (`nats consumer rm {name} {durable}`) to start it over",
                info.config.filter_subject, self.filter
            ))));
        }
        if info.config.ack_policy == consumer::AckPolicy::None {
            return Err(Attach::Definite(ReceiveError::Options(format!(
                "durable {durable} on stream {name} takes no acks (ack policy none): the receiver acknowledges after applying; pick another --durable"
            ))));
        }
        if info.num_ack_pending == 0 {
            return stream
                .get_consumer(durable)
                .await
                .map_err(|e| Attach::Transient(e.to_string()));
        }
        // Delivered to an earlier life (or lost on the way) and never acknowledged: JetStream
        // would deliver newer messages first and these only after their ack wait. Starting
        // the durable over at its ack floor delivers them now, in stream order.
        let from = info.ack_floor.stream_sequence + 1;
        tracing::info!(stream = %name, durable = %durable, unacked = info.num_ack_pending, from, "the durable has unacknowledged messages; starting it over at its ack floor, so that they come first and in order");
        stream
            .delete_consumer(durable)
            .await
            .map_err(|e| Attach::Transient(e.to_string()))?;
        create(consumer::DeliverPolicy::ByStartSequence {
            start_sequence: from,
        })
        .await
    }

    /// One pull: what is there now (up to `batch`), or else the first message within
    /// [`IDLE_WAIT`].
    async fn pull(&self, consumer: &consumer::PullConsumer) -> Pulled {
        // A pull for more than the durable's max_ack_pending is never complete: the server
        // holds it (an existing durable keeps the limit it was created with).
        let limit = consumer.cached_info().config.max_ack_pending;
        // Half of it: acks of the previous pull may still be on their way.
        let size = match usize::try_from(limit) {
            Ok(l) if l > 0 => self.opts.batch.min(l / 2).max(1),
            _ => self.opts.batch,
        };
        let fetched = consumer
            .fetch()
            .max_messages(size)
            .max_bytes(self.max_bytes)
            .messages()
            .await;
        let (messages, error) = collect(fetched.map_err(|e| e.to_string())).await;
        if !messages.is_empty() || error.is_some() {
            return (messages, error);
        }
        let waited = consumer
            .batch()
            .max_messages(1)
            .max_bytes(self.max_bytes)
            .expires(IDLE_WAIT)
            .messages()
            .await;
        collect(waited.map_err(|e| e.to_string())).await
    }

    /// Checks and applies `messages` in one transaction, then acks them. A message that is
    /// not a binsync operation ends it: those before it are applied and acked, then its error
    /// is returned.
    async fn apply(&mut self, messages: Vec<jetstream::Message>) -> Result<(), ReceiveError> {
        let store = self.store.clone();
        let prefix = self.opts.subject_prefix.clone();
        let stream = self.opts.stream.clone();
        let pinned = self.source.clone();
        let (messages, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = apply_messages(&store, &messages, &prefix, &stream, pinned.as_deref());
            (messages, outcome)
        })
        .await
        .map_err(|e| ReceiveError::Internal(format!("applying messages: {e}")))?;
        let Outcome {
            good,
            source,
            applied,
            refused,
        } = outcome;
        // Committed: now acknowledge (a failed ack means a redelivery, which is stale).
        let applied = applied?;
        if source.is_some() {
            self.source = source;
        }
        for m in &messages[..good] {
            if let Err(e) = m.ack().await {
                tracing::warn!(error = %e, "acknowledging a message failed; it will be delivered again (harmless: it is applied)");
                break;
            }
        }
        tracing::debug!(
            messages = good,
            applied = applied.applied,
            stale = applied.stale,
            "applied"
        );
        match refused {
            None => Ok(()),
            Some(e) => {
                let _ = self.client.flush().await;
                Err(e)
            }
        }
    }
}

enum Attach {
    NoStream,
    Transient(String),
    Definite(ReceiveError),
}

/// What checking and applying a group of messages did.
struct Outcome {
    /// Messages applied (the first `good`).
    good: usize,
    /// The source now pinned, when this group pinned it.
    source: Option<String>,
    applied: Result<crate::store::Applied, ReceiveError>,
    /// The message that stopped the group.
    refused: Option<ReceiveError>,
}

/// Blocking: checks each message, applies the valid prefix in one transaction.
fn apply_messages(
    store: &Store,
    messages: &[jetstream::Message],
    prefix: &str,
    stream: &str,
    pinned: Option<&str>,
) -> Outcome {
    let mut ops: Vec<(Cow<'_, str>, Op<'_>)> = Vec::with_capacity(messages.len());
    let mut source: Option<&str> = pinned;
    let mut refused = None;
    for m in messages {
        let checked = check_message(m, prefix).and_then(|(entity, op, from)| match source {
            Some(s) if s != from => Err(format!(
                "it comes from source `{from}`, but this store holds operations of source `{s}` (seqs of two sources cannot be compared): give each source its own stream or subject prefix, and each stream its own --state-dir"
            )),
            _ => {
                source = Some(from);
                Ok((entity, op))
            }
        });
        match checked {
            Ok(op) => ops.push(op),
            Err(detail) => {
                let (seq, subject) = (
                    m.info().map(|i| i.stream_sequence).unwrap_or(0),
                    m.subject.to_string(),
                );
                refused = Some(ReceiveError::Malformed {
                    stream: stream.to_string(),
                    seq,
                    subject,
                    detail,
                });
                break;
            }
        }
    }
    let good = ops.len();
    let newly_pinned = match (pinned, source) {
        (None, Some(s)) if good > 0 => Some(s),
        _ => None,
    };
    let applied = if good == 0 {
        Ok(crate::store::Applied::default())
    } else {
        let refs: Vec<(&str, &Op<'_>)> = ops.iter().map(|(e, o)| (&**e, o)).collect();
        store.apply_ops(&refs, newly_pinned.map(|s| (SOURCE_KEY, s)))
    };
    Outcome {
        good,
        source: newly_pinned.map(str::to_string),
        applied,
        refused,
    }
}

/// A message's operation, checked against its headers and subject, and its source.
fn check_message<'m>(
    m: &'m jetstream::Message,
    prefix: &str,
) -> Result<(Cow<'m, str>, Op<'m>, &'m str), String> {
    let headers = m.headers.as_ref().ok_or(
        "it has no headers (a binsync message carries Binsync-Seq, Binsync-Source and Binsync-Contract)",
    )?;
    let header = |name: &str| -> Result<&'m str, String> {
        headers
            .get(name)
            .map(|v| v.as_str())
            .ok_or_else(|| format!("it has no {name} header"))
    };
    let contract = header("Binsync-Contract")?;
    let version = contract
        .parse::<u64>()
        .ok()
        .filter(|v| CONTRACT_VERSIONS.contains(v))
        .ok_or_else(|| {
            format!("Binsync-Contract `{contract}`: this receiver implements contract versions 1, 2 and 3 (a newer binsync needs a newer receiver)")
        })?;
    let seq_text = header("Binsync-Seq")?;
    let seq: u64 = seq_text
        .parse()
        .map_err(|_| format!("Binsync-Seq `{seq_text}` is not a decimal number"))?;
    let source = header("Binsync-Source")?;
    if source.is_empty() {
        return Err("Binsync-Source is empty".into());
    }
    let (entity, op) = batch::parse_op(&m.payload, version).map_err(|e| e.0)?;
    if op.seq != seq {
        return Err(format!(
            "Binsync-Seq {seq} differs from the operation's seq {}",
            op.seq
        ));
    }
    let subject = m.subject.as_str();
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(|| format!("its subject is not under the prefix `{prefix}.`"))?;
    let (token, partition) = rest.rsplit_once('.').unwrap_or((rest, ""));
    if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "its subject does not end in a partition number (`{prefix}.<entity>.<partition>`)"
        ));
    }
    let expected = subject_token(&entity);
    if token != expected {
        return Err(format!(
            "its subject names entity token `{token}`, but its operation's entity `{entity}` escapes to `{expected}`"
        ));
    }
    Ok((entity, op, source))
}

/// Drains a pull's messages. A pull the server leaves unfinished past [`PULL_DEADLINE`] ends
/// with an error (the caller applies what came and attaches again).
async fn collect<S>(batch: Result<S, String>) -> Pulled
where
    S: futures_util::Stream<Item = Result<jetstream::Message, async_nats::Error>> + Unpin,
{
    let mut batch = match batch {
        Ok(b) => b,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut messages = Vec::new();
    let deadline = tokio::time::sleep(PULL_DEADLINE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            item = batch.next() => match item {
                Some(Ok(m)) => messages.push(m),
                Some(Err(e)) => return (messages, Some(e.to_string())),
                None => return (messages, None),
            },
            _ = &mut deadline => {
                return (messages, Some(format!("a pull was not complete after {PULL_DEADLINE:?}")))
            }
        }
    }
}

/// Connects with the credentials and TLS of `opts`.
async fn connect(opts: &StreamOptions) -> Result<async_nats::Client, ReceiveError> {
    let mut options = async_nats::ConnectOptions::new()
        .name("binsync-receive")
        .connection_timeout(Duration::from_secs(10));
    options = match &opts.credentials {
        NatsCredentials::None => options,
        NatsCredentials::Token(t) => options.token(t.clone()),
        NatsCredentials::UserPassword(u, p) => options.user_and_password(u.clone(), p.clone()),
        NatsCredentials::CredsFile(path) => options.credentials_file(path).await.map_err(|e| {
            ReceiveError::Options(format!(
                "BINSYNC_NATS_CREDS {}: {e}; point it at a readable .creds file",
                path.display()
            ))
        })?,
    };
    let tls = opts.servers.iter().any(|s| s.starts_with("tls://"));
    if let Some(ca) = &opts.ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    } else if tls {
        options = options.require_tls(true);
    }
    let addrs: Vec<async_nats::ServerAddr> = opts
        .servers
        .iter()
        .map(|s| {
            s.parse().map_err(|e| {
                ReceiveError::Options(format!("--from: `{s}` is not a NATS server address: {e}"))
            })
        })
        .collect::<Result<_, _>>()?;
    options.connect(addrs).await.map_err(|e| {
        ReceiveError::Nats(format!(
            "cannot connect to {}: {e}; check --from, that nats-server runs there, and the credentials (BINSYNC_NATS_TOKEN, BINSYNC_NATS_USER/BINSYNC_NATS_PASSWORD or BINSYNC_NATS_CREDS)",
            opts.servers.join(",")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_names_escape_into_one_subject_token() {
        assert_eq!(subject_token("orders"), "orders");
        assert_eq!(subject_token("user.events"), "user~2Eevents");
        assert_eq!(subject_token("a b"), "a~20b");
        assert_eq!(subject_token("x*>~"), "x~2A~3E~7E");
        assert_eq!(subject_token("Ab_9-"), "Ab_9-");
        // Every byte of a multi-byte character.
        assert_eq!(subject_token("é"), "~C3~A9");
    }
}
