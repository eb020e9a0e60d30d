//! Sinks: where chunks go, and the acknowledgements that let the checkpoint move.
//!
//! The seam every sink implements: receive [`Chunk`](crate::change::Chunk)s in order from a bounded channel, make
//! them durable (written and fsynced, or acknowledged by a receiver), then send an [`Ack`]
//! carrying the chunk's resume position, in the same order. The checkpointer trusts an ack
//! completely, so a sink must never ack a chunk it has not delivered. Every sink turns its
//! deliveries into acks through one [`Ledger`], the only maker of [`Ack`]s.

pub mod http;
pub mod ledger;
pub mod lines;
pub mod nats;
pub mod retry;

use std::path::PathBuf;
use std::str::FromStr;

use self::http::HttpConfig;
use self::nats::NatsConfig;
pub use crate::checkpoint::Ack;
use crate::dlq::DlqError;

/// Which sink, with its settings.
#[derive(Debug, Clone)]
pub enum SinkSpec {
    Stdout,
    File(PathBuf),
    /// The sync API (boxed: its settings are much larger than the other variants).
    Http(Box<HttpConfig>),
    /// NATS JetStream (`nats://` or `tls://`, docs/jetstream.md).
    Nats(Box<NatsConfig>),
}

impl FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "stdout" || s == "-" {
            Ok(SinkSpec::Stdout)
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(
                    "--sink file: needs a path, e.g. file:/var/lib/binsync/changes.jsonl".into(),
                );
            }
            Ok(SinkSpec::File(PathBuf::from(path)))
        } else if s.starts_with("http://") || s.starts_with("https://") {
            Ok(SinkSpec::Http(Box::new(HttpConfig::from_url(s)?)))
        } else if s.starts_with("nats://") || s.starts_with("tls://") {
            Ok(SinkSpec::Nats(Box::new(NatsConfig::from_url(s)?)))
        } else {
            Err(format!(
                "--sink `{}`: write stdout, file:PATH, an http(s):// URL or nats://HOST:PORT",
                crate::units::redact_url(s)
            ))
        }
    }
}

impl SinkSpec {
    /// The default sink: a run without `--sink` writes to its terminal or pipe.
    pub fn is_stdout(&self) -> bool {
        matches!(self, SinkSpec::Stdout)
    }
}

/// The sink as the start-up line names it (an HTTP URL without its credentials).
impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Stdout => f.write_str("stdout"),
            SinkSpec::File(path) => write!(f, "file:{}", path.display()),
            SinkSpec::Http(cfg) => f.write_str(&cfg.url),
            SinkSpec::Nats(cfg) => write!(f, "{cfg}"),
        }
    }
}

/// Why a sink stopped: definite failures only, each naming its way out. Retriable outcomes
/// (a receiver down, a 503) are retried inside the sink and never become errors.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file or stdout could not be written or fsynced.
    #[error("cannot write to {target}: {detail}; check the path, its permissions and free space")]
    Write { target: String, detail: String },
    /// No space or quota left for the file sink after waiting in place was cut short by an
    /// fsync failure: the pipeline restarts from the checkpoint once there is space.
    #[error(transparent)]
    DiskFull(#[from] crate::checkpoint::DiskFull),
    /// stdout's reader went away (`| head`): binsync stops quietly; only what was written
    /// is acknowledged.
    #[error("stdout was closed by its reader")]
    StdoutClosed,
    /// `--on-reject stop`: the receiver refused a batch for good.
    #[error("the sync API rejected batch {batch} (HTTP {status}: {detail}); fix the receiver or the data, then restart (or run with --on-reject dlq)")]
    Rejected {
        batch: String,
        status: u16,
        detail: String,
    },
    /// `--on-reject stop` with `--max-retries`: the receiver never took the batch.
    #[error("the sync API did not take batch {batch} in {retries} retries (last: {last}); check the receiver, then restart (or raise --max-retries, or run with --on-reject dlq)")]
    RetriesExhausted {
        batch: String,
        retries: u32,
        last: String,
    },
    /// A rejected batch could not be kept: the checkpoint stays before it.
    #[error(transparent)]
    Dlq(#[from] DlqError),
    #[error("cannot set up the HTTP client: {0}; the TLS backend of this build did not start (a bug: please report it with this message)")]
    Client(String),
    /// The sync API's TLS handshake failed (`detail` names the fix: --sink-ca, the host).
    #[error("no TLS connection to the sync API at {url}: {detail}")]
    Tls { url: String, detail: String },
    #[error("cannot gzip batch {batch}: {detail}; run without --gzip")]
    Gzip { batch: String, detail: String },
    #[error("cannot start the fsync thread for {target}: {detail}; the host is short of memory or of threads (see ulimit -u)")]
    Thread { target: String, detail: String },
    /// The sync API sink's contract version and what it was asked to send disagree (a
    /// version it does not write, or a ddl, truncate or drop in a version 1 body): a bug in
    /// how binsync wired its settings, stopped before anything wrong is sent.
    #[error("the sync API sink {0}; nothing of it was sent (this is a bug in binsync: please report it)")]
    Contract(String),
    /// The NATS servers refused us for good (credentials, TLS, a bad address).
    #[error("cannot connect to NATS at {servers}: {detail}")]
    NatsConnect { servers: String, detail: String },
    /// The stream cannot take our subjects as it is (`detail` names the fix).
    #[error("JetStream stream {stream}: {detail}")]
    NatsStream { stream: String, detail: String },
    /// The sink's own records in the state dir (tree `nats`) could not be read or written.
    #[error("cannot read or write the NATS sink's state in {dir}: {detail}; check the disk, then start binsync again")]
    NatsState { dir: String, detail: String },
    /// One operation does not fit in a NATS message.
    #[error("operation seq {seq} (entity type `{entity}`) is {size} bytes as a NATS message, more than the server's max_payload ({max_payload} bytes); raise max_payload in the nats-server configuration (at most 64 MB; 8 MB is the advised ceiling), then restart binsync: the checkpoint stays before this operation")]
    NatsTooLarge {
        seq: u64,
        entity: String,
        size: usize,
        max_payload: usize,
    },
    /// The stream refused an operation for good (larger than its max_msg_size).
    #[error("JetStream stream {stream} refused operation seq {seq} (entity type `{entity}`): {detail}; raise the stream's max_msg_size (nats stream edit), then restart binsync: the checkpoint stays before this operation")]
    NatsRefused {
        stream: String,
        seq: u64,
        entity: String,
        detail: String,
    },
    /// `--nats-on-full stop`: the stream's limits are reached (discard new).
    #[error("JetStream stream {stream} is full and refuses messages ({detail}); raise its limits (max_msgs, max_bytes: nats stream edit) or remove messages, then restart binsync (the checkpoint stays before the refused operation), or run with --nats-on-full wait to hold and retry")]
    NatsFull { stream: String, detail: String },
    /// A lines sink (stdout, file) was asked to write to an HTTP URL.
    #[error("{0} is not stdout or file:PATH; JSON lines go to stdout or a file only")]
    NotLines(String),
}
