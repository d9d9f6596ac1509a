//! The `token` subcommands' logic, kept in the library so tests drive it: minting room tokens
//! from the policy's keys and explaining why a token passes or fails. Never prints key material.

pub mod check;

use std::fmt::Write;

use crate::auth::jwt::{self, VerifyStats};
use crate::auth::{now_unix, AuthFailure, JwksRegistry, WorkerToken};
use crate::config::Config;
use crate::policy::{self, Policy};

/// `90s`, `15m`, `2h`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 90s, 15m, 2h, 1d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration unit in {s:?} (s, m, h, d)")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("duration {s:?} out of range"))
}

fn load_policy(config: &Config) -> Result<Policy, String> {
    let files = policy::read_dir(&config.policy_dir, !config.policy_dir_explicit)
        .map_err(|e| e.to_string())?;
    policy::compile_with(&files, &config.compile_options()).map_err(|e| e.to_string())
}

/// The shared store named by the configured policy (needed by the revocation commands).
fn shared_settings(config: &Config) -> Result<crate::shared::SharedSettings, String> {
    load_policy(config)?.shared_state.ok_or_else(|| {
        format!(
            "the policy in {} has no [shared_state] section: revocations live in Redis, shared by every replica",
            config.policy_dir.display()
        )
    })
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    Ok(rt.block_on(f))
}

/// `token revoke`: every replica refuses matching tokens within a second and closes their open
/// WebSocket sessions.
pub fn revoke(
    config: &Config,
    kind: crate::auth::revoked::Kind,
    value: &str,
    ttl: Option<&str>,
) -> Result<String, String> {
    if value.is_empty() || value.len() > 256 || value.chars().any(|c| c.is_control()) {
        return Err("the value must be 1 to 256 characters without control characters".into());
    }
    let ttl = ttl
        .map(parse_duration)
        .transpose()?
        .map(std::time::Duration::from_secs);
    let s = shared_settings(config)?;
    let expires = block_on(crate::shared::revoke(&s, kind, value, ttl))?
        .map_err(|e| format!("{}: {e}", s.endpoint()))?;
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
) -> Result<String, String> {
    let s = shared_settings(config)?;
    let existed = block_on(crate::shared::unrevoke(&s, kind, value))?
        .map_err(|e| format!("{}: {e}", s.endpoint()))?;
    Ok(if existed {
        format!("unrevoked {} {value:?}\n", kind.as_str())
    } else {
        format!("{} {value:?} was not revoked\n", kind.as_str())
    })
}

/// `token revocations`: the list as the store holds it.
pub fn revocations(config: &Config) -> Result<String, String> {
    let s = shared_settings(config)?;
    let list = block_on(crate::shared::list_revocations(&s))?
        .map_err(|e| format!("{}: {e}", s.endpoint()))?;
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
) -> Result<String, String> {
    if crate::backends::rooms::room_of(&format!("/rooms/{room}/ws")).is_none() {
        return Err(format!(
            "invalid room name {room:?} (letters, digits, '-', '_'; up to 64)"
        ));
    }
    let policy = load_policy(config)?;
    for c in caps {
        if !crate::auth::BUILTIN_CAPABILITIES.contains(&c.as_str())
            && !crate::policy::compile_auth_known(c, &policy)
        {
            return Err(format!("unknown capability {c:?}"));
        }
    }
    let ttl = parse_duration(ttl)?;
    jwt::mint_room_token(&policy.auth.room_keys, kid, sub, room, caps, ttl)
        .map_err(|e| e.to_string())
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
pub fn selftest_paths(config: &Config) -> Result<(String, bool), String> {
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
) -> Result<String, String> {
    let policy = load_policy(config)?;
    let Some(keys) = &policy.signed_urls else {
        return Err(
            "the policy has no [signed_urls] keys; add one, e.g.\n\n[signed_urls]\nkeys = [{ id = \"k1\", secret = \"env:PORTCULLIS_URL_KEY\" }]\n\n(a secret of at least 32 bytes; see docs/policy.md)"
                .into(),
        );
    };
    let canonical =
        crate::http::path::canonicalize(path).map_err(|e| format!("path {path:?} {e}"))?;
    if canonical != path {
        return Err(format!(
            "path {path:?} is not canonical; the gateway would check {canonical:?}"
        ));
    }
    let method = method.to_ascii_uppercase();
    let ttl = parse_duration(ttl)?;
    if ttl > keys.max_ttl {
        return Err(format!(
            "ttl {ttl}s is longer than signed_urls.max_ttl_seconds ({}s)",
            keys.max_ttl
        ));
    }
    let route = policy
        .routes
        .iter()
        .find(|r| r.matches_path(path))
        .ok_or_else(|| format!("no route serves {path:?}"))?;
    if !route.signed_urls {
        return Err(format!(
            "route {:?} serving {path:?} does not accept signed URLs (signed_urls = true)",
            &*route.name
        ));
    }
    let query = keys
        .sign(&method, path, now_unix() + ttl, kid)
        .map_err(|e| e.to_string())?;
    Ok(format!("{path}?{query}"))
}

/// Compiles the policy folder `dir` with the configuration's mode and overrides.
fn load_dir(config: &Config, dir: &std::path::Path) -> Result<Policy, String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a folder", dir.display()));
    }
    let files = policy::read_dir(dir, false).map_err(|e| e.to_string())?;
    policy::compile_with(&files, &config.compile_options())
        .map_err(|e| format!("{} does not compile:\n{e}", dir.display()))
}

/// `portcullis policy diff OLD NEW`.
pub fn policy_diff(
    config: &Config,
    old: &std::path::Path,
    new: &std::path::Path,
) -> Result<String, String> {
    let (o, n) = (load_dir(config, old)?, load_dir(config, new)?);
    Ok(policy::diff::render(&policy::diff::diff(&o, &n)))
}

/// `portcullis policy test --requests FILE [--policy DIR]`.
pub fn policy_test(
    config: &Config,
    dir: Option<&std::path::Path>,
    requests: &std::path::Path,
) -> Result<(String, bool), String> {
    let policy = match dir {
        Some(d) => load_dir(config, d)?,
        None => load_policy(config)?,
    };
    let text =
        std::fs::read_to_string(requests).map_err(|e| format!("{}: {e}", requests.display()))?;
    crate::dryrun::run(&policy, config.token_file.clone(), &text)
        .map_err(|e| format!("{}: {e}", requests.display()))
}

/// `portcullis acme status`: one line per name from the storage folder.
pub fn acme_status(config: &Config) -> Result<String, String> {
    use crate::tls::acme;
    let a = config
        .acme
        .as_ref()
        .ok_or("no [tls.acme] section in the configuration")?;
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
        assert_eq!(super::parse_duration("15m"), Ok(900));
        assert_eq!(super::parse_duration("90"), Ok(90));
        assert_eq!(super::parse_duration("1d"), Ok(86_400));
        assert!(super::parse_duration("0s").is_err());
        assert!(super::parse_duration("5y").is_err());
    }
}
