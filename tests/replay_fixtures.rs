//! Scenario: an operator replays archived binlog files written by real MySQL servers
//! (5.1 to 9.x) and one MariaDB server (`../shared/fixtures/mysql-binlogs/`). Every intact
//! file decodes with every row event delivered as a JSON line; every damaged file stops with
//! one error line naming the file and the byte offset, never a panic.

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

fn replay(file: &std::path::Path, out: &std::path::Path) -> (i32, String) {
    let mut p = Proc::spawn(
        &[
            "replay",
            "--binlog-file",
            file.to_str().unwrap(),
            "--sink",
            &format!("file:{}", out.display()),
        ],
        &[],
    );
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("replay hung");
    (st.code().unwrap_or(-1), p.stderr())
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
    let mut total_lines = 0usize;
    let mut report = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let out = tmp.path().join(format!("{name}.jsonl"));
        let (code, stderr) = replay(f, &out);
        assert_ne!(code, 101, "{name} panicked: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: bad JSON line {line}: {e}"));
            assert!(
                v["seq"].is_u64() && v["op"].is_string() && v["table"].is_string(),
                "{name}: {line}"
            );
        }
        total_lines += text.lines().count();
        let err = stderr
            .lines()
            .find(|l| l.starts_with("binsync: error:"))
            .unwrap_or_default();
        if damaged(&name) {
            assert_ne!(code, 0, "{name} is damaged and must fail");
            assert!(err.contains(&name) && err.contains("byte"), "{name}: {err}");
        } else if let Some(fix) = undecodable(&name) {
            assert_ne!(code, 0, "{name} must fail");
            assert!(err.contains(&name) && err.contains(fix), "{name}: {err}");
            assert!(
                !text.is_empty(),
                "{name}: the events before it were delivered"
            );
        } else {
            assert_eq!(code, 0, "{name} should decode: {stderr}");
            // Every row image is a line; an update that changes the entity id is two.
            let images = images_in(f).expect("mysql_common reads the intact files");
            let lines = text.lines().count();
            assert!(
                lines >= images && lines <= 2 * images,
                "{name}: {lines} lines for {images} row images"
            );
        }
        report.push(format!(
            "{name}: exit {code}, {} changes",
            text.lines().count()
        ));
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        total_lines > 90,
        "the fixtures hold row events: {total_lines}"
    );
}

#[test]
fn a_file_that_is_not_a_binlog_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("notes.txt");
    std::fs::write(&f, "hello").unwrap();
    let (code, stderr) = replay(&f, &tmp.path().join("o.jsonl"));
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
    let (code, stderr) = replay(&f, &out);
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
