//! Scenario: binsync's own state dir is damaged after a run: its sled `db` file deleted,
//! emptied, or cut short. The next `binsync run` stops with one `binsync: error:` line naming
//! `--reset` and a non-zero exit, instead of silently starting a new store that would number
//! from scratch. `run --reset` then works: the damaged files are kept in `damaged-<time>/`, and
//! the first `seq` it sends is above every `seq` sent before.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{MariaDb, Proc, ServerOpts};

fn run(db: &MariaDb, state: &Path, out: &Path, extra: &[&str]) -> Proc {
    let url = db.url();
    let state = state.display().to_string();
    let sink = format!("file:{}", out.display());
    let mut args = vec![
        "run",
        "--source",
        &url,
        "--server-id",
        "4545",
        "--state-dir",
        &state,
        "--sink",
        &sink,
        "--exit-at-end",
    ];
    args.extend(extra);
    let mut p = Proc::spawn(&args, &[]);
    p.wait_timeout(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("run did not finish: {}", p.stderr()));
    p
}

fn seqs(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn damage_then_reset(how: &str, damage: impl Fn(&Path)) {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(common::workload::SCHEMA);
    db.sql("INSERT INTO t.items VALUES (1, 1, 'a'), (2, 2, 'b'); UPDATE t.items SET v = 3 WHERE id = 1");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first_out = dir.path().join("first.jsonl");
    let mut p = run(&db, &state, &first_out, &[]);
    assert!(p.try_status().unwrap().success(), "{}", p.stderr());
    let before = seqs(&first_out);
    // The two CREATE TABLEs (as `ddl` lines), then the three row changes.
    assert_eq!(before.len(), 5);

    damage(&state.join("db"));
    db.sql("INSERT INTO t.items VALUES (3, 3, 'c')");
    let out = dir.path().join("second.jsonl");
    let mut p = run(&db, &state, &out, &[]);
    assert!(!p.try_status().unwrap().success(), "{how}: must fail");
    let errors: Vec<String> = p
        .stderr()
        .lines()
        .filter(|l| l.starts_with("binsync: error:"))
        .map(str::to_string)
        .collect();
    assert_eq!(errors.len(), 1, "{how}: {}", p.stderr());
    assert!(
        errors[0].contains("--reset") && errors[0].contains("damaged"),
        "{how}: {}",
        errors[0]
    );
    assert!(!p.stderr().contains("panicked"), "{}", p.stderr());
    assert!(
        seqs(&out).is_empty(),
        "{how}: nothing sent from a damaged store"
    );

    let mut p = run(&db, &state, &out, &["--reset"]);
    assert!(p.try_status().unwrap().success(), "{how}: {}", p.stderr());
    let after = seqs(&out);
    assert_eq!(
        after.len(),
        6,
        "{how}: history again, from --start earliest (2 ddl lines, 4 row changes)"
    );
    let highest_before = *before.iter().max().unwrap();
    assert!(
        after[0] > highest_before,
        "{how}: first seq after the reset {} must be above {highest_before}",
        after[0]
    );
    assert!(after.iter().all(|s| *s < 1 << 53));
    let aside = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("damaged-"))
        .count();
    assert_eq!(aside, 1, "{how}: the damaged store is kept");

    // And the reset store is a normal one.
    let mut p = run(&db, &state, &dir.path().join("third.jsonl"), &[]);
    assert!(p.try_status().unwrap().success(), "{how}: {}", p.stderr());
}

#[test]
fn a_deleted_db_file_is_an_error_naming_reset() {
    damage_then_reset("deleted", |db| std::fs::remove_file(db).unwrap());
}

#[test]
fn an_emptied_db_file_is_an_error_naming_reset() {
    damage_then_reset("emptied", |db| std::fs::write(db, b"").unwrap());
}

#[test]
fn a_truncated_db_file_is_an_error_naming_reset() {
    damage_then_reset("truncated", |db| {
        let len = std::fs::metadata(db).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
        f.set_len(len / 3).unwrap();
    });
}
