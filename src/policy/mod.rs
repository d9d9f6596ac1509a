//! Hot policy: routes, upstreams, blocked paths, headers and backend settings, read from
//! `policies/*.toml`. Three forms: `raw` (serde) → `compile` (validation, all errors) → `model`
//! (immutable, hot-path ready), held by `store` in an `ArcSwap`. Static settings live in
//! `crate::config`, never here.

pub mod compile;
mod compile_auth;
mod compile_http;
mod compile_limits;
pub mod diff;
pub mod model;
pub mod paths;
pub mod raw;
pub mod reference;
pub mod specs;
pub mod store;

pub use compile::{
    compile, compile_with, read_dir, CompileOptions, PolicyError, PolicyErrors, SourceFile,
};
pub use model::Policy;
pub use store::{PolicyStore, ReloadOutcome};

#[cfg(test)]
mod tests;

/// Whether `capability` is declared by the policy (`auth.capabilities`) or built in.
pub fn compile_auth_known(capability: &str, policy: &Policy) -> bool {
    crate::auth::BUILTIN_CAPABILITIES.contains(&capability)
        || policy
            .auth
            .extra_capabilities
            .iter()
            .any(|c| &**c == capability)
}
