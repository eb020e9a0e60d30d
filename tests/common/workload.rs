//! A writer that commits inserts, updates and deletes on two tables (one with a composite
//! key) until stopped, and readers of the resulting state: the source tables, a file sink, and
//! the reference receiver's store, all as `(table, canonical id) -> row` maps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::Value;

use super::{wait_until, MariaDb, Proc};

pub type State = BTreeMap<(String, String), Value>;

pub const SCHEMA: &str = "CREATE DATABASE IF NOT EXISTS t;
     CREATE TABLE IF NOT EXISTS t.items (id INT PRIMARY KEY, v INT, note VARCHAR(20));
     CREATE TABLE IF NOT EXISTS t.pairs (a INT, b INT, v INT, PRIMARY KEY (a, b));";

pub struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts committing; `pause` between transactions (zero: as fast as it can).
    pub fn start(db: &MariaDb, pause: Duration) -> Writer {
        db.sql(SCHEMA);
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let url = db.url();
        let (s, c) = (stop.clone(), committed.clone());
        let base: i64 = 1_000_000 * fastrand::i64(1..1000);
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut conn: Option<mysql_async::Conn> = None;
                let mut i = base;
                while !s.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        // The server may be restarting (fault tests): retry.
                        match mysql_async::Conn::from_url(url.as_str()).await {
                            Ok(cn) => conn = Some(cn),
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            }
                        }
                    }
                    let next = i + 1;
                    let sql = format!(
                        "BEGIN;
                         INSERT INTO t.items VALUES ({next}, {next}, 'n{next}');
                         UPDATE t.items SET v = v + 1, note = 'u' WHERE id = {};
                         DELETE FROM t.items WHERE id = {} AND {next} % 3 = 0;
                         INSERT INTO t.pairs VALUES ({}, {}, 0) ON DUPLICATE KEY UPDATE v = v + 1;
                         COMMIT;",
                        next - 1,
                        next - 5,
                        next % 7,
                        next % 5
                    );
                    match conn.as_mut().unwrap().query_drop(sql).await {
                        Ok(()) => {
                            i = next;
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            // Lost the server mid-transaction: reconnect; the transaction
                            // either committed or not, and the next id is re-checked below.
                            conn = None;
                            i = next; // never reuse an id that may have committed
                        }
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            });
        });
        Writer {
            stop,
            committed,
            handle: Some(handle),
        }
    }

    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        self.committed()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `{"b":1,"a":2}` and `{"a":2,"b":1}` name the same entity.
pub fn canonical_id(id: &Value) -> String {
    // serde_json's default map is sorted.
    serde_json::to_string(id).unwrap()
}

pub fn source_state(db: &MariaDb) -> State {
    let mut m = BTreeMap::new();
    for line in db.sql("SELECT id, v, note FROM t.items").lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let id: i64 = f[0].parse().unwrap();
        let v = serde_json::json!({"id": id, "v": f[1].parse::<i64>().unwrap(), "note": f[2]});
        m.insert(
            ("items".into(), canonical_id(&serde_json::json!({"id": id}))),
            v,
        );
    }
    for line in db.sql("SELECT a, b, v FROM t.pairs").lines() {
        let f: Vec<i64> = line.split('\t').map(|x| x.parse().unwrap()).collect();
        let v = serde_json::json!({"a": f[0], "b": f[1], "v": f[2]});
        m.insert(
            (
                "pairs".into(),
                canonical_id(&serde_json::json!({"a": f[0], "b": f[1]})),
            ),
            v,
        );
    }
    m
}

/// Panics unless the receiver's state `got` equals the source's `want`, naming a few rows
/// missing, extra and differing (source, receiver).
pub fn assert_same_state(want: &State, got: &State) {
    if want == got {
        return;
    }
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
        .filter_map(|(k, v)| got.get(k).filter(|g| *g != v).map(|g| (k, v, g)))
        .take(5)
        .collect();
    panic!(
        "receiver state differs from the source: {} rows vs {}; missing {missing:?}, extra {extra:?}, differing (id, source, receiver) {differ:?}",
        got.len(),
        want.len()
    );
}

/// Whether a sink line is a row change (`insert`, `update`, `delete`: it has an `id`), not an
/// operation on a whole table (`ddl`, `truncate`, `drop`), which `binsync run` writes by
/// default (`--on-ddl emit`) for the DDL on captured tables, e.g. each `CREATE TABLE` a
/// test's setup runs before a `--start earliest` run.
pub fn is_row_change(line: &Value) -> bool {
    !matches!(line["op"].as_str(), Some("ddl" | "truncate" | "drop"))
}

/// Rebuilds the state from a JSON-lines sink file. Checks the numbering (no gap after the
/// first line's `seq`, which a new store takes from the wall clock; a line written again after
/// a crash is identical to the first one) and returns the state and how many lines were
/// re-deliveries.
pub fn file_state(path: &str) -> (State, usize) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut by_seq: Vec<String> = Vec::new();
    let mut state = BTreeMap::new();
    let mut duplicates = 0;
    let mut base = None;
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line}: {e}"));
        let raw = v["seq"].as_u64().unwrap();
        let first = *base.get_or_insert(raw);
        assert!(raw >= first, "seq {raw} below the first one, {first}");
        let seq = (raw - first + 1) as usize;
        assert!(
            seq >= 1 && seq <= by_seq.len() + 1,
            "gap before seq {seq} (have {})",
            by_seq.len()
        );
        if seq <= by_seq.len() {
            assert_eq!(by_seq[seq - 1], line, "a replay changed seq {seq}");
            duplicates += 1;
            continue;
        }
        by_seq.push(line.to_string());
        match v["op"].as_str() {
            // A definition changed: the rows stay.
            Some("ddl") => continue,
            Some("truncate" | "drop") => {
                state.retain(|(table, _), _| table != v["table"].as_str().unwrap());
                continue;
            }
            _ => {}
        }
        let key = (
            v["table"].as_str().unwrap().to_string(),
            canonical_id(&v["id"]),
        );
        if v["op"] == "delete" {
            state.remove(&key);
        } else {
            state.insert(key, v["after"].clone());
        }
    }
    (state, duplicates)
}

/// The reference receiver, `binsync receive`, as a child process.
pub struct Receiver {
    pub proc: Proc,
    pub state_dir: std::path::PathBuf,
    pub addr: String,
    args: Vec<String>,
}

impl Receiver {
    pub fn start(state_dir: &std::path::Path, extra: &[&str]) -> Receiver {
        Self::start_on(state_dir, "127.0.0.1:0", extra)
    }

    pub fn start_on(state_dir: &std::path::Path, listen: &str, extra: &[&str]) -> Receiver {
        Self::start_with_env(state_dir, listen, extra, &[])
    }

    pub fn start_with_env(
        state_dir: &std::path::Path,
        listen: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Receiver {
        let mut args: Vec<String> = vec![
            "receive".into(),
            "--listen".into(),
            listen.into(),
            "--state-dir".into(),
            state_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn(&refs, envs);
        let mut addr = String::new();
        wait_until(Duration::from_secs(30), "receiver listening", || {
            if let Some(l) = proc
                .stdout()
                .lines()
                .find(|l| l.starts_with("listening on "))
            {
                addr = l.trim_start_matches("listening on ").trim().to_string();
                true
            } else {
                false
            }
        });
        Receiver {
            proc,
            state_dir: state_dir.to_path_buf(),
            addr,
            args,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/sync", self.addr)
    }

    /// Stops it (SIGTERM) and starts it again on the same address with other options.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.stop();
        let fresh = Receiver::start_on(&self.state_dir, &self.addr, extra);
        *self = fresh;
    }

    pub fn stop(&mut self) {
        self.proc.sigterm();
        self.proc
            .wait_timeout(Duration::from_secs(30))
            .expect("receiver did not stop");
    }

    /// Stops it and returns `receive dump`'s JSON as it is.
    pub fn dump_json(&mut self) -> Value {
        self.stop();
        let mut p = Proc::spawn(
            &[
                "receive",
                "dump",
                "--state-dir",
                &self.state_dir.display().to_string(),
            ],
            &[],
        );
        let st = p.wait_timeout(Duration::from_secs(60)).expect("dump hung");
        assert!(st.success(), "dump failed: {}", p.stderr());
        serde_json::from_str(&p.stdout()).expect("dump prints JSON")
    }

    /// Stops it and reads its store: live entities, and its counters.
    pub fn dump(&mut self) -> (State, Value) {
        let v = self.dump_json();
        let mut state = BTreeMap::new();
        for (entity, ids) in v["entities"].as_object().unwrap() {
            for (id, e) in ids.as_object().unwrap() {
                if e["deleted"] == Value::Bool(true) {
                    continue;
                }
                let id: Value = serde_json::from_str(id).unwrap();
                state.insert((entity.clone(), canonical_id(&id)), e["values"].clone());
            }
        }
        let _ = &self.args;
        (state, v["stats"].clone())
    }
}

/// `binsync run` from `db` into the file `out` (the disk-fault tests' run), with this server id
/// and state dir, and more flags.
pub fn spawn_file_run(
    db: &MariaDb,
    server_id: &str,
    state: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> Proc {
    let url = db.url();
    let state = state.display().to_string();
    let sink = format!("file:{}", out.display());
    let mut args = vec![
        "run",
        "--source",
        &url,
        "--server-id",
        server_id,
        "--state-dir",
        &state,
        "--sink",
        &sink,
    ];
    args.extend(extra);
    Proc::spawn(&args, &[])
}

/// The `seq` of the checkpoint binsync published in the state dir.
pub fn saved_seq(state: &std::path::Path) -> Option<u64> {
    let raw = std::fs::read(state.join("status.json")).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    let partial = v["partial"]["seq"].as_u64();
    partial.or(v["seq"].as_u64())
}

/// The `seq`s in the sink file, in file order (every line must parse).
pub fn sink_seqs(out: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("a garbled line in the sink: {l:?}: {e}"))["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// The rows the sink file holds (none before it exists).
pub fn delivered(out: &std::path::Path) -> State {
    if !out.exists() {
        return Default::default();
    }
    file_state(&out.display().to_string()).0
}

/// A warning or error naming `--reset` (the info line of every resume names it too, as the
/// way to discard a checkpoint; that is not advice).
pub fn advises_reset(stderr: &str) -> bool {
    stderr.lines().any(|l| {
        (l.contains(" ERROR ") || l.contains(" WARN ") || l.starts_with("binsync: error"))
            && l.contains("--reset")
    })
}
