//! HTTP helpers that face attacker input: path canonicalization, request-target checks and the
//! JSON denial bodies. Pure functions, no I/O, no policy state.

pub mod deny;
pub mod path;
