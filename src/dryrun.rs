//! `portcullis policy test --requests FILE`: evaluates a list of requests against a policy, in
//! order, and prints each decision with its reason — a check to run in CI before a policy
//! change ships. The steps are the gateway's own, in the gateway's order, through the same
//! functions (path screening and routing, CORS, methods, limits, signed URLs, authentication,
//! admin paths, CSRF); rate limits count across the file's requests as they would across a
//! burst of real ones. What cannot be known offline is said: client certificates are absent and
//! JWKS are fetched live.

use std::net::IpAddr;
use std::sync::Arc;

use http::{header, HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;
use serde::Deserialize;

use crate::auth::{AuthState, Identity, Provider};
use crate::http::deny::Deny;
use crate::http::{cors, csrf, signed};
use crate::limits::{client_ip, LimiterRegistry};
use crate::policy::model::{Policy, UpstreamTarget};
use crate::policy::paths::{origin_form, PathVerdict};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFile {
    #[serde(default)]
    pub request: Vec<TestRequest>,
}

/// One request to evaluate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// A label printed with the decision.
    pub name: Option<String>,
    #[serde(default = "get")]
    pub method: String,
    /// The request target as sent (`/v1/items?x=1`).
    pub path: String,
    /// The `Host` header (default `localhost`).
    pub host: Option<String>,
    /// The TCP peer (default 127.0.0.1); `X-Forwarded-For` in `headers` counts only when the
    /// peer is a trusted proxy.
    pub client_ip: Option<IpAddr>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// A WebSocket upgrade request.
    #[serde(default)]
    pub websocket: bool,
    /// `"allow"`, `"deny"`, or a status code (`401`): a mismatch fails the run.
    pub expect: Option<toml::Value>,
}

fn get() -> String {
    "GET".into()
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forwarded upstream.
    Allow {
        route: String,
        upstream: String,
        subject: Option<String>,
    },
    /// Answered by the gateway itself (health, CORS preflight).
    Answered { status: u16, what: &'static str },
    Deny {
        status: u16,
        code: &'static str,
        route: Option<String>,
    },
}

impl Decision {
    pub fn status(&self) -> u16 {
        match self {
            Decision::Allow { .. } => 200,
            Decision::Answered { status, .. } | Decision::Deny { status, .. } => *status,
        }
    }
    fn render(&self) -> String {
        match self {
            Decision::Allow {
                route,
                upstream,
                subject,
            } => format!(
                "ALLOW → route {route}, upstream {upstream}{}",
                subject
                    .as_ref()
                    .map(|s| format!(", as {s}"))
                    .unwrap_or_default()
            ),
            Decision::Answered { status, what } => format!("ANSWER {status} {what}"),
            Decision::Deny {
                status,
                code,
                route,
            } => format!(
                "DENY {status} {code}{}",
                route
                    .as_ref()
                    .map(|r| format!(" (route {r})"))
                    .unwrap_or_default()
            ),
        }
    }
    fn matches(&self, expect: &toml::Value) -> Result<bool, String> {
        match expect {
            toml::Value::String(s) if s == "allow" => Ok(matches!(self, Decision::Allow { .. })),
            toml::Value::String(s) if s == "deny" => Ok(matches!(self, Decision::Deny { .. })),
            toml::Value::Integer(n) => Ok(self.status() as i64 == *n),
            other => Err(format!(
                "expect = {other}: use \"allow\", \"deny\" or a status code"
            )),
        }
    }
}

/// The shared state a run keeps across its requests.
pub struct Evaluator<'p> {
    pub policy: &'p Policy,
    pub auth: AuthState,
    pub limiters: LimiterRegistry,
}

fn deny(d: Deny, route: Option<&str>) -> Decision {
    Decision::Deny {
        status: d.status(),
        code: d.code(),
        route: route.map(str::to_string),
    }
}

impl<'p> Evaluator<'p> {
    /// `worker_token` is resolved from the environment or token file when present; it is never
    /// generated here.
    pub fn new(policy: &'p Policy, token_file: std::path::PathBuf) -> Evaluator<'p> {
        let auth = AuthState::new(token_file.clone());
        let env = |k: &str| crate::config::env_var(k);
        let has_source = ["PORTCULLIS_WORKER_TOKEN", "WORKER_AUTH_TOKEN"]
            .iter()
            .any(|k| env(k).is_some())
            || token_file.exists();
        if has_source {
            if let Ok(t) = crate::auth::WorkerToken::resolve(&env, token_file) {
                auth.worker.store(Some(Arc::new(t)));
            }
        }
        Evaluator {
            policy,
            auth,
            limiters: LimiterRegistry::default(),
        }
    }

    pub async fn evaluate(&self, t: &TestRequest, now: u64) -> Result<Decision, String> {
        let policy = self.policy;
        let method = Method::from_bytes(t.method.as_bytes())
            .map_err(|_| format!("method {:?} is not a method", t.method))?;
        let mut req = RequestHeader::build(method.clone(), t.path.as_bytes(), None)
            .map_err(|e| format!("path {:?}: {e}", t.path))?;
        let host = t.host.clone().unwrap_or_else(|| "localhost".into());
        let _ = req.insert_header(header::HOST, host.as_str());
        for (k, v) in &t.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header name {k:?} is not valid"))?;
            let value =
                HeaderValue::from_str(v).map_err(|_| format!("header {k}: value is not valid"))?;
            let _ = req.append_header(name, value);
        }
        if t.websocket {
            let _ = req.insert_header(header::UPGRADE, "websocket");
            let _ = req.insert_header(header::CONNECTION, "upgrade");
        }
        let net = &policy.network;
        let peer = t.client_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let Ok(client) = client_ip::resolve(peer, &req.headers, &net.trusted_proxies) else {
            return Ok(deny(Deny::BadForwardedFor, None));
        };
        let client_key = client_ip::bucket(client, net.ipv6_prefix);
        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > net.max_header_bytes {
            return Ok(deny(Deny::HeadersTooLarge, None));
        }
        if let Err(d) = origin_form(t.path.as_bytes(), Some(host.as_bytes())) {
            return Ok(deny(d, None));
        }
        let path = match policy.screen_path(req.uri.path()) {
            Err(d) => return Ok(deny(d, None)),
            Ok(p) => p.into_owned(),
        };
        if (path == "/health" || path == "/ping") && matches!(method, Method::GET | Method::HEAD) {
            return Ok(Decision::Answered {
                status: 200,
                what: "health (gateway)",
            });
        }
        let Some(host_only) = crate::http::host::normalize(&host) else {
            return Ok(deny(Deny::BadHost, None));
        };
        let idx = match policy.decide_path(host_only, &path, now) {
            PathVerdict::Refused(d) => return Ok(deny(d, None)),
            PathVerdict::Routed(idx, _) => idx,
        };
        let route = &policy.routes[idx];
        let rname = Some(&*route.name);
        if let Some(rule) = &route.cors {
            if cors::is_preflight(&method, &req.headers) {
                return Ok(match rule.preflight(&req.headers) {
                    Ok(_) => Decision::Answered {
                        status: 204,
                        what: "CORS preflight",
                    },
                    Err(d) => deny(Deny::CorsDenied(d), rname),
                });
            }
        }
        if !route.methods.allows(&method) {
            return Ok(deny(Deny::MethodNotAllowed, rname));
        }
        if t.websocket && !route.websocket {
            return Ok(deny(Deny::WebSocketNotAllowed, rname));
        }
        let to_rooms = policy.upstreams[route.upstream].target == UpstreamTarget::Rooms;
        if !t.websocket && to_rooms {
            return Ok(deny(Deny::WebSocketRequired, rname));
        }
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if !t.websocket && declared.is_some_and(|n| n > route.max_body_bytes) {
            return Ok(deny(Deny::BodyTooLarge, rname));
        }
        let shadow = || {};
        if let Some(d) = crate::proxy::check_limits(
            policy,
            &self.limiters,
            None,
            idx,
            client_key,
            None,
            false,
            &shadow,
        )
        .await
        {
            return Ok(deny(d, rname));
        }
        let mut identity: Option<Arc<Identity>> = None;
        if route.signed_urls && signed::has_signature(req.uri.query()) {
            let Some(keys) = &policy.signed_urls else {
                return Ok(deny(Deny::Internal, rname));
            };
            match keys.verify(method.as_str(), &path, req.uri.query().unwrap_or(""), now) {
                Ok(()) => identity = Some(Arc::new(Identity::signed_url())),
                Err(f) => return Ok(deny(Deny::Signature(f), rname)),
            }
        }
        let authenticated = !route.public && identity.is_none();
        if authenticated {
            let request = crate::proxy::authn::AuthRequest {
                auth: &self.auth,
                req: &req,
                client_cert: None,
                on_shadow: &shadow,
            };
            match crate::proxy::authn::authenticate(&request, policy, route, to_rooms).await {
                Ok(id) => identity = Some(id),
                Err(d) => return Ok(deny(d, rname)),
            }
            let subject = identity.as_ref().map(|i| i.subject.clone());
            if let Some(d) = crate::proxy::check_limits(
                policy,
                &self.limiters,
                None,
                idx,
                client_key,
                subject.as_deref(),
                true,
                &shadow,
            )
            .await
            {
                return Ok(deny(d, rname));
            }
        }
        if to_rooms && !authenticated {
            if let Err(d) =
                crate::proxy::authn::room_gate(policy, &path, identity.as_deref(), &shadow)
            {
                return Ok(deny(d, rname));
            }
        }
        if policy.admin.covers(&path) {
            let admitted = identity.as_ref().is_some_and(|i| {
                i.has(&policy.admin.capability) || i.provider == Provider::SignedUrl
            }) || policy.admin.network_allows(client);
            if !admitted {
                return Ok(deny(Deny::AdminRequired, rname));
            }
        }
        if let Some(rule) = &route.csrf {
            let signed = identity
                .as_ref()
                .is_some_and(|i| i.provider == Provider::SignedUrl);
            let required = csrf::required(
                &method,
                &req.headers,
                t.websocket,
                route.ambient_credentials(),
                signed,
            );
            if let Err(f) = rule.check_required(required, &req.headers, &host) {
                return Ok(deny(Deny::Csrf(f), rname));
            }
        }
        Ok(Decision::Allow {
            route: route.name.to_string(),
            upstream: policy.upstreams[route.upstream].name.to_string(),
            subject: identity
                .filter(|i| !route.public || i.provider == Provider::SignedUrl)
                .map(|i| i.subject.to_string()),
        })
    }
}

/// Runs every request of `text` (a TOML `[[request]]` list) against `policy`; returns the
/// report and whether every expectation held.
pub fn run(
    policy: &Policy,
    token_file: std::path::PathBuf,
    text: &str,
) -> Result<(String, bool), String> {
    use std::fmt::Write;
    let file: RequestFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| crate::config::line_of(text, s.start))
            .unwrap_or(1);
        format!("line {line}: {}", e.message())
    })?;
    if file.request.is_empty() {
        return Err("no [[request]] entries".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let eval = Evaluator::new(policy, token_file);
    let now = crate::auth::now_unix();
    let mut out = String::new();
    let mut ok = true;
    let (mut allowed, mut denied, mut mismatched) = (0, 0, 0);
    for (i, t) in file.request.iter().enumerate() {
        let decision = rt
            .block_on(eval.evaluate(t, now))
            .map_err(|e| format!("request {}: {e}", i + 1))?;
        let label = t
            .name
            .as_ref()
            .map(|n| format!(" [{n}]"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:>3}. {} {}{}{}{label}: {}",
            i + 1,
            t.method,
            t.host.as_deref().unwrap_or("localhost"),
            t.path,
            t.client_ip
                .map(|c| format!(" from {c}"))
                .unwrap_or_default(),
            decision.render()
        );
        match decision {
            Decision::Deny { .. } => denied += 1,
            _ => allowed += 1,
        }
        if let Some(e) = &t.expect {
            if !decision
                .matches(e)
                .map_err(|m| format!("request {}: {m}", i + 1))?
            {
                ok = false;
                mismatched += 1;
                let _ = writeln!(out, "     EXPECTED {e}");
            }
        }
    }
    let _ = writeln!(
        out,
        "{} request(s): {allowed} allowed or answered, {denied} denied, {mismatched} unexpected",
        file.request.len()
    );
    Ok((out, ok))
}
