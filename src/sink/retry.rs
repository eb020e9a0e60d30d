//! Which HTTP outcomes are retried, and for how long to wait.
//!
//! 2xx: delivered. 408, 429, 5xx, timeouts, connection errors: retry the same batch (same
//! Idempotency-Key) after a capped, jittered backoff, or after `Retry-After` when the
//! receiver names a time. Any other status: rejected (dead letter).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
