//! Shared by the `snapshot_*` tests: a table's rows as the binlog decoder writes them (from
//! `binsync run --exit-at-end`) and as the snapshot reader reads them, both as raw JSON text.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use binsync::snapshot::{prepare_session, ChunkBuf, ChunkInfo, ChunkReader, TablePlan};

use crate::common::{MariaDb, Proc};

/// One line of binsync's output, with the raw text of the fields the tests compare.
#[derive(Debug, Clone)]
pub struct Line {
    pub op: String,
    pub table: String,
    pub file: String,
    pub offset: u64,
    /// The raw text of `id` and `after` (None for a delete).
    pub id: String,
    pub after: Option<String>,
}

/// The raw JSON text of the value at `text[at..]`.
fn raw_value(text: &str, at: usize) -> &str {
    let mut it = serde_json::Deserializer::from_str(&text[at..]).into_iter::<serde_json::Value>();
    it.next().expect("a value").expect("valid JSON");
    &text[at..at + it.byte_offset()]
}

pub fn parse_line(l: &str) -> Line {
    let v: serde_json::Value =
        serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}"));
    let id_at = l.find("\"id\":").expect("an id") + 5;
    let after = l
        .rfind(",\"after\":")
        .map(|at| raw_value(l, at + 9).to_string());
    Line {
        op: v["op"].as_str().unwrap().to_string(),
        table: v["table"].as_str().unwrap_or_default().to_string(),
        file: v["file"].as_str().unwrap_or_default().to_string(),
        offset: v["offset"].as_u64().unwrap_or_default(),
        id: raw_value(l, id_at).to_string(),
        after,
    }
}

/// Every row operation in the server's binlog, decoded by `binsync run --exit-at-end`.
pub fn binlog_lines(db: &MariaDb) -> Vec<Line> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("changes.jsonl");
    let state = dir.path().join("state");
    let mut p = Proc::spawn(
        &[
            "run",
            "--source",
            &db.url(),
            "--server-id",
            "777",
            "--state-dir",
            state.to_str().unwrap(),
            "--sink",
            &format!("file:{}", out.display()),
            "--start",
            "earliest",
            "--exit-at-end",
        ],
        &[],
    );
    let status = p
        .wait_timeout(Duration::from_secs(120))
        .expect("binsync --exit-at-end did not return");
    assert!(status.success(), "binsync failed: {}", p.stderr());
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter(|l| {
            ["insert", "update", "delete"]
                .iter()
                .any(|op| l.contains(&format!("\"op\":\"{op}\"")))
        })
        .map(parse_line)
        .collect()
}

/// A table's rows (id text -> after text) after the binlog operations `keep` accepts.
pub fn state_of(
    lines: &[Line],
    table: &str,
    keep: impl Fn(&Line) -> bool,
) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for l in lines.iter().filter(|l| l.table == table && keep(l)) {
        match &l.after {
            Some(after) => {
                state.insert(l.id.clone(), after.clone());
            }
            None => {
                state.remove(&l.id);
            }
        }
    }
    state
}

/// One chunk as read: where it is as of, and its rows (id text, after text) in key order.
pub struct ReadChunk {
    pub info: ChunkInfo,
    pub rows: Vec<(String, String)>,
}

pub async fn connect(db: &MariaDb) -> mysql_async::Conn {
    mysql_async::Conn::from_url(db.url()).await.unwrap()
}

/// Reads `db.table` chunk by chunk, `limit` rows at a time, calling `between` after each
/// chunk (to write meanwhile).
pub async fn read_table(
    db: &MariaDb,
    schema: &str,
    table: &str,
    limit: u32,
    mut between: impl FnMut(usize),
) -> Vec<ReadChunk> {
    let mut conn = connect(db).await;
    let flavor = prepare_session(&mut conn).await.unwrap();
    let plan = TablePlan::load(&mut conn, schema, table, None, None)
        .await
        .unwrap();
    let mut reader = ChunkReader::start(&mut conn, plan, flavor).await.unwrap();
    let mut buf = ChunkBuf::default();
    let mut chunks = Vec::new();
    while let Some(info) = reader.read_next(&mut conn, limit, &mut buf).await.unwrap() {
        let rows = (0..buf.rows.len())
            .map(|i| {
                (
                    String::from_utf8(buf.id(i).to_vec()).unwrap(),
                    String::from_utf8(buf.after(i).to_vec()).unwrap(),
                )
            })
            .collect();
        chunks.push(ReadChunk { info, rows });
        between(chunks.len());
    }
    chunks
}
