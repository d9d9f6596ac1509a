//! Retry budgets: one per upstream, a token bucket that every request to the upstream fills by
//! its `retry_budget_percent` of a token and every retry empties by one. Retries can then be at
//! most that share of recent requests (plus a small starting balance), so when an upstream fails
//! everything, retries add a bounded fraction of load instead of multiplying the outage.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Thousandths of a token.
const TOKEN: i64 = 1000;
/// What a budget holds at first and at most, in tokens.
const INITIAL: i64 = 10 * TOKEN;
const CAP: i64 = 100 * TOKEN;

#[derive(Debug)]
pub struct RetryBudget {
    balance: AtomicI64,
    /// Retries sent, and retries refused because the budget was spent.
    pub sent: AtomicU64,
    pub exhausted: AtomicU64,
    /// Connections to the upstream a request opened, and those it took from the idle pool.
    /// Kept here because they are per upstream and outlive reloads as the budget does; many
    /// opened per request means the pool is too small for the requests in flight.
    pub opened: AtomicU64,
    pub reused: AtomicU64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            balance: AtomicI64::new(INITIAL),
            sent: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }
    }
}

impl RetryBudget {
    /// A request went to the upstream: `percent` of a token in.
    pub fn deposit(&self, percent: u8) {
        if percent == 0 {
            return;
        }
        let add = i64::from(percent) * TOKEN / 100;
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b < CAP).then(|| (b + add).min(CAP))
            });
    }

    /// Takes one token for a retry; `false` (and counted) when the budget is spent.
    pub fn withdraw(&self) -> bool {
        let ok = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= TOKEN).then_some(b - TOKEN)
            })
            .is_ok();
        if ok {
            self.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_the_share_of_requests() {
        let b = RetryBudget::default();
        // The starting balance: ten retries.
        assert_eq!((0..20).filter(|_| b.withdraw()).count(), 10);
        // 20% of 100 requests: twenty more.
        for _ in 0..100 {
            b.deposit(20);
        }
        assert_eq!((0..50).filter(|_| b.withdraw()).count(), 20);
        assert_eq!(b.sent.load(Ordering::Relaxed), 30);
        assert_eq!(b.exhausted.load(Ordering::Relaxed), 40);
        // The balance is capped: a long quiet success does not bank unlimited retries.
        for _ in 0..10_000 {
            b.deposit(100);
        }
        assert_eq!((0..500).filter(|_| b.withdraw()).count(), 100);
        // 0% never refills.
        b.deposit(0);
        assert!(!b.withdraw());
    }
}
