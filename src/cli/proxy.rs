//! `portcullis proxy --from NAME --to ADDRESS`: a TLS terminator in front of one service, with
//! the secure defaults and no files for the operator to write. The command writes its own
//! configuration: one policy file (one route for `NAME` to `ADDRESS`, behind the built-in blocked
//! paths, HSTS, a header profile and a per-client rate limit) under its state folder, and the
//! certificate: from ACME (`http-01` on the HTTP listener) when the name is public, from a
//! development CA generated there when the name is local. Then it runs the gateway on them, so
//! everything `serve` does (hot reload, metrics, posture gate in production) holds here too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, LETS_ENCRYPT};

/// Who may use the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyAuth {
    /// Anyone (a public site).
    None,
    /// The worker token (`PORTCULLIS_WORKER_TOKEN`, or generated into the state folder).
    Static,
    /// JWTs from one issuer, verified against its JWKS.
    Jwt {
        jwks_url: String,
        issuer: Option<String>,
        audience: Option<String>,
    },
}

/// Where the certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSource {
    /// ACME for a public name, the development CA for a local one.
    Auto,
    Acme,
    Development,
}

/// What `portcullis proxy` was asked for.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The host name clients use.
    pub from: String,
    /// The service: `host:port`, `http://host:port` or `https://host:port`.
    pub to: String,
    pub auth: ProxyAuth,
    /// The HTTPS listener (default `0.0.0.0:443` for a public name, `127.0.0.1:8443` for a local
    /// one).
    pub listen: Option<String>,
    /// The HTTP listener: redirects to HTTPS and answers `http-01` (default `0.0.0.0:80` for a
    /// public name, `127.0.0.1:8080` for a local one).
    pub http: Option<String>,
    pub certificate: CertSource,
    /// ACME account contacts (`mailto:` added when missing).
    pub email: Vec<String>,
    /// The ACME directory (default Let's Encrypt's).
    pub acme_directory: Option<String>,
    /// Extra roots to trust for the ACME directory (a private ACME server).
    pub acme_ca: Option<PathBuf>,
    /// The header profile: `api-strict` (default), `browser-app`, `ws-only` or `none`.
    pub headers: String,
    /// Requests per second each client address may make (bursts of twice that).
    pub rate: u32,
    /// Where the policy, certificates, ACME state and worker token live.
    pub state: PathBuf,
}

/// Why `portcullis proxy` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("--from {0:?}: not a host name (letters, digits, '-' and '.') or an IP address")]
    From(String),
    #[error("--to {0:?}: expected host:port, http://host:port or https://host:port")]
    To(String),
    #[error("--headers {0:?}: expected api-strict, browser-app, ws-only or none")]
    Headers(String),
    #[error("--rate must be between 1 and 100000 requests per second")]
    Rate,
    #[error("--from {0:?} is an IP address: ACME certificates need a host name (use --certificate development, or a name)")]
    AcmeNeedsName(String),
    #[error("{}: {source}", path.display())]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    DevCerts(#[from] crate::tls::dev::DevCertError),
}

/// The configuration `portcullis proxy` runs, and what it wrote for it.
#[derive(Debug)]
pub struct Prepared {
    pub config: Config,
    /// The policy file it wrote.
    pub policy_file: PathBuf,
    /// How the certificate is obtained, for the start banner.
    pub certificate: String,
}

/// Whether `name` is for this machine or a private network only: an IP address, a name
/// without a dot, or one under a suffix no public CA issues for (`localhost`, `test`, `local`,
/// `internal`, `example`, `invalid`, `home.arpa`).
pub fn is_local_name(name: &str) -> bool {
    const LOCAL: &[&str] = &[
        "localhost",
        "test",
        "local",
        "internal",
        "example",
        "invalid",
        "home.arpa",
    ];
    name.parse::<std::net::IpAddr>().is_ok()
        || !name.contains('.')
        || LOCAL
            .iter()
            .any(|s| name == *s || name.ends_with(&format!(".{s}")))
}

fn valid_host(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

/// The upstream address and whether it speaks TLS.
fn upstream_of(to: &str) -> Result<(String, bool), ProxyError> {
    let (rest, tls) = match to.split_once("://") {
        Some(("http", r)) => (r, false),
        Some(("https", r)) => (r, true),
        Some(_) => return Err(ProxyError::To(to.into())),
        None => (to, false),
    };
    let rest = rest.trim_end_matches('/');
    let ok = match rest.rsplit_once(':') {
        Some((host, port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            port.parse::<u16>().is_ok_and(|p| p > 0) && !host.is_empty() && valid_host(host)
        }
        None => false,
    };
    if !ok || rest.contains('/') {
        return Err(ProxyError::To(to.into()));
    }
    Ok((rest.to_string(), tls))
}

/// TOML's basic string: quoted, with `"` and `\` escaped.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The policy for `opts`: one route for the name to the service, and the secure defaults.
pub fn policy_text(opts: &ProxyOptions, upstream: &str, tls: bool) -> String {
    let mut t = format!(
        "# Written by `portcullis proxy --from {} --to {}` at every start:\n# change the command, not this file.\n\n",
        opts.from, opts.to
    );
    match &opts.auth {
        ProxyAuth::None => {}
        ProxyAuth::Static => t.push_str("[auth]\ndefault_provider = \"static\"\n\n"),
        ProxyAuth::Jwt {
            jwks_url,
            issuer,
            audience,
        } => {
            t.push_str(
                "[auth]\ndefault_provider = \"jwt\"\n\n[[auth.issuers]]\nname = \"proxy\"\n",
            );
            if let Some(i) = issuer {
                t.push_str(&format!("issuer = {}\n", quoted(i)));
            }
            if let Some(a) = audience {
                t.push_str(&format!("audiences = [{}]\n", quoted(a)));
            }
            t.push_str(&format!(
                "algorithms = [\"RS256\", \"ES256\", \"EdDSA\"]\njwks_url = {}\n\n",
                quoted(jwks_url)
            ));
        }
    }
    t.push_str(&format!(
        "[[upstreams]]\nname = \"service\"\nkind = \"external\"\naddresses = [{}]\n",
        quoted(upstream)
    ));
    if tls {
        t.push_str("tls = true\nsystem_roots = true\n");
    }
    t.push_str(&format!(
        "\n[[routes]]\nname = \"service\"\nhosts = [{}]\npath_prefix = \"/\"\nupstream = \"service\"\n",
        quoted(&opts.from)
    ));
    if opts.auth == ProxyAuth::None {
        t.push_str("public = true\n");
    }
    t.push_str(&format!(
        "\n[headers]\ndefault_profile = {}\n\n[hsts]\nmax_age = 31536000\ninclude_subdomains = false\n\n[[limits]]\nname = \"per-client\"\nkey = [\"ip\"]\nrequests = {}\nper_seconds = 1\nburst = {}\n",
        quoted(&opts.headers),
        opts.rate,
        opts.rate.saturating_mul(2)
    ));
    t
}

/// Writes the policy and, for a local name, the development certificate; returns the
/// configuration to serve. `env` supplies the `PORTCULLIS_*` overrides `serve` honours too.
pub fn prepare(
    opts: &ProxyOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Prepared, ProxyError> {
    let from = opts.from.trim().trim_end_matches('.').to_ascii_lowercase();
    if !valid_host(&from) {
        return Err(ProxyError::From(opts.from.clone()));
    }
    let (upstream, upstream_tls) = upstream_of(&opts.to)?;
    if !crate::http::headers::BUILTIN_NAMES.contains(&opts.headers.as_str()) {
        return Err(ProxyError::Headers(opts.headers.clone()));
    }
    if !(1..=100_000).contains(&opts.rate) {
        return Err(ProxyError::Rate);
    }
    let local = is_local_name(&from);
    let acme = match opts.certificate {
        CertSource::Auto => !local,
        CertSource::Acme => true,
        CertSource::Development => false,
    };
    if acme && from.parse::<std::net::IpAddr>().is_ok() {
        return Err(ProxyError::AcmeNeedsName(from));
    }
    let opts = &ProxyOptions {
        from: from.clone(),
        ..opts.clone()
    };

    let state_err = |path: &Path, source| ProxyError::State {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(&opts.state).map_err(|e| state_err(&opts.state, e))?;
    let state = opts
        .state
        .canonicalize()
        .map_err(|e| state_err(&opts.state, e))?;
    let policy_dir = state.join("proxy").join("policies");
    let cert_dir = state.join("proxy").join("certs");
    for d in [&policy_dir, &cert_dir] {
        std::fs::create_dir_all(d).map_err(|e| state_err(d, e))?;
    }
    let policy_file = policy_dir.join("proxy.toml");
    crate::files::write_atomic(
        &policy_file,
        policy_text(opts, &upstream, upstream_tls).as_bytes(),
        0o644,
    )
    .map_err(|e| state_err(&policy_file, e))?;

    let (listen, http) = if local {
        ("127.0.0.1:8443", "127.0.0.1:8080")
    } else {
        ("0.0.0.0:443", "0.0.0.0:80")
    };
    let listen = opts.listen.as_deref().unwrap_or(listen);
    let http = opts.http.as_deref().unwrap_or(http);
    // A local name is served in development mode (its certificate is the development CA's);
    // a public one in production, behind the posture gate.
    let mode = if acme { "production" } else { "development" };
    let mut text = format!(
        "mode = \"{mode}\"\npolicy_dir = {}\ndata_dir = {}\n\n[listeners]\nhttps = {}\nhttp = {}\n\n[log]\nformat = \"{}\"\n\n[auth]\ntoken_file = {}\n\n[tls]\ncert_dir = {}\n",
        quoted(&policy_dir.display().to_string()),
        quoted(&state.display().to_string()),
        quoted(listen),
        quoted(http),
        if acme { "json" } else { "pretty" },
        quoted(&state.join("proxy").join("worker-token").display().to_string()),
        quoted(&cert_dir.display().to_string()),
    );
    let certificate = if acme {
        let contacts: Vec<String> = opts
            .email
            .iter()
            .map(|e| {
                if e.starts_with("mailto:") {
                    e.clone()
                } else {
                    format!("mailto:{e}")
                }
            })
            .map(|e| quoted(&e))
            .collect();
        let directory = opts.acme_directory.as_deref().unwrap_or(LETS_ENCRYPT);
        text.push_str(&format!(
            "\n[tls.acme]\ndirectory = {}\naccept_terms = true\ncontact = [{}]\nnames = [{}]\nchallenge = \"http-01\"\n",
            quoted(directory),
            contacts.join(", "),
            quoted(&from)
        ));
        if let Some(ca) = &opts.acme_ca {
            text.push_str(&format!(
                "ca_file = {}\n",
                quoted(&ca.display().to_string())
            ));
        }
        format!("from ACME ({directory}), answered over http-01 on {http}")
    } else {
        let ca = dev_certificate(&cert_dir, &from)?;
        format!("from the development CA {} (trust it once)", ca.display())
    };
    let mut config = Config::from_str_with_env(&text, None, &state, env)?;
    // The command's own folders, whatever the environment says.
    config.policy_dir = policy_dir;
    config.policy_dir_explicit = true;
    config.cert_dir = cert_dir;
    Ok(Prepared {
        config,
        policy_file,
        certificate,
    })
}

/// A development CA and a leaf for `name`, kept across restarts: made again only when the
/// folder has no pair for `name`. Returns the CA's path.
fn dev_certificate(dir: &Path, name: &str) -> Result<PathBuf, ProxyError> {
    let ca = dir.join(crate::tls::dev::DEV_CA_FILE);
    let covered = crate::tls::CertStore::open(dir.to_path_buf(), None)
        .map(|store| {
            store
                .snapshot()
                .entries
                .iter()
                .any(|e| e.names.iter().any(|n| n == name))
        })
        .unwrap_or(false);
    if covered && ca.is_file() {
        return Ok(ca);
    }
    Ok(crate::tls::dev::generate_dev_certs_for(dir, &[name])?)
}

/// The address the HTTPS listener of `config` is reached on from this machine.
pub fn local_https(config: &Config) -> SocketAddr {
    let a = config.https_addr;
    if a.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], a.port()))
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(from: &str, to: &str) -> ProxyOptions {
        ProxyOptions {
            from: from.into(),
            to: to.into(),
            auth: ProxyAuth::None,
            listen: None,
            http: None,
            certificate: CertSource::Auto,
            email: vec![],
            acme_directory: None,
            acme_ca: None,
            headers: "api-strict".into(),
            rate: 50,
            state: PathBuf::from("unused"),
        }
    }

    #[test]
    fn names_are_told_local_or_public() {
        for n in [
            "localhost",
            "app.localhost",
            "api.test",
            "nas.local",
            "db.internal",
            "10.0.0.5",
            "::1",
            "intranet",
        ] {
            assert!(is_local_name(n), "{n}");
        }
        for n in [
            "api.example.com",
            "example.org",
            "testing.dev",
            "localhost.com",
        ] {
            assert!(!is_local_name(n), "{n}");
        }
    }

    #[test]
    fn upstreams_are_read_in_three_spellings_and_nothing_else() {
        assert_eq!(
            upstream_of("127.0.0.1:3000").unwrap(),
            ("127.0.0.1:3000".into(), false)
        );
        assert_eq!(
            upstream_of("http://app:8080/").unwrap(),
            ("app:8080".into(), false)
        );
        assert_eq!(
            upstream_of("https://[::1]:8443").unwrap(),
            ("[::1]:8443".into(), true)
        );
        for bad in [
            "127.0.0.1",
            "ftp://a:1",
            "http://a:1/path",
            "a:0",
            ":80",
            "a b:80",
        ] {
            assert!(upstream_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_policy_compiles_for_every_kind_of_auth() {
        for auth in [
            ProxyAuth::None,
            ProxyAuth::Static,
            ProxyAuth::Jwt {
                jwks_url: "https://id.example.com/jwks.json".into(),
                issuer: Some("https://id.example.com/".into()),
                audience: Some("api".into()),
            },
        ] {
            let o = ProxyOptions {
                auth: auth.clone(),
                ..opts("api.example.com", "127.0.0.1:3000")
            };
            let text = policy_text(&o, "127.0.0.1:3000", false);
            let files = [crate::policy::SourceFile {
                path: "proxy.toml".into(),
                text: text.clone(),
            }];
            let p = crate::compile::compile(&files, crate::config::Mode::Production)
                .unwrap_or_else(|e| panic!("{auth:?}:\n{e}\n{text}"));
            assert_eq!(p.routes.len(), 1);
            assert_eq!(p.routes[0].public, auth == ProxyAuth::None);
            assert_eq!(p.limits.len(), 1);
            assert!(p.hsts.is_some());
        }
    }
}
