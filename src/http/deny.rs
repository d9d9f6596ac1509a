//! Denials as data: each variant knows its status and its stable JSON body. Bodies are static
//! byte strings, so answering a refusal allocates nothing and can never echo request content.

use crate::http::path::PathError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deny {
    BadPath(PathError),
    AmbiguousLength,
    ForeignAbsoluteTarget,
    BlockedPath,
    NoRoute,
    MethodNotAllowed,
    WebSocketNotAllowed,
    WebSocketRequired,
    UpstreamUnavailable,
    UpstreamTimeout,
    Internal,
}

impl Deny {
    pub fn status(self) -> u16 {
        match self {
            Deny::BadPath(_) | Deny::AmbiguousLength | Deny::ForeignAbsoluteTarget => 400,
            Deny::WebSocketNotAllowed => 400,
            Deny::WebSocketRequired => 426,
            Deny::BlockedPath => 403,
            Deny::NoRoute => 404,
            Deny::MethodNotAllowed => 405,
            Deny::UpstreamUnavailable => 502,
            Deny::UpstreamTimeout => 504,
            Deny::Internal => 500,
        }
    }

    /// The stable machine-readable code, also used as the log reason.
    pub fn code(self) -> &'static str {
        match self {
            Deny::BadPath(e) => e.code(),
            Deny::AmbiguousLength => "ambiguous_length",
            Deny::ForeignAbsoluteTarget => "foreign_absolute_target",
            Deny::BlockedPath => "path_blocked",
            Deny::NoRoute => "no_route",
            Deny::MethodNotAllowed => "method_not_allowed",
            Deny::WebSocketNotAllowed => "websocket_not_allowed",
            Deny::WebSocketRequired => "websocket_required",
            Deny::UpstreamUnavailable => "upstream_unavailable",
            Deny::UpstreamTimeout => "upstream_timeout",
            Deny::Internal => "internal_error",
        }
    }

    /// The JSON body: `{"error":"<code>"}`.
    pub fn body(self) -> &'static [u8] {
        match self {
            Deny::BadPath(PathError::NotAbsolute) => br#"{"error":"path_not_absolute"}"#,
            Deny::BadPath(PathError::EncodedSeparator) => br#"{"error":"path_encoded_separator"}"#,
            Deny::BadPath(PathError::EncodedDot) => br#"{"error":"path_encoded_dot"}"#,
            Deny::BadPath(PathError::DoubleEncoding) => br#"{"error":"path_double_encoding"}"#,
            Deny::BadPath(PathError::BadPercent) => br#"{"error":"path_bad_percent_encoding"}"#,
            Deny::BadPath(PathError::ControlByte) => br#"{"error":"path_control_byte"}"#,
            Deny::BadPath(PathError::Backslash) => br#"{"error":"path_backslash"}"#,
            Deny::BadPath(PathError::InvalidUtf8) => br#"{"error":"path_invalid_utf8"}"#,
            Deny::AmbiguousLength => br#"{"error":"ambiguous_length"}"#,
            Deny::ForeignAbsoluteTarget => br#"{"error":"foreign_absolute_target"}"#,
            Deny::BlockedPath => br#"{"error":"path_blocked"}"#,
            Deny::NoRoute => br#"{"error":"no_route"}"#,
            Deny::MethodNotAllowed => br#"{"error":"method_not_allowed"}"#,
            Deny::WebSocketNotAllowed => br#"{"error":"websocket_not_allowed"}"#,
            Deny::WebSocketRequired => br#"{"error":"websocket_required"}"#,
            Deny::UpstreamUnavailable => br#"{"error":"upstream_unavailable"}"#,
            Deny::UpstreamTimeout => br#"{"error":"upstream_timeout"}"#,
            Deny::Internal => br#"{"error":"internal_error"}"#,
        }
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
            Deny::ForeignAbsoluteTarget,
            Deny::BlockedPath,
            Deny::NoRoute,
            Deny::MethodNotAllowed,
            Deny::WebSocketNotAllowed,
            Deny::WebSocketRequired,
            Deny::UpstreamUnavailable,
            Deny::UpstreamTimeout,
            Deny::Internal,
        ];
        for d in all {
            let v: serde_json::Value = serde_json::from_slice(d.body()).unwrap();
            assert_eq!(v["error"], d.code());
        }
    }
}
