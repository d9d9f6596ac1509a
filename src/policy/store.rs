//! The live policy: an `ArcSwap<Policy>` plus reload bookkeeping. A reload compiles the whole
//! folder and swaps only on success; a failure is logged with every error, counted, and leaves
//! the running policy in place. Readers never block writers or each other. The compiler and
//! what a rejection sets off are handed in (`Loader`, built by `crate::compile::open_store`), so
//! the store knows nothing of how a policy is compiled or vetted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::model::Policy;
use super::source::{read_dir, PolicyErrors, SourceFile};

/// Compiles a folder's files and vets the result, returning every error.
pub type Compiler = Box<dyn Fn(&[SourceFile]) -> Result<Policy, PolicyErrors> + Send + Sync>;

/// How the store turns a folder's files into a policy, and what a rejected reload sets off.
pub struct Loader {
    pub compile: Compiler,
    /// Runs after a reload is rejected (the running policy is kept).
    pub rejected: Box<dyn Fn(&PolicyErrors) + Send + Sync>,
}

pub struct PolicyStore {
    dir: PathBuf,
    allow_embedded: bool,
    loader: Loader,
    current: ArcSwap<Policy>,
    /// Serializes reloads so two events cannot race to install out of order.
    reload_lock: Mutex<()>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Called with each newly applied policy (JWKS prewarm, worker token resolution).
    on_applied: std::sync::OnceLock<AppliedHook>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("dir", &self.dir)
            .field("generation", &self.generation())
            .finish()
    }
}

/// Runs for each policy about to be applied.
pub type AppliedHook = Box<dyn Fn(&Arc<Policy>) + Send + Sync>;

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    Applied { generation: u64 },
    Unchanged,
    Rejected(PolicyErrors),
}

impl PolicyStore {
    /// Loads and compiles the folder; the gateway does not start on a broken policy.
    pub fn open(
        dir: PathBuf,
        allow_embedded: bool,
        loader: Loader,
    ) -> Result<Arc<PolicyStore>, PolicyErrors> {
        let files = read_dir(&dir, allow_embedded)?;
        let mut policy = (loader.compile)(&files)?;
        policy.generation = 1;
        Ok(Arc::new(PolicyStore {
            dir,
            allow_embedded,
            loader,
            current: ArcSwap::from_pointee(policy),
            reload_lock: Mutex::new(()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_error: Mutex::new(None),
            on_applied: std::sync::OnceLock::new(),
        }))
    }

    /// Registers the hook run for every policy about to be applied (once).
    pub fn set_on_applied(&self, hook: AppliedHook) {
        let _ = self.on_applied.set(hook);
    }

    /// The snapshot a request works against.
    #[inline]
    pub fn snapshot(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Re-reads and compiles the folder; installs the result only if it compiles.
    pub fn reload(&self) -> ReloadOutcome {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = read_dir(&self.dir, self.allow_embedded)
            .and_then(|files| (self.loader.compile)(&files));
        match result {
            Ok(mut policy) => {
                let generation = self.current.load().generation + 1;
                policy.generation = generation;
                let policy = Arc::new(policy);
                if let Some(hook) = self.on_applied.get() {
                    hook(&policy);
                }
                self.current.store(policy);
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                tracing::info!(generation, dir = %self.dir.display(), "policy applied");
                ReloadOutcome::Applied { generation }
            }
            Err(errors) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                (self.loader.rejected)(&errors);
                let generation = self.current.load().generation;
                tracing::error!(
                    kept_generation = generation,
                    errors = errors.0.len(),
                    "policy reload rejected; keeping the running policy:\n{errors}"
                );
                if let Ok(mut e) = self.last_error.lock() {
                    *e = Some(errors.to_string());
                }
                ReloadOutcome::Rejected(errors)
            }
        }
    }
}
