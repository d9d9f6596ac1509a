//! The authentication part of the compile step: providers, issuers and their keys, room keys and
//! room access rules, capability names. Loads key files and resolves secret references, so a
//! missing key is a compile error (and a reload that loses a key is refused), never a 500 later.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use toml::Spanned;

use super::common::CompileOptions;
use crate::auth::jwks::JwksSettings;
use crate::auth::jwt::{is_hmac, parse_algorithm, Issuer, RoomKey, RoomKeys};
use crate::auth::{secret, Provider, BUILTIN_CAPABILITIES};
use crate::config::{line_of, Mode};
use crate::policy::model::{AuthSettings, RoomAccess};
use crate::policy::raw::{RawAuth, RawRooms};
use crate::policy::source::{PolicyError, SourceFile};

/// The longest overlap a rotated worker token may have.
const MAX_TOKEN_GRACE: u64 = 30 * 86_400;

pub(crate) struct Errs<'a> {
    pub file: &'a SourceFile,
    pub errors: &'a mut Vec<PolicyError>,
}

impl Errs<'_> {
    pub(crate) fn at<T>(
        &mut self,
        s: &Spanned<T>,
        field: impl Into<String>,
        message: impl std::fmt::Display,
    ) {
        self.errors.push(PolicyError {
            file: self.file.path.display().to_string(),
            line: line_of(&self.file.text, s.span().start),
            field: field.into(),
            message: message.to_string(),
        });
    }
    pub(crate) fn base(&self) -> &Path {
        self.file.path.parent().unwrap_or(Path::new("."))
    }
}

pub(crate) fn check_provider(name: &str, mode: Mode) -> Result<Provider, String> {
    let p = Provider::parse(name).ok_or_else(|| {
        format!(
            "unknown authentication provider {name:?} (available: none, local, static, jwt, room, mtls)"
        )
    })?;
    if p.development_only() && mode != Mode::Development {
        return Err(format!(
            "authentication provider {name:?} is allowed only in development mode (mode is {})",
            mode.as_str()
        ));
    }
    Ok(p)
}

fn decoding_key_from_pem(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(pem),
        ES256 | ES384 => DecodingKey::from_ec_pem(pem),
        EdDSA => DecodingKey::from_ed_pem(pem),
        HS256 | HS384 | HS512 => {
            return Err("an HMAC algorithm takes a secret, not a key file".into())
        }
    }
    .map_err(|e| format!("not a usable PEM public key for {alg:?}: {e}"))
}

fn encoding_key_from_pem(alg: Algorithm, pem: &[u8]) -> Result<EncodingKey, String> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => EncodingKey::from_rsa_pem(pem),
        ES256 | ES384 => EncodingKey::from_ec_pem(pem),
        EdDSA => EncodingKey::from_ed_pem(pem),
        HS256 | HS384 | HS512 => {
            return Err("an HMAC algorithm takes a secret, not a key file".into())
        }
    }
    .map_err(|e| format!("not a usable PEM private key for {alg:?}: {e}"))
}

/// The compiled `[auth]` section plus what routes need to check against it.
pub(crate) struct AuthCompiled {
    pub settings: AuthSettings,
    pub known_capabilities: HashSet<String>,
}

pub(crate) fn compile_auth(
    auth: Option<(&SourceFile, &Spanned<RawAuth>)>,
    rooms: Option<(&SourceFile, &Spanned<RawRooms>)>,
    opts: &CompileOptions,
    errors: &mut Vec<PolicyError>,
) -> AuthCompiled {
    let mut known: HashSet<String> = BUILTIN_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    let mut default_providers = vec![Provider::Local];
    let mut issuers = Vec::new();
    let mut cache_ttl = Duration::from_secs(300);
    let mut cache_max = 10_000usize;
    let mut previous_token_grace = Duration::ZERO;
    let mut strip = Vec::new();
    let mut backoff = crate::limits::BackoffSpec {
        max_failures: 5,
        window: Duration::from_secs(60),
        base_lockout: Duration::from_secs(1),
        max_lockout: Duration::from_secs(900),
    };

    if let Some((file, a)) = auth {
        let mut e = Errs { file, errors };
        let a = a.get_ref();
        if let Some(p) = &a.default_provider {
            match check_provider(p.get_ref(), opts.mode) {
                Ok(p) => default_providers = vec![p],
                Err(m) => e.at(p, "auth.default_provider", m),
            }
        }
        if let Some(b) = &a.backoff {
            backoff.max_failures = b.max_failures.unwrap_or(5);
            backoff.window = Duration::from_secs(b.window_seconds.unwrap_or(60).clamp(1, 86_400));
            backoff.base_lockout =
                Duration::from_secs(b.lockout_seconds.unwrap_or(1).clamp(1, 86_400));
            backoff.max_lockout =
                Duration::from_secs(b.max_lockout_seconds.unwrap_or(900).clamp(1, 86_400))
                    .max(backoff.base_lockout);
        }
        if let Some(t) = &a.cache_ttl_seconds {
            if *t.get_ref() > 86_400 {
                e.at(t, "auth.cache_ttl_seconds", "must be at most 86400");
            } else {
                cache_ttl = Duration::from_secs(*t.get_ref());
            }
        }
        if let Some(g) = &a.previous_token_grace_seconds {
            if *g.get_ref() > MAX_TOKEN_GRACE {
                e.at(
                    g,
                    "auth.previous_token_grace_seconds",
                    "must be at most 2592000 (30 days)",
                );
            } else {
                previous_token_grace = Duration::from_secs(*g.get_ref());
            }
        }
        if let Some(m) = &a.cache_max_entries {
            if *m.get_ref() > 10_000_000 {
                e.at(m, "auth.cache_max_entries", "must be at most 10000000");
            } else {
                cache_max = *m.get_ref() as usize;
            }
        }
        for (i, c) in a.capabilities.iter().enumerate() {
            if !valid_capability(c.get_ref()) {
                e.at(
                    c,
                    format!("auth.capabilities[{i}]"),
                    format!(
                        "invalid capability name {:?} (lower-case words joined by '.', '-' or '_')",
                        c.get_ref()
                    ),
                );
            } else {
                known.insert(c.get_ref().clone());
            }
        }
        for (i, h) in a.strip_headers.iter().enumerate() {
            match HeaderName::from_bytes(h.get_ref().to_ascii_lowercase().as_bytes()) {
                Ok(n) => strip.push(n),
                Err(_) => e.at(
                    h,
                    format!("auth.strip_headers[{i}]"),
                    format!("invalid header name {:?}", h.get_ref()),
                ),
            }
        }
        let mut names = HashSet::new();
        for (i, raw) in a.issuers.iter().enumerate() {
            let at = format!("auth.issuers[{i}]");
            let name = raw.name.get_ref();
            if !names.insert(name.clone()) {
                e.at(
                    &raw.name,
                    format!("{at}.name"),
                    format!("duplicate issuer {name:?}"),
                );
            }
            let mut algorithms = Vec::new();
            for (j, s) in raw.algorithms.get_ref().iter().enumerate() {
                match parse_algorithm(s) {
                    Some(alg) => algorithms.push(alg),
                    None => e.at(&raw.algorithms, format!("{at}.algorithms[{j}]"), format!("algorithm {s:?} is not accepted (never \"none\"; use HS256/384/512, RS*/PS*, ES256/ES384, EdDSA)")),
                }
            }
            if raw.algorithms.get_ref().is_empty() {
                e.at(
                    &raw.algorithms,
                    format!("{at}.algorithms"),
                    "list at least one algorithm",
                );
            }
            let has_hmac = algorithms.iter().any(|a| is_hmac(*a));
            let has_public = algorithms.iter().any(|a| !is_hmac(*a));
            if has_hmac && has_public {
                e.at(
                    &raw.algorithms,
                    format!("{at}.algorithms"),
                    "an issuer with public keys never accepts HS* (key confusion); use two issuers",
                );
            }
            let secret = match (&raw.secret, has_hmac) {
                (Some(s), true) => match secret::resolve(s.get_ref(), e.base()) {
                    Ok(v) if v.len() < 32 && opts.mode != Mode::Development => {
                        e.at(s, format!("{at}.secret"), format!("HMAC secret is {} bytes; at least 32 (256 bits) outside development", v.len()));
                        None
                    }
                    Ok(v) => Some((DecodingKey::from_secret(v.as_bytes()), v.len())),
                    Err(m) => {
                        e.at(s, format!("{at}.secret"), m);
                        None
                    }
                },
                (Some(s), false) => {
                    e.at(s, format!("{at}.secret"), "a secret needs an HS* algorithm");
                    None
                }
                (None, true) => {
                    e.at(
                        &raw.algorithms,
                        format!("{at}.secret"),
                        "HS* algorithms need a secret",
                    );
                    None
                }
                (None, false) => None,
            };
            let mut keys = Vec::new();
            for (j, k) in raw.keys.iter().enumerate() {
                let Some(alg) = parse_algorithm(k.algorithm.get_ref()).filter(|a| !is_hmac(*a))
                else {
                    e.at(
                        &k.algorithm,
                        format!("{at}.keys[{j}].algorithm"),
                        "a key file needs an asymmetric algorithm (RS*, PS*, ES256, ES384, EdDSA)",
                    );
                    continue;
                };
                if !algorithms.contains(&alg) {
                    e.at(
                        &k.algorithm,
                        format!("{at}.keys[{j}].algorithm"),
                        format!("{alg:?} is not in this issuer's algorithms"),
                    );
                }
                let path = e.base().join(k.pem_file.get_ref());
                match std::fs::read(&path) {
                    Ok(pem) => match decoding_key_from_pem(alg, &pem) {
                        Ok(d) => keys.push((k.kid.clone(), d, alg)),
                        Err(m) => e.at(
                            &k.pem_file,
                            format!("{at}.keys[{j}].pem_file"),
                            format!("{}: {m}", path.display()),
                        ),
                    },
                    Err(err) => e.at(
                        &k.pem_file,
                        format!("{at}.keys[{j}].pem_file"),
                        format!("{}: {err}", path.display()),
                    ),
                }
            }
            let jwks = raw.jwks_url.as_ref().and_then(|u| {
                let url = u.get_ref();
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    e.at(u, format!("{at}.jwks_url"), "must be an http(s) URL");
                    return None;
                }
                if url.starts_with("http://")
                    && opts.mode == Mode::Production
                    && !is_loopback_url(url)
                {
                    e.at(
                        u,
                        format!("{at}.jwks_url"),
                        "must use https outside loopback in production",
                    );
                }
                Some((
                    url.clone(),
                    JwksSettings {
                        ttl: Duration::from_secs(raw.jwks_ttl_seconds.unwrap_or(300)),
                        refetch_interval: Duration::from_secs(
                            raw.jwks_refetch_interval_seconds.unwrap_or(30),
                        ),
                        max_stale: Duration::from_secs(raw.jwks_max_stale_seconds.unwrap_or(3600)),
                    },
                ))
            });
            if has_public && keys.is_empty() && jwks.is_none() {
                e.at(
                    &raw.algorithms,
                    format!("{at}.keys"),
                    "asymmetric algorithms need `keys` (PEM files) or a `jwks_url`",
                );
            }
            issuers.push(Issuer {
                name: name.as_str().into(),
                iss: raw.issuer.clone(),
                audiences: raw.audiences.clone().unwrap_or_default(),
                algorithms,
                secret_len: secret.as_ref().map(|s| s.1),
                secret: secret.map(|s| s.0),
                keys,
                jwks,
                leeway: raw.leeway_seconds.unwrap_or(30).min(600),
                required_claims: raw.required_claims.clone(),
                subject_claim: raw.subject_claim.clone().unwrap_or_else(|| "sub".into()),
                capabilities_claim: raw
                    .capabilities_claim
                    .clone()
                    .unwrap_or_else(|| "caps".into()),
            });
        }
        if issuers.len() > 1 && issuers.iter().any(|i| i.iss.is_none()) {
            if let Some(raw) = a.issuers.iter().find(|r| r.issuer.is_none()) {
                e.at(
                    &raw.name,
                    "auth.issuers",
                    "with several issuers, each needs `issuer` (the `iss` its tokens carry)",
                );
            }
        }
    }

    // Room keys and access rules.
    let mut room_keys = RoomKeys {
        issuer: "portcullis-rooms".into(),
        keys: HashMap::new(),
    };
    if let Some((file, r)) = rooms {
        let mut e = Errs { file, errors };
        let r = r.get_ref();
        if let Some(i) = &r.token_issuer {
            room_keys.issuer = i.clone();
        }
        for (i, k) in r.keys.iter().enumerate() {
            let at = format!("rooms.keys[{i}]");
            let kid = k.kid.get_ref();
            if kid.is_empty() || kid.len() > 64 || room_keys.keys.contains_key(kid) {
                e.at(
                    &k.kid,
                    format!("{at}.kid"),
                    format!("kid {kid:?} must be unique and 1-64 characters"),
                );
                continue;
            }
            let Some(alg) = parse_algorithm(k.algorithm.get_ref()) else {
                e.at(
                    &k.algorithm,
                    format!("{at}.algorithm"),
                    format!("algorithm {:?} is not accepted", k.algorithm.get_ref()),
                );
                continue;
            };
            let key = if is_hmac(alg) {
                let Some(s) = &k.secret else {
                    e.at(
                        &k.kid,
                        format!("{at}.secret"),
                        "an HS* room key needs a secret",
                    );
                    continue;
                };
                match secret::resolve(s.get_ref(), e.base()) {
                    Ok(v) if v.len() < 32 && opts.mode != Mode::Development => {
                        e.at(
                            s,
                            format!("{at}.secret"),
                            "HMAC secret shorter than 32 bytes (256 bits)",
                        );
                        continue;
                    }
                    Ok(v) => RoomKey {
                        kid: kid.clone(),
                        algorithm: alg,
                        decoding: DecodingKey::from_secret(v.as_bytes()),
                        encoding: Some(EncodingKey::from_secret(v.as_bytes())),
                        secret_len: Some(v.len()),
                    },
                    Err(m) => {
                        e.at(s, format!("{at}.secret"), m);
                        continue;
                    }
                }
            } else {
                let Some(p) = &k.public_key_file else {
                    e.at(
                        &k.kid,
                        format!("{at}.public_key_file"),
                        "an asymmetric room key needs public_key_file",
                    );
                    continue;
                };
                let path = e.base().join(p.get_ref());
                let decoding = match std::fs::read(&path)
                    .map_err(|err| err.to_string())
                    .and_then(|pem| decoding_key_from_pem(alg, &pem))
                {
                    Ok(d) => d,
                    Err(m) => {
                        e.at(
                            p,
                            format!("{at}.public_key_file"),
                            format!("{}: {m}", path.display()),
                        );
                        continue;
                    }
                };
                let encoding = match &k.private_key_file {
                    Some(pk) => {
                        let path = e.base().join(pk.get_ref());
                        match std::fs::read(&path)
                            .map_err(|err| err.to_string())
                            .and_then(|pem| encoding_key_from_pem(alg, &pem))
                        {
                            Ok(k) => Some(k),
                            Err(m) => {
                                e.at(
                                    pk,
                                    format!("{at}.private_key_file"),
                                    format!("{}: {m}", path.display()),
                                );
                                None
                            }
                        }
                    }
                    None => None,
                };
                RoomKey {
                    kid: kid.clone(),
                    algorithm: alg,
                    decoding,
                    encoding,
                    secret_len: None,
                }
            };
            room_keys.keys.insert(kid.clone(), key);
        }
    }

    if let Some(o) = opts.auth_override {
        default_providers = vec![o];
    }
    AuthCompiled {
        settings: AuthSettings {
            default_providers,
            issuers,
            room_keys,
            cache_ttl,
            cache_max_entries: cache_max,
            previous_token_grace,
            strip_headers: strip,
            needs_worker_token: false,
            room_leeway: 30,
            backoff: (backoff.max_failures > 0).then_some(backoff),
            extra_capabilities: known
                .iter()
                .filter(|c| !BUILTIN_CAPABILITIES.contains(&c.as_str()))
                .map(|c| c.as_str().into())
                .collect(),
        },
        known_capabilities: known,
    }
}

/// Compiles `[rooms]` access rules; returns (default_locked, rules).
pub(crate) fn compile_room_access(
    rooms: Option<(&SourceFile, &Spanned<RawRooms>)>,
    known: &HashSet<String>,
    has_keys: bool,
    errors: &mut Vec<PolicyError>,
) -> (bool, Vec<RoomAccess>) {
    let Some((file, r)) = rooms else {
        return (false, Vec::new());
    };
    let mut e = Errs { file, errors };
    let r = r.get_ref();
    let parse_mode = |s: &str| match s {
        "open" => Some(false),
        "locked" => Some(true),
        _ => None,
    };
    let mut default_locked = false;
    if let Some(m) = &r.default_access {
        match parse_mode(m.get_ref()) {
            Some(l) => default_locked = l,
            None => e.at(m, "rooms.default_access", "expected \"open\" or \"locked\""),
        }
    }
    let mut rules = Vec::new();
    for (i, a) in r.access.iter().enumerate() {
        let at = format!("rooms.access[{i}]");
        let name = a.room.get_ref();
        let (room, prefix) = match name.strip_suffix('*') {
            Some(p) => (p, true),
            None => (name.as_str(), false),
        };
        if (!prefix && room.is_empty())
            || !room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            e.at(
                &a.room,
                format!("{at}.room"),
                format!("invalid room {name:?} (letters, digits, '-', '_', optional trailing '*')"),
            );
        }
        let Some(locked) = parse_mode(a.mode.get_ref()) else {
            e.at(
                &a.mode,
                format!("{at}.mode"),
                "expected \"open\" or \"locked\"",
            );
            continue;
        };
        for c in &a.capabilities {
            if !known.contains(c) {
                e.at(
                    &a.room,
                    format!("{at}.capabilities"),
                    format!("unknown capability {c:?} (declare it in auth.capabilities)"),
                );
            }
        }
        rules.push(RoomAccess {
            room: room.into(),
            prefix,
            locked,
            capabilities: a.capabilities.iter().map(|c| c.as_str().into()).collect(),
            shadow: a.shadow,
        });
    }
    let any_locked = default_locked || rules.iter().any(|r| r.locked);
    if any_locked && !has_keys {
        if let Some(m) = &r.default_access {
            e.at(
                m,
                "rooms.keys",
                "locked rooms need at least one room key to verify tokens",
            );
        } else if let Some(a) = r.access.first() {
            e.at(
                &a.room,
                "rooms.keys",
                "locked rooms need at least one room key to verify tokens",
            );
        }
    }
    (default_locked, rules)
}

/// One rule for policy and token capability names alike.
pub(crate) fn valid_capability(c: &str) -> bool {
    crate::auth::safe_capability_name(c)
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.trim_start_matches("http://");
    rest.starts_with("127.") || rest.starts_with("localhost") || rest.starts_with("[::1]")
}
