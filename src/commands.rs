//! The short subcommands: `check` and `status`. (`run` is [`crate::pipeline`], `replay` is
//! [`crate::replay`].)

use std::path::Path;

use crate::checkpoint::{Checkpoint, CheckpointError, Store};
use crate::error::Result;
use crate::source::preflight::{run_checks, Verdict};
use crate::source::{binlog_end, ServerInfo, SourceConfig};

/// Prints every finding; returns whether binsync can run against this source.
pub async fn check(src: &SourceConfig, state_dir: Option<&Path>) -> Result<bool> {
    let checkpoint = match state_dir {
        Some(dir) => load_checkpoint(dir)?,
        None => None,
    };
    let mut conn = src.connect().await?;
    let info = ServerInfo::read(&mut conn, src).await?;
    println!("source {src}: {}", info.identity);
    let findings = run_checks(&mut conn, src, &info, checkpoint.as_ref()).await?;
    for f in &findings {
        println!("{f}");
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
        println!("{failed} setting(s) must be fixed before binsync can run ({warned} warning(s))");
    } else {
        println!("ready ({warned} warning(s))");
    }
    Ok(failed == 0)
}

/// The checkpoint, from the store or (while a binsync holds the store) from its published copy.
fn load_checkpoint(dir: &Path) -> Result<Option<Checkpoint>> {
    if !dir.exists() {
        return Ok(None);
    }
    match Store::open(dir) {
        Ok(store) => Ok(store.load()?),
        Err(CheckpointError::Locked { .. }) => Ok(Store::read_published(dir)),
        Err(e) => Err(e.into()),
    }
}

pub async fn status(src: Option<&SourceConfig>, state_dir: &Path) -> Result<()> {
    let running = matches!(Store::open(state_dir), Err(CheckpointError::Locked { .. }));
    let cp = load_checkpoint(state_dir)?;
    match &cp {
        None => println!(
            "checkpoint: none in {} (a run starts from --start)",
            state_dir.display()
        ),
        Some(cp) => {
            println!("checkpoint: {}", cp.position);
            println!("written by: {}", cp.server);
        }
    }
    if running {
        println!("state dir is in use by a running binsync");
    }
    let Some(src) = src else { return Ok(()) };
    let mut conn = match src.connect_once().await {
        Ok(c) => c,
        Err(e) => {
            println!("source: not reachable ({e})");
            return Ok(());
        }
    };
    let info = ServerInfo::read(&mut conn, src).await?;
    let (file, offset, gtid) = binlog_end(&mut conn, src, info.flavor()).await?;
    println!(
        "source:     {} at {file}:{offset}{}",
        info.identity,
        gtid.map(|g| format!(" gtid={g}")).unwrap_or_default()
    );
    if let Some(cp) = cp {
        if cp.position.file == file && cp.server.same_server(&info.identity) {
            let behind = offset.saturating_sub(cp.position.offset);
            println!("lag:        {} of binlog", crate::units::bytes(behind));
        } else {
            println!(
                "lag:        checkpoint is in {}, source writes {file}",
                cp.position.file
            );
        }
    }
    Ok(())
}
