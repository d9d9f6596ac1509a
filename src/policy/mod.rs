//! Hot policy: routes, upstreams, blocked paths, headers and backend settings, read from
//! `policies/*.toml`. Three forms: `raw` (serde) → `compile` (validation, all errors) → `model`
//! (immutable, hot-path ready), held by `store` in an `ArcSwap`. Static settings live in
//! `crate::config`, never here.

pub mod compile;
pub mod model;
pub mod raw;
pub mod store;

pub use compile::{compile, read_dir, PolicyError, PolicyErrors, SourceFile};
pub use model::Policy;
pub use store::{PolicyStore, ReloadOutcome};

#[cfg(test)]
mod tests;
