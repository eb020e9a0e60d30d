//! Scenario: binsync sits idle on a caught-up source, asking for a heartbeat every
//! `--heartbeat` period, and its replication connection dies. Whether the server kills the
//! dump thread (`KILL`: the socket closes) or the path goes silent (a network partition, a hung
//! host: here a TCP proxy that stops forwarding without closing anything), binsync notices
//! within two heartbeat periods, reconnects once it can, and delivers every row written before,
//! during and after the outage exactly once. The time bounds are behaviour bounds (two periods
//! plus slack for logging and polling), not performance figures.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::workload::is_row_change;
use common::{wait_until, MariaDb, Proc, ServerOpts};

const PERIOD: Duration = Duration::from_secs(1);
/// Logging, the reader's hand-over and this test's 50 ms polling, on a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

/// A TCP proxy to 127.0.0.1:`target` that can stop forwarding, both ways, while keeping every
/// connection open: bytes wait in the kernel's buffers, as on a path that went silent.
struct Proxy {
    port: u16,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (paused.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (p, s) = (p.clone(), s.clone());
                    std::thread::spawn(move || pipe(from, to, &p, &s));
                }
            }
        });
        Proxy { port, paused, stop }
    }

    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either end closes or the proxy stops; while paused it neither
/// reads nor writes.
fn pipe(mut from: TcpStream, mut to: TcpStream, paused: &AtomicBool, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 << 10];
    let wait = || {
        while paused.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    while !stop.load(Ordering::SeqCst) {
        wait();
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Read just before the pause: held until it ends.
                wait();
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// `binsync run` from the binlog's end of the server at `port`, asking for a heartbeat every
/// [`PERIOD`], into a file sink.
fn spawn_binsync(port: u16, dir: &std::path::Path) -> (Proc, std::path::PathBuf) {
    let out = dir.join("out.jsonl");
    let url = format!("mysql://root@127.0.0.1:{port}");
    let state = dir.join("state");
    let sink = format!("file:{}", out.display());
    let p = Proc::spawn(
        &[
            "run",
            "--source",
            &url,
            "--server-id",
            "4747",
            "--state-dir",
            state.to_str().unwrap(),
            "--sink",
            &sink,
            "--start",
            "latest",
            "--heartbeat",
            "1s",
        ],
        &[],
    );
    (p, out)
}

/// The ids of the rows delivered so far, in order (complete lines only).
fn delivered(out: &std::path::Path) -> Vec<i64> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(is_row_change)
        .map(|v| v["id"]["id"].as_i64().unwrap())
        .collect()
}

fn wait_delivered(p: &mut Proc, out: &std::path::Path, want: &[i64]) {
    wait_until(
        Duration::from_secs(60),
        &format!("rows {want:?} delivered"),
        || delivered(out).len() >= want.len() || !p.is_running(),
    );
    assert!(p.is_running(), "binsync stopped: {}", p.stderr());
    assert_eq!(delivered(out), want, "nothing lost, nothing twice");
}

/// The id of binsync's dump thread on `db`, if it has one.
fn dump_thread(db: &MariaDb) -> Option<u64> {
    db.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

fn setup() -> MariaDb {
    let db = MariaDb::start(ServerOpts::default());
    db.sql("CREATE DATABASE hb; CREATE TABLE hb.t (id INT PRIMARY KEY)");
    db
}

/// The connection dies while idle, and the time from its death to binsync's line saying so.
fn noticed_within_two_periods(p: &Proc, died: Instant, what: &str) {
    wait_until(Duration::from_secs(30), what, || {
        p.stderr().contains("source connection lost")
    });
    let took = died.elapsed();
    assert!(
        took <= PERIOD * 2 + SLACK,
        "{what} after {took:?}, more than two heartbeat periods: {}",
        p.stderr()
    );
}

/// A path that goes silent: no byte, no FIN, no RST. Only the missing heartbeats tell.
#[test]
fn a_silent_idle_connection_is_noticed_within_two_heartbeats_and_resumed() {
    let db = setup();
    let proxy = Proxy::start(db.port());
    let dir = tempfile::tempdir().unwrap();
    let (mut p, out) = spawn_binsync(proxy.port, dir.path());
    wait_until(Duration::from_secs(30), "the dump thread", || {
        dump_thread(&db).is_some()
    });
    db.sql("INSERT INTO hb.t VALUES (1)");
    wait_delivered(&mut p, &out, &[1]);

    // Idle for three silence windows: the heartbeats alone keep the connection alive.
    std::thread::sleep(PERIOD * 6);
    assert!(
        !p.stderr().contains("connection lost"),
        "an idle live connection was taken for dead: {}",
        p.stderr()
    );

    proxy.pause();
    let died = Instant::now();
    noticed_within_two_periods(&p, died, "the silent connection noticed");
    assert!(
        p.stderr().contains("not a byte from the source"),
        "{}",
        p.stderr()
    );
    // Written while binsync cannot reach the server, then the path heals.
    db.sql("INSERT INTO hb.t VALUES (2)");
    proxy.resume();
    wait_delivered(&mut p, &out, &[1, 2]);
    db.sql("INSERT INTO hb.t VALUES (3)");
    wait_delivered(&mut p, &out, &[1, 2, 3]);

    p.sigterm();
    let st = p.wait_timeout(Duration::from_secs(30)).expect("stop");
    assert!(st.success(), "{}", p.stderr());
    assert_eq!(delivered(&out), [1, 2, 3]);
}

/// The server kills binsync's dump thread (`KILL`, as an operator or a failover tool does).
#[test]
fn a_killed_idle_dump_thread_is_noticed_and_resumed() {
    let db = setup();
    let dir = tempfile::tempdir().unwrap();
    let (mut p, out) = spawn_binsync(db.port(), dir.path());
    wait_until(Duration::from_secs(30), "the dump thread", || {
        dump_thread(&db).is_some()
    });
    db.sql("INSERT INTO hb.t VALUES (1)");
    wait_delivered(&mut p, &out, &[1]);
    std::thread::sleep(PERIOD * 3);

    let killed = dump_thread(&db).expect("binsync's dump thread");
    db.sql(&format!("KILL {killed}"));
    let died = Instant::now();
    db.sql("INSERT INTO hb.t VALUES (2)");
    noticed_within_two_periods(&p, died, "the killed dump thread noticed");
    wait_until(Duration::from_secs(30), "a new dump thread", || {
        dump_thread(&db).is_some_and(|id| id != killed)
    });
    wait_delivered(&mut p, &out, &[1, 2]);
    db.sql("INSERT INTO hb.t VALUES (3)");
    wait_delivered(&mut p, &out, &[1, 2, 3]);

    p.sigterm();
    let st = p.wait_timeout(Duration::from_secs(30)).expect("stop");
    assert!(st.success(), "{}", p.stderr());
    assert_eq!(delivered(&out), [1, 2, 3]);
}
