//! The `static` provider's worker token. Resolution order: `PORTCULLIS_WORKER_TOKEN`, then
//! `WORKER_AUTH_TOKEN`, then `PORTCULLIS_WORKER_TOKEN_FILE` (a file holding the token alone: a
//! mounted Secret), then the token file (`worker_auth_token:` in
//! `$XDG_CONFIG_HOME/portcullis/deployment.yaml` unless overridden), then a freshly generated
//! 32-byte token saved to that file with mode 0600. A token file that is a link, not a regular
//! file, owned by another uid or readable by group or others is refused. Comparison is
//! constant-time.
//!
//! A token read from a file is re-read while the gateway runs ([`WorkerToken::reread`]), so it
//! rotates without a restart; a token from a variable is fixed for the process's life.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Env(&'static str),
    /// `PORTCULLIS_WORKER_TOKEN_FILE`: a file holding the token alone.
    Reference,
    File,
    Generated,
}

#[derive(Clone)]
pub struct WorkerToken {
    token: String,
    pub source: TokenSource,
    /// Where the token was read or saved (the token file, or the referenced file).
    pub file: PathBuf,
}

impl fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerToken")
            .field("token", &self.masked())
            .field("source", &self.source)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}: the token file is readable by group or others (mode {1:o}); run: chmod 600 {0}")]
    Permissions(String, u32),
    #[error("{0}: cannot read the token file: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: cannot write the token file: {1}")]
    Write(String, std::io::Error),
    #[error("{0}: the worker token is too short ({1} characters; at least 16)")]
    TooShort(String, usize),
    #[error("{0}: the token file is a symbolic link; it must be a regular file (put the file itself there)")]
    Link(String),
    #[error("{0}: the token file is not a regular file")]
    NotRegular(String),
    #[error(
        "{0}: the token file is owned by uid {1}, not by the gateway's uid {2}; run: chown {2} {0}"
    )]
    Owner(String, u32, u32),
    #[error("{0}: the file no longer holds a worker token")]
    Gone(String),
}

/// The default token file: `$XDG_CONFIG_HOME/portcullis/deployment.yaml`, else
/// `$HOME/.config/portcullis/deployment.yaml`.
pub fn default_token_file() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("portcullis").join("deployment.yaml")
}

/// 32 random bytes, URL-safe base64 without padding.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads `worker_auth_token:` from a small YAML file (one `key: value` per line). The file is
/// opened without following a link, and what was opened must be a regular file owned by the
/// gateway's own uid with no access for group or others: a link or a file someone else planted
/// never supplies the token.
fn read_token_file(path: &Path) -> Result<Option<String>, TokenError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let p = path.display().to_string();
    // O_NONBLOCK: a planted FIFO must not hang the start; it is refused below.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Err(TokenError::Link(p)),
        Err(e) => return Err(TokenError::Read(p, e)),
    };
    // The checks are on the file that was opened (fstat), not on the name.
    let meta = file
        .metadata()
        .map_err(|e| TokenError::Read(p.clone(), e))?;
    if !meta.file_type().is_file() {
        return Err(TokenError::NotRegular(p));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(TokenError::Owner(p, meta.uid(), uid));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Permissions(p, mode));
    }
    let mut text = String::new();
    file.take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| TokenError::Read(p.clone(), e))?;
    for line in text.lines() {
        if let Some(v) = line.trim().strip_prefix("worker_auth_token:") {
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            if !v.is_empty() {
                return Ok(Some(v.to_string()));
            }
        }
    }
    Ok(None)
}

/// Reads a file that holds the token alone (`PORTCULLIS_WORKER_TOKEN_FILE`), as a mounted
/// Secret does: links are followed (a Secret volume is made of them), the content is trimmed.
fn read_reference(path: &Path) -> Result<String, TokenError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| TokenError::Read(p.clone(), e))?;
    let t = text.trim().to_string();
    if t.is_empty() {
        return Err(TokenError::Gone(p));
    }
    if t.len() < 16 {
        return Err(TokenError::TooShort(p, t.len()));
    }
    Ok(t)
}

/// Writes the token file through `crate::files::write_atomic`: a temporary file with a random
/// name, created exclusively and without following links, then renamed over the file. A link
/// planted beside the file (say at a predictable temporary name) is never written through.
fn write_token_file(path: &Path, token: &str) -> Result<(), TokenError> {
    use std::os::unix::fs::DirBuilderExt;
    let p = path.display().to_string();
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| TokenError::Write(p.clone(), e))?;
    }
    let text = format!(
        "# Portcullis deployment settings. Keep this file private (mode 0600).\nworker_auth_token: \"{token}\"\n"
    );
    crate::files::write_atomic(path, text.as_bytes(), 0o600).map_err(|e| TokenError::Write(p, e))
}

impl WorkerToken {
    /// Resolves the token: environment, then file, then generated (and saved).
    pub fn resolve(
        env: &dyn Fn(&str) -> Option<String>,
        file: PathBuf,
    ) -> Result<WorkerToken, TokenError> {
        let t = Self::resolve_unregistered(env, file)?;
        crate::redact::register_secret(&t.token);
        Ok(t)
    }

    fn resolve_unregistered(
        env: &dyn Fn(&str) -> Option<String>,
        file: PathBuf,
    ) -> Result<WorkerToken, TokenError> {
        for name in ["PORTCULLIS_WORKER_TOKEN", "WORKER_AUTH_TOKEN"] {
            if let Some(t) = env(name) {
                let t = t.trim().to_string();
                if t.len() < 16 {
                    return Err(TokenError::TooShort(name.to_string(), t.len()));
                }
                return Ok(WorkerToken {
                    token: t,
                    source: TokenSource::Env(name),
                    file,
                });
            }
        }
        if let Some(path) = env("PORTCULLIS_WORKER_TOKEN_FILE") {
            let file = PathBuf::from(path);
            let token = read_reference(&file)?;
            return Ok(WorkerToken {
                token,
                source: TokenSource::Reference,
                file,
            });
        }
        if let Some(t) = read_token_file(&file)? {
            if t.len() < 16 {
                return Err(TokenError::TooShort(file.display().to_string(), t.len()));
            }
            return Ok(WorkerToken {
                token: t,
                source: TokenSource::File,
                file,
            });
        }
        let token = generate();
        write_token_file(&file, &token)?;
        Ok(WorkerToken {
            token,
            source: TokenSource::Generated,
            file,
        })
    }

    /// Reads the token's source again: `Some` with the new token when it changed, `None` when
    /// it did not or cannot (a variable). An unreadable or emptied source is an error and the
    /// caller keeps the token it has.
    pub fn reread(&self) -> Result<Option<WorkerToken>, TokenError> {
        let token = match self.source {
            TokenSource::Env(_) => return Ok(None),
            TokenSource::Reference => read_reference(&self.file)?,
            TokenSource::File | TokenSource::Generated => {
                let p = self.file.display().to_string();
                let t = read_token_file(&self.file)?.ok_or_else(|| TokenError::Gone(p.clone()))?;
                if t.len() < 16 {
                    return Err(TokenError::TooShort(p, t.len()));
                }
                t
            }
        };
        if self.matches(&token) {
            return Ok(None);
        }
        crate::redact::register_secret(&token);
        Ok(Some(WorkerToken {
            token,
            source: self.source,
            file: self.file.clone(),
        }))
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        self.token.len() == presented.len()
            && bool::from(self.token.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// First and last four characters.
    pub fn masked(&self) -> String {
        let t = &self.token;
        if t.len() < 12 {
            return "****".into();
        }
        format!("{}…{}", &t[..4], &t[t.len() - 4..])
    }

    pub fn source_description(&self) -> String {
        match self.source {
            TokenSource::Env(name) => format!("environment variable {name}"),
            TokenSource::Reference => format!(
                "file {} (PORTCULLIS_WORKER_TOKEN_FILE)",
                self.file.display()
            ),
            TokenSource::File => format!("token file {}", self.file.display()),
            TokenSource::Generated => {
                format!("generated and saved to {} (mode 0600)", self.file.display())
            }
        }
    }

    /// The start-up banner. The full `Authorization` line is shown only when the token was just
    /// generated, so it is printed once in the token's life.
    pub fn banner(&self) -> String {
        let mut s = format!(
            "portcullis: auth provider static: worker token {} from {}",
            self.masked(),
            self.source_description()
        );
        if self.source == TokenSource::Generated {
            s.push_str(&format!(
                "\n  use it as:  Authorization: Bearer {}",
                self.token
            ));
        }
        s
    }

    /// The token itself, for the CLI that generated it.
    pub fn expose(&self) -> &str {
        &self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn env_wins_over_file_and_file_over_generated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p/deployment.yaml");
        let gen = WorkerToken::resolve(&|_| None, file.clone()).unwrap();
        assert_eq!(gen.source, TokenSource::Generated);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = WorkerToken::resolve(&|_| None, file.clone()).unwrap();
        assert_eq!(again.source, TokenSource::File);
        assert!(again.matches(gen.expose()));
        let env =
            |k: &str| (k == "WORKER_AUTH_TOKEN").then(|| "from-the-environment-0123".to_string());
        let e = WorkerToken::resolve(&env, file.clone()).unwrap();
        assert_eq!(e.source, TokenSource::Env("WORKER_AUTH_TOKEN"));
        assert!(e.matches("from-the-environment-0123"));
        assert!(!e.matches("from-the-environment-0124"));
        assert!(!e.matches("short"));
    }

    #[test]
    fn the_token_file_is_never_written_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deployment.yaml");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        // Links at the names a writer might use for its temporary file.
        for name in [
            "deployment.yaml.tmp",
            "deployment.tmp",
            ".deployment.yaml.tmp",
        ] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        let t = WorkerToken::resolve(&|_| None, file.clone()).unwrap();
        assert_eq!(t.source, TokenSource::Generated);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let again = WorkerToken::resolve(&|_| None, file).unwrap();
        assert!(again.matches(t.expose()));
    }

    #[test]
    fn a_readable_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deployment.yaml");
        std::fs::write(&file, "worker_auth_token: abcdefghijklmnopqrstuvwxyz\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = WorkerToken::resolve(&|_| None, file).unwrap_err();
        assert!(e.to_string().contains("readable by group or others"), "{e}");
    }

    #[test]
    fn a_token_file_behind_a_link_or_not_ours_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let private = |name: &str| {
            let f = dir.path().join(name);
            std::fs::write(&f, "worker_auth_token: abcdefghijklmnopqrstuvwxyz\n").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
            f
        };
        // A link planted at the token file's name, to a private file with a token in it.
        let target = private("elsewhere.yaml");
        let file = dir.path().join("deployment.yaml");
        std::os::unix::fs::symlink(&target, &file).unwrap();
        let e = WorkerToken::resolve(&|_| None, file.clone()).unwrap_err();
        assert!(matches!(e, TokenError::Link(_)), "{e}");
        assert!(
            e.to_string().starts_with(&format!(
                "{}: the token file is a symbolic link",
                file.display()
            )),
            "{e}"
        );
        // A dangling link is refused too, never replaced by a generated token.
        let dangling = dir.path().join("dangling.yaml");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        let e = WorkerToken::resolve(&|_| None, dangling).unwrap_err();
        assert!(matches!(e, TokenError::Link(_)), "{e}");
        // Not a regular file (a FIFO must not hang the start either).
        let fifo = dir.path().join("fifo.yaml");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = WorkerToken::resolve(&|_| None, fifo).unwrap_err();
        assert!(matches!(e, TokenError::NotRegular(_)), "{e}");
        // Owned by another user: made so where the test may chown, else a system file.
        let foreign = private("foreign.yaml");
        let foreign = if std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).is_ok() {
            foreign
        } else {
            PathBuf::from("/etc/passwd")
        };
        let e = WorkerToken::resolve(&|_| None, foreign).unwrap_err();
        assert!(matches!(e, TokenError::Owner(..)), "{e}");
        assert!(e.to_string().contains("not by the gateway's uid"), "{e}");
    }

    #[test]
    fn the_banner_masks_a_known_token() {
        let t = WorkerToken {
            token: "abcdEFGHijklMNOPqrst".into(),
            source: TokenSource::File,
            file: "/x".into(),
        };
        let b = t.banner();
        assert!(b.contains("abcd…qrst"));
        assert!(!b.contains("EFGH"));
    }
}
