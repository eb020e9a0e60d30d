//! The source server: connecting, knowing what it is, and what it holds.
//!
//! Errors are decided at this boundary, by type ([`error`]): a [`Disconnect`] is transient
//! (reconnect), a [`SourceError`] definite (stop and name the fix).

pub mod catchup;
pub mod dump;
mod error;
pub mod failover;
pub mod history;
pub mod lookup;
pub mod preflight;
pub mod reader;
pub mod replication;
pub mod schema_seed;
pub mod start;
pub mod stream;
pub mod tables;
pub mod tls;
pub mod wire;

pub use error::{classify, Disconnect, Failure, Result, ServerCode, SourceError};

use std::fmt;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, Opts, OptsBuilder};

use crate::backoff::{sleep_unless_stopped, Backoff};
use crate::checkpoint::ServerIdentity;
use crate::gtid::{Flavor, GtidPos};
use crate::shutdown::Shutdown;
use tls::{DriverName, SslMode, TlsError, TlsSettings};

/// Where and how to connect. `Display` never shows the password.
#[derive(Clone)]
pub struct SourceConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    /// The environment variable the password comes from (named in authentication errors).
    pub password_env: String,
    pub connect_timeout: Duration,
    /// `--ssl-mode` and its files, for both clients (the dump connection and the driver).
    pub tls: TlsSettings,
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceConfig({self})")
    }
}

impl fmt::Display for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mysql://{}@{}:{}", self.user, self.host, self.port)
    }
}

impl SourceConfig {
    /// `env_password` (the value of `password_env`) wins over a password in the URL.
    pub fn new(
        url: &str,
        env_password: Option<String>,
        password_env: &str,
        connect_timeout: Duration,
    ) -> Result<SourceConfig, SourceError> {
        let bad = |why: &str| {
            // The driver's message may quote the URL: never let its credentials through.
            let why = match url.rfind('@') {
                Some(at) => why.replace(&url[..at], "***"),
                None => why.to_string(),
            };
            SourceError::BadUrl(format!(
                "--source `{}`: {why}; write mysql://USER[:PASSWORD]@HOST:PORT",
                redact(url)
            ))
        };
        let opts = Opts::from_url(url).map_err(|e| bad(&e.to_string()))?;
        if !url.starts_with("mysql://") {
            return Err(bad("the scheme must be mysql://"));
        }
        let user = opts.user().unwrap_or("root").to_string();
        Ok(SourceConfig {
            host: opts.ip_or_hostname().to_string(),
            port: opts.tcp_port(),
            user,
            password: env_password.or_else(|| opts.pass().map(str::to_string)),
            password_env: password_env.to_string(),
            connect_timeout,
            tls: TlsSettings::default(),
        })
    }

    /// These settings with `tls` for TLS (the default: `preferred`, no files).
    pub fn with_tls(mut self, tls: TlsSettings) -> SourceConfig {
        self.tls = tls;
        self
    }

    fn plain_opts(&self) -> OptsBuilder {
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .prefer_socket(false)
            .tcp_keepalive(Some(Duration::from_secs(10)))
    }

    /// The driver's options, TLS included. Under `verify-ca` the certificate name the driver
    /// must expect is learnt first, by a TLS handshake of the dump connection's own client
    /// (see `source::tls`).
    async fn opts(&self) -> Result<Opts> {
        let mut learnt = match self.tls.mode() {
            SslMode::VerifyCa => self.tls.driver_name(),
            _ => DriverName::Host,
        };
        if learnt == DriverName::Unknown {
            wire::Wire::probe_tls(self, Duration::from_secs(10)).await?;
            learnt = self.tls.driver_name();
        }
        let name = match learnt {
            DriverName::Unknown | DriverName::Host => None,
            DriverName::Other(name) => Some(name),
            DriverName::Nameless => return Err(TlsError::Nameless.into()),
        };
        Ok(self
            .plain_opts()
            .ssl_opts(self.tls.driver_opts(name.as_deref()))
            .into())
    }

    /// One driver connection, TLS as `--ssl-mode` says (`preferred` falls back to plain TCP
    /// when the server offers no TLS).
    async fn driver_conn(&self) -> Result<Conn> {
        let preferred = self.tls.mode() == SslMode::Preferred;
        if preferred && self.tls.known_plain() {
            return Conn::new(Opts::from(self.plain_opts()))
                .await
                .map_err(|e| classify(e, self));
        }
        let conn = match Conn::new(self.opts().await?).await {
            Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer))
                if preferred =>
            {
                self.tls.set_offered(false);
                Conn::new(Opts::from(self.plain_opts())).await
            }
            other => other,
        };
        conn.map_err(|e| classify(e, self))
    }

    /// One connection attempt, bounded by 10 s.
    ///
    /// The login is made first by binsync's own client ([`wire::Wire`]), then by the
    /// driver: mysql_common panics ("valid PEM is mandatory here") when a server without RSA
    /// keys answers caching_sha2_password's request for its public key, while our client
    /// names the problem; and a successful full authentication leaves the password in the
    /// server's cache, so the driver's login that follows takes the fast path, without RSA.
    pub async fn connect_once(&self) -> Result<Conn> {
        wire::Wire::connect(self, Duration::from_secs(10))
            .await?
            .quit()
            .await;
        let attempt = tokio::time::timeout(Duration::from_secs(10), self.driver_conn()).await;
        match attempt {
            Ok(Ok(conn)) => {
                tracing::debug!(source = %self, ssl_mode = ?self.tls.mode(), "connected");
                Ok(conn)
            }
            Ok(r) => r,
            Err(_) => Err(Disconnect::Unreachable {
                addr: self.to_string(),
                detail: "no answer within 10s".into(),
            }
            .into()),
        }
    }

    /// One attempt, for a command that reports rather than waits (`check`): a source that
    /// cannot be reached now is a definite [`SourceError::NotReached`] naming the fix, in
    /// seconds at most (a refused connection at once; see [`wire::TCP_CONNECT`]).
    /// `None`: stopped first.
    pub async fn connect_now(&self, shutdown: &mut Shutdown) -> Result<Option<Conn>> {
        let attempt = tokio::select! {
            r = self.connect_once() => r,
            _ = shutdown.requested() => return Ok(None),
        };
        match attempt {
            Ok(conn) => Ok(Some(conn)),
            Err(Failure::Transient(e)) => {
                let detail = match e {
                    Disconnect::Unreachable { detail, .. } => detail,
                    other => other.to_string(),
                };
                Err(SourceError::NotReached {
                    addr: self.to_string(),
                    detail,
                }
                .into())
            }
            Err(definite) => Err(definite),
        }
    }

    /// Keeps trying for `connect_timeout`, logging each failed attempt; definite errors
    /// (wrong password) end it at once. `None`: stopped first (see [`Self::with_retries`]).
    pub async fn connect(&self, shutdown: &mut Shutdown) -> Result<Option<Conn>> {
        self.with_retries(shutdown, || self.connect_once()).await
    }

    /// Runs `attempt` until it succeeds, fails definitely, or `connect_timeout` has passed
    /// (then [`SourceError::GaveUp`] with the last error). A server that restarts while
    /// binsync starts up is waited for, not fatal. A stop (SIGTERM, SIGINT) ends it at once,
    /// during an attempt or between two, with `Ok(None)`: nothing was read, and nobody gave
    /// up on the source.
    pub async fn with_retries<T, F, Fut>(
        &self,
        shutdown: &mut Shutdown,
        mut attempt: F,
    ) -> Result<Option<T>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.connect_timeout;
        let mut backoff = Backoff::with(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            if shutdown.is_requested() {
                return Ok(None);
            }
            // An attempt only reads (it may wait 10 s for a host that does not answer): a stop
            // drops it where it is.
            let result = tokio::select! {
                r = attempt() => r,
                _ = shutdown.requested() => return Ok(None),
            };
            let e = match result {
                Ok(t) => return Ok(Some(t)),
                Err(Failure::Transient(e)) => e,
                Err(definite) => return Err(definite),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(SourceError::GaveUp {
                    addr: self.to_string(),
                    waited: self.connect_timeout,
                    last: e.to_string(),
                }
                .into());
            }
            tracing::warn!(attempt = backoff.attempts() + 1, error = %e, "source not reachable yet; retrying");
            let delay = backoff.next_delay().min(deadline - now);
            if !sleep_unless_stopped(delay, shutdown).await {
                return Ok(None);
            }
        }
    }
}

/// `url` as it may be printed: whatever precedes the last `@` (user and password, in any
/// spelling of the scheme) is masked but for a user name that clearly stands alone.
fn redact(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_string();
    };
    let (creds, host) = url.split_at(at);
    match creds.strip_prefix("mysql://") {
        Some(user) if !user.contains([':', '/', '@']) => url.to_string(),
        Some(user) if !user.contains(['/', '@']) => {
            let name = user.split(':').next().unwrap_or_default();
            format!("mysql://{name}:***{host}")
        }
        _ => format!("***{host}"),
    }
}

/// What we learned about the source at connect time.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub identity: ServerIdentity,
    pub log_bin: bool,
    pub binlog_format: String,
    pub row_image: String,
    /// None on servers without the setting (MySQL < 8.0.1, MariaDB < 10.5).
    pub row_metadata: Option<String>,
    /// MySQL's gtid_mode (ON/OFF/...); MariaDB always has GTIDs.
    pub gtid_mode: Option<String>,
    pub gtid_strict_mode: Option<bool>,
}

impl ServerInfo {
    pub fn flavor(&self) -> Flavor {
        self.identity.flavor
    }

    /// GTID positions can be used to resume.
    pub fn gtid_enabled(&self) -> bool {
        match self.identity.flavor {
            Flavor::Mariadb => true,
            Flavor::Mysql => self.gtid_mode.as_deref() == Some("ON"),
        }
    }

    pub async fn read(conn: &mut Conn, src: &SourceConfig) -> Result<ServerInfo> {
        let version: String = query_one(conn, src, "SELECT VERSION()")
            .await?
            .unwrap_or_default();
        let flavor = if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::Mariadb
        } else {
            Flavor::Mysql
        };
        let server_id: u32 = query_one::<String>(conn, src, "SELECT @@server_id")
            .await?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let server_uuid = match flavor {
            Flavor::Mysql => query_one(conn, src, "SELECT @@server_uuid").await?,
            Flavor::Mariadb => None,
        };
        // One round trip for all of them (each SHOW costs a few ms on a busy server).
        const NAMES: [&str; 6] = [
            "log_bin",
            "binlog_format",
            "binlog_row_image",
            "binlog_row_metadata",
            "gtid_mode",
            "gtid_strict_mode",
        ];
        let sql = format!(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('{}')",
            NAMES.join("', '")
        );
        let rows: Vec<(String, String)> = conn.query(sql).await.map_err(|e| classify(e, src))?;
        let mut vars = std::collections::HashMap::new();
        for (name, v) in rows {
            if let Some(known) = NAMES.iter().find(|n| name.eq_ignore_ascii_case(n)) {
                vars.insert(*known, v.to_ascii_uppercase());
            }
        }
        let version_short = version.split('-').next().unwrap_or(&version).to_string();
        Ok(ServerInfo {
            identity: ServerIdentity {
                flavor,
                server_id,
                server_uuid,
                version: version_short,
            },
            log_bin: vars.get("log_bin").is_some_and(|v| v == "ON" || v == "1"),
            binlog_format: vars.get("binlog_format").cloned().unwrap_or_default(),
            row_image: vars.get("binlog_row_image").cloned().unwrap_or_default(),
            row_metadata: vars.get("binlog_row_metadata").cloned(),
            gtid_mode: vars.get("gtid_mode").cloned(),
            gtid_strict_mode: vars.get("gtid_strict_mode").map(|v| v == "ON" || v == "1"),
        })
    }

    /// The settings without which streaming cannot be correct.
    pub fn require_streamable(&self) -> Result<(), SourceError> {
        if !self.log_bin {
            return Err(SourceError::BinlogOff);
        }
        if self.binlog_format != "ROW" {
            return Err(SourceError::NotRowFormat(self.binlog_format.clone()));
        }
        if self.row_image != "FULL" {
            tracing::warn!(
                binlog_row_image = %self.row_image,
                "before/after images are partial: updates carry only some columns; set binlog_row_image=FULL on the source"
            );
        }
        Ok(())
    }
}

pub async fn query_one<T: mysql_async::prelude::FromValue>(
    conn: &mut Conn,
    src: &SourceConfig,
    sql: &str,
) -> Result<Option<T>> {
    let row: Option<mysql_async::Row> =
        conn.query_first(sql).await.map_err(|e| classify(e, src))?;
    Ok(row.and_then(|mut r| r.take_opt::<T, usize>(0).and_then(Result::ok)))
}

/// The source's binlog end: where the next transaction will be written, and the GTID state
/// there (None without GTIDs).
pub async fn binlog_end(
    conn: &mut Conn,
    src: &SourceConfig,
    flavor: Flavor,
) -> Result<(String, u64, Option<GtidPos>)> {
    let (file, pos, mut row) = master_status(conn, src).await?;
    let gtid = match flavor {
        Flavor::Mysql => match row.take_opt::<String, usize>(4).and_then(|r| r.ok()) {
            Some(text) if !text.trim().is_empty() => Some(start::server_gtid(flavor, &text)?),
            _ => None,
        },
        Flavor::Mariadb => start::binlog_gtid_pos(conn, src, &file, pos).await?,
    };
    Ok((file, pos, gtid))
}

/// Where the binlog ends now, as a target to stop at (`--exit-at-end`), not a position to
/// resume from. On MariaDB the GTID state is `@@gtid_binlog_pos`, read before the file
/// position so that it never names a transaction past it; [`binlog_end`] instead asks
/// `BINLOG_GTID_POS`, exact but read from the head of the file (60 ms for a 100 MiB binlog).
pub async fn binlog_end_target(
    conn: &mut Conn,
    src: &SourceConfig,
    flavor: Flavor,
) -> Result<(String, u64, Option<GtidPos>)> {
    if flavor == Flavor::Mysql {
        return binlog_end(conn, src, flavor).await;
    }
    let gtid: Option<String> = query_one(conn, src, "SELECT @@gtid_binlog_pos").await?;
    let gtid = match gtid.filter(|g| !g.is_empty()) {
        Some(text) => Some(start::server_gtid(flavor, &text)?),
        None => None,
    };
    let (file, pos, _) = master_status(conn, src).await?;
    Ok((file, pos, gtid))
}

/// `SHOW BINARY LOG STATUS` (`SHOW MASTER STATUS` before MySQL 8.2, and on MariaDB): the current file and offset, and the rest of the row (MySQL's
/// executed GTID set is its fifth column).
async fn master_status(
    conn: &mut Conn,
    src: &SourceConfig,
) -> Result<(String, u64, mysql_async::Row)> {
    // MySQL 8.2 named it SHOW BINARY LOG STATUS, and 8.4 removed the old name (error 1064);
    // MariaDB and older MySQL know only the old one.
    let row: Option<mysql_async::Row> = match conn.query_first("SHOW BINARY LOG STATUS").await {
        Ok(row) => row,
        Err(mysql_async::Error::Server(e)) if e.code == 1064 => conn
            .query_first("SHOW MASTER STATUS")
            .await
            .map_err(|e| classify(e, src))?,
        Err(e) => return Err(classify(e, src)),
    };
    let Some(mut row) = row else {
        return Err(SourceError::BinlogOff.into());
    };
    let file: String = row.take_opt(0).and_then(Result::ok).unwrap_or_default();
    let pos: u64 = row.take_opt(1).and_then(Result::ok).unwrap_or(4);
    Ok((file, pos, row))
}

/// `SHOW BINARY LOGS`: file names, oldest first.
pub async fn binary_logs(conn: &mut Conn, src: &SourceConfig) -> Result<Vec<(String, u64)>> {
    let rows: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| classify(e, src))?;
    Ok(rows
        .into_iter()
        .filter_map(|mut r| {
            let name: String = r.take_opt(0)?.ok()?;
            let size: u64 = r.take_opt(1).and_then(Result::ok).unwrap_or(0);
            Some((name, size))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let timeout = Duration::from_secs(1);
        let env = "BINSYNC_SOURCE_PASSWORD";
        let c =
            SourceConfig::new("mysql://app:s3cret@db.example:3307", None, env, timeout).unwrap();
        assert_eq!(c.to_string(), "mysql://app@db.example:3307");
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = SourceConfig::new(
            "mysql://app:s3cret@db:3307",
            Some("env".into()),
            env,
            timeout,
        )
        .unwrap();
        assert_eq!(c.password.as_deref(), Some("env"));
        for bad in [
            "postgres://app:s3cret@db:1",
            "mysql:/cdc:s3cret@127.0.0.1:3306",
            "mysql//cdc:s3cret@127.0.0.1:3306",
            "cdc:s3cret@127.0.0.1:3306",
            "mysql://cdc:s3cret@127.0.0.1:notaport",
            "mysql://cdc:s3cret@@127.0.0.1:3306/x?y",
        ] {
            let e = SourceConfig::new(bad, None, env, timeout)
                .err()
                .unwrap_or_else(|| panic!("{bad} must not parse"));
            assert!(!e.to_string().contains("s3cret"), "{bad}: {e}");
            assert!(e.to_string().contains("mysql://USER"), "{e}");
        }
    }
}
