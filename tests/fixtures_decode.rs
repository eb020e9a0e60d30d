//! Decodes every rows event of the real binlog files in `../shared/fixtures/mysql-binlogs/`
//! with the public decoder API and checks it against mysql_common's own row parser:
//!
//! - every intact file decodes without error, and each rows event yields exactly as many
//!   images as `RowsEventData::rows()` does, consuming `rows_data` exactly;
//! - spot checks of exact JSON values in files whose content is known;
//! - the damaged files yield an error (never a panic);
//! - every image, truncated at every length and with deterministic random byte flips, gives
//!   `Ok` or `Err` but never panics.
//!
//! `BINSYNC_DUMP=1 cargo test --test fixtures_decode -- --nocapture` prints every decoded row.

use std::collections::BTreeMap;
use std::path::Path;

use binsync::decode::schema::{DecodeError, ExtraSchema, TableSchema};
use binsync::decode::value::{decode_image, decode_partial_after_image, write_changed, write_key};
use bitvec::slice::BitSlice;
use mysql_common::binlog::consts::{BinlogVersion, EventType};
use mysql_common::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_common::binlog::EventStreamReader;

mod binlog_fixtures;

/// Files that are damaged on purpose (or hold a damaged event): reading them must fail.
const DAMAGED: &[&str] = &[
    "binlog_truncated_event.000001",
    "binlog_truncated_prev_gtid_event.000001",
    "corrupt-relay-bin.000624",
    "ver_5_1-wl2325_r.001",
];

/// Intact files with one expected decode error.
const EXPECTED_ERRORS: &[(&str, &str)] = &[
    // A JSON partial update logged with binlog_row_image=MINIMAL: the before image lacks
    // the JSON column, so the new document cannot be rebuilt from the diff.
    ("json.binlog.000001", "binlog_row_value_options=''"),
];

/// One decoded image, kept for spot checks and the fuzz pass.
#[derive(Clone)]
struct Image {
    /// `db.table`
    table: String,
    /// `before`/`after`
    which: &'static str,
    json: String,
}

/// A rows event kept for the fuzz pass: schema, bitmaps and data.
struct RowsCase {
    tme: TableMapEvent<'static>,
    schema: TableSchema,
    before: Option<Vec<bool>>,
    after: Option<Vec<bool>>,
    data: Vec<u8>,
    partial: bool,
}

#[derive(Default)]
struct FileRun {
    rows_events: usize,
    images: usize,
    decoded: Vec<Image>,
    errors: Vec<String>,
    cases: Vec<RowsCase>,
    /// `write_key` / `write_changed` output per update row
    keys: Vec<String>,
}

fn bits(b: Option<&BitSlice<u8>>) -> Option<Vec<bool>> {
    b.map(|b| b.iter().by_vals().collect())
}

fn to_bitslice(v: &[bool], store: &mut Vec<u8>) {
    store.clear();
    store.resize(v.len().div_ceil(8), 0);
    for (i, &b) in v.iter().enumerate() {
        if b {
            store[i / 8] |= 1 << (i % 8);
        }
    }
}

/// Decodes all images of one rows event like the connector does. Returns the number of
/// images.
fn decode_rows(
    schema: &TableSchema,
    before_cols: Option<&BitSlice<u8>>,
    after_cols: Option<&BitSlice<u8>>,
    data: &[u8],
    partial: bool,
    mut sink: impl FnMut(&'static str, &[u8], &[u8], &[Option<(u32, u32)>], &[Option<(u32, u32)>]),
) -> Result<usize, DecodeError> {
    let (mut img_b, mut img_a) = (Vec::new(), Vec::new());
    let (mut sp_b, mut sp_a) = (Vec::new(), Vec::new());
    let mut at = 0;
    let mut images = 0;
    let mut guard = 0;
    while at < data.len() {
        guard += 1;
        assert!(guard <= data.len() + 1, "decoder made no progress");
        if let Some(cols) = before_cols {
            img_b.clear();
            at += decode_image(schema, cols, &data[at..], &mut img_b, &mut sp_b)?;
            images += 1;
            if after_cols.is_none() {
                sink("before", &img_b, &img_b, &sp_b, &sp_b);
            }
        }
        if let Some(cols) = after_cols {
            img_a.clear();
            at += if partial {
                decode_partial_after_image(
                    schema,
                    cols,
                    &data[at..],
                    &img_b,
                    &sp_b,
                    &mut img_a,
                    &mut sp_a,
                )?
            } else {
                decode_image(schema, cols, &data[at..], &mut img_a, &mut sp_a)?
            };
            images += 1;
            if before_cols.is_some() {
                sink("update", &img_b, &img_a, &sp_b, &sp_a);
            } else {
                sink("after", &img_a, &img_a, &sp_a, &sp_a);
            }
        }
        if before_cols.is_none() && after_cols.is_none() {
            break;
        }
    }
    assert!(at <= data.len(), "consumed past the end of rows_data");
    Ok(images)
}

fn handle_rows(reader: &EventStreamReader, ev: &Event, run: &mut FileRun) {
    let raw_type = ev.header().event_type_raw();
    let data = match ev.read_data() {
        Ok(Some(EventData::RowsEvent(rows))) => rows,
        Ok(_) => return,
        Err(e) => {
            run.errors.push(format!("rows event unreadable: {e}"));
            return;
        }
    };
    let rows: &RowsEventData<'_> = &data;
    run.rows_events += 1;
    let Some(tme) = reader.get_tme(rows.table_id()) else {
        run.errors.push("rows event without table map".into());
        return;
    };
    let schema = match TableSchema::from_table_map(tme, None) {
        Ok(s) => s,
        Err(e) => {
            run.errors.push(e.to_string());
            return;
        }
    };
    let partial = raw_type == EventType::PARTIAL_UPDATE_ROWS_EVENT as u8;
    let expected: Result<usize, String> = rows
        .rows(tme)
        .try_fold(0usize, |n, r| {
            r.map(|(b, a)| n + b.is_some() as usize + a.is_some() as usize)
        })
        .map_err(|e| e.to_string());
    let table = schema.qualified_name();
    let mut decoded = Vec::new();
    let mut keys = Vec::new();
    let ours = decode_rows(
        &schema,
        rows.columns_before_image(),
        rows.columns_after_image(),
        rows.rows_data(),
        partial,
        |which, b, a, sb, sa| {
            if which == "update" {
                decoded.push(("before", String::from_utf8(b.to_vec()).unwrap()));
                decoded.push(("after", String::from_utf8(a.to_vec()).unwrap()));
                let mut k = Vec::new();
                write_key(&schema, a, sa, &mut k);
                k.push(b' ');
                write_changed(&schema, b, sb, a, sa, &mut k);
                keys.push(String::from_utf8(k).unwrap());
            } else {
                decoded.push((which, String::from_utf8(a.to_vec()).unwrap()));
            }
        },
    );
    for (which, json) in decoded {
        serde_json::from_str::<serde_json::Value>(&json)
            .unwrap_or_else(|e| panic!("invalid JSON from decoder ({e}): {json}"));
        run.decoded.push(Image {
            table: table.clone(),
            which,
            json,
        });
    }
    for k in &keys {
        let (key, changed) = k.split_once(' ').unwrap();
        serde_json::from_str::<serde_json::Value>(key).unwrap();
        serde_json::from_str::<serde_json::Value>(changed).unwrap();
    }
    run.keys.extend(keys);
    match (ours, expected) {
        (Ok(n), Ok(m)) => {
            assert_eq!(n, m, "image count differs from mysql_common in {table}");
            run.images += n;
        }
        (Err(e), Ok(m)) => run
            .errors
            .push(format!("{e} (mysql_common decoded {m} images)")),
        (Ok(n), Err(e)) => run.errors.push(format!(
            "mysql_common failed ({e}) where we decoded {n} images of {table}"
        )),
        (Err(e), Err(e2)) => run.errors.push(format!("{e} (mysql_common: {e2})")),
    }
    run.cases.push(RowsCase {
        tme: tme.clone().into_owned(),
        schema,
        before: bits(rows.columns_before_image()),
        after: bits(rows.columns_after_image()),
        data: rows.rows_data().to_vec(),
        partial,
    });
}

fn run_file(path: &Path) -> FileRun {
    let mut run = FileRun::default();
    let bytes = std::fs::read(path).unwrap();
    if bytes.len() < 4 || &bytes[..4] != b"\xfebin" {
        run.errors.push("no binlog magic".into());
        return run;
    }
    let mut reader = EventStreamReader::new(BinlogVersion::Version4);
    let mut input = &bytes[4..];
    while !input.is_empty() {
        let ev = match reader.read(&mut input) {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                run.errors.push(format!("event unreadable: {e}"));
                break;
            }
        };
        if ev.header().event_type_raw() == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            let Ok(Some(EventData::TransactionPayloadEvent(tpe))) = ev.read_data() else {
                run.errors.push("transaction payload unreadable".into());
                continue;
            };
            let mut inner = match tpe.decompressed() {
                Ok(r) => r,
                Err(e) => {
                    run.errors.push(format!("payload: {e}"));
                    continue;
                }
            };
            loop {
                match reader.read_decompressed(&mut inner) {
                    Ok(Some(iev)) => {
                        if is_rows(iev.header().event_type_raw()) {
                            handle_rows(&reader, &iev, &mut run);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        run.errors.push(format!("payload event unreadable: {e}"));
                        break;
                    }
                }
            }
            continue;
        }
        if is_rows(ev.header().event_type_raw()) {
            handle_rows(&reader, &ev, &mut run);
        } else if let Err(e) = ev.read_data() {
            run.errors.push(format!(
                "event {:?} unreadable: {e}",
                ev.header().event_type()
            ));
        }
    }
    run
}

fn is_rows(t: u8) -> bool {
    use EventType::*;
    [
        WRITE_ROWS_EVENT_V1,
        UPDATE_ROWS_EVENT_V1,
        DELETE_ROWS_EVENT_V1,
        WRITE_ROWS_EVENT,
        UPDATE_ROWS_EVENT,
        DELETE_ROWS_EVENT,
        PARTIAL_UPDATE_ROWS_EVENT,
    ]
    .iter()
    .any(|x| *x as u8 == t)
}

fn all_runs() -> BTreeMap<String, FileRun> {
    let mut out = BTreeMap::new();
    for p in binlog_fixtures::files() {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        out.insert(name, run_file(&p));
    }
    out
}

fn jsons<'a>(run: &'a FileRun, table: &str, which: &str) -> Vec<&'a str> {
    run.decoded
        .iter()
        .filter(|i| i.table == table && i.which == which)
        .map(|i| i.json.as_str())
        .collect()
}

#[test]
fn fixtures_decode_like_mysql_common() {
    let runs = all_runs();
    let dump = std::env::var_os("BINSYNC_DUMP").is_some();
    let mut total_images = 0;
    let mut failures = Vec::new();
    for (name, run) in &runs {
        if dump {
            println!(
                "== {name}: {} rows events, {} images, errors {:?}",
                run.rows_events, run.images, run.errors
            );
            for i in &run.decoded {
                println!("  {} {}: {}", i.table, i.which, i.json);
            }
            for k in &run.keys {
                println!("  key/changed: {k}");
            }
        }
        if DAMAGED.contains(&name.as_str()) {
            if run.errors.is_empty() {
                failures.push(format!("{name} is damaged but decoded without error"));
            }
        } else if let Some((_, expect)) = EXPECTED_ERRORS.iter().find(|(f, _)| f == name) {
            if run.errors.len() != 1 || !run.errors[0].contains(expect) {
                failures.push(format!(
                    "{name}: expected one error containing {expect:?}, got {:?}",
                    run.errors
                ));
            }
        } else if !run.errors.is_empty() {
            failures.push(format!("{name}: {:?}", run.errors));
        }
        total_images += run.images;
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(runs.len() >= 40, "fixtures missing: {}", runs.len());
    assert!(total_images > 90, "too few images decoded: {total_images}");
}

#[test]
fn fixtures_spot_checks() {
    let runs = all_runs();
    let get = |f: &str| runs.get(f).unwrap_or_else(|| panic!("fixture {f} missing"));

    // JSON with opaque values (MySQL prints them this way too).
    assert_eq!(
        jsons(get("json-opaque.binlog"), "foo.test", "after"),
        [
            r#"{"a":{"a":"base64:type15:VQ=="}}"#,
            r#"{"a":{"b":"2012-03-18"}}"#,
            r#"{"a":{"c":"2012-03-18 11:30:45.000000"}}"#,
            r#"{"a":{"c":"87:31:46.654321"}}"#,
            r#"{"a":{"d":"123.456"}}"#,
            r#"{"a":{"e":"9.00"}}"#,
            r#"{"a":{"e":[0,1,true,false]}}"#,
            r#"{"a":{"e":null}}"#,
        ]
    );

    // JSON columns, full and partial updates (diffs applied to the before image).
    let json = get("json.binlog.000001");
    let after = jsons(json, "mysql.t", "after");
    assert_eq!(
        after[0],
        r#"{"@1":1,"@2":{"age":24,"data":"xxxxxxxxxx","name":"Joe"},"@3":"Joe","@4":24}"#
    );
    assert_eq!(
        after[6],
        r#"{"@1":1,"@2":{"age":25,"data":"xxxxxxxxxx","name":"Joe"},"@3":"Joe","@4":25}"#
    );
    assert_eq!(
        json.keys[0],
        r#"{"@1":1,"@2":{"age":25,"data":"xxxxxxxxxx","name":"Joe"},"@3":"Joe","@4":25} ["@2","@4"]"#
    );

    // CHAR(100)/VARCHAR(>255), ENUM and SET labels from FULL metadata, TEXT.
    let ess = get("mysql-enum-string-set.000001");
    let after = jsons(ess, "mysql.t", "after");
    let digits = "0123456789".repeat(10);
    let part = format!("{}012345678", "0123456789".repeat(12));
    let f2 = format!("{part}{part}{}", "0123456789".repeat(4));
    assert_eq!(
        after[0],
        format!(
            r#"{{"f1":"{digits}","f2":"{f2}","f3":"var1","f4":"one,three","f5":"0123456789"}}"#
        )
    );
    assert!(after[1].starts_with(
        r#"{"f1":"field1","f2":"field_2","f3":"variant2","f4":"two,four","f5":"0123"#
    ));
    assert_eq!(ess.keys.len(), 1);
    assert!(ess.keys[0].ends_with(r#" ["f1","f2","f3","f4","f5"]"#));

    // BIT(3), VARCHAR, BIT(6)
    assert_eq!(
        jsons(get("mysql_type_bit.000001"), "mysql.foo", "after"),
        [r#"{"a":4,"b":"foo","c":32}"#]
    );

    // TIME2 negative, over 24 hours (mysql_common reads it as -21 days 03:48:27)
    assert_eq!(
        jsons(get("time_issue.000001"), "noria.t", "after"),
        [r#"{"@1":"-507:48:27"}"#]
    );

    // MINIMAL metadata: no names, signedness kept (INT UNSIGNED 3230202323), partial image.
    assert_eq!(
        jsons(get("minimal_row_metadata.000001"), "noria.t1", "after"),
        [r#"{"@1":1,"@3":"a","@5":3230202323}"#]
    );

    // VECTOR (MySQL 9), VARBINARY
    let vec = get("vector.binlog");
    assert_eq!(
        jsons(vec, "dtb.foo", "after")[..2],
        [
            r#"{"id":1,"vector_column":[1.1,2.2,3.3]}"#,
            r#"{"id":2,"vector_column":[1.0,-1.0,0.0]}"#
        ]
    );
    assert_eq!(
        jsons(vec, "dtb.bar", "after")[1],
        r#"{"id":2,"vector_column":[1.01,-1.01],"foo":"YmFy","vector_column2":[42.0,43.0,44.0,45.0]}"#
    );

    // MariaDB with FULL metadata: LONGBLOB (binary) is base64, TIMESTAMP is UTC.
    let maria = get("mariadb-bin.000001");
    assert_eq!(
        jsons(maria, "toddy_test.outbox", "after")[0],
        r#"{"id":62,"topic":"foo","event_type":"JSON","event":"eyJmb28iOjF9","created":"2022-04-20T22:18:04Z"}"#
    );
    // ... and with information_schema saying `event` holds JSON, the JSON itself.
    let case = maria
        .cases
        .iter()
        .find(|c| c.schema.table == "outbox")
        .unwrap();
    let extra = ExtraSchema {
        json_columns: vec![3],
        ..Default::default()
    };
    let schema = TableSchema::from_table_map(&case.tme, Some(&extra)).unwrap();
    assert!(schema.names_from_binlog);
    assert_eq!(schema.pk, [0]);
    let mut store = Vec::new();
    to_bitslice(case.after.as_ref().unwrap(), &mut store);
    let cols = &BitSlice::<u8>::from_slice(&store)[..schema.columns.len()];
    let (mut out, mut spans) = (Vec::new(), Vec::new());
    decode_image(&schema, cols, &case.data, &mut out, &mut spans).unwrap();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"id":62,"topic":"foo","event_type":"JSON","event":{"foo":1},"created":"2022-04-20T22:18:04Z"}"#
    );
    let mut key = Vec::new();
    write_key(&schema, &out, &spans, &mut key);
    assert_eq!(key, br#"{"id":62}"#);

    // Invisible columns are ordinary columns; BINARY(1) is base64.
    assert_eq!(
        jsons(get("binlog-invisible-columns.000001"), "mysql.t1", "after")[0],
        r#"{"f1":1,"f2":2,"f3":-3,"f4":"4","f5":"BQ==","f6":6000000000}"#
    );

    // Old row formats (5.1), update with before/after, changed columns.
    let old = get("ver_5_1_23.001");
    assert_eq!(
        jsons(old, "test.t1", "after")[..2],
        [r#"{"@1":0,"@2":"one"}"#, r#"{"@1":1,"@2":"two"}"#]
    );
    assert_eq!(old.keys[0], r#"{"@1":1,"@2":"one"} ["@1"]"#);

    // binlog_row_image=MINIMAL: partial images.
    let upd = get("update-partial-row.binlog");
    assert_eq!(
        jsons(upd, "test.ba", "before"),
        [r#"{"@1":4,"@3":4}"#, r#"{"@1":2}"#]
    );
    assert_eq!(upd.keys, [r#"{"@1":4,"@3":40} ["@3"]"#]);

    // Compressed transaction payload.
    assert_eq!(
        jsons(get("transaction_compression.000001"), "test.tb1", "after"),
        [r#"{"@1":1}"#]
    );
}

/// Deterministic xorshift.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[test]
fn fixtures_truncated_and_flipped_never_panic() {
    let runs = all_runs();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut bb, mut ba) = (Vec::new(), Vec::new());
    let mut tried = 0usize;
    for run in runs.values() {
        for case in &run.cases {
            let before = case.before.as_ref().map(|v| {
                to_bitslice(v, &mut bb);
                bb.clone()
            });
            let after = case.after.as_ref().map(|v| {
                to_bitslice(v, &mut ba);
                ba.clone()
            });
            let nb = case.before.as_ref().map_or(0, |v| v.len());
            let na = case.after.as_ref().map_or(0, |v| v.len());
            let bcols = before
                .as_ref()
                .map(|b| &BitSlice::<u8>::from_slice(b)[..nb]);
            let acols = after.as_ref().map(|b| &BitSlice::<u8>::from_slice(b)[..na]);
            // bound the work on big events
            let data = &case.data[..case.data.len().min(4096)];
            for cut in 0..data.len() {
                let _ = decode_rows(
                    &case.schema,
                    bcols,
                    acols,
                    &data[..cut],
                    case.partial,
                    |_, _, _, _, _| {},
                );
                tried += 1;
            }
            for _ in 0..256 {
                let mut d = data.to_vec();
                if d.is_empty() {
                    break;
                }
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() % d.len() as u64) as usize;
                    d[i] ^= 1 << (rng.next() % 8);
                    if rng.next().is_multiple_of(4) {
                        d[i] = rng.next() as u8;
                    }
                }
                let _ = decode_rows(
                    &case.schema,
                    bcols,
                    acols,
                    &d,
                    case.partial,
                    |_, b, a, _, _| {
                        serde_json::from_slice::<serde_json::Value>(b)
                            .expect("garbage in, but valid JSON out");
                        serde_json::from_slice::<serde_json::Value>(a)
                            .expect("garbage in, but valid JSON out");
                    },
                );
                tried += 1;
            }
        }
    }
    assert!(tried > 1000, "fuzz pass too small: {tried}");
}
