//! Policy files as read from disk: their text, the errors found in them (file, line and field),
//! the folder reader, and the field path at a byte offset, which places a parse error.

use std::fmt;
use std::path::{Path, PathBuf};

/// One policy file's name and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// One problem in a policy, pointing at the file, line and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}: {}", self.file, self.field, self.message);
        }
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.field, self.message
        )
    }
}

/// All errors of one compile attempt.
#[derive(Debug, Clone)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// The policy shipped inside the binary, used when the policy folder does not exist.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../policies/default.toml");

/// Reads every `*.toml` file of a policy folder (following symlinks, skipping hidden entries such
/// as Kubernetes' `..data`), sorted by name. A missing folder yields the embedded default when
/// `allow_embedded` (the folder was not named by the operator), and is an error otherwise.
pub fn read_dir(dir: &Path, allow_embedded: bool) -> Result<Vec<SourceFile>, PolicyErrors> {
    let one = |line: usize, message: String| {
        PolicyErrors(vec![PolicyError {
            file: dir.display().to_string(),
            line,
            field: "policy_dir".into(),
            message,
        }])
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if allow_embedded && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(vec![SourceFile {
                path: PathBuf::from("<embedded default policy>"),
                text: EMBEDDED_DEFAULT.to_string(),
            }])
        }
        Err(e) => return Err(one(0, format!("cannot read the policy folder: {e}"))),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.ends_with(".toml") && p.is_file()
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(one(0, "no *.toml policy files in the policy folder".into()));
    }
    let mut files = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push(SourceFile { path, text }),
            Err(e) => errors.push(PolicyError {
                file: path.display().to_string(),
                line: 0,
                field: "(file)".into(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(PolicyErrors(errors))
    }
}

/// The dotted field path (`routes[2].upstream`) of the innermost key or value covering `offset`,
/// used to place serde's errors.
pub fn field_path_at(text: &str, offset: usize) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut path = String::new();
    if walk_table(doc.as_table(), offset, &mut path) {
        Some(path)
    } else {
        None
    }
}

fn covers(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn walk_table(table: &toml_edit::Table, offset: usize, path: &mut String) -> bool {
    for (key, item) in table.iter() {
        let key_span = table.key(key).and_then(|k| k.span());
        let base_len = path.len();
        push_key(path, key);
        if covers(key_span.clone(), offset) {
            return true;
        }
        if walk_item(item, offset, path) {
            return true;
        }
        path.truncate(base_len);
    }
    false
}

fn walk_item(item: &toml_edit::Item, offset: usize, path: &mut String) -> bool {
    match item {
        toml_edit::Item::Table(t) => walk_table(t, offset, path) || covers(t.span(), offset),
        toml_edit::Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                let base = path.len();
                path.push_str(&format!("[{i}]"));
                if walk_table(t, offset, path) || covers(t.span(), offset) {
                    return true;
                }
                path.truncate(base);
            }
            false
        }
        toml_edit::Item::Value(v) => walk_value(v, offset, path),
        toml_edit::Item::None => false,
    }
}

fn walk_value(v: &toml_edit::Value, offset: usize, path: &mut String) -> bool {
    match v {
        toml_edit::Value::InlineTable(t) => {
            for (key, val) in t.iter() {
                let base = path.len();
                push_key(path, key);
                if covers(t.key(key).and_then(|k| k.span()), offset)
                    || walk_value(val, offset, path)
                {
                    return true;
                }
                path.truncate(base);
            }
            covers(t.span(), offset)
        }
        toml_edit::Value::Array(a) => {
            for (i, val) in a.iter().enumerate() {
                let base = path.len();
                path.push_str(&format!("[{i}]"));
                if walk_value(val, offset, path) {
                    return true;
                }
                path.truncate(base);
            }
            covers(a.span(), offset)
        }
        other => covers(other.span(), offset),
    }
}
