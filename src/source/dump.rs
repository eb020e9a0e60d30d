//! A binlog dump: the events of a [`Wire`] connection after the dump command, as the decoder
//! takes them.
//!
//! Each event arrives whole in a buffer of its own size ([`Wire::read_dump_packet`]), is
//! checked as `replay` checks a file's events (`decode::frame`: long enough for its header
//! and checksum), then parsed by mysql_common. The events inside a MySQL compressed
//! transaction follow their TRANSACTION_PAYLOAD event, decompressed one by one as they are
//! read ([`Payload`], the reader `replay` uses too); a payload that does not decompress, or
//! not to the size its header states, is a definite error naming the binlog file and the
//! event's end position, never an empty or shortened transaction.
//!
//! Silence: a live stream sends a byte at least every heartbeat period, so `silence` (two
//! periods) without one means the connection is dead, with one exception: at its start. A
//! server asked for a GTID position first scans its binlog for it, and MariaDB sends nothing
//! while it skips the transactions before it, not even heartbeats (`send_events` in
//! `sql_repl.cc`); a big binlog file takes seconds. Until the stream has sent more than its
//! opening events (ROTATE, FORMAT_DESCRIPTION, the file's GTID header), silence may last
//! [`START_SILENCE`]: a dead connection there is noticed later, and a slow scan is never
//! taken for one (which would restart it, and fail again, for ever).

use std::time::Duration;

use mysql_common::binlog::consts::{BinlogChecksumAlg, BinlogVersion, EventType};
use mysql_common::binlog::events::{Event, EventData};
use mysql_common::binlog::EventStreamReader;

use super::wire::{Packet, Wire};
use super::{Result, SourceError};
use crate::decode::frame::{Payload, CHECKSUM_LEN, HEADER_LEN};
use crate::gtid::mariadb as maria;

pub struct Dump {
    wire: Wire,
    esr: EventStreamReader,
    /// The rest of the compressed transaction being read, and where its event ends.
    payload: Option<(u64, Payload)>,
    /// The events after the last format description end with a checksum.
    checksums: bool,
    /// The bytes of the event being read from a payload.
    frame: Vec<u8>,
    /// The binlog file being streamed (from the last rotate event), for errors.
    file: String,
    /// The stream sent an event past its opening ones (see the module docs).
    past_start: bool,
}

/// How long a stream may be silent before it has passed its start (see the module docs).
pub const START_SILENCE: Duration = Duration::from_secs(60);

/// The events a server sends at the head of a stream, and of each file it goes through, before
/// the first event at the position asked for.
fn opening(event_type: u8) -> bool {
    event_type == EventType::ROTATE_EVENT as u8
        || event_type == EventType::FORMAT_DESCRIPTION_EVENT as u8
        || event_type == EventType::PREVIOUS_GTIDS_EVENT as u8
        || event_type == maria::GTID_LIST_EVENT
        || event_type == maria::BINLOG_CHECKPOINT_EVENT
}

impl Dump {
    /// `wire` has just sent the dump command.
    pub fn new(wire: Wire) -> Dump {
        Dump {
            wire,
            esr: EventStreamReader::new(BinlogVersion::Version4),
            payload: None,
            checksums: false,
            frame: Vec::new(),
            file: String::new(),
            past_start: false,
        }
    }

    /// The next event; `None` when the server ended the stream. `silence`: how long the
    /// server may send no byte at all (it sends heartbeats when idle); longer at the start
    /// (see the module docs).
    pub async fn next(&mut self, silence: Duration) -> Result<Option<Event>> {
        if let Some((end, payload)) = &mut self.payload {
            let end = *end;
            match payload.next(&mut self.esr, &mut self.frame) {
                Ok(Some(event)) => return Ok(Some(event)),
                Ok(None) => self.payload = None,
                Err(e) => {
                    self.payload = None;
                    return Err(self.payload_damaged(end, e));
                }
            }
        }
        let silence = match self.past_start {
            true => silence,
            false => silence.max(START_SILENCE),
        };
        let bytes = match self.wire.read_dump_packet(silence).await? {
            Packet::Event(bytes) => bytes,
            Packet::End => return Ok(None),
        };
        let event_type = bytes[4];
        self.past_start |= !opening(event_type);
        let min = if event_type == EventType::FORMAT_DESCRIPTION_EVENT as u8 || !self.checksums {
            HEADER_LEN
        } else {
            HEADER_LEN + CHECKSUM_LEN
        };
        if bytes.len() < min {
            return Err(damaged(format!(
                "an event of {} bytes, less than its header and checksum",
                bytes.len()
            )));
        }
        let event = match self.esr.read(&bytes[..]) {
            Ok(Some(e)) => e,
            Ok(None) => return Err(damaged("an empty event".into())),
            Err(e) => return Err(damaged(e.to_string())),
        };
        if event_type == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
            self.checksums = !matches!(
                event.footer().get_checksum_alg(),
                Ok(None) | Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_OFF))
            );
        } else if event_type == EventType::ROTATE_EVENT as u8 {
            if let Ok(Some(EventData::RotateEvent(r))) = event.read_data() {
                self.file = crate::decode::rotate_name(&event, r.name_raw());
            }
        } else if event_type == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            // The payload is read out of the packet's bytes (the event holds a copy of its
            // own, for the decoder).
            let end = u64::from(event.header().log_pos());
            let trailer = if self.checksums { CHECKSUM_LEN } else { 0 };
            let payload =
                Payload::open(bytes, trailer).map_err(|e| self.payload_damaged(end, e))?;
            self.payload = Some((end, payload));
        }
        // (Any other packet's memory goes back here, before the event is decoded.)
        Ok(Some(event))
    }

    /// The compressed transaction ending at `end` in the current file cannot be read.
    fn payload_damaged(&self, end: u64, e: String) -> super::Failure {
        damaged(format!(
            "{}: the compressed transaction ending at byte {end}: {e}",
            self.file
        ))
    }

    /// Another event can be returned without waiting for the network: one is left in a
    /// compressed transaction, or a whole packet is already buffered.
    pub fn has_ready(&self) -> bool {
        self.payload.is_some() || self.wire.has_buffered_packet()
    }
}

fn damaged(detail: String) -> super::Failure {
    SourceError::DamagedEvent(detail).into()
}
