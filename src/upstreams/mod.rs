//! Upstream resilience for external pools: a circuit breaker per address (opens after
//! consecutive failures, answers 503 fast while open, lets one half-open probe through after the
//! open period) and an active TCP health check that takes dead addresses out of rotation after
//! `fall` failed checks and brings them back after `rise` passed ones, checking a dead address
//! every second. State is keyed by upstream name and address and outlives policy reloads.
//! A named address (`app.internal:8080`) is resolved here, off the request path: when a policy
//! naming it is applied and again every [`RESOLVE_EVERY`]; a failed lookup keeps the last good
//! addresses. A request only reads the stored address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::policy::model::{Policy, UpstreamTarget};

mod health;
pub mod retry;
pub use crate::policy::specs::BreakerSpec;

#[derive(Debug)]
pub struct AddressState {
    consecutive_failures: AtomicU32,
    /// Open until this many milliseconds after `epoch`; 0 = closed.
    open_until_ms: AtomicU64,
    probe_in_flight: AtomicBool,
    healthy: AtomicBool,
    /// Consecutive health checks passed while out of rotation, failed while in it.
    check_passes: AtomicU32,
    check_fails: AtomicU32,
    pub opened: AtomicU64,
    /// Where to connect: the address itself when it is an IP literal, else the last good
    /// result of resolving it (empty until a lookup succeeds).
    resolved: arc_swap::ArcSwap<Vec<SocketAddr>>,
    /// Whether the address is a name to resolve (not an IP literal).
    named: bool,
    /// When the name was last looked up (milliseconds after the registry's epoch; 0 = never).
    looked_up_ms: AtomicU64,
}

impl Default for AddressState {
    fn default() -> Self {
        AddressState {
            resolved: arc_swap::ArcSwap::from_pointee(Vec::new()),
            named: false,
            looked_up_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probe_in_flight: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            check_passes: AtomicU32::new(0),
            check_fails: AtomicU32::new(0),
            opened: AtomicU64::new(0),
        }
    }
}

/// What the breaker allows for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// The one half-open probe after the open period.
    Probe,
    No,
}

pub struct Resilience {
    clock: Arc<dyn crate::clock::Clock>,
    epoch: Instant,
    states: Mutex<HashMap<(String, String), Arc<AddressState>>>,
    /// The address states of the policy generation applied last, by upstream and address
    /// index: a request finds its address's state without the lock.
    bound: arc_swap::ArcSwap<Bound>,
    /// Retry budgets by upstream name, kept across reloads.
    budgets: Mutex<HashMap<Arc<str>, Arc<retry::RetryBudget>>>,
}

#[derive(Default)]
struct Bound {
    generation: u64,
    states: Vec<Vec<Arc<AddressState>>>,
    /// Each upstream's retry budget, by upstream index.
    budgets: Vec<Arc<retry::RetryBudget>>,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience::with_clock(Arc::new(crate::clock::SystemClock))
    }
}

impl Resilience {
    /// A registry whose breakers read time from `clock`.
    pub fn with_clock(clock: Arc<dyn crate::clock::Clock>) -> Self {
        Resilience {
            epoch: clock.mono(),
            clock,
            states: Mutex::new(HashMap::new()),
            bound: arc_swap::ArcSwap::from_pointee(Bound::default()),
            budgets: Mutex::new(HashMap::new()),
        }
    }
}

impl Resilience {
    fn now_ms(&self) -> u64 {
        self.clock.mono().duration_since(self.epoch).as_millis() as u64 + 1
    }

    pub fn state(&self, upstream: &str, address: &str) -> Arc<AddressState> {
        let mut m = self.states.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((upstream.to_string(), address.to_string()))
            .or_insert_with(|| {
                Arc::new(match address.parse::<SocketAddr>() {
                    Ok(ip) => AddressState {
                        resolved: arc_swap::ArcSwap::from_pointee(vec![ip]),
                        ..AddressState::default()
                    },
                    Err(_) => AddressState {
                        named: true,
                        ..AddressState::default()
                    },
                })
            })
            .clone()
    }

    /// The breaker state of address `idx` of upstream `upstream` (indexes into `policy`),
    /// shared with the health checker; an external address keeps its state across policy
    /// generations that name it.
    pub fn address(&self, policy: &Policy, upstream: usize, idx: usize) -> Arc<AddressState> {
        let bound = self.bound.load();
        if bound.generation == policy.generation {
            if let Some(s) = bound.states.get(upstream).and_then(|u| u.get(idx)) {
                return s.clone();
            }
        }
        let u = &policy.upstreams[upstream];
        match &u.target {
            UpstreamTarget::External { addresses, .. } => self.state(&u.name, &addresses[idx]),
            _ => Arc::default(),
        }
    }

    /// Run when a policy is applied (at start and on reload, off the request path): its new
    /// names are resolved with the system resolver, blocking, so they have addresses before
    /// requests need them, and its addresses' states are looked up once for its requests.
    pub fn apply(&self, policy: &Policy) {
        self.resolve_names_with(policy, Duration::MAX, &|a: &str| {
            use std::net::ToSocketAddrs;
            a.to_socket_addrs().map(|i| i.collect())
        });
        let states = policy
            .upstreams
            .iter()
            .map(|u| match &u.target {
                UpstreamTarget::External { addresses, .. } => {
                    addresses.iter().map(|a| self.state(&u.name, a)).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        let budgets = {
            let mut all = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
            policy
                .upstreams
                .iter()
                .map(|u| all.entry(u.name.clone()).or_default().clone())
                .collect()
        };
        self.bound.store(Arc::new(Bound {
            generation: policy.generation,
            states,
            budgets,
        }));
    }

    /// The retry budget of `policy`'s upstream `upstream`.
    pub fn retry_budget(&self, policy: &Policy, upstream: usize) -> Arc<retry::RetryBudget> {
        let bound = self.bound.load();
        if bound.generation == policy.generation {
            if let Some(b) = bound.budgets.get(upstream) {
                return b.clone();
            }
        }
        self.budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(policy.upstreams[upstream].name.clone())
            .or_default()
            .clone()
    }

    /// Counts the connection a request to `policy`'s upstream `upstream` is sent on (see
    /// [`retry::RetryBudget::opened`]); per request, so without the budget's `Arc` clone when
    /// the policy is the one bound.
    pub fn count_connection(&self, policy: &Policy, upstream: usize, reused: bool) {
        let count = |b: &retry::RetryBudget| {
            let counter = if reused { &b.reused } else { &b.opened };
            counter.fetch_add(1, Ordering::Relaxed);
        };
        let bound = self.bound.load();
        match bound.budgets.get(upstream) {
            Some(b) if bound.generation == policy.generation => count(b),
            _ => count(&self.retry_budget(policy, upstream)),
        }
    }

    /// Every budget with its upstream's name, for `/metrics`.
    pub fn retry_budgets(&self) -> Vec<(Arc<str>, Arc<retry::RetryBudget>)> {
        let mut v: Vec<_> = self
            .budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, b)| (k.clone(), b.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Resolves again every named external address of `policy` last looked up more than
    /// `every` ago; `lookup` is the resolver. A failed or empty answer keeps the last good
    /// addresses (and says so); a name never resolved stays unusable (its requests get 502).
    pub fn resolve_names_with(
        &self,
        policy: &Policy,
        every: Duration,
        lookup: &dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>>,
    ) {
        for u in &policy.upstreams {
            let UpstreamTarget::External { addresses, .. } = &u.target else {
                continue;
            };
            for a in addresses {
                let s = self.state(&u.name, a);
                if !s.named {
                    continue;
                }
                let last = s.looked_up_ms.load(Ordering::Acquire);
                let now = self.now_ms();
                let due = last == 0
                    || (every != Duration::MAX
                        && now.saturating_sub(last) >= every.as_millis() as u64);
                if !due {
                    continue;
                }
                s.looked_up_ms.store(now, Ordering::Release);
                match lookup(a) {
                    Ok(found) if !found.is_empty() => {
                        let before = s.socket_addr();
                        if **s.resolved.load() != found {
                            tracing::info!(upstream = &*u.name, address = a.as_str(), resolved = ?found, "upstream name resolved");
                        }
                        s.resolved.store(Arc::new(found));
                        // A new host behind the name starts afresh: the old one's failures
                        // (breaker and health checks) say nothing about it.
                        if before.is_some() && s.socket_addr() != before {
                            s.reset();
                        }
                    }
                    result => {
                        let error = match result {
                            Err(e) => e.to_string(),
                            Ok(_) => "no addresses".to_string(),
                        };
                        if s.resolved.load().is_empty() {
                            tracing::warn!(
                                upstream = &*u.name,
                                address = a.as_str(),
                                error,
                                "upstream name does not resolve; its requests get 502"
                            );
                        } else {
                            tracing::warn!(
                                upstream = &*u.name,
                                address = a.as_str(),
                                error,
                                "upstream name lookup failed; keeping the last good addresses"
                            );
                        }
                    }
                }
            }
        }
    }

    pub fn admit(&self, s: &AddressState) -> Admit {
        if !s.healthy.load(Ordering::Acquire) {
            return Admit::No;
        }
        let until = s.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Yes;
        }
        if self.now_ms() < until {
            return Admit::No;
        }
        // Open period over: exactly one probe goes through.
        if s.probe_in_flight
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            Admit::Probe
        } else {
            Admit::No
        }
    }

    pub fn success(&self, s: &AddressState) {
        s.consecutive_failures.store(0, Ordering::Release);
        if s.open_until_ms.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!("circuit closed: upstream answered again");
        }
        s.probe_in_flight.store(false, Ordering::Release);
    }

    pub fn failure(&self, s: &AddressState, spec: BreakerSpec, upstream: &str, address: &str) {
        let n = s.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let was_probe = s.probe_in_flight.swap(false, Ordering::AcqRel);
        if n >= spec.failures || was_probe {
            let until = self.now_ms() + spec.open_for.as_millis() as u64;
            if s.open_until_ms.swap(until, Ordering::AcqRel) == 0 || was_probe {
                s.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    upstream,
                    address,
                    failures = n,
                    open_ms = spec.open_for.as_millis() as u64,
                    "circuit opened"
                );
            }
        }
    }

    /// Whether any address of the upstream's breaker is open (for metrics).
    pub fn open_circuits(&self) -> Vec<(String, String, bool)> {
        let now = self.now_ms();
        let m = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = m
            .iter()
            .map(|((u, a), s)| {
                let until = s.open_until_ms.load(Ordering::Relaxed);
                (
                    u.clone(),
                    a.clone(),
                    until != 0 && (now < until || s.probe_in_flight.load(Ordering::Relaxed)),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Active TCP health checks over the external addresses in `policy` that are due: an
    /// address in rotation every `health_check_interval_seconds`, one taken out every second
    /// (or at the interval, if shorter), so it returns within `rise` seconds of answering again.
    /// `last` remembers when each address was checked. The checks run side by side.
    pub async fn check_health(
        &self,
        policy: &Policy,
        last: &mut HashMap<(String, String), Instant>,
    ) {
        let mut due = Vec::new();
        for u in &policy.upstreams {
            let UpstreamTarget::External { addresses, .. } = &u.target else {
                continue;
            };
            let Some(interval) = u.health_interval else {
                continue;
            };
            for a in addresses {
                let s = self.state(&u.name, a);
                let every = if s.healthy.load(Ordering::Acquire) && !s.circuit_open() {
                    interval
                } else {
                    interval.min(DOWN_RECHECK)
                };
                let key = (u.name.to_string(), a.clone());
                if last.get(&key).is_some_and(|t| t.elapsed() < every) {
                    continue;
                }
                last.insert(key, Instant::now());
                due.push((u, a, s));
            }
        }
        // The check connects where requests do: the stored address, never a fresh lookup. A
        // name that has never resolved fails its check.
        let results = futures_util::future::join_all(due.iter().map(|(u, a, s)| {
            // A TCP check is bounded by the connect timeout; an HTTP one also waits for the
            // status line, up to the read timeout.
            let timeout = if u.health_http.is_some() {
                (u.connect_timeout + u.read_timeout).min(Duration::from_secs(5))
            } else {
                u.connect_timeout.min(Duration::from_secs(2))
            };
            health::check(u, a, s.socket_addr(), timeout)
        }))
        .await;
        for ((u, a, s), result) in due.iter().zip(results) {
            // Why a check failed is logged while the address is still in rotation (at most
            // `fall` lines before it leaves); while it is out, only at debug level.
            match &result {
                Err(e) if s.healthy.load(Ordering::Acquire) => {
                    tracing::info!(upstream = %u.name, address = %a, error = %e, "health check failed")
                }
                Err(e) => {
                    tracing::debug!(upstream = %u.name, address = %a, error = %e, "health check failed")
                }
                Ok(()) => {}
            }
            self.record_check(s, result.is_ok(), u.health_rise, u.health_fall, &u.name, a);
        }
    }

    /// One health check's result: `fall` failures in a row take an address out of rotation,
    /// `rise` passes in a row bring it back. An address out of rotation or behind an open
    /// circuit is checked every second, and after `rise` passes its circuit's half-open probe
    /// is due at once rather than at the end of the open period.
    pub fn record_check(
        &self,
        s: &AddressState,
        ok: bool,
        rise: u32,
        fall: u32,
        upstream: &str,
        address: &str,
    ) {
        if ok {
            s.check_fails.store(0, Ordering::Release);
            let healthy = s.healthy.load(Ordering::Acquire);
            if healthy && !s.circuit_open() {
                s.check_passes.store(0, Ordering::Release);
                return;
            }
            let n = s.check_passes.fetch_add(1, Ordering::AcqRel) + 1;
            if n >= rise {
                s.check_passes.store(0, Ordering::Release);
                let _ = s
                    .open_until_ms
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                        (u > 1).then_some(1)
                    });
                if healthy {
                    tracing::info!(
                        upstream,
                        address,
                        passes = n,
                        "health check: passing; the open circuit's probe is due"
                    );
                } else {
                    s.healthy.store(true, Ordering::Release);
                    tracing::info!(upstream, address, passes = n, "health check: up");
                }
            }
        } else {
            s.check_passes.store(0, Ordering::Release);
            if !s.healthy.load(Ordering::Acquire) {
                return;
            }
            let n = s.check_fails.fetch_add(1, Ordering::AcqRel) + 1;
            if n >= fall {
                s.check_fails.store(0, Ordering::Release);
                s.healthy.store(false, Ordering::Release);
                tracing::warn!(upstream, address, failures = n, "health check: down");
            }
        }
    }
}

/// How often named upstream addresses are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);

impl AddressState {
    /// Where to connect now: no lookup, no allocation. `None` for a name not resolved yet.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.resolved.load().first().copied()
    }

    /// Forgets the breaker's and the health checks' verdicts.
    fn reset(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
        self.probe_in_flight.store(false, Ordering::Release);
        self.check_passes.store(0, Ordering::Release);
        self.check_fails.store(0, Ordering::Release);
        self.healthy.store(true, Ordering::Release);
    }

    /// The circuit is open (its open period may have run out, its probe not yet gone).
    fn circuit_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) > 1
    }
}

/// How often an address taken out of rotation is checked again (at most).
const DOWN_RECHECK: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_off_the_request_path_and_keep_the_last_good_addresses() {
        let text = r#"
[[upstreams]]
name = "app"
kind = "external"
addresses = ["app.internal:8080", "10.0.0.9:80"]

[[routes]]
name = "app"
path_prefix = "/"
upstream = "app"
public = true
"#;
        let files = [crate::policy::SourceFile {
            path: "p.toml".into(),
            text: text.into(),
        }];
        let policy = crate::compile::compile(&files, crate::config::Mode::Development).unwrap();
        let r = Resilience::default();
        let (named, literal) = (
            r.state("app", "app.internal:8080"),
            r.state("app", "10.0.0.9:80"),
        );
        assert_eq!(literal.socket_addr(), Some("10.0.0.9:80".parse().unwrap()));
        assert_eq!(named.socket_addr(), None, "nothing is looked up on demand");
        let answer = std::sync::Mutex::new(Ok(vec!["10.1.1.1:8080".parse().unwrap()]));
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let lookup = |a: &str| {
            assert_eq!(a, "app.internal:8080", "IP literals are never looked up");
            asked.fetch_add(1, Ordering::Relaxed);
            match &*answer.lock().unwrap() {
                Ok(v) => Ok(v.clone()),
                Err(k) => Err(std::io::Error::from(*k)),
            }
        };
        r.resolve_names_with(&policy, Duration::MAX, &lookup);
        assert_eq!(named.socket_addr(), Some("10.1.1.1:8080".parse().unwrap()));
        // A failing resolver keeps the last good address; an empty answer too.
        *answer.lock().unwrap() = Err(std::io::ErrorKind::TimedOut);
        r.resolve_names_with(&policy, Duration::ZERO, &lookup);
        *answer.lock().unwrap() = Ok(Vec::new());
        r.resolve_names_with(&policy, Duration::ZERO, &lookup);
        assert_eq!(named.socket_addr(), Some("10.1.1.1:8080".parse().unwrap()));
        assert_eq!(asked.load(Ordering::Relaxed), 3);
        // Not due yet: no lookup.
        r.resolve_names_with(&policy, Duration::from_secs(3600), &lookup);
        r.resolve_names_with(&policy, Duration::MAX, &lookup);
        assert_eq!(asked.load(Ordering::Relaxed), 3);
        *answer.lock().unwrap() = Ok(vec!["10.2.2.2:8080".parse().unwrap()]);
        r.resolve_names_with(&policy, Duration::ZERO, &lookup);
        assert_eq!(named.socket_addr(), Some("10.2.2.2:8080".parse().unwrap()));
    }

    fn named_policy(address: &str) -> Policy {
        let text = format!(
            r#"
[[upstreams]]
name = "app"
kind = "external"
addresses = ["{address}"]
health_check_interval_seconds = 1

[[routes]]
name = "app"
path_prefix = "/"
upstream = "app"
public = true
"#
        );
        let files = [crate::policy::SourceFile {
            path: "p.toml".into(),
            text,
        }];
        crate::compile::compile(&files, crate::config::Mode::Development).unwrap()
    }

    #[tokio::test]
    async fn health_checks_probe_the_stored_address_not_a_fresh_lookup() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        // The name does not resolve through the system resolver; the stored answer (from the
        // resolver given here) points at the listener.
        let name = format!("app.invalid:{port}");
        let policy = named_policy(&name);
        let r = Resilience::default();
        let s = r.state("app", &name);
        r.resolve_names_with(&policy, Duration::MAX, &|_| {
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        });
        let mut last = HashMap::new();
        for _ in 0..5 {
            last.clear();
            r.check_health(&policy, &mut last).await;
        }
        assert!(
            s.healthy.load(Ordering::Acquire),
            "the stored address answers"
        );
    }

    #[test]
    fn a_name_that_resolves_to_a_new_host_starts_afresh() {
        let policy = named_policy("app.invalid:80");
        let r = Resilience::default();
        let s = r.state("app", "app.invalid:80");
        let answer = std::sync::Mutex::new(vec!["10.1.1.1:80".parse().unwrap()]);
        let lookup = |_: &str| Ok(answer.lock().unwrap().clone());
        r.resolve_names_with(&policy, Duration::MAX, &lookup);
        let spec = BreakerSpec {
            failures: 1,
            open_for: Duration::from_secs(3600),
        };
        r.failure(&s, spec, "app", "app.invalid:80");
        r.record_check(&s, false, 1, 1, "app", "app.invalid:80");
        assert_eq!(r.admit(&s), Admit::No);
        // The same answer again keeps the verdict; a new one clears it.
        r.resolve_names_with(&policy, Duration::ZERO, &lookup);
        assert_eq!(r.admit(&s), Admit::No);
        *answer.lock().unwrap() = vec!["10.2.2.2:80".parse().unwrap()];
        r.resolve_names_with(&policy, Duration::ZERO, &lookup);
        assert_eq!(r.admit(&s), Admit::Yes);
    }

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_good_probe() {
        let clock = Arc::new(crate::clock::ManualClock::new(0));
        let r = Resilience::with_clock(clock.clone());
        let s = r.state("api", "10.0.0.1:80");
        let spec = BreakerSpec {
            failures: 3,
            open_for: Duration::from_millis(50),
        };
        for _ in 0..2 {
            assert_eq!(r.admit(&s), Admit::Yes);
            r.failure(&s, spec, "api", "a");
        }
        r.success(&s);
        for _ in 0..3 {
            r.failure(&s, spec, "api", "a");
        }
        assert_eq!(r.admit(&s), Admit::No);
        clock.advance(Duration::from_millis(49));
        assert_eq!(r.admit(&s), Admit::No, "still open");
        clock.advance(Duration::from_millis(2));
        assert_eq!(r.admit(&s), Admit::Probe);
        assert_eq!(r.admit(&s), Admit::No, "one probe at a time");
        r.failure(&s, spec, "api", "a");
        assert_eq!(r.admit(&s), Admit::No, "a failed probe reopens");
        clock.advance(Duration::from_millis(51));
        assert_eq!(r.admit(&s), Admit::Probe);
        r.success(&s);
        assert_eq!(r.admit(&s), Admit::Yes);
    }

    #[test]
    fn health_checks_need_fall_failures_to_take_out_and_rise_passes_to_bring_back() {
        let r = Resilience::default();
        let s = r.state("api", "10.0.0.1:80");
        let spec = BreakerSpec {
            failures: 1,
            open_for: Duration::from_secs(3600),
        };
        let check = |ok| r.record_check(&s, ok, 3, 2, "api", "a");
        check(false);
        assert_eq!(r.admit(&s), Admit::Yes, "one failed check is not enough");
        check(true);
        check(false);
        assert_eq!(
            r.admit(&s),
            Admit::Yes,
            "a pass in between starts the count again"
        );
        check(false);
        assert_eq!(r.admit(&s), Admit::No, "two in a row take it out");
        // Meanwhile its circuit opened for an hour.
        r.failure(&s, spec, "api", "a");
        check(true);
        check(true);
        check(false);
        check(true);
        check(true);
        assert_eq!(r.admit(&s), Admit::No, "three passes in a row are needed");
        check(true);
        assert_eq!(
            r.admit(&s),
            Admit::Probe,
            "back in rotation, with the circuit's probe due at once"
        );
        r.success(&s);
        assert_eq!(r.admit(&s), Admit::Yes);
    }

    #[test]
    fn passing_health_checks_bring_an_open_circuits_probe_forward() {
        let r = Resilience::default();
        let s = r.state("api", "10.0.0.1:80");
        let spec = BreakerSpec {
            failures: 1,
            open_for: Duration::from_secs(3600),
        };
        r.failure(&s, spec, "api", "a");
        assert_eq!(r.admit(&s), Admit::No);
        assert!(s.circuit_open(), "checked every second while open");
        r.record_check(&s, true, 2, 2, "api", "a");
        assert_eq!(r.admit(&s), Admit::No);
        r.record_check(&s, true, 2, 2, "api", "a");
        assert_eq!(r.admit(&s), Admit::Probe, "not an hour later");
        r.failure(&s, spec, "api", "a");
        assert_eq!(r.admit(&s), Admit::No, "a failed probe reopens it");
        r.success(&s);
        assert!(!s.circuit_open());
    }
}
