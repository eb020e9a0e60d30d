//! The binary: parses the command line, sets up logging, runs one subcommand, and turns any
//! error into one line on stderr and a non-zero exit. The work lives in the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use binsync::config::{
    self, Cli, Command, FileConfig, LogFormat, ReceiveSettings, ReplaySettings, RunSettings,
};
use binsync::pipeline::{self, Outcome};
use binsync::shutdown::Shutdown;

fn main() -> ExitCode {
    binsync::alloc::tune();
    let cli = Cli::parse();
    // The receiver's settings are flags only: a config file given to it would be ignored.
    if let (Command::Receive(_), Some(path)) = (&cli.command, &cli.config) {
        return fail(&anyhow::anyhow!(
            "binsync receive reads no config file (its settings are flags, see binsync receive --help); drop --config {} (or unset BINSYNC_CONFIG)",
            path.display()
        ));
    }
    let file = match cli.config.as_deref().map(FileConfig::load).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => return fail(&e.into()),
    };
    if let Err(e) = init_logging(
        cli.log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Text),
    ) {
        return fail(&e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(dispatch(cli.command, file)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

async fn dispatch(command: Command, file: FileConfig) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let settings = RunSettings::resolve(&args, &file)?;
            // Said once, so that a run without --sink is not a surprise on the terminal.
            if settings.sink.is_stdout() {
                tracing::info!(
                    sink = %settings.sink,
                    "changes go to stdout as JSON lines (--sink names a file or the sync API)"
                );
            } else {
                tracing::info!(sink = %settings.sink, "changes go to the sink");
            }
            let stop = Shutdown::on(shutdown_signal());
            let outcome = match args.state.resolve(&settings.sink, &settings.state_dir)? {
                // --state nats: standby until this process holds the lease (see binsync::state::ha).
                Some(ha) => {
                    use binsync::state::StateError;
                    match binsync::state::ha::run(ha, stop, |s| pipeline::run(settings, s)).await {
                        Ok(Some(outcome)) => outcome?,
                        Ok(None) => Outcome::Stopped,
                        // At once: the run's tasks must not publish or write anything more.
                        Err(e @ (StateError::LeaseLost | StateError::Conflict)) => {
                            eprintln!("binsync: error: {e}");
                            std::process::exit(1);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                None => pipeline::run(settings, stop).await?,
            };
            match outcome {
                Outcome::CaughtUp => {
                    tracing::info!("caught up with the source's binlog end at start-up; exiting")
                }
                Outcome::Stopped => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let src = config::source_config(&args.source, &file)?;
            let dir = args.state_dir.or(file.state_dir);
            let ok =
                binsync::commands::check(&src, dir.as_deref(), Shutdown::on(shutdown_signal()))
                    .await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status(args) => {
            let dir = args
                .state_dir
                .or(file.state_dir.clone())
                .context("no --state-dir: name the directory binsync run uses")?;
            let src = if !args.source.source.is_empty() || file.source.is_some() {
                Some(config::source_config(&args.source, &file)?)
            } else {
                None
            };
            binsync::commands::status(src.as_ref(), &dir).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Receive(args) => match ReceiveSettings::resolve(args)? {
            ReceiveSettings::Dump(dir) => {
                let dump = binsync_receiver::dump(&dir)?;
                let text = serde_json::to_string_pretty(&dump)?;
                binsync::units::print_line(format_args!("{text}")).map_err(binsync::Error::from)?;
                Ok(ExitCode::SUCCESS)
            }
            ReceiveSettings::Serve(opts) => {
                binsync_receiver::serve(*opts, shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
            ReceiveSettings::Consume(opts) => {
                binsync_receiver::consume(*opts, shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Dlq(args) => {
            let dir = args
                .state_dir
                .or(file.state_dir.clone())
                .context("no --state-dir: name the directory binsync run uses")?;
            let ok = binsync::commands::dlq(&dir, args.action, file.http.as_ref()).await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Snapshot(args) => {
            let dir = args
                .state_dir
                .or(file.state_dir.clone())
                .context("no --state-dir: name the directory the binsync run that should load the tables uses")?;
            binsync::commands::snapshot_request(&dir, &args.table)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema(args) => {
            let state_dir = || {
                args.state_dir
                    .clone()
                    .or_else(|| file.state_dir.clone())
                    .ok_or_else(|| {
                        binsync::error::Error::usage(format!(
                            "schema {} needs --state-dir: the state dir whose history to use",
                            args.action
                        ))
                    })
            };
            let done = match args.action.as_str() {
                "history" => {
                    binsync::commands::schema_history(&state_dir()?)?;
                    true
                }
                "refresh" => {
                    let dir = state_dir()?;
                    let src = config::source_config(&args.source, &file)?;
                    binsync::commands::schema_refresh(
                        &dir,
                        &src,
                        &args.table,
                        Shutdown::on(shutdown_signal()),
                    )
                    .await?
                }
                _ => {
                    let src = config::source_config(&args.source, &file)?;
                    let filter = binsync::commands::table_filter(&args.include, &args.exclude)?;
                    binsync::commands::schema_show(&src, &filter, Shutdown::on(shutdown_signal()))
                        .await?
                }
            };
            Ok(if done {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Replay(args) => {
            let settings = ReplaySettings::resolve(&args, &file)?;
            let history = match &settings.schema_from {
                Some(binsync::config::SchemaFrom::File(path)) => Some(
                    binsync::schema::ddl::catalog_from_file(path)
                        .map_err(binsync::error::Error::replay)?,
                ),
                Some(binsync::config::SchemaFrom::Source(src)) => {
                    let catalog = binsync::commands::schema_catalog(
                        src,
                        &settings.decode.filter,
                        Shutdown::on(shutdown_signal()),
                    )
                    .await?;
                    // Stopped before the source answered: nothing was replayed.
                    let Some(catalog) = catalog else {
                        return Ok(ExitCode::FAILURE);
                    };
                    Some(catalog)
                }
                None => None,
            };
            let stats = binsync::replay::replay_with_history(
                &settings.files,
                settings.sink,
                settings.decode,
                history,
            )
            .await?;
            tracing::info!(files = stats.files, events = %binsync::units::count(stats.events), changes = %binsync::units::count(stats.changes), "replay done");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("stop requested: delivering what is in flight, then exiting");
}

/// Logs on stderr, filtered by `BINSYNC_LOG` (see [`log_filter`]).
fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    let spec = std::env::var("BINSYNC_LOG").ok();
    let filter = log_filter(spec.as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        // A program reads these: the target says which module (or library) wrote the line.
        LogFormat::Json => builder.json().with_target(true).init(),
    }
    Ok(())
}

/// `BINSYNC_LOG` as a filter. A bare level (`debug`) is binsync's own level; the libraries
/// (sled, hyper, reqwest, rustls, mysql_async, ...) stay at warn, or quieter if that level is,
/// unless named (`debug,sled=debug`): their debug lines are their internals, not binsync's
/// stages. Unset: info. Targets match by prefix, so `binsync` covers `binsync_receiver`.
fn log_filter(spec: Option<&str>) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    use tracing_subscriber::filter::LevelFilter;
    let mut own = LevelFilter::INFO;
    let mut named = Vec::new();
    for d in spec.unwrap_or_default().split(',').map(str::trim) {
        match d.parse::<LevelFilter>() {
            _ if d.is_empty() => {}
            Ok(level) => own = level,
            Err(_) => named.push(d),
        }
    }
    let libraries = own.min(LevelFilter::WARN);
    // Later directives for the same target replace earlier ones: the named ones win.
    let text = std::iter::once(format!("{libraries},binsync={own}"))
        .chain(named.iter().map(|d| d.to_string()))
        .collect::<Vec<_>>()
        .join(",");
    tracing_subscriber::EnvFilter::builder()
        .parse(&text)
        .map_err(|e| {
            anyhow::anyhow!(
                "BINSYNC_LOG `{}`: {e}; write a level and targets, e.g. BINSYNC_LOG=debug or BINSYNC_LOG=debug,sled=debug",
                spec.unwrap_or_default()
            )
        })
}

/// One line, no backtrace: the messages name the fix. A closed stdout (`| head`) is no
/// failure: the command ends quietly with exit 0, as `cat` does.
fn fail(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<binsync::Error>()
        .is_some_and(binsync::Error::is_closed_output)
    {
        return ExitCode::SUCCESS;
    }
    eprintln!("binsync: error: {e:#}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_debug_assert() {
        use clap::CommandFactory;
        binsync::config::Cli::command().debug_assert();
    }
}
