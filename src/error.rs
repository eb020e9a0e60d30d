//! The library's error: one variant per stage, each knowing whether it can heal by retrying.

use crate::checkpoint::CheckpointError;
use crate::config::ConfigError;
use crate::decode::StreamError;
use crate::sink::SinkError;
use crate::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error("{0}")]
    Replay(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Source(e) => e.is_retriable(),
            Error::Checkpoint(e) => e.is_retriable(),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
