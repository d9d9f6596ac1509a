//! Who may pass. Providers (`none`/`local` for development, `static` worker token, `jwt` with
//! keys from PEM files or JWKS, `room` tokens), the verified-token cache and capability checks.
//! Owns token handling end to end: a token never leaves this module except as a verified
//! `Identity`, and no error here ever carries token content.

pub mod cache;
mod identity;
pub mod jwks;
pub mod jwt;
pub mod revoked;
pub mod secret;
pub mod worker_token;

use std::sync::Arc;

pub use crate::clock::now_unix;
pub use identity::{
    bearer, query_token, safe_capability_name, strip_query_token, AuthFailure, Identity, Provider,
    BUILTIN_CAPABILITIES, MAX_TOKEN_BYTES,
};

pub use cache::TokenCache;
pub use jwks::JwksRegistry;
pub use worker_token::WorkerToken;

/// Authentication state that outlives policy generations: the worker token, the verified-token
/// cache, JWKS caches and counters.
pub struct AuthState {
    pub worker: arc_swap::ArcSwapOption<WorkerToken>,
    pub cache: TokenCache,
    pub jwks: JwksRegistry,
    pub stats: jwt::VerifyStats,
    pub token_file: std::path::PathBuf,
    /// Revoked token ids, subjects and key ids (kept in step with the shared store).
    pub revocations: Arc<revoked::Revocations>,
}

impl AuthState {
    pub fn new(token_file: std::path::PathBuf) -> Self {
        AuthState {
            worker: arc_swap::ArcSwapOption::empty(),
            cache: TokenCache::default(),
            jwks: JwksRegistry::default(),
            stats: jwt::VerifyStats::default(),
            token_file,
            revocations: Arc::default(),
        }
    }

    /// Resolves the worker token once (environment, file, or generated) and prints the banner.
    pub fn ensure_worker_token(&self) -> Result<(), worker_token::TokenError> {
        if self.worker.load().is_some() {
            return Ok(());
        }
        let env = |k: &str| crate::env::var(k);
        let token = WorkerToken::resolve(&env, self.token_file.clone())?;
        eprintln!("{}", token.banner());
        tracing::info!(source = %token.source_description(), token = %token.masked(), "worker token ready");
        self.worker.store(Some(Arc::new(token)));
        Ok(())
    }
}
