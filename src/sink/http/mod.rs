//! The sync API sink: changes grouped per entity type, POSTed in batches (docs/sync-api.md).
//!
//! - Changes are spread over `in_flight` lanes by entity id; each lane sends one batch at a
//!   time, so operations on one id arrive in commit order while other lanes proceed. An
//!   entity type's ddl, truncate and drop, and every row of a table without a primary key,
//!   share the type's own lane ([`batch::lane_key`]): a keyless row's count is only right at
//!   the receiver if it arrives in order with the type's truncates.
//! - Batching adapts to the receiver (Nagle-free, as a Kafka producer with a zero linger): a
//!   lane with nothing in flight is sent what its batch holds at once, even one row; a busy
//!   lane's batch gathers what arrives meanwhile and goes when the lane's batch is settled. A
//!   batch that reaches `batch_rows` rows or `batch_bytes` bytes goes at once (to wait behind
//!   the one in flight). Latency stays low when the receiver keeps up, and batches grow with
//!   the load when it does not. `linger` (default 0) holds a batch on an idle lane until it is
//!   that old, for receivers that prefer fewer, larger batches.
//! - Retriable failures (408, 429, 5xx, timeouts, connection errors) are retried forever by
//!   default (`max_retries` caps it), with capped, jittered backoff and `Retry-After`; a
//!   shutdown cuts a retry wait short and leaves the batch unacknowledged.
//!   A rejected batch (other 4xx) goes to the dead-letter queue before it counts as handled
//!   (`--on-reject stop` ends binsync instead).
//! - A chunk is acknowledged to the checkpointer only when no batch holding any of its
//!   changes, or any earlier change, is still unhandled (the [`Ledger`] counts one piece per
//!   change): the checkpoint advances over a contiguous run of delivered batches only.
//! - Every queue here is bounded (one batch waiting per lane), so a slow or absent receiver
//!   stops the reader instead of filling memory.
//! - Every body and its `X-Binsync-Contract` header carry one contract version, `contract`
//!   (2 by default; 1 when binsync emits no operations on whole entity types). A version 1
//!   body never holds a ddl, truncate or drop: handed one, the sink stops with an error
//!   instead of sending what a version 1 receiver must refuse. A dead letter is sent again
//!   under the version written in its body.
//!
//! This file holds the settings and the loop that fills batches, feeds the lanes and turns
//! their reports into acks; `batch.rs` writes request bodies; `send.rs` is one lane's send
//! loop (retries in `sink::retry`, dead letters in `crate::dlq`).

pub mod batch;
mod send;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use self::batch::{lane_key, lane_of, Batch, Builder, Envelope, SourceHeader};
pub use self::send::replay_dead_letters;
use self::send::{error_chain, lane, Handled, LaneContext, LaneResult};
use super::ledger::{Ack, Ledger, Mark};
use super::retry::Outage;
use super::SinkError;
use crate::change::{Chunk, Op};
use crate::dlq::Dlq;
use crate::shutdown::Shutdown;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnReject {
    /// Keep the batch in the dead-letter queue and go on.
    Dlq,
    /// Stop binsync with an error (the checkpoint stays before the batch).
    Stop,
}

#[derive(Clone)]
pub struct HttpConfig {
    pub url: String,
    /// The `Authorization` header value (from an environment variable; never logged).
    pub authorization: Option<String>,
    pub gzip: bool,
    pub batch_rows: usize,
    pub batch_bytes: usize,
    /// How long a batch on an idle lane waits for more changes (zero: not at all; a busy
    /// lane's batch gathers changes while the lane's batch is in flight either way).
    pub linger: Duration,
    pub in_flight: usize,
    pub request_timeout: Duration,
    /// None: retry retriable failures forever.
    pub max_retries: Option<u32>,
    pub on_reject: OnReject,
    /// Merge several operations on one entity id within a batch (see [`batch::merge_ops`]).
    pub compact: bool,
    /// `--sink-ca`: the only CAs trusted for an https sink (None: the public roots).
    pub ca: Option<SinkCa>,
    /// The sync API contract version of the bodies (`version`) and of the
    /// `X-Binsync-Contract` header: the lowest that carries what the run may emit (3 with
    /// snapshot rows, 2 with DDL operations (`--on-ddl emit`), else 1), for receivers that
    /// know only older versions (docs/sync-api.md, Versioning).
    pub contract: u8,
}

/// The newest sync API contract version this sink writes; [`HttpConfig::contract`]'s default.
pub const CONTRACT_VERSION: u8 = 3;

/// `--sink-ca FILE`, read and parsed at start-up.
#[derive(Clone)]
pub struct SinkCa {
    pub path: PathBuf,
    certs: Vec<reqwest::Certificate>,
}

impl SinkCa {
    /// Every certificate of the PEM file at `path`; at least one.
    pub fn load(path: &Path) -> Result<SinkCa, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let bad = |why: String| {
            format!(
                "--sink-ca {}: {why}; give a PEM file of the CA certificate(s) that signed the sync API's certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            )
        };
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let ders = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if ders.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        let certs = ders
            .iter()
            .map(|d| reqwest::Certificate::from_der(d).map_err(|e| bad(error_chain(&e))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SinkCa {
            path: path.to_path_buf(),
            certs,
        })
    }
}

impl std::fmt::Debug for HttpConfig {
    /// Everything but the Authorization value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &self.url)
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .field("gzip", &self.gzip)
            .field("batch_rows", &self.batch_rows)
            .field("batch_bytes", &self.batch_bytes)
            .field("linger", &self.linger)
            .field("in_flight", &self.in_flight)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("on_reject", &self.on_reject)
            .field("compact", &self.compact)
            .field("ca", &self.ca.as_ref().map(|c| &c.path))
            .field("contract", &self.contract)
            .finish()
    }
}

impl HttpConfig {
    pub fn new(url: String) -> Self {
        HttpConfig {
            url,
            authorization: None,
            gzip: false,
            batch_rows: 1000,
            batch_bytes: 1 << 20,
            linger: Duration::ZERO,
            in_flight: 4,
            request_timeout: Duration::from_secs(30),
            max_retries: None,
            on_reject: OnReject::Dlq,
            compact: false,
            ca: None,
            contract: CONTRACT_VERSION,
        }
    }

    /// The settings for `url`, with defaults. Credentials in the URL (`http://user:pw@host`)
    /// become a Basic `Authorization` header and leave the URL, so that no log line, error,
    /// or dead letter ever shows the password.
    pub fn from_url(url: &str) -> Result<HttpConfig, String> {
        let mut parsed = reqwest::Url::parse(url).map_err(|e| {
            format!(
                "--sink `{}`: {e}; write http(s)://[USER:PASSWORD@]HOST[:PORT]/PATH",
                crate::units::redact_url(url)
            )
        })?;
        let mut cfg = HttpConfig::new(String::new());
        if !parsed.username().is_empty() || parsed.password().is_some() {
            use base64::Engine;
            let user = percent_decode(parsed.username());
            let pass = percent_decode(parsed.password().unwrap_or_default());
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            cfg.authorization = Some(format!("Basic {token}"));
            // Cannot fail on an http(s) URL.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
        }
        cfg.url = parsed.to_string();
        Ok(cfg)
    }

    pub fn client(&self) -> Result<reqwest::Client, SinkError> {
        let mut builder = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            // 3xx is a rejection in the contract; following it would turn the POST into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(ca) = &self.ca {
            builder = builder.tls_built_in_root_certs(false);
            for cert in &ca.certs {
                builder = builder.add_root_certificate(cert.clone());
            }
        }
        builder
            .build()
            .map_err(|e| SinkError::Client(error_chain(&e)))
    }

    /// A failed TLS handshake with the sync API: what happened and the fix.
    fn tls_failure(&self, e: &rustls::Error) -> String {
        use rustls::CertificateError as C;
        let fix = match (e, &self.ca) {
            #[allow(deprecated)]
            (
                rustls::Error::InvalidCertificate(
                    C::UnknownIssuer | C::BadSignature | C::UnsupportedSignatureAlgorithm,
                ),
                Some(ca),
            ) => format!(
                "its certificate is not signed by --sink-ca {}: pass the CA certificate that signed it",
                ca.path.display()
            ),
            (rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature), None) => {
                "its certificate is not signed by a public CA: pass the CA certificate that signed it with --sink-ca FILE".into()
            }
            (
                rustls::Error::InvalidCertificate(
                    C::NotValidForName | C::NotValidForNameContext { .. },
                ),
                _,
            ) => "its certificate is not valid for the host in --sink: use a name the certificate holds in the URL, or give the receiver a certificate for this one".into(),
            (rustls::Error::InvalidCertificate(_), _) => {
                "its certificate cannot be used (expired, not yet valid, or not for a server): renew it".into()
            }
            _ => "check the receiver's TLS settings".into(),
        };
        format!("{e}; {fix}")
    }
}

/// What the lanes reported, kept in the ledger: a batch's pieces are done once it is handled,
/// and a batch that will not be handled stops every ack from its first chunk on.
/// `%40` -> `@` in URL user info.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Outcomes {
    ledger: Ledger,
    failure: Option<SinkError>,
    abandoned: bool,
    /// Per lane, batches handed to it and not yet reported (sending, or queued behind).
    in_flight: Vec<usize>,
}

impl Outcomes {
    fn record(&mut self, res: LaneResult) {
        if let Some(n) = self.in_flight.get_mut(res.lane) {
            *n = n.saturating_sub(1);
        }
        match res.handled {
            Handled::Delivered | Handled::DeadLettered => self.ledger.done_all(&res.pieces),
            Handled::Failed(e) => {
                self.ledger.fail_all(&res.pieces);
                if self.failure.is_none() {
                    self.failure = Some(e);
                }
            }
            Handled::Abandoned => {
                self.ledger.fail_all(&res.pieces);
                self.abandoned = true;
            }
        }
    }

    /// The sink must stop: what is not acknowledged stays behind the checkpoint.
    fn must_stop(&self) -> bool {
        self.failure.is_some() || self.abandoned || self.ledger.has_failed()
    }
}

/// Runs the sink until the chunk channel closes (then delivers what is buffered) or shutdown.
pub async fn run(
    cfg: HttpConfig,
    source: SourceHeader,
    dlq: Dlq,
    rx: mpsc::Receiver<Chunk>,
    acks: mpsc::Sender<Ack>,
    shutdown: Shutdown,
) -> Result<(), SinkError> {
    if !(1..=CONTRACT_VERSION).contains(&cfg.contract) {
        return Err(SinkError::Contract(format!(
            "was set up to send contract version {}, but it writes versions 1 to {CONTRACT_VERSION}",
            cfg.contract
        )));
    }
    let lanes = cfg.in_flight.max(1);
    let cx = LaneContext {
        client: cfg.client()?,
        cfg: cfg.clone(),
        dlq,
        outage: Outage::default(),
        shutdown,
    };
    // Lanes report here; `dispatch` keeps reading while it waits for a lane.
    let (res_tx, res_rx) = mpsc::channel::<LaneResult>(lanes * 4);
    let mut lane_txs = Vec::with_capacity(lanes);
    for i in 0..lanes {
        let (tx, lane_rx) = mpsc::channel::<Batch>(1);
        lane_txs.push(tx);
        tokio::spawn(lane(i, cx.clone(), lane_rx, res_tx.clone()));
    }
    drop(res_tx);
    let envelope = Envelope {
        source,
        contract: cfg.contract,
    };
    Batcher::new(&cfg, envelope, lane_txs, res_rx)
        .run(rx, acks)
        .await
}

/// Fills one batch per lane from the chunks, hands batches to the lanes (see the module's
/// header for when), and turns the lanes' reports into acks. It talks to the lanes through
/// channels only.
struct Batcher<'a> {
    cfg: &'a HttpConfig,
    envelope: Envelope,
    builders: Vec<Builder>,
    lanes: Vec<mpsc::Sender<Batch>>,
    results: mpsc::Receiver<LaneResult>,
    outcomes: Outcomes,
}

impl<'a> Batcher<'a> {
    fn new(
        cfg: &'a HttpConfig,
        envelope: Envelope,
        lanes: Vec<mpsc::Sender<Batch>>,
        results: mpsc::Receiver<LaneResult>,
    ) -> Self {
        let new_builder = || {
            if cfg.compact {
                Builder::compacting()
            } else {
                Builder::default()
            }
        };
        Batcher {
            cfg,
            envelope,
            builders: lanes.iter().map(|_| new_builder()).collect(),
            // Every chunk is registered with one piece per change; a batch's pieces are done
            // when the batch is delivered or dead-lettered.
            outcomes: Outcomes {
                ledger: Ledger::new(),
                failure: None,
                abandoned: false,
                in_flight: vec![0; lanes.len()],
            },
            lanes,
            results,
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Chunk>,
        acks: mpsc::Sender<Ack>,
    ) -> Result<(), SinkError> {
        let mut input_open = true;
        loop {
            let deadline = self.linger_deadline();
            tokio::select! {
                chunk = rx.recv(), if input_open => match chunk {
                    Some(chunk) => {
                        // What else has arrived joins the batches before any is sent.
                        let mut next = Some(chunk);
                        while let Some(chunk) = next.take() {
                            self.take(chunk).await;
                            if !self.outcomes.must_stop() {
                                next = rx.try_recv().ok();
                            }
                        }
                    }
                    None => {
                        input_open = false;
                        for lane in 0..self.lanes.len() {
                            if !self.builders[lane].is_empty() {
                                self.dispatch(lane).await;
                            }
                        }
                    }
                },
                res = self.results.recv() => {
                    let Some(res) = res else { break };
                    self.outcomes.record(res);
                }
                _ = sleep_until(deadline) => {}
            }
            self.send_idle().await;
            // Acknowledge, in order, every chunk with nothing unhandled at or before it.
            while let Some(ack) = self.outcomes.ledger.pop_ready() {
                if acks.send(ack).await.is_err() {
                    return Ok(());
                }
            }
            if self.outcomes.must_stop() {
                // What is not acknowledged stays behind the checkpoint and is sent again later.
                break;
            }
            if !input_open && self.outcomes.ledger.is_settled() {
                break;
            }
        }
        drop(self.lanes);
        match self.outcomes.failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Puts `chunk`'s changes into their lanes' batches; a batch that is full goes at once.
    async fn take(&mut self, chunk: Chunk) {
        if let Some(e) = unsendable(&chunk, self.cfg.contract) {
            // Nothing of the chunk is sent: the checkpoint stays before it, and must_stop()
            // ends the loop.
            self.outcomes.failure.get_or_insert(e);
            return;
        }
        let chunk = std::sync::Arc::new(chunk);
        let ticket = self
            .outcomes
            .ledger
            .register(Mark::of(&chunk), chunk.changes.len());
        let (rows, bytes) = (self.cfg.batch_rows, self.cfg.batch_bytes);
        for c in &chunk.changes {
            let lane = lane_of(&c.entity, lane_key(&chunk, c), self.lanes.len());
            // An operation that would take the batch past batch_bytes travels in a batch of
            // its own: the batch before it closes first.
            let b = &self.builders[lane];
            if !b.is_empty() && b.bytes + c.line.len() > bytes {
                self.dispatch(lane).await;
            }
            let b = &mut self.builders[lane];
            b.push(&chunk, ticket, c);
            if b.count >= rows || b.bytes >= bytes {
                self.dispatch(lane).await;
            }
        }
    }

    /// With a linger: when the oldest batch of an idle lane is due.
    fn linger_deadline(&self) -> Option<tokio::time::Instant> {
        if self.cfg.linger.is_zero() {
            return None;
        }
        self.builders
            .iter()
            .zip(&self.outcomes.in_flight)
            .filter(|(_, &n)| n == 0)
            .filter_map(|(b, _)| b.opened)
            .min()
            .map(|t| t + self.cfg.linger)
    }

    /// Hands every lane with nothing in flight the batch it holds (once `linger` old).
    async fn send_idle(&mut self) {
        let now = tokio::time::Instant::now();
        for lane in 0..self.lanes.len() {
            let due = self.builders[lane]
                .opened
                .is_some_and(|t| t + self.cfg.linger <= now);
            if due && self.outcomes.in_flight[lane] == 0 && !self.outcomes.must_stop() {
                self.dispatch(lane).await;
            }
        }
    }

    /// Hands lane `lane` its batch, taking lane results meanwhile: a lane blocked on
    /// reporting must never wait for us while we wait for it.
    async fn dispatch(&mut self, lane: usize) {
        let batch = self.builders[lane].finish(&self.envelope);
        loop {
            tokio::select! {
                permit = self.lanes[lane].reserve() => {
                    // A closed lane means shutdown; the batch stays unhandled, the checkpoint
                    // before it.
                    if let Ok(p) = permit {
                        p.send(batch);
                        self.outcomes.in_flight[lane] += 1;
                    }
                    return;
                }
                res = self.results.recv() => match res {
                    Some(r) => self.outcomes.record(r),
                    None => return,
                },
            }
        }
    }
}

/// Why `chunk` cannot go into a body of version `contract`: a version 1 body carries row
/// operations only, version 2 adds ddl, truncate and drop, version 3 read and snapshot_end.
fn unsendable(chunk: &Chunk, contract: u8) -> Option<SinkError> {
    let needs = |op: Op| match op {
        Op::Insert | Op::Update | Op::Delete => 1,
        Op::Ddl | Op::Truncate | Op::Drop => 2,
        Op::Read | Op::SnapshotEnd => 3,
    };
    let c = chunk.changes.iter().find(|c| needs(c.op) > contract)?;
    Some(SinkError::Contract(format!(
        "sends contract version {contract} bodies, which cannot carry the `{}` operation at seq {} (entity type `{}`): the run's settings disagree (DDL operations are emitted only with --on-ddl emit, which sends version 2; snapshot rows only without --snapshot never, which sends version 3)",
        c.op.as_str(),
        c.seq,
        c.entity
    )))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Change, Op};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::{Arc, Mutex};

    /// What a receiver saw of one request: its headers (lowercase names) and body.
    struct Seen {
        headers: Vec<(String, String)>,
        body: serde_json::Value,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// An HTTP/1.1 server on 127.0.0.1 that records every request and answers 200.
    fn capture() -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/sync", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let store = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut out = stream;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut headers = Vec::new();
                        loop {
                            let mut h = String::new();
                            reader.read_line(&mut h).unwrap();
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            let (name, value) = h.split_once(':').unwrap();
                            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
                        }
                        let len: usize = headers
                            .iter()
                            .find(|(n, _)| n == "content-length")
                            .map_or(0, |(_, v)| v.parse().unwrap());
                        let mut body = vec![0u8; len];
                        reader.read_exact(&mut body).unwrap();
                        let body = serde_json::from_slice(&body).unwrap();
                        store.lock().unwrap().push(Seen { headers, body });
                        out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .unwrap();
                    }
                });
            }
        });
        (url, seen)
    }

    /// A chunk holding an insert of `t` id 1 and, with `ddl`, a ddl of `t` after it.
    fn chunk(ddl: bool) -> Chunk {
        let mut chunk = Chunk::default();
        let insert = r#"{"seq":1,"op":"insert","db":"d","table":"t","entity":"t","id":{"id":1},"gtid":null,"ts":"2026-11-24T07:37:31Z","row":0,"file":"f","offset":4,"after":{"id":1}}"#;
        let at = insert.find(r#"{"id":1}"#).unwrap();
        chunk.buf.extend_from_slice(insert.as_bytes());
        chunk.changes.push(Change {
            seq: 1,
            op: Op::Insert,
            entity: Arc::from("t"),
            keyless: false,
            line: 0..insert.len(),
            key: at..at + 8,
        });
        if ddl {
            let line = r#"{"seq":2,"op":"ddl","db":"d","table":"t","entity":"t","gtid":null,"ts":"2026-11-24T07:37:31Z","file":"f","offset":9,"statement":"ALTER TABLE t ADD COLUMN c INT","columns":[{"name":"id","type":"int(11)","nullable":false,"json":false}],"key":["id"]}"#;
            let start = chunk.buf.len();
            chunk.buf.extend_from_slice(line.as_bytes());
            chunk.changes.push(Change {
                seq: 2,
                op: Op::Ddl,
                entity: Arc::from("t"),
                keyless: false,
                line: start..chunk.buf.len(),
                key: start..start,
            });
        }
        chunk
    }

    /// Runs the sink over `chunks` against `url` until its input ends.
    async fn run_sink(
        url: &str,
        contract: u8,
        chunks: Vec<Chunk>,
    ) -> (Result<(), SinkError>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::checkpoint::Store::open(dir.path()).unwrap();
        let dlq = Dlq::open(&store).unwrap();
        let mut cfg = HttpConfig::new(url.to_string());
        cfg.contract = contract;
        let source = SourceHeader {
            json: r#""source":{"flavor":"mariadb","server_id":1,"server_uuid":null}"#.into(),
            id_prefix: "mariadb-1".into(),
        };
        let (tx, rx) = mpsc::channel(chunks.len().max(1));
        for c in chunks {
            tx.send(c).await.unwrap();
        }
        drop(tx);
        let (ack_tx, mut ack_rx) = mpsc::channel(16);
        let shutdown = crate::shutdown::Shutdown::never();
        let res = tokio::time::timeout(
            Duration::from_secs(30),
            run(cfg, source, dlq, rx, ack_tx, shutdown),
        )
        .await
        .expect("the sink finishes");
        let mut acked = 0;
        while let Ok(a) = ack_rx.try_recv() {
            acked += a.changes;
        }
        (res, acked)
    }

    #[tokio::test]
    async fn body_and_header_carry_the_configured_contract_version() {
        assert_eq!(
            HttpConfig::new("http://x".into()).contract,
            3,
            "the default"
        );
        let (url, seen) = capture();
        for (contract, ddl) in [(3, true), (2, true), (2, false), (1, false)] {
            seen.lock().unwrap().clear();
            let (res, acked) = run_sink(&url, contract, vec![chunk(ddl)]).await;
            res.unwrap();
            assert_eq!(acked, 1 + usize::from(ddl));
            let seen = seen.lock().unwrap();
            assert!(!seen.is_empty());
            for req in seen.iter() {
                let header = contract.to_string();
                assert_eq!(req.header("x-binsync-contract"), Some(header.as_str()));
                assert_eq!(req.body["version"], contract);
            }
            let ops: Vec<&serde_json::Value> = seen
                .iter()
                .flat_map(|r| r.body["entities"]["t"].as_array().unwrap())
                .collect();
            assert_eq!(ops.len(), 1 + usize::from(ddl));
        }
    }

    /// A version 1 body must not carry a ddl: the sink stops before sending any of its chunk
    /// and acknowledges nothing of it.
    #[tokio::test]
    async fn a_ddl_under_contract_1_stops_the_sink_before_anything_is_sent() {
        let (url, seen) = capture();
        let (res, acked) = run_sink(&url, 1, vec![chunk(true)]).await;
        let err = res.expect_err("must stop");
        assert!(matches!(err, SinkError::Contract(_)), "{err}");
        assert!(
            err.to_string().contains("`ddl` operation at seq 2"),
            "{err}"
        );
        assert_eq!(acked, 0);
        assert!(seen.lock().unwrap().is_empty());
        let (res, _) = run_sink(&url, 4, vec![chunk(false)]).await;
        assert!(matches!(res, Err(SinkError::Contract(_))));
    }

    /// `dlq replay` sends a dead letter with the version its body was written with, not the
    /// version this run would write.
    #[tokio::test]
    async fn a_dead_letter_is_replayed_under_its_own_version() {
        let (url, seen) = capture();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::checkpoint::Store::open(dir.path()).unwrap();
        let dlq = Dlq::open(&store).unwrap();
        for version in [1, 2] {
            let payload = format!(
                r#"{{"version":{version},"batch_id":"b{version}","source":{{}},"first_seq":1,"last_seq":1,"count":1,"entities":{{}}}}"#
            );
            dlq.push(crate::dlq::DeadLetter {
                id: 0,
                batch_id: format!("b{version}"),
                url: url.clone(),
                status: Some(400),
                response: String::new(),
                at_unix_ms: 1,
                count: 1,
                first_seq: 1,
                last_seq: 1,
                payload,
            })
            .await
            .unwrap();
        }
        let mut cfg = HttpConfig::new(url);
        cfg.contract = 2;
        let (ok, failed) = replay_dead_letters(&cfg, &dlq, None).await.unwrap();
        assert_eq!((ok, failed), (2, 0));
        let seen = seen.lock().unwrap();
        let mut pairs: Vec<(String, String)> = seen
            .iter()
            .map(|r| {
                (
                    r.body["version"].to_string(),
                    r.header("x-binsync-contract").unwrap().to_string(),
                )
            })
            .collect();
        pairs.sort();
        assert_eq!(pairs, [("1".into(), "1".into()), ("2".into(), "2".into())]);
    }

    /// A chunk of one insert of entity type `t`, id `id`, at seq `id`.
    fn row(id: u64) -> Chunk {
        let mut chunk = Chunk::default();
        let line = format!(
            r#"{{"seq":{id},"op":"insert","db":"d","table":"t","entity":"t","id":{{"id":{id}}},"after":{{"id":{id}}}}}"#
        );
        let key = format!(r#"{{"id":{id}}}"#);
        let at = line.find(&key).unwrap();
        chunk.buf.extend_from_slice(line.as_bytes());
        chunk.changes.push(Change {
            seq: id,
            op: Op::Insert,
            entity: Arc::from("t"),
            keyless: false,
            line: 0..line.len(),
            key: at..at + key.len(),
        });
        chunk
    }

    /// A batcher whose one lane the test plays: it takes the lane's batches and reports them.
    struct OneLane {
        chunks: mpsc::Sender<Chunk>,
        batches: mpsc::Receiver<Batch>,
        reports: mpsc::Sender<LaneResult>,
        acks: mpsc::Receiver<Ack>,
    }

    impl OneLane {
        fn start(mut cfg: HttpConfig) -> OneLane {
            cfg.in_flight = 1;
            let (chunks, chunk_rx) = mpsc::channel(16);
            let (lane_tx, batches) = mpsc::channel(1);
            let (reports, res_rx) = mpsc::channel(4);
            let (ack_tx, acks) = mpsc::channel(64);
            let envelope = Envelope {
                source: SourceHeader {
                    json: r#""source":{}"#.into(),
                    id_prefix: "m-1".into(),
                },
                contract: cfg.contract,
            };
            tokio::spawn(async move {
                Batcher::new(&cfg, envelope, vec![lane_tx], res_rx)
                    .run(chunk_rx, ack_tx)
                    .await
            });
            OneLane {
                chunks,
                batches,
                reports,
                acks,
            }
        }

        async fn send(&self, ids: std::ops::RangeInclusive<u64>) {
            for id in ids {
                self.chunks.send(row(id)).await.unwrap();
            }
        }

        /// The lane delivered `batch`.
        async fn delivered(&self, batch: Batch) {
            let report = LaneResult {
                lane: 0,
                pieces: batch.pieces,
                handled: Handled::Delivered,
            };
            self.reports.send(report).await.unwrap();
        }

        /// Changes acknowledged by the next `n` acks.
        async fn acked(&mut self, n: usize) -> usize {
            let mut changes = 0;
            for _ in 0..n {
                changes += self.acks.recv().await.unwrap().changes;
            }
            changes
        }
    }

    /// With the default settings a lane with nothing in flight sends a single row at once: no
    /// linger holds it (on tokio's paused clock, any timer would have moved the time).
    #[tokio::test(start_paused = true)]
    async fn an_idle_lane_sends_a_single_row_at_once() {
        assert_eq!(HttpConfig::new("http://x".into()).linger, Duration::ZERO);
        let mut lane = OneLane::start(HttpConfig::new("http://x".into()));
        for id in 1..=3 {
            let start = tokio::time::Instant::now();
            lane.send(id..=id).await;
            let batch = lane.batches.recv().await.unwrap();
            assert_eq!(start.elapsed(), Duration::ZERO, "row {id} waited");
            assert_eq!((batch.count, batch.min_seq), (1, id));
            lane.delivered(batch).await;
            assert_eq!(lane.acked(1).await, 1);
        }
    }

    /// While its batch is in flight a lane gathers what arrives, sends it all in one batch the
    /// moment the lane is free, and acknowledges each chunk only once its batch is delivered.
    #[tokio::test(start_paused = true)]
    async fn a_busy_lane_gathers_what_arrives_meanwhile() {
        let mut lane = OneLane::start(HttpConfig::new("http://x".into()));
        lane.send(1..=1).await;
        let first = lane.batches.recv().await.unwrap();
        lane.send(2..=6).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            lane.batches.try_recv().is_err(),
            "sent while the lane was busy"
        );
        assert!(lane.acks.try_recv().is_err(), "acked before delivery");
        lane.delivered(first).await;
        let start = tokio::time::Instant::now();
        let second = lane.batches.recv().await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(
            (second.count, second.min_seq, second.max_seq),
            (5, 2, 6),
            "one batch of what arrived meanwhile"
        );
        assert_eq!(lane.acked(1).await, 1);
        assert!(lane.acks.try_recv().is_err(), "acked before delivery");
        lane.delivered(second).await;
        assert_eq!(lane.acked(5).await, 5);
    }

    /// A busy lane's batch that reaches batch_rows goes at once, to wait behind the one in
    /// flight; what comes after it gathers until the lane is free.
    #[tokio::test(start_paused = true)]
    async fn a_full_batch_does_not_wait_for_a_free_lane() {
        let mut cfg = HttpConfig::new("http://x".into());
        cfg.batch_rows = 3;
        let mut lane = OneLane::start(cfg);
        lane.send(1..=1).await;
        let first = lane.batches.recv().await.unwrap();
        lane.send(2..=6).await;
        let full = lane.batches.recv().await.unwrap();
        assert_eq!((full.count, full.min_seq, full.max_seq), (3, 2, 4));
        lane.delivered(first).await;
        assert_eq!(lane.acked(1).await, 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            lane.batches.try_recv().is_err(),
            "sent while a full batch was in flight"
        );
        lane.delivered(full).await;
        let rest = lane.batches.recv().await.unwrap();
        assert_eq!((rest.count, rest.min_seq, rest.max_seq), (2, 5, 6));
        assert_eq!(lane.acked(3).await, 3);
        lane.delivered(rest).await;
        assert_eq!(lane.acked(2).await, 2);
    }

    /// `--linger` holds a batch on an idle lane until it is that old, gathering meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_linger_holds_an_idle_lanes_batch_that_long() {
        let mut cfg = HttpConfig::new("http://x".into());
        cfg.linger = Duration::from_millis(20);
        let mut lane = OneLane::start(cfg);
        let start = tokio::time::Instant::now();
        lane.send(1..=1).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        lane.send(2..=2).await;
        let batch = lane.batches.recv().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(20));
        assert_eq!(batch.count, 2);
        lane.delivered(batch).await;
        assert_eq!(lane.acked(2).await, 2);
    }

    #[test]
    fn credentials_leave_the_url_for_a_header() {
        let cfg = HttpConfig::from_url("http://app:s%40cret@127.0.0.1:8080/sync").unwrap();
        assert_eq!(cfg.url, "http://127.0.0.1:8080/sync");
        // base64("app:s@cret")
        assert_eq!(cfg.authorization.as_deref(), Some("Basic YXBwOnNAY3JldA=="));
        assert!(!format!("{cfg:?}").contains("YXBw"), "{cfg:?}");
        let plain = HttpConfig::from_url("https://h/p").unwrap();
        assert_eq!(
            (plain.url.as_str(), plain.authorization),
            ("https://h/p", None)
        );
        let e = HttpConfig::from_url("http://app:s3cret@[bad/").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
