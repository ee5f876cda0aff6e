//! `blgv-cloud` command line: a thin shell over the library.

use blgv_cloud::Config;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "blgv-cloud",
    version,
    about = "BLGV pool coordinator: templates to jobs, shares to blocks"
)]
struct Cli {
    /// Configuration file (TOML). See deploy/config/cloud.example.toml.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Log format: human (default) or json for log shippers.
    #[arg(long, value_enum, default_value = "human", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and exit (0 = valid, 2 = invalid).
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => match Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: OK (network {}, node {}, listening on {}, API on {})",
                    file.display(),
                    c.pool.network,
                    c.node.url,
                    c.pool.listen,
                    c.api.listen
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
                eprintln!("error: no configuration given; fix: run `blgv-cloud --config FILE` (see deploy/config/cloud.example.toml)");
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

fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let network = config.payout()?.network;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let source = blgv_cloud::BitcoindRpc::new(&config.node, network);
        let pool = blgv_cloud::start(config, source).await?;
        let token = pool.shutdown_token();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("signal received; shutting down"),
            _ = token.cancelled() => {}
        }
        pool.shutdown().await;
        Ok(())
    })
}
