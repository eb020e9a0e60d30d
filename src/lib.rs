//! binsync: change-data-capture from the MySQL/MariaDB binlog.
//!
//! The pipeline, and the module that owns each part:
//!
//! ```text
//! source ──► decode ──► (Chunk) ──► sink ──► (Ack) ──► checkpoint
//! ```
//!
//! - [`source`]: the server as a replica sees it: connecting with retries ([`source::SourceConfig`]),
//!   what the server is ([`source::ServerInfo`]), error classification (retriable or not),
//!   opening the binlog stream in its GTID dialect ([`source::stream`]), reading it on a task
//!   of its own ([`source::reader`]), preflight checks
//!   ([`source::preflight`]) and information_schema lookups ([`source::lookup`]).
//! - [`gtid`]: positions as values: MySQL GTID sets, MariaDB GTID lists, MariaDB's raw events.
//! - [`decode`]: binlog events to encoded changes: transaction boundaries, numbering (`seq`),
//!   table schemas ([`decode::schema`]) and row images to JSON ([`decode::value`]).
//! - [`change`]: the unit that flows downstream: a chunk of encoded changes and its resume point.
//! - [`sink`]: where changes go (`stdout`, `file:`, the HTTP sync API), the acknowledgement
//!   seam, retry policy; [`dlq`] keeps the batches the sync API rejected.
//! - [`checkpoint`]: the sled store in `--state-dir`: where a restart resumes.
//! - [`pipeline`]: `binsync run`, the stages wired with bounded channels.
//! - [`replay`]: archived binlog files through the same decoder.
//! - [`config`], [`start`], [`filter`]: flags, the TOML file, `--start`, `--include/--exclude`.
//! - [`commands`]: `check`, `status` and `dlq`.
//! - [`json`]: JSON text and UTC time, written by hand on the hot path (the decoder's and the
//!   sinks' shared escaping, number formatting and timestamps).
//! - [`error`], [`units`]: the library's error type; numbers for people. [`alloc`]: malloc
//!   settings the binary applies at start-up.

// The public surface: what the binary and the integration tests use.
pub mod alloc;
pub mod commands;
pub mod config;
pub mod decode;
pub mod pipeline;
pub mod replay;
pub mod shutdown;
pub mod units;

pub(crate) mod backoff;
pub(crate) mod change;
pub(crate) mod checkpoint;
pub(crate) mod dlq;
pub mod error;
pub(crate) mod filter;
pub(crate) mod gtid;
pub(crate) mod json;
pub(crate) mod sink;
pub(crate) mod source;

pub use checkpoint::Position;
pub use error::{Error, Result};
