//! The `portcullis` command line: `serve` runs the gateway, `check` validates everything offline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// mimalloc: the request path allocates many small, short-lived objects (headers, futures,
// buffers); glibc's malloc was ~12% of the proxy's CPU under load, and mimalloc serves 1.21×
// the requests/s of glibc (bench/compare.sh, 5 rounds). It holds ~13 KiB more per idle
// connection (bench/results/2026-12-02.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    /// The security posture checklist (PASS / WARN / FAIL with a remedy each). Exits 1 on any
    /// FAIL; in production `serve` refuses to start on the same.
    Posture {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Review policy changes before they ship.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Worker tokens and room tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Built-in self-tests against the compiled policy.
    Selftest {
        #[command(subcommand)]
        command: SelftestCommand,
    },
    /// Signed URLs for routes with `signed_urls = true`.
    Url {
        #[command(subcommand)]
        command: UrlCommand,
    },
    /// Automatic certificates (`[tls.acme]`).
    Acme {
        #[command(subcommand)]
        command: AcmeCommand,
    },
}

#[derive(Subcommand)]
enum AcmeCommand {
    /// Each name with its certificate's expiry, the next renewal and the last error, read from
    /// the storage folder (the gateway need not run).
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Effective changes from OLD to NEW per route: who gains or loses access, limits, paths.
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Evaluates the requests in FILE (TOML `[[request]]` entries) against the policy and prints
    /// each decision and reason. Exits 1 when an `expect` does not hold.
    Test {
        #[arg(long)]
        requests: PathBuf,
        /// A policy folder to test instead of the configured one.
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SelftestCommand {
    /// Sends a corpus of known bypass spellings of every blocked prefix through the policy's
    /// path decision and prints, per prefix, that each is refused. Exits 1 on any bypass.
    Paths {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UrlCommand {
    /// Prints `PATH?expires=…&kid=…&sig=…`, valid for TTL.
    Sign {
        /// The canonical path, e.g. /admin/storage/assets/a.png
        #[arg(long)]
        path: String,
        /// Lifetime: 90s, 10m, 2h, 1d.
        #[arg(long, default_value = "10m")]
        ttl: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// Key id (default: signed_urls.sign_with).
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random worker token (32 bytes, URL-safe base64). Nothing is saved.
    Generate,
    /// Sign a room token with one of the policy's room keys.
    Mint {
        /// The room the token admits to.
        #[arg(long)]
        room: String,
        /// A capability to grant; repeat for several.
        #[arg(long = "cap")]
        caps: Vec<String>,
        /// Lifetime: 90s, 15m, 2h, 1d.
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// Key id; default: the last signing key by name.
        #[arg(long)]
        kid: Option<String>,
        /// Subject.
        #[arg(long, default_value = "cli")]
        sub: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Revoke tokens at every replica within a second, closing their WebSocket sessions: by
    /// token id, subject or key id. Needs `[shared_state]` in the policy.
    Revoke {
        #[command(flatten)]
        target: RevocationTarget,
        /// How long the revocation lasts (90s, 15m, 2h, 1d); default: until unrevoked. For a
        /// `jti`, the token's remaining lifetime is enough.
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Lift a revocation.
    Unrevoke {
        #[command(flatten)]
        target: RevocationTarget,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// List the revocations the shared store holds.
    Revocations {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Decode a token, verify it against the configured keys, and explain the result.
    Inspect {
        token: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// What a revocation names: exactly one of `--jti`, `--sub`, `--kid`.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct RevocationTarget {
    #[arg(long)]
    jti: Option<String>,
    #[arg(long)]
    sub: Option<String>,
    #[arg(long)]
    kid: Option<String>,
}

impl RevocationTarget {
    fn kind_and_value(self) -> (portcullis::auth::revoked::Kind, String) {
        use portcullis::auth::revoked::Kind;
        match (self.jti, self.sub, self.kid) {
            (Some(v), _, _) => (Kind::Jti, v),
            (_, Some(v), _) => (Kind::Sub, v),
            (_, _, Some(v)) => (Kind::Kid, v),
            _ => unreachable!("clap requires one of --jti, --sub, --kid"),
        }
    }
}

fn load(config: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(config).map_err(|e| {
        eprintln!("portcullis: {e}");
        ExitCode::from(2)
    })
}

/// Prints a report; exits 0 when it passes, 1 when it does not, 2 when it could not be made.
fn report(result: Result<(String, bool), portcullis::cli::CliError>) -> ExitCode {
    match result {
        Ok((out, ok)) => {
            print!("{out}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Token { command } => match command {
            TokenCommand::Generate => {
                println!("{}", portcullis::auth::worker_token::generate());
                ExitCode::SUCCESS
            }
            TokenCommand::Mint {
                room,
                caps,
                ttl,
                kid,
                sub,
                config,
            } => {
                let config = match load(config.as_deref()) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                match portcullis::cli::mint(&config, &room, &caps, &ttl, kid.as_deref(), &sub) {
                    Ok(token) => {
                        println!("{token}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("portcullis: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            TokenCommand::Revoke {
                target,
                ttl,
                config,
            } => {
                let config = match load(config.as_deref()) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let (kind, value) = target.kind_and_value();
                report(
                    portcullis::cli::revoke(&config, kind, &value, ttl.as_deref())
                        .map(|o| (o, true)),
                )
            }
            TokenCommand::Unrevoke { target, config } => {
                let config = match load(config.as_deref()) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let (kind, value) = target.kind_and_value();
                report(portcullis::cli::unrevoke(&config, kind, &value).map(|o| (o, true)))
            }
            TokenCommand::Revocations { config } => {
                let config = match load(config.as_deref()) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                report(portcullis::cli::revocations(&config).map(|o| (o, true)))
            }
            TokenCommand::Inspect { token, config } => {
                let config = match load(config.as_deref()) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let (report, ok) = portcullis::cli::inspect(&config, token.trim());
                print!("{report}");
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
        },
        Command::Posture { config } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let report = portcullis::posture(&config);
            print!("{}", report.render(config.mode));
            if report.failures().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Policy { command } => match command {
            PolicyCommand::Diff { old, new, config } => {
                let config = match load(config.as_deref()) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                report(portcullis::cli::policy_diff(&config, &old, &new).map(|out| (out, true)))
            }
            PolicyCommand::Test {
                requests,
                policy,
                config,
            } => {
                let config = match load(config.as_deref()) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                report(portcullis::cli::policy_test(
                    &config,
                    policy.as_deref(),
                    &requests,
                ))
            }
        },
        Command::Selftest {
            command: SelftestCommand::Paths { config },
        } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            report(portcullis::cli::selftest_paths(&config))
        }
        Command::Acme {
            command: AcmeCommand::Status { config },
        } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match portcullis::cli::acme_status(&config) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Url {
            command:
                UrlCommand::Sign {
                    path,
                    ttl,
                    method,
                    key,
                    config,
                },
        } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match portcullis::cli::sign_url(&config, &method, &path, &ttl, key.as_deref()) {
                Ok(url) => {
                    println!("{url}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config } => {
            let config = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    return ExitCode::from(2);
                }
            };
            portcullis::observability::init_logging(&config);
            let result = portcullis::serve(config);
            portcullis::observability::flush_logs();
            match result {
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
