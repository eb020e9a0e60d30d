//! A MySQL server as a replica sees it, for tests: the client/server protocol, the statements
//! binsync sends, and the replication protocol over real MySQL-written binlog files.
//!
//! `MysqlDouble::start(profile, files, options)` listens on 127.0.0.1 (a port the kernel
//! picks) on a runtime of its own, and stops when dropped, also when the test panics. It
//! answers as MySQL 8.0, 8.4 or 9.x would (`Profile`): the version string, the capabilities,
//! which statements exist (8.4 removed `SHOW MASTER STATUS`), and the authentication plugins.
//! Every statement and command it receives is logged (`statements()`), and a statement it does
//! not know gets error 1064 and a line on stderr, so that a test sees what binsync sent.
//!
//! What it serves is the list of fixture files, as `binlog.000001`, `binlog.000002`, ... of one server:
//! `SHOW BINARY LOGS` lists them, the GTID state is read from their events, and a dump streams
//! them as `Binlog_sender` does (a fake ROTATE before each file, its FORMAT_DESCRIPTION, the
//! events with their own checksums, a real ROTATE between files, heartbeats while idle). A
//! fixture's trailing ROTATE (which names a file of the server that wrote it) is not served: the
//! last file is the active one, and between files the double writes its own.
//!
//! Table shapes (information_schema) come only from the `TableDesc`s a test supplies; a table
//! the test did not describe has no columns, as on a server that does not have it.
//!
//! Fault switches (`Faults`) act on the first dump: drop the connection after N events (or
//! inside the next packet), stall, answer with an error (1236 in MySQL's words,
//! `mysql_1236`), a large event inside a transaction, another `server_uuid` after the first
//! dump; `Options::require_secure_transport` refuses plain TCP (3159).
//!
//! TLS (`Options::tls`, a rustls server configuration): CLIENT_SSL is advertised, an SSL
//! request switches the connection to TLS, and there caching_sha2_password's full
//! authentication takes the password in clear, as MySQL does.
//!
//! Not modelled: compression, COM_CHANGE_USER, multi-statement queries, semi-sync, and a
//! binlog that grows while a dump runs (the files are fixed when the double starts). Every
//! result column is a VAR_STRING (the driver converts text to the type asked for).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{EventData, GtidEvent};
use mysql_common::binlog::EventStreamReader;
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    ComBinlogDump, ComBinlogDumpGtid, ComRegisterSlave, HandshakePacket, HandshakeResponse,
};
use mysql_common::proto::MySerialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which MySQL the double pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Mysql80,
    Mysql84,
    Mysql9x,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Mysql80, Profile::Mysql84, Profile::Mysql9x];

    /// `SELECT VERSION()` and the handshake's version string (MySQL 8+ has no `-log` suffix).
    pub fn version(self) -> &'static str {
        match self {
            Profile::Mysql80 => "8.0.36",
            Profile::Mysql84 => "8.4.3",
            Profile::Mysql9x => "9.1.0",
        }
    }

    /// MySQL 8.4 removed `SHOW MASTER STATUS` (and `SHOW SLAVE HOSTS`, ...): 8.4 release notes,
    /// "Deprecated MySQL 8.0 replication SQL statements ... removed".
    fn has_master_statements(self) -> bool {
        self == Profile::Mysql80
    }

    /// `SHOW BINARY LOG STATUS` exists from 8.2.0.
    fn has_binary_log_status(self) -> bool {
        self != Profile::Mysql80
    }

    /// mysql_native_password: loaded by default in 8.0, disabled by default in 8.4
    /// (`--mysql-native-password=ON` to load it), removed in 9.0.
    fn native_password_loaded(self) -> bool {
        self == Profile::Mysql80
    }
}

/// The account's authentication plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// The default of MySQL 8.0+.
    CachingSha2,
    MysqlNative,
}

/// One column of a table the test describes (information_schema.COLUMNS, as MySQL prints it).
#[derive(Debug, Clone)]
pub struct ColumnDesc {
    pub name: String,
    /// COLUMN_TYPE, e.g. `int`, `decimal(10,2)`, `enum('a','b')`, `int unsigned`.
    pub column_type: String,
    /// DATA_TYPE, e.g. `int`, `decimal`, `enum`.
    pub data_type: String,
    /// CHARACTER_SET_NAME (None for numbers; `binary` for BINARY/BLOB).
    pub charset: Option<String>,
    pub primary: bool,
}

impl ColumnDesc {
    pub fn new(name: &str, column_type: &str, primary: bool) -> ColumnDesc {
        let data_type = column_type
            .split(['(', ' '])
            .next()
            .unwrap_or(column_type)
            .to_string();
        let textual = [
            "char",
            "varchar",
            "text",
            "enum",
            "set",
            "tinytext",
            "mediumtext",
            "longtext",
        ];
        ColumnDesc {
            name: name.into(),
            column_type: column_type.into(),
            charset: textual
                .contains(&data_type.as_str())
                .then(|| "utf8mb4".to_string()),
            data_type,
            primary,
        }
    }
}

/// A table as information_schema describes it.
#[derive(Debug, Clone)]
pub struct TableDesc {
    pub db: String,
    pub name: String,
    pub columns: Vec<ColumnDesc>,
}

/// An identifier as MySQL's `append_identifier` quotes it (sql_mode without ANSI_QUOTES).
pub fn backquoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl TableDesc {
    /// `SHOW CREATE TABLE`'s second column, as MySQL 8.0/8.4/9.x's `store_create_info`
    /// writes it for an InnoDB table in the server's default character set: the bare table
    /// name, one column a line (two spaces in) with its COLUMN_TYPE, `NOT NULL` for a key
    /// column and `DEFAULT NULL` for another (none for the BLOB/TEXT family, which has no
    /// default; `NULL DEFAULT NULL` for TIMESTAMP), a column charset only where it is not
    /// the table's, then the primary key and the table options.
    pub fn show_create(&self) -> String {
        let mut lines: Vec<String> = self.columns.iter().map(ColumnDesc::definition).collect();
        let pk: Vec<String> = self
            .columns
            .iter()
            .filter(|c| c.primary)
            .map(|c| backquoted(&c.name))
            .collect();
        if !pk.is_empty() {
            lines.push(format!("  PRIMARY KEY ({})", pk.join(",")));
        }
        format!(
            "CREATE TABLE {} (\n{}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci",
            backquoted(&self.name),
            lines.join(",\n")
        )
    }
}

impl ColumnDesc {
    /// The column's line in `SHOW CREATE TABLE` (see [`TableDesc::show_create`]).
    fn definition(&self) -> String {
        let mut s = format!("  {} {}", backquoted(&self.name), self.column_type);
        if let Some(cs) = self
            .charset
            .as_deref()
            .filter(|cs| !["utf8mb4", "binary"].contains(cs))
        {
            // Each charset's default collation (utf8mb3's is utf8mb3_general_ci, ...).
            let collation = match cs {
                "latin1" => "latin1_swedish_ci".to_string(),
                other => format!("{other}_general_ci"),
            };
            s.push_str(&format!(" CHARACTER SET {cs} COLLATE {collation}"));
        }
        let no_default = [
            "tinytext",
            "text",
            "mediumtext",
            "longtext",
            "tinyblob",
            "blob",
            "mediumblob",
            "longblob",
        ];
        if self.primary {
            s.push_str(" NOT NULL");
        } else if self.data_type == "timestamp" {
            s.push_str(" NULL DEFAULT NULL");
        } else if !no_default.contains(&self.data_type.as_str()) {
            s.push_str(" DEFAULT NULL");
        }
        s
    }
}

/// Everything but the profile and the files.
#[derive(Debug, Clone)]
pub struct Options {
    pub user: String,
    pub password: String,
    pub plugin: Plugin,
    /// caching_sha2_password's cache already holds the account (a fast-path login at once),
    /// as after an earlier full authentication on the same server.
    pub sha2_cache_warm: bool,
    /// caching_sha2_password's cache never keeps the account (as with FLUSH PRIVILEGES before
    /// every login): each connection goes through full authentication.
    pub sha2_cache_off: bool,
    pub server_id: u32,
    /// None: the UUID of the first GTID in the files (the server that wrote them).
    pub server_uuid: Option<String>,
    /// `binlog_row_metadata` (MySQL's default is MINIMAL).
    pub row_metadata: String,
    pub tables: Vec<TableDesc>,
    /// The grants `SHOW GRANTS` prints.
    pub grants: Vec<String>,
    /// A role `binsync_role`@`%` granted to the user with these privileges on *.*
    /// (e.g. "SELECT, REPLICATION SLAVE, REPLICATION CLIENT"), and whether it is active at
    /// login (a default role, or activate_all_roles_on_login=ON). MySQL 8 then answers
    /// `SHOW GRANTS` with the role's name only, `CURRENT_ROLE()` with `` `binsync_role`@`%` ``
    /// (NONE when inactive), and `SHOW GRANTS FOR CURRENT_USER() USING <roles>` with the
    /// role's privileges merged into the user's.
    pub role: Option<(String, bool)>,
    /// `require_secure_transport=ON`: a plain TCP client is refused with 3159.
    pub require_secure_transport: bool,
    /// `gtid_mode=OFF` (MySQL's default): the variables say so and the GTID sets are empty
    /// (the files then hold ANONYMOUS_GTID events).
    pub gtid_mode_off: bool,
    /// caching_sha2_password's request for the public key is answered with an empty key:
    /// not a PEM. (MySQL without RSA keys refuses the login instead; a damaged key file or a
    /// proxy in between can send this. A client must not crash on it.)
    pub bad_public_key: bool,
    /// Transactions 1..=n of this source UUID were purged (in `gtid_purged` and
    /// `gtid_executed`, before the first file), as after PURGE BINARY LOGS.
    pub extra_purged: Option<([u8; 16], u64)>,
    /// Serve TLS with this configuration (None: no CLIENT_SSL, as MySQL without certificates).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// A statement the first file holds besides its own events: (after how many events,
    /// the FORMAT_DESCRIPTION not counted; default database; text), logged as a DDL statement
    /// is: a QUERY event outside any transaction, after a GTID event of its own (the writer's
    /// next untagged number, in `gtid_executed` too) when the files hold GTIDs. The positions
    /// of the events after it move.
    pub statement: Option<(usize, String, String)>,
    /// What goes wrong, and when.
    pub faults: Faults,
}

/// Fault switches. Each acts on the first dump only (a reconnect then streams normally), and
/// counts the events of the binlog files it has sent (not the fake ROTATE, the
/// FORMAT_DESCRIPTION or heartbeats).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Close the connection once this many events were sent.
    pub drop_after_events: Option<usize>,
    /// With `drop_after_events`: first send part of the next event's packet (its header says
    /// the whole length), so that the connection ends inside a packet.
    pub drop_mid_payload: bool,
    /// Send nothing more, heartbeats included, once this many events were sent; the
    /// connection stays open.
    pub stall_after_events: Option<usize>,
    /// Send nothing, heartbeats included, for this long after the first file's
    /// FORMAT_DESCRIPTION: a server scanning its binlog for the start position (MariaDB sends
    /// nothing while it skips the transactions before a GTID start).
    pub stall_at_start: Option<Duration>,
    /// Answer the first dump with this error instead of events (see [`mysql_1236`]).
    pub dump_error: Option<(u16, String)>,
    /// A ROWS_QUERY event (ignorable: what `binlog_rows_query_log_events=ON` writes) of this
    /// many bytes, written into the first file after this many of its events: in every dump,
    /// and in the file as listed (later events' positions and checksums follow it).
    pub large_event: Option<(usize, usize)>,
    /// Once a dump was requested, `@@server_uuid` answers this: the replica reconnects to
    /// another server of the topology (same binlog and GTIDs, another identity).
    pub server_uuid_after_first_dump: Option<String>,
    /// The first `SHOW BINARY LOG STATUS` row names the end of the last file but an
    /// Executed_Gtid_Set without the last transaction: MySQL fills the row in two steps (the
    /// position under the binlog lock, the set under another), so a transaction committing
    /// in between shows this way. Later rows are whole (the commit has finished).
    pub status_gtid_behind: bool,
    /// Every event over 1 MiB, in every dump, goes out in 64 KiB pieces spread over this
    /// long (a slow link): no heartbeat comes meanwhile, as from a real server.
    pub slow_large_events: Option<Duration>,
}

/// Error 1236 (ER_SOURCE_FATAL_ERROR_READING_BINLOG) as MySQL words it for each cause
/// (sql/rpl_binlog_sender.cc, sql/binlog.cc).
pub mod mysql_1236 {
    /// The requested file is not in the index (purged, or never there).
    pub const FILE_NOT_FOUND: &str = "Could not find first log file name in binary log index file";
    /// An event larger than the replica's max_allowed_packet.
    pub const EVENT_TOO_LARGE: &str = "log event entry exceeded max_allowed_packet; Increase max_allowed_packet on source; the first event 'binlog.000001' at 4, the last event read from './binlog.000001' at 126, the last byte read from './binlog.000001' at 126.";
    /// The replica holds GTIDs of the source's UUID that the source does not (8.0.26+ wording).
    pub const REPLICA_HAS_MORE_GTIDS: &str = "Replica has more GTIDs than the source has, using the source's SERVER_UUID. This may indicate that the end of the binary log was truncated or that the last binary log file was lost, e.g., after a power or disk failure when sync_binlog != 1. The source may or may not have rolled back transactions that were already replicated to the replica. Suggest to replicate any transactions that source has rolled back from replica to source, and/or commit empty transactions on source to account for transactions that have been committed on source but are not included in GTID_EXECUTED.";
    /// Another replica registered with this one's server id (8.0.26+ wording); the server
    /// ends the older dump with this.
    pub const SAME_SERVER_ID: &str = "A replica with the same server_uuid/server_id as this replica has connected to the source; the first event 'binlog.000001' at 4, the last event read from './binlog.000001' at 126, the last byte read from './binlog.000001' at 126.";
    /// The requested offset lies past the end of the file (truncated, or another server's).
    pub const PAST_END: &str =
        "Client requested source to start replication from position > file size";
    /// A damaged event in the binlog.
    pub const BOGUS_DATA: &str = "bogus data in log event; the first event 'binlog.000001' at 4, the last event read from './binlog.000001' at 126, the last byte read from './binlog.000001' at 126.";
}

impl Default for Options {
    fn default() -> Self {
        Options {
            user: "cdc".into(),
            password: "cdc-pw".into(),
            plugin: Plugin::CachingSha2,
            sha2_cache_warm: false,
            sha2_cache_off: false,
            server_id: 1,
            server_uuid: None,
            row_metadata: "MINIMAL".into(),
            tables: Vec::new(),
            grants: vec![
                "GRANT SELECT, RELOAD, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cdc`@`%`"
                    .into(),
            ],
            require_secure_transport: false,
            gtid_mode_off: false,
            role: None,
            bad_public_key: false,
            extra_purged: None,
            tls: None,
            statement: None,
            faults: Faults::default(),
        }
    }
}

/// A GTID as the binlog holds it: source UUID, optional tag (8.4+), transaction number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Gtid {
    uuid: [u8; 16],
    tag: String,
    gno: u64,
}

/// A source UUID and a tag ("" for none).
type Tsid = ([u8; 16], String);
/// Inclusive GTID number ranges, sorted and disjoint.
type Intervals = Vec<(u64, u64)>;

/// A GTID set: (uuid, tag) -> intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidSet(BTreeMap<Tsid, Intervals>);

impl GtidSet {
    fn add(&mut self, uuid: [u8; 16], tag: &str, start: u64, end: u64) {
        let ivs = self.0.entry((uuid, tag.to_string())).or_default();
        ivs.push((start, end));
        ivs.sort();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in ivs.drain(..) {
            match merged.last_mut() {
                Some(last) if s <= last.1 + 1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *ivs = merged;
    }

    fn contains(&self, g: &Gtid) -> bool {
        self.0
            .get(&(g.uuid, g.tag.clone()))
            .is_some_and(|ivs| ivs.iter().any(|&(s, e)| s <= g.gno && g.gno <= e))
    }

    fn is_subset_of(&self, other: &GtidSet) -> bool {
        self.0.iter().all(|((uuid, tag), ivs)| {
            ivs.iter().all(|&(s, e)| {
                other
                    .0
                    .get(&(*uuid, tag.clone()))
                    .is_some_and(|o| o.iter().any(|&(os, oe)| os <= s && e <= oe))
            })
        })
    }

    fn minus(&self, other: &GtidSet) -> GtidSet {
        let mut out = GtidSet::default();
        for ((uuid, tag), ivs) in &self.0 {
            for &(s, e) in ivs {
                for gno in s..=e {
                    let g = Gtid {
                        uuid: *uuid,
                        tag: tag.clone(),
                        gno,
                    };
                    if !other.contains(&g) {
                        out.add(*uuid, tag, gno, gno);
                    }
                }
            }
        }
        out
    }
}

/// COM_BINLOG_DUMP_GTID after its command byte: flags (2), server_id (4), name length (4),
/// name, position (8), data size (4), then the SID block.
fn dump_gtid_sid_block(body: &[u8]) -> Result<&[u8], String> {
    let short = || "short COM_BINLOG_DUMP_GTID".to_string();
    let name_len = u32::from_le_bytes(body.get(6..10).ok_or_else(short)?.try_into().unwrap());
    let at = 10 + name_len as usize + 8;
    let size = u32::from_le_bytes(body.get(at..at + 4).ok_or_else(short)?.try_into().unwrap());
    body.get(at + 4..at + 4 + size as usize).ok_or_else(short)
}

/// A GTID set's binary encoding as MySQL reads it (Gtid_set::add_gtid_encoding and
/// decode_nsids_format, sql/rpl_gtid_set.cc): the top byte of the first u64 is the format;
/// untagged (0): the rest is the number of entries; tagged (1): bits 8..55 are, and every
/// entry has a tag (its length << 1 in one byte, then its bytes) after the UUID. Intervals
/// are [start, end) with start > the previous end.
fn decode_sid_block(b: &[u8]) -> Result<GtidSet, String> {
    let u64_at = |at: usize| -> Result<u64, String> {
        b.get(at..at + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
            .ok_or_else(|| format!("short SID block at {at}"))
    };
    let head = u64_at(0)?;
    let tagged = match head >> 56 {
        0 => false,
        1 => true,
        f => return Err(format!("unknown GTID set format {f}")),
    };
    let n = if tagged {
        (head & 0x00ff_ffff_ffff_ff00) >> 8
    } else {
        head & 0x00ff_ffff_ffff_ffff
    };
    let mut at = 8;
    let mut set = GtidSet::default();
    for _ in 0..n {
        let uuid: [u8; 16] = b
            .get(at..at + 16)
            .ok_or("short SID block")?
            .try_into()
            .unwrap();
        at += 16;
        let mut tag = String::new();
        if tagged {
            let len_byte = *b.get(at).ok_or("short tag")?;
            if len_byte & 1 != 0 {
                return Err("a tag longer than one length byte allows".into());
            }
            let len = (len_byte >> 1) as usize;
            let bytes = b.get(at + 1..at + 1 + len).ok_or("short tag")?;
            tag = String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?;
            at += 1 + len;
        }
        let intervals = u64_at(at)?;
        at += 8;
        let mut last = 0;
        for _ in 0..intervals {
            let (start, end) = (u64_at(at)?, u64_at(at + 8)?);
            at += 16;
            if start <= last || end <= start {
                return Err(format!("interval {start}-{end} after {last}"));
            }
            last = end;
            set.add(uuid, &tag, start, end - 1);
        }
    }
    if at != b.len() {
        return Err(format!("{} bytes after the SID block", b.len() - at));
    }
    Ok(set)
}

/// MySQL's text form: `uuid:1-3:tag:5,uuid2:7`, untagged intervals first, tags in order.
impl std::fmt::Display for GtidSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut by_uuid: BTreeMap<[u8; 16], Vec<(&String, &Intervals)>> = BTreeMap::new();
        for ((uuid, tag), ivs) in &self.0 {
            by_uuid.entry(*uuid).or_default().push((tag, ivs));
        }
        let mut first = true;
        for (uuid, tags) in by_uuid {
            if !first {
                f.write_str(",\n")?;
            }
            first = false;
            f.write_str(&uuid_text(&uuid))?;
            for (tag, ivs) in tags {
                if !tag.is_empty() {
                    write!(f, ":{tag}")?;
                }
                for &(s, e) in ivs {
                    if s == e {
                        write!(f, ":{s}")?;
                    } else {
                        write!(f, ":{s}-{e}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

pub fn uuid_text(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

// Binlog event layout (MySQL's log_event.h).
const HEADER_LEN: usize = 19;
const ROTATE_EVENT: u8 = 4;
const FORMAT_DESCRIPTION_EVENT: u8 = 15;
const HEARTBEAT_LOG_EVENT: u8 = 27;
const PREVIOUS_GTIDS_LOG_EVENT: u8 = 35;
const GTID_LOG_EVENT: u8 = 33;
const GTID_TAGGED_LOG_EVENT: u8 = 42;
const TRANSACTION_PAYLOAD_EVENT: u8 = 40;
const LOG_EVENT_SUPPRESS_USE_F: u16 = 0x8;
const LOG_EVENT_BINLOG_IN_USE_F: u16 = 0x1;
const LOG_EVENT_ARTIFICIAL_F: u16 = 0x20;

#[derive(Debug, Clone)]
struct RawEvent {
    /// Offset of the event in its file.
    pos: u64,
    bytes: Vec<u8>,
    gtid: Option<Gtid>,
}

impl RawEvent {
    fn kind(&self) -> u8 {
        self.bytes[4]
    }
    fn end(&self) -> u64 {
        self.pos + self.bytes.len() as u64
    }
}

#[derive(Debug, Clone)]
struct BinlogFile {
    name: String,
    /// FORMAT_DESCRIPTION first.
    events: Vec<RawEvent>,
    crc32: bool,
    /// The set in its PREVIOUS_GTIDS event (empty without one).
    previous: GtidSet,
}

impl BinlogFile {
    fn end(&self) -> u64 {
        self.events.last().map_or(4, RawEvent::end)
    }

    fn load(path: &std::path::Path) -> BinlogFile {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            &data[..4],
            b"\xfebin",
            "{}: not a binlog file",
            path.display()
        );
        let mut events = Vec::new();
        let mut at = 4usize;
        let mut esr = EventStreamReader::new(BinlogVersion::Version4);
        while at + HEADER_LEN <= data.len() {
            let size = u32::from_le_bytes(data[at + 9..at + 13].try_into().unwrap()) as usize;
            assert!(
                size >= HEADER_LEN && at + size <= data.len(),
                "{}: damaged event at {at}: the double serves intact files only",
                path.display()
            );
            let bytes = data[at..at + size].to_vec();
            let ev = esr
                .read(&bytes[..])
                .unwrap_or_else(|e| panic!("{}: event at {at}: {e}", path.display()))
                .expect("one event");
            let gtid = match bytes[4] {
                GTID_LOG_EVENT | GTID_TAGGED_LOG_EVENT => {
                    let g: GtidEvent = ev
                        .read_event()
                        .unwrap_or_else(|e| panic!("{}: GTID at {at}: {e}", path.display()));
                    Some(Gtid {
                        uuid: g.sid(),
                        tag: g.tag().map(|t| t.as_str().to_string()).unwrap_or_default(),
                        gno: g.gno(),
                    })
                }
                _ => None,
            };
            events.push(RawEvent {
                pos: at as u64,
                bytes,
                gtid,
            });
            at += size;
        }
        assert_eq!(
            events.first().map(RawEvent::kind),
            Some(FORMAT_DESCRIPTION_EVENT),
            "{}: no FORMAT_DESCRIPTION first",
            path.display()
        );
        // The FDE's last byte before its checksum is the checksum algorithm (1 = CRC32).
        let fde = &events[0].bytes;
        let crc32 = fde.len() >= HEADER_LEN + 57 && fde[fde.len() - 5] == 1;
        // The writer's trailing ROTATE names a file of its own server: the double writes its own.
        if events.last().map(RawEvent::kind) == Some(ROTATE_EVENT) {
            events.pop();
        }
        let mut file = BinlogFile {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            events,
            crc32,
            previous: GtidSet::default(),
        };
        file.previous = file.previous_gtids();
        file
    }

    /// Inserts an ignorable ROWS_QUERY event of `size` bytes after `after` events (the
    /// FORMAT_DESCRIPTION not counted), moving the positions of the events after it.
    fn insert_rows_query(&mut self, after: usize, size: usize) {
        const ROWS_QUERY_LOG_EVENT: u8 = 29;
        const LOG_EVENT_IGNORABLE_F: u16 = 0x80;
        let overhead = HEADER_LEN + 1 + if self.crc32 { 4 } else { 0 };
        let mut body = vec![0xffu8];
        body.resize(size - overhead + 1, b'x');
        let len = self.insert_event(after, ROWS_QUERY_LOG_EVENT, LOG_EVENT_IGNORABLE_F, &body);
        assert_eq!(len, size);
    }

    /// Inserts a QUERY event of `statement` with default database `db` (empty: none) after
    /// `after` events, as the server logs a DDL statement outside a transaction (no status
    /// variables: the decoder needs none).
    fn insert_query(&mut self, after: usize, db: &str, statement: &str) {
        let mut body = Vec::new();
        body.extend_from_slice(&1u32.to_le_bytes()); // thread id
        body.extend_from_slice(&0u32.to_le_bytes()); // execution time
        body.push(db.len() as u8);
        body.extend_from_slice(&0u16.to_le_bytes()); // error code
        body.extend_from_slice(&0u16.to_le_bytes()); // status variables' length
        body.extend_from_slice(db.as_bytes());
        body.push(0);
        body.extend_from_slice(statement.as_bytes());
        self.insert_event(after, 2, 0, &body);
    }

    /// Inserts a GTID event (MySQL 5.6's short form: flags, UUID, number) after `after`
    /// events.
    fn insert_gtid(&mut self, after: usize, uuid: [u8; 16], gno: u64) {
        let mut body = vec![1u8];
        body.extend_from_slice(&uuid);
        body.extend_from_slice(&gno.to_le_bytes());
        self.insert_event(after, GTID_LOG_EVENT, 0, &body);
        self.events[after + 1].gtid = Some(Gtid {
            uuid,
            tag: String::new(),
            gno,
        });
    }

    /// Inserts an event of `kind` with `body` after `after` events (the FORMAT_DESCRIPTION
    /// not counted), with the next event's timestamp and server id, moving the positions
    /// (and checksums) of the events after it. Its length.
    fn insert_event(&mut self, after: usize, kind: u8, flags: u16, body: &[u8]) -> usize {
        let at = after + 1;
        let (pos, next) = match self.events.get(at) {
            Some(e) => (e.pos, e),
            None => (self.end(), self.events.last().unwrap()),
        };
        let ts = u32::from_le_bytes(next.bytes[..4].try_into().unwrap());
        let server_id = u32::from_le_bytes(next.bytes[5..9].try_into().unwrap());
        let size = HEADER_LEN + body.len() + if self.crc32 { 4 } else { 0 };
        let bytes = event(
            kind,
            ts,
            server_id,
            pos + size as u64,
            flags,
            body,
            self.crc32,
        );
        for ev in self.events[at..].iter_mut() {
            ev.pos += size as u64;
            let log_pos = u32::from_le_bytes(ev.bytes[13..17].try_into().unwrap());
            ev.bytes[13..17].copy_from_slice(&(log_pos + size as u32).to_le_bytes());
            if self.crc32 {
                let n = ev.bytes.len();
                let crc = crc32fast::hash(&ev.bytes[..n - 4]);
                ev.bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
            }
        }
        self.events.insert(
            at,
            RawEvent {
                pos,
                bytes,
                gtid: None,
            },
        );
        size
    }

    /// The GTID set in this file's PREVIOUS_GTIDS event (empty without one).
    fn previous_gtids(&self) -> GtidSet {
        let mut set = GtidSet::default();
        let mut esr = EventStreamReader::new(BinlogVersion::Version4);
        for ev in &self.events {
            let parsed = esr.read(&ev.bytes[..]).ok().flatten();
            if ev.kind() != PREVIOUS_GTIDS_LOG_EVENT {
                continue;
            }
            if let Some(Ok(Some(EventData::PreviousGtidsEvent(p)))) =
                parsed.as_ref().map(|e| e.read_data())
            {
                for sid in p.sids() {
                    let tag = sid
                        .tag()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default();
                    for iv in sid.intervals() {
                        set.add(sid.uuid(), &tag, iv.start(), iv.end() - 1);
                    }
                }
            }
        }
        set
    }
}

/// The whole binlog the double serves.
#[derive(Debug, Clone)]
struct Binlog {
    files: Vec<BinlogFile>,
    purged: GtidSet,
    executed: GtidSet,
}

impl Binlog {
    fn load(paths: &[PathBuf]) -> Binlog {
        assert!(
            !paths.is_empty(),
            "the double needs at least one binlog file"
        );
        // Served under the names a MySQL 8 server gives them (log_bin's default basename
        // `binlog`, numbered from 1), whatever the fixture files are called: binsync orders
        // files by their number.
        let files: Vec<BinlogFile> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| BinlogFile {
                name: format!("binlog.{:06}", i + 1),
                ..BinlogFile::load(p)
            })
            .collect();
        let purged = files[0].previous.clone();
        let mut executed = purged.clone();
        for f in &files {
            for g in f.events.iter().filter_map(|e| e.gtid.as_ref()) {
                executed.add(g.uuid, &g.tag, g.gno, g.gno);
            }
        }
        Binlog {
            files,
            purged,
            executed,
        }
    }

    fn first_uuid(&self) -> Option<[u8; 16]> {
        self.files
            .iter()
            .flat_map(|f| f.events.iter())
            .find_map(|e| e.gtid.as_ref().map(|g| g.uuid))
            .or_else(|| self.executed.0.keys().next().map(|(u, _)| *u))
    }
}

/// What the double has seen, shared with the test.
#[derive(Debug, Default)]
struct Seen {
    statements: Vec<String>,
    /// COM_REGISTER_SLAVE: (server_id, host, port).
    replicas: Vec<(u32, String, u16)>,
    sha2_cached: bool,
    connections: u32,
    /// Heartbeats sent while idle at the binlog's end.
    idle_heartbeats: u32,
    /// Dumps requested so far.
    dumps: u32,
    /// Binlog status rows answered so far.
    status_rows: u32,
}

struct Server {
    profile: Profile,
    opts: Options,
    binlog: Arc<Binlog>,
    server_uuid: String,
    seen: Mutex<Seen>,
    rsa: rsa::RsaPrivateKey,
    rsa_public_pem: String,
}

pub struct MysqlDouble {
    addr: SocketAddr,
    server: Arc<Server>,
    task: tokio::task::JoinHandle<()>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl MysqlDouble {
    pub fn start(profile: Profile, files: Vec<PathBuf>, opts: Options) -> MysqlDouble {
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
        assert!(
            opts.plugin != Plugin::MysqlNative || profile != Profile::Mysql9x,
            "MySQL 9 has no mysql_native_password: no account can use it"
        );
        let mut binlog = Binlog::load(&files);
        if let Some((uuid, n)) = opts.extra_purged {
            binlog.purged.add(uuid, "", 1, n);
            binlog.executed.add(uuid, "", 1, n);
        }
        if let Some((after, size)) = opts.faults.large_event {
            binlog.files[0].insert_rows_query(after, size);
        }
        if let Some((after, db, statement)) = &opts.statement {
            binlog.files[0].insert_query(*after, db, statement);
            // In a binlog with GTIDs the statement is a transaction of its own: the next
            // number of the writer's untagged GTIDs.
            if let Some(uuid) = binlog.first_uuid() {
                let gno = binlog
                    .executed
                    .0
                    .get(&(uuid, String::new()))
                    .and_then(|ivs| ivs.last())
                    .map_or(1, |&(_, end)| end + 1);
                binlog.files[0].insert_gtid(*after, uuid, gno);
                binlog.executed.add(uuid, "", gno, gno);
            }
        }
        let binlog = Arc::new(binlog);
        let server_uuid = opts.server_uuid.clone().unwrap_or_else(|| {
            binlog
                .first_uuid()
                .map(|u| uuid_text(&u))
                .unwrap_or_else(|| "3e11fa47-71ca-11e1-9e33-c80aa9429562".into())
        });
        let rsa = rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("test_rsa_key.pem"))
            .expect("tests/mysql_double/test_rsa_key.pem");
        let rsa_public_pem = rsa
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .expect("PEM");
        let server = Arc::new(Server {
            profile,
            seen: Mutex::new(Seen {
                sha2_cached: opts.sha2_cache_warm,
                ..Seen::default()
            }),
            opts,
            binlog,
            server_uuid,
            rsa,
            rsa_public_pem,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        // Bound here, not in the runtime, so that `start` also works inside an async test.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().unwrap();
        let srv = server.clone();
        let task = runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            let mut conn_id = 0u32;
            while let Ok((stream, _)) = listener.accept().await {
                conn_id += 1;
                let srv = srv.clone();
                tokio::spawn(async move {
                    let _ = Session::new(srv, stream, conn_id).run().await;
                });
            }
        });
        MysqlDouble {
            addr,
            server,
            task,
            runtime: Some(runtime),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `mysql://user:password@127.0.0.1:PORT` for the configured account.
    pub fn url(&self) -> String {
        format!(
            "mysql://{}:{}@127.0.0.1:{}",
            self.server.opts.user,
            self.server.opts.password,
            self.port()
        )
    }

    pub fn server_uuid(&self) -> String {
        self.server.server_uuid.clone()
    }

    /// `@@gtid_executed` as the double answers it.
    pub fn gtid_executed(&self) -> String {
        self.server.binlog.executed.to_string()
    }

    /// Every statement and command received so far, in order.
    pub fn statements(&self) -> Vec<String> {
        self.server.seen.lock().unwrap().statements.clone()
    }

    /// The statements that got error 1064 because the double does not know them.
    pub fn unknown_statements(&self) -> Vec<String> {
        self.statements()
            .into_iter()
            .filter_map(|s| s.strip_prefix("UNKNOWN ").map(str::to_string))
            .collect()
    }

    /// Heartbeats sent so far by dumps idle at the binlog's end.
    pub fn idle_heartbeats(&self) -> u32 {
        self.server.seen.lock().unwrap().idle_heartbeats
    }

    /// The name the `i`th file is served under.
    pub fn file_name(&self, i: usize) -> String {
        self.server.binlog.files[i].name.clone()
    }

    /// Dumps (COM_BINLOG_DUMP and COM_BINLOG_DUMP_GTID) requested so far.
    pub fn dumps(&self) -> u32 {
        self.server.seen.lock().unwrap().dumps
    }

    pub fn connections(&self) -> u32 {
        self.server.seen.lock().unwrap().connections
    }
}

impl Drop for MysqlDouble {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A reply to one statement.
enum Reply {
    Ok,
    Rows(Vec<String>, Vec<Vec<Option<String>>>),
    Err(u16, &'static str, String),
}

fn rows(cols: &[&str], rows: Vec<Vec<Option<String>>>) -> Reply {
    Reply::Rows(cols.iter().map(|c| c.to_string()).collect(), rows)
}

fn syntax_error(sql: &str) -> Reply {
    // ER_PARSE_ERROR, quoting the text from where the parser stopped (here: the whole statement).
    let near: String = sql.chars().take(80).collect();
    Reply::Err(
        1064,
        "42000",
        format!("You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near '{near}' at line 1"),
    )
}

/// A session's socket, plain or inside TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

struct Session {
    srv: Arc<Server>,
    stream: Box<dyn Io>,
    /// The client switched to TLS.
    tls: bool,
    seq: u8,
    caps: CapabilityFlags,
    conn_id: u32,
    nonce: [u8; 20],
    user_vars: HashMap<String, String>,
    /// Prepared statements: id -> SQL.
    stmts: HashMap<u32, String>,
}

const SERVER_STATUS_AUTOCOMMIT: u16 = 0x0002;

impl Session {
    fn new(srv: Arc<Server>, stream: TcpStream, conn_id: u32) -> Session {
        let mut nonce = [0u8; 20];
        for b in nonce.iter_mut() {
            // Printable and never NUL or '$', as MySQL's generate_user_salt.
            *b = b'%' + (fastrand::u8(..) % 90);
        }
        Session {
            srv,
            stream: Box::new(stream),
            tls: false,
            seq: 0,
            caps: CapabilityFlags::empty(),
            conn_id,
            nonce,
            user_vars: HashMap::new(),
            stmts: HashMap::new(),
        }
    }

    fn log(&self, what: String) {
        self.srv.seen.lock().unwrap().statements.push(what);
    }

    async fn read_packet(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let mut hdr = [0u8; 4];
            self.stream.read_exact(&mut hdr).await?;
            let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], 0]) as usize;
            self.seq = hdr[3].wrapping_add(1);
            let start = out.len();
            out.resize(start + len, 0);
            self.stream.read_exact(&mut out[start..]).await?;
            if len < 0xff_ffff {
                return Ok(out);
            }
        }
    }

    async fn write_packet(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let buf = self.frame_packet(payload);
        self.stream.write_all(&buf).await
    }

    /// `payload` as wire chunks of at most 16 MiB - 1, each with its header.
    fn frame_packet(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(payload.len() + 8);
        let mut chunks = payload.chunks(0xff_ffff).peekable();
        if payload.is_empty() {
            buf.extend_from_slice(&[0, 0, 0, self.seq]);
            self.seq = self.seq.wrapping_add(1);
        }
        while let Some(c) = chunks.next() {
            buf.extend_from_slice(&(c.len() as u32).to_le_bytes()[..3]);
            buf.push(self.seq);
            self.seq = self.seq.wrapping_add(1);
            buf.extend_from_slice(c);
            if c.len() == 0xff_ffff && chunks.peek().is_none() {
                buf.extend_from_slice(&[0, 0, 0, self.seq]);
                self.seq = self.seq.wrapping_add(1);
            }
        }
        buf
    }

    async fn ok(&mut self) -> std::io::Result<()> {
        let mut p = vec![0x00, 0, 0];
        p.extend_from_slice(&SERVER_STATUS_AUTOCOMMIT.to_le_bytes());
        p.extend_from_slice(&0u16.to_le_bytes());
        self.write_packet(&p).await
    }

    async fn err(&mut self, code: u16, state: &str, msg: &str) -> std::io::Result<()> {
        let mut p = vec![0xff];
        p.extend_from_slice(&code.to_le_bytes());
        p.push(b'#');
        p.extend_from_slice(state.as_bytes());
        p.extend_from_slice(msg.as_bytes());
        self.write_packet(&p).await
    }

    fn deprecate_eof(&self) -> bool {
        self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// An EOF packet, or with CLIENT_DEPRECATE_EOF an OK packet with the 0xFE header.
    async fn eof(&mut self, terminator: bool) -> std::io::Result<()> {
        let mut p = vec![0xfe];
        if self.deprecate_eof() {
            if !terminator {
                return Ok(());
            }
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&SERVER_STATUS_AUTOCOMMIT.to_le_bytes());
            p.extend_from_slice(&0u16.to_le_bytes());
        } else {
            p.extend_from_slice(&0u16.to_le_bytes());
            p.extend_from_slice(&SERVER_STATUS_AUTOCOMMIT.to_le_bytes());
        }
        self.write_packet(&p).await
    }

    async fn run(mut self) -> std::io::Result<()> {
        self.srv.seen.lock().unwrap().connections += 1;
        if !self.handshake().await? {
            return Ok(());
        }
        loop {
            let packet = match self.read_packet().await {
                Ok(p) => p,
                Err(_) => return Ok(()),
            };
            let Some((&cmd, body)) = packet.split_first() else {
                return Ok(());
            };
            match cmd {
                // COM_QUIT
                0x01 => {
                    self.log("COM_QUIT".into());
                    return Ok(());
                }
                // COM_QUERY
                0x03 => {
                    let sql = String::from_utf8_lossy(self.query_text(body)).into_owned();
                    let reply = self.answer(&sql);
                    self.send_reply(reply, false).await?;
                }
                // COM_PING
                0x0e => {
                    self.log("COM_PING".into());
                    self.ok().await?
                }
                // COM_REGISTER_SLAVE: MySQL records the replica (SHOW REPLICAS lists it), answers OK.
                0x15 => {
                    let reg: ComRegisterSlave<'_> = ParseBuf(&packet).parse(()).map_err(bad)?;
                    let host = reg.hostname().into_owned();
                    self.log(format!(
                        "COM_REGISTER_SLAVE server_id={} host={host}",
                        reg.server_id()
                    ));
                    let entry = (reg.server_id(), host, reg.port());
                    {
                        let mut seen = self.srv.seen.lock().unwrap();
                        seen.replicas.retain(|r| r.0 != entry.0);
                        seen.replicas.push(entry);
                    }
                    self.ok().await?;
                }
                // COM_BINLOG_DUMP
                0x12 => {
                    let dump: ComBinlogDump<'_> = ParseBuf(&packet).parse(()).map_err(bad)?;
                    let file = dump.filename().into_owned();
                    self.log(format!(
                        "COM_BINLOG_DUMP file={file} pos={} flags={:?}",
                        dump.pos(),
                        dump.flags()
                    ));
                    let non_block = dump.flags().bits() & 0x01 != 0;
                    return self
                        .dump(file, u64::from(dump.pos()), None, non_block)
                        .await;
                }
                // COM_BINLOG_DUMP_GTID
                0x1e => {
                    let dump: ComBinlogDumpGtid<'_> = ParseBuf(&packet).parse(()).map_err(bad)?;
                    // The SID block is read as MySQL reads it, not with mysql_common (which
                    // wrote it on binsync's side): a disagreement must show.
                    let set = match dump_gtid_sid_block(body).and_then(decode_sid_block) {
                        Ok(set) => set,
                        Err(why) => {
                            self.log(format!("COM_BINLOG_DUMP_GTID malformed: {why}"));
                            // ER_MALFORMED_GTID_SET_ENCODING (Gtid_set::add_gtid_encoding).
                            return self
                                .err(1773, "HY000", "Malformed GTID_set encoding.")
                                .await;
                        }
                    };
                    self.log(format!(
                        "COM_BINLOG_DUMP_GTID file={} pos={} gtids={set}",
                        dump.filename(),
                        dump.pos()
                    ));
                    let non_block = dump.flags().bits() & 0x01 != 0;
                    return self
                        .dump(
                            dump.filename().into_owned(),
                            dump.pos(),
                            Some(set),
                            non_block,
                        )
                        .await;
                }
                // COM_STMT_PREPARE
                0x16 => {
                    let sql = String::from_utf8_lossy(body).into_owned();
                    self.log(format!("PREPARE {sql}"));
                    self.prepare(sql).await?;
                }
                // COM_STMT_EXECUTE
                0x17 => self.execute(body).await?,
                // COM_STMT_CLOSE: no reply.
                0x19 => {
                    if let Some(id) = body.get(..4) {
                        self.stmts
                            .remove(&u32::from_le_bytes(id.try_into().unwrap()));
                    }
                }
                // COM_STMT_RESET
                0x1a => self.ok().await?,
                other => {
                    self.log(format!("UNKNOWN command 0x{other:02x}"));
                    eprintln!("mysql_double: unknown command 0x{other:02x}");
                    self.err(1047, "08S01", "Unknown command").await?;
                }
            }
        }
    }

    /// COM_QUERY's text; with CLIENT_QUERY_ATTRIBUTES it is preceded by the attribute counts.
    fn query_text<'a>(&self, body: &'a [u8]) -> &'a [u8] {
        if self.caps.contains(CapabilityFlags::CLIENT_QUERY_ATTRIBUTES) && body.len() >= 2 {
            // parameter_count = 0, parameter_set_count = 1 (binsync sends no attributes).
            &body[2..]
        } else {
            body
        }
    }

    /// HandshakeV10, the response, and the account's authentication. False: refused.
    async fn handshake(&mut self) -> std::io::Result<bool> {
        let profile = self.srv.profile;
        // What MySQL 8.0.36 / 8.4 / 9.x advertise without TLS configured (no CLIENT_SSL), less
        // CLIENT_COMPRESS (the double does not compress).
        let mut caps = CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_FOUND_ROWS
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB
            | CapabilityFlags::CLIENT_NO_SCHEMA
            | CapabilityFlags::CLIENT_ODBC
            | CapabilityFlags::CLIENT_LOCAL_FILES
            | CapabilityFlags::CLIENT_IGNORE_SPACE
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_INTERACTIVE
            | CapabilityFlags::CLIENT_IGNORE_SIGPIPE
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_RESERVED
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_MULTI_STATEMENTS
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_CONNECT_ATTRS
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CapabilityFlags::CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
            | CapabilityFlags::CLIENT_SESSION_TRACK
            | CapabilityFlags::CLIENT_DEPRECATE_EOF
            | CapabilityFlags::CLIENT_QUERY_ATTRIBUTES
            | CapabilityFlags::MULTI_FACTOR_AUTHENTICATION;
        if self.srv.opts.tls.is_some() {
            caps |= CapabilityFlags::CLIENT_SSL;
        }
        let mut scramble_2 = self.nonce[8..].to_vec();
        scramble_2.push(0);
        let hs = HandshakePacket::new(
            10,
            profile.version().as_bytes(),
            self.conn_id,
            self.nonce[..8].try_into().unwrap(),
            Some(scramble_2),
            caps,
            // utf8mb4_0900_ai_ci, the default collation of MySQL 8.0+.
            255,
            mysql_common::constants::StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            // The default authentication plugin of MySQL 8.0+.
            Some(&b"caching_sha2_password"[..]),
        );
        let mut buf = Vec::new();
        hs.serialize(&mut buf);
        self.seq = 0;
        self.write_packet(&buf).await?;
        let mut resp = self.read_packet().await?;
        // An SSL request: the fixed part of a handshake response with CLIENT_SSL, and nothing
        // else; TLS follows, then the whole response inside it.
        if let Some(config) = self.srv.opts.tls.clone() {
            let flags = resp
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            if resp.len() == 32
                && flags.is_some_and(|f| f & CapabilityFlags::CLIENT_SSL.bits() != 0)
            {
                let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::duplex(1).0));
                let tls = tokio_rustls::TlsAcceptor::from(config)
                    .accept(plain)
                    .await?;
                self.stream = Box::new(tls);
                self.tls = true;
                self.log("TLS".into());
                resp = self.read_packet().await?;
            }
        }
        let resp: HandshakeResponse<'_> = ParseBuf(&resp).parse(()).map_err(bad)?;
        self.caps = resp.capabilities() & caps;
        let user = String::from_utf8_lossy(resp.user()).into_owned();
        let client_plugin = resp
            .auth_plugin()
            .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
            .unwrap_or_default();
        let scramble = resp.scramble_buf().to_vec();
        self.log(format!("CONNECT user={user} plugin={client_plugin}"));
        let opts = &self.srv.opts;
        if opts.require_secure_transport && !self.tls {
            // ER_SECURE_TRANSPORT_REQUIRED: checked before the account's plugin runs.
            self.err(
                3159,
                "HY000",
                "Connections using insecure transport are prohibited while --require_secure_transport=ON.",
            )
            .await?;
            return Ok(false);
        }
        let using_password = if scramble.is_empty() { "NO" } else { "YES" };
        // ER_ACCESS_DENIED_ERROR, as MySQL words it for a TCP client from 127.0.0.1.
        let denied = format!(
            "Access denied for user '{user}'@'localhost' (using password: {using_password})"
        );
        if user != opts.user {
            self.err(1045, "28000", &denied).await?;
            return Ok(false);
        }
        let password = opts.password.clone();
        match opts.plugin {
            Plugin::MysqlNative => {
                if !profile.native_password_loaded() {
                    // ER_PLUGIN_IS_NOT_LOADED: 8.4 ships mysql_native_password disabled.
                    self.err(
                        1524,
                        "HY000",
                        "Plugin 'mysql_native_password' is not loaded",
                    )
                    .await?;
                    return Ok(false);
                }
                let answer = if client_plugin == "mysql_native_password" {
                    scramble
                } else {
                    // AuthSwitchRequest to the account's plugin, with a fresh copy of the nonce.
                    let mut p = vec![0xfe];
                    p.extend_from_slice(b"mysql_native_password\0");
                    p.extend_from_slice(&self.nonce);
                    p.push(0);
                    self.write_packet(&p).await?;
                    self.read_packet().await?
                };
                let expected =
                    mysql_common::scramble::scramble_native(&self.nonce, password.as_bytes())
                        .map(|s| s.to_vec())
                        .unwrap_or_default();
                if answer != expected {
                    self.err(1045, "28000", &denied).await?;
                    return Ok(false);
                }
                self.ok().await?;
                Ok(true)
            }
            Plugin::CachingSha2 => {
                let scramble = if client_plugin == "caching_sha2_password" {
                    scramble
                } else {
                    let mut p = vec![0xfe];
                    p.extend_from_slice(b"caching_sha2_password\0");
                    p.extend_from_slice(&self.nonce);
                    p.push(0);
                    self.write_packet(&p).await?;
                    self.read_packet().await?
                };
                self.caching_sha2(&scramble, &password, &denied).await
            }
        }
    }

    /// caching_sha2_password (sql/auth/sha2_password.cc): the fast path when the account is in
    /// the cache and the scramble matches; otherwise full authentication, which over plain TCP
    /// needs the server's RSA public key.
    async fn caching_sha2(
        &mut self,
        scramble: &[u8],
        password: &str,
        denied: &str,
    ) -> std::io::Result<bool> {
        if password.is_empty() && scramble.is_empty() {
            self.ok().await?;
            return Ok(true);
        }
        let expected = mysql_common::scramble::scramble_sha256(&self.nonce, password.as_bytes())
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let cached = self.srv.seen.lock().unwrap().sha2_cached && !self.srv.opts.sha2_cache_off;
        if cached && scramble == expected {
            self.log("AUTH caching_sha2_password fast".into());
            // fast_auth_success, then OK.
            self.write_packet(&[0x01, 0x03]).await?;
            self.ok().await?;
            return Ok(true);
        }
        // perform_full_authentication
        self.write_packet(&[0x01, 0x04]).await?;
        let mut reply = self.read_packet().await?;
        if self.tls {
            // Inside TLS the client sends the password itself.
            self.log("AUTH caching_sha2_password full (TLS)".into());
            let mut want = password.as_bytes().to_vec();
            want.push(0);
            if reply != want {
                self.err(1045, "28000", denied).await?;
                return Ok(false);
            }
            self.srv.seen.lock().unwrap().sha2_cached = true;
            self.ok().await?;
            return Ok(true);
        }
        if reply == [0x02] {
            // The client asks for the public key: AuthMoreData with the PEM.
            let mut p = vec![0x01];
            if !self.srv.opts.bad_public_key {
                p.extend_from_slice(self.srv.rsa_public_pem.as_bytes());
            }
            self.write_packet(&p).await?;
            reply = self.read_packet().await?;
        }
        let clear = match self.srv.rsa.decrypt(rsa::Oaep::new::<sha1::Sha1>(), &reply) {
            Ok(mut plain) => {
                for (i, b) in plain.iter_mut().enumerate() {
                    *b ^= self.nonce[i % self.nonce.len()];
                }
                plain
            }
            // A cleartext password is refused without TLS (ER_ACCESS_DENIED as well).
            Err(_) => Vec::new(),
        };
        let mut want = password.as_bytes().to_vec();
        want.push(0);
        self.log("AUTH caching_sha2_password full (RSA)".into());
        if clear != want {
            self.err(1045, "28000", denied).await?;
            return Ok(false);
        }
        self.srv.seen.lock().unwrap().sha2_cached = true;
        self.ok().await?;
        Ok(true)
    }

    async fn send_reply(&mut self, reply: Reply, binary: bool) -> std::io::Result<()> {
        match reply {
            Reply::Ok => self.ok().await,
            Reply::Err(code, state, msg) => self.err(code, state, &msg).await,
            Reply::Rows(cols, rows) => {
                self.write_packet(&lenenc_int(cols.len() as u64)).await?;
                for c in &cols {
                    self.write_packet(&column_def(c)).await?;
                }
                self.eof(false).await?;
                for row in rows {
                    let mut p = Vec::new();
                    if binary {
                        p.push(0x00);
                        let mut bitmap = vec![0u8; (row.len() + 7 + 2) / 8];
                        for (i, v) in row.iter().enumerate() {
                            if v.is_none() {
                                bitmap[(i + 2) / 8] |= 1 << ((i + 2) % 8);
                            }
                        }
                        p.extend_from_slice(&bitmap);
                        for v in row.iter().flatten() {
                            p.extend_from_slice(&lenenc_str(v.as_bytes()));
                        }
                    } else {
                        for v in &row {
                            match v {
                                Some(v) => p.extend_from_slice(&lenenc_str(v.as_bytes())),
                                None => p.push(0xfb),
                            }
                        }
                    }
                    self.write_packet(&p).await?;
                }
                self.eof(true).await
            }
        }
    }

    async fn prepare(&mut self, sql: String) -> std::io::Result<()> {
        let params = sql.matches('?').count();
        // The result's columns, from an answer with empty parameters.
        let cols = match self.answer_inner(&bind(&sql, &vec![String::new(); params])) {
            Reply::Rows(cols, _) => cols,
            Reply::Err(code, state, msg) => return self.err(code, state, &msg).await,
            Reply::Ok => Vec::new(),
        };
        let id = self.stmts.len() as u32 + 1 + self.stmts.keys().max().copied().unwrap_or(0);
        self.stmts.insert(id, sql);
        let mut p = vec![0x00];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&(cols.len() as u16).to_le_bytes());
        p.extend_from_slice(&(params as u16).to_le_bytes());
        p.push(0);
        p.extend_from_slice(&0u16.to_le_bytes());
        self.write_packet(&p).await?;
        if params > 0 {
            for _ in 0..params {
                self.write_packet(&column_def("?")).await?;
            }
            self.eof(false).await?;
        }
        if !cols.is_empty() {
            for c in &cols {
                self.write_packet(&column_def(c)).await?;
            }
            self.eof(false).await?;
        }
        Ok(())
    }

    async fn execute(&mut self, body: &[u8]) -> std::io::Result<()> {
        let id = u32::from_le_bytes(body[..4].try_into().unwrap());
        let Some(sql) = self.stmts.get(&id).cloned() else {
            return self
                .err(
                    1243,
                    "HY000",
                    "Unknown prepared statement handler (0) given to mysqld_stmt_execute",
                )
                .await;
        };
        let n = sql.matches('?').count();
        let params = parse_params(&body[9..], n).map_err(bad)?;
        let bound = bind(&sql, &params);
        self.log(format!("EXECUTE {bound}"));
        let reply = self.answer_inner(&bound);
        self.send_reply(reply, true).await
    }

    /// Logs the statement, answers it; an unknown one is logged as such and on stderr.
    fn answer(&mut self, sql: &str) -> Reply {
        let reply = self.answer_inner(sql);
        let unknown = matches!(&reply, Reply::Err(1064, _, _)) && !self.known_1064(sql);
        if unknown {
            eprintln!("mysql_double: unknown statement, answered 1064: {sql}");
            self.log(format!("UNKNOWN {sql}"));
        } else {
            self.log(sql.to_string());
        }
        reply
    }

    /// A 1064 that the profile gives on purpose (a statement this MySQL version removed).
    fn known_1064(&self, sql: &str) -> bool {
        let u = normalize(sql).to_ascii_uppercase();
        (u == "SHOW MASTER STATUS" || u == "SHOW SLAVE HOSTS")
            && !self.srv.profile.has_master_statements()
            || u == "SHOW BINARY LOG STATUS" && !self.srv.profile.has_binary_log_status()
    }

    /// The status row's Executed_Gtid_Set (see [`Faults::status_gtid_behind`]).
    fn status_executed(&self) -> String {
        let binlog = &self.srv.binlog;
        if self.srv.opts.gtid_mode_off {
            return String::new();
        }
        let first = {
            let mut seen = self.srv.seen.lock().unwrap();
            seen.status_rows += 1;
            seen.status_rows == 1
        };
        if !self.srv.opts.faults.status_gtid_behind || !first {
            return binlog.executed.to_string();
        }
        self.log("FAULT status row without the last transaction".into());
        let last = binlog
            .files
            .iter()
            .flat_map(|f| f.events.iter())
            .filter_map(|e| e.gtid.clone())
            .next_back()
            .expect("status_gtid_behind needs a GTID in the files");
        let mut one = GtidSet::default();
        one.add(last.uuid, &last.tag, last.gno, last.gno);
        binlog.executed.minus(&one).to_string()
    }

    fn variable(&self, name: &str) -> Option<String> {
        let srv = &self.srv;
        let first_crc = srv.binlog.files[0].crc32;
        let v = match name.to_ascii_lowercase().as_str() {
            // mysql_async reads these two right after connecting; MySQL 8+'s defaults (64 MiB,
            // 8 hours).
            "max_allowed_packet" => "67108864".to_string(),
            "wait_timeout" => "28800".to_string(),
            // MySQL 8+ prints the bare version (no "-log" suffix).
            "version" => srv.profile.version().to_string(),
            "server_id" => srv.opts.server_id.to_string(),
            "server_uuid" => {
                let dumped = srv.seen.lock().unwrap().dumps > 0;
                match &srv.opts.faults.server_uuid_after_first_dump {
                    Some(other) if dumped => other.clone(),
                    _ => srv.server_uuid.clone(),
                }
            }
            // MySQL 8.0+ defaults: binary logging on, ROW, FULL images.
            "log_bin" => "ON".into(),
            "binlog_format" => "ROW".into(),
            "binlog_row_image" => "FULL".into(),
            // MINIMAL is MySQL's default; FULL where the test says the files were written so.
            "binlog_row_metadata" => srv.opts.row_metadata.clone(),
            // Not MySQL's default (OFF): a source set up as binsync's README asks, and the
            // fixtures carry GTIDs.
            "gtid_mode" | "enforce_gtid_consistency" if srv.opts.gtid_mode_off => "OFF".into(),
            "gtid_executed" | "gtid_purged" if srv.opts.gtid_mode_off => String::new(),
            "gtid_mode" => "ON".into(),
            "enforce_gtid_consistency" => "ON".into(),
            // What the files hold: the first file's PREVIOUS_GTIDS (the purged part, as after
            // PURGE BINARY LOGS) and every GTID logged after it.
            "gtid_executed" => srv.binlog.executed.to_string(),
            "gtid_purged" => srv.binlog.purged.to_string(),
            // As the files were written: CRC32 or NONE (the first file's FORMAT_DESCRIPTION).
            "binlog_checksum" => if first_crc { "CRC32" } else { "NONE" }.into(),
            // MySQL 8.0+'s default: 30 days.
            "binlog_expire_logs_seconds" => "2592000".into(),
            _ => return None,
        };
        Some(v)
    }

    fn answer_inner(&mut self, sql: &str) -> Reply {
        let norm = normalize(sql);
        let u = norm.to_ascii_uppercase();
        let profile = self.srv.profile;
        // SELECT @@a, @@GLOBAL.b: each a system variable; an unknown one is ER_UNKNOWN_SYSTEM_VARIABLE.
        if u.starts_with("SELECT @@") {
            let names: Vec<&str> = norm["SELECT ".len()..].split(',').map(str::trim).collect();
            let plain = |n: &&str| {
                n.strip_prefix("@@").is_some_and(|v| {
                    v.chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
                })
            };
            if names.iter().all(plain) {
                let mut row = Vec::new();
                for n in &names {
                    let bare = n
                        .trim_start_matches("@@")
                        .trim_start_matches("GLOBAL.")
                        .trim_start_matches("global.")
                        .trim_start_matches("SESSION.");
                    match self.variable(bare) {
                        // SELECT @@log_bin is 1 where SHOW VARIABLES says ON.
                        Some(v) if bare.eq_ignore_ascii_case("log_bin") => {
                            row.push(Some(if v == "ON" { "1".into() } else { "0".into() }))
                        }
                        Some(v) => row.push(Some(v)),
                        None => {
                            return Reply::Err(
                                1193,
                                "HY000",
                                format!("Unknown system variable '{bare}'"),
                            )
                        }
                    }
                }
                return Reply::Rows(names.iter().map(|n| n.to_string()).collect(), vec![row]);
            }
        }
        if u == "SELECT VERSION()" {
            // MySQL 8+: the bare version, no "-log".
            return rows(&["VERSION()"], vec![vec![Some(profile.version().into())]]);
        }
        // SHOW GLOBAL VARIABLES WHERE Variable_name IN ('a', 'b'): the ones this server has
        // (MySQL has no gtid_strict_mode: no row for it).
        if let Some(rest) = u.strip_prefix("SHOW GLOBAL VARIABLES WHERE VARIABLE_NAME IN (") {
            let _ = rest;
            let inner = &norm[norm.find('(').unwrap() + 1..norm.rfind(')').unwrap_or(norm.len())];
            let mut out = Vec::new();
            for name in inner.split(',') {
                let name = name.trim().trim_matches('\'');
                if let Some(v) = self.variable(name) {
                    out.push(vec![Some(name.to_string()), Some(v)]);
                }
            }
            return rows(&["Variable_name", "Value"], out);
        }
        // SET @user_var = value: any user variable is accepted (the dump reads
        // @master_heartbeat_period and @master_binlog_checksum).
        if u.starts_with("SET @") && !u.starts_with("SET @@") {
            for part in norm[4..].split(',') {
                if let Some((k, v)) = part.split_once('=') {
                    let k = k.trim().trim_start_matches('@').to_ascii_lowercase();
                    let v = v.trim().trim_matches('\'').to_string();
                    self.user_vars.insert(k, v);
                }
            }
            return Reply::Ok;
        }
        let status_row = || {
            let last = self.srv.binlog.files.last().unwrap();
            vec![
                Some(last.name.clone()),
                Some(last.end().to_string()),
                Some(String::new()),
                Some(String::new()),
                Some(self.status_executed()),
            ]
        };
        let status_cols = [
            "File",
            "Position",
            "Binlog_Do_DB",
            "Binlog_Ignore_DB",
            "Executed_Gtid_Set",
        ];
        if u == "SHOW MASTER STATUS" {
            // 8.0: answered (deprecated from 8.2); 8.4 removed it: a syntax error.
            if profile.has_master_statements() {
                return rows(&status_cols, vec![status_row()]);
            }
            return syntax_error("MASTER STATUS");
        }
        if u == "SHOW BINARY LOG STATUS" {
            // 8.2+: the new name of SHOW MASTER STATUS; 8.0 does not parse it.
            if profile.has_binary_log_status() {
                return rows(&status_cols, vec![status_row()]);
            }
            return syntax_error("BINARY LOG STATUS");
        }
        if u == "SHOW BINARY LOGS" || u == "SHOW MASTER LOGS" {
            // Log_name, File_size, Encrypted (8.0.14+); the active file's size is its end.
            let out = self
                .srv
                .binlog
                .files
                .iter()
                .map(|f| {
                    vec![
                        Some(f.name.clone()),
                        Some(f.end().to_string()),
                        Some("No".into()),
                    ]
                })
                .collect();
            return rows(&["Log_name", "File_size", "Encrypted"], out);
        }
        if u == "SELECT CURRENT_ROLE()" {
            let role = match &self.srv.opts.role {
                Some((_, true)) => "`binsync_role`@`%`",
                _ => "NONE",
            };
            return rows(&["CURRENT_ROLE()"], vec![vec![Some(role.into())]]);
        }
        if u == "SHOW GRANTS" || u.starts_with("SHOW GRANTS FOR CURRENT_USER") {
            let user = &self.srv.opts.user;
            let mut grants = self.srv.opts.grants.clone();
            if let Some((privileges, _)) = &self.srv.opts.role {
                if u.contains(" USING ") {
                    grants.insert(0, format!("GRANT {privileges} ON *.* TO `{user}`@`%`"));
                }
                grants.push(format!("GRANT `binsync_role`@`%` TO `{user}`@`%`"));
            }
            let out = grants.into_iter().map(|g| vec![Some(g)]).collect();
            return Reply::Rows(vec![format!("Grants for {user}@%")], out);
        }
        if u == "SHOW REPLICAS" || u == "SHOW SLAVE HOSTS" {
            // SHOW REPLICAS from 8.0.22; SHOW SLAVE HOSTS removed in 8.4. Lists registered replicas.
            if u == "SHOW SLAVE HOSTS" && !profile.has_master_statements() {
                return syntax_error("SLAVE HOSTS");
            }
            let uuid = self.srv.server_uuid.clone();
            let replicas = self.srv.seen.lock().unwrap().replicas.clone();
            let out = replicas
                .into_iter()
                .map(|(id, host, port)| {
                    vec![
                        Some(id.to_string()),
                        Some(host),
                        Some(port.to_string()),
                        Some(self.srv.opts.server_id.to_string()),
                        Some(uuid.clone()),
                    ]
                })
                .collect();
            let cols = if u == "SHOW REPLICAS" {
                ["Server_Id", "Host", "Port", "Source_Id", "Replica_UUID"]
            } else {
                ["Server_id", "Host", "Port", "Master_id", "Slave_UUID"]
            };
            return rows(&cols, out);
        }
        if u.starts_with("SELECT TABLE_SCHEMA, TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_TYPE = 'SEQUENCE'")
        {
            // MySQL has no SEQUENCE tables.
            return rows(&["TABLE_SCHEMA", "TABLE_NAME"], Vec::new());
        }
        if u.starts_with("SELECT T.TABLE_SCHEMA, T.TABLE_NAME FROM INFORMATION_SCHEMA.TABLES T") {
            // The described tables without a primary key (the double knows no other unique keys),
            // outside the system schemas.
            let system = ["mysql", "information_schema", "performance_schema", "sys"];
            let mut out: Vec<Vec<Option<String>>> = self
                .srv
                .opts
                .tables
                .iter()
                .filter(|t| !system.contains(&t.db.as_str()))
                .filter(|t| !t.columns.iter().any(|c| c.primary))
                .map(|t| vec![Some(t.db.clone()), Some(t.name.clone())])
                .collect();
            out.sort();
            return rows(&["TABLE_SCHEMA", "TABLE_NAME"], out);
        }
        if u.starts_with("SELECT COLUMN_NAME, COLUMN_KEY, COLUMN_TYPE, CHARACTER_SET_NAME, DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS") {
            let (db, table) = schema_and_table(&norm);
            let out = self
                .table(&db, &table)
                .map(|t| {
                    t.columns
                        .iter()
                        .map(|c| {
                            vec![
                                Some(c.name.clone()),
                                Some(if c.primary { "PRI" } else { "" }.into()),
                                Some(c.column_type.clone()),
                                c.charset.clone(),
                                Some(c.data_type.clone()),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            return rows(
                &["COLUMN_NAME", "COLUMN_KEY", "COLUMN_TYPE", "CHARACTER_SET_NAME", "DATA_TYPE"],
                out,
            );
        }
        if u.starts_with("SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.KEY_COLUMN_USAGE") {
            let (db, table) = schema_and_table(&norm);
            let out = self
                .table(&db, &table)
                .map(|t| {
                    t.columns
                        .iter()
                        .filter(|c| c.primary)
                        .map(|c| vec![Some(c.name.clone())])
                        .collect()
                })
                .unwrap_or_default();
            return rows(&["COLUMN_NAME"], out);
        }
        if u.starts_with("SELECT CHECK_CLAUSE FROM INFORMATION_SCHEMA.CHECK_CONSTRAINTS")
            && u.contains("TABLE_NAME")
        {
            // MySQL's CHECK_CONSTRAINTS (8.0.16+) has no TABLE_NAME column.
            return Reply::Err(
                1054,
                "42S22",
                "Unknown column 'TABLE_NAME' in 'where clause'".into(),
            );
        }
        if u.starts_with("SELECT TABLE_SCHEMA, TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_TYPE = 'BASE TABLE'") {
            return self.base_tables(&norm);
        }
        if u.starts_with("SHOW CREATE TABLE ") {
            return self.show_create_table(&norm["SHOW CREATE TABLE ".len()..]);
        }
        if u.starts_with("SHOW BINLOG EVENTS") {
            return self.show_binlog_events(&norm);
        }
        syntax_error(&norm)
    }

    /// `SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE =
    /// 'BASE TABLE' [AND TABLE_SCHEMA NOT IN ('a', ...)] [ORDER BY 1, 2]`: the described
    /// tables (all InnoDB base tables), in name order. Any other shape of the statement is
    /// not known to the double.
    fn base_tables(&self, sql: &str) -> Reply {
        let head = "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'";
        let mut rest = sql[head.len()..].trim_start();
        let mut excluded: Vec<String> = Vec::new();
        let upper = rest.to_ascii_uppercase();
        if upper.starts_with("AND TABLE_SCHEMA NOT IN (") {
            let open = rest.find('(').unwrap();
            let Some(close) = rest.find(')') else {
                return syntax_error(sql);
            };
            for item in rest[open + 1..close].split(',') {
                let item = item.trim();
                match item.strip_prefix('\'').and_then(|i| i.strip_suffix('\'')) {
                    Some(name) => excluded.push(name.replace("''", "'")),
                    None => return syntax_error(sql),
                }
            }
            rest = rest[close + 1..].trim_start();
        }
        let order = rest.to_ascii_uppercase();
        if !(rest.is_empty() || order == "ORDER BY 1, 2" || order == "ORDER BY 1,2") {
            return syntax_error(sql);
        }
        let mut out: Vec<Vec<Option<String>>> = self
            .srv
            .opts
            .tables
            .iter()
            .filter(|t| !excluded.contains(&t.db))
            .map(|t| vec![Some(t.db.clone()), Some(t.name.clone())])
            .collect();
        out.sort();
        rows(&["TABLE_SCHEMA", "TABLE_NAME"], out)
    }

    /// `SHOW CREATE TABLE db.t` (names bare or backquoted): the described table as MySQL
    /// prints it ([`TableDesc::show_create`]); 1146 for a table the test did not describe,
    /// 1046 for a name without a database (the double's sessions never select one).
    fn show_create_table(&self, name: &str) -> Reply {
        let Some(parts) = identifiers(name) else {
            return syntax_error(name);
        };
        let (db, table) = match parts.as_slice() {
            [db, table] => (db.clone(), table.clone()),
            [_] => return Reply::Err(1046, "3D000", "No database selected".into()),
            _ => return syntax_error(name),
        };
        match self.table(&db, &table) {
            Some(t) => rows(
                &["Table", "Create Table"],
                vec![vec![Some(t.name.clone()), Some(t.show_create())]],
            ),
            None => Reply::Err(1146, "42S02", format!("Table '{db}.{table}' doesn't exist")),
        }
    }

    /// `SHOW BINLOG EVENTS [IN 'file'] [FROM pos] [LIMIT [skip,] n]` over the served files
    /// (MySQL's `show_binlog_events`): one row per event with its type's name, its position,
    /// its header's server id and end position (`log_pos`) and its `pack_info` text
    /// ([`describe_event`]). A TRANSACTION_PAYLOAD event is followed by the events inside it
    /// (the reader's `binlog::tools::Iterator` unfolds it), each at the payload's end, with
    /// the payload's end as End_log_pos; LIMIT counts them too. A FROM that is not an event
    /// boundary of the file is error 1220, as the reader fails there.
    fn show_binlog_events(&self, sql: &str) -> Reply {
        let cols = [
            "Log_name",
            "Pos",
            "Event_type",
            "Server_id",
            "End_log_pos",
            "Info",
        ];
        let Some((file, from, skip, limit)) = binlog_events_clauses(sql) else {
            return syntax_error(sql);
        };
        let binlog = &self.srv.binlog;
        let index = match file {
            None => 0,
            Some(name) => match binlog.files.iter().position(|f| f.name == name) {
                Some(i) => i,
                // ER_ERROR_WHEN_EXECUTING_COMMAND with the binlog reader's message.
                None => return Reply::Err(
                    1220,
                    "HY000",
                    "Error when executing command SHOW BINLOG EVENTS: Could not find target log"
                        .into(),
                ),
            },
        };
        let f = &binlog.files[index];
        // Positions below the magic's end read from the first event.
        let from = from.max(4);
        let mut events: Vec<RawEvent> = f.events.clone();
        if let Some(next) = binlog.files.get(index + 1) {
            events.push(RawEvent {
                pos: f.end(),
                bytes: self.closing_rotate(f, &next.name),
                gtid: None,
            });
        }
        let end = events.last().map_or(4, RawEvent::end);
        if from > 4 && !events.iter().any(|e| e.pos == from) && from != end {
            // A FROM that is not an event boundary: the reader fails (MySQL's wording).
            return Reply::Err(
                1220,
                "HY000",
                "Error when executing command SHOW BINLOG EVENTS: Wrong offset or I/O error".into(),
            );
        }
        let row = |pos: u64, bytes: &[u8], crc32: bool, gtid: Option<&Gtid>| {
            let (kind, info) = describe_event(bytes, crc32, gtid, &f.previous);
            let server_id = u32::from_le_bytes(bytes[5..9].try_into().unwrap());
            let log_pos = u32::from_le_bytes(bytes[13..17].try_into().unwrap());
            vec![
                Some(f.name.clone()),
                Some(pos.to_string()),
                Some(kind.to_string()),
                Some(server_id.to_string()),
                Some(log_pos.to_string()),
                Some(info),
            ]
        };
        let mut out = Vec::new();
        for e in events.iter().filter(|e| e.pos >= from) {
            out.push(row(e.pos, &e.bytes, f.crc32, e.gtid.as_ref()));
            if e.kind() == TRANSACTION_PAYLOAD_EVENT {
                let body = &e.bytes[HEADER_LEN..e.bytes.len() - if f.crc32 { 4 } else { 0 }];
                let log_pos = &e.bytes[13..17];
                for mut inner in Payload::read(body).events().unwrap_or_default() {
                    inner[13..17].copy_from_slice(log_pos);
                    out.push(row(e.end(), &inner, false, None));
                }
            }
        }
        let out = out.into_iter().skip(skip).take(limit).collect();
        rows(&cols, out)
    }

    /// The real ROTATE that closes `f` when `next` follows it.
    fn closing_rotate(&self, f: &BinlogFile, next: &str) -> Vec<u8> {
        let ts = f
            .events
            .last()
            .map_or(0, |e| u32::from_le_bytes(e.bytes[..4].try_into().unwrap()));
        let len = HEADER_LEN + 8 + next.len() + if f.crc32 { 4 } else { 0 };
        event(
            ROTATE_EVENT,
            ts,
            self.srv.opts.server_id,
            f.end() + len as u64,
            0,
            &rotate_body(4, next),
            f.crc32,
        )
    }

    fn table(&self, db: &str, table: &str) -> Option<&TableDesc> {
        self.srv
            .opts
            .tables
            .iter()
            .find(|t| t.db == db && t.name == table)
    }

    /// The dump thread: `Binlog_sender::run` of sql/rpl_binlog_sender.cc.
    async fn dump(
        &mut self,
        file: String,
        pos: u64,
        exclude: Option<GtidSet>,
        non_block: bool,
    ) -> std::io::Result<()> {
        let binlog = self.srv.binlog.clone();
        let server_id = self.srv.opts.server_id;
        let first_dump = {
            let mut seen = self.srv.seen.lock().unwrap();
            seen.dumps += 1;
            seen.dumps == 1
        };
        let faults = if first_dump {
            self.srv.opts.faults.clone()
        } else {
            Faults::default()
        };
        if let Some((code, msg)) = &faults.dump_error {
            self.log(format!("FAULT dump error {code}"));
            return self.err(*code, "HY000", msg).await;
        }
        let mut sent = 0usize;
        // Binlog_sender::init_heartbeat_period reads @master_heartbeat_period (nanoseconds; 0 or
        // unset: no heartbeats). That is the 8.0 sender's name; 8.4/9.x's is not verified here.
        let heartbeat_ns: u64 = self
            .user_vars
            .get("master_heartbeat_period")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (mut index, mut start) = match &exclude {
            Some(set) => {
                // Binlog_sender::check_start_file: the purged GTIDs must be in the request.
                if !binlog.purged.is_subset_of(set) {
                    let missing = binlog.purged.minus(set);
                    let msg = format!("Cannot replicate because the source purged required binary logs. Replicate the missing transactions from elsewhere, or provision a new replica from backup. Consider increasing the source's binary log expiration period. The GTID set sent by the replica is '{set}', and the missing transactions are '{missing}'");
                    return self.err(1236, "HY000", &msg).await;
                }
                // find_first_log_not_in_gtid_set: the newest file whose PREVIOUS_GTIDS the
                // request holds.
                let newest = binlog
                    .files
                    .iter()
                    .rposition(|f| f.previous.is_subset_of(set));
                (newest.unwrap_or(0), 4)
            }
            None if file.is_empty() => (0, pos.max(4)),
            None => match binlog.files.iter().position(|f| f.name == file) {
                Some(i) => (i, pos),
                None => {
                    return self
                        .err(
                            1236,
                            "HY000",
                            "Could not find first log file name in binary log index file",
                        )
                        .await
                }
            },
        };
        // By GTID, the FORMAT_DESCRIPTION's log_pos and `created` are cleared when the first
        // transaction of the first file is skipped, and then for every file of the dump
        // (m_gtid_clear_fd_created_flag).
        let clear_fd_by_gtid = exclude.as_ref().is_some_and(|set| {
            binlog.files[index]
                .events
                .iter()
                .find_map(|e| e.gtid.as_ref())
                .is_some_and(|g| set.contains(g))
        });
        if start < 4 {
            return self
                .err(
                    1236,
                    "HY000",
                    "Client requested source to start replication from position < 4",
                )
                .await;
        }
        if start > binlog.files[index].end() {
            return self
                .err(
                    1236,
                    "HY000",
                    "Client requested source to start replication from position > file size",
                )
                .await;
        }
        loop {
            let f = &binlog.files[index];
            // A fake ROTATE before every file: timestamp 0, log_pos 0, LOG_EVENT_ARTIFICIAL_F.
            let fake = event(
                ROTATE_EVENT,
                0,
                server_id,
                0,
                LOG_EVENT_ARTIFICIAL_F,
                &rotate_body(start, &f.name),
                f.crc32,
            );
            self.send_event(&fake).await?;
            // The file's FORMAT_DESCRIPTION with the in-use flag cleared; when the dump begins
            // past the file's head, with log_pos 0 (and `created` 0), its checksum recomputed.
            let mut fde = f.events[0].bytes.clone();
            let flags = u16::from_le_bytes([fde[17], fde[18]]) & !LOG_EVENT_BINLOG_IN_USE_F;
            fde[17..19].copy_from_slice(&flags.to_le_bytes());
            if start > 4 && exclude.is_none() || clear_fd_by_gtid {
                fde[13..17].copy_from_slice(&0u32.to_le_bytes());
                fde[HEADER_LEN + 52..HEADER_LEN + 56].copy_from_slice(&0u32.to_le_bytes());
            }
            if f.crc32 {
                let n = fde.len();
                let crc = crc32fast::hash(&fde[..n - 4]);
                fde[n - 4..].copy_from_slice(&crc.to_le_bytes());
            }
            self.send_event(&fde).await?;
            if let Some(pause) = faults.stall_at_start.filter(|_| sent == 0) {
                self.log(format!("FAULT stall at start for {pause:?}"));
                tokio::time::sleep(pause).await;
            }
            // Events from `start`; a transaction whose GTID the request holds is skipped, and a
            // heartbeat at its end tells the replica how far the source has read.
            let mut in_excluded = false;
            let mut excluded_end = 0u64;
            for ev in f.events.iter().skip(1).filter(|e| e.pos >= start) {
                if let Some(set) = &exclude {
                    in_excluded = match (&ev.gtid, ev.kind()) {
                        (Some(g), _) => set.contains(g),
                        (None, ROTATE_EVENT) => false,
                        _ => in_excluded,
                    };
                }
                if in_excluded {
                    excluded_end = ev.end();
                    continue;
                }
                if excluded_end != 0 {
                    let hb = heartbeat(server_id, &f.name, excluded_end, f.crc32);
                    self.send_event(&hb).await?;
                    excluded_end = 0;
                }
                if faults.drop_after_events == Some(sent) {
                    self.log(format!("FAULT drop after {sent} events"));
                    if faults.drop_mid_payload {
                        self.send_partial(&ev.bytes).await?;
                    }
                    return Ok(());
                }
                if faults.stall_after_events == Some(sent) {
                    self.log(format!("FAULT stall after {sent} events"));
                    std::future::pending::<()>().await;
                }
                self.send_event(&ev.bytes).await?;
                sent += 1;
            }
            if excluded_end != 0 {
                let hb = heartbeat(server_id, &f.name, excluded_end, f.crc32);
                self.send_event(&hb).await?;
            }
            if index + 1 == binlog.files.len() {
                break;
            }
            // A real ROTATE closes a file that is not the last.
            let next = binlog.files[index + 1].name.clone();
            let rotate = self.closing_rotate(f, &next);
            self.send_event(&rotate).await?;
            index += 1;
            start = 4;
        }
        let last = binlog.files.last().unwrap();
        if non_block {
            // BINLOG_DUMP_NON_BLOCK: the dump ends at the end of the binlog with an EOF.
            return self.eof(true).await;
        }
        // Idle at the end of the active file: a heartbeat every period (none without one).
        loop {
            if heartbeat_ns == 0 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                continue;
            }
            tokio::time::sleep(Duration::from_nanos(heartbeat_ns)).await;
            let hb = heartbeat(server_id, &last.name, last.end(), last.crc32);
            self.send_event(&hb).await?;
            self.srv.seen.lock().unwrap().idle_heartbeats += 1;
        }
    }

    /// The start of `ev`'s packet: a header with the whole length, then half the payload.
    async fn send_partial(&mut self, ev: &[u8]) -> std::io::Result<()> {
        let len = ev.len() + 1;
        let mut buf = (len as u32).to_le_bytes()[..3].to_vec();
        buf.push(self.seq);
        buf.push(0x00);
        buf.extend_from_slice(&ev[..ev.len() / 2]);
        self.stream.write_all(&buf).await?;
        self.stream.flush().await
    }

    /// One binlog event on the wire: the OK byte, then the event.
    async fn send_event(&mut self, ev: &[u8]) -> std::io::Result<()> {
        let mut p = Vec::with_capacity(ev.len() + 1);
        p.push(0x00);
        p.extend_from_slice(ev);
        match self.srv.opts.faults.slow_large_events {
            Some(total) if ev.len() > 1 << 20 => {
                let wire = self.frame_packet(&p);
                let pieces = wire.len().div_ceil(64 << 10);
                self.log(format!(
                    "FAULT slow event of {} bytes over {total:?}",
                    ev.len()
                ));
                for piece in wire.chunks(64 << 10) {
                    self.stream.write_all(piece).await?;
                    self.stream.flush().await?;
                    tokio::time::sleep(total / pieces as u32).await;
                }
                Ok(())
            }
            _ => self.write_packet(&p).await,
        }
    }
}

/// `Log_event::get_type_str`: SHOW BINLOG EVENTS' Event_type for an event type code.
fn event_type_name(kind: u8) -> &'static str {
    match kind {
        2 => "Query",
        3 => "Stop",
        ROTATE_EVENT => "Rotate",
        5 => "Intvar",
        9 => "Append_block",
        11 => "Delete_file",
        13 => "RAND",
        14 => "User var",
        FORMAT_DESCRIPTION_EVENT => "Format_desc",
        16 => "Xid",
        17 => "Begin_load_query",
        18 => "Execute_load_query",
        19 => "Table_map",
        23 => "Write_rows_v1",
        24 => "Update_rows_v1",
        25 => "Delete_rows_v1",
        26 => "Incident",
        HEARTBEAT_LOG_EVENT => "Heartbeat",
        28 => "Ignorable",
        29 => "Rows_query",
        30 => "Write_rows",
        31 => "Update_rows",
        32 => "Delete_rows",
        GTID_LOG_EVENT => "Gtid",
        34 => "Anonymous_Gtid",
        PREVIOUS_GTIDS_LOG_EVENT => "Previous_gtids",
        36 => "Transaction_context",
        37 => "View_change",
        38 => "XA_prepare",
        39 => "Update_rows_partial",
        TRANSACTION_PAYLOAD_EVENT => "Transaction_payload",
        GTID_TAGGED_LOG_EVENT => "Gtid_tagged",
        _ => "Unknown",
    }
}

/// SHOW BINLOG EVENTS' Event_type and Info for one event (`bytes`, with its checksum when
/// `crc32`): each event class's `pack_info`, for the events the fixtures hold; others get
/// their type's name and no Info. `gtid` is the event's GTID (read when the file was
/// loaded), `previous` the set of the file's PREVIOUS_GTIDS.
fn describe_event(
    bytes: &[u8],
    crc32: bool,
    gtid: Option<&Gtid>,
    previous: &GtidSet,
) -> (&'static str, String) {
    let b = &bytes[..bytes.len() - if crc32 { 4 } else { 0 }];
    let body = &b[HEADER_LEN..];
    let kind = bytes[4];
    let flags = u16::from_le_bytes([bytes[17], bytes[18]]);
    let name = event_type_name(kind);
    let gtid_next = |g: &Gtid| {
        let tag = if g.tag.is_empty() {
            String::new()
        } else {
            format!(":{}", g.tag)
        };
        format!(
            "SET @@SESSION.GTID_NEXT= '{}{tag}:{}'",
            uuid_text(&g.uuid),
            g.gno
        )
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let info = match kind {
        // Query_log_event::pack_info: `use `db`; ` unless LOG_EVENT_SUPPRESS_USE_F (set on
        // statements that name their database themselves, such as CREATE DATABASE).
        2 if body.len() >= 13 => {
            let db_len = body[8] as usize;
            let vars = u16::from_le_bytes([body[11], body[12]]) as usize;
            let db_at = 13 + vars;
            let db = text(body.get(db_at..db_at + db_len).unwrap_or_default());
            let query = text(body.get(db_at + db_len + 1..).unwrap_or_default());
            if db.is_empty() || flags & LOG_EVENT_SUPPRESS_USE_F != 0 {
                query
            } else {
                format!("use {}; {query}", backquoted(&db))
            }
        }
        ROTATE_EVENT => format!(
            "{};pos={}",
            text(&body[8..]),
            u64::from_le_bytes(body[..8].try_into().unwrap())
        ),
        // The version of the server that wrote the file (the event's own field).
        FORMAT_DESCRIPTION_EVENT => {
            let version = &body[2..52];
            let version = &version[..version.iter().position(|&c| c == 0).unwrap_or(50)];
            format!(
                "Server ver: {}, Binlog ver: {}",
                text(version),
                u16::from_le_bytes([body[0], body[1]])
            )
        }
        // Intvar: LAST_INSERT_ID (1) or INSERT_ID (2).
        5 if body.len() >= 9 => {
            let what = if body[0] == 1 {
                "LAST_INSERT_ID"
            } else {
                "INSERT_ID"
            };
            format!(
                "{what}={}",
                u64::from_le_bytes(body[1..9].try_into().unwrap())
            )
        }
        16 => format!(
            "COMMIT /* xid={} */",
            u64::from_le_bytes(body[..8].try_into().unwrap())
        ),
        19 => {
            let id =
                u64::from_le_bytes([body[0], body[1], body[2], body[3], body[4], body[5], 0, 0]);
            let db_len = body[8] as usize;
            let db = text(&body[9..9 + db_len]);
            let t_at = 9 + db_len + 1;
            let t_len = body[t_at] as usize;
            let t = text(&body[t_at + 1..t_at + 1 + t_len]);
            format!("table_id: {id} ({db}.{t})")
        }
        // Rows_query_log_event::pack_info: the statement after a length byte it ignores.
        29 => format!("# {}", text(body.get(1..).unwrap_or_default())),
        23..=25 | 30..=32 | 39 => {
            let id =
                u64::from_le_bytes([body[0], body[1], body[2], body[3], body[4], body[5], 0, 0]);
            let end = if body[6] & 1 != 0 {
                " flags: STMT_END_F"
            } else {
                ""
            };
            format!("table_id: {id}{end}")
        }
        GTID_LOG_EVENT | GTID_TAGGED_LOG_EVENT => gtid.map(gtid_next).unwrap_or_default(),
        34 => "SET @@SESSION.GTID_NEXT= 'ANONYMOUS'".into(),
        PREVIOUS_GTIDS_LOG_EVENT => previous.to_string(),
        TRANSACTION_PAYLOAD_EVENT => {
            let p = Payload::read(body);
            let algorithm = match p.compression {
                0 => "ZSTD".to_string(),
                255 => "NONE".to_string(),
                other => other.to_string(),
            };
            format!(
                "compression='{algorithm}', decompressed_size={} bytes",
                p.uncompressed_size
            )
        }
        _ => String::new(),
    };
    (name, info)
}

/// A TRANSACTION_PAYLOAD event's body (`Transaction_payload_event::write_data_header`):
/// fields as (type, length, value) packed integers up to an end mark, then the payload.
struct Payload<'a> {
    /// 0: zstd; 255: none.
    compression: u64,
    uncompressed_size: u64,
    data: &'a [u8],
}

impl<'a> Payload<'a> {
    fn read(body: &'a [u8]) -> Payload<'a> {
        // net_field_length_ll: one byte under 251, else 252/253/254 and 2, 3 or 8 bytes.
        fn packed(b: &[u8], at: &mut usize) -> Option<u64> {
            let first = *b.get(*at)?;
            let (len, skip) = match first {
                0..=250 => {
                    return Some({
                        *at += 1;
                        u64::from(first)
                    })
                }
                252 => (2, 1),
                253 => (3, 1),
                254 => (8, 1),
                _ => return None,
            };
            let bytes = b.get(*at + skip..*at + skip + len)?;
            let mut v = [0u8; 8];
            v[..len].copy_from_slice(bytes);
            *at += skip + len;
            Some(u64::from_le_bytes(v))
        }
        let mut p = Payload {
            compression: 255,
            uncompressed_size: 0,
            data: &[],
        };
        let mut at = 0;
        while let Some(field) = packed(body, &mut at) {
            if field == 0 {
                break;
            }
            let Some(len) = packed(body, &mut at) else {
                break;
            };
            let end = at + len as usize;
            let mut v_at = at;
            let value = packed(body, &mut v_at).unwrap_or(0);
            match field {
                2 => p.compression = value,
                3 => p.uncompressed_size = value,
                _ => {}
            }
            at = end;
        }
        p.data = body.get(at..).unwrap_or_default();
        p
    }

    /// The events inside (no checksums), or None where the payload does not decompress to
    /// the size its header states. MySQL's `Iterable_buffer` then yields no event, so SHOW
    /// BINLOG EVENTS lists the payload event alone (the dump still sends it whole: the
    /// replica finds the damage).
    fn events(&self) -> Option<Vec<Vec<u8>>> {
        let plain = match self.compression {
            0 => zstd::decode_all(self.data).ok()?,
            255 => self.data.to_vec(),
            _ => return None,
        };
        if plain.len() as u64 != self.uncompressed_size {
            return None;
        }
        let mut out = Vec::new();
        let mut at = 0;
        while at + HEADER_LEN <= plain.len() {
            let size = u32::from_le_bytes(plain[at + 9..at + 13].try_into().unwrap()) as usize;
            if size < HEADER_LEN || at + size > plain.len() {
                return None;
            }
            out.push(plain[at..at + size].to_vec());
            at += size;
        }
        (at == plain.len()).then_some(out)
    }
}

fn rotate_body(pos: u64, name: &str) -> Vec<u8> {
    let mut b = pos.to_le_bytes().to_vec();
    b.extend_from_slice(name.as_bytes());
    b
}

/// A HEARTBEAT_LOG_EVENT (v1): timestamp 0, log_pos where the source is, the file's name.
fn heartbeat(server_id: u32, file: &str, log_pos: u64, crc32: bool) -> Vec<u8> {
    event(
        HEARTBEAT_LOG_EVENT,
        0,
        server_id,
        log_pos,
        0,
        file.as_bytes(),
        crc32,
    )
}

fn event(
    kind: u8,
    ts: u32,
    server_id: u32,
    log_pos: u64,
    flags: u16,
    body: &[u8],
    crc32: bool,
) -> Vec<u8> {
    let len = HEADER_LEN + body.len() + if crc32 { 4 } else { 0 };
    let mut e = Vec::with_capacity(len);
    e.extend_from_slice(&ts.to_le_bytes());
    e.push(kind);
    e.extend_from_slice(&server_id.to_le_bytes());
    e.extend_from_slice(&(len as u32).to_le_bytes());
    e.extend_from_slice(&(log_pos as u32).to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    e.extend_from_slice(body);
    if crc32 {
        let crc = crc32fast::hash(&e);
        e.extend_from_slice(&crc.to_le_bytes());
    }
    e
}

fn bad(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

fn normalize(sql: &str) -> String {
    sql.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(';')
        .to_string()
}

/// `SHOW BINLOG EVENTS [IN 'file'] [FROM pos] [LIMIT [skip,] n]`'s clauses: (file, from,
/// skip, limit); None for anything else.
fn binlog_events_clauses(sql: &str) -> Option<(Option<String>, u64, usize, usize)> {
    let rest = sql.get("SHOW BINLOG EVENTS".len()..)?;
    // LIMIT's comma may have spaces on either side.
    let rest = rest.replace(" ,", ",").replace(", ", ",");
    let mut words = rest.split_whitespace().peekable();
    let mut file = None;
    let (mut from, mut skip, mut limit) = (4u64, 0usize, usize::MAX);
    if words.peek().is_some_and(|w| w.eq_ignore_ascii_case("IN")) {
        words.next();
        let quoted = words.next()?;
        let name = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
        file = Some(name.to_string());
    }
    if words.peek().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
        words.next();
        from = words.next()?.parse().ok()?;
    }
    if words
        .peek()
        .is_some_and(|w| w.eq_ignore_ascii_case("LIMIT"))
    {
        words.next();
        let l = words.next()?;
        match l.split_once(',') {
            Some((a, b)) => {
                skip = a.parse().ok()?;
                limit = b.parse().ok()?;
            }
            None => limit = l.parse().ok()?,
        }
    }
    words.next().is_none().then_some((file, from, skip, limit))
}

/// A dotted name of bare or backquoted identifiers (`` `a``b`.t ``), each unquoted; None
/// if it is not one.
fn identifiers(text: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'`') {
            chars.next();
            loop {
                match chars.next()? {
                    '`' if chars.peek() == Some(&'`') => {
                        chars.next();
                        part.push('`');
                    }
                    '`' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_alphanumeric() || c == '_' || c == '$' {
                    part.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
        }
        if part.is_empty() {
            return None;
        }
        out.push(part);
        match chars.next() {
            None => return Some(out),
            Some('.') => {}
            Some(_) => return None,
        }
    }
}

/// `TABLE_SCHEMA = 'db' AND TABLE_NAME = 't'` of a bound statement.
fn schema_and_table(sql: &str) -> (String, String) {
    let value = |key: &str| {
        let at = sql.find(key)? + key.len();
        let rest = sql[at..].trim_start().strip_prefix('=')?.trim_start();
        let rest = rest.strip_prefix('\'')?;
        Some(rest[..rest.find('\'')?].to_string())
    };
    (
        value("TABLE_SCHEMA").unwrap_or_default(),
        value("TABLE_NAME").unwrap_or_default(),
    )
}

/// The statement with each `?` replaced by its parameter as a quoted literal.
fn bind(sql: &str, params: &[String]) -> String {
    let mut out = String::new();
    let mut it = params.iter();
    for c in sql.chars() {
        if c == '?' {
            let p = it.next().cloned().unwrap_or_default();
            out.push('\'');
            out.push_str(&p.replace('\'', "''"));
            out.push('\'');
        } else {
            out.push(c);
        }
    }
    out
}

/// COM_STMT_EXECUTE's parameters after the iteration count: strings and integers.
fn parse_params(buf: &[u8], n: usize) -> Result<Vec<String>, String> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let bitmap_len = n.div_ceil(8);
    let bitmap = buf.get(..bitmap_len).ok_or("short execute")?;
    let mut at = bitmap_len;
    let bound = *buf.get(at).ok_or("short execute")?;
    at += 1;
    if bound != 1 {
        return Err("the double needs new-params-bound on every execute".into());
    }
    let types: Vec<u8> = (0..n)
        .map(|i| buf.get(at + 2 * i).copied().unwrap_or(0))
        .collect();
    at += 2 * n;
    let mut out = Vec::new();
    for (i, t) in types.iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            out.push(String::new());
            continue;
        }
        match t {
            // TINY, SHORT, LONG, LONGLONG
            1 => {
                out.push(buf[at].to_string());
                at += 1;
            }
            2 => {
                out.push(u16::from_le_bytes(buf[at..at + 2].try_into().unwrap()).to_string());
                at += 2;
            }
            3 => {
                out.push(u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()).to_string());
                at += 4;
            }
            8 => {
                out.push(u64::from_le_bytes(buf[at..at + 8].try_into().unwrap()).to_string());
                at += 8;
            }
            _ => {
                let (len, used) = read_lenenc(&buf[at..]).ok_or("bad length")?;
                at += used;
                let s = buf.get(at..at + len as usize).ok_or("short string")?;
                out.push(String::from_utf8_lossy(s).into_owned());
                at += len as usize;
            }
        }
    }
    Ok(out)
}

fn read_lenenc(b: &[u8]) -> Option<(u64, usize)> {
    match *b.first()? {
        x @ 0..=0xfa => Some((u64::from(x), 1)),
        0xfc => Some((
            u64::from(u16::from_le_bytes(b.get(1..3)?.try_into().ok()?)),
            3,
        )),
        0xfd => {
            let mut v = [0u8; 4];
            v[..3].copy_from_slice(b.get(1..4)?);
            Some((u64::from(u32::from_le_bytes(v)), 4))
        }
        0xfe => Some((u64::from_le_bytes(b.get(1..9)?.try_into().ok()?), 9)),
        _ => None,
    }
}

fn lenenc_int(v: u64) -> Vec<u8> {
    match v {
        0..=250 => vec![v as u8],
        251..=0xffff => {
            let mut b = vec![0xfc];
            b.extend_from_slice(&(v as u16).to_le_bytes());
            b
        }
        0x1_0000..=0xff_ffff => {
            let mut b = vec![0xfd];
            b.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
            b
        }
        _ => {
            let mut b = vec![0xfe];
            b.extend_from_slice(&v.to_le_bytes());
            b
        }
    }
}

fn lenenc_str(s: &[u8]) -> Vec<u8> {
    let mut b = lenenc_int(s.len() as u64);
    b.extend_from_slice(s);
    b
}

/// Column definition 41: every column a VAR_STRING in utf8mb4.
fn column_def(name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for part in ["def", "", "", "", name, name] {
        p.extend_from_slice(&lenenc_str(part.as_bytes()));
    }
    p.push(0x0c);
    p.extend_from_slice(&255u16.to_le_bytes());
    p.extend_from_slice(&1024u32.to_le_bytes());
    // MYSQL_TYPE_VAR_STRING
    p.push(0xfd);
    p.extend_from_slice(&0u16.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&[0, 0]);
    p
}

/// The SID block as MySQL 8.4 writes it (encode_nsids_format puts the format in the low byte
/// too), decoded.
#[test]
fn sid_block_as_mysql_writes_it() {
    let uuid = [0x55u8; 16];
    let mut b = ((1u64 << 56) | (2 << 8) | 1).to_le_bytes().to_vec();
    for (tag, start, end) in [("", 1u64, 6u64), ("mytag", 1, 4)] {
        b.extend_from_slice(&uuid);
        b.push((tag.len() as u8) << 1);
        b.extend_from_slice(tag.as_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&start.to_le_bytes());
        b.extend_from_slice(&end.to_le_bytes());
    }
    let set = decode_sid_block(&b).unwrap();
    assert_eq!(
        set.to_string(),
        "55555555-5555-5555-5555-555555555555:1-5:mytag:1-3"
    );
    b.push(0);
    assert!(decode_sid_block(&b).is_err(), "trailing bytes");
}

/// `SHOW CREATE TABLE` as the double writes it, for the types the tests describe, is read
/// by binsync's DDL reader into the same columns, key, labels and JSON-ness.
#[test]
fn show_create_table_is_read_by_the_ddl_reader() {
    let orders = TableDesc {
        db: "test".into(),
        name: "orders".into(),
        columns: vec![
            ColumnDesc::new("id", "int", true),
            ColumnDesc::new("customer", "int", false),
            ColumnDesc::new("total", "decimal(10,2)", false),
        ],
    };
    assert_eq!(
        orders.show_create(),
        "CREATE TABLE `orders` (\n  `id` int NOT NULL,\n  `customer` int DEFAULT NULL,\n  `total` decimal(10,2) DEFAULT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci"
    );
    let mut latin = ColumnDesc::new("l", "varchar(10)", false);
    latin.charset = Some("latin1".into());
    let t = TableDesc {
        db: "app".into(),
        name: "odd`name".into(),
        columns: vec![
            ColumnDesc::new("a", "bigint unsigned", true),
            ColumnDesc::new("b", "varchar(300)", true),
            ColumnDesc::new("e", "enum('var1','it''s')", false),
            ColumnDesc::new("s", "set('one','two')", false),
            ColumnDesc::new("j", "json", false),
            ColumnDesc::new("t", "text", false),
            ColumnDesc::new("bl", "blob", false),
            ColumnDesc::new("ts", "timestamp(3)", false),
            ColumnDesc::new("vb", "varbinary(8)", false),
            latin,
        ],
    };
    let text = t.show_create();
    assert!(text.contains("  `t` text,\n"), "{text}");
    assert!(
        text.contains("  `ts` timestamp(3) NULL DEFAULT NULL,\n"),
        "{text}"
    );
    assert!(text.contains("PRIMARY KEY (`a`,`b`)"), "{text}");
    assert!(
        text.contains(
            "`l` varchar(10) CHARACTER SET latin1 COLLATE latin1_swedish_ci DEFAULT NULL"
        ),
        "{text}"
    );
    let mut catalog = binsync::schema::Catalog::default();
    binsync::schema::ddl::apply(&mut catalog, &t.db, &text).unwrap_or_else(|e| panic!("{e}"));
    let read = catalog.table("app", "odd`name").expect("the table");
    let names: Vec<&str> = read.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "e", "s", "j", "t", "bl", "ts", "vb", "l"]);
    assert_eq!(read.pk, ["a", "b"]);
    assert!(read.complete);
    let col = |n: &str| &read.columns[read.column_index(n).unwrap()];
    assert_eq!(col("e").labels(), ["var1", "it's"]);
    assert_eq!(col("s").labels(), ["one", "two"]);
    assert!(col("j").json && !col("t").json);
    assert!(col("a").unsigned() && !col("a").nullable && col("t").nullable);
    assert!(col("bl").binary && col("vb").binary && !col("l").binary);
}
