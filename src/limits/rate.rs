//! Rate limits (GCRA via `governor`), declared in policy and keyed by client IP, subject, route
//! or a combination. Limiter *state* lives in a registry outside the policy, keyed by the limit's
//! definition, so a reload that leaves a limit unchanged keeps its buckets. Memory is bounded per
//! limit: past `max_keys` distinct keys, a newcomer shares one of `OVERFLOW_BUCKETS` overflow
//! buckets, picked by a hash of its key seeded per process (an attacker cannot aim at a bucket),
//! until idle keys are evicted (every second). A flood of forged keys is limited as at most that
//! many clients, never unbounded, and drains only the overflow buckets its own keys land in: an
//! ordinary client whose idle key was evicted while the table is full is refused only if it
//! lands in one of those. A key that already holds a bucket keeps it while the table is full.
//! The bound is soft by the number of proxy threads: threads checking new keys at the same
//! moment may each add one before the size check sees the others.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

type Keyed = RateLimiter<u64, Table, DefaultClock, StateInformationMiddleware>;

/// The limiter's keyed state, held by the limiter and by us: a check asks whether a key
/// already has a bucket before deciding it is a newcomer.
#[derive(Clone, Default)]
struct Table(Arc<DashMapStateStore<u64>>);

impl StateStore for Table {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<u64> for Table {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.0, drop_below)
    }

    fn shrink_to_fit(&self) {
        self.0.shrink_to_fit()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Overflow buckets a full table spreads newcomers over. Their keys are odd, `key` makes every
/// client key even, so the two never meet.
const OVERFLOW_BUCKETS: u64 = 256;

fn overflow_key(slot: u64) -> u64 {
    (slot % OVERFLOW_BUCKETS) << 1 | 1
}

/// A compiled limit from the policy.
#[derive(Debug)]
pub struct LimitSpec {
    pub name: Arc<str>,
    pub by_ip: bool,
    pub by_subject: bool,
    pub by_route: bool,
    /// Requests allowed per `per` (sustained rate).
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
    /// Route names this limit applies to; `None` = every route.
    pub routes: Option<Vec<Arc<str>>>,
    pub max_keys: usize,
    /// Would-be refusals are logged and counted, not enforced.
    pub shadow: bool,
    /// Enforced across replicas through the shared store.
    pub global: bool,
    /// A global limit refuses (503) while the shared store is unreachable, instead of falling
    /// back to this replica's local limit.
    pub fail_closed: bool,
    limiter: OnceLock<Arc<Limiter>>,
}

impl LimitSpec {
    #[allow(clippy::too_many_arguments)] // One argument per policy field; a builder adds nothing.
    pub fn new(
        name: Arc<str>,
        by_ip: bool,
        by_subject: bool,
        by_route: bool,
        requests: u32,
        per: Duration,
        burst: u32,
        routes: Option<Vec<Arc<str>>>,
        max_keys: usize,
    ) -> Self {
        LimitSpec {
            name,
            by_ip,
            by_subject,
            by_route,
            requests,
            per,
            burst,
            routes,
            max_keys,
            shadow: false,
            global: false,
            fail_closed: false,
            limiter: OnceLock::new(),
        }
    }

    fn fingerprint(&self) -> String {
        format!(
            "{}|{}{}{}|{}/{:?}|{}|{}",
            self.name,
            self.by_ip as u8,
            self.by_subject as u8,
            self.by_route as u8,
            self.requests,
            self.per,
            self.burst,
            self.max_keys
        )
    }

    /// Tokens a replica takes from the shared store at once for a global limit, then spends
    /// locally (for at most a second). One per request keeps a small limit exact; a large one
    /// takes up to 1/100 of its burst or of a second's worth, capped at 1000, so the hot path
    /// goes to Redis about once per batch. What a replica holds unspent is at most that batch.
    pub fn reserve_batch(&self) -> u32 {
        let per_second = (self.requests as f64 / self.per.as_secs_f64().max(1e-9)) as u64;
        let batch = (self.burst as u64 / 100).min(per_second / 100);
        batch.clamp(1, 1000) as u32
    }

    /// Microseconds between two requests at the sustained rate.
    pub fn interval_micros(&self) -> f64 {
        self.per.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    pub fn applies_to(&self, route: &str) -> bool {
        self.routes
            .as_ref()
            .is_none_or(|rs| rs.iter().any(|r| &**r == route))
    }

    /// The shared limiter for this definition.
    pub fn limiter(&self, registry: &LimiterRegistry) -> &Arc<Limiter> {
        self.limiter.get_or_init(|| registry.get(self))
    }
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed { remaining: u32 },
    Limited { retry_after: Duration },
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("burst", &self.burst)
            .field("keys", &self.len())
            .finish()
    }
}

pub struct Limiter {
    rl: Keyed,
    table: Table,
    pub burst: u32,
    pub max_keys: usize,
    pub limited: AtomicU64,
    pub overflowed: AtomicU64,
    /// Seeds the overflow bucket choice, so nobody outside the process can predict it.
    overflow_seed: std::collections::hash_map::RandomState,
}

impl Limiter {
    fn new(spec: &LimitSpec) -> Limiter {
        let burst = NonZeroU32::new(spec.burst.max(1)).expect("non-zero");
        let period = spec.per / spec.requests.max(1);
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("positive period")
            .allow_burst(burst);
        let table = Table::default();
        Limiter {
            rl: RateLimiter::<u64, Table, DefaultClock>::new(
                quota,
                table.clone(),
                DefaultClock::default(),
            )
            .with_middleware::<StateInformationMiddleware>(),
            table,
            burst: spec.burst,
            max_keys: spec.max_keys,
            limited: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            overflow_seed: Default::default(),
        }
    }

    pub fn check(&self, key: u64) -> Verdict {
        // Only a newcomer to a full table shares an overflow bucket.
        let key = if !self.table.0.contains_key(&key) && self.rl.len() >= self.max_keys {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            overflow_key(self.overflow_seed.hash_one(key))
        } else {
            key
        };
        match self.rl.check_key(&key) {
            Ok(snapshot) => Verdict::Allowed {
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => {
                self.limited.fetch_add(1, Ordering::Relaxed);
                Verdict::Limited {
                    retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                }
            }
        }
    }

    /// Distinct keys held.
    pub fn len(&self) -> usize {
        self.rl.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops keys whose bucket is full again (indistinguishable from a new key).
    pub fn evict_idle(&self) {
        self.rl.retain_recent();
        self.rl.shrink_to_fit();
    }
}

type NamedLimiter = (Arc<str>, Arc<Limiter>);

/// (limit name, keys held, requests limited, overflow hits).
pub type LimitStat = (Arc<str>, usize, u64, u64);

/// Limiters by definition, shared across policy generations.
#[derive(Default)]
pub struct LimiterRegistry {
    /// Definition fingerprint → (limit name, limiter).
    limiters: Mutex<HashMap<String, NamedLimiter>>,
    hasher: std::collections::hash_map::RandomState,
}

impl LimiterRegistry {
    fn get(&self, spec: &LimitSpec) -> Arc<Limiter> {
        let mut m = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(spec.fingerprint())
            .or_insert_with(|| (spec.name.clone(), Arc::new(Limiter::new(spec))))
            .1
            .clone()
    }

    /// The bucket key for a request under `spec`; `None` when the limit cannot apply (a subject
    /// limit on an anonymous request).
    pub fn key(
        &self,
        spec: &LimitSpec,
        ip: IpAddr,
        subject: Option<&str>,
        route: &str,
    ) -> Option<u64> {
        let mut h = self.hasher.build_hasher();
        if spec.by_ip {
            ip.hash(&mut h);
        }
        if spec.by_subject {
            subject?.hash(&mut h);
        }
        if spec.by_route {
            route.hash(&mut h);
        }
        Some(h.finish() & !1) // never an overflow key (those are odd)
    }

    /// Evicts idle keys everywhere and forgets limiters no policy uses any more.
    pub fn maintain(&self) {
        let mut m = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, (_, l)| Arc::strong_count(l) > 1);
        for (_, l) in m.values() {
            l.evict_idle();
        }
    }

    /// (limit name, keys held, requests limited, overflow hits) for metrics.
    pub fn stats(&self) -> Vec<LimitStat> {
        let m = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = m
            .values()
            .map(|(n, l)| {
                (
                    n.clone(),
                    l.len(),
                    l.limited.load(Ordering::Relaxed),
                    l.overflowed.load(Ordering::Relaxed),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A limit of `requests` per `per`. Tests that count what is left use an hour, so a
    /// descheduled test thread never sees a token refill.
    fn spec_per(requests: u32, per: Duration, burst: u32, max_keys: usize) -> LimitSpec {
        LimitSpec::new(
            "t".into(),
            true,
            false,
            false,
            requests,
            per,
            burst,
            None,
            max_keys,
        )
    }

    fn spec(requests: u32, burst: u32, max_keys: usize) -> LimitSpec {
        spec_per(requests, Duration::from_secs(1), burst, max_keys)
    }

    #[test]
    fn a_burst_over_the_limit_is_refused_with_a_retry_time() {
        let reg = LimiterRegistry::default();
        let s = spec_per(2, HOUR, 3, 1000);
        let l = s.limiter(&reg);
        let k = reg
            .key(&s, "192.0.2.1".parse().unwrap(), None, "r")
            .unwrap();
        for expected in [2, 1, 0] {
            assert_eq!(
                l.check(k),
                Verdict::Allowed {
                    remaining: expected
                }
            );
        }
        match l.check(k) {
            Verdict::Limited { retry_after } => {
                assert!(retry_after <= HOUR / 2 && retry_after > Duration::ZERO)
            }
            v => panic!("{v:?}"),
        }
        // Another key is unaffected.
        let other = reg
            .key(&s, "192.0.2.2".parse().unwrap(), None, "r")
            .unwrap();
        assert!(matches!(l.check(other), Verdict::Allowed { .. }));
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_bound() {
        let reg = LimiterRegistry::default();
        let s = spec_per(1, HOUR, 1, 10_000);
        let l = s.limiter(&reg);
        let mut limited = 0;
        for i in 0..100_000u32 {
            let ip = IpAddr::V4(i.into());
            if let Verdict::Limited { .. } = l.check(reg.key(&s, ip, None, "r").unwrap()) {
                limited += 1;
            }
        }
        // Bounded: the table never exceeds max_keys plus the overflow buckets, and the ~90k
        // keys past the bound were limited together as at most that many clients (an hour's
        // refill: however slowly the test runs, no overflow bucket gets a token back).
        assert!(l.len() <= 10_000 + OVERFLOW_BUCKETS as usize, "{}", l.len());
        assert!(limited > 89_000, "{limited}");
        assert!(l.overflowed.load(Ordering::Relaxed) >= 89_999);
    }

    #[test]
    fn a_full_table_keeps_established_keys_in_their_own_buckets() {
        let reg = LimiterRegistry::default();
        let s = spec_per(1, HOUR, 3, 2);
        let l = s.limiter(&reg);
        let key = |i: u32| reg.key(&s, IpAddr::V4(i.into()), None, "r").unwrap();
        let (a, b) = (key(1), key(2));
        assert_eq!(l.check(a), Verdict::Allowed { remaining: 2 });
        assert_eq!(l.check(b), Verdict::Allowed { remaining: 2 });
        // The table is full: one newcomer, again and again, drains its overflow bucket.
        for _ in 0..10 {
            l.check(key(3));
        }
        assert!(matches!(l.check(key(3)), Verdict::Limited { .. }));
        // The established keys still have what they had left.
        assert_eq!(l.check(a), Verdict::Allowed { remaining: 1 });
        assert_eq!(l.check(b), Verdict::Allowed { remaining: 1 });
        assert_eq!(l.len(), 3, "two keys and one overflow bucket");
    }

    #[test]
    fn a_newcomer_to_a_table_an_attacker_filled_is_rarely_in_a_drained_bucket() {
        let reg = LimiterRegistry::default();
        let s = spec_per(1, HOUR, 3, 1000);
        let l = s.limiter(&reg);
        let key = |i: u32| reg.key(&s, IpAddr::V4(i.into()), None, "r").unwrap();
        // The attacker fills the table, its keys stay busy (eviction keeps them), and four
        // more of its addresses drain the overflow buckets they land in.
        for i in 0..1000 {
            l.check(key(i));
        }
        for round in 0..10 {
            for i in 1000..1004 {
                l.check(key(i));
            }
            if round % 3 == 0 {
                l.evict_idle();
            }
        }
        for i in 1000..1004 {
            assert!(matches!(l.check(key(i)), Verdict::Limited { .. }));
        }
        // Occasional clients, each a newcomer (an idle key is evicted between its requests):
        // only one landing in one of the attacker's few overflow buckets is refused.
        let mut allowed = 0;
        for i in 0..20 {
            l.evict_idle();
            if let Verdict::Allowed { .. } = l.check(key(1_000_000 + i)) {
                allowed += 1;
            }
        }
        assert!(allowed >= 15, "only {allowed} of 20 newcomers got through");
        assert!(l.len() <= 1000 + OVERFLOW_BUCKETS as usize);
    }

    #[test]
    fn unchanged_limits_keep_their_state_across_reloads() {
        let reg = LimiterRegistry::default();
        let a = spec(1, 1, 10);
        let b = spec(1, 1, 10);
        assert!(Arc::ptr_eq(a.limiter(&reg), b.limiter(&reg)));
        let c = spec(5, 5, 10);
        assert!(!Arc::ptr_eq(a.limiter(&reg), c.limiter(&reg)));
    }
}
