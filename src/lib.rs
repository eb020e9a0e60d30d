//! binsync: change-data-capture from the MySQL/MariaDB binlog.
//!
//! The pipeline ([`pipeline`] only wires it; each stage lives with its concern):
//!
//! ```text
//! source::replication ──Chunk──► sink (lines | http) ──Ack, via sink::ledger──► checkpoint::Checkpointer
//!   (source::reader task + decode::Decoder)
//! ```
//!
//! The modules, lowest layer first (`tests/module_graph.rs` keeps them free of import cycles):
//! - [`units`], [`shutdown`], `backoff`, `filter`, `json`: numbers for people; the one stop
//!   signal; the one retry pace (cancellable by shutdown); `--include/--exclude` globs; JSON
//!   text and UTC time written by hand on the hot path.
//! - `gtid`: positions as values: MySQL GTID sets, MariaDB GTID lists, one transaction's GTID
//!   (`apply`, `covers`), MariaDB's raw GTID events.
//! - `checkpoint`: [`Position`], the sled store in `--state-dir`, the `Ack` and the
//!   checkpointer stage: when the checkpoint moves, and what a restart resumes from.
//! - `change`: the unit that flows downstream, a chunk of encoded changes and its resume point.
//! - [`schema`]: the schema history's model (issue 11, being built): tables as their DDL left
//!   them, and DDL read from the binlog applied to them with a SQL parser (`schema::ddl`).
//! - [`decode`]: binlog events to encoded changes: transactions, numbering (`seq`), table
//!   schemas (`decode::schema`), row images to JSON (`decode::value`); the `SchemaLookup` seam.
//! - `source`: the server as a replica sees it: connecting, what the server is, its errors
//!   (transient `Disconnect` or definite `SourceError`, by type), where a
//!   stream starts and ends (`source::start`), opening it (`source::stream`) on binsync's own
//!   replica connection (`source::wire`), reading it on a task of its own (`source::reader`),
//!   the source stage (`source::replication`), failing over by GTID across several
//!   `--source` servers (`source::failover`), preflight checks and information_schema
//!   lookups; TLS to the server for both its connections (`source::tls`).
//! - `dlq`, `sink`: the dead-letter queue; the sinks (`stdout`, `file:`, the HTTP sync API),
//!   their retry policy, and the ordered-ack ledger every sink acknowledges through.
//! - [`snapshot`]: the initial snapshot (issue 12): a table's rows read in chunks by key, each
//!   at its exact binlog position, encoded as the decoder encodes binlog rows, injected into
//!   the stream there as `read` operations (`decode::inject`); a stage of its own beside the
//!   source, which holds the stream while a chunk is read.
//! - [`state`]: `--state nats`: the state dir's store mirrored into JetStream key-value
//!   buckets, and the lease that makes one of several binsync processes the active one.
//! - [`metrics`]: what the stages report about themselves (counters, lag, health), served as
//!   Prometheus text with `/healthz` and `/readyz` (`--metrics-listen`) and published in
//!   `run-status.json` for `binsync status`; it uses no other module, so every stage may call it.
//! - [`config`]: flags and the TOML file, resolved once into each component's settings.
//! - [`error`]: the library's error, transient or definite.
//! - [`pipeline`] (`binsync run`), [`replay`], [`commands`] (`check`, `status`, `dlq`): the
//!   commands. [`alloc`]: malloc settings the binary applies at start-up.
//!
//! The reference sync API receiver (`binsync receive`) is its own crate, `binsync-receiver`.

// The public surface: what the binary and the integration tests use.
pub mod alloc;
pub mod commands;
pub mod config;
pub mod decode;
pub mod metrics;
pub mod pipeline;
pub mod replay;
pub mod schema;
pub mod shutdown;
pub mod snapshot;
pub mod state;
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
/// The information_schema side of the decoder's `SchemaLookup` seam, and the source settings it
/// connects with (tested against real servers in `tests/lookup_mariadb.rs`).
pub use source::{lookup::InfoSchemaLookup, SourceConfig};
