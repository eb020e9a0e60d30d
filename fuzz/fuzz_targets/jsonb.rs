//! MySQL binary JSON (JSONB) documents, and JSON partial updates applied to them, through the
//! row image decoder of a table with one JSON column.
//!
//! Input: `[mode][rest]`. mode bit 0 clear: `rest` is one JSONB document. Set: `rest` is
//! `[u16 LE n][n bytes: JSONB document][diffs]`: the before image holds the document, the
//! after image of a PARTIAL_UPDATE_ROWS_EVENT the diffs (its value options say partial JSON).
#![no_main]

use binsync::decode::schema::{ColumnKind, ColumnSchema, TableSchema};
use binsync_fuzz::decode_rows;
use bitvec::slice::BitSlice;
use libfuzzer_sys::fuzz_target;

fn schema() -> TableSchema {
    TableSchema {
        db: "db".into(),
        table: "t".into(),
        columns: vec![ColumnSchema {
            name: "j".into(),
            json_key: b"\"j\":".to_vec().into_boxed_slice(),
            kind: ColumnKind::Json { len_bytes: 4 },
        }],
        pk: Vec::new(),
        names_from_binlog: true,
        keyless: false,
    }
}

/// A one-column image: the null bitmap (nothing NULL), the length and the bytes.
fn image(out: &mut Vec<u8>, value: &[u8]) {
    out.push(0);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let schema = schema();
    let present = [1u8];
    let cols = Some(&BitSlice::<u8>::from_slice(&present)[..1]);
    let mut rows = Vec::with_capacity(rest.len() + 16);
    if mode & 1 == 0 {
        image(&mut rows, rest);
        decode_rows(&schema, None, cols, &rows, false);
    } else {
        let Some(len) = rest.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize) else {
            return;
        };
        let Some(doc) = rest.get(2..2 + len) else {
            return;
        };
        let diffs = &rest[2 + len..];
        image(&mut rows, doc);
        // value options: PARTIAL_JSON_UPDATES; the JSON column is a partial update.
        rows.extend_from_slice(&[1, 1]);
        image(&mut rows, diffs);
        decode_rows(&schema, cols, cols, &rows, true);
    }
});
