//! Denials as data: each variant knows its status and its stable JSON body. Bodies are static
//! byte strings, so answering a refusal allocates nothing and can never echo request content.

use std::borrow::Cow;
use std::sync::Arc;

use crate::http::cors::PreflightDenied;
use crate::http::csrf::CsrfFailure;
use crate::http::path::PathError;
use crate::http::signed::SignatureFailure;

/// The exact 401 bodies. Clients match on these texts; do not change them.
pub const AUTH_MISSING_BODY: &[u8] =
    br#"{"detail": "Authorization header required. Use 'Authorization: Bearer YOUR_TOKEN'"}"#;
pub const AUTH_MALFORMED_BODY: &[u8] =
    br#"{"detail": "Invalid authorization header format. Use 'Authorization: Bearer YOUR_TOKEN'"}"#;
pub const AUTH_INVALID_BODY: &[u8] = br#"{"detail": "Invalid authentication token"}"#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deny {
    AuthMissing,
    AuthMalformed,
    AuthInvalid,
    AuthKeysUnavailable,
    /// The capability the caller lacks (a policy-validated name).
    CapabilityDenied(Arc<str>),
    /// A room token for another room, or none for a locked room's member-only operation.
    RoomDenied,
    /// Over a rate limit: which one, when to retry, and its burst size.
    RateLimited {
        limit: Arc<str>,
        retry_after_secs: u64,
        burst: u32,
    },
    /// A global limit whose shared store is unreachable, with `failure_mode = "fail_closed"`.
    LimitUnavailable(Arc<str>),
    /// Locked out after repeated authentication failures.
    AuthLockedOut {
        retry_after_secs: u64,
    },
    HeadersTooLarge,
    BodyTooLarge,
    BadPath(PathError),
    AmbiguousLength,
    /// No `Host` on HTTP/1.1, or more than one.
    BadHost,
    /// A trusted proxy's `X-Forwarded-For` or `X-Real-IP` that does not say who the client is.
    BadForwardedFor,
    ForeignAbsoluteTarget,
    BlockedPath,
    /// A `;` path parameter whose removal (as some backends do) yields a blocked path.
    PathParameterOnBlocked,
    /// A spelling a lenient backend may take for a blocked path (fullwidth letters, a trailing
    /// space, `~` or `.extension`).
    LookalikeOfBlocked,
    /// A `;` path parameter (or `%3B`, or `..;`) whose removal yields an admin path.
    PathParameterOnAdmin,
    /// A spelling a lenient backend may take for an admin path.
    LookalikeOfAdmin,
    /// An admin path without the admin capability or an admin network.
    AdminRequired,
    CorsDenied(PreflightDenied),
    Csrf(CsrfFailure),
    Signature(SignatureFailure),
    /// An mTLS route reached without a client certificate.
    ClientCertRequired,
    /// A verified client certificate not on the route's allow-list.
    ClientCertDenied,
    NoRoute,
    MethodNotAllowed,
    WebSocketNotAllowed,
    WebSocketRequired,
    UpstreamUnavailable,
    UpstreamTimeout,
    /// Every address of the upstream has an open circuit or failed its health check.
    CircuitOpen,
    Internal,
}

impl Deny {
    pub fn status(&self) -> u16 {
        match self {
            Deny::AuthMissing | Deny::AuthMalformed | Deny::AuthInvalid => 401,
            Deny::AuthKeysUnavailable | Deny::LimitUnavailable(_) => 503,
            Deny::CapabilityDenied(_) | Deny::RoomDenied => 403,
            Deny::RateLimited { .. } | Deny::AuthLockedOut { .. } => 429,
            Deny::HeadersTooLarge => 431,
            Deny::BodyTooLarge => 413,
            Deny::BadPath(_)
            | Deny::AmbiguousLength
            | Deny::ForeignAbsoluteTarget
            | Deny::BadHost
            | Deny::BadForwardedFor => 400,
            Deny::WebSocketNotAllowed => 400,
            Deny::WebSocketRequired => 426,
            Deny::BlockedPath
            | Deny::AdminRequired
            | Deny::CorsDenied(_)
            | Deny::Csrf(_)
            | Deny::Signature(_)
            | Deny::ClientCertRequired
            | Deny::ClientCertDenied => 403,
            Deny::PathParameterOnBlocked
            | Deny::LookalikeOfBlocked
            | Deny::PathParameterOnAdmin
            | Deny::LookalikeOfAdmin => 400,
            Deny::NoRoute => 404,
            Deny::MethodNotAllowed => 405,
            Deny::UpstreamUnavailable => 502,
            Deny::UpstreamTimeout => 504,
            Deny::CircuitOpen => 503,
            Deny::Internal => 500,
        }
    }

    /// The stable machine-readable code, also used as the log reason.
    /// A refusal for missing or insufficient credentials: counted by reason in
    /// `portcullis_auth_failures_total` and raised as an `auth_failure` security event.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            Deny::AuthMissing
                | Deny::AuthMalformed
                | Deny::AuthInvalid
                | Deny::CapabilityDenied(_)
                | Deny::RoomDenied
                | Deny::ClientCertRequired
                | Deny::ClientCertDenied
                | Deny::Signature(_)
                | Deny::AdminRequired
        )
    }

    pub fn code(&self) -> &'static str {
        match self {
            Deny::AuthMissing => "auth_missing",
            Deny::AuthMalformed => "auth_malformed",
            Deny::AuthInvalid => "auth_invalid",
            Deny::AuthKeysUnavailable => "auth_keys_unavailable",
            Deny::CapabilityDenied(_) => "capability_denied",
            Deny::RoomDenied => "room_denied",
            Deny::RateLimited { .. } => "rate_limited",
            Deny::LimitUnavailable(_) => "rate_limit_unavailable",
            Deny::AuthLockedOut { .. } => "too_many_auth_failures",
            Deny::HeadersTooLarge => "headers_too_large",
            Deny::BodyTooLarge => "body_too_large",
            Deny::BadPath(e) => (*e).code(),
            Deny::AmbiguousLength => "ambiguous_length",
            Deny::BadHost => "bad_host",
            Deny::BadForwardedFor => "bad_forwarded_for",
            Deny::ForeignAbsoluteTarget => "foreign_absolute_target",
            Deny::BlockedPath => "path_blocked",
            Deny::PathParameterOnBlocked => "path_parameter_on_blocked",
            Deny::LookalikeOfBlocked => "path_lookalike_of_blocked",
            Deny::PathParameterOnAdmin => "path_parameter_on_admin",
            Deny::LookalikeOfAdmin => "path_lookalike_of_admin",
            Deny::AdminRequired => "admin_required",
            Deny::CorsDenied(_) => "cors_denied",
            Deny::Csrf(_) => "csrf_failed",
            Deny::Signature(f) => f.code(),
            Deny::ClientCertRequired => "client_certificate_required",
            Deny::ClientCertDenied => "client_certificate_denied",
            Deny::NoRoute => "no_route",
            Deny::MethodNotAllowed => "method_not_allowed",
            Deny::WebSocketNotAllowed => "websocket_not_allowed",
            Deny::WebSocketRequired => "websocket_required",
            Deny::UpstreamUnavailable => "upstream_unavailable",
            Deny::UpstreamTimeout => "upstream_timeout",
            Deny::CircuitOpen => "upstream_circuit_open",
            Deny::Internal => "internal_error",
        }
    }

    /// Further headers: `Retry-After` and the `RateLimit-*` set on 429s.
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Deny::RateLimited {
                retry_after_secs,
                burst,
                ..
            } => vec![
                ("retry-after", retry_after_secs.to_string()),
                ("ratelimit-limit", burst.to_string()),
                ("ratelimit-remaining", "0".to_string()),
                ("ratelimit-reset", retry_after_secs.to_string()),
            ],
            Deny::AuthLockedOut { retry_after_secs } => {
                vec![("retry-after", retry_after_secs.to_string())]
            }
            Deny::LimitUnavailable(_) => vec![("retry-after", "1".to_string())],
            _ => Vec::new(),
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750) for authentication denials.
    pub fn www_authenticate(&self) -> Option<Cow<'static, str>> {
        Some(match self {
            Deny::AuthMissing => Cow::Borrowed("Bearer realm=\"portcullis\""),
            Deny::AuthMalformed => {
                Cow::Borrowed("Bearer realm=\"portcullis\", error=\"invalid_request\"")
            }
            Deny::AuthInvalid => {
                Cow::Borrowed("Bearer realm=\"portcullis\", error=\"invalid_token\"")
            }
            Deny::CapabilityDenied(c) => Cow::Owned(format!(
                "Bearer error=\"insufficient_scope\", scope=\"{c}\""
            )),
            _ => return None,
        })
    }

    /// The JSON body: `{"error":"<code>"}`, or the fixed `detail` texts for 401s.
    pub fn body(&self) -> Cow<'static, [u8]> {
        Cow::Borrowed(match self {
            Deny::AuthMissing => AUTH_MISSING_BODY,
            Deny::AuthMalformed => AUTH_MALFORMED_BODY,
            Deny::AuthInvalid => AUTH_INVALID_BODY,
            Deny::AuthKeysUnavailable => br#"{"error": "auth_keys_unavailable", "detail": "Authentication keys are temporarily unavailable"}"#,
            Deny::CapabilityDenied(c) => {
                return Cow::Owned(format!(r#"{{"error": "capability_denied", "required": "{c}"}}"#).into_bytes())
            }
            Deny::RoomDenied => br#"{"error": "room_denied"}"#,
            Deny::RateLimited { limit, retry_after_secs, .. } => {
                return Cow::Owned(
                    format!(r#"{{"error": "rate_limited", "limit": "{limit}", "retry_after": {retry_after_secs}}}"#).into_bytes(),
                )
            }
            Deny::LimitUnavailable(limit) => {
                return Cow::Owned(
                    format!(r#"{{"error": "rate_limit_unavailable", "limit": "{limit}"}}"#).into_bytes(),
                )
            }
            Deny::AuthLockedOut { retry_after_secs } => {
                return Cow::Owned(
                    format!(r#"{{"error": "too_many_auth_failures", "retry_after": {retry_after_secs}}}"#).into_bytes(),
                )
            }
            Deny::HeadersTooLarge => br#"{"error":"headers_too_large"}"#,
            Deny::BodyTooLarge => br#"{"error":"body_too_large"}"#,
            Deny::BadPath(PathError::NotAbsolute) => br#"{"error":"path_not_absolute"}"#,
            Deny::BadPath(PathError::EncodedSeparator) => br#"{"error":"path_encoded_separator"}"#,
            Deny::BadPath(PathError::EncodedDot) => br#"{"error":"path_encoded_dot"}"#,
            Deny::BadPath(PathError::DoubleEncoding) => br#"{"error":"path_double_encoding"}"#,
            Deny::BadPath(PathError::BadPercent) => br#"{"error":"path_bad_percent_encoding"}"#,
            Deny::BadPath(PathError::ControlByte) => br#"{"error":"path_control_byte"}"#,
            Deny::BadPath(PathError::Backslash) => br#"{"error":"path_backslash"}"#,
            Deny::BadPath(PathError::InvalidUtf8) => br#"{"error":"path_invalid_utf8"}"#,
            Deny::AmbiguousLength => br#"{"error":"ambiguous_length"}"#,
            Deny::BadHost => br#"{"error":"bad_host"}"#,
            Deny::BadForwardedFor => br#"{"error":"bad_forwarded_for"}"#,
            Deny::ForeignAbsoluteTarget => br#"{"error":"foreign_absolute_target"}"#,
            Deny::BlockedPath => br#"{"error":"path_blocked"}"#,
            Deny::PathParameterOnBlocked => br#"{"error":"path_parameter_on_blocked"}"#,
            Deny::LookalikeOfBlocked => br#"{"error":"path_lookalike_of_blocked"}"#,
            Deny::PathParameterOnAdmin => br#"{"error":"path_parameter_on_admin"}"#,
            Deny::LookalikeOfAdmin => br#"{"error":"path_lookalike_of_admin"}"#,
            Deny::AdminRequired => br#"{"error":"admin_required"}"#,
            Deny::CorsDenied(d) => d.body(),
            Deny::Csrf(f) => f.body(),
            Deny::Signature(f) => f.body(),
            Deny::ClientCertRequired => br#"{"error":"client_certificate_required"}"#,
            Deny::ClientCertDenied => br#"{"error":"client_certificate_denied"}"#,
            Deny::NoRoute => br#"{"error":"no_route"}"#,
            Deny::MethodNotAllowed => br#"{"error":"method_not_allowed"}"#,
            Deny::WebSocketNotAllowed => br#"{"error":"websocket_not_allowed"}"#,
            Deny::WebSocketRequired => br#"{"error":"websocket_required"}"#,
            Deny::UpstreamUnavailable => br#"{"error":"upstream_unavailable"}"#,
            Deny::UpstreamTimeout => br#"{"error":"upstream_timeout"}"#,
            Deny::CircuitOpen => br#"{"error":"upstream_circuit_open"}"#,
            Deny::Internal => br#"{"error":"internal_error"}"#,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_their_codes() {
        let all = [
            Deny::BadPath(PathError::NotAbsolute),
            Deny::BadPath(PathError::EncodedSeparator),
            Deny::BadPath(PathError::EncodedDot),
            Deny::BadPath(PathError::DoubleEncoding),
            Deny::BadPath(PathError::BadPercent),
            Deny::BadPath(PathError::ControlByte),
            Deny::BadPath(PathError::Backslash),
            Deny::BadPath(PathError::InvalidUtf8),
            Deny::AmbiguousLength,
            Deny::BadHost,
            Deny::BadForwardedFor,
            Deny::ForeignAbsoluteTarget,
            Deny::BlockedPath,
            Deny::PathParameterOnBlocked,
            Deny::LookalikeOfBlocked,
            Deny::PathParameterOnAdmin,
            Deny::LookalikeOfAdmin,
            Deny::AdminRequired,
            Deny::ClientCertRequired,
            Deny::ClientCertDenied,
            Deny::Csrf(CsrfFailure::TokenMismatch),
            Deny::Signature(SignatureFailure::Expired),
            Deny::NoRoute,
            Deny::MethodNotAllowed,
            Deny::WebSocketNotAllowed,
            Deny::WebSocketRequired,
            Deny::RateLimited {
                limit: "l".into(),
                retry_after_secs: 1,
                burst: 2,
            },
            Deny::AuthLockedOut {
                retry_after_secs: 3,
            },
            Deny::LimitUnavailable("g".into()),
            Deny::HeadersTooLarge,
            Deny::BodyTooLarge,
            Deny::UpstreamUnavailable,
            Deny::UpstreamTimeout,
            Deny::CircuitOpen,
            Deny::Internal,
        ];
        for d in all {
            let v: serde_json::Value = serde_json::from_slice(&d.body()).unwrap();
            assert_eq!(v["error"], d.code());
        }
        for d in [Deny::AuthMissing, Deny::AuthMalformed, Deny::AuthInvalid] {
            let v: serde_json::Value = serde_json::from_slice(&d.body()).unwrap();
            assert!(v["detail"].is_string());
            assert_eq!(d.status(), 401);
        }
        let d = Deny::CapabilityDenied("room.admin".into());
        assert_eq!(
            &*d.body(),
            br#"{"error": "capability_denied", "required": "room.admin"}"#
        );
        assert_eq!(
            d.www_authenticate().unwrap(),
            "Bearer error=\"insufficient_scope\", scope=\"room.admin\""
        );
    }
}
