//! `--metrics-listen ADDR`: an HTTP/1 endpoint (hyper, as the reference receiver serves) with
//! three routes, all GET (or HEAD), none behind authorization (counts and states only):
//!
//! - `/metrics`: Prometheus text (version 0.0.4), rendered by the exporter's handle from the
//!   recorder this installs; what [`super`] keeps in atomics is copied in first.
//! - `/healthz`: 200 `ok` while the process and its stages run (also while it reaches the
//!   source at start-up); 503 and the reason once a stage has ended, while binsync waits
//!   for disk space, or while it stops.
//! - `/readyz`: 200 `ready` when healthy, connected to the source, and the lag is at most
//!   `--ready-max-lag`; else 503 with a one-line reason.
//!
//! The listener is bound before binsync reaches the source: a bind failure is a definite
//! error at start ([`MetricsError::Bind`]). The endpoint runs until the process ends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use super::MetricsSettings;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on --metrics-listen {addr}: {detail}; pick a free address and port (or stop what listens there)")]
    Bind { addr: SocketAddr, detail: String },
    #[error(
        "cannot set up the metrics recorder: {0} (this is a bug in binsync: please report it)"
    )]
    Recorder(String),
}

/// Buckets of the latency histogram, in seconds: 1 ms to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of the batch size histogram, in operations.
const ROWS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Binds `settings.listen` (when set), installs the recorder, and serves until the process
/// ends. Returns the address bound (port 0 picks one).
pub async fn start(settings: &MetricsSettings) -> Result<Option<SocketAddr>, MetricsError> {
    let Some(addr) = settings.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| MetricsError::Bind {
            addr,
            detail: e.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|e| MetricsError::Bind {
        addr,
        detail: e.to_string(),
    })?;
    let handle = install()?;
    let max_lag = settings.ready_max_lag;
    tokio::spawn(accept_loop(listener, handle, max_lag));
    tracing::info!(listen = %bound, "metrics at http://{bound}/metrics (and /healthz, /readyz)");
    Ok(Some(bound))
}

/// The recorder every `::metrics` call in the process goes to from now on.
fn install() -> Result<PrometheusHandle, MetricsError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(super::BATCH_DELIVERY_SECONDS.into()),
            SECONDS_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(super::BATCH_ROWS.into()), ROWS_BUCKETS)
        })
        .map_err(|e| MetricsError::Recorder(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|e| MetricsError::Recorder(e.to_string()))?;
    super::describe();
    Ok(handle)
}

async fn accept_loop(listener: TcpListener, handle: PrometheusHandle, max_lag: Duration) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::debug!(error = %e, "metrics endpoint: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(answer(&handle, max_lag, &req)) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(
    handle: &PrometheusHandle,
    max_lag: Duration,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {
            super::export();
            handle.run_upkeep();
            let mut r = text(StatusCode::OK, handle.render());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => match super::unhealthy() {
            None => text(StatusCode::OK, "ok\n".into()),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        "/readyz" => match super::not_ready(max_lag) {
            None => text(StatusCode::OK, "ready\n".into()),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: GET /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
