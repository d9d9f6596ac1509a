//! Upstream resilience for external pools: a circuit breaker per address (opens after
//! consecutive failures, answers 503 fast while open, lets one half-open probe through after the
//! open period) and an active TCP health check that takes dead addresses out of rotation. State
//! is keyed by upstream name and address and outlives policy reloads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::policy::model::{Policy, UpstreamTarget};

/// Breaker settings from the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSpec {
    pub failures: u32,
    pub open_for: Duration,
}

#[derive(Debug)]
pub struct AddressState {
    consecutive_failures: AtomicU32,
    /// Open until this many milliseconds after `epoch`; 0 = closed.
    open_until_ms: AtomicU64,
    probe_in_flight: AtomicBool,
    healthy: AtomicBool,
    pub opened: AtomicU64,
}

impl Default for AddressState {
    fn default() -> Self {
        AddressState {
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probe_in_flight: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
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
    epoch: Instant,
    states: Mutex<HashMap<(String, String), Arc<AddressState>>>,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            epoch: Instant::now(),
            states: Mutex::new(HashMap::new()),
        }
    }
}

impl Resilience {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub fn state(&self, upstream: &str, address: &str) -> Arc<AddressState> {
        let mut m = self.states.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((upstream.to_string(), address.to_string()))
            .or_default()
            .clone()
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

    /// Active TCP health checks over the external addresses in `policy` whose interval has come
    /// round; `last` remembers when each upstream was checked.
    pub async fn check_health(&self, policy: &Policy, last: &mut HashMap<String, Instant>) {
        for u in &policy.upstreams {
            let UpstreamTarget::External { addresses, .. } = &u.target else {
                continue;
            };
            let Some(interval) = u.health_interval else {
                continue;
            };
            if last.get(&*u.name).is_some_and(|t| t.elapsed() < interval) {
                continue;
            }
            last.insert(u.name.to_string(), Instant::now());
            let timeout = u.connect_timeout.min(Duration::from_secs(2));
            for a in addresses {
                let ok = matches!(
                    tokio::time::timeout(timeout, tokio::net::TcpStream::connect(a.as_str())).await,
                    Ok(Ok(_))
                );
                let s = self.state(&u.name, a);
                if s.healthy.swap(ok, Ordering::AcqRel) != ok {
                    if ok {
                        tracing::info!(upstream = %u.name, address = %a, "health check: up");
                    } else {
                        tracing::warn!(upstream = %u.name, address = %a, "health check: down");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_good_probe() {
        let r = Resilience::default();
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
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.admit(&s), Admit::Probe);
        assert_eq!(r.admit(&s), Admit::No, "one probe at a time");
        r.failure(&s, spec, "api", "a");
        assert_eq!(r.admit(&s), Admit::No, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.admit(&s), Admit::Probe);
        r.success(&s);
        assert_eq!(r.admit(&s), Admit::Yes);
    }
}
