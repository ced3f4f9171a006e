//! What a handler's result means for its job (the conventions documented in the crate root).
//!
//! A snooze gives the attempt back, so attempts alone never end a job that only meets
//! infrastructure trouble; [`QueueConfig::max_job_age`] does: a snooze of a job enqueued longer
//! ago than that discards it with "gave up after <age>: <last error>".

use std::error::Error as StdError;
use std::time::Duration;

use apalis::layers::catch_panic::PanicError;
use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use chrono::{DateTime, Utc};

use crate::config::QueueConfig;
use crate::error::{Permanent, Snooze};
use crate::statements::Completion;

/// Longest error text kept per attempt.
const MAX_ERROR_LEN: usize = 2_000;

/// The identity of a leased job, carried in the task's extensions to the backend's layer.
#[derive(Debug, Clone)]
pub struct JobLease {
    pub id: i64,
    pub token: i64,
    pub attempt: i32,
    pub max_attempts: i32,
    /// When the job was enqueued, for [`QueueConfig::max_job_age`] (`None`: not known, never
    /// aged out).
    pub created_at: Option<DateTime<Utc>>,
}

impl JobLease {
    /// How long ago the job was enqueued, if known (zero for a clock running behind).
    pub fn age(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.created_at
            .map(|at| (now - at).to_std().unwrap_or(Duration::ZERO))
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

enum Kind {
    Discard,
    RetryAfter(Duration),
    /// The delay and the snooze's own reason (without the "snoozed for" preamble).
    Snooze(Duration, String),
    Retry,
}

fn kind_of(err: &BoxDynError) -> Kind {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err.as_ref());
    while let Some(e) = cur {
        if let Some(abort) = e.downcast_ref::<AbortError>() {
            // catch_panic reports a panic as an AbortError wrapping a PanicError: a panic is a
            // failure to retry, not a verdict on the job.
            let panicked = abort
                .source()
                .is_some_and(|s| s.downcast_ref::<PanicError>().is_some());
            return if panicked { Kind::Retry } else { Kind::Discard };
        }
        if e.downcast_ref::<Permanent>().is_some() {
            return Kind::Discard;
        }
        if let Some(s) = e.downcast_ref::<Snooze>() {
            return Kind::Snooze(s.delay, s.reason.clone());
        }
        if let Some(r) = e.downcast_ref::<RetryAfterError>() {
            return Kind::RetryAfter(r.get_duration());
        }
        if e.downcast_ref::<PanicError>().is_some() {
            return Kind::Retry;
        }
        cur = e.source();
    }
    Kind::Retry
}

/// Maps a handler result onto the row's next state.
pub(crate) fn completion_for<R>(
    lease: &JobLease,
    result: &Result<R, BoxDynError>,
    config: &QueueConfig,
) -> Completion {
    let base =
        |state: &'static str, delay: Duration, error: Option<String>, refund: bool| Completion {
            id: lease.id,
            token: lease.token,
            state,
            delay,
            error,
            refund,
        };
    let err = match result {
        Ok(_) => return base("completed", Duration::ZERO, None, false),
        Err(e) => e,
    };
    let text = truncate(err.to_string());
    let exhausted = lease.attempt >= lease.max_attempts;
    match kind_of(err) {
        Kind::Discard => base("discarded", Duration::ZERO, Some(text), false),
        Kind::Snooze(delay, reason) => match lease.age(Utc::now()) {
            Some(age) if age > config.max_job_age => base(
                "discarded",
                Duration::ZERO,
                Some(truncate(format!(
                    "gave up after {}: {reason}",
                    whole_seconds(age)
                ))),
                false,
            ),
            _ => base("scheduled", delay, Some(text), true),
        },
        Kind::RetryAfter(_) | Kind::Retry if exhausted => base(
            "discarded",
            Duration::ZERO,
            Some(format!(
                "attempts exhausted ({}/{}): {text}",
                lease.attempt, lease.max_attempts
            )),
            false,
        ),
        Kind::RetryAfter(hint) => base(
            "retryable",
            hint.min(config.retry_backoff.cap),
            Some(text),
            false,
        ),
        Kind::Retry => base(
            "retryable",
            config
                .retry_backoff
                .delay(u32::try_from(lease.attempt.max(1)).unwrap_or(1)),
            Some(text),
            false,
        ),
    }
}

/// `age` in whole seconds, humanly (`26h 0m 12s`).
fn whole_seconds(age: Duration) -> String {
    let s = age.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(attempt: i32) -> JobLease {
        JobLease {
            id: 1,
            token: 2,
            attempt,
            max_attempts: 3,
            created_at: Some(Utc::now()),
        }
    }

    #[test]
    fn conventions() {
        let cfg = QueueConfig::default();
        let ok: Result<(), BoxDynError> = Ok(());
        assert_eq!(completion_for(&lease(1), &ok, &cfg).state, "completed");

        let abort: Result<(), BoxDynError> = Err(Box::new(AbortError::new("no")));
        assert_eq!(completion_for(&lease(1), &abort, &cfg).state, "discarded");

        let panic: Result<(), BoxDynError> =
            Err(Box::new(AbortError::new(PanicError("boom".into()))));
        assert_eq!(completion_for(&lease(1), &panic, &cfg).state, "retryable");

        let perm: Result<(), BoxDynError> = Err(Box::new(Permanent::new("bad input")));
        assert_eq!(completion_for(&lease(1), &perm, &cfg).state, "discarded");

        let hint: Result<(), BoxDynError> = Err(Box::new(RetryAfterError::new(
            "429",
            Duration::from_secs(100_000),
        )));
        let c = completion_for(&lease(1), &hint, &cfg);
        assert_eq!((c.state, c.delay), ("retryable", cfg.retry_backoff.cap));

        let snooze: Result<(), BoxDynError> =
            Err(Box::new(Snooze::new(Duration::from_secs(3), "db down")));
        let c = completion_for(&lease(3), &snooze, &cfg);
        assert_eq!((c.state, c.refund), ("scheduled", true));

        // Past the maximum age a snooze gives up, saying how old the job is and why it waited.
        let mut old = lease(1);
        old.created_at = Some(Utc::now() - chrono::Duration::hours(25));
        let c = completion_for(&old, &snooze, &cfg);
        assert_eq!((c.state, c.refund), ("discarded", false));
        let reason = c.error.unwrap_or_default();
        assert!(reason.starts_with("gave up after 25h 0m "), "{reason}");
        assert!(reason.ends_with("db down"), "{reason}");
        // An unknown age never ages out.
        old.created_at = None;
        assert_eq!(completion_for(&old, &snooze, &cfg).state, "scheduled");

        let other: Result<(), BoxDynError> = Err("plain".into());
        assert_eq!(completion_for(&lease(3), &other, &cfg).state, "discarded");
        assert_eq!(completion_for(&lease(2), &other, &cfg).state, "retryable");
    }
}
