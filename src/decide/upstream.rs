//! The external address a request goes to: round-robin over those whose circuit admits it; a
//! 503 at once when every resolved address's circuit is open.

use std::sync::Arc;

use crate::http::deny::Deny;
use crate::policy::model::{Policy, Route, UpstreamTarget};
use crate::upstreams::{AddressState, Admit, Resilience};

pub fn pick(
    policy: &Policy,
    route: &Route,
    resilience: &Resilience,
) -> Result<Option<(usize, Arc<AddressState>)>, Deny> {
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
        let state = upstream.address_state(idx, resilience).clone();
        state.socket_addr()?;
        resolved = true;
        (resilience.admit(&state) != Admit::No).then_some((idx, state))
    });
    match picked {
        Some(p) => Ok(Some(p)),
        None if !resolved => Ok(None),
        None => Err(Deny::CircuitOpen),
    }
}
