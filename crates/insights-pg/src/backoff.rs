//! The one retry policy: how long to wait before the n-th retry. Every place that waits and
//! tries again (job retries, database retries, the connection gate, the circuit breaker, the
//! LLM client) holds a [`Backoff`] and asks it; finding "the retry policy" is finding its uses.

use std::time::Duration;

use rand::RngExt;

/// How a wait is randomised so that callers that failed together do not return together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Exactly the computed wait (tests, schedules that must be predictable).
    None,
    /// Uniform in `[0, d]`: spreads a crowd of retrying callers best; for retries whose mean
    /// wait does not matter.
    Full,
    /// Uniform in `[d·(1-f), d]`: callers drift apart while the mean stays near `d`; for waits
    /// that cost something each time they end (a probe is a connection attempt).
    Down(f64),
    /// Uniform in `[d, d·(1+f)]`: never sooner than `d`; for waits a server asked for
    /// (`retry-after`), which must not end early.
    Up(f64),
    /// Uniform in `[d·(1-f), d·(1+f)]`: the mean stays `d`; for periodic work many workers
    /// do (a rescue sweep), so they drift out of lockstep without running more or less often.
    Around(f64),
}

impl Jitter {
    /// `d` randomised per this jitter.
    pub fn apply(self, d: Duration) -> Duration {
        match self {
            Jitter::None => d,
            Jitter::Full => uniform(Duration::ZERO, d),
            Jitter::Down(f) => {
                let spread = d.mul_f64(f.clamp(0.0, 1.0));
                uniform(d - spread, d)
            }
            Jitter::Up(f) => {
                let spread = d.mul_f64(f.max(0.0));
                uniform(d, d.saturating_add(spread))
            }
            Jitter::Around(f) => {
                let spread = d.mul_f64(f.clamp(0.0, 1.0));
                uniform(d - spread, d.saturating_add(spread))
            }
        }
    }
}

/// Uniform in `[lo, hi]` (`lo` when the range is empty).
fn uniform(lo: Duration, hi: Duration) -> Duration {
    let span = u64::try_from(hi.saturating_sub(lo).as_nanos()).unwrap_or(u64::MAX);
    if span == 0 {
        return lo;
    }
    lo + Duration::from_nanos(rand::rng().random_range(0..=span))
}

/// Exponential backoff: the n-th wait (n ≥ 1) is `min(cap, base · 2^(n-1))`, then jittered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first wait (before jitter).
    pub base: Duration,
    /// The longest wait (before jitter).
    pub cap: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration, jitter: Jitter) -> Self {
        Self { base, cap, jitter }
    }

    /// The n-th wait before jitter (n ≥ 1; 0 counts as 1): `min(cap, base · 2^(n-1))`, never
    /// below `base` even when `cap` is.
    pub fn ceiling(&self, n: u32) -> Duration {
        let exp = n.saturating_sub(1).min(30);
        self.base
            .saturating_mul(1u32 << exp)
            .min(self.cap.max(self.base))
    }

    /// The n-th wait (n ≥ 1), jittered.
    pub fn delay(&self, n: u32) -> Duration {
        self.jitter.apply(self.ceiling(n))
    }

    /// The waits before each of `retries` retries, in order (an iterator backon accepts as a
    /// backoff).
    pub fn retries(&self, retries: usize) -> Retries {
        Retries {
            backoff: *self,
            next: 1,
            left: retries,
        }
    }
}

/// The waits of [`Backoff::retries`].
#[derive(Debug, Clone)]
pub struct Retries {
    backoff: Backoff,
    next: u32,
    left: usize,
}

impl Iterator for Retries {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let d = self.backoff.delay(self.next);
        self.next = self.next.saturating_add(1);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let b = Backoff::new(100 * MS, 1000 * MS, Jitter::None);
        let waits: Vec<_> = (1..=6).map(|n| b.ceiling(n)).collect();
        assert_eq!(
            waits,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        assert_eq!(b.ceiling(0), 100 * MS);
        assert_eq!(b.ceiling(u32::MAX), 1000 * MS);
        // A cap below the base never shortens the first wait.
        assert_eq!(
            Backoff::new(100 * MS, MS, Jitter::None).ceiling(3),
            100 * MS
        );
    }

    #[test]
    fn each_jitter_stays_in_its_range() {
        let d = 1000 * MS;
        for _ in 0..2000 {
            assert!(Jitter::Full.apply(d) <= d);
            let down = Jitter::Down(0.25).apply(d);
            assert!((750 * MS..=d).contains(&down), "{down:?}");
            let up = Jitter::Up(0.2).apply(d);
            assert!((d..=1200 * MS).contains(&up), "{up:?}");
            let around = Jitter::Around(0.2).apply(d);
            assert!((800 * MS..=1200 * MS).contains(&around), "{around:?}");
        }
        assert_eq!(Jitter::None.apply(d), d);
        assert_eq!(Jitter::Full.apply(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn jitter_spreads_callers_apart() {
        let draws: std::collections::BTreeSet<_> =
            (0..50).map(|_| Jitter::Full.apply(1000 * MS)).collect();
        assert!(
            draws.len() > 40,
            "only {} distinct waits in 50",
            draws.len()
        );
    }

    #[test]
    fn around_jitter_lands_on_both_sides_of_the_wait() {
        let d = 1000 * MS;
        let draws: Vec<_> = (0..200).map(|_| Jitter::Around(0.2).apply(d)).collect();
        assert!(draws.iter().any(|w| *w < d), "never earlier than {d:?}");
        assert!(draws.iter().any(|w| *w > d), "never later than {d:?}");
        // A spread beyond the whole wait is clamped: never a negative wait.
        assert!(Jitter::Around(3.0).apply(d) <= 2 * d);
    }

    #[test]
    fn waits_grow_between_attempts_within_their_jitter_bounds() {
        let b = Backoff::new(100 * MS, 10_000 * MS, Jitter::Down(0.25));
        let waits: Vec<_> = b.retries(5).collect();
        assert_eq!(waits.len(), 5);
        for (i, w) in waits.iter().enumerate() {
            let ceiling = b.ceiling(i as u32 + 1);
            assert!(*w <= ceiling && *w >= ceiling.mul_f64(0.75), "{i}: {w:?}");
        }
        // With at most a quarter taken off, each wait is longer than the one before.
        assert!(waits.windows(2).all(|w| w[1] > w[0]), "{waits:?}");
        assert_eq!(b.retries(0).count(), 0);
    }
}
