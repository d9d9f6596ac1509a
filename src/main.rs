//! The `portcullis` command line: `serve` runs the gateway, `check` validates everything offline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis::config::Config;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A security-hardening edge gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file (default: $PORTCULLIS_CONFIG, then ./portcullis.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration, every policy file and every certificate, then exit.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    return ExitCode::from(2);
                }
            };
            portcullis::observability::init_logging(&config);
            match portcullis::serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis: cannot start: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => {
            let config = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let report = portcullis::check(&config);
            for l in &report.lines {
                println!("{l}");
            }
            if report.errors.is_empty() {
                println!("ok");
                ExitCode::SUCCESS
            } else {
                for e in &report.errors {
                    eprintln!("{e}");
                }
                eprintln!("{} error(s)", report.errors.len());
                ExitCode::FAILURE
            }
        }
    }
}
