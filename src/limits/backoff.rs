//! Auth-failure backoff: after `max_failures` failed authentications from one client (bucketed
//! IP) within `window`, further attempts are refused with 429 for a lockout that doubles on each
//! repeat, capped; a success resets the client. Memory is bounded: idle entries are evicted and
//! the table never holds more than `max_entries` clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSpec {
    pub max_failures: u32,
    pub window: Duration,
    pub base_lockout: Duration,
    pub max_lockout: Duration,
}

struct Entry {
    failures: u32,
    window_start: Instant,
    lockouts: u32,
    locked_until: Option<Instant>,
    last_seen: Instant,
}

const SHARDS: usize = 16;

pub struct AuthBackoff {
    shards: Vec<Mutex<HashMap<IpAddr, Entry>>>,
    max_entries: usize,
    pub lockouts: AtomicU64,
    pub refused: AtomicU64,
}

impl AuthBackoff {
    pub fn new(max_entries: usize) -> Self {
        AuthBackoff {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_entries,
            lockouts: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, Entry>> {
        let b = match ip {
            IpAddr::V4(v) => v.octets()[3] as usize,
            IpAddr::V6(v) => v.octets()[7] as usize,
        };
        &self.shards[b % SHARDS]
    }

    /// How long `ip` is still locked out, if it is.
    pub fn locked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let shard = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        let until = shard.get(&ip)?.locked_until?;
        let left = until.checked_duration_since(now).filter(|d| !d.is_zero())?;
        self.refused.fetch_add(1, Ordering::Relaxed);
        Some(left)
    }

    /// The client's entry, made when missing; `None` when the shard is full of locked-out
    /// clients (otherwise the least recently seen client not locked out makes room).
    fn entry(
        shard: &mut HashMap<IpAddr, Entry>,
        ip: IpAddr,
        cap: usize,
        now: Instant,
    ) -> Option<&mut Entry> {
        if !shard.contains_key(&ip) && shard.len() >= cap {
            let victim = shard
                .iter()
                .filter(|(_, e)| e.locked_until.is_none_or(|u| u <= now))
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| *k)?;
            shard.remove(&victim);
        }
        let e = shard.entry(ip).or_insert(Entry {
            failures: 0,
            window_start: now,
            lockouts: 0,
            locked_until: None,
            last_seen: now,
        });
        e.last_seen = now;
        Some(e)
    }

    /// Records a failed authentication; returns the lockout it started, if any.
    pub fn failure(&self, ip: IpAddr, spec: &BackoffSpec, now: Instant) -> Option<Duration> {
        let mut shard = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        let e = Self::entry(&mut shard, ip, (self.max_entries / SHARDS).max(1), now)?;
        if now.duration_since(e.window_start) > spec.window {
            e.failures = 0;
            e.window_start = now;
        }
        e.failures += 1;
        if e.failures < spec.max_failures {
            return None;
        }
        e.failures = 0;
        e.window_start = now;
        e.lockouts = e.lockouts.saturating_add(1);
        let factor = 1u32.checked_shl(e.lockouts - 1).unwrap_or(u32::MAX);
        let lockout = spec
            .base_lockout
            .saturating_mul(factor)
            .min(spec.max_lockout);
        e.locked_until = Some(now + lockout);
        self.lockouts.fetch_add(1, Ordering::Relaxed);
        Some(lockout)
    }

    /// Locks `ip` out for `lockout` (a lockout another replica started); never shortens one.
    pub fn lock_for(&self, ip: IpAddr, lockout: Duration, now: Instant) {
        let mut shard = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = Self::entry(&mut shard, ip, (self.max_entries / SHARDS).max(1), now) else {
            return;
        };
        let until = now + lockout;
        if e.locked_until.is_none_or(|u| u < until) {
            e.locked_until = Some(until);
        }
    }

    /// A successful authentication clears the client's record.
    pub fn success(&self, ip: IpAddr) {
        let mut shard = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        shard.remove(&ip);
    }

    /// Drops entries idle for longer than `idle` and not locked out.
    pub fn evict_idle(&self, idle: Duration, now: Instant) {
        for s in &self.shards {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            s.retain(|_, e| {
                e.locked_until.is_some_and(|u| u > now) || now.duration_since(e.last_seen) < idle
            });
        }
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

    const SPEC: BackoffSpec = BackoffSpec {
        max_failures: 3,
        window: Duration::from_secs(60),
        base_lockout: Duration::from_secs(1),
        max_lockout: Duration::from_secs(5),
    };

    #[test]
    fn lockouts_start_after_n_failures_double_and_are_capped() {
        let b = AuthBackoff::new(1000);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(b.failure(ip, &SPEC, t0), None);
        assert_eq!(b.failure(ip, &SPEC, t0), None);
        assert_eq!(b.failure(ip, &SPEC, t0), Some(Duration::from_secs(1)));
        assert_eq!(
            b.locked(ip, t0 + Duration::from_millis(500)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(b.locked(ip, t0 + Duration::from_secs(2)), None);
        let t1 = t0 + Duration::from_secs(2);
        let mut last = None;
        for _ in 0..3 {
            last = b.failure(ip, &SPEC, t1);
        }
        assert_eq!(last, Some(Duration::from_secs(2)));
        let t2 = t1 + Duration::from_secs(3);
        for _ in 0..3 {
            last = b.failure(ip, &SPEC, t2);
        }
        assert_eq!(last, Some(Duration::from_secs(4)));
        let t3 = t2 + Duration::from_secs(5);
        for _ in 0..3 {
            last = b.failure(ip, &SPEC, t3);
        }
        assert_eq!(last, Some(Duration::from_secs(5)), "capped");
        b.success(ip);
        assert_eq!(b.locked(ip, t3), None);
        assert_eq!(b.failure(ip, &SPEC, t3), None, "success reset the count");
    }

    #[test]
    fn the_table_is_bounded() {
        let b = AuthBackoff::new(1600);
        let now = Instant::now();
        for i in 0..100_000u32 {
            b.failure(IpAddr::V4(i.into()), &SPEC, now);
        }
        assert!(b.len() <= 1600, "{}", b.len());
    }
}
