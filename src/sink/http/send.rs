//! One lane of the sync API sink: POST a batch until it is settled (delivered, rejected, or
//! given up), keep what will not be delivered in the dead-letter queue, and report back.
//! Also `binsync dlq replay`, which sends dead letters again through the same request code.

use tokio::sync::mpsc;

use super::batch::Batch;
use super::{HttpConfig, OnReject};
use crate::dlq::{DeadLetter, Dlq};
use crate::json::now_unix_ms;
use crate::shutdown::Shutdown;
use crate::sink::ledger::Pieces;
use crate::sink::retry::{settle, Attempt, Outage, Settled};
use crate::sink::SinkError;

/// How one batch ended.
pub(super) enum Handled {
    Delivered,
    DeadLettered,
    /// `--on-reject stop`, or the DLQ could not be written.
    Failed(SinkError),
    /// Shutdown while retrying: not delivered, the checkpoint stays before it.
    Abandoned,
}

pub(super) struct LaneResult {
    /// The lane that sent it: its slot is free again.
    pub lane: usize,
    pub pieces: Pieces,
    pub handled: Handled,
}

/// What every lane of a sink shares.
#[derive(Clone)]
pub(super) struct LaneContext {
    pub client: reqwest::Client,
    pub cfg: HttpConfig,
    pub dlq: Dlq,
    /// One receiver outage is one, however many lanes retry through it.
    pub outage: Outage,
    pub shutdown: Shutdown,
}

/// Sends lane `index`'s batches one at a time.
pub(super) async fn lane(
    index: usize,
    mut cx: LaneContext,
    mut rx: mpsc::Receiver<Batch>,
    results: mpsc::Sender<LaneResult>,
) {
    while let Some(batch) = rx.recv().await {
        let in_flight = crate::metrics::batch_sending(batch.count);
        let handled = deliver(
            &cx.client,
            &cx.cfg,
            &cx.dlq,
            &batch,
            &cx.outage,
            &mut cx.shutdown,
        )
        .await;
        if matches!(handled, Handled::Delivered) {
            in_flight.delivered();
        }
        let last = matches!(handled, Handled::Abandoned | Handled::Failed(_));
        if results
            .send(LaneResult {
                lane: index,
                pieces: batch.pieces,
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
        .header("X-Binsync-Contract", batch.contract.to_string());
    // Set for bodies in parts too (streamed), so that no receiver sees a chunked upload.
    req = req.header("Content-Length", body.len());
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
            let body = if (200..300).contains(&status) {
                String::new()
            } else {
                let mut t = resp.text().await.unwrap_or_default();
                t.truncate(64 * 1024);
                t
            };
            Attempt::Response {
                status,
                retry_after,
                body,
            }
        }
        Err(e) => match rustls_error(&e) {
            Some(tls) => Attempt::Tls(cfg.tls_failure(tls)),
            None => Attempt::NoResponse(error_chain(&e)),
        },
    }
}

/// The rustls error somewhere in `e`'s chain, if the request failed in the TLS handshake. It
/// sits inside I/O errors (hyper-util wraps tokio-rustls's), whose own `source` skips what they
/// wrap, so each one is opened with `get_ref`.
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

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
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
    outage: &Outage,
    shutdown: &mut Shutdown,
) -> Handled {
    let body = match bytes_body::Body::new(&batch.body, cfg.gzip) {
        Ok(b) => b,
        Err(e) => {
            return Handled::Failed(SinkError::Gzip {
                batch: batch.id.clone(),
                detail: e.to_string(),
            })
        }
    };
    let settled = settle(&batch.id, cfg.max_retries, outage, shutdown, || {
        post(client, cfg, batch, &body)
    })
    .await;
    let stop = cfg.on_reject == OnReject::Stop;
    match settled {
        Settled::Delivered => {
            tracing::debug!(batch = %batch.id, changes = batch.count, seq = %format!("{}..{}", batch.min_seq, batch.max_seq), "batch delivered");
            Handled::Delivered
        }
        Settled::Rejected { status, body } if stop => Handled::Failed(SinkError::Rejected {
            batch: batch.id.clone(),
            status,
            detail: body,
        }),
        Settled::Rejected { status, body } => {
            dead_letter(cfg, dlq, batch, Some(status), body).await
        }
        Settled::Exhausted { status, detail } if stop => {
            Handled::Failed(SinkError::RetriesExhausted {
                batch: batch.id.clone(),
                retries: cfg.max_retries.unwrap_or_default(),
                last: status.map_or(detail.clone(), |s| format!("HTTP {s}: {detail}")),
            })
        }
        Settled::Exhausted { status, detail } => {
            let detail = format!("retries exhausted; last: {detail}");
            dead_letter(cfg, dlq, batch, status, detail).await
        }
        Settled::Abandoned => Handled::Abandoned,
        Settled::Tls(detail) => Handled::Failed(SinkError::Tls {
            url: cfg.url.clone(),
            detail,
        }),
    }
}

/// Keeps a batch that will not be delivered in the dead-letter queue, durably, before it
/// counts as handled.
async fn dead_letter(
    cfg: &HttpConfig,
    dlq: &Dlq,
    batch: &Batch,
    status: Option<u16>,
    detail: String,
) -> Handled {
    let status_text = status.map_or_else(|| "no response".to_string(), |s| format!("HTTP {s}"));
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
        payload: String::from_utf8_lossy(&batch.body.to_vec()).into_owned(),
    };
    match dlq.push(entry).await {
        Ok(id) => {
            tracing::error!(batch = %batch.id, dead_letter = id, status = %status_text, "sync API rejected the batch; kept in the dead-letter queue (binsync dlq show {id})");
            Handled::DeadLettered
        }
        Err(e) => Handled::Failed(SinkError::Dlq(e)),
    }
}

/// POST bodies, gzipped once and shared by every retry.
mod bytes_body {
    use std::io::Write;

    use super::super::batch::Payload;

    #[derive(Clone)]
    pub struct Body(Payload);

    impl Body {
        pub fn new(raw: &Payload, gzip: bool) -> std::io::Result<Body> {
            if !gzip {
                return Ok(Body(raw.clone()));
            }
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for part in raw.parts() {
                enc.write_all(part)?;
            }
            Ok(Body(enc.finish()?.into()))
        }

        pub fn len(&self) -> usize {
            self.0.len()
        }

        pub fn into_reqwest(self) -> reqwest::Body {
            match self.0.parts() {
                [one] => reqwest::Body::from(one.clone()),
                parts => {
                    let parts: Vec<_> =
                        parts.iter().cloned().map(Ok::<_, std::io::Error>).collect();
                    reqwest::Body::wrap_stream(futures_util::stream::iter(parts))
                }
            }
        }
    }
}

/// The `version` a stored body was written with. Every body binsync writes starts with it
/// (`{"version":N,`); a dead letter from before contract v2 says 1 like every body then, so
/// 1 is also what an unreadable prefix means.
fn body_version(payload: &str) -> u8 {
    payload
        .strip_prefix("{\"version\":")
        .map(|rest| {
            rest.bytes()
                .take_while(u8::is_ascii_digit)
                .collect::<Vec<u8>>()
        })
        .and_then(|digits| std::str::from_utf8(&digits).ok()?.parse().ok())
        .unwrap_or(1)
}

/// Re-sends dead letters (`binsync dlq replay`): one attempt each; accepted entries are removed.
pub async fn replay_dead_letters(
    cfg: &HttpConfig,
    dlq: &Dlq,
    ids: Option<&[u64]>,
) -> Result<(usize, usize), SinkError> {
    let client = cfg.client()?;
    let entries = dlq.list()?;
    let (mut ok, mut failed) = (0, 0);
    for entry in entries
        .into_iter()
        .filter(|e| ids.is_none_or(|ids| ids.contains(&e.id)))
    {
        let batch = Batch {
            id: entry.batch_id.clone(),
            // The version it was written with, whatever this run would write now.
            contract: body_version(&entry.payload),
            body: entry.payload.clone().into_bytes().into(),
            count: entry.count,
            min_seq: entry.first_seq,
            max_seq: entry.last_seq,
            pieces: Pieces::default(),
        };
        let body = bytes_body::Body::new(&batch.body, cfg.gzip).map_err(|e| SinkError::Gzip {
            batch: batch.id.clone(),
            detail: e.to_string(),
        })?;
        match post(&client, cfg, &batch, &body).await {
            Attempt::Response { status, .. } if (200..300).contains(&status) => {
                dlq.remove(entry.id).await?;
                println!(
                    "dead letter {}: delivered ({} changes), removed",
                    entry.id, entry.count
                );
                ok += 1;
            }
            Attempt::Response { status, body, .. } => {
                println!(
                    "dead letter {}: HTTP {status}: {}",
                    entry.id,
                    body.lines().next().unwrap_or("")
                );
                failed += 1;
            }
            Attempt::NoResponse(e) | Attempt::Tls(e) => {
                println!("dead letter {}: {e}", entry.id);
                failed += 1;
            }
        }
    }
    Ok((ok, failed))
}
