//! The in-process worker API: models, `whoami`, collections and object storage under the data
//! folder. Storage writes are atomic (temp file, fsync, rename, fsync of the folder), keys cannot
//! name anything outside their bucket, and bodies over the policy's limit get 413.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use tokio::io::AsyncWriteExt;

use super::{error, full, json, Body};
use crate::policy::PolicyStore;

pub struct Worker {
    pub policy: Arc<PolicyStore>,
    pub data_dir: PathBuf,
}

/// A bucket name: lower-case letters, digits, `.`, `_`, `-`; starts with a letter or digit.
pub fn valid_bucket(b: &str) -> bool {
    (1..=63).contains(&b.len())
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// An object key: one path segment of letters, digits, `.`, `_`, `-`, not starting with `.`
/// (so never `.`, `..` or a hidden temp file).
pub fn valid_key(k: &str) -> bool {
    (1..=255).contains(&k.len())
        && k.as_bytes()[0] != b'.'
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Splits `/admin/storage/{bucket}/{key}` into validated, decoded parts.
fn storage_target(path: &str) -> Result<(String, String), (u16, &'static str)> {
    let rest = path
        .strip_prefix("/admin/storage/")
        .ok_or((404, "not_found"))?;
    let mut parts = rest.split('/');
    let (Some(b), Some(k), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err((400, "invalid_storage_path"));
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
    };
    let (Ok(b), Ok(k)) = (decode(b), decode(k)) else {
        return Err((400, "invalid_storage_path"));
    };
    if !valid_bucket(&b) {
        return Err((400, "invalid_bucket"));
    }
    if !valid_key(&k) {
        return Err((400, "invalid_key"));
    }
    Ok((b, k))
}

impl Worker {
    fn storage_root(&self) -> PathBuf {
        self.data_dir.join("storage")
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/v1/models") => {
                let policy = self.policy.snapshot();
                let data: Vec<_> = policy
                    .worker
                    .models
                    .iter()
                    .map(|m| serde_json::json!({"id": m, "object": "model", "owned_by": "portcullis"}))
                    .collect();
                json(200, &serde_json::json!({"object": "list", "data": data}))
            }
            (Method::GET, "/whoami") => {
                let h = |n: &str| {
                    req.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                json(
                    200,
                    &serde_json::json!({
                        "subject": h("x-portcullis-subject"),
                        "auth": h("x-portcullis-auth"),
                        "capabilities": h("x-portcullis-capabilities"),
                        "client_cert": h("x-portcullis-client-cert"),
                        "route": h("x-portcullis-route"),
                        "request_id": h("x-request-id"),
                        "forwarded_for": h("x-forwarded-for"),
                        "forwarded_proto": h("x-forwarded-proto"),
                        "forwarded_host": h("x-forwarded-host"),
                    }),
                )
            }
            (Method::GET, "/admin/collections") => self.collections().await,
            (m, p) if p.starts_with("/admin/storage/") => {
                let (bucket, key) = match storage_target(p) {
                    Ok(t) => t,
                    Err((status, code)) => return error(status, code),
                };
                match m {
                    Method::PUT => self.put(&bucket, &key, req).await,
                    Method::GET => self.get(&bucket, &key).await,
                    Method::DELETE => self.delete(&bucket, &key).await,
                    _ => error(405, "method_not_allowed"),
                }
            }
            _ => error(404, "not_found"),
        }
    }

    async fn collections(&self) -> Response<Body> {
        let root = self.storage_root();
        let mut out = Vec::new();
        if let Ok(mut rd) = tokio::fs::read_dir(&root).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                let name = e.file_name().to_string_lossy().into_owned();
                if !valid_bucket(&name) {
                    continue;
                }
                let mut objects = 0u64;
                if let Ok(mut inner) = tokio::fs::read_dir(e.path()).await {
                    while let Ok(Some(o)) = inner.next_entry().await {
                        if valid_key(&o.file_name().to_string_lossy()) {
                            objects += 1;
                        }
                    }
                }
                out.push(serde_json::json!({"name": name, "objects": objects}));
            }
        }
        out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        json(200, &serde_json::json!({"collections": out}))
    }

    async fn put(&self, bucket: &str, key: &str, req: Request<Incoming>) -> Response<Body> {
        let limit = self.policy.snapshot().worker.max_object_bytes;
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return error(413, "object_too_large");
        }
        let dir = self.storage_root().join(bucket);
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            tracing::error!(error = %e, bucket, "storage: cannot create bucket folder");
            return io_error(&e);
        }
        let tmp = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
        let result = write_atomically(&tmp, &dir.join(key), req.into_body(), limit).await;
        match result {
            Ok(bytes) => json(
                201,
                &serde_json::json!({"bucket": bucket, "key": key, "bytes": bytes}),
            ),
            Err(WriteError::TooLarge) => error(413, "object_too_large"),
            Err(WriteError::Body) => error(400, "incomplete_body"),
            Err(WriteError::Io(e)) => {
                tracing::error!(error = %e, bucket, key, "storage: write failed; nothing was stored");
                io_error(&e)
            }
        }
    }

    async fn get(&self, bucket: &str, key: &str) -> Response<Body> {
        match tokio::fs::read(self.storage_root().join(bucket).join(key)).await {
            Ok(bytes) => Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .body(full(bytes))
                .expect("valid response"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => error(404, "not_found"),
            Err(e) => {
                tracing::error!(error = %e, "storage: read failed");
                error(500, "storage_unavailable")
            }
        }
    }

    async fn delete(&self, bucket: &str, key: &str) -> Response<Body> {
        let dir = self.storage_root().join(bucket);
        match tokio::fs::remove_file(dir.join(key)).await {
            Ok(()) => {
                let _ = sync_dir(dir).await;
                Response::builder()
                    .status(204)
                    .body(full(Vec::new()))
                    .expect("valid response")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => error(404, "not_found"),
            Err(e) => {
                tracing::error!(error = %e, "storage: delete failed");
                error(500, "storage_unavailable")
            }
        }
    }
}

/// A full disk or an exhausted quota is the client's to hear about (`507`, so it can retry
/// later); anything else is ours (`500`).
fn io_error(e: &std::io::Error) -> Response<Body> {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => error(507, "storage_full"),
        _ => error(500, "storage_unavailable"),
    }
}

enum WriteError {
    TooLarge,
    Body,
    Io(std::io::Error),
}

async fn sync_dir(dir: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Streams the body into `tmp`, fsyncs it, renames it over `target` and fsyncs the folder. On any
/// failure the temp file is removed, so the real name only ever holds a complete object.
async fn write_atomically(
    tmp: &Path,
    target: &Path,
    mut body: Incoming,
    limit: u64,
) -> Result<u64, WriteError> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .await
        .map_err(WriteError::Io)?;
    let mut written = 0u64;
    let outcome = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| WriteError::Body)?;
            if let Ok(data) = frame.into_data() {
                written += data.len() as u64;
                if written > limit {
                    return Err(WriteError::TooLarge);
                }
                file.write_all(&data).await.map_err(WriteError::Io)?;
            }
        }
        file.flush().await.map_err(WriteError::Io)?;
        file.sync_all().await.map_err(WriteError::Io)?;
        Ok(())
    }
    .await;
    drop(file);
    if let Err(e) = outcome {
        let _ = tokio::fs::remove_file(tmp).await;
        return Err(e);
    }
    if let Err(e) = tokio::fs::rename(tmp, target).await {
        let _ = tokio::fs::remove_file(tmp).await;
        return Err(WriteError::Io(e));
    }
    if let Some(dir) = target.parent() {
        sync_dir(dir.to_path_buf()).await.map_err(WriteError::Io)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_their_bucket() {
        for bad in ["..", ".", ".tmp-1", "a/b", "", "/etc/passwd", "a\\b", "a b"] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        assert!(valid_key("report-2026.json"));
        assert!(!valid_bucket("..") && !valid_bucket("A") && valid_bucket("logs"));
    }

    #[test]
    fn storage_paths_are_decoded_then_checked() {
        assert!(storage_target("/admin/storage/b/%2e%2e").is_err());
        assert!(storage_target("/admin/storage/b//etc/passwd").is_err());
        assert!(storage_target("/admin/storage/b/a/../c").is_err());
        assert!(storage_target("/admin/storage/b/%2Fetc%2Fpasswd").is_err());
        assert_eq!(
            storage_target("/admin/storage/b/k%41").ok(),
            Some(("b".into(), "kA".into()))
        );
    }
}
