//! Which HTTP outcomes are retried, and for how long to wait.
//!
//! 2xx: delivered. 408, 429, 5xx, timeouts, connection errors: retry the same batch (same
//! Idempotency-Key) after a capped, jittered backoff ([`Backoff`]), or after `Retry-After` when
//! the receiver names a time. Any other status: rejected (dead letter). A failed TLS handshake
//! (an untrusted certificate, one for another host): settled at once, for a person to fix.
//! Retriable outcomes are handled here, by [`settle`], and never leave the sink as errors.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backoff::{sleep_unless_stopped, Backoff};
use crate::shutdown::Shutdown;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry { after: Option<Duration> },
    Reject,
}

/// The longest `Retry-After` we honor; a receiver asking for more gets polled at this pace.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

pub fn classify(status: u16, retry_after: Option<&str>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry {
            after: retry_after
                .and_then(parse_retry_after)
                .map(|d| d.min(MAX_RETRY_AFTER)),
        },
        _ => Verdict::Reject,
    }
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Response {
        status: u16,
        retry_after: Option<String>,
        /// The response body (first 64 KiB) when the request was not delivered.
        body: String,
    },
    /// No response: a timeout, a refused or broken connection (the error chain).
    NoResponse(String),
    /// The TLS handshake failed on the receiver's certificate or settings (what and the fix):
    /// retrying cannot change that, a person must.
    Tls(String),
}

/// How the attempts at one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    /// A status that no retry can change.
    Rejected {
        status: u16,
        body: String,
    },
    /// `max_retries` retriable outcomes in a row; the last status, if there was a response.
    Exhausted {
        status: Option<u16>,
        detail: String,
    },
    /// Shutdown came while waiting to retry: not delivered.
    Abandoned,
    /// No TLS connection could be made (see [`Attempt::Tls`]).
    Tls(String),
}

/// Makes attempts at request `id` until it is settled: each retriable outcome waits for the
/// receiver's `Retry-After`, else for the backoff; a shutdown cuts the wait short. Every retry
/// counts towards `max_retries` (None: retry forever).
pub async fn settle<F, Fut>(
    id: &str,
    max_retries: Option<u32>,
    shutdown: &mut Shutdown,
    mut attempt: F,
) -> Settled
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt>,
{
    let mut backoff = Backoff::new();
    loop {
        let (after, status, detail) = match attempt().await {
            Attempt::Response {
                status,
                retry_after,
                body,
            } => match classify(status, retry_after.as_deref()) {
                Verdict::Delivered => {
                    if backoff.attempts() > 0 {
                        tracing::info!(batch = %id, retries = backoff.attempts(), "batch delivered after retries");
                    }
                    return Settled::Delivered;
                }
                Verdict::Reject => return Settled::Rejected { status, body },
                Verdict::Retry { after } => (after, Some(status), body),
            },
            Attempt::NoResponse(e) => (None, None, e),
            Attempt::Tls(e) => return Settled::Tls(e),
        };
        if max_retries.is_some_and(|m| backoff.attempts() >= m) {
            tracing::warn!(batch = %id, "retries exhausted");
            return Settled::Exhausted { status, detail };
        }
        // A retry paced by `Retry-After` still counts (and lengthens the next backoff).
        let backoff_delay = backoff.next_delay();
        let delay = after.unwrap_or(backoff_delay);
        crate::metrics::sink_retry(status);
        let what = status.map_or_else(|| detail.clone(), |s| format!("HTTP {s}"));
        tracing::warn!(batch = %id, attempt = backoff.attempts(), retry_in = %crate::units::duration(delay), error = %what, "sync API did not take the batch; retrying");
        if !sleep_unless_stopped(delay, shutdown).await {
            return Settled::Abandoned;
        }
    }
}

/// `Retry-After: 120` or `Retry-After: Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
fn parse_http_date(v: &str) -> Option<u64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as i64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<i64> = parts[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    // Days from civil (H. Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(classify(200, None), Verdict::Delivered);
        assert_eq!(classify(204, None), Verdict::Delivered);
        assert_eq!(classify(500, None), Verdict::Retry { after: None });
        assert_eq!(
            classify(503, Some("7")),
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(429, Some("99999")),
            Verdict::Retry {
                after: Some(MAX_RETRY_AFTER)
            }
        );
        assert_eq!(classify(408, None), Verdict::Retry { after: None });
        assert_eq!(classify(400, None), Verdict::Reject);
        assert_eq!(classify(404, None), Verdict::Reject);
        assert_eq!(classify(301, None), Verdict::Reject);
    }

    fn status(status: u16, retry_after: Option<&str>) -> Attempt {
        Attempt::Response {
            status,
            retry_after: retry_after.map(str::to_string),
            body: format!("body {status}"),
        }
    }

    /// Settles against canned outcomes; returns how it ended and when each attempt was made
    /// (since the start, on tokio's paused clock).
    async fn settle_with(
        outcomes: Vec<Attempt>,
        max_retries: Option<u32>,
        shutdown: &mut Shutdown,
    ) -> (Settled, Vec<Duration>) {
        let start = tokio::time::Instant::now();
        let mut outcomes = outcomes.into_iter();
        let mut at = Vec::new();
        let settled = settle("b-1-2", max_retries, shutdown, || {
            at.push(start.elapsed());
            let next = outcomes.next().expect("no more attempts than outcomes");
            async move { next }
        })
        .await;
        (settled, at)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_for_retry_after_else_the_backoff() {
        let (settled, at) = settle_with(
            vec![
                status(503, Some("7")),
                Attempt::NoResponse("connection refused".into()),
                status(500, None),
                status(429, None),
                status(200, None),
            ],
            None,
            &mut Shutdown::never(),
        )
        .await;
        assert_eq!(settled, Settled::Delivered);
        assert_eq!(at.len(), 5);
        assert_eq!(at[0], Duration::ZERO, "the first attempt does not wait");
        assert_eq!(at[1], Duration::from_secs(7), "Retry-After, exactly");
        // Then the backoff: its ceiling doubles per retry (the Retry-After one counted).
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        for (gap, ceiling_ms) in gaps[1..].iter().zip([200, 400, 800]) {
            assert!(
                *gap >= Duration::from_millis(50) && *gap <= Duration::from_millis(ceiling_ms),
                "{gap:?} not in 50ms..={ceiling_ms}ms"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_is_final_at_once() {
        let (settled, at) =
            settle_with(vec![status(400, None)], None, &mut Shutdown::never()).await;
        assert_eq!(
            settled,
            Settled::Rejected {
                status: 400,
                body: "body 400".into()
            }
        );
        assert_eq!(at, vec![Duration::ZERO]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_tls_handshake_is_final_at_once() {
        let (settled, at) = settle_with(
            vec![Attempt::Tls("UnknownIssuer; pass --sink-ca".into())],
            None,
            &mut Shutdown::never(),
        )
        .await;
        assert_eq!(
            settled,
            Settled::Tls("UnknownIssuer; pass --sink-ca".into())
        );
        assert_eq!(at, vec![Duration::ZERO]);
    }

    #[tokio::test(start_paused = true)]
    async fn max_retries_counts_retries_after_the_first_attempt() {
        let (settled, at) = settle_with(
            vec![
                status(500, None),
                status(503, Some("1")),
                Attempt::NoResponse("timed out".into()),
            ],
            Some(2),
            &mut Shutdown::never(),
        )
        .await;
        assert_eq!(
            settled,
            Settled::Exhausted {
                status: None,
                detail: "timed out".into()
            }
        );
        assert_eq!(at.len(), 3, "one attempt and two retries");
        let (settled, _) =
            settle_with(vec![status(502, None)], Some(0), &mut Shutdown::never()).await;
        assert_eq!(
            settled,
            Settled::Exhausted {
                status: Some(502),
                detail: "body 502".into()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cuts_a_retry_wait_short() {
        let (trigger, mut shutdown) = crate::shutdown::channel();
        let start = tokio::time::Instant::now();
        let stop_in_a_second = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            trigger.fire();
        };
        let ((settled, at), ()) = tokio::join!(
            settle_with(
                vec![status(503, Some("300")), status(200, None)],
                None,
                &mut shutdown,
            ),
            stop_in_a_second
        );
        assert_eq!(settled, Settled::Abandoned);
        assert_eq!(at.len(), 1, "no attempt after the stop");
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // Already stopped: the first retriable outcome ends it without waiting.
        let start = tokio::time::Instant::now();
        let (settled, _) = settle_with(vec![status(500, None)], None, &mut shutdown).await;
        assert_eq!(settled, Settled::Abandoned);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
