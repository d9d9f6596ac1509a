//! The `token` subcommands' logic, kept in the library so tests drive it: minting room tokens
//! from the policy's keys and explaining why a token passes or fails. Never prints key material.

pub mod check;
pub mod proxy;

use std::fmt::Write;

use crate::auth::jwt::{self, VerifyStats};
use crate::auth::{now_unix, AuthFailure, JwksRegistry, WorkerToken};
use crate::config::Config;
use crate::policy::{self, Policy};

/// Why a command failed; `main` prints it after `portcullis: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid duration {0:?} (e.g. 90s, 15m, 2h, 1d)")]
    Duration(String),
    #[error("invalid duration unit in {0:?} (s, m, h, d)")]
    DurationUnit(String),
    #[error("duration {0:?} out of range")]
    DurationRange(String),
    /// The configured policy folder does not read or compile.
    #[error("{0}")]
    Policy(#[from] policy::PolicyErrors),
    /// A folder named on the command line does not compile.
    #[error("{} does not compile:\n{errors}", dir.display())]
    PolicyDir {
        dir: std::path::PathBuf,
        errors: policy::PolicyErrors,
    },
    #[error("{}: not a folder", .0.display())]
    NotAFolder(std::path::PathBuf),
    #[error("the policy in {} has no [shared_state] section: revocations live in Redis, shared by every replica", .0.display())]
    NoSharedState(std::path::PathBuf),
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{endpoint}: {source}")]
    Store {
        endpoint: String,
        source: crate::shared::StoreError,
    },
    #[error("the value must be 1 to 256 characters without control characters")]
    RevocationValue,
    #[error("invalid room name {0:?} (letters, digits, '-', '_'; up to 64)")]
    RoomName(String),
    #[error("unknown capability {0:?}")]
    Capability(String),
    #[error("{0}")]
    Mint(#[from] jwt::MintError),
    #[error("the policy has no [signed_urls] keys; add one, e.g.\n\n[signed_urls]\nkeys = [{{ id = \"k1\", secret = \"env:PORTCULLIS_URL_KEY\" }}]\n\n(a secret of at least 32 bytes; see docs/policy.md)")]
    NoSigningKeys,
    #[error("path {path:?} {problem}")]
    Path {
        path: String,
        problem: crate::http::path::PathError,
    },
    #[error("path {path:?} is not canonical; the gateway would check {canonical:?}")]
    NotCanonical { path: String, canonical: String },
    #[error("ttl {ttl}s is longer than signed_urls.max_ttl_seconds ({max}s)")]
    TtlTooLong { ttl: u64, max: u64 },
    #[error("no route serves {0:?}")]
    NoRoute(String),
    #[error("route {route:?} serving {path:?} does not accept signed URLs (signed_urls = true)")]
    NotSigned { route: String, path: String },
    #[error("{0}")]
    Sign(#[from] crate::http::signed::UnknownKey),
    #[error("{}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    DryRun {
        path: std::path::PathBuf,
        source: crate::dryrun::DryRunError,
    },
    #[error("no [tls.acme] section in the configuration")]
    NoAcme,
}

/// `90s`, `15m`, `2h`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, CliError> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| CliError::Duration(s.to_string()))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(CliError::DurationUnit(s.to_string())),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| CliError::DurationRange(s.to_string()))
}

fn load_policy(config: &Config) -> Result<Policy, CliError> {
    let files = policy::read_dir(&config.policy_dir, !config.policy_dir_explicit)?;
    Ok(crate::compile::compile_with(
        &files,
        &crate::compile::CompileOptions::for_config(config),
    )?)
}

/// The shared store named by the configured policy (needed by the revocation commands).
fn shared_settings(config: &Config) -> Result<crate::shared::SharedSettings, CliError> {
    load_policy(config)?
        .shared_state
        .ok_or_else(|| CliError::NoSharedState(config.policy_dir.clone()))
}

/// A store error, with the store it came from.
fn in_store(
    s: &crate::shared::SharedSettings,
) -> impl FnOnce(crate::shared::StoreError) -> CliError {
    let endpoint = s.endpoint();
    move |source| CliError::Store { endpoint, source }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    Ok(rt.block_on(f))
}

/// `token revoke`: every replica refuses matching tokens within a second and closes their open
/// WebSocket sessions.
pub fn revoke(
    config: &Config,
    kind: crate::auth::revoked::Kind,
    value: &str,
    ttl: Option<&str>,
) -> Result<String, CliError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(|c| c.is_control()) {
        return Err(CliError::RevocationValue);
    }
    let ttl = ttl
        .map(parse_duration)
        .transpose()?
        .map(std::time::Duration::from_secs);
    let s = shared_settings(config)?;
    let expires = block_on(crate::shared::revoke(&s, kind, value, ttl))?.map_err(in_store(&s))?;
    let until = if expires == 0 {
        "until unrevoked".to_string()
    } else {
        format!("until {}", crate::observability::format_unix(expires))
    };
    Ok(format!(
        "revoked {} {value:?} at {} {until}\n",
        kind.as_str(),
        s.endpoint()
    ))
}

/// `token unrevoke`.
pub fn unrevoke(
    config: &Config,
    kind: crate::auth::revoked::Kind,
    value: &str,
) -> Result<String, CliError> {
    let s = shared_settings(config)?;
    let existed = block_on(crate::shared::unrevoke(&s, kind, value))?.map_err(in_store(&s))?;
    Ok(if existed {
        format!("unrevoked {} {value:?}\n", kind.as_str())
    } else {
        format!("{} {value:?} was not revoked\n", kind.as_str())
    })
}

/// `token revocations`: the list as the store holds it.
pub fn revocations(config: &Config) -> Result<String, CliError> {
    let s = shared_settings(config)?;
    let list = block_on(crate::shared::list_revocations(&s))?.map_err(in_store(&s))?;
    let mut out = String::new();
    for (kind, value, expires) in &list {
        let until = if *expires == 0 {
            "-".to_string()
        } else {
            crate::observability::format_unix(*expires)
        };
        let _ = writeln!(out, "{:<4} {value:<40} {until}", kind.as_str());
    }
    let _ = writeln!(out, "{} revocation(s) at {}", list.len(), s.endpoint());
    Ok(out)
}

pub fn mint(
    config: &Config,
    room: &str,
    caps: &[String],
    ttl: &str,
    kid: Option<&str>,
    sub: &str,
) -> Result<String, CliError> {
    if crate::backends::rooms::room_of(&format!("/rooms/{room}/ws")).is_none() {
        return Err(CliError::RoomName(room.to_string()));
    }
    let policy = load_policy(config)?;
    for c in caps {
        if !crate::auth::BUILTIN_CAPABILITIES.contains(&c.as_str())
            && !crate::policy::compile_auth_known(c, &policy)
        {
            return Err(CliError::Capability(c.clone()));
        }
    }
    let ttl = parse_duration(ttl)?;
    Ok(jwt::mint_room_token(
        &policy.auth.room_keys,
        kid,
        sub,
        room,
        caps,
        ttl,
    )?)
}

fn when(ts: Option<u64>) -> String {
    match ts {
        None => "-".into(),
        Some(t) => {
            let now = now_unix() as i64;
            let d = t as i64 - now;
            if d >= 0 {
                format!("{t} (in {d}s)")
            } else {
                format!("{t} ({}s ago)", -d)
            }
        }
    }
}

/// Decodes, verifies and explains. Returns the report and whether the token would pass.
pub fn inspect(config: &Config, token: &str) -> (String, bool) {
    let mut out = String::new();
    let (header, claims) = match jwt::inspect(token) {
        Ok(hc) => hc,
        Err(e) => {
            // Perhaps the worker token (never created here: environment or file only).
            let env = |k: &str| crate::config::env_var(k);
            let worker = std::fs::metadata(&config.token_file)
                .ok()
                .and_then(|_| WorkerToken::resolve(&env, config.token_file.clone()).ok())
                .or_else(|| {
                    ["PORTCULLIS_WORKER_TOKEN", "WORKER_AUTH_TOKEN"]
                        .iter()
                        .find_map(|k| env(k))
                        .and_then(|_| WorkerToken::resolve(&env, config.token_file.clone()).ok())
                });
            if worker.as_ref().is_some_and(|w| w.matches(token)) {
                let w = worker.expect("checked");
                let _ = writeln!(
                    out,
                    "worker token from {}: PASS (static provider)",
                    w.source_description()
                );
                return (out, true);
            }
            let _ = writeln!(out, "{e}; not the worker token either: FAIL");
            return (out, false);
        }
    };
    let _ = writeln!(out, "header:  {header}");
    let get = |k: &str| claims.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let _ = writeln!(out, "subject: {}", get("sub"));
    let _ = writeln!(out, "issuer:  {}", get("iss"));
    let _ = writeln!(out, "room:    {}", get("room"));
    let _ = writeln!(
        out,
        "caps:    {}",
        claims
            .get("caps")
            .or(claims.get("scope"))
            .cloned()
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "expires: {}",
        when(claims.get("exp").and_then(|v| v.as_u64()))
    );
    let _ = writeln!(
        out,
        "not before: {}",
        when(claims.get("nbf").and_then(|v| v.as_u64()))
    );
    let policy = match load_policy(config) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(out, "cannot load the policy to verify: {e}");
            return (out, false);
        }
    };
    let stats = VerifyStats::default();
    let room = jwt::verify_room_token(
        token,
        &policy.auth.room_keys,
        policy.auth.room_leeway,
        &stats,
    );
    if room.is_ok() {
        let _ = writeln!(
            out,
            "verdict: PASS as a room token (key {})",
            header.get("kid").and_then(|k| k.as_str()).unwrap_or("-")
        );
        return (out, true);
    }
    let jwt_result = if policy.auth.issuers.is_empty() {
        Err(AuthFailure::Invalid)
    } else {
        let registry = JwksRegistry::default();
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(jwt::verify_jwt(
                token,
                &policy.auth.issuers,
                &registry,
                &stats,
            )),
            Err(_) => Err(AuthFailure::KeysUnavailable),
        }
    };
    match jwt_result {
        Ok(id) => {
            let _ = writeln!(
                out,
                "verdict: PASS as a JWT from issuer {}",
                id.verified_by.as_deref().unwrap_or("-")
            );
            (out, true)
        }
        Err(f) => {
            let mut reasons = Vec::new();
            let now = now_unix();
            if claims
                .get("exp")
                .and_then(|v| v.as_u64())
                .is_some_and(|e| e < now)
            {
                reasons.push("expired".to_string());
            }
            if claims
                .get("nbf")
                .and_then(|v| v.as_u64())
                .is_some_and(|n| n > now)
            {
                reasons.push("not yet valid".to_string());
            }
            let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("");
            if alg.eq_ignore_ascii_case("none") {
                reasons.push("alg none is never accepted".into());
            }
            if let Some(kid) = header.get("kid").and_then(|k| k.as_str()) {
                let known = policy.auth.room_keys.keys.contains_key(kid)
                    || policy.auth.issuers.iter().any(|i| {
                        i.keys.iter().any(|k| k.0.as_deref() == Some(kid)) || i.jwks.is_some()
                    });
                if !known {
                    reasons.push(format!("kid {kid:?} is not a configured key"));
                }
            }
            let iss = claims.get("iss").and_then(|v| v.as_str());
            let iss_known = iss == Some(policy.auth.room_keys.issuer.as_str())
                || policy
                    .auth
                    .issuers
                    .iter()
                    .any(|i| i.iss.as_deref() == iss || i.iss.is_none());
            if !iss_known {
                reasons.push(format!("issuer {iss:?} matches no configured issuer"));
            }
            if f == AuthFailure::KeysUnavailable {
                reasons.push("keys unavailable (JWKS unreachable)".into());
            }
            if reasons.is_empty() {
                reasons.push("signature, audience or required claims do not verify".into());
            }
            let _ = writeln!(out, "verdict: FAIL: {}", reasons.join("; "));
            (out, false)
        }
    }
}

/// `portcullis selftest paths`: runs the bypass corpus against the compiled policy. Returns the
/// report and whether every variant of every blocked prefix is refused (or opened on purpose
/// by an unexpired exception).
pub fn selftest_paths(config: &Config) -> Result<(String, bool), CliError> {
    let policy = load_policy(config)?;
    let mut out = String::new();
    let mut ok = true;
    let reports = crate::policy::paths::selftest(&policy, now_unix());
    for r in &reports {
        let total = r.refused + r.opened.len() + r.leaked.len();
        if r.leaked.is_empty() {
            let _ = writeln!(
                out,
                "PASS {}: {}/{} variants refused{}",
                r.prefix,
                r.refused,
                total,
                if r.opened.is_empty() {
                    String::new()
                } else {
                    format!(", {} opened by exception", r.opened.len())
                }
            );
        } else {
            ok = false;
            let _ = writeln!(
                out,
                "FAIL {}: {} of {} variants reach an upstream",
                r.prefix,
                r.leaked.len(),
                total
            );
            for (v, route) in &r.leaked {
                let _ = writeln!(out, "     {v}  → route {route:?}");
            }
        }
        for (v, route, reason, until) in &r.opened {
            let _ = writeln!(
                out,
                "     {v}  → route {route:?} by exception until {until} ({reason})"
            );
        }
        if r.case_skipped {
            let _ = writeln!(
                out,
                "     (case variants skipped: blocked.case_sensitive = true)"
            );
        }
    }
    let variants: usize = reports
        .iter()
        .map(|r| r.refused + r.opened.len() + r.leaked.len())
        .sum();
    let _ = writeln!(
        out,
        "{} blocked prefixes, {variants} variants: {}",
        reports.len(),
        if ok { "all refused" } else { "BYPASSES FOUND" }
    );
    Ok((out, ok))
}

/// `portcullis url sign`: a signed URL (path and query) for `path`, valid for `ttl`.
pub fn sign_url(
    config: &Config,
    method: &str,
    path: &str,
    ttl: &str,
    kid: Option<&str>,
) -> Result<String, CliError> {
    let policy = load_policy(config)?;
    let Some(keys) = &policy.signed_urls else {
        return Err(CliError::NoSigningKeys);
    };
    let canonical = crate::http::path::canonicalize(path).map_err(|problem| CliError::Path {
        path: path.to_string(),
        problem,
    })?;
    if canonical != path {
        return Err(CliError::NotCanonical {
            path: path.to_string(),
            canonical: canonical.into_owned(),
        });
    }
    let method = method.to_ascii_uppercase();
    let ttl = parse_duration(ttl)?;
    if ttl > keys.max_ttl {
        return Err(CliError::TtlTooLong {
            ttl,
            max: keys.max_ttl,
        });
    }
    let route = policy
        .routes
        .iter()
        .find(|r| r.matches_path(path))
        .ok_or_else(|| CliError::NoRoute(path.to_string()))?;
    if !route.signed_urls {
        return Err(CliError::NotSigned {
            route: route.name.to_string(),
            path: path.to_string(),
        });
    }
    let query = keys.sign(&method, path, now_unix() + ttl, kid)?;
    Ok(format!("{path}?{query}"))
}

/// Compiles the policy folder `dir` with the configuration's mode and overrides.
fn load_dir(config: &Config, dir: &std::path::Path) -> Result<Policy, CliError> {
    if !dir.is_dir() {
        return Err(CliError::NotAFolder(dir.to_path_buf()));
    }
    let files = policy::read_dir(dir, false)?;
    crate::compile::compile_with(&files, &crate::compile::CompileOptions::for_config(config))
        .map_err(|errors| CliError::PolicyDir {
            dir: dir.to_path_buf(),
            errors,
        })
}

/// `portcullis policy diff OLD NEW`.
pub fn policy_diff(
    config: &Config,
    old: &std::path::Path,
    new: &std::path::Path,
) -> Result<String, CliError> {
    let (o, n) = (load_dir(config, old)?, load_dir(config, new)?);
    Ok(policy::diff::render(&policy::diff::diff(&o, &n)))
}

/// `portcullis policy test --requests FILE [--policy DIR]`.
pub fn policy_test(
    config: &Config,
    dir: Option<&std::path::Path>,
    requests: &std::path::Path,
) -> Result<(String, bool), CliError> {
    let policy = match dir {
        Some(d) => load_dir(config, d)?,
        None => load_policy(config)?,
    };
    let text = std::fs::read_to_string(requests).map_err(|source| CliError::Read {
        path: requests.to_path_buf(),
        source,
    })?;
    crate::dryrun::run(&policy, config.token_file.clone(), &text).map_err(|source| {
        CliError::DryRun {
            path: requests.to_path_buf(),
            source,
        }
    })
}

/// `portcullis acme status`: one line per name from the storage folder.
pub fn acme_status(config: &Config) -> Result<String, CliError> {
    use crate::tls::acme;
    let a = config.acme.as_ref().ok_or(CliError::NoAcme)?;
    let fmt = |t: Option<i64>| {
        t.map(|t| crate::observability::format_unix(t.max(0) as u64))
            .unwrap_or_else(|| "-".into())
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:<22} {:<22} LAST ERROR",
        "NAME", "EXPIRES", "NEXT RENEWAL"
    );
    for name in &a.names {
        let status = acme::read_status(&a.storage, name);
        let expires = acme::read_stored(&a.storage, name).map(|(_, _, na)| na);
        let error = match (&status.last_error, status.last_error_at) {
            (Some(e), Some(at)) => format!(
                "{} ({} failure(s), last {})",
                e,
                status.failures,
                crate::observability::format_unix(at.max(0) as u64)
            ),
            (Some(e), None) => e.clone(),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{name:<32} {:<22} {:<22} {error}",
            if expires.is_some() {
                fmt(expires)
            } else {
                "none stored".into()
            },
            fmt(status.next_renewal)
        );
    }
    let _ = writeln!(
        out,
        "directory {} · challenge {} · storage {}",
        a.directory,
        a.challenge.as_str(),
        a.storage.display()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("15m").unwrap(), 900);
        assert_eq!(super::parse_duration("90").unwrap(), 90);
        assert_eq!(super::parse_duration("1d").unwrap(), 86_400);
        assert!(matches!(
            super::parse_duration("0s"),
            Err(super::CliError::DurationRange(_))
        ));
        assert_eq!(
            super::parse_duration("5y").unwrap_err().to_string(),
            "invalid duration unit in \"5y\" (s, m, h, d)"
        );
    }
}
