//! A binlog dump: the events of a [`Wire`] connection after the dump command, as the decoder
//! takes them.
//!
//! Each event arrives whole in a buffer of its own size ([`Wire::read_dump_packet`]), is
//! checked as `replay` checks a file's events (`decode::frame`: long enough for its header
//! and checksum), then parsed by mysql_common. The events inside a MySQL compressed
//! transaction follow their TRANSACTION_PAYLOAD event, read from the decompressed payload with
//! the same checks; a payload that does not decompress is a definite error naming the
//! event, never an empty transaction.

use std::io::Cursor;
use std::time::Duration;

use mysql_common::binlog::consts::{BinlogChecksumAlg, BinlogVersion, EventType};
use mysql_common::binlog::events::Event;
use mysql_common::binlog::EventStreamReader;

use super::wire::{Packet, Wire};
use super::{Result, SourceError};
use crate::decode::frame::{decompress, next_in_payload, CHECKSUM_LEN, HEADER_LEN};

pub struct Dump {
    wire: Wire,
    esr: EventStreamReader,
    /// The rest of the compressed transaction being read.
    payload: Option<Cursor<Vec<u8>>>,
    /// The events after the last format description end with a checksum.
    checksums: bool,
    /// The bytes of the event being read from a payload.
    frame: Vec<u8>,
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
        }
    }

    /// The next event; `None` when the server ended the stream. `silence`: how long the
    /// server may send no byte at all (it sends heartbeats when idle).
    pub async fn next(&mut self, silence: Duration) -> Result<Option<Event>> {
        if let Some(payload) = &mut self.payload {
            let inner = next_in_payload(payload, &mut self.esr, &mut self.frame);
            match inner {
                Ok(Some(event)) => return Ok(Some(event)),
                Ok(None) => self.payload = None,
                Err(e) => {
                    self.payload = None;
                    return Err(damaged(format!("inside a compressed transaction: {e}")));
                }
            }
        }
        let bytes = match self.wire.read_dump_packet(silence).await? {
            Packet::Event(bytes) => bytes,
            Packet::End => return Ok(None),
        };
        let event_type = bytes[4];
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
        // The event holds its own copy: give the packet's memory back before decoding.
        drop(bytes);
        if event_type == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
            self.checksums = !matches!(
                event.footer().get_checksum_alg(),
                Ok(None) | Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_OFF))
            );
        } else if event_type == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            let inner = decompress(&event).map_err(|e| {
                damaged(format!(
                    "the compressed transaction ending at {}: {e}",
                    event.header().log_pos()
                ))
            })?;
            self.payload = Some(Cursor::new(inner));
        }
        Ok(Some(event))
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
