//! `blgv-proxy` command line: a thin shell over the library.

use anyhow::Context;
use blgv_proxy::Config;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "blgv-proxy",
    version,
    about = "BLGV site proxy: aggregates a site's ASICs over Stratum V1 onto upstream pools"
)]
struct Cli {
    /// Configuration file (TOML). See deploy/proxy.example.toml.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Log format: human (default) or json for log shippers.
    #[arg(long, value_enum, default_value = "human", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and exit (0 = valid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BLGV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => match Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: OK ({} upstream pool{}, listening on {})",
                    file.display(),
                    c.upstreams.len(),
                    if c.upstreams.len() == 1 { "" } else { "s" },
                    c.proxy.listen
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        None => {
            init_logging(cli.log_format);
            let Some(path) = cli.config else {
                eprintln!("error: no configuration given; fix: run `blgv-proxy --config FILE` (see deploy/proxy.example.toml)");
                return ExitCode::from(2);
            };
            match run(path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    match blgv_proxy::open_files::raise_to_hard_limit() {
        Ok(f) if f.miners() < 4096 => tracing::warn!(
            open_files = f.now,
            "open-files limit {} leaves room for about {} miners; fix: raise the hard limit (LimitNOFILE= in the systemd unit, or `ulimit -Hn` / limits.conf)",
            f.now,
            f.miners()
        ),
        Ok(f) => tracing::info!(
            open_files = f.now,
            raised_from = f.was,
            "open-files limit {} (room for about {} miners)",
            f.now,
            f.miners()
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit; miners beyond it are refused"),
    }
    let runtime = blgv_proxy::runtime::build(&config.proxy)
        .context("starting the async runtime (proxy.threads)")?;
    runtime.block_on(async move {
        let proxy = blgv_proxy::start(config).await?;
        let token = proxy.shutdown_token();
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("signal received; shutting down"),
            _ = token.cancelled() => {}
        }
        proxy.shutdown().await;
        tracing::info!("ledger flushed; bye");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
