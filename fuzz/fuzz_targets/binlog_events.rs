//! Whole binlog files through `binsync::replay::BinlogFile` (framing, checksums, MySQL
//! compressed transactions) and `binsync::decode::Decoder` (MySQL's and MariaDB's own events:
//! format description, rotate, GTID, anonymous GTID, previous GTIDs, MariaDB GTID, GTID_LIST,
//! annotate, binlog checkpoint, query, XID, table maps, rows events of every version), the
//! way `binsync replay` reads an archived file.
//!
//! Input: `[flags][records]`; each record `[event type][u16 LE n][n bytes: event body]` becomes
//! one event with a valid header (event size and log_pos), plus a valid CRC32 when flags bit 0
//! is set (the seeds set it when their format description event announces CRC32). Flags
//! bit 1: the rest of the input is the file itself after the magic bytes (framing fuzzed too).
//! Bits 2-4: the schema lookup: none, "no such table", a lookup error, or `extra_schema` facts.
//!
//! Besides "no panic": every change the decoder hands on is valid JSON, so is its key.
#![no_main]

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use binsync::decode::schema::ExtraSchema;
use binsync::decode::{DecodeConfig, Decoder, LookupError, SchemaLookup};
use binsync::replay::BinlogFile;
use binsync::Position;
use binsync_fuzz::{assert_json, event_header, extra_schema, ready};
use libfuzzer_sys::fuzz_target;

struct Lookup(u8);

impl SchemaLookup for Lookup {
    fn lookup<'a>(
        &'a mut self,
        _db: &'a str,
        table: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<ExtraSchema>, LookupError>> + Send + 'a>> {
        let answer = match self.0 {
            1 => Ok(None),
            2 => Err(LookupError::Transient {
                table: table.into(),
                detail: "fuzz".into(),
            }),
            n => Ok(extra_schema(n - 2)),
        };
        Box::pin(async move { answer })
    }
}

/// One file, rewritten for each input (BinlogFile reads a path).
fn path() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("binsync-fuzz")
            .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("a temporary folder");
        let path = dir.path().join("fuzz-bin.000001");
        (dir, path)
    })
    .1
}

fn build_file(flags: u8, mut rest: &[u8], file: &mut Vec<u8>) {
    file.extend_from_slice(b"\xfebin");
    if flags & 2 != 0 {
        file.extend_from_slice(rest);
        return;
    }
    let crc = flags & 1 != 0;
    while rest.len() >= 3 {
        let event_type = rest[0];
        let n = (u16::from_le_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let body = &rest[3..3 + n];
        rest = &rest[3 + n..];
        let size = 19 + n + if crc { 4 } else { 0 };
        let start = file.len();
        event_header(file, event_type, size as u32, (start + size) as u32);
        file.extend_from_slice(body);
        if crc {
            let sum = crc32fast::hash(&file[start..]);
            file.extend_from_slice(&sum.to_le_bytes());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = Vec::with_capacity(data.len() * 2 + 64);
    build_file(flags, rest, &mut bytes);
    let path = path();
    std::fs::write(path, &bytes).expect("writing the input file");

    let Ok(mut file) = BinlogFile::open(path) else {
        return;
    };
    let lookup: Option<Box<dyn SchemaLookup>> = match flags >> 2 & 7 {
        0 => None,
        n => Some(Box::new(Lookup(n))),
    };
    let cfg = Arc::new(DecodeConfig {
        chunk_rows: 64,
        chunk_bytes: 16 << 10,
        ..DecodeConfig::default()
    });
    let mut decoder = Decoder::new(cfg, Position::default(), None, None, lookup);
    decoder.start_file(file.name());
    while let Ok(Some(ev)) = file.next_event() {
        let r = ready(decoder.on_event(&ev));
        if let Some(chunk) = decoder.take_chunk(true) {
            for c in &chunk.changes {
                assert_json("a change", chunk.line(c));
                assert_json("a change's key", chunk.key(c));
            }
        }
        if r.is_err() {
            break;
        }
    }
});
