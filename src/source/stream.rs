//! Opening a binlog stream as a replica, in the source's GTID dialect.
//!
//! MySQL: `COM_BINLOG_DUMP_GTID` with the executed GTID set. MariaDB: `@slave_connect_state`
//! with the GTID list, `@mariadb_slave_capability=4` (so it sends its GTID events rather than
//! rewriting them) and strict mode. Without GTIDs: file and offset. A heartbeat is asked for
//! every `--heartbeat` period (the server sends one whenever it has had nothing else to send
//! for that long), so that a dead connection shows up as silence: [`Replica::silence`], two
//! periods without a byte, which the reader turns into a reconnect.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use mysql_common::misc::raw::Either;
use mysql_common::packets::binlog_request::BinlogRequest;
use mysql_common::packets::ComRegisterSlave;

use super::dump::Dump;
use super::wire::Wire;
use super::{Result, ServerInfo, SourceConfig, SourceError};
use crate::checkpoint::Position;
use crate::gtid::{Flavor, GtidPos};

/// How often the source sends a heartbeat when it has nothing else to send (`--heartbeat`).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// The periods `--heartbeat` accepts: shorter would make a busy server's scheduling hiccup
/// look like a dead connection; longer would leave a dead one unnoticed for hours.
pub const HEARTBEAT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);
/// The head of the name binsync registers under (see [`Replica`]).
pub const REPORT_HOST: &str = "binsync";

/// Who binsync is to the source: the server id it registers with, the report host it
/// gives, `binsync-<hash of the state dir>`, and the heartbeat period it asks for (as a
/// replica's `MASTER_HEARTBEAT_PERIOD`). The name tells our own lingering registration
/// (the dump thread of a run killed a moment ago, which the server drops when we register
/// again) from another replica with the same id, another binsync run included: that one
/// would be dropped by the server the moment we register, so it is refused before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub server_id: u32,
    pub report_host: String,
    pub heartbeat: Duration,
}

impl Replica {
    pub fn new(server_id: u32, state_dir: &std::path::Path) -> Replica {
        let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        // FNV-1a: stable across builds and platforms (std's hasher is not promised to be).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in dir.as_os_str().as_encoded_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        Replica {
            server_id,
            report_host: format!("{REPORT_HOST}-{h:016x}"),
            heartbeat: DEFAULT_HEARTBEAT,
        }
    }

    /// Asks for a heartbeat every `period` (within [`HEARTBEAT_RANGE`], checked by the config).
    pub fn with_heartbeat(mut self, period: Duration) -> Replica {
        self.heartbeat = period;
        self
    }

    /// How long a stream may send no byte at all before its connection counts as dead: two
    /// heartbeat periods. An idle server sends a heartbeat every period, so a live connection
    /// is never silent that long, and a dead one is noticed within two periods of its last byte.
    pub fn silence(&self) -> Duration {
        self.heartbeat * 2
    }

    /// Whether a registration under `host` is this run's own (or from a binsync before
    /// report hosts named the state dir, which registered as plain `binsync`).
    fn is_own(&self, host: &str) -> bool {
        host == self.report_host || host == REPORT_HOST
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPoint {
    Gtid(GtidPos),
    File { file: String, offset: u64 },
}

impl StartPoint {
    /// Where to reopen a stream to continue after `pos`: by GTID where the server has GTIDs
    /// and the position names them, else at its file and offset.
    pub fn resume(pos: &Position, gtid_enabled: bool) -> StartPoint {
        match (&pos.gtid, gtid_enabled) {
            (Some(g), true) => StartPoint::Gtid(g.clone()),
            _ => StartPoint::File {
                file: pos.file.clone(),
                offset: pos.offset,
            },
        }
    }
}

impl std::fmt::Display for StartPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartPoint::Gtid(g) if g.is_empty() => write!(f, "gtid (from the beginning)"),
            StartPoint::Gtid(g) => write!(f, "gtid {g}"),
            StartPoint::File { file, offset } => write!(f, "{file}:{offset}"),
        }
    }
}

/// Refuses a server id that the source or another replica uses.
pub async fn check_server_id(
    conn: &mut Conn,
    src: &SourceConfig,
    info: &ServerInfo,
    replica: &Replica,
) -> Result<()> {
    let server_id = replica.server_id;
    if info.identity.server_id == server_id {
        return Err(SourceError::ServerIdInUse {
            id: server_id,
            by: format!("the source {src} itself"),
        }
        .into());
    }
    // A binsync run that has just stopped stays listed until the server notices its closed
    // connection (at its next heartbeat, within a second): wait that out before refusing.
    let deadline = std::time::Instant::now() + LINGER;
    loop {
        let Some(other) = other_replica(conn, info, replica).await? else {
            return Ok(());
        };
        let (host, port) = other;
        let lingering = host.starts_with(REPORT_HOST) && std::time::Instant::now() < deadline;
        if lingering {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        let who = if host.is_empty() {
            "another replica".to_string()
        } else if host.starts_with(REPORT_HOST) {
            format!("another binsync run (registered as {host}: it has another state dir)")
        } else {
            format!("the replica at {host}:{port}")
        };
        return Err(SourceError::ServerIdInUse {
            id: server_id,
            by: who,
        }
        .into());
    }
}

/// How long another binsync's registration may linger after it stopped.
const LINGER: Duration = Duration::from_secs(5);

/// Host and port of a replica registered with `replica`'s server id that is not `replica`
/// itself; None when there is none, or when the replicas cannot be listed (then with a
/// warning: the check is skipped).
async fn other_replica(
    conn: &mut Conn,
    info: &ServerInfo,
    replica: &Replica,
) -> Result<Option<(String, String)>> {
    let server_id = replica.server_id;
    let statements: &[&str] = match info.flavor() {
        Flavor::Mariadb => &["SHOW SLAVE HOSTS"],
        // MySQL 8.4 knows only the new name; older versions only the old one.
        Flavor::Mysql => &["SHOW REPLICAS", "SHOW SLAVE HOSTS"],
    };
    let mut listed = None;
    let mut last_err = None;
    for sql in statements {
        match conn.query::<mysql_async::Row, _>(*sql).await {
            Ok(rows) => {
                listed = Some(rows);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let Some(sql) = listed else {
        tracing::warn!(
            error = %last_err.map(|e| e.to_string()).unwrap_or_default(),
            "cannot list the source's replicas, so --server-id {server_id} is not checked against them; grant REPLICATION MASTER ADMIN (MariaDB) or REPLICATION SLAVE (MySQL) to check it"
        );
        return Ok(None);
    };
    for mut row in sql {
        let id: Option<u32> = row.take_opt(0).and_then(Result::ok);
        let host: String = row.take_opt(1).and_then(Result::ok).unwrap_or_default();
        let port: String = row
            .take_opt::<mysql_async::Value, usize>(2)
            .and_then(Result::ok)
            .map(|v| v.as_sql(true).trim_matches('\'').to_string())
            .unwrap_or_default();
        if id == Some(server_id) && !replica.is_own(&host) {
            return Ok(Some((host, port)));
        }
    }
    Ok(None)
}

/// Opens a binlog stream from `start`: checks the server id on `conn` (then closes it), and
/// asks for the dump on a [`Wire`] connection of its own (see `source::wire` for why).
pub async fn open(
    mut conn: Conn,
    src: &SourceConfig,
    info: &ServerInfo,
    replica: &Replica,
    start: &StartPoint,
) -> Result<Dump> {
    check_server_id(&mut conn, src, info, replica).await?;
    let server_id = replica.server_id;
    drop(conn);
    let mut wire = Wire::connect(src, Duration::from_secs(10)).await?;
    wire.query(&format!(
        "SET @master_heartbeat_period = {}",
        replica.heartbeat.as_nanos()
    ))
    .await?;
    // Events end with their CRC32 where the server writes one (the server refuses a replica
    // that does not say it can read them).
    wire.query("SET @master_binlog_checksum = @@global.binlog_checksum")
        .await?;
    let mut req = BinlogRequest::new(server_id);
    match (info.flavor(), start) {
        (Flavor::Mariadb, _) => {
            wire.query("SET @mariadb_slave_capability = 4").await?;
            match start {
                StartPoint::Gtid(g) => {
                    // A GTID list is digits, dashes and commas; quoted all the same.
                    let state = g.to_string().replace('\\', "\\\\").replace('\'', "\\'");
                    wire.query(&format!("SET @slave_connect_state = '{state}'"))
                        .await?;
                    wire.query("SET @slave_gtid_strict_mode = 1").await?;
                    wire.query("SET @slave_gtid_ignore_duplicates = 0").await?;
                }
                StartPoint::File { file, offset } => {
                    req = req
                        .with_filename(file.as_bytes().to_vec())
                        .with_pos(*offset);
                }
            }
        }
        (Flavor::Mysql, StartPoint::Gtid(GtidPos::Mysql(set))) => {
            let sids = set
                .to_sids()
                .map_err(|e| SourceError::Unsupported(e.to_string()))?;
            req = req.with_use_gtid(true).with_sids(sids);
        }
        (Flavor::Mysql, StartPoint::Gtid(other)) => {
            return Err(SourceError::Unsupported(format!(
                "a MariaDB GTID position ({other}) cannot be used on a MySQL source; use --reset with --start"
            ))
            .into())
        }
        (Flavor::Mysql, StartPoint::File { file, offset }) => {
            req = req
                .with_filename(file.as_bytes().to_vec())
                .with_pos(*offset);
        }
    }
    let register = ComRegisterSlave::new(server_id).with_hostname(replica.report_host.as_bytes());
    wire.command_struct(&register).await?;
    wire.read_ok().await?;
    match req.as_cmd() {
        Either::Left(dump) => wire.command_struct(&dump).await?,
        Either::Right(dump) => wire.command_struct(&dump).await?,
    }
    tracing::debug!(source = %src, server_id, from = %start, "binlog dump requested");
    Ok(Dump::new(wire))
}
