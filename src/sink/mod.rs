//! Sinks: where chunks go, and the acknowledgements that let the checkpoint move.
//!
//! The seam every sink implements: receive [`Chunk`]s in order from a bounded channel, make
//! them durable (written and fsynced, or acknowledged by a receiver), then send an [`Ack`]
//! carrying the chunk's resume position, in the same order. The checkpointer trusts an ack
//! completely, so a sink must never ack a chunk it has not delivered.

pub mod http;
pub mod lines;
pub mod retry;

use std::path::PathBuf;
use std::str::FromStr;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::http::batch::SourceHeader;
use self::http::HttpConfig;
use crate::change::Chunk;
use crate::checkpoint::{Position, Store};
use crate::dlq::Dlq;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::source::ServerInfo;

/// Which sink, with its settings.
#[derive(Debug, Clone)]
pub enum SinkSpec {
    Stdout,
    File(PathBuf),
    /// The sync API (boxed: its settings are much larger than the other variants).
    Http(Box<HttpConfig>),
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
            Ok(SinkSpec::Http(Box::new(HttpConfig::new(s.to_string()))))
        } else {
            Err(format!(
                "--sink `{s}`: write stdout, file:PATH or an http(s):// URL"
            ))
        }
    }
}

/// A chunk (and every one before it) is delivered.
#[derive(Debug, Clone)]
pub struct Ack {
    pub position: Option<Position>,
    pub changes: usize,
    pub at_end: bool,
}

impl Ack {
    pub fn for_chunk(c: &Chunk) -> Ack {
        Ack {
            position: c.position.clone(),
            changes: c.changes.len(),
            at_end: c.at_end,
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

/// Starts the sink task for `spec`: it takes chunks from `rx` and sends their acks, in
/// order, to `acks`.
pub fn spawn(
    spec: &SinkSpec,
    store: &Store,
    info: &ServerInfo,
    rx: mpsc::Receiver<Chunk>,
    acks: mpsc::Sender<Ack>,
    shutdown: &Shutdown,
) -> Result<JoinHandle<Result<()>>> {
    Ok(match spec {
        SinkSpec::Http(cfg) => {
            let cfg = (**cfg).clone();
            let dlq = Dlq::open(store)?;
            let header = SourceHeader::new(&info.identity);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                http::run(cfg, header, dlq, rx, acks, shutdown)
                    .await
                    .map_err(Error::from)
            })
        }
        lines => {
            let spec = lines.clone();
            tokio::task::spawn_blocking(move || {
                lines::run_blocking(spec, rx, acks).map_err(Error::from)
            })
        }
    })
}
