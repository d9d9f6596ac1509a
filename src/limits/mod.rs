//! How much anyone may do: client identity behind trusted proxies, rate limits keyed by IP,
//! subject and route, and auth-failure backoff. State here outlives policy generations; the
//! definitions come from the compiled policy. Nothing here writes responses.

pub mod backoff;
pub mod client_ip;
pub mod rate;

pub use backoff::{AuthBackoff, BackoffSpec};
pub use rate::{LimitSpec, LimiterRegistry, Verdict};
