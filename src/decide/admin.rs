//! Admin paths: open only to an identity with the admin capability, a signed URL, or a client
//! in the admin networks.

use super::request::Facts;
use crate::auth::Provider;
use crate::http::deny::Deny;
use crate::policy::model::Policy;

pub fn check(policy: &Policy, path: &str, facts: &Facts) -> Result<(), Deny> {
    let admin = match facts.screened {
        Some(screened) => screened.admin,
        None => policy.admin.covers(path),
    };
    if !admin {
        return Ok(());
    }
    let admitted = facts
        .identity
        .as_ref()
        .is_some_and(|i| i.has(&policy.admin.capability) || i.provider == Provider::SignedUrl)
        || facts.client.is_some_and(|c| policy.admin.network_allows(c));
    if admitted {
        Ok(())
    } else {
        Err(Deny::AdminRequired)
    }
}
