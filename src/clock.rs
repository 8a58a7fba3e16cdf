//! The time every decision uses: the wall clock, plus an offset that tests move forward to cross
//! windows, expiries and retention without waiting (always 0 in production). One value, shared
//! by the request handlers and the store's writer (which stamps activity records), so both agree.

use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<AtomicI64>);

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.0.load(Ordering::Relaxed))
    }

    /// Moves this clock forward by `secs` (tests).
    /// [`Clock::now`] in microseconds since the epoch (what activity records are stamped with).
    pub fn now_micros(&self) -> u64 {
        u64::try_from(self.now().timestamp_micros()).unwrap_or(0)
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_offset() {
        let c = Clock::default();
        let other = c.clone();
        other.advance(86_400);
        let ahead = c.now() - Utc::now();
        assert!(ahead > chrono::Duration::hours(23) && ahead <= chrono::Duration::hours(24));
    }
}
