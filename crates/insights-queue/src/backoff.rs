//! The retry state of one loop that talks to the database (fetch, heartbeat, rescue, completion,
//! LISTEN): how many calls failed in a row, and the wait its [`Backoff`] gives for that.

use std::time::Duration;

use insights_pg::Backoff;

/// Consecutive failures of one loop and the policy that turns them into a wait; reset on success.
#[derive(Debug)]
pub(crate) struct DbBackoff {
    backoff: Backoff,
    failures: u32,
}

impl DbBackoff {
    pub(crate) fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            failures: 0,
        }
    }

    /// The delay before the next try. Never below a tenth of the base, so an error that comes
    /// back instantly (pgbouncer's server_login_retry) cannot become a tight loop even when the
    /// jitter draws a wait near zero.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff
            .delay(self.failures)
            .max(self.backoff.base / 10)
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
    use insights_pg::Jitter;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_grow_with_consecutive_failures_and_reset() {
        let mut b = DbBackoff::new(Backoff::new(100 * MS, 400 * MS, Jitter::None));
        let waits: Vec<_> = (0..4).map(|_| b.next_delay()).collect();
        assert_eq!(waits, [100 * MS, 200 * MS, 400 * MS, 400 * MS]);
        assert_eq!(b.failures(), 4);
        b.reset();
        assert_eq!(b.next_delay(), 100 * MS);
    }

    #[test]
    fn full_jitter_never_drops_below_a_tenth_of_the_base() {
        let mut b = DbBackoff::new(Backoff::new(100 * MS, 5000 * MS, Jitter::Full));
        for _ in 0..200 {
            let d = b.next_delay();
            assert!((10 * MS..=5000 * MS).contains(&d), "{d:?}");
        }
    }
}
