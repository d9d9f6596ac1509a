//! The request's decisions, as one pipeline with no Pingora types: the gateway's proxy hooks and
//! `portcullis policy test` both call [`decide`], so the dry run cannot drift from what the
//! gateway does. The steps, in the order a request meets them, each in its own file:
//!
//! 1. [`screen`]: who the client is, header size, framing, host, target form, canonical path;
//! 2. [`screen::client_cert`]: the connection's client certificate against the live `[mtls]`;
//! 3. [`route`]: the gateway's own answers (health), the route, CORS preflight, methods,
//!    WebSocket rules, declared body size;
//! 4. [`limits`]: rate limits keyed by client or route;
//! 5. [`signed`]: a signed URL;
//! 6. [`authn`]: backoff, credentials, capabilities, rooms, then the limits keyed by subject;
//! 7. [`admin`]: admin paths;
//! 8. [`csrf`]: cross-site request checks;
//! 9. [`upstream`]: an external address whose circuit admits the request.
//!
//! What a step learns (the client, the host, the route, the identity) is written to [`Facts`],
//! which the caller keeps for logging and for the response whatever the outcome. What `decide`
//! does besides answering: it counts rate limits and authentication failures in the limiters and
//! backoff of [`Deps`] (that is the decision's state), and logs what only it sees: the shadow
//! rules it applies and a revoked token it refuses.

pub mod admin;
pub mod authn;
pub mod csrf;
pub mod limits;
pub mod request;
pub mod route;
pub mod screen;
pub mod signed;
pub mod upstream;

use std::net::IpAddr;

use crate::http::deny::Deny;
use crate::policy::model::Policy;

pub use request::{Admission, Deps, Facts, Forward, Now, RequestView};

/// Runs every step against `policy`, in order; the first refusal ends it.
pub async fn decide(
    policy: &Policy,
    req: &RequestView<'_>,
    deps: &Deps<'_>,
    facts: &mut Facts,
) -> Result<Admission, Deny> {
    let target = screen::screen(policy, req, facts)?;
    // The canonical target from here on: every later step judges the path that is forwarded.
    let uri = target.as_deref().unwrap_or(req.uri);
    let decided = decide_screened(policy, req, uri, deps, facts).await;
    facts.target = target;
    decided
}

/// The steps after screening, on the canonical target `uri`.
async fn decide_screened(
    policy: &Policy,
    req: &RequestView<'_>,
    uri: &http::Uri,
    deps: &Deps<'_>,
    facts: &mut Facts,
) -> Result<Admission, Deny> {
    screen::client_cert(policy, req, deps, facts)?;
    let path = uri.path();
    if route::is_health(req.method, path) {
        return Ok(Admission::Health);
    }
    let idx = route::route(policy, path, deps.now, facts)?;
    let route = &policy.routes[idx];
    if let Some(headers) = route::preflight(route, req)? {
        return Ok(Admission::Preflight(headers));
    }
    let to_rooms = route::admit(policy, route, req, facts)?;
    let client_key = facts
        .client_key
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    limits::check(policy, deps, idx, client_key, None, false).await?;
    let mut forward = Forward::default();
    if let Some(identity) = signed::verify(policy, route, req.method, uri, deps.now)? {
        facts.identity = Some(identity);
        forward.strip_query = true;
    }
    let authenticated = !route.public && facts.identity.is_none();
    if authenticated {
        let identity =
            authn::authenticate_client(policy, route, req, path, to_rooms, deps, facts).await?;
        let subject = identity.subject.clone();
        facts.identity = Some(identity);
        limits::check(policy, deps, idx, client_key, Some(&subject), true).await?;
    } else if to_rooms {
        // Authentication (which holds the room lock) did not run: a public route or a signed
        // URL reaches the room server only where a room is open.
        authn::room_gate(policy, path, facts.identity.as_deref(), deps.on_shadow)?;
    }
    admin::check(policy, path, facts)?;
    forward.issue_csrf = csrf::check(route, req, facts)?;
    forward.strip_token = route.query_token;
    forward.address = upstream::pick(policy, route, deps.resilience)?;
    Ok(Admission::Forward(forward))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::limits::{AuthBackoff, LimiterRegistry};
    use crate::upstreams::Resilience;

    const TOKEN: &str = "decide-test-worker-token-0123456789";

    fn policy() -> Policy {
        crate::compile::compile(
            &[crate::policy::SourceFile {
                path: "t.toml".into(),
                text: r#"
[auth]
default_provider = "static"

[auth.backoff]
max_failures = 2
lockout_seconds = 10

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "api"
path_prefix = "/v1/"
upstream = "worker"
"#
                .into(),
            }],
            crate::config::Mode::Development,
        )
        .unwrap()
    }

    fn auth(dir: &std::path::Path) -> crate::auth::AuthState {
        let auth = crate::auth::AuthState::new(dir.join("token"));
        let env = |k: &str| (k == "PORTCULLIS_WORKER_TOKEN").then(|| TOKEN.to_string());
        let t = crate::auth::WorkerToken::resolve(&env, dir.join("token")).unwrap();
        auth.worker.store(Some(Arc::new(t)));
        auth
    }

    /// Decides a GET of `/v1/models` with `token` from 198.51.100.1 at `clock`'s time.
    async fn get(
        policy: &Policy,
        state: &(
            crate::auth::AuthState,
            LimiterRegistry,
            AuthBackoff,
            Resilience,
        ),
        clock: &dyn Clock,
        token: &str,
    ) -> Result<Admission, Deny> {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, "localhost".parse().unwrap());
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let uri: http::Uri = "/v1/models".parse().unwrap();
        let view = RequestView {
            method: &http::Method::GET,
            uri: &uri,
            raw_target: b"/v1/models",
            version: http::Version::HTTP_11,
            headers: &headers,
            raw_content_length: false,
            upgrade: false,
            peer: Some("198.51.100.1".parse().unwrap()),
            tls: None,
        };
        let deps = Deps {
            now: Now::at(clock),
            auth: &state.0,
            limiters: &state.1,
            backoff: &state.2,
            resilience: &state.3,
            shared: None,
            on_shadow: &|| {},
        };
        decide(policy, &view, &deps, &mut Facts::default()).await
    }

    /// A lockout lasts its time on the injected clock, and no longer: no sleeping.
    #[tokio::test]
    async fn a_lockout_ends_when_its_time_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy();
        let clock = ManualClock::new(1_800_000_000);
        let state = (
            auth(dir.path()),
            LimiterRegistry::default(),
            AuthBackoff::new(100),
            Resilience::default(),
        );
        let wrong = "not-the-worker-token-at-all-00000000";
        assert!(matches!(
            get(&policy, &state, &clock, TOKEN).await,
            Ok(Admission::Forward(_))
        ));
        for _ in 0..2 {
            assert_eq!(
                get(&policy, &state, &clock, wrong).await.unwrap_err(),
                Deny::AuthInvalid
            );
        }
        let locked = get(&policy, &state, &clock, TOKEN).await.unwrap_err();
        assert_eq!(
            locked,
            Deny::AuthLockedOut {
                retry_after_secs: 10
            }
        );
        clock.advance(Duration::from_millis(9_500));
        let locked = get(&policy, &state, &clock, TOKEN).await.unwrap_err();
        assert_eq!(
            locked,
            Deny::AuthLockedOut {
                retry_after_secs: 1
            }
        );
        clock.advance(Duration::from_millis(501));
        assert!(matches!(
            get(&policy, &state, &clock, TOKEN).await,
            Ok(Admission::Forward(_))
        ));
    }
}
