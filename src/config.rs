//! Command line and config file.
//!
//! Every setting can come from a flag or from the TOML file named by `--config`
//! (see `config/binsync.example.toml`); a flag wins over the file, the file over the default.
//! The file rejects unknown keys. Everything is validated here, once, before any work starts:
//! later stages receive a [`RunSettings`] that is known to be usable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::decode::DecodeConfig;
use crate::filter::{Filter, OnDdl};
use crate::sink::http::{HttpConfig, OnReject, SinkCa};
use crate::sink::nats::{NatsConfig, OnFull};
use crate::sink::SinkSpec;
use crate::source::start::StartSpec;
use crate::source::tls::{SslMode, TlsSettings};
use crate::source::SourceConfig;

/// binsync: tails the MySQL/MariaDB binlog as a replica and delivers committed row changes.
#[derive(Debug, Parser)]
#[command(name = "binsync", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// TOML config file (config/binsync.example.toml); flags override its values. Not for
    /// `receive`, whose settings are flags only.
    #[arg(long, global = true, env = "BINSYNC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once at start-up: the size of `run`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream changes from the source into the sink (the main job).
    Run(RunArgs),
    /// Preflight: check the source's settings and privileges, and print how to fix each problem.
    Check(CheckArgs),
    /// Show the checkpoint, and the source's position and our lag when it is reachable.
    Status(StatusArgs),
    /// Decode archived binlog files into a sink (backfills, files copied off a server).
    Replay(ReplayArgs),
    /// Inspect and redeliver batches the sync API rejected.
    Dlq(DlqArgs),
    /// Run the reference receiver of the sync API (docs/sync-api.md), for tests and benchmarks.
    Receive(ReceiveArgs),
    /// The schema history: `show` prints the tracked tables as the source defines them now,
    /// read as binsync reads DDL (one JSON object per table).
    Schema(SchemaArgs),
    /// (Re)load tables' rows while `binsync run` streams: records a request in the state dir
    /// that the running process picks up (or the next run, if none runs).
    Snapshot(SnapshotArgs),
}

#[derive(Debug, Args, Default)]
pub struct SchemaArgs {
    /// `show`: the tables as the source defines them now (needs --source). `history`: every
    /// version the state dir's history holds (needs --state-dir). `refresh`: read the tables
    /// named by --table from the source again and make them the history's versions at the
    /// checkpoint (needs --source and --state-dir; binsync stopped); safe only when no DDL
    /// changed them between the checkpoint's position and now.
    #[arg(value_parser = ["show", "refresh", "history"])]
    pub action: String,
    #[command(flatten)]
    pub source: SourceArgs,
    /// `history`, `refresh`: the state dir of the binsync run whose schema history to use.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// `refresh`: a table to read again, db.table (repeatable).
    #[arg(long)]
    pub table: Vec<String>,
    /// `show`: tables to show (db.table globs, as for `run`; repeatable); default: every table.
    #[arg(long)]
    pub include: Vec<String>,
    /// `show`: tables to leave out (db.table globs; repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// The receiver's own state directory (an SQLite database; never binsync's state dir).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Option<ReceiveAction>,
    /// Address to listen on; port 0 picks a free one (the `listening on ADDR` line tells which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Environment variable holding the `Authorization` value every POST must carry (the
    /// counterpart of `binsync run --auth-header-env`).
    #[arg(long, value_name = "VAR")]
    pub auth_header_env: Option<String>,
    /// Share of POSTs (0.0 to 1.0) answered with an injected fault instead of being applied.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Faults to inject, chosen uniformly: 500, 429, hang, drop.
    #[arg(long, value_delimiter = ',', default_value = "500,429,hang,drop")]
    pub faults: Vec<binsync_receiver::Fault>,
    /// Reject (400) any batch with an operation whose JSON text contains this string.
    #[arg(long)]
    pub reject_containing: Option<String>,
    /// Parse batches (strict JSON over the whole body, envelope checked, no per-operation
    /// checks) and acknowledge them without storing (benchmarks).
    #[arg(long)]
    pub discard: bool,
    /// Largest request body in bytes, compressed and after gunzip (413 beyond it). A batch
    /// holds at least one row, so this is also the largest row that can be delivered.
    #[arg(long, value_name = "BYTES", default_value_t = binsync_receiver::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Deepest nesting of arrays and objects in a body, the body being depth 1 and a column
    /// value starting at depth 6 (400 beyond it).
    #[arg(long, value_name = "LEVELS", default_value_t = binsync_receiver::DEFAULT_MAX_DEPTH)]
    pub max_depth: usize,
    /// Serve https with this PEM certificate chain (the receiver's own first); with --tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Consume binsync's JetStream stream instead of serving HTTP: nats://HOST:PORT (or
    /// tls://), several servers of a cluster comma-separated. Credentials from the environment:
    /// BINSYNC_NATS_TOKEN, or BINSYNC_NATS_USER and BINSYNC_NATS_PASSWORD, or BINSYNC_NATS_CREDS.
    #[arg(long, value_name = "URL", conflicts_with_all = ["listen", "auth_header_env", "fault_rate", "reject_containing", "discard", "max_body_bytes", "tls_cert", "tls_key"])]
    pub from: Option<String>,
    /// With --from: the stream binsync publishes into.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "binsync",
        requires = "from"
    )]
    pub nats_stream: String,
    /// With --from: the subjects' prefix (messages are on PREFIX.<entity>.<partition>).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "binsync",
        requires = "from"
    )]
    pub nats_subject_prefix: String,
    /// With --from: the durable consumer keeping this receiver's position (one per receiver).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "binsync-receive",
        requires = "from"
    )]
    pub durable: String,
    /// With --from: read only these subjects, e.g. binsync.*.0 (partition 0 of every entity:
    /// one member of a consumer group). Default: PREFIX.>.
    #[arg(long, value_name = "SUBJECT", requires = "from")]
    pub filter: Option<String>,
    /// With --from: a PEM CA for the NATS servers' certificates (TLS is then required).
    #[arg(long, value_name = "FILE", requires = "from")]
    pub nats_ca: Option<PathBuf>,
    /// With --from: the most messages applied in one transaction.
    #[arg(long, value_name = "N", default_value_t = binsync_receiver::DEFAULT_NATS_BATCH, requires = "from")]
    pub nats_batch: usize,
    /// With --from: exit (0) once no message came for this long and everything is applied
    /// and acknowledged (tests, benchmarks). Default: run until SIGINT/SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "from")]
    pub exit_when_idle: Option<std::time::Duration>,
}

#[derive(Debug, Subcommand)]
pub enum ReceiveAction {
    /// Print the stored state and counters as JSON (stop the receiver first).
    Dump,
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// The state dir of the binsync run whose dead letters to manage (it must not be running).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// One line per dead letter: id, time, status, batch, changes.
    List,
    /// The full entry: response and payload.
    Show {
        /// The entry's id (the first column of `binsync dlq list`).
        id: u64,
    },
    /// POST entries again (all, or the given ids); accepted ones are removed.
    Replay {
        /// Ids of the entries to send (default: every entry).
        ids: Vec<u64>,
        /// The sync API URL (default: the URL each entry was sent to).
        #[arg(long)]
        sink: Option<String>,
        #[command(flatten)]
        http: DlqHttpArgs,
    },
    /// Delete entries (the given ids, or all with --all).
    Drop {
        /// Ids of the entries to delete; an id with no entry is an error, and nothing is
        /// deleted then.
        ids: Vec<u64>,
        /// Delete every entry.
        #[arg(long)]
        all: bool,
    },
}

/// The HTTP settings `dlq replay` acts on: it sends each stored batch as it was, once, so
/// `run`'s batching and retry flags (--batch-rows, --linger, --in-flight, --max-retries,
/// --on-reject, --compact) mean nothing there and are not offered.
#[derive(Debug, Args, Default)]
pub struct DlqHttpArgs {
    /// Timeout of one POST (default 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub request_timeout: Option<Duration>,
    /// gzip request bodies.
    #[arg(long)]
    pub gzip: bool,
    /// Environment variable whose value is sent as the Authorization header.
    #[arg(long)]
    pub auth_header_env: Option<String>,
    /// PEM file of the CA certificate(s) that signed an https:// sink's certificate; only
    /// these are trusted (default: the public roots).
    #[arg(long, value_name = "FILE")]
    pub sink_ca: Option<PathBuf>,
}

impl From<&DlqHttpArgs> for HttpArgs {
    fn from(a: &DlqHttpArgs) -> HttpArgs {
        HttpArgs {
            request_timeout: a.request_timeout,
            gzip: a.gzip,
            auth_header_env: a.auth_header_env.clone(),
            sink_ca: a.sink_ca.clone(),
            ..HttpArgs::default()
        }
    }
}

#[derive(Debug, Args, Default)]
pub struct SourceArgs {
    /// Source server: mysql://USER[:PASSWORD]@HOST:PORT. `run` takes it several times: servers
    /// of one replication topology (a replica first, then the primary or other replicas), to
    /// fail over to in that order by GTID (see --failover-after); other commands take one.
    #[arg(long, value_name = "URL")]
    pub source: Vec<String>,
    /// Environment variable holding the source password (overrides a password in the URL).
    /// Default: BINSYNC_SOURCE_PASSWORD.
    #[arg(long)]
    pub password_env: Option<String>,
    /// How long to keep trying to reach the source at start-up (e.g. 30s, 2m); `status`
    /// tries once, and says so when the source does not answer.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// TLS to the source, as the mysql client's --ssl-mode: disabled; preferred (TLS when the
    /// server offers it, certificate not checked); required (TLS or stop, certificate not
    /// checked); verify-ca (signed by --ssl-ca); verify-identity (signed by --ssl-ca and naming
    /// the host of --source). Default: preferred, or verify-ca when --ssl-ca is given.
    #[arg(long, value_enum)]
    pub ssl_mode: Option<SslMode>,
    /// PEM file of the CA certificate(s) that signed the source's certificate; only these are
    /// trusted (verify-ca, verify-identity).
    #[arg(long, value_name = "FILE")]
    pub ssl_ca: Option<PathBuf>,
    /// PEM client certificate, for a source account that requires one (REQUIRE X509, SUBJECT,
    /// ISSUER); with --ssl-key.
    #[arg(long, value_name = "FILE")]
    pub ssl_cert: Option<PathBuf>,
    /// PEM private key of --ssl-cert.
    #[arg(long, value_name = "FILE")]
    pub ssl_key: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Replica server id to register with; must differ from the source's and other replicas'.
    #[arg(long)]
    pub server_id: Option<u32>,
    /// Directory of the embedded checkpoint store.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Where changes go: `stdout` (the default: JSON lines on this terminal or pipe; the first
    /// log line names the sink in use), `file:PATH` (JSON lines, fsynced; its directory must
    /// exist), an http(s):// URL (the sync API, docs/sync-api.md), or nats://HOST:PORT[,...]
    /// (NATS JetStream, docs/jetstream.md; the --nats-* flags).
    #[arg(long)]
    pub sink: Option<String>,
    /// Where to begin when there is no checkpoint: earliest, latest, gtid:SET, file:NAME:POS.
    /// Default: latest, after a snapshot of the tables (--snapshot); earliest with
    /// --snapshot never.
    #[arg(long)]
    pub start: Option<String>,
    /// Discard the checkpoint first (then --start applies).
    #[arg(long)]
    pub reset: bool,
    /// Capture only tables matching these db.table globs (repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// Skip tables matching these db.table globs (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Entity type name for a table: db.table=name (repeatable). Default: the table name.
    #[arg(long)]
    pub entity: Vec<String>,
    /// What a DDL statement on a captured table becomes: `emit` (a ddl, truncate or drop
    /// operation, contract v2), `ignore` (followed in the schema history only) or `stop` (a
    /// definite error before it). `ACTION` sets the default (emit), `db.table=ACTION` a rule
    /// for matching tables; the first matching rule wins (repeatable).
    #[arg(long, value_name = "[PATTERN=]ACTION")]
    pub on_ddl: Vec<String>,
    /// How often the source sends a heartbeat while it has nothing else to send, e.g. 1s,
    /// 500ms (100ms to 1h; default 1s). A connection silent for two periods counts as dead
    /// and is reopened; an idle binsync knows from the heartbeats that it is caught up.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub heartbeat: Option<Duration>,
    /// Stop with exit code 0 once everything up to the source's binlog end at start-up is
    /// delivered and checkpointed (and the snapshot, if one runs, is done).
    #[arg(long)]
    pub exit_at_end: bool,
    /// With several --source servers: how long the current one may keep failing (lost
    /// connections, timeouts, a server that does not serve) before binsync moves to the next
    /// one that holds its GTID position (default 10s). A server that refuses connections, or
    /// fails for a reason of its own (a wrong password there, its binlog purged), is left at
    /// once.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub failover_after: Option<Duration>,
    /// With several --source servers: how long the current one, a replica, may stay behind its
    /// own source (its replication stopped, or Seconds_Behind_Master at least this long)
    /// before binsync moves to the next one that holds its GTID position (default 60s).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub failover_behind: Option<Duration>,
    /// Load the captured tables' existing rows as `read` operations (contract v3), chunk by
    /// chunk while streaming: `when-needed` (the default: on a first start without --start),
    /// `initial` (on a first start even with --start, or after --reset), `never`.
    #[arg(long, value_enum, env = "BINSYNC_SNAPSHOT")]
    pub snapshot: Option<SnapshotMode>,
    /// Tables snapshotted at once (default 1).
    #[arg(long, value_name = "N")]
    pub snapshot_parallel: Option<usize>,
    /// At most this many snapshot rows read per second, all tables together (default: no limit).
    #[arg(long, value_name = "ROWS")]
    pub snapshot_rate: Option<u64>,
    /// Columns that identify the rows of a table without a primary key or unique NOT NULL key,
    /// for its snapshot's chunks: db.table=col[,col...] (repeatable). binsync cannot check that
    /// they are unique: rows sharing a value may be skipped.
    #[arg(long, value_name = "DB.TABLE=COLS")]
    pub snapshot_key: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics, with /healthz and /readyz (e.g.
    /// 0.0.0.0:9100; port 0 picks a free one). Default: not served.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// /readyz answers 503 while binsync is more than this behind the source (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ready_max_lag: Option<Duration>,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

pub use crate::snapshot::runner::SnapshotMode;

/// Where `binsync run` keeps its state (`--state`), and the lease of `--state nats`.
#[derive(Debug, Args, Default, Clone)]
pub struct StateArgs {
    /// Where the state lives: `sled` (the default: the store in --state-dir) or `nats` (only
    /// with --sink nats://: JetStream key-value buckets named after --nats-stream, --state-dir
    /// being a local cache; several binsync processes then run active/standby by a lease,
    /// docs/nats-ha.md).
    #[arg(long, value_enum, value_name = "sled|nats")]
    pub state: Option<StateKind>,
    /// With --state nats: how long the active binsync's lease lasts without a renewal (it
    /// renews every third of it); a standby takes over after this much silence (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lease: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateKind {
    Sled,
    Nats,
}

pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

impl StateArgs {
    /// None for `--state sled`; the `--state nats` settings, checked, otherwise: the NATS
    /// servers, credentials, TLS, stream name and replicas are the sink's.
    pub fn resolve(
        &self,
        sink: &SinkSpec,
        state_dir: &Path,
    ) -> Result<Option<crate::state::ha::HaSettings>, ConfigError> {
        let lease = self.lease.unwrap_or(DEFAULT_LEASE);
        if self.state != Some(StateKind::Nats) {
            if self.lease.is_some() {
                return Err(ConfigError(
                    "--lease is for --state nats only; drop it".into(),
                ));
            }
            return Ok(None);
        }
        let SinkSpec::Nats(cfg) = sink else {
            return Err(ConfigError(format!(
                "--state nats keeps the state in the NATS cluster the sink publishes to, but the sink is {sink}: use --sink nats://HOST:PORT (or drop --state nats)"
            )));
        };
        if lease < Duration::from_millis(500) || lease > Duration::from_secs(600) {
            return Err(ConfigError(format!(
                "--lease {}: pick 500ms to 10m (default 5s)",
                humantime::format_duration(lease)
            )));
        }
        let settings = crate::state::ha::HaSettings {
            url: cfg.url.clone(),
            connector: None,
            stream: cfg.stream.clone(),
            replicas: cfg.replicas,
            lease,
            state_dir: state_dir.to_path_buf(),
        };
        let bucket = settings.state_bucket();
        if !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError(format!(
                "--nats-stream {}: --state nats names its buckets after the stream ({bucket}), and a bucket name takes [A-Za-z0-9_-] only; pick such a stream name",
                cfg.stream
            )));
        }
        // The sink's way to connect: its TLS (tls://, --sink-ca) and credentials.
        let cfg = (**cfg).clone();
        let connector: crate::state::ha::Connector = std::sync::Arc::new(move || {
            let cfg = cfg.clone();
            Box::pin(async move {
                let opts = crate::sink::nats::options(&cfg)
                    .await
                    .map_err(|e| e.to_string())?;
                opts.connect(cfg.servers.clone())
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        Ok(Some(crate::state::ha::HaSettings {
            connector: Some(connector),
            ..settings
        }))
    }
}

#[derive(Debug, Args, Default)]
pub struct SnapshotArgs {
    /// A table to (re)load, db.table (repeatable).
    #[arg(long, required = true)]
    pub table: Vec<String>,
    /// The state dir of the `binsync run` that should load them.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Settings of the HTTP sync API sink (`--sink http://...`): the flags, and the same keys in
/// the config file's `[http]` table. Flags win over the file, the file over the defaults.
#[derive(Debug, Args, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpArgs {
    /// A batch closes at this many changes (default 1000).
    #[arg(long)]
    pub batch_rows: Option<usize>,
    /// A batch closes at this many bytes of JSON (default 1048576).
    #[arg(long)]
    pub batch_bytes: Option<usize>,
    /// How long a batch waits for more changes while its lane is idle (default 0: sent at
    /// once; while a lane's batch is in flight its next batch gathers changes anyway).
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "human_duration")]
    pub linger: Option<Duration>,
    /// Batches in flight at once (default 4); operations on one entity id stay in order.
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// Timeout of one POST (default 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "human_duration")]
    pub request_timeout: Option<Duration>,
    /// Give up a retriable batch after this many retries and dead-letter it (default: never).
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// What to do with a batch the sync API rejects (4xx): keep it in the dead-letter queue
    /// and go on, or stop (default dlq).
    #[arg(long, value_enum)]
    pub on_reject: Option<OnReject>,
    /// gzip request bodies.
    #[arg(long)]
    #[serde(default)]
    pub gzip: bool,
    /// Merge several changes to one entity id within a batch into one operation (its `before`
    /// is the state before the first change, its `after` the state after the last).
    #[arg(long)]
    #[serde(default)]
    pub compact: bool,
    /// Environment variable whose value is sent as the Authorization header.
    #[arg(long)]
    pub auth_header_env: Option<String>,
    /// PEM file of the CA certificate(s) that signed an https:// or NATS (nats://, tls://)
    /// sink's certificate; only these are trusted, and a NATS sink then requires TLS
    /// (default: the public roots).
    #[arg(long, value_name = "FILE")]
    pub sink_ca: Option<PathBuf>,
}

impl HttpArgs {
    /// The flags given, by name: each means something for the sync API sink only.
    fn given(&self) -> Vec<&'static str> {
        let set = [
            ("--batch-rows", self.batch_rows.is_some()),
            ("--batch-bytes", self.batch_bytes.is_some()),
            ("--linger", self.linger.is_some()),
            ("--in-flight", self.in_flight.is_some()),
            ("--request-timeout", self.request_timeout.is_some()),
            ("--max-retries", self.max_retries.is_some()),
            ("--on-reject", self.on_reject.is_some()),
            ("--gzip", self.gzip),
            ("--compact", self.compact),
            ("--auth-header-env", self.auth_header_env.is_some()),
        ];
        set.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect()
    }

    /// These flags over the file's values.
    fn over(&self, file: Option<&HttpArgs>) -> HttpArgs {
        let empty = HttpArgs::default();
        let f = file.unwrap_or(&empty);
        HttpArgs {
            batch_rows: self.batch_rows.or(f.batch_rows),
            batch_bytes: self.batch_bytes.or(f.batch_bytes),
            linger: self.linger.or(f.linger),
            in_flight: self.in_flight.or(f.in_flight),
            request_timeout: self.request_timeout.or(f.request_timeout),
            max_retries: self.max_retries.or(f.max_retries),
            on_reject: self.on_reject.or(f.on_reject),
            gzip: self.gzip || f.gzip,
            compact: self.compact || f.compact,
            auth_header_env: self.auth_header_env.clone().or(f.auth_header_env.clone()),
            sink_ca: self.sink_ca.clone().or(f.sink_ca.clone()),
        }
    }
}

/// Settings of the NATS JetStream sink (`--sink nats://...`, docs/jetstream.md): the flags,
/// and the same keys without `nats_` in the config file's `[nats]` table. Flags win over the
/// file, the file over the defaults.
#[derive(Debug, Args, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsArgs {
    /// JetStream stream to publish to (default binsync); created if missing (file storage,
    /// subjects PREFIX.>, discard new, no limits), else used as it is.
    #[arg(long = "nats-stream", value_name = "NAME")]
    pub stream: Option<String>,
    /// Subjects are PREFIX.<entity>.<partition> (default binsync).
    #[arg(long = "nats-subject-prefix", value_name = "PREFIX")]
    pub subject_prefix: Option<String>,
    /// Partitions per entity type: an operation goes to FNV-1a(id) mod N (default 8, 1..=1024).
    #[arg(long = "nats-partitions", value_name = "N")]
    pub partitions: Option<u32>,
    /// Replicas of a stream binsync creates (default 1).
    #[arg(long = "nats-replicas", value_name = "N")]
    pub replicas: Option<usize>,
    /// Publishes awaiting their ack at once (default 512).
    #[arg(long = "nats-max-in-flight", value_name = "N")]
    pub max_in_flight: Option<usize>,
    /// A stream that refuses messages because its limits are reached: `wait` (hold and retry,
    /// the default) or `stop` (a definite error).
    #[arg(long = "nats-on-full", value_enum)]
    pub on_full: Option<OnFull>,
    /// The source id in message ids and headers (default: saved at the first start from the
    /// first source server's flavor and uuid or server id).
    #[arg(long = "nats-source-id", value_name = "ID")]
    #[serde(skip)]
    pub source_id: Option<String>,
}

impl NatsArgs {
    /// The flags given, by name: each means something for the NATS sink only.
    fn given(&self) -> Vec<&'static str> {
        let set = [
            ("--nats-stream", self.stream.is_some()),
            ("--nats-subject-prefix", self.subject_prefix.is_some()),
            ("--nats-partitions", self.partitions.is_some()),
            ("--nats-replicas", self.replicas.is_some()),
            ("--nats-max-in-flight", self.max_in_flight.is_some()),
            ("--nats-on-full", self.on_full.is_some()),
            ("--nats-source-id", self.source_id.is_some()),
        ];
        set.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect()
    }
}

/// The NATS sink's settings: flags, then the file's `[nats]` table, then defaults.
fn nats_config(
    mut cfg: NatsConfig,
    args: &NatsArgs,
    file: Option<&NatsArgs>,
    sink_ca: Option<&PathBuf>,
) -> Result<NatsConfig, ConfigError> {
    let empty = NatsArgs::default();
    let f = file.unwrap_or(&empty);
    if let Some(v) = args.stream.clone().or(f.stream.clone()) {
        cfg.stream = v;
    }
    if let Some(v) = args.subject_prefix.clone().or(f.subject_prefix.clone()) {
        cfg.prefix = v;
    }
    cfg.partitions = args.partitions.or(f.partitions).unwrap_or(cfg.partitions);
    cfg.replicas = args.replicas.or(f.replicas).unwrap_or(cfg.replicas);
    cfg.max_in_flight = args
        .max_in_flight
        .or(f.max_in_flight)
        .unwrap_or(cfg.max_in_flight);
    cfg.on_full = args.on_full.or(f.on_full).unwrap_or(cfg.on_full);
    cfg.source_id = args.source_id.clone();
    if let Some(path) = sink_ca {
        // Read now: a wrong path is a start-up error, not a TLS failure later.
        SinkCa::load(path).map_err(ConfigError)?;
        cfg.ca = Some(path.clone());
    }
    cfg.validate().map_err(ConfigError)?;
    Ok(cfg)
}

/// `"5ms"`, `"30s"` in the config file.
fn human_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("`{text}`: {e} (write e.g. \"5ms\")")))
}

#[derive(Debug, Args, Default)]
pub struct CheckArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Also check that the source still has the binlog at this state dir's checkpoint.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct StatusArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The state dir of the binsync run to show (it must exist: status creates nothing).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct ReplayArgs {
    /// Binlog files, in order.
    #[arg(long = "binlog-file", required = true, num_args = 1..)]
    pub binlog_files: Vec<PathBuf>,
    /// Take the tables' definitions from this server (mysql://user@host:port), or from a file
    /// of CREATE TABLE statements (file:PATH, e.g. `mysqldump --no-data` output; `USE db;`
    /// sets the database of unqualified names), as the schema history's starting point:
    /// tables without FULL metadata are decoded with them, checked against each table map,
    /// and advanced by the DDL in the files. Without it, only tables the files create are
    /// known.
    #[arg(long, value_name = "URL|file:PATH")]
    pub schema_from: Option<String>,
    /// Where changes go: `stdout` (the default: JSON lines on this terminal or pipe),
    /// `file:PATH` (its directory must exist), or an http(s):// URL (the sync API).
    #[arg(long)]
    pub sink: Option<String>,
    /// Capture only tables matching these db.table globs (repeatable), as for `run`.
    #[arg(long)]
    pub include: Vec<String>,
    /// Skip tables matching these db.table globs (repeatable), as for `run`.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Entity type name for a table: db.table=name (repeatable), as for `run`.
    #[arg(long)]
    pub entity: Vec<String>,
    /// As for `run`: what a DDL statement on a captured table becomes (emit, ignore, stop;
    /// `db.table=ACTION` rules).
    #[arg(long, value_name = "[PATTERN=]ACTION")]
    pub on_ddl: Vec<String>,
}

/// The TOML file. Every key is optional; unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// mysql://USER[:PASSWORD]@HOST:PORT, or a list of them (servers of one topology to fail
    /// over to, in order; `binsync run` only).
    pub source: Option<OneOrMany>,
    /// As `--failover-after`, e.g. "10s".
    #[serde(default, deserialize_with = "human_duration")]
    pub failover_after: Option<Duration>,
    /// As `--failover-behind`, e.g. "60s".
    #[serde(default, deserialize_with = "human_duration")]
    pub failover_behind: Option<Duration>,
    /// Environment variable with the source password.
    pub password_env: Option<String>,
    /// e.g. "30s"
    #[serde(default, deserialize_with = "human_duration")]
    pub connect_timeout: Option<Duration>,
    /// disabled, preferred, required, verify-ca, verify-identity (as --ssl-mode).
    pub ssl_mode: Option<SslMode>,
    /// PEM CA certificate(s) of the source (as --ssl-ca).
    pub ssl_ca: Option<PathBuf>,
    /// PEM client certificate and its key (as --ssl-cert, --ssl-key).
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
    pub server_id: Option<u32>,
    /// As --heartbeat, e.g. "1s".
    #[serde(default, deserialize_with = "human_duration")]
    pub heartbeat: Option<Duration>,
    pub state_dir: Option<PathBuf>,
    pub sink: Option<String>,
    pub start: Option<String>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    /// db.table = "entity name"
    pub entity: Option<HashMap<String, String>>,
    /// As `--on-ddl`: ["db.audit*=ignore", "emit"].
    pub on_ddl: Option<Vec<String>>,
    /// As `--snapshot`: "when-needed", "initial" or "never".
    pub snapshot: Option<SnapshotMode>,
    pub snapshot_parallel: Option<usize>,
    pub snapshot_rate: Option<u64>,
    /// db.table = "col1,col2" (as --snapshot-key).
    pub snapshot_key: Option<HashMap<String, String>>,
    pub log_format: Option<LogFormat>,
    /// As --metrics-listen: "0.0.0.0:9100".
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// As --ready-max-lag: "10s".
    #[serde(default, deserialize_with = "human_duration")]
    pub ready_max_lag: Option<Duration>,
    /// HTTP sink settings, named as the flags (batch_rows, linger = "5ms", ...).
    pub http: Option<HttpArgs>,
    /// NATS JetStream sink settings, named as the flags without `nats-` (stream, partitions, ...).
    pub nats: Option<NatsArgs>,
}

/// A key that takes one value or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            let msg = e.message().to_string();
            let place = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" at line {line}")
                })
                .unwrap_or_default();
            ConfigError(format!(
                "config file {}{place}: {msg}; see config/binsync.example.toml for the keys",
                path.display()
            ))
        })
    }
}

/// Everything `binsync run` needs, validated: each component's own settings.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The first `--source`.
    pub source: SourceConfig,
    /// Every `--source`, and when to leave one (`source::failover`).
    pub failover: crate::source::failover::Failover,
    pub server_id: u32,
    pub state_dir: PathBuf,
    pub sink: SinkSpec,
    pub start: StartSpec,
    /// `--start` (or `start` in the file) was given, not defaulted: a checkpoint overrides it,
    /// and the log says so only then.
    pub start_given: bool,
    /// The heartbeat period the source is asked for (`--heartbeat`).
    pub heartbeat: Duration,
    pub reset: bool,
    pub decode: DecodeConfig,
    pub exit_at_end: bool,
    pub snapshot: crate::snapshot::runner::SnapshotSettings,
    pub metrics: crate::metrics::MetricsSettings,
}

/// Everything `binsync replay` needs, validated.
#[derive(Debug, Clone)]
pub struct ReplaySettings {
    pub files: Vec<PathBuf>,
    pub sink: SinkSpec,
    pub decode: DecodeConfig,
    /// `--schema-from`.
    pub schema_from: Option<SchemaFrom>,
}

/// Where `replay` takes the tables' first definitions from.
#[derive(Debug, Clone)]
pub enum SchemaFrom {
    Source(Box<SourceConfig>),
    /// A file of CREATE TABLE statements.
    File(PathBuf),
}

pub const DEFAULT_PASSWORD_ENV: &str = "BINSYNC_SOURCE_PASSWORD";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The one source of a command other than `run`.
pub fn source_config(args: &SourceArgs, file: &FileConfig) -> Result<SourceConfig, ConfigError> {
    let mut all = source_configs(args, file)?;
    if all.len() > 1 {
        return Err(ConfigError(format!(
            "{} sources are given (--source, or the config file's `source` list): only `binsync run` fails over across several servers; name one with --source",
            all.len()
        )));
    }
    Ok(all.remove(0))
}

/// Every `--source` (flags win over the file's `source`), in order; at least one.
pub fn source_configs(
    args: &SourceArgs,
    file: &FileConfig,
) -> Result<Vec<SourceConfig>, ConfigError> {
    let urls = if args.source.is_empty() {
        file.source
            .as_ref()
            .map(OneOrMany::to_vec)
            .unwrap_or_default()
    } else {
        args.source.clone()
    };
    if urls.is_empty() {
        return Err(ConfigError(
            "no source: pass --source mysql://USER@HOST:PORT (or `source` in the config file)"
                .into(),
        ));
    }
    let password_env = args
        .password_env
        .clone()
        .or_else(|| file.password_env.clone())
        .unwrap_or_else(|| DEFAULT_PASSWORD_ENV.to_string());
    let connect_timeout = args
        .connect_timeout
        .or(file.connect_timeout)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let password = std::env::var(&password_env).ok();
    let pick = |flag: &Option<PathBuf>, key: &Option<PathBuf>| flag.clone().or_else(|| key.clone());
    let mut all: Vec<SourceConfig> = Vec::with_capacity(urls.len());
    for url in &urls {
        // Each server its own TLS state (what it offers, the names it was learnt by).
        let tls = TlsSettings::new(
            args.ssl_mode.or(file.ssl_mode),
            pick(&args.ssl_ca, &file.ssl_ca).as_deref(),
            pick(&args.ssl_cert, &file.ssl_cert).as_deref(),
            pick(&args.ssl_key, &file.ssl_key).as_deref(),
        )
        .map_err(|e| ConfigError(e.to_string()))?;
        let src = SourceConfig::new(url, password.clone(), &password_env, connect_timeout)
            .map_err(|e| ConfigError(e.to_string()))?
            .with_tls(tls);
        if all
            .iter()
            .any(|s| (&s.host, s.port) == (&src.host, src.port))
        {
            return Err(ConfigError(format!(
                "--source {src} is given twice; each server of the topology once"
            )));
        }
        all.push(src);
    }
    Ok(all)
}

fn pick_vec(flag: &[String], file: &Option<Vec<String>>) -> Vec<String> {
    if flag.is_empty() {
        file.clone().unwrap_or_default()
    } else {
        flag.to_vec()
    }
}

pub fn parse_entities(
    flags: &[String],
    file: &Option<HashMap<String, String>>,
) -> Result<HashMap<String, String>, ConfigError> {
    let mut map = file.clone().unwrap_or_default();
    for e in flags {
        let (table, name) = e
            .split_once('=')
            .filter(|(t, n)| t.contains('.') && !n.is_empty())
            .ok_or_else(|| {
                ConfigError(format!(
                    "--entity `{e}`: write db.table=name, e.g. shop.products=product"
                ))
            })?;
        map.insert(table.to_string(), name.to_string());
    }
    Ok(map)
}

impl RunSettings {
    pub fn resolve(args: &RunArgs, file: &FileConfig) -> Result<RunSettings, ConfigError> {
        let sources = source_configs(&args.source, file)?;
        let source = sources[0].clone();
        let failover = crate::source::failover::Failover {
            sources,
            after: args
                .failover_after
                .or(file.failover_after)
                .unwrap_or(crate::source::failover::DEFAULT_AFTER),
            behind: args
                .failover_behind
                .or(file.failover_behind)
                .unwrap_or(crate::source::failover::DEFAULT_BEHIND),
        };
        let server_id = args.server_id.or(file.server_id).ok_or_else(|| {
            ConfigError("no --server-id: pick a replica id unused by the source and its replicas, e.g. --server-id 4242".into())
        })?;
        if server_id == 0 {
            return Err(ConfigError(
                "--server-id 0 is not allowed for a replica; pick 1..4294967295".into(),
            ));
        }
        let state_dir = args.state_dir.clone().or_else(|| file.state_dir.clone()).ok_or_else(|| {
            ConfigError("no --state-dir: name a directory for the checkpoint store, e.g. --state-dir /var/lib/binsync".into())
        })?;
        let sink = sink_spec(args.sink.as_ref().or(file.sink.as_ref()), &args.http, file)?;
        let sink = with_nats(sink, &args.nats, &args.http, file)?;
        // Without --start a first start streams from the binlog's end when it loads the
        // tables' rows first (the snapshot), else from the oldest binlog.
        let snapshots = args.snapshot.or(file.snapshot).unwrap_or_default() != SnapshotMode::Never;
        let start_text = args
            .start
            .clone()
            .or_else(|| file.start.clone())
            .unwrap_or_else(|| if snapshots { "latest" } else { "earliest" }.into());
        let start: StartSpec = start_text.parse().map_err(ConfigError)?;
        let heartbeat = heartbeat_period(args.heartbeat.or(file.heartbeat))?;
        let decode = decode_config(
            &args.include,
            &args.exclude,
            &args.entity,
            &args.on_ddl,
            file,
        )?;
        let mut sink = sink;
        if let SinkSpec::Http(cfg) = &mut sink {
            // DDL operations exist from contract version 2 on; without them a run speaks 1,
            // which every receiver written for version 1 keeps accepting.
            cfg.contract = if decode.on_ddl.may_emit() { 2 } else { 1 };
        }
        let snapshot = snapshot_settings(args, file, args.start.is_some() || file.start.is_some())?;
        if let SinkSpec::Http(cfg) = &mut sink {
            // `read` and `snapshot_end` exist from contract version 3 on.
            if snapshot.mode != SnapshotMode::Never {
                cfg.contract = 3;
            }
        }
        Ok(RunSettings {
            source,
            failover,
            server_id,
            state_dir,
            sink,
            start,
            start_given: args.start.is_some() || file.start.is_some(),
            heartbeat,
            reset: args.reset,
            decode,
            exit_at_end: args.exit_at_end,
            snapshot,
            metrics: crate::metrics::MetricsSettings {
                listen: args.metrics_listen.or(file.metrics_listen),
                ready_max_lag: args
                    .ready_max_lag
                    .or(file.ready_max_lag)
                    .unwrap_or(crate::metrics::DEFAULT_READY_MAX_LAG),
            },
        })
    }
}

/// `--heartbeat`, within [`HEARTBEAT_RANGE`](crate::source::stream::HEARTBEAT_RANGE).
fn heartbeat_period(period: Option<Duration>) -> Result<Duration, ConfigError> {
    use crate::source::stream::{DEFAULT_HEARTBEAT, HEARTBEAT_RANGE};
    let period = period.unwrap_or(DEFAULT_HEARTBEAT);
    if !HEARTBEAT_RANGE.contains(&period) {
        return Err(ConfigError(format!(
            "--heartbeat {}: give a period from {} to {} (default {})",
            humantime::format_duration(period),
            humantime::format_duration(*HEARTBEAT_RANGE.start()),
            humantime::format_duration(*HEARTBEAT_RANGE.end()),
            humantime::format_duration(DEFAULT_HEARTBEAT),
        )));
    }
    Ok(period)
}

fn snapshot_settings(
    args: &RunArgs,
    file: &FileConfig,
    explicit_start: bool,
) -> Result<crate::snapshot::runner::SnapshotSettings, ConfigError> {
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    let mut add = |spec: String, table: &str, cols: &str| {
        let cols: Vec<String> = cols
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if !table.contains('.') || cols.is_empty() {
            return Err(ConfigError(format!(
                "--snapshot-key `{spec}`: write db.table=col[,col...], e.g. shop.events=id"
            )));
        }
        keys.insert(table.to_string(), cols);
        Ok(())
    };
    for (t, c) in file.snapshot_key.iter().flatten() {
        add(format!("{t}={c}"), t, c)?;
    }
    for spec in &args.snapshot_key {
        let (t, c) = spec.split_once('=').unwrap_or((spec, ""));
        add(spec.clone(), t, c)?;
    }
    let parallel = args
        .snapshot_parallel
        .or(file.snapshot_parallel)
        .unwrap_or(1);
    if parallel == 0 {
        return Err(ConfigError(
            "--snapshot-parallel 0: give 1 or more tables at once".into(),
        ));
    }
    let rate = args.snapshot_rate.or(file.snapshot_rate);
    if rate == Some(0) {
        return Err(ConfigError(
            "--snapshot-rate 0 would never read a row: give rows per second, or leave it out for no limit".into(),
        ));
    }
    Ok(crate::snapshot::runner::SnapshotSettings {
        mode: args.snapshot.or(file.snapshot).unwrap_or_default(),
        explicit_start,
        parallel,
        rate,
        keys,
        ..Default::default()
    })
}

impl ReplaySettings {
    pub fn resolve(args: &ReplayArgs, file: &FileConfig) -> Result<ReplaySettings, ConfigError> {
        let none = HttpArgs::default();
        Ok(ReplaySettings {
            files: args.binlog_files.clone(),
            sink: sink_spec(args.sink.as_ref().or(file.sink.as_ref()), &none, file)?,
            decode: decode_config(
                &args.include,
                &args.exclude,
                &args.entity,
                &args.on_ddl,
                file,
            )?,
            schema_from: args
                .schema_from
                .as_ref()
                .map(|from| match from.strip_prefix("file:") {
                    Some(path) => Ok(SchemaFrom::File(PathBuf::from(path))),
                    None => {
                        let src = SourceArgs {
                            source: vec![from.clone()],
                            ..SourceArgs::default()
                        };
                        source_config(&src, &FileConfig::default())
                            .map(|c| SchemaFrom::Source(Box::new(c)))
                    }
                })
                .transpose()?,
        })
    }
}

/// What `binsync receive` does, validated.
#[derive(Debug)]
pub enum ReceiveSettings {
    /// Serve the sync API.
    Serve(Box<binsync_receiver::ReceiveOptions>),
    /// Print the stored state of this directory.
    Dump(PathBuf),
    /// Consume a JetStream stream (`--from nats://...`).
    Consume(Box<binsync_receiver::StreamOptions>),
}

impl ReceiveSettings {
    pub fn resolve(args: ReceiveArgs) -> Result<ReceiveSettings, ConfigError> {
        let need_dir = || {
            args.state_dir.clone().ok_or_else(|| {
                ConfigError(
                    "no --state-dir: name the receiver's own directory (or use --discard)".into(),
                )
            })
        };
        if let Some(ReceiveAction::Dump) = args.action {
            return Ok(ReceiveSettings::Dump(need_dir()?));
        }
        if let Some(from) = &args.from {
            return Ok(ReceiveSettings::Consume(Box::new(
                binsync_receiver::StreamOptions {
                    servers: nats_servers(from)?,
                    stream: args.nats_stream.clone(),
                    subject_prefix: args.nats_subject_prefix.clone(),
                    durable: args.durable.clone(),
                    filter: args.filter.clone(),
                    state_dir: args.state_dir.clone().ok_or_else(|| {
                        ConfigError(
                            "no --state-dir: name the directory of the store the stream is applied into"
                                .into(),
                        )
                    })?,
                    batch: args.nats_batch,
                    exit_when_idle: args.exit_when_idle,
                    ca: args.nats_ca.clone(),
                    credentials: nats_credentials(|v| std::env::var(v).ok())?,
                },
            )));
        }
        let auth = match &args.auth_header_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                ConfigError(format!(
                    "--auth-header-env {var}: the environment variable is not set; export it with the Authorization value every POST must carry"
                ))
            })?),
            None => None,
        };
        let state_dir = match args.discard {
            true => args.state_dir.clone().unwrap_or_default(),
            false => need_dir()?,
        };
        let tls = match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(binsync_receiver::TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError(
                    "--tls-cert needs --tls-key FILE (the certificate's private key)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError(
                    "--tls-key needs --tls-cert FILE (the certificate chain to serve)".into(),
                ))
            }
        };
        Ok(ReceiveSettings::Serve(Box::new(
            binsync_receiver::ReceiveOptions {
                auth,
                fault_rate: args.fault_rate,
                faults: args.faults,
                reject_containing: args.reject_containing,
                discard: args.discard,
                max_body_bytes: args.max_body_bytes,
                max_depth: args.max_depth,
                tls,
                ..binsync_receiver::ReceiveOptions::new(args.listen, state_dir)
            },
        )))
    }
}

/// `receive --from`: `nats://h1:p1,h2:p2` (or `tls://`) as one address per server.
fn nats_servers(text: &str) -> Result<Vec<String>, ConfigError> {
    let (scheme, rest) = text
        .split_once("://")
        .filter(|(s, _)| matches!(*s, "nats" | "tls"))
        .ok_or_else(|| {
            ConfigError(format!(
                "--from `{text}`: write nats://HOST:PORT (or tls://HOST:PORT), several servers comma-separated"
            ))
        })?;
    let servers: Vec<String> = rest
        .split(',')
        .map(|h| {
            let h = h.trim();
            let h = h.strip_prefix(&format!("{scheme}://")).unwrap_or(h);
            format!("{scheme}://{h}")
        })
        .collect();
    if rest.split(',').any(|h| h.trim().is_empty()) {
        return Err(ConfigError(format!(
            "--from `{text}`: an empty server address; write nats://HOST:PORT[,HOST:PORT...]"
        )));
    }
    Ok(servers)
}

/// NATS credentials from the environment (never from flags: they would show in `ps`).
fn nats_credentials(
    env: impl Fn(&str) -> Option<String>,
) -> Result<binsync_receiver::NatsCredentials, ConfigError> {
    use binsync_receiver::NatsCredentials as C;
    let token = env("BINSYNC_NATS_TOKEN").filter(|v| !v.is_empty());
    let user = env("BINSYNC_NATS_USER").filter(|v| !v.is_empty());
    let password = env("BINSYNC_NATS_PASSWORD");
    let creds = env("BINSYNC_NATS_CREDS").filter(|v| !v.is_empty());
    let set = [token.is_some(), user.is_some(), creds.is_some()];
    if set.iter().filter(|s| **s).count() > 1 {
        return Err(ConfigError(
            "several NATS credentials in the environment: set one of BINSYNC_NATS_TOKEN, BINSYNC_NATS_USER (with BINSYNC_NATS_PASSWORD) or BINSYNC_NATS_CREDS".into(),
        ));
    }
    Ok(match (token, user, password, creds) {
        (Some(t), ..) => C::Token(t),
        (_, Some(u), Some(p), _) => C::UserPassword(u, p),
        (_, Some(_), None, _) => {
            return Err(ConfigError(
                "BINSYNC_NATS_USER is set without BINSYNC_NATS_PASSWORD; export both".into(),
            ))
        }
        (.., Some(path)) => C::CredsFile(PathBuf::from(path)),
        (_, _, Some(_), _) => {
            return Err(ConfigError(
                "BINSYNC_NATS_PASSWORD is set without BINSYNC_NATS_USER; export both".into(),
            ))
        }
        _ => C::None,
    })
}

/// The NATS sink's settings when `sink` is one; its flags refused with any other sink.
fn with_nats(
    mut sink: SinkSpec,
    nats: &NatsArgs,
    http: &HttpArgs,
    file: &FileConfig,
) -> Result<SinkSpec, ConfigError> {
    if let SinkSpec::Nats(cfg) = &mut sink {
        let ca = http
            .sink_ca
            .as_ref()
            .or(file.http.as_ref().and_then(|h| h.sink_ca.as_ref()));
        **cfg = nats_config((**cfg).clone(), nats, file.nats.as_ref(), ca)?;
        return Ok(sink);
    }
    let given = nats.given();
    if !given.is_empty() {
        return Err(ConfigError(format!(
            "{} {} nothing with --sink {sink}: the NATS JetStream sink's settings (nats://); drop {}",
            given.join(", "),
            if given.len() == 1 { "means" } else { "mean" },
            if given.len() == 1 { "it" } else { "them" },
        )));
    }
    Ok(sink)
}

/// `--sink` (default stdout), with the HTTP settings when it is the sync API.
fn sink_spec(
    text: Option<&String>,
    http: &HttpArgs,
    file: &FileConfig,
) -> Result<SinkSpec, ConfigError> {
    let text = text.map_or("stdout", String::as_str);
    let mut spec: SinkSpec = text.parse().map_err(ConfigError)?;
    // binsync creates no directories: a typo in the path must not start a new tree.
    if let SinkSpec::File(path) = &spec {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            return Err(ConfigError(format!(
                "--sink {text}: the directory {} does not exist; create it (binsync creates no directories), or name a file in one that does",
                dir.display()
            )));
        }
    }
    match &mut spec {
        SinkSpec::Http(cfg) => **cfg = http_config((**cfg).clone(), http, file.http.as_ref())?,
        // --sink-ca is the NATS sink's too (`with_nats`); the sync API's other flags are not.
        SinkSpec::Nats(_) => {
            let given = http.given();
            if !given.is_empty() {
                return Err(ConfigError(format!(
                    "{} {} nothing with --sink {text}: the sync API sink's settings; the NATS sink's are the --nats-* flags; drop {}",
                    given.join(", "),
                    if given.len() == 1 { "means" } else { "mean" },
                    if given.len() == 1 { "it" } else { "them" },
                )));
            }
        }
        // The file's [http] table is for an HTTP sink and unused by others, but a flag given
        // here would be silently ignored.
        _ => {
            if let Some(ca) = &http.sink_ca {
                return Err(ConfigError(format!(
                    "--sink-ca {} means nothing with --sink {text}: it is for an https:// sink; drop it",
                    ca.display()
                )));
            }
            let given = http.given();
            if !given.is_empty() {
                return Err(ConfigError(format!(
                    "{} {} nothing with --sink {text}: the sync API sink's settings (http:// or https://); drop {}",
                    given.join(", "),
                    if given.len() == 1 { "means" } else { "mean" },
                    if given.len() == 1 { "it" } else { "them" },
                )));
            }
        }
    }
    Ok(spec)
}

/// What the decoder captures, how it names it and what DDL becomes:
/// `--include/--exclude/--entity/--on-ddl`.
fn decode_config(
    include: &[String],
    exclude: &[String],
    entity: &[String],
    on_ddl: &[String],
    file: &FileConfig,
) -> Result<DecodeConfig, ConfigError> {
    let filter = Filter::new(
        &pick_vec(include, &file.include),
        &pick_vec(exclude, &file.exclude),
    )
    .map_err(ConfigError)?;
    Ok(DecodeConfig {
        filter,
        entities: parse_entities(entity, &file.entity)?,
        on_ddl: OnDdl::parse(&pick_vec(on_ddl, &file.on_ddl)).map_err(ConfigError)?,
        ..DecodeConfig::default()
    })
}

/// The sync API at `url` with default settings (credentials in the URL become a header).
pub fn http_target(url: &str) -> Result<HttpConfig, ConfigError> {
    match url.parse::<SinkSpec>().map_err(ConfigError)? {
        SinkSpec::Http(cfg) => Ok(*cfg),
        _ => Err(ConfigError(format!(
            "--sink `{}`: the dead-letter queue is replayed to an http(s):// URL",
            crate::units::redact_url(url)
        ))),
    }
}

/// The sync API sink's settings: flags, then the file's `[http]` table, then defaults.
pub fn http_config(
    mut cfg: HttpConfig,
    args: &HttpArgs,
    file: Option<&HttpArgs>,
) -> Result<HttpConfig, ConfigError> {
    let a = args.over(file);
    cfg.batch_rows = a.batch_rows.unwrap_or(cfg.batch_rows);
    cfg.batch_bytes = a.batch_bytes.unwrap_or(cfg.batch_bytes);
    cfg.in_flight = a.in_flight.unwrap_or(cfg.in_flight);
    cfg.linger = a.linger.unwrap_or(cfg.linger);
    cfg.request_timeout = a.request_timeout.unwrap_or(cfg.request_timeout);
    cfg.max_retries = a.max_retries;
    cfg.on_reject = a.on_reject.unwrap_or(cfg.on_reject);
    cfg.gzip = a.gzip;
    cfg.compact = a.compact;
    if cfg.batch_rows == 0 || cfg.batch_bytes == 0 || cfg.in_flight == 0 {
        return Err(ConfigError(
            "batch_rows, batch_bytes and in_flight must be at least 1".into(),
        ));
    }
    if let Some(path) = &a.sink_ca {
        if !cfg.url.starts_with("https://") {
            return Err(ConfigError(format!(
                "--sink-ca {} means nothing for {}: it is for an https:// sink; use https, or drop --sink-ca",
                path.display(),
                cfg.url
            )));
        }
        cfg.ca = Some(SinkCa::load(path).map_err(ConfigError)?);
    }
    if let Some(var) = &a.auth_header_env {
        let value = std::env::var(var).map_err(|_| {
            ConfigError(format!("--auth-header-env {var}: that environment variable is not set; export it with the Authorization header value"))
        })?;
        cfg.authorization = Some(value);
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    #[test]
    fn receive_from_names_every_server_with_its_scheme() {
        assert_eq!(
            super::nats_servers("nats://a:4222,b:4223").unwrap(),
            ["nats://a:4222", "nats://b:4223"]
        );
        assert_eq!(
            super::nats_servers("tls://a:1,tls://b:2").unwrap(),
            ["tls://a:1", "tls://b:2"]
        );
        for bad in ["a:4222", "http://a:1", "nats://a:1,,b:2", "nats://"] {
            assert!(super::nats_servers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nats_credentials_come_from_one_source_in_the_environment() {
        use binsync_receiver::NatsCredentials as C;
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(matches!(
            super::nats_credentials(env(&[])).unwrap(),
            C::None
        ));
        assert!(matches!(
            super::nats_credentials(env(&[("BINSYNC_NATS_TOKEN", "t")])).unwrap(),
            C::Token(t) if t == "t"
        ));
        assert!(matches!(
            super::nats_credentials(env(&[("BINSYNC_NATS_USER", "u"), ("BINSYNC_NATS_PASSWORD", "p")])).unwrap(),
            C::UserPassword(u, p) if u == "u" && p == "p"
        ));
        assert!(matches!(
            super::nats_credentials(env(&[("BINSYNC_NATS_CREDS", "/x.creds")])).unwrap(),
            C::CredsFile(_)
        ));
        for bad in [
            &[("BINSYNC_NATS_USER", "u")][..],
            &[("BINSYNC_NATS_PASSWORD", "p")][..],
            &[("BINSYNC_NATS_TOKEN", "t"), ("BINSYNC_NATS_CREDS", "/x")][..],
        ] {
            let bad: &'static [(&'static str, &'static str)] = bad;
            assert!(super::nats_credentials(env(bad)).is_err(), "{bad:?}");
        }
    }

    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_keys_are_an_error_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "source = \"mysql://root@127.0.0.1:3306\"\nsevrer_id = 5\n",
        )
        .unwrap();
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("sevrer_id") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn nats_settings_come_from_flags_then_the_file_and_are_refused_elsewhere() {
        let file: FileConfig = toml::from_str(
            "[nats]\nstream = \"cdc\"\npartitions = 16\non_full = \"stop\"\nmax_in_flight = 64\n",
        )
        .unwrap();
        let args = RunArgs {
            source: SourceArgs {
                source: vec!["mysql://root@127.0.0.1:3306".into()],
                ..Default::default()
            },
            server_id: Some(7),
            state_dir: Some("/tmp/x".into()),
            sink: Some("nats://127.0.0.1:4222,127.0.0.1:4223".into()),
            nats: NatsArgs {
                partitions: Some(32),
                subject_prefix: Some("cdc.prod".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = RunSettings::resolve(&args, &file).unwrap();
        let SinkSpec::Nats(cfg) = s.sink else {
            panic!("not the NATS sink")
        };
        assert_eq!(cfg.servers.len(), 2);
        assert_eq!(cfg.stream, "cdc", "from the file");
        assert_eq!(cfg.partitions, 32, "the flag wins");
        assert_eq!(cfg.prefix, "cdc.prod");
        assert_eq!(cfg.on_full, OnFull::Stop);
        assert_eq!(cfg.max_in_flight, 64);
        assert_eq!(cfg.replicas, 1, "the default");
        // A NATS flag with another sink is refused, not ignored; the file's table is not.
        let args = RunArgs {
            source: SourceArgs {
                source: vec!["mysql://root@127.0.0.1:3306".into()],
                ..Default::default()
            },
            server_id: Some(7),
            state_dir: Some("/tmp/x".into()),
            nats: NatsArgs {
                replicas: Some(3),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = RunSettings::resolve(&args, &file).unwrap_err().to_string();
        assert!(
            e.contains("--nats-replicas") && e.contains("drop it"),
            "{e}"
        );
        // The sync API's flags mean nothing for NATS.
        let args = RunArgs {
            source: SourceArgs {
                source: vec!["mysql://root@127.0.0.1:3306".into()],
                ..Default::default()
            },
            server_id: Some(7),
            state_dir: Some("/tmp/x".into()),
            sink: Some("nats://127.0.0.1:4222".into()),
            http: HttpArgs {
                batch_rows: Some(5),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = RunSettings::resolve(&args, &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--batch-rows"), "{e}");
        // Bad values name their flag.
        let args = RunArgs {
            source: SourceArgs {
                source: vec!["mysql://root@127.0.0.1:3306".into()],
                ..Default::default()
            },
            server_id: Some(7),
            state_dir: Some("/tmp/x".into()),
            sink: Some("nats://127.0.0.1:4222".into()),
            nats: NatsArgs {
                partitions: Some(0),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = RunSettings::resolve(&args, &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--nats-partitions"), "{e}");
    }

    #[test]
    fn the_example_config_parses_and_flags_override_it() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/binsync.example.toml");
        let file = FileConfig::load(&p).unwrap();
        let args = RunArgs {
            server_id: Some(77),
            // The example's sink is in /var/lib/binsync, which need not exist here.
            sink: Some("stdout".into()),
            ..Default::default()
        };
        let s = RunSettings::resolve(&args, &file).unwrap();
        assert_eq!(s.server_id, 77);
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/binsync"));
        assert_eq!(
            s.decode.entities.get("shop.products").map(String::as_str),
            Some("product")
        );
        assert_eq!(
            s.metrics.listen,
            Some("127.0.0.1:9100".parse().unwrap()),
            "metrics_listen from the file"
        );
        assert_eq!(s.metrics.ready_max_lag, Duration::from_secs(10));
        let args = RunArgs {
            metrics_listen: Some("0.0.0.0:9200".parse().unwrap()),
            ready_max_lag: Some(Duration::from_secs(3)),
            ..args
        };
        let s = RunSettings::resolve(&args, &file).unwrap();
        assert_eq!(s.metrics.listen, Some("0.0.0.0:9200".parse().unwrap()));
        assert_eq!(s.metrics.ready_max_lag, Duration::from_secs(3));
    }

    #[test]
    fn the_sync_api_speaks_the_lowest_version_that_carries_what_the_run_may_emit() {
        let contract = |on_ddl: &[&str], snapshot: Option<SnapshotMode>| {
            let args = RunArgs {
                source: SourceArgs {
                    source: vec!["mysql://root@127.0.0.1:3306".into()],
                    ..Default::default()
                },
                server_id: Some(1),
                state_dir: Some("/tmp/x".into()),
                sink: Some("http://127.0.0.1:9/v1".into()),
                on_ddl: on_ddl.iter().map(|s| s.to_string()).collect(),
                snapshot,
                ..Default::default()
            };
            match RunSettings::resolve(&args, &FileConfig::default())
                .unwrap()
                .sink
            {
                SinkSpec::Http(cfg) => cfg.contract,
                other => panic!("{other:?}"),
            }
        };
        let never = Some(SnapshotMode::Never);
        assert_eq!(contract(&[], never), 2, "emit is the default");
        assert_eq!(contract(&["ignore"], never), 1);
        assert_eq!(contract(&["stop", "shop.*=ignore"], never), 1);
        assert_eq!(contract(&["ignore", "shop.t=emit"], never), 2);
        // `read` and `snapshot_end` (the default --snapshot when-needed) need version 3.
        assert_eq!(contract(&[], None), 3);
        assert_eq!(contract(&["ignore"], Some(SnapshotMode::Initial)), 3);
    }

    #[test]
    fn without_start_a_snapshotting_run_starts_at_the_binlog_end() {
        let start = |snapshot: Option<SnapshotMode>, start: Option<&str>| {
            let args = RunArgs {
                source: SourceArgs {
                    source: vec!["mysql://root@127.0.0.1:3306".into()],
                    ..Default::default()
                },
                server_id: Some(1),
                state_dir: Some("/tmp/x".into()),
                snapshot,
                start: start.map(String::from),
                ..Default::default()
            };
            let s = RunSettings::resolve(&args, &FileConfig::default()).unwrap();
            (format!("{:?}", s.start), s.snapshot.explicit_start)
        };
        assert_eq!(
            start(None, None),
            (format!("{:?}", StartSpec::Latest), false)
        );
        assert_eq!(
            start(Some(SnapshotMode::Never), None),
            (format!("{:?}", StartSpec::Earliest), false)
        );
        assert_eq!(
            start(None, Some("earliest")),
            (format!("{:?}", StartSpec::Earliest), true)
        );
    }

    #[test]
    fn heartbeat_from_flag_or_file_within_bounds() {
        let resolve = |flag: Option<&str>, file: &str| {
            let args = RunArgs {
                source: SourceArgs {
                    source: vec!["mysql://root@127.0.0.1:3306".into()],
                    ..Default::default()
                },
                server_id: Some(1),
                state_dir: Some("/tmp/x".into()),
                heartbeat: flag.map(|f| humantime::parse_duration(f).unwrap()),
                ..Default::default()
            };
            let file: FileConfig = toml::from_str(file).unwrap();
            RunSettings::resolve(&args, &file).map(|s| s.heartbeat)
        };
        assert_eq!(resolve(None, "").unwrap(), Duration::from_secs(1));
        assert_eq!(
            resolve(None, "heartbeat = \"250ms\"").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            resolve(Some("2s"), "heartbeat = \"250ms\"").unwrap(),
            Duration::from_secs(2),
            "the flag wins"
        );
        for bad in ["10ms", "2h", "0s"] {
            let e = resolve(Some(bad), "").unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("--heartbeat {bad}")) && e.contains("100ms to 1h"),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_fix() {
        let file = FileConfig::default();
        let args = RunArgs {
            source: SourceArgs {
                source: vec!["mysql://root@127.0.0.1:3306".into()],
                ..Default::default()
            },
            server_id: Some(1),
            state_dir: Some("/tmp/x".into()),
            entity: vec!["nodot=x".into()],
            ..Default::default()
        };
        let e = RunSettings::resolve(&args, &file).unwrap_err().to_string();
        assert!(e.contains("db.table=name"), "{e}");
    }

    #[test]
    fn several_sources_from_flags_or_a_list_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "source = [\"mysql://cdc@replica:3306\", \"mysql://cdc@primary:3306\"]\nfailover_after = \"3s\"\nserver_id = 5\nstate_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let file = FileConfig::load(&p).unwrap();
        let s = RunSettings::resolve(&RunArgs::default(), &file).unwrap();
        let hosts: Vec<&str> = s.failover.sources.iter().map(|s| s.host.as_str()).collect();
        assert_eq!(hosts, ["replica", "primary"]);
        assert_eq!(s.failover.after, Duration::from_secs(3));
        assert_eq!(s.source.host, "replica");
        // Flags win over the file, a flag for the delay too.
        let args = RunArgs {
            source: SourceArgs {
                source: vec!["mysql://cdc@other:3306".into()],
                ..Default::default()
            },
            failover_after: Some(Duration::from_secs(20)),
            ..Default::default()
        };
        let s = RunSettings::resolve(&args, &file).unwrap();
        assert_eq!(s.failover.sources.len(), 1);
        assert_eq!(s.failover.after, Duration::from_secs(20));
        // Another command takes one source, and says so.
        let e = source_config(&SourceArgs::default(), &file)
            .unwrap_err()
            .to_string();
        assert!(e.contains("name one with --source"), "{e}");
        // The same server twice is a mistake.
        let twice = SourceArgs {
            source: vec!["mysql://a@h:1".into(), "mysql://b@h:1".into()],
            ..Default::default()
        };
        let e = source_configs(&twice, &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
    }
}
