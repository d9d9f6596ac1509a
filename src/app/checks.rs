//! The checks `serve` runs at start and on a timer, and `portcullis posture` and `check` run
//! offline: the posture checklist, secret files' permissions, certificates near expiry, and the
//! policy's time-boxed exceptions.

use crate::config::{self, Config, Mode};
use crate::tls::CertStore;
use crate::{auth, policy, tls};

/// The posture checklist for `config`, offline: policy, worker token, listeners, logging,
/// certificates and the OCSP staples in the cache. `serve` runs the same in production.
pub fn posture(config: &Config) -> crate::posture::Report {
    crate::tls::install_crypto_provider();
    let env = |k: &str| config::env_var(k);
    let files = policy::read_dir(&config.policy_dir, !config.policy_dir_explicit);
    // Compiled without the listener check: the `dev-providers` item reports it on its own.
    let options = crate::compile::CompileOptions {
        listener: None,
        ..crate::compile::CompileOptions::for_config(config)
    };
    let compiled = files
        .as_ref()
        .map_err(|e| e.to_string())
        .and_then(|f| crate::compile::compile_with(f, &options).map_err(|e| e.to_string()));
    let files = files.unwrap_or_default();
    let store = match tls::store::find_pairs(&config.cert_dir) {
        Ok(p) if p.is_empty() => Ok(None),
        Err(_) if config.mode == Mode::Development || config.acme.is_some() => Ok(None),
        Err(e) => Err(e.to_string()),
        Ok(_) => CertStore::open(config.cert_dir.clone(), config.default_cert.clone())
            .map(Some)
            .map_err(|errs| {
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
    };
    let mut ocsp = Vec::new();
    let snapshot = match &store {
        Ok(Some(s)) => {
            let stapler = tls::stapler::Stapler::new(
                s.clone(),
                config.data_dir.join("ocsp"),
                config.ocsp_max_refresh,
            );
            stapler.restore_cached();
            let set = s.snapshot();
            for (info, e) in stapler.info().into_iter().zip(set.entries.iter()) {
                ocsp.push(crate::posture::OcspView {
                    has_responder: tls::ocsp::responder_url(e.key.cert[0].as_ref()).is_some()
                        && e.key.cert.len() > 1,
                    name: info.name,
                    stapled: info.stapled,
                    next_update: info.next_update,
                    last_error: info.last_error,
                });
            }
            Some(set)
        }
        _ => None,
    };
    let certs = match &store {
        Err(e) => Err(e.clone()),
        Ok(_) => Ok(snapshot.as_deref()),
    };
    crate::posture::run(&crate::posture::Inputs {
        config,
        policy: compiled.as_ref().map_err(|e| e.clone()),
        files: &files,
        certs,
        ocsp,
        env: &env,
        now: auth::now_unix(),
    })
}

/// Notices changes to the files `file:` secret references name (Kubernetes swaps a Secret
/// mount's contents in place, without touching the policy folder).
#[derive(Default)]
pub struct SecretFiles {
    generation: u64,
    seen: Vec<Option<(std::time::SystemTime, u64)>>,
}

impl SecretFiles {
    fn stamp(p: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    pub fn changed(&mut self, policy: &policy::Policy) -> bool {
        let now: Vec<_> = policy.secret_files.iter().map(|p| Self::stamp(p)).collect();
        if self.generation != policy.generation {
            self.generation = policy.generation;
            self.seen = now;
            return false;
        }
        if now != self.seen {
            self.seen = now;
            return true;
        }
        false
    }
}

/// Warns about certificates with fewer than `warn_days` days left (error once expired).
pub fn warn_expiring(certs: &CertStore, warn_days: u64) {
    let now = auth::now_unix() as i64;
    for e in &certs.snapshot().entries {
        let days_left = (e.not_after - now).div_euclid(86_400);
        if e.not_after <= now {
            tracing::error!(target: "portcullis::tls", certificate = %e.name, "certificate has expired: clients refuse it; replace it");
        } else if days_left < warn_days as i64 {
            tracing::warn!(target: "portcullis::tls", certificate = %e.name, days_left, "certificate expires soon; renew it");
        }
    }
}

/// Logs the blocked paths a policy opens, and those whose exception has already expired.
pub fn log_exceptions(p: &policy::Policy) {
    let now = auth::now_unix();
    for e in &p.blocked.exceptions {
        if now < e.expires_at {
            tracing::warn!(
                target: "portcullis::security",
                path = &*e.path,
                route = &*e.route,
                reason = &*e.reason,
                expires_at = &*e.expires_text,
                "blocked path opened by a policy exception"
            );
        }
    }
    close_expired_exceptions(p, now);
}

/// Logs, once each, the exceptions that have expired: their paths are blocked again.
pub fn close_expired_exceptions(p: &policy::Policy, now: u64) {
    for e in &p.blocked.exceptions {
        if now >= e.expires_at
            && !e
                .closed_logged
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                target: "portcullis::security",
                path = &*e.path,
                route = &*e.route,
                reason = &*e.reason,
                expired_at = &*e.expires_text,
                "blocked-path exception expired: the path is blocked again"
            );
        }
    }
}
