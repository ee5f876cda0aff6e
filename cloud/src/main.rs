//! `blgv-cloud` command line: a thin shell over the library.

use blgv_cloud::Config;
use clap::{Parser, Subcommand};
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
    #[command(subcommand)]
    command: Option<Command>,
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
                    "{}: OK (network {}, node {}, listening on {})",
                    file.display(),
                    c.pool.network,
                    c.node.url,
                    c.pool.listen
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        None => {
            eprintln!("error: the pool server is not in this build yet; use `blgv-cloud check-config FILE`");
            ExitCode::from(2)
        }
    }
}
