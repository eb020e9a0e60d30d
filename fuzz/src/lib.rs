//! What the fuzz targets share: building table schemas and events from fuzz input, driving the
//! value decoders the way the decoder does, and the oracles every target checks (besides "no
//! panic"): the decoders' output is valid JSON, and they never read past their input.
//!
//! Input layouts are documented on each target; `scripts/fuzz-seed.py` writes seeds in them.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use binsync::decode::schema::{ExtraSchema, TableSchema};
use binsync::decode::value::{decode_image, decode_partial_after_image, write_changed, write_key};
use bitvec::slice::BitSlice;
use mysql_common::binlog::events::{EventData, TableMapEvent};
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::EventStreamReader;

/// Panics unless `text` is one valid JSON value (the decoders promise valid JSON whatever the
/// input bytes).
pub fn assert_json(what: &str, text: &[u8]) {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(text) {
        panic!(
            "{what} is not valid JSON ({e}): {}",
            String::from_utf8_lossy(text)
        );
    }
}

/// Runs a future that must not wait (the decoder without a schema lookup, or with one that
/// answers at once).
pub fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a future without anything to wait for did not complete"),
    }
}

/// The 19-byte v4 event header: no timestamp, server id 1, `next` as log_pos.
pub fn event_header(out: &mut Vec<u8>, event_type: u8, event_size: u32, next: u32) {
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(event_type);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&event_size.to_le_bytes());
    out.extend_from_slice(&next.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
}

/// Reads a TABLE_MAP_EVENT body (post-header and payload, no checksum) with mysql_common, as
/// the decoder gets it from the event stream.
pub fn table_map(body: &[u8]) -> Option<TableMapEvent<'static>> {
    let mut frame = Vec::with_capacity(19 + body.len());
    event_header(&mut frame, 19, (19 + body.len()) as u32, 0);
    frame.extend_from_slice(body);
    let mut esr = EventStreamReader::new(BinlogVersion::Version4);
    let ev = esr.read(&frame[..]).ok()??;
    match ev.read_data() {
        Ok(Some(EventData::TableMapEvent(t))) => Some(t.into_owned()),
        _ => None,
    }
}

/// What information_schema might say of a table, chosen by `sel`: nothing, or facts whose
/// column indexes may lie past the table map's columns (a table altered since the event).
pub fn extra_schema(sel: u8) -> Option<ExtraSchema> {
    match sel % 3 {
        0 => None,
        1 => Some(ExtraSchema {
            columns: Vec::new(),
            pk: vec![0],
            json_columns: vec![1, 3, 40],
            unsigned: vec![0, 2, 41],
            enum_labels: vec![(2, vec!["a".into(), "b\"".into()]), (42, vec!["x".into()])],
            binary: vec![1, 4, 43],
        }),
        _ => Some(ExtraSchema {
            columns: Vec::new(),
            pk: vec![1, 0, 77],
            json_columns: (0..64).collect(),
            unsigned: (0..64).collect(),
            enum_labels: (0..8).map(|i| (i, vec!["é".into(); i])).collect(),
            binary: Vec::new(),
        }),
    }
}

/// Bitmap over `n` columns from `bytes` (bits past `n` cleared, as the decoder's callers
/// guarantee), or `None` when `bytes` is too short. Returns the bytes used.
pub fn column_bitmap(bytes: &[u8], n: usize, store: &mut Vec<u8>) -> Option<usize> {
    let len = n.div_ceil(8);
    store.clear();
    store.extend_from_slice(bytes.get(..len)?);
    if n % 8 != 0 {
        if let Some(last) = store.last_mut() {
            *last &= (1u8 << (n % 8)) - 1;
        }
    }
    Some(len)
}

/// Decodes every image of a rows event's data the way the decoder does (before image, then
/// after image, repeated), and checks the output: valid JSON for each image, key and list of
/// changed columns; never reading past `data`; always progressing.
pub fn decode_rows(
    schema: &TableSchema,
    before: Option<&BitSlice<u8>>,
    after: Option<&BitSlice<u8>>,
    data: &[u8],
    partial: bool,
) {
    // The decoder refuses row data whose images have no columns (they would take no bytes),
    // except in a partial update (its after image starts with value options).
    let none = |c: Option<&BitSlice<u8>>| c.is_none_or(|c| c.not_any());
    if none(before) && none(after) && !(partial && after.is_some()) {
        return;
    }
    let (mut img_b, mut img_a) = (Vec::new(), Vec::new());
    let (mut sp_b, mut sp_a) = (Vec::new(), Vec::new());
    let mut scratch = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let start = at;
        if let Some(cols) = before {
            img_b.clear();
            match decode_image(schema, cols, &data[at..], &mut img_b, &mut sp_b) {
                Ok(n) => at = consumed(at, n, data.len()),
                Err(_) => {
                    assert!(img_b.is_empty(), "output left behind by a failed image");
                    return;
                }
            }
            assert_json("a before image", &img_b);
            assert_eq!(sp_b.len(), schema.columns.len());
            key_checks(schema, &img_b, &sp_b, &img_b, &sp_b, &mut scratch);
        }
        if let Some(cols) = after {
            img_a.clear();
            let r = if partial {
                decode_partial_after_image(
                    schema,
                    cols,
                    &data[at..],
                    &img_b,
                    &sp_b,
                    &mut img_a,
                    &mut sp_a,
                )
            } else {
                decode_image(schema, cols, &data[at..], &mut img_a, &mut sp_a)
            };
            match r {
                Ok(n) => at = consumed(at, n, data.len()),
                Err(_) => {
                    assert!(img_a.is_empty(), "output left behind by a failed image");
                    return;
                }
            }
            assert_json("an after image", &img_a);
            assert_eq!(sp_a.len(), schema.columns.len());
            if before.is_some() {
                key_checks(schema, &img_b, &sp_b, &img_a, &sp_a, &mut scratch);
            } else {
                key_checks(schema, &img_a, &sp_a, &img_a, &sp_a, &mut scratch);
            }
        }
        assert!(at > start, "a row of no bytes: the decoder's loop would not end");
    }
}

fn consumed(at: usize, n: usize, len: usize) -> usize {
    let next = at.checked_add(n).expect("consumed length overflows");
    assert!(next <= len, "consumed past the end of the rows data");
    next
}

fn key_checks(
    schema: &TableSchema,
    b: &[u8],
    sb: &[Option<(u32, u32)>],
    a: &[u8],
    sa: &[Option<(u32, u32)>],
    scratch: &mut Vec<u8>,
) {
    for (img, spans) in [(b, sb), (a, sa)] {
        for &(s, e) in spans.iter().flatten() {
            assert!(s <= e && e as usize <= img.len(), "a span outside its image");
            assert_json("a column's value", &img[s as usize..e as usize]);
        }
    }
    scratch.clear();
    write_key(schema, a, sa, scratch);
    assert_json("a key", scratch);
    scratch.clear();
    write_changed(schema, b, sb, a, sa, scratch);
    assert_json("a list of changed columns", scratch);
}
