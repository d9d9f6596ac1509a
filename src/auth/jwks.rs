//! JWKS key sets: fetched at start (prewarm), cached with a TTL, refetched on an unknown `kid` at
//! most once per refetch interval, and served stale up to a max-stale window while the identity
//! provider is unreachable. Caches are keyed by URL and outlive policy reloads, so a reload
//! neither drops keys nor triggers a fetch storm.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::identity::AuthFailure;

/// Timing of one JWKS source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksSettings {
    pub ttl: Duration,
    pub refetch_interval: Duration,
    pub max_stale: Duration,
}

pub struct JwksKey {
    pub key: DecodingKey,
    /// The algorithm the JWK pins (`alg`), if it names one.
    pub alg: Option<Algorithm>,
}

#[derive(Default)]
struct FetchTimes {
    /// The last fetch (prewarm, TTL expiry, refetch), when it failed; `None` once one succeeds.
    last_failure: Option<Instant>,
    /// The last refetch caused by an unknown `kid`.
    last_kid_refetch: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    /// No keys yet, or keys past their TTL.
    Refresh,
    /// A token names a `kid` the cached set lacks.
    UnknownKid,
}

struct KeySet {
    keys: HashMap<String, Arc<JwksKey>>,
    fetched_at: Instant,
}

/// The largest key set read; a larger one is refused without reading the rest.
const MAX_KEY_SET_BYTES: usize = 1 << 20;

pub struct JwksCache {
    url: String,
    state: ArcSwapOption<KeySet>,
    /// Serializes fetches; remembers when they happened.
    fetch: tokio::sync::Mutex<FetchTimes>,
    client: reqwest::Client,
    pub fetches: AtomicU64,
    pub fetch_failures: AtomicU64,
}

impl JwksCache {
    fn new(url: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client builds with static settings");
        JwksCache {
            url,
            state: ArcSwapOption::empty(),
            fetch: tokio::sync::Mutex::new(FetchTimes::default()),
            client,
            fetches: AtomicU64::new(0),
            fetch_failures: AtomicU64::new(0),
        }
    }

    async fn fetch_now(&self) -> Result<(), String> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = async {
            let resp = self
                .client
                .get(&self.url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
            let bytes =
                crate::fetch::read_limited(resp, MAX_KEY_SET_BYTES, "key set larger than 1 MiB")
                    .await
                    .map_err(|e| e.to_string())?;
            let set: JwkSet =
                serde_json::from_slice(&bytes).map_err(|e| format!("not a JWK set: {e}"))?;
            let mut keys = HashMap::new();
            for jwk in &set.keys {
                let Some(kid) = jwk.common.key_id.clone() else {
                    continue;
                };
                let Ok(key) = DecodingKey::from_jwk(jwk) else {
                    continue;
                };
                let alg = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok());
                keys.insert(kid, Arc::new(JwksKey { key, alg }));
            }
            Ok(keys)
        }
        .await;
        match result {
            Ok(keys) => {
                tracing::info!(url = %self.url, kids = ?keys.keys().collect::<Vec<_>>(), "JWKS fetched");
                self.state.store(Some(Arc::new(KeySet {
                    keys,
                    fetched_at: Instant::now(),
                })));
                Ok(())
            }
            Err(e) => {
                self.fetch_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed");
                Err(e)
            }
        }
    }

    /// Fetches unless the interval forbids it: at most one unknown-`kid` refetch per
    /// interval, and no more than one refresh attempt per interval while fetches fail (a
    /// successful fetch does not hold back the refresh of keys past their TTL).
    async fn maybe_fetch(&self, why: Why, interval: Duration, fetched_before: Option<Instant>) {
        let mut times = self.fetch.lock().await;
        // Someone else fetched while we waited for the lock.
        let current = self.state.load().as_ref().map(|s| s.fetched_at);
        if current.is_some() && current != fetched_before {
            return;
        }
        let recent = |t: Option<Instant>| t.is_some_and(|t| t.elapsed() < interval);
        match why {
            Why::UnknownKid if recent(times.last_kid_refetch) => return,
            // Keys past their TTL are fetched again however recently the last fetch succeeded
            // (a TTL shorter than the interval still refreshes once per TTL); only failures
            // are spaced out.
            Why::Refresh if recent(times.last_failure) => return,
            _ => {}
        }
        let now = Instant::now();
        if why == Why::UnknownKid {
            times.last_kid_refetch = Some(now);
        }
        times.last_failure = self.fetch_now().await.is_err().then_some(now);
    }

    /// The key for `kid`, fetching as the settings allow.
    pub async fn key(&self, kid: &str, s: JwksSettings) -> Result<Arc<JwksKey>, AuthFailure> {
        let snapshot = self.state.load_full();
        let why = match &snapshot {
            Some(set) if set.fetched_at.elapsed() < s.ttl => match set.keys.get(kid) {
                Some(k) => return Ok(k.clone()),
                None => Why::UnknownKid,
            },
            _ => Why::Refresh,
        };
        self.maybe_fetch(
            why,
            s.refetch_interval,
            snapshot.as_ref().map(|s| s.fetched_at),
        )
        .await;
        match self.state.load_full() {
            Some(set) if set.fetched_at.elapsed() < s.ttl + s.max_stale => {
                set.keys.get(kid).cloned().ok_or(AuthFailure::Invalid)
            }
            _ => Err(AuthFailure::KeysUnavailable),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Every JWKS source in use, by URL.
#[derive(Default)]
pub struct JwksRegistry {
    caches: Mutex<HashMap<String, Arc<JwksCache>>>,
}

impl JwksRegistry {
    pub fn get(&self, url: &str) -> Arc<JwksCache> {
        let mut m = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(url.to_string())
            .or_insert_with(|| Arc::new(JwksCache::new(url.to_string())))
            .clone()
    }

    /// Fetches every URL that has no keys yet (start-up and after a reload adds an issuer).
    pub async fn prewarm(&self, urls: impl IntoIterator<Item = String>) {
        for url in urls {
            let cache = self.get(&url);
            if cache.state.load().is_none() {
                let mut times = cache.fetch.lock().await;
                if cache.state.load().is_none() {
                    let now = Instant::now();
                    times.last_failure = cache.fetch_now().await.is_err().then_some(now);
                }
            }
        }
    }

    pub fn all(&self) -> Vec<Arc<JwksCache>> {
        self.caches
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::testing::stalling_server;

    #[test]
    fn reading_stops_at_the_limit_without_waiting_for_the_rest() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // An endless chunked body: refused once past 1 MiB, not read to the end (or to
            // the fetch timeout).
            let (url, _hold) = stalling_server(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
                (1 << 20) + 64 * 1024,
                "/jwks.json",
            )
            .await;
            let cache = JwksCache::new(url);
            let e = cache.fetch_now().await.unwrap_err();
            assert!(e.contains("larger than 1 MiB"), "{e}");
            // A declared length over the limit: refused before any of the body is read.
            let (url, _hold) = stalling_server(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\n\r\n",
                0,
                "/jwks.json",
            )
            .await;
            let cache = JwksCache::new(url);
            let e = cache.fetch_now().await.unwrap_err();
            assert!(e.contains("larger than 1 MiB"), "{e}");
            assert_eq!(cache.fetch_failures.load(Ordering::Relaxed), 1);
        });
    }
}
