//! Mock server options and the deterministic fault plan derived from them.

use std::time::Duration;

/// What the mock injects. Faults are a pure function of `(seed, lead, n)` where `n` counts that
/// lead's requests (0-based), so a test can predict how many calls each lead needs whatever the
/// interleaving of leads; only the rate-limit bursts follow the global arrival order.
#[derive(Debug, Clone, PartialEq)]
pub struct MockLlmConfig {
    /// Base latency of every answered request (not of 429/503 rejections, which real servers
    /// send at once).
    pub latency: Duration,
    /// Extra latency, uniform in `0..latency_jitter`, fixed per (lead, n).
    pub latency_jitter: Duration,
    /// Fraction of requests answered with HTTP 500.
    pub fail_rate: f64,
    /// Periodic 429 bursts, by global arrival order.
    pub rate_limit: Option<RateLimitBurst>,
    /// A provider-like request quota: requests beyond it get a 429 `rate_limit_exceeded`.
    pub request_budget: Option<RequestBudget>,
    /// Fraction of requests answered 200 with content that is not a valid insight.
    pub malformed_rate: f64,
    /// Start in an outage (every request 503 until `set_outage(false)`).
    pub outage: bool,
    pub seed: u64,
}

impl Default for MockLlmConfig {
    /// A well-behaved server: no latency, no faults.
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            fail_rate: 0.0,
            rate_limit: None,
            request_budget: None,
            malformed_rate: 0.0,
            outage: false,
            seed: 0,
        }
    }
}

/// Of every `every_n` requests (global arrival order), the last `burst_len` get a 429
/// `rate_limit_exceeded` with `retry-after-ms: retry_after_ms` (and `retry-after` in whole
/// seconds, rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitBurst {
    pub every_n: u64,
    pub burst_len: u64,
    pub retry_after_ms: u64,
}

impl RateLimitBurst {
    /// Whether the request with global 0-based arrival index `seq` falls into a burst.
    pub fn limits(&self, seq: u64) -> bool {
        if self.every_n == 0 || self.burst_len == 0 {
            return false;
        }
        seq % self.every_n >= self.every_n.saturating_sub(self.burst_len)
    }
}

/// At most `requests` chat requests per `per`, metered in fixed windows from the mock's start,
/// as providers meter requests per minute per key. A request over the budget is answered at
/// once with 429 `rate_limit_exceeded`, `retry-after-ms` (and `retry-after`) until the window
/// ends, and the `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests` and
/// `x-ratelimit-reset-requests` headers. Rejected requests do not count against the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBudget {
    pub requests: u64,
    pub per: Duration,
}

impl RequestBudget {
    /// The window `since_start` falls in, and the time left in it.
    pub fn window(&self, since_start: Duration) -> (u64, Duration) {
        let per = self.per.as_nanos().max(1);
        let now = since_start.as_nanos();
        let index = u64::try_from(now / per).unwrap_or(u64::MAX);
        let left = per - now % per;
        (
            index,
            Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX)),
        )
    }
}

/// A fault the plan injects for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlannedFault {
    /// HTTP 500.
    ServerError,
    /// HTTP 200 whose content is not a valid insight.
    Malformed,
}

impl MockLlmConfig {
    /// With the given base latency, otherwise default.
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    /// The fault for `lead`'s `n`-th request (0-based; `n` counts every request of the lead,
    /// including ones rejected by a rate-limit burst or an outage, which take precedence).
    /// `lead` is the key stats use: the id from `user: "lead-<id>"`, or `"unknown"`.
    pub fn planned_fault(&self, lead: &str, n: u64) -> Option<PlannedFault> {
        if unit(self.seed, lead, n, Salt::Fail) < self.fail_rate {
            Some(PlannedFault::ServerError)
        } else if unit(self.seed, lead, n, Salt::Malformed) < self.malformed_rate {
            Some(PlannedFault::Malformed)
        } else {
            None
        }
    }

    /// Requests the plan makes `lead` need before its first good answer, for a client that
    /// retries every fault (no rate limits, no outage): `1 + leading faults`.
    pub fn requests_until_ok(&self, lead: &str, max: u64) -> Option<u64> {
        (0..max)
            .find(|&n| self.planned_fault(lead, n).is_none())
            .map(|n| n + 1)
    }

    /// The latency of `lead`'s `n`-th request.
    pub fn latency_for(&self, lead: &str, n: u64) -> Duration {
        if self.latency_jitter.is_zero() {
            return self.latency;
        }
        let extra = self.latency_jitter.as_secs_f64() * unit(self.seed, lead, n, Salt::Latency);
        self.latency + Duration::from_secs_f64(extra)
    }

    /// Which of the malformed shapes to send, so both parse failures and schema failures occur.
    pub(crate) fn malformed_variant(&self, lead: &str, n: u64) -> u64 {
        mix(self.seed, lead, n, Salt::Variant) % 3
    }
}

#[derive(Clone, Copy)]
enum Salt {
    Fail = 1,
    Malformed = 2,
    Latency = 3,
    Variant = 4,
}

/// A uniform value in `[0, 1)` fixed by the inputs.
fn unit(seed: u64, lead: &str, n: u64, salt: Salt) -> f64 {
    // 53 high bits make an exact f64 mantissa.
    (mix(seed, lead, n, salt) >> 11) as f64 / (1u64 << 53) as f64
}

fn mix(seed: u64, lead: &str, n: u64, salt: Salt) -> u64 {
    // FNV-1a over the lead key, then splitmix64 rounds: stable across runs and platforms, unlike
    // std's randomly keyed hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in lead.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut x = splitmix(seed ^ splitmix(h));
    x = splitmix(x ^ n);
    splitmix(x ^ salt as u64)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_deterministic_and_roughly_honours_rates() {
        let cfg = MockLlmConfig {
            fail_rate: 0.2,
            malformed_rate: 0.1,
            seed: 7,
            ..MockLlmConfig::default()
        };
        let mut fails = 0;
        let mut malformed = 0;
        for lead in 0..10_000 {
            let key = lead.to_string();
            let f = cfg.planned_fault(&key, 0);
            assert_eq!(f, cfg.planned_fault(&key, 0));
            match f {
                Some(PlannedFault::ServerError) => fails += 1,
                Some(PlannedFault::Malformed) => malformed += 1,
                None => {}
            }
        }
        assert!((1700..2300).contains(&fails), "{fails}");
        // 10% of the 80% that did not fail.
        assert!((600..1000).contains(&malformed), "{malformed}");
        let other = MockLlmConfig {
            seed: 8,
            ..cfg.clone()
        };
        let differs = (0..100).any(|l| {
            other.planned_fault(&l.to_string(), 0) != cfg.planned_fault(&l.to_string(), 0)
        });
        assert!(differs, "the seed must matter");
    }

    #[test]
    fn bursts_hit_the_tail_of_each_window() {
        let burst = RateLimitBurst {
            every_n: 5,
            burst_len: 2,
            retry_after_ms: 10,
        };
        let hits: Vec<u64> = (0..10).filter(|&s| burst.limits(s)).collect();
        assert_eq!(hits, vec![3, 4, 8, 9]);
        let off = RateLimitBurst {
            every_n: 0,
            ..burst
        };
        assert!(!off.limits(3));
    }

    #[test]
    fn budget_windows_are_fixed_from_the_start() {
        let b = RequestBudget {
            requests: 10,
            per: Duration::from_secs(1),
        };
        assert_eq!(b.window(Duration::ZERO), (0, Duration::from_secs(1)));
        assert_eq!(
            b.window(Duration::from_millis(2_250)),
            (2, Duration::from_millis(750))
        );
    }

    #[test]
    fn latency_jitter_stays_in_range() {
        let cfg = MockLlmConfig {
            latency: Duration::from_millis(100),
            latency_jitter: Duration::from_millis(50),
            ..MockLlmConfig::default()
        };
        for n in 0..100 {
            let l = cfg.latency_for("1", n);
            assert!(l >= Duration::from_millis(100) && l < Duration::from_millis(150));
        }
    }
}
