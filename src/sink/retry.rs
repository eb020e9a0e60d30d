//! Which HTTP outcomes are retried, and for how long to wait.
//!
//! 2xx: delivered. 408, 429, 5xx, timeouts, connection errors: retry the same batch (same
//! Idempotency-Key) after a capped, jittered backoff ([`Backoff`]), or after `Retry-After` when
//! the receiver names a time. Any other status: rejected (dead letter). A failed TLS handshake
//! (an untrusted certificate, one for another host): settled at once, for a person to fix.
//! Retriable outcomes are handled here, by [`settle`], and never leave the sink as errors.
//!
//! An operator reads a receiver's outage as two lines, however many batches and retries it
//! takes ([`Outage`]): one WARN when the first batch is not taken (the cause, and that batches
//! are held and retried), one INFO once every batch held by it is settled (how long, how many
//! batches and retries, whether all were delivered). Each retry is logged at debug level.

use std::future::Future;
use std::sync::{Arc, Mutex};
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
/// counts towards `max_retries` (None: retry forever), and is reported to `outage`.
pub async fn settle<F, Fut>(
    id: &str,
    max_retries: Option<u32>,
    outage: &Outage,
    shutdown: &mut Shutdown,
    mut attempt: F,
) -> Settled
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt>,
{
    let mut backoff = Backoff::new();
    let mut retries = 0u32;
    let settled = loop {
        let (after, status, detail) = match attempt().await {
            Attempt::Response {
                status,
                retry_after,
                body,
            } => match classify(status, retry_after.as_deref()) {
                Verdict::Delivered => break Settled::Delivered,
                Verdict::Reject => break Settled::Rejected { status, body },
                Verdict::Retry { after } => (after, Some(status), body),
            },
            Attempt::NoResponse(e) => (None, None, e),
            Attempt::Tls(e) => break Settled::Tls(e),
        };
        if max_retries.is_some_and(|m| retries >= m) {
            tracing::warn!(batch = %id, "retries exhausted");
            break Settled::Exhausted { status, detail };
        }
        // A retry paced by `Retry-After` still counts (and lengthens the next backoff).
        let backoff_delay = backoff.next_delay();
        let delay = after.unwrap_or(backoff_delay);
        crate::metrics::sink_retry(status);
        let what = status.map_or_else(|| detail.clone(), |s| format!("HTTP {s}"));
        retries += 1;
        outage.retrying(retries == 1, &what);
        tracing::debug!(batch = %id, attempt = retries, retry_in = %crate::units::duration(delay), error = %what, "sync API did not take the batch; retrying");
        if !sleep_unless_stopped(delay, shutdown).await {
            break Settled::Abandoned;
        }
    };
    if retries > 0 {
        tracing::debug!(batch = %id, retries, outcome = ?settled, "batch settled after retries");
        outage.settled(&settled);
    }
    settled
}

/// Receiver outages as the operator reads them: one WARN when a batch is first not taken,
/// one INFO once no batch is held by the outage any more. Clones share one state: the lanes
/// of a sink report to one `Outage`, so that four lanes retrying make one outage, not four.
#[derive(Debug, Clone, Default)]
pub struct Outage(Arc<Mutex<OutageState>>);

#[derive(Debug, Default)]
struct OutageState {
    /// When the first batch of the current outage was not taken; None without an outage.
    since: Option<tokio::time::Instant>,
    /// Batches not taken at least once and not settled yet: the outage ends at zero.
    held: u64,
    /// Over the current outage: batches held, retries made, and how the held batches ended.
    batches: u64,
    retries: u64,
    delivered: u64,
    /// Rejected, or retries exhausted: dead-lettered (or binsync stops, and says why).
    not_delivered: u64,
    /// Left unsettled by a stop: the stop's own line says what was not delivered.
    abandoned: u64,
}

impl Outage {
    /// A batch was not taken (`what`: the status or the error) and will be retried; `first`
    /// on its first retry.
    fn retrying(&self, first: bool, what: &str) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if first {
            s.held += 1;
            s.batches += 1;
        }
        s.retries += 1;
        if s.since.is_none() {
            s.since = Some(tokio::time::Instant::now());
            tracing::warn!(error = %what, "the sync API is not taking batches; holding them and retrying until it does (one line when it heals; each retry at debug level)");
        }
    }

    /// A batch that was retried is settled: the outage ends with the last one held.
    fn settled(&self, how: &Settled) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.held = s.held.saturating_sub(1);
        match how {
            Settled::Delivered => s.delivered += 1,
            Settled::Abandoned => s.abandoned += 1,
            _ => s.not_delivered += 1,
        }
        if s.held > 0 {
            return;
        }
        let Some(since) = s.since else { return };
        let took = crate::units::duration(since.elapsed());
        let (batches, retries) = (s.batches, s.retries);
        if s.abandoned > 0 {
            // Stopped during the outage: the run's last line names what was not delivered.
        } else if s.not_delivered == 0 {
            tracing::info!(outage = %took, batches, retries, "the sync API takes batches again; every batch held during the outage was delivered, nothing was lost");
        } else {
            let (delivered, not_delivered) = (s.delivered, s.not_delivered);
            tracing::info!(outage = %took, batches, retries, delivered, not_delivered, "the sync API answers again; not every batch held during the outage was delivered (see the errors above: dead-lettered, or binsync stops)");
        }
        *s = OutageState::default();
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
        let settled = settle("b-1-2", max_retries, &Outage::default(), shutdown, || {
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

    /// INFO and above, as the binary writes them, from everything logged on this thread while
    /// the guard lives.
    fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let to = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Sink(to.clone()))
            .finish();
        (buf, tracing::subscriber::set_default(subscriber))
    }

    fn lines_with(buf: &Mutex<Vec<u8>>, level: &str) -> Vec<String> {
        String::from_utf8_lossy(&buf.lock().unwrap())
            .lines()
            .filter(|l| l.contains(level))
            .map(str::to_string)
            .collect()
    }

    /// Four batches held by one outage, retried three times each: one WARN and one summary.
    /// A batch taken at once logs nothing; the next outage has its own two lines.
    #[tokio::test(start_paused = true)]
    async fn one_outage_logs_one_warning_and_one_summary() {
        let (logs, _guard) = capture_logs();
        let outage = Outage::default();
        let down = || {
            let mut outcomes = vec![
                Attempt::NoResponse("connection refused".into()),
                Attempt::NoResponse("connection refused".into()),
                status(503, None),
                status(200, None),
            ]
            .into_iter();
            let outage = outage.clone();
            async move {
                let settled = settle("b", None, &outage, &mut Shutdown::never(), || {
                    let next = outcomes.next().expect("no more attempts than outcomes");
                    async move { next }
                })
                .await;
                assert_eq!(settled, Settled::Delivered);
            }
        };
        tokio::join!(down(), down(), down(), down());
        let warns = lines_with(&logs, "WARN");
        assert_eq!(warns.len(), 1, "{warns:?}");
        assert!(warns[0].contains("connection refused"), "{warns:?}");
        let infos = lines_with(&logs, "INFO");
        assert_eq!(infos.len(), 1, "{infos:?}");
        assert!(
            infos[0].contains("nothing was lost")
                && infos[0].contains("batches=4")
                && infos[0].contains("retries=12"),
            "{infos:?}"
        );
        let ok = settle("c", None, &outage, &mut Shutdown::never(), || async {
            status(200, None)
        })
        .await;
        assert_eq!(ok, Settled::Delivered);
        assert_eq!(lines_with(&logs, "WARN").len(), 1, "a batch taken at once");
        let mut again = vec![status(500, None), status(200, None)].into_iter();
        settle("d", None, &outage, &mut Shutdown::never(), || {
            let next = again.next().unwrap();
            async move { next }
        })
        .await;
        assert_eq!(lines_with(&logs, "WARN").len(), 2, "a new outage");
        let infos = lines_with(&logs, "INFO");
        assert_eq!(infos.len(), 2);
        assert!(infos[1].contains("batches=1 retries=1"), "{infos:?}");
    }

    /// A batch given up during an outage: the summary says it was not delivered.
    #[tokio::test(start_paused = true)]
    async fn an_outage_with_a_batch_given_up_says_so() {
        let (logs, _guard) = capture_logs();
        let outage = Outage::default();
        let mut outcomes = vec![status(503, None), status(503, None)].into_iter();
        let settled = settle("b", Some(1), &outage, &mut Shutdown::never(), || {
            let next = outcomes.next().unwrap();
            async move { next }
        })
        .await;
        assert!(matches!(settled, Settled::Exhausted { .. }));
        let infos = lines_with(&logs, "INFO");
        assert_eq!(infos.len(), 1, "{infos:?}");
        assert!(
            infos[0].contains("delivered=0 not_delivered=1")
                && !infos[0].contains("nothing was lost"),
            "{infos:?}"
        );
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
