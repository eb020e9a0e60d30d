//! Row images through the value decoders (`decode_image`, `decode_partial_after_image`,
//! `write_key`, `write_changed`) with the schema of a real table map.
//!
//! Input: `[u16 LE n][n bytes: TABLE_MAP_EVENT body][mode][bitmaps][rows data]`.
//! mode bit 0: before images, bit 1: after images, bit 2: the after images are a JSON partial
//! update's; bits 3-4: what information_schema adds (see `extra_schema`); bits 5-6: YEAR in the
//! signedness bitmap unknown/yes/no. One column bitmap (ceil(columns/8) bytes) per image kind.
#![no_main]

use binsync::decode::schema::TableSchema;
use binsync_fuzz::{column_bitmap, decode_rows, extra_schema, table_map};
use bitvec::slice::BitSlice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(len) = data.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize) else {
        return;
    };
    let Some(tme_body) = data.get(2..2 + len) else {
        return;
    };
    let rest = &data[2 + len..];
    let Some((&mode, mut rest)) = rest.split_first() else {
        return;
    };
    let Some(tme) = table_map(tme_body) else {
        return;
    };
    let extra = extra_schema(mode >> 3 & 3);
    let year = match mode >> 5 & 3 {
        1 => Some(true),
        2 => Some(false),
        _ => None,
    };
    let Ok(schema) = TableSchema::from_table_map_with(&tme, extra.as_ref(), year) else {
        return;
    };
    let n = schema.columns.len();
    assert!(schema.pk.iter().all(|&i| i < n), "a key column past the columns");
    let (mut sb, mut sa) = (Vec::new(), Vec::new());
    let mut before = None;
    let mut after = None;
    if mode & 1 != 0 {
        let Some(used) = column_bitmap(rest, n, &mut sb) else {
            return;
        };
        rest = &rest[used..];
        before = Some(&BitSlice::<u8>::from_slice(&sb)[..n]);
    }
    if mode & 2 != 0 {
        let Some(used) = column_bitmap(rest, n, &mut sa) else {
            return;
        };
        rest = &rest[used..];
        after = Some(&BitSlice::<u8>::from_slice(&sa)[..n]);
    }
    decode_rows(&schema, before, after, rest, mode & 4 != 0);
});
