//! The response-hardening parts of the compile step: header profiles, per-route CORS and CSRF,
//! signed-URL keys and the client-certificate settings (`[mtls]`).

use std::collections::HashMap;

use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

pub(crate) use super::auth::Errs;
use crate::auth::secret;
use crate::config::Mode;
use crate::http::cors::{canonical_origin, Cors};
use crate::http::csrf::Csrf;
use crate::http::headers::{self, HeaderProfile, ProfileSpec};
use crate::http::signed::{SignedUrls, SigningKey};
use crate::policy::model::{HeaderSettings, MethodSet};
use crate::policy::raw::{RawCors, RawCsrf, RawHeaderProfile, RawHeaders, RawMtls, RawSignedUrls};
use crate::policy::source::{PolicyError, SourceFile};

pub const DEFAULT_PROFILE: &str = "api-strict";

fn overlay(base: ProfileSpec, p: &RawHeaderProfile) -> ProfileSpec {
    let pick = |a: &Option<String>, b: Option<String>| a.clone().or(b);
    ProfileSpec {
        content_security_policy: pick(&p.content_security_policy, base.content_security_policy),
        csp_nonce: p.csp_nonce.unwrap_or(base.csp_nonce),
        content_type_options: p.content_type_options.unwrap_or(base.content_type_options),
        frame_options: pick(&p.frame_options, base.frame_options),
        referrer_policy: pick(&p.referrer_policy, base.referrer_policy),
        permissions_policy: pick(&p.permissions_policy, base.permissions_policy),
        cross_origin_opener_policy: pick(
            &p.cross_origin_opener_policy,
            base.cross_origin_opener_policy,
        ),
        cross_origin_resource_policy: pick(
            &p.cross_origin_resource_policy,
            base.cross_origin_resource_policy,
        ),
    }
}

/// Compiles `[headers]`: the built-in profiles, then the policy's (which may extend a built-in
/// or another policy profile, and may replace a built-in by name). Returns the settings and the
/// profile index by name.
pub(crate) fn compile_headers(
    raw: Option<(&SourceFile, &Spanned<RawHeaders>)>,
    errors: &mut Vec<PolicyError>,
) -> (HeaderSettings, HashMap<String, usize>) {
    let mut specs: Vec<(String, ProfileSpec)> = headers::BUILTIN_NAMES
        .iter()
        .map(|n| (n.to_string(), headers::builtin(n).expect("built-in")))
        .collect();
    let mut remove: Vec<HeaderName> = headers::ALWAYS_REMOVED
        .iter()
        .map(|h| HeaderName::from_static(h))
        .collect();
    let mut default_name = DEFAULT_PROFILE.to_string();
    let mut default_at = None;
    if let Some((file, h)) = raw {
        let mut e = Errs { file, errors };
        let h = h.get_ref();
        // Resolve `extends`: a policy profile may start from a built-in or another policy
        // profile; a profile extending its own name starts from the built-in of that name.
        let mut resolved: HashMap<String, ProfileSpec> = HashMap::new();
        for (name, p) in &h.profiles {
            match resolve_profile(name, h, &mut resolved, &mut Vec::new()) {
                Ok(spec) => {
                    specs.retain(|(n, _)| n != name);
                    specs.push((name.clone(), spec));
                }
                Err(m) => e.at(p, format!("headers.profiles.{name}.extends"), m),
            }
        }
        for (i, r) in h.remove.iter().enumerate() {
            match HeaderName::from_bytes(r.get_ref().to_ascii_lowercase().as_bytes()) {
                Ok(n) if !remove.contains(&n) => remove.push(n),
                Ok(_) => {}
                Err(_) => e.at(
                    r,
                    format!("headers.remove[{i}]"),
                    format!("{:?} is not a header name", r.get_ref()),
                ),
            }
        }
        if let Some(d) = &h.default_profile {
            default_name = d.get_ref().clone();
            default_at = Some(d.span());
        }
        let mut profiles = Vec::with_capacity(specs.len());
        let mut index = HashMap::new();
        for (name, spec) in &specs {
            match HeaderProfile::compile(name, spec) {
                Ok(p) => {
                    index.insert(name.clone(), profiles.len());
                    profiles.push(p);
                }
                Err((field, m)) => {
                    let at = h.profiles.get(name);
                    match at {
                        Some(at) => e.at(at, format!("headers.profiles.{name}.{field}"), m),
                        None => e.at(
                            &Spanned::new(0..0, ()),
                            format!("headers.profiles.{name}.{field}"),
                            m,
                        ),
                    }
                }
            }
        }
        let default = match index.get(&default_name) {
            Some(i) => *i,
            None => {
                if let Some(span) = default_at {
                    e.at(
                        &Spanned::new(span, ()),
                        "headers.default_profile",
                        format!("unknown profile {default_name:?}"),
                    );
                }
                0
            }
        };
        return (
            HeaderSettings {
                profiles,
                default,
                remove,
            },
            index,
        );
    }
    let mut profiles = Vec::new();
    let mut index = HashMap::new();
    for (name, spec) in &specs {
        let p = HeaderProfile::compile(name, spec).expect("built-ins compile");
        index.insert(name.clone(), profiles.len());
        profiles.push(p);
    }
    let default = index[DEFAULT_PROFILE];
    (
        HeaderSettings {
            profiles,
            default,
            remove,
        },
        index,
    )
}

fn resolve_profile(
    name: &str,
    h: &RawHeaders,
    resolved: &mut HashMap<String, ProfileSpec>,
    stack: &mut Vec<String>,
) -> Result<ProfileSpec, String> {
    if let Some(s) = resolved.get(name) {
        return Ok(s.clone());
    }
    let Some(p) = h.profiles.get(name) else {
        return headers::builtin(name).ok_or_else(|| {
            format!(
                "unknown base profile {name:?} (built-in: {})",
                headers::BUILTIN_NAMES.join(", ")
            )
        });
    };
    if stack.iter().any(|s| s == name) {
        return Err(format!("circular `extends` through {name:?}"));
    }
    stack.push(name.to_string());
    let base = match p.get_ref().extends.as_deref() {
        None => ProfileSpec::default(),
        Some(b) if b == name => headers::builtin(b)
            .ok_or_else(|| format!("{b:?} extends itself and is not a built-in"))?,
        Some(b) => resolve_profile(b, h, resolved, stack)?,
    };
    stack.pop();
    let spec = overlay(base, p.get_ref());
    resolved.insert(name.to_string(), spec.clone());
    Ok(spec)
}

/// Compiles a route's `[routes.cors]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn compile_cors(
    e: &mut Errs<'_>,
    at: &str,
    raw: &Spanned<RawCors>,
    route_methods: MethodSet,
    public: bool,
    csrf_header: Option<&HeaderName>,
    mode: Mode,
) -> Option<Cors> {
    let c = raw.get_ref();
    let mut origins: Vec<Box<str>> = Vec::new();
    let mut any = false;
    if c.origins.get_ref().is_empty() {
        e.at(
            &c.origins,
            format!("{at}.cors.origins"),
            "list at least one origin",
        );
    }
    for (i, o) in c.origins.get_ref().iter().enumerate() {
        match canonical_origin(o) {
            Ok(o) if o == "*" => any = true,
            Ok(o) => origins.push(o.into()),
            Err(m) => e.at(&c.origins, format!("{at}.cors.origins[{i}]"), m),
        }
    }
    let mut credentials = c.credentials;
    if any && mode != Mode::Development {
        if c.credentials {
            e.at(
                &c.origins,
                format!("{at}.cors.origins"),
                "\"*\" with credentials = true lets any site act as the signed-in user; list the origins",
            );
        }
        if !public {
            e.at(
                &c.origins,
                format!("{at}.cors.origins"),
                "\"*\" on a route that requires authentication; list the origins",
            );
        }
    } else if any && c.credentials {
        tracing::warn!(
            route = at,
            "CORS \"*\" with credentials: answered as \"*\" without credentials (refused outside development)"
        );
        credentials = false;
    }
    let methods: Vec<Method> = match &c.methods {
        Some(ms) => {
            let mut out = Vec::new();
            for (i, m) in ms.get_ref().iter().enumerate() {
                match (MethodSet::bit(m), Method::from_bytes(m.as_bytes())) {
                    (Some(_), Ok(mm)) => out.push(mm),
                    _ => e.at(
                        ms,
                        format!("{at}.cors.methods[{i}]"),
                        format!("unknown method {m:?} (use upper case)"),
                    ),
                }
            }
            out
        }
        None if route_methods == MethodSet::ALL => {
            ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .iter()
                .map(|m| Method::from_bytes(m.as_bytes()).expect("method"))
                .collect()
        }
        None => route_methods
            .names()
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect(),
    };
    let mut hdrs: Vec<Box<str>> = match &c.headers {
        Some(hs) => hs
            .get_ref()
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) => Some(n.as_str().into()),
                Err(_) => {
                    e.at(
                        hs,
                        format!("{at}.cors.headers[{i}]"),
                        format!("{h:?} is not a header name"),
                    );
                    None
                }
            })
            .collect(),
        None => vec!["content-type".into(), "authorization".into()],
    };
    if let Some(h) = csrf_header {
        if !hdrs.iter().any(|x| **x == *h.as_str()) {
            hdrs.push(h.as_str().into());
        }
    }
    let join = |v: &[&str]| HeaderValue::from_str(&v.join(", ")).ok();
    let expose_value = if c.expose_headers.is_empty() {
        None
    } else {
        match join(
            &c.expose_headers
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        ) {
            Some(v) => Some(v),
            None => {
                e.at(
                    raw,
                    format!("{at}.cors.expose_headers"),
                    "not valid header names",
                );
                None
            }
        }
    };
    let max_age = match &c.max_age_seconds {
        Some(m) if *m.get_ref() > 86_400 => {
            e.at(
                m,
                format!("{at}.cors.max_age_seconds"),
                "at most 86400 (browsers cap it lower anyway)",
            );
            600
        }
        Some(m) => *m.get_ref(),
        None => 600,
    };
    let names: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
    Some(Cors {
        origins,
        any_origin: any,
        methods_value: join(&names).unwrap_or(HeaderValue::from_static("GET")),
        methods,
        headers_value: join(&hdrs.iter().map(|h| &**h).collect::<Vec<_>>()),
        headers: hdrs,
        expose_value,
        credentials,
        max_age: HeaderValue::from(max_age),
    })
}

/// Compiles a route's `[routes.csrf]`; origins default to the route's CORS origins.
pub(crate) fn compile_csrf(
    e: &mut Errs<'_>,
    at: &str,
    raw: &Spanned<RawCsrf>,
    cors: Option<&Spanned<RawCors>>,
) -> Option<Csrf> {
    let c = raw.get_ref();
    let mut origins: Vec<Box<str>> = Vec::new();
    match &c.origins {
        Some(os) => {
            for (i, o) in os.get_ref().iter().enumerate() {
                match canonical_origin(o) {
                    Ok(o) if o == "*" => e.at(
                        os,
                        format!("{at}.csrf.origins[{i}]"),
                        "\"*\" would disable the origin check",
                    ),
                    Ok(o) => origins.push(o.into()),
                    Err(m) => e.at(os, format!("{at}.csrf.origins[{i}]"), m),
                }
            }
        }
        None => {
            if let Some(cors) = cors {
                origins.extend(
                    cors.get_ref()
                        .origins
                        .get_ref()
                        .iter()
                        .filter_map(|o| canonical_origin(o).ok())
                        .filter(|o| o != "*")
                        .map(|o| o.into()),
                );
            }
        }
    }
    let cookie = match &c.cookie {
        Some(ck) if !valid_cookie_name(ck.get_ref()) => {
            e.at(ck, format!("{at}.csrf.cookie"), "not a valid cookie name");
            return None;
        }
        Some(ck) => ck.get_ref().clone(),
        None => "__Host-csrf".to_string(),
    };
    let header = match &c.header {
        Some(h) => match HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                e.at(h, format!("{at}.csrf.header"), "not a valid header name");
                return None;
            }
        },
        None => HeaderName::from_static("x-csrf-token"),
    };
    Some(Csrf {
        origins,
        cookie: cookie.into(),
        header,
    })
}

pub(crate) fn valid_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Compiles `[signed_urls]`.
pub(crate) fn compile_signed_urls(
    raw: Option<(&SourceFile, &Spanned<RawSignedUrls>)>,
    mode: Mode,
    errors: &mut Vec<PolicyError>,
) -> Option<SignedUrls> {
    let (file, s) = raw?;
    let mut e = Errs { file, errors };
    let s = s.get_ref();
    let mut keys = Vec::new();
    for (i, k) in s.keys.iter().enumerate() {
        let at = format!("signed_urls.keys[{i}]");
        let id = k.id.get_ref();
        if id.is_empty()
            || id.len() > 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            e.at(
                &k.id,
                format!("{at}.id"),
                "use 1-32 letters, digits, '-', '_' or '.'",
            );
            continue;
        }
        if keys.iter().any(|x: &SigningKey| &*x.id == id) {
            e.at(
                &k.id,
                format!("{at}.id"),
                format!("duplicate key id {id:?}"),
            );
            continue;
        }
        if mode != Mode::Development && !secret::is_reference(k.secret.get_ref()) {
            e.at(
                &k.secret,
                format!("{at}.secret"),
                "a clear-text secret in a policy file; use env:NAME or file:/path",
            );
        }
        match secret::resolve(k.secret.get_ref(), e.base()) {
            Ok(v) if v.len() < 32 => e.at(
                &k.secret,
                format!("{at}.secret"),
                format!("secret is {} bytes; at least 32 (256 bits)", v.len()),
            ),
            Ok(v) => keys.push(SigningKey::new(id, v.as_bytes())),
            Err(m) => e.at(&k.secret, format!("{at}.secret"), m),
        }
    }
    if s.keys.is_empty() {
        e.errors.push(PolicyError {
            file: file.path.display().to_string(),
            line: 0,
            field: "signed_urls.keys".into(),
            message: "list at least one key".into(),
        });
    }
    let sign_with = match &s.sign_with {
        Some(w) => match keys.iter().position(|k| &*k.id == w.get_ref()) {
            Some(i) => i,
            None => {
                e.at(
                    w,
                    "signed_urls.sign_with",
                    format!("no key {:?}", w.get_ref()),
                );
                0
            }
        },
        None => 0,
    };
    let max_ttl = match &s.max_ttl_seconds {
        Some(m) if *m.get_ref() == 0 || *m.get_ref() > 31 * 86_400 => {
            e.at(
                m,
                "signed_urls.max_ttl_seconds",
                "between 1 and 2678400 (31 days)",
            );
            604_800
        }
        Some(m) => *m.get_ref(),
        None => 604_800,
    };
    (!keys.is_empty()).then_some(SignedUrls {
        keys,
        sign_with,
        max_ttl,
    })
}

/// Compiles `[mtls]`: the client CA bundle and CRLs, read now (and on every reload).
pub(crate) fn compile_mtls(
    e: &mut Errs<'_>,
    raw: &Spanned<RawMtls>,
) -> Option<crate::policy::specs::MtlsSettings> {
    let m = raw.get_ref();
    let base = e.base().to_path_buf();
    let ca = match std::fs::read(base.join(m.ca_file.get_ref())) {
        Ok(b) => b,
        Err(err) => {
            e.at(
                &m.ca_file,
                "mtls.ca_file",
                format!("cannot read {}: {err}", m.ca_file.get_ref()),
            );
            return None;
        }
    };
    let mut crls = Vec::new();
    for (i, c) in m.crl_files.iter().enumerate() {
        match std::fs::read(base.join(c.get_ref())) {
            Ok(b) => crls.push(b),
            Err(err) => e.at(
                c,
                format!("mtls.crl_files[{i}]"),
                format!("cannot read {}: {err}", c.get_ref()),
            ),
        }
    }
    match crate::tls::client_auth::build_verifier(&ca, &crls) {
        Ok(verifier) => Some(crate::policy::specs::MtlsSettings {
            verifier,
            required: m.required,
            id: crate::tls::client_auth::bundle_id(&ca, &crls),
        }),
        Err(msg) => {
            e.at(&m.ca_file, "mtls.ca_file", msg);
            None
        }
    }
}
