//! Hot policy: routes, upstreams, blocked paths, headers and backend settings, read from
//! `policies/*.toml`. Three forms: `raw` (serde) → `crate::compile` (validation, all errors) →
//! `model` (immutable, hot-path ready), held by `store` in an `ArcSwap`. The files and their
//! errors are `source`. Static settings live in `crate::config`, never here. Nothing in this
//! folder compiles or runs anything: the store is handed its compiler (`store::Loader`).

pub mod diff;
pub mod model;
pub mod paths;
pub mod raw;
pub mod reference;
pub mod source;
pub mod specs;
pub mod store;

pub use model::Policy;
pub use source::{read_dir, PolicyError, PolicyErrors, SourceFile};
pub use store::{Loader, PolicyStore, ReloadOutcome};

/// Whether `capability` is declared by the policy (`auth.capabilities`) or built in.
pub fn compile_auth_known(capability: &str, policy: &Policy) -> bool {
    crate::auth::BUILTIN_CAPABILITIES.contains(&capability)
        || policy
            .auth
            .extra_capabilities
            .iter()
            .any(|c| &**c == capability)
}
