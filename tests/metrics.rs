//! Scenarios of an operator watching `binsync run`, against a real MariaDB, the real binary
//! and the reference receiver, with a backlog written an hour "ago" (`SET TIMESTAMP`) before
//! binsync starts:
//!
//! 1. `/metrics` scraped during the catch-up: the lag starts near an hour and falls to about 0;
//!    `/readyz` answers 503 with a reason, then 200; `/healthz` 200; every line of the scrape
//!    is a valid sample or comment, named by the conventions; the row changes and
//!    transactions delivered per entity type equal what the receiver got and what was written.
//! 2. Without a terminal, a catch-up held up by a sink outage logs where it is every 10 s,
//!    then one line once caught up; the sink's retries are counted by cause. On a terminal (a
//!    pty from `script`) it is one live line, rewritten, and no log lines.
//! 3. `binsync status` shows the running binsync's lag, throughput, source and DLQ depth, and
//!    after it stopped, what it left.
//! 4. On an idle source the lag is 0 from heartbeats alone; a killed dump thread counts one
//!    reconnect, and binsync is ready again after it.
//! 5. A `--metrics-listen` address in use stops binsync at once with one line.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::workload::Receiver;
use common::{free_port, wait_until, MariaDb, Proc, ServerOpts};

/// Transactions on shop.a only, on shop.b only, and on both; rows per table per transaction.
struct Backlog {
    a: u64,
    b: u64,
    both: u64,
    rows: u64,
}

impl Backlog {
    fn rows_a(&self) -> u64 {
        (self.a + self.both) * self.rows
    }

    fn rows_b(&self) -> u64 {
        (self.b + self.both) * self.rows
    }

    /// Creates the tables, then writes the transactions with the clock an hour back; returns
    /// the binlog position between the two (where binsync starts: no DDL in its stream).
    fn write(&self, db: &MariaDb) -> (String, u64) {
        db.sql(
            "CREATE DATABASE shop; \
             CREATE TABLE shop.a (id INT PRIMARY KEY, v VARCHAR(200)); \
             CREATE TABLE shop.b (id INT PRIMARY KEY, v VARCHAR(200))",
        );
        let start = db.binlog_position();
        let mut sql = String::from("USE shop; SET TIMESTAMP = UNIX_TIMESTAMP() - 3600;\n");
        let mut next = (1u64, 1u64);
        let insert = |sql: &mut String, table: &str, from: &mut u64, rows: u64| {
            sql.push_str(&format!(
                "INSERT INTO {table} SELECT seq, REPEAT('x', 150) FROM seq_{}_to_{};\n",
                *from,
                *from + rows - 1
            ));
            *from += rows;
        };
        for _ in 0..self.a {
            insert(&mut sql, "a", &mut next.0, self.rows);
        }
        for _ in 0..self.b {
            insert(&mut sql, "b", &mut next.1, self.rows);
        }
        for _ in 0..self.both {
            sql.push_str("BEGIN;\n");
            insert(&mut sql, "a", &mut next.0, self.rows);
            insert(&mut sql, "b", &mut next.1, self.rows);
            sql.push_str("COMMIT;\n");
        }
        db.sql(&sql);
        start
    }
}

fn run_args(db: &MariaDb, state: &Path, sink: &str, start: &(String, u64)) -> Vec<String> {
    [
        "run",
        "--source",
        &db.url(),
        "--server-id",
        "4343",
        "--state-dir",
        &state.display().to_string(),
        "--sink",
        sink,
        "--snapshot",
        "never",
        "--start",
        &format!("file:{}:{}", start.0, start.1),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spawn(args: &[String]) -> Proc {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn(&refs, &[])
}

/// A GET on a fresh connection: status and body (None: nothing listens or no answer).
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// One sample of the exposition format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses Prometheus text format 0.0.4 strictly: every line is a `# HELP`, a `# TYPE` or a
/// sample (`name{label="value",...} value`); panics naming the first line that is not.
/// Returns the samples and each metric's type.
fn parse_exposition(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, more) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or_else(|| panic!("comment without a name: {line:?}"));
            assert!(valid_name(name), "bad metric name in {line:?}");
            match kind {
                Some("HELP") => assert!(more.is_some_and(|h| !h.is_empty()), "{line:?}"),
                Some("TYPE") => {
                    let t = more.unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line:?}"
                    );
                    types.insert(name.to_string(), t.to_string());
                }
                _ => panic!("a comment that is neither HELP nor TYPE: {line:?}"),
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let name = &line[..name_end];
        assert!(valid_name(name), "bad metric name in {line:?}");
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let bytes = inner.as_bytes();
            let mut i = 0;
            loop {
                if bytes.get(i) == Some(&b'}') {
                    rest = &inner[i + 1..];
                    break;
                }
                let eq = inner[i..]
                    .find("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line:?}"));
                let lname = &inner[i..i + eq];
                assert!(valid_name(lname), "bad label name in {line:?}");
                // The value: up to the closing quote, with \\, \" and \n escapes.
                let mut value = String::new();
                i += eq + 2;
                loop {
                    match bytes.get(i) {
                        Some(b'\\') => {
                            match bytes.get(i + 1) {
                                Some(b'\\') => value.push('\\'),
                                Some(b'"') => value.push('"'),
                                Some(b'n') => value.push('\n'),
                                _ => panic!("bad escape in {line:?}"),
                            }
                            i += 2;
                        }
                        Some(b'"') => break,
                        Some(_) => {
                            let c = inner[i..].chars().next().unwrap();
                            value.push(c);
                            i += c.len_utf8();
                        }
                        None => panic!("unterminated label value in {line:?}"),
                    }
                }
                labels.insert(lname.to_string(), value);
                i += 1;
                match bytes.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {}
                    _ => panic!("bad label list in {line:?}"),
                }
            }
        }
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("bad timestamp in {line:?}"));
        }
        assert!(fields.next().is_none(), "trailing text in {line:?}");
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    (samples, types)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn metrics_during_a_catch_up() {
    let db = MariaDb::start(ServerOpts::default());
    let backlog = Backlog {
        a: 20,
        b: 10,
        both: 5,
        rows: 800,
    };
    let start = backlog.write(&db);
    let dir = tempfile::tempdir().unwrap();
    // A receiver failing a third of the POSTs (500, nothing applied): each is retried after
    // a backoff, so the catch-up lasts long enough to watch, and retries are counted.
    let mut recv = Receiver::start(
        &dir.path().join("recv"),
        &["--fault-rate", "0.3", "--faults", "500"],
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = run_args(&db, &dir.path().join("state"), &recv.url(), &start);
    // Many small batches, one at a time: the catch-up lasts long enough to watch.
    args.extend(
        [
            "--metrics-listen",
            &addr,
            "--batch-rows",
            "200",
            "--in-flight",
            "1",
        ]
        .map(String::from),
    );
    let mut binsync = spawn(&args);

    // Every 50 ms: /readyz, /healthz and the lag, until ready.
    let mut ready = Vec::new();
    let mut lags = Vec::new();
    let mut healthz = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(binsync.is_running(), "binsync ended: {}", binsync.stderr());
        assert!(
            Instant::now() < deadline,
            "never ready: {ready:?}\n{}",
            binsync.stderr()
        );
        if let Some((status, body)) = get(&addr, "/readyz") {
            ready.push((status, body));
            if let Some((code, _)) = get(&addr, "/healthz") {
                healthz.push(code);
            }
            if let Some((200, text)) = get(&addr, "/metrics") {
                let (samples, _) = parse_exposition(&text);
                if let Some(lag) = value(&samples, "binsync_replication_lag_seconds", &[]) {
                    if !lag.is_nan() {
                        lags.push(lag);
                    }
                }
            }
            if ready.last().is_some_and(|(s, _)| *s == 200) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "readyz: {:?}",
        ready.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    eprintln!("lags: {lags:?}");
    let (first, why) = &ready[0];
    assert_eq!(*first, 503, "not ready at the start");
    assert!(
        why.trim().lines().count() == 1 && !why.trim().is_empty(),
        "one line of reason: {why:?}"
    );
    assert!(
        ready
            .iter()
            .any(|(s, why)| *s == 503 && why.contains("above --ready-max-lag")),
        "a 503 for the lag during the catch-up: {ready:?}"
    );
    assert!(
        healthz.iter().all(|c| *c == 200),
        "/healthz while running: {healthz:?}"
    );
    // The backlog's events are an hour old: the lag starts there and falls to about 0.
    assert!(
        lags.iter().any(|l| *l > 3000.0),
        "the lag during the catch-up: {lags:?}"
    );
    assert!(*lags.last().unwrap() < 2.0, "caught up: {lags:?}");

    // After the catch-up: the scrape as a whole.
    let (status, text) = get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    let (samples, types) = parse_exposition(&text);
    for s in &samples {
        assert!(s.name.starts_with("binsync_"), "{}", s.name);
    }
    for (name, t) in &types {
        assert!(name.starts_with("binsync_"), "{name}");
        match t.as_str() {
            "counter" => assert!(name.ends_with("_total"), "a counter: {name}"),
            "histogram" => assert!(
                name.ends_with("_seconds") || name.ends_with("_rows"),
                "a histogram in base units: {name}"
            ),
            _ => assert!(!name.ends_with("_total"), "{name} is a {t}"),
        }
    }
    for (name, t) in [
        ("binsync_replication_lag_seconds", "gauge"),
        ("binsync_binlog_bytes_read_total", "counter"),
        ("binsync_binlog_events_read_total", "counter"),
        ("binsync_row_changes_delivered_total", "counter"),
        ("binsync_transactions_delivered_total", "counter"),
        ("binsync_sink_batch_rows", "histogram"),
        ("binsync_sink_batch_delivery_seconds", "histogram"),
        ("binsync_sink_batches_in_flight", "gauge"),
        ("binsync_dlq_entries", "gauge"),
        ("binsync_checkpoint_age_seconds", "gauge"),
        ("binsync_source_reconnects_total", "counter"),
        ("binsync_source_connected", "gauge"),
        ("binsync_schema_history_versions", "gauge"),
        ("binsync_snapshot_rows_read", "gauge"),
        ("binsync_snapshot_tables_done", "gauge"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(t), "{name}");
    }
    let v = |name: &str, labels: &[(&str, &str)]| {
        value(&samples, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}:\n{text}"))
    };
    assert_eq!(v("binsync_source_connected", &[]), 1.0);
    assert_eq!(v("binsync_source_reconnects_total", &[]), 0.0);
    assert_eq!(v("binsync_dlq_entries", &[]), 0.0);
    assert!(v("binsync_binlog_bytes_read_total", &[]) > 4e6);
    assert!(v("binsync_binlog_events_read_total", &[]) >= 35.0 * 3.0);
    assert!(v("binsync_sink_retries_total", &[("cause", "http_5xx")]) > 0.0);
    assert!(v("binsync_checkpoint_age_seconds", &[]) < 60.0);
    assert!(
        v("binsync_schema_history_versions", &[]) >= 2.0,
        "a and b seeded"
    );
    let batches = v("binsync_sink_batch_rows_count", &[]);
    assert!(batches >= (backlog.rows_a() + backlog.rows_b()) as f64 / 200.0);
    assert_eq!(
        v("binsync_sink_batch_delivery_seconds_count", &[]),
        batches,
        "every batch delivered"
    );
    assert!(
        v(
            "binsync_sink_batch_delivery_seconds_bucket",
            &[("le", "+Inf")]
        ) == batches
    );
    // Counted on the ack path, per entity type: what was written, and what the receiver got.
    let delivered_a = v(
        "binsync_row_changes_delivered_total",
        &[("entity", "a"), ("op", "insert")],
    );
    let delivered_b = v(
        "binsync_row_changes_delivered_total",
        &[("entity", "b"), ("op", "insert")],
    );
    assert_eq!(delivered_a, backlog.rows_a() as f64);
    assert_eq!(delivered_b, backlog.rows_b() as f64);
    assert_eq!(
        v("binsync_transactions_delivered_total", &[("entity", "a")]),
        (backlog.a + backlog.both) as f64
    );
    assert_eq!(
        v("binsync_transactions_delivered_total", &[("entity", "b")]),
        (backlog.b + backlog.both) as f64
    );
    binsync.sigterm();
    binsync
        .wait_timeout(Duration::from_secs(60))
        .expect("binsync stops");
    let dump = recv.dump_json();
    let got = |entity: &str| dump["entities"][entity].as_object().map_or(0, |m| m.len()) as f64;
    assert_eq!(got("a"), delivered_a, "receiver's a");
    assert_eq!(got("b"), delivered_b, "receiver's b");
    assert_eq!(
        dump["stats"]["ops_received"].as_f64(),
        Some(delivered_a + delivered_b)
    );
}

/// A catch-up scenario: a server with a backlog of about 12 MiB of binlog (more than binsync
/// buffers while its sink is down), and `binsync run`'s arguments from the backlog's start into
/// a sync API at `sink_addr`, where no receiver listens yet.
struct CatchUp {
    db: MariaDb,
    backlog: Backlog,
    start: (String, u64),
    dir: tempfile::TempDir,
    sink_addr: String,
    args: Vec<String>,
}

impl CatchUp {
    fn new() -> CatchUp {
        let db = MariaDb::start(ServerOpts::default());
        let backlog = Backlog {
            a: 40,
            b: 40,
            both: 0,
            rows: 1000,
        };
        let start = backlog.write(&db);
        let dir = tempfile::tempdir().unwrap();
        let sink_addr = format!("127.0.0.1:{}", free_port());
        let args = run_args(
            &db,
            &dir.path().join("state"),
            &format!("http://{sink_addr}/sync"),
            &start,
        );
        CatchUp {
            db,
            backlog,
            start,
            dir,
            sink_addr,
            args,
        }
    }
}

#[test]
fn catching_up_without_a_terminal_logs_every_10s_then_once_caught_up() {
    let CatchUp {
        db: _db,
        backlog,
        start,
        dir,
        sink_addr,
        mut args,
    } = CatchUp::new();
    let metrics = format!("127.0.0.1:{}", free_port());
    args.extend(["--metrics-listen", &metrics].map(String::from));
    let mut binsync = spawn(&args);
    let lines = |p: &Proc, what: &str| -> Vec<String> {
        p.stderr()
            .lines()
            .filter(|l| l.contains(what))
            .map(String::from)
            .collect()
    };
    // The sink is down: behind, and a line every 10 s.
    wait_until(Duration::from_secs(40), "two catch-up lines", || {
        lines(&binsync, "catching up with the source's binlog end").len() >= 2
    });
    let (_, text) = get(&metrics, "/metrics").expect("metrics");
    let (samples, _) = parse_exposition(&text);
    assert!(
        value(
            &samples,
            "binsync_sink_retries_total",
            &[("cause", "no_response")]
        )
        .is_some_and(|n| n > 0.0),
        "retries while the sink is down:\n{text}"
    );
    let behind = value(&samples, "binsync_binlog_bytes_behind", &[]).unwrap();
    assert!(behind > 1e6, "{behind}");
    let mut recv = Receiver::start_on(&dir.path().join("recv"), &sink_addr, &[]);
    wait_until(Duration::from_secs(180), "caught up", || {
        !lines(&binsync, "caught up with the source's binlog end").is_empty()
    });
    let stderr = binsync.stderr();
    let catching = lines(&binsync, "catching up with the source's binlog end");
    eprintln!("{}", catching.join("\n"));
    for l in &catching {
        assert!(!l.contains('\r'), "no terminal line in a log: {l:?}");
        assert!(l.contains(" INFO "), "{l}");
        assert!(l.contains(&format!("position={}:", start.0)), "{l}");
        let behind = l.split("behind=").nth(1).expect("behind=");
        let mut words = behind.split_whitespace();
        let number = words.next().unwrap_or_default();
        assert!(number.parse::<f64>().is_ok(), "{l}");
        assert!(
            ["B", "KiB", "MiB", "GiB"].contains(&words.next().unwrap_or_default()),
            "in units: {l}"
        );
        assert!(
            l.contains("lag=") && l.contains("rate=") && l.contains("eta="),
            "{l}"
        );
    }
    // The first line at once; the next after 10 s (at most a second late).
    let at = |l: &str| l.split_whitespace().next().unwrap().to_string();
    let t0 = parse_utc(&at(&catching[0]));
    let t1 = parse_utc(&at(&catching[1]));
    assert!((9.5..=12.0).contains(&(t1 - t0)), "{t0} {t1}");
    assert_eq!(lines(&binsync, "caught up with").len(), 1, "{stderr}");
    binsync.sigterm();
    binsync
        .wait_timeout(Duration::from_secs(60))
        .expect("stops");
    let dump = recv.dump_json();
    assert_eq!(
        dump["stats"]["ops_received"].as_u64(),
        Some(backlog.rows_a() + backlog.rows_b())
    );
}

#[test]
fn catching_up_on_a_terminal_is_one_live_line() {
    let CatchUp {
        db: _db,
        backlog: _,
        start,
        dir,
        sink_addr,
        args,
    } = CatchUp::new();
    // `script` gives binsync a terminal (a pty) and copies what it shows to its stdout.
    let command = std::iter::once(common::binsync_bin().display().to_string())
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ");
    let mut term = Proc::spawn_program(Path::new("script"), &["-qfec", &command, "/dev/null"], &[]);
    // The sink is down: the line is rewritten every second.
    wait_until(Duration::from_secs(40), "the live line, rewritten", || {
        term.stdout().matches("\r\x1b[2Kcatch-up: at ").count() >= 3
    });
    let mut recv = Receiver::start_on(&dir.path().join("recv"), &sink_addr, &[]);
    wait_until(Duration::from_secs(120), "caught up", || {
        term.stdout()
            .contains("caught up with the source's binlog end")
    });
    let shown = term.stdout();
    let live = shown
        .split("\r\x1b[2K")
        .find(|l| l.starts_with("catch-up: at "))
        .unwrap();
    eprintln!("{live:?}");
    assert!(
        live.starts_with(&format!("catch-up: at {}:", start.0)) && live.contains(" MiB and "),
        "{live:?}"
    );
    assert!(
        live.contains(" behind, reading ") && live.contains("/s, ") || live.contains("reading ?, "),
        "{live:?}"
    );
    assert!(
        !shown.contains("catching up with the source's binlog end"),
        "no log lines on a terminal"
    );
    term.sigterm();
    term.wait_timeout(Duration::from_secs(60)).expect("stops");
    drop(recv.dump_json());
}

/// Seconds of an RFC 3339 UTC time of the day (`2026-12-03T14:05:06.123456Z`), for
/// differences within a test.
fn parse_utc(t: &str) -> f64 {
    let time = t.split('T').nth(1).unwrap().trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

#[test]
fn status_shows_the_running_binsync_and_what_the_last_run_left() {
    let db = MariaDb::start(ServerOpts::default());
    let backlog = Backlog {
        a: 5,
        b: 5,
        both: 0,
        rows: 100,
    };
    let start = backlog.write(&db);
    let dir = tempfile::tempdir().unwrap();
    let mut recv = Receiver::start(&dir.path().join("recv"), &[]);
    let state = dir.path().join("state");
    let mut binsync = spawn(&run_args(&db, &state, &recv.url(), &start));
    // (A status while the run creates its store may find it half made.)
    wait_until(Duration::from_secs(30), "run-status.json", || {
        state.join("run-status.json").exists()
    });
    let status = || {
        let mut p = Proc::spawn(
            &["status", "--state-dir", &state.display().to_string()],
            &[],
        );
        let st = p
            .wait_timeout(Duration::from_secs(60))
            .expect("status ends");
        assert!(st.success(), "{}", p.stderr());
        p.stdout()
    };
    let mut out = String::new();
    wait_until(Duration::from_secs(60), "status: caught up", || {
        out = status();
        out.contains("lag:        0 ms (caught up")
    });
    eprintln!("{out}");
    assert!(out.contains("run:        running since"), "{out}");
    assert!(
        out.contains(&format!(
            "  source:     mysql://root@127.0.0.1:{}",
            db.port()
        )),
        "{out}"
    );
    assert!(out.contains("), connected"), "{out}");
    assert!(out.contains("1000 delivered since it started"), "{out}");
    assert!(out.contains("changes/s over the last"), "{out}");
    assert!(out.contains("dlq:        empty"), "{out}");
    assert!(out.contains("snapshot:   none"), "kept: {out}");
    binsync.sigterm();
    binsync
        .wait_timeout(Duration::from_secs(60))
        .expect("stops");
    let out = status();
    eprintln!("{out}");
    assert!(out.contains("last run:   ended "), "{out}");
    assert!(out.contains("1000 delivered since it started"), "{out}");
    assert!(out.contains("  source:     mysql://"), "{out}");
    assert!(out.contains("not connected"), "{out}");
    assert!(out.contains("dlq:        empty"), "{out}");
    drop(recv.dump_json());
}

/// binsync's dump thread on the server, if one runs.
fn dump_thread(db: &MariaDb) -> Option<u64> {
    db.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

/// On an idle source: ready with a lag of 0 from heartbeats alone; the dump thread killed on
/// the server counts one reconnect (Debezium's NumberOfDisconnects), and ready again after.
#[test]
fn an_idle_source_is_caught_up_and_a_lost_connection_counts_once() {
    let db = MariaDb::start(ServerOpts::default());
    let backlog = Backlog {
        a: 1,
        b: 1,
        both: 0,
        rows: 10,
    };
    let start = backlog.write(&db);
    let dir = tempfile::tempdir().unwrap();
    let mut recv = Receiver::start(&dir.path().join("recv"), &[]);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = run_args(&db, &dir.path().join("state"), &recv.url(), &start);
    args.extend(["--metrics-listen", &addr].map(String::from));
    let mut binsync = spawn(&args);
    let scrape = |name: &str| {
        let (_, text) = get(&addr, "/metrics")?;
        value(&parse_exposition(&text).0, name, &[])
    };
    wait_until(Duration::from_secs(60), "ready", || {
        get(&addr, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    // Idle for a few heartbeats: still caught up, the lag 0 (not the hour since the writes).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(scrape("binsync_replication_lag_seconds"), Some(0.0));
    assert_eq!(scrape("binsync_source_reconnects_total"), Some(0.0));
    assert!(scrape("binsync_source_heartbeats_total").is_some_and(|n| n >= 2.0));
    let killed = dump_thread(&db).expect("a dump thread");
    db.sql(&format!("KILL {killed}"));
    wait_until(Duration::from_secs(30), "a reconnect counted", || {
        scrape("binsync_source_reconnects_total") == Some(1.0)
    });
    wait_until(Duration::from_secs(30), "connected and ready again", || {
        scrape("binsync_source_connected") == Some(1.0)
            && get(&addr, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    assert_eq!(scrape("binsync_source_reconnects_total"), Some(1.0));
    assert_eq!(
        get(&addr, "/healthz").map(|(s, _)| s),
        Some(200),
        "a reconnect is no ended stage"
    );
    binsync.sigterm();
    binsync
        .wait_timeout(Duration::from_secs(60))
        .expect("stops");
    drop(recv.dump_json());
}

#[test]
fn a_metrics_address_in_use_is_one_line_and_a_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    // No server listens on the source port: the bind must fail before any connection.
    let source = format!("mysql://root@127.0.0.1:{}", free_port());
    let mut p = Proc::spawn(
        &[
            "run",
            "--source",
            &source,
            "--server-id",
            "9",
            "--state-dir",
            &state,
            "--metrics-listen",
            &addr,
        ],
        &[],
    );
    let st = p
        .wait_timeout(Duration::from_secs(30))
        .expect("ends at once");
    assert!(!st.success());
    let err = p.stderr();
    let line: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(line.len(), 1, "{err}");
    assert!(
        line[0].starts_with("binsync: error: cannot listen on --metrics-listen ")
            && line[0].contains(&addr),
        "{err}"
    );
    assert!(!err.contains("connecting"), "before the source: {err}");
}
