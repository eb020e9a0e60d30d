//! Scenario: an operator replays a MySQL binlog holding a compressed transaction
//! (`binlog_transaction_compression=ON`: one TRANSACTION_PAYLOAD event, zstd) whose payload is
//! damaged, cut short, says it decompresses to another size than it does, holds no events,
//! or is large. The transaction's events are decompressed one at a time as they are read:
//! memory holds one inner event, never the whole transaction nor the size the header claims.
//! Anything wrong with the payload stops the replay with one error naming the file and the
//! byte where the event starts, and the transaction's commit never comes out of such a
//! payload: never an empty or a shortened transaction taken for a whole one.
//!
//! The files are variants of `transaction_compression.000001` (tests/compressed_fixture),
//! replayed in-process through `binsync::replay::replay_with_history` with the definition of
//! its table (`tests/binlog_fixtures/transaction_compression.sql`, as `--schema-from file:`
//! gives it): the file has no FULL metadata, and the table was created before it begins.

mod binlog_fixtures;
mod compressed_fixture;

use std::path::Path;

use binsync::config::{FileConfig, ReplayArgs, ReplaySettings};
use binsync::replay::BinlogFile;
use compressed_fixture::{
    inner_events, payload_event_end, rows_query_event, with_payload, zstd, zstd_payload, NONE, ZSTD,
};
use mysql_common::binlog::consts::EventType;

/// What one replay gave: the lines delivered, and the error it ended with.
struct Outcome {
    lines: Vec<String>,
    error: Option<String>,
}

async fn replay(file: &[u8], dir: &Path) -> Outcome {
    let path = compressed_fixture::write(dir, file);
    let out = dir.join("out.jsonl");
    let _ = std::fs::remove_file(&out);
    // The fixture's table was created before the file begins and it has no FULL metadata:
    // its definition comes from a schema file, as `replay --schema-from file:PATH` reads it.
    let args = ReplayArgs {
        binlog_files: vec![path],
        sink: Some(format!("file:{}", out.display())),
        schema_from: binlog_fixtures::schema_from(compressed_fixture::NAME),
        ..Default::default()
    };
    let settings = ReplaySettings::resolve(&args, &FileConfig::default()).unwrap();
    let history = binlog_fixtures::history(settings.schema_from.as_ref());
    assert!(
        history.is_some(),
        "{} has a schema file",
        compressed_fixture::NAME
    );
    let result = binsync::replay::replay_with_history(
        &settings.files,
        settings.sink,
        settings.decode,
        history,
    )
    .await;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    Outcome {
        lines: text.lines().map(str::to_string).collect(),
        error: result.err().map(|e| e.to_string()),
    }
}

/// The error every damaged payload must give: the file, the byte its event starts at.
const DAMAGED: &str =
    "transaction_compression.000001: damaged binlog at byte 274: transaction payload";

/// Replays `file` and checks that it stops with the damaged payload's error (containing
/// `detail` too), and that the transaction's commit (the XID, the payload's last event) never
/// came out of the payload: a checkpoint cannot move past it. (Rows before the damage may be
/// delivered, as from a file cut inside a transaction, positioned inside it.)
async fn assert_refused(what: &str, file: &[u8], detail: &str) {
    let dir = tempfile::tempdir().unwrap();
    let got = replay(file, dir.path()).await;
    let error = got
        .error
        .unwrap_or_else(|| panic!("{what}: replayed without an error: {:?}", got.lines));
    assert!(
        error.contains(DAMAGED) && error.contains(detail),
        "{what}: {error}"
    );
    let path = compressed_fixture::write(dir.path(), file);
    let mut events = BinlogFile::open(&path).unwrap();
    loop {
        match events.next_event() {
            Ok(Some(e)) => assert_ne!(
                e.header().event_type_raw(),
                EventType::XID_EVENT as u8,
                "{what}: the transaction's commit came out of a payload that fails its checks"
            ),
            Ok(None) => panic!("{what}: BinlogFile read the file without an error"),
            Err(e) => {
                assert_eq!(e.to_string(), error, "{what}: the same error");
                break;
            }
        }
    }
}

/// `/proc/self/status` field, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// How far the resident memory of this process rose above where it was while `f` ran
/// (the peak is reset first: `clear_refs` 5).
async fn peak_growth<T>(f: impl std::future::Future<Output = T>) -> (T, u64) {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS");
    let before = status_bytes("VmRSS:");
    let out = f.await;
    (out, status_bytes("VmHWM:").saturating_sub(before))
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_rebuilt_with_its_own_payload_replays_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let file = with_payload(ZSTD, 179, &zstd_payload());
    let got = replay(&file, dir.path()).await;
    assert_eq!(got.error, None);
    assert_eq!(got.lines.len(), 1, "{:?}", got.lines);
    assert!(got.lines[0].contains(r#""op":"insert","db":"test","table":"tb1""#));
    // Uncompressed (type 255, "none"), the same events give the same row (its offset is
    // where the now longer event ends).
    let plain = with_payload(NONE, 179, &inner_events());
    let want = got.lines[0].replace(
        r#""offset":431"#,
        &format!(r#""offset":{}"#, payload_event_end(&plain)),
    );
    assert_eq!(replay(&plain, dir.path()).await.lines, [want]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_zstd_payload_stops_with_an_error_naming_file_and_byte() {
    let good = zstd_payload();
    let mut magic = good.clone();
    magic[0] ^= 0xff;
    assert_refused(
        "zstd magic damaged",
        &with_payload(ZSTD, 179, &magic),
        "Unknown frame descriptor",
    )
    .await;
    for cut in [1, 10, good.len() / 2, good.len() - 1] {
        let short = &good[..good.len() - cut];
        assert_refused(
            &format!("zstd frame cut {cut} bytes short"),
            &with_payload(ZSTD, 179, short),
            "",
        )
        .await;
    }
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage after the frame");
    assert_refused(
        "bytes after the zstd frame",
        &with_payload(ZSTD, 179, &trailing),
        "",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_decompresses_to_another_size_than_its_header_states_is_refused() {
    let payload = zstd_payload();
    for stated in [178, 100, 1] {
        assert_refused(
            &format!("stated {stated} of 179 bytes"),
            &with_payload(ZSTD, stated, &payload),
            &format!("decompresses to more than the {stated} bytes its header states"),
        )
        .await;
    }
    // A header claiming 1 TiB is checked, never allocated: the replay ends at once with an
    // error (an allocation of that size would abort the process).
    for stated in [180, 1 << 40] {
        assert_refused(
            &format!("stated {stated} of 179 bytes"),
            &with_payload(ZSTD, stated, &payload),
            &format!("decompresses to 179 bytes, its header states {stated}"),
        )
        .await;
    }
    assert_refused(
        "stated 0 of 179 bytes",
        &with_payload(ZSTD, 0, &payload),
        "decompresses to more than the 0 bytes its header states",
    )
    .await;
    // Uncompressed, the header's sizes must agree.
    assert_refused(
        "an uncompressed payload said to hold more",
        &with_payload(NONE, 200, &inner_events()),
        "an uncompressed payload of 179 bytes said to hold 200",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_without_events_is_refused_not_an_empty_transaction() {
    assert_refused(
        "an empty zstd frame",
        &with_payload(ZSTD, 0, &zstd(b"")),
        "no events in it",
    )
    .await;
    assert_refused("no zstd frame at all", &with_payload(ZSTD, 0, b""), "").await;
}

/// The fixture's transaction with `n` ROWS_QUERY events of 1 MiB after its BEGIN: zstd frames
/// back to back (BEGIN; each ROWS_QUERY event; the rest), as zstd reads them. Returns the
/// payload and the bytes it decompresses to.
fn with_large_statements(n: usize) -> (Vec<u8>, u64) {
    let inner = inner_events();
    let (begin, rest) = inner.split_at(71);
    let statement = rows_query_event(MIB as usize);
    let one = zstd(&statement);
    let mut payload = zstd(begin);
    for _ in 0..n {
        payload.extend_from_slice(&one);
    }
    payload.extend_from_slice(&zstd(rest));
    let total = (inner.len() + n * statement.len()) as u64;
    (payload, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_compressed_transaction_is_read_one_event_at_a_time() {
    // 256 MiB of events in 86 KiB of zstd.
    let (payload, total) = with_large_statements(256);
    assert!(total > 256 * MIB);
    let file = with_payload(ZSTD, total, &payload);
    let dir = tempfile::tempdir().unwrap();
    let (got, growth) = peak_growth(replay(&file, dir.path())).await;
    assert_eq!(got.error, None);
    assert_eq!(got.lines.len(), 1, "the transaction's row");
    eprintln!(
        "peak RSS growth: {:.1} MiB for {} MiB of events",
        growth as f64 / MIB as f64,
        total / MIB
    );
    assert!(
        growth < 48 * MIB,
        "{growth} bytes more at the peak: the transaction was held whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_decompressing_far_beyond_its_stated_size_stops_there() {
    // The header says 179 bytes; the frames hold 256 MiB more.
    let (payload, _) = with_large_statements(256);
    let file = with_payload(ZSTD, 179, &payload);
    let (_, growth) = peak_growth(assert_refused(
        "256 MiB where 179 bytes are stated",
        &file,
        "decompresses to more than the 179 bytes its header states",
    ))
    .await;
    assert!(growth < 48 * MIB, "{growth} bytes more at the peak");
}
