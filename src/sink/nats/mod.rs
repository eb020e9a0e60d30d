//! The NATS JetStream sink (`--sink nats://HOST:PORT[,...]`, docs/jetstream.md): one message
//! per operation, published with acks into a stream, exactly once.
//!
//! Invariants:
//! - A chunk is acknowledged to the checkpointer (through the [`Ledger`](super::ledger::Ledger),
//!   one piece per operation) only once JetStream acknowledged every message of it and of
//!   every earlier chunk (a `duplicate: true` ack counts: the message is in the stream).
//! - Every message carries `Nats-Msg-Id: <source-id>:<seq>` (the server drops a second copy
//!   within the stream's duplicate window) and `Binsync-Source`/`Binsync-Seq`, by which a
//!   scan of the stream finds what landed beyond that window: on start and after any failed
//!   ack, before publishing again, the sink reads the stream above a floor below which nothing
//!   unacknowledged can be (`scan.rs`) and skips exactly the seqs it finds there. So a crash
//!   or an outage of any length publishes nothing twice and loses nothing.
//! - The checkpoint carries `stream_seq` (tree `nats`): a stream sequence below which no
//!   message of an operation beyond that checkpoint can lie (see `publish.rs`).
//! - A failed ack is retried with the same message (same id) after the connection is back;
//!   an operation larger than the server's `max_payload` is a definite error; a stream that
//!   refuses messages because its limits are reached waits or stops (`--nats-on-full`),
//!   never drops.
//!
//! This file holds the settings, the connection and the stream set-up; `subject.rs` names
//! subjects, `scan.rs` reads what is in the stream, `publish.rs` is the publishing loop.

mod publish;
mod scan;
pub mod subject;

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{ConnectErrorKind, ServerAddr};
use tokio::sync::mpsc;

use super::ledger::Ack;
use super::SinkError;
use crate::backoff::{sleep_unless_stopped, Backoff};
use crate::change::Chunk;
use crate::checkpoint::Store;
use crate::shutdown::Shutdown;

/// The store tree of the sink's own state (the source id, and `stream_seq` in checkpoints).
pub const TREE: &[u8] = b"nats";
/// Key of the source id in [`TREE`].
pub const SOURCE_ID_KEY: &[u8] = b"source_id";
/// Key of the checkpoint's stream sequence in [`TREE`] (u64 big-endian).
pub const STREAM_SEQ_KEY: &[u8] = b"stream_seq";
/// The `Binsync-Contract` header's value: the sync API contract version of the payloads.
pub const CONTRACT: &str = "3";
/// How long a publish waits for its ack before it counts as failed (and is retried, same id).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// `--nats-on-full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnFull {
    /// Hold the messages and retry until the stream takes them (one WARN per episode).
    Wait,
    /// Stop binsync with an error (the checkpoint stays before the refused message).
    Stop,
}

#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// As given to --sink (no credentials: they come from the environment).
    pub url: String,
    pub servers: Vec<ServerAddr>,
    /// `tls://`, or `--sink-ca`: TLS required.
    pub tls: bool,
    pub ca: Option<PathBuf>,
    pub stream: String,
    pub prefix: String,
    pub partitions: u32,
    pub replicas: usize,
    pub max_in_flight: usize,
    pub on_full: OnFull,
    /// `--nats-source-id`: overrides the stored one.
    pub source_id: Option<String>,
}

impl NatsConfig {
    /// `nats://HOST:PORT[,HOST:PORT...]` (or `tls://`), with the default settings.
    pub fn from_url(url: &str) -> Result<NatsConfig, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("--sink `{url}`: write nats://HOST:PORT[,HOST:PORT...]"))?;
        if rest.contains('@') {
            return Err(format!("--sink `{}`: credentials do not go in the URL; set BINSYNC_NATS_TOKEN, BINSYNC_NATS_USER and BINSYNC_NATS_PASSWORD, or BINSYNC_NATS_CREDS", crate::units::redact_url(url)));
        }
        let tls = scheme == "tls";
        let mut servers = Vec::new();
        for host in rest.split(',').map(str::trim) {
            let host = host.trim_end_matches('/');
            if host.is_empty() {
                return Err(format!(
                    "--sink `{url}`: an empty server in the list; write nats://HOST:PORT[,HOST:PORT...]"
                ));
            }
            let addr: ServerAddr = format!("{scheme}://{host}").parse().map_err(|e| {
                format!(
                    "--sink `{url}`: server `{host}`: {e}; write nats://HOST:PORT[,HOST:PORT...]"
                )
            })?;
            servers.push(addr);
        }
        Ok(NatsConfig {
            url: url.to_string(),
            servers,
            tls,
            ca: None,
            stream: "binsync".into(),
            prefix: "binsync".into(),
            partitions: 8,
            replicas: 1,
            max_in_flight: 512,
            on_full: OnFull::Wait,
            source_id: None,
        })
    }

    /// The settings' own checks (each error names the flag).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = subject::prefix_problem(&self.prefix) {
            return Err(format!("--nats-subject-prefix `{}`: {p}; use tokens of letters, digits, `_` and `-` separated by `.`", self.prefix));
        }
        if self.stream.is_empty()
            || self
                .stream
                .chars()
                .any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace())
        {
            return Err(format!("--nats-stream `{}`: a stream name may not be empty nor hold `.`, `*`, `>`, `/`, `\\` or whitespace", self.stream));
        }
        if !(1..=1024).contains(&self.partitions) {
            return Err(format!(
                "--nats-partitions {}: pick 1 to 1024",
                self.partitions
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!(
                "--nats-replicas {}: JetStream keeps 1 to 5 replicas",
                self.replicas
            ));
        }
        if self.max_in_flight == 0 {
            return Err("--nats-max-in-flight must be at least 1".into());
        }
        if let Some(id) = &self.source_id {
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "--nats-source-id `{id}`: use letters, digits, `_` and `-` only"
                ));
            }
        }
        Ok(())
    }
}

/// The sink as the start-up line names it.
impl std::fmt::Display for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} stream {} subjects {}.>",
            self.url, self.stream, self.prefix
        )
    }
}

/// Runs the sink until the chunk channel closes (and everything is acknowledged) or shutdown.
pub async fn run(
    cfg: NatsConfig,
    default_source_id: String,
    store: Store,
    rx: mpsc::Receiver<Chunk>,
    acks: mpsc::Sender<Ack>,
    mut shutdown: Shutdown,
) -> Result<(), SinkError> {
    let Some(client) = connect(&cfg, &mut shutdown).await? else {
        return Ok(());
    };
    // For the stream API and the scans; publishes go through the client (see `publish`).
    let js = jetstream::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .build(client.clone());
    let Some(()) = ensure_stream(&cfg, &js, &mut shutdown).await? else {
        return Ok(());
    };
    let source_id = source_id(&cfg, &store, default_source_id).await?;
    tracing::info!(sink = %cfg, source_id = %source_id, partitions = cfg.partitions, "publishing to NATS JetStream");
    publish::Publisher::new(cfg, client, js, source_id, store, shutdown)
        .await?
        .run(rx, acks)
        .await
}

/// Credentials from the environment (never from flags or files, never logged).
pub(crate) async fn options(cfg: &NatsConfig) -> Result<async_nats::ConnectOptions, SinkError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut opts = if let Some(path) = env("BINSYNC_NATS_CREDS") {
        async_nats::ConnectOptions::with_credentials_file(&path)
            .await
            .map_err(|e| SinkError::NatsConnect {
                servers: cfg.url.clone(),
                detail: format!("BINSYNC_NATS_CREDS {path}: {e}; name a readable .creds file"),
            })?
    } else if let Some(token) = env("BINSYNC_NATS_TOKEN") {
        async_nats::ConnectOptions::with_token(token)
    } else if let Some(user) = env("BINSYNC_NATS_USER") {
        async_nats::ConnectOptions::with_user_and_password(
            user,
            env("BINSYNC_NATS_PASSWORD").unwrap_or_default(),
        )
    } else {
        async_nats::ConnectOptions::new()
    };
    opts = opts
        .name("binsync")
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => {
                    tracing::debug!("NATS connection lost; reconnecting")
                }
                async_nats::Event::Connected => tracing::debug!("NATS connection (re)established"),
                other => tracing::debug!(event = %other, "NATS client event"),
            }
        });
    if let Some(ca) = &cfg.ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    } else if cfg.tls {
        opts = opts.require_tls(true);
    }
    Ok(opts)
}

/// Connects, retrying while the servers are unreachable (one WARN, then an INFO when
/// connected); bad credentials or TLS are definite. None: shutdown came first.
async fn connect(
    cfg: &NatsConfig,
    shutdown: &mut Shutdown,
) -> Result<Option<async_nats::Client>, SinkError> {
    let mut backoff = Backoff::new();
    let mut since: Option<std::time::Instant> = None;
    loop {
        let opts = options(cfg).await?;
        match opts.connect(cfg.servers.clone()).await {
            Ok(client) => {
                if let Some(t) = since {
                    tracing::info!(outage = %crate::units::duration(t.elapsed()), "NATS reachable again; connected");
                }
                return Ok(Some(client));
            }
            Err(e) => {
                let definite = match e.kind() {
                    ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
                        Some(format!("{e}; check BINSYNC_NATS_TOKEN, BINSYNC_NATS_USER/BINSYNC_NATS_PASSWORD or BINSYNC_NATS_CREDS"))
                    }
                    ConnectErrorKind::Tls => Some(format!("{}; check the server's certificate (pass the CA that signed it with --sink-ca FILE) and that it serves TLS", error_chain(&e))),
                    ConnectErrorKind::ServerParse => Some(format!("{e}; write nats://HOST:PORT[,HOST:PORT...]")),
                    // A refused certificate arrives as an I/O error of the TLS handshake.
                    _ => rustls_error(&e).map(|tls| tls_failure(tls, cfg)),
                };
                if let Some(detail) = definite {
                    return Err(SinkError::NatsConnect {
                        servers: cfg.url.clone(),
                        detail,
                    });
                }
                if since.is_none() {
                    since = Some(std::time::Instant::now());
                    tracing::warn!(servers = %cfg.url, error = %error_chain(&e), "NATS is not reachable; retrying until it is (one line when it is; each retry at debug level)");
                }
                crate::metrics::sink_retry(None);
                let delay = backoff.next_delay();
                tracing::debug!(error = %error_chain(&e), retry_in = %crate::units::duration(delay), "NATS connect failed; retrying");
                if !sleep_unless_stopped(delay, shutdown).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// Gets the stream, or creates it with the documented defaults; an existing stream must take
/// `PREFIX.>`. JetStream not answering yet (a cluster electing) is retried. None: shutdown.
async fn ensure_stream(
    cfg: &NatsConfig,
    js: &jetstream::Context,
    shutdown: &mut Shutdown,
) -> Result<Option<()>, SinkError> {
    let mut backoff = Backoff::new();
    let mut warned = false;
    let wanted = format!("{}.>", cfg.prefix);
    loop {
        let attempt = match js.get_stream(&cfg.stream).await {
            Ok(s) => {
                let info = s.cached_info().clone();
                if info
                    .config
                    .subjects
                    .iter()
                    .any(|f| subject::covers(f, &cfg.prefix))
                {
                    wait_for_leader(cfg, js).await;
                    return Ok(Some(()));
                }
                return Err(SinkError::NatsStream {
                    stream: cfg.stream.clone(),
                    detail: format!(
                        "it exists with subjects [{}], which do not take {wanted}; add {wanted} to its subjects (nats stream edit {} --subjects ...), or pick another --nats-stream or --nats-subject-prefix",
                        info.config.subjects.join(", "),
                        cfg.stream
                    ),
                });
            }
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(err)
                    if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    create_stream(cfg, js, &wanted).await
                }
                _ => Err(error_chain(&e)),
            },
        };
        match attempt {
            Ok(Some(())) => {
                wait_for_leader(cfg, js).await;
                return Ok(Some(()));
            }
            Ok(None) => {}
            Err(detail) => {
                if !warned {
                    warned = true;
                    tracing::warn!(stream = %cfg.stream, error = %detail, "JetStream does not answer for the stream yet; retrying");
                }
            }
        }
        if !sleep_unless_stopped(backoff.next_delay(), shutdown).await {
            return Ok(None);
        }
    }
}

/// A replicated stream just created (or whose leader was just lost) refuses publishes until
/// its RAFT group elects a leader: wait for one, up to 30 s (then publishing's own retries
/// take over).
async fn wait_for_leader(cfg: &NatsConfig, js: &jetstream::Context) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(mut s) = js.get_stream(&cfg.stream).await {
            if let Ok(info) = s.info().await {
                if info.cluster.as_ref().is_none_or(|c| c.leader.is_some()) {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ok(Some): created (or created meanwhile by another); Ok(None): retry; Err: transient detail.
/// A definite refusal (bad replicas count, overlapping subjects) is returned as Err too but
/// logged with its fix; it is retried because a person may fix it while we wait.
async fn create_stream(
    cfg: &NatsConfig,
    js: &jetstream::Context,
    wanted: &str,
) -> Result<Option<()>, String> {
    let config = stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![wanted.to_string()],
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    match js.create_stream(config).await {
        Ok(_) => {
            tracing::info!(stream = %cfg.stream, subjects = %wanted, replicas = cfg.replicas, "created the JetStream stream (file storage, discard new, no limits)");
            Ok(Some(()))
        }
        Err(e) => match e.kind() {
            // Created meanwhile (another binsync): take it as it is, next round.
            jetstream::context::CreateStreamErrorKind::JetStream(err)
                if err.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST =>
            {
                Ok(None)
            }
            _ => Err(format!(
                "cannot create stream {}: {}; check that JetStream is enabled, the subjects {wanted} overlap no other stream, and --nats-replicas {} fits the cluster",
                cfg.stream,
                error_chain(&e),
                cfg.replicas
            )),
        },
    }
}

/// The source id of this state: `--nats-source-id`, else the one saved at the first start,
/// else `default` (the first source's flavor and uuid or server id), saved now.
async fn source_id(cfg: &NatsConfig, store: &Store, default: String) -> Result<String, SinkError> {
    let state = |e: String| SinkError::NatsState {
        dir: store.dir().display().to_string(),
        detail: e,
    };
    let tree = store
        .db()
        .open_tree(TREE)
        .map_err(|e| state(e.to_string()))?;
    let saved = tree
        .get(SOURCE_ID_KEY)
        .map_err(|e| state(e.to_string()))?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    if let Some(id) = &cfg.source_id {
        if saved.as_deref().is_some_and(|s| s != id) {
            tracing::warn!(saved = ?saved, using = %id, "--nats-source-id differs from the source id saved in the state dir; messages get new ids (consumers see a new source)");
        }
        if saved.is_some() {
            return Ok(id.clone());
        }
    }
    if let Some(id) = saved {
        return Ok(id);
    }
    let id = cfg.source_id.clone().unwrap_or(default);
    let value = id.clone().into_bytes();
    store
        .write(
            move |db| {
                db.open_tree(TREE)?.insert(SOURCE_ID_KEY, value)?;
                Ok(())
            },
            |_| {},
        )
        .await
        .map_err(|e| state(e.to_string()))?;
    Ok(id)
}

/// The rustls error somewhere in `e`'s chain (inside I/O errors, opened with `get_ref`).
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(mut e) = cur {
        while let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            e = inner;
        }
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

/// A failed TLS handshake with a NATS server: what happened and the fix.
fn tls_failure(e: &rustls::Error, cfg: &NatsConfig) -> String {
    use rustls::CertificateError as C;
    let fix = match (e, &cfg.ca) {
        (rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature), Some(ca)) => {
            format!(
                "its certificate is not signed by --sink-ca {}: pass the CA certificate that signed it",
                ca.display()
            )
        }
        (rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature), None) => {
            "its certificate is not signed by a CA this machine trusts: pass the CA certificate that signed it with --sink-ca FILE".into()
        }
        (
            rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }),
            _,
        ) => "its certificate is not valid for the host in --sink: use a name the certificate holds, or give the server a certificate for this one".into(),
        (rustls::Error::InvalidCertificate(_), _) => {
            "its certificate cannot be used (expired, not yet valid, or not for a server): renew it".into()
        }
        _ => "check the server's TLS settings and --sink-ca".into(),
    };
    format!("TLS handshake failed: {e}; {fix}")
}

/// An error with its sources, `a: b: c`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = NatsConfig::from_url("nats://127.0.0.1:4222,127.0.0.1:4223").unwrap();
        assert_eq!(c.servers.len(), 2);
        assert!(!c.tls);
        assert!(c.validate().is_ok());
        let c = NatsConfig::from_url("tls://nats.example:4222").unwrap();
        assert!(c.tls);
        assert!(NatsConfig::from_url("nats://u:p@h:1").is_err());
        assert!(NatsConfig::from_url("nats://h:1,,h:2").is_err());
        let mut c = NatsConfig::from_url("nats://h:1").unwrap();
        c.partitions = 0;
        assert!(c.validate().unwrap_err().contains("--nats-partitions"));
        c.partitions = 8;
        c.source_id = Some("a:b".into());
        assert!(c.validate().unwrap_err().contains("--nats-source-id"));
        c.source_id = None;
        c.prefix = "a.*".into();
        assert!(c.validate().unwrap_err().contains("--nats-subject-prefix"));
    }
}
