//! Sinks: where chunks go, and the acknowledgements that let the checkpoint move.
//!
//! The seam every sink implements: receive [`Chunk`](crate::change::Chunk)s in order from a bounded channel, make
//! them durable (written and fsynced, or acknowledged by a receiver), then send an [`Ack`]
//! carrying the chunk's resume position, in the same order. The checkpointer trusts an ack
//! completely, so a sink must never ack a chunk it has not delivered. Every sink turns its
//! deliveries into acks through one [`Ledger`], the only maker of [`Ack`]s.

pub mod http;
pub mod ledger;
pub mod lines;
pub mod retry;

use std::path::PathBuf;
use std::str::FromStr;

pub use self::ledger::{Ack, Ledger};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    Stdout,
    File(PathBuf),
    Http(String),
}

impl FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "stdout" || s == "-" {
            Ok(SinkSpec::Stdout)
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(
                    "--sink file: needs a path, e.g. file:/var/lib/binsync/changes.jsonl".into(),
                );
            }
            Ok(SinkSpec::File(PathBuf::from(path)))
        } else if s.starts_with("http://") || s.starts_with("https://") {
            Ok(SinkSpec::Http(s.to_string()))
        } else {
            Err(format!(
                "--sink `{s}`: write stdout, file:PATH or an http(s):// URL"
            ))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write to {target}: {detail}; check the path, its permissions and free space")]
    Write { target: String, detail: String },
    #[error("{0}")]
    Config(String),
    #[error("the sync API rejected batch {batch} ({status}: {detail}); fix the receiver or the data, then restart (or run with --on-reject dlq)")]
    Rejected {
        batch: String,
        status: String,
        detail: String,
    },
}

impl SinkError {
    pub fn is_retriable(&self) -> bool {
        false
    }
}
