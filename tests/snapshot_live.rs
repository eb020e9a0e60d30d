//! Issue 12 on a real MariaDB: the snapshot through `binsync run`, handed over to the binlog
//! with no gap and no duplicate. Every scenario rebuilds the receiver's state from the sink
//! with the contract's apply rule (per id the highest `seq`; `snapshot_end` and `truncate` set
//! the entity type's floor) and compares it with the source's tables row by row.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::workload::{canonical_id, source_state, State, Writer};
use common::{wait_until, MariaDb, Proc, ServerOpts};
use serde_json::Value;

const SNAPSHOT_DEFAULT: (&str, &str) = ("BINSYNC_SNAPSHOT", "when-needed");

fn spawn(db: &MariaDb, state: &Path, out: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Proc {
    let url = db.url();
    let state = state.display().to_string();
    let sink = format!("file:{}", out.display());
    let mut args = vec![
        "run",
        "--source",
        &url,
        "--server-id",
        "4601",
        "--state-dir",
        &state,
        "--sink",
        &sink,
    ];
    args.extend(extra);
    Proc::spawn(&args, envs)
}

/// The sink's operations, parsed, in file order.
fn lines(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

/// What a receiver applying the contract's rule holds: `(table, id) -> after`.
fn applied(ops: &[Value]) -> State {
    let mut rows: BTreeMap<(String, String), (u64, Option<Value>)> = BTreeMap::new();
    let mut floor: BTreeMap<String, u64> = BTreeMap::new();
    for op in ops {
        let seq = op["seq"].as_u64().unwrap();
        let table = op["table"].as_str().unwrap().to_string();
        let kind = op["op"].as_str().unwrap();
        // Rows last written at or below it are gone (the contract's floor).
        let gone_below = match kind {
            "snapshot_end" => Some(op["since"].as_u64().unwrap()),
            "truncate" | "drop" => Some(seq),
            _ => None,
        };
        if let Some(s) = gone_below {
            let f = floor.entry(table.clone()).or_default();
            if s > *f {
                *f = s;
                rows.retain(|(t, _), (rs, _)| *t != table || *rs > s);
            }
            continue;
        }
        if kind == "ddl" {
            continue;
        }
        if seq <= floor.get(&table).copied().unwrap_or(0) {
            continue;
        }
        let key = (table, canonical_id(&op["id"]));
        if rows.get(&key).is_some_and(|(s, _)| *s >= seq) {
            continue;
        }
        let after = (kind != "delete").then(|| op["after"].clone());
        rows.insert(key, (seq, after));
    }
    rows.into_iter()
        .filter_map(|(k, (_, v))| v.map(|v| (k, v)))
        .collect()
}

fn load_rows(db: &MariaDb, n: u64) {
    db.sql(common::workload::SCHEMA);
    let mut i = 0;
    while i < n {
        let end = (i + 5000).min(n);
        let values: Vec<String> = (i..end).map(|k| format!("({k}, {k}, 's{k}')")).collect();
        db.sql(&format!("INSERT INTO t.items VALUES {}", values.join(",")));
        let pairs: Vec<String> = (i..end)
            .map(|k| format!("({}, {}, {k})", k / 100, k % 100))
            .collect();
        db.sql(&format!("INSERT INTO t.pairs VALUES {}", pairs.join(",")));
        i = end;
    }
}

fn assert_same(db: &MariaDb, ops: &[Value]) {
    let want = source_state(db);
    let got = applied(ops);
    if want != got {
        let missing: Vec<_> = want
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !want.contains_key(*k))
            .take(5)
            .collect();
        let differ: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .take(5)
            .collect();
        panic!(
            "receiver state differs from the source: {} rows vs {}; missing {missing:?}, extra {extra:?}, differing {differ:?}",
            got.len(),
            want.len()
        );
    }
}

fn server() -> MariaDb {
    MariaDb::start(ServerOpts::default())
}

#[test]
fn a_first_start_loads_existing_rows_then_streams() {
    let db = server();
    load_rows(&db, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let mut run = spawn(&db, &state, &out, &["--exit-at-end"], &[SNAPSHOT_DEFAULT]);
    let status = run
        .wait_timeout(Duration::from_secs(120))
        .expect("run ends");
    assert!(status.success(), "{}", run.stderr());
    let ops = lines(&out);
    let reads = ops.iter().filter(|o| o["op"] == "read").count();
    assert_eq!(reads, 40_000, "{}", run.stderr());
    let ends: Vec<&Value> = ops.iter().filter(|o| o["op"] == "snapshot_end").collect();
    assert_eq!(ends.len(), 2);
    // seq grows through the file; every read of a table is above its snapshot_end's since.
    let seqs: Vec<u64> = ops.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq must grow");
    for end in &ends {
        let since = end["since"].as_u64().unwrap();
        assert!(ops
            .iter()
            .filter(|o| o["op"] == "read" && o["table"] == end["table"])
            .all(|o| o["seq"].as_u64().unwrap() > since));
    }
    assert_same(&db, &ops);

    // Streaming goes on from where the snapshot left: new changes, no snapshot again.
    db.sql("INSERT INTO t.items VALUES (999999, 1, 'new'); DELETE FROM t.items WHERE id = 5");
    let mut run = spawn(&db, &state, &out, &["--exit-at-end"], &[SNAPSHOT_DEFAULT]);
    let status = run
        .wait_timeout(Duration::from_secs(120))
        .expect("run ends");
    assert!(status.success(), "{}", run.stderr());
    let ops = lines(&out);
    assert_eq!(ops.iter().filter(|o| o["op"] == "read").count(), 40_000);
    assert_same(&db, &ops);
}

#[test]
fn a_snapshot_under_a_writer_ends_equal_to_the_source() {
    let db = server();
    load_rows(&db, 30_000);
    let writer = Writer::start(&db, Duration::from_millis(2));
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let mut run = spawn(&db, &state, &out, &[], &[SNAPSHOT_DEFAULT]);
    wait_until(Duration::from_secs(120), "the snapshot ends", || {
        lines(&out)
            .iter()
            .filter(|o| o["op"] == "snapshot_end")
            .count()
            == 2
    });
    let committed = writer.finish();
    assert!(committed > 10, "the writer committed {committed}");
    let end = db.binlog_position();
    let _ = end;
    // Let the stream catch up with the writer's last commit, then stop.
    let last_gtid = db.gtid_binlog_pos();
    wait_until(Duration::from_secs(60), "caught up", || {
        std::fs::read_to_string(state.join("status.json")).is_ok_and(|s| s.contains(&last_gtid))
    });
    run.sigterm();
    run.wait_timeout(Duration::from_secs(30)).expect("stops");
    assert_same(&db, &lines(&out));
}
