//! Retrying transient store errors with backon, waiting per the policy's [`Backoff`]
//! (exponential, capped, full jitter by default), a bounded number of times. Only transient
//! errors are retried (see `error.rs`); a permanent one returns at once.

use std::future::Future;
use std::time::Duration;

use backon::Retryable;
use insights_pg::{Backoff, Jitter, Retries};

use crate::defaults;
use crate::error::StoreError;

/// How the store retries transient errors. Defaults in `defaults.rs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The wait before the n-th retry.
    pub backoff: Backoff,
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff: Backoff::new(
                defaults::RETRY_MIN_DELAY,
                defaults::RETRY_MAX_DELAY,
                Jitter::Full,
            ),
            max_retries: defaults::RETRY_MAX_RETRIES,
        }
    }
}

impl RetryPolicy {
    /// No retries: the caller (e.g. the queue's own backoff) decides.
    pub const fn none() -> Self {
        Self {
            backoff: Backoff::new(Duration::ZERO, Duration::ZERO, Jitter::None),
            max_retries: 0,
        }
    }

    /// The waits this policy would use, as a backon backoff.
    pub fn backoff(&self) -> Retries {
        self.backoff.retries(self.max_retries)
    }
}

/// Runs `op`, retrying transient errors per `policy`.
pub async fn retry_transient<T, F, Fut>(policy: &RetryPolicy, op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    op.retry(policy.backoff())
        .sleep(tokio::time::sleep)
        .when(StoreError::is_transient)
        .notify(|e: &StoreError, wait: Duration| {
            tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "retrying a transient database error");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn backoff_is_bounded_and_capped() {
        let p = RetryPolicy::default();
        let waits: Vec<Duration> = p.backoff().collect();
        assert_eq!(waits.len(), defaults::RETRY_MAX_RETRIES);
        assert!(waits.iter().all(|w| *w <= defaults::RETRY_MAX_DELAY));
        assert_eq!(RetryPolicy::none().backoff().count(), 0);
    }

    #[tokio::test]
    async fn retries_transient_not_permanent() {
        let fast = RetryPolicy {
            backoff: Backoff::new(
                Duration::from_millis(1),
                Duration::from_millis(4),
                Jitter::Full,
            ),
            ..RetryPolicy::default()
        };
        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = retry_transient(&fast, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::sqlx("t", sqlx::Error::PoolTimedOut))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1 + defaults::RETRY_MAX_RETRIES
        );

        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = retry_transient(&fast, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Decode {
                op: "t",
                detail: "x".into(),
            })
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicUsize::new(0);
        let r = retry_transient(&fast, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(StoreError::sqlx("t", sqlx::Error::PoolTimedOut))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
    }
}
