//! Signed asset URLs: on a route that accepts them, a request carrying a signature is admitted
//! by it alone, or refused when it does not verify.

use std::sync::Arc;

use http::{Method, Uri};

use super::request::Now;
use crate::auth::Identity;
use crate::http::deny::Deny;
use crate::http::signed;
use crate::policy::model::{Policy, Route};

/// The signed-URL identity when the request carries a valid signature, `None` when it carries
/// none (or the route takes none).
pub fn verify(
    policy: &Policy,
    route: &Route,
    method: &Method,
    uri: &Uri,
    now: Now,
) -> Result<Option<Arc<Identity>>, Deny> {
    if !route.signed_urls || !signed::has_signature(uri.query()) {
        return Ok(None);
    }
    let Some(keys) = &policy.signed_urls else {
        return Err(Deny::Internal);
    };
    let query = uri.query().unwrap_or("");
    keys.verify(method.as_str(), uri.path(), query, now.unix)
        .map_err(Deny::Signature)?;
    Ok(Some(Arc::new(Identity::signed_url())))
}
