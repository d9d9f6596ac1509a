//! Rate limits: those keyed by client or route before authentication, those keyed by subject
//! after it. A global limit asks the shared store; while it is unreachable the limit's failure
//! mode decides. A shadow limit that would refuse is logged and counted instead.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::request::Deps;
use crate::http::deny::Deny;
use crate::limits::Verdict;
use crate::policy::model::Policy;

/// `check_limits` with the decision's dependencies.
pub async fn check(
    policy: &Policy,
    deps: &Deps<'_>,
    idx: usize,
    client: IpAddr,
    subject: Option<&str>,
    post_auth: bool,
) -> Result<(), Deny> {
    match check_limits(
        policy,
        deps.limiters,
        deps.shared,
        idx,
        client,
        subject,
        post_auth,
        deps.on_shadow,
    )
    .await
    {
        Some(d) => Err(d),
        None => Ok(()),
    }
}

/// Checks the limits that apply to route `idx`: those keyed by subject only after
/// authentication (`post_auth`), the others before it. A global limit asks the shared store
/// (`shared`) when one is configured; while it is unreachable the limit's failure mode decides.
/// A shadow limit that would refuse is logged and reported to `on_shadow` instead.
#[allow(clippy::too_many_arguments)] // The decision's inputs, shared with `policy test`.
pub async fn check_limits(
    policy: &Policy,
    limiters: &crate::limits::LimiterRegistry,
    shared: Option<&crate::shared::SharedStore>,
    idx: usize,
    client: IpAddr,
    subject: Option<&str>,
    post_auth: bool,
    on_shadow: &(dyn Fn() + Sync),
) -> Option<Deny> {
    use crate::shared::GlobalVerdict;
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
                return Some(Deny::LimitUnavailable(spec.name.clone()));
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
            return Some(Deny::RateLimited {
                limit: spec.name.clone(),
                retry_after_secs,
                burst: spec.burst,
            });
        }
    }
    None
}
