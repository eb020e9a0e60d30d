//! Scenario: the disk under the file sink or the state dir stops taking writes that the page
//! cache already took, so `fdatasync` (or the file system's own writeback) fails. tmpfs never
//! fails an fsync, and this kernel has no device-mapper (no `error` or `flakey` target), so the
//! disk is an ext4 on a loop device whose backing file sits on a small tmpfs: a thin-provisioned
//! volume. Once the tmpfs is full, writeback of blocks not yet backed fails:
//!
//! - without a journal, `fdatasync` says ENOSPC: a full disk. binsync waits, logging it once
//!   however many changes come meanwhile, never advising `--reset`; with room again every row
//!   is delivered and the checkpoint saved. (Before: a failed `fdatasync` was noticed only at
//!   the next change, and each change then restarted the stages into the still full disk.)
//! - with a journal, the journal aborts and the file system turns read-only (EIO from
//!   `fdatasync`, EROFS from the next write): binsync stops with one line naming the path,
//!   never advising `--reset` (it said the store was damaged). What a repair (room again,
//!   `e2fsck`, mounted again) brings back is the disk's affair; see
//!   [`io_error_on_a_journaled_disk`] for what binsync then does.
//!
//! Mounting and loop devices need root and `/dev/loop-control` (CI runs as root); without them
//! the tests say so on stderr and pass.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::workload::{
    advises_reset, delivered, saved_seq, sink_seqs, source_state, spawn_file_run, SCHEMA,
};
use common::{wait_until, MariaDb, Proc, ServerOpts};

/// An ext4 on a loop device over a sparse file on a small tmpfs; torn down (lazily) on drop.
struct ThinDisk {
    backing: tempfile::TempDir,
    mnt: tempfile::TempDir,
    loop_dev: Option<String>,
    mounted: bool,
    filler: PathBuf,
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    match Command::new(cmd).args(args).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(o) => Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{cmd}: {e}")),
    }
}

impl ThinDisk {
    /// None (after saying why on stderr) when this host does not let us build one.
    fn new(journal: bool) -> Option<ThinDisk> {
        let backing = tempfile::tempdir().unwrap();
        let mnt = tempfile::tempdir().unwrap();
        let b = backing.path().display().to_string();
        if let Err(e) = run("mount", &["-t", "tmpfs", "-o", "size=64m", "tmpfs", &b]) {
            eprintln!("SKIPPED: cannot mount a tmpfs (needs root): {e}");
            return None;
        }
        let mut disk = ThinDisk {
            filler: backing.path().join("filler"),
            backing,
            mnt,
            loop_dev: None,
            mounted: false,
        };
        let image = disk.backing.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(512 << 20))
            .unwrap();
        match run(
            "losetup",
            &["--find", "--show", &image.display().to_string()],
        ) {
            Ok(dev) => disk.loop_dev = Some(dev),
            Err(e) => {
                eprintln!("SKIPPED: no loop device: {e}");
                return None;
            }
        }
        let features = if journal {
            "has_journal"
        } else {
            "^has_journal"
        };
        let dev = disk.dev().to_string();
        if let Err(e) = run(
            "mkfs.ext4",
            &["-q", "-O", features, "-E", "lazy_itable_init=1", &dev],
        ) {
            eprintln!("SKIPPED: cannot make an ext4: {e}");
            return None;
        }
        disk.mount();
        Some(disk)
    }

    fn dev(&self) -> &str {
        self.loop_dev.as_deref().unwrap()
    }

    fn path(&self) -> &Path {
        self.mnt.path()
    }

    fn mount(&mut self) {
        run("mount", &[self.dev(), &self.path().display().to_string()]).unwrap();
        self.mounted = true;
    }

    /// Fills the backing tmpfs: from now on, writeback of blocks not yet backed fails.
    fn run_out(&self) {
        let mut f = std::fs::File::create(&self.filler).unwrap();
        let block = vec![0xAAu8; 64 * 1024];
        while f.write(&block).is_ok_and(|n| n > 0) {}
        while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
    }

    /// `syncfs` of the mounted file system.
    fn sync(&self) {
        let _ = run("sync", &["-f", &self.path().display().to_string()]);
    }

    /// Room again for the volume (still mounted).
    fn grow(&self) {
        std::fs::remove_file(&self.filler).unwrap();
    }

    /// Room again, and the file system repaired: unmounted, `e2fsck -fy`, mounted again.
    fn repair(&mut self) {
        self.grow();
        run("umount", &[&self.path().display().to_string()]).unwrap();
        self.mounted = false;
        // Exit 1: errors corrected.
        let st = Command::new("e2fsck")
            .args(["-fy", self.dev()])
            .output()
            .unwrap();
        assert!(
            st.status.code().is_some_and(|c| c <= 1),
            "e2fsck: {}",
            String::from_utf8_lossy(&st.stdout)
        );
        self.mount();
    }
}

impl Drop for ThinDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = run("umount", &["-l", &self.path().display().to_string()]);
        }
        if let Some(dev) = &self.loop_dev {
            let _ = run("losetup", &["-d", dev]);
        }
        let _ = run(
            "umount",
            &["-l", &self.backing.path().display().to_string()],
        );
    }
}

/// One transaction (and one checkpoint save, at least) per row.
fn insert_rows(db: &MariaDb, from: i64, n: i64) {
    let sql: String = (from..from + n)
        .map(|id| format!("INSERT INTO t.items VALUES ({id}, {id}, 'row-{id}');\n"))
        .collect();
    db.sql(&sql);
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("binsync: error:"))
        .collect()
}

/// The first rows delivered and checkpointed, with the state dir or the sink file on `disk`.
fn start(
    db: &MariaDb,
    disk: &ThinDisk,
    state_on_disk: bool,
) -> (Proc, PathBuf, PathBuf, tempfile::TempDir) {
    db.sql(SCHEMA);
    insert_rows(db, 1, 20);
    let other = tempfile::tempdir().unwrap();
    let (state, out) = if state_on_disk {
        (disk.path().join("state"), other.path().join("out.jsonl"))
    } else {
        (other.path().join("state"), disk.path().join("out.jsonl"))
    };
    let p = spawn_file_run(db, "4848", &state, &out, &[]);
    wait_until(
        Duration::from_secs(60),
        "the first rows checkpointed",
        || {
            source_state(db) == delivered(&out)
                && saved_seq(&state) == sink_seqs(&out).into_iter().max()
        },
    );
    (p, state, out, other)
}

fn disk_full_lines(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.contains("is full")).count()
}

/// ENOSPC from `fdatasync`: binsync waits, saying so once, however many changes come
/// meanwhile; with room again it delivers and saves everything.
fn enospc_on_fdatasync(state_on_disk: bool) {
    let Some(disk) = ThinDisk::new(false) else {
        return;
    };
    let db = MariaDb::start(ServerOpts::default());
    let (mut p, state, out, _other) = start(&db, &disk, state_on_disk);
    disk.run_out();
    let mut id = 100;
    wait_until(Duration::from_secs(120), "the disk-full line", || {
        insert_rows(&db, id, 20);
        id += 20;
        disk_full_lines(&p.stderr()) > 0 || !p.is_running()
    });
    // Changes keep coming while the disk is full: still one line, no resume into a full disk.
    for _ in 0..10 {
        insert_rows(&db, id, 20);
        id += 20;
        std::thread::sleep(Duration::from_millis(300));
    }
    let stderr = p.stderr();
    assert!(p.is_running(), "binsync must wait, not exit: {stderr}");
    assert_eq!(disk_full_lines(&stderr), 1, "logged once: {stderr}");
    assert!(!advises_reset(&stderr), "never advises --reset: {stderr}");

    disk.grow();
    wait_until(Duration::from_secs(120), "every row delivered", || {
        source_state(&db) == delivered(&out)
    });
    wait_until(Duration::from_secs(60), "the checkpoint saved", || {
        saved_seq(&state) == sink_seqs(&out).into_iter().max()
    });
    p.sigterm();
    let st = p.wait_timeout(Duration::from_secs(30)).expect("stops");
    let stderr = p.stderr();
    assert!(st.success(), "{stderr}");
    assert_eq!(disk_full_lines(&stderr), 1, "logged once: {stderr}");
    assert!(!advises_reset(&stderr), "{stderr}");
}

/// The `seq`s of the lines that parse, and how many do not (a repaired file system may hand
/// back zeros where a write failed).
fn readable_seqs(out: &Path) -> (Vec<u64>, usize) {
    let text = String::from_utf8_lossy(&std::fs::read(out).unwrap_or_default()).into_owned();
    let mut bad = 0;
    let seqs = text
        .lines()
        .filter_map(|l| {
            let seq = serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["seq"].as_u64());
            bad += usize::from(seq.is_none());
            seq
        })
        .collect();
    (seqs, bad)
}

/// The journaled disk fails (its writeback fails, the journal aborts, the file system turns
/// read-only: EIO from `fdatasync` or EROFS from the next write): binsync stops with one line
/// naming the path, and never advises `--reset` for it. Once the disk is repaired (room
/// again, `e2fsck`, mounted again), a restart resumes from the checkpoint:
///
/// - sink file on the failing disk: every change after the checkpoint is delivered again. The
///   disk itself may have lost the tail of the last block a successful `fdatasync` covered
///   (seen here: a later failed write of the same block reads back as zeros after the
///   repair); that is the disk's loss, counted and printed, not asserted on.
/// - state dir on the failing disk: every row is delivered. If the failed writes left the
///   store unreadable even after `e2fsck` (sled cannot replay its log), binsync says it is
///   damaged and names `--reset`, which delivers every row again, numbered above the old ones.
fn io_error_on_a_journaled_disk(state_on_disk: bool) {
    let Some(mut disk) = ThinDisk::new(true) else {
        return;
    };
    let db = MariaDb::start(ServerOpts::default());
    let (mut p, state, out, other) = start(&db, &disk, state_on_disk);
    disk.run_out();
    let mut id = 100;
    wait_until(Duration::from_secs(120), "binsync to stop", || {
        if id < 5000 {
            insert_rows(&db, id, 20);
            id += 20;
        }
        // The file system's own writeback (metadata, the journal) meets the full volume only
        // after its 30 s expiry: have it now.
        disk.sync();
        !p.is_running()
    });
    let stderr = p.stderr();
    let code = p.try_status().unwrap().code();
    assert_ne!(code, Some(0), "{stderr}");
    assert_ne!(code, Some(101), "no panic: {stderr}");
    let errors = error_lines(&stderr);
    eprintln!("exit {code:?}: {}", errors.join("\n"));
    assert_eq!(errors.len(), 1, "{stderr}");
    let named = if state_on_disk { &state } else { &out };
    assert!(
        errors[0].contains(&named.display().to_string()),
        "names {}: {}",
        named.display(),
        errors[0]
    );
    assert!(
        !advises_reset(&stderr),
        "a failing disk is no damage: {stderr}"
    );
    let checkpoint = saved_seq(&state);

    disk.repair();
    let mut p = spawn_file_run(&db, "4848", &state, &out, &["--exit-at-end"]);
    let st = p
        .wait_timeout(Duration::from_secs(120))
        .expect("the restart returns");
    if !state_on_disk {
        assert!(st.success(), "{}", p.stderr());
        let checkpoint = checkpoint.expect("a checkpoint on the healthy disk");
        let (seqs, unreadable) = readable_seqs(&out);
        let first = seqs[0];
        let last = *seqs.iter().max().unwrap();
        let held: std::collections::BTreeSet<u64> = seqs.into_iter().collect();
        let lost = (first..=checkpoint).filter(|s| !held.contains(s)).count();
        eprintln!("the disk lost {lost} synced lines ({unreadable} unreadable)");
        assert!(
            (checkpoint + 1..=last).all(|s| held.contains(&s)),
            "every change after the checkpoint ({checkpoint}) is delivered again, up to {last}"
        );
        let rows = db
            .sql("SELECT COUNT(*) FROM t.items")
            .trim()
            .parse::<u64>()
            .unwrap();
        assert!(
            last - first + 1 >= rows,
            "up to the end: {rows} rows, seqs {first}..={last}"
        );
        return;
    }
    if st.success() {
        assert_eq!(source_state(&db), delivered(&out));
        return;
    }
    let stderr = p.stderr();
    let errors = error_lines(&stderr);
    eprintln!("after the repair: {}", errors.join("\n"));
    assert!(
        errors.len() == 1 && errors[0].contains("damaged") && errors[0].contains("--reset"),
        "only the store itself may be lost, and then it says so: {stderr}"
    );
    let again = other.path().join("after-reset.jsonl");
    let mut p = spawn_file_run(&db, "4848", &state, &again, &["--exit-at-end", "--reset"]);
    let st = p
        .wait_timeout(Duration::from_secs(120))
        .expect("the run with --reset returns");
    assert!(st.success(), "{}", p.stderr());
    assert_eq!(source_state(&db), delivered(&again));
    let before = sink_seqs(&out).into_iter().max().unwrap();
    assert!(sink_seqs(&again)[0] > before, "numbered above the old ones");
}

#[test]
fn enospc_from_fdatasync_on_the_sink_file_waits_then_delivers_everything() {
    enospc_on_fdatasync(false);
}

#[test]
fn enospc_from_fdatasync_on_the_state_dir_waits_then_saves() {
    enospc_on_fdatasync(true);
}

#[test]
fn a_failing_sink_disk_stops_binsync_and_after_repair_everything_unsaved_is_sent_again() {
    io_error_on_a_journaled_disk(false);
}

#[test]
fn a_failing_state_dir_disk_stops_binsync_without_advising_reset() {
    io_error_on_a_journaled_disk(true);
}
