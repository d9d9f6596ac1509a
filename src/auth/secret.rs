//! Secrets by reference: a policy value `env:NAME` reads an environment variable, `file:/path`
//! reads a file (Kubernetes Secret mounts); anything else is the literal value. Re-read on every
//! reload. Error messages name the reference, never the value.

use std::path::Path;

/// Resolves a secret reference. `base` resolves relative `file:` paths.
pub fn resolve(value: &str, base: &Path) -> Result<String, String> {
    let v = resolve_value(value, base)?;
    // Whatever the policy names as a secret is masked in every log line from now on.
    crate::observability::redact::register_secret(&v);
    Ok(v)
}

fn resolve_value(value: &str, base: &Path) -> Result<String, String> {
    if let Some(name) = value.strip_prefix("env:") {
        return std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("environment variable {name} is not set"));
    }
    if let Some(path) = value.strip_prefix("file:") {
        let p = base.join(path);
        return std::fs::read_to_string(&p)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("cannot read {}: {e}", p.display()));
    }
    Ok(value.to_string())
}

/// Whether a value is a reference rather than a literal.
pub fn is_reference(value: &str) -> bool {
    value.starts_with("env:") || value.starts_with("file:")
}
