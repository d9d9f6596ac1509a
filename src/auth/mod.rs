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
    /// The token before the last rotation, still accepted until its overlap ends.
    pub previous_worker: arc_swap::ArcSwapOption<PreviousToken>,
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
            previous_worker: arc_swap::ArcSwapOption::empty(),
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

    /// Whether `presented` is the worker token, or the previous one within its overlap.
    pub fn worker_matches(&self, presented: &str, now_unix: u64) -> bool {
        if self
            .worker
            .load()
            .as_ref()
            .is_some_and(|w| w.matches(presented))
        {
            return true;
        }
        self.previous_worker
            .load()
            .as_ref()
            .is_some_and(|p| now_unix < p.until_unix && p.token.matches(presented))
    }

    /// Re-reads the worker token's source. When it changed, the new token takes over at once
    /// and the old one stays accepted for `grace` (none when zero). An unreadable source keeps
    /// the current token. Returns what happened, for the log.
    pub fn refresh_worker_token(
        &self,
        now_unix: u64,
        grace: std::time::Duration,
    ) -> Result<Option<Rotation>, worker_token::TokenError> {
        let Some(current) = self.worker.load_full() else {
            return Ok(None);
        };
        let Some(new) = current.reread()? else {
            return Ok(None);
        };
        let until_unix = now_unix + grace.as_secs();
        let rotation = Rotation {
            new: new.masked(),
            previous: current.masked(),
            previous_until_unix: (!grace.is_zero()).then_some(until_unix),
        };
        self.previous_worker.store((!grace.is_zero()).then(|| {
            Arc::new(PreviousToken {
                token: (*current).clone(),
                until_unix,
            })
        }));
        self.worker.store(Some(Arc::new(new)));
        Ok(Some(rotation))
    }

    /// Ends the previous token's overlap once its time has come: returns its masked form, once.
    pub fn end_overlap(&self, now_unix: u64) -> Option<String> {
        let p = self.previous_worker.load_full()?;
        if now_unix < p.until_unix {
            return None;
        }
        let ended = self
            .previous_worker
            .compare_and_swap(&p, None::<Arc<PreviousToken>>);
        std::sync::Arc::ptr_eq(ended.as_ref()?, &p).then(|| p.token.masked())
    }
}

/// A rotated-out worker token and when its overlap ends.
pub struct PreviousToken {
    pub token: WorkerToken,
    pub until_unix: u64,
}

/// A worker-token rotation, masked for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub new: String,
    pub previous: String,
    /// When the previous token stops being accepted; `None` when it already has.
    pub previous_until_unix: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write(path: &std::path::Path, token: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, format!("worker_auth_token: \"{token}\"\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn a_rotated_token_overlaps_for_its_grace_and_the_end_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deployment.yaml");
        let (old, new) = ("old-token-0123456789abcdef", "new-token-0123456789abcdef");
        write(&file, old);
        let auth = AuthState::new(file.clone());
        let env = |_: &str| None;
        let t = WorkerToken::resolve(&env, file.clone()).unwrap();
        auth.worker.store(Some(Arc::new(t)));

        // Unchanged source: nothing happens.
        assert_eq!(
            auth.refresh_worker_token(1000, Duration::from_secs(60))
                .unwrap(),
            None
        );
        write(&file, new);
        let r = auth
            .refresh_worker_token(1000, Duration::from_secs(60))
            .unwrap()
            .expect("a rotation");
        assert_eq!(r.previous_until_unix, Some(1060));
        assert!(!r.new.contains(new) && !r.previous.contains(old), "{r:?}");
        assert!(auth.worker_matches(new, 1000));
        assert!(auth.worker_matches(old, 1059));
        assert!(!auth.worker_matches(old, 1060));
        assert!(!auth.worker_matches("another-token-0123456789", 1000));
        assert_eq!(auth.end_overlap(1059), None);
        assert!(auth.end_overlap(1060).is_some());
        assert_eq!(auth.end_overlap(1061), None, "reported once");

        // With no grace the old token stops at once.
        write(&file, old);
        let r = auth
            .refresh_worker_token(2000, Duration::ZERO)
            .unwrap()
            .unwrap();
        assert_eq!(r.previous_until_unix, None);
        assert!(auth.worker_matches(old, 2000) && !auth.worker_matches(new, 2000));

        // An emptied or broken source keeps the current token.
        std::fs::write(&file, "# nothing\n").unwrap();
        assert!(auth
            .refresh_worker_token(3000, Duration::from_secs(60))
            .is_err());
        assert!(auth.worker_matches(old, 3000));
        std::fs::remove_file(&file).unwrap();
        assert!(auth
            .refresh_worker_token(3000, Duration::from_secs(60))
            .is_err());
        assert!(auth.worker_matches(old, 3000));
    }

    #[test]
    fn a_token_from_a_variable_never_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let auth = AuthState::new(dir.path().join("deployment.yaml"));
        let env = |k: &str| {
            (k == "PORTCULLIS_WORKER_TOKEN").then(|| "env-token-0123456789abcdef".to_string())
        };
        let t = WorkerToken::resolve(&env, dir.path().join("deployment.yaml")).unwrap();
        auth.worker.store(Some(Arc::new(t)));
        assert_eq!(
            auth.refresh_worker_token(1, Duration::from_secs(60))
                .unwrap(),
            None
        );
    }
}
