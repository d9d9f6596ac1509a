//! `portcullis policy test --requests FILE`: evaluates a list of requests against a policy, in
//! order, and prints each decision with its reason — a check to run in CI before a policy
//! change ships. Each request goes through `decide`, the gateway's own pipeline; rate limits,
//! authentication failures and refused upstream connections count across the file's requests as
//! they would across a burst of real ones. What cannot be known offline is said: client
//! certificates are absent, JWKS are fetched live, and no upstream is contacted (a request says
//! whether its upstream refuses).

use std::net::IpAddr;
use std::sync::Arc;

use http::{header, HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;
use serde::Deserialize;

use crate::auth::{AuthState, Provider};
use crate::decide::upstream::{finish, retry};
use crate::decide::{decide, Admission, Deps, Facts, Now, RequestView};
use crate::http::deny::Deny;
use crate::limits::{AuthBackoff, LimiterRegistry};
use crate::policy::model::Policy;
use crate::upstreams::Resilience;

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
    /// What an external upstream does with the request if it is forwarded: `"answers"` (the
    /// default) or `"refuses"` (every address it is tried on refuses the connection). A refusal
    /// counts against the address's circuit as a live one does, so later requests of the file
    /// meet the circuit state the gateway would have.
    #[serde(default)]
    pub upstream: UpstreamOutcome,
    /// `"allow"`, `"deny"`, or a status code (`401`): a mismatch fails the run.
    pub expect: Option<toml::Value>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamOutcome {
    #[default]
    Answers,
    Refuses,
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
    fn matches(&self, expect: &toml::Value) -> Result<bool, RequestError> {
        match expect {
            toml::Value::String(s) if s == "allow" => Ok(matches!(self, Decision::Allow { .. })),
            toml::Value::String(s) if s == "deny" => Ok(matches!(self, Decision::Deny { .. })),
            toml::Value::Integer(n) => Ok(self.status() as i64 == *n),
            other => Err(RequestError::Expect(other.to_string())),
        }
    }
}

/// Why a request file could not be run: the file itself, or one request in it.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("no [[request]] entries")]
    Empty,
    #[error("{0}")]
    Runtime(std::io::Error),
    /// Request `index` (from 1) of the file.
    #[error("request {index}: {problem}")]
    Request { index: usize, problem: RequestError },
}

/// What is wrong with one request of a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("method {0:?} is not a method")]
    Method(String),
    #[error("path {path:?}: {problem}")]
    Path { path: String, problem: String },
    #[error("header name {0:?} is not valid")]
    HeaderName(String),
    #[error("header {0}: value is not valid")]
    HeaderValue(String),
    #[error("expect = {0}: use \"allow\", \"deny\" or a status code")]
    Expect(String),
}

/// The shared state a run keeps across its requests.
pub struct Evaluator<'p> {
    pub policy: &'p Policy,
    pub auth: AuthState,
    pub limiters: LimiterRegistry,
    /// Failed authentications count toward lockouts across the file's requests.
    pub backoff: AuthBackoff,
    /// Every circuit starts closed: no request of the file reaches an upstream.
    pub resilience: Resilience,
}

/// Clients whose authentication failures a run tracks.
const BACKOFF_ENTRIES: usize = 10_000;

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
            backoff: AuthBackoff::new(BACKOFF_ENTRIES),
            resilience: Resilience::default(),
        }
    }

    pub async fn evaluate(&self, t: &TestRequest, now: Now) -> Result<Decision, RequestError> {
        let policy = self.policy;
        let method = Method::from_bytes(t.method.as_bytes())
            .map_err(|_| RequestError::Method(t.method.clone()))?;
        let mut req =
            RequestHeader::build(method.clone(), t.path.as_bytes(), None).map_err(|e| {
                RequestError::Path {
                    path: t.path.clone(),
                    problem: e.to_string(),
                }
            })?;
        let host = t.host.clone().unwrap_or_else(|| "localhost".into());
        let _ = req.insert_header(header::HOST, host.as_str());
        for (k, v) in &t.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| RequestError::HeaderName(k.clone()))?;
            let value =
                HeaderValue::from_str(v).map_err(|_| RequestError::HeaderValue(k.clone()))?;
            let _ = req.append_header(name, value);
        }
        if t.websocket {
            let _ = req.insert_header(header::UPGRADE, "websocket");
            let _ = req.insert_header(header::CONNECTION, "upgrade");
        }
        let peer = t.client_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let shadow = || {};
        let deps = Deps {
            now,
            auth: &self.auth,
            limiters: &self.limiters,
            backoff: &self.backoff,
            resilience: &self.resilience,
            shared: None,
            on_shadow: &shadow,
        };
        let view = RequestView {
            method: &req.method,
            uri: &req.uri,
            raw_target: req.raw_path(),
            version: req.version,
            headers: &req.headers,
            raw_content_length: false,
            upgrade: t.websocket,
            peer: Some(peer),
            tls: None,
        };
        let mut facts = Facts::default();
        let route = match decide(policy, &view, &deps, &mut facts).await {
            Ok(Admission::Forward(f)) => {
                let route = &policy.routes[facts.route.expect("a forwarded request has a route")];
                if let Some(mut choice) = f.address {
                    let refuses = t.upstream == UpstreamOutcome::Refuses;
                    // As the gateway does: each refused address but the last is recorded as the
                    // request moves on, the last when it ends.
                    while refuses && !t.websocket && retry(policy, &mut choice, &self.resilience) {}
                    finish(policy, &choice, refuses, &self.resilience);
                    if refuses {
                        return Ok(deny(Deny::UpstreamUnavailable, Some(&route.name)));
                    }
                }
                route
            }
            Ok(Admission::Health) => {
                return Ok(Decision::Answered {
                    status: 200,
                    what: "health (gateway)",
                })
            }
            Ok(Admission::Preflight(_)) => {
                return Ok(Decision::Answered {
                    status: 204,
                    what: "CORS preflight",
                })
            }
            Err(d) => return Ok(deny(d, facts.route_name(policy))),
        };
        let identity = facts.identity;
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
) -> Result<(String, bool), DryRunError> {
    use std::fmt::Write;
    let file: RequestFile = toml::from_str(text).map_err(|e| DryRunError::Syntax {
        line: e
            .span()
            .map(|s| crate::config::line_of(text, s.start))
            .unwrap_or(1),
        message: e.message().to_string(),
    })?;
    if file.request.is_empty() {
        return Err(DryRunError::Empty);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DryRunError::Runtime)?;
    let eval = Evaluator::new(policy, token_file);
    let mut out = String::new();
    let mut ok = true;
    let (mut allowed, mut denied, mut mismatched) = (0, 0, 0);
    for (i, t) in file.request.iter().enumerate() {
        let decision = rt
            .block_on(eval.evaluate(t, Now::read()))
            .map_err(|problem| DryRunError::Request {
                index: i + 1,
                problem,
            })?;
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
                .map_err(|problem| DryRunError::Request {
                    index: i + 1,
                    problem,
                })?
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
