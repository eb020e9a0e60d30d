//! The reference receiver of binsync's sync API (docs/sync-api.md, contract versions 1 to 3):
//! an HTTP server that applies the batches binsync POSTs to an SQLite database with the
//! contract's apply rule. `binsync receive` is a thin call into [`serve`] and [`dump`]; tests and benchmarks use
//! it to stand in for a real service. This crate does not depend on binsync: it knows the
//! contract, not the sender.
//!
//! This file only wires the parts together and holds the public surface ([`ReceiveOptions`],
//! [`Fault`], [`serve`], [`run`], [`dump`], [`ReceiveError`], the SQL in [`sql`]); the work lives in private
//! modules:
//!
//! - `batch`: one request body parsed and checked against the contract (borrowing the body).
//! - `store`: the SQLite database in `--state-dir`: the apply rule as SQL (the part users
//!   copy), tombstones, per-row counts for keyless tables, per-type floors and definitions,
//!   counters, `dump`.
//! - `server`: HTTP/1 over hyper: routes, authorization, gzip, limits, fault injection,
//!   graceful shutdown.
//! - `tls`: https (`tls`): the certificate and key, read before anything binds.
//! - `discard`: `--discard` mode's body check: serde_json over the whole body, envelope only.
//! - `jetstream`: `receive --from nats://...` ([`consume`]): a durable pull consumer of the
//!   JetStream sink's stream, applying each message's operation into the same store.
//!
//! Invariants:
//! - A 2xx answer means the whole batch is applied and committed to disk in one transaction
//!   (or, with `discard`, read as strict JSON with its version and count checked; no
//!   per-operation checks). A 4xx or an injected fault means nothing of it was applied: what
//!   the store could not keep (a body over `max_body_bytes`, nesting over `max_depth`, a
//!   `seq` above i64::MAX) is refused before anything is applied. Without an answer (the sender gave
//!   up waiting) or with a 500 it may have been applied: the retry then finds its operations
//!   stale.
//! - The apply rule: per (entity type, id) the store keeps the highest `seq` applied, deletes
//!   included (as tombstones); an operation with a `seq` not above it is counted as stale and
//!   dropped. Replays after a sender crash are therefore harmless and the state converges to
//!   the source's. Rows of a table without a primary key (`"keyless": true`) are counted per
//!   identical row, under the same guard.
//! - Operations on a whole entity type (version 2): a truncate or drop at `seq` S sets the
//!   type's floor to S (the highest kept), deletes every row of the type last written below
//!   S, and makes every later-arriving operation on the type at or below S stale; a ddl keeps
//!   the type's newest definition. Any arrival order ends in the same state.
//! - The initial snapshot (version 3): a read is applied as an upsert of the whole row under
//!   the same guard as an insert; a snapshot_end with `since` X sets the floor as a truncate
//!   at X would, removing the rows last written below X (deleted on the source unseen).
//! - Versions 1, 2 and 3 are accepted; a body holding an operation of a later version than
//!   its own, or an `X-Binsync-Contract` header differing from the body's version, is refused
//!   with 400.
//! - Memory stays bounded: entities live in SQLite (8 MiB page cache), bodies are capped at
//!   `max_body_bytes` (also after gunzip) and only as many are processed at once as fit twice
//!   in [`BODY_MEMORY`].

mod batch;
mod discard;
mod jetstream;
mod server;
mod store;
mod tls;

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::net::TcpListener;

use crate::store::Store;

pub use crate::jetstream::subject_token;

/// The store's schema and its apply rule as SQL statements (docs/sync-api.md quotes them):
/// the part of this receiver to copy into a service's own database.
pub mod sql {
    pub use crate::store::{
        APPLY_DDL, APPLY_FLOOR, APPLY_KEYED, APPLY_KEYLESS, APPLY_KEYLESS_READ, DELETE_BELOW_FLOOR,
        SCHEMA,
    };
}

/// Default of `--max-body-bytes`: the largest request body accepted, compressed or not, and
/// after gunzip (413 beyond it). A batch holds at least one row, so this is also the largest
/// row that can be delivered.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 << 20;
/// The highest `--max-body-bytes`: a row is stored as one SQLite value (at most 1e9 bytes),
/// and a gzip body is held twice (compressed and inflated).
pub const MAX_BODY_BYTES_LIMIT: usize = 512 << 20;
/// Default of `--max-depth`: how deep arrays and objects may nest in a body (the body is
/// depth 1; a column value starts at depth 6). 110 lets through a MySQL JSON document at
/// MySQL's own limit (100 levels).
pub const DEFAULT_MAX_DEPTH: usize = 110;
/// The highest `--max-depth`: `dump` and most JSON parsers (serde_json: 128) read the stored
/// rows back at the depth they have in the body.
pub const MAX_DEPTH_LIMIT: usize = 120;
/// Bodies in memory at once are limited so that their bytes, each counted twice (compressed
/// and inflated), stay within this; at least one, at most four.
pub const BODY_MEMORY: usize = 1 << 30;

/// How `binsync receive` runs.
#[derive(Clone)]
pub struct ReceiveOptions {
    /// Address to listen on; port 0 picks a free port (the `listening on` line tells which).
    pub listen: SocketAddr,
    /// The receiver's own store, an SQLite database (never binsync's state dir).
    pub state_dir: PathBuf,
    /// If set, requests must carry exactly this `Authorization` header value, else 401.
    pub auth: Option<String>,
    /// Fault injection for tests: share (0.0..=1.0) of POSTs answered with a fault instead of being applied.
    pub fault_rate: f64,
    /// Which faults, chosen uniformly per faulty request: 500, 429 (with `Retry-After: 1`), hang (sleep 60 s without answering), drop (close the connection without a response).
    pub faults: Vec<Fault>,
    /// Reject with 400 (body naming the reason) any batch containing an operation whose JSON text contains this string (a "poisoned" batch, for dead-letter tests).
    pub reject_containing: Option<String>,
    /// Parse (strict JSON, envelope only, no per-operation checks) and acknowledge without storing (benchmark mode).
    pub discard: bool,
    /// Largest body, compressed and after gunzip: 413 beyond it.
    pub max_body_bytes: usize,
    /// Deepest nesting of arrays and objects in a body (the body itself is 1): 400 beyond it.
    pub max_depth: usize,
    /// Serve https with this certificate and key (None: plain http).
    pub tls: Option<TlsFiles>,
}

/// The PEM files of an https receiver: its certificate chain (leaf first) and private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ReceiveOptions {
    /// A plain receiver: no auth, no faults, no poison, storing.
    pub fn new(listen: SocketAddr, state_dir: impl Into<PathBuf>) -> Self {
        ReceiveOptions {
            listen,
            state_dir: state_dir.into(),
            auth: None,
            fault_rate: 0.0,
            faults: Vec::new(),
            reject_containing: None,
            discard: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            tls: None,
        }
    }

    /// Checked once, before anything binds or opens.
    fn validate(&self) -> Result<(), ReceiveError> {
        let bad = |m: &str| Err(ReceiveError::Options(m.to_string()));
        if !(0.0..=1.0).contains(&self.fault_rate) {
            return bad("--fault-rate must be a share between 0.0 and 1.0");
        }
        if self.fault_rate > 0.0 && self.faults.is_empty() {
            return bad(
                "--fault-rate above 0 needs at least one fault: --faults 500,429,hang,drop",
            );
        }
        if let Some(auth) = &self.auth {
            if auth.is_empty() || hyper::header::HeaderValue::from_str(auth).is_err() {
                return bad("the expected Authorization value is empty or not a valid header value (no control characters, no line breaks)");
            }
        }
        if self.reject_containing.as_deref() == Some("") {
            return bad("--reject-containing with an empty string would reject every batch");
        }
        if !(1..=MAX_BODY_BYTES_LIMIT).contains(&self.max_body_bytes) {
            return Err(ReceiveError::Options(format!(
                "--max-body-bytes must be between 1 and {MAX_BODY_BYTES_LIMIT} ({} MiB): a row is stored as one SQLite value, and a gzip body is held twice",
                MAX_BODY_BYTES_LIMIT >> 20
            )));
        }
        // The envelope, an entity list, an operation and its `id` take 5 levels.
        if !(6..=MAX_DEPTH_LIMIT).contains(&self.max_depth) {
            return Err(ReceiveError::Options(format!(
                "--max-depth must be between 6 (flat rows) and {MAX_DEPTH_LIMIT} (the stored rows are read back by `dump` and by JSON parsers, serde_json's limit being 128)"
            )));
        }
        Ok(())
    }
}

/// Never prints the expected `Authorization` value.
impl fmt::Debug for ReceiveOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiveOptions")
            .field("listen", &self.listen)
            .field("state_dir", &self.state_dir)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("fault_rate", &self.fault_rate)
            .field("faults", &self.faults)
            .field("reject_containing", &self.reject_containing)
            .field("discard", &self.discard)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_depth", &self.max_depth)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Default of `--nats-batch`: the most messages applied in one transaction.
pub const DEFAULT_NATS_BATCH: usize = 1000;
/// The highest `--nats-batch`.
pub const MAX_NATS_BATCH: usize = 10_000;

/// How `binsync receive --from nats://...` runs ([`consume`]).
#[derive(Clone)]
pub struct StreamOptions {
    /// `nats://HOST:PORT` or `tls://HOST:PORT`, one per server of the cluster.
    pub servers: Vec<String>,
    /// The JetStream stream binsync publishes into.
    pub stream: String,
    /// The subjects' first token(s): messages are on `PREFIX.<entity>.<partition>`.
    pub subject_prefix: String,
    /// The durable consumer's name: it keeps this receiver's position in the stream.
    pub durable: String,
    /// Only these subjects (a consumer group member's partitions, e.g. `binsync.*.0`);
    /// None: `PREFIX.>`.
    pub filter: Option<String>,
    /// The receiver's own store, as for the HTTP receiver.
    pub state_dir: PathBuf,
    /// The most messages fetched and applied in one transaction.
    pub batch: usize,
    /// Exit 0 once no message came for this long and the durable has nothing left to deliver
    /// or unacknowledged (tests, benchmarks). None: run until stopped.
    pub exit_when_idle: Option<std::time::Duration>,
    /// A custom CA for the servers' certificates (TLS is then required).
    pub ca: Option<PathBuf>,
    pub credentials: NatsCredentials,
}

/// How the consumer authenticates to NATS (from the environment: `BINSYNC_NATS_TOKEN`,
/// `BINSYNC_NATS_USER` and `BINSYNC_NATS_PASSWORD`, or `BINSYNC_NATS_CREDS`).
#[derive(Clone)]
pub enum NatsCredentials {
    None,
    Token(String),
    UserPassword(String, String),
    CredsFile(PathBuf),
}

/// Never prints a secret.
impl fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsCredentials::None => f.write_str("None"),
            NatsCredentials::Token(_) => f.write_str("Token(<redacted>)"),
            NatsCredentials::UserPassword(u, _) => write!(f, "UserPassword({u:?}, <redacted>)"),
            NatsCredentials::CredsFile(p) => write!(f, "CredsFile({p:?})"),
        }
    }
}

impl fmt::Debug for StreamOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamOptions")
            .field("servers", &self.servers)
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("durable", &self.durable)
            .field("filter", &self.filter)
            .field("state_dir", &self.state_dir)
            .field("batch", &self.batch)
            .field("exit_when_idle", &self.exit_when_idle)
            .field("ca", &self.ca)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl StreamOptions {
    /// Checked once, before anything opens.
    fn validate(&self) -> Result<(), ReceiveError> {
        let bad = |m: String| Err(ReceiveError::Options(m));
        if self.servers.is_empty() {
            return bad("--from names no NATS server (write nats://HOST:PORT)".into());
        }
        let plain_name = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !plain_name(&self.stream) {
            return bad(format!(
                "--nats-stream `{}`: a stream name is letters, digits, `_` and `-`",
                self.stream
            ));
        }
        if !plain_name(&self.durable) {
            return bad(format!(
                "--durable `{}`: a durable name is letters, digits, `_` and `-`",
                self.durable
            ));
        }
        let p = &self.subject_prefix;
        if p.is_empty()
            || p.split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>']) || t.contains(char::is_whitespace))
        {
            return bad(format!(
                "--nats-subject-prefix `{p}`: write one or more subject tokens without wildcards or spaces (e.g. binsync or cdc.prod)"
            ));
        }
        if let Some(f) = &self.filter {
            let under = f
                .strip_prefix(p.as_str())
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|r| !r.is_empty());
            if !under || f.contains(char::is_whitespace) {
                return bad(format!(
                    "--filter `{f}` is not a subject under `{p}.` (e.g. {p}.*.0 for partition 0 of every entity, {p}.orders.> for one entity)"
                ));
            }
        }
        if !(1..=MAX_NATS_BATCH).contains(&self.batch) {
            return bad(format!(
                "--nats-batch must be between 1 and {MAX_NATS_BATCH}"
            ));
        }
        Ok(())
    }
}

/// An injected failure, standing in for a sick receiver or network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `500 Internal Server Error`.
    Status500,
    /// `429 Too Many Requests` with `Retry-After: 1`.
    Status429,
    /// Read the request, then answer nothing for 60 s (the sender's timeout fires), then close.
    Hang,
    /// Read the request, then close the connection without a response.
    Drop,
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "500" => Ok(Fault::Status500),
            "429" => Ok(Fault::Status429),
            "hang" => Ok(Fault::Hang),
            "drop" => Ok(Fault::Drop),
            other => Err(format!(
                "unknown fault `{other}`: write 500, 429, hang or drop"
            )),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Status500 => "500",
            Fault::Status429 => "429",
            Fault::Hang => "hang",
            Fault::Drop => "drop",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(
        "cannot listen on {addr}: the address is in use (another receiver?); pick another --listen"
    )]
    AddrInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}; pick another --listen")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("receiver state dir {dir} is in use (a running receiver? stop it before `dump`): {detail}; stop it, or pick another --state-dir")]
    Locked { dir: PathBuf, detail: String },
    #[error("{dir} holds no receiver state (did a receiver ever run with this --state-dir?)")]
    NoState { dir: PathBuf },
    #[error("{dir} is not a receiver state dir ({detail}); give the receiver a directory of its own with --state-dir")]
    Foreign { dir: PathBuf, detail: String },
    #[error("receiver state in {dir} is corrupt ({detail}); move it away and start the receiver on an empty --state-dir, then re-send everything from binsync")]
    Corrupt { dir: PathBuf, detail: String },
    #[error(
        "receiver state in {dir} was written by a newer binsync (format {format}); upgrade binsync"
    )]
    TooNew { dir: PathBuf, format: String },
    #[error(
        "writing receiver state to {dir} failed: {detail}; check the disk (space, permissions)"
    )]
    Write { dir: PathBuf, detail: String },
    #[error("{0}")]
    Options(String),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("stream {stream} message {seq} on {subject} is not a valid binsync operation: {detail}; the receiver stops before it (the messages before it are applied and acknowledged, it is not): fix the publisher, or remove the message (`nats stream rmm {stream} {seq}`) and start the receiver again")]
    Malformed {
        stream: String,
        seq: u64,
        subject: String,
        detail: String,
    },
    #[error("cannot print the `listening on` line to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("internal: {0}")]
    Internal(String),
}

/// Binds, prints one line `listening on ADDR` to stdout (flush it: tests read it to learn the port), serves until `shutdown` resolves, then closes the store.
pub async fn serve(
    opts: ReceiveOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiveError> {
    opts.validate()?;
    let tls = tls::acceptor(opts.tls.as_ref())?;
    // Open the store before binding: `listening on` must mean ready.
    let store = open_store(&opts).await?;
    let bound = match TcpListener::bind(opts.listen).await {
        Ok(l) => l.local_addr().map(|a| (l, a)),
        Err(e) => Err(e),
    };
    let (listener, addr) = match bound {
        Ok(bound) => bound,
        Err(e) => {
            if let Err(close) = store.close() {
                tracing::warn!(error = %close, "closing the store after a failed bind");
            }
            return Err(bind_error(opts.listen, e));
        }
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")
            .and_then(|_| out.flush())
            .map_err(ReceiveError::Stdout)?;
    }
    server::run(listener, opts, tls, store, shutdown).await
}

/// Serves on a listener the caller bound (what [`serve`] does after binding and printing);
/// for embedding and tests that bind `127.0.0.1:0` themselves.
pub async fn run(
    listener: TcpListener,
    opts: ReceiveOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiveError> {
    opts.validate()?;
    let tls = tls::acceptor(opts.tls.as_ref())?;
    let store = open_store(&opts).await?;
    server::run(listener, opts, tls, store, shutdown).await
}

/// Consumes a JetStream stream of binsync's NATS sink into the store in `opts.state_dir`
/// until `shutdown` resolves (or, with `exit_when_idle`, the stream is drained). Prints one
/// line `consuming stream NAME subjects SUBJECTS as durable NAME` to stdout once attached.
pub async fn consume(
    opts: StreamOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiveError> {
    jetstream::consume(opts, shutdown).await
}

/// Reads the stored state (the receiver must be stopped: it locks the dir) as the JSON printed
/// by `binsync receive dump`.
///
/// `{"stats": {...}, "entities": {"<entity>": {"<id JSON text>": {"seq": N, "deleted": false,
/// "values": {...}}}}}`; a deleted entity is `{"seq": N, "deleted": true}`. Rows of a keyless
/// table also carry `"copies": N`, the number of identical rows (0 when deleted). Once a
/// version 2 operation was applied, `"types": {"<entity>": {"floor": {...}, "definition":
/// {...}}}` shows each type's floor (the truncate, drop or snapshot_end that set it) and
/// newest definition.
pub fn dump(state_dir: &Path) -> Result<serde_json::Value, ReceiveError> {
    // Dropped at the end: the database closes, then the lock is released.
    Store::open_existing(state_dir)?.dump()
}

/// A body's `(batch_id, count)`, or why it is refused.
#[doc(hidden)]
pub type BodyVerdict = Result<(String, u64), String>;

/// For the fuzz targets in `fuzz/` only, not an API: both modes' body checks on one
/// (decompressed) body, without HTTP or a store: the storing receiver's parse (`batch`,
/// with the `Idempotency-Key` header when given) and `--discard`'s envelope read (`discard`).
/// Each gives the batch's `batch_id` and `count`, or why the body is refused.
#[doc(hidden)]
pub fn fuzz_check_body(body: &[u8], idempotency_key: Option<&str>) -> (BodyVerdict, BodyVerdict) {
    // As the server takes a body: the byte scan (depth, numbers) first, then the parse.
    let parsed = batch::check_depth(body, DEFAULT_MAX_DEPTH)
        .and_then(|()| batch::parse(body, idempotency_key))
        .map(|b| (b.batch_id.into_owned(), b.count))
        .map_err(|e| e.0);
    let envelope = discard::envelope(body)
        .map(|e| (e.batch_id.into_owned(), e.count))
        .map_err(|e| e.to_string());
    (parsed, envelope)
}

async fn open_store(opts: &ReceiveOptions) -> Result<Store, ReceiveError> {
    if opts.discard {
        return Ok(Store::discarding());
    }
    let dir = opts.state_dir.clone();
    // Opening may recover SQLite's WAL: keep it off the async threads.
    tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| ReceiveError::Internal(format!("opening the store: {e}")))?
}

fn bind_error(addr: SocketAddr, e: std::io::Error) -> ReceiveError {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        ReceiveError::AddrInUse { addr }
    } else {
        ReceiveError::Bind { addr, source: e }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print() {
        for (text, fault) in [
            ("500", Fault::Status500),
            ("429", Fault::Status429),
            ("hang", Fault::Hang),
            ("DROP", Fault::Drop),
        ] {
            let parsed: Fault = text.parse().unwrap();
            assert_eq!(parsed, fault);
            assert_eq!(parsed.to_string().parse::<Fault>().unwrap(), fault);
        }
        let err = "503".parse::<Fault>().unwrap_err();
        assert!(err.contains("500, 429, hang or drop"), "{err}");
    }

    #[test]
    fn options_are_checked_up_front() {
        let base = ReceiveOptions::new("127.0.0.1:0".parse().unwrap(), "/nonexistent");
        assert!(base.validate().is_ok());
        let cases = [
            ReceiveOptions {
                fault_rate: 1.5,
                ..base.clone()
            },
            ReceiveOptions {
                fault_rate: f64::NAN,
                ..base.clone()
            },
            ReceiveOptions {
                fault_rate: 0.5,
                ..base.clone()
            },
            ReceiveOptions {
                auth: Some("Bearer a\nb".into()),
                ..base.clone()
            },
            ReceiveOptions {
                reject_containing: Some(String::new()),
                ..base.clone()
            },
            ReceiveOptions {
                max_body_bytes: 0,
                ..base.clone()
            },
            ReceiveOptions {
                max_body_bytes: MAX_BODY_BYTES_LIMIT + 1,
                ..base.clone()
            },
            ReceiveOptions {
                max_depth: 5,
                ..base.clone()
            },
            ReceiveOptions {
                max_depth: MAX_DEPTH_LIMIT + 1,
                ..base.clone()
            },
        ];
        for opts in cases {
            assert!(
                matches!(opts.validate(), Err(ReceiveError::Options(_))),
                "{opts:?}"
            );
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let opts = ReceiveOptions {
            auth: Some("Bearer s3cret".into()),
            ..ReceiveOptions::new("127.0.0.1:0".parse().unwrap(), "/x")
        };
        let text = format!("{opts:?}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
