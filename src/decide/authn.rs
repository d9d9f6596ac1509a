//! Authentication: a client locked out by repeated failures is refused first; then the
//! credentials are found, the route's providers tried in order (through the verified-token
//! cache), capabilities and room access checked. Returns a verified identity or the one `Deny`
//! that explains the refusal, and counts failures toward the client's lockout.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap};

use crate::auth::cache::token_hash;
use crate::auth::{self, jwt, AuthFailure, AuthState, Identity, Provider};
use crate::backends::rooms::room_of;
use crate::http::deny::Deny;
use crate::policy::model::{Policy, Route};

fn failure(f: AuthFailure) -> Deny {
    match f {
        AuthFailure::Missing => Deny::AuthMissing,
        AuthFailure::Malformed => Deny::AuthMalformed,
        AuthFailure::Invalid => Deny::AuthInvalid,
        AuthFailure::KeysUnavailable => Deny::AuthKeysUnavailable,
    }
}

/// The presented token: `Authorization: Bearer`, else `?access_token=` or the session cookie
/// where the route allows.
fn credentials<'s>(
    headers: &'s HeaderMap,
    query: Option<&'s str>,
    route: &Route,
) -> Result<Option<&'s str>, AuthFailure> {
    if let Some(h) = headers.get(header::AUTHORIZATION) {
        return auth::bearer(h.as_bytes()).map(Some);
    }
    if route.query_token {
        if let Some(t) = query.and_then(auth::query_token) {
            return Ok(Some(t));
        }
    }
    if let Some(name) = &route.session_cookie {
        if let Some(t) = crate::http::csrf::cookie(headers, name).filter(|t| !t.is_empty()) {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// What authentication looks at besides the policy: the shared auth state, the request's
/// headers, query and canonical path, and the verified client certificate.
pub struct AuthRequest<'a> {
    pub auth: &'a AuthState,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub path: &'a str,
    pub client_cert: Option<&'a crate::tls::client_auth::ClientCert>,
    /// Called when a shadow rule would have refused.
    pub on_shadow: &'a (dyn Fn() + Sync),
    /// Seconds since the epoch, for revocations.
    pub now_unix: u64,
}

/// Authentication with the client's failure count: a locked-out client is refused before its
/// credentials are read; a verified credential clears its failures, an invalid or malformed one
/// counts toward a lockout (`facts.lockout` says when one starts).
pub async fn authenticate_client(
    policy: &Policy,
    route: &Route,
    req: &super::request::RequestView<'_>,
    path: &str,
    to_rooms: bool,
    deps: &super::request::Deps<'_>,
    facts: &mut super::request::Facts,
) -> Result<Arc<Identity>, Deny> {
    let client_key = facts
        .client_key
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let backoff = policy.auth.backoff.as_ref();
    if backoff.is_some() {
        if let Some(left) = deps.backoff.locked(client_key, deps.now.mono) {
            let retry_after_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            return Err(Deny::AuthLockedOut { retry_after_secs });
        }
    }
    let request = AuthRequest {
        auth: deps.auth,
        headers: req.headers,
        query: req.uri.query(),
        path,
        // Checked against the live `[mtls]` when screening.
        client_cert: req.tls.and_then(|h| h.client.as_deref()),
        on_shadow: deps.on_shadow,
        now_unix: deps.now.unix,
    };
    match authenticate(&request, policy, route, to_rooms).await {
        Ok(identity) => {
            // An anonymous join to an open room proves nothing about the client: only a
            // verified credential clears its failures and lockout.
            if backoff.is_some() && identity.credentialed() {
                deps.backoff.success(client_key);
            }
            Ok(identity)
        }
        Err(d) => {
            if let (Some(spec), Deny::AuthInvalid | Deny::AuthMalformed) = (backoff, &d) {
                facts.lockout = failed(deps, client_key, spec).await;
            }
            Err(d)
        }
    }
}

/// Counts a failed authentication, across replicas when the shared store answers, else here;
/// returns the lockout it started, if any.
async fn failed(
    deps: &super::request::Deps<'_>,
    client: IpAddr,
    spec: &crate::limits::BackoffSpec,
) -> Option<Duration> {
    use crate::shared::SharedFailure;
    use std::sync::atomic::Ordering;
    let now = deps.now.mono;
    let outcome = match deps.shared {
        // Boxed, as a Redis round trip is: it would otherwise enlarge every request's future.
        Some(shared) => Box::pin(shared.auth_failure(client, spec)).await,
        None => SharedFailure::Unavailable,
    };
    match outcome {
        SharedFailure::Started(d) => {
            deps.backoff.lock_for(client, d, now);
            deps.backoff.lockouts.fetch_add(1, Ordering::Relaxed);
            Some(d)
        }
        SharedFailure::AlreadyLocked(d) => {
            deps.backoff.lock_for(client, d, now);
            None
        }
        SharedFailure::Counted => None,
        SharedFailure::Unavailable => deps.backoff.failure(client, spec, now),
    }
}

pub async fn authenticate(
    gw: &AuthRequest<'_>,
    policy: &Policy,
    route: &Route,
    to_rooms: bool,
) -> Result<Arc<Identity>, Deny> {
    // An open room admits a peer without credentials on a route of the room provider. (The
    // lock itself is `room_gate`'s, whatever the route.)
    let open_room = to_rooms && route.auth.contains(&Provider::Room) && {
        let room = room_of(gw.path).unwrap_or("");
        !policy.rooms.access_for(room).0 || policy.rooms.shadow_for(room)
    };
    let identity = verify(gw, policy, route, open_room).await?;
    if let Some(kind) = gw.auth.revocations.check(&identity, gw.now_unix) {
        tracing::info!(
            target: "portcullis::security",
            subject = &*identity.subject,
            revoked_by = kind.as_str(),
            "revoked token refused"
        );
        return Err(Deny::AuthInvalid);
    }
    if let Some(missing) = identity.missing(&route.capabilities) {
        return Err(Deny::CapabilityDenied(Arc::from(missing)));
    }
    if to_rooms {
        room_gate(policy, gw.path, Some(&identity), gw.on_shadow)?;
    }
    Ok(identity)
}

/// The room lock, for every request that reaches the room server whatever its route: `public`,
/// `jwt`, a signed URL or the room provider. `identity` is `None` on a public route. A shadow
/// rule is enforced as open; what it would refuse is logged and counted.
pub fn room_gate(
    policy: &Policy,
    path: &str,
    identity: Option<&Identity>,
    on_shadow: &(dyn Fn() + Sync),
) -> Result<(), Deny> {
    let room = room_of(path).unwrap_or("");
    let (locked, caps) = policy.rooms.access_for(room);
    let check = |locked: bool, caps: &[Box<str>]| match identity {
        Some(i) => i.may_join(room, locked, caps),
        // No credentials were read on this route: only an open room lets it in.
        None if locked => Err(Deny::RoomDenied),
        None => Ok(()),
    };
    match check(locked, caps) {
        Err(d) if locked && policy.rooms.shadow_for(room) => {
            on_shadow();
            tracing::info!(
                target: "portcullis::security",
                room,
                subject = identity.map_or("anonymous", |i| &*i.subject),
                would_deny = d.code(),
                "shadow rule: room access would refuse this session"
            );
            check(false, &[])
        }
        r => r,
    }
}

/// Verifies the presented credentials; `open_room` admits a request without any as anonymous.
async fn verify(
    gw: &AuthRequest<'_>,
    policy: &Policy,
    route: &Route,
    open_room: bool,
) -> Result<Arc<Identity>, Deny> {
    if route.auth.iter().any(|p| p.development_only()) {
        return Ok(Arc::new(Identity::development()));
    }
    if route.auth.contains(&Provider::Mtls) {
        let cert = gw.client_cert;
        match cert {
            Some(c) => {
                if route.client_cert_allow.is_empty()
                    || route.client_cert_allow.iter().any(|a| c.matches(a))
                {
                    return Ok(c.identity.clone());
                }
                return Err(Deny::ClientCertDenied);
            }
            // Other providers on the route may still take a token.
            None if route.auth.len() == 1 => return Err(Deny::ClientCertRequired),
            None => {}
        }
    }
    let token = credentials(gw.headers, gw.query, route).map_err(failure)?;
    let Some(token) = token else {
        if open_room {
            return Ok(Arc::new(Identity::anonymous()));
        }
        return Err(Deny::AuthMissing);
    };
    if token.len() > auth::MAX_TOKEN_BYTES {
        return Err(Deny::AuthInvalid);
    }
    let settings = &policy.auth;
    let key = token_hash(token);
    if let Some(hit) = gw
        .auth
        .cache
        .get(&key, settings.cache_ttl, policy.generation)
    {
        if route.auth.contains(&hit.provider) {
            return Ok(hit);
        }
    }
    let mut unavailable = false;
    for provider in &route.auth {
        let result = match provider {
            Provider::Static => match gw.auth.worker.load().as_ref() {
                Some(_) if gw.auth.worker_matches(token, gw.now_unix) => {
                    return Ok(Arc::new(Identity::worker()))
                }
                Some(_) => Err(AuthFailure::Invalid),
                None => {
                    tracing::error!("static provider without a worker token; refusing");
                    Err(AuthFailure::Invalid)
                }
            },
            Provider::Jwt => {
                // Boxed: a signature check runs once per token (then the cache answers), and
                // its future (key lookup, JWKS fetch) would otherwise sit inside every
                // request's future, copied on every request.
                Box::pin(jwt::verify_jwt(
                    token,
                    &settings.issuers,
                    &gw.auth.jwks,
                    &gw.auth.stats,
                ))
                .await
            }
            Provider::Room => jwt::verify_room_token(
                token,
                &settings.room_keys,
                settings.room_leeway,
                &gw.auth.stats,
            ),
            Provider::None | Provider::Local => unreachable!("handled above"),
            Provider::SignedUrl | Provider::Mtls => Err(AuthFailure::Invalid),
        };
        match result {
            Ok(identity) => {
                let identity = Arc::new(identity);
                gw.auth.cache.insert(
                    key,
                    identity.clone(),
                    policy.generation,
                    settings.cache_max_entries,
                );
                return Ok(identity);
            }
            Err(AuthFailure::KeysUnavailable) => unavailable = true,
            Err(_) => {}
        }
    }
    Err(if unavailable {
        Deny::AuthKeysUnavailable
    } else {
        Deny::AuthInvalid
    })
}
