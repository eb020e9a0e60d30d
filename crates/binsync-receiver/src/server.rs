//! HTTP/1 for the receiver: accept loop, one task per connection, routes, and the POST path
//! (authorization, headers, size limit, faults, gunzip, depth limit, parse, apply and commit,
//! answer).
//!
//! With TLS files (`--tls-cert/--tls-key`) every connection goes through the TLS handshake
//! first (bounded by `TLS_HANDSHAKE`), then the same HTTP/1.
//!
//! Routes: `POST <any other path>` takes a batch; `GET /stats` and `GET /healthz` are open
//! (no authorization: counters only).
//!
//! Shutdown: the accept loop stops, every connection finishes its request in flight and
//! closes (a hanging fault gives up at once), then the store is closed. Connections still
//! open after `DRAIN_TIMEOUT` are cut.

use std::convert::Infallible;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::batch;
use crate::store::{Applied, Store};
use crate::{Fault, ReceiveError, ReceiveOptions, BODY_MEMORY};

/// How long a hanging fault keeps the request unanswered.
const HANG: Duration = Duration::from_secs(60);
/// How long shutdown waits for connections to finish their request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's header read timeout, which also closes idle keep-alive connections: longer than
/// clients keep idle connections pooled (binsync 60 s, reqwest's default 90 s), so that a
/// client never sends on a connection this side is closing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Open connections at once; the accept loop waits beyond it.
const MAX_CONNECTIONS: usize = 1024;
/// How long a client may take over the TLS handshake (https only).
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

type Answer = Response<Full<Bytes>>;

struct Shared {
    store: Store,
    auth: Option<String>,
    fault_rate: f64,
    faults: Vec<Fault>,
    reject_containing: Option<String>,
    max_body_bytes: usize,
    max_depth: usize,
    /// Bodies read, parsed and applied at once (each may take twice `max_body_bytes`).
    bodies: Arc<Semaphore>,
    bodies_at_once: u32,
    stop: watch::Receiver<bool>,
}

pub(super) async fn run(
    listener: TcpListener,
    opts: ReceiveOptions,
    tls: Option<TlsAcceptor>,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiveError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let bodies_at_once =
        (BODY_MEMORY / opts.max_body_bytes.saturating_mul(2).max(1)).clamp(1, 4) as u32;
    let shared = Arc::new(Shared {
        store,
        auth: opts.auth,
        fault_rate: opts.fault_rate,
        faults: opts.faults,
        reject_containing: opts.reject_containing,
        max_body_bytes: opts.max_body_bytes,
        max_depth: opts.max_depth,
        bodies: Arc::new(Semaphore::new(bodies_at_once as usize)),
        bodies_at_once,
        stop: stop_rx,
    });
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            permit = connections.clone().acquire_owned() => {
                let permit = permit.expect("never closed");
                tokio::select! {
                    () = &mut shutdown => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let shared = shared.clone();
                            let tls = tls.clone();
                            tasks.spawn(async move {
                                let _ = stream.set_nodelay(true);
                                match tls {
                                    None => connection(shared, stream, peer).await,
                                    Some(tls) => {
                                        match tokio::time::timeout(TLS_HANDSHAKE, tls.accept(stream)).await {
                                            Ok(Ok(stream)) => connection(shared, stream, peer).await,
                                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                            Err(_) => tracing::debug!(%peer, "no TLS handshake within {TLS_HANDSHAKE:?}"),
                                        }
                                    }
                                }
                                drop(permit);
                            });
                        }
                        // Out of file descriptors and the like: pause instead of spinning.
                        Err(e) => {
                            tracing::warn!(error = %e, "accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }
    }
    drop(listener);
    tracing::info!("receiver stopping: finishing requests in flight");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still busy after {DRAIN_TIMEOUT:?}; cutting them");
        tasks.shutdown().await;
    }
    // Applies whose request was cut still hold a body permit until their transaction ends:
    // taking every permit waits for them.
    let all = shared
        .bodies
        .acquire_many(shared.bodies_at_once)
        .await
        .expect("never closed");
    drop(all);
    // Close the database and release the state dir's lock now, not whenever the last clone
    // goes, so that `dump` works as soon as this returns.
    match Arc::try_unwrap(shared) {
        Ok(shared) => shared.store.close()?,
        Err(shared) => {
            tracing::warn!("receiver state still referenced at shutdown");
            shared.store.save_counters()?;
        }
    }
    Ok(())
}

/// HTTP/1 on one connection, plain or inside TLS.
async fn connection<S>(shared: Arc<Shared>, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A `drop` fault asks for the connection to be closed without an answer.
    let cut = Arc::new(Notify::new());
    let mut stop = shared.stop.clone();
    let service = {
        let cut = cut.clone();
        service_fn(move |req| handle(shared.clone(), cut.clone(), req))
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = cut.notified() => return,
            _ = stop.wait_for(|s| *s), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    cut: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let path = req.uri().path();
    let answer = match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/stats") => json(
            StatusCode::OK,
            &serde_json::to_value(shared.store.stats()).expect("plain struct serializes"),
        ),
        (_, "/healthz" | "/stats") => not_allowed("GET"),
        (&Method::POST, _) => match post(&shared, req).await {
            Reply::Answer(a) => a,
            Reply::Cut => {
                // Close without answering: the connection task drops this future with it.
                cut.notify_one();
                std::future::pending::<()>().await;
                unreachable!("pending never completes")
            }
        },
        _ => not_allowed("POST"),
    };
    Ok(answer)
}

enum Reply {
    Answer(Answer),
    /// Close the connection without a response.
    Cut,
}

enum Encoding {
    Identity,
    Gzip,
}

async fn post(shared: &Arc<Shared>, req: Request<Incoming>) -> Reply {
    let started = Instant::now();
    let headers = req.headers();
    let batch_header = header_text(headers, "idempotency-key")
        .unwrap_or("-")
        .to_string();
    let refuse = |status: StatusCode, reason: String| {
        tracing::info!(batch_id = %batch_header, status = status.as_u16(), %reason, "batch rejected");
        shared.store.count(|s| s.rejected += 1);
        Reply::Answer(error(status, &reason))
    };

    if let Some(expected) = &shared.auth {
        let given = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if !given.is_some_and(|g| same_secret(g, expected.as_bytes())) {
            let reason = if given.is_some() {
                "the Authorization header does not match the value this receiver expects"
            } else {
                "this receiver requires an Authorization header"
            };
            return refuse(StatusCode::UNAUTHORIZED, reason.into());
        }
    }
    let content_type = header_text(headers, "content-type").unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, not `{content_type}`"),
        );
    }
    let encoding = match header_text(headers, "content-encoding").map(str::trim) {
        None | Some("") => Encoding::Identity,
        Some(e) if e.eq_ignore_ascii_case("identity") => Encoding::Identity,
        Some(e) if e.eq_ignore_ascii_case("gzip") => Encoding::Gzip,
        Some(other) => {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding `{other}` is not supported: send gzip or nothing"),
            )
        }
    };
    // Checked against the body's `version` once it is parsed: the two must say the same.
    let contract = match header_text(headers, "x-binsync-contract").map(str::trim) {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if batch::CONTRACT_VERSIONS.contains(&n) => Some(n),
            _ => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("X-Binsync-Contract `{v}` is not supported: this receiver implements contracts 1, 2 and 3"),
                )
            }
        },
    };
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) => Some(k.to_string()),
            Err(_) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "the Idempotency-Key header is not ASCII text".into(),
                )
            }
        },
    };
    let limit = shared.max_body_bytes;
    let declared = header_text(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large(limit));
    }

    let Ok(permit) = shared.bodies.clone().acquire_owned().await else {
        return Reply::Answer(error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
    };
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large(limit))
        }
        Err(e) => {
            // The sender went away mid-body: there is nobody to answer.
            tracing::debug!(batch_id = %batch_header, error = %e, "request body not received");
            return Reply::Cut;
        }
    };

    if let Some(fault) = shared.roll_fault() {
        drop(permit);
        shared.store.count(|s| s.faults_injected += 1);
        tracing::info!(batch_id = %batch_header, %fault, "injecting a fault");
        return match fault {
            Fault::Status500 => Reply::Answer(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected fault: 500",
            )),
            Fault::Status429 => {
                let mut a = error(StatusCode::TOO_MANY_REQUESTS, "injected fault: 429");
                a.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                Reply::Answer(a)
            }
            Fault::Hang => {
                let mut stop = shared.stop.clone();
                tokio::select! {
                    () = tokio::time::sleep(HANG) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                Reply::Cut
            }
            Fault::Drop => Reply::Cut,
        };
    }

    let work = shared.clone();
    let processed = tokio::task::spawn_blocking(move || {
        let r = process(&work, &body, encoding, idempotency_key.as_deref(), contract);
        // Release in this order: shutdown takes every permit to know no apply holds the store.
        drop(work);
        drop(permit);
        r
    })
    .await;
    let outcome = match processed {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(ReceiveError::Internal(format!("applying a batch: {e}"))),
    };
    match outcome {
        // Committed (durably) before `process` returned.
        Outcome::Done {
            batch_id,
            count,
            applied,
        } => {
            tracing::debug!(
                %batch_id, ops = count, applied = applied.applied, stale = applied.stale,
                duplicate = applied.duplicate, ms = started.elapsed().as_millis() as u64,
                "batch applied"
            );
            Reply::Answer(json(
                StatusCode::OK,
                &serde_json::json!({
                    "batch_id": batch_id,
                    "applied": applied.applied,
                    "stale": applied.stale,
                    "duplicate": applied.duplicate,
                }),
            ))
        }
        Outcome::Refused(status, reason) => refuse(status, reason),
        Outcome::Failed(e) => {
            tracing::error!(batch_id = %batch_header, error = %e, "cannot apply the batch");
            Reply::Answer(error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
        }
    }
}

enum Outcome {
    Done {
        batch_id: String,
        count: u64,
        applied: Applied,
    },
    /// A 4xx: the batch is wrong and will stay wrong.
    Refused(StatusCode, String),
    /// A 5xx: the receiver failed; a retry may succeed.
    Failed(ReceiveError),
}

/// Gunzip, check the limits, parse, check, apply and commit: the CPU- and disk-bound part, on
/// a blocking thread. Everything refused is refused before the store is touched. `contract`
/// is the `X-Binsync-Contract` header's version, when sent.
fn process(
    shared: &Shared,
    body: &[u8],
    encoding: Encoding,
    key: Option<&str>,
    contract: Option<u64>,
) -> Outcome {
    let limit = shared.max_body_bytes;
    let inflated;
    let text: &[u8] = match encoding {
        Encoding::Identity => body,
        Encoding::Gzip => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
            let read = flate2::read::MultiGzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out);
            match read {
                Ok(n) if n > limit => {
                    return Outcome::Refused(StatusCode::PAYLOAD_TOO_LARGE, too_large(limit))
                }
                Ok(_) => {}
                Err(e) => {
                    return Outcome::Refused(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "the body is marked Content-Encoding: gzip but does not gunzip: {e}"
                        ),
                    )
                }
            }
            inflated = out;
            &inflated
        }
    };
    // Before any parser recurses into the body; in `discard` mode too, so that a sender
    // tested against it meets the same limits.
    if let Err(invalid) = batch::check_depth(text, shared.max_depth) {
        return Outcome::Refused(StatusCode::BAD_REQUEST, invalid.0);
    }
    if shared.store.is_discarding() && shared.reject_containing.is_none() {
        return discard(shared, text, contract);
    }
    let batch = match batch::parse(text, key) {
        Ok(b) => b,
        Err(invalid) => return Outcome::Refused(StatusCode::BAD_REQUEST, invalid.0),
    };
    if let Some(refused) = contract_mismatch(contract, batch.version) {
        return refused;
    }
    if let Some(marker) = &shared.reject_containing {
        for (entity, ops) in &batch.entities {
            if let Some(op) = ops.iter().find(|op| op.text.contains(marker.as_str())) {
                return Outcome::Refused(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "poisoned batch: operation seq {} of entity type `{entity}` contains `{marker}` (receiver started with --reject-containing)",
                        op.seq
                    ),
                );
            }
        }
    }
    match shared.store.apply(&batch) {
        Ok(applied) => Outcome::Done {
            batch_id: batch.batch_id.into_owned(),
            count: batch.count,
            applied,
        },
        Err(e) => Outcome::Failed(e),
    }
}

/// `--discard` (benchmarks): the whole body read by serde_json ([`crate::discard`]: strict
/// JSON, the envelope's version and count), no per-operation checks, nothing stored.
fn discard(shared: &Shared, text: &[u8], contract: Option<u64>) -> Outcome {
    match crate::discard::envelope(text) {
        Ok(e) if batch::CONTRACT_VERSIONS.contains(&e.version) && e.count >= 1 => {
            if let Some(refused) = contract_mismatch(contract, e.version) {
                return refused;
            }
            shared.store.count(|st| {
                st.batches += 1;
                st.ops_received += e.count;
            });
            Outcome::Done {
                batch_id: e.batch_id.into_owned(),
                count: e.count,
                applied: Applied::default(),
            }
        }
        Ok(_) => Outcome::Refused(
            StatusCode::BAD_REQUEST,
            "not a contract 1 or 2 batch".into(),
        ),
        Err(e) => Outcome::Refused(StatusCode::BAD_REQUEST, format!("not a JSON batch: {e}")),
    }
}

/// A header that names another version than the body's: the sender built one and labelled
/// it as the other, so which it meant cannot be told.
fn contract_mismatch(header: Option<u64>, body: u64) -> Option<Outcome> {
    let header = header.filter(|&h| h != body)?;
    Some(Outcome::Refused(
        StatusCode::BAD_REQUEST,
        format!("the X-Binsync-Contract header says {header} but the body's version is {body}; they must be equal"),
    ))
}

impl Shared {
    fn roll_fault(&self) -> Option<Fault> {
        if self.faults.is_empty() || self.fault_rate <= 0.0 {
            return None;
        }
        if fastrand::f64() < self.fault_rate {
            Some(self.faults[fastrand::usize(..self.faults.len())])
        } else {
            None
        }
    }
}

/// Compares without an early exit on the first differing byte.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn too_large(limit: usize) -> String {
    let size = if limit.is_multiple_of(1 << 20) {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{limit} bytes")
    };
    format!(
        "the body exceeds {size} (--max-body-bytes {limit}; after gunzip too): send smaller batches (batch_bytes), or, for a single row this large, start the receiver with a higher --max-body-bytes"
    )
}

fn text(status: StatusCode, body: &'static str) -> Answer {
    let mut a = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *a.status_mut() = status;
    a.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    a
}

fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
    let mut a = Response::new(Full::new(Bytes::from(value.to_string())));
    *a.status_mut() = status;
    a.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    a
}

fn error(status: StatusCode, reason: &str) -> Answer {
    json(status, &serde_json::json!({ "error": reason }))
}

fn not_allowed(allow: &'static str) -> Answer {
    let mut a = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    a.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"Bearer x", b"Bearer x"));
        assert!(!same_secret(b"Bearer y", b"Bearer x"));
        assert!(!same_secret(b"Bearer", b"Bearer x"));
    }
}
