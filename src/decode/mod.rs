//! From binlog events to encoded row changes.
//!
//! [`Decoder`] follows the event stream of one connection (or one archived file): rotations,
//! transaction boundaries (GTID events, BEGIN, XID/COMMIT, standalone DDL, XA groups up to
//! their prepare: see `on_query`), table maps and row events. It assigns every row change its
//! `seq`, encodes it as one JSON object into the current [`Chunk`], and stamps each chunk
//! with the position a restart may resume from.
//!
//! Invariants:
//! - A chunk's position is either a commit boundary or, inside a large transaction, the
//!   transaction's start plus the number of its rows already in earlier chunks.
//! - Numbering is deterministic: replaying from a checkpoint gives every row the same `seq`
//!   and `row` as the first time (rows before the checkpoint are decoded, numbered and
//!   dropped), given the same `--include`/`--exclude` (rows of excluded tables are not counted).
//! - An update that changes the primary key becomes a delete of the old id and an insert of
//!   the new one, so an entity id never silently moves.
//! - Rows are written straight from the row image into the chunk's buffer (see
//!   [`value::decode_image`]); nothing per column is allocated.
//! - What the binlog does not say about a table (names without `binlog_row_metadata=FULL`,
//!   MariaDB's JSON columns) comes from a [`SchemaLookup`]. A failed lookup fails the table map
//!   with [`StreamError::Lookup`] and is not cached, so the retry after a reconnect asks again:
//!   a failure never turns into positional column names.

pub mod fit;
pub(crate) mod frame;
pub mod inject;
pub mod schema;
pub mod value;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bitvec::slice::BitSlice;
use futures_util::future::BoxFuture;
use mysql_common::binlog::consts::EventType;
use mysql_common::binlog::events::{
    Event, EventData, GtidEvent, QueryEvent, RotateEvent, RowsEventData, TableMapEvent,
};

use crate::change::{Change, Chunk, Op};
use crate::checkpoint::{Partial, Position};
use crate::filter::{DdlAction, Filter, OnDdl};
use crate::gtid::mariadb as maria;
use crate::gtid::mysql::format_uuid;
use crate::gtid::{Flavor, Gtid, GtidPos, GtidSet, MysqlGtid};
use crate::json::{format_utc_micros, push_u64, write_json_str};
use schema::{DecodeError, ExtraSchema, TableSchema};

/// What the decoder needs from the server when the binlog alone is not enough.
pub trait SchemaLookup: Send {
    /// Column names, primary key and JSON columns of `db.table`, from information_schema;
    /// `Ok(None)` when the server shows no such table (dropped or renamed since the change,
    /// or hidden from the binsync user, who lacks privileges on it).
    fn lookup<'a>(
        &'a mut self,
        db: &'a str,
        table: &'a str,
    ) -> BoxFuture<'a, Result<Option<ExtraSchema>, LookupError>>;
}

/// Why information_schema could not be read for a table. The decoder neither caches it nor
/// falls back to positional column names: it fails the table map with
/// [`StreamError::Lookup`], and a retry reads the table map, so asks again.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The connection was lost, the server is restarting or has no connection to spare:
    /// reconnecting and reading again from the decoder's resume position may succeed.
    #[error("reading information_schema for {table} failed: {detail}")]
    Transient { table: String, detail: String },
    /// Asking again will fail again (e.g. a privilege is missing): `fix` says what to change.
    #[error("reading information_schema for {table} failed: {detail}; {fix}")]
    Definite {
        table: String,
        detail: String,
        fix: &'static str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    Row(#[from] DecodeError),
    /// information_schema could not be read for a table the binlog does not fully describe.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("rows event for table id {0} without a preceding table map event: the binlog is damaged or was cut mid-transaction")]
    UnknownTable(u64),
    #[error("malformed {what} event at {file}:{offset}: {detail}")]
    Malformed {
        what: String,
        file: String,
        offset: u64,
        detail: String,
    },
    #[error("compressed binlog event (MariaDB log_bin_compress) at {file}:{offset}: not supported; set log_bin_compress=OFF on the source")]
    Compressed { file: String, offset: u64 },
    /// The schema history cannot describe a table's rows (its version does not fit the table
    /// map, it does not know the table, or a DDL on it could not be read): never guessed.
    #[error("{table} in the transaction at {file}:{offset}: {detail}; binsync will not guess column names: set binlog_row_metadata=FULL on the source and start again from before this position, or give the history the table as it was here: `binsync schema refresh --table {table}` reads it from the source now (right only if no DDL changed it since this position), and replay takes --schema-from a server or a file of CREATE TABLE statements")]
    SchemaHistory {
        table: String,
        file: String,
        offset: u64,
        detail: String,
    },
    /// `--on-ddl ... stop` for a table a DDL statement touches: nothing of it is delivered.
    #[error("{table}: a DDL statement at {file}:{offset} ({statement}) and --on-ddl says stop for this table; the checkpoint stays before it. Prepare the receiver for the change, then start again with --on-ddl {table}=emit (deliver it as a ddl operation) or --on-ddl {table}=ignore")]
    DdlStop {
        table: String,
        file: String,
        offset: u64,
        statement: String,
    },
}

#[derive(Debug, Clone)]
pub struct DecodeConfig {
    pub filter: Filter,
    /// `db.table` -> entity type name.
    pub entities: HashMap<String, String>,
    /// A chunk is handed on once it holds this many changes...
    pub chunk_rows: usize,
    /// ...or this many bytes.
    pub chunk_bytes: usize,
    /// MariaDB SEQUENCE objects (`db.table`) known at start: their row events (NEXTVAL) are no
    /// entity's changes, so they are skipped unless an `--include` names them exactly. Ones
    /// created later are learnt from their CREATE SEQUENCE statement.
    pub sequences: HashSet<String>,
    /// What a DDL statement on a captured table becomes (`--on-ddl`).
    pub on_ddl: OnDdl,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            filter: Filter::default(),
            entities: HashMap::new(),
            chunk_rows: 2048,
            chunk_bytes: 1 << 20,
            sequences: HashSet::new(),
            on_ddl: OnDdl::default(),
        }
    }
}

struct TableInfo {
    schema: TableSchema,
    entity: Arc<str>,
    included: bool,
    /// `"db":"..","table":"..","entity":"..",`
    meta_json: Box<[u8]>,
    /// Bytes usually enough for the key's JSON (see [`Decoder::row_in_place`]).
    key_room: usize,
    /// Bytes always enough for `,"changed":[...]` naming every column.
    changed_room: usize,
    /// The raw table map, to reuse this entry when the same map comes again (every transaction).
    raw: Box<[u8]>,
    /// Built before `emit_from` from a map the history could not name: its rows are not
    /// emitted; one that is (a start inside a transaction) meets this refusal instead.
    deferred: Option<Deferred>,
}

/// A table map's refusal kept for its first emitted row (see `TableInfo::deferred`).
#[derive(Debug, Clone)]
struct Deferred {
    table: String,
    file: String,
    offset: u64,
    detail: String,
}

struct Txn {
    /// GTID text, or `file:offset` of its start without GTIDs.
    id: String,
    gtid: Option<Gtid>,
    /// `"gtid":"..","ts":"..",`
    meta_json: Box<[u8]>,
    next_row: u64,
    /// Rows below this index were delivered before a restart: numbered and dropped.
    skip_below: u64,
    explicit: bool,
}

pub struct Decoder {
    cfg: Arc<DecodeConfig>,
    lookup: Option<Box<dyn SchemaLookup>>,
    tables: HashMap<u64, Arc<TableInfo>>,
    extra_cache: HashMap<(String, String), Option<Arc<ExtraSchema>>>,
    /// Last commit boundary: where a restart resumes.
    boundary: Position,
    /// Current binlog file, as `"file":"..",`.
    file_json: Vec<u8>,
    /// Set when the stream starts at the head of a file and the GTID state must be taken
    /// from that file's PREVIOUS_GTIDS / GTID_LIST event.
    gtid_from_file_header: Option<Flavor>,
    /// While set, events are followed (positions, GTIDs) but no row is emitted: the stream
    /// was opened at the head of `file` to learn the GTID state of a later `offset`.
    emit_from: Option<(String, u64)>,
    resume: Option<Partial>,
    txn: Option<Txn>,
    seq: u64,
    /// Offset after a MySQL TRANSACTION_PAYLOAD event whose inner events carry no positions.
    payload_end: Option<u64>,
    chunk: Chunk,
    position_dirty: bool,
    /// Offset in the boundary's file just past the last event read (events with a position of
    /// their own). Ahead of the boundary over events that are no transaction (a file's header
    /// events); `--exit-at-end` compares it with its target, since a newest file that holds
    /// no transaction yet never moves the boundary to its end.
    read_to: u64,
    img_a: Vec<u8>,
    img_b: Vec<u8>,
    spans_a: Vec<Option<(u32, u32)>>,
    spans_b: Vec<Option<(u32, u32)>>,
    scratch: Vec<u8>,
    /// A line's head, built before it is put in front of its images (`row_in_place`).
    head: Vec<u8>,
    warned_statements: bool,
    warned_no_metadata: bool,
    /// SEQUENCE objects created while streaming (see [`DecodeConfig::sequences`]).
    sequences: HashSet<String>,
    /// Whether the binlog was written by MariaDB (from the format description event), which
    /// counts YEAR columns in the signedness metadata where MySQL does not.
    mariadb_writer: Option<bool>,
    /// The schema history's catalog as of the stream's position (issue 11), when one is kept:
    /// tables without FULL metadata are decoded with their version, checked against each
    /// table map, and DDL read from the stream advances it. Without it, information_schema.
    history: Option<crate::schema::Catalog>,
    /// The catalog before the first DDL of the open transaction (`CREATE TABLE ... SELECT`
    /// is a DDL inside one): a restart reads that transaction again, DDL included.
    history_before_txn: Option<crate::schema::Catalog>,
    /// Captured tables whose definition here is unknown (changed between the stream's start
    /// and the history's seed, see `source::schema_seed`): their rows without FULL metadata
    /// are a definite error, and DDL on them that cannot be followed is passed over.
    unknown: HashSet<(String, String)>,
    /// Seed versions that hold from the end of a DDL statement on.
    pending: Vec<crate::schema::Pending>,
    /// The history does not claim to know every table (`replay`): a table it lacks is
    /// unknown, not a DDL it failed to follow.
    open_world: bool,
    /// Where the last transaction decoded committed: a snapshot chunk read before it is
    /// stale (see `inject`).
    last_commit: (String, u64),
    /// `seq` rooms of snapshot chunks injected by an earlier run (see `inject`).
    reserved: Vec<inject::Reservation>,
    /// The snapshot chunk being injected (see `inject`).
    injecting: Option<inject::Injecting>,
    /// The entity types the open transaction has emitted changes of (see
    /// `Chunk::txn_firsts`).
    txn_entities: Vec<Arc<str>>,
}

impl Decoder {
    /// `start` is where the stream begins; `gtid_from_file_header` asks to learn the GTID state
    /// from the first file's header event (streams opened at the head of a file).
    pub fn new(
        cfg: Arc<DecodeConfig>,
        start: Position,
        gtid_from_file_header: Option<Flavor>,
        emit_from: Option<(String, u64)>,
        lookup: Option<Box<dyn SchemaLookup>>,
    ) -> Self {
        let last_commit = (start.file.clone(), start.offset);
        let mut d = Decoder {
            cfg,
            lookup,
            tables: HashMap::new(),
            extra_cache: HashMap::new(),
            resume: start.partial.clone(),
            seq: start.seq,
            boundary: Position {
                partial: None,
                ..start
            },
            file_json: Vec::new(),
            gtid_from_file_header,
            emit_from,
            txn: None,
            payload_end: None,
            chunk: Chunk::default(),
            position_dirty: false,
            read_to: 0,
            img_a: Vec::new(),
            img_b: Vec::new(),
            spans_a: Vec::new(),
            spans_b: Vec::new(),
            scratch: Vec::new(),
            head: Vec::new(),
            warned_statements: false,
            warned_no_metadata: false,
            sequences: HashSet::new(),
            mariadb_writer: None,
            history: None,
            history_before_txn: None,
            unknown: HashSet::new(),
            pending: Vec::new(),
            open_world: false,
            last_commit,
            reserved: Vec::new(),
            injecting: None,
            txn_entities: Vec::new(),
        };
        d.set_file(d.boundary.file.clone());
        d
    }

    /// Decodes with this catalog as the schema history (see the `history` field).
    pub fn with_history(mut self, catalog: crate::schema::Catalog) -> Self {
        self.history = Some(catalog);
        self
    }

    /// Tables whose definition at the stream's start is unknown, and the seed versions that
    /// hold from a DDL statement on (see `source::schema_seed::Seed`).
    pub fn with_seed_gaps(
        mut self,
        unknown: impl IntoIterator<Item = (String, String)>,
        pending: Vec<crate::schema::Pending>,
    ) -> Self {
        self.unknown.extend(unknown);
        self.pending = pending;
        self
    }

    /// Decodes with `catalog` as a partial history (see `open_world`): what `replay` knows
    /// from `--schema-from` (if given) and the DDL in its files.
    pub fn with_partial_history(mut self, catalog: crate::schema::Catalog) -> Self {
        self.history = Some(catalog);
        self.open_world = true;
        self
    }

    /// The history's catalog as of the stream's position, if one is kept.
    pub fn history(&self) -> Option<&crate::schema::Catalog> {
        self.history.as_ref()
    }

    pub fn position(&self) -> &Position {
        &self.boundary
    }

    /// Offset just past the last event read in [`Decoder::position`]'s file (see `read_to`).
    pub fn read_to(&self) -> u64 {
        self.read_to.max(self.boundary.offset)
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// An archived file begins (files do not start with a rotate event).
    pub fn start_file(&mut self, name: &str) {
        self.set_file(name.to_string());
        self.boundary.offset = 4;
        self.read_to = 4;
        self.txn = None;
    }

    /// The stream goes on from another server of the topology (a failover, by GTID): the
    /// file and offset named the old server's binlog and mean nothing on the new one. They
    /// stay empty until the new stream names its file (its first event, a rotate); the GTID
    /// position, `seq` and a transaction's delivered rows carry over. Call after
    /// [`Decoder::restart`].
    pub fn forget_file(&mut self) {
        self.set_file(String::new());
        self.boundary.offset = 0;
        self.read_to = 0;
    }

    fn set_file(&mut self, file: String) {
        self.file_json.clear();
        self.file_json.extend_from_slice(b"\"file\":");
        write_json_str(&mut self.file_json, file.as_bytes());
        self.file_json.push(b',');
        self.boundary.file = file;
    }

    /// The chunk so far, if it is full, or if `idle` and it holds anything worth handing on
    /// (changes, or a position that moved).
    pub fn take_chunk(&mut self, idle: bool) -> Option<Chunk> {
        let full = self.chunk.changes.len() >= self.cfg.chunk_rows
            || self.chunk.buf.len() >= self.cfg.chunk_bytes;
        let worth = !self.chunk.changes.is_empty() || self.position_dirty;
        if !(full || (idle && worth)) {
            return None;
        }
        // The next chunk's buffer is sized up front: growing it by doubling would copy it.
        let fresh = Chunk {
            buf: Vec::with_capacity(if full {
                self.cfg.chunk_bytes + (64 << 10)
            } else {
                4096
            }),
            ..Chunk::default()
        };
        let mut chunk = std::mem::replace(&mut self.chunk, fresh);
        chunk.position = Some(self.resume_position());
        self.position_dirty = false;
        Some(chunk)
    }

    /// Marks the chunk in progress as ending at the server's binlog end.
    pub fn mark_at_end(&mut self) {
        self.chunk.at_end = true;
        self.position_dirty = true;
    }

    /// Forgets the transaction in progress so the stream can be reopened; returns where to
    /// reopen it. The rows of that transaction already handed on are skipped when it comes
    /// again. Call after the current chunk was taken.
    pub fn restart(&mut self) -> Position {
        let pos = self.resume_position();
        self.resume = pos.partial.clone();
        self.txn = None;
        if let Some(before) = self.history_before_txn.take() {
            self.history = Some(before);
        }
        self.seq = self.boundary.seq;
        self.payload_end = None;
        pos
    }

    /// Where a restart resumes after everything decoded so far is delivered.
    fn resume_position(&self) -> Position {
        if let Some(seq) = self.injecting_seq_before() {
            // Inside a snapshot chunk: a restart resumes before it and skips its room.
            return Position {
                seq,
                partial: None,
                ..self.boundary.clone()
            };
        }
        if self.txn.is_none() {
            if let Some(p) = &self.resume {
                // The checkpoint's transaction has not come again yet: keep its progress.
                return Position {
                    partial: Some(p.clone()),
                    ..self.boundary.clone()
                };
            }
        }
        match &self.txn {
            Some(t) if t.next_row > 0 => Position {
                partial: Some(Partial {
                    txn: t.id.clone(),
                    next_row: t.next_row,
                    seq: self.seq,
                }),
                ..self.boundary.clone()
            },
            _ => self.boundary.clone(),
        }
    }

    fn emitting(&mut self, event_end: u64) -> bool {
        match &self.emit_from {
            None => true,
            Some((file, offset)) => {
                if *file == self.boundary.file && event_end <= *offset {
                    false
                } else {
                    self.emit_from = None;
                    true
                }
            }
        }
    }

    /// Follows one event: its kind chooses the handler below; the kinds not listed there only
    /// move the position.
    pub async fn on_event(&mut self, ev: &Event) -> Result<(), StreamError> {
        let header = ev.header();
        let raw_type = header.event_type_raw();
        // Inner events of a MySQL compressed transaction carry log_pos 0.
        let log_pos = match header.log_pos() {
            0 => self.payload_end.unwrap_or(self.boundary.offset),
            pos => u64::from(pos),
        };
        if self.txn.is_none() && !self.reserved.is_empty() {
            self.apply_reservations();
        }
        // (Not heartbeats: their position may name events the server skipped, not sent.)
        if header.log_pos() != 0 && !matches!(raw_type, HEARTBEAT_EVENT | HEARTBEAT_EVENT_V2) {
            self.read_to = self.read_to.max(log_pos);
        }
        match raw_type {
            maria::GTID_EVENT => return self.on_mariadb_gtid(ev, log_pos),
            maria::GTID_LIST_EVENT => return self.on_gtid_list(ev, log_pos),
            maria::ANNOTATE_ROWS_EVENT
            | maria::BINLOG_CHECKPOINT_EVENT
            | maria::START_ENCRYPTION_EVENT => return Ok(()),
            maria::FIRST_COMPRESSED_EVENT..=maria::LAST_COMPRESSED_EVENT => {
                return Err(StreamError::Compressed {
                    file: self.boundary.file.clone(),
                    offset: log_pos,
                })
            }
            FORMAT_DESCRIPTION_EVENT => {
                self.on_format_description(ev);
                return Ok(());
            }
            PREVIOUS_GTIDS_EVENT => return self.on_previous_gtids(ev, log_pos),
            TRANSACTION_PAYLOAD_EVENT => {
                // A MySQL compressed transaction: its events follow, without positions of
                // their own. (The reader decompresses it; its body is not needed here.)
                self.payload_end = Some(log_pos);
                return Ok(());
            }
            XID_EVENT => {
                // Its body (the XA id) is not needed: the event is the commit.
                self.commit(log_pos)?;
                return Ok(());
            }
            XA_PREPARE_LOG_EVENT => {
                // The end of an XA transaction's group (MySQL, MariaDB 10.5+): what a replica
                // applies, and so what binsync delivers (see `on_query`). Also MySQL's
                // `XA COMMIT ... ONE PHASE`, which it logs as a prepare with a flag.
                self.commit(log_pos)?;
                return Ok(());
            }
            // Parsing what we do not use would only cost time.
            t if !NEEDED_EVENTS.contains(&t) => return Ok(()),
            _ => {}
        }
        let data = ev.read_data().map_err(|e| {
            let what = match header.event_type() {
                Ok(t) => format!("{t:?}"),
                Err(_) => format!("type {raw_type}"),
            };
            self.malformed(&what, log_pos, e)
        })?;
        let ts = header.timestamp();
        match data {
            Some(EventData::RotateEvent(r)) => self.on_rotate(ev, &r),
            Some(EventData::GtidEvent(g)) => self.on_mysql_gtid(&g, ts),
            Some(EventData::AnonymousGtidEvent(_)) => self.on_anonymous_gtid(ts),
            Some(EventData::QueryEvent(q)) => self.on_query(&q, ts, log_pos)?,
            Some(EventData::TableMapEvent(tme)) => self.on_table_map(ev.data(), &tme).await?,
            Some(EventData::RowsEvent(rows)) => self.on_rows(&rows, raw_type, log_pos)?,
            _ => {}
        }
        Ok(())
    }

    /// MariaDB's GTID event opens a transaction, or is a statement of its own (DDL).
    fn on_mariadb_gtid(&mut self, ev: &Event, log_pos: u64) -> Result<(), StreamError> {
        let header = ev.header();
        let g = maria::parse_gtid_event(ev.data(), header.server_id())
            .map_err(|e| self.malformed("GTID", log_pos, e))?;
        self.begin_txn(
            Some(Gtid::Mariadb(g.gtid)),
            i64::from(header.timestamp()) * 1_000_000,
        );
        if let Some(t) = self.txn.as_mut() {
            t.explicit = !g.standalone();
        }
        Ok(())
    }

    /// MariaDB's GTID_LIST event heads every binlog file: the GTID state before the file,
    /// which is where a stream opened at the head of a file starts.
    fn on_gtid_list(&mut self, ev: &Event, log_pos: u64) -> Result<(), StreamError> {
        let list = maria::parse_gtid_list_event(ev.data())
            .map_err(|e| self.malformed("GTID_LIST", log_pos, e))?;
        // (The server also sends one of its own, with log_pos 0, when a stream opens.)
        if self.gtid_from_file_header == Some(Flavor::Mariadb) && ev.header().log_pos() != 0 {
            self.boundary.gtid = Some(GtidPos::Mariadb(list));
            self.gtid_from_file_header = None;
        }
        Ok(())
    }

    /// Which server wrote the binlog: MariaDB counts YEAR columns in the signedness metadata
    /// of table maps, MySQL does not.
    fn on_format_description(&mut self, ev: &Event) {
        // binlog version (2 bytes), then the server version, NUL-padded to 50 bytes.
        if let Some(version) = ev.data().get(2..52) {
            self.mariadb_writer = Some(version.windows(7).any(|w| w == b"MariaDB"));
        }
    }

    /// The stream goes on in another file (and, first of all, names the one it starts in).
    fn on_rotate(&mut self, ev: &Event, r: &RotateEvent<'_>) {
        let name = rotate_name(ev, r.name_raw());
        if name != self.boundary.file {
            tracing::debug!(file = %name, offset = r.position(), "next binlog file");
            self.set_file(name);
            self.boundary.offset = r.position();
            self.read_to = r.position();
            self.position_dirty = true;
        }
    }

    /// MySQL's GTID event opens a transaction; its time is the commit time on the source
    /// (in microseconds where the server says so).
    fn on_mysql_gtid(&mut self, g: &GtidEvent, header_ts: u32) {
        let gtid = MysqlGtid {
            uuid: format_uuid(&g.sid()),
            tag: g.tag().map(|t| t.as_str().to_string()).unwrap_or_default(),
            gno: g.gno(),
        };
        let ts = match g.immediate_commit_timestamp() {
            0 => i64::from(header_ts) * 1_000_000,
            us => us as i64,
        };
        self.begin_txn(Some(Gtid::Mysql(gtid)), ts);
    }

    /// MySQL with GTIDs off still marks where each transaction starts.
    fn on_anonymous_gtid(&mut self, header_ts: u32) {
        self.begin_txn(None, i64::from(header_ts) * 1_000_000);
    }

    /// MySQL's PREVIOUS_GTIDS event heads every binlog file: the GTID set before the file,
    /// which is where a stream opened at the head of a file starts.
    fn on_previous_gtids(&mut self, ev: &Event, log_pos: u64) -> Result<(), StreamError> {
        let set = GtidSet::parse_previous_gtids(ev.data())
            .map_err(|e| self.malformed("PREVIOUS_GTIDS_EVENT", log_pos, e))?;
        if self.gtid_from_file_header == Some(Flavor::Mysql) {
            self.boundary.gtid = Some(GtidPos::Mysql(set));
            self.gtid_from_file_header = None;
        }
        Ok(())
    }

    /// BEGIN opens a transaction and COMMIT or ROLLBACK ends it; any other statement outside
    /// an explicit transaction (DDL) is a transaction of its own. A statement inside one is a
    /// change logged as SQL (binlog_format=STATEMENT or MIXED), which is not captured.
    ///
    /// XA transactions are logged in two groups, each with a GTID of its own: `XA START xid`
    /// (MySQL; MariaDB 10.5+ puts it in the GTID event), the rows, `XA END xid` and an
    /// XA_PREPARE event, which ends the first; then `XA COMMIT xid` or `XA ROLLBACK xid`
    /// alone. The first group is the transaction (its GTID, its time, the checkpoint moving
    /// only at its prepare), as a replica applies it; the second a transaction without rows.
    /// An XA rolled back after its prepare was delivered at the prepare: a warning names it.
    fn on_query(
        &mut self,
        q: &QueryEvent<'_>,
        header_ts: u32,
        log_pos: u64,
    ) -> Result<(), StreamError> {
        let sql = q.query_raw();
        let first = first_word(sql);
        let xa = first
            .eq_ignore_ascii_case(b"XA")
            .then(|| first_word(&sql.trim_ascii_start()[2..]));
        let xa_is = |word: &[u8]| xa.is_some_and(|w| w.eq_ignore_ascii_case(word));
        if first.eq_ignore_ascii_case(b"BEGIN") || xa_is(b"START") || xa_is(b"BEGIN") {
            if self.txn.is_none() {
                self.begin_txn(None, i64::from(header_ts) * 1_000_000);
            }
            if let Some(t) = self.txn.as_mut() {
                t.explicit = true;
            }
        } else if first.eq_ignore_ascii_case(b"COMMIT") || first.eq_ignore_ascii_case(b"ROLLBACK") {
            self.commit(log_pos)?;
        } else if xa_is(b"END") {
            // Inside the XA transaction; its XA_PREPARE event comes next.
        } else if xa_is(b"PREPARE") || xa_is(b"COMMIT") {
            // (XA PREPARE as a statement: servers that do not write the XA_PREPARE event.)
            self.commit(log_pos)?;
        } else if xa_is(b"ROLLBACK") {
            tracing::warn!(
                xid = %xa_id(sql),
                "an XA transaction was rolled back after XA PREPARE: its rows were delivered at its prepare (as a replica applies them) and are not undone; the receiver holds them"
            );
            self.commit(log_pos)?;
        } else {
            let ddl = is_ddl(first) && !about_accounts(sql);
            if ddl {
                // Table ids change with DDL; re-read the information_schema view too.
                self.extra_cache.clear();
                if let Some(name) = created_sequence(sql, q.schema_raw()) {
                    self.sequences.insert(name);
                }
                if self.emitting(log_pos) {
                    self.on_ddl(q, header_ts, log_pos)?;
                }
            }
            match &self.txn {
                Some(t) if t.explicit => {
                    if !self.warned_statements && !ddl && xa.is_none() {
                        self.warned_statements = true;
                        tracing::warn!(
                            statement = %String::from_utf8_lossy(&sql[..sql.len().min(120)]),
                            "a statement-based change is in the binlog: it is not captured; set binlog_format=ROW on the source"
                        );
                    }
                }
                _ => self.commit(log_pos)?,
            }
        }
        Ok(())
    }

    /// A DDL statement: it takes a `seq` of its own (one per operation it delivers), advances
    /// the history's catalog (the new versions go into the chunk as records, saved
    /// with the checkpoint past it), and becomes `ddl`/`truncate`/`drop` operations for the
    /// captured tables `--on-ddl` says to emit for. One the reader cannot follow stops the
    /// stream when it touches a captured table; on other tables it is noted and passed over.
    fn on_ddl(
        &mut self,
        q: &QueryEvent<'_>,
        header_ts: u32,
        log_pos: u64,
    ) -> Result<(), StreamError> {
        let sql = String::from_utf8_lossy(q.query_raw()).into_owned();
        let db = String::from_utf8_lossy(q.schema_raw()).into_owned();
        let Some(history) = self.history.as_ref() else {
            // No history kept (FULL metadata read without one): nothing to record or deliver.
            let touched = crate::schema::ddl::tables_in_tokens(&sql, &db);
            return self.stop_if_asked(&touched, &sql, log_pos);
        };
        let mut next = history.clone();
        let effects = match crate::schema::ddl::apply(&mut next, &db, &sql) {
            Ok(effects) => effects,
            Err(e)
                if e.tables().iter().any(|n| {
                    self.unknown.contains(n)
                        || self
                            .pending
                            .iter()
                            .any(|p| p.table.db == n.0 && p.table.name == n.1)
                        || (self.open_world && next.table(&n.0, &n.1).is_none())
                }) =>
            {
                // About a table whose definition is unknown here anyway: everything it touches
                // becomes unknown (never guessed), until a seed version or a CREATE holds.
                let mut versions = Vec::new();
                for (d, t) in e.tables() {
                    next.remove(d, t);
                    self.unknown.insert((d.clone(), t.clone()));
                    versions.push(((d.clone(), t.clone()), None));
                }
                self.take_step_seq();
                self.history = Some(next);
                return self.finish_ddl(versions, log_pos);
            }
            Err(e) => {
                let tracked = e.tables().iter().find(|(d, t)| self.captures(d, t));
                return match tracked {
                    Some((d, t)) => Err(StreamError::SchemaHistory {
                        table: format!("{d}.{t}"),
                        file: self.boundary.file.clone(),
                        offset: log_pos,
                        detail: e.to_string(),
                    }),
                    // Triggers, routines, users: no table to follow.
                    None if e.tables().is_empty() => {
                        tracing::debug!(error = %e, "a DDL statement on no table binsync follows; passed over");
                        Ok(())
                    }
                    None => {
                        tracing::warn!(error = %e, "a DDL statement on tables binsync does not capture could not be followed; ignored");
                        Ok(())
                    }
                };
            }
        };
        // Every table the statement touched, once, in the order it did.
        let mut touched: Vec<(String, String)> = Vec::new();
        let mut emptied: HashSet<(String, String)> = HashSet::new();
        let mut dropped: HashSet<(String, String)> = HashSet::new();
        for e in &effects {
            use crate::schema::ddl::Effect;
            let names: Vec<(String, String)> = match e {
                Effect::Created { db, table } | Effect::Altered { db, table } => {
                    vec![(db.clone(), table.clone())]
                }
                Effect::Truncated { db, table } => {
                    emptied.insert((db.clone(), table.clone()));
                    vec![(db.clone(), table.clone())]
                }
                Effect::Dropped { db, table } => {
                    dropped.insert((db.clone(), table.clone()));
                    vec![(db.clone(), table.clone())]
                }
                Effect::Renamed { from, to } => vec![from.clone(), to.clone()],
                Effect::CreatedDatabase(_) | Effect::DroppedDatabase(_) => Vec::new(),
            };
            if let Effect::Created { db, table } = e {
                self.unknown.remove(&(db.clone(), table.clone()));
            }
            for n in names {
                if !touched.contains(&n) {
                    touched.push(n);
                }
            }
        }
        self.stop_if_asked(&touched, &sql, log_pos)?;
        if self.txn.is_some() && self.history_before_txn.is_none() {
            self.history_before_txn = self.history.clone();
        }
        let versions: Vec<((String, String), Option<crate::schema::Table>)> = touched
            .iter()
            .map(|(d, t)| ((d.clone(), t.clone()), next.table(d, t).cloned()))
            .collect();
        self.history = Some(next);
        let mut emitted = false;
        for ((d, t), version) in &versions {
            if !self.captures(d, t) || self.cfg.on_ddl.action(d, t) != DdlAction::Emit {
                continue;
            }
            let name = (d.clone(), t.clone());
            // A rename away keeps the receiver's rows (a ddl without columns): only a DROP
            // (or DROP DATABASE) that leaves no table under the name is a drop.
            let op = if emptied.contains(&name) {
                Op::Truncate
            } else if version.is_none() && dropped.contains(&name) {
                Op::Drop
            } else {
                Op::Ddl
            };
            self.emit_ddl(d, t, op, version.as_ref(), &sql, header_ts, log_pos);
            emitted = true;
        }
        if !emitted {
            self.take_step_seq();
        }
        self.finish_ddl(versions, log_pos)
    }

    /// A statement that delivers nothing keeps the `seq` of the last operation for its
    /// history step: the step is saved only with a checkpoint past the statement, so it is
    /// on disk exactly when that checkpoint is (numbers without gaps where nothing was
    /// delivered). Inside an explicit transaction (`CREATE TABLE ... SELECT`) it takes a
    /// number of its own: a checkpoint inside that transaction (its rows split over chunks)
    /// keeps the `seq` before it, so the step stays above it and is read again on a resume.
    fn take_step_seq(&mut self) {
        if self.txn.as_ref().is_some_and(|t| t.explicit) {
            self.seq += 1;
        }
    }

    /// Hands the statement's versions on with the chunk (saved with the checkpoint past it).
    fn finish_ddl(
        &mut self,
        versions: Vec<((String, String), Option<crate::schema::Table>)>,
        log_pos: u64,
    ) -> Result<(), StreamError> {
        self.push_records(&versions, log_pos)
    }

    fn push_records(
        &mut self,
        versions: &[((String, String), Option<crate::schema::Table>)],
        log_pos: u64,
    ) -> Result<(), StreamError> {
        let records = crate::schema::history::records(self.seq, versions).map_err(|e| {
            StreamError::SchemaHistory {
                table: versions
                    .first()
                    .map(|((d, t), _)| format!("{d}.{t}"))
                    .unwrap_or_default(),
                file: self.boundary.file.clone(),
                offset: log_pos,
                detail: format!("its new definition cannot be recorded: {e}"),
            }
        })?;
        self.chunk.records.push(records);
        self.position_dirty = true;
        Ok(())
    }

    /// Installs the seed versions that hold from the commit just passed on (at or before
    /// `log_pos` in the boundary's file: a DDL statement's end, or the seed's own position
    /// when the scan could not tell where the DDL was), after whatever the transaction did.
    fn install_due(&mut self, log_pos: u64) -> Result<(), StreamError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let here = crate::schema::history::binlog_order(&self.boundary.file, log_pos);
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| crate::schema::history::binlog_order(&p.file, p.end) <= here);
        self.pending = later;
        if now.is_empty() {
            return Ok(());
        }
        let mut versions = Vec::new();
        for p in now {
            let name = (p.table.db.clone(), p.table.name.clone());
            self.unknown.remove(&name);
            versions.push((name, Some(p.table.clone())));
            if let Some(h) = self.history.as_mut() {
                h.insert(p.table);
            }
        }
        self.push_records(&versions, log_pos)
    }

    /// The definite error `--on-ddl ... stop` asks for, if it does for a captured table among
    /// `touched`.
    fn stop_if_asked(
        &self,
        touched: &[(String, String)],
        sql: &str,
        log_pos: u64,
    ) -> Result<(), StreamError> {
        let stop = touched
            .iter()
            .find(|(d, t)| self.captures(d, t) && self.cfg.on_ddl.action(d, t) == DdlAction::Stop);
        match stop {
            Some((d, t)) => Err(StreamError::DdlStop {
                table: format!("{d}.{t}"),
                file: self.boundary.file.clone(),
                offset: log_pos,
                statement: sql.chars().take(200).collect(),
            }),
            None => Ok(()),
        }
    }

    /// Numbers and writes one operation on a whole entity type (contract v2; see
    /// docs/sync-api.md): `version` is the table as the statement left it (None: gone).
    #[allow(clippy::too_many_arguments)]
    fn emit_ddl(
        &mut self,
        db: &str,
        table: &str,
        op: Op,
        version: Option<&crate::schema::Table>,
        sql: &str,
        header_ts: u32,
        log_pos: u64,
    ) {
        self.seq += 1;
        if let Some(txn) = self.txn.as_mut() {
            // Counted as a row of its transaction, so a resume inside it skips it as one.
            let row = txn.next_row;
            txn.next_row += 1;
            if row < txn.skip_below {
                return;
            }
        }
        let entity: Arc<str> = self
            .cfg
            .entities
            .get(&format!("{db}.{table}"))
            .cloned()
            .unwrap_or_else(|| table.to_string())
            .into();
        let buf = &mut self.chunk.buf;
        let start = buf.len();
        buf.extend_from_slice(b"{\"seq\":");
        push_u64(buf, self.seq);
        buf.extend_from_slice(b",\"op\":\"");
        buf.extend_from_slice(op.as_str().as_bytes());
        buf.extend_from_slice(b"\",\"db\":");
        write_json_str(buf, db.as_bytes());
        buf.extend_from_slice(b",\"table\":");
        write_json_str(buf, table.as_bytes());
        buf.extend_from_slice(b",\"entity\":");
        write_json_str(buf, entity.as_bytes());
        buf.push(b',');
        match &self.txn {
            Some(t) => buf.extend_from_slice(&t.meta_json),
            None => {
                buf.extend_from_slice(b"\"gtid\":null,\"ts\":\"");
                buf.extend_from_slice(
                    format_utc_micros(i64::from(header_ts) * 1_000_000).as_bytes(),
                );
                buf.extend_from_slice(b"\",");
            }
        }
        buf.extend_from_slice(&self.file_json);
        buf.extend_from_slice(b"\"offset\":");
        push_u64(buf, log_pos);
        buf.extend_from_slice(b",\"statement\":");
        write_json_str(buf, sql.as_bytes());
        if op == Op::Ddl {
            let (columns, key) = match version {
                Some(t) => (
                    serde_json::Value::Array(
                        t.columns.iter().map(|c| c.contract_json().into()).collect(),
                    ),
                    serde_json::json!(t.key()),
                ),
                None => (serde_json::Value::Null, serde_json::Value::Null),
            };
            buf.extend_from_slice(format!(",\"columns\":{columns},\"key\":{key}").as_bytes());
        }
        buf.push(b'}');
        let end = buf.len();
        let index = self.chunk.changes.len();
        first_of_type(
            &mut self.txn_entities,
            &mut self.chunk.txn_firsts,
            index,
            &entity,
        );
        self.chunk.changes.push(Change {
            seq: self.seq,
            op,
            entity,
            keyless: false,
            line: start..end,
            key: end..end,
        });
    }

    /// A table's entity name and the text every line of its rows carries:
    /// `"db":..,"table":..,"entity":..,` (and `"keyless":true,`).
    fn table_meta(&self, db: &str, table: &str, keyless: bool) -> (Arc<str>, Vec<u8>) {
        let entity: Arc<str> = self
            .cfg
            .entities
            .get(&format!("{db}.{table}"))
            .cloned()
            .unwrap_or_else(|| table.to_string())
            .into();
        let mut meta = Vec::with_capacity(64);
        meta.extend_from_slice(b"\"db\":");
        write_json_str(&mut meta, db.as_bytes());
        meta.extend_from_slice(b",\"table\":");
        write_json_str(&mut meta, table.as_bytes());
        meta.extend_from_slice(b",\"entity\":");
        write_json_str(&mut meta, entity.as_bytes());
        meta.push(b',');
        if keyless {
            meta.extend_from_slice(b"\"keyless\":true,");
        }
        (entity, meta)
    }

    fn malformed(&self, what: &str, offset: u64, e: impl std::fmt::Display) -> StreamError {
        StreamError::Malformed {
            what: what.to_string(),
            file: self.boundary.file.clone(),
            offset,
            detail: e.to_string(),
        }
    }

    /// A transaction starts: with its GTID, or named by where it starts without GTIDs.
    fn begin_txn(&mut self, gtid: Option<Gtid>, ts_micros: i64) {
        let id = match &gtid {
            Some(g) => g.to_string(),
            None => format!("{}:{}", self.boundary.file, self.boundary.offset),
        };
        let mut meta = Vec::with_capacity(80);
        meta.extend_from_slice(b"\"gtid\":");
        match gtid {
            Some(_) => write_json_str(&mut meta, id.as_bytes()),
            None => meta.extend_from_slice(b"null"),
        }
        meta.extend_from_slice(b",\"ts\":\"");
        meta.extend_from_slice(format_utc_micros(ts_micros).as_bytes());
        meta.extend_from_slice(b"\",");
        let skip_below = match self.resume.take() {
            Some(p) if p.txn == id => p.next_row,
            Some(p) => {
                // The checkpoint named a transaction that did not come first: put it back in
                // case it comes later (GTID streams can interleave domains).
                self.resume = Some(p);
                0
            }
            None => 0,
        };
        self.txn_entities.clear();
        self.txn = Some(Txn {
            id,
            gtid,
            meta_json: meta.into_boxed_slice(),
            next_row: 0,
            skip_below,
            explicit: false,
        });
    }

    fn commit(&mut self, log_pos: u64) -> Result<(), StreamError> {
        self.payload_end = None;
        self.txn_entities.clear();
        self.history_before_txn = None;
        if let Some(gtid) = self.txn.take().and_then(|t| t.gtid) {
            match &mut self.boundary.gtid {
                Some(pos) => pos.apply(&gtid),
                // MariaDB always has GTIDs; a stream that began without a known state still
                // learns each domain's newest GTID (a MySQL set cannot start mid-history).
                None if self.gtid_from_file_header.is_none() => {
                    self.boundary.gtid = GtidPos::from_lone(&gtid);
                }
                None => {}
            }
        }
        self.boundary.offset = log_pos;
        self.last_commit.0.clone_from(&self.boundary.file);
        self.last_commit.1 = log_pos;
        self.install_due(log_pos)?;
        self.boundary.seq = self.seq;
        self.position_dirty = true;
        Ok(())
    }

    /// A table's decode plan, built when its table map first comes and reused while the same
    /// map comes again (every transaction).
    async fn on_table_map(
        &mut self,
        raw: &[u8],
        tme: &TableMapEvent<'_>,
    ) -> Result<(), StreamError> {
        let id = tme.table_id();
        if let Some(info) = self.tables.get(&id) {
            if *info.raw == *raw && info.deferred.is_none() {
                return Ok(());
            }
        }
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let qualified = format!("{db}.{table}");
        let included = self.captures(&db, &table);
        // Before `emit_from` no row is emitted: a refusal waits for a row that is.
        let acting = self.emit_from.is_none();
        let mut deferred = None;
        let extra = if included && self.history.is_some() {
            match self.history_extra(&db, &table, tme) {
                Ok(extra) => extra,
                Err(StreamError::SchemaHistory {
                    table,
                    file,
                    offset,
                    detail,
                }) if !acting => {
                    deferred = Some(Deferred {
                        table,
                        file,
                        offset,
                        detail,
                    });
                    None
                }
                Err(e) => return Err(e),
            }
        } else if included {
            match self.extra_schema(&db, &table, tme).await {
                Ok(extra) => extra,
                Err(e) => {
                    // Whatever this id meant before, it does not describe the rows that follow.
                    self.tables.remove(&id);
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        let schema = TableSchema::from_table_map_with(tme, extra.as_deref(), self.mariadb_writer)?;
        let named = schema.names_from_binlog
            || extra
                .as_ref()
                .is_some_and(|e| e.columns.len() == tme.columns_count() as usize);
        if included && deferred.is_none() && !named {
            // Positional names (@1, @2) and a whole-row id would be a guess: never emitted.
            self.tables.remove(&id);
            return Err(StreamError::SchemaHistory {
                table: qualified,
                file: self.boundary.file.clone(),
                offset: self.boundary.offset,
                detail: "the binlog carries no column names for it (binlog_row_metadata=MINIMAL) and no schema history or information_schema answer gives them".into(),
            });
        }
        // (The history, when kept, is not a lookup that can race: nothing to warn about.)
        if included
            && !schema.names_from_binlog
            && self.history.is_none()
            && !self.warned_no_metadata
        {
            self.warned_no_metadata = true;
            tracing::warn!(
                table = %qualified,
                "column names and primary key come from information_schema, not the binlog: a DDL between the change and this lookup can mislabel columns; set binlog_row_metadata=FULL on the source"
            );
        }
        let (entity, meta) = self.table_meta(&db, &table, schema.keyless);
        let key_room = schema
            .pk
            .iter()
            .filter_map(|&i| schema.columns.get(i))
            .map(|c| c.json_key.len() + 1 + KEY_VALUE_ROOM)
            .sum::<usize>()
            + 2;
        let changed_room = b",\"changed\":[]".len()
            + schema
                .columns
                .iter()
                .map(|c| c.json_key.len())
                .sum::<usize>();
        self.tables.insert(
            id,
            Arc::new(TableInfo {
                schema,
                entity,
                included,
                meta_json: meta.into_boxed_slice(),
                key_room,
                changed_room,
                raw: raw.into(),
                deferred,
            }),
        );
        Ok(())
    }

    /// Whether `db.table`'s changes are delivered: `--include`/`--exclude`, and SEQUENCE
    /// objects only when an `--include` names them.
    fn captures(&self, db: &str, table: &str) -> bool {
        let qualified = format!("{db}.{table}");
        if self.cfg.sequences.contains(&qualified) || self.sequences.contains(&qualified) {
            self.cfg.filter.names(db, table)
        } else {
            self.cfg.filter.matches(db, table)
        }
    }

    /// information_schema's view of a table, when the binlog lacks names (no FULL metadata) or
    /// may hide JSON columns (MariaDB). Answers are cached until the next DDL; failures are
    /// not cached.
    /// What the history's version of `db.table` adds to the table map, after checking that
    /// it fits (see `fit`). FULL metadata wins: then the version only adds what the binlog
    /// never says (MariaDB's JSON columns), and only when it fits.
    fn history_extra(
        &self,
        db: &str,
        table: &str,
        tme: &TableMapEvent<'_>,
    ) -> Result<Option<Arc<ExtraSchema>>, StreamError> {
        let plain = TableSchema::from_table_map_with(tme, None, self.mariadb_writer)?;
        let version = self.history.as_ref().and_then(|h| h.table(db, table));
        let refused = |detail: String| StreamError::SchemaHistory {
            table: format!("{db}.{table}"),
            file: self.boundary.file.clone(),
            offset: self.boundary.offset,
            detail,
        };
        match version {
            Some(t) => match fit::check(t, &plain) {
                Ok(()) => Ok(Some(Arc::new(fit::extra(t)))),
                Err(_) if plain.names_from_binlog => Ok(None),
                Err(m) => Err(refused(m.to_string())),
            },
            None if plain.names_from_binlog => Ok(None),
            None if self.unknown.contains(&(db.to_string(), table.to_string())) => Err(refused(
                "its definition here is unknown: a DDL statement changed it between where this stream started and where binsync first read the definitions (the schema history's seed)".into(),
            )),
            None => Err(refused(
                "the schema history holds no such table (created before the history began, or by a statement it could not read)".into(),
            )),
        }
    }

    async fn extra_schema(
        &mut self,
        db: &str,
        table: &str,
        tme: &TableMapEvent<'_>,
    ) -> Result<Option<Arc<ExtraSchema>>, LookupError> {
        let Some(lookup) = self.lookup.as_mut() else {
            return Ok(None);
        };
        let has_names = tme.iter_optional_meta().any(|m| {
            matches!(
                m,
                Ok(mysql_common::binlog::events::OptionalMetadataField::ColumnName(_))
            )
        });
        let has_json_type = (0..tme.columns_count() as usize).any(|i| {
            matches!(
                tme.get_column_type(i),
                Ok(Some(mysql_common::constants::ColumnType::MYSQL_TYPE_JSON))
            )
        });
        // MySQL names its JSON columns in the binlog; MariaDB's are text with a CHECK.
        let might_hide_json = !has_json_type
            && (0..tme.columns_count() as usize).any(|i| {
                matches!(
                    tme.get_column_type(i),
                    Ok(Some(mysql_common::constants::ColumnType::MYSQL_TYPE_BLOB))
                )
            });
        if has_names && !might_hide_json {
            return Ok(None);
        }
        let key = (db.to_string(), table.to_string());
        if let Some(hit) = self.extra_cache.get(&key) {
            return Ok(hit.clone());
        }
        let found = lookup.lookup(db, table).await?.map(Arc::new);
        if found.is_none() && !has_names {
            tracing::warn!(
                table = %format!("{db}.{table}"),
                "information_schema shows no such table (dropped or renamed since this change, or the binsync user lacks privileges on it): its columns are named @1, @2, ... and its ids are whole rows; GRANT SELECT on it to the binsync user, or set binlog_row_metadata=FULL on the source"
            );
        }
        self.extra_cache.insert(key, found.clone());
        Ok(found)
    }

    /// The row changes of one rows event, each decoded straight into the chunk (see
    /// [`Decoder::row_in_place`]); none while the stream is still before `emit_from`.
    fn on_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        raw_type: u8,
        log_pos: u64,
    ) -> Result<(), StreamError> {
        if !self.emitting(log_pos) {
            return Ok(());
        }
        let info = self
            .tables
            .get(&rows.table_id())
            .cloned()
            .ok_or(StreamError::UnknownTable(rows.table_id()))?;
        if !info.included {
            return Ok(());
        }
        if let Some(d) = &info.deferred {
            return Err(StreamError::SchemaHistory {
                table: d.table.clone(),
                file: d.file.clone(),
                offset: d.offset,
                detail: d.detail.clone(),
            });
        }
        if self.txn.is_none() {
            // Row events outside BEGIN..COMMIT (non-transactional engines on old servers):
            // each event is its own transaction.
            self.begin_txn(None, 0);
        }
        let (op, event) = match raw_type {
            t if t == EventType::WRITE_ROWS_EVENT as u8
                || t == EventType::WRITE_ROWS_EVENT_V1 as u8 =>
            {
                (Op::Insert, "WRITE_ROWS")
            }
            t if t == EventType::DELETE_ROWS_EVENT as u8
                || t == EventType::DELETE_ROWS_EVENT_V1 as u8 =>
            {
                (Op::Delete, "DELETE_ROWS")
            }
            _ => (Op::Update, "UPDATE_ROWS"),
        };
        let data = rows.rows_data();
        if data.len() > LARGE_ROWS_EVENT {
            // Room for the whole event's lines, reserved once: growing the chunk by doubling
            // would copy a big row (a 50 MB BLOB) and hold it twice meanwhile. Base64 and JSON
            // take about 1.4x the row image; untouched reserved pages cost no memory.
            let want = data.len() / 2 * 3 + (64 << 10);
            let buf = &mut self.chunk.buf;
            if buf.capacity() - buf.len() < want {
                buf.reserve_exact(want);
            }
        }
        let missing = |what: &str| self.malformed(event, log_pos, what);
        let before_cols = match op {
            Op::Insert => None,
            _ => Some(
                rows.columns_before_image()
                    .ok_or_else(|| missing("no before-image columns"))?,
            ),
        };
        let after_cols = match op {
            Op::Delete => None,
            _ => Some(
                rows.columns_after_image()
                    .ok_or_else(|| missing("no after-image columns"))?,
            ),
        };
        let partial = raw_type == EventType::PARTIAL_UPDATE_ROWS_EVENT as u8;
        // A row takes at least one byte (a null bitmap; a partial update's after image starts
        // with its value options) unless its images have no columns: such a row would be
        // read again and again at the same place.
        let no_columns = |cols: Option<&BitSlice<u8>>| cols.is_none_or(|c| c.not_any());
        if !data.is_empty() && !partial && no_columns(before_cols) && no_columns(after_cols) {
            return Err(self.malformed(
                event,
                log_pos,
                "its images have no columns, yet it holds row data",
            ));
        }
        let mut at = 0usize;
        while at < data.len() {
            let rest = &data[at..];
            at += match (partial, before_cols, after_cols) {
                (true, Some(bcols), Some(acols)) => {
                    self.update_from_scratch(&info, bcols, acols, rest, true, log_pos)?
                }
                _ => self.row_in_place(&info, op, before_cols, after_cols, rest, log_pos)?,
            };
        }
        Ok(())
    }

    /// One update row decoded into the scratch images, then emitted as an update, or as a
    /// delete and an insert when it moves the primary key. The path of MySQL JSON partial
    /// updates (`partial`: the after image is rebuilt from the before image and the logged
    /// diffs) and of key-moving updates found by [`Decoder::row_in_place`] (rare: worth no
    /// special layout). Returns the bytes of `rows` it used.
    fn update_from_scratch(
        &mut self,
        info: &TableInfo,
        before_cols: &BitSlice<u8>,
        after_cols: &BitSlice<u8>,
        rows: &[u8],
        partial: bool,
        log_pos: u64,
    ) -> Result<usize, StreamError> {
        self.img_b.clear();
        let n = value::decode_image(
            &info.schema,
            before_cols,
            rows,
            &mut self.img_b,
            &mut self.spans_b,
        )?;
        self.img_a.clear();
        let m = if partial {
            value::decode_partial_after_image(
                &info.schema,
                after_cols,
                &rows[n..],
                &self.img_b,
                &self.spans_b,
                &mut self.img_a,
                &mut self.spans_a,
            )?
        } else {
            value::decode_image(
                &info.schema,
                after_cols,
                &rows[n..],
                &mut self.img_a,
                &mut self.spans_a,
            )?
        };
        self.scratch.clear();
        value::write_key(&info.schema, &self.img_b, &self.spans_b, &mut self.scratch);
        let old_key_len = self.scratch.len();
        value::write_key(&info.schema, &self.img_a, &self.spans_a, &mut self.scratch);
        if self.scratch[..old_key_len] != self.scratch[old_key_len..] {
            self.emit(info, Op::Delete, true, false, log_pos);
            self.emit(info, Op::Insert, false, true, log_pos);
        } else {
            self.emit(info, Op::Update, true, true, log_pos);
        }
        Ok(n + m)
    }

    /// Decodes one row straight into the chunk and returns the bytes of `rows` it used.
    ///
    /// The images are decoded after a gap left for the line's head (`seq`, key, positions,
    /// changed columns), which is written into the end of the gap once the key and the
    /// changed columns are known; the bytes of the gap before the head belong to no line.
    /// This saves copying every image once (the gap is widened, moving the images, in the
    /// rare case where the head does not fit). An update that moves the primary key is
    /// decoded again by [`Decoder::update_from_scratch`] as a delete and an insert.
    fn row_in_place(
        &mut self,
        info: &TableInfo,
        op: Op,
        before_cols: Option<&BitSlice<u8>>,
        after_cols: Option<&BitSlice<u8>>,
        rows: &[u8],
        log_pos: u64,
    ) -> Result<usize, StreamError> {
        let Some(txn) = self.txn.as_ref() else {
            return Ok(rows.len());
        };
        let buf = &mut self.chunk.buf;
        let line_start = buf.len();
        let gap = HEAD_FIXED_ROOM
            + info.meta_json.len()
            + txn.meta_json.len()
            + self.file_json.len()
            + info.key_room
            + if op == Op::Update {
                info.changed_room
            } else {
                0
            };
        buf.resize(line_start + gap, b' ');
        let mut used = 0;
        let decoded = (|| {
            if let Some(cols) = before_cols {
                buf.extend_from_slice(b",\"before\":");
                used += value::decode_image(&info.schema, cols, rows, buf, &mut self.spans_b)?;
            }
            if let Some(cols) = after_cols {
                buf.extend_from_slice(b",\"after\":");
                used +=
                    value::decode_image(&info.schema, cols, &rows[used..], buf, &mut self.spans_a)?;
            }
            Ok::<_, DecodeError>(())
        })();
        if let Err(e) = decoded {
            buf.truncate(line_start);
            return Err(e.into());
        }
        buf.push(b'}');
        // The key of the entity as it is after the change (before it, for a delete).
        let key_spans = if after_cols.is_some() {
            &self.spans_a
        } else {
            &self.spans_b
        };
        let key = &mut self.scratch;
        key.clear();
        value::write_key(&info.schema, buf, key_spans, key);
        if op == Op::Update {
            let new_key_len = key.len();
            value::write_key(&info.schema, buf, &self.spans_b, key);
            if key[..new_key_len] != key[new_key_len..] {
                buf.truncate(line_start);
                if let (Some(bcols), Some(acols)) = (before_cols, after_cols) {
                    self.update_from_scratch(info, bcols, acols, rows, false, log_pos)?;
                }
                return Ok(used);
            }
            key.truncate(new_key_len);
        }
        let Some(txn) = self.txn.as_mut() else {
            return Ok(used);
        };
        let row = txn.next_row;
        txn.next_row += 1;
        self.seq += 1;
        if row < txn.skip_below {
            buf.truncate(line_start);
            return Ok(used);
        }
        let head = &mut self.head;
        head.clear();
        let key_at = write_head(
            head,
            self.seq,
            op,
            &info.meta_json,
            key,
            &txn.meta_json,
            row,
            &self.file_json,
            log_pos,
        );
        if op == Op::Update {
            head.extend_from_slice(b",\"changed\":");
            value::write_changed(&info.schema, buf, &self.spans_b, buf, &self.spans_a, head);
        }
        if head.len() > gap {
            let more = head.len() - gap;
            buf.splice(
                line_start + gap..line_start + gap,
                std::iter::repeat_n(b' ', more),
            );
        }
        let start = line_start + gap.max(head.len()) - head.len();
        buf[start..start + head.len()].copy_from_slice(head);
        let index = self.chunk.changes.len();
        first_of_type(
            &mut self.txn_entities,
            &mut self.chunk.txn_firsts,
            index,
            &info.entity,
        );
        self.chunk.changes.push(Change {
            seq: self.seq,
            op,
            entity: info.entity.clone(),
            keyless: info.schema.keyless,
            line: start..buf.len(),
            key: start + key_at..start + key_at + key.len(),
        });
        Ok(used)
    }

    /// Numbers one change and, unless it was delivered before a restart, writes its line.
    fn emit(&mut self, info: &TableInfo, op: Op, before: bool, after: bool, log_pos: u64) {
        let Some(txn) = self.txn.as_mut() else { return };
        let row = txn.next_row;
        txn.next_row += 1;
        self.seq += 1;
        if row < txn.skip_below {
            return;
        }
        self.scratch.clear();
        if after {
            value::write_key(&info.schema, &self.img_a, &self.spans_a, &mut self.scratch);
        } else {
            value::write_key(&info.schema, &self.img_b, &self.spans_b, &mut self.scratch);
        }
        let buf = &mut self.chunk.buf;
        let start = buf.len();
        let key_at = write_head(
            buf,
            self.seq,
            op,
            &info.meta_json,
            &self.scratch,
            &txn.meta_json,
            row,
            &self.file_json,
            log_pos,
        );
        let key_start = start + key_at;
        let key_end = key_start + self.scratch.len();
        if before && after {
            buf.extend_from_slice(b",\"changed\":");
            value::write_changed(
                &info.schema,
                &self.img_b,
                &self.spans_b,
                &self.img_a,
                &self.spans_a,
                buf,
            );
        }
        if before {
            buf.extend_from_slice(b",\"before\":");
            buf.extend_from_slice(&self.img_b);
        }
        if after {
            buf.extend_from_slice(b",\"after\":");
            buf.extend_from_slice(&self.img_a);
        }
        buf.push(b'}');
        self.chunk.changes.push(Change {
            seq: self.seq,
            op,
            entity: info.entity.clone(),
            keyless: info.schema.keyless,
            line: start..buf.len(),
            key: key_start..key_end,
        });
    }
}

/// Room in the gap of [`Decoder::row_in_place`] for the head's fixed text and its three
/// numbers (`seq`, `row`, `offset`, 20 digits each at most).
const HEAD_FIXED_ROOM: usize = 112;
/// Room for one key value (a BIGINT is 20 characters; longer keys widen the gap).
const KEY_VALUE_ROOM: usize = 24;

/// Writes a line's head, `{"seq":..,"op":..,<table>"id":<key>,<txn>"row":..,<file>"offset":..`,
/// and returns where the key starts in it.
#[allow(clippy::too_many_arguments)]
fn write_head(
    out: &mut Vec<u8>,
    seq: u64,
    op: Op,
    table_meta: &[u8],
    key: &[u8],
    txn_meta: &[u8],
    row: u64,
    file_json: &[u8],
    log_pos: u64,
) -> usize {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    push_u64(out, seq);
    out.extend_from_slice(b",\"op\":\"");
    out.extend_from_slice(op.as_str().as_bytes());
    out.extend_from_slice(b"\",");
    out.extend_from_slice(table_meta);
    out.extend_from_slice(b"\"id\":");
    let key_at = out.len() - start;
    out.extend_from_slice(key);
    out.push(b',');
    out.extend_from_slice(txn_meta);
    out.extend_from_slice(b"\"row\":");
    push_u64(out, row);
    out.push(b',');
    out.extend_from_slice(file_json);
    out.extend_from_slice(b"\"offset\":");
    push_u64(out, log_pos);
    key_at
}

const FORMAT_DESCRIPTION_EVENT: u8 = EventType::FORMAT_DESCRIPTION_EVENT as u8;
const XID_EVENT: u8 = EventType::XID_EVENT as u8;
const PREVIOUS_GTIDS_EVENT: u8 = EventType::PREVIOUS_GTIDS_EVENT as u8;
/// Notes the change about to be pushed at `index` in `firsts` when it is the first of its
/// entity type in the open transaction (`seen`: the types it emitted so far), for the
/// delivered-transactions metric (`Chunk::txn_firsts`).
fn first_of_type(seen: &mut Vec<Arc<str>>, firsts: &mut Vec<u32>, index: usize, entity: &Arc<str>) {
    if !seen
        .iter()
        .any(|e| Arc::ptr_eq(e, entity) || **e == **entity)
    {
        seen.push(entity.clone());
        firsts.push(index as u32);
    }
}

const HEARTBEAT_EVENT: u8 = EventType::HEARTBEAT_EVENT as u8;
/// MySQL 8.0.26+'s heartbeat (mysql_common has no name for it).
const HEARTBEAT_EVENT_V2: u8 = 0x29;
const TRANSACTION_PAYLOAD_EVENT: u8 = EventType::TRANSACTION_PAYLOAD_EVENT as u8;
const XA_PREPARE_LOG_EVENT: u8 = EventType::XA_PREPARE_LOG_EVENT as u8;

/// The event types whose body the decoder has mysql_common parse; the ones `on_event` reads
/// by hand come before, and all others only move the position.
const NEEDED_EVENTS: [u8; 13] = [
    EventType::QUERY_EVENT as u8,
    EventType::ROTATE_EVENT as u8,
    EventType::TABLE_MAP_EVENT as u8,
    EventType::WRITE_ROWS_EVENT_V1 as u8,
    EventType::UPDATE_ROWS_EVENT_V1 as u8,
    EventType::DELETE_ROWS_EVENT_V1 as u8,
    EventType::WRITE_ROWS_EVENT as u8,
    EventType::UPDATE_ROWS_EVENT as u8,
    EventType::DELETE_ROWS_EVENT as u8,
    EventType::PARTIAL_UPDATE_ROWS_EVENT as u8,
    EventType::GTID_EVENT as u8,
    EventType::GTID_TAGGED_LOG_EVENT as u8,
    EventType::ANONYMOUS_GTID_EVENT as u8,
];

/// The file name of a rotate event. The rotate event a server sends first, before its format
/// description, carries a checksum that the reader cannot know about yet (MariaDB): strip it
/// when the last four bytes are the CRC32 of the rest of the event.
pub(crate) fn rotate_name(ev: &Event, raw: &[u8]) -> String {
    let h = ev.header();
    if raw.len() > 4 {
        let (name, tail) = raw.split_at(raw.len() - 4);
        let body = &ev.data()[..ev.data().len() - 4];
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&h.timestamp().to_le_bytes());
        hasher.update(&[h.event_type_raw()]);
        hasher.update(&h.server_id().to_le_bytes());
        hasher.update(&h.event_size().to_le_bytes());
        hasher.update(&h.log_pos().to_le_bytes());
        hasher.update(&h.flags_raw().to_le_bytes());
        hasher.update(body);
        if hasher.finalize().to_le_bytes() == tail {
            return String::from_utf8_lossy(name).into_owned();
        }
    }
    String::from_utf8_lossy(raw).into_owned()
}

/// The xid of an `XA <verb> xid...` statement, as the binlog writes it (`X'78',X'',1`).
fn xa_id(sql: &[u8]) -> String {
    let text = String::from_utf8_lossy(sql);
    let mut words = text.trim().splitn(3, char::is_whitespace);
    let (_xa, _verb) = (words.next(), words.next());
    let xid = words.next().unwrap_or("").trim();
    xid.chars().take(300).collect()
}

fn first_word(sql: &[u8]) -> &[u8] {
    let s = sql.trim_ascii_start();
    let end = s
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(s.len());
    &s[..end]
}

/// `CREATE/ALTER/DROP/RENAME USER`, `... ROLE`, `... SERVER`: no table, and their text can
/// hold a password, so it is never handed to the DDL reader (nor to its logs).
fn about_accounts(sql: &[u8]) -> bool {
    let rest = sql.trim_ascii_start();
    let rest = &rest[first_word(rest).len()..];
    // The object word follows the verb, or `OR REPLACE`.
    let words: Vec<&[u8]> = rest
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .take(3)
        .collect();
    let object = match words.first() {
        Some(w) if w.eq_ignore_ascii_case(b"OR") => words.get(2),
        w => w,
    };
    object.is_some_and(|w| {
        [&b"USER"[..], b"ROLE", b"SERVER"]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k))
    })
}

/// A rows event above this size gets its chunk room reserved up front (see `on_rows`).
const LARGE_ROWS_EVENT: usize = 1 << 20;

/// `db.name` of a `CREATE [OR REPLACE] SEQUENCE [IF NOT EXISTS] [db.]name ...` statement
/// (`default_db` is the statement's current database).
fn created_sequence(sql: &[u8], default_db: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(sql);
    let mut words = text.split_ascii_whitespace();
    let mut word = words.next()?;
    if !word.eq_ignore_ascii_case("CREATE") {
        return None;
    }
    word = words.next()?;
    if word.eq_ignore_ascii_case("OR") {
        words.next()?; // REPLACE
        word = words.next()?;
    }
    if !word.eq_ignore_ascii_case("SEQUENCE") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("IF") {
        words.next()?; // NOT
        words.next()?; // EXISTS
        name = words.next()?;
    }
    let name = name.split('(').next().unwrap_or(name).trim_end_matches(';');
    let unquote = |s: &str| s.trim_matches('`').to_string();
    match name.split_once("`.`").or_else(|| name.split_once('.')) {
        Some((db, table)) => Some(format!("{}.{}", unquote(db), unquote(table))),
        None => Some(format!(
            "{}.{}",
            String::from_utf8_lossy(default_db),
            unquote(name)
        )),
    }
}

fn is_ddl(first: &[u8]) -> bool {
    [&b"CREATE"[..], b"ALTER", b"DROP", b"RENAME", b"TRUNCATE"]
        .iter()
        .any(|k| first.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_names_from_create_statements() {
        let c = |sql: &str| created_sequence(sql.as_bytes(), b"shop");
        assert_eq!(c("CREATE SEQUENCE ids"), Some("shop.ids".into()));
        assert_eq!(
            c("create or replace sequence `app`.`s1` start with 5"),
            Some("app.s1".into())
        );
        assert_eq!(
            c("CREATE SEQUENCE IF NOT EXISTS app.s2"),
            Some("app.s2".into())
        );
        assert_eq!(c("CREATE TABLE ids (id INT)"), None);
        assert_eq!(c("DROP SEQUENCE ids"), None);
    }

    #[test]
    fn account_statements_are_not_read_as_ddl() {
        for sql in [
            "CREATE USER 'u'@'%' IDENTIFIED BY 'secret'",
            "create or replace user u identified by 'x'",
            "ALTER USER u IDENTIFIED BY 'y'",
            "DROP USER IF EXISTS u",
            "RENAME USER a TO b",
            "CREATE ROLE r",
            "CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (PASSWORD 'p')",
        ] {
            assert!(about_accounts(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "CREATE TABLE user (id INT)",
            "ALTER TABLE t ADD COLUMN user INT",
        ] {
            assert!(!about_accounts(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn statement_words() {
        assert_eq!(first_word(b"  BEGIN"), b"BEGIN");
        assert!(is_ddl(first_word(b"alter table t add c int")));
        assert!(!is_ddl(first_word(b"insert into t values (1)")));
    }
}
