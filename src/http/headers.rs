//! Security response headers as named profiles. A profile is compiled once per policy into
//! ready `HeaderValue`s; a response only copies them. The Content-Security-Policy may carry a
//! per-request nonce (`'nonce-{nonce}'`), which the gateway draws, hands to the upstream in
//! `X-Portcullis-Csp-Nonce` and writes into the header it sends.

use std::sync::Arc;

use base64::Engine;
use http::{HeaderName, HeaderValue};

/// The placeholder a CSP template uses for the nonce.
pub const NONCE_PLACEHOLDER: &str = "{nonce}";

/// Response headers removed from every upstream response (they advertise the software stack).
pub const ALWAYS_REMOVED: &[&str] = &[
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
];

/// One profile's settings before compilation; built-ins and policy profiles alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileSpec {
    pub content_security_policy: Option<String>,
    pub csp_nonce: bool,
    pub content_type_options: bool,
    pub frame_options: Option<String>,
    pub referrer_policy: Option<String>,
    pub permissions_policy: Option<String>,
    pub cross_origin_opener_policy: Option<String>,
    pub cross_origin_resource_policy: Option<String>,
}

const PERMISSIONS_NONE: &str = "accelerometer=(), camera=(), geolocation=(), gyroscope=(), \
magnetometer=(), microphone=(), payment=(), usb=()";

/// The built-in profiles: `api-strict` (JSON APIs), `browser-app` (HTML with nonce scripts),
/// `ws-only` (WebSocket endpoints) and `none` (HSTS and removals only).
pub fn builtin(name: &str) -> Option<ProfileSpec> {
    let s = |v: &str| Some(v.to_string());
    Some(match name {
        "api-strict" => ProfileSpec {
            content_security_policy: s(
                "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
            csp_nonce: false,
            content_type_options: true,
            frame_options: s("DENY"),
            referrer_policy: s("no-referrer"),
            permissions_policy: s(PERMISSIONS_NONE),
            cross_origin_opener_policy: s("same-origin"),
            cross_origin_resource_policy: s("same-origin"),
        },
        "browser-app" => ProfileSpec {
            content_security_policy: s(
                "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self'; \
img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; \
frame-ancestors 'none'",
            ),
            csp_nonce: true,
            content_type_options: true,
            frame_options: s("DENY"),
            referrer_policy: s("strict-origin-when-cross-origin"),
            permissions_policy: s(PERMISSIONS_NONE),
            cross_origin_opener_policy: s("same-origin"),
            cross_origin_resource_policy: None,
        },
        "ws-only" => ProfileSpec {
            content_security_policy: s("default-src 'none'; frame-ancestors 'none'"),
            csp_nonce: false,
            content_type_options: true,
            frame_options: s("DENY"),
            referrer_policy: s("no-referrer"),
            permissions_policy: None,
            cross_origin_opener_policy: None,
            cross_origin_resource_policy: s("same-origin"),
        },
        "none" => ProfileSpec::default(),
        _ => return None,
    })
}

pub const BUILTIN_NAMES: &[&str] = &["api-strict", "browser-app", "ws-only", "none"];

/// A compiled profile.
#[derive(Debug)]
pub struct HeaderProfile {
    pub name: Arc<str>,
    /// Set on every response, replacing any upstream value.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// A CSP with a nonce: the text before and after the placeholder.
    pub csp_nonce: Option<(String, String)>,
}

static CSP: HeaderName = HeaderName::from_static("content-security-policy");

impl HeaderProfile {
    /// Compiles a spec; the error names the offending field.
    pub fn compile(name: &str, spec: &ProfileSpec) -> Result<HeaderProfile, (String, String)> {
        let mut set = Vec::new();
        let mut push = |field: &str, header: &'static str, v: &Option<String>| {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty() && *v != "off") {
                match HeaderValue::from_str(v) {
                    Ok(hv) => set.push((HeaderName::from_static(header), hv)),
                    Err(_) => {
                        return Err((
                            field.to_string(),
                            format!("{v:?} is not a valid header value"),
                        ))
                    }
                }
            }
            Ok(())
        };
        let mut csp_nonce = None;
        match (&spec.content_security_policy, spec.csp_nonce) {
            (Some(csp), true) => match csp.split_once(NONCE_PLACEHOLDER) {
                Some((a, b)) if !b.contains(NONCE_PLACEHOLDER) => {
                    if HeaderValue::from_str(&format!("{a}x{b}")).is_err() {
                        return Err((
                            "content_security_policy".into(),
                            format!("{csp:?} is not a valid header value"),
                        ));
                    }
                    csp_nonce = Some((a.to_string(), b.to_string()));
                }
                _ => {
                    return Err((
                        "csp_nonce".into(),
                        "the content_security_policy must contain '{nonce}' exactly once \
                         (e.g. script-src 'nonce-{nonce}')"
                            .into(),
                    ))
                }
            },
            (None, true) => {
                return Err((
                    "csp_nonce".into(),
                    "a nonce needs a content_security_policy containing '{nonce}'".into(),
                ))
            }
            (Some(csp), false) if csp.contains(NONCE_PLACEHOLDER) => {
                return Err((
                    "content_security_policy".into(),
                    "contains '{nonce}' but csp_nonce is off".into(),
                ))
            }
            (csp, false) => push("content_security_policy", "content-security-policy", csp)?,
        }
        push(
            "content_type_options",
            "x-content-type-options",
            &spec.content_type_options.then(|| "nosniff".to_string()),
        )?;
        if let Some(f) = spec.frame_options.as_deref() {
            if !matches!(f, "DENY" | "SAMEORIGIN" | "off") {
                return Err((
                    "frame_options".into(),
                    format!("{f:?}: use \"DENY\", \"SAMEORIGIN\" or \"off\""),
                ));
            }
        }
        push("frame_options", "x-frame-options", &spec.frame_options)?;
        push("referrer_policy", "referrer-policy", &spec.referrer_policy)?;
        push(
            "permissions_policy",
            "permissions-policy",
            &spec.permissions_policy,
        )?;
        push(
            "cross_origin_opener_policy",
            "cross-origin-opener-policy",
            &spec.cross_origin_opener_policy,
        )?;
        push(
            "cross_origin_resource_policy",
            "cross-origin-resource-policy",
            &spec.cross_origin_resource_policy,
        )?;
        Ok(HeaderProfile {
            name: Arc::from(name),
            set,
            csp_nonce,
        })
    }

    /// The CSP for a response carrying `nonce`.
    pub fn csp_with(&self, nonce: &str) -> Option<(HeaderName, HeaderValue)> {
        let (a, b) = self.csp_nonce.as_ref()?;
        HeaderValue::from_str(&format!("{a}{nonce}{b}"))
            .ok()
            .map(|v| (CSP.clone(), v))
    }
}

/// A fresh nonce: 128 random bits, base64 (standard alphabet, as CSP expects).
pub fn new_nonce() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_compile() {
        for n in BUILTIN_NAMES {
            let p = HeaderProfile::compile(n, &builtin(n).unwrap()).unwrap();
            assert_eq!(&*p.name, *n);
        }
        let strict = HeaderProfile::compile("api-strict", &builtin("api-strict").unwrap()).unwrap();
        let names: Vec<&str> = strict.set.iter().map(|(n, _)| n.as_str()).collect();
        for h in [
            "content-security-policy",
            "x-content-type-options",
            "x-frame-options",
            "referrer-policy",
            "permissions-policy",
            "cross-origin-opener-policy",
        ] {
            assert!(names.contains(&h), "{h} missing from api-strict");
        }
    }

    #[test]
    fn nonce_is_substituted() {
        let p = HeaderProfile::compile("browser-app", &builtin("browser-app").unwrap()).unwrap();
        assert!(!p.set.iter().any(|(n, _)| n == "content-security-policy"));
        let (_, v) = p.csp_with("abc").unwrap();
        assert!(v.to_str().unwrap().contains("'nonce-abc'"));
        assert_ne!(new_nonce(), new_nonce());
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = ProfileSpec {
            csp_nonce: true,
            content_security_policy: Some("default-src 'self'".into()),
            ..Default::default()
        };
        assert_eq!(HeaderProfile::compile("x", &s).unwrap_err().0, "csp_nonce");
        s.csp_nonce = false;
        s.frame_options = Some("ALLOW".into());
        assert_eq!(
            HeaderProfile::compile("x", &s).unwrap_err().0,
            "frame_options"
        );
        s.frame_options = None;
        s.referrer_policy = Some("a\nb".into());
        assert_eq!(
            HeaderProfile::compile("x", &s).unwrap_err().0,
            "referrer_policy"
        );
    }
}
