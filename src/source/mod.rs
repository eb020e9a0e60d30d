//! The source server: connecting, knowing what it is, and classifying its errors.
//!
//! Errors are decided here, at the boundary: [`SourceError::is_retriable`] says whether a
//! reconnect can heal it (a dropped connection, a restarting server) or whether a person must
//! act (wrong password, binlog purged past our position, binlog off, STATEMENT format). Server
//! error codes become variants; messages are never matched.

pub mod lookup;
pub mod preflight;
pub mod reader;
pub mod stream;

use std::fmt;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use crate::checkpoint::ServerIdentity;
use crate::gtid::Flavor;

/// Where and how to connect. `Display` never shows the password.
#[derive(Clone)]
pub struct SourceConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    pub connect_timeout: Duration,
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
    /// `env_password` (from the environment) wins over a password in the URL.
    pub fn new(
        url: &str,
        env_password: Option<String>,
        connect_timeout: Duration,
    ) -> Result<SourceConfig, SourceError> {
        let bad = |why: &str| {
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
            connect_timeout,
        })
    }

    fn opts(&self) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .prefer_socket(false)
            .tcp_keepalive(Some(Duration::from_secs(10)))
            .into()
    }

    /// One connection attempt, bounded by 10 s.
    pub async fn connect_once(&self) -> Result<Conn, SourceError> {
        let attempt = tokio::time::timeout(Duration::from_secs(10), Conn::new(self.opts())).await;
        match attempt {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(SourceError::classify(e, self)),
            Err(_) => Err(SourceError::Unreachable {
                addr: self.to_string(),
                detail: "no answer within 10s".into(),
            }),
        }
    }

    /// Keeps trying for `connect_timeout`, logging each failed attempt; definite errors
    /// (wrong password) end it at once.
    pub async fn connect(&self) -> Result<Conn, SourceError> {
        let deadline = Instant::now() + self.connect_timeout;
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1u32;
        loop {
            match self.connect_once().await {
                Ok(c) => return Ok(c),
                Err(e) if !e.is_retriable() => return Err(e),
                Err(e) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(SourceError::GaveUp {
                            addr: self.to_string(),
                            waited: self.connect_timeout,
                            last: e.to_string(),
                        });
                    }
                    tracing::warn!(attempt, error = %e, "source not reachable yet; retrying");
                    tokio::time::sleep(delay.min(deadline - now)).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
            }
        }
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    BadUrl(String),
    #[error("cannot reach the source {addr}: {detail}")]
    Unreachable { addr: String, detail: String },
    #[error("gave up reaching the source {addr} after {}: {last}; check --source and that the server is running (or raise --connect-timeout)", humantime::format_duration(*.waited))]
    GaveUp {
        addr: String,
        waited: Duration,
        last: String,
    },
    #[error("the source {addr} refused user `{user}` (error {code}: {message}); check the user and the password (env {password_hint})")]
    Auth {
        addr: String,
        user: String,
        code: u16,
        message: String,
        password_hint: &'static str,
    },
    #[error("the binlog position we need is no longer on the source (error 1236: {0}); the changes in between are gone: start over with --reset --start earliest (or latest), or restore the purged binlogs, and raise the source's binlog retention")]
    Purged(String),
    #[error("binary logging is off on the source; add log_bin (e.g. log_bin=mysql-bin) and binlog_format=ROW to its [mysqld] config and restart it")]
    BinlogOff,
    #[error("the source logs in binlog_format={0}; binsync needs ROW: SET GLOBAL binlog_format=ROW and put binlog_format=ROW in its [mysqld] config")]
    NotRowFormat(String),
    #[error("server id {id} is already used by {by}; pick another --server-id")]
    ServerIdInUse { id: u32, by: String },
    #[error("the checkpoint holds a file position on {checkpoint}, but --source is {now}; file positions only mean something on the server that wrote them: use --reset with --start, or point --source at the original server")]
    ServerChanged { checkpoint: String, now: String },
    #[error("the source lacks a privilege binsync needs (error {code}: {message}); GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO the binsync user")]
    Privilege { code: u16, message: String },
    #[error("source error {code}: {message}")]
    Server { code: u16, message: String },
    #[error("connection to the source lost: {0}")]
    Io(String),
    #[error("the source ended the binlog stream")]
    StreamEnded,
    #[error("no event from the source for {0:?} despite heartbeats: the connection is dead")]
    Silent(Duration),
    #[error("{0}")]
    Unsupported(String),
}

impl SourceError {
    pub fn is_retriable(&self) -> bool {
        match self {
            SourceError::Unreachable { .. }
            | SourceError::Io(_)
            | SourceError::StreamEnded
            | SourceError::Silent(_) => true,
            // Too many connections, server shutting down, lost connection, read-only failover.
            SourceError::Server { code, .. } => {
                matches!(code, 1040 | 1053 | 1205 | 1213 | 2006 | 2013 | 1927 | 1290)
            }
            _ => false,
        }
    }

    pub fn classify(e: mysql_async::Error, src: &SourceConfig) -> SourceError {
        match e {
            mysql_async::Error::Server(se) => match se.code {
                1045 | 1044 | 1698 | 1251 => SourceError::Auth {
                    addr: src.to_string(),
                    user: src.user.clone(),
                    code: se.code,
                    message: se.message,
                    password_hint: crate::config::DEFAULT_PASSWORD_ENV,
                },
                1236 => SourceError::Purged(se.message),
                1227 | 1142 | 1143 => SourceError::Privilege {
                    code: se.code,
                    message: se.message,
                },
                1381 => SourceError::BinlogOff,
                code => SourceError::Server {
                    code,
                    message: se.message,
                },
            },
            mysql_async::Error::Io(io) => SourceError::Unreachable {
                addr: src.to_string(),
                detail: io.to_string(),
            },
            mysql_async::Error::Driver(d) => SourceError::Io(d.to_string()),
            mysql_async::Error::Url(u) => SourceError::BadUrl(u.to_string()),
            other => SourceError::Io(other.to_string()),
        }
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

    pub async fn read(conn: &mut Conn, src: &SourceConfig) -> Result<ServerInfo, SourceError> {
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
        let rows: Vec<(String, String)> = conn
            .query(sql)
            .await
            .map_err(|e| SourceError::classify(e, src))?;
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
) -> Result<Option<T>, SourceError> {
    let row: Option<mysql_async::Row> = conn
        .query_first(sql)
        .await
        .map_err(|e| SourceError::classify(e, src))?;
    Ok(row.and_then(|mut r| r.take_opt::<T, usize>(0).and_then(Result::ok)))
}

/// The source's binlog end: (file, offset), and its GTID position text.
pub async fn binlog_end(
    conn: &mut Conn,
    src: &SourceConfig,
    flavor: Flavor,
) -> Result<(String, u64, Option<String>), SourceError> {
    let (file, pos, mut row) = master_status(conn, src).await?;
    let gtid = match flavor {
        Flavor::Mysql => row.take_opt::<String, usize>(4).and_then(Result::ok),
        Flavor::Mariadb => {
            query_one(
                conn,
                src,
                &format!(
                    "SELECT BINLOG_GTID_POS('{}', {pos})",
                    file.replace('\'', "")
                ),
            )
            .await?
        }
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
) -> Result<(String, u64, Option<String>), SourceError> {
    if flavor == Flavor::Mysql {
        return binlog_end(conn, src, flavor).await;
    }
    let gtid: Option<String> = query_one(conn, src, "SELECT @@gtid_binlog_pos").await?;
    let (file, pos, _) = master_status(conn, src).await?;
    Ok((file, pos, gtid))
}

/// `SHOW MASTER STATUS`: the current file and offset, and the rest of the row (MySQL's
/// executed GTID set is its fifth column).
async fn master_status(
    conn: &mut Conn,
    src: &SourceConfig,
) -> Result<(String, u64, mysql_async::Row), SourceError> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(|e| SourceError::classify(e, src))?;
    let Some(mut row) = row else {
        return Err(SourceError::BinlogOff);
    };
    let file: String = row.take_opt(0).and_then(Result::ok).unwrap_or_default();
    let pos: u64 = row.take_opt(1).and_then(Result::ok).unwrap_or(4);
    Ok((file, pos, row))
}

/// `SHOW BINARY LOGS`: file names, oldest first.
pub async fn binary_logs(
    conn: &mut Conn,
    src: &SourceConfig,
) -> Result<Vec<(String, u64)>, SourceError> {
    let rows: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| SourceError::classify(e, src))?;
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
        let c = SourceConfig::new(
            "mysql://app:s3cret@db.example:3307",
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(c.to_string(), "mysql://app@db.example:3307");
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = SourceConfig::new(
            "mysql://app:s3cret@db:3307",
            Some("env".into()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(c.password.as_deref(), Some("env"));
        let e = SourceConfig::new("postgres://app:s3cret@db:1", None, Duration::from_secs(1))
            .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(e.to_string().contains("mysql://USER"), "{e}");
    }
}
