//! Hot policy: routes, upstreams, blocked paths, headers and backend settings, read from
//! `policies/*.toml`. Three forms: `raw` (serde) → `compile` (validation, all errors) → `model`
//! (immutable, hot-path ready), held by `store` in an `ArcSwap`. Static settings live in
//! `crate::config`, never here.

pub mod compile;
mod compile_auth;
pub mod model;
pub mod raw;
pub mod store;

pub use compile::{
    compile, compile_with, read_dir, CompileOptions, PolicyError, PolicyErrors, SourceFile,
};
pub use model::Policy;
pub use store::{PolicyStore, ReloadOutcome};

#[cfg(test)]
mod tests;
