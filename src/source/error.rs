//! The source's errors, decided here, at the boundary, by type:
//!
//! - [`Disconnect`]: the connection or the server went away for a while (I/O, a restarting
//!   server, too many connections). Transient: the source stage reconnects with backoff and
//!   resumes from the decoder's own position.
//! - [`SourceError`]: a person must act (wrong password, binlog purged past our position,
//!   binlog off, STATEMENT format, a server id taken). Definite: binsync stops, and the
//!   message names the fix.
//!
//! Every function of the source returns a [`Failure`], one of the two. Server error codes
//! become [`ServerCode`] variants first; messages are never matched.

use std::time::Duration;

use super::tls::TlsError;
use super::SourceConfig;
use crate::decode::{LookupError, StreamError};

/// What the source's functions fail with: one of the two kinds, as types.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Reconnecting can heal it.
    #[error(transparent)]
    Transient(#[from] Disconnect),
    /// A person must act.
    #[error(transparent)]
    Definite(#[from] SourceError),
    /// The state dir refused a write the source stage makes (a snapshot chunk's `seq` room):
    /// a full disk is waited out by `run`, anything else stops it.
    #[error(transparent)]
    State(crate::checkpoint::CheckpointError),
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

/// The server error codes binsync acts on. Others stay numbers (`SourceError::Server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCode {
    /// ER_CON_COUNT_ERROR
    TooManyConnections,
    /// ER_USER_LIMIT_REACHED: the account's `MAX_USER_CONNECTIONS` (or hourly limits) are
    /// used up; connections that end free it, so it heals like a full server.
    UserLimitReached,
    /// ER_DBACCESS_DENIED_ERROR
    DbAccessDenied,
    /// ER_ACCESS_DENIED_ERROR
    AccessDenied,
    /// ER_SERVER_SHUTDOWN
    ShuttingDown,
    /// ER_TABLEACCESS_DENIED_ERROR
    TableAccessDenied,
    /// ER_COLUMNACCESS_DENIED_ERROR
    ColumnAccessDenied,
    /// ER_LOCK_WAIT_TIMEOUT
    LockWaitTimeout,
    /// ER_LOCK_DEADLOCK
    Deadlock,
    /// ER_SPECIFIC_ACCESS_DENIED_ERROR
    SpecificAccessDenied,
    /// ER_ERROR_WHEN_EXECUTING_COMMAND: `SHOW BINLOG EVENTS` cannot read there (not an event
    /// boundary, past the end, or no such file).
    BinlogCommandFailed,
    /// ER_MASTER_FATAL_ERROR_READING_BINLOG: the dump thread cannot serve our position.
    BinlogUnavailable,
    /// ER_NOT_SUPPORTED_AUTH_MODE
    AuthModeUnsupported,
    /// ER_OPTION_PREVENTS_STATEMENT (read-only during a failover)
    ReadOnly,
    /// ER_NO_BINARY_LOGGING
    NoBinaryLogging,
    /// ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    AccessDeniedNoPassword,
    /// ER_CONNECTION_KILLED (MariaDB)
    ConnectionKilled,
    /// ER_SLAVE_SAME_ID (MariaDB): another replica registered with our server id.
    ReplicaSameId,
    /// ER_PLUGIN_IS_NOT_LOADED: at login, the account's authentication plugin is not loaded
    /// (mysql_native_password on MySQL 8.4, where it is off by default; gone in 9.0).
    PluginNotLoaded,
    /// CR_SERVER_GONE_ERROR
    GoneAway,
    /// CR_SERVER_LOST
    Lost,
    /// ER_SECURE_TRANSPORT_REQUIRED (MySQL; `require_secure_transport=ON`, plain TCP)
    SecureTransportRequired,
}

impl ServerCode {
    pub fn of(code: u16) -> Option<ServerCode> {
        use ServerCode::*;
        Some(match code {
            1040 => TooManyConnections,
            1226 => UserLimitReached,
            1044 => DbAccessDenied,
            1045 => AccessDenied,
            1053 => ShuttingDown,
            1142 => TableAccessDenied,
            1143 => ColumnAccessDenied,
            1205 => LockWaitTimeout,
            1213 => Deadlock,
            1220 => BinlogCommandFailed,
            1227 => SpecificAccessDenied,
            1236 => BinlogUnavailable,
            1251 => AuthModeUnsupported,
            1290 => ReadOnly,
            1381 => NoBinaryLogging,
            1698 => AccessDeniedNoPassword,
            1927 => ConnectionKilled,
            4052 => ReplicaSameId,
            1524 => PluginNotLoaded,
            2006 => GoneAway,
            2013 => Lost,
            3159 => SecureTransportRequired,
            _ => return None,
        })
    }
}

/// Transient: reconnecting can heal it.
#[derive(Debug, thiserror::Error)]
pub enum Disconnect {
    #[error("cannot reach the source {addr}: {detail}")]
    Unreachable { addr: String, detail: String },
    /// Nothing listens at the address (the server is down or gone): with several `--source`
    /// servers, a reason to fail over at once (see `source::failover`).
    #[error("the source {addr} refused the connection ({detail}): nothing listens there")]
    Refused { addr: String, detail: String },
    /// The server streamed from, a replica, stayed behind its own source (with several
    /// `--source` servers only, see `source::failover::LagWatch`).
    #[error("{0}")]
    Behind(String),
    #[error("connection to the source lost: {0}")]
    Io(String),
    #[error("the source ended the binlog stream")]
    StreamEnded,
    #[error("not a byte from the source for {}, not even a heartbeat: the connection is dead", crate::units::duration(*.0))]
    Silent(Duration),
    #[error("the source is not serving now (error {code}: {message})")]
    Busy { code: u16, message: String },
    /// information_schema could not be read for a table (the lookup's connection failed):
    /// the table map comes again after the reconnect, and with it the lookup.
    #[error(
        "{table}: information_schema lookup failed ({detail}); retrying from the last position"
    )]
    Lookup { table: String, detail: String },
}

impl From<TlsError> for Failure {
    /// Every TLS failure is definite.
    fn from(e: TlsError) -> Failure {
        SourceError::Tls(e).into()
    }
}

impl From<StreamError> for Failure {
    /// A transient lookup failure reconnects; every other decoding error is definite.
    fn from(e: StreamError) -> Failure {
        match e {
            StreamError::Lookup(LookupError::Transient { table, detail }) => {
                Disconnect::Lookup { table, detail }.into()
            }
            other => SourceError::Decode(other).into(),
        }
    }
}

/// Definite: a person must act; every message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    BadUrl(String),
    #[error("gave up reaching the source {addr} after {}: {last}; check --source and that the server is running (or raise --connect-timeout)", humantime::format_duration(*.waited))]
    GaveUp {
        addr: String,
        waited: Duration,
        last: String,
    },
    /// A command that reports rather than waits (`check`) could not reach the source.
    #[error("cannot reach the source {addr}: {detail}; check --source (host and port) and that the server is running and accepts TCP connections from here")]
    NotReached { addr: String, detail: String },
    #[error("the source {addr} refused user `{user}` (error {code}: {message}); check the user and the password (env {password_env}){tls_hint}")]
    Auth {
        addr: String,
        user: String,
        code: u16,
        message: String,
        password_env: String,
        /// What TLS may have to do with it: the server refuses a connection that lacks the
        /// TLS or the client certificate an account or the server requires with this same
        /// error (MariaDB also for `require_secure_transport`). Empty or `; ...`.
        tls_hint: &'static str,
    },
    /// Error 1236 with a cause that is not a purge (see [`DumpStop`]).
    #[error("{0}")]
    DumpStopped(DumpStop),
    #[error("the source {addr} cannot log in user `{user}` (error {code}: {message}): the account's authentication plugin is not loaded there (mysql_native_password is off by default from MySQL 8.4 and gone in 9.0); ALTER USER `{user}` IDENTIFIED WITH caching_sha2_password BY '...' (binsync supports it), or load the plugin on the server (mysql_native_password=ON)")]
    AuthPlugin {
        addr: String,
        user: String,
        code: u16,
        message: String,
    },
    #[error("the binlog position we need is no longer on the source, purged ({0}); the changes since the checkpoint are gone from the source: restore the purged binlogs, or start over with --reset --snapshot initial, which reloads every captured table's rows and streams from the binlog's end (or --reset --start earliest, which skips those changes for good); and raise the source's binlog retention")]
    Purged(String),
    /// The source's binlog no longer holds the history the position was read from: it was
    /// reset, restored from a backup, or the server never had those transactions (see
    /// `source::history`).
    #[error("the source no longer holds the history binsync read up to {position}: {found}; its binlog was reset (RESET MASTER, or RESET BINARY LOGS AND GTIDS on MySQL 8.4), restored from a backup, or this server never had those transactions, so resuming would silently skip changes; start over with --reset --snapshot initial, which reloads every captured table's rows (the changes binsync had not read before the reset are in no binlog any more)")]
    HistoryLost { position: String, found: String },
    #[error("binary logging is off on the source; add log_bin (e.g. log_bin=mysql-bin) and binlog_format=ROW to its [mysqld] config and restart it")]
    BinlogOff,
    #[error("the source logs in binlog_format={0}; binsync needs ROW: SET GLOBAL binlog_format=ROW and put binlog_format=ROW in its [mysqld] config")]
    NotRowFormat(String),
    #[error("server id {id} is already used by {by}; pick another --server-id")]
    ServerIdInUse { id: u32, by: String },
    #[error("the checkpoint holds a file position on {checkpoint}, but --source is {now}; file positions only mean something on the server that wrote them: use --reset with --start, or point --source at the original server")]
    ServerChanged { checkpoint: String, now: String },
    #[error("the source lacks a privilege binsync needs (error {code}: {message}); GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO the binsync user")]
    Privilege { code: u16, message: String },
    #[error("the source reports a GTID position binsync cannot read ({0}); report this with the server's version")]
    BadGtid(String),
    #[error("source error {code}: {message}")]
    Server { code: u16, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("the source sent a binlog event binsync cannot read ({0}); check that binlog on the server (mysqlbinlog from the checkpoint's position), and report it with the server's version")]
    DamagedEvent(String),
    #[error("{0}")]
    BadStart(String),
    /// The binlog could not be decoded (a damaged event, an unknown table, a type the
    /// decoder cannot read); the message names the place.
    #[error(transparent)]
    Decode(#[from] StreamError),
    /// TLS to the source: settings, certificates, a server without TLS or requiring it.
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    /// The sink stopped taking changes; its own error is the cause.
    #[error("the sink stopped taking changes")]
    SinkClosed,
    /// The snapshot cannot go on; the message names the table and the fix.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// Why the source's dump thread stopped the stream with error 1236
/// (ER_MASTER_FATAL_ERROR_READING_BINLOG). MySQL and MariaDB send that one code for every
/// fatal cause and say which only in the message, so the message decides; the advice differs
/// (a purge wants the binlogs back, a shared server id wants another id, a diverged server
/// wants another server) and resetting is right for none but the purge. Each variant holds
/// `error 1236: <the server's message>`. A purge is [`SourceError::Purged`]: MySQL "purged
/// required binary logs" (8.0: "Cannot replicate because the source purged ..."), "Could not
/// find first log file name in binary log index file" (purged, or never on this server);
/// MariaDB "requested to start from GTID ..., which is not in the master's binlog".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpStop {
    /// Another replica (or binsync run) registered with the same server id, and the server
    /// dropped this one: "A replica/slave with the same server_uuid/server_id ...".
    SameServerId(String),
    /// The server lacks transactions binsync already read, or its file is shorter than the
    /// position: "Replica/Slave has more GTIDs than the source/master has", MariaDB "... has
    /// diverged" and "missing the GTID ... requested by the slave", "position > file size".
    Diverged(String),
    /// "log event entry exceeded max_allowed_packet": the source's own packet limit.
    TooLarge(String),
    /// The server cannot read its own binlog there: "bogus data in log event", "binlog
    /// truncated in the middle of event", "event too small", "impossible position".
    Damaged(String),
    /// Any other message: reported as the server words it, with no advice to reset.
    Other(String),
}

impl DumpStop {
    pub fn classify(code: u16, message: String) -> SourceError {
        let m = message.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
        let text = format!("error {code}: {message}");
        if has(&["same server_uuid/server_id", "same server_id"]) {
            return SourceError::DumpStopped(DumpStop::SameServerId(text));
        }
        if has(&[
            "more gtids than",
            "diverged",
            "is missing the gtid",
            "position > file size",
            "position larger than file size",
            "conflicts with the binary log",
        ]) {
            return SourceError::DumpStopped(DumpStop::Diverged(text));
        }
        if has(&[
            "purged",
            "could not find first log file name",
            "not in the master's binlog",
        ]) {
            return SourceError::Purged(text);
        }
        if has(&["max_allowed_packet"]) {
            return SourceError::DumpStopped(DumpStop::TooLarge(text));
        }
        if has(&[
            "bogus data",
            "truncated in the middle",
            "event too small",
            "impossible position",
            "corrupt",
            "checksum",
            "crc check",
            "could not open log file",
            "i/o error reading",
        ]) {
            return SourceError::DumpStopped(DumpStop::Damaged(text));
        }
        SourceError::DumpStopped(DumpStop::Other(text))
    }
}

impl std::fmt::Display for DumpStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DumpStop::SameServerId(m) => write!(
                f,
                "the source dropped this stream because another replica connected with the same server id ({m}); every replica of a source needs its own server id: give this run or the other one another --server-id (two binsync runs, each with its own state dir, need two ids)"
            ),
            DumpStop::Diverged(m) => write!(
                f,
                "the source does not hold the history binsync resumes from ({m}): it lacks transactions binsync already read, or its binlog ends before the position (a failover to a server that had not received them, a binlog lost or truncated in a crash, a restored backup); point --source at a server that has them, or start over with --reset --snapshot initial, which reloads every captured table's rows"
            ),
            DumpStop::TooLarge(m) => write!(
                f,
                "the source refused to send an event larger than its max_allowed_packet ({m}); raise max_allowed_packet on the source (up to 1G: SET GLOBAL max_allowed_packet=1073741824, and in its config) and run again"
            ),
            DumpStop::Damaged(m) => write!(
                f,
                "the source cannot read its own binlog at this position ({m}); check the file with mysqlbinlog on the server; resuming needs a server whose binlog is intact (--source, e.g. a replica of it), or --reset --start latest and a reload of the target"
            ),
            DumpStop::Other(m) => write!(
                f,
                "the source stopped the binlog stream ({m}); nothing was skipped: fix what the server names and run again"
            ),
        }
    }
}

/// Sorts a driver error into [`Disconnect`] or [`SourceError`].
pub fn classify(e: mysql_async::Error, src: &SourceConfig) -> Failure {
    if let Some(tls) = tls_failure(&e, src) {
        return tls.into();
    }
    match e {
        mysql_async::Error::Server(se) => classify_server(se.code, se.message, src),
        mysql_async::Error::Io(io) => Disconnect::Unreachable {
            addr: src.to_string(),
            detail: io.to_string(),
        }
        .into(),
        mysql_async::Error::Driver(d) => Disconnect::Io(d.to_string()).into(),
        mysql_async::Error::Url(u) => SourceError::BadUrl(u.to_string()).into(),
        other => Disconnect::Io(other.to_string()).into(),
    }
}

/// See [`SourceError::Auth`]'s `tls_hint`.
fn tls_hint(tls: &super::tls::TlsSettings) -> &'static str {
    use super::tls::SslMode;
    match tls.mode() {
        SslMode::Disabled => "; the connection was not encrypted (--ssl-mode disabled): if the account or the server requires TLS (REQUIRE SSL, require_secure_transport=ON), use --ssl-mode required",
        mode if mode.requires_tls() && !tls.has_client_cert() => "; if the account requires a client certificate (REQUIRE X509, SUBJECT or ISSUER), pass one with --ssl-cert and --ssl-key",
        _ => "",
    }
}

/// The driver's TLS failures: a handshake rustls refused, a server without TLS.
fn tls_failure(e: &mysql_async::Error, src: &SourceConfig) -> Option<TlsError> {
    use mysql_async::{DriverError, IoError};
    let rustls_error = match e {
        mysql_async::Error::Io(IoError::Tls(mysql_async::TlsError::Tls(e))) => Some(e),
        // The driver could not set up TLS from the settings (a name rustls cannot check, a
        // file it reads differently): asking again fails again.
        mysql_async::Error::Io(IoError::Tls(other)) => {
            return Some(TlsError::Handshake {
                addr: src.to_string(),
                detail: other.to_string(),
                fix: "check --source's host and the --ssl-* settings",
                preferred: src.tls.mode() == super::tls::SslMode::Preferred,
            })
        }
        mysql_async::Error::Io(IoError::Io(io)) => rustls_error(io),
        mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => {
            return Some(TlsError::NotOffered {
                addr: src.to_string(),
                mode: src.tls.mode(),
            })
        }
        _ => None,
    }?;
    Some(
        src.tls
            .handshake_error(&src.to_string(), &src.host, rustls_error),
    )
}

/// The rustls error inside an I/O error of a TLS stream, if that is what it is.
pub(super) fn rustls_error(io: &std::io::Error) -> Option<&rustls::Error> {
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

pub(super) fn classify_server(code: u16, message: String, src: &SourceConfig) -> Failure {
    use ServerCode::*;
    match ServerCode::of(code) {
        Some(
            TooManyConnections | UserLimitReached | ShuttingDown | LockWaitTimeout | Deadlock
            | ReadOnly | ConnectionKilled | GoneAway | Lost,
        ) => Disconnect::Busy { code, message }.into(),
        Some(DbAccessDenied | AccessDenied | AuthModeUnsupported | AccessDeniedNoPassword) => {
            SourceError::Auth {
                addr: src.to_string(),
                user: src.user.clone(),
                code,
                message,
                password_env: src.password_env.clone(),
                tls_hint: tls_hint(&src.tls),
            }
            .into()
        }
        Some(SecureTransportRequired) => TlsError::Required { code, message }.into(),
        Some(BinlogUnavailable) => DumpStop::classify(code, message).into(),
        Some(ReplicaSameId) => {
            SourceError::DumpStopped(DumpStop::SameServerId(format!("error {code}: {message}")))
                .into()
        }
        Some(TableAccessDenied | ColumnAccessDenied | SpecificAccessDenied) => {
            SourceError::Privilege { code, message }.into()
        }
        Some(NoBinaryLogging) => SourceError::BinlogOff.into(),
        Some(PluginNotLoaded) => SourceError::AuthPlugin {
            addr: src.to_string(),
            user: src.user.clone(),
            code,
            message,
        }
        .into(),
        Some(BinlogCommandFailed) | None => SourceError::Server { code, message }.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(password_env: &str) -> SourceConfig {
        SourceConfig::new(
            "mysql://cdc@db:3306",
            None,
            password_env,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn codes_decide_the_kind() {
        let s = src("BINSYNC_SOURCE_PASSWORD");
        for code in [1040, 1053, 1205, 1213, 1226, 1290, 1927, 2006, 2013] {
            assert!(
                matches!(classify_server(code, "x".into(), &s), Failure::Transient(_)),
                "{code}"
            );
        }
        for code in [1044, 1045, 1236, 1227, 1381, 1064, 9999] {
            assert!(
                matches!(classify_server(code, "x".into(), &s), Failure::Definite(_)),
                "{code}"
            );
        }
    }

    /// The bug: with `--password-env X` the error named BINSYNC_SOURCE_PASSWORD.
    #[test]
    fn auth_error_names_the_password_variable_in_use() {
        let e = classify_server(1045, "Access denied".into(), &src("CDC_PW")).to_string();
        assert!(e.contains("env CDC_PW"), "{e}");
        assert!(!e.contains("BINSYNC_SOURCE_PASSWORD"), "{e}");
    }

    /// Error 1236 as MySQL (5.7, 8.0, 8.4) and MariaDB word each cause: only a purge says
    /// "purged", and only the purge and a diverged server advise a reset.
    #[test]
    fn error_1236_is_sorted_by_its_message() {
        let purged = [
            "Cannot replicate because the source purged required binary logs. Replicate the missing transactions from elsewhere, or provision a new replica from backup. Consider increasing the source's binary log expiration period. The GTID set sent by the replica is 'u:1-5', and the missing transactions are 'u:1-3'",
            "The slave is connecting using CHANGE MASTER TO MASTER_AUTO_POSITION = 1, but the master has purged binary logs containing GTIDs that the slave requires.",
            "Could not find first log file name in binary log index file",
            "Error: connecting slave requested to start from GTID 0-1-100, which is not in the master's binlog",
        ];
        for m in purged {
            assert!(
                matches!(DumpStop::classify(1236, m.into()), SourceError::Purged(_)),
                "{m}"
            );
        }
        let cases = [
            ("A replica with the same server_uuid/server_id as this replica has connected to the source; the first event 'binlog.000001' at 4, the last event read from './binlog.000001' at 126, the last byte read from './binlog.000001' at 126.", DumpStop::SameServerId(String::new())),
            ("Replica has more GTIDs than the source has, using the source's SERVER_UUID. This may indicate that the end of the binary log was truncated", DumpStop::Diverged(String::new())),
            ("Client requested source to start replication from position > file size", DumpStop::Diverged(String::new())),
            ("Error: connecting slave requested to start from GTID 0-1-100, which is not in the master's binlog. Since the master's binlog contains GTIDs with higher sequence numbers, it probably means that the slave has diverged due to executing extra erroneous transactions", DumpStop::Diverged(String::new())),
            ("log event entry exceeded max_allowed_packet; Increase max_allowed_packet on source; the first event 'binlog.000001' at 4", DumpStop::TooLarge(String::new())),
            ("bogus data in log event; the first event 'binlog.000001' at 4", DumpStop::Damaged(String::new())),
            ("binlog truncated in the middle of event; consider out of disk space on source; the first event 'binlog.000001' at 4", DumpStop::Damaged(String::new())),
            ("a cause nobody has seen yet", DumpStop::Other(String::new())),
        ];
        for (m, want) in cases {
            match DumpStop::classify(1236, m.into()) {
                SourceError::DumpStopped(d) => {
                    let kind = std::mem::discriminant(&d);
                    assert_eq!(kind, std::mem::discriminant(&want), "{m}: {d:?}");
                    let line = d.to_string();
                    assert!(line.contains(m), "the server's words are kept: {line}");
                    assert!(!line.contains("purged"), "{line}");
                }
                other => panic!("{m}: {other:?}"),
            }
        }
    }

    /// MariaDB drops a replica whose server id another one registers with error 4052.
    #[test]
    fn a_replica_dropped_for_its_server_id_is_told_to_pick_another() {
        let e = classify_server(
            4052,
            "A slave with the same server_uuid/server_id as this slave has connected to the master"
                .into(),
            &src("X"),
        );
        let line = e.to_string();
        assert!(matches!(e, Failure::Definite(_)), "{line}");
        assert!(line.contains("--server-id"), "{line}");
    }
}
