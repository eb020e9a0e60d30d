//! Tests of the real-server harness in tests/common itself: servers start with the settings
//! binsync needs, keep their data over a crash, replicate, and never outlive their guards.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{wait_until, MariaDb, Proc, ServerOpts};

/// Whether a process with this pid exists (a zombie counts as gone: the guards reap theirs).
fn alive(pid: u32) -> bool {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(_) => return false,
    };
    // "pid (comm) S ..." — the state follows the last ')'.
    !matches!(
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next()),
        Some('Z') | Some('X') | None
    )
}

fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn var(db: &MariaDb, name: &str) -> String {
    let out = db.sql(&format!("SHOW GLOBAL VARIABLES LIKE '{name}'"));
    out.trim_end()
        .split_once('\t')
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("no variable {name}: {out:?}"))
}

#[test]
fn start_and_sql_round_trip() {
    let db = MariaDb::start(ServerOpts::default());
    assert_ne!(db.port(), 3306);
    assert!(alive(db.pid()));
    assert_eq!(db.url(), format!("mysql://root@127.0.0.1:{}", db.port()));
    db.sql(
        "CREATE DATABASE shop;
         CREATE TABLE shop.t (id INT PRIMARY KEY, name VARCHAR(20), note TEXT);
         INSERT INTO shop.t VALUES (1, 'café ☕', NULL), (2, 'tab\there', 'x');",
    );
    assert_eq!(
        db.rows("SELECT id, name, note FROM shop.t ORDER BY id"),
        vec![
            vec!["1".to_string(), "café ☕".into(), "NULL".into()],
            vec!["2".to_string(), "tab\\there".into(), "x".into()],
        ]
    );
    // The server answering is ours, not the system one.
    assert_eq!(
        db.sql("SELECT @@datadir").trim(),
        format!("{}/", db.datadir().display())
    );
    let err = db.try_sql("SELECT * FROM shop.nope").unwrap_err();
    assert!(err.contains("doesn't exist"), "{err}");
    let panicked = std::panic::catch_unwind(|| db.sql("SELEC 1")).unwrap_err();
    let msg = panicked
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(msg.contains("SQL syntax"), "{msg}");
}

#[test]
fn binlog_is_row_full_by_default() {
    let opts = ServerOpts {
        gtid_strict: true,
        ..ServerOpts::default()
    };
    let server_id = opts.server_id;
    let db = MariaDb::start(opts);
    assert_eq!(var(&db, "log_bin"), "ON");
    assert_eq!(var(&db, "binlog_format"), "ROW");
    assert_eq!(var(&db, "binlog_row_metadata"), "FULL");
    assert_eq!(var(&db, "binlog_row_image"), "FULL");
    assert_eq!(var(&db, "gtid_strict_mode"), "ON");
    assert_eq!(var(&db, "log_slave_updates"), "ON");
    assert_eq!(var(&db, "server_id"), server_id.to_string());
    assert_eq!(var(&db, "character_set_server"), "utf8mb4");
    assert_eq!(var(&db, "performance_schema"), "OFF");
    assert_eq!(var(&db, "innodb_buffer_pool_size"), (16 << 20).to_string());
    assert!(var(&db, "log_bin_basename").starts_with(&db.datadir().display().to_string()));

    // A fresh server's binlog starts empty: no GTID yet.
    assert_eq!(db.gtid_binlog_pos(), "");
    let (file, pos) = db.binlog_position();
    assert!(file.starts_with("mariadb-bin."), "{file}");
    db.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY); INSERT INTO d.t VALUES (1);");
    assert_eq!(db.gtid_binlog_pos(), format!("0-{server_id}-3"));
    assert!(db.binlog_position().1 > pos);
    // The rows are in the binlog as row events.
    let events = db.sql(&format!("SHOW BINLOG EVENTS IN '{file}'"));
    assert!(events.contains("Write_rows"), "{events}");
}

#[test]
fn options_are_applied() {
    let db = MariaDb::start(ServerOpts {
        binlog: false,
        extra_args: vec!["--max-connections=17".into()],
        ..ServerOpts::default()
    });
    assert_eq!(var(&db, "log_bin"), "OFF");
    assert_eq!(var(&db, "max_connections"), "17");
    let db = MariaDb::start(ServerOpts {
        binlog_format: "MIXED",
        row_metadata: "MINIMAL",
        ..ServerOpts::default()
    });
    assert_eq!(var(&db, "binlog_format"), "MIXED");
    assert_eq!(var(&db, "binlog_row_metadata"), "MINIMAL");
}

#[test]
fn two_servers_side_by_side() {
    let a = MariaDb::start(ServerOpts::default());
    let b = MariaDb::start(ServerOpts::default());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.server_id(), b.server_id());
    assert_ne!(a.datadir(), b.datadir());
    a.sql("CREATE DATABASE only_a");
    assert_eq!(b.sql("SHOW DATABASES LIKE 'only_a'"), "");
}

#[test]
fn kill9_and_restart_keep_data_and_binlog() {
    let mut db = MariaDb::start(ServerOpts::default());
    let (port, url, old_pid) = (db.port(), db.url(), db.pid());
    db.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY); INSERT INTO d.t VALUES (1), (2);");
    let gtid = db.gtid_binlog_pos();

    db.kill9();
    assert!(!alive(old_pid), "pid {old_pid} survived kill9");
    assert!(!db.is_running());
    assert!(db.try_sql("SELECT 1").is_err());

    db.restart();
    assert_ne!(db.pid(), old_pid);
    assert_eq!(db.port(), port);
    assert_eq!(db.url(), url);
    assert_eq!(db.sql("SELECT COUNT(*) FROM d.t").trim(), "2");
    assert_eq!(db.gtid_binlog_pos(), gtid);
    // Crash recovery left a usable server; a restart opens a new binlog file.
    db.sql("INSERT INTO d.t VALUES (3)");
    assert_eq!(db.sql("SHOW BINARY LOGS").lines().count(), 2);

    // A clean stop and restart, too.
    let pid = db.pid();
    db.stop();
    assert!(!alive(pid));
    assert!(!accepts(port));
    assert!(db.error_log().contains("Shutdown complete"));
    db.restart();
    assert_eq!(db.sql("SELECT COUNT(*) FROM d.t").trim(), "3");
    // restart() on a running server stops it first.
    let pid = db.pid();
    db.restart();
    assert!(!alive(pid));
    assert_eq!(db.sql("SELECT COUNT(*) FROM d.t").trim(), "3");
}

#[test]
fn replica_receives_rows() {
    let primary = MariaDb::start(ServerOpts::default());
    primary.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO d.t VALUES (1, 'before');");
    let replica = MariaDb::start_replica_of(&primary, ServerOpts::default());
    // Already caught up with what was there before it started.
    assert_eq!(replica.sql("SELECT v FROM d.t").trim(), "before");
    primary.sql("INSERT INTO d.t VALUES (2, 'after'); UPDATE d.t SET v = 'changed' WHERE id = 1;");
    replica.sync_with(&primary);
    assert_eq!(
        replica.rows("SELECT id, v FROM d.t ORDER BY id"),
        vec![
            vec!["1".to_string(), "changed".into()],
            vec!["2".to_string(), "after".into()]
        ]
    );
    // log_slave_updates: the replica's own binlog carries the primary's GTIDs, so binsync can
    // tail a replica.
    assert_eq!(replica.gtid_binlog_pos(), primary.gtid_binlog_pos());
    let status = replica.rows_with_names("SHOW SLAVE STATUS").pop().unwrap();
    assert_eq!(status["Using_Gtid"], "Slave_Pos");
    assert_eq!(status["Master_Port"], primary.port().to_string());
}

#[test]
fn create_user_grants_and_url_as() {
    let db = MariaDb::start(ServerOpts::default());
    db.create_user(
        "cdc",
        "p@ss:w/rd'",
        "REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.*",
    );
    let grants = db.sql("SHOW GRANTS FOR 'cdc'@'%'");
    assert!(grants.contains("REPLICATION SLAVE"), "{grants}");
    assert!(grants.contains("SELECT"), "{grants}");
    db.create_user("bare", "x", "");
    assert_eq!(
        db.url_as("cdc", "p@ss:w/rd'"),
        format!("mysql://cdc:p%40ss%3Aw%2Frd%27@127.0.0.1:{}", db.port())
    );
}

/// The URLs work with the client library binsync itself uses.
#[tokio::test]
async fn url_works_with_mysql_async() {
    use mysql_async::prelude::Queryable;
    let db = MariaDb::start(ServerOpts::default());
    // A password that needs percent-encoding in the URL.
    db.create_user("cdc", "p@ss:w/rd'", "SELECT");
    for url in [db.url(), db.url_as("cdc", "p@ss:w/rd'")] {
        let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
        let id: Option<u32> = conn.query_first("SELECT @@server_id").await.unwrap();
        assert_eq!(id, Some(db.server_id()), "{url}");
        conn.disconnect().await.unwrap();
    }
}

#[test]
fn drop_kills_the_server_and_removes_the_datadir() {
    let db = MariaDb::start(ServerOpts::default());
    let (pid, port, dir) = (db.pid(), db.port(), db.datadir().to_path_buf());
    assert!(alive(pid) && accepts(port) && dir.join("mysql").is_dir());
    drop(db);
    assert!(!alive(pid), "mariadbd pid {pid} outlived its MariaDb");
    assert!(!accepts(port));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn drop_during_a_panic_kills_the_server() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = MariaDb::start(ServerOpts::default());
        seen = Some((db.pid(), db.datadir().to_path_buf()));
        panic!("test failure while the server runs");
    }));
    assert!(result.is_err());
    let (pid, dir) = seen.unwrap();
    assert!(!alive(pid), "mariadbd pid {pid} outlived a panicking test");
    assert!(!dir.exists());
}

#[test]
fn a_server_that_cannot_start_panics_with_its_error_log() {
    let result = std::panic::catch_unwind(|| {
        MariaDb::start(ServerOpts {
            extra_args: vec!["--no-such-option=1".into()],
            ..ServerOpts::default()
        })
    });
    let err = result.err().expect("start should fail");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("no-such-option"), "{msg}");
}

/// Helper for `servers_die_with_a_killed_test_process`: run only as its child.
#[test]
#[ignore = "helper, run by servers_die_with_a_killed_test_process"]
fn helper_start_server_and_hang() {
    let Ok(out) = std::env::var("HARNESS_HELPER_OUT") else {
        return;
    };
    let db = MariaDb::start(ServerOpts::default());
    let proc = Proc::spawn_program(Path::new("/bin/sleep"), &["1000"], &[]);
    let info = format!("{} {} {}", db.pid(), proc.pid(), db.datadir().display());
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, info).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

/// A test process killed outright (no unwinding, no Drop: a runner's timeout, Ctrl-C, OOM)
/// takes its servers and binsync processes with it (PR_SET_PDEATHSIG).
#[test]
fn servers_die_with_a_killed_test_process() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pids");
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_start_server_and_hang",
            "--ignored",
            "--nocapture",
        ])
        .env("HARNESS_HELPER_OUT", &out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "the helper's server", || {
        out.exists()
    });
    let info = std::fs::read_to_string(&out).unwrap();
    let mut info = info.split_whitespace();
    let pids: Vec<u32> = (0..2)
        .map(|_| info.next().unwrap().parse().unwrap())
        .collect();
    let datadir = std::path::PathBuf::from(info.next().unwrap());
    assert!(pids.iter().all(|&p| alive(p)));
    assert!(datadir.is_dir());
    unsafe { libc::kill(helper.id() as i32, libc::SIGKILL) };
    helper.wait().unwrap();
    // Orphans are reparented to init (or a subreaper), which reaps them.
    wait_until(Duration::from_secs(10), "the orphans to die", || {
        pids.iter().all(|&p| !alive(p))
    });
    // Its temp dirs were left behind; the next test process sweeps them.
    assert!(datadir.is_dir());
    common::sweep_stale_dirs();
    assert!(!datadir.exists(), "{} not swept", datadir.display());
}

#[test]
fn binsync_binary_is_built() {
    let bin = common::binsync_bin();
    assert!(bin.is_file(), "{}", bin.display());
}

/// A shell stand-in for binsync: prints, exits 3 on SIGTERM.
const TERM_SCRIPT: &str = r#"echo "one $GREETING"; echo two; echo err >&2; trap 'echo got TERM >&2; exit 3' TERM; while :; do sleep 0.05; done"#;

#[test]
fn proc_captures_output_and_gets_sigterm() {
    use std::os::unix::process::ExitStatusExt;
    let mut p = Proc::spawn_program(
        Path::new("/bin/sh"),
        &["-c", TERM_SCRIPT],
        &[("GREETING", "hi")],
    );
    wait_until(Duration::from_secs(10), "two lines", || {
        p.stdout_lines().len() == 2
    });
    assert_eq!(p.stdout_lines(), ["one hi", "two"]);
    assert!(p.is_running());
    assert_eq!(p.wait_timeout(Duration::from_millis(100)), None);
    p.sigterm();
    let status = p
        .wait_timeout(Duration::from_secs(10))
        .expect("exit after SIGTERM");
    assert_eq!(status.code(), Some(3));
    assert_eq!(p.stderr(), "err\ngot TERM\n");
    // Idempotent once it has exited.
    p.sigterm();
    p.kill9();
    assert_eq!(p.wait_timeout(Duration::ZERO), Some(status));
    assert_eq!(status.signal(), None);
}

#[test]
fn proc_kill9_and_drop() {
    use std::os::unix::process::ExitStatusExt;
    let mut p = Proc::spawn_program(Path::new("/bin/sleep"), &["1000"], &[]);
    let pid = p.pid();
    assert!(alive(pid));
    p.kill9();
    assert!(!alive(pid));
    assert_eq!(
        p.wait_timeout(Duration::ZERO).unwrap().signal(),
        Some(libc::SIGKILL)
    );

    let p = Proc::spawn_program(Path::new("/bin/sleep"), &["1000"], &[]);
    let pid = p.pid();
    let t = Instant::now();
    drop(p);
    assert!(!alive(pid), "pid {pid} outlived its Proc");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn wait_until_panics_naming_what() {
    let mut n = 0;
    wait_until(Duration::from_secs(5), "n to reach 3", || {
        n += 1;
        n >= 3
    });
    let err = std::panic::catch_unwind(|| {
        wait_until(Duration::from_millis(120), "godot", || false);
    })
    .unwrap_err();
    assert!(err.downcast_ref::<String>().unwrap().contains("godot"));
}

#[test]
fn free_ports_are_distinct_and_free() {
    let ports: std::collections::HashSet<u16> = (0..50).map(|_| common::free_port()).collect();
    assert_eq!(ports.len(), 50);
    for p in ports {
        assert!(std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
    }
}
