//! The library's error, in two kinds decided where an error arises, as types:
//!
//! - [`Error::Transient`]: retrying can heal it (a dropped connection, a restarting server).
//!   The source stage reconnects with [`crate::backoff::Backoff`] and resumes from the
//!   decoder's own position; nothing is lost or read twice into the sink.
//! - [`Error::Definite`]: a person must act. binsync stops with one line that names the fix
//!   and a non-zero exit; the checkpoint stays where the last delivered change put it.
//!
//! Each stage owns the enum of its own causes ([`crate::source::SourceError`],
//! [`crate::sink::SinkError`], ...); the `From` impls below put each into its kind once.

use crate::checkpoint::{CheckpointError, DiskFull};
use crate::config::ConfigError;
use crate::decode::StreamError;
use crate::dlq::DlqError;
use crate::metrics::MetricsError;
use crate::sink::SinkError;
use crate::source::{Disconnect, Failure, SourceError};
use crate::units::OutputError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Retrying can heal it.
    #[error(transparent)]
    Transient(#[from] Transient),
    /// A person must act; the message names the fix.
    #[error(transparent)]
    Definite(#[from] Definite),
}

#[derive(Debug, thiserror::Error)]
pub enum Transient {
    #[error(transparent)]
    Source(#[from] Disconnect),
    /// No space or quota left on the state dir's or the file sink's disk: `run` waits for
    /// space and resumes from the last checkpoint saved.
    #[error(transparent)]
    DiskFull(#[from] DiskFull),
}

#[derive(Debug, thiserror::Error)]
pub enum Definite {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Dlq(#[from] DlqError),
    /// `--metrics-listen` cannot be served (the address is taken, say).
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// An archived binlog file cannot be replayed (unreadable, damaged); names file and offset.
    #[error("{0}")]
    Replay(String),
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A command's arguments do not fit what it found (no such dead letter, say).
    #[error("{0}")]
    Usage(String),
    /// A stage ended abnormally (a panic); the checkpoint is before anything it held.
    #[error("the {stage} stage failed: {detail}; this is a bug in binsync, please report it")]
    Stage { stage: &'static str, detail: String },
}

macro_rules! into_kind {
    ($kind:ident: $($t:ty),*) => {
        $(impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::$kind(e.into())
            }
        })*
    };
}
into_kind!(Transient: Disconnect, DiskFull);
into_kind!(Definite: ConfigError, SourceError, StreamError, OutputError, MetricsError);

// A full disk is transient whichever stage met it.
impl From<CheckpointError> for Error {
    fn from(e: CheckpointError) -> Error {
        match e {
            CheckpointError::DiskFull(full) => full.into(),
            e => Error::Definite(e.into()),
        }
    }
}

impl From<DlqError> for Error {
    fn from(e: DlqError) -> Error {
        match e {
            DlqError::DiskFull(full) => full.into(),
            e => Error::Definite(e.into()),
        }
    }
}

impl From<SinkError> for Error {
    fn from(e: SinkError) -> Error {
        match e {
            SinkError::DiskFull(full) => full.into(),
            SinkError::Dlq(e) => e.into(),
            e => Error::Definite(e.into()),
        }
    }
}

impl From<Failure> for Error {
    fn from(e: Failure) -> Error {
        match e {
            Failure::Transient(e) => e.into(),
            Failure::Definite(e) => e.into(),
            Failure::State(e) => e.into(),
        }
    }
}

impl Error {
    /// stdout's reader went away (`| head`): not a failure of the command.
    pub fn is_closed_output(&self) -> bool {
        matches!(
            self,
            Error::Definite(
                Definite::Output(OutputError::Closed) | Definite::Sink(SinkError::StdoutClosed)
            )
        )
    }

    /// The disk under the state dir or the file sink is full (see [`DiskFull`]).
    pub fn disk_full(&self) -> Option<&DiskFull> {
        match self {
            Error::Transient(Transient::DiskFull(full)) => Some(full),
            _ => None,
        }
    }

    pub fn usage(msg: impl Into<String>) -> Error {
        Definite::Usage(msg.into()).into()
    }

    pub fn replay(msg: impl Into<String>) -> Error {
        Definite::Replay(msg.into()).into()
    }

    /// A task of `stage` panicked or was cancelled.
    pub fn stage(stage: &'static str, e: impl std::fmt::Display) -> Error {
        Definite::Stage {
            stage,
            detail: e.to_string(),
        }
        .into()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_transient_from_every_stage() {
        let full = || DiskFull {
            dir: "/state".into(),
            detail: "No space left on device".into(),
        };
        let errors: [Error; 4] = [
            CheckpointError::DiskFull(full()).into(),
            DlqError::DiskFull(full()).into(),
            SinkError::DiskFull(full()).into(),
            SinkError::Dlq(DlqError::DiskFull(full())).into(),
        ];
        for e in errors {
            assert!(e.disk_full().is_some(), "{e:?}");
            let text = e.to_string();
            assert!(text.contains("free space on /state"), "{text}");
            assert!(!text.contains("--reset"), "{text}");
        }
        let other: Error = CheckpointError::Write {
            dir: "/state".into(),
            detail: "EIO".into(),
        }
        .into();
        assert!(other.disk_full().is_none());
    }
}
