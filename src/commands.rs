//! The short subcommands: `check`, `status` and `dlq`. (`run` is [`crate::pipeline`], `replay` is
//! [`crate::replay`].)

use std::path::Path;

use crate::checkpoint::{Checkpoint, CheckpointError, Store};
use crate::config::{http_config, http_target, DlqAction, HttpArgs};
use crate::dlq::{DeadLetter, Dlq};
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::source::preflight::{run_checks, Verdict};
use crate::source::{binlog_end, ServerInfo, SourceConfig};

/// `println!` that ends the command quietly when stdout's reader goes away.
macro_rules! say {
    ($($t:tt)*) => {
        crate::units::print_line(format_args!($($t)*))?
    };
}

/// `--include`/`--exclude` for a command; a bad glob is a definite error.
pub fn table_filter(include: &[String], exclude: &[String]) -> Result<crate::filter::Filter> {
    crate::filter::Filter::new(include, exclude)
        .map_err(|e| Error::from(crate::config::ConfigError(e)))
}

/// The tracked tables of `src` as the schema history's starting catalog (`schema show`,
/// `replay --schema-from`). None when stopped before the source answered.
pub async fn schema_catalog(
    src: &SourceConfig,
    filter: &crate::filter::Filter,
    mut shutdown: Shutdown,
) -> Result<Option<crate::schema::Catalog>> {
    use crate::source::schema_seed;
    let Some(mut conn) = src.connect(&mut shutdown).await? else {
        tracing::warn!("stopped before the source was reached");
        return Ok(None);
    };
    let tables = schema_seed::tracked_tables(&mut conn, src, filter).await?;
    Ok(Some(schema_seed::read(&mut conn, src, &tables).await?))
}

/// `schema show`: each tracked table as the schema history would first hold it (its
/// `SHOW CREATE TABLE` read by binsync's DDL reader), one JSON object per line. False when
/// stopped before the source answered (nothing shown).
pub async fn schema_show(
    src: &SourceConfig,
    filter: &crate::filter::Filter,
    shutdown: Shutdown,
) -> Result<bool> {
    let Some(catalog) = schema_catalog(src, filter, shutdown).await? else {
        return Ok(false);
    };
    for t in catalog.tables.values() {
        say!("{}", table_json(t));
    }
    Ok(true)
}

/// One table version as `schema show` and `schema history` print it.
fn table_json(t: &crate::schema::Table) -> serde_json::Value {
    let columns: Vec<serde_json::Value> = t
        .columns
        .iter()
        .map(|c| {
            let mut m = c.contract_json();
            m.insert("binary".into(), c.binary.into());
            m.insert("unsigned".into(), c.unsigned().into());
            m.insert("labels".into(), c.labels().into());
            m.insert("generated".into(), c.generated.into());
            serde_json::Value::Object(m)
        })
        .collect();
    let unique: Vec<serde_json::Value> = t
        .unique
        .iter()
        .map(|u| serde_json::json!({"name": u.name, "columns": u.columns, "partial": u.partial, "hash": u.hash}))
        .collect();
    // `pk`: the declared PRIMARY KEY; `key`: the id's columns (without a PRIMARY KEY, the
    // unique key the server promotes).
    serde_json::json!({
        "db": t.db, "table": t.name, "columns": columns, "pk": t.pk, "unique": unique,
        "key": t.key(), "complete": t.complete,
    })
}

/// `schema history`: every version the state dir's history holds, oldest first, one JSON
/// object per line (`seq` of the DDL that made it; `definition` null: gone from there on).
pub fn schema_history(state_dir: &Path) -> Result<()> {
    let store = Store::open(state_dir)?;
    let cp = store.load()?;
    for v in crate::schema::history::versions(&store)? {
        let line = serde_json::json!({
            "seq": v.seq,
            "db": v.db,
            "table": v.table,
            "definition": v.definition.as_ref().map(table_json),
        });
        say!("{line}");
    }
    if let Some(cp) = cp {
        tracing::info!(checkpoint_seq = cp.position.seq, "versions at or below the checkpoint's seq are in force; older ones are pruned at the next start");
    }
    Ok(())
}

/// `schema refresh --table db.t...`: reads each table's definition from the source now and
/// makes it the history's version: at the checkpoint when no DDL touched the table since,
/// else from the last DDL statement on it since (the one binsync stopped at, typically: a
/// statement its reader cannot follow). Right only when that last statement left the table
/// as it is now. binsync must be stopped (the state dir is locked while it runs). False when
/// stopped before the source answered.
pub async fn schema_refresh(
    state_dir: &Path,
    src: &SourceConfig,
    tables: &[String],
    mut shutdown: Shutdown,
) -> Result<bool> {
    let mut names = Vec::new();
    for t in tables {
        match t.split_once('.') {
            Some((d, n)) if !d.is_empty() && !n.is_empty() => {
                names.push((d.to_string(), n.to_string()))
            }
            _ => {
                return Err(Error::usage(format!(
                    "--table `{t}`: name a table as db.table"
                )))
            }
        }
    }
    if names.is_empty() {
        return Err(Error::usage(
            "schema refresh needs --table db.table (repeatable): the tables to read again",
        ));
    }
    let store = Store::open(state_dir)?;
    let Some(cp) = store.load()? else {
        return Err(Error::usage(format!(
            "{} holds no checkpoint: there is no history to refresh (the first run seeds it)",
            state_dir.display()
        )));
    };
    let Some(mut conn) = src.connect(&mut shutdown).await? else {
        tracing::warn!("stopped before the source was reached; nothing was refreshed");
        return Ok(false);
    };
    let catalog = crate::source::schema_seed::read(&mut conn, src, &names).await?;
    // DDL on them since the checkpoint: the definition read now holds from the last one on
    // (it may be the statement binsync stopped at), the history's until then.
    let found = match cp.position.file.is_empty() {
        true => Vec::new(),
        false => {
            let from = (cp.position.file.clone(), cp.position.offset);
            crate::source::schema_seed::ddl_since(&mut conn, src, from).await?
        }
    };
    let before = crate::schema::history::catalog_at(&store, cp.position.seq)?;
    let (mut fresh, mut later) = (Vec::new(), Vec::new());
    for (d, n) in &names {
        let Some(t) = catalog.table(d, n) else {
            return Err(Error::usage(format!(
                "{d}.{n}: the source has no such table (or the binsync user cannot see it); nothing was refreshed"
            )));
        };
        let last = found
            .iter()
            .rev()
            .find(|f| f.tables.iter().any(|(fd, fnm)| fd == d && fnm == n));
        let from = match last {
            Some(f) => {
                later.push(crate::schema::Pending {
                    file: f.file.clone(),
                    end: f.end,
                    table: t.clone(),
                });
                format!(
                    "after the statement ending at {}:{} ({})",
                    f.file, f.end, f.statement
                )
            }
            None => {
                fresh.push(t.clone());
                format!("at the checkpoint, {}", cp.position)
            }
        };
        let was = before.table(d, n).map(table_json);
        say!(
            "{}",
            serde_json::json!({"table": format!("{d}.{n}"), "holds_from": from, "was": was, "now": table_json(t)})
        );
    }
    crate::schema::history::refresh(&store, cp.position.seq, fresh, later).await?;
    tracing::info!(
        tables = names.len(),
        seq = cp.position.seq,
        "schema history refreshed at the checkpoint"
    );
    Ok(true)
}

/// Prints every finding; returns whether binsync can run against this source.
pub async fn check(
    src: &SourceConfig,
    state_dir: Option<&Path>,
    mut shutdown: Shutdown,
) -> Result<bool> {
    let checkpoint = match state_dir {
        Some(dir) => load_checkpoint(dir)?,
        None => None,
    };
    // A one-shot: an unreachable source is reported at once, not waited for.
    let Some(mut conn) = src.connect_now(&mut shutdown).await? else {
        tracing::warn!("stopped before the source was reached; nothing was checked");
        return Ok(false);
    };
    let info = ServerInfo::read(&mut conn, src).await?;
    say!("source {src}: {}", info.identity);
    let findings = run_checks(&mut conn, src, &info, checkpoint.as_ref()).await?;
    for f in &findings {
        say!("{f}");
    }
    let failed = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Fail)
        .count();
    let warned = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Warn)
        .count();
    if failed > 0 {
        say!("{failed} setting(s) must be fixed before binsync can run ({warned} warning(s))");
    } else {
        say!("ready ({warned} warning(s))");
    }
    Ok(failed == 0)
}

/// The checkpoint, from the store or (while a binsync holds the store) from its published copy.
fn load_checkpoint(dir: &Path) -> Result<Option<Checkpoint>> {
    if !Store::exists(dir) {
        return Ok(None);
    }
    match Store::open(dir) {
        Ok(store) => Ok(store.load()?),
        Err(CheckpointError::Locked { .. }) => Ok(Store::read_published(dir)),
        Err(e) => Err(e.into()),
    }
}

pub async fn status(src: Option<&SourceConfig>, state_dir: &Path) -> Result<()> {
    // A missing directory is most often a typo: "no checkpoint" would hide it.
    if !state_dir.exists() {
        return Err(Error::usage(format!(
            "state dir {} does not exist (status creates nothing); name the --state-dir that binsync run uses",
            state_dir.display()
        )));
    }
    // A reader never creates a store: a `run` starting meanwhile would find it half made.
    let running = Store::exists(state_dir)
        && matches!(Store::open(state_dir), Err(CheckpointError::Locked { .. }));
    if let Some(line) = crate::state::ha::describe_cache(state_dir) {
        say!("{line}");
    }
    let cp = load_checkpoint(state_dir)?;
    match &cp {
        None => say!(
            "checkpoint: none in {} (a run starts from --start)",
            state_dir.display()
        ),
        Some(cp) => {
            say!("checkpoint: {}", cp.position);
            say!("written by: {}", cp.server);
        }
    }
    if running {
        say!("state dir is in use by a running binsync");
    }
    snapshot_status(state_dir, running)?;
    run_status(state_dir, running)?;
    let Some(src) = src else { return Ok(()) };
    let mut conn = match src.connect_once().await {
        Ok(c) => c,
        Err(e) => {
            say!("source: not reachable ({e})");
            return Ok(());
        }
    };
    let info = ServerInfo::read(&mut conn, src).await?;
    let (file, offset, gtid) = binlog_end(&mut conn, src, info.flavor()).await?;
    say!(
        "source:     {} at {file}:{offset}{}",
        info.identity,
        gtid.map(|g| format!(" gtid={g}")).unwrap_or_default()
    );
    if let Some(cp) = cp {
        if cp.position.file == file && cp.server.same_server(&info.identity) {
            let behind = offset.saturating_sub(cp.position.offset);
            say!("lag:        {} of binlog", crate::units::bytes(behind));
        } else {
            say!(
                "lag:        checkpoint is in {}, source writes {file}",
                cp.position.file
            );
        }
    }
    Ok(())
}

/// The run's own view in `status` (`metrics::run_status`): from the running binsync, or what
/// the last run left; and the dead-letter queue's depth.
fn run_status(state_dir: &Path, running: bool) -> Result<()> {
    use crate::units::{bytes, count, duration};
    let at = |ms: u64| crate::json::format_utc_micros(ms as i64 * 1000);
    let st = crate::metrics::run_status::read(state_dir);
    match (&st, running) {
        (Some(s), true) => say!(
            "run:        running since {} (pid {})",
            at(s.started_unix_ms),
            s.pid
        ),
        (Some(s), false) => match s.ended_unix_ms {
            Some(end) => say!(
                "last run:   ended {} after {} (pid {}); as it left things:",
                at(end),
                duration(std::time::Duration::from_millis(
                    end.saturating_sub(s.started_unix_ms)
                )),
                s.pid
            ),
            None => say!(
                "last run:   did not end cleanly (pid {}, killed or the machine stopped); last heard from {}:",
                s.pid,
                at(s.updated_unix_ms)
            ),
        },
        (None, true) => say!("run:        running; it has published no run status yet"),
        (None, false) => say!("last run:   none recorded in {}", state_dir.display()),
    }
    if let Some(s) = &st {
        if let Some(url) = &s.source {
            let server = s.server.as_deref().unwrap_or("server not known");
            let link = if s.connected {
                "connected"
            } else {
                "not connected"
            };
            say!("  source:     {url} ({server}), {link}");
        }
        let lag = match (s.lag_seconds, s.caught_up) {
            (_, true) => "0 ms (caught up with the source)".to_string(),
            (Some(l), false) => format!(
                "{} behind the source",
                duration(std::time::Duration::from_secs_f64(l.max(0.0)))
            ),
            (None, false) => "not known (nothing delivered, no heartbeat yet)".to_string(),
        };
        say!("  lag:        {lag}");
        say!(
            "  throughput: {} changes/s over the last {}; {} delivered since it started",
            count(s.changes_per_second.round() as u64),
            duration(std::time::Duration::from_secs_f64(
                s.throughput_window_seconds.max(0.0)
            )),
            count(s.delivered_changes)
        );
        if let Some(pos) = &s.read_position {
            let behind = s
                .bytes_behind
                .map(|b| format!(" ({} behind the source's binlog end)", bytes(b)))
                .unwrap_or_default();
            say!("  read up to: {pos}{behind}");
        }
    }
    // The queue itself when no binsync holds the store; else what the running one counts.
    let depth = match (running, Store::exists(state_dir)) {
        (true, _) => st.as_ref().map(|s| s.dlq_entries),
        (false, true) => match Store::open(state_dir) {
            Ok(store) => Some(Dlq::open(&store)?.len() as u64),
            Err(_) => None,
        },
        (false, false) => Some(0),
    };
    match depth {
        Some(0) => say!("dlq:        empty"),
        Some(n) => say!("dlq:        {n} dead letters (binsync dlq list)"),
        None => say!("dlq:        not known"),
    }
    Ok(())
}

/// The snapshot's state in `status`: from the store when no binsync runs, else from the
/// copy the running one keeps (`snapshot::progress::STATUS_FILE`, per chunk handed on).
fn snapshot_status(state_dir: &Path, running: bool) -> Result<()> {
    use crate::snapshot::progress::{self, State};
    let tables = if running {
        progress::read_status(state_dir)
    } else if Store::exists(state_dir) {
        match Store::open(state_dir) {
            Ok(store) => progress::load(&store)?,
            Err(_) => progress::read_status(state_dir),
        }
    } else {
        Vec::new()
    };
    let requests = progress::read_requests(state_dir).unwrap_or_default();
    if tables.is_empty() && requests.is_empty() {
        say!("snapshot:   none");
        return Ok(());
    }
    let done = tables.iter().filter(|t| t.state == State::Done).count();
    say!("snapshot:   {done} of {} tables done", tables.len());
    for t in &tables {
        let state = match t.state {
            State::Pending => "waiting".to_string(),
            State::Running => format!(
                "{} of about {} rows, {} chunks",
                crate::units::count(t.rows),
                crate::units::count(t.estimate.max(t.rows)),
                t.chunks
            ),
            State::Done => format!("done, {} rows", crate::units::count(t.rows)),
        };
        say!("  {}: {state}", t.qualified());
    }
    for (_, tables) in requests {
        say!("  requested, not yet taken: {}", tables.join(", "));
    }
    Ok(())
}

/// `binsync snapshot --table ...`: records the request in the state dir.
pub fn snapshot_request(state_dir: &Path, tables: &[String]) -> Result<()> {
    for t in tables {
        if t.split_once('.')
            .is_none_or(|(d, n)| d.is_empty() || n.is_empty())
        {
            return Err(Error::usage(format!(
                "--table {t}: write db.table, e.g. --table shop.products"
            )));
        }
    }
    if !state_dir.is_dir() {
        return Err(Error::usage(format!(
            "state dir {} does not exist; name the --state-dir of the binsync run that should load the tables",
            state_dir.display()
        )));
    }
    let file = crate::snapshot::progress::write_request(state_dir, tables).map_err(|e| {
        Error::usage(format!(
            "cannot write the request into {}: {e}",
            state_dir.display()
        ))
    })?;
    say!(
        "requested a snapshot of {} ({}); a running binsync with this state dir takes it within a second, otherwise the next run does; `binsync status` shows its progress",
        tables.join(", "),
        file.display()
    );
    Ok(())
}

/// `binsync dlq ...`. Returns false when a replay left entries undelivered.
pub async fn dlq(
    state_dir: &Path,
    action: DlqAction,
    file_http: Option<&HttpArgs>,
) -> Result<bool> {
    if !state_dir.exists() {
        return Err(Error::usage(format!(
            "state dir {} does not exist; name the --state-dir of the binsync run",
            state_dir.display()
        )));
    }
    match action {
        DlqAction::List => list_dead_letters(&read_dead_letters(state_dir, None)?),
        DlqAction::Show { id } => {
            let found = read_dead_letters(state_dir, Some(id))?.pop();
            show_dead_letter(id, found)
        }
        DlqAction::Drop { ids, all } => {
            if ids.is_empty() && !all {
                return Err(Error::usage("name the dead letters to drop, or pass --all"));
            }
            let dlq = open_dlq(state_dir)?;
            let present: Vec<u64> = match &dlq {
                Some(d) => d.list()?.iter().map(|e| e.id).collect(),
                None => Vec::new(),
            };
            // Every named id must exist, or nothing is dropped: a typo must not half-apply.
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| !present.contains(id))
                .map(u64::to_string)
                .collect();
            if !missing.is_empty() {
                return Err(Error::usage(format!(
                    "no dead letter {}; nothing was dropped (binsync dlq list shows the ids)",
                    missing.join(", ")
                )));
            }
            let Some(dlq) = dlq else {
                say!("no dead letters");
                return Ok(true);
            };
            for id in if all { present } else { ids } {
                if dlq.remove(id).await? {
                    say!("dropped dead letter {id}");
                } else {
                    say!("no dead letter {id}");
                }
            }
            Ok(true)
        }
        DlqAction::Replay { ids, sink, http } => {
            let http = HttpArgs::from(&http);
            let dlq = open_dlq(state_dir)?;
            let entries = match &dlq {
                Some(d) => d.list()?,
                None => Vec::new(),
            };
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| !entries.iter().any(|e| e.id == **id))
                .map(u64::to_string)
                .collect();
            if !missing.is_empty() {
                return Err(Error::usage(format!(
                    "no dead letter {}; nothing was sent (binsync dlq list shows the ids)",
                    missing.join(", ")
                )));
            }
            let Some(dlq) = dlq else {
                say!("nothing to replay");
                return Ok(true);
            };
            let selected: Option<&[u64]> = if ids.is_empty() { None } else { Some(&ids) };
            let mut all_ok = true;
            // Entries may name different URLs; group by the URL each goes to.
            let mut urls: Vec<String> = entries
                .iter()
                .filter(|e| selected.is_none_or(|s| s.contains(&e.id)))
                .map(|e| sink.clone().unwrap_or_else(|| e.url.clone()))
                .collect();
            urls.sort();
            urls.dedup();
            if urls.is_empty() {
                say!("nothing to replay");
            }
            for url in urls {
                let cfg = http_config(http_target(&url)?, &http, file_http)?;
                let these: Vec<u64> = entries
                    .iter()
                    .filter(|e| selected.is_none_or(|s| s.contains(&e.id)))
                    .filter(|e| sink.is_some() || e.url == url)
                    .map(|e| e.id)
                    .collect();
                let (ok, failed) =
                    crate::sink::http::replay_dead_letters(&cfg, &dlq, Some(&these)).await?;
                say!("{}: {ok} delivered, {failed} still dead", cfg.url);
                all_ok &= failed == 0;
            }
            Ok(all_ok)
        }
    }
}

/// The dead-letter queue of the state dir's store; None when it has no store (then it has no
/// dead letters, and no store is made for them).
fn open_dlq(state_dir: &Path) -> Result<Option<Dlq>> {
    match Store::exists(state_dir) {
        true => Ok(Some(Dlq::open(&Store::open(state_dir)?)?)),
        false => Ok(None),
    }
}

/// The dead letters (or the one `id`), from the store, or, while a running binsync holds it,
/// from the copy that binsync publishes.
fn read_dead_letters(state_dir: &Path, id: Option<u64>) -> Result<Vec<DeadLetter>> {
    if !Store::exists(state_dir) {
        return Ok(Vec::new());
    }
    match Store::open(state_dir) {
        Err(CheckpointError::Locked { .. }) => {
            eprintln!("binsync: the state dir is in use by a running binsync; showing the dead letters it published");
            let mut all = Dlq::read_published(state_dir)?;
            all.retain(|e| id.is_none_or(|id| e.id == id));
            Ok(all)
        }
        store => {
            let dlq = Dlq::open(&store?)?;
            Ok(match id {
                Some(id) => dlq.get(id)?.into_iter().collect(),
                None => dlq.list()?,
            })
        }
    }
}

fn list_dead_letters(entries: &[DeadLetter]) -> Result<bool> {
    if entries.is_empty() {
        say!("no dead letters");
    }
    for e in entries {
        say!(
            "{:>4}  {}  {:<9} {:>6} changes  seq {}..{}  {}  {}",
            e.id,
            crate::json::format_utc_micros(e.at_unix_ms as i64 * 1000),
            e.status
                .map_or_else(|| "no reply".into(), |s| format!("HTTP {s}")),
            e.count,
            e.first_seq,
            e.last_seq,
            e.batch_id,
            e.response.lines().next().unwrap_or("")
        );
    }
    Ok(true)
}

fn show_dead_letter(id: u64, found: Option<DeadLetter>) -> Result<bool> {
    let e =
        found.ok_or_else(|| Error::usage(format!("no dead letter {id}; see binsync dlq list")))?;
    let payload: serde_json::Value =
        serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::String(e.payload.clone()));
    let shown = serde_json::json!({
        "id": e.id, "batch_id": e.batch_id, "url": e.url, "status": e.status,
        "response": e.response, "at": crate::json::format_utc_micros(e.at_unix_ms as i64 * 1000),
        "count": e.count, "first_seq": e.first_seq, "last_seq": e.last_seq, "payload": payload,
    });
    say!(
        "{}",
        serde_json::to_string_pretty(&shown).unwrap_or_default()
    );
    Ok(true)
}
