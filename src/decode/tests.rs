//! Unit tests: hand-built table maps and row images for every supported type, with exact
//! expected JSON; and hand-built event streams through the decoder (XA transactions).

use bitvec::prelude::*;
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{FormatDescriptionEvent, TableMapEvent};
use mysql_common::binlog::BinlogCtx;
use mysql_common::io::ParseBuf;
use mysql_common::proto::MyDeserialize;

use super::super::schema::{ColumnKind, DecodeError, ExtraSchema, TableSchema, TextKind};
use super::{decode_image, decode_partial_after_image, write_changed, write_key};

// ---- builders --------------------------------------------------------------------------------

fn lenenc(out: &mut Vec<u8>, v: u64) {
    if v < 251 {
        out.push(v as u8);
    } else if v < 1 << 16 {
        out.push(0xfc);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v < 1 << 24 {
        out.push(0xfd);
        out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
    } else {
        out.push(0xfe);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    lenenc(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// One optional-metadata TLV.
fn tlv(t: u8, v: &[u8]) -> Vec<u8> {
    let mut o = vec![t];
    lenenc_str(&mut o, v);
    o
}

fn names_tlv(names: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for n in names {
        lenenc_str(&mut v, n.as_bytes());
    }
    tlv(4, &v)
}

fn list_tlv(t: u8, items: &[u64]) -> Vec<u8> {
    let mut v = Vec::new();
    for &i in items {
        lenenc(&mut v, i);
    }
    tlv(t, &v)
}

fn labels_tlv(t: u8, cols: &[&[&str]]) -> Vec<u8> {
    let mut v = Vec::new();
    for labels in cols {
        lenenc(&mut v, labels.len() as u64);
        for l in *labels {
            lenenc_str(&mut v, l.as_bytes());
        }
    }
    tlv(t, &v)
}

/// A TABLE_MAP_EVENT body for `shop.products` with the given (type, metadata) columns.
pub(crate) fn tme_bytes(cols: &[(u8, &[u8])], optional: &[u8]) -> Vec<u8> {
    let mut b = vec![1, 0, 0, 0, 0, 0, 0, 0];
    b.push(4);
    b.extend_from_slice(b"shop\0");
    b.push(8);
    b.extend_from_slice(b"products\0");
    lenenc(&mut b, cols.len() as u64);
    for (t, _) in cols {
        b.push(*t);
    }
    let meta: Vec<u8> = cols.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    lenenc_str(&mut b, &meta);
    b.extend(std::iter::repeat_n(0xff, cols.len().div_ceil(8)));
    b.extend_from_slice(optional);
    b
}

fn parse_tme(bytes: &[u8]) -> TableMapEvent<'static> {
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    let ctx = BinlogCtx::new(bytes.len(), &fde, 19);
    TableMapEvent::deserialize(ctx, &mut ParseBuf(bytes))
        .unwrap()
        .into_owned()
}

fn schema_x(cols: &[(u8, &[u8])], optional: &[u8], extra: Option<&ExtraSchema>) -> TableSchema {
    TableSchema::from_table_map(&parse_tme(&tme_bytes(cols, optional)), extra).unwrap()
}

pub(crate) fn schema(cols: &[(u8, &[u8])], optional: &[u8]) -> TableSchema {
    schema_x(cols, optional, None)
}

/// A row image with every column present: null bitmap then the given values (None = NULL).
fn image(vals: &[Option<&[u8]>]) -> Vec<u8> {
    let mut nulls = vec![0u8; vals.len().div_ceil(8)];
    let mut body = Vec::new();
    for (i, v) in vals.iter().enumerate() {
        match v {
            None => nulls[i / 8] |= 1 << (i % 8),
            Some(b) => body.extend_from_slice(b),
        }
    }
    nulls.extend(body);
    nulls
}

fn all_present(n: usize) -> BitVec<u8> {
    BitVec::repeat(true, n)
}

/// Decodes `img` with every column present; checks that it is consumed exactly.
fn dec(s: &TableSchema, img: &[u8]) -> String {
    let (mut out, mut spans) = (Vec::new(), Vec::new());
    let n = decode_image(s, &all_present(s.columns.len()), img, &mut out, &mut spans)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, img.len(), "image not consumed exactly");
    let text = String::from_utf8(out).unwrap();
    serde_json::from_str::<serde_json::Value>(&text)
        .unwrap_or_else(|e| panic!("invalid JSON {text}: {e}"));
    text
}

/// Decodes one column of type/meta holding `value` and returns its JSON value text.
fn one(t: u8, meta: &[u8], optional: &[u8], value: &[u8]) -> String {
    let s = schema(&[(t, meta)], optional);
    let j = dec(&s, &image(&[Some(value)]));
    j.strip_prefix("{\"@1\":")
        .unwrap()
        .strip_suffix('}')
        .unwrap()
        .to_string()
}

fn prefixed(len_bytes: usize, body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_le_bytes()[..len_bytes].to_vec();
    v.extend_from_slice(body);
    v
}

const SIGNEDNESS: u8 = 1;
const DEFAULT_CHARSET: u8 = 2;
const COLUMN_CHARSET: u8 = 3;
const SET_STR_VALUE: u8 = 5;
const ENUM_STR_VALUE: u8 = 6;
const SIMPLE_PRIMARY_KEY: u8 = 8;
const PRIMARY_KEY_WITH_PREFIX: u8 = 9;

// type codes
const TINY: u8 = 1;
const SHORT: u8 = 2;
const LONG: u8 = 3;
const FLOAT: u8 = 4;
const DOUBLE: u8 = 5;
const TIMESTAMP: u8 = 7;
const LONGLONG: u8 = 8;
const INT24: u8 = 9;
const DATE: u8 = 10;
const TIME: u8 = 11;
const DATETIME: u8 = 12;
const YEAR: u8 = 13;
const VARCHAR: u8 = 15;
const BIT: u8 = 16;
const TIMESTAMP2: u8 = 17;
const DATETIME2: u8 = 18;
const TIME2: u8 = 19;
const VECTOR: u8 = 242;
const JSON: u8 = 245;
const NEWDECIMAL: u8 = 246;
const BLOB: u8 = 252;
const STRING: u8 = 254;
const GEOMETRY: u8 = 255;

// ---- integers --------------------------------------------------------------------------------

#[test]
fn integers_signed_and_unsigned_edges() {
    let cols: &[(u8, &[u8])] = &[
        (TINY, &[]),
        (TINY, &[]),
        (SHORT, &[]),
        (INT24, &[]),
        (INT24, &[]),
        (LONG, &[]),
        (LONGLONG, &[]),
        (LONGLONG, &[]),
        (LONGLONG, &[]),
    ];
    // unsigned: columns 1, 4, 8 (MSB first over numeric columns)
    let opt = tlv(SIGNEDNESS, &[0b0100_1000, 0b1000_0000]);
    let s = schema(cols, &opt);
    let img = image(&[
        Some(&[0x80]),
        Some(&[0xff]),
        Some(&(-32768i16).to_le_bytes()),
        Some(&[0x00, 0x00, 0x80]),
        Some(&[0xff, 0xff, 0xff]),
        Some(&(-1i32).to_le_bytes()),
        Some(&i64::MIN.to_le_bytes()),
        Some(&i64::MAX.to_le_bytes()),
        Some(&u64::MAX.to_le_bytes()),
    ]);
    assert_eq!(
        dec(&s, &img),
        r#"{"@1":-128,"@2":255,"@3":-32768,"@4":-8388608,"@5":16777215,"@6":-1,"@7":-9223372036854775808,"@8":9223372036854775807,"@9":18446744073709551615}"#
    );
    // without metadata everything is signed...
    let s = schema(cols, &[]);
    assert!(dec(&s, &img).ends_with(r#""@9":-1}"#));
    // ...unless information_schema says otherwise
    let extra = ExtraSchema {
        unsigned: vec![8],
        ..Default::default()
    };
    let s = schema_x(cols, &[], Some(&extra));
    assert!(dec(&s, &img).ends_with(r#""@9":18446744073709551615}"#));
}

#[test]
fn signedness_skips_non_numeric_columns() {
    // VARCHAR between two ints does not take a signedness bit; DECIMAL does.
    let cols: &[(u8, &[u8])] = &[
        (TINY, &[]),
        (VARCHAR, &[10, 0]),
        (NEWDECIMAL, &[3, 0]),
        (TINY, &[]),
    ];
    let opt = tlv(SIGNEDNESS, &[0b0010_0000]);
    let s = schema(cols, &opt);
    let img = image(&[
        Some(&[0xff]),
        Some(b"\x01x"),
        Some(&[0x80, 0x00]),
        Some(&[0xff]),
    ]);
    assert_eq!(dec(&s, &img), r#"{"@1":-1,"@2":"x","@3":"0","@4":255}"#);
}

#[test]
fn signedness_byte_length_decides_whether_year_counts() {
    // 7 TINYINT, YEAR, TINYINT: 1 byte = YEAR not counted (MySQL), 2 bytes = YEAR counted.
    let mut cols: Vec<(u8, &[u8])> = vec![(TINY, &[]); 7];
    cols.push((YEAR, &[]));
    cols.push((TINY, &[]));
    let vals: Vec<Option<&[u8]>> = (0..9).map(|_| Some(&[0xff_u8][..])).collect();
    // 8 numeric columns (YEAR not counted): one byte, last TINYINT unsigned
    let s = schema(&cols, &tlv(SIGNEDNESS, &[0b0000_0001]));
    assert!(dec(&s, &image(&vals)).ends_with(r#""@8":2155,"@9":255}"#));
    // 9 with YEAR: two bytes; bit 8 is YEAR, bit 9 the last TINYINT
    let s = schema(&cols, &tlv(SIGNEDNESS, &[0b0000_0001, 0b1000_0000]));
    assert!(dec(&s, &image(&vals)).ends_with(r#""@8":2155,"@9":255}"#));
    let s = schema(&cols, &tlv(SIGNEDNESS, &[0b0000_0000, 0b0000_0000]));
    assert!(dec(&s, &image(&vals)).ends_with(r#""@9":-1}"#));
}

// ---- DECIMAL ---------------------------------------------------------------------------------

/// Independent encoder for test data (MySQL's decimal2bin).
fn dec_bin(v: &str, precision: usize, scale: usize) -> Vec<u8> {
    const D2B: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let neg = v.starts_with('-');
    let v = v.trim_start_matches('-');
    let (ip, fp) = v.split_once('.').unwrap_or((v, ""));
    let intg = precision - scale;
    let ip = format!("{ip:0>intg$}");
    let fp = format!("{fp:0<scale$}");
    let mut groups: Vec<&str> = Vec::new();
    let lead = intg % 9;
    if lead > 0 {
        groups.push(&ip[..lead]);
    }
    let mut i = lead;
    while i < intg {
        groups.push(&ip[i..i + 9]);
        i += 9;
    }
    let mut i = 0;
    while i < scale {
        let e = (i + 9).min(scale);
        groups.push(&fp[i..e]);
        i = e;
    }
    let mut out = Vec::new();
    for g in groups {
        let n = D2B[g.len()];
        let x: u32 = g.parse().unwrap();
        out.extend_from_slice(&x.to_be_bytes()[4 - n..]);
    }
    if neg {
        for b in &mut out {
            *b = !*b;
        }
    }
    out[0] ^= 0x80;
    out
}

#[test]
fn decimals_exact() {
    let cases: &[(&str, usize, usize, &str)] = &[
        ("-1234.50", 10, 2, "\"-1234.50\""),
        ("1234.5600", 12, 4, "\"1234.5600\""),
        ("0.05", 10, 2, "\"0.05\""),
        ("-0.05", 10, 2, "\"-0.05\""),
        ("0", 10, 2, "\"0.00\""),
        ("12345", 5, 0, "\"12345\""),
        ("-99999", 5, 0, "\"-99999\""),
        ("1000000000.000000001", 20, 9, "\"1000000000.000000001\""),
        (
            "-12345678901234567890123456789012345.123456789012345678901234567890",
            65,
            30,
            "\"-12345678901234567890123456789012345.123456789012345678901234567890\"",
        ),
        ("0.000100", 8, 6, "\"0.000100\""),
        ("100.1", 4, 1, "\"100.1\""),
    ];
    for &(v, p, s, want) in cases {
        let got = one(NEWDECIMAL, &[p as u8, s as u8], &[], &dec_bin(v, p, s));
        assert_eq!(got, want, "{v} as DECIMAL({p},{s})");
    }
    // the example from MySQL's decimal.c
    assert_eq!(
        one(
            NEWDECIMAL,
            &[14, 4],
            &[],
            &[0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2]
        ),
        "\"1234567890.1234\""
    );
    assert_eq!(
        one(
            NEWDECIMAL,
            &[14, 4],
            &[],
            &[0x7E, 0xF2, 0x04, 0xC7, 0x2D, 0xFB, 0x2D]
        ),
        "\"-1234567890.1234\""
    );
}

#[test]
fn decimal_garbage_digit_group_is_an_error() {
    let s = schema(&[(NEWDECIMAL, &[5, 0])], &[]);
    // 3 bytes for 5 digits holding 0xFFFFFF ^ 0x80.. > 99999
    let img = image(&[Some(&[0xff, 0xff, 0xff])]);
    let (mut out, mut spans) = (b"keep".to_vec(), Vec::new());
    let e = decode_image(&s, &all_present(1), &img, &mut out, &mut spans).unwrap_err();
    assert!(matches!(e, DecodeError::Invalid { .. }), "{e}");
    assert_eq!(out, b"keep", "output restored on error");
}

// ---- floats ------------------------------------------------------------------------------------

#[test]
fn floats_shortest() {
    assert_eq!(one(FLOAT, &[4], &[], &1.1f32.to_le_bytes()), "1.1");
    assert_eq!(
        one(FLOAT, &[4], &[], &(-3.4028235e38f32).to_le_bytes()),
        "-3.4028235e+38"
    );
    assert_eq!(
        one(DOUBLE, &[8], &[], &(0.1f64 + 0.2).to_le_bytes()),
        "0.30000000000000004"
    );
    assert_eq!(one(DOUBLE, &[8], &[], &1e300f64.to_le_bytes()), "1e+300");
    assert_eq!(one(DOUBLE, &[8], &[], &(-2.5f64).to_le_bytes()), "-2.5");
    // NaN cannot be stored by MySQL; garbage gives null, not invalid JSON
    assert_eq!(one(DOUBLE, &[8], &[], &f64::NAN.to_le_bytes()), "null");
}

// ---- temporal ----------------------------------------------------------------------------------

fn date_bytes(y: u32, m: u32, d: u32) -> Vec<u8> {
    let v = d | m << 5 | y << 9;
    v.to_le_bytes()[..3].to_vec()
}

#[allow(clippy::too_many_arguments)]
fn datetime2_bytes(
    y: i64,
    mo: i64,
    d: i64,
    h: i64,
    mi: i64,
    s: i64,
    micros: i64,
    fsp: u8,
) -> Vec<u8> {
    let ymd = ((y * 13 + mo) << 5) | d;
    let int = (ymd << 17) | (h << 12) | (mi << 6) | s;
    let mut v = ((int + 0x80_0000_0000) as u64).to_be_bytes()[3..].to_vec();
    match fsp {
        1 | 2 => v.push((micros / 10_000) as u8),
        3 | 4 => v.extend_from_slice(&((micros / 100) as u16).to_be_bytes()),
        5 | 6 => v.extend_from_slice(&(micros as u32).to_be_bytes()[1..]),
        _ => {}
    }
    v
}

/// MySQL's my_time_packed_to_binary.
fn time2_bytes(neg: bool, h: i64, mi: i64, s: i64, micros: i64, fsp: u8) -> Vec<u8> {
    let mut nr = (((h << 12) | (mi << 6) | s) << 24) + micros;
    if neg {
        nr = -nr;
    }
    let int = nr >> 24;
    let frac = nr % (1 << 24);
    let mut v = ((int + 0x80_0000) as u32).to_be_bytes()[1..].to_vec();
    match fsp {
        0 => {}
        1 | 2 => v.push((frac / 10_000) as i8 as u8),
        3 | 4 => v.extend_from_slice(&((frac / 100) as i16).to_be_bytes()),
        _ => v = ((nr + 0x8000_0000_0000) as u64).to_be_bytes()[2..].to_vec(),
    }
    v
}

#[test]
fn dates_and_datetimes() {
    assert_eq!(
        one(DATE, &[], &[], &date_bytes(2024, 2, 29)),
        "\"2024-02-29\""
    );
    assert_eq!(one(DATE, &[], &[], &date_bytes(1, 1, 1)), "\"0001-01-01\"");
    assert_eq!(one(DATE, &[], &[], &date_bytes(0, 0, 0)), "null");
    assert_eq!(one(DATE, &[], &[], &date_bytes(2024, 0, 5)), "null");
    assert_eq!(
        one(
            DATETIME2,
            &[0],
            &[],
            &datetime2_bytes(2024, 2, 29, 13, 14, 15, 0, 0)
        ),
        "\"2024-02-29T13:14:15\""
    );
    assert_eq!(
        one(
            DATETIME2,
            &[3],
            &[],
            &datetime2_bytes(1999, 12, 31, 23, 59, 59, 123_000, 3)
        ),
        "\"1999-12-31T23:59:59.123\""
    );
    assert_eq!(
        one(
            DATETIME2,
            &[1],
            &[],
            &datetime2_bytes(2000, 1, 1, 0, 0, 0, 500_000, 1)
        ),
        "\"2000-01-01T00:00:00.5\""
    );
    assert_eq!(
        one(
            DATETIME2,
            &[6],
            &[],
            &datetime2_bytes(9999, 12, 31, 23, 59, 59, 1, 6)
        ),
        "\"9999-12-31T23:59:59.000001\""
    );
    assert_eq!(
        one(
            DATETIME2,
            &[2],
            &[],
            &datetime2_bytes(0, 0, 0, 0, 0, 0, 0, 2)
        ),
        "null"
    );
    // old 8-byte DATETIME
    assert_eq!(
        one(DATETIME, &[], &[], &20200102030405u64.to_le_bytes()),
        "\"2020-01-02T03:04:05\""
    );
    assert_eq!(one(DATETIME, &[], &[], &0u64.to_le_bytes()), "null");
}

#[test]
fn timestamps_are_utc() {
    assert_eq!(
        one(TIMESTAMP2, &[0], &[], &1_700_000_000u32.to_be_bytes()),
        "\"2023-11-14T22:13:20Z\""
    );
    let mut b = 951_782_400u32.to_be_bytes().to_vec(); // 2000-02-29
    b.push(50);
    assert_eq!(
        one(TIMESTAMP2, &[2], &[], &b),
        "\"2000-02-29T00:00:00.50Z\""
    );
    let mut b = 1u32.to_be_bytes().to_vec();
    b.extend_from_slice(&[0x0f, 0x42, 0x3f]); // 999999
    assert_eq!(
        one(TIMESTAMP2, &[6], &[], &b),
        "\"1970-01-01T00:00:01.999999Z\""
    );
    assert_eq!(one(TIMESTAMP2, &[0], &[], &0u32.to_be_bytes()), "null");
    assert_eq!(
        one(TIMESTAMP2, &[0], &[], &u32::MAX.to_be_bytes()),
        "\"2106-02-07T06:28:15Z\""
    );
    // old 4-byte little-endian TIMESTAMP
    assert_eq!(
        one(TIMESTAMP, &[], &[], &1_700_000_000u32.to_le_bytes()),
        "\"2023-11-14T22:13:20Z\""
    );
    assert_eq!(one(TIMESTAMP, &[], &[], &0u32.to_le_bytes()), "null");
}

#[test]
fn times_negative_fractional_and_long() {
    assert_eq!(
        one(TIME2, &[0], &[], &time2_bytes(true, 838, 59, 59, 0, 0)),
        "\"-838:59:59\""
    );
    assert_eq!(
        one(TIME2, &[0], &[], &time2_bytes(false, 838, 59, 59, 0, 0)),
        "\"838:59:59\""
    );
    assert_eq!(
        one(TIME2, &[1], &[], &time2_bytes(false, 25, 0, 0, 500_000, 1)),
        "\"25:00:00.5\""
    );
    assert_eq!(
        one(TIME2, &[1], &[], &time2_bytes(true, 0, 0, 0, 500_000, 1)),
        "\"-00:00:00.5\""
    );
    assert_eq!(
        one(TIME2, &[2], &[], &time2_bytes(true, 1, 2, 3, 10_000, 2)),
        "\"-01:02:03.01\""
    );
    assert_eq!(
        one(TIME2, &[3], &[], &time2_bytes(true, 0, 0, 1, 250_000, 3)),
        "\"-00:00:01.250\""
    );
    assert_eq!(
        one(TIME2, &[4], &[], &time2_bytes(false, 100, 0, 0, 123_400, 4)),
        "\"100:00:00.1234\""
    );
    assert_eq!(
        one(TIME2, &[6], &[], &time2_bytes(true, 0, 0, 0, 1, 6)),
        "\"-00:00:00.000001\""
    );
    assert_eq!(
        one(
            TIME2,
            &[5],
            &[],
            &time2_bytes(false, 12, 34, 56, 789_010, 5)
        ),
        "\"12:34:56.78901\""
    );
    assert_eq!(
        one(TIME2, &[0], &[], &time2_bytes(false, 0, 0, 0, 0, 0)),
        "\"00:00:00\""
    );
    // old 3-byte TIME: signed HHMMSS
    assert_eq!(
        one(TIME, &[], &[], &(-123456i32).to_le_bytes()[..3]),
        "\"-12:34:56\""
    );
    assert_eq!(
        one(TIME, &[], &[], &(8385959i32).to_le_bytes()[..3]),
        "\"838:59:59\""
    );
}

#[test]
fn years() {
    assert_eq!(one(YEAR, &[], &[], &[0]), "0");
    assert_eq!(one(YEAR, &[], &[], &[1]), "1901");
    assert_eq!(one(YEAR, &[], &[], &[124]), "2024");
    assert_eq!(one(YEAR, &[], &[], &[255]), "2155");
}

// ---- strings -----------------------------------------------------------------------------------

#[test]
fn strings_by_charset() {
    // VARCHAR(50) utf8mb4, VARCHAR(300) latin1, VARBINARY(10), BLOB, TEXT latin1 (COLUMN_CHARSET)
    let cols: &[(u8, &[u8])] = &[
        (VARCHAR, &[200, 0]),
        (VARCHAR, &[0x2c, 0x01]),
        (VARCHAR, &[10, 0]),
        (BLOB, &[2]),
        (BLOB, &[2]),
    ];
    let opt = list_tlv(COLUMN_CHARSET, &[255, 8, 63, 63, 8]);
    let s = schema(cols, &opt);
    let emoji = "héllo 😀 \"q\" \\ \n\t\u{1}".as_bytes().to_vec();
    let img = image(&[
        Some(&prefixed(1, &emoji)),
        Some(&prefixed(2, b"caf\xe9 \x80 \x9d")),
        Some(&prefixed(1, &[0, 1, 2, 0xff])),
        Some(&prefixed(2, b"hello")),
        Some(&prefixed(2, b"na\xefve")),
    ]);
    assert_eq!(
        dec(&s, &img),
        "{\"@1\":\"héllo 😀 \\\"q\\\" \\\\ \\n\\t\\u0001\",\"@2\":\"café € \u{9d}\",\"@3\":\"AAEC/w==\",\"@4\":\"aGVsbG8=\",\"@5\":\"naïve\"}"
    );
    // the same with DEFAULT_CHARSET: default utf8mb4 and non-default pairs
    let mut def = Vec::new();
    lenenc(&mut def, 255);
    for (i, cs) in [(1u64, 8u64), (2, 63), (3, 63), (4, 8)] {
        lenenc(&mut def, i);
        lenenc(&mut def, cs);
    }
    let s2 = schema(cols, &tlv(DEFAULT_CHARSET, &def));
    assert_eq!(dec(&s2, &img), dec(&s, &img));
}

#[test]
fn strings_without_charset_metadata() {
    let cols: &[(u8, &[u8])] = &[
        (VARCHAR, &[10, 0]),
        (VARCHAR, &[10, 0]),
        (VARCHAR, &[10, 0]),
    ];
    let img = image(&[Some(b"\x03abc"), Some(b"\x02\xc3\x28"), Some(b"\x02hi")]);
    let s = schema(cols, &[]);
    assert_eq!(dec(&s, &img), r#"{"@1":"abc","@2":"wyg=","@3":"hi"}"#);
    let extra = ExtraSchema {
        binary: vec![2],
        ..Default::default()
    };
    let s = schema_x(cols, &[], Some(&extra));
    assert_eq!(dec(&s, &img), r#"{"@1":"abc","@2":"wyg=","@3":"aGk="}"#);
}

#[test]
fn char_lengths_and_real_types() {
    // CHAR(10) utf8mb4: 40 bytes max, 1-byte length
    let s = schema(&[(STRING, &[0xfe, 40])], &list_tlv(COLUMN_CHARSET, &[45]));
    assert_eq!(
        s.columns[0].kind,
        ColumnKind::Str {
            len_bytes: 1,
            text: TextKind::Utf8,
            pad_to: 40
        }
    );
    assert_eq!(dec(&s, &image(&[Some(b"\x02ab")])), r#"{"@1":"ab"}"#);
    // CHAR(255) utf8mb4: 1020 bytes max, folded into the type byte, 2-byte length
    let b0 = 0xfe ^ (((1020 & 0x300) >> 4) as u8);
    let s = schema(
        &[(STRING, &[b0, (1020 & 0xff) as u8])],
        &list_tlv(COLUMN_CHARSET, &[45]),
    );
    assert_eq!(
        s.columns[0].kind,
        ColumnKind::Str {
            len_bytes: 2,
            text: TextKind::Utf8,
            pad_to: 1020
        }
    );
    let long = "é".repeat(300);
    assert_eq!(
        dec(&s, &image(&[Some(&prefixed(2, long.as_bytes()))])),
        format!(r#"{{"@1":"{long}"}}"#)
    );
}

#[test]
fn enums_and_sets() {
    let cols: &[(u8, &[u8])] = &[
        (STRING, &[0xf7, 1]), // ENUM, 1 byte
        (STRING, &[0xf7, 2]), // ENUM, 2 bytes
        (STRING, &[0xf8, 1]), // SET, 1 byte
        (STRING, &[0xf8, 8]), // SET, 8 bytes
    ];
    let mut opt = labels_tlv(ENUM_STR_VALUE, &[&["a", "b", "c"], &["x\"y", "zé"]]);
    opt.extend(labels_tlv(SET_STR_VALUE, &[&["a", "b", "c"], &["p", "q"]]));
    let s = schema(cols, &opt);
    let row = |e1: u8, e2: u16, s1: u8, s2: u64| {
        image(&[
            Some(&[e1]),
            Some(&e2.to_le_bytes()),
            Some(&[s1]),
            Some(&s2.to_le_bytes()),
        ])
    };
    assert_eq!(
        dec(&s, &row(2, 1, 0b101, 0b11)),
        r#"{"@1":"b","@2":"x\"y","@3":"a,c","@4":"p,q"}"#
    );
    assert_eq!(
        dec(&s, &row(0, 2, 0, 0)),
        r#"{"@1":"","@2":"zé","@3":"","@4":""}"#
    );
    // past the labels: the number
    assert_eq!(
        dec(&s, &row(9, 3, 0b1000, 1 << 63)),
        r#"{"@1":9,"@2":3,"@3":8,"@4":9223372036854775808}"#
    );
    // labels unknown: numbers; labels from information_schema
    let s = schema(cols, &[]);
    assert_eq!(
        dec(&s, &row(2, 1, 0b101, 0b11)),
        r#"{"@1":2,"@2":1,"@3":5,"@4":3}"#
    );
    let extra = ExtraSchema {
        enum_labels: vec![
            (0, vec!["a".into(), "b".into()]),
            (2, vec!["r".into(), "s".into(), "t".into()]),
        ],
        ..Default::default()
    };
    let s = schema_x(cols, &[], Some(&extra));
    assert_eq!(
        dec(&s, &row(2, 1, 0b110, 0b11)),
        r#"{"@1":"b","@2":1,"@3":"s,t","@4":3}"#
    );
}

#[test]
fn bits() {
    assert_eq!(one(BIT, &[1, 0], &[], &[1]), "1");
    assert_eq!(one(BIT, &[0, 8], &[], &[0xff; 8]), "18446744073709551615");
    assert_eq!(one(BIT, &[2, 1], &[], &[0x02, 0x01]), "513");
}

// ---- JSON ----------------------------------------------------------------------------------

/// A small JSON model to build JSONB test documents.
enum J {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F(f64),
    S(&'static str),
    A(Vec<J>),
    O(Vec<(&'static str, J)>),
    Opaque(u8, Vec<u8>),
}

fn varlen(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
}

/// (type byte, body) of a JSONB value; `large` selects 4-byte offsets for containers.
fn jsonb(j: &J, large: bool) -> (u8, Vec<u8>) {
    match j {
        J::Null => (4, vec![0]),
        J::Bool(b) => (4, vec![if *b { 1 } else { 2 }]),
        J::I16(v) => (5, v.to_le_bytes().to_vec()),
        J::I32(v) => (7, v.to_le_bytes().to_vec()),
        J::U32(v) => (8, v.to_le_bytes().to_vec()),
        J::I64(v) => (9, v.to_le_bytes().to_vec()),
        J::U64(v) => (10, v.to_le_bytes().to_vec()),
        J::F(v) => (11, v.to_le_bytes().to_vec()),
        J::S(s) => {
            let mut b = Vec::new();
            varlen(&mut b, s.len());
            b.extend_from_slice(s.as_bytes());
            (12, b)
        }
        J::Opaque(t, data) => {
            let mut b = vec![*t];
            varlen(&mut b, data.len());
            b.extend_from_slice(data);
            (15, b)
        }
        J::A(items) => container(None, &items.iter().collect::<Vec<_>>(), large),
        J::O(members) => {
            let keys: Vec<&str> = members.iter().map(|(k, _)| *k).collect();
            container(
                Some(&keys),
                &members.iter().map(|(_, v)| v).collect::<Vec<_>>(),
                large,
            )
        }
    }
}

fn container(keys: Option<&[&str]>, vals: &[&J], large: bool) -> (u8, Vec<u8>) {
    let osz = if large { 4 } else { 2 };
    let n = vals.len();
    let put = |b: &mut Vec<u8>, v: usize| b.extend_from_slice(&(v as u32).to_le_bytes()[..osz]);
    let header = 2 * osz + keys.map_or(0, |_| n * (osz + 2)) + n * (1 + osz);
    let mut tail = Vec::new();
    let mut key_entries = Vec::new();
    if let Some(keys) = keys {
        for k in keys {
            put(&mut key_entries, header + tail.len());
            key_entries.extend_from_slice(&(k.len() as u16).to_le_bytes());
            tail.extend_from_slice(k.as_bytes());
        }
    }
    let mut value_entries = Vec::new();
    for v in vals {
        let (t, body) = jsonb(v, large);
        value_entries.push(t);
        let inline = matches!(t, 4..=6) || (large && matches!(t, 7 | 8));
        if inline {
            let mut b = body.clone();
            b.resize(osz, 0);
            value_entries.extend_from_slice(&b);
        } else {
            put(&mut value_entries, header + tail.len());
            tail.extend_from_slice(&body);
        }
    }
    let mut b = Vec::new();
    put(&mut b, n);
    put(&mut b, header + tail.len());
    b.extend(key_entries);
    b.extend(value_entries);
    b.extend(tail);
    (
        if keys.is_some() {
            large as u8
        } else {
            2 + large as u8
        },
        b,
    )
}

fn doc(j: &J, large: bool) -> Vec<u8> {
    let (t, body) = jsonb(j, large);
    let mut d = vec![t];
    d.extend(body);
    d
}

fn sample() -> J {
    J::O(vec![
        (
            "a",
            J::A(vec![J::I16(1), J::S("x"), J::O(vec![("b", J::Null)])]),
        ),
        ("n", J::I64(i64::MIN)),
        ("u", J::U64(u64::MAX)),
        ("ü", J::S("日本 \"q\"")),
        ("f", J::F(2.5)),
        ("t", J::Bool(true)),
        ("e", J::O(vec![])),
        (
            "d",
            J::Opaque(246, [&[5u8, 2][..], &dec_bin("-12.30", 5, 2)].concat()),
        ),
        ("z", J::Opaque(252, vec![0xfa, 0xce])),
        ("i", J::A(vec![J::I32(-70000), J::U32(4_000_000_000)])),
    ])
}

const SAMPLE_TEXT: &str = r#"{"a":[1,"x",{"b":null}],"n":-9223372036854775808,"u":18446744073709551615,"ü":"日本 \"q\"","f":2.5,"t":true,"e":{},"d":"-12.30","z":"base64:type252:+s4=","i":[-70000,4000000000]}"#;

#[test]
fn jsonb_nested_unicode_small_and_large() {
    for large in [false, true] {
        assert_eq!(
            one(JSON, &[4], &[], &prefixed(4, &doc(&sample(), large))),
            SAMPLE_TEXT
        );
    }
    assert_eq!(
        one(JSON, &[4], &[], &prefixed(4, &doc(&J::Bool(false), false))),
        "false"
    );
    assert_eq!(
        one(JSON, &[4], &[], &prefixed(4, &doc(&J::S("top"), false))),
        "\"top\""
    );
    // an empty JSON value is null, as in MySQL
    assert_eq!(one(JSON, &[4], &[], &prefixed(4, &[])), "null");
    // opaque temporal values (packed, little-endian)
    let packed_dt: i64 =
        (((((2012 * 13 + 3) << 5) | 18) << 17 | (11 << 12) | (30 << 6) | 45) << 24) + 5;
    let d = doc(
        &J::A(vec![
            J::Opaque(12, packed_dt.to_le_bytes().to_vec()),
            J::Opaque(10, packed_dt.to_le_bytes().to_vec()),
        ]),
        false,
    );
    assert_eq!(
        one(JSON, &[4], &[], &prefixed(4, &d)),
        r#"["2012-03-18 11:30:45.000005","2012-03-18"]"#
    );
}

#[test]
fn jsonb_garbage_is_an_error_not_a_panic() {
    let good = doc(&sample(), false);
    let s = schema(&[(JSON, &[4])], &[]);
    for cut in 1..good.len() {
        let img = image(&[Some(&prefixed(4, &good[..cut]))]);
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        let r = decode_image(&s, &all_present(1), &img, &mut out, &mut spans);
        if let Ok(n) = r {
            assert_eq!(n, img.len());
            serde_json::from_slice::<serde_json::Value>(&out).unwrap();
        }
    }
    // a container whose entries all point at itself-like shared children: bounded work
    let mut evil = vec![2u8];
    let n = 1000usize;
    evil.extend_from_slice(&(n as u16).to_le_bytes());
    let size = 4 + n * 3 + 5;
    evil.extend_from_slice(&(size as u16).to_le_bytes());
    for _ in 0..n {
        evil.push(2);
        evil.extend_from_slice(&((4 + n * 3) as u16).to_le_bytes());
    }
    // the shared child: an array of 1 element pointing back at... itself at depth (same offset)
    evil.extend_from_slice(&[1, 0, 5, 0, 0]);
    let img = image(&[Some(&prefixed(4, &evil))]);
    let (mut out, mut spans) = (Vec::new(), Vec::new());
    let _ = decode_image(&s, &all_present(1), &img, &mut out, &mut spans);
}

#[test]
fn mariadb_json_text() {
    let cols: &[(u8, &[u8])] = &[(BLOB, &[4]), (BLOB, &[4])];
    let extra = ExtraSchema {
        json_columns: vec![0, 1],
        ..Default::default()
    };
    let s = schema_x(cols, &list_tlv(COLUMN_CHARSET, &[45, 45]), Some(&extra));
    let img = image(&[
        Some(&prefixed(4, b" {\"a\": [1, 2.50]}\n")),
        Some(&prefixed(4, b"{oops")),
    ]);
    assert_eq!(dec(&s, &img), r#"{"@1":{"a": [1, 2.50]},"@2":"{oops"}"#);
}

#[test]
fn geometry_and_vector() {
    let wkb = [
        1u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0x40,
    ];
    let mut g = vec![0xe6, 0x10, 0, 0]; // SRID 4326
    g.extend_from_slice(&wkb);
    let got = one(GEOMETRY, &[4], &[], &prefixed(4, &g));
    use base64::Engine;
    assert_eq!(
        got,
        format!(
            "\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(wkb)
        )
    );
    let v: Vec<u8> = [1.5f32, -0.1, 3.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    assert_eq!(one(VECTOR, &[4], &[], &prefixed(4, &v)), "[1.5,-0.1,3.0]");
}

// ---- images, keys, changed --------------------------------------------------------------------

fn shop() -> TableSchema {
    let cols: &[(u8, &[u8])] = &[
        (LONG, &[]),
        (VARCHAR, &[100, 0]),
        (NEWDECIMAL, &[10, 2]),
        (LONG, &[]),
    ];
    let mut opt = names_tlv(&["id", "name", "price", "region"]);
    opt.extend(list_tlv(SIMPLE_PRIMARY_KEY, &[3, 0]));
    opt.extend(list_tlv(DEFAULT_CHARSET, &[255]));
    schema(cols, &opt)
}

#[test]
fn null_bitmap_partial_images_spans_keys_changed() {
    let s = shop();
    assert!(s.names_from_binlog);
    assert_eq!(s.pk, [3, 0]);
    // before image: all columns, name NULL
    let before_img = image(&[
        Some(&7i32.to_le_bytes()),
        None,
        Some(&dec_bin("9.99", 10, 2)),
        Some(&1i32.to_le_bytes()),
    ]);
    let (mut bbuf, mut bsp) = (Vec::new(), Vec::new());
    let n = decode_image(&s, &all_present(4), &before_img, &mut bbuf, &mut bsp).unwrap();
    assert_eq!(n, before_img.len());
    assert_eq!(bbuf, br#"{"id":7,"name":null,"price":"9.99","region":1}"#);
    assert_eq!(bsp[1], Some((15, 19)));
    assert_eq!(&bbuf[15..19], b"null");
    // after image: columns 0, 2, 3 only (MINIMAL-like); null bitmap covers 3 columns
    let present = bitvec![u8, Lsb0; 1, 0, 1, 1];
    let mut after_img = vec![0u8];
    after_img.extend_from_slice(&7i32.to_le_bytes());
    after_img.extend_from_slice(&dec_bin("10.50", 10, 2));
    after_img.extend_from_slice(&1i32.to_le_bytes());
    let (mut abuf, mut asp) = (Vec::new(), Vec::new());
    let n = decode_image(&s, &present, &after_img, &mut abuf, &mut asp).unwrap();
    assert_eq!(n, after_img.len());
    assert_eq!(abuf, br#"{"id":7,"price":"10.50","region":1}"#);
    assert_eq!(asp[1], None);
    let mut out = Vec::new();
    write_key(&s, &abuf, &asp, &mut out);
    assert_eq!(out, br#"{"region":1,"id":7}"#);
    out.clear();
    write_changed(&s, &bbuf, &bsp, &abuf, &asp, &mut out);
    assert_eq!(out, br#"["price"]"#);
    // no PK: the key is every present column
    let mut s2 = s.clone();
    s2.pk.clear();
    out.clear();
    write_key(&s2, &abuf, &asp, &mut out);
    assert_eq!(out, br#"{"id":7,"price":"10.50","region":1}"#);
    // two images back to back in one buffer: returns the bytes of the first only
    let mut two = before_img.clone();
    two.extend_from_slice(&before_img);
    let (mut o, mut sp) = (Vec::new(), Vec::new());
    assert_eq!(
        decode_image(&s, &all_present(4), &two, &mut o, &mut sp).unwrap(),
        before_img.len()
    );
}

#[test]
fn null_bitmap_over_nine_columns() {
    let cols: Vec<(u8, &[u8])> = vec![(TINY, &[]); 10];
    let s = schema(&cols, &[]);
    let vals: Vec<Option<&[u8]>> = (0..10)
        .map(|i| if i % 3 == 0 { None } else { Some(&[5u8][..]) })
        .collect();
    assert_eq!(
        dec(&s, &image(&vals)),
        r#"{"@1":null,"@2":5,"@3":5,"@4":null,"@5":5,"@6":5,"@7":null,"@8":5,"@9":5,"@10":null}"#
    );
}

#[test]
fn truncated_images_error_with_names_and_never_panic() {
    let s = shop();
    let img = image(&[
        Some(&7i32.to_le_bytes()),
        Some(b"\x05chair"),
        Some(&dec_bin("-1.5", 10, 2)),
        Some(&2i32.to_le_bytes()),
    ]);
    assert_eq!(
        dec(&s, &img),
        r#"{"id":7,"name":"chair","price":"-1.50","region":2}"#
    );
    for cut in 0..img.len() {
        let (mut out, mut spans) = (b"x".to_vec(), Vec::new());
        let e = decode_image(&s, &all_present(4), &img[..cut], &mut out, &mut spans).unwrap_err();
        assert_eq!(out, b"x");
        let msg = e.to_string();
        assert!(
            msg.contains("truncated") && msg.contains("shop.products"),
            "{msg}"
        );
    }
    let (mut out, mut spans) = (Vec::new(), Vec::new());
    let e = decode_image(
        &s,
        &all_present(4),
        &img[..img.len() - 6],
        &mut out,
        &mut spans,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "row image truncated in column `price` of shop.products"
    );
    // a bitmap naming more columns than the table map has
    let wide = bitvec![u8, Lsb0; 1, 1, 1, 1, 1];
    let e = decode_image(&s, &wide, &img, &mut out, &mut spans).unwrap_err();
    assert!(matches!(e, DecodeError::ColumnCount { .. }), "{e}");
}

#[test]
fn random_images_never_panic() {
    let mut cols: Vec<(u8, &[u8])> = vec![
        (TINY, &[]),
        (INT24, &[]),
        (NEWDECIMAL, &[20, 5]),
        (FLOAT, &[4]),
        (DATE, &[]),
        (TIME2, &[3]),
        (DATETIME2, &[6]),
        (TIMESTAMP2, &[2]),
        (VARCHAR, &[0x2c, 0x01]),
        (BLOB, &[2]),
        (STRING, &[0xf7, 1]),
        (STRING, &[0xf8, 2]),
        (BIT, &[3, 1]),
        (JSON, &[4]),
        (GEOMETRY, &[4]),
        (VECTOR, &[4]),
        (YEAR, &[]),
        (TIME, &[]),
        (DATETIME, &[]),
    ];
    cols.push((TIMESTAMP, &[]));
    let mut opt = labels_tlv(ENUM_STR_VALUE, &[&["a"]]);
    opt.extend(labels_tlv(SET_STR_VALUE, &[&["a", "b"]]));
    let s = schema(&cols, &opt);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut out, mut spans) = (Vec::new(), Vec::new());
    for round in 0..20_000 {
        let len = (rnd() % 64) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if round % 2 == 0 {
            // mostly non-NULL, so values get read
            for b in data.iter_mut().take(3) {
                *b &= 0x11;
            }
        }
        let present: BitVec<u8> = (0..cols.len()).map(|_| rnd() % 3 != 0).collect();
        out.clear();
        if let Ok(n) = decode_image(&s, &present, &data, &mut out, &mut spans) {
            assert!(n <= data.len());
            serde_json::from_slice::<serde_json::Value>(&out).unwrap();
        }
    }
}

// ---- schema ------------------------------------------------------------------------------------

#[test]
fn names_placeholders_extra_and_escaping() {
    let cols: &[(u8, &[u8])] = &[(TINY, &[]), (TINY, &[])];
    let s = schema(cols, &[]);
    assert!(!s.names_from_binlog);
    assert_eq!(
        (s.columns[0].name.as_str(), &*s.columns[1].json_key),
        ("@1", &b"\"@2\":"[..])
    );
    let extra = ExtraSchema {
        columns: vec!["a\"b".into(), "ü".into()],
        pk: vec![1],
        ..Default::default()
    };
    let s = schema_x(cols, &[], Some(&extra));
    assert_eq!(&*s.columns[0].json_key, b"\"a\\\"b\":");
    assert_eq!(s.pk, [1]);
    assert!(!s.names_from_binlog);
    // a stale extra (other column count) is ignored
    let stale = ExtraSchema {
        columns: vec!["x".into()],
        pk: vec![0],
        ..Default::default()
    };
    let s = schema_x(cols, &[], Some(&stale));
    assert_eq!(s.columns[0].name, "@1");
    assert!(s.pk.is_empty());
    // PRIMARY_KEY_WITH_PREFIX
    let mut opt = names_tlv(&["k", "v"]);
    opt.extend(list_tlv(PRIMARY_KEY_WITH_PREFIX, &[1, 10]));
    let s = schema(cols, &opt);
    assert_eq!(s.pk, [1]);
    assert!(s.names_from_binlog);
}

#[test]
fn unsupported_types_fail_only_when_a_value_is_present() {
    // TYPED_ARRAY (20) with an inner LONG, then an unknown type 0x50
    let cols: &[(u8, &[u8])] = &[(20, &[3]), (TINY, &[]), (0x50, &[])];
    let s = schema(cols, &[]);
    assert!(matches!(
        s.columns[2].kind,
        ColumnKind::Unsupported {
            type_code: 0x50,
            ..
        }
    ));
    assert_eq!(
        s.columns[1].kind,
        ColumnKind::Int {
            bytes: 1,
            unsigned: false
        }
    );
    assert_eq!(
        dec(&s, &image(&[None, Some(&[1]), None])),
        r#"{"@1":null,"@2":1,"@3":null}"#
    );
    let (mut out, mut spans) = (Vec::new(), Vec::new());
    let e = decode_image(
        &s,
        &all_present(3),
        &image(&[None, Some(&[1]), Some(&[1])]),
        &mut out,
        &mut spans,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported column type 0x50 in column `@3` of shop.products: unknown column type"
    );
}

#[test]
fn malformed_table_map_is_an_error() {
    // metadata block shorter than the types need
    let mut b = tme_bytes(&[(VARCHAR, &[10])], &[]);
    // fix up: the builder wrote meta length 1 for a VARCHAR (needs 2)
    let tme = parse_tme(&b);
    assert!(matches!(
        TableSchema::from_table_map(&tme, None),
        Err(DecodeError::BadTableMap { .. })
    ));
    // optional metadata cut short
    b = tme_bytes(&[(TINY, &[])], &[4, 10, 1]);
    let tme = parse_tme(&b);
    let e = TableSchema::from_table_map(&tme, None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("malformed table map for shop.products"),
        "{e}"
    );
}

// ---- JSON partial update -------------------------------------------------------------------------

#[test]
fn partial_json_update_applies_diffs_to_the_before_image() {
    let cols: &[(u8, &[u8])] = &[(LONG, &[]), (JSON, &[4])];
    let s = schema(cols, &names_tlv(&["id", "doc"]));
    let before_doc = J::O(vec![
        ("a", J::I16(1)),
        ("b", J::A(vec![J::S("x"), J::S("y")])),
        ("k", J::S("v")),
    ]);
    let before_img = image(&[
        Some(&1i32.to_le_bytes()),
        Some(&prefixed(4, &doc(&before_doc, false))),
    ]);
    let (mut bbuf, mut bsp) = (Vec::new(), Vec::new());
    decode_image(&s, &all_present(2), &before_img, &mut bbuf, &mut bsp).unwrap();
    assert_eq!(bbuf, br#"{"id":1,"doc":{"a":1,"b":["x","y"],"k":"v"}}"#);

    let mut diffs = Vec::new();
    let mut diff = |op: u8, path: &str, v: Option<Vec<u8>>| {
        diffs.push(op);
        lenenc_str(&mut diffs, path.as_bytes());
        if let Some(v) = v {
            lenenc_str(&mut diffs, &v);
        }
    };
    diff(0, "$.a", Some(doc(&J::I16(2), false)));
    diff(1, "$.\"new key\"", Some(doc(&J::S("n"), false)));
    diff(2, "$.b[0]", None);
    diff(1, "$.b[last]", Some(doc(&J::Null, false)));
    diff(2, "$.k", None);
    // after image: value options 1 (PARTIAL_JSON_UPDATES), partial bits (1 JSON column: set)
    let mut after = vec![1, 0b1];
    after.extend(image(&[
        Some(&1i32.to_le_bytes()),
        Some(&prefixed(4, &diffs)),
    ]));
    let (mut abuf, mut asp) = (Vec::new(), Vec::new());
    let n = decode_partial_after_image(
        &s,
        &all_present(2),
        &after,
        &bbuf,
        &bsp,
        &mut abuf,
        &mut asp,
    )
    .unwrap();
    assert_eq!(n, after.len());
    assert_eq!(
        std::str::from_utf8(&abuf).unwrap(),
        r#"{"id":1,"doc":{"a":2,"b":[null,"y"],"new key":"n"}}"#
    );
    // without the column in the before image: the error names the fix
    let e = decode_partial_after_image(&s, &all_present(2), &after, &[], &[], &mut abuf, &mut asp)
        .unwrap_err();
    assert!(e.to_string().contains("binlog_row_value_options=''"), "{e}");
    // value options 0: an ordinary image after the options byte
    let mut plain = vec![0];
    plain.extend(before_img.clone());
    abuf.clear();
    decode_partial_after_image(
        &s,
        &all_present(2),
        &plain,
        &bbuf,
        &bsp,
        &mut abuf,
        &mut asp,
    )
    .unwrap();
    assert_eq!(abuf, bbuf);
}

// ---- transactions: XA ------------------------------------------------------------------------
//
// The decoder over hand-built event streams, as MySQL 8 and MariaDB 10.5+ log XA transactions
// (`XA START 'x'; INSERT ...; XA END 'x'; XA PREPARE 'x'; XA COMMIT 'x'`). The XA group up to
// its prepare is the transaction: its GTID and commit time go on its rows, and the position
// moves only at its end. `XA COMMIT` and `XA ROLLBACK` come later with GTIDs of their own, as
// transactions without rows.

mod xa {
    use std::sync::Arc;

    use mysql_common::binlog::consts::BinlogVersion;
    use mysql_common::binlog::events::Event;
    use mysql_common::binlog::EventStreamReader;

    use super::{list_tlv, names_tlv, tme_bytes, LONG, SIMPLE_PRIMARY_KEY};
    use crate::checkpoint::Position;
    use crate::decode::{DecodeConfig, Decoder};
    use crate::gtid::{GtidPos, GtidSet};

    const QUERY: u8 = 2;
    const XID: u8 = 16;
    const TABLE_MAP: u8 = 19;
    const WRITE_ROWS: u8 = 30;
    const MYSQL_GTID: u8 = 33;
    const XA_PREPARE: u8 = 38;
    const MARIADB_GTID: u8 = 162;

    /// The source's UUID, 3e11fa47-71ca-11e1-9e33-c80aa9429562.
    const SID: [u8; 16] = [
        0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95,
        0x62,
    ];
    const UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    /// 2024-03-01T12:00:00Z, in seconds.
    const T: u32 = 1_709_294_400;

    /// A stream of events as a replica reads them (no checksums), each ending where its
    /// `log_pos` says.
    struct Stream {
        esr: EventStreamReader,
        events: Vec<Event>,
        pos: u32,
    }

    impl Stream {
        fn new() -> Stream {
            Stream {
                esr: EventStreamReader::new(BinlogVersion::Version4),
                events: Vec::new(),
                pos: 4,
            }
        }

        fn push(&mut self, kind: u8, ts: u32, server_id: u32, body: &[u8]) -> u32 {
            let size = 19 + body.len() as u32;
            self.pos += size;
            let mut frame = Vec::new();
            frame.extend_from_slice(&ts.to_le_bytes());
            frame.push(kind);
            frame.extend_from_slice(&server_id.to_le_bytes());
            frame.extend_from_slice(&size.to_le_bytes());
            frame.extend_from_slice(&self.pos.to_le_bytes());
            frame.extend_from_slice(&0u16.to_le_bytes());
            frame.extend_from_slice(body);
            let ev = self.esr.read(&frame[..]).unwrap().unwrap();
            self.events.push(ev);
            self.pos
        }

        /// MySQL's GTID event: `SID:gno`, committed at `commit_us` (immediate_commit_timestamp).
        fn mysql_gtid(&mut self, gno: u64, commit_us: u64) -> u32 {
            let mut b = vec![0u8];
            b.extend_from_slice(&SID);
            b.extend_from_slice(&gno.to_le_bytes());
            b.push(2); // logical timestamps follow
            b.extend_from_slice(&0u64.to_le_bytes());
            b.extend_from_slice(&0u64.to_le_bytes());
            b.extend_from_slice(&commit_us.to_le_bytes()[..7]);
            self.push(MYSQL_GTID, T, 1, &b)
        }

        /// MariaDB's GTID event `0-1-seq` with `flags` (FL_STANDALONE 1, FL_TRANSACTIONAL 4,
        /// FL_ALLOW_PARALLEL 8, FL_PREPARED_XA 64, FL_COMPLETED_XA 128); an XA's carries
        /// its xid after them (format id, gtrid and bqual lengths, the bytes), as 10.11
        /// writes it.
        fn mariadb_gtid(&mut self, seq: u64, flags: u8, ts: u32) -> u32 {
            let mut b = seq.to_le_bytes().to_vec();
            b.extend_from_slice(&0u32.to_le_bytes());
            b.push(flags);
            if flags & (64 | 128) != 0 {
                b.extend_from_slice(&1u32.to_le_bytes());
                b.extend_from_slice(&[1, 0, b'x']);
            } else {
                b.extend_from_slice(&[0; 6]);
            }
            self.push(MARIADB_GTID, ts, 1, &b)
        }

        fn query(&mut self, sql: &str, ts: u32) -> u32 {
            let mut b = Vec::new();
            b.extend_from_slice(&9u32.to_le_bytes()); // thread id
            b.extend_from_slice(&0u32.to_le_bytes()); // execution time
            b.push(4); // schema length
            b.extend_from_slice(&0u16.to_le_bytes()); // error code
            b.extend_from_slice(&0u16.to_le_bytes()); // status variables' length
            b.extend_from_slice(b"shop\0");
            b.extend_from_slice(sql.as_bytes());
            self.push(QUERY, ts, 1, &b)
        }

        /// `shop.products (id INT PRIMARY KEY, v INT)`, table id 1, with full metadata.
        fn table_map(&mut self, ts: u32) -> u32 {
            let mut opt = names_tlv(&["id", "v"]);
            opt.extend(list_tlv(SIMPLE_PRIMARY_KEY, &[0]));
            self.push(
                TABLE_MAP,
                ts,
                1,
                &tme_bytes(&[(LONG, &[]), (LONG, &[])], &opt),
            )
        }

        /// One WRITE_ROWS event of rows `(id, id * 10)`.
        fn insert(&mut self, ids: &[i32], ts: u32) -> u32 {
            let mut b = vec![1, 0, 0, 0, 0, 0]; // table id
            b.extend_from_slice(&1u16.to_le_bytes()); // STMT_END_F
            b.extend_from_slice(&2u16.to_le_bytes()); // no extra data
            b.push(2); // columns
            b.push(0b11); // both in the image
            for id in ids {
                b.push(0); // no NULLs
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&(id * 10).to_le_bytes());
            }
            self.push(WRITE_ROWS, ts, 1, &b)
        }

        /// XA_PREPARE_LOG_EVENT for xid `x`; `one_phase`: XA COMMIT ... ONE PHASE (MySQL).
        fn xa_prepare(&mut self, one_phase: bool, ts: u32) -> u32 {
            let mut b = vec![u8::from(one_phase)];
            b.extend_from_slice(&1u32.to_le_bytes()); // format id
            b.extend_from_slice(&1u32.to_le_bytes()); // gtrid length
            b.extend_from_slice(&0u32.to_le_bytes()); // bqual length
            b.push(b'x');
            self.push(XA_PREPARE, ts, 1, &b)
        }

        fn xid(&mut self, ts: u32) -> u32 {
            self.push(XID, ts, 1, &7u64.to_le_bytes())
        }
    }

    /// What the decoder made of an event: the lines it handed on, and the position a restart
    /// would resume from.
    struct Step {
        lines: Vec<serde_json::Value>,
        position: Position,
    }

    /// Feeds each event, taking the chunk after it (as when the stream pauses there); the
    /// stream starts after the GTIDs `gtids` (MySQL), or with none known (MariaDB: each
    /// domain's last GTID is learnt).
    fn decode(events: &[Event], gtids: Option<&str>) -> Vec<Step> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let start = Position {
            gtid: gtids.map(|g| GtidPos::Mysql(GtidSet::parse(g).unwrap())),
            ..Position::default()
        };
        let mut d = Decoder::new(Arc::new(DecodeConfig::default()), start, None, None, None);
        d.start_file("binlog.000001");
        events
            .iter()
            .map(|ev| {
                rt.block_on(d.on_event(ev)).unwrap();
                let chunk = d.take_chunk(true);
                let lines = chunk
                    .iter()
                    .flat_map(|c| c.changes.iter().map(|ch| c.line(ch).to_vec()))
                    .map(|l| serde_json::from_slice(&l).unwrap())
                    .collect();
                Step {
                    lines,
                    position: chunk
                        .and_then(|c| c.position)
                        .unwrap_or_else(|| d.position().clone()),
                }
            })
            .collect()
    }

    fn gtid_text(p: &Position) -> String {
        p.gtid.as_ref().map(|g| g.to_string()).unwrap_or_default()
    }

    #[test]
    fn mysql_xa_is_one_transaction_up_to_its_prepare_with_its_gtid_and_time() {
        let commit_us = u64::from(T) * 1_000_000 + 250_000;
        let mut s = Stream::new();
        s.mysql_gtid(7, commit_us);
        // MySQL logs the xid as gtrid, bqual and format id (sql/xa.cc, XID::serialize).
        s.query("XA START X'78',X'',1", T);
        s.table_map(T);
        s.insert(&[1, 2], T);
        s.query("XA END X'78',X'',1", T);
        let prepared = s.xa_prepare(false, T);
        s.mysql_gtid(8, commit_us + 1_000_000);
        let committed = s.query("XA COMMIT X'78',X'',1", T + 1);
        let steps = decode(&s.events, Some(&format!("{UUID}:1-6")));

        let rows: Vec<&serde_json::Value> = steps.iter().flat_map(|s| &s.lines).collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r["gtid"], format!("{UUID}:7"), "{r}");
            assert_eq!(r["ts"], "2024-03-01T12:00:00.250000Z", "{r}");
            assert_eq!(r["row"], i);
            assert_eq!(r["id"], serde_json::json!({ "id": i + 1 }));
        }
        // Inside the XA group the position stays before it (with the rows handed on so far).
        for step in &steps[..5] {
            assert_eq!(step.position.offset, 4, "{:?}", step.position);
            assert_eq!(gtid_text(&step.position), format!("{UUID}:1-6"));
        }
        assert_eq!(steps[3].position.partial.as_ref().unwrap().next_row, 2);
        // The prepare ends it: the GTID is applied there, and only there.
        assert_eq!(steps[5].position.offset, u64::from(prepared));
        assert_eq!(steps[5].position.partial, None);
        assert_eq!(gtid_text(&steps[5].position), format!("{UUID}:1-7"));
        // XA COMMIT is a transaction of its own, without rows.
        assert_eq!(steps[7].position.offset, u64::from(committed));
        assert_eq!(gtid_text(&steps[7].position), format!("{UUID}:1-8"));
    }

    #[test]
    fn mysql_xa_commit_one_phase_and_rollback() {
        let mut s = Stream::new();
        // XA COMMIT ... ONE PHASE: the XA_PREPARE event says one_phase.
        s.mysql_gtid(3, 0);
        s.query("XA START X'78',X'',1", T);
        s.table_map(T);
        s.insert(&[5], T);
        s.query("XA END X'78',X'',1", T);
        let one_phase = s.xa_prepare(true, T);
        // A prepared XA rolled back: its own GTID, no rows.
        s.mysql_gtid(4, 0);
        let rolled_back = s.query("XA ROLLBACK X'78',X'',1", T + 2);
        let steps = decode(&s.events, Some(&format!("{UUID}:1-2")));
        let rows: Vec<&serde_json::Value> = steps.iter().flat_map(|s| &s.lines).collect();
        assert_eq!(rows.len(), 1);
        // Without an immediate_commit_timestamp, the GTID event's header time.
        assert_eq!(rows[0]["gtid"], format!("{UUID}:3"));
        assert_eq!(rows[0]["ts"], "2024-03-01T12:00:00Z");
        assert_eq!(steps[5].position.offset, u64::from(one_phase));
        assert_eq!(gtid_text(&steps[5].position), format!("{UUID}:1-3"));
        assert_eq!(steps[7].position.offset, u64::from(rolled_back));
        assert_eq!(gtid_text(&steps[7].position), format!("{UUID}:1-4"));
    }

    #[test]
    fn mariadb_xa_is_one_transaction_up_to_its_prepare() {
        // MariaDB 10.5+: the GTID event itself opens the XA (flag FL_PREPARED_XA, the xid in
        // it; no XA START statement), XA END is a statement, XA_PREPARE ends the group; XA
        // COMMIT comes alone, with a GTID flagged FL_COMPLETED_XA and FL_STANDALONE (the
        // flags MariaDB 10.11 writes: 76 and 141).
        let mut s = Stream::new();
        s.mariadb_gtid(3, 76, T);
        s.table_map(T);
        s.insert(&[1], T);
        s.query("XA END X'78',X'',1", T);
        let prepared = s.xa_prepare(false, T);
        s.mariadb_gtid(4, 141, T + 1);
        let committed = s.query("XA COMMIT X'78',X'',1", T + 1);
        // A plain transaction after it.
        s.mariadb_gtid(5, 12, T + 2);
        s.query("BEGIN", T + 2);
        s.table_map(T + 2);
        s.insert(&[2], T + 2);
        s.xid(T + 2);
        let steps = decode(&s.events, None);
        let rows: Vec<&serde_json::Value> = steps.iter().flat_map(|s| &s.lines).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["gtid"], "0-1-3");
        assert_eq!(rows[0]["ts"], "2024-03-01T12:00:00Z");
        assert_eq!(rows[1]["gtid"], "0-1-5");
        assert_eq!(steps[4].position.offset, u64::from(prepared));
        assert_eq!(gtid_text(&steps[4].position), "0-1-3");
        assert_eq!(steps[6].position.offset, u64::from(committed));
        assert_eq!(gtid_text(&steps[6].position), "0-1-4");
    }
}
