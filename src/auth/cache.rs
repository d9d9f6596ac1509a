//! The verified-token cache: SHA-256 of the token → the identity it proved, so a signature is
//! checked once per token, not once per request. Sharded to keep contention off the hot path;
//! bounded in entries; an entry never outlives its TTL, the token's own `exp`, or the policy
//! generation that verified it (so a key removed by a reload stops working at once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::identity::Identity;
use crate::clock::now_unix;

const SHARDS: usize = 16;

struct Entry {
    identity: Arc<Identity>,
    inserted: Instant,
    generation: u64,
}

pub struct TokenCache {
    shards: Vec<Mutex<HashMap<[u8; 32], Entry>>>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
}

pub fn token_hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl TokenCache {
    fn shard(&self, key: &[u8; 32]) -> &Mutex<HashMap<[u8; 32], Entry>> {
        &self.shards[key[0] as usize % SHARDS]
    }

    /// A cached identity for this token, if still valid.
    pub fn get(&self, key: &[u8; 32], ttl: Duration, generation: u64) -> Option<Arc<Identity>> {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let valid = match shard.get(key) {
            Some(e) => {
                e.generation == generation
                    && e.inserted.elapsed() < ttl
                    && e.identity.expires_at.is_none_or(|exp| now_unix() < exp)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        if valid {
            self.hits.fetch_add(1, Ordering::Relaxed);
            shard.get(key).map(|e| e.identity.clone())
        } else {
            shard.remove(key);
            self.misses.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    pub fn insert(
        &self,
        key: [u8; 32],
        identity: Arc<Identity>,
        generation: u64,
        max_entries: usize,
    ) {
        let per_shard = (max_entries / SHARDS).max(1);
        let mut shard = self.shard(&key).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= per_shard {
            // Drop expired entries first; if none, drop the oldest.
            let now = now_unix();
            shard.retain(|_, e| e.identity.expires_at.is_none_or(|exp| now < exp));
            if shard.len() >= per_shard {
                if let Some(oldest) = shard
                    .iter()
                    .min_by_key(|(_, e)| e.inserted)
                    .map(|(k, _)| *k)
                {
                    shard.remove(&oldest);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                identity,
                inserted: Instant::now(),
                generation,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(exp: Option<u64>) -> Arc<Identity> {
        let mut i = Identity::anonymous();
        i.expires_at = exp;
        Arc::new(i)
    }

    #[test]
    fn entries_expire_with_the_token_the_ttl_and_the_generation() {
        let c = TokenCache::default();
        let k = token_hash("a");
        c.insert(k, id(Some(now_unix() + 60)), 1, 100);
        assert!(c.get(&k, Duration::from_secs(30), 1).is_some());
        assert!(
            c.get(&k, Duration::from_secs(30), 2).is_none(),
            "new generation re-verifies"
        );
        c.insert(k, id(Some(now_unix() - 1)), 1, 100);
        assert!(
            c.get(&k, Duration::from_secs(30), 1).is_none(),
            "expired token"
        );
        c.insert(k, id(None), 1, 100);
        assert!(c.get(&k, Duration::ZERO, 1).is_none(), "ttl elapsed");
    }

    #[test]
    fn the_cache_is_bounded() {
        let c = TokenCache::default();
        for i in 0..10_000 {
            c.insert(token_hash(&i.to_string()), id(None), 1, 160);
        }
        assert!(c.len() <= 160, "{}", c.len());
    }
}
