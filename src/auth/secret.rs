//! Secrets by reference: a policy value `env:NAME` reads an environment variable, `file:/path`
//! reads a file (Kubernetes Secret mounts); anything else is the literal value. Re-read on every
//! reload. Error messages name the reference, never the value.

use std::path::{Path, PathBuf};

/// Why a secret reference did not resolve. Names the reference, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Resolves a secret reference. `base` resolves relative `file:` paths.
pub fn resolve(value: &str, base: &Path) -> Result<String, SecretError> {
    let v = resolve_value(value, base)?;
    // Whatever the policy names as a secret is masked in every log line from now on.
    crate::redact::register_secret(&v);
    Ok(v)
}

fn resolve_value(value: &str, base: &Path) -> Result<String, SecretError> {
    if let Some(name) = value.strip_prefix("env:") {
        return std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SecretError::EnvUnset(name.to_string()));
    }
    if let Some(path) = value.strip_prefix("file:") {
        let path = base.join(path);
        return match std::fs::read_to_string(&path) {
            Ok(s) => Ok(s.trim_end_matches(['\n', '\r']).to_string()),
            Err(source) => Err(SecretError::Unreadable { path, source }),
        };
    }
    Ok(value.to_string())
}

/// Whether a value is a reference rather than a literal.
pub fn is_reference(value: &str) -> bool {
    value.starts_with("env:") || value.starts_with("file:")
}
