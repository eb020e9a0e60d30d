//! Failover across the servers of one replication topology: `--source` given several times
//! (a replica first, then the primary or other replicas), in the order given.
//!
//! Invariants:
//! - Only by GTID. A position moves to another server only as a GTID position (MariaDB
//!   domain-server-seq lists, MySQL GTID sets); file and offset name one server's binlog and
//!   never cross. Several sources on a server without GTIDs are refused at start, and a
//!   failover from a position that has no GTID is a definite error naming the fix.
//! - A server takes over only if it holds the position: the same flavor, the settings
//!   streaming needs, GTIDs on, and [`super::history::verify`] passes for it (MariaDB: its
//!   `gtid_binlog_state` covers the position in every domain, and its binlogs do not begin
//!   after it; MySQL: `gtid_executed` is a superset of the position, `gtid_purged` a subset).
//!   One that does not is skipped, with a line saying why; it is never streamed from.
//! - Nothing is lost or repeated: the decoder carries on (its position, `seq`, the rows of a
//!   transaction already handed on); only the connection changes. The new server streams
//!   from the position's GTID; the decoder forgets the old server's file and offset until
//!   the new stream names its own ([`crate::decode::Decoder::forget_file`]), and each chunk
//!   names the server its position was read on, so the checkpoint does too.
//!
//! When (decided in `source::replication`): the server refused the connection (nothing
//! listens: down or gone), or transient failures went on for `--failover-after` (default
//! 10 s) without a stream opening, or the server answered with a definite error about itself
//! ([`about_the_server`]: a wrong password there, binlog purged or reset there, diverged).
//! Not while the initial snapshot runs: its chunks are read at the current server's binlog
//! positions, so binsync keeps to that server (a warning says so) until the snapshot is done.
//!
//! How: one round tries every other server once, in list order after the current one (after
//! the last, back to the first), then the current one itself. The first that holds the
//! position takes over, with one line: from which server to which, why, at which position.
//! A server that fails is reported on each try (a warning, or an error for a definite
//! failure such as a wrong password), never skipped in silence; rounds repeat with backoff
//! while any failure was transient. A round in which every server failed definitely stops
//! binsync with one line naming each server and its reason.

use std::time::Duration;

use super::dump::Dump;
use super::stream::{self, Replica, StartPoint};
use super::{history, Failure, Result, ServerInfo, SourceConfig, SourceError};
use crate::checkpoint::{Position, ServerIdentity};
use crate::gtid::Flavor;
use crate::shutdown::Shutdown;

/// How long a server may fail transiently before binsync moves on (`--failover-after`).
pub const DEFAULT_AFTER: Duration = Duration::from_secs(10);
/// How long a replica may stay behind its own source before binsync moves on
/// (`--failover-behind`).
pub const DEFAULT_BEHIND: Duration = Duration::from_secs(60);

/// The source component's failover settings: the servers, and when to leave one.
#[derive(Debug, Clone)]
pub struct Failover {
    /// `--source`, in the order given (at least one).
    pub sources: Vec<SourceConfig>,
    /// How long transient failures of the current server go on before binsync moves on.
    pub after: Duration,
    /// How long the current server, a replica, may stay behind its own source (replication
    /// stopped, or `Seconds_Behind_Master` at least this) before binsync moves on.
    pub behind: Duration,
}

impl Failover {
    /// One server: nothing to fail over to.
    pub fn single(src: SourceConfig) -> Failover {
        Failover {
            sources: vec![src],
            after: DEFAULT_AFTER,
            behind: DEFAULT_BEHIND,
        }
    }

    /// Several servers were given.
    pub fn enabled(&self) -> bool {
        self.sources.len() > 1
    }

    /// The order of one round from `current`: every other server after it, wrapping round,
    /// then `current` itself.
    pub fn round(&self, current: usize) -> impl Iterator<Item = usize> {
        let n = self.sources.len();
        (1..=n).map(move |k| (current + k) % n)
    }
}

/// Why binsync leaves a server.
#[derive(Debug, Clone)]
pub enum Why {
    /// Nothing listens there.
    Refused(String),
    /// Transient failures for this long, the last one given.
    Persisting { for_: Duration, last: String },
    /// A definite error about that server.
    Definite(String),
    /// The server, a replica, stayed behind its own source (see [`LagWatch`]).
    Behind(String),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Refused(e) => write!(f, "{e}"),
            Why::Persisting { for_, last } => write!(
                f,
                "failing for {} (--failover-after), last: {last}",
                crate::units::duration(*for_)
            ),
            Why::Definite(e) => write!(f, "{e}"),
            Why::Behind(e) => write!(f, "{e}"),
        }
    }
}

/// Whether a definite error is about the server that gave it, so that another server of the
/// topology may not have it (a password, a privilege, a setting, its binlog). Errors about
/// the stream's content (decoding), the sink, the snapshot or binsync's own settings are
/// the same on every server, and stop binsync as before.
pub fn about_the_server(e: &SourceError) -> bool {
    use SourceError::*;
    match e {
        GaveUp { .. }
        | NotReached { .. }
        | Auth { .. }
        | AuthPlugin { .. }
        | DumpStopped(_)
        | Purged(_)
        | HistoryLost { .. }
        | BinlogOff
        | NotRowFormat(_)
        | ServerIdInUse { .. }
        | ServerChanged { .. }
        | Privilege { .. }
        | Server { .. }
        | Tls(_) => true,
        BadUrl(_) | BadGtid(_) | Unsupported(_) | DamagedEvent(_) | BadStart(_) | Decode(_)
        | SinkClosed | Snapshot(_) => false,
    }
}

/// A position can move to another server only by its GTIDs.
pub fn require_gtid(pos: &Position, from: &SourceConfig) -> Result<(), SourceError> {
    if pos.gtid.is_some() {
        return Ok(());
    }
    Err(SourceError::Unsupported(format!(
        "cannot fail over from {from} to another --source: the position ({}:{}) has no GTID, and a file position means something only on the server that wrote it; enable GTIDs on every server of the topology (MySQL: gtid_mode=ON, enforce_gtid_consistency=ON) and start binsync again, or give a single --source",
        pos.file, pos.offset
    )))
}

/// Several sources need GTIDs on the server streamed from (checked at start).
pub fn require_gtid_mode(info: &ServerInfo, src: &SourceConfig) -> Result<(), SourceError> {
    if info.gtid_enabled() {
        return Ok(());
    }
    Err(SourceError::Unsupported(format!(
        "several --source servers were given, but {src} has gtid_mode {}: binsync fails over only by GTID (file positions mean something only on the server that wrote them); set gtid_mode=ON and enforce_gtid_consistency=ON on every server of the topology, or give a single --source",
        info.gtid_mode.as_deref().unwrap_or("OFF")
    )))
}

/// Connects to `src` and opens a stream from `pos` there, once the server is known to hold
/// the position (see the module docs). `flavor`: the flavor streamed so far; `written_by`:
/// the server whose binlog `pos`'s file and offset name; `failing_over`: `src` is another
/// `--source` than the one streamed from (else a reconnect, which may still reach another
/// server behind the same address).
pub async fn open_on(
    src: &SourceConfig,
    flavor: Flavor,
    pos: &Position,
    written_by: Option<&ServerIdentity>,
    replica: &Replica,
    failing_over: bool,
) -> Result<(ServerInfo, Dump)> {
    let mut c = src.connect_once().await?;
    let info = ServerInfo::read(&mut c, src).await?;
    if info.flavor() != flavor {
        return Err(SourceError::ServerChanged {
            checkpoint: written_by.map_or_else(|| flavor.to_string(), |w| w.to_string()),
            now: info.identity.to_string(),
        }
        .into());
    }
    if failing_over {
        info.require_streamable()?;
        require_gtid_mode(&info, src)?;
    }
    history::verify(&mut c, src, &info, pos, written_by).await?;
    let start = StartPoint::resume(pos, info.gtid_enabled());
    let dump = stream::open(c, src, &info, replica, &start).await?;
    Ok((info, dump))
}

/// Watches the server streamed from, when it is a replica, for falling behind its own
/// source: its replication stopped (`Slave_SQL_Running`, or the I/O thread, stopped; an I/O
/// thread still connecting to a source that is down is not counted), or
/// `Seconds_Behind_Master` (`Seconds_Behind_Source`) at least `limit`, on every probe for
/// `limit`. Then [`LagWatch::fired`] answers why, and the source stage fails over. A server
/// that is no replica, or whose replication status cannot be read (a missing privilege,
/// said once), is never taken for behind. Dropping it stops the task.
pub struct LagWatch {
    rx: Option<tokio::sync::oneshot::Receiver<String>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LagWatch {
    /// Watches nothing.
    pub fn off() -> LagWatch {
        LagWatch {
            rx: None,
            task: None,
        }
    }

    pub fn start(src: SourceConfig, limit: Duration) -> LagWatch {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            if let Some(why) = watch_lag(&src, limit).await {
                let _ = tx.send(why);
            }
        });
        LagWatch {
            rx: Some(rx),
            task: Some(task),
        }
    }

    /// Why the server is behind, once it is (never, when off).
    pub async fn fired(&mut self) -> String {
        match self.rx.as_mut() {
            Some(rx) => match rx.await {
                Ok(why) => why,
                Err(_) => {
                    // The watch ended without a verdict: nothing more to wait for.
                    self.rx = None;
                    std::future::pending().await
                }
            },
            None => std::future::pending().await,
        }
    }

    /// [`LagWatch::fired`] without waiting.
    pub fn try_fired(&mut self) -> Option<String> {
        use tokio::sync::oneshot::error::TryRecvError;
        match self.rx.as_mut()?.try_recv() {
            Err(TryRecvError::Empty) => None,
            // The receiver is spent either way (a verdict taken, or a watch that ended without
            // one): awaiting it again would panic, so it goes.
            done => {
                self.rx = None;
                done.ok()
            }
        }
    }
}

impl Drop for LagWatch {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// See [`LagWatch`]. None: the server is no replica, or its status cannot be read.
async fn watch_lag(src: &SourceConfig, limit: Duration) -> Option<String> {
    let probe = (limit / 4).clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut conn = None;
    let mut since: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(probe).await;
        if conn.is_none() {
            // A server that cannot be reached is the stream's business, not this watch's.
            conn = src.connect_once().await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let status = match replica_status(c).await {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                if matches!(e, mysql_async::Error::Server(_)) {
                    tracing::warn!(source = %src, error = %e, "cannot read this server's replication status, so falling behind its own source is not noticed (--failover-behind); grant REPLICATION CLIENT (MySQL) or SLAVE MONITOR (MariaDB) to notice it");
                    return None;
                }
                conn = None;
                continue;
            }
        };
        match status.behind(limit) {
            None => since = None,
            Some(why) => {
                let since = *since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= limit {
                    return Some(format!(
                        "{src} stayed behind its own source for {} (--failover-behind): {why}",
                        crate::units::duration(since.elapsed())
                    ));
                }
            }
        }
    }
}

/// A replica's replication status, as far as falling behind goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReplicaStatus {
    io: String,
    sql: String,
    seconds_behind: Option<u64>,
}

impl ReplicaStatus {
    /// Why the replica is behind now, if it is.
    fn behind(&self, limit: Duration) -> Option<String> {
        if !self.sql.eq_ignore_ascii_case("Yes") {
            return Some(format!(
                "its replication applier is stopped (SQL thread {})",
                self.sql
            ));
        }
        if self.io.eq_ignore_ascii_case("No") {
            return Some("its replication receiver is stopped (I/O thread No)".into());
        }
        match self.seconds_behind {
            Some(s) if Duration::from_secs(s) >= limit => {
                Some(format!("it is {s} s behind its own source"))
            }
            _ => None,
        }
    }
}

/// `SHOW REPLICA STATUS` (MySQL 8.0.22+, MariaDB 10.5.1+) or `SHOW SLAVE STATUS`; None when
/// the server replicates from nobody.
async fn replica_status(
    conn: &mut mysql_async::Conn,
) -> std::result::Result<Option<ReplicaStatus>, mysql_async::Error> {
    use mysql_async::prelude::Queryable;
    let rows: Vec<mysql_async::Row> = match conn.query("SHOW REPLICA STATUS").await {
        Ok(rows) => rows,
        Err(mysql_async::Error::Server(_)) => conn.query("SHOW SLAVE STATUS").await?,
        Err(e) => return Err(e),
    };
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let text = |names: &[&str]| -> Option<String> {
        let cols = row.columns_ref();
        let i = cols
            .iter()
            .position(|c| names.iter().any(|n| c.name_str().eq_ignore_ascii_case(n)))?;
        match row.as_ref(i)? {
            mysql_async::Value::NULL => None,
            v => Some(v.as_sql(true).trim_matches('\'').to_string()),
        }
    };
    Ok(Some(ReplicaStatus {
        io: text(&["Slave_IO_Running", "Replica_IO_Running"]).unwrap_or_default(),
        sql: text(&["Slave_SQL_Running", "Replica_SQL_Running"]).unwrap_or_default(),
        seconds_behind: text(&["Seconds_Behind_Master", "Seconds_Behind_Source"])
            .and_then(|s| s.parse().ok()),
    }))
}

/// Why a server cannot take over, said for a failover: the history checks' own messages
/// advise starting over, which is wrong here (other servers may hold the position).
pub fn why_not(f: &Failure) -> String {
    match f {
        Failure::Definite(SourceError::HistoryLost { position, found }) => {
            format!("it does not hold binsync's position ({position}): {found}")
        }
        Failure::Definite(SourceError::Purged(why)) => {
            format!("its binlogs no longer hold binsync's position (purged: {why})")
        }
        other => other.to_string(),
    }
}

/// What a failed try at one server leaves for the round's verdict.
#[derive(Debug)]
pub struct Tried {
    pub source: String,
    pub failure: Failure,
}

/// The round's verdict when no server took over: transient (try again after a backoff) if
/// any server failed transiently, else a definite error naming each server.
pub fn verdict(tried: Vec<Tried>) -> Failure {
    if let Some(t) = tried
        .iter()
        .find(|t| matches!(t.failure, Failure::Transient(_)))
    {
        return super::Disconnect::Io(format!(
            "no --source server could take over (the last tried, {}: {})",
            t.source,
            why_not(&t.failure)
        ))
        .into();
    }
    let each: Vec<String> = tried
        .iter()
        .map(|t| format!("{}: {}", t.source, why_not(&t.failure)))
        .collect();
    SourceError::Unsupported(format!(
        "no --source server can stream from binsync's position, each for a reason a person must fix (or add a --source that holds the position's GTIDs): {}",
        each.join(" | ")
    ))
    .into()
}

/// Start-up with several sources: [`super::start::prepare`] on each in order, the first that
/// can stream wins (each failure logged). Retried as start-up is ([`SourceConfig::with_retries`],
/// on the first source's `--connect-timeout`). None when stopped first.
pub async fn prepare(
    failover: &Failover,
    checkpoint: Option<&crate::checkpoint::Checkpoint>,
    start: &super::start::StartSpec,
    exit_at_end: bool,
    shutdown: &mut Shutdown,
) -> Result<Option<(usize, super::start::Prepared)>> {
    let first = &failover.sources[0];
    if !failover.enabled() {
        let p = first
            .with_retries(shutdown, || {
                super::start::prepare(first, checkpoint, start, exit_at_end)
            })
            .await?;
        return Ok(p.map(|p| (0, p)));
    }
    first
        .with_retries(shutdown, || async {
            let mut tried = Vec::new();
            for (i, src) in failover.sources.iter().enumerate() {
                let failure = match super::start::prepare(src, checkpoint, start, exit_at_end).await
                {
                    Ok(p) => match require_gtid_mode(&p.info, src) {
                        Ok(()) => return Ok((i, p)),
                        Err(e) => return Err(e.into()),
                    },
                    Err(Failure::Definite(e)) if !about_the_server(&e) => {
                        return Err(e.into());
                    }
                    Err(Failure::State(e)) => return Err(Failure::State(e)),
                    Err(f) => f,
                };
                if i + 1 < failover.sources.len() {
                    tracing::warn!(source = %src, "this --source cannot stream now ({}); trying the next one", why_not(&failure));
                }
                tried.push(Tried {
                    source: src.to_string(),
                    failure,
                });
            }
            Err(verdict(tried))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(port: u16) -> SourceConfig {
        SourceConfig::new(
            &format!("mysql://cdc@db:{port}"),
            None,
            "X",
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn a_round_goes_on_after_the_current_one_and_ends_with_it() {
        let f = Failover {
            sources: vec![src(1), src(2), src(3)],
            after: DEFAULT_AFTER,
            behind: DEFAULT_BEHIND,
        };
        assert_eq!(f.round(0).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(f.round(1).collect::<Vec<_>>(), vec![2, 0, 1]);
        assert_eq!(f.round(2).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(f.enabled());
        assert!(!Failover::single(src(1)).enabled());
        assert_eq!(Failover::single(src(1)).round(0).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn a_file_position_never_crosses_servers() {
        let pos = Position {
            file: "mysql-bin.000003".into(),
            offset: 1234,
            ..Position::default()
        };
        let e = require_gtid(&pos, &src(1)).unwrap_err().to_string();
        assert!(
            e.contains("mysql-bin.000003:1234") && e.contains("gtid_mode=ON"),
            "{e}"
        );
        let with = Position {
            gtid: Some(crate::gtid::GtidPos::parse(Flavor::Mariadb, "0-1-5").unwrap()),
            ..pos
        };
        assert!(require_gtid(&with, &src(1)).is_ok());
    }

    #[test]
    fn a_round_of_definite_failures_stops_naming_each_server() {
        let definite = |port| Tried {
            source: src(port).to_string(),
            failure: SourceError::BinlogOff.into(),
        };
        let f = verdict(vec![definite(1), definite(2)]);
        let line = f.to_string();
        assert!(matches!(f, Failure::Definite(_)), "{line}");
        assert!(line.contains("db:1") && line.contains("db:2"), "{line}");
        let transient = Tried {
            source: src(3).to_string(),
            failure: super::super::Disconnect::StreamEnded.into(),
        };
        let f = verdict(vec![definite(1), transient]);
        assert!(matches!(f, Failure::Transient(_)), "{f}");
    }

    #[test]
    fn a_replica_is_behind_when_stopped_or_late_not_while_reconnecting() {
        let st = |io: &str, sql: &str, s: Option<u64>| ReplicaStatus {
            io: io.into(),
            sql: sql.into(),
            seconds_behind: s,
        };
        let limit = Duration::from_secs(60);
        assert_eq!(st("Yes", "Yes", Some(3)).behind(limit), None);
        assert!(st("Yes", "Yes", Some(60)).behind(limit).is_some());
        assert!(st("Yes", "No", None).behind(limit).is_some());
        assert!(st("No", "Yes", None).behind(limit).is_some());
        // Its own source is down: the replica keeps trying, and cannot say how late it is.
        assert_eq!(st("Connecting", "Yes", None).behind(limit), None);
    }

    #[test]
    fn errors_about_one_server_fail_over_the_rest_stop() {
        assert!(about_the_server(&SourceError::BinlogOff));
        assert!(about_the_server(&SourceError::Purged("x".into())));
        assert!(!about_the_server(&SourceError::SinkClosed));
        assert!(!about_the_server(&SourceError::BadStart("x".into())));
    }

    /// The stream's loop asks `try_fired` and then awaits `fired`: a watch that ended
    /// without a verdict (the server is no replica) must leave both waiting, not panic on a
    /// spent receiver (seen after a failover to the primary).
    #[tokio::test]
    async fn a_watch_that_ended_without_a_verdict_waits_forever_after_try_fired() {
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        drop(tx);
        let mut watch = LagWatch {
            rx: Some(rx),
            task: None,
        };
        assert_eq!(watch.try_fired(), None);
        let waited = tokio::time::timeout(Duration::from_millis(50), watch.fired()).await;
        assert!(waited.is_err(), "no verdict: fired() waits");
        assert_eq!(watch.try_fired(), None);

        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        tx.send("behind".into()).unwrap();
        let mut watch = LagWatch {
            rx: Some(rx),
            task: None,
        };
        assert_eq!(watch.try_fired().as_deref(), Some("behind"));
        let waited = tokio::time::timeout(Duration::from_millis(50), watch.fired()).await;
        assert!(waited.is_err(), "a verdict is taken once");
    }
}
