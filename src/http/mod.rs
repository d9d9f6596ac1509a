//! HTTP helpers that face attacker input: path canonicalization, request-target checks, host
//! normalization, the
//! JSON denial bodies, security-header profiles, CORS, CSRF and signed URLs. Pure functions, no
//! I/O, no policy state.

pub mod cors;
pub mod csrf;
pub mod deny;
pub mod digits;
pub mod headers;
pub mod host;
pub mod path;
pub mod signed;
