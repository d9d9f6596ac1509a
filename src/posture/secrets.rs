//! Secrets written in the policy files: where they are, the files their `file:` references
//! name, and the check that none is written in clear text.

use super::item::{prod_fail, Item};
use crate::config::Mode;
use crate::policy::SourceFile;

/// Keys whose values are secrets (or carry one, like a webhook URL with its token).
const SECRET_KEYS: [&str; 3] = ["secret", "webhook", "password"];

/// Every secret-bearing value in the policy files: (file, dotted field, value).
pub fn secret_values(files: &[SourceFile]) -> Vec<(String, String, String)> {
    fn walk(v: &toml::Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let here = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    if let (true, toml::Value::String(s)) = (SECRET_KEYS.contains(&k.as_str()), v) {
                        out.push((here, s.clone()));
                    } else {
                        walk(v, &here, out);
                    }
                }
            }
            toml::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut all = Vec::new();
    for f in files {
        let Ok(v) = toml::from_str::<toml::Value>(&f.text) else {
            continue;
        };
        let mut found = Vec::new();
        walk(&v, "", &mut found);
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        all.extend(found.into_iter().map(|(k, s)| (name.clone(), k, s)));
    }
    all
}

/// The files named by `file:` secret references, resolved like the compiler resolves them.
pub fn secret_files(files: &[SourceFile]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for f in files {
        let base = f.path.parent().unwrap_or(std::path::Path::new("."));
        for (file, _, v) in secret_values(std::slice::from_ref(f)) {
            let _ = file;
            if let Some(p) = v.strip_prefix("file:") {
                out.push(base.join(p));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

pub(super) fn secrets_item(files: &[SourceFile], mode: Mode) -> Item {
    let values = secret_values(files);
    let clear: Vec<String> = values
        .iter()
        .filter(|(_, _, v)| !crate::auth::secret::is_reference(v))
        .map(|(f, k, _)| format!("{f}: {k}"))
        .collect();
    if clear.is_empty() {
        return Item::pass(
            "secrets",
            format!(
                "{} secret(s) in policy, all by reference (env:/file:)",
                values.len()
            ),
        );
    }
    Item::new(
        "secrets",
        prod_fail(mode),
        format!("written in clear text: {}", clear.join(", ")),
        "use \"env:NAME\" or \"file:/path\" (a Secret mount) instead",
    )
}
