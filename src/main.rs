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
    /// A TLS terminator in front of one service, with the secure defaults (HSTS, blocked paths,
    /// a header profile, a per-client rate limit) and no files to write:
    /// `portcullis proxy --from api.example.com --to 127.0.0.1:3000`.
    Proxy {
        /// The host name clients use.
        #[arg(long)]
        from: String,
        /// The service: host:port, http://host:port or https://host:port.
        #[arg(long)]
        to: String,
        /// Who may use it: none (anyone), static (the worker token) or jwt (with --jwks-url).
        #[arg(long, default_value = "none")]
        auth: String,
        /// The JWKS of the issuer whose tokens `--auth jwt` accepts.
        #[arg(long)]
        jwks_url: Option<String>,
        /// The `iss` those tokens must carry.
        #[arg(long)]
        issuer: Option<String>,
        /// An `aud` those tokens must carry.
        #[arg(long)]
        audience: Option<String>,
        /// The HTTPS listener (default 0.0.0.0:443 for a public name, 127.0.0.1:8443 for a
        /// local one).
        #[arg(long)]
        listen: Option<String>,
        /// The HTTP listener for redirects and ACME (default 0.0.0.0:80, or 127.0.0.1:8080).
        #[arg(long)]
        http: Option<String>,
        /// auto (ACME for a public name, the development CA for a local one), acme or
        /// development.
        #[arg(long, default_value = "auto")]
        certificate: String,
        /// ACME account contact (repeatable).
        #[arg(long)]
        email: Vec<String>,
        /// The ACME directory (default: Let's Encrypt).
        #[arg(long)]
        acme_directory: Option<String>,
        /// Extra roots to trust for the ACME directory.
        #[arg(long)]
        acme_ca: Option<PathBuf>,
        /// The header profile: api-strict, browser-app, ws-only or none.
        #[arg(long, default_value = "api-strict")]
        headers: String,
        /// Requests per second each client address may make (bursts of twice that).
        #[arg(long, default_value_t = 50)]
        rate: u32,
        /// Where the policy, certificates and ACME state are kept (default: $PORTCULLIS_DATA_DIR,
        /// then ./data).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Write the configuration, print the policy and the posture checklist, and exit.
        #[arg(long)]
        check: bool,
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
        Command::Proxy {
            from,
            to,
            auth,
            jwks_url,
            issuer,
            audience,
            listen,
            http,
            certificate,
            email,
            acme_directory,
            acme_ca,
            headers,
            rate,
            state,
            check,
        } => {
            use portcullis::cli::proxy::{self, CertSource, ProxyAuth, ProxyOptions};
            let auth = match (auth.as_str(), jwks_url) {
                ("none", None) => ProxyAuth::None,
                ("static", None) => ProxyAuth::Static,
                ("jwt", Some(jwks_url)) => ProxyAuth::Jwt {
                    jwks_url,
                    issuer,
                    audience,
                },
                ("jwt", None) => {
                    eprintln!("portcullis: --auth jwt needs --jwks-url");
                    return ExitCode::from(2);
                }
                (_, Some(_)) => {
                    eprintln!("portcullis: --jwks-url goes with --auth jwt");
                    return ExitCode::from(2);
                }
                (other, None) => {
                    eprintln!("portcullis: --auth {other:?}: expected none, static or jwt");
                    return ExitCode::from(2);
                }
            };
            let certificate = match certificate.as_str() {
                "auto" => CertSource::Auto,
                "acme" => CertSource::Acme,
                "development" => CertSource::Development,
                other => {
                    eprintln!(
                        "portcullis: --certificate {other:?}: expected auto, acme or development"
                    );
                    return ExitCode::from(2);
                }
            };
            let env = |k: &str| portcullis::env::var(k);
            let state = state
                .or_else(|| env("PORTCULLIS_DATA_DIR").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("data"));
            let opts = ProxyOptions {
                from,
                to,
                auth,
                listen,
                http,
                certificate,
                email,
                acme_directory,
                acme_ca,
                headers,
                rate,
                state,
            };
            let prepared = match proxy::prepare(&opts, &env) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    return ExitCode::from(2);
                }
            };
            let config = prepared.config;
            if check {
                println!("# {}", prepared.policy_file.display());
                print!(
                    "{}",
                    std::fs::read_to_string(&prepared.policy_file).unwrap_or_default()
                );
                println!("\n# certificate {}\n", prepared.certificate);
                let report = portcullis::posture(&config);
                print!("{}", report.render(config.mode));
                return if report.failures().is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
            eprintln!(
                "portcullis proxy: https://{}:{} → {} ({} mode); certificate {}",
                opts.from.to_ascii_lowercase(),
                proxy::local_https(&config).port(),
                opts.to,
                config.mode.as_str(),
                prepared.certificate
            );
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
