//! The sync API sink: changes grouped per entity type, POSTed in batches (docs/sync-api.md).
//!
//! - Changes are spread over `in_flight` lanes by entity id; each lane sends one batch at a
//!   time, so operations on one id arrive in commit order while other lanes proceed. An
//!   entity type's ddl, truncate and drop, and every row of a table without a primary key,
//!   share the type's own lane ([`batch::lane_key`]): a keyless row's count is only right at
//!   the receiver if it arrives in order with the type's truncates.
//! - A batch closes at `batch_rows` rows, `batch_bytes` bytes, or `linger` after its first row.
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
use self::send::{error_chain, lane, Handled, LaneResult};
use super::ledger::{Ack, Ledger, Mark};
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
            linger: Duration::from_millis(5),
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
}

impl Outcomes {
    fn record(&mut self, res: LaneResult) {
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
    mut rx: mpsc::Receiver<Chunk>,
    acks: mpsc::Sender<Ack>,
    shutdown: Shutdown,
) -> Result<(), SinkError> {
    if !(1..=CONTRACT_VERSION).contains(&cfg.contract) {
        return Err(SinkError::Contract(format!(
            "was set up to send contract version {}, but it writes versions 1 to {CONTRACT_VERSION}",
            cfg.contract
        )));
    }
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
            shutdown.clone(),
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
    let envelope = Envelope {
        source,
        contract: cfg.contract,
    };
    // Every chunk is registered with one piece per change; a batch's pieces are done when the
    // batch is delivered or dead-lettered.
    let mut outcomes = Outcomes {
        ledger: Ledger::new(),
        failure: None,
        abandoned: false,
    };
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
                    Some(chunk) if unsendable(&chunk, cfg.contract).is_some() => {
                        // Nothing of the chunk is sent: the checkpoint stays before it, and
                        // must_stop() below ends the loop.
                        let e = unsendable(&chunk, cfg.contract).expect("checked by the guard");
                        outcomes.failure.get_or_insert(e);
                    }
                    Some(chunk) => {
                        let chunk = std::sync::Arc::new(chunk);
                        let ticket = outcomes.ledger.register(Mark::of(&chunk), chunk.changes.len());
                        for c in &chunk.changes {
                            let lane = lane_of(&c.entity, lane_key(&chunk, c), lanes);
                            let b = &mut builders[lane];
                            // An operation that would take the batch past batch_bytes travels
                            // in a batch of its own: the batch before it closes first.
                            if !b.is_empty() && b.bytes + c.line.len() > cfg.batch_bytes {
                                dispatch(b, &envelope, &lane_txs[lane], &mut res_rx, &mut outcomes).await;
                            }
                            b.push(&chunk, ticket, c);
                            if b.count >= cfg.batch_rows || b.bytes >= cfg.batch_bytes {
                                dispatch(b, &envelope, &lane_txs[lane], &mut res_rx, &mut outcomes).await;
                            }
                        }
                    }
                    None => {
                        input_open = false;
                        for (i, b) in builders.iter_mut().enumerate() {
                            if !b.is_empty() {
                                dispatch(b, &envelope, &lane_txs[i], &mut res_rx, &mut outcomes).await;
                            }
                        }
                    }
                }
            }
            res = res_rx.recv() => {
                let Some(res) = res else { break };
                outcomes.record(res);
            }
            _ = sleep_until(deadline) => {
                let now = tokio::time::Instant::now().into_std();
                for (i, b) in builders.iter_mut().enumerate() {
                    if b.opened.is_some_and(|t| t + cfg.linger <= now) {
                        dispatch(b, &envelope, &lane_txs[i], &mut res_rx, &mut outcomes).await;
                    }
                }
            }
        }
        // Acknowledge, in order, every chunk with nothing unhandled at or before it.
        while let Some(ack) = outcomes.ledger.pop_ready() {
            if acks.send(ack).await.is_err() {
                return Ok(());
            }
        }
        if outcomes.must_stop() {
            // What is not acknowledged stays behind the checkpoint and is sent again later.
            break;
        }
        if !input_open && outcomes.ledger.is_settled() {
            break;
        }
    }
    drop(lane_txs);
    match outcomes.failure {
        Some(e) => Err(e),
        None => Ok(()),
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
    envelope: &Envelope,
    lane: &mpsc::Sender<Batch>,
    results: &mut mpsc::Receiver<LaneResult>,
    outcomes: &mut Outcomes,
) {
    let batch = builder.finish(envelope);
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
                Some(r) => outcomes.record(r),
                None => return,
            },
        }
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
