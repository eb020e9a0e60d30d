//! Does the source still hold the history a position was read from? Checked before a stream
//! is opened from a position binsync has already delivered up to: at start (from the
//! checkpoint, [`super::start::plan`]), at every reconnect (from the decoder's own position,
//! [`super::replication`]) and by `binsync check --state-dir`.
//!
//! A server whose binlog was reset (`RESET MASTER`, MySQL 8.4's `RESET BINARY LOGS AND
//! GTIDS`), that was restored from a backup, or that never had the position's transactions
//! would otherwise serve a stream that looks like a continuation: a GTID stream goes on after
//! the position's sequence number *in the new history*, a file stream at its offset *in a new
//! file*, and the changes in between are never emitted. That is a definite
//! [`SourceError::HistoryLost`]. A purged binlog stays [`SourceError::Purged`] (the server
//! reports it itself, error 1236, when the stream opens).
//!
//! What is checked, in order:
//! 1. The position's file, when the position was written by this very server (same
//!    `server_id`, and `server_uuid` on MySQL): still listed by `SHOW BINARY LOGS` and at least
//!    as long as the position's offset. Missing while a lower-numbered file of the same name is
//!    there, or shorter than the offset: the history was reset. Missing with only
//!    higher-numbered files: purged (left to the server to report).
//! 2. GTID coverage, where the stream resumes by GTID. MariaDB: `@@gtid_binlog_state` holds,
//!    for each domain of the position, the position's GTID's server at that sequence number or
//!    later (the state, not `@@gtid_binlog_pos`: without `gtid_strict_mode` a domain's last
//!    GTID may have a lower sequence number than an earlier one). MySQL: `@@gtid_executed` is
//!    a superset of the position's set, and `@@gtid_purged` a subset of it (else
//!    [`SourceError::Purged`], as the server would answer the dump).
//! 3. Identity of the position's transaction, when its file is on this server (1):
//!    - MariaDB: `BINLOG_GTID_POS(file, offset)` names, for each domain of the position,
//!      exactly the position's GTID. NULL means the offset is no longer an event boundary of
//!      the file. At offset 4 (the head of a file, set by a rotate: a GTID stream that starts
//!      inside a file is announced at its head) the file's starting state need only be covered
//!      by the position.
//!    - MySQL: the file's PREVIOUS_GTIDS are within the position's set, the offset is an event
//!      boundary (`SHOW BINLOG EVENTS ... FROM offset`), and the transaction there, if any, is
//!      not one the position already holds.
//!    - Without GTIDs: the offset is an event boundary of the file.
//! 4. Without a file to check (a resume by GTID on another server of the topology, after a
//!    failover; or the file purged), MariaDB: the server's oldest binlog does not begin after
//!    the position in any of its domains while that file is `.000001` (never purged): then
//!    the server never had the transactions in between (a restored backup, a reset with a
//!    preset `gtid_binlog_state`). If it begins after the position past a purge, that is
//!    [`SourceError::Purged`], which the server reports when the stream opens.
//!
//! Not detected:
//! - a new history that reuses the position's GTIDs *and* lays out the same bytes up to its
//!   offset (the same statements, of the same sizes, from the same server id);
//! - on another server than the position's writer, a reset history that reuses the position's
//!   GTIDs (a `RESET MASTER` there followed by at least as many transactions from the same
//!   server id): only coverage and 4 can be checked there; on MySQL only coverage;
//! - without GTIDs, a reset file that has grown past the offset with an event boundary
//!   exactly there;
//! - a position at the head of a file (offset 4) whose file was recreated with a starting
//!   GTID state the position covers.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::start::file_number;
use super::{binary_logs, classify, query_one, ServerCode, ServerInfo, SourceConfig};
use super::{Result, SourceError};
use crate::checkpoint::{Position, ServerIdentity};
use crate::gtid::{GtidList, GtidPos, GtidSet, MariaGtid, MysqlGtid};

/// Fails with [`SourceError::HistoryLost`] (or [`SourceError::ServerChanged`], for a file
/// position on another server) unless the server `info` describes still holds the history
/// `pos` was read from. `written_by` is the server whose binlog `pos`'s file and offset name
/// (None when unknown: then they are not checked). See the module docs.
pub async fn verify(
    conn: &mut Conn,
    src: &SourceConfig,
    info: &ServerInfo,
    pos: &Position,
    written_by: Option<&ServerIdentity>,
) -> Result<()> {
    let by_gtid = pos.gtid.is_some() && info.gtid_enabled();
    let same = written_by.is_some_and(|w| w.same_server(&info.identity));
    if let Some(w) = written_by.filter(|_| !by_gtid && !same) {
        return Err(SourceError::ServerChanged {
            checkpoint: w.to_string(),
            now: info.identity.to_string(),
        }
        .into());
    }
    let lost = |found: String| -> super::Failure {
        SourceError::HistoryLost {
            position: describe(pos),
            found,
        }
        .into()
    };
    let logs = binary_logs(conn, src).await?;
    let file_here = same
        && !pos.file.is_empty()
        && match in_binlogs(&logs, &pos.file, pos.offset) {
            InBinlogs::Holds => true,
            InBinlogs::Gone(why) => return Err(lost(why)),
            InBinlogs::Purged | InBinlogs::Unknown => false,
        };
    match (&pos.gtid, by_gtid) {
        (Some(GtidPos::Mariadb(want)), true) => {
            let state: String = query_one(conn, src, "SELECT @@GLOBAL.gtid_binlog_state")
                .await?
                .unwrap_or_default();
            if let Some(g) = mariadb_uncovered(&state, want)? {
                let state = if state.is_empty() { "empty" } else { &state };
                return Err(lost(format!(
                    "its GTID state ({state}) lacks {g} in domain {}",
                    g.domain
                )));
            }
            if file_here {
                let at = binlog_gtid_pos_at(conn, src, &pos.file, pos.offset).await?;
                if let Some(why) = mariadb_mismatch(at.as_deref(), want, &pos.file, pos.offset)? {
                    return Err(lost(why));
                }
            } else if let Some((oldest, _)) = logs.first() {
                let head = binlog_gtid_pos_at(conn, src, oldest, 4)
                    .await?
                    .unwrap_or_default();
                let head = mariadb_list(&head)?;
                // Nothing was purged: the server never had the transactions in between. (Past
                // a purge, the server reports it itself, error 1236, when the stream opens.)
                let never_purged = file_number(oldest) == Some(1);
                if let Some(g) = begins_after(&head, want).filter(|_| never_purged) {
                    return Err(lost(format!(
                        "the source's binlogs begin at {head} in {oldest}, after the position's {want} (domain {}), and none were purged",
                        g.domain
                    )));
                }
            }
        }
        (Some(GtidPos::Mysql(want)), true) => {
            let text: String = query_one(conn, src, "SELECT @@GLOBAL.gtid_executed")
                .await?
                .unwrap_or_default();
            let have = mysql_set(&text)?;
            if !have.is_superset_of(want) {
                let shown = if have.is_empty() {
                    "empty".to_string()
                } else {
                    have.to_string()
                };
                return Err(lost(format!(
                    "its gtid_executed ({shown}) lacks part of the position's"
                )));
            }
            // The server refuses the dump the same way (1236); asked here, `check` says it too.
            let text: String = query_one(conn, src, "SELECT @@GLOBAL.gtid_purged")
                .await?
                .unwrap_or_default();
            let purged = mysql_set(&text)?;
            if !want.is_superset_of(&purged) {
                return Err(SourceError::Purged(format!(
                    "its gtid_purged ({purged}) holds transactions the position ({want}) lacks"
                ))
                .into());
            }
            if file_here {
                let head = events(conn, src, &pos.file, None, 2).await?;
                let previous = head
                    .iter()
                    .find(|e| e.kind.eq_ignore_ascii_case("Previous_gtids"))
                    .map(|e| mysql_set(&e.info))
                    .transpose()?
                    .unwrap_or_default();
                if !want.is_superset_of(&previous) {
                    return Err(lost(format!(
                        "{} begins after {previous}, which the position does not hold",
                        pos.file
                    )));
                }
                let next = at_boundary(conn, src, pos, &lost).await?;
                if let Some(why) = next.and_then(|e| mysql_already_held(&e, want)) {
                    return Err(lost(why));
                }
            }
        }
        _ => {
            if file_here {
                at_boundary(conn, src, pos, &lost).await?;
            }
        }
    }
    Ok(())
}

/// `file:offset gtid=...`, without the delivery details of [`Position`]'s `Display`.
fn describe(pos: &Position) -> String {
    let mut s = if pos.file.is_empty() {
        "no file".to_string()
    } else {
        format!("{}:{}", pos.file, pos.offset)
    };
    if let Some(g) = &pos.gtid {
        s.push_str(&format!(" gtid={g}"));
    }
    s
}

/// Where the position's file stands among the server's binlogs.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum InBinlogs {
    /// Listed, and at least as long as the offset.
    Holds,
    /// Only later files of its name are left.
    Purged,
    /// Reset: what shows it.
    Gone(String),
    /// No file of its name at all (`log_bin`'s name changed): nothing to say.
    Unknown,
}

pub(super) fn in_binlogs(logs: &[(String, u64)], file: &str, offset: u64) -> InBinlogs {
    if let Some((_, size)) = logs.iter().find(|(n, _)| n == file) {
        return if *size < offset {
            InBinlogs::Gone(format!(
                "{file} is {size} bytes now, shorter than the position's offset {offset}"
            ))
        } else {
            InBinlogs::Holds
        };
    }
    let stem = |n: &str| n.rsplit_once('.').map(|(s, _)| s.to_string());
    let Some(number) = file_number(file) else {
        return InBinlogs::Unknown;
    };
    let numbers: Vec<(&String, u64)> = logs
        .iter()
        .filter(|(n, _)| stem(n).is_some() && stem(n) == stem(file))
        .filter_map(|(n, _)| Some((n, file_number(n)?)))
        .collect();
    match numbers.iter().find(|(_, k)| *k < number) {
        _ if numbers.is_empty() => InBinlogs::Unknown,
        Some((lower, _)) => {
            InBinlogs::Gone(format!("{file} is gone while the older {lower} is there"))
        }
        None => InBinlogs::Purged,
    }
}

fn mariadb_list(text: &str) -> Result<GtidList, SourceError> {
    GtidList::parse(text).map_err(|e| SourceError::BadGtid(e.to_string()))
}

pub(super) fn mysql_set(text: &str) -> Result<GtidSet, SourceError> {
    GtidSet::parse(text).map_err(|e| SourceError::BadGtid(e.to_string()))
}

/// The first GTID of `want` that MariaDB's `@@gtid_binlog_state` (the last GTID of each
/// domain and server id) does not hold: no GTID of its domain and server id at its sequence
/// number or later.
pub(super) fn mariadb_uncovered(
    state: &str,
    want: &GtidList,
) -> Result<Option<MariaGtid>, SourceError> {
    let mut have = Vec::new();
    for part in state.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        have.push(MariaGtid::parse(part).map_err(|e| SourceError::BadGtid(e.to_string()))?);
    }
    Ok(want
        .iter()
        .find(|g| {
            !have
                .iter()
                .any(|h| h.domain == g.domain && h.server == g.server && h.seq >= g.seq)
        })
        .copied())
}

/// Why `BINLOG_GTID_POS(file, offset)` (`at`; None for SQL NULL) does not name the
/// transaction `want` ends with, if it does not.
fn mariadb_mismatch(
    at: Option<&str>,
    want: &GtidList,
    file: &str,
    offset: u64,
) -> Result<Option<String>, SourceError> {
    let Some(at) = at else {
        return Ok(Some(format!(
            "{file}:{offset} is no longer the end of a transaction in {file}"
        )));
    };
    let at = mariadb_list(at)?;
    if offset <= 4 {
        // The head of a file: the position lies somewhere after its starting state.
        return Ok(begins_after(&at, want).map(|g| {
            format!(
                "{file} begins at {at}, after the position's {want} (domain {})",
                g.domain
            )
        }));
    }
    let found: Vec<&MariaGtid> = at.iter().collect();
    Ok(want.iter().find(|g| !found.contains(g)).map(|g| {
        let there = found
            .iter()
            .find(|f| f.domain == g.domain)
            .map_or_else(|| "nothing".to_string(), |f| f.to_string());
        format!(
            "the transaction ending at {file}:{offset} is {there} in domain {}, not {g}",
            g.domain
        )
    }))
}

/// A GTID of `want` before `head`'s in the same domain: the transactions between are not in
/// a binlog that starts at `head`.
fn begins_after(head: &GtidList, want: &GtidList) -> Option<MariaGtid> {
    want.iter()
        .find(|g| head.iter().any(|h| h.domain == g.domain && h.seq > g.seq))
        .copied()
}

/// MariaDB's GTID state at `file:offset`, or None (SQL NULL) where that is not an event
/// boundary of a file the server has.
async fn binlog_gtid_pos_at(
    conn: &mut Conn,
    src: &SourceConfig,
    file: &str,
    offset: u64,
) -> Result<Option<String>> {
    let sql = format!(
        "SELECT BINLOG_GTID_POS('{}', {offset})",
        file.replace(['\'', '\\'], "")
    );
    Ok(query_one::<Option<String>>(conn, src, &sql)
        .await?
        .flatten())
}

/// One row of `SHOW BINLOG EVENTS`.
#[derive(Debug, Clone)]
pub(super) struct EventRow {
    pub(super) kind: String,
    pub(super) info: String,
    /// `End_log_pos`: the offset just past the event.
    pub(super) end: u64,
}

/// `SHOW BINLOG EVENTS IN file [FROM offset] LIMIT n`.
pub(super) async fn events(
    conn: &mut Conn,
    src: &SourceConfig,
    file: &str,
    from: Option<u64>,
    limit: u32,
) -> Result<Vec<EventRow>, EventsError> {
    let from = from.map(|o| format!(" FROM {o}")).unwrap_or_default();
    let sql = format!(
        "SHOW BINLOG EVENTS IN '{}'{from} LIMIT {limit}",
        file.replace(['\'', '\\'], "")
    );
    let rows: Vec<Row> = match conn.query(sql).await {
        Ok(rows) => rows,
        Err(mysql_async::Error::Server(e))
            if ServerCode::of(e.code) == Some(ServerCode::BinlogCommandFailed) =>
        {
            return Err(EventsError::Unreadable(e.message))
        }
        Err(e) => return Err(EventsError::Failed(classify(e, src))),
    };
    Ok(rows
        .into_iter()
        .map(|mut r| EventRow {
            kind: r.take_opt(2).and_then(Result::ok).unwrap_or_default(),
            end: r.take_opt(4).and_then(Result::ok).unwrap_or_default(),
            info: r.take_opt(5).and_then(Result::ok).unwrap_or_default(),
        })
        .collect())
}

pub(super) enum EventsError {
    /// The server cannot read events there (error 1220: not an event boundary, or beyond
    /// the file's end).
    Unreadable(String),
    Failed(super::Failure),
}

impl From<EventsError> for super::Failure {
    fn from(e: EventsError) -> super::Failure {
        match e {
            EventsError::Unreadable(m) => SourceError::Server {
                code: 1220,
                message: m,
            }
            .into(),
            EventsError::Failed(f) => f,
        }
    }
}

/// The event at the position's offset (None at the end of the file); history lost where the
/// offset is not an event boundary any more.
async fn at_boundary(
    conn: &mut Conn,
    src: &SourceConfig,
    pos: &Position,
    lost: &impl Fn(String) -> super::Failure,
) -> Result<Option<EventRow>> {
    match events(conn, src, &pos.file, Some(pos.offset), 1).await {
        Ok(rows) => Ok(rows.into_iter().next()),
        Err(EventsError::Unreadable(m)) => Err(lost(format!(
            "{}:{} is no longer an event boundary in {} ({m})",
            pos.file, pos.offset, pos.file
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Why the MySQL transaction that begins with `next` shows a reset history: the position
/// already holds its GTID.
fn mysql_already_held(next: &EventRow, want: &GtidSet) -> Option<String> {
    if !next.kind.to_ascii_lowercase().starts_with("gtid") {
        return None;
    }
    // Info: SET @@SESSION.GTID_NEXT= 'uuid:gno'
    let quoted = next.info.split('\'').nth(1)?;
    let g = MysqlGtid::parse(quoted).ok()?;
    want.contains(&g.uuid, &g.tag, g.gno).then(|| {
        format!("the transaction after the position is {g}, which the position already holds")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn list(t: &str) -> GtidList {
        GtidList::parse(t).unwrap()
    }

    fn logs(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    #[test]
    fn the_file_is_held_purged_or_gone() {
        let l = logs(&[("mariadb-bin.000003", 900), ("mariadb-bin.000004", 500)]);
        assert_eq!(in_binlogs(&l, "mariadb-bin.000003", 900), InBinlogs::Holds);
        assert_eq!(in_binlogs(&l, "mariadb-bin.000002", 900), InBinlogs::Purged);
        assert!(matches!(
            in_binlogs(&l, "mariadb-bin.000004", 501),
            InBinlogs::Gone(w) if w.contains("shorter")
        ));
        // RESET MASTER: numbering starts again below the position's file.
        assert!(matches!(
            in_binlogs(&l, "mariadb-bin.000007", 4),
            InBinlogs::Gone(w) if w.contains("mariadb-bin.000003")
        ));
        assert_eq!(in_binlogs(&l, "mysql-bin.000001", 4), InBinlogs::Unknown);
        assert_eq!(in_binlogs(&[], "mysql-bin.000001", 4), InBinlogs::Unknown);
    }

    #[test]
    fn coverage_is_per_domain_and_server() {
        let want = list("0-2-86,1-5-3");
        assert_eq!(mariadb_uncovered("0-2-200,1-5-3", &want).unwrap(), None);
        // Without strict mode a domain's last GTID may be behind an earlier one.
        assert_eq!(
            mariadb_uncovered("0-2-90,0-7-12,1-5-4", &want).unwrap(),
            None
        );
        assert_eq!(
            mariadb_uncovered("0-2-85,1-5-3", &want).unwrap(),
            Some(MariaGtid::parse("0-2-86").unwrap())
        );
        assert!(mariadb_uncovered("", &want).unwrap().is_some());
        assert!(mariadb_uncovered("0-3-300,1-5-9", &want).unwrap().is_some());
        assert!(mariadb_uncovered("x", &want).is_err());
        assert_eq!(mariadb_uncovered("", &list("")).unwrap(), None);
    }

    #[test]
    fn the_transaction_at_the_offset_is_the_positions() {
        let want = list("0-2-86");
        let f = "mariadb-bin.000001";
        assert_eq!(
            mariadb_mismatch(Some("0-2-86"), &want, f, 9000).unwrap(),
            None
        );
        assert_eq!(
            mariadb_mismatch(Some("0-2-86,1-1-4"), &want, f, 9000).unwrap(),
            None
        );
        let why = mariadb_mismatch(None, &want, f, 9000).unwrap().unwrap();
        assert!(why.contains("no longer the end of a transaction"), "{why}");
        let why = mariadb_mismatch(Some("0-2-40"), &want, f, 9000)
            .unwrap()
            .unwrap();
        assert!(
            why.contains("0-2-40") && why.contains("not 0-2-86"),
            "{why}"
        );
        assert!(mariadb_mismatch(Some("0-3-86"), &want, f, 9000)
            .unwrap()
            .is_some());
        assert!(mariadb_mismatch(Some(""), &want, f, 9000)
            .unwrap()
            .is_some());
        // At a file's head: only that it does not begin after the position.
        assert_eq!(mariadb_mismatch(Some("0-2-50"), &want, f, 4).unwrap(), None);
        assert_eq!(mariadb_mismatch(Some(""), &want, f, 4).unwrap(), None);
        assert!(mariadb_mismatch(Some("0-2-87"), &want, f, 4)
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_mysql_transaction_the_position_holds_cannot_follow_it() {
        let want = GtidSet::parse(&format!("{A}:1-86")).unwrap();
        let ev = |kind: &str, gno: u64| EventRow {
            kind: kind.into(),
            info: format!("SET @@SESSION.GTID_NEXT= '{A}:{gno}'"),
            end: 0,
        };
        assert_eq!(mysql_already_held(&ev("Gtid", 87), &want), None);
        assert!(mysql_already_held(&ev("Gtid", 12), &want).is_some());
        assert_eq!(mysql_already_held(&ev("Query", 12), &want), None);
    }

    #[test]
    fn positions_are_described_briefly() {
        let p = Position {
            file: "mariadb-bin.000001".into(),
            offset: 1013,
            gtid: Some(GtidPos::Mariadb(list("0-2-4"))),
            seq: 77,
            partial: None,
        };
        assert_eq!(describe(&p), "mariadb-bin.000001:1013 gtid=0-2-4");
        assert_eq!(describe(&Position::default()), "no file");
    }
}
