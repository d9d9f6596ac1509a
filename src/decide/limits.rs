//! Rate limits: those keyed by client or route before authentication, those keyed by subject
//! after it. A global limit asks the shared store; while it is unreachable the limit's failure
//! mode decides. A shadow limit that would refuse is logged and counted instead.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::request::Deps;
use crate::http::deny::Deny;
use crate::limits::Verdict;
use crate::policy::model::Policy;

/// Checks the limits that apply to route `idx`: those keyed by subject only after
/// authentication (`post_auth`), the others before it. A global limit asks the shared store
/// when one is configured; while it is unreachable the limit's failure mode decides. A shadow
/// limit that would refuse is logged and reported to `deps.on_shadow` instead.
pub async fn check(
    policy: &Policy,
    deps: &Deps<'_>,
    idx: usize,
    client: IpAddr,
    subject: Option<&str>,
    post_auth: bool,
) -> Result<(), Deny> {
    use crate::shared::GlobalVerdict;
    let (limiters, shared, on_shadow) = (deps.limiters, deps.shared, deps.on_shadow);
    let route = &policy.routes[idx];
    for spec in &policy.limits {
        if spec.by_subject != post_auth || !spec.applies_to(&route.name) {
            continue;
        }
        let Some(key) = limiters.key(spec, client, subject, &route.name) else {
            continue;
        };
        let local = spec.limiter(limiters);
        let global = match shared {
            Some(s) if spec.global && s.is_configured() => {
                match crate::shared::limit_key(spec, client, subject, &route.name) {
                    // Boxed: a Redis round trip dwarfs the allocation, and unboxed its future
                    // would sit inside every request's future, copied on every request.
                    Some(k) => Some((s, Box::pin(s.check_limit(spec, &k)).await)),
                    None => continue,
                }
            }
            _ => None,
        };
        let verdict = match global {
            Some((_, GlobalVerdict::Allowed { remaining })) => Verdict::Allowed { remaining },
            Some((_, GlobalVerdict::Limited { retry_after })) => {
                local.limited.fetch_add(1, Ordering::Relaxed);
                Verdict::Limited { retry_after }
            }
            Some((s, GlobalVerdict::Unavailable)) if spec.fail_closed => {
                s.stats.fallback_closed.fetch_add(1, Ordering::Relaxed);
                if spec.shadow {
                    on_shadow();
                    continue;
                }
                return Err(Deny::LimitUnavailable(spec.name.clone()));
            }
            Some((s, GlobalVerdict::Unavailable)) => {
                s.stats.fallback_open.fetch_add(1, Ordering::Relaxed);
                local.check(key)
            }
            None => local.check(key),
        };
        if let Verdict::Limited { retry_after } = verdict {
            if spec.shadow {
                on_shadow();
                tracing::info!(
                    target: "portcullis::security",
                    limit = &*spec.name,
                    client = %client,
                    route = &*route.name,
                    "shadow rule: rate limit would refuse this request"
                );
                continue;
            }
            let retry_after_secs = (retry_after.as_millis() as u64).div_ceil(1000).max(1);
            return Err(Deny::RateLimited {
                limit: spec.name.clone(),
                retry_after_secs,
                burst: spec.burst,
            });
        }
    }
    Ok(())
}
