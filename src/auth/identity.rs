//! Who a request is: the providers, the verified `Identity` and its capabilities, and how a
//! token is found in a request (bearer header, query). No token content leaves this file except
//! inside a verified `Identity`.

use std::sync::Arc;

use crate::http::deny::Deny;

/// The built-in capability names; a policy may declare more.
pub const BUILTIN_CAPABILITIES: &[&str] = &[
    "policy.admin",
    "room.admin",
    "tick.admin",
    "archive.read",
    "archive.admin",
    "query.read",
    "query.admin",
    "topology.admin",
];

/// Longest token we will look at; anything longer is refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How a route authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// No check; subject `"1"`. Development only.
    None,
    /// Local development identity; subject `"1"`. Development only.
    Local,
    /// The deployment's worker token (constant-time comparison).
    Static,
    /// JWTs from the policy's issuers.
    Jwt,
    /// Room tokens signed by the policy's room keys; open rooms admit without one.
    Room,
    /// A signed URL (not configurable as a provider: routes opt in with `signed_urls`).
    SignedUrl,
    /// A client certificate verified against the policy's `[mtls]` CA bundle.
    Mtls,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Provider> {
        match s {
            "none" => Some(Provider::None),
            "local" => Some(Provider::Local),
            "static" => Some(Provider::Static),
            "jwt" | "supabase" => Some(Provider::Jwt),
            "room" => Some(Provider::Room),
            "mtls" => Some(Provider::Mtls),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::None => "none",
            Provider::Local => "local",
            Provider::Static => "static",
            Provider::Jwt => "jwt",
            Provider::Room => "room",
            Provider::SignedUrl => "signed_url",
            Provider::Mtls => "mtls",
        }
    }
    pub fn development_only(self) -> bool {
        matches!(self, Provider::None | Provider::Local)
    }
}

/// Whether a capability name may be used, in a policy or from a token: 1 to 64 characters from
/// `[a-z0-9._-]`. A token's name outside that set can match no policy capability, and is never
/// forwarded upstream, where it could read as another name (`Policy.Admin` to a case-blind
/// upstream) or as several (`,` and whitespace separate the joined names).
pub fn safe_capability_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// A verified identity. Built once per token (then cached), shared by reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: Arc<str>,
    pub provider: Provider,
    /// Holds every capability (development identities and the worker token).
    pub all_capabilities: bool,
    pub capabilities: Arc<[Box<str>]>,
    /// The room a room token is bound to.
    pub room: Option<Arc<str>>,
    /// Token expiry, seconds since the epoch.
    pub expires_at: Option<u64>,
    /// Issuer name (policy) or key id that verified it, for logs; never key material. `None`
    /// exactly when no credential was checked (development, signed URL, anonymous room peer).
    pub verified_by: Option<Arc<str>>,
    /// The token's `jti` and its header's `kid`, for the revocation list.
    pub token_id: Option<Arc<str>>,
    pub key_id: Option<Arc<str>>,
}

impl Identity {
    pub fn development() -> Identity {
        Identity {
            subject: Arc::from("1"),
            provider: Provider::Local,
            all_capabilities: true,
            capabilities: Arc::from(Vec::new()),
            room: None,
            expires_at: None,
            verified_by: None,
            token_id: None,
            key_id: None,
        }
    }

    pub fn worker() -> Identity {
        Identity {
            subject: Arc::from("worker"),
            provider: Provider::Static,
            all_capabilities: true,
            capabilities: Arc::from(Vec::new()),
            room: None,
            expires_at: None,
            verified_by: Some(Arc::from("worker-token")),
            token_id: None,
            key_id: None,
        }
    }

    /// A request admitted by a valid signed URL: no capabilities beyond the signed path.
    pub fn signed_url() -> Identity {
        Identity {
            subject: Arc::from("signed-url"),
            provider: Provider::SignedUrl,
            all_capabilities: false,
            capabilities: Arc::from(Vec::new()),
            room: None,
            expires_at: None,
            verified_by: None,
            token_id: None,
            key_id: None,
        }
    }

    /// An unauthenticated peer admitted to an open room.
    pub fn anonymous() -> Identity {
        Identity {
            subject: Arc::from("anonymous"),
            provider: Provider::Room,
            all_capabilities: false,
            capabilities: Arc::from(Vec::new()),
            room: None,
            expires_at: None,
            verified_by: None,
            token_id: None,
            key_id: None,
        }
    }

    /// Whether a credential (token, worker token, client certificate) was verified to make
    /// this identity: only such a success may clear a client's authentication-failure record.
    pub fn credentialed(&self) -> bool {
        self.verified_by.is_some()
    }

    pub fn has(&self, capability: &str) -> bool {
        self.all_capabilities || self.capabilities.iter().any(|c| &**c == capability)
    }

    /// The first of `required` this identity lacks.
    pub fn missing<'a>(&self, required: &'a [Box<str>]) -> Option<&'a str> {
        required.iter().find(|c| !self.has(c)).map(|c| &**c)
    }

    /// Capabilities as forwarded upstream (`*` for all).
    pub fn capability_header(&self) -> String {
        if self.all_capabilities {
            "*".to_string()
        } else {
            self.capabilities.join(",")
        }
    }
}

/// Why authentication failed. Each maps to one stable response (`crate::http::deny`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    Malformed,
    /// Wrong, expired, not yet valid, badly signed, unknown key, wrong issuer or audience.
    Invalid,
    /// Keys could not be had (JWKS unreachable, nothing cached within max-stale): 503.
    KeysUnavailable,
}

/// Extracts the bearer token from an `Authorization` value.
pub fn bearer(value: &[u8]) -> Result<&str, AuthFailure> {
    let s = std::str::from_utf8(value).map_err(|_| AuthFailure::Malformed)?;
    let (scheme, rest) = s.split_once(' ').ok_or(AuthFailure::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::Malformed);
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() || token.contains(' ') {
        return Err(AuthFailure::Malformed);
    }
    Ok(token)
}

/// The `access_token` query parameter, if present (first occurrence).
pub fn query_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("access_token="))
        .filter(|t| !t.is_empty())
}

/// `query` without any `access_token` parameter (so it is never forwarded or logged).
pub fn strip_query_token(query: &str) -> String {
    query
        .split('&')
        .filter(|kv| !kv.starts_with("access_token=") && *kv != "access_token")
        .collect::<Vec<_>>()
        .join("&")
}

impl Identity {
    /// Whether this identity may join `room` under its access rule (`locked`, needing
    /// `caps`).
    pub fn may_join(&self, room: &str, locked: bool, caps: &[Box<str>]) -> Result<(), Deny> {
        let identity = self;
        if locked && !identity.all_capabilities {
            match &identity.room {
                Some(r) if &**r == room => {}
                Some(_) => return Err(Deny::RoomDenied),
                None if identity.provider == Provider::Room => return Err(Deny::AuthMissing),
                None => return Err(Deny::RoomDenied),
            }
        } else if let Some(r) = &identity.room {
            // A room token is only good for its own room, open or locked.
            if &**r != room {
                return Err(Deny::RoomDenied);
            }
        }
        if locked {
            if let Some(missing) = identity.missing(caps) {
                return Err(Deny::CapabilityDenied(Arc::from(missing)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(b"Bearer abc.def.ghi"), Ok("abc.def.ghi"));
        assert_eq!(bearer(b"bearer abc"), Ok("abc"));
        assert_eq!(bearer(b"Basic abc"), Err(AuthFailure::Malformed));
        assert_eq!(bearer(b"Bearer"), Err(AuthFailure::Malformed));
        assert_eq!(bearer(b"Bearer "), Err(AuthFailure::Malformed));
        assert_eq!(bearer(b"Bearer a b"), Err(AuthFailure::Malformed));
        assert_eq!(bearer(b"abc"), Err(AuthFailure::Malformed));
    }

    #[test]
    fn query_tokens_are_found_and_stripped() {
        assert_eq!(query_token("a=1&access_token=xyz&b=2"), Some("xyz"));
        assert_eq!(query_token("a=1"), None);
        assert_eq!(strip_query_token("a=1&access_token=xyz&b=2"), "a=1&b=2");
        assert_eq!(strip_query_token("access_token=xyz"), "");
    }

    #[test]
    fn capabilities() {
        let mut id = Identity::anonymous();
        id.capabilities = Arc::from(vec!["query.read".into()]);
        assert!(id.has("query.read"));
        let req: Vec<Box<str>> = vec!["query.read".into(), "room.admin".into()];
        assert_eq!(id.missing(&req), Some("room.admin"));
        assert_eq!(Identity::worker().missing(&req), None);
    }
}
