//! Real-server test harness: throwaway MariaDB servers and a guard for the binsync process.
//!
//! Include it from an integration test with `mod common;`. Everything here is plain blocking
//! std code, usable from `#[test]` and from `#[tokio::test]` alike (a blocking call such as
//! [`MariaDb::sql`] stalls a current-thread runtime while it runs; use
//! `#[tokio::test(flavor = "multi_thread")]` when an in-process task must make progress meanwhile).
//!
//! * [`MariaDb::start`] gives a private `mariadbd` on a free 127.0.0.1 port with its datadir in a
//!   temp dir: binlog on (ROW, `binlog_row_metadata=FULL`, `binlog_row_image=FULL`,
//!   `log_slave_updates`), utf8mb4, root with an empty password over TCP. The system server on
//!   3306 is never touched.
//! * Every process started here (servers and [`Proc`]) is killed by pid when its guard drops,
//!   also when the test panics, and — through `PR_SET_PDEATHSIG` — when the test process itself
//!   dies without unwinding (SIGKILL, a runner's timeout).
//! * The system tables are installed once (`mariadb-install-db`, 0.5-3 s) into a template cached
//!   under `CARGO_TARGET_TMPDIR` (shared by test processes and runs), then copied for each server;
//!   a start then takes 0.1-0.3 s, a restart ~0.1 s. Each server uses ~55 MB of memory.
//! * Temp dirs left by a test process killed outright are swept by the next one.
//!
//! Environment: `BINSYNC_MARIADBD`, `BINSYNC_MARIADB_INSTALL_DB`, `BINSYNC_MARIADB_CLIENT` and
//! `BINSYNC_MARIADB_BASEDIR` choose other binaries (default: PATH, then /usr/sbin, /usr/bin);
//! `BINSYNC_NO_TEMPLATE=1` installs each datadir afresh; `BINSYNC_KEEP_DATADIR=1` keeps the
//! datadirs of servers dropped during a panic, for a post-mortem.

#![allow(dead_code)]

/// Throwaway nats-server processes (single, or a cluster of three) with JetStream.
pub mod nats;
/// A concurrent writer and state readers for the end-to-end scenarios.
pub mod workload;

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// How long a server may take to accept connections after its process starts.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`MariaDb::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `mariadb` client invocation may run before it is killed.
const SQL_TIMEOUT: Duration = Duration::from_secs(120);
/// Small InnoDB: several servers run at once.
const INNODB_BUFFER_POOL: &str = "16M";
const INNODB_LOG_FILE: &str = "8M";
/// Bump when the install options change, so that cached templates are not reused.
const TEMPLATE_VERSION: u32 = 1;
/// User that replicas of [`MariaDb::start_replica_of`] connect as.
const REPL_USER: &str = "binsync_repl";
const REPL_PASSWORD: &str = "binsync_repl_pw";

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Polls `f` every 50 ms until it returns true; panics naming `what` after `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now and that this process has not handed out
/// before. Picked below the kernel's ephemeral range when possible, so that outgoing connections
/// (which take ephemeral ports) cannot grab it while a server restarts on it.
/// VmHWM (peak resident set so far) of a running process, in bytes; 0 if it is gone.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    let mut handed_out = handed_out.lock().unwrap_or_else(|e| e.into_inner());
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.min(65_536));
    if high > low + 1_000 {
        for _ in 0..500 {
            let port = (low + (random_u64() % u64::from(high - low)) as u32) as u16;
            if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed_out.insert(port);
                return port;
            }
        }
    }
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut h = RandomState::new().build_hasher();
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    std::process::id().hash(&mut h);
    SystemTime::now().hash(&mut h);
    h.finish()
}

/// `s` as an SQL string literal.
pub fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn signal(pid: u32, sig: libc::c_int) {
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits for `child` up to `timeout`; `None` if it is still running then.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Ok(None) => return None,
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
    }
}

/// SIGKILL unless it already exited, then reap it. Never panics (it runs in `Drop`).
fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child.id(), libc::SIGKILL);
    child.wait().ok()
}

/// Spawns `cmd` so that the child gets SIGKILL when this test process dies, whatever the way.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so every child is
/// forked by one thread that lives as long as the process, never by a short-lived test thread.
fn spawn_guarded(mut cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the harness spawner thread");
        tx
    });
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::other("test process already gone"));
                }
                Ok(())
            });
        }
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .expect("harness spawner thread is gone");
    reply_rx.recv().expect("harness spawner thread is gone")
}

/// Runs `cmd` with `input` on stdin; `Ok((stdout, stderr))` if it exits 0 within `timeout`.
fn run_with_timeout(
    mut cmd: Command,
    input: &[u8],
    timeout: Duration,
) -> Result<(String, String), String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        kill_and_reap(&mut child);
    }
    let _ = writer.join();
    let out = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    match status {
        None => Err(format!("timed out after {timeout:?}; stderr: {err}")),
        Some(s) if s.success() => Ok((out, err)),
        Some(s) => Err(format!("{s}: {}", err.trim_end())),
    }
}

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `$env` if set, else the first of `candidates` found: a bare name is looked up in PATH.
fn find_binary(env: &str, candidates: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    candidates
        .iter()
        .find_map(|c| {
            if c.contains('/') {
                Some(PathBuf::from(c)).filter(|p| p.is_file())
            } else {
                which(c)
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "{} not found (set {env}, or install MariaDB: \
                 apt-get install -y mariadb-server mariadb-client)",
                candidates[0]
            )
        })
}

fn mariadbd_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        find_binary(
            "BINSYNC_MARIADBD",
            &["mariadbd", "/usr/sbin/mariadbd", "/usr/libexec/mariadbd"],
        )
    })
}

fn install_db_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        find_binary(
            "BINSYNC_MARIADB_INSTALL_DB",
            &["mariadb-install-db", "/usr/bin/mariadb-install-db"],
        )
    })
}

fn client_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        find_binary(
            "BINSYNC_MARIADB_CLIENT",
            &["mariadb", "/usr/bin/mariadb", "mysql"],
        )
    })
}

/// The binsync binary built by cargo for this test run.
pub fn binsync_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_binsync"))
}

// ---------------------------------------------------------------------------------------------
// Datadirs
// ---------------------------------------------------------------------------------------------

/// Installs a fresh datadir. The bootstrap server gets a temp dir of its own: with the shared
/// /tmp, concurrent installs on a cold CI machine once failed ("Could not remove temporary
/// table '/tmp/#sql-temptable-...', error: 2", then "Unknown table 'mysql.tmp_user_sys'").
/// A failed install is retried once, saying so, since it is the harness's fixture and not
/// what any test examines.
fn install_db(datadir: &Path) -> Result<(), String> {
    match install_db_once(datadir) {
        Ok(()) => Ok(()),
        Err(first) => {
            eprintln!("harness: {first}; installing once more");
            // Empty it, keeping the sweeper's owner file.
            for entry in fs::read_dir(datadir).into_iter().flatten().flatten() {
                if entry.file_name() != OWNER_FILE {
                    let path = entry.path();
                    let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
                }
            }
            install_db_once(datadir)
        }
    }
}

fn install_db_once(datadir: &Path) -> Result<(), String> {
    let tmpdir = tempfile::Builder::new()
        .prefix("binsync-install-tmp-")
        .tempdir_in(temp_base())
        .map_err(|e| format!("create a temp dir in {}: {e}", temp_base().display()))?;
    let mut cmd = Command::new(install_db_bin());
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg(format!("--tmpdir={}", tmpdir.path().display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ])
        .arg(format!("--innodb-buffer-pool-size={INNODB_BUFFER_POOL}"))
        .arg(format!("--innodb-log-file-size={INNODB_LOG_FILE}"));
    if is_root() {
        cmd.arg("--user=root");
    }
    if let Some(basedir) = std::env::var_os("BINSYNC_MARIADB_BASEDIR") {
        cmd.arg(format!("--basedir={}", Path::new(&basedir).display()));
    }
    run_with_timeout(cmd, b"", Duration::from_secs(120))
        .map(|_| ())
        .map_err(|e| format!("mariadb-install-db --datadir={}: {e}", datadir.display()))
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A freshly installed, never started datadir, shared by every server of this and later test
/// runs of the same build (keyed by the server binaries and the install options).
fn template() -> Result<&'static Path, String> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let mut key = DefaultHasher::new();
            TEMPLATE_VERSION.hash(&mut key);
            is_root().hash(&mut key);
            std::env::var_os("BINSYNC_MARIADB_BASEDIR").hash(&mut key);
            for bin in [mariadbd_bin(), install_db_bin()] {
                bin.hash(&mut key);
                if let Ok(meta) = fs::metadata(bin) {
                    meta.len().hash(&mut key);
                    meta.modified().ok().hash(&mut key);
                }
            }
            let root = option_env!("CARGO_TARGET_TMPDIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            let dir = root.join(format!("binsync-mariadb-template-{:016x}", key.finish()));
            let marker = ".binsync-template-complete";
            if dir.join(marker).is_file() {
                return Ok(dir);
            }
            // Install beside it and rename into place: concurrent test processes may race here.
            fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
            // Leftovers of installs whose process was killed.
            for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let pid = name
                    .strip_prefix("binsync-mariadb-template-tmp-")
                    .and_then(|rest| rest.split('-').next()?.parse::<u32>().ok());
                if pid.is_some_and(pid_is_gone) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
            let tmp = root.join(format!(
                "binsync-mariadb-template-tmp-{}-{:x}",
                std::process::id(),
                random_u64()
            ));
            install_db(&tmp)?;
            fs::write(tmp.join(marker), b"").map_err(|e| e.to_string())?;
            // The marker is written before the rename, so `dir` is complete once it exists. If
            // another process got there first, use its template; if `dir` exists but is not a
            // template (someone else's leftovers), keep using ours where it is.
            if fs::rename(&tmp, &dir).is_ok() {
                Ok(dir)
            } else if dir.join(marker).is_file() {
                let _ = fs::remove_dir_all(&tmp);
                Ok(dir)
            } else {
                Ok(tmp)
            }
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// Where the harness's temp dirs go: TMPDIR, or /tmp when TMPDIR is deep (Unix socket paths
/// are limited to 107 bytes, and the server's socket lives in its datadir).
fn temp_base() -> PathBuf {
    let base = std::env::temp_dir();
    if base.as_os_str().len() > 60 {
        PathBuf::from("/tmp")
    } else {
        base
    }
}

const OWNER_FILE: &str = ".binsync-harness-owner";

fn pid_is_gone(pid: u32) -> bool {
    let failed = unsafe { libc::kill(pid as libc::pid_t, 0) } == -1;
    failed && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Removes the temp dirs of test processes that died without cleaning up (SIGKILL, Ctrl-C):
/// those whose owner file names a pid that no longer exists. Their servers died with them.
/// Runs once per process, at its first temp dir; callable again by tests.
pub fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(temp_base()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("binsync-mariadb-") || name.starts_with("binsync-proc-")) {
            continue;
        }
        let owner = fs::read_to_string(entry.path().join(OWNER_FILE));
        if let Some(pid) = owner.ok().and_then(|s| s.trim().parse::<u32>().ok()) {
            if pid != std::process::id() && pid_is_gone(pid) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A temp dir under [`temp_base`] that records its owner (this process) for the sweeper.
fn harness_tempdir(prefix: &str) -> tempfile::TempDir {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(sweep_stale_dirs);
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(temp_base())
        .unwrap_or_else(|e| panic!("create a temp dir in {}: {e}", temp_base().display()));
    fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
        .expect("write the temp dir's owner file");
    dir
}

fn new_datadir() -> tempfile::TempDir {
    let dir = harness_tempdir("binsync-mariadb-");
    let use_template = std::env::var_os("BINSYNC_NO_TEMPLATE").is_none_or(|v| v.is_empty());
    if use_template {
        let template = template().unwrap_or_else(|e| panic!("{e}"));
        copy_dir(template, dir.path()).unwrap_or_else(|e| {
            panic!(
                "copy the datadir template {} to {}: {e}",
                template.display(),
                dir.path().display()
            )
        });
        let _ = fs::remove_file(dir.path().join(".binsync-template-complete"));
    } else {
        install_db(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    }
    dir
}

// ---------------------------------------------------------------------------------------------
// MariaDb
// ---------------------------------------------------------------------------------------------

/// How to configure a server started by [`MariaDb::start`].
#[derive(Debug, Clone)]
pub struct ServerOpts {
    /// Write a binlog (`log-bin=<datadir>/mariadb-bin`). Default true.
    pub binlog: bool,
    /// `binlog_format`. Default "ROW".
    pub binlog_format: &'static str,
    /// `binlog_row_metadata`: NO_LOG, MINIMAL or FULL. Default "FULL".
    pub row_metadata: &'static str,
    /// `server_id`. Default: unique within this test process, and distinct across processes.
    pub server_id: u32,
    /// `gtid_strict_mode`. Default false (the server's default).
    pub gtid_strict: bool,
    /// More `--option=value` arguments, passed last (so they override the harness's choices).
    pub extra_args: Vec<String>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            binlog: true,
            binlog_format: "ROW",
            row_metadata: "FULL",
            server_id: next_server_id(),
            gtid_strict: false,
            extra_args: Vec::new(),
        }
    }
}

/// 1_000_000 + (pid % 100_000) * 1000 + n: unique per process, far from small ids tests pick
/// for binsync's own `--server-id`.
fn next_server_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 1000;
    1_000_000 + (std::process::id() % 100_000) * 1000 + n
}

enum LaunchError {
    PortInUse(String),
    Failed(String),
}

/// A throwaway `mariadbd`, killed when dropped. See the module docs.
pub struct MariaDb {
    child: Option<Child>,
    pid: u32,
    port: u16,
    server_id: u32,
    /// Everything but `--port`, in order; `--no-defaults` first.
    args: Vec<String>,
    datadir: Option<tempfile::TempDir>,
    /// Its own `--tmpdir`: servers sharing /tmp crash (see [`MariaDb::start`]).
    _tmpdir: tempfile::TempDir,
}

impl MariaDb {
    /// Starts a new server on a free port with a fresh datadir and waits until it accepts
    /// connections (panics after 60 s with the tail of its error log).
    #[track_caller]
    pub fn start(opts: ServerOpts) -> MariaDb {
        let datadir = new_datadir();
        let dir = datadir.path().to_path_buf();
        // A tmpdir of its own, outside the datadir (a folder there would be a database):
        // with a shared /tmp, servers running side by side die of signal 11 in
        // ha_maria::drop_table, cleaning up an information_schema temp table that failed
        // (seen under binsync's keyless-table query at start; in a loop of that query it hit
        // 3 of 4 concurrent servers, none with private tmpdirs).
        let tmpdir = harness_tempdir("binsync-mariadb-tmp-");
        let mut args = vec!["--no-defaults".to_string()];
        if is_root() {
            args.push("--user=root".into());
        }
        let d = dir.display();
        args.extend([
            format!("--datadir={d}"),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={d}/mysqld.sock"),
            format!("--pid-file={d}/mysqld.pid"),
            format!("--log-error={d}/error.log"),
            format!("--tmpdir={}", tmpdir.path().display()),
            format!("--server-id={}", opts.server_id),
            format!(
                "--gtid-strict-mode={}",
                if opts.gtid_strict { "ON" } else { "OFF" }
            ),
            "--skip-name-resolve".into(),
            "--character-set-server=utf8mb4".into(),
            "--collation-server=utf8mb4_general_ci".into(),
            format!("--innodb-buffer-pool-size={INNODB_BUFFER_POOL}"),
            format!("--innodb-log-file-size={INNODB_LOG_FILE}"),
            "--innodb-log-buffer-size=2M".into(),
            // Writes reach the OS at each commit (so they survive a SIGKILL of the server),
            // without an fsync each: the tests kill processes, not the machine.
            "--innodb-flush-log-at-trx-commit=2".into(),
            "--performance-schema=OFF".into(),
            "--key-buffer-size=1M".into(),
            "--aria-pagecache-buffer-size=1M".into(),
            "--query-cache-size=0".into(),
            "--max-connections=200".into(),
        ]);
        if opts.binlog {
            args.extend([
                format!("--log-bin={d}/mariadb-bin"),
                format!("--binlog-format={}", opts.binlog_format),
                format!("--binlog-row-metadata={}", opts.row_metadata),
                "--binlog-row-image=FULL".into(),
                "--log-slave-updates=ON".into(),
            ]);
        } else {
            args.push("--skip-log-bin".into());
        }
        args.extend(opts.extra_args.iter().cloned());

        let mut db = MariaDb {
            child: None,
            pid: 0,
            port: 0,
            server_id: opts.server_id,
            args,
            datadir: Some(datadir),
            _tmpdir: tmpdir,
        };
        let mut last = String::new();
        for _ in 0..10 {
            db.port = free_port();
            match db.launch() {
                Ok(()) => return db,
                Err(LaunchError::PortInUse(log)) => last = log,
                Err(LaunchError::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!("mariadbd: no free port after 10 tries; last error log:\n{last}");
    }

    /// Starts a server that replicates from `primary` with GTID (`MASTER_USE_GTID=slave_pos`),
    /// from the start of the primary's binlog, and waits until both replica threads run and it
    /// has caught up with the primary. The replication user is created on the primary with
    /// `sql_log_bin=0`, so it leaves no trace in the primary's binlog.
    #[track_caller]
    pub fn start_replica_of(primary: &MariaDb, opts: ServerOpts) -> MariaDb {
        assert_ne!(
            opts.server_id, primary.server_id,
            "a replica needs a server_id other than its primary's"
        );
        let (u, p) = (sql_quote(REPL_USER), sql_quote(REPL_PASSWORD));
        primary.sql(&format!(
            "SET SESSION sql_log_bin=0;\n\
             CREATE USER IF NOT EXISTS {u}@'%' IDENTIFIED BY {p};\n\
             GRANT REPLICATION SLAVE ON *.* TO {u}@'%';"
        ));
        let replica = MariaDb::start(opts);
        replica.sql(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER={u}, \
             MASTER_PASSWORD={p}, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;\n\
             START SLAVE;",
            primary.port
        ));
        let mut status = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = replica.rows_with_names("SHOW SLAVE STATUS").pop() {
                status = s;
            }
            let yes = |k: &str| status.get(k).is_some_and(|v| v == "Yes");
            if yes("Slave_IO_Running") && yes("Slave_SQL_Running") {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "replica on port {} did not start replicating: {status:#?}",
                    replica.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        replica.sync_with(primary);
        replica
    }

    /// Spawns mariadbd on `self.port` and waits until it is ready.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let dir = self.datadir().to_path_buf();
        let error_log = dir.join("error.log");
        let log_offset = fs::metadata(&error_log).map(|m| m.len()).unwrap_or(0);
        let console = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("console.log"))
            .expect("open console.log");
        let mut cmd = Command::new(mariadbd_bin());
        cmd.args(&self.args[..1])
            .arg(format!("--port={}", self.port))
            .args(&self.args[1..])
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("dup console.log"))
            .stderr(console);
        let child = spawn_guarded(cmd).unwrap_or_else(|e| {
            panic!("spawn {}: {e}", mariadbd_bin().display());
        });
        self.pid = child.id();
        self.child = Some(child);

        let new_log = |dir: &Path| -> String {
            let all = fs::read(dir.join("error.log")).unwrap_or_default();
            let start = (log_offset as usize).min(all.len());
            let console = read_lossy(&dir.join("console.log"));
            format!(
                "{}{}",
                tail(&console, 10),
                tail(&String::from_utf8_lossy(&all[start..]), 40)
            )
        };
        let started = Instant::now();
        let expected_datadir = format!("{}/", dir.display());
        loop {
            let child = self.child.as_mut().expect("child");
            if let Some(status) = child.try_wait().expect("try_wait mariadbd") {
                self.child = None;
                let log = new_log(&dir);
                if log.contains("Address already in use")
                    || log.contains("already have another server running on port")
                {
                    return Err(LaunchError::PortInUse(log));
                }
                return Err(LaunchError::Failed(format!(
                    "mariadbd (port {}, datadir {}) exited with {status} while starting:\n{log}",
                    self.port,
                    dir.display()
                )));
            }
            if started.elapsed() > READY_TIMEOUT {
                kill_and_reap(child);
                self.child = None;
                return Err(LaunchError::Failed(format!(
                    "mariadbd (port {}, datadir {}) not ready after {READY_TIMEOUT:?}:\n{}",
                    self.port,
                    dir.display(),
                    new_log(&dir)
                )));
            }
            // The log says so first (no probe connections: they leave "Aborted connection"
            // warnings); then make sure the server answering on the port is ours.
            let log = fs::read(&error_log).unwrap_or_default();
            let log = &log[(log_offset as usize).min(log.len())..];
            if String::from_utf8_lossy(log).contains("ready for connections") {
                if let Ok(out) = self.try_sql("SELECT @@datadir") {
                    if out.trim() == expected_datadir {
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Pid of the current (or last) mariadbd process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// `mysql://root@127.0.0.1:PORT` (root has no password).
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// `mysql://USER:PASSWORD@127.0.0.1:PORT`, both percent-encoded.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!(
            "mysql://{}:{}@127.0.0.1:{}",
            url_encode(user),
            url_encode(password),
            self.port
        )
    }

    pub fn datadir(&self) -> &Path {
        self.datadir.as_ref().expect("datadir").path()
    }

    pub fn socket(&self) -> PathBuf {
        self.datadir().join("mysqld.sock")
    }

    /// The whole error log so far (across restarts).
    pub fn error_log(&self) -> String {
        read_lossy(&self.datadir().join("error.log"))
    }

    /// Whether the mariadbd process is alive (not yet exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Runs `sql` (any number of `;`-separated statements) as root through the `mariadb` client
    /// in batch mode (`-N -B`: no column names, tab-separated, NULL as `NULL`, and `\n`, `\t`,
    /// `\\` escaped) and returns its stdout. Panics with the client's stderr on failure.
    #[track_caller]
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("SQL failed on port {}: {e}\n--- SQL ---\n{sql}", self.port))
    }

    /// Like [`MariaDb::sql`], but returns the client's error (stderr) instead of panicking.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        self.client(sql, &["--skip-column-names"])
            .map(|(out, _)| out)
    }

    /// The rows of a query, each split at tabs (values escaped as in [`MariaDb::sql`]).
    #[track_caller]
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.sql(sql)
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }

    /// The rows of a query (the last result set if there are several) as column name → value.
    #[track_caller]
    pub fn rows_with_names(&self, sql: &str) -> Vec<HashMap<String, String>> {
        let (out, _) = self
            .client(sql, &[])
            .unwrap_or_else(|e| panic!("SQL failed on port {}: {e}\n{sql}", self.port));
        let mut lines = out.lines();
        let Some(header) = lines.next() else {
            return Vec::new();
        };
        let names: Vec<&str> = header.split('\t').collect();
        lines
            .map(|l| {
                names
                    .iter()
                    .map(|n| n.to_string())
                    .zip(l.split('\t').map(str::to_string))
                    .collect()
            })
            .collect()
    }

    /// `@@gtid_binlog_pos`, e.g. `0-1000123-7` (empty before the first transaction).
    pub fn gtid_binlog_pos(&self) -> String {
        self.sql("SELECT @@gtid_binlog_pos").trim().to_string()
    }

    /// `SHOW MASTER STATUS`: the current binlog file and position.
    #[track_caller]
    pub fn binlog_position(&self) -> (String, u64) {
        let rows = self.rows("SHOW MASTER STATUS");
        let row = rows
            .first()
            .expect("SHOW MASTER STATUS: no binlog (is log-bin off?)");
        (row[0].clone(), row[1].parse().expect("binlog position"))
    }

    /// Waits (up to 60 s) until this replica has applied everything in `primary`'s binlog so far.
    #[track_caller]
    pub fn sync_with(&self, primary: &MariaDb) {
        let pos = primary.gtid_binlog_pos();
        let r = self.sql(&format!("SELECT MASTER_GTID_WAIT({}, 60)", sql_quote(&pos)));
        assert_eq!(
            r.trim(),
            "0",
            "replica on port {} did not reach {pos}",
            self.port
        );
    }

    /// `CREATE USER IF NOT EXISTS 'user'@'%' IDENTIFIED BY 'password'` and `GRANT grants TO` it,
    /// e.g. grants `"REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.*"` (`ON *.*` is added
    /// when grants name no object; empty grants grant nothing).
    #[track_caller]
    pub fn create_user(&self, user: &str, password: &str, grants: &str) {
        let (u, p) = (sql_quote(user), sql_quote(password));
        let mut sql = format!("CREATE USER IF NOT EXISTS {u}@'%' IDENTIFIED BY {p};\n");
        let grants = grants.trim();
        if !grants.is_empty() {
            let on = if grants.to_ascii_uppercase().contains(" ON ") {
                ""
            } else {
                " ON *.*"
            };
            sql.push_str(&format!("GRANT {grants}{on} TO {u}@'%';\n"));
        }
        self.sql(&sql);
    }

    fn client(&self, sql: &str, extra: &[&str]) -> Result<(String, String), String> {
        let mut cmd = Command::new(client_bin());
        cmd.args([
            "--no-defaults",
            "--protocol=TCP",
            "--host=127.0.0.1",
            "--user=root",
            "--batch",
            "--default-character-set=utf8mb4",
            "--connect-timeout=10",
        ])
        .arg(format!("--port={}", self.port))
        .args(extra);
        run_with_timeout(cmd, sql.as_bytes(), SQL_TIMEOUT)
    }

    /// SIGKILL the server (a crash) and reap it. No-op if it is not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// SIGTERM (a clean shutdown); SIGKILL after 30 s. No-op if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                signal(child.id(), libc::SIGTERM);
                if wait_child(&mut child, STOP_TIMEOUT).is_none() {
                    eprintln!(
                        "mariadbd pid {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
                        child.id()
                    );
                    kill_and_reap(&mut child);
                }
            }
        }
    }

    /// Starts the server again on the same datadir, port and options (stopping it first,
    /// cleanly, if it still runs) and waits until it is ready.
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        // The port is ours, but something may hold it for a moment: retry for a while.
        for _ in 0..50 {
            match self.launch() {
                Ok(()) => return,
                Err(LaunchError::PortInUse(log)) => last = log,
                Err(LaunchError::Failed(msg)) => panic!("restart: {msg}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("restart: port {} stayed in use:\n{last}", self.port);
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        if std::thread::panicking() {
            if let Some(dir) = &self.datadir {
                let log = read_lossy(&dir.path().join("error.log"));
                eprintln!(
                    "--- mariadbd port {} pid {} datadir {}: end of error log ---\n{}",
                    self.port,
                    self.pid,
                    dir.path().display(),
                    tail(&log, 15)
                );
                // A crashed server's report (signal, query, stack trace) is longer than that.
                if let Some(at) = log.rfind("got signal") {
                    let start = log[..at].rfind('\n').map_or(0, |i| i + 1);
                    let report: Vec<&str> = log[start..].lines().take(120).collect();
                    eprintln!("--- mariadbd crash report ---\n{}", report.join("\n"));
                }
            }
            if std::env::var_os("BINSYNC_KEEP_DATADIR").is_some_and(|v| !v.is_empty()) {
                if let Some(dir) = self.datadir.take() {
                    let _ = fs::remove_file(dir.path().join(OWNER_FILE)); // not for the sweeper
                    eprintln!("kept datadir {}", dir.keep().display());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Proc
// ---------------------------------------------------------------------------------------------

/// A child process (normally binsync) with stdout and stderr captured to files, killed when
/// dropped. During a panic its drop prints the end of both, so a failing test shows them.
pub struct Proc {
    child: Child,
    status: Option<ExitStatus>,
    name: String,
    dir: tempfile::TempDir,
}

impl Proc {
    /// Spawns [`binsync_bin`] with `args` and extra environment variables (inherited `BINSYNC_*`
    /// variables are removed first). `BINSYNC_SNAPSHOT=never` unless `envs` sets it: the
    /// scenarios written for streaming count every `seq` from their `--start`, and a first
    /// start without `--start` would otherwise load the tables first (issue 12's default);
    /// the snapshot's own tests set it.
    #[track_caller]
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let mut envs = envs.to_vec();
        if !envs.iter().any(|(k, _)| *k == "BINSYNC_SNAPSHOT") {
            envs.push(("BINSYNC_SNAPSHOT", "never"));
        }
        Proc::spawn_program(&binsync_bin(), args, &envs)
    }

    /// Spawns any program the same way.
    #[track_caller]
    pub fn spawn_program(program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let dir = harness_tempdir("binsync-proc-");
        let stdout = fs::File::create(dir.path().join("stdout")).expect("create stdout file");
        let stderr = fs::File::create(dir.path().join("stderr")).expect("create stderr file");
        let mut cmd = Command::new(program);
        // Hermetic: no BINSYNC_CONFIG, BINSYNC_SOURCE_PASSWORD, ... from the developer's shell.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BINSYNC_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = spawn_guarded(cmd)
            .unwrap_or_else(|e| panic!("spawn {} {args:?}: {e}", program.display()));
        let name = format!("{} {}", program.display(), args.join(" "));
        Proc {
            child,
            status: None,
            name,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if it has exited (reaps it), else `None`.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Sends SIGTERM if it is still running (does not wait; see [`Proc::wait_timeout`]).
    pub fn sigterm(&mut self) {
        if self.is_running() {
            signal(self.pid(), libc::SIGTERM);
        }
    }

    /// Sends SIGINT if it is still running (does not wait).
    pub fn sigint(&mut self) {
        if self.is_running() {
            signal(self.pid(), libc::SIGINT);
        }
    }

    /// SIGKILL and reap. No-op if it already exited.
    pub fn kill9(&mut self) {
        if self.status.is_none() {
            self.status = kill_and_reap(&mut self.child);
        }
    }

    /// Waits up to `d` for it to exit; its exit status, or `None` if it still runs.
    pub fn wait_timeout(&mut self, d: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_child(&mut self.child, d);
        }
        self.status
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.dir.path().join("stdout"))
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.path().join("stderr"))
    }

    /// The complete lines of stdout so far (a line still being written is left out).
    pub fn stdout_lines(&self) -> Vec<String> {
        let out = self.stdout();
        let complete = out.rfind('\n').map_or("", |i| &out[..i]);
        complete
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.status = kill_and_reap(&mut self.child);
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} (pid {}, {:?}) ---\n--- stdout (end) ---\n{}\n--- stderr (end) ---\n{}",
                self.name,
                self.child.id(),
                self.status,
                tail(&self.stdout(), 40),
                tail(&self.stderr(), 60)
            );
        }
    }
}
