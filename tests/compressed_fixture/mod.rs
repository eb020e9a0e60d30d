//! Variants of `transaction_compression.000001` (MySQL 8.0.32, one transaction compressed
//! with zstd: a TRANSACTION_PAYLOAD event at byte 274 holding BEGIN, a table map of
//! `test.tb1`, one inserted row and the XID) with another payload in that event: damaged,
//! cut short, stating another uncompressed size, or holding more events. Every event of a
//! variant has its size, its end position and its CRC32 made right again, so that only the
//! payload itself is wrong, as when a server wrote a bad one.

// Each test crate that includes this module uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const NAME: &str = "transaction_compression.000001";
/// Where the TRANSACTION_PAYLOAD event starts, in the fixture and in every variant.
pub const PAYLOAD_EVENT_AT: usize = 274;
/// TRANSACTION_PAYLOAD's header fields (`Transaction_payload_event::write_data_header`).
const SIZE: u64 = 1;
const COMPRESSION: u64 = 2;
const UNCOMPRESSED_SIZE: u64 = 3;
const END: u64 = 0;
/// Compression types.
pub const ZSTD: u64 = 0;
pub const NONE: u64 = 255;

const HEADER_LEN: usize = 19;
const FORMAT_DESCRIPTION: u8 = 15;
const TRANSACTION_PAYLOAD: u8 = 40;
const ROWS_QUERY: u8 = 29;

fn path() -> PathBuf {
    crate::binlog_fixtures::dir().join(NAME)
}

/// The fixture's events, each with its header and CRC32.
fn events() -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path()).unwrap();
    let mut at = 4;
    let mut out = Vec::new();
    while at < bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().unwrap()) as usize;
        out.push(bytes[at..at + size].to_vec());
        at += size;
    }
    out
}

/// The TRANSACTION_PAYLOAD event's payload as the fixture holds it (zstd).
fn payload_event() -> Vec<u8> {
    events()
        .into_iter()
        .find(|e| e[4] == TRANSACTION_PAYLOAD)
        .unwrap()
}

/// The events inside the fixture's compressed transaction, decompressed (179 bytes: BEGIN,
/// the table map, the rows event, the XID; they carry no checksum).
pub fn inner_events() -> Vec<u8> {
    let e = payload_event();
    // The header: compression 0 (zstd), uncompressed size 179, payload size 124, end mark.
    let body = &e[HEADER_LEN..e.len() - 4];
    assert_eq!(&body[..10], [2, 1, 0, 3, 1, 179, 1, 1, 124, 0]);
    zstd::decode_all(&body[10..]).unwrap()
}

/// The fixture's zstd payload, as the server wrote it.
pub fn zstd_payload() -> Vec<u8> {
    let e = payload_event();
    e[HEADER_LEN + 10..e.len() - 4].to_vec()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

/// A ROWS_QUERY event of `len` bytes of statement text, as inside a payload (no checksum):
/// what `binlog_rows_query_log_events=ON` writes before a statement's rows. The decoder
/// passes over it.
pub fn rows_query_event(len: usize) -> Vec<u8> {
    let mut e = Vec::with_capacity(HEADER_LEN + 1 + len);
    e.extend_from_slice(&0u32.to_le_bytes());
    e.push(ROWS_QUERY);
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&((HEADER_LEN + 1 + len) as u32).to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.push(0xff);
    e.resize(HEADER_LEN + 1 + len, b'x');
    e
}

fn lenenc(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=250 => out.push(v as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&v.to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// One header field: type, the length of the value's encoding, the value.
fn field(out: &mut Vec<u8>, kind: u64, value: u64) {
    let mut v = Vec::new();
    lenenc(&mut v, value);
    lenenc(out, kind);
    lenenc(out, v.len() as u64);
    out.extend_from_slice(&v);
}

/// The fixture with its TRANSACTION_PAYLOAD event holding `payload`, compressed with
/// `compression` and said to decompress to `uncompressed` bytes.
pub fn with_payload(compression: u64, uncompressed: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    field(&mut body, COMPRESSION, compression);
    field(&mut body, UNCOMPRESSED_SIZE, uncompressed);
    field(&mut body, SIZE, payload.len() as u64);
    lenenc(&mut body, END);
    body.extend_from_slice(payload);
    let mut file = b"\xfebin".to_vec();
    for e in events() {
        let body = if e[4] == TRANSACTION_PAYLOAD {
            &body[..]
        } else {
            &e[HEADER_LEN..e.len() - 4]
        };
        if e[4] == FORMAT_DESCRIPTION {
            // Unchanged (its checksum is computed with the in-use flag clear).
            file.extend_from_slice(&e);
            continue;
        }
        let start = file.len();
        let size = HEADER_LEN + body.len() + 4;
        file.extend_from_slice(&e[..9]);
        file.extend_from_slice(&(size as u32).to_le_bytes());
        file.extend_from_slice(&((start + size) as u32).to_le_bytes());
        file.extend_from_slice(&e[17..HEADER_LEN]);
        file.extend_from_slice(body);
        let crc = crc32fast::hash(&file[start..]);
        file.extend_from_slice(&crc.to_le_bytes());
    }
    file
}

/// Where the TRANSACTION_PAYLOAD event of a variant ends (its end position, `log_pos`).
pub fn payload_event_end(file: &[u8]) -> usize {
    let at = PAYLOAD_EVENT_AT;
    assert_eq!(file[at + 4], TRANSACTION_PAYLOAD);
    u32::from_le_bytes(file[at + 13..at + 17].try_into().unwrap()) as usize
}

/// Writes a variant as `dir/transaction_compression.000001`.
pub fn write(dir: &Path, file: &[u8]) -> PathBuf {
    let p = dir.join(NAME);
    std::fs::write(&p, file).unwrap();
    p
}
