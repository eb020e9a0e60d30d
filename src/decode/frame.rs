//! Event frames: one binlog event's bytes, whole and checked, before mysql_common parses them
//! (it panics on an event cut short, on one shorter than its checksum, and on some damaged
//! TRANSACTION_PAYLOAD headers), and the events inside a MySQL compressed transaction
//! ([`Payload`]: decompressed one event at a time, its size checked). Archived files
//! (`replay`, which also checks each event's CRC32 here) and the live stream (`source::dump`)
//! read events through here, so both refuse the same damage the same way.

use std::io::{BufRead, BufReader, Cursor, Read, Take};

use mysql_common::binlog::consts::EventType;
use mysql_common::binlog::events::Event;

/// What a TRANSACTION_PAYLOAD event's header says about its payload.
#[derive(Debug, PartialEq, Eq)]
struct PayloadHeader {
    zstd: bool,
    /// The bytes the payload decompresses to (the events inside, back to back).
    uncompressed: u64,
    /// Where the payload starts in the event's body; it runs to the body's end.
    start: usize,
}

/// Reads the fields of a TRANSACTION_PAYLOAD event's header (type, length, value, up to an
/// end mark, then the payload), which MySQL writes in
/// `Transaction_payload_event::write_data_header`: the payload's size, its compression (0
/// zstd, 255 none) and, when compressed, its uncompressed size. Every field is checked
/// against the body (mysql_common's own reader panics on an unknown compression type and on
/// an unknown field longer than the event).
fn payload_header(body: &[u8]) -> std::result::Result<PayloadHeader, String> {
    const END: u64 = 0;
    const SIZE: u64 = 1;
    const COMPRESSION: u64 = 2;
    const UNCOMPRESSED_SIZE: u64 = 3;
    const ZSTD: u64 = 0;
    const NONE: u64 = 255;
    let bad = |what: &str| format!("transaction payload header: {what}");
    let mut rest = body;
    let (mut size, mut compression, mut uncompressed) = (None, None, None);
    loop {
        match lenenc(&mut rest).ok_or_else(|| bad("cut short"))? {
            END => break,
            field @ (SIZE | COMPRESSION | UNCOMPRESSED_SIZE) => {
                let _length = lenenc(&mut rest).ok_or_else(|| bad("cut short"))?;
                let value = lenenc(&mut rest).ok_or_else(|| bad("cut short"))?;
                match field {
                    SIZE => size = Some(value),
                    COMPRESSION if !matches!(value, ZSTD | NONE) => {
                        return Err(bad(&format!("unknown compression type {value}")))
                    }
                    COMPRESSION => compression = Some(value),
                    _ => uncompressed = Some(value),
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
    let size = size.ok_or_else(|| bad("no payload size"))?;
    if size != rest.len() as u64 {
        return Err(bad(&format!(
            "a payload of {size} bytes in {} bytes",
            rest.len()
        )));
    }
    let zstd = match compression {
        Some(ZSTD) => true,
        Some(_) => false,
        None => return Err(bad("no compression type")),
    };
    let uncompressed = match (zstd, uncompressed) {
        (true, Some(n)) => n,
        (true, None) => return Err(bad("no uncompressed size")),
        (false, n) => n.unwrap_or(size),
    };
    if !zstd && uncompressed != size {
        return Err(bad(&format!(
            "an uncompressed payload of {size} bytes said to hold {uncompressed}"
        )));
    }
    Ok(PayloadHeader {
        zstd,
        uncompressed,
        start: body.len() - rest.len(),
    })
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

/// The most zstd may need to keep of a payload's decompressed bytes while reading it: 2^27
/// bytes (128 MiB), the window MySQL's strongest level (22) uses, and zstd's own default limit.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// The events inside a MySQL compressed transaction (a TRANSACTION_PAYLOAD event), read one by
/// one as they are decompressed: what is held is the event's own bytes, zstd's window, and
/// the inner event being read, never the whole decompressed transaction. Its header's
/// uncompressed size is never allocated up front; it is checked: the events must fill
/// exactly that many bytes, and decompressing stops after it (a damaged or hostile header
/// cannot make binsync read on). Any zstd error, a payload cut short, or an inner event cut
/// short is an error, never an empty or shortened transaction. Replay and the live dump both
/// read compressed transactions through this one reader.
pub(crate) struct Payload {
    /// The decompressed stream, ending where the header's uncompressed size says.
    events: BufReader<Take<Decompressed>>,
    /// The header's uncompressed size.
    stated: u64,
    /// Whether an inner event was read yet.
    any: bool,
}

/// A payload's bytes, decompressed if they are compressed.
enum Decompressed {
    Plain(Cursor<Vec<u8>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, Cursor<Vec<u8>>>>),
}

impl Read for Decompressed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Decompressed::Plain(c) => c.read(buf),
            Decompressed::Zstd(z) => z.read(buf),
        }
    }
}

impl Payload {
    /// The events of the TRANSACTION_PAYLOAD event whose bytes (header, body and `trailer`
    /// bytes of checksum) are `frame`; the payload is read out of `frame`, not copied.
    pub(crate) fn open(mut frame: Vec<u8>, trailer: usize) -> std::result::Result<Payload, String> {
        let body_end = frame
            .len()
            .checked_sub(trailer)
            .filter(|&n| n >= HEADER_LEN)
            .ok_or("transaction payload: an event shorter than its header")?;
        let header = payload_header(&frame[HEADER_LEN..body_end])?;
        // The payload runs from after the header's fields to the body's end.
        frame.truncate(body_end);
        let mut payload = Cursor::new(frame);
        payload.set_position((HEADER_LEN + header.start) as u64);
        let source = if header.zstd {
            let zstd_error = |e: std::io::Error| format!("transaction payload: {e}");
            let mut z = zstd::stream::read::Decoder::with_buffer(payload).map_err(zstd_error)?;
            z.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(zstd_error)?;
            Decompressed::Zstd(Box::new(z))
        } else {
            Decompressed::Plain(payload)
        };
        Ok(Payload {
            events: BufReader::with_capacity(64 << 10, source.take(header.uncompressed)),
            stated: header.uncompressed,
            any: false,
        })
    }

    /// The next event inside the payload (those carry no checksum), read whole into `frame`
    /// first; `None` after the last one.
    ///
    /// The payload's size is checked before its last event is handed out, so that a
    /// transaction's commit (its XID, the payload's last event) never comes from a payload
    /// that fails the check: the checkpoint cannot move past it.
    pub(crate) fn next(
        &mut self,
        esr: &mut mysql_common::binlog::EventStreamReader,
        frame: &mut Vec<u8>,
    ) -> Result<Option<Event>, String> {
        let error = |e: String| format!("transaction payload: {e}");
        let read = read_frame(&mut self.events, frame, 0);
        let stated_read = self.events.get_ref().limit() == 0;
        let more = match read {
            // Cut short: by the stated size, if the payload goes on after it.
            Err(e) if stated_read => return Err(self.check_end().err().unwrap_or(error(e))),
            Err(e) => return Err(error(e)),
            Ok(false) => false,
            Ok(true) => !self
                .events
                .fill_buf()
                .map_err(|e| error(e.to_string()))?
                .is_empty(),
        };
        if stated_read {
            self.check_end()?;
        } else if !more {
            let short = self.events.get_ref().limit();
            return Err(error(format!(
                "it decompresses to {} bytes, its header states {}",
                self.stated - short,
                self.stated
            )));
        }
        match read {
            Ok(false) if !self.any => return Err(error("no events in it".into())),
            Ok(false) => return Ok(None),
            _ => self.any = true,
        }
        esr.read_decompressed(&frame[..])
            .map_err(|e| error(e.to_string()))
    }

    /// Once the header's uncompressed size is read: the payload must end there (no byte
    /// more, and zstd's frame complete).
    fn check_end(&mut self) -> Result<(), String> {
        let mut byte = [0u8];
        match self.events.get_mut().get_mut().read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!(
                "transaction payload: it decompresses to more than the {} bytes its header states",
                self.stated
            )),
            Err(e) => Err(format!("transaction payload: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header: payload size, compression type NONE (255), the end mark; then the payload.
    fn header(fields_before: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut body = fields_before.to_vec();
        body.extend([1, 1, payload.len() as u8]);
        body.extend([2, 3, 0xfc, 0xff, 0x00]);
        body.push(0);
        body.extend(payload);
        body
    }

    #[test]
    fn payload_headers_are_read_without_trusting_them() {
        let plain = |fields: &[u8]| payload_header(&header(fields, b"xyz"));
        let expected = |start| PayloadHeader {
            zstd: false,
            uncompressed: 3,
            start,
        };
        assert_eq!(plain(&[]), Ok(expected(9)));
        // An unknown field is skipped by its length, as MySQL's reader skips it.
        assert_eq!(plain(&[7, 2, 0, 0]), Ok(expected(13)));
        // Field type 6655 (a binlog_events fuzz find: mysql_common 0.37's own reader panics on
        // a field type above 255; this one does not use it).
        assert_eq!(plain(&[0xfc, 0xff, 0x19, 1, 0]), Ok(expected(14)));
        let e = plain(&[0xfc, 0xff, 0x19, 9]).unwrap_err();
        assert!(e.contains("a field longer than the event"), "{e}");
        let e = payload_header(&[2, 1, 7]).unwrap_err();
        assert!(e.contains("unknown compression type 7"), "{e}");
        let e = payload_header(&[1, 1, 9, 2, 1, 0, 3, 1, 9, 0, b'x']).unwrap_err();
        assert!(e.contains("a payload of 9 bytes in 1 bytes"), "{e}");
    }
}
