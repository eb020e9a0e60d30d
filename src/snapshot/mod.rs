//! The initial snapshot (issue 12): a table's existing rows, read in chunks by key, each
//! chunk at an exact binlog position, encoded exactly as the binlog decoder encodes the same
//! rows, and injected into the stream where it reaches that position.
//!
//! - [`plan`]: a table's columns, how each becomes JSON, the key chunks are paged by.
//! - [`chunk`]: keyset pagination bounded at both ends, one short consistent-snapshot
//!   transaction per chunk, and the chunk's binlog position.
//! - `encode`: a value from the server to the decoder's JSON text.
//! - [`size`]: the chunk size, adapted to a target time per chunk.
//! - [`runner`]: the snapshot stage (tables in parallel, rate limit, requests, progress lines).
//! - [`handoff`]: how a chunk reaches the source stage (hold, read, inject).
//! - [`progress`]: what the state dir keeps (per-table progress, `seq` rooms, requests).
//! - The injection itself is the decoder's (`decode::inject`): the `read` lines, `seq`.
//!
//! Invariants:
//! - **Same values, same bytes**: a row read here and the same row decoded from the binlog
//!   give byte-identical `after` and `id` objects (`tests/snapshot_values.rs` checks every
//!   type of `decode::value`'s table), so a receiver cannot tell a `read` from an `insert`
//!   of the same row by its values.
//! - **A chunk is a state of the table at a known position**: its rows are exactly the rows
//!   of its key range as of [`chunk::SnapshotPosition`], no earlier, no later. The stream is
//!   held (it decodes no new event) while a chunk is read, so that position is never behind
//!   the stream; the chunk is injected where the stream reaches it, between transactions:
//!   binlog changes before it are older than the chunk's rows, changes after it newer, and
//!   `seq` says so for every id, so the receiver's apply rule needs no special case.
//! - **Bounded**: every chunk query has a lower bound (after the previous chunk's last key;
//!   none for the first), an upper bound (the table's greatest key as of the first chunk)
//!   and a row limit; no lock is taken and no transaction outlives its chunk.
//! - **Resumable, never doubled**: a table's progress moves only with the checkpoint past
//!   its chunk; a chunk's `seq` room is on disk before its first row leaves, so a replay of
//!   the stream gives every binlog operation its first `seq` even when the chunk is read
//!   again (with higher `seq`s, later). A SIGTERM finishes the chunk being injected.
//! - **Converges**: a table's last chunk is followed by `snapshot_end` carrying `since`, the
//!   `seq` before its first chunk: every row the source holds was delivered above it, so a
//!   receiver drops the rows of that type last written below it (deleted while binsync was
//!   away).
//! - **Memory follows the chunk size**: a chunk's rows are encoded into one buffer
//!   ([`chunk::ChunkBuf`]), reused from chunk to chunk, capped by rows and (from the rows
//!   seen so far) bytes; at most `--snapshot-parallel` chunks are out at once.
//! - **Never guessed**: a table with no primary key and no unique NOT NULL key is refused with
//!   [`SnapshotError::NoKey`], which names `--snapshot-key`; a value that does not fit its
//!   column's type fails the chunk naming the column. A DDL that changed the table between
//!   the plan and the chunk's position sends the chunk back to be read under the new plan.
//!
//! # Not yet
//!
//! - MariaDB's INET4, INET6 and UUID columns: the server sends their text, the binlog their
//!   stored bytes (UUID's byte-swapped); a non-NULL value fails the chunk naming the column
//!   ([`plan::Kind::Unsupported`]) until they are selected as their stored bytes and checked
//!   against the decoder. MySQL's VECTOR likewise.
//! - ENUM, SET, BIT, JSON and GEOMETRY key columns are refused
//!   ([`SnapshotError::UnsupportedKey`]); ENUM would page by its index (`col+0`).
//! - MySQL: the position is a GTID set without file and offset, and injecting by GTID set is
//!   not built (the MySQL test double serves no snapshots): `--snapshot initial` on MySQL is
//!   refused, `when-needed` streams without a snapshot and says so. MySQL's JSON text is
//!   minified, not checked against its binlog for doubles and opaque values.

pub mod chunk;
mod encode;
pub mod handoff;
pub mod plan;
pub mod progress;
pub mod runner;
pub mod size;

pub use chunk::{prepare_session, ChunkBuf, ChunkInfo, ChunkReader, RowSpans, SnapshotPosition};
pub use plan::TablePlan;
pub use size::ChunkSizer;

/// Why a table could not be snapshotted. [`SnapshotError::is_transient`] says whether reading
/// the chunk again on a new connection may succeed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{table}: no such table on the source")]
    NoTable { table: String },
    #[error("{table} has no primary key and no unique index over NOT NULL columns, so its snapshot cannot be read in chunks by key; name columns that identify its rows with --snapshot-key {table}=col[,col...], or exclude the table from the snapshot")]
    NoKey { table: String },
    #[error("{table}: its snapshot key column `{column}` is of a type chunks cannot be paged by ({kind}); choose other columns with --snapshot-key {table}=col[,col...]")]
    UnsupportedKey {
        table: String,
        column: String,
        kind: String,
    },
    #[error("{table}.{column}: {detail}")]
    Value {
        table: String,
        column: String,
        detail: String,
    },
    #[error("{table}: a chunk's rows exceed 4 GiB; lower the chunk size")]
    TooLarge { table: String },
    #[error("the source did not report binlog_snapshot_file/binlog_snapshot_position inside a consistent snapshot: is the binlog enabled (log_bin=ON)?")]
    NoSnapshotPosition,
    #[error("reading the snapshot: {0}")]
    Server(#[from] mysql_async::Error),
    #[error("connecting for the snapshot: {detail}")]
    Connect { detail: String, transient: bool },
    #[error("snapshots of MySQL sources are not supported yet (only MariaDB's binlog_snapshot_file/position give a chunk its exact binlog position); run with --snapshot never")]
    MysqlUnsupported,
    #[error("{0}: the state dir's snapshot progress holds a key binsync cannot read; run `binsync snapshot --table {0}` to read the table again from its start")]
    Progress(String),
}

impl SnapshotError {
    /// A lost connection, a server going away, a lock wait or deadlock, a killed query: the
    /// chunk can be read again on a new connection.
    pub fn is_transient(&self) -> bool {
        match self {
            SnapshotError::Connect { transient, .. } => *transient,
            SnapshotError::Server(e) => match e {
                mysql_async::Error::Io(_) => true,
                mysql_async::Error::Driver(_) => true,
                mysql_async::Error::Server(s) => {
                    matches!(s.code, 1053 | 1205 | 1213 | 1317 | 1927 | 2006 | 2013)
                }
                _ => false,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> SnapshotError {
        SnapshotError::Server(mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: String::new(),
            state: String::new(),
        }))
    }

    #[test]
    fn lost_connections_deadlocks_and_killed_queries_are_transient() {
        for code in [1053, 1205, 1213, 1317, 1927, 2013] {
            assert!(server(code).is_transient(), "{code}");
        }
        // A missing privilege or a syntax error stays until someone acts.
        for code in [1142, 1064, 1146] {
            assert!(!server(code).is_transient(), "{code}");
        }
        let no_key = SnapshotError::NoKey {
            table: "d.t".into(),
        };
        assert!(!no_key.is_transient());
        assert!(no_key.to_string().contains("--snapshot-key d.t=col"));
    }
}
