//! Cross-site request checks on routes with a CSRF rule: unsafe methods, and WebSocket
//! handshakes on routes a browser authenticates by itself (a cross-site request like any other),
//! must come from an allowed origin and carry the token.

use super::request::{Facts, RequestView};
use crate::auth::Provider;
use crate::http::csrf;
use crate::http::deny::Deny;
use crate::policy::model::Route;

/// Answers whether the response should issue the CSRF cookie (a safe request without one).
pub fn check(route: &Route, req: &RequestView<'_>, facts: &Facts) -> Result<bool, Deny> {
    let Some(rule) = &route.csrf else {
        return Ok(false);
    };
    let signed = facts
        .identity
        .as_ref()
        .is_some_and(|i| i.provider == Provider::SignedUrl);
    let required = csrf::required(
        req.method,
        req.headers,
        facts.websocket,
        route.ambient_credentials(),
        signed,
    );
    if required != csrf::Required::Nothing {
        let host = facts.host.as_deref().unwrap_or("");
        rule.check_required(required, req.headers, host)
            .map_err(Deny::Csrf)?;
        return Ok(false);
    }
    Ok(!csrf::is_unsafe(req.method) && csrf::cookie(req.headers, &rule.cookie).is_none())
}
