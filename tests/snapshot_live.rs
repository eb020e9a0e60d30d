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

/// `binsync snapshot --table TABLE --state-dir STATE`, which must succeed.
fn request_snapshot(state: &Path, table: &str) {
    let state = state.display().to_string();
    let mut req = Proc::spawn(&["snapshot", "--table", table, "--state-dir", &state], &[]);
    let st = req.wait_timeout(Duration::from_secs(30)).expect("request");
    assert!(st.success(), "{}", req.stderr());
}

/// Rows of `table` the running process has handed on in its current snapshot, from the
/// state dir's `snapshot-status.json`.
fn handed_on(state: &Path, table: &str) -> u64 {
    let text = std::fs::read_to_string(state.join("snapshot-status.json")).unwrap_or_default();
    let tables: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
    tables
        .iter()
        .find(|t| {
            format!(
                "{}.{}",
                t["db"].as_str().unwrap_or(""),
                t["table"].as_str().unwrap_or("")
            ) == table
        })
        .and_then(|t| t["rows"].as_u64())
        .unwrap_or(0)
}

/// The sink's operations, parsed, in file order: its complete lines (a test polling while
/// binsync writes may see the last line half written; every complete line must parse).
fn lines(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
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
    common::workload::assert_same_state(&source_state(db), &applied(ops));
}

/// Panics naming a few rows missing, extra and differing when `got` is not `want`.
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

// ---------------------------------------------------------------------------------------------
// Faults, requests, deletions while away, DDL and key changes during a snapshot
// ---------------------------------------------------------------------------------------------

/// How many lines of the sink are `op` (a substring count: cheap while the file grows).
fn count_op(out: &Path, op: &str) -> usize {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .matches(&format!("\"op\":\"{op}\""))
        .count()
}

/// The tables a `snapshot_end` was delivered for, with how many each.
fn ends(out: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in lines(out).iter().filter(|o| o["op"] == "snapshot_end") {
        *m.entry(o["table"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

/// Per (table, id): the distinct `seq` values of its `read` lines (a line written again after
/// a crash has the same `seq`: one read).
fn reads_per_id(ops: &[Value]) -> BTreeMap<(String, String), std::collections::BTreeSet<u64>> {
    let mut m: BTreeMap<_, std::collections::BTreeSet<u64>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o["op"] == "read") {
        m.entry((
            o["table"].as_str().unwrap().to_string(),
            canonical_id(&o["id"]),
        ))
        .or_default()
        .insert(o["seq"].as_u64().unwrap());
    }
    m
}

/// Waits until the run's published checkpoint holds the source's last GTID.
fn wait_caught_up(db: &MariaDb, state: &Path) {
    let last_gtid = db.gtid_binlog_pos();
    wait_until(Duration::from_secs(60), "caught up", || {
        std::fs::read_to_string(state.join("status.json")).is_ok_and(|s| s.contains(&last_gtid))
    });
}

fn stop(run: &mut Proc) {
    run.sigterm();
    let status = run.wait_timeout(Duration::from_secs(30)).expect("stops");
    assert!(status.success(), "{}", run.stderr());
}

/// The `rows_done` of each `snapshot resuming` line of a run's stderr, per table.
fn resumed_rows(stderr: &str) -> Vec<(String, u64)> {
    stderr
        .lines()
        .filter(|l| l.contains("snapshot resuming after the last chunk delivered"))
        .map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {l}"))
                    .to_string()
            };
            (field("table="), field("rows_done=").parse().unwrap())
        })
        .collect()
}

/// A writer committing `sql(i)` for i = 0, 1, 2... until finished (errors are counted, not
/// retried: a statement the schema no longer accepts would show in `failed`).
struct SqlWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl SqlWriter {
    fn start(
        db: &MariaDb,
        pause: Duration,
        sql: impl Fn(u64) -> String + Send + 'static,
    ) -> SqlWriter {
        use mysql_async::prelude::Queryable;
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let url = db.url();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
                let (mut ok, mut failed) = (0, 0);
                let mut i = 0;
                while !s.load(Ordering::Relaxed) {
                    match conn.query_drop(sql(i)).await {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            eprintln!("writer: {e}");
                            failed += 1;
                        }
                    }
                    i += 1;
                    tokio::time::sleep(pause).await;
                }
                (ok, failed)
            })
        });
        SqlWriter {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops it: (committed, failed).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for SqlWriter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn kill_9_three_times_during_the_snapshot_resumes_at_the_next_chunk() {
    const N: u64 = 100_000;
    let db = server();
    load_rows(&db, N);
    let writer = Writer::start(&db, Duration::from_millis(5));
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let extra = ["--snapshot-rate", "20000"];
    let mut run = spawn(&db, &state, &out, &extra, &[SNAPSHOT_DEFAULT]);
    let mut had_progress = std::collections::BTreeSet::from(["t.items".to_string()]);
    // Kill inside a table each time (30% and 70% of t.items, 40% of t.pairs, as the running
    // process reports its chunks), so that every restart has a chunk of it to resume after:
    // a kill just after a table's first chunk would leave nothing saved to resume from.
    let points = [
        ("t.items", 30_000u64),
        ("t.items", 70_000),
        ("t.pairs", 40_000),
    ];
    for (k, (table, at)) in points.into_iter().enumerate() {
        wait_until(Duration::from_secs(120), "snapshot rows", || {
            handed_on(&state, table) >= at
        });
        // Let the checkpoint follow the chunks delivered.
        std::thread::sleep(Duration::from_millis(300));
        run.kill9();
        let killed_stderr = run.stderr();
        run = spawn(&db, &state, &out, &extra, &[SNAPSHOT_DEFAULT]);
        wait_until(Duration::from_secs(60), "the restart resumes", || {
            run.stderr().contains("snapshot resuming") || run.stderr().contains("snapshot starting")
        });
        let resumed = resumed_rows(&run.stderr());
        assert!(
            resumed.iter().any(|(_, rows)| *rows > 0),
            "restart {} did not resume from a chunk: {resumed:?}\n--- stderr ---\n{}\n--- killed run ---\n{killed_stderr}",
            k + 1,
            run.stderr()
        );
        // A table with progress saved is never started over (t.pairs may start fresh in a
        // restart: after t.items ends, or when no chunk of it was checkpointed yet).
        had_progress.extend(resumed.iter().map(|(t, _)| t.clone()));
        let started: Vec<String> = run
            .stderr()
            .lines()
            .filter(|l| l.contains("snapshot starting"))
            .map(str::to_string)
            .collect();
        for t in &had_progress {
            assert!(
                !started
                    .iter()
                    .any(|l| l.split_whitespace().any(|w| w == format!("table={t}"))),
                "restart {} started {t} over: {}",
                k + 1,
                run.stderr()
            );
        }
    }
    wait_until(Duration::from_secs(120), "the snapshot ends", || {
        let e = ends(&out);
        e.contains_key("items") && e.contains_key("pairs")
    });
    let committed = writer.finish();
    assert!(committed > 10, "the writer committed {committed}");
    wait_caught_up(&db, &state);
    stop(&mut run);
    let ops = lines(&out);
    let reads = reads_per_id(&ops);
    let more: Vec<_> = reads.iter().filter(|(_, s)| s.len() > 2).take(5).collect();
    assert!(
        more.is_empty(),
        "ids read more than twice (a chunk read from the start again): {more:?}"
    );
    for i in (0..N).step_by(997) {
        let id = canonical_id(&serde_json::json!({"a": i / 100, "b": i % 100}));
        assert!(
            reads.contains_key(&("pairs".to_string(), id)),
            "pairs {i} never read"
        );
    }
    assert_same(&db, &ops);
}

#[test]
fn sigterm_during_the_snapshot_then_restart_sends_no_row_twice() {
    const N: u64 = 50_000;
    let db = server();
    load_rows(&db, N);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let extra = ["--snapshot-rate", "20000"];
    let mut run = spawn(&db, &state, &out, &extra, &[SNAPSHOT_DEFAULT]);
    // Stop inside the first table, as the running process reports its chunks: a stop seen
    // only once the sink file holds 30,000 rows could land after the table's last chunk,
    // between tables, with nothing of either saved to resume from.
    wait_until(Duration::from_secs(120), "snapshot rows", || {
        handed_on(&state, "t.items") >= 10_000
    });
    stop(&mut run);
    let before = count_op(&out, "read");
    assert!(
        before < 2 * N as usize,
        "the snapshot ended before the stop"
    );
    let mut run = spawn(&db, &state, &out, &["--exit-at-end"], &[SNAPSHOT_DEFAULT]);
    let status = run
        .wait_timeout(Duration::from_secs(120))
        .expect("run ends");
    assert!(status.success(), "{}", run.stderr());
    assert!(
        resumed_rows(&run.stderr()).iter().any(|(_, r)| *r > 0),
        "{}",
        run.stderr()
    );
    let ops = lines(&out);
    let reads = ops.iter().filter(|o| o["op"] == "read").count();
    let per_id = reads_per_id(&ops);
    let twice: Vec<_> = per_id.iter().filter(|(_, s)| s.len() > 1).take(5).collect();
    assert!(twice.is_empty(), "rows sent twice: {twice:?}");
    assert_eq!(per_id.len(), 2 * N as usize);
    assert_eq!(reads, 2 * N as usize, "lines written again");
    assert_same(&db, &ops);
}

#[test]
fn a_snapshot_requested_while_streaming_reads_the_table_again() {
    const N: u64 = 10_000;
    let db = server();
    load_rows(&db, N);
    let writer = Writer::start(&db, Duration::from_millis(5));
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let mut run = spawn(&db, &state, &out, &[], &[SNAPSHOT_DEFAULT]);
    wait_until(Duration::from_secs(120), "the first snapshot ends", || {
        ends(&out).len() == 2
    });
    let first_reads = count_op(&out, "read");
    request_snapshot(&state, "t.pairs");
    wait_until(
        Duration::from_secs(120),
        "the second snapshot of t.pairs",
        || ends(&out).get("pairs") == Some(&2),
    );
    let committed = writer.finish();
    assert!(committed > 10, "the writer committed {committed}");
    wait_caught_up(&db, &state);
    stop(&mut run);
    let ops = lines(&out);
    assert_eq!(ends(&out).get("items"), Some(&1), "only t.pairs again");
    let first_end = ops
        .iter()
        .position(|o| o["op"] == "snapshot_end" && o["table"] == "pairs")
        .unwrap();
    let again = ops[first_end + 1..]
        .iter()
        .filter(|o| o["op"] == "read")
        .collect::<Vec<_>>();
    assert!(again.iter().all(|o| o["table"] == "pairs"));
    assert_eq!(again.len(), N as usize, "t.pairs read again, in full");
    assert!(count_op(&out, "read") == first_reads + N as usize);
    assert!(
        run.stderr().contains("snapshot requested"),
        "{}",
        run.stderr()
    );
    assert_same(&db, &ops);
}

#[test]
fn a_re_snapshot_drops_rows_deleted_while_binsync_was_stopped() {
    const N: u64 = 10_000;
    let db = server();
    load_rows(&db, N);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let mut run = spawn(&db, &state, &out, &["--exit-at-end"], &[SNAPSHOT_DEFAULT]);
    let status = run.wait_timeout(Duration::from_secs(120)).expect("ends");
    assert!(status.success(), "{}", run.stderr());
    assert_same(&db, &lines(&out));

    // Deleted where the binlog never tells, and a change it does tell.
    db.sql("SET SESSION sql_log_bin = 0; DELETE FROM t.items WHERE id % 10 = 3");
    db.sql("UPDATE t.items SET note = 'later' WHERE id = 4");
    let gone = N / 10;
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM t.items").trim(),
        (N - gone).to_string()
    );
    request_snapshot(&state, "t.items");

    let mut run = spawn(&db, &state, &out, &["--exit-at-end"], &[SNAPSHOT_DEFAULT]);
    let status = run.wait_timeout(Duration::from_secs(120)).expect("ends");
    assert!(status.success(), "{}", run.stderr());
    let ops = lines(&out);
    assert_eq!(
        ends(&out).get("items"),
        Some(&2),
        "no second snapshot of t.items: {}",
        run.stderr()
    );
    let got = applied(&ops);
    let left: Vec<_> = got
        .iter()
        .filter(|((t, _), v)| t == "items" && v["id"].as_i64().unwrap() % 10 == 3)
        .take(5)
        .collect();
    assert!(left.is_empty(), "deleted rows kept: {left:?}");
    assert_same(&db, &ops);
}

#[test]
fn an_add_column_in_the_middle_of_a_snapshot() {
    const N: u64 = 60_000;
    let db = server();
    load_rows(&db, N);
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let mut run = spawn(
        &db,
        &state,
        &out,
        &["--snapshot-rate", "10000"],
        &[SNAPSHOT_DEFAULT],
    );
    // t.items comes first (tables in name order): a third of it, then the ALTER.
    wait_until(Duration::from_secs(120), "a third of t.items", || {
        count_op(&out, "read") >= N as usize / 3
    });
    db.sql("ALTER TABLE t.items ADD COLUMN extra INT NOT NULL DEFAULT 7");
    let at_alter = count_op(&out, "read");
    assert!(
        at_alter < N as usize * 2 / 3,
        "the ALTER came too late: {at_alter} rows read"
    );
    let writer = SqlWriter::start(&db, Duration::from_millis(5), move |i| {
        let k = (i * 7919) % N;
        format!(
            "BEGIN;
             INSERT INTO t.items (id, v, note, extra) VALUES ({}, {i}, 'w', {i});
             UPDATE t.items SET extra = extra + 1, v = v + 1 WHERE id = {k};
             COMMIT;",
            2_000_000 + i
        )
    });
    wait_until(Duration::from_secs(120), "the snapshot ends", || {
        let e = ends(&out);
        e.contains_key("items") && e.contains_key("pairs")
    });
    std::thread::sleep(Duration::from_millis(500));
    let (committed, failed) = writer.finish();
    assert!(committed > 10 && failed == 0, "{committed} {failed}");
    wait_caught_up(&db, &state);
    stop(&mut run);

    let ops = lines(&out);
    let ddl = ops
        .iter()
        .find(|o| o["op"] == "ddl" && o["table"] == "items")
        .unwrap_or_else(|| panic!("no ddl line for t.items: {}", run.stderr()));
    let ddl_seq = ddl["seq"].as_u64().unwrap();
    let item_reads: Vec<&Value> = ops
        .iter()
        .filter(|o| o["op"] == "read" && o["table"] == "items")
        .collect();
    let (before, after): (Vec<&Value>, Vec<&Value>) = item_reads
        .iter()
        .partition(|o| o["seq"].as_u64().unwrap() < ddl_seq);
    assert!(
        !before.is_empty() && !after.is_empty(),
        "the ALTER was not in the middle: {} reads before it, {} after",
        before.len(),
        after.len()
    );
    let old_shape: Vec<_> = after
        .iter()
        .filter(|o| o["after"].get("extra").is_none())
        .take(3)
        .collect();
    assert!(
        old_shape.is_empty(),
        "rows read after the ALTER without the new column: {old_shape:?}"
    );
    assert!(before.iter().all(|o| o["after"].get("extra").is_none()));
    let changes_without: Vec<_> = ops
        .iter()
        .filter(|o| {
            o["table"] == "items"
                && matches!(o["op"].as_str(), Some("insert" | "update"))
                && o["seq"].as_u64().unwrap() > ddl_seq
                && o["after"].get("extra").is_none()
        })
        .take(3)
        .collect();
    assert!(changes_without.is_empty(), "{changes_without:?}");

    // The source with its new column; a row the receiver holds from before the ALTER takes
    // the column's default, as a receiver applying the ddl line does.
    let mut want: State = source_state(&db)
        .into_iter()
        .filter(|((t, _), _)| t == "pairs")
        .collect();
    for line in db.sql("SELECT id, v, note, extra FROM t.items").lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let id: i64 = f[0].parse().unwrap();
        want.insert(
            ("items".into(), canonical_id(&serde_json::json!({"id": id}))),
            serde_json::json!({"id": id, "v": f[1].parse::<i64>().unwrap(), "note": f[2],
                "extra": f[3].parse::<i64>().unwrap()}),
        );
    }
    let mut got = applied(&ops);
    for ((t, _), v) in got.iter_mut() {
        if t == "items" && v.get("extra").is_none() {
            v["extra"] = serde_json::json!(7);
        }
    }
    common::workload::assert_same_state(&want, &got);
}

#[test]
fn tables_with_composite_and_varchar_keys_under_key_changes() {
    const N: u64 = 30_000;
    let db = server();
    load_rows(&db, N);
    db.sql("CREATE TABLE t.names (name VARCHAR(40) PRIMARY KEY, v INT)");
    let mut i = 0;
    while i < N {
        let end = (i + 5000).min(N);
        let values: Vec<String> = (i..end).map(|k| format!("('n{k:06}', {k})")).collect();
        db.sql(&format!("INSERT INTO t.names VALUES {}", values.join(",")));
        i = end;
    }
    let names_state = |db: &MariaDb| -> State {
        db.sql("SELECT name, v FROM t.names")
            .lines()
            .map(|l| {
                let (name, v) = l.split_once('\t').unwrap();
                (
                    (
                        "names".to_string(),
                        canonical_id(&serde_json::json!({ "name": name })),
                    ),
                    serde_json::json!({"name": name, "v": v.parse::<i64>().unwrap()}),
                )
            })
            .collect()
    };
    let writer = SqlWriter::start(&db, Duration::from_millis(2), move |i| {
        let k = (i * 7919) % N;
        let (k1, k2, k3) = ((k + 1) % N, (k + 2) % N, (k + 3) % N);
        format!(
            "BEGIN;
             UPDATE t.items SET id = id + 1000000 WHERE id = {k};
             UPDATE t.items SET v = v + 1, note = 'u' WHERE id = {k1};
             DELETE FROM t.items WHERE id = {k2} AND {i} % 4 = 0;
             INSERT INTO t.items VALUES ({}, {i}, 'w');
             UPDATE t.pairs SET a = a + 100000 WHERE a = {} AND b = {};
             UPDATE t.pairs SET v = v + 1 WHERE a = {} AND b = {};
             UPDATE t.names SET name = CONCAT('m', name) WHERE name = 'n{k:06}';
             UPDATE t.names SET name = CONCAT('z', name) WHERE name = 'n{k3:06}' AND {i} % 2 = 0;
             UPDATE t.names SET v = v + 1 WHERE name = 'n{k1:06}';
             DELETE FROM t.names WHERE name = 'n{k2:06}' AND {i} % 4 = 1;
             INSERT INTO t.names VALUES ('w{i:08}', {i});
             COMMIT;",
            3_000_000 + i,
            k / 100,
            k % 100,
            k1 / 100,
            k1 % 100,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out.jsonl"));
    let mut run = spawn(
        &db,
        &state,
        &out,
        &["--snapshot-rate", "15000"],
        &[SNAPSHOT_DEFAULT],
    );
    wait_until(Duration::from_secs(120), "the snapshot ends", || {
        ends(&out).len() == 3
    });
    let (committed, failed) = writer.finish();
    assert!(committed > 100 && failed == 0, "{committed} {failed}");
    wait_caught_up(&db, &state);
    stop(&mut run);
    let ops = lines(&out);
    // The key changes happened during the snapshot, in every table.
    let first_end = ops.iter().position(|o| o["op"] == "snapshot_end").unwrap();
    for t in ["items", "pairs", "names"] {
        assert!(
            ops[..first_end]
                .iter()
                .any(|o| o["table"] == t && o["op"] == "delete"),
            "no key change of {t} before the first snapshot_end"
        );
    }
    let mut want = source_state(&db);
    want.extend(names_state(&db));
    common::workload::assert_same_state(&want, &applied(&ops));
}
