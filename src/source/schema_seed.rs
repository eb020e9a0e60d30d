//! The schema history's first versions, read from the source: each tracked table's
//! `SHOW CREATE TABLE`, read by the same DDL reader that follows the binlog
//! ([`crate::schema::ddl`]), so a table seeded here and one created in the stream are the same
//! value. (information_schema would need its own translation of types, JSON checks and keys.)
//!
//! Consistency with a binlog position is the caller's: this reads the tables as they are now.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::{classify, Failure, Result, SourceConfig, SourceError};
use crate::filter::Filter;
use crate::gtid::mariadb::MariaGtid;
use crate::gtid::{Gtid, GtidPos, MysqlGtid};
use crate::schema::history::binlog_order;
use crate::schema::{ddl, Catalog, Pending};

const SYSTEM_SCHEMAS: &str = "'mysql', 'information_schema', 'performance_schema', 'sys'";

/// The base tables `filter` tracks, as `(db, table)`, in name order.
pub async fn tracked_tables(
    conn: &mut Conn,
    src: &SourceConfig,
    filter: &Filter,
) -> Result<Vec<(String, String)>> {
    let all: Vec<(String, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ({SYSTEM_SCHEMAS}) ORDER BY 1, 2"
        ))
        .await
        .map_err(|e| classify(e, src))?;
    Ok(all
        .into_iter()
        .filter(|(d, t)| filter.matches(d, t))
        .collect())
}

/// A catalog of `tables` as the server describes them now. A definition the DDL reader cannot
/// read is a definite error naming the table (never a guessed shape).
pub async fn read(
    conn: &mut Conn,
    src: &SourceConfig,
    tables: &[(String, String)],
) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    for (db, table) in tables {
        let sql = format!("SHOW CREATE TABLE {}.{}", quote(db), quote(table));
        let row: Option<(String, String)> =
            conn.query_first(sql).await.map_err(|e| classify(e, src))?;
        let Some((_, create)) = row else {
            // Dropped since it was listed: nothing to describe.
            continue;
        };
        ddl::apply(&mut catalog, db, &create).map_err(|e| -> Failure {
            SourceError::Unsupported(format!(
                "cannot read the definition of {db}.{table} for the schema history ({e}); report it with the statement, and meanwhile set binlog_row_metadata=FULL on the source"
            ))
            .into()
        })?;
    }
    Ok(catalog)
}

/// A backquoted identifier.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The schema history's first versions, valid at the stream's start (see [`seed`]).
#[derive(Debug, Default)]
pub struct Seed {
    /// Tables whose definition at the start is known (no DDL on them between the start and
    /// the seed).
    pub catalog: Catalog,
    /// Captured tables a DDL changed between the start and the seed: unknown at the start,
    /// each known again from its last such DDL on (if it still exists at the seed).
    pub pending: Vec<Pending>,
    pub unknown: Vec<(String, String)>,
    /// Where the seed was read (file, offset): no DDL on a captured table between the start
    /// and here is unaccounted for.
    pub at: (String, u64),
}

/// How often the seed is read again when DDL keeps landing while it is read.
const SEED_ATTEMPTS: usize = 5;
/// `SHOW BINLOG EVENTS` rows per page while scanning for DDL.
const SCAN_PAGE: u32 = 20_000;

/// Reads the captured tables' definitions and makes them valid at `start` (file, offset;
/// None: the oldest binlog): the binlog between `start` and the read is scanned for DDL
/// (`SHOW BINLOG EVENTS`). A captured table first created there is left to the stream (its
/// CREATE comes); one otherwise changed there is unknown until its last such DDL, from
/// which its definition read now holds ([`Seed::pending`]). DDL landing while the
/// definitions are read makes the read start over; if it keeps landing, a definite error.
pub async fn seed(
    conn: &mut Conn,
    src: &SourceConfig,
    filter: &Filter,
    start: Option<(String, u64)>,
    start_gtid: Option<&GtidPos>,
) -> Result<Seed> {
    for _ in 0..SEED_ATTEMPTS {
        let (file1, pos1, _) = super::master_status(conn, src).await?;
        let tables = tracked_tables(conn, src, filter).await?;
        let catalog = read(conn, src, &tables).await?;
        let (file2, pos2, _) = super::master_status(conn, src).await?;
        let from = match &start {
            Some(s) => s.clone(),
            None => {
                let logs = super::binary_logs(conn, src).await?;
                let first = match start_gtid {
                    Some(pos) => first_file_after(conn, src, &logs, pos).await?,
                    None => None,
                };
                match first.or_else(|| logs.first().map(|(f, _)| f.clone())) {
                    Some(f) => (f, 4),
                    None => (file2.clone(), pos2),
                }
            }
        };
        let scan = ddl_between(conn, src, &from, &(file2.clone(), pos2)).await?;
        let mut statements = scan.found;
        if scan.unreadable_at.is_some() {
            // The seed itself must still hold at its own position: no DDL while it was read.
            let during =
                ddl_between(conn, src, &(file1.clone(), pos1), &(file2.clone(), pos2)).await?;
            let clean = during.unreadable_at.is_none()
                && !during
                    .found
                    .iter()
                    .any(|s| s.tables.iter().any(|(d, t)| filter.matches(d, t)));
            if !clean {
                tracing::info!("the schema history's seed cannot be checked against the binlog written while it was read; reading it again");
                continue;
            }
        }
        // What the start's GTID state holds came before it (a start by GTID alone scans
        // from a file's head, or from a position read apart from the set).
        if let Some(pos) = start_gtid {
            statements.retain(|s| s.gtid.as_ref().is_none_or(|g| !pos.holds(g)));
        }
        let during = |f: &str, end: u64| binlog_order(f, end) > binlog_order(&file1, pos1);
        if statements
            .iter()
            .any(|s| during(&s.file, s.end) && s.tables.iter().any(|(d, t)| filter.matches(d, t)))
        {
            tracing::info!("a DDL statement landed while the schema history was being seeded; reading it again");
            continue;
        }
        let mut seed = settle(catalog.clone(), &statements, filter, (file2, pos2));
        if let Some((file, offset)) = scan.unreadable_at {
            // What lies past the unreadable event is unknown: every captured table is unknown
            // from the start until the seed's own position, where its definition read now holds.
            tracing::warn!(file = %file, offset, "DDL after this point up to the seed cannot be seen: captured tables are known from the seed's position on; rows before it need binlog_row_metadata=FULL");
            let created: Vec<(String, String)> = statements
                .iter()
                .filter(|s| s.creates)
                .filter_map(|s| s.tables.first().cloned())
                .collect();
            seed.pending.clear();
            for t in catalog.tables.values() {
                let name = (t.db.clone(), t.name.clone());
                seed.catalog.remove(&t.db, &t.name);
                if !created.contains(&name) && !seed.unknown.contains(&name) {
                    seed.unknown.push(name);
                }
                seed.pending.push(Pending {
                    file: seed.at.0.clone(),
                    end: seed.at.1,
                    table: t.clone(),
                });
            }
        }
        return Ok(seed);
    }
    Err(SourceError::Unsupported(format!(
        "DDL kept landing on captured tables while binsync read their definitions ({SEED_ATTEMPTS} tries); start binsync again once the schema changes are done"
    ))
    .into())
}

/// One DDL statement found by the scan.
#[derive(Debug, Clone)]
pub struct Found {
    pub file: String,
    /// Offset just past it.
    pub end: u64,
    /// A plain `CREATE TABLE` (not `IF NOT EXISTS`, not `OR REPLACE`): its first table did
    /// not exist before it.
    creates: bool,
    truncates: bool,
    pub tables: Vec<(String, String)>,
    /// The statement, for messages.
    pub statement: String,
    /// Its transaction's GTID, when the binlog has them.
    pub gtid: Option<Gtid>,
}

/// The newest binlog file whose head's GTID state (MySQL's Previous_gtids, MariaDB's
/// Gtid_list) `pos` covers: a stream starting at `pos` has nothing to read before it. None
/// when no head says (then the scan starts at the oldest file).
async fn first_file_after(
    conn: &mut Conn,
    src: &SourceConfig,
    logs: &[(String, u64)],
    pos: &GtidPos,
) -> Result<Option<String>> {
    for (file, _) in logs.iter().rev() {
        let head = super::history::events(conn, src, file, None, 2)
            .await
            .map_err(super::Failure::from)?;
        let state = head.iter().find_map(|e| {
            let kind = e.kind.to_ascii_lowercase();
            let text = e.info.trim().trim_start_matches('[').trim_end_matches(']');
            match kind.as_str() {
                "previous_gtids" | "gtid_list" => GtidPos::parse(pos.flavor(), text).ok(),
                _ => None,
            }
        });
        if state.is_some_and(|s| pos.covers(&s)) {
            return Ok(Some(file.clone()));
        }
    }
    Ok(None)
}

/// The DDL statements from `from` (file, offset) to the binlog's end now, in order.
pub async fn ddl_since(
    conn: &mut Conn,
    src: &SourceConfig,
    from: (String, u64),
) -> Result<Vec<Found>> {
    let (file, pos, _) = super::master_status(conn, src).await?;
    let scan = ddl_between(conn, src, &from, &(file, pos)).await?;
    match scan.unreadable_at {
        None => Ok(scan.found),
        Some((f, o)) => Err(SourceError::Unsupported(format!(
            "cannot read the binlog at {f}:{o} to find the DDL since the checkpoint (an event larger than the source's max_allowed_packet); raise max_allowed_packet on the source, then refresh again"
        ))
        .into()),
    }
}

/// The seed as valid at the scan's start (see [`seed`]).
fn settle(mut catalog: Catalog, found: &[Found], filter: &Filter, at: (String, u64)) -> Seed {
    let seeded = catalog.clone();
    let mut decided: std::collections::HashSet<(String, String)> = Default::default();
    let mut last: std::collections::HashMap<(String, String), (String, u64)> = Default::default();
    let mut unknown = Vec::new();
    for f in found {
        for (i, name) in f.tables.iter().enumerate() {
            if !filter.matches(&name.0, &name.1) || f.truncates {
                continue;
            }
            if decided.insert(name.clone()) {
                catalog.remove(&name.0, &name.1);
                if !(f.creates && i == 0) {
                    unknown.push(name.clone());
                }
            }
            last.insert(name.clone(), (f.file.clone(), f.end));
        }
    }
    let mut pending = Vec::new();
    for name in &unknown {
        // Gone by now (dropped, renamed away): nothing to install; it stays unknown.
        if let (Some(table), Some((file, end))) = (seeded.table(&name.0, &name.1), last.get(name)) {
            pending.push(Pending {
                file: file.clone(),
                end: *end,
                table: table.clone(),
            });
        }
    }
    Seed {
        catalog,
        pending,
        unknown,
        at,
    }
}

/// The DDL statements in the binlog from `from` to `to` (file, offset), in order.
async fn ddl_between(
    conn: &mut Conn,
    src: &SourceConfig,
    from: &(String, u64),
    to: &(String, u64),
) -> Result<Scan> {
    let logs = super::binary_logs(conn, src).await?;
    let first = binlog_order(&from.0, 0);
    let last = binlog_order(&to.0, 0);
    let mut found = Vec::new();
    let (mut scanned_bytes, mut scanned_files) = (0u64, 0usize);
    let mut gtid: Option<Gtid> = None;
    for (file, size) in logs {
        let order = binlog_order(&file, 0);
        if order < first || order > last {
            continue;
        }
        let mut at = if file == from.0 {
            Some(from.1.max(4))
        } else {
            None
        };
        let mut page = SCAN_PAGE;
        loop {
            let rows = match super::history::events(conn, src, &file, at, page).await {
                Ok(rows) => rows,
                // An event larger than the session's max_allowed_packet (which a client
                // cannot raise) is refused with the page it is in: read up to it in smaller
                // pages, then stop there.
                Err(super::history::EventsError::Unreadable(_)) if page > 1 => {
                    page /= 2;
                    continue;
                }
                Err(super::history::EventsError::Unreadable(e)) => {
                    let here = at.unwrap_or(4);
                    tracing::warn!(file = %file, offset = here, error = %e, "the seed's scan for DDL cannot read the binlog past this event (larger than max_allowed_packet?)");
                    return Ok(Scan {
                        found,
                        unreadable_at: Some((file, here)),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            let n = rows.len();
            for row in &rows {
                if file == to.0 && row.end > to.1 {
                    break;
                }
                if row.kind.to_ascii_lowercase().contains("gtid") {
                    gtid = gtid_of(&row.kind, &row.info);
                } else if row.kind.eq_ignore_ascii_case("Query") {
                    if let Some(mut f) = classify_statement(&file, row.end, &row.info) {
                        f.gtid = gtid.clone();
                        found.push(f);
                    }
                }
            }
            match rows.last() {
                Some(r) if n as u32 == page && !(file == to.0 && r.end >= to.1) => {
                    at = Some(r.end);
                    page = SCAN_PAGE;
                }
                _ => break,
            }
        }
        // (Whole files, as SHOW BINARY LOGS sizes them: an upper bound of what was read.)
        scanned_bytes += size;
        scanned_files += 1;
    }
    if scanned_files > 0 {
        tracing::info!(files = scanned_files, up_to = %crate::units::bytes(scanned_bytes), "scanned the binlog for DDL between the start and the schema history's seed");
    }
    Ok(Scan {
        found,
        unreadable_at: None,
    })
}

/// What [`ddl_between`] found.
pub struct Scan {
    pub found: Vec<Found>,
    /// Where an event the scan could not read stopped it (file, offset of the event).
    pub unreadable_at: Option<(String, u64)>,
}

/// A `Query` event's text (`use `db`; STATEMENT` when a default database was set), if it
/// is DDL.
fn classify_statement(file: &str, end: u64, info: &str) -> Option<Found> {
    let (db, sql) = match info.strip_prefix("use `") {
        Some(rest) => {
            let close = rest.find("`; ")?;
            (rest[..close].replace("``", "`"), &rest[close + 3..])
        }
        None => (String::new(), info),
    };
    let words: Vec<String> = sql
        .split_whitespace()
        .take(6)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let first = words.first()?.as_str();
    if !["CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE"].contains(&first) {
        return None;
    }
    let tables = ddl::tables_in_tokens(sql, &db);
    if tables.is_empty() {
        return None;
    }
    let creates = first == "CREATE"
        && words.get(1).is_some_and(|w| w == "TABLE")
        && words.get(2).is_none_or(|w| w != "IF");
    Some(Found {
        file: file.to_string(),
        end,
        creates,
        truncates: first == "TRUNCATE",
        tables,
        statement: sql.chars().take(200).collect(),
        gtid: None,
    })
}

/// The GTID a `SHOW BINLOG EVENTS` row of a GTID event names: MySQL's `Gtid` rows say
/// `SET @@SESSION.GTID_NEXT= 'uuid[:tag]:n'`, MariaDB's `BEGIN GTID d-s-n` or `GTID d-s-n`.
/// None for anonymous ones and what does not read as a GTID.
fn gtid_of(kind: &str, info: &str) -> Option<Gtid> {
    let kind = kind.to_ascii_lowercase();
    // Gtid, Gtid_tagged_log (MySQL 8.4); not Anonymous_Gtid, Previous_gtids, Gtid_list.
    if kind.starts_with("gtid") && kind != "gtid_list" {
        if let Some(quoted) = info.split('\'').nth(1) {
            return MysqlGtid::parse(quoted).ok().map(Gtid::Mysql);
        }
        let last = info.split_whitespace().last()?;
        return MariaGtid::parse(last).ok().map(Gtid::Mariadb);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(file: &str, end: u64, info: &str) -> Found {
        classify_statement(file, end, info).unwrap_or_else(|| panic!("not DDL: {info}"))
    }

    fn seeded(tables: &[&str]) -> Catalog {
        let mut c = Catalog::default();
        for t in tables {
            ddl::apply(
                &mut c,
                "app",
                &format!("CREATE TABLE {t} (id INT PRIMARY KEY, n INT)"),
            )
            .unwrap();
        }
        c
    }

    #[test]
    fn statements_are_read_from_show_binlog_events() {
        let f = found("b.000001", 300, "use `app`; CREATE TABLE t (id INT)");
        assert!(f.creates && !f.truncates);
        assert_eq!(f.tables, [("app".to_string(), "t".to_string())]);
        let f = found("b.000001", 300, "CREATE TABLE IF NOT EXISTS app.t (id INT)");
        assert!(!f.creates, "IF NOT EXISTS may meet the table");
        let f = found("b.000001", 300, "use `a``b`; TRUNCATE TABLE t");
        assert!(f.truncates && !f.creates);
        assert_eq!(f.tables[0].0, "a`b");
        assert!(!found("b.000001", 300, "ALTER TABLE app.t ADD n INT").creates);
        assert!(
            classify_statement("b.000001", 300, "use `app`; INSERT INTO t VALUES (1)").is_none()
        );
        assert!(classify_statement("b.000001", 300, "BEGIN").is_none());
        assert!(classify_statement("b.000001", 300, "CREATE DATABASE app").is_none());
    }

    #[test]
    fn the_seed_holds_at_the_start_only_where_no_ddl_came_between() {
        let filter = Filter::new(&["app.*".into()], &[]).unwrap();
        let found = vec![
            // Created in the range: the stream's CREATE defines it.
            found("b.000001", 100, "use `app`; CREATE TABLE created (id INT)"),
            found("b.000001", 200, "use `app`; ALTER TABLE created ADD n INT"),
            // Changed in the range: unknown until its last DDL there.
            found("b.000001", 300, "use `app`; ALTER TABLE altered ADD n INT"),
            found("b.000002", 400, "use `app`; ALTER TABLE altered ADD m INT"),
            // Emptied only: its definition did not change.
            found("b.000002", 500, "use `app`; TRUNCATE TABLE emptied"),
            // Not captured.
            found("b.000002", 600, "use `other`; ALTER TABLE x ADD n INT"),
            // Dropped in the range: unknown, and nothing to install.
            found("b.000002", 700, "use `app`; DROP TABLE gone"),
        ];
        let catalog = seeded(&["created", "altered", "emptied", "still"]);
        let seed = settle(catalog, &found, &filter, ("b.000002".into(), 800));
        let names: Vec<&str> = seed
            .catalog
            .tables
            .keys()
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(names, ["emptied", "still"]);
        assert_eq!(
            seed.unknown,
            [
                ("app".into(), "altered".into()),
                ("app".into(), "gone".into())
            ]
        );
        assert_eq!(seed.pending.len(), 1);
        let p = &seed.pending[0];
        assert_eq!(
            (p.file.as_str(), p.end, p.table.name.as_str()),
            ("b.000002", 400, "altered")
        );
    }
}
