//! Where a stream begins and, for `--exit-at-end`, where it ends.
//!
//! A run resumes from its checkpoint whenever there is one (`--start` is then ignored, with a
//! log line); otherwise it begins at `--start`, which must name a point of the source's own
//! history: a GTID position the server has not reached is refused (streaming from it would
//! wait for transactions that may never come, and the server reports it as missing), and so
//! is a binlog file it never had; a file older than its oldest one is purged. Resuming by
//! GTID works on any server of the topology; a file position only on the server that wrote it, so a checkpoint without GTIDs
//! on another server is a definite error. Before a checkpoint is resumed, the server must
//! still hold the history it was read from ([`super::history`]): a reset or restored binlog
//! is a definite error, not a silent gap. The plan is read before any stage starts, on the
//! connection that will stream.

use std::str::FromStr;

use mysql_async::Conn;

use super::history;
use super::stream::StartPoint;
use super::tables::Catalog;
use super::{binary_logs, binlog_end, binlog_end_target, query_one, ServerInfo, SourceConfig};
use super::{Result, SourceError};
use crate::checkpoint::{Checkpoint, Position, ServerIdentity};
use crate::gtid::{Flavor, GtidPos};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartSpec {
    /// The oldest binlog the source still has.
    Earliest,
    /// The source's current end: only changes committed from now on.
    Latest,
    /// After this GTID set (MySQL) or GTID list (MariaDB), in the source's dialect.
    Gtid(String),
    /// At this file and byte offset (an event boundary).
    File { name: String, pos: u64 },
}

impl FromStr for StartSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "write earliest, latest, gtid:SET (e.g. gtid:0-1-100) or file:NAME:POS (e.g. file:mysql-bin.000003:4)";
        match s {
            "earliest" => Ok(StartSpec::Earliest),
            "latest" => Ok(StartSpec::Latest),
            _ => {
                if let Some(set) = s.strip_prefix("gtid:") {
                    Ok(StartSpec::Gtid(set.to_string()))
                } else if let Some(rest) = s.strip_prefix("file:") {
                    let (name, pos) = rest
                        .rsplit_once(':')
                        .ok_or_else(|| format!("--start `{s}`: {usage}"))?;
                    let pos: u64 = pos.parse().map_err(|_| {
                        format!("--start `{s}`: position `{pos}` is not a number; {usage}")
                    })?;
                    if name.is_empty() || pos < 4 {
                        return Err(format!("--start `{s}`: {usage} (positions start at 4)"));
                    }
                    Ok(StartSpec::File {
                        name: name.to_string(),
                        pos,
                    })
                } else {
                    Err(format!("--start `{s}`: {usage}"))
                }
            }
        }
    }
}

/// How a stream begins.
#[derive(Debug, Clone)]
pub struct StartPlan {
    /// The decoder's starting position (`seq` included).
    pub position: Position,
    /// What the dump request asks for.
    pub point: StartPoint,
    /// The stream starts at the head of a file without a known GTID state: learn it from the
    /// file's PREVIOUS_GTIDS / GTID_LIST event.
    pub gtid_from_file_header: Option<Flavor>,
    /// Follow events from the head of this file but emit only from this offset on (a MySQL
    /// `--start file:NAME:POS`, whose GTID state is known only from the file's head).
    pub emit_from: Option<(String, u64)>,
    /// The server whose binlog `position`'s file and offset name (the checkpoint's writer,
    /// which may be another server of the topology when resuming by GTID).
    pub written_by: Option<ServerIdentity>,
    /// Where a start by GTID alone stands in the binlog, near enough for the schema history's
    /// seed to scan for DDL from there (MySQL `--start latest`: the status row's file and
    /// offset, read with its GTID set; the scan also drops what the set holds).
    pub seed_from: Option<(String, u64)>,
}

impl StartPlan {
    fn at(position: Position, point: StartPoint) -> StartPlan {
        StartPlan {
            position,
            point,
            gtid_from_file_header: None,
            emit_from: None,
            written_by: None,
            seed_from: None,
        }
    }

    /// Whether the start position can be checkpointed as it is (a MySQL file start read from
    /// the head of its file cannot: its GTID state is learnt on the way).
    pub fn resumable(&self) -> bool {
        self.emit_from.is_none()
    }
}

/// What binsync learns from the source before it streams, on the connection that will stream.
pub struct Prepared {
    pub conn: Conn,
    pub info: ServerInfo,
    pub catalog: Catalog,
    pub plan: StartPlan,
    /// Where to stop (`--exit-at-end`).
    pub target: Option<EndTarget>,
}

/// Connects and reads everything the stream needs to begin. Run it through
/// [`SourceConfig::with_retries`]: a transient failure anywhere in it starts it over.
pub async fn prepare(
    src: &SourceConfig,
    checkpoint: Option<&Checkpoint>,
    start: &StartSpec,
    exit_at_end: bool,
) -> Result<Prepared> {
    let mut conn = src.connect_once().await?;
    let info = ServerInfo::read(&mut conn, src).await?;
    info.require_streamable()?;
    let catalog = Catalog::read(&mut conn, src).await?;
    let plan = plan(&mut conn, src, &info, checkpoint, start).await?;
    let target = match exit_at_end {
        true => Some(EndTarget::read(&mut conn, src, info.flavor()).await?),
        false => None,
    };
    Ok(Prepared {
        conn,
        info,
        catalog,
        plan,
        target,
    })
}

/// Decides where the stream begins: the checkpoint, else `start`.
pub async fn plan(
    conn: &mut Conn,
    src: &SourceConfig,
    info: &ServerInfo,
    checkpoint: Option<&Checkpoint>,
    start: &StartSpec,
) -> Result<StartPlan> {
    match checkpoint {
        Some(cp) => from_checkpoint(conn, src, info, cp).await,
        None => {
            let plan = from_spec(conn, src, info, start).await?;
            Ok(StartPlan {
                written_by: Some(info.identity.clone()),
                ..plan
            })
        }
    }
}

async fn from_checkpoint(
    conn: &mut Conn,
    src: &SourceConfig,
    info: &ServerInfo,
    cp: &Checkpoint,
) -> Result<StartPlan> {
    let changed = || SourceError::ServerChanged {
        checkpoint: cp.server.to_string(),
        now: info.identity.to_string(),
    };
    if cp.server.flavor != info.flavor() {
        return Err(changed().into());
    }
    let by_gtid = cp.position.gtid.is_some() && info.gtid_enabled();
    if !by_gtid && !cp.server.same_server(&info.identity) {
        return Err(changed().into());
    }
    history::verify(conn, src, info, &cp.position, Some(&cp.server)).await?;
    let point = StartPoint::resume(&cp.position, info.gtid_enabled());
    Ok(StartPlan {
        written_by: Some(cp.server.clone()),
        ..StartPlan::at(cp.position.clone(), point)
    })
}

async fn from_spec(
    conn: &mut Conn,
    src: &SourceConfig,
    info: &ServerInfo,
    start: &StartSpec,
) -> Result<StartPlan> {
    let flavor = info.flavor();
    let at_file = |file: &str, offset: u64| StartPoint::File {
        file: file.to_string(),
        offset,
    };
    if let StartSpec::File { name, pos } = start {
        file_listed(conn, src, name, *pos).await?;
    }
    match start {
        StartSpec::Earliest => {
            let logs = binary_logs(conn, src).await?;
            let (first, _) = logs.into_iter().next().ok_or(SourceError::BinlogOff)?;
            let position = Position {
                file: first.clone(),
                offset: 4,
                ..Position::default()
            };
            Ok(StartPlan {
                gtid_from_file_header: info.gtid_enabled().then_some(flavor),
                ..StartPlan::at(position, at_file(&first, 4))
            })
        }
        StartSpec::Latest => {
            let (file, offset, gtid) = binlog_end(conn, src, flavor).await?;
            let gtid = gtid.filter(|_| info.gtid_enabled());
            if let (Flavor::Mysql, Some(g)) = (flavor, &gtid) {
                // MySQL fills the status row in two steps (the file position under the binlog
                // lock, Executed_Gtid_Set under another), so a transaction committing in
                // between is after the position but in the set, or the other way round.
                // The set alone is one consistent state: stream by it, and learn the file
                // and offset from the stream.
                let position = Position {
                    gtid: Some(g.clone()),
                    ..Position::default()
                };
                let mut plan = StartPlan::at(position, StartPoint::Gtid(g.clone()));
                // (A DDL committing between the two halves of the row may be missed by the
                // scan: the stream then meets it again, and a statement that does not apply
                // to the seed's version stops binsync with a definite error, never a guess.)
                plan.seed_from = Some((file, offset));
                return Ok(plan);
            }
            let position = Position {
                file: file.clone(),
                offset,
                gtid,
                ..Position::default()
            };
            Ok(StartPlan::at(position, at_file(&file, offset)))
        }
        StartSpec::Gtid(text) => {
            let g = GtidPos::parse(flavor, text).map_err(|e| {
                SourceError::BadStart(format!(
                    "--start gtid:{text}: {e} (this source is {flavor}, which writes {})",
                    match flavor {
                        Flavor::Mysql => "uuid:1-5 sets",
                        Flavor::Mariadb => "domain-server-seq lists",
                    }
                ))
            })?;
            if !info.gtid_enabled() {
                return Err(SourceError::Unsupported(
                    "--start gtid: the source has gtid_mode OFF; use --start file:NAME:POS".into(),
                )
                .into());
            }
            if let Some(why) = not_reached(conn, src, &g).await? {
                return Err(SourceError::BadStart(format!(
                    "--start gtid:{text}: {why}; give a GTID position the source has written (SELECT {} on it), or --start latest",
                    match flavor {
                        Flavor::Mysql => "@@GLOBAL.gtid_executed",
                        Flavor::Mariadb => "@@gtid_binlog_pos",
                    }
                ))
                .into());
            }
            let position = Position {
                gtid: Some(g.clone()),
                ..Position::default()
            };
            Ok(StartPlan::at(position, StartPoint::Gtid(g)))
        }
        StartSpec::File { name, pos } => match flavor {
            Flavor::Mariadb => {
                let gtid = binlog_gtid_pos(conn, src, name, *pos).await?;
                let position = Position {
                    file: name.clone(),
                    offset: *pos,
                    gtid,
                    ..Position::default()
                };
                Ok(StartPlan::at(position, at_file(name, *pos)))
            }
            Flavor::Mysql => {
                // Read the file from its head to learn the GTID set at `pos`, emitting from `pos`.
                let position = Position {
                    file: name.clone(),
                    offset: 4,
                    ..Position::default()
                };
                Ok(StartPlan {
                    gtid_from_file_header: info.gtid_enabled().then_some(flavor),
                    emit_from: Some((name.clone(), *pos)),
                    ..StartPlan::at(position, at_file(name, 4))
                })
            }
        },
    }
}

/// Why the source has not reached `want` yet, if it has not: a GTID it has not written (it
/// may never write it, and then a stream from there would wait for ever, or be refused).
async fn not_reached(
    conn: &mut Conn,
    src: &SourceConfig,
    want: &GtidPos,
) -> Result<Option<String>> {
    match want {
        GtidPos::Mariadb(want) => {
            let state: String = query_one(conn, src, "SELECT @@GLOBAL.gtid_binlog_state")
                .await?
                .unwrap_or_default();
            let Some(g) = history::mariadb_uncovered(&state, want)? else {
                return Ok(None);
            };
            let at: String = query_one(conn, src, "SELECT @@GLOBAL.gtid_binlog_pos")
                .await?
                .unwrap_or_default();
            let at = if at.is_empty() { "empty" } else { &at };
            Ok(Some(format!(
                "the source has not written {g} (domain {}, server {}) yet: it is not in its history, whose GTID position is {at}",
                g.domain, g.server
            )))
        }
        GtidPos::Mysql(want) => {
            let text: String = query_one(conn, src, "SELECT @@GLOBAL.gtid_executed")
                .await?
                .unwrap_or_default();
            let have = history::mysql_set(&text)?;
            if have.is_superset_of(want) {
                return Ok(None);
            }
            let have = if have.is_empty() {
                "empty".to_string()
            } else {
                have.to_string()
            };
            Ok(Some(format!(
                "the source has not executed all of it yet: it is not in its history, whose gtid_executed is {have}"
            )))
        }
    }
}

/// `--start file:NAME:POS` names a binlog the source lists and a position within it; a file
/// older than its oldest one of the same name is purged ([`SourceError::Purged`]), any other
/// never was there ([`SourceError::BadStart`], naming the files it has).
async fn file_listed(conn: &mut Conn, src: &SourceConfig, name: &str, pos: u64) -> Result<()> {
    let logs = binary_logs(conn, src).await?;
    let spec = format!("--start file:{name}:{pos}");
    let range = match (logs.first(), logs.last()) {
        (Some((first, _)), Some((last, _))) if first != last => {
            format!("its binlogs are {first} to {last}")
        }
        (Some((first, _)), _) => format!("its only binlog is {first}"),
        _ => return Err(SourceError::BinlogOff.into()),
    };
    let oldest = &logs[0].0;
    match history::in_binlogs(&logs, name, pos) {
        history::InBinlogs::Holds => Ok(()),
        history::InBinlogs::Purged => Err(SourceError::Purged(format!(
            "{spec}: {name} is older than the source's oldest binlog, {oldest}"
        ))
        .into()),
        history::InBinlogs::Gone(_) | history::InBinlogs::Unknown => {
            let why = match logs.iter().find(|(n, _)| n == name) {
                Some((_, size)) => {
                    format!("{name} is {size} bytes long, it ends before byte {pos}")
                }
                None => format!("the source has no binlog file {name}"),
            };
            Err(SourceError::BadStart(format!(
                "{spec}: {why}; {range} (SHOW BINARY LOGS): start in one of them, or use --start earliest or latest"
            ))
            .into())
        }
    }
}

/// MariaDB's GTID state at `file:pos` (`BINLOG_GTID_POS`), None where it has none.
pub async fn binlog_gtid_pos(
    conn: &mut Conn,
    src: &SourceConfig,
    file: &str,
    pos: u64,
) -> Result<Option<GtidPos>> {
    let sql = format!(
        "SELECT BINLOG_GTID_POS('{}', {pos})",
        file.replace(['\'', '\\'], "")
    );
    let text: Option<String> = query_one(conn, src, &sql).await?;
    match text.filter(|t| !t.is_empty()) {
        Some(t) => Ok(Some(server_gtid(Flavor::Mariadb, &t)?)),
        None => Ok(None),
    }
}

/// A GTID position as the server printed it; one we cannot read is the server's or our bug,
/// never something to guess around.
pub fn server_gtid(flavor: Flavor, text: &str) -> Result<GtidPos, SourceError> {
    GtidPos::parse(flavor, text).map_err(|e| SourceError::BadGtid(e.to_string()))
}

/// Where the server's binlog ended at start-up (`--exit-at-end`).
#[derive(Debug, Clone)]
pub struct EndTarget {
    pub file: String,
    pub offset: u64,
    pub gtid: Option<GtidPos>,
}

impl EndTarget {
    pub async fn read(conn: &mut Conn, src: &SourceConfig, flavor: Flavor) -> Result<EndTarget> {
        let (file, offset, gtid) = binlog_end_target(conn, src, flavor).await?;
        Ok(EndTarget { file, offset, gtid })
    }

    /// `pos` (a transaction boundary) includes everything up to the target.
    pub fn reached(&self, pos: &Position) -> bool {
        self.reached_reading(pos, pos.offset)
    }

    /// As [`EndTarget::reached`], for a stream read up to `read_to` in `pos`'s file while no
    /// transaction is open: the events between `pos` and `read_to` are none (a file's header
    /// events), so a target at the end of a newest file that holds no transaction yet (after
    /// a restart or FLUSH LOGS) is reached without GTIDs too.
    pub fn reached_reading(&self, pos: &Position, read_to: u64) -> bool {
        if let (Some(have), Some(want)) = (&pos.gtid, &self.gtid) {
            if have.covers(want) {
                return true;
            }
        }
        match (file_number(&pos.file), file_number(&self.file)) {
            (Some(a), Some(b)) => (a, read_to.max(pos.offset)) >= (b, self.offset),
            _ => false,
        }
    }
}

/// `mysql-bin.000042` -> 42.
pub(super) fn file_number(name: &str) -> Option<u64> {
    name.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_target_by_file_and_gtid() {
        let t = EndTarget {
            file: "mariadb-bin.000002".into(),
            offset: 500,
            gtid: Some(GtidPos::parse(Flavor::Mariadb, "0-1-10").unwrap()),
        };
        let mut p = Position {
            file: "mariadb-bin.000001".into(),
            offset: 9000,
            ..Position::default()
        };
        assert!(!t.reached(&p));
        p.file = "mariadb-bin.000002".into();
        p.offset = 500;
        assert!(t.reached(&p));
        let g = Position {
            file: "x".into(),
            gtid: Some(GtidPos::parse(Flavor::Mariadb, "0-1-10").unwrap()),
            ..Position::default()
        };
        assert!(t.reached(&g));
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "earliest".parse::<StartSpec>().unwrap(),
            StartSpec::Earliest
        );
        assert_eq!("latest".parse::<StartSpec>().unwrap(), StartSpec::Latest);
        assert_eq!(
            "gtid:0-1-5".parse::<StartSpec>().unwrap(),
            StartSpec::Gtid("0-1-5".into())
        );
        assert_eq!(
            "file:mysql-bin.000003:1234".parse::<StartSpec>().unwrap(),
            StartSpec::File {
                name: "mysql-bin.000003".into(),
                pos: 1234
            }
        );
        for bad in ["", "first", "file:x", "file:x:abc", "file::4", "file:x:1"] {
            assert!(bad.parse::<StartSpec>().is_err(), "{bad}");
        }
    }
}
