//! Exponential backoff with full jitter, for job retries and for database outages.

use std::time::Duration;

use rand::RngExt;

/// `uniform(0, min(cap, base * 2^(n-1)))` for the n-th consecutive failure (n ≥ 1).
pub fn full_jitter(base: Duration, cap: Duration, n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exp).min(cap);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

/// Backoff state of one loop that talks to the database: jittered, capped, reset on success.
#[derive(Debug)]
pub(crate) struct DbBackoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl DbBackoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
        }
    }

    /// The delay before the next try. Never below a tenth of the base, so an error that comes
    /// back instantly (pgbouncer's server_login_retry) cannot become a tight loop.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        full_jitter(self.base, self.cap, self.failures).max(self.base / 10)
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_the_cap() {
        for n in 1..40 {
            let d = full_jitter(Duration::from_millis(100), Duration::from_secs(5), n);
            assert!(d <= Duration::from_secs(5));
        }
        let d = full_jitter(Duration::from_millis(100), Duration::from_secs(5), 1);
        assert!(d <= Duration::from_millis(100));
    }
}
