//! OCSP stapling. For each served certificate whose chain includes its issuer: an operator's
//! `<name>.ocsp` file beside the pair is used when present; otherwise, when the certificate names
//! an OCSP responder (AIA), a response is fetched (HTTP POST, `application/ocsp-request`),
//! verified (`super::ocsp`) and stapled. It is refreshed at half its validity window (capped by
//! `tls.ocsp_max_refresh_seconds`) with jitter; on errors the last good response keeps being
//! served until it expires, with jittered exponential retries. A `revoked` answer removes the
//! staple at once and is logged as a security event; an expired staple is never served.
//! Good responses are kept in a cache folder so handshakes right after a restart are stapled.
//! A certificate without a responder URL is served without a staple, quietly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::sign::CertifiedKey;

use super::ocsp::{self, CertStatus};
use super::store::{CertEntry, CertStore};

/// Outcomes counted in `portcullis_ocsp_events_total{event}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Good,
    Revoked,
    Unknown,
    FetchError,
    Invalid,
    Expired,
}

impl Event {
    pub const ALL: [Event; 6] = [
        Event::Good,
        Event::Revoked,
        Event::Unknown,
        Event::FetchError,
        Event::Invalid,
        Event::Expired,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Good => "good",
            Event::Revoked => "revoked",
            Event::Unknown => "unknown",
            Event::FetchError => "fetch_error",
            Event::Invalid => "invalid",
            Event::Expired => "expired",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct State {
    /// The staple being served (a verified `good` response) and its validity.
    der: Option<Arc<Vec<u8>>>,
    this_update: i64,
    next_update: Option<i64>,
    /// When to ask the responder (or re-read the operator file) next.
    next_attempt: i64,
    failures: u32,
    last_error: Option<String>,
    /// The operator file's modification time when last read.
    file_mtime: Option<std::time::SystemTime>,
}

/// What `/status` and metrics show per certificate.
#[derive(Debug, Clone)]
pub struct StapleInfo {
    pub name: String,
    pub stapled: bool,
    pub this_update: Option<i64>,
    pub next_update: Option<i64>,
    pub last_error: Option<String>,
}

pub struct Stapler {
    certs: Arc<CertStore>,
    cache_dir: PathBuf,
    max_refresh: i64,
    http: reqwest::Client,
    /// By SHA-256 of the leaf certificate, so a reloaded but unchanged certificate keeps its
    /// staple.
    state: Mutex<HashMap<[u8; 32], State>>,
    events: [AtomicU64; 6],
}

fn now() -> i64 {
    crate::auth::now_unix() as i64
}

fn leaf_id(e: &CertEntry) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, e.key.cert[0].as_ref());
    let mut id = [0u8; 32];
    id.copy_from_slice(d.as_ref());
    id
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// `base` seconds, ±10 %.
fn jitter(base: i64) -> i64 {
    let spread = (base / 10).max(1);
    base + rand::random::<i64>().rem_euclid(2 * spread + 1) - spread
}

/// The client that asks OCSP responders.
fn responder_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::limited(2))
        .build()
        .expect("an HTTP client without custom TLS settings builds")
}

impl Stapler {
    pub fn new(certs: Arc<CertStore>, cache_dir: PathBuf, max_refresh: Duration) -> Arc<Stapler> {
        let http = responder_client();
        Arc::new(Stapler {
            certs,
            cache_dir,
            max_refresh: max_refresh.as_secs().max(1) as i64,
            http,
            state: Mutex::new(HashMap::new()),
            events: Default::default(),
        })
    }

    fn count(&self, e: Event) {
        self.events[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn events(&self) -> Vec<(&'static str, u64)> {
        Event::ALL
            .iter()
            .map(|e| (e.as_str(), self.events[*e as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// Per certificate: whether it is stapled and the staple's validity.
    pub fn info(&self) -> Vec<StapleInfo> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.certs
            .snapshot()
            .entries
            .iter()
            .map(|e| {
                let s = state.get(&leaf_id(e));
                StapleInfo {
                    name: e.name.clone(),
                    stapled: e.stapled.load().is_some(),
                    this_update: s.and_then(|s| s.der.as_ref().map(|_| s.this_update)),
                    next_update: s.and_then(|s| s.next_update),
                    last_error: s.and_then(|s| s.last_error.clone()),
                }
            })
            .collect()
    }

    fn cache_path(&self, id: &[u8; 32]) -> PathBuf {
        self.cache_dir.join(format!("{}.der", hex(id)))
    }

    /// Before serving: staples from the cache, then one fetch each for what is still unstapled.
    pub async fn prime(&self) {
        self.restore_cached();
        self.tick().await;
    }

    /// Staples from the on-disk cache only (no network): what `posture` reports offline.
    pub fn restore_cached(&self) {
        for e in self.certs.snapshot().entries.iter() {
            let Some(issuer) = e.key.cert.get(1) else {
                continue;
            };
            let id = leaf_id(e);
            if let Ok(der) = std::fs::read(self.cache_path(&id)) {
                let leaf = e.key.cert[0].as_ref();
                match ocsp::verify_response(&der, leaf, issuer.as_ref(), now()) {
                    Ok(v) if v.status == CertStatus::Good => {
                        tracing::info!(target: "portcullis::tls", certificate = %e.name, "OCSP staple restored from the cache");
                        self.keep_good(e, &id, Arc::new(der), v.this_update, v.next_update);
                    }
                    _ => {
                        let _ = std::fs::remove_file(self.cache_path(&id));
                    }
                }
            }
        }
    }

    /// Runs until the process ends: one pass a second, each certificate acted on when due.
    pub async fn run(self: Arc<Self>) {
        let mut t = tokio::time::interval(Duration::from_secs(1));
        loop {
            t.tick().await;
            self.tick().await;
        }
    }

    pub async fn tick(&self) {
        let set = self.certs.snapshot();
        for e in set.entries.iter() {
            self.check(e).await;
        }
    }

    async fn check(&self, e: &Arc<CertEntry>) {
        let id = leaf_id(e);
        let now = now();
        let mut st = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.get(&id).cloned().unwrap_or_default()
        };
        // A held staple past its nextUpdate is never served.
        if let (Some(_), Some(next)) = (&st.der, st.next_update) {
            if now > next {
                tracing::warn!(target: "portcullis::security", certificate = %e.name, "OCSP staple expired; serving without one until a fresh response arrives");
                self.count(Event::Expired);
                st.der = None;
                st.next_attempt = now;
            }
        }
        // A reloaded entry of the same certificate gets the staple already held.
        let served = e.stapled.load_full();
        let held = st.der.clone();
        let in_sync = match (&served, &held) {
            (Some(k), Some(d)) => k.ocsp.as_deref() == Some(d.as_slice()),
            (None, None) => true,
            _ => false,
        };
        if !in_sync {
            apply(e, held.as_deref().cloned());
        }
        let Some(issuer) = e.key.cert.get(1).cloned() else {
            self.put(id, st);
            return;
        };
        let file = ocsp_file(&e.cert_path, &e.name);
        let file_mtime = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        let operator = file_mtime.is_some();
        let due = now >= st.next_attempt || (operator && file_mtime != st.file_mtime);
        if !due {
            self.put(id, st);
            return;
        }
        let leaf = e.key.cert[0].as_ref().to_vec();
        let fetched: Result<Vec<u8>, String> = if operator {
            st.file_mtime = file_mtime;
            std::fs::read(&file).map_err(|err| format!("{}: {err}", file.display()))
        } else {
            let Some(url) = ocsp::responder_url(&leaf) else {
                // No responder: served without a staple, quietly. Look again in an hour in
                // case the file appears.
                st.next_attempt = now + 3600;
                self.put(id, st);
                return;
            };
            match ocsp::build_request(&leaf, issuer.as_ref()) {
                Ok(req) => self.fetch(&url, req).await,
                Err(err) => Err(format!("cannot build the OCSP request: {err}")),
            }
        };
        let now = crate::auth::now_unix() as i64;
        match fetched.and_then(|der| {
            ocsp::verify_response(&der, &leaf, issuer.as_ref(), now)
                .map(|v| (der, v))
                .map_err(|err| format!("invalid response: {err}"))
        }) {
            Ok((der, v)) => match v.status {
                CertStatus::Good => {
                    self.count(Event::Good);
                    st.failures = 0;
                    st.last_error = None;
                    let der = Arc::new(der);
                    let _ = std::fs::create_dir_all(&self.cache_dir);
                    if !operator {
                        if let Err(err) =
                            crate::files::write_atomic(&self.cache_path(&id), &der, 0o644)
                        {
                            tracing::debug!(error = %err, "OCSP cache not written");
                        }
                    }
                    st.der = Some(der.clone());
                    st.this_update = v.this_update;
                    st.next_update = v.next_update;
                    let window = v
                        .next_update
                        .map(|n| (n - v.this_update) / 2)
                        .unwrap_or(3600);
                    let refresh = (v.this_update + window - now).clamp(1, self.max_refresh);
                    st.next_attempt = now + jitter(refresh);
                    apply(e, Some((*der).clone()));
                    tracing::info!(target: "portcullis::tls", certificate = %e.name, next_update = ?v.next_update, "OCSP staple refreshed");
                }
                CertStatus::Revoked { revoked_at } => {
                    self.count(Event::Revoked);
                    st.der = None;
                    st.next_update = None;
                    st.last_error = Some(format!("revoked at {revoked_at}"));
                    st.next_attempt = now + jitter(self.max_refresh);
                    let _ = std::fs::remove_file(self.cache_path(&id));
                    apply(e, None);
                    tracing::error!(target: "portcullis::security", certificate = %e.name, revoked_at, "OCSP says the certificate is REVOKED: no staple is served; replace the certificate");
                    crate::observability::alerts::emit(
                        crate::observability::alerts::EventKind::RevokedStaple,
                        None,
                    );
                }
                CertStatus::Unknown => {
                    self.count(Event::Unknown);
                    st.last_error = Some("responder does not know the certificate".into());
                    self.retry_later(&mut st, now, e, "the OCSP responder answered unknown");
                }
            },
            Err(err) => {
                self.count(if err.starts_with("invalid") {
                    Event::Invalid
                } else {
                    Event::FetchError
                });
                st.last_error = Some(err.clone());
                self.retry_later(&mut st, now, e, &err);
            }
        }
        self.put(id, st);
    }

    fn retry_later(&self, st: &mut State, now: i64, e: &CertEntry, why: &str) {
        st.failures = st.failures.saturating_add(1);
        let backoff = (5i64 << st.failures.min(12)).min(self.max_refresh.max(5));
        st.next_attempt = now + jitter(backoff);
        tracing::warn!(
            target: "portcullis::tls",
            certificate = %e.name,
            error = why,
            keeps_serving_last_good = st.der.is_some(),
            retry_in_seconds = st.next_attempt - now,
            "OCSP refresh failed"
        );
    }

    fn keep_good(
        &self,
        e: &CertEntry,
        id: &[u8; 32],
        der: Arc<Vec<u8>>,
        this_update: i64,
        next_update: Option<i64>,
    ) {
        apply(e, Some((*der).clone()));
        let window = next_update.map(|n| (n - this_update) / 2).unwrap_or(3600);
        let st = State {
            der: Some(der),
            this_update,
            next_update,
            next_attempt: (this_update + window).min(now() + self.max_refresh),
            ..State::default()
        };
        self.put(*id, st);
    }

    fn put(&self, id: [u8; 32], st: State) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, st);
    }

    async fn fetch(&self, url: &str, req: Vec<u8>) -> Result<Vec<u8>, String> {
        post_ocsp(&self.http, url, req).await
    }
}

/// The largest OCSP response read; a larger one is refused without reading the rest.
const MAX_OCSP_RESPONSE_BYTES: usize = 64 * 1024;

/// POSTs an OCSP request to `url` and reads the response, at most 64 KiB of it.
async fn post_ocsp(http: &reqwest::Client, url: &str, req: Vec<u8>) -> Result<Vec<u8>, String> {
    let resp = http
        .post(url)
        .header("content-type", "application/ocsp-request")
        .body(req)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    crate::fetch::read_limited(resp, MAX_OCSP_RESPONSE_BYTES, "response over 64 KiB")
        .await
        .map_err(|e| format!("{url}: {e}"))
}

/// `<folder>/<name>.ocsp`, beside the certificate.
fn ocsp_file(cert_path: &Path, name: &str) -> PathBuf {
    cert_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("{name}.ocsp"))
}

/// Serves `e` with `staple` (or without one).
fn apply(e: &CertEntry, staple: Option<Vec<u8>>) {
    match staple {
        Some(der) => {
            let mut k = CertifiedKey::new(e.key.cert.clone(), e.key.key.clone());
            k.ocsp = Some(der);
            e.stapled.store(Some(Arc::new(k)));
        }
        None => e.stapled.store(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::testing::stalling_server;

    #[test]
    fn a_response_is_read_only_up_to_64_kib() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let http = responder_client();
            // An endless chunked body: refused once past 64 KiB, not read to the end (or to
            // the fetch timeout).
            let (url, _hold) = stalling_server(
                "HTTP/1.1 200 OK\r\ncontent-type: application/ocsp-response\r\ntransfer-encoding: chunked\r\n\r\n",
                128 * 1024,
                "/ocsp",
            )
            .await;
            let e = post_ocsp(&http, &url, vec![0x30]).await.unwrap_err();
            assert_eq!(e, format!("{url}: response over 64 KiB"));
            // A declared length over the limit: refused before any of the body is read.
            let (url, _hold) = stalling_server(
                "HTTP/1.1 200 OK\r\ncontent-type: application/ocsp-response\r\ncontent-length: 104857600\r\n\r\n",
                0,
                "/ocsp",
            )
            .await;
            let e = post_ocsp(&http, &url, vec![0x30]).await.unwrap_err();
            assert_eq!(e, format!("{url}: response over 64 KiB"));
            // A response within the limit is read whole.
            let (url, _hold) = stalling_server(
                "HTTP/1.1 200 OK\r\ncontent-type: application/ocsp-response\r\ncontent-length: 16384\r\n\r\n",
                16 * 1024,
                "/ocsp",
            )
            .await;
            assert_eq!(post_ocsp(&http, &url, vec![0x30]).await.unwrap().len(), 16 * 1024);
        });
    }
}
