//! Time, injected: the components that decide by time (breakers, and the decisions through
//! `decide::Now`) read it from a `Clock`, so tests move time forward instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemClock.unix()
}

pub trait Clock: Send + Sync {
    /// Monotonic time, for intervals.
    fn mono(&self) -> Instant;
    /// Seconds since the Unix epoch, for expiries.
    fn unix(&self) -> u64;
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn mono(&self) -> Instant {
        Instant::now()
    }
    fn unix(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to: it starts at the moment it is made (and at `unix`
/// seconds), and `advance` moves both readings forward.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    unix: u64,
    /// Nanoseconds advanced so far.
    advanced: AtomicU64,
}

impl ManualClock {
    pub fn new(unix: u64) -> ManualClock {
        ManualClock {
            start: Instant::now(),
            unix,
            advanced: AtomicU64::new(0),
        }
    }

    pub fn advance(&self, by: Duration) {
        self.advanced
            .fetch_add(by.as_nanos() as u64, Ordering::AcqRel);
    }

    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.advanced.load(Ordering::Acquire))
    }
}

impl Clock for ManualClock {
    fn mono(&self) -> Instant {
        self.start + self.elapsed()
    }
    fn unix(&self) -> u64 {
        self.unix + self.elapsed().as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new(1_000);
        let (m, u) = (c.mono(), c.unix());
        assert_eq!((c.mono(), c.unix()), (m, u));
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.mono() - m, Duration::from_millis(1500));
        assert_eq!(c.unix(), 1_001);
    }
}
