//! Scenario: an operator replays archived binlog files written by real MySQL servers
//! (5.1 to 9.x) and one MariaDB server (`../shared/fixtures/mysql-binlogs/`). Every intact
//! file decodes with every row event delivered as a JSON line; every damaged file stops with
//! one error line naming the file and the byte offset, never a panic. A file whose tables
//! nothing describes (created before the file begins, no FULL row metadata) stops with the
//! schema history's error, never with columns named by position (`@1`, `@2`); given the
//! tables' definitions (`--schema-from file:`), it decodes.

mod binlog_fixtures;
mod common;

use std::time::Duration;

use common::Proc;

/// Files that are damaged on purpose (their names say so).
fn damaged(name: &str) -> bool {
    name.starts_with("binlog_truncated") || name.starts_with("corrupt-")
}

/// Files that are intact but hold what binsync cannot turn into full rows, with the fix the
/// error must name: JSON partial updates logged with binlog_row_image=MINIMAL.
fn undecodable(name: &str) -> Option<&'static str> {
    (name == "json.binlog.000001").then_some("binlog_row_value_options=''")
}

/// Intact files whose row events are for tables that neither FULL metadata nor a CREATE TABLE
/// in the file describes: replayed without `--schema-from` they stop at the first such table
/// with the schema history's error. All but the last have a schema file
/// (`binlog_fixtures::schema_file`) and decode with it.
const UNKNOWN_TABLES: &[&str] = &[
    "binlog_transaction_with_GTID_TAG.000001",
    "minimal_row_metadata.000001",
    "time_issue.000001",
    "transaction_compression.000001",
    "update-full-row.binlog",
    "update-partial-row.binlog",
    "write-full-row.binlog",
    "write-partial-row.binlog",
    // Written by a development build whose event type numbers are not MySQL's: what reads as
    // a table map holds a garbage name and no columns (fixtures_decode: FOREIGN).
    "ver_5_1-wl2325_r.001",
];

/// The schema history's error for a table it does not hold.
const NO_SUCH_TABLE: &str = "the schema history holds no such table";

/// Intact files that the schema history cannot decode yet, with its error: a gap of binsync's,
/// not of the file. MySQL 8.0.17 logged the hidden column of a functional index
/// (`INDEX i((a+1))`) in row events; the history, built from the file's own CREATE TABLE,
/// knows only the declared columns, so the table map does not fit it and replay stops (before
/// issue 11 these rows came out with positional names). Remove the entry when the history
/// models those hidden columns.
const HISTORY_GAPS: &[(&str, &str)] = &[(
    "rpl_unfiltered_hidden_gcol.000001",
    "the binlog has 3 columns for test.t, the history's version 2",
)];

/// The row changes among a replay's lines (DDL operations, contract v2, have no `id`).
fn row_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.get("id").is_some()
        })
        .count()
}

/// Row images in a file, counted by mysql_common itself (None if it cannot read the file).
fn images_in(path: &std::path::Path) -> Option<usize> {
    use mysql_common::binlog::consts::{BinlogVersion, EventType};
    use mysql_common::binlog::events::{EventData, TransactionPayloadEvent};
    use mysql_common::binlog::EventStreamReader;
    use std::io::Read;
    let mut input = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let mut magic = [0u8; 4];
    input.read_exact(&mut magic).ok()?;
    let mut esr = EventStreamReader::new(BinlogVersion::Version4);
    let mut n = 0;
    let mut count =
        |esr: &EventStreamReader, ev: &mysql_common::binlog::events::Event| -> Option<()> {
            if let Ok(Some(EventData::RowsEvent(rows))) = ev.read_data() {
                let tme = esr.get_tme(rows.table_id())?;
                n += rows.rows(tme).count();
            }
            Some(())
        };
    while let Some(ev) = esr.read(&mut input).ok()? {
        count(&esr, &ev)?;
        if ev.header().event_type_raw() == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            let tpe: TransactionPayloadEvent<'_> = ev.read_event().ok()?;
            let mut bytes = Vec::new();
            tpe.decompressed().ok()?.read_to_end(&mut bytes).ok()?;
            let mut cur = std::io::Cursor::new(bytes);
            while let Some(inner) = esr.read_decompressed(&mut cur).ok()? {
                count(&esr, &inner)?;
            }
        }
    }
    Some(n)
}

/// `binsync replay` of `file` into the file sink `out`, with `--schema-from` when given.
fn replay(
    file: &std::path::Path,
    out: &std::path::Path,
    schema_from: Option<&str>,
) -> (i32, String) {
    let sink = format!("file:{}", out.display());
    let mut args = vec![
        "replay",
        "--binlog-file",
        file.to_str().unwrap(),
        "--sink",
        &sink,
    ];
    if let Some(from) = schema_from {
        args.extend(["--schema-from", from]);
    }
    let mut p = Proc::spawn(&args, &[]);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("replay hung");
    (st.code().unwrap_or(-1), p.stderr())
}

/// Checks one replay's output: JSON lines, each a row change or a DDL operation (contract v2:
/// `ddl`, `truncate` or `drop`, with the statement and no `id`), none naming a column by
/// position. Returns the text.
fn checked_output(name: &str, out: &std::path::Path) -> String {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{name}: bad JSON line {line}: {e}"));
        assert!(
            v["seq"].is_u64() && v["op"].is_string() && v["table"].is_string(),
            "{name}: {line}"
        );
        if v.get("id").is_none() {
            assert!(
                ["ddl", "truncate", "drop"].contains(&v["op"].as_str().unwrap())
                    && v["statement"].is_string(),
                "{name}: an operation without an id: {line}"
            );
        }
        assert!(
            !line.contains("\"@1\""),
            "{name}: a positional name: {line}"
        );
    }
    text
}

#[test]
fn every_fixture_decodes_or_fails_cleanly() {
    let files = binlog_fixtures::files();
    assert!(
        files.len() > 30,
        "expected the fixture set, found {}",
        files.len()
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut total_rows = 0usize;
    let mut report = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let out = tmp.path().join(format!("{name}.jsonl"));
        let (code, stderr) = replay(f, &out, None);
        assert_ne!(code, 101, "{name} panicked: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        let text = checked_output(&name, &out);
        let err = stderr
            .lines()
            .find(|l| l.starts_with("binsync: error:"))
            .unwrap_or_default();
        // The output of the run that must deliver every row: this one, or for a file whose
        // tables nothing in it describes, the one with its schema file.
        let mut decodes = None;
        if damaged(&name) {
            assert_ne!(code, 0, "{name} is damaged and must fail");
            assert!(err.contains(&name) && err.contains("byte"), "{name}: {err}");
        } else if let Some(fix) = undecodable(&name) {
            assert_ne!(code, 0, "{name} must fail");
            assert!(err.contains(&name) && err.contains(fix), "{name}: {err}");
            assert!(
                row_lines(&text) > 0,
                "{name}: the events before it were delivered"
            );
        } else if UNKNOWN_TABLES.contains(&name.as_str()) {
            assert_ne!(
                code, 0,
                "{name}: its tables are unknown without --schema-from"
            );
            assert!(
                err.contains(&name)
                    && err.contains(NO_SUCH_TABLE)
                    && err.contains("will not guess column names"),
                "{name}: {err}"
            );
            assert_eq!(row_lines(&text), 0, "{name}: {text}");
            let from = binlog_fixtures::schema_from(&name);
            assert_eq!(
                from.is_some(),
                name != "ver_5_1-wl2325_r.001",
                "{name}: its schema file"
            );
            if let Some(from) = from {
                let out = tmp.path().join(format!("{name}.schema.jsonl"));
                let (code, stderr) = replay(f, &out, Some(&from));
                assert_eq!(code, 0, "{name} should decode with {from}: {stderr}");
                let text = checked_output(&name, &out);
                total_rows += row_lines(&text);
                decodes = Some(text);
            }
        } else if let Some((_, gap)) = HISTORY_GAPS.iter().find(|(n, _)| *n == name) {
            assert_ne!(code, 0, "{name} decodes now: take it off HISTORY_GAPS");
            assert!(
                err.contains(&name) && err.contains(gap) && err.contains("will not guess"),
                "{name}: {err}"
            );
        } else {
            assert_eq!(code, 0, "{name} should decode: {stderr}");
            decodes = Some(text.clone());
        }
        if let Some(text) = &decodes {
            // Every row image is a line; an update that changes the entity id is two.
            let images = images_in(f).expect("mysql_common reads the intact files");
            let rows = row_lines(text);
            assert!(
                rows >= images && rows <= 2 * images,
                "{name}: {rows} row changes for {images} row images"
            );
        }
        total_rows += row_lines(&text);
        report.push(format!(
            "{name}: exit {code}, {} row changes, {} DDL operations{}",
            row_lines(&text),
            text.lines().count() - row_lines(&text),
            match (&decodes, binlog_fixtures::schema_file(&name)) {
                (Some(t), Some(_)) =>
                    format!("; with its schema file {} row changes", row_lines(t)),
                _ => String::new(),
            }
        ));
    }
    eprintln!("{}", report.join("\n"));
    // Over 90 before issue 11, when rows of tables whose key was unknown came out with
    // whole-row ids (an update as a delete and an insert) and rpl_unfiltered_hidden_gcol's row
    // with positional names; with the keys the definitions give and that row refused (see
    // HISTORY_GAPS), the same fixtures give 90.
    assert!(
        total_rows >= 90,
        "the fixtures hold row events: {total_rows}"
    );
}

#[test]
fn a_minimal_metadata_file_without_a_schema_is_refused_never_named_by_position() {
    // minimal_row_metadata.000001 (MySQL 8.0.40, binlog_row_metadata=MINIMAL): its table map
    // has types and signedness, no names, and noria.t1 was created before the file begins.
    let f = binlog_fixtures::dir().join("minimal_row_metadata.000001");
    let mut p = Proc::spawn(
        &[
            "replay",
            "--binlog-file",
            f.to_str().unwrap(),
            "--sink",
            "stdout",
        ],
        &[],
    );
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("replay hung");
    let (stdout, stderr) = (p.stdout(), p.stderr());
    assert!(
        !st.success() && st.code() != Some(101),
        "{st:?}: {stdout}{stderr}"
    );
    let err = stderr
        .lines()
        .find(|l| l.starts_with("binsync: error:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        err.contains("minimal_row_metadata.000001")
            && err.contains("noria.t1")
            && err.contains(NO_SUCH_TABLE)
            && err.contains("will not guess column names"),
        "{err}"
    );
    assert!(stdout.is_empty(), "nothing delivered: {stdout}");
    for line in stdout.lines().chain(stderr.lines()) {
        assert!(!line.contains("@1"), "a positional name: {line}");
    }

    // What the error asks for: the table's definition. Then the row has its names, and the
    // INT UNSIGNED column its value (MINIMAL image: the columns written).
    let from = binlog_fixtures::schema_from("minimal_row_metadata.000001").unwrap();
    let mut p = Proc::spawn(
        &[
            "replay",
            "--binlog-file",
            f.to_str().unwrap(),
            "--schema-from",
            &from,
            "--sink",
            "stdout",
        ],
        &[],
    );
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("replay hung");
    assert!(st.success(), "{}", p.stderr());
    let lines: Vec<serde_json::Value> = p
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0]["after"],
        serde_json::json!({"col_1": 1, "col_3": "a", "col_5": 3230202323u64})
    );
    assert_eq!(lines[0]["id"], serde_json::json!({"col_1": 1}));
}

#[test]
fn a_file_that_is_not_a_binlog_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("notes.txt");
    std::fs::write(&f, "hello").unwrap();
    let (code, stderr) = replay(&f, &tmp.path().join("o.jsonl"), None);
    assert_ne!(code, 0);
    assert!(stderr.contains("not a binlog file"), "{stderr}");
}

#[test]
fn a_file_cut_inside_an_event_stops_with_an_error_naming_the_byte_not_a_panic() {
    // mariadb-bin.000001 cut 29 bytes into its 31-byte event at byte 671, after the first
    // transaction (mysql_common panics on an event cut short: binsync reads each event whole
    // before handing it on).
    let bytes = std::fs::read(binlog_fixtures::dir().join("mariadb-bin.000001")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("mariadb-bin.000001");
    std::fs::write(&f, &bytes[..700]).unwrap();
    let out = tmp.path().join("o.jsonl");
    let (code, stderr) = replay(&f, &out, None);
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("mariadb-bin.000001: damaged binlog at byte 671")
            && stderr.contains("cut short"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text.lines().count(),
        1,
        "the row before it was delivered: {text}"
    );
}
