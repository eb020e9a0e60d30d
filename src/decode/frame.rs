//! Event frames: one binlog event's bytes, whole and checked, before mysql_common parses them
//! (it panics on an event cut short, on one shorter than its checksum, and on some damaged
//! TRANSACTION_PAYLOAD headers). Archived files (`replay`) and the live stream
//! (`source::dump`) read events through here, so both refuse the same damage the same way.

use std::io::{BufRead, Read};

use mysql_common::binlog::consts::EventType;
use mysql_common::binlog::events::{Event, TransactionPayloadEvent};

/// Checks the fields of a TRANSACTION_PAYLOAD event's header (type, length, value, up to an
/// end mark, then the payload) as far as mysql_common trusts them: it panics on an unknown
/// compression type and on an unknown field longer than the event.
fn check_payload_header(body: &[u8]) -> std::result::Result<(), String> {
    const END: u64 = 0;
    const SIZE: u64 = 1;
    const COMPRESSION: u64 = 2;
    const UNCOMPRESSED_SIZE: u64 = 3;
    let bad = |what: &str| format!("transaction payload header: {what}");
    let mut rest = body;
    let (mut size, mut compression) = (None, None);
    loop {
        match lenenc(&mut rest).ok_or_else(|| bad("cut short"))? {
            END => break,
            field @ (SIZE | COMPRESSION | UNCOMPRESSED_SIZE) => {
                let _length = lenenc(&mut rest).ok_or_else(|| bad("cut short"))?;
                let value = lenenc(&mut rest).ok_or_else(|| bad("cut short"))?;
                match field {
                    SIZE => size = Some(value),
                    // mysql_common panics on every unknown value it meets, not only the last.
                    COMPRESSION if !matches!(value, 0 | 255) => {
                        return Err(bad(&format!("unknown compression type {value}")))
                    }
                    COMPRESSION => compression = Some(value),
                    _ => {}
                }
            }
            _ => {
                let length = lenenc(&mut rest).ok_or_else(|| bad("cut short"))?;
                match usize::try_from(length).ok().and_then(|n| rest.get(n..)) {
                    Some(after) => rest = after,
                    None => return Err(bad("a field longer than the event")),
                }
            }
        }
    }
    match compression {
        Some(0 | 255) => {}
        Some(other) => return Err(bad(&format!("unknown compression type {other}"))),
        None => return Err(bad("no compression type")),
    }
    match size {
        Some(n) if n <= rest.len() as u64 => Ok(()),
        Some(n) => Err(bad(&format!(
            "a payload of {n} bytes in {} bytes",
            rest.len()
        ))),
        None => Err(bad("no payload size")),
    }
}

/// A length-encoded integer at the head of `rest`, which moves past it.
fn lenenc(rest: &mut &[u8]) -> Option<u64> {
    let (&first, tail) = rest.split_first()?;
    let n = match first {
        0..=0xfa => {
            *rest = tail;
            return Some(u64::from(first));
        }
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = tail.get(..n)?;
    *rest = &tail[n..];
    Some(bytes.iter().rev().fold(0, |v, &b| v << 8 | u64::from(b)))
}

/// Bytes of an event header: timestamp, type, server id, event size, log position, flags.
pub(crate) const HEADER_LEN: usize = 19;
/// Bytes of the CRC32 at the end of each event when the format description says so.
pub(crate) const CHECKSUM_LEN: usize = 4;

/// Reads one whole event (header and body) into `frame`; false at the end of `input`. A
/// body must hold at least `trailer` bytes (the checksum), unless it is a format description
/// (which mysql_common reads on its own terms).
pub(crate) fn read_frame(
    input: &mut impl BufRead,
    frame: &mut Vec<u8>,
    trailer: usize,
) -> std::result::Result<bool, String> {
    frame.clear();
    if input.fill_buf().map_err(|e| e.to_string())?.is_empty() {
        return Ok(false);
    }
    frame.resize(HEADER_LEN, 0);
    input
        .read_exact(frame)
        .map_err(|e| format!("event header cut short ({e})"))?;
    let size = u32::from_le_bytes([frame[9], frame[10], frame[11], frame[12]]) as usize;
    let min = if frame[4] == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
        HEADER_LEN
    } else {
        HEADER_LEN + trailer
    };
    if size < min {
        return Err(format!(
            "an event of {size} bytes, less than its header{} ({min} bytes)",
            if min > HEADER_LEN {
                " and checksum"
            } else {
                ""
            }
        ));
    }
    // Read what is there rather than trust the size with an allocation up front.
    let body = (size - HEADER_LEN) as u64;
    let got = input
        .take(body)
        .read_to_end(frame)
        .map_err(|e| e.to_string())?;
    if (got as u64) < body {
        return Err(format!(
            "an event of {size} bytes cut short after {} bytes",
            HEADER_LEN + got
        ));
    }
    Ok(true)
}

/// Checks the CRC32 at the end of an event read whole into `frame` (header, body,
/// checksum), as the server checks it (`event_checksum_test`, the same in MySQL and MariaDB):
/// a format description's is computed with its in-use flag clear, which the server sets
/// while it writes the file. Without this, a damaged length reads the next event's bytes as
/// part of this one, and the rows decoded from them would look valid.
pub(crate) fn check_checksum(frame: &[u8]) -> std::result::Result<(), String> {
    /// LOG_EVENT_BINLOG_IN_USE_F, in the low byte of the header's flags.
    const IN_USE: u8 = 0x01;
    let Some(body_end) = frame
        .len()
        .checked_sub(CHECKSUM_LEN)
        .filter(|&n| n >= HEADER_LEN)
    else {
        return Err(format!(
            "an event of {} bytes, too short for its checksum",
            frame.len()
        ));
    };
    let (event, stored) = frame.split_at(body_end);
    let mut crc = crc32fast::Hasher::new();
    if event[4] == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
        crc.update(&event[..17]);
        crc.update(&[event[17] & !IN_USE]);
        crc.update(&event[18..]);
    } else {
        crc.update(event);
    }
    let computed = crc.finalize();
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    if computed != stored {
        return Err(format!(
            "checksum mismatch (the event's CRC32 is {stored:#010x}, its bytes give {computed:#010x}): the event or its length is damaged"
        ));
    }
    Ok(())
}

/// The events of a MySQL compressed transaction, decompressed.
pub(crate) fn decompress(event: &Event) -> std::result::Result<Vec<u8>, String> {
    check_payload_header(event.data())?;
    let tpe: TransactionPayloadEvent<'_> = event.read_event().map_err(|e| e.to_string())?;
    let mut payload = tpe.decompressed().map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    payload
        .read_to_end(&mut bytes)
        .map_err(|e| format!("transaction payload: {e}"))?;
    Ok(bytes)
}

/// The next event inside a decompressed TRANSACTION_PAYLOAD (those carry no checksum), read
/// whole into `frame` first; `None` at the payload's end.
pub(crate) fn next_in_payload(
    payload: &mut std::io::Cursor<Vec<u8>>,
    esr: &mut mysql_common::binlog::EventStreamReader,
    frame: &mut Vec<u8>,
) -> Result<Option<Event>, String> {
    if !read_frame(payload, frame, 0)? {
        return Ok(None);
    }
    esr.read_decompressed(&frame[..]).map_err(|e| e.to_string())
}
