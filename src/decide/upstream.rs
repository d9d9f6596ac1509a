//! Which external address a request goes to, in one place: the pick (round-robin over the
//! addresses whose circuit admits a request; a 503 at once when every resolved address's circuit
//! is open), the move to another address after a failed connect, and the outcome, recorded
//! against each address's circuit exactly once.

use std::sync::Arc;

use crate::http::deny::Deny;
use crate::policy::model::{Policy, Route, UpstreamTarget};
use crate::upstreams::{AddressState, Admit, Resilience};

/// The address a request is going to, and those it has already failed to connect to.
#[derive(Debug)]
pub struct Choice {
    /// Index into the policy's `upstreams`.
    pub upstream: usize,
    /// Index into the upstream's `addresses`.
    pub idx: usize,
    pub state: Arc<AddressState>,
    /// Addresses this request failed to connect to (their failures are recorded).
    tried: Vec<usize>,
}

pub fn pick(
    policy: &Policy,
    route: &Route,
    resilience: &Resilience,
) -> Result<Option<Choice>, Deny> {
    let upstream = &policy.upstreams[route.upstream];
    let UpstreamTarget::External { addresses, .. } = &upstream.target else {
        return Ok(None);
    };
    let start = upstream.next_address(addresses);
    // A name that has never resolved takes no request while another address can; if none has
    // resolved, the request gets its 502 when the peer is chosen.
    let mut resolved = false;
    let picked = (0..addresses.len()).find_map(|i| {
        let idx = (start + i) % addresses.len();
        let state = resilience.address(policy, route.upstream, idx);
        state.socket_addr()?;
        resolved = true;
        (resilience.admit(&state) != Admit::No).then_some(Choice {
            upstream: route.upstream,
            idx,
            state,
            tried: Vec::new(),
        })
    });
    match picked {
        Some(p) => Ok(Some(p)),
        None if !resolved => Ok(None),
        None => Err(Deny::CircuitOpen),
    }
}

/// The connection to the chosen address failed before anything reached it: when another
/// address whose circuit admits the request is left untried, the failure is recorded against
/// the chosen one and the choice moves there (`true`). Otherwise the choice stays, and its
/// failure is recorded once, by [`finish`].
pub fn retry(policy: &Policy, choice: &mut Choice, resilience: &Resilience) -> bool {
    move_to_next(policy, choice, resilience, true)
}

/// A reused connection failed before the response: the request moves to another untried
/// address whose circuit admits it, if there is one (`true`); else it stays, for a fresh
/// connection to the same address. No failure is recorded: a pooled connection the upstream
/// closed says nothing about the address.
pub fn move_on(policy: &Policy, choice: &mut Choice, resilience: &Resilience) -> bool {
    move_to_next(policy, choice, resilience, false)
}

/// Moves the choice to the next untried, resolved address whose circuit admits the request,
/// recording a failure against the one it leaves when `record_failure`.
fn move_to_next(
    policy: &Policy,
    choice: &mut Choice,
    resilience: &Resilience,
    record_failure: bool,
) -> bool {
    let upstream = &policy.upstreams[choice.upstream];
    let UpstreamTarget::External { addresses, .. } = &upstream.target else {
        return false;
    };
    let n = addresses.len();
    let next = (1..n).find_map(|k| {
        let j = (choice.idx + k) % n;
        if choice.tried.contains(&j) {
            return None;
        }
        let state = resilience.address(policy, choice.upstream, j);
        state.socket_addr()?;
        (resilience.admit(&state) != Admit::No).then_some((j, state))
    });
    let Some((j, state)) = next else {
        return false;
    };
    if record_failure {
        resilience.failure(
            &choice.state,
            upstream.breaker,
            &upstream.name,
            &addresses[choice.idx],
        );
    }
    choice.tried.push(choice.idx);
    choice.idx = j;
    choice.state = state;
    true
}

/// Records how the request fared at the address it ended on.
pub fn finish(policy: &Policy, choice: &Choice, failed: bool, resilience: &Resilience) {
    let upstream = &policy.upstreams[choice.upstream];
    // Every request to the upstream earns retries their share.
    resilience
        .retry_budget(policy, choice.upstream)
        .deposit(upstream.retry_budget_percent);
    if failed {
        let address = match &upstream.target {
            UpstreamTarget::External { addresses, .. } => addresses[choice.idx].as_str(),
            _ => "",
        };
        resilience.failure(&choice.state, upstream.breaker, &upstream.name, address);
    } else {
        resilience.success(&choice.state);
    }
}
