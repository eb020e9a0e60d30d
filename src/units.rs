//! Output for people: numbers (`12.3k`, `4.5 MiB`, `1m 05s`), progress lines, and printing to
//! stdout without panicking when its reader goes away (`binsync dlq list | head -1`).

use std::time::Duration;

pub fn count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        1..=59 => format!("{:.1} s", d.as_secs_f64()),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// A count logged every [`Progress::EVERY`] with its rate: `delivered=12.3k rate=4.1k/s`.
pub struct Progress {
    what: &'static str,
    total: u64,
    since: u64,
    last: std::time::Instant,
}

impl Progress {
    pub const EVERY: Duration = Duration::from_secs(10);

    pub fn new(what: &'static str) -> Progress {
        Progress {
            what,
            total: 0,
            since: 0,
            last: std::time::Instant::now(),
        }
    }

    pub fn add(&mut self, n: u64) {
        self.total += n;
        self.since += n;
        let elapsed = self.last.elapsed();
        if elapsed >= Self::EVERY {
            let rate = (self.since as f64 / elapsed.as_secs_f64()) as u64;
            tracing::info!(
                total = %count(self.total),
                rate = %format!("{}/s", count(rate)),
                "{} so far", self.what
            );
            self.last = std::time::Instant::now();
            self.since = 0;
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// `url` as it may be printed: a password in it (`scheme://user:PASSWORD@host`, in any
/// spelling, even one that does not parse) becomes `***`.
pub fn redact_url(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_string();
    };
    let (creds, host) = url.split_at(at);
    let user_start = creds.find("://").map_or(0, |i| i + 3);
    let (scheme, user) = creds.split_at(user_start);
    match user.split_once(':') {
        Some((name, _)) if !name.contains(['/', '@']) && user_start > 0 => {
            format!("{scheme}{name}:***{host}")
        }
        None if !user.contains('/') && user_start > 0 => url.to_string(),
        _ => format!("***{host}"),
    }
}

/// Printing to stdout failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The reader closed it (`| head`): the command ends quietly, with exit 0, as `cat` does.
    #[error("stdout was closed by its reader")]
    Closed,
    #[error("cannot write to stdout: {0}")]
    Failed(std::io::Error),
}

impl From<std::io::Error> for OutputError {
    fn from(e: std::io::Error) -> OutputError {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => OutputError::Closed,
            _ => OutputError::Failed(e),
        }
    }
}

/// `println!` that reports a closed stdout instead of panicking.
pub fn print_line(args: std::fmt::Arguments) -> Result<(), OutputError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(redact_url("http://a:s3cret@h:1/p"), "http://a:***@h:1/p");
        assert_eq!(redact_url("http://a@h/p"), "http://a@h/p");
        assert_eq!(redact_url("http://h/p"), "http://h/p");
        for odd in [
            "htp:/a:s3cret@h",
            "a:s3cret@h",
            "http//a:s3cret@h",
            "http://a:b:s3cret@@h",
        ] {
            assert!(!redact_url(odd).contains("s3cret"), "{odd}");
        }
    }

    #[test]
    fn a_closed_pipe_is_its_own_kind() {
        let closed = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(matches!(OutputError::from(closed), OutputError::Closed));
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(matches!(OutputError::from(other), OutputError::Failed(_)));
    }

    #[test]
    fn readable() {
        assert_eq!(count(950), "950");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(count(4_500_000), "4.50M");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
        assert_eq!(duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(duration(Duration::from_secs(65)), "1m 05s");
        assert_eq!(duration(Duration::from_secs(7300)), "2h 01m");
    }
}
