//! DECIMAL, YEAR and the temporal types (old and 5.6+ formats, every fractional precision)
//! through the row image decoder of a table of such columns.
//!
//! Input: `[k][3 bytes per column][row image]` with `1 + k % 4` columns; a column's bytes are
//! `[type, a, b]`: type % 10 is DECIMAL(1 + a % 65, b % (min(precision, 30) + 1)), DATE, TIME,
//! TIME2(a % 7), DATETIME, DATETIME2(a % 7), TIMESTAMP, TIMESTAMP2(a % 7), YEAR, or a DECIMAL
//! with any precision and scale (a, b) and a size that may not match them (the value decoder
//! checks them itself). The image is the null bitmap and the values, repeated.
//!
//! Besides valid JSON, a DECIMAL value must be `"-?D+(.D{scale})?"`.
#![no_main]

use binsync::decode::schema::{ColumnKind, ColumnSchema, TableSchema};
use binsync::decode::value::decode_image;
use binsync_fuzz::assert_json;
use bitvec::slice::BitSlice;
use libfuzzer_sys::fuzz_target;

fn decimal_bin_size(precision: usize, scale: usize) -> usize {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let intg = precision.saturating_sub(scale);
    (intg / 9) * 4 + DIG2BYTES[intg % 9] + (scale / 9) * 4 + DIG2BYTES[scale % 9]
}

fn kind(t: u8, a: u8, b: u8) -> ColumnKind {
    match t % 10 {
        0 => {
            let precision = 1 + a % 65;
            let scale = b % (precision.min(30) + 1);
            ColumnKind::Decimal {
                precision,
                scale,
                bytes: decimal_bin_size(precision as usize, scale as usize) as u8,
            }
        }
        1 => ColumnKind::Date,
        2 => ColumnKind::Time,
        3 => ColumnKind::Time2 { fsp: a % 7 },
        4 => ColumnKind::Datetime,
        5 => ColumnKind::Datetime2 { fsp: a % 7 },
        6 => ColumnKind::Timestamp,
        7 => ColumnKind::Timestamp2 { fsp: a % 7 },
        8 => ColumnKind::Year,
        _ => ColumnKind::Decimal {
            precision: a,
            scale: b,
            bytes: (decimal_bin_size(a as usize, b as usize) as u8).wrapping_add(t / 10 % 3),
        },
    }
}

fn check_decimal(text: &[u8], scale: usize) {
    let bad = || panic!("bad DECIMAL text {}", String::from_utf8_lossy(text));
    let Some(inner) = text.strip_prefix(b"\"").and_then(|t| t.strip_suffix(b"\"")) else {
        bad()
    };
    let inner = inner.strip_prefix(b"-").unwrap_or(inner);
    let (int, frac) = match inner.iter().position(|&c| c == b'.') {
        Some(i) => (&inner[..i], Some(&inner[i + 1..])),
        None => (inner, None),
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !digits(int) || (int.len() > 1 && int[0] == b'0') {
        bad()
    }
    match frac {
        None if scale == 0 => {}
        Some(f) if digits(f) && f.len() == scale => {}
        _ => bad(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let n = 1 + (k % 4) as usize;
    let Some(spec) = rest.get(..3 * n) else {
        return;
    };
    let image = &rest[3 * n..];
    let columns: Vec<ColumnSchema> = spec
        .chunks_exact(3)
        .enumerate()
        .map(|(i, c)| ColumnSchema {
            name: format!("c{i}"),
            json_key: format!("\"c{i}\":").into_bytes().into_boxed_slice(),
            kind: kind(c[0], c[1], c[2]),
        })
        .collect();
    let schema = TableSchema {
        db: "db".into(),
        table: "t".into(),
        columns,
        pk: vec![0],
        names_from_binlog: true,
        keyless: false,
    };
    let present = [0xffu8];
    let cols = &BitSlice::<u8>::from_slice(&present)[..n];
    let (mut out, mut spans) = (Vec::new(), Vec::new());
    let mut at = 0;
    while at < image.len() {
        out.clear();
        let Ok(used) = decode_image(&schema, cols, &image[at..], &mut out, &mut spans) else {
            assert!(out.is_empty(), "output left behind by a failed image");
            return;
        };
        assert!(used > 0 && at + used <= image.len(), "consumed past the image");
        at += used;
        assert_json("an image", &out);
        for (col, span) in schema.columns.iter().zip(&spans) {
            let &Some((s, e)) = span else { continue };
            let text = &out[s as usize..e as usize];
            if let ColumnKind::Decimal { scale, .. } = col.kind {
                if text != b"null" {
                    check_decimal(text, scale as usize);
                }
            }
        }
    }
});
