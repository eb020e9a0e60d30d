//! Scenario: the disk under binsync fills up (ENOSPC) while it runs, on a real size-limited
//! tmpfs: first the state dir's (the checkpoint store), then the file sink's. binsync logs the
//! situation once, naming the directory to free, keeps running (no exit, no advice to
//! `--reset`), and once space is back it saves the checkpoint and the sink holds every row
//! (a re-delivered line carries the same `seq`), with no partial line left in the file. After
//! a SIGTERM, a restart on the same state dir resumes without losing a row. A SIGTERM while
//! it waits ends it at once, the checkpoint where it was; and a dead letter that cannot be kept
//! on a full state dir is kept once space is back.
//!
//! Mounting needs root (CI runs as root); without it the tests say so on stderr and pass.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::workload::{
    advises_reset, delivered, saved_seq, sink_seqs, source_state, spawn_file_run, SCHEMA,
};
use common::{wait_until, MariaDb, Proc, ServerOpts};

/// A size-limited tmpfs mounted on a temp dir, unmounted (lazily) when dropped, panics included.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// None (after saying why on stderr) when this host does not let us mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the tmpfs is full; returns its path.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0xAAu8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // The last partial pages too.
        while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn insert_rows(db: &MariaDb, from: i64, n: i64) {
    // One transaction (and one checkpoint save, at least) per row.
    let sql: String = (from..from + n)
        .map(|id| format!("INSERT INTO t.items VALUES ({id}, {id}, 'row-{id}-padding');\n"))
        .collect();
    db.sql(&sql);
}

/// Inserts rows from `from` on, 20 at a time, until binsync logs a full disk (sled writes into
/// space its files already hold for a while); returns the next free id. `note(id)` gives
/// each row's note.
fn insert_until_disk_full(
    db: &MariaDb,
    p: &mut Proc,
    from: i64,
    note: impl Fn(i64) -> String,
) -> i64 {
    let mut id = from;
    while disk_full_lines(&p.stderr()).is_empty() && p.is_running() {
        assert!(id < from + 5000, "no disk-full line: {}", p.stderr());
        let sql: String = (id..id + 20)
            .map(|i| format!("INSERT INTO t.items VALUES ({i}, {i}, '{}');\n", note(i)))
            .collect();
        db.sql(&sql);
        id += 20;
        std::thread::sleep(Duration::from_millis(200));
    }
    id
}

fn disk_full_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("is full"))
        .map(str::to_string)
        .collect()
}

/// The scenario; `state_on_tmpfs` picks which of the two directories fills up.
fn fill_wait_recover_resume(state_on_tmpfs: bool) {
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    let db = MariaDb::start(ServerOpts::default());
    db.sql(SCHEMA);
    insert_rows(&db, 1, 20);
    let other = tempfile::tempdir().unwrap();
    let (state, out) = if state_on_tmpfs {
        (fs.path().join("state"), other.path().join("out.jsonl"))
    } else {
        (other.path().join("state"), fs.path().join("out.jsonl"))
    };
    let mut p = spawn_file_run(&db, "4747", &state, &out, &[]);
    wait_until(Duration::from_secs(60), "the first rows delivered", || {
        source_state(&db) == delivered(&out)
    });
    wait_until(Duration::from_secs(30), "their checkpoint", || {
        saved_seq(&state) == Some(sink_seqs(&out).into_iter().max().unwrap_or(0))
    });

    let filler = fs.fill();
    // 200 rows once were not enough under load (no disk-full line in 60 s): sled may hold
    // room for that many checkpoints in its files. Insert until binsync meets the full disk.
    insert_until_disk_full(&db, &mut p, 100, |i| format!("row-{i}-padding"));
    let full = if state_on_tmpfs {
        state.clone()
    } else {
        out.parent().unwrap().to_path_buf()
    };
    // It waits: still running a while later, and said so once.
    std::thread::sleep(Duration::from_secs(3));
    let stderr = p.stderr();
    assert!(p.is_running(), "binsync must wait, not exit: {stderr}");
    // Nothing half written meanwhile: every line parses (sink_seqs checks).
    sink_seqs(&out);
    let lines = disk_full_lines(&stderr);
    assert_eq!(lines.len(), 1, "logged once: {stderr}");
    assert!(
        lines[0].contains(&format!("free space on {}", full.display())),
        "names {}: {}",
        full.display(),
        lines[0]
    );
    assert!(!advises_reset(&stderr), "never advises --reset: {stderr}");

    std::fs::remove_file(&filler).unwrap();
    wait_until(Duration::from_secs(90), "every row delivered", || {
        source_state(&db) == delivered(&out)
    });
    wait_until(
        Duration::from_secs(60),
        "the checkpoint saved again",
        || saved_seq(&state) == Some(sink_seqs(&out).into_iter().max().unwrap_or(0)),
    );
    let stderr = p.stderr();
    assert_eq!(disk_full_lines(&stderr).len(), 1, "logged once: {stderr}");
    assert!(!advises_reset(&stderr), "never advises --reset: {stderr}");
    assert!(p.is_running(), "{stderr}");

    p.sigterm();
    let st = p
        .wait_timeout(Duration::from_secs(30))
        .expect("stops on SIGTERM");
    assert!(st.success(), "{}", p.stderr());

    // Resumes from the checkpoint: nothing lost, re-deliveries identical (file_state checks).
    insert_rows(&db, 1000, 10);
    let mut p = spawn_file_run(&db, "4747", &state, &out, &["--exit-at-end"]);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("the restart returns");
    assert!(st.success(), "{}", p.stderr());
    assert_eq!(source_state(&db), delivered(&out));
}

#[test]
fn a_full_state_dir_waits_for_space_then_saves_and_resumes() {
    fill_wait_recover_resume(true);
}

#[test]
fn a_full_sink_disk_waits_for_space_and_leaves_no_partial_line() {
    fill_wait_recover_resume(false);
}

/// Scenario: SIGTERM while binsync waits for space (on the state dir, or on the file sink):
/// it exits at once (exit 0) with the checkpoint where it was; with space back, a restart
/// delivers every row.
fn stop_while_waiting(state_on_tmpfs: bool) {
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    let db = MariaDb::start(ServerOpts::default());
    db.sql(SCHEMA);
    insert_rows(&db, 1, 20);
    let other = tempfile::tempdir().unwrap();
    let (state, out) = if state_on_tmpfs {
        (fs.path().join("state"), other.path().join("out.jsonl"))
    } else {
        (other.path().join("state"), fs.path().join("out.jsonl"))
    };
    let mut p = spawn_file_run(&db, "4747", &state, &out, &[]);
    wait_until(
        Duration::from_secs(60),
        "the first rows checkpointed",
        || {
            source_state(&db) == delivered(&out)
                && saved_seq(&state) == Some(sink_seqs(&out).into_iter().max().unwrap_or(0))
        },
    );
    let filler = fs.fill();
    insert_until_disk_full(&db, &mut p, 100, |i| format!("r{i}"));
    let before = saved_seq(&state);
    p.sigterm();
    let st = p
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("a stop must end the wait at once: {}", p.stderr()));
    assert!(st.success(), "{}", p.stderr());
    assert_eq!(saved_seq(&state), before, "the checkpoint stays put");
    assert!(!advises_reset(&p.stderr()), "{}", p.stderr());

    std::fs::remove_file(&filler).unwrap();
    let mut p = spawn_file_run(&db, "4747", &state, &out, &["--exit-at-end"]);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("the restart returns");
    assert!(st.success(), "{}", p.stderr());
    assert_eq!(source_state(&db), delivered(&out));
}

#[test]
fn a_stop_while_waiting_for_space_on_the_state_dir_ends_promptly() {
    stop_while_waiting(true);
}

#[test]
fn a_stop_while_waiting_for_space_for_the_sink_ends_promptly() {
    stop_while_waiting(false);
}

/// Scenario: the receiver rejects a batch while the state dir is full, so its dead letter
/// cannot be kept. binsync waits (logged once), and once space is back the batch is sent again
/// and dead-lettered; every other row reaches the receiver.
#[test]
fn a_dead_letter_on_a_full_state_dir_is_kept_once_space_is_back() {
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    let db = MariaDb::start(ServerOpts::default());
    db.sql(SCHEMA);
    insert_rows(&db, 1, 10);
    let other = tempfile::tempdir().unwrap();
    let mut recv = common::workload::Receiver::start(
        &other.path().join("receiver"),
        &["--reject-containing", "rejectme"],
    );
    let state = fs.path().join("state");
    let (url, state_s, sink) = (db.url(), state.display().to_string(), recv.url());
    let args = [
        "run",
        "--source",
        &url,
        "--server-id",
        "4848",
        "--state-dir",
        &state_s,
        "--sink",
        &sink,
        "--batch-rows",
        "1",
    ];
    let mut p = Proc::spawn(&args, &[]);
    wait_until(
        Duration::from_secs(60),
        "the first rows checkpointed",
        || saved_seq(&state).is_some_and(|s| s > 0) && p.stderr().contains("streaming"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let filler = fs.fill();
    // Every 4th row rejected: dead letters and checkpoints both write to the full state dir.
    let next = insert_until_disk_full(&db, &mut p, 100, |i| {
        if i % 4 == 0 {
            "rejectme".into()
        } else {
            format!("r{i}")
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let stderr = p.stderr();
    assert!(p.is_running(), "binsync must wait, not exit: {stderr}");
    let lines = disk_full_lines(&stderr);
    assert_eq!(lines.len(), 1, "logged once: {stderr}");
    assert!(
        lines[0].contains(&format!("free space on {}", state.display())),
        "{}",
        lines[0]
    );
    assert!(!advises_reset(&stderr), "never advises --reset: {stderr}");

    std::fs::remove_file(&filler).unwrap();
    let rejected = (100..next).filter(|i| i % 4 == 0).count();
    wait_until(Duration::from_secs(90), "every rejected row kept", || {
        dead_letter_seqs(&state).len() == rejected
    });
    std::thread::sleep(Duration::from_secs(3));
    p.sigterm();
    let st = p
        .wait_timeout(Duration::from_secs(30))
        .expect("stops on SIGTERM");
    assert!(st.success(), "{}", p.stderr());
    assert_eq!(disk_full_lines(&p.stderr()).len(), 1, "{}", p.stderr());

    // Every row but the rejected one is at the receiver; the rejected one is a dead letter
    // (kept again, with the same seq, only if a re-send came after an unsaved checkpoint).
    let (got, _) = recv.dump();
    let mut want = source_state(&db);
    want.retain(|_, v| v["note"] != "rejectme");
    assert_eq!(got, want);
    assert_eq!(dead_letter_seqs(&state).len(), rejected);
}

/// The distinct `first_seq`s of the dead letters binsync published in the state dir (a batch
/// re-sent after an unsaved checkpoint is kept again, with the same seq).
fn dead_letter_seqs(state: &Path) -> std::collections::BTreeSet<u64> {
    let Ok(dir) = std::fs::read_dir(state.join("dlq.published")) else {
        return Default::default();
    };
    dir.flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .filter_map(|v| v["first_seq"].as_u64())
        .collect()
}
