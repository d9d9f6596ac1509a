//! CORS per route: an exact-origin allow-list, answered preflights, and the response headers of
//! actual requests. Origins are compared byte-for-byte with their canonical form (lower-case
//! scheme and host, port only when not the default), which is how browsers send them.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// A compiled CORS rule.
#[derive(Debug)]
pub struct Cors {
    pub origins: Vec<Box<str>>,
    /// `"*"` was listed: any origin, never with credentials.
    pub any_origin: bool,
    pub methods: Vec<Method>,
    pub methods_value: HeaderValue,
    /// Allowed request headers, lower-case.
    pub headers: Vec<Box<str>>,
    pub headers_value: Option<HeaderValue>,
    pub expose_value: Option<HeaderValue>,
    pub credentials: bool,
    pub max_age: HeaderValue,
}

/// Why a preflight was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightDenied {
    Origin,
    Method,
    Header,
}

impl PreflightDenied {
    pub fn body(self) -> &'static [u8] {
        match self {
            PreflightDenied::Origin => br#"{"error":"cors_denied","detail":"origin not allowed"}"#,
            PreflightDenied::Method => br#"{"error":"cors_denied","detail":"method not allowed"}"#,
            PreflightDenied::Header => {
                br#"{"error":"cors_denied","detail":"request header not allowed"}"#
            }
        }
    }
}

pub static ACAO: HeaderName = HeaderName::from_static("access-control-allow-origin");
pub static ACAC: HeaderName = HeaderName::from_static("access-control-allow-credentials");
pub static ACAM: HeaderName = HeaderName::from_static("access-control-allow-methods");
pub static ACAH: HeaderName = HeaderName::from_static("access-control-allow-headers");
pub static ACEH: HeaderName = HeaderName::from_static("access-control-expose-headers");
pub static ACMA: HeaderName = HeaderName::from_static("access-control-max-age");
pub static ACRM: HeaderName = HeaderName::from_static("access-control-request-method");
pub static ACRH: HeaderName = HeaderName::from_static("access-control-request-headers");
pub const VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);
pub const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

/// Why a configured origin is not one; each names the origin as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("{0:?} is not an origin (scheme://host[:port])")]
    NoScheme(String),
    #[error("{0:?}: the scheme must be https or http")]
    Scheme(String),
    #[error("{0:?} is not an origin: no path, query, user or trailing '/'")]
    NotBare(String),
    #[error("{origin:?}: invalid port {port:?}")]
    Port { origin: String, port: String },
}

/// The canonical form of a configured origin (`https://app.example.com[:port]`), or why not.
pub fn canonical_origin(o: &str) -> Result<String, OriginError> {
    if o == "*" {
        return Ok(o.to_string());
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return Err(OriginError::NoScheme(o.to_string()));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return Err(OriginError::Scheme(o.to_string()));
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(OriginError::NotBare(o.to_string()));
    }
    let rest = rest.to_ascii_lowercase();
    let rest = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
            let port: u16 = p.parse().map_err(|_| OriginError::Port {
                origin: o.to_string(),
                port: p.to_string(),
            })?;
            let default = (scheme == "https" && port == 443) || (scheme == "http" && port == 80);
            if default {
                h.to_string()
            } else {
                rest.clone()
            }
        }
        _ => rest,
    };
    Ok(format!("{scheme}://{rest}"))
}

impl Cors {
    /// Whether the request's `Origin` is allowed.
    pub fn allows_origin(&self, origin: &[u8]) -> bool {
        self.any_origin || self.origins.iter().any(|o| o.as_bytes() == origin)
    }

    fn origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        // A wildcard is answered with `*`, never by reflecting the caller's origin.
        if self.any_origin {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Answers a preflight: the headers of the 204, or why it is refused.
    pub fn preflight(
        &self,
        req: &HeaderMap,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, PreflightDenied> {
        let origin = req
            .get(http::header::ORIGIN)
            .ok_or(PreflightDenied::Origin)?;
        if !self.allows_origin(origin.as_bytes()) {
            return Err(PreflightDenied::Origin);
        }
        let method = req
            .get(&ACRM)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .ok_or(PreflightDenied::Method)?;
        if !self.methods.contains(&method) {
            return Err(PreflightDenied::Method);
        }
        for v in req.get_all(&ACRH) {
            let v = v.to_str().map_err(|_| PreflightDenied::Header)?;
            for h in v.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                if !self.headers.iter().any(|a| a.eq_ignore_ascii_case(h)) {
                    return Err(PreflightDenied::Header);
                }
            }
        }
        let mut out = vec![
            (ACAO.clone(), self.origin_value(origin)),
            (ACAM.clone(), self.methods_value.clone()),
            (ACMA.clone(), self.max_age.clone()),
            (http::header::VARY, VARY_PREFLIGHT),
        ];
        if let Some(h) = &self.headers_value {
            out.push((ACAH.clone(), h.clone()));
        }
        if self.credentials {
            out.push((ACAC.clone(), HeaderValue::from_static("true")));
        }
        Ok(out)
    }

    /// Headers for an actual (non-preflight) response: `Vary: Origin` always, the allow headers
    /// when the origin is allowed.
    pub fn actual(&self, origin: Option<&HeaderValue>) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(4);
        if let Some(origin) = origin.filter(|o| self.allows_origin(o.as_bytes())) {
            out.push((ACAO.clone(), self.origin_value(origin)));
            if self.credentials {
                out.push((ACAC.clone(), HeaderValue::from_static("true")));
            }
            if let Some(e) = &self.expose_value {
                out.push((ACEH.clone(), e.clone()));
            }
        }
        out
    }
}

/// The names of an upstream's own CORS answer (`Access-Control-*` and `Timing-Allow-Origin`),
/// collected in one pass (usually none, and then nothing is allocated): on a route with a CORS
/// rule the caller removes them, so that the rule is the only answer the client sees.
pub fn upstream_grants(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|n| {
            let n = n.as_str().as_bytes();
            (n.len() > ACCESS_CONTROL.len() && n[..ACCESS_CONTROL.len()] == *ACCESS_CONTROL)
                || n == b"timing-allow-origin"
        })
        .cloned()
        .collect()
}

/// Header names are lower case in `http`.
const ACCESS_CONTROL: &[u8] = b"access-control-";

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(http::header::ORIGIN)
        && headers.contains_key(&ACRM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], credentials: bool) -> Cors {
        Cors {
            origins: origins
                .iter()
                .filter(|o| **o != "*")
                .map(|o| (*o).into())
                .collect(),
            any_origin: origins.contains(&"*"),
            methods: vec![Method::GET, Method::POST],
            methods_value: HeaderValue::from_static("GET, POST"),
            headers: vec!["content-type".into(), "authorization".into()],
            headers_value: Some(HeaderValue::from_static("content-type, authorization")),
            expose_value: None,
            credentials,
            max_age: HeaderValue::from_static("600"),
        }
    }

    fn req(origin: &str, method: &str, headers: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ORIGIN, origin.parse().unwrap());
        h.insert(ACRM.clone(), method.parse().unwrap());
        if !headers.is_empty() {
            h.insert(ACRH.clone(), headers.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins_are_canonical() {
        assert_eq!(
            canonical_origin("HTTPS://App.Example.com:443").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            canonical_origin("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        assert!(canonical_origin("https://a.example/").is_err());
        assert!(canonical_origin("a.example").is_err());
        assert!(canonical_origin("ftp://a.example").is_err());
        assert!(canonical_origin("https://a.example:x").is_err());
    }

    #[test]
    fn preflights() {
        let c = rule(&["https://app.example"], true);
        let ok = c
            .preflight(&req("https://app.example", "POST", "Content-Type"))
            .unwrap();
        assert!(ok.contains(&(
            ACAO.clone(),
            HeaderValue::from_static("https://app.example")
        )));
        assert!(ok.contains(&(ACAC.clone(), HeaderValue::from_static("true"))));
        assert_eq!(
            c.preflight(&req("https://evil.example", "POST", "")),
            Err(PreflightDenied::Origin)
        );
        assert_eq!(
            c.preflight(&req("https://app.example.evil", "GET", "")),
            Err(PreflightDenied::Origin)
        );
        assert_eq!(
            c.preflight(&req("https://app.example", "DELETE", "")),
            Err(PreflightDenied::Method)
        );
        assert_eq!(
            c.preflight(&req("https://app.example", "GET", "x-custom")),
            Err(PreflightDenied::Header)
        );
        assert_eq!(
            c.preflight(&req("null", "GET", "")),
            Err(PreflightDenied::Origin)
        );
    }

    #[test]
    fn wildcard_never_reflects() {
        let c = rule(&["*"], false);
        let h = HeaderValue::from_static("https://x.example");
        assert_eq!(
            c.actual(Some(&h)),
            vec![(ACAO.clone(), HeaderValue::from_static("*"))]
        );
        let strict = rule(&["https://app.example"], false);
        assert!(strict.actual(Some(&h)).is_empty());
    }
}
