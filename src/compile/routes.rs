//! `[[routes]]`: what each route matches, where it goes, who may use it and how its responses
//! are dressed; and the check that no route hides another.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::auth::{check_provider, Errs};
use super::common::{check_path, parse_host_pattern, valid_name, CompileOptions, Ctx, Pending};
use super::headers::{compile_cors, compile_csrf, valid_cookie_name};
use crate::auth::Provider;
use crate::config::Mode;
use crate::http::signed::SignedUrls;
use crate::policy::model::*;
use crate::policy::raw::*;
use crate::policy::source::{PolicyError, SourceFile};

/// What routes refer to, compiled before them.
pub(super) struct RouteRefs<'a> {
    pub opts: &'a CompileOptions,
    pub known_caps: &'a HashSet<String>,
    pub default_auth: &'a Vec<Provider>,
    pub upstream_index: &'a HashMap<String, usize>,
    pub upstreams: &'a [Upstream],
    pub profile_index: &'a HashMap<String, usize>,
    pub header_settings: &'a HeaderSettings,
    pub signed: &'a Option<SignedUrls>,
    /// Whether the policy has an `[mtls]` section.
    pub has_mtls: bool,
}

/// The compiled routes in the order written, and their names. A route that needs the worker
/// token says so in `auth_settings`.
pub(super) fn compile_routes(
    files: &[SourceFile],
    routes: &[Pending<RawRoute>],
    refs: &RouteRefs<'_>,
    auth_settings: &mut AuthSettings,
    errors: &mut Vec<PolicyError>,
) -> (Vec<Route>, HashMap<String, ()>) {
    let RouteRefs {
        opts,
        known_caps,
        default_auth,
        upstream_index,
        upstreams: compiled_upstreams,
        profile_index,
        header_settings,
        signed,
        has_mtls,
    } = *refs;
    let mode = opts.mode;
    let mut compiled_routes: Vec<(Route, usize, usize)> = Vec::new();
    let mut route_names: HashMap<String, ()> = HashMap::new();
    for r in routes {
        let mut cx = Ctx {
            file: &files[r.file],
            errors,
        };
        let at = format!("routes[{}]", r.index);
        let raw = &r.raw;
        let name = raw.name.get_ref();
        if !valid_name(name) {
            cx.err_at(
                &raw.name,
                format!("{at}.name"),
                format!("invalid name {name:?}: use letters, digits, '-' and '_'"),
            );
        } else if route_names.insert(name.clone(), ()).is_some() {
            cx.err_at(
                &raw.name,
                format!("{at}.name"),
                format!("duplicate route {name:?}"),
            );
        }
        let prefix = raw.path_prefix.get_ref();
        if let Err(m) = check_path(prefix) {
            cx.err_at(&raw.path_prefix, format!("{at}.path_prefix"), m);
        }
        let mut hosts = Vec::new();
        if let Some(hs) = &raw.hosts {
            if hs.get_ref().is_empty() {
                cx.err_at(
                    hs,
                    format!("{at}.hosts"),
                    "an empty list matches nothing; leave `hosts` out to match any host",
                );
            }
            for (i, h) in hs.get_ref().iter().enumerate() {
                match parse_host_pattern(h) {
                    Ok(p) => hosts.push(p),
                    Err(m) => cx.err_at(hs, format!("{at}.hosts[{i}]"), m),
                }
            }
        }
        let mut methods = MethodSet::ALL;
        if let Some(ms) = &raw.methods {
            if ms.get_ref().is_empty() {
                cx.err_at(
                    ms,
                    format!("{at}.methods"),
                    "an empty list allows nothing; leave `methods` out to allow all",
                );
            }
            methods = MethodSet(0);
            for (i, m) in ms.get_ref().iter().enumerate() {
                match MethodSet::bit(m) {
                    Some(b) => methods.0 |= b,
                    None => cx.err_at(
                        ms,
                        format!("{at}.methods[{i}]"),
                        format!("unknown method {m:?} (use upper case, e.g. \"GET\")"),
                    ),
                }
            }
        }
        let upstream = match upstream_index.get(raw.upstream.get_ref()) {
            Some(i) => *i,
            None => {
                let known: Vec<&str> = {
                    let mut k: Vec<&str> = upstream_index.keys().map(|s| s.as_str()).collect();
                    k.sort();
                    k
                };
                cx.err_at(
                    &raw.upstream,
                    format!("{at}.upstream"),
                    format!(
                        "unknown upstream {:?} (defined: {})",
                        raw.upstream.get_ref(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                usize::MAX
            }
        };
        let is_rooms = compiled_upstreams
            .get(upstream)
            .is_some_and(|u| u.target == UpstreamTarget::Rooms);
        let mut auth = Vec::new();
        match &raw.auth {
            Some(p) => {
                if p.get_ref().items().is_empty() {
                    cx.err_at(p, format!("{at}.auth"), "list at least one provider");
                }
                for name in p.get_ref().items() {
                    match check_provider(name, mode) {
                        Ok(pr) if auth.contains(&pr) => cx.err_at(
                            p,
                            format!("{at}.auth"),
                            format!("provider {name:?} listed twice"),
                        ),
                        Ok(pr) => auth.push(pr),
                        Err(m) => cx.err_at(p, format!("{at}.auth"), m),
                    }
                }
            }
            None => {
                if !raw.public
                    && mode != Mode::Development
                    && default_auth.iter().any(|p| p.development_only())
                {
                    cx.err_at(&raw.name, format!("{at}.auth"), format!("non-public route needs an authentication provider; \"{}\" is for development only", default_auth[0].as_str()));
                }
                auth = default_auth.clone();
            }
        }
        // Other modes refuse the development providers outright (above).
        if let Some(addr) = opts.listener.filter(|a| !a.ip().is_loopback()) {
            if let Some(dev) = auth.iter().find(|p| p.development_only()) {
                if !raw.public && mode == Mode::Development {
                    let span = raw
                        .auth
                        .as_ref()
                        .map_or(raw.name.span().start, |a| a.span().start);
                    cx.err(
                        span,
                        format!("{at}.auth"),
                        format!(
                            "authentication provider \"{}\" admits anyone and is served only on a loopback listener, but the HTTPS listener is {addr}: bind it to 127.0.0.1 (PORTCULLIS_HTTPS_ADDR or [listeners] https), or use another provider (AUTH_PROVIDER=static, auth.default_provider or the route's auth)",
                            dev.as_str()
                        ),
                    );
                }
            }
        }
        if raw.public && raw.auth.is_some() {
            cx.err_at(
                &raw.name,
                format!("{at}.auth"),
                "a public route takes no authentication provider",
            );
        }
        if auth.contains(&crate::auth::Provider::Room) && !is_rooms && upstream != usize::MAX {
            cx.err_at(
                &raw.name,
                format!("{at}.auth"),
                "the room provider is only for routes to a `rooms` upstream",
            );
        }
        if auth.contains(&crate::auth::Provider::Jwt) && auth_settings.issuers.is_empty() {
            cx.err_at(
                &raw.name,
                format!("{at}.auth"),
                "the jwt provider needs at least one [[auth.issuers]]",
            );
        }
        if !raw.public && auth.contains(&crate::auth::Provider::Static) {
            auth_settings.needs_worker_token = true;
        }
        let mut capabilities: Vec<Box<str>> = Vec::new();
        if let Some(cs) = &raw.capabilities {
            for (i, c) in cs.get_ref().iter().enumerate() {
                if known_caps.contains(c) {
                    capabilities.push(c.as_str().into());
                } else {
                    cx.err_at(
                        cs,
                        format!("{at}.capabilities[{i}]"),
                        format!("unknown capability {c:?} (declare it in auth.capabilities)"),
                    );
                }
            }
            if raw.public && !capabilities.is_empty() {
                cx.err_at(
                    cs,
                    format!("{at}.capabilities"),
                    "a public route has no identity to hold capabilities",
                );
            }
        }
        if raw.query_token && !raw.websocket.unwrap_or(is_rooms) {
            cx.err_at(
                &raw.name,
                format!("{at}.query_token"),
                "query-string tokens are accepted only on WebSocket routes",
            );
        }
        let headers_idx = match &raw.headers {
            Some(h) => match profile_index.get(h.get_ref()) {
                Some(i) => *i,
                None => {
                    let mut known: Vec<&str> = profile_index.keys().map(|s| s.as_str()).collect();
                    known.sort();
                    cx.err_at(
                        h,
                        format!("{at}.headers"),
                        format!(
                            "unknown header profile {:?} (defined: {})",
                            h.get_ref(),
                            known.join(", ")
                        ),
                    );
                    header_settings.default
                }
            },
            None => header_settings.default,
        };
        let session_cookie = match &raw.session_cookie {
            Some(c) if !valid_cookie_name(c.get_ref()) => {
                cx.err_at(c, format!("{at}.session_cookie"), "not a valid cookie name");
                None
            }
            Some(c) if raw.public => {
                cx.err_at(
                    c,
                    format!("{at}.session_cookie"),
                    "a public route does not authenticate",
                );
                None
            }
            Some(c) => Some(c.get_ref().as_str().into()),
            None => None,
        };
        if session_cookie.is_some() && raw.csrf.is_none() {
            cx.err_at(
                &raw.name,
                format!("{at}.csrf"),
                "a cookie-authenticated route needs [routes.csrf] (cookies ride along on cross-site requests)",
            );
        }
        if !raw.public
            && raw.websocket.unwrap_or(is_rooms)
            && auth.contains(&crate::auth::Provider::Mtls)
            && raw.csrf.is_none()
        {
            cx.err_at(
                &raw.name,
                format!("{at}.csrf"),
                "a WebSocket route taking client certificates needs [routes.csrf] with its allowed origins (a browser presents its certificate on a cross-site handshake)",
            );
        }
        if raw.signed_urls && signed.is_none() {
            cx.err_at(
                &raw.name,
                format!("{at}.signed_urls"),
                "signed URLs need [signed_urls] keys in the policy",
            );
        }
        let mut client_cert_allow = Vec::new();
        if let Some(list) = &raw.client_cert_allow {
            if !auth.contains(&crate::auth::Provider::Mtls) {
                cx.err_at(
                    list,
                    format!("{at}.client_cert_allow"),
                    "an allow-list of client certificates needs auth = \"mtls\"",
                );
            }
            for (i, entry) in list.get_ref().iter().enumerate() {
                match crate::policy::specs::AllowEntry::parse(entry) {
                    Ok(a) => client_cert_allow.push(a),
                    Err(m) => cx.err_at(list, format!("{at}.client_cert_allow[{i}]"), m),
                }
            }
        }
        if auth.contains(&crate::auth::Provider::Mtls) && !has_mtls {
            cx.err_at(
                &raw.name,
                format!("{at}.auth"),
                "the mtls provider needs an [mtls] section with the client CA bundle",
            );
        }
        let mut e = Errs {
            file: cx.file,
            errors: cx.errors,
        };
        let csrf = raw
            .csrf
            .as_ref()
            .and_then(|c| compile_csrf(&mut e, &at, c, raw.cors.as_ref()));
        let cors = raw.cors.as_ref().and_then(|c| {
            compile_cors(
                &mut e,
                &at,
                c,
                methods,
                raw.public,
                csrf.as_ref().map(|c| &c.header),
                mode,
            )
        });
        let mut cx = Ctx {
            file: e.file,
            errors: e.errors,
        };
        let route = Route {
            name: Arc::from(name.as_str()),
            hosts,
            prefix: prefix.clone().into_boxed_str(),
            methods,
            upstream,
            public: raw.public,
            auth,
            capabilities,
            query_token: raw.query_token,
            forward_authorization: raw.forward_authorization,
            max_body_bytes: match &raw.max_body_bytes {
                Some(m) if *m.get_ref() > 1 << 34 => {
                    cx.err_at(
                        m,
                        format!("{at}.max_body_bytes"),
                        "must be at most 17179869184",
                    );
                    16 << 20
                }
                Some(m) => *m.get_ref(),
                None => 16 << 20,
            },
            websocket: raw.websocket.unwrap_or(is_rooms),
            case_sensitive: raw.case_sensitive.unwrap_or(true),
            headers: headers_idx,
            cors,
            csrf,
            session_cookie,
            signed_urls: raw.signed_urls,
            client_cert_allow,
        };
        compiled_routes.push((route, r.file, raw.path_prefix.span().start));
    }
    // Two routes that would answer the same requests make the second unreachable.
    for i in 0..compiled_routes.len() {
        for j in 0..i {
            let (a, _, _) = &compiled_routes[j];
            let (b, fi, off) = &compiled_routes[i];
            if a.prefix == b.prefix && a.hosts == b.hosts && a.methods.0 & b.methods.0 != 0 {
                let mut cx = Ctx {
                    file: &files[*fi],
                    errors,
                };
                let idx = routes[i].index;
                cx.err(
                    *off,
                    format!("routes[{idx}].path_prefix"),
                    format!(
                        "same hosts, prefix and methods as route {:?}: one of them can never match",
                        &*a.name
                    ),
                );
            }
        }
    }
    let routes = compiled_routes.into_iter().map(|(r, _, _)| r).collect();
    (routes, route_names)
}
