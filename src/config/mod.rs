//! Static configuration: `portcullis.toml`, read once at start, overridden by `PORTCULLIS_*`
//! environment variables. Owns listener addresses, folders, mode, threads and shutdown timing.
//! Must not hold anything that changes while the gateway runs: that is policy (`crate::policy`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the gateway runs. `production` refuses insecure settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Development,
    Staging,
    Production,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Some(Mode::Development),
            "staging" | "stage" => Some(Mode::Staging),
            "production" | "prod" => Some(Mode::Production),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Development => "development",
            Mode::Staging => "staging",
            Mode::Production => "production",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<Mode>,
    #[serde(default)]
    listeners: RawListeners,
    #[serde(default)]
    tls: RawTls,
    policy_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    threads: Option<usize>,
    #[serde(default)]
    shutdown: RawShutdown,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    auth: RawAuthConfig,
    #[serde(default)]
    network: RawNetworkConfig,
}

/// `[network]`: how long a client connection may live. The policy's own `[network]` holds the
/// header timeout and the connection caps, which change with the policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetworkConfig {
    /// Seconds an idle keep-alive connection waits for its next request (default 75; 0 = no
    /// bound). HTTP/2 connections with no open stream get GOAWAY after the same time.
    keepalive_timeout_seconds: Option<u64>,
    /// Seconds a request body may go without a byte arriving (default 60; 0 = no bound).
    body_timeout_seconds: Option<u64>,
    /// Seconds a response may go without the client taking a byte of it (default 60; 0 = no
    /// bound): a client that stops reading loses its connection.
    send_timeout_seconds: Option<u64>,
    /// Requests one connection may carry: HTTP/1.1's last answer says `Connection: close`,
    /// HTTP/2 gets GOAWAY after that many streams (default 1000; 0 = no limit).
    max_requests_per_connection: Option<u64>,
    /// Whether HTTP/1 header names keep the case they arrived in on their way through (default
    /// false: well-known names are written title-cased, others lower-case, as HTTP/2 writes
    /// them all).
    preserve_header_case: Option<bool>,
    /// Idle upstream connections kept for reuse, per proxy thread (default 1024; 0 = none kept).
    /// A burst needs one upstream connection per request in flight; past this many, the surplus
    /// is closed when the burst ends and the next burst connects again.
    upstream_idle_connections: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthConfig {
    /// Where the worker token is kept (default `$XDG_CONFIG_HOME/portcullis/deployment.yaml`).
    token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListeners {
    https: Option<String>,
    /// Plain-HTTP listener answering 308 to HTTPS. An empty string disables it.
    http: Option<String>,
    admin: Option<String>,
    /// Bytes read from a client socket at a time (below TLS), per connection. Memory per idle
    /// connection grows with it; Pingora's own default is 65536.
    read_buffer_bytes: Option<usize>,
    /// Written once the gateway is ready: the listeners' real addresses (port 0 binds any).
    ready_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_dir: Option<PathBuf>,
    default_cert: Option<String>,
    /// `"1.2"` (default: TLS 1.2 and 1.3) or `"1.3"` (TLS 1.3 only).
    min_version: Option<String>,
    /// Warn about certificates with fewer days left (default 21).
    expiry_warn_days: Option<u64>,
    /// Refresh OCSP staples at least this often (default 3600; otherwise at half their
    /// validity window).
    ocsp_max_refresh_seconds: Option<u64>,
    /// Automatic certificates over ACME (RFC 8555).
    acme: Option<RawAcme>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    grace_seconds: Option<u64>,
    unready_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

/// The resolved static configuration. Relative paths are resolved against the folder holding the
/// configuration file, so `serve --config /etc/portcullis/portcullis.toml` finds its policies.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Option<PathBuf>,
    pub mode: Mode,
    pub https_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub cert_dir: PathBuf,
    pub default_cert: Option<String>,
    pub policy_dir: PathBuf,
    /// Whether the policy folder was named (file or environment). Only an unnamed, missing
    /// folder falls back to the embedded default policy; a named one that is missing is an error.
    pub policy_dir_explicit: bool,
    pub data_dir: PathBuf,
    pub threads: usize,
    /// Idle upstream connections kept for reuse, per proxy thread.
    pub upstream_idle_connections: usize,
    /// Seconds connections get to drain after SIGTERM (Pingora's default of 300 s is too long
    /// for Kubernetes).
    pub grace_seconds: u64,
    /// Seconds `/ready` answers 503 before listeners stop accepting, so load balancers notice.
    pub unready_seconds: u64,
    pub log_format: LogFormat,
    pub log_level: String,
    /// `AUTH_PROVIDER`: replaces the policy's default provider.
    pub auth_provider: Option<crate::auth::Provider>,
    pub token_file: PathBuf,
    /// The lowest TLS version the listener (and upstream connections) accept.
    pub tls_min_version: TlsVersion,
    pub cert_expiry_warn_days: u64,
    pub ocsp_max_refresh: std::time::Duration,
    /// The HTTPS listener's per-connection read buffer below TLS, bytes; 0 (the default) reads
    /// straight into rustls' own buffer.
    pub read_buffer_bytes: usize,
    /// Where to write the listeners' addresses once ready (`listeners.ready_file`).
    pub ready_file: Option<PathBuf>,
    /// `[tls.acme]`, when certificates are obtained automatically.
    pub acme: Option<AcmeConfig>,
    /// `[network]`: the bounds on every client connection's life.
    pub connections: ConnectionBounds,
    /// `network.preserve_header_case`: HTTP/1 header names passed on in the case they came in.
    pub preserve_header_case: bool,
}

/// How long a client connection may live (`[network]` in `portcullis.toml`). `None` = no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionBounds {
    /// Idle time between requests on a keep-alive connection (HTTP/1.1), or with no open
    /// stream (HTTP/2, closed with GOAWAY).
    pub keepalive_timeout: Option<std::time::Duration>,
    /// Longest wait for the next byte of a request body.
    pub body_timeout: Option<std::time::Duration>,
    /// Longest wait for the client to take the next part of a response.
    pub send_timeout: Option<std::time::Duration>,
    /// Requests (HTTP/2: streams) one connection carries before it is closed.
    pub max_requests: Option<u32>,
}

impl Default for ConnectionBounds {
    fn default() -> Self {
        ConnectionBounds {
            keepalive_timeout: Some(std::time::Duration::from_secs(75)),
            body_timeout: Some(std::time::Duration::from_secs(60)),
            send_timeout: Some(std::time::Duration::from_secs(60)),
            max_requests: Some(1000),
        }
    }
}

/// A TLS protocol version floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V12,
    V13,
}

impl TlsVersion {
    pub fn parse(s: &str) -> Option<TlsVersion> {
        match s
            .trim()
            .trim_start_matches("TLSv")
            .trim_start_matches("tls")
        {
            "1.2" | "1_2" => Some(TlsVersion::V12),
            "1.3" | "1_3" => Some(TlsVersion::V13),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V12 => "1.2",
            TlsVersion::V13 => "1.3",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

pub const DEFAULT_HTTPS: &str = "127.0.0.1:8443";
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// Reads an environment variable, treating an unset or empty value as absent.
pub use crate::env::var as env_var;

mod acme;
use acme::{resolve_acme, RawAcme};
pub use acme::{AcmeChallenge, AcmeConfig, AcmeDns, LETS_ENCRYPT};

impl Config {
    /// Finds the configuration file: `--config`, then `PORTCULLIS_CONFIG`, then
    /// `./portcullis.toml`. A missing default file is not an error: the embedded defaults apply.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => match env_var("PORTCULLIS_CONFIG") {
                Some(p) => (PathBuf::from(p), true),
                None => (PathBuf::from("portcullis.toml"), false),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source: e,
                })
            }
        };
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let source = text.as_ref().map(|_| path.clone());
        Self::from_str_with_env(text.as_deref().unwrap_or(""), source, &base, &|k| {
            env_var(k)
        })
    }

    /// Parses configuration text and applies overrides from `env` (a function so tests need not
    /// touch the process environment).
    pub fn from_str_with_env(
        text: &str,
        source: Option<PathBuf>,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let origin = source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".to_string());
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.clone(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(1),
            message: e.message().to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.clone(),
            message,
        };

        let mode = match env("PORTCULLIS_MODE").or_else(|| env("ENV")) {
            Some(m) => Mode::parse(&m).ok_or_else(|| {
                invalid(format!(
                    "PORTCULLIS_MODE/ENV: unknown mode {m:?} (expected development, staging or production)"
                ))
            })?,
            None => raw.mode.unwrap_or(Mode::Development),
        };
        let addr = |env_name: &str, file: Option<&String>, default: &str, field: &str| {
            let (value, from) = match env(env_name) {
                Some(v) => (v, env_name.to_string()),
                None => (
                    file.cloned().unwrap_or_else(|| default.to_string()),
                    format!("listeners.{field}"),
                ),
            };
            Ok::<_, ConfigError>((value, from))
        };
        let parse_addr = |(v, from): (String, String)| -> Result<SocketAddr, ConfigError> {
            v.parse::<SocketAddr>().map_err(|_| {
                invalid(format!(
                    "{from}: {v:?} is not an address (expected host:port, e.g. 127.0.0.1:8443)"
                ))
            })
        };
        let https_addr = parse_addr(addr(
            "PORTCULLIS_HTTPS_ADDR",
            raw.listeners.https.as_ref(),
            DEFAULT_HTTPS,
            "https",
        )?)?;
        let (http_raw, http_from) = addr(
            "PORTCULLIS_HTTP_ADDR",
            raw.listeners.http.as_ref(),
            DEFAULT_HTTP,
            "http",
        )?;
        let http_addr = match http_raw.trim() {
            "" | "off" | "none" => None,
            _ => Some(parse_addr((http_raw, http_from))?),
        };
        let admin_addr = parse_addr(addr(
            "PORTCULLIS_ADMIN_ADDR",
            raw.listeners.admin.as_ref(),
            DEFAULT_ADMIN,
            "admin",
        )?)?;

        // Paths from the environment are taken as given (relative to the working directory);
        // paths from the file are relative to the file's folder.
        let path_of = |env_name: &str, file: Option<PathBuf>, default: &str| -> (PathBuf, bool) {
            if let Some(p) = env(env_name) {
                return (PathBuf::from(p), true);
            }
            let explicit = file.is_some();
            let p = file.unwrap_or_else(|| PathBuf::from(default));
            (if p.is_absolute() { p } else { base.join(p) }, explicit)
        };
        let (cert_dir, _) = path_of("PORTCULLIS_CERT_DIR", raw.tls.cert_dir, "certs");
        let (policy_dir, policy_dir_explicit) =
            path_of("PORTCULLIS_POLICY_DIR", raw.policy_dir, "policies");
        let (data_dir, _) = path_of("PORTCULLIS_DATA_DIR", raw.data_dir, "data");
        let ready_file = match env("PORTCULLIS_READY_FILE") {
            Some(p) => Some(PathBuf::from(p)).filter(|p| !p.as_os_str().is_empty()),
            None => {
                raw.listeners
                    .ready_file
                    .clone()
                    .map(|p| if p.is_absolute() { p } else { base.join(p) })
            }
        };

        let threads = match env("PORTCULLIS_THREADS") {
            Some(t) => t.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                invalid(format!(
                    "PORTCULLIS_THREADS: {t:?} is not a positive number"
                ))
            })?,
            None => raw.threads.unwrap_or(1),
        };
        if threads == 0 {
            return Err(invalid("threads: must be at least 1".into()));
        }
        let grace_seconds = match env("PORTCULLIS_GRACE_SECONDS") {
            Some(t) => t.parse::<u64>().map_err(|_| {
                invalid(format!(
                    "PORTCULLIS_GRACE_SECONDS: {t:?} is not a number of seconds"
                ))
            })?,
            None => raw.shutdown.grace_seconds.unwrap_or(20),
        };
        let unready_seconds = raw.shutdown.unready_seconds.unwrap_or(2).min(grace_seconds);
        let log_format = match env("PORTCULLIS_LOG_FORMAT") {
            Some(f) => match f.as_str() {
                "json" => LogFormat::Json,
                "pretty" => LogFormat::Pretty,
                _ => {
                    return Err(invalid(format!(
                        "PORTCULLIS_LOG_FORMAT: {f:?} (expected pretty or json)"
                    )))
                }
            },
            None => raw.log.format.unwrap_or(match mode {
                Mode::Development => LogFormat::Pretty,
                _ => LogFormat::Json,
            }),
        };
        let log_level = env("PORTCULLIS_LOG_LEVEL")
            .or_else(|| env("LOG_LEVEL"))
            .or(raw.log.level)
            .unwrap_or_else(|| "info".to_string());
        let default_cert = env("PORTCULLIS_DEFAULT_CERT").or(raw.tls.default_cert);
        let auth_provider = match env("AUTH_PROVIDER") {
            Some(p) => Some(crate::auth::Provider::parse(p.trim()).ok_or_else(|| {
                invalid(format!(
                    "AUTH_PROVIDER: unknown provider {p:?} (expected none, local, static, jwt or supabase)"
                ))
            })?),
            None => None,
        };
        let token_file = match env("PORTCULLIS_TOKEN_FILE") {
            Some(p) => PathBuf::from(p),
            None => match raw.auth.token_file {
                Some(p) if p.is_absolute() => p,
                Some(p) => base.join(p),
                None => crate::auth::worker_token::default_token_file(),
            },
        };

        let tls_min_version = match env("PORTCULLIS_TLS_MIN_VERSION").or(raw.tls.min_version) {
            Some(v) => TlsVersion::parse(&v).ok_or_else(|| {
                invalid(format!(
                    "tls.min_version: {v:?} (expected \"1.2\" or \"1.3\")"
                ))
            })?,
            None => TlsVersion::V12,
        };
        let cert_expiry_warn_days = raw.tls.expiry_warn_days.unwrap_or(21);
        let ocsp_max_refresh = match env("PORTCULLIS_OCSP_MAX_REFRESH_SECONDS") {
            Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                invalid(format!(
                    "PORTCULLIS_OCSP_MAX_REFRESH_SECONDS: {v:?} is not a positive number"
                ))
            })?,
            None => raw.tls.ocsp_max_refresh_seconds.unwrap_or(3600).max(1),
        };
        let ocsp_max_refresh = std::time::Duration::from_secs(ocsp_max_refresh);
        let read_buffer_bytes = match env("PORTCULLIS_READ_BUFFER_BYTES") {
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= 1 << 20)
                .ok_or_else(|| {
                    invalid(format!(
                        "PORTCULLIS_READ_BUFFER_BYTES: {v:?} is not a size up to 1048576"
                    ))
                })?,
            None => raw.listeners.read_buffer_bytes.unwrap_or(0).min(1 << 20),
        };

        let number = |env_name: &str, file: Option<u64>, default: u64, field: &str, max: u64| {
            let (v, from) = match env(env_name) {
                Some(v) => (
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| invalid(format!("{env_name}: {v:?} is not a whole number")))?,
                    env_name.to_string(),
                ),
                None => (file.unwrap_or(default), format!("network.{field}")),
            };
            if v > max {
                return Err(invalid(format!("{from}: {v} is more than {max}")));
            }
            Ok(v)
        };
        let seconds = |v: u64| (v > 0).then(|| std::time::Duration::from_secs(v));
        let connections = ConnectionBounds {
            keepalive_timeout: seconds(number(
                "PORTCULLIS_KEEPALIVE_TIMEOUT_SECONDS",
                raw.network.keepalive_timeout_seconds,
                75,
                "keepalive_timeout_seconds",
                86_400,
            )?),
            body_timeout: seconds(number(
                "PORTCULLIS_BODY_TIMEOUT_SECONDS",
                raw.network.body_timeout_seconds,
                60,
                "body_timeout_seconds",
                86_400,
            )?),
            send_timeout: seconds(number(
                "PORTCULLIS_SEND_TIMEOUT_SECONDS",
                raw.network.send_timeout_seconds,
                60,
                "send_timeout_seconds",
                86_400,
            )?),
            max_requests: Some(number(
                "PORTCULLIS_MAX_REQUESTS_PER_CONNECTION",
                raw.network.max_requests_per_connection,
                1000,
                "max_requests_per_connection",
                u32::MAX as u64,
            )? as u32)
            .filter(|n| *n > 0),
        };

        let upstream_idle_connections = number(
            "PORTCULLIS_UPSTREAM_IDLE_CONNECTIONS",
            raw.network.upstream_idle_connections,
            1024,
            "upstream_idle_connections",
            65_536,
        )? as usize;

        let preserve_header_case = match env("PORTCULLIS_PRESERVE_HEADER_CASE") {
            Some(v) => match v.trim() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(invalid(format!(
                        "PORTCULLIS_PRESERVE_HEADER_CASE: {v:?} is neither true nor false"
                    )))
                }
            },
            None => raw.network.preserve_header_case.unwrap_or(false),
        };

        let acme = raw
            .tls
            .acme
            .map(|a| resolve_acme(a, base, &data_dir, http_addr.is_some()))
            .transpose()
            .map_err(invalid)?;

        Ok(Config {
            acme,
            connections,
            preserve_header_case,
            source,
            mode,
            https_addr,
            http_addr,
            admin_addr,
            cert_dir,
            default_cert,
            policy_dir,
            policy_dir_explicit,
            data_dir,
            threads,
            upstream_idle_connections,
            grace_seconds,
            unready_seconds,
            log_format,
            log_level,
            auth_provider,
            token_file,
            tls_min_version,
            cert_expiry_warn_days,
            ocsp_max_refresh,
            read_buffer_bytes,
            ready_file,
        })
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests;
