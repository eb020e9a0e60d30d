//! Reading a table in chunks by its key, each chunk in a short consistent-snapshot
//! transaction that also gives the exact binlog position the chunk's rows are as of.
//!
//! The queries (keyset pagination, bounded at both ends):
//!
//! ```sql
//! SELECT <every column> FROM `db`.`t` FORCE INDEX (`PRIMARY`)
//! WHERE k1 >= ? AND (k1 > ? OR (k1 = ? AND k2 > ?))      -- after the previous chunk's last key
//!   AND k1 <= ? AND (k1 < ? OR (k1 = ? AND k2 <= ?))     -- up to the table's last key at the start
//! ORDER BY k1, k2 LIMIT ?
//! ```
//!
//! The first chunk has no lower bound. Comparisons are spelled out, not written as row
//! constructors: MariaDB 10.11 plans `(k1,k2) > (?,?)` as a full index scan (EXPLAIN
//! `type=index`), the spelled-out form as a range on the key (`type=range`); the redundant
//! `k1 >= ?` / `k1 <= ?` give the range optimizer the leading column's interval outright.
//!
//! Bound values are the server's own values of the previous chunk's last row and of the
//! table's last key, bound back as parameters of their own type. Text keys arrive as raw bytes
//! in their column's charset (see `encode`) and go back as hex, so that no conversion from
//! `character_set_client` can touch them (a latin1 `é` is not valid utf8mb4); their
//! placeholder is `CONVERT(UNHEX(?) USING <charset>) COLLATE <column's collation>`: the bytes
//! are reinterpreted, not converted, and compared in the column's own collation, which the
//! index is ordered by. DECIMAL placeholders are `CAST(? AS DECIMAL(p,s))` (a string compared with
//! a DECIMAL would be compared as a double).
//!
//! Invariants:
//! - Every query is bounded above by the table's greatest key when its snapshot started, so
//!   no chunk grows with rows inserted meanwhile (those come from the binlog) and the last
//!   chunk is no larger than any other.
//! - A chunk's rows are exactly the table's rows in its key range as of the chunk's
//!   [`SnapshotPosition`]: the read view and the position are taken together by
//!   `START TRANSACTION WITH CONSISTENT SNAPSHOT` (MariaDB's `binlog_snapshot_file` /
//!   `binlog_snapshot_position` are the binlog position of that read view).
//! - The transaction holds no locks (a consistent read) and lasts one chunk.
//! - After an error the connection may be inside the chunk's transaction: drop it.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};

use super::encode::write_value;
use super::plan::{Kind, TablePlan};
use super::SnapshotError;
use crate::decode::schema::TextKind;
use crate::gtid::Flavor;

/// Where in the binlog a chunk's rows are as of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPosition {
    /// The binlog file and offset of the chunk's read view (MariaDB). For MySQL, which has no
    /// such status variables, the file and offset are empty and `gtid` says it.
    pub file: String,
    pub offset: u64,
    /// MySQL: `@@global.gtid_executed` read just before the transaction started (see
    /// `read_position`). MariaDB: None (10.11 has no `binlog_snapshot_gtid`; the GTID state
    /// at `file:offset` is `BINLOG_GTID_POS(file, offset)`, which reads the binlog file, so it
    /// is left to whoever needs it).
    pub gtid: Option<String>,
}

/// One chunk's rows, encoded: one buffer for all of them, reused chunk after chunk.
#[derive(Debug, Default)]
pub struct ChunkBuf {
    /// Every row's `after` object then its `id` object, row after row.
    pub buf: Vec<u8>,
    pub rows: Vec<RowSpans>,
    /// Per column: where its value text is in `buf` (the current row only).
    spans: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSpans {
    pub after: (u32, u32),
    pub id: (u32, u32),
}

impl ChunkBuf {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.rows.clear();
    }

    pub fn after(&self, row: usize) -> &[u8] {
        let (s, e) = self.rows[row].after;
        &self.buf[s as usize..e as usize]
    }

    pub fn id(&self, row: usize) -> &[u8] {
        let (s, e) = self.rows[row].id;
        &self.buf[s as usize..e as usize]
    }
}

/// What reading one chunk gave.
#[derive(Debug, Clone)]
pub struct ChunkInfo {
    pub position: SnapshotPosition,
    pub rows: usize,
    /// How long the chunk's transaction took.
    pub took: Duration,
    /// The table has no rows left after this chunk (within its snapshot's upper bound).
    pub last: bool,
}

/// Reads one table's chunks in key order.
pub struct ChunkReader {
    plan: TablePlan,
    flavor: Flavor,
    /// The table's greatest key (the upper bound), read in the first chunk's transaction.
    max_sql: String,
    select_first: String,
    select_next: String,
    /// Which key column each placeholder of the lower and upper bounds takes.
    lower_params: Vec<usize>,
    upper_params: Vec<usize>,
    /// The table's greatest key as of the first chunk (None: not read yet).
    upper: Option<Vec<Value>>,
    /// The last key read so far (None: no chunk yet).
    after: Option<Vec<Value>>,
    done: bool,
}

/// Sets what the session must be for values to come out as the decoder writes them (see
/// `encode`) and for a consistent snapshot: UTC, strings in their own charset, REPEATABLE READ.
pub async fn prepare_session(conn: &mut Conn) -> Result<Flavor, SnapshotError> {
    conn.query_drop("SET SESSION time_zone = '+00:00', SESSION character_set_results = NULL")
        .await?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
    Ok(match version {
        Some(v) if v.contains("MariaDB") => Flavor::Mariadb,
        _ => Flavor::Mysql,
    })
}

impl ChunkReader {
    /// Prepares the table's chunk queries. The snapshot's upper bound, the table's greatest
    /// key, is read inside the first chunk's transaction, so it is the greatest key as of that
    /// chunk's binlog position: a row inserted later has a binlog change after that position.
    /// The session must have been prepared with [`prepare_session`].
    pub async fn start(
        _conn: &mut Conn,
        plan: TablePlan,
        flavor: Flavor,
    ) -> Result<ChunkReader, SnapshotError> {
        let key = plan.page_key.clone();
        let names: Vec<String> = key.iter().map(|&k| quote(&plan.columns[k].name)).collect();
        let from = from_clause(&plan);
        let max_sql = format!(
            "SELECT {} FROM {from} ORDER BY {} LIMIT 1",
            names.join(", "),
            names
                .iter()
                .map(|n| format!("{n} DESC"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let binds: Vec<String> = key.iter().map(|&k| placeholder(&plan, k)).collect();
        let (upper_sql, upper_params) = bound(&names, &binds, Bound::AtMost);
        let (lower_sql, lower_params) = bound(&names, &binds, Bound::After);
        let cols: Vec<String> = plan.columns.iter().map(|c| quote(&c.name)).collect();
        let order = names.join(", ");
        let select_first = format!(
            "SELECT {} FROM {from} WHERE {upper_sql} ORDER BY {order} LIMIT ?",
            cols.join(", ")
        );
        let select_next = format!(
            "SELECT {} FROM {from} WHERE {lower_sql} AND {upper_sql} ORDER BY {order} LIMIT ?",
            cols.join(", ")
        );
        Ok(ChunkReader {
            done: false,
            plan,
            flavor,
            max_sql,
            select_first,
            select_next,
            lower_params,
            upper_params,
            upper: None,
            after: None,
        })
    }

    pub fn plan(&self) -> &TablePlan {
        &self.plan
    }

    /// The last key read so far, as the server's values (a resume point).
    pub fn last_key(&self) -> Option<&[Value]> {
        self.after.as_deref()
    }

    /// Resumes after `key` (a [`Self::last_key`] of an earlier reader of the same table).
    pub fn resume_after(&mut self, key: Vec<Value>) {
        self.after = Some(key);
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next chunk's query and its parameters (None when the table is done or its upper
    /// bound is not read yet): for EXPLAIN.
    pub fn next_chunk_query(&self, limit: u32) -> Option<(&str, Vec<Value>)> {
        match &self.upper {
            Some(upper) if !self.done => Some(self.next_query(upper, limit)),
            _ => None,
        }
    }

    /// Key column `k`'s value of `key` as its placeholder takes it: strings as hex text.
    fn param(&self, key: &[Value], k: usize) -> Value {
        match (&self.plan.columns[self.plan.page_key[k]].kind, &key[k]) {
            (Kind::Text(_), Value::Bytes(b)) => {
                let mut hex = Vec::with_capacity(b.len() * 2);
                for &x in b {
                    hex.push(HEX[(x >> 4) as usize]);
                    hex.push(HEX[(x & 15) as usize]);
                }
                Value::Bytes(hex)
            }
            (_, v) => v.clone(),
        }
    }

    fn next_query(&self, upper: &[Value], limit: u32) -> (&str, Vec<Value>) {
        let mut params: Vec<Value> = Vec::new();
        let sql = match &self.after {
            None => &self.select_first,
            Some(after) => {
                params.extend(self.lower_params.iter().map(|&k| self.param(after, k)));
                &self.select_next
            }
        };
        params.extend(self.upper_params.iter().map(|&k| self.param(upper, k)));
        params.push(Value::UInt(limit as u64));
        (sql, params)
    }

    /// Reads the next chunk of at most `limit` rows into `out` (cleared first). `None` when
    /// the table is done.
    pub async fn read_next(
        &mut self,
        conn: &mut Conn,
        limit: u32,
        out: &mut ChunkBuf,
    ) -> Result<Option<ChunkInfo>, SnapshotError> {
        out.clear();
        if self.done {
            return Ok(None);
        }
        let limit = limit.max(1);
        let started = Instant::now();
        let gtid_before = match self.flavor {
            Flavor::Mysql => conn.query_first("SELECT @@GLOBAL.gtid_executed").await?,
            Flavor::Mariadb => None,
        };
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await?;
        let position = read_position(conn, self.flavor, gtid_before).await?;
        if self.upper.is_none() {
            let upper: Option<mysql_async::Row> =
                conn.exec_first(self.max_sql.as_str(), ()).await?;
            match upper {
                Some(r) => self.upper = Some(r.unwrap()),
                None => {
                    // Empty as of this position: every row comes from the binlog after it.
                    conn.query_drop("COMMIT").await?;
                    self.done = true;
                    return Ok(Some(ChunkInfo {
                        position,
                        rows: 0,
                        took: started.elapsed(),
                        last: true,
                    }));
                }
            }
        }
        let upper = self.upper.clone().expect("read above");
        let (sql, params) = self.next_query(&upper, limit);
        let stmt = conn.prep(sql).await?;
        let mut last: Option<mysql_async::Row> = None;
        {
            let mut result = conn.exec_iter(&stmt, Params::Positional(params)).await?;
            while let Some(row) = result.next().await? {
                encode_row(&self.plan, &row, out)?;
                last = Some(row);
            }
        }
        conn.query_drop("COMMIT").await?;
        let took = started.elapsed();

        let rows = out.rows.len();
        let mut last_key_is_upper = false;
        if let Some(mut row) = last {
            let key: Vec<Value> = self
                .plan
                .page_key
                .iter()
                .map(|&k| row.take(k).unwrap_or(Value::NULL))
                .collect();
            last_key_is_upper = key == upper;
            self.after = Some(key);
        }
        self.done = rows < limit as usize || last_key_is_upper;
        Ok(Some(ChunkInfo {
            position,
            rows,
            took,
            last: self.done,
        }))
    }
}

/// The chunk's binlog position, read inside its transaction.
///
/// MariaDB: `binlog_snapshot_file`/`_position` are the position of the read view itself.
///
/// MySQL has no such variables. `gtid_executed` is read just *before* the transaction starts:
/// MySQL adds a transaction's GTID to it after the transaction's InnoDB commit, so every GTID
/// in it belongs to a transaction the read view opened next sees. A transaction that commits
/// between the two statements is seen by the chunk yet not in the set, so the stream
/// delivers its changes after the chunk once more, which applying by `seq` makes harmless.
/// Read inside the transaction, instead, the set could name a transaction whose rows the read
/// view misses, and the chunk would then overwrite that transaction's changes with older rows.
/// (Not tested against a real MySQL: the test double serves no snapshots.)
async fn read_position(
    conn: &mut Conn,
    flavor: Flavor,
    gtid_before: Option<String>,
) -> Result<SnapshotPosition, SnapshotError> {
    match flavor {
        Flavor::Mysql => Ok(SnapshotPosition {
            file: String::new(),
            offset: 0,
            gtid: gtid_before,
        }),
        Flavor::Mariadb => {
            let status: Vec<(String, String)> =
                conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
            let get = |name: &str| {
                status
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            match (
                get("binlog_snapshot_file"),
                get("binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok()),
            ) {
                (Some(file), Some(offset)) if !file.is_empty() => Ok(SnapshotPosition {
                    file,
                    offset,
                    gtid: None,
                }),
                _ => Err(SnapshotError::NoSnapshotPosition),
            }
        }
    }
}

/// Writes one row's `after` object and `id` object into `out`.
fn encode_row(
    plan: &TablePlan,
    row: &mysql_async::Row,
    out: &mut ChunkBuf,
) -> Result<(), SnapshotError> {
    let buf = &mut out.buf;
    let start = buf.len();
    out.spans.clear();
    buf.push(b'{');
    for (i, col) in plan.columns.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(&col.json_key);
        let at = buf.len();
        let v = row.as_ref(i).ok_or_else(|| SnapshotError::Value {
            table: plan.qualified(),
            column: col.name.clone(),
            detail: "missing from the result".into(),
        })?;
        write_value(&col.kind, v, buf).map_err(|detail| SnapshotError::Value {
            table: plan.qualified(),
            column: col.name.clone(),
            detail,
        })?;
        out.spans.push((at as u32, buf.len() as u32));
    }
    buf.push(b'}');
    let after = (start as u32, buf.len() as u32);
    let id_start = buf.len();
    buf.push(b'{');
    for (n, &k) in plan.id.iter().enumerate() {
        if n > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(&plan.columns[k].json_key);
        let (s, e) = out.spans[k];
        buf.extend_from_within(s as usize..e as usize);
    }
    buf.push(b'}');
    if buf.len() > u32::MAX as usize {
        return Err(SnapshotError::TooLarge {
            table: plan.qualified(),
        });
    }
    out.rows.push(RowSpans {
        after,
        id: (id_start as u32, buf.len() as u32),
    });
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// `` `name` ``, with backticks in the name doubled.
pub(crate) fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn from_clause(plan: &TablePlan) -> String {
    let mut s = format!("{}.{}", quote(&plan.db), quote(&plan.table));
    if !plan.page_index.is_empty() {
        s.push_str(&format!(" FORCE INDEX ({})", quote(&plan.page_index)));
    }
    s
}

/// The placeholder of key column `k`, so its value compares in the column's own type and
/// collation (module docs).
fn placeholder(plan: &TablePlan, k: usize) -> String {
    let col = &plan.columns[k];
    match &col.kind {
        Kind::Text(TextKind::Binary) => "UNHEX(?)".into(),
        Kind::Text(_) => match (&col.charset, &col.collation) {
            (Some(cs), Some(coll)) => format!("CONVERT(UNHEX(?) USING {cs}) COLLATE {coll}"),
            _ => "UNHEX(?)".into(),
        },
        Kind::Decimal { precision, scale } => format!("CAST(? AS DECIMAL({precision},{scale}))"),
        _ => "?".into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// Strictly after the given key.
    After,
    /// Up to and including the given key.
    AtMost,
}

/// The condition `key > bound` or `key <= bound` over columns `names` (already quoted) with
/// placeholders `binds`, spelled out (module docs), and which key column each `?` takes.
pub(crate) fn bound(names: &[String], binds: &[String], which: Bound) -> (String, Vec<usize>) {
    let (lead, strict, last) = match which {
        Bound::After => (">=", ">", ">"),
        Bound::AtMost => ("<=", "<", "<="),
    };
    let n = names.len();
    let mut params = Vec::new();
    if n == 1 {
        params.push(0);
        return (format!("{} {last} {}", names[0], binds[0]), params);
    }
    let mut sql = format!("{} {lead} {} AND (", names[0], binds[0]);
    params.push(0);
    for i in 0..n {
        if i > 0 {
            sql.push_str(" OR ");
        }
        sql.push('(');
        for j in 0..i {
            sql.push_str(&format!("{} = {} AND ", names[j], binds[j]));
            params.push(j);
        }
        let op = if i == n - 1 { last } else { strict };
        sql.push_str(&format!("{} {op} {})", names[i], binds[i]));
        params.push(i);
    }
    sql.push(')');
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_column_bounds_are_plain_comparisons() {
        let (sql, p) = bound(&names(&["`id`"]), &names(&["?"]), Bound::After);
        assert_eq!(sql, "`id` > ?");
        assert_eq!(p, [0]);
        let (sql, _) = bound(&names(&["`id`"]), &names(&["?"]), Bound::AtMost);
        assert_eq!(sql, "`id` <= ?");
    }

    #[test]
    fn composite_bounds_are_spelled_out_with_the_leading_interval() {
        let (sql, p) = bound(
            &names(&["a", "b", "c"]),
            &names(&["?", "?", "?"]),
            Bound::After,
        );
        assert_eq!(
            sql,
            "a >= ? AND ((a > ?) OR (a = ? AND b > ?) OR (a = ? AND b = ? AND c > ?))"
        );
        assert_eq!(p, [0, 0, 0, 1, 0, 1, 2]);
        let (sql, p) = bound(&names(&["a", "b"]), &names(&["?", "X(?)"]), Bound::AtMost);
        assert_eq!(sql, "a <= ? AND ((a < ?) OR (a = ? AND b <= X(?)))");
        assert_eq!(p, [0, 0, 0, 1]);
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(quote("we`ird"), "`we``ird`");
    }
}
