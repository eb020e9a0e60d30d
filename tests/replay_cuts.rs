//! Scenario: an operator replays an archived binlog file that was cut short (a copy
//! interrupted, a disk that filled while the server wrote it) or damaged in the middle (one
//! event's length wrong). Real MySQL- and MariaDB-written files from
//! `../shared/fixtures/mysql-binlogs/` are cut at every byte offset and replayed in-process
//! through `binsync::replay::replay_with_history`, the function behind `binsync replay` (given
//! a fixture's schema file as `--schema-from file:` gives it, where its tables were created
//! before the file begins and it has no FULL metadata). Each replay must give exactly the
//! changes of the events wholly before the cut (rows, and the DDL operations of the files' own
//! CREATE TABLE statements), and then either succeed (the cut fell between two events) or fail
//! with one error naming the file and the byte where the cut event starts. Never a panic: a
//! panic hook counts every panic in this process, also one that something (a spawned task, a
//! `catch_unwind`) caught, and the tests fail on any.
//!
//! The panic hook is why these tests live in a file of their own: other tests in the same
//! process that panic on purpose would be counted.

mod binlog_fixtures;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use binsync::config::{FileConfig, ReplayArgs, ReplaySettings};

/// Fixtures walked at every byte: rows events of many types (MySQL 8.0), a compressed
/// transaction (TRANSACTION_PAYLOAD, zstd), JSON documents, a MariaDB file, GTID tags
/// (MySQL 8.4) and VECTOR columns (MySQL 9).
const FILES: &[&str] = &[
    "mysql-enum-string-set.000001",
    "transaction_compression.000001",
    "json-opaque.binlog",
    "mariadb-bin.000001",
    "binlog_transaction_with_GTID_TAG.000001",
    "vector.binlog",
];

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic of the process from now on, caught or not (the default hook still
/// prints it).
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

/// What one replay gave: the lines delivered, and the error it ended with.
struct Outcome {
    lines: Vec<String>,
    error: Option<String>,
}

/// Replays `file` into a fresh file sink at `out`, in this process, with the definitions of
/// its tables when the fixture has a schema file (as `--schema-from file:PATH` gives them:
/// tables created before the file begins, without FULL metadata).
async fn replay(file: &Path, out: &Path) -> Outcome {
    let _ = std::fs::remove_file(out);
    let name = file.file_name().unwrap().to_string_lossy();
    let args = ReplayArgs {
        binlog_files: vec![file.to_path_buf()],
        sink: Some(format!("file:{}", out.display())),
        schema_from: binlog_fixtures::schema_from(&name),
        ..Default::default()
    };
    let settings = ReplaySettings::resolve(&args, &FileConfig::default()).unwrap();
    let history = binlog_fixtures::history(settings.schema_from.as_ref());
    let result = binsync::replay::replay_with_history(
        &settings.files,
        settings.sink,
        settings.decode,
        history,
    )
    .await;
    let text = std::fs::read_to_string(out).unwrap_or_default();
    Outcome {
        lines: text.lines().map(str::to_string).collect(),
        error: result.err().map(|e| e.to_string()),
    }
}

/// Where each event of a binlog file starts and ends, from the sizes in their headers.
fn events(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut at = 4;
    let mut out = Vec::new();
    while at < bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().unwrap()) as usize;
        out.push((at, at + size));
        at += size;
    }
    assert_eq!(at, bytes.len(), "the fixture's events fill it exactly");
    out
}

/// The `offset` of a change line: where its rows event ends (for the events of a compressed
/// transaction, where the TRANSACTION_PAYLOAD event ends).
fn offset(line: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["offset"].as_u64().unwrap() as usize
}

/// A directory in memory where there is one: thousands of small files are written.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("binsync-cuts")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// A fixture, its events, and what replaying it whole gives.
struct Fixture {
    name: &'static str,
    bytes: Vec<u8>,
    events: Vec<(usize, usize)>,
    whole: Vec<String>,
}

async fn fixture(name: &'static str, dir: &Path) -> Fixture {
    let bytes = std::fs::read(binlog_fixtures::dir().join(name)).unwrap();
    let events = events(&bytes);
    let whole = replay(&binlog_fixtures::dir().join(name), &dir.join("whole.jsonl")).await;
    assert_eq!(whole.error, None, "{name} replays whole");
    let rows = whole.lines.iter().filter(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v.get("id").is_some()
    });
    assert!(rows.count() > 0, "{name} holds row changes");
    Fixture {
        name,
        bytes,
        events,
        whole: whole.lines,
    }
}

impl Fixture {
    /// The lines of the whole file's replay that come from events ending at or before `end`.
    fn lines_before(&self, end: usize) -> Vec<String> {
        self.whole
            .iter()
            .filter(|l| offset(l) <= end)
            .cloned()
            .collect()
    }
}

/// Replays a copy of the fixture cut at `cut` bytes; returns what went wrong, if anything.
async fn check_cut(f: &Fixture, cut: usize, dir: &Path) -> Result<(), String> {
    let copy: PathBuf = dir.join(f.name);
    std::fs::write(&copy, &f.bytes[..cut]).unwrap();
    let got = replay(&copy, &dir.join("cut.jsonl")).await;
    // The event the cut falls in (none when it falls between two events, or at the end).
    let cut_event = f.events.iter().find(|&&(s, e)| s < cut && cut < e);
    let (want_lines, want_error) = match (cut, cut_event) {
        (0..4, _) => (
            Vec::new(),
            Some(format!("{}: damaged binlog at byte 0", f.name)),
        ),
        (_, Some(&(start, _))) => (
            f.lines_before(start),
            Some(format!("{}: damaged binlog at byte {start}", f.name)),
        ),
        (_, None) => (f.lines_before(cut), None),
    };
    if got.lines != want_lines {
        return Err(format!(
            "{} lines delivered where the events before the cut hold {}",
            got.lines.len(),
            want_lines.len()
        ));
    }
    match (&got.error, &want_error) {
        (None, None) => Ok(()),
        (Some(e), Some(w)) if e.contains(w.as_str()) => Ok(()),
        (got, want) => Err(format!("error {got:?}, expected one containing {want:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binlog_cut_at_any_byte_gives_the_events_before_the_cut_then_one_error_naming_file_and_byte(
) {
    count_panics();
    let dir = scratch_dir();
    let mut failures = Vec::new();
    let mut cuts = 0;
    for &name in FILES {
        let f = Arc::new(fixture(name, dir.path()).await);
        for cut in 0..f.bytes.len() {
            cuts += 1;
            let panics = PANICS.load(Ordering::SeqCst);
            // On a task of its own, so that a panic ends this cut only and every cut is
            // reported (the hook counts the panic all the same).
            let (f, dir) = (f.clone(), dir.path().to_path_buf());
            let result = tokio::spawn(async move { check_cut(&f, cut, &dir).await }).await;
            match result {
                _ if PANICS.load(Ordering::SeqCst) != panics => {
                    failures.push(format!("{name} cut at {cut}: panicked"))
                }
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("{name} cut at {cut}: {e}")),
                Err(e) => failures.push(format!("{name} cut at {cut}: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cuts} cuts went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}
/// Replays a copy of the fixture whose event at `start` has `xor` applied to byte `byte` of
/// its size field; returns what went wrong, if anything.
async fn check_bad_length(
    f: &Fixture,
    start: usize,
    byte: usize,
    xor: u8,
    dir: &Path,
) -> Result<(), String> {
    let mut bytes = f.bytes.clone();
    bytes[start + 9 + byte] ^= xor;
    let copy: PathBuf = dir.join(f.name);
    std::fs::write(&copy, &bytes).unwrap();
    let got = replay(&copy, &dir.join("bad.jsonl")).await;
    let before = f.lines_before(start);
    if got.lines.len() < before.len() || got.lines[..before.len()] != before[..] {
        return Err(format!(
            "{} lines delivered, not starting with the {} of the events before the damage",
            got.lines.len(),
            before.len()
        ));
    }
    if got.lines.len() > before.len() {
        return Err(format!(
            "{} lines delivered from the damaged event or after it",
            got.lines.len() - before.len()
        ));
    }
    let want = format!("{}: damaged binlog at byte {start}", f.name);
    match &got.error {
        Some(e) if e.contains(&want) => Ok(()),
        // The format description's own length says where its checksum algorithm is, so a
        // wrong one reads "no checksums" and cannot be caught by its CRC: the damage shows
        // at the next event, which then starts in the wrong place.
        Some(e) if start == 4 && damaged_at(e, f.name).is_some_and(|at| at > start) => Ok(()),
        got => Err(format!("error {got:?}, expected one containing {want:?}")),
    }
}

/// The byte a replay error says the damage of file `name` is at.
fn damaged_at(error: &str, name: &str) -> Option<usize> {
    let (_, rest) = error.split_once(&format!("{name}: damaged binlog at byte "))?;
    rest.split(':').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binlog_with_a_wrong_event_length_gives_the_events_before_it_then_one_error_naming_file_and_byte(
) {
    count_panics();
    let dir = scratch_dir();
    let mut failures = Vec::new();
    let mut cases = 0;
    for &name in FILES {
        let f = Arc::new(fixture(name, dir.path()).await);
        for &(start, _) in &f.events {
            for byte in 0..4 {
                for xor in [0x01, 0x80] {
                    cases += 1;
                    let panics = PANICS.load(Ordering::SeqCst);
                    let (f, dir) = (f.clone(), dir.path().to_path_buf());
                    let result =
                        tokio::spawn(
                            async move { check_bad_length(&f, start, byte, xor, &dir).await },
                        )
                        .await;
                    let case = format!("{name} event at {start}, size byte {byte} ^ {xor:#x}");
                    match result {
                        _ if PANICS.load(Ordering::SeqCst) != panics => {
                            failures.push(format!("{case}: panicked"))
                        }
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => failures.push(format!("{case}: {e}")),
                        Err(e) => failures.push(format!("{case}: {e}")),
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} damaged copies went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}
