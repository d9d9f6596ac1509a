//! CSRF protection for cookie-authenticated routes: an unsafe request must come from an allowed
//! origin (`Origin`, else `Referer`) and carry a double-submit token — the same value in the
//! CSRF cookie and the CSRF header, compared in constant time. The gateway issues the cookie
//! (`__Host-` prefixed: Secure, host-only, path `/`) on a safe response that lacks one.

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use subtle::ConstantTimeEq;

#[derive(Debug)]
pub struct Csrf {
    /// Allowed origins besides the request's own (`https://` + its Host).
    pub origins: Vec<Box<str>>,
    pub cookie: Box<str>,
    pub header: HeaderName,
}

/// Why a request failed the CSRF check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfFailure {
    OriginMissing,
    OriginNotAllowed,
    TokenMissing,
    TokenMismatch,
}

impl CsrfFailure {
    pub const ALL: [CsrfFailure; 4] = [
        CsrfFailure::OriginMissing,
        CsrfFailure::OriginNotAllowed,
        CsrfFailure::TokenMissing,
        CsrfFailure::TokenMismatch,
    ];
    pub fn reason(self) -> &'static str {
        match self {
            CsrfFailure::OriginMissing => "origin_missing",
            CsrfFailure::OriginNotAllowed => "origin_not_allowed",
            CsrfFailure::TokenMissing => "token_missing",
            CsrfFailure::TokenMismatch => "token_mismatch",
        }
    }
    pub fn body(self) -> &'static [u8] {
        match self {
            CsrfFailure::OriginMissing => br#"{"error":"csrf_failed","reason":"origin_missing"}"#,
            CsrfFailure::OriginNotAllowed => {
                br#"{"error":"csrf_failed","reason":"origin_not_allowed"}"#
            }
            CsrfFailure::TokenMissing => br#"{"error":"csrf_failed","reason":"token_missing"}"#,
            CsrfFailure::TokenMismatch => br#"{"error":"csrf_failed","reason":"token_mismatch"}"#,
        }
    }
}

/// What a request on a route with a CSRF rule must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// Nothing: a safe method, or credentials a cross-site page cannot send.
    Nothing,
    /// The origin alone: a WebSocket handshake on a route a browser authenticates by itself
    /// (a session cookie, or an installed client certificate, both presented on a cross-site
    /// handshake), which cannot carry the token.
    Origin,
    /// Origin and token: an unsafe method.
    Full,
}

/// The one place deciding what a request on a route with a CSRF rule must pass, for the proxy
/// and `policy test` alike. `ambient`: the route takes credentials a browser sends by itself
/// (`Route::ambient_credentials`); `signed`: a signed URL authenticated the request. A request
/// with a bearer token or a signed URL was not sent by a cross-site page on its own.
pub fn required(
    method: &Method,
    headers: &HeaderMap,
    websocket: bool,
    ambient: bool,
    signed: bool,
) -> Required {
    let wanted = if is_unsafe(method) {
        Required::Full
    } else if websocket && ambient {
        Required::Origin
    } else {
        return Required::Nothing;
    };
    let bearer = headers.get(http::header::AUTHORIZATION).is_some_and(|v| {
        v.as_bytes().len() > 7 && v.as_bytes()[..7].eq_ignore_ascii_case(b"bearer ")
    });
    if bearer || signed {
        return Required::Nothing;
    }
    wanted
}

/// Methods that change state and so need the check.
pub fn is_unsafe(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The value of cookie `name` in the request's `Cookie` headers (first occurrence).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// `scheme://host[:port]` of a Referer URL.
fn referer_origin(r: &str) -> Option<&str> {
    let scheme_end = r.find("://")? + 3;
    let end = r[scheme_end..]
        .find(['/', '?', '#'])
        .map(|i| scheme_end + i)
        .unwrap_or(r.len());
    Some(&r[..end])
}

impl Csrf {
    /// Checks what `required` asked for. `host` is the request's Host (with port, as sent).
    pub fn check_required(
        &self,
        required: Required,
        headers: &HeaderMap,
        host: &str,
    ) -> Result<(), CsrfFailure> {
        match required {
            Required::Nothing => Ok(()),
            Required::Origin => self.check_origin(headers, host),
            Required::Full => self.check(headers, host),
        }
    }

    /// Checks an unsafe request. `host` is the request's Host (with port, as sent).
    pub fn check(&self, headers: &HeaderMap, host: &str) -> Result<(), CsrfFailure> {
        self.check_origin(headers, host)?;
        self.check_token(headers)
    }

    /// The origin half of the check, alone: what a WebSocket handshake must pass (a browser
    /// sends the session cookie with a cross-site handshake, and the page cannot set a header).
    pub fn check_origin(&self, headers: &HeaderMap, host: &str) -> Result<(), CsrfFailure> {
        let origin = match headers.get(http::header::ORIGIN) {
            Some(o) => o.to_str().map_err(|_| CsrfFailure::OriginNotAllowed)?,
            None => headers
                .get(http::header::REFERER)
                .and_then(|r| r.to_str().ok())
                .and_then(referer_origin)
                .ok_or(CsrfFailure::OriginMissing)?,
        };
        let same = origin.len() == "https://".len() + host.len()
            && origin[..8].eq_ignore_ascii_case("https://")
            && origin[8..].eq_ignore_ascii_case(host);
        let listed = || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin));
        if host.is_empty() || !(same || listed()) {
            return Err(CsrfFailure::OriginNotAllowed);
        }
        Ok(())
    }

    fn check_token(&self, headers: &HeaderMap) -> Result<(), CsrfFailure> {
        let from_cookie = cookie(headers, &self.cookie).filter(|v| !v.is_empty());
        let from_header = headers
            .get(&self.header)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty());
        match (from_cookie, from_header) {
            (Some(c), Some(h)) => {
                if c.len() >= 16 && bool::from(c.as_bytes().ct_eq(h)) {
                    Ok(())
                } else {
                    Err(CsrfFailure::TokenMismatch)
                }
            }
            _ => Err(CsrfFailure::TokenMissing),
        }
    }

    /// A `Set-Cookie` value issuing a fresh token.
    pub fn issue(&self) -> HeaderValue {
        let token =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        HeaderValue::from_str(&format!(
            "{}={token}; Path=/; Secure; SameSite=Strict",
            self.cookie
        ))
        .expect("cookie name and token are header-safe")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Csrf {
        Csrf {
            origins: vec!["https://app.example".into()],
            cookie: "__Host-csrf".into(),
            header: HeaderName::from_static("x-csrf-token"),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const T: &str = "0123456789abcdefXYZ";

    #[test]
    fn what_a_request_must_pass() {
        use Required::*;
        let none = headers(&[]);
        let bearer = headers(&[("authorization", "Bearer abc")]);
        // (method, headers, websocket, ambient credentials, signed URL) -> required
        let cases: [(Method, &HeaderMap, bool, bool, bool, Required); 8] = [
            (Method::GET, &none, false, true, false, Nothing),
            (Method::POST, &none, false, false, false, Full),
            (Method::POST, &bearer, false, true, false, Nothing),
            (Method::POST, &none, false, true, true, Nothing),
            // A handshake on a cookie or client-certificate route: the origin alone.
            (Method::GET, &none, true, true, false, Origin),
            (Method::GET, &bearer, true, true, false, Nothing),
            (Method::GET, &none, true, true, true, Nothing),
            // A handshake a browser cannot authenticate by itself.
            (Method::GET, &none, true, false, false, Nothing),
        ];
        for (m, h, ws, ambient, signed, want) in cases {
            assert_eq!(
                required(&m, h, ws, ambient, signed),
                want,
                "{m} ws={ws} ambient={ambient} signed={signed}"
            );
        }
    }

    #[test]
    fn same_origin_with_matching_token_passes() {
        let c = rule();
        let cookie = format!("session=x; __Host-csrf={T}");
        let h = headers(&[
            ("origin", "https://gw.example:8443"),
            ("cookie", &cookie),
            ("x-csrf-token", T),
        ]);
        assert_eq!(c.check(&h, "gw.example:8443"), Ok(()));
        let h = headers(&[
            ("referer", "https://app.example/page?x=1"),
            ("cookie", &cookie),
            ("x-csrf-token", T),
        ]);
        assert_eq!(c.check(&h, "gw.example:8443"), Ok(()));
    }

    #[test]
    fn failures_are_told_apart() {
        let c = rule();
        let cookie = format!("__Host-csrf={T}");
        let host = "gw.example";
        assert_eq!(
            c.check(&headers(&[("cookie", &cookie)]), host),
            Err(CsrfFailure::OriginMissing)
        );
        assert_eq!(
            c.check(
                &headers(&[("origin", "https://evil.example"), ("cookie", &cookie)]),
                host
            ),
            Err(CsrfFailure::OriginNotAllowed)
        );
        assert_eq!(
            c.check(&headers(&[("origin", "null")]), host),
            Err(CsrfFailure::OriginNotAllowed)
        );
        assert_eq!(
            c.check(
                &headers(&[("origin", "http://gw.example"), ("x-csrf-token", T)]),
                host
            ),
            Err(CsrfFailure::OriginNotAllowed)
        );
        assert_eq!(
            c.check(&headers(&[("origin", "https://gw.example")]), host),
            Err(CsrfFailure::TokenMissing)
        );
        assert_eq!(
            c.check(
                &headers(&[
                    ("origin", "https://gw.example"),
                    ("cookie", &cookie),
                    ("x-csrf-token", "0123456789abcdefXYz")
                ]),
                host
            ),
            Err(CsrfFailure::TokenMismatch)
        );
    }

    #[test]
    fn issued_cookie_is_host_prefixed_and_fresh() {
        let c = rule();
        let a = c.issue();
        assert!(a.to_str().unwrap().starts_with("__Host-csrf="));
        assert!(a.to_str().unwrap().contains("Secure"));
        assert_ne!(a, c.issue());
    }
}
