//! Queue and worker configuration; defaults live in [`crate::defaults`].

use std::time::Duration;

use insights_pg::Backoff;

use crate::defaults;

/// Settings shared by producers, workers and the operations API.
///
/// `Default` gives: poll 100 ms, lease 30 s, heartbeat 10 s, rescue 15 s, completion flush
/// at once (no linger) / 1,000 rows, fetch batch at most 200, retry backoff 2 s doubling to a 600 s cap (full
/// jitter), 8 attempts, 10 s per database round trip, database backoff 100 ms → 5 s, 10 s to
/// flush completions at shutdown, no LISTEN (polling only), jobs given up 24 h after they were
/// enqueued if they are still being snoozed.
#[derive(Clone)]
pub struct QueueConfig {
    pub poll_interval: Duration,
    pub lease_duration: Duration,
    pub heartbeat_interval: Duration,
    pub rescue_interval: Duration,
    pub completion_flush_interval: Duration,
    pub completion_max_batch: usize,
    pub fetch_max_batch: usize,
    /// Wait before a failed job's next attempt (n = the attempt that failed); its cap also
    /// bounds a handler's retry-after hint.
    pub retry_backoff: Backoff,
    pub default_max_attempts: i32,
    /// Bound on every database call (begin + statement + commit), enforced client-side so it
    /// also holds behind a pooler and when the network swallows packets.
    pub statement_timeout: Duration,
    /// Wait between database retries of the fetch loop, heartbeat, rescuer and completer.
    pub db_backoff: Backoff,
    pub shutdown_flush_timeout: Duration,
    /// How long a job may keep being snoozed (its attempt given back) after it was enqueued.
    /// A snooze of an older job discards it ("gave up after <age>: <last error>"), so a job
    /// that only ever meets infrastructure trouble does not wait forever.
    pub max_job_age: Duration,
    /// A direct (or session-mode) URL for LISTEN; never a transaction-pooler URL. `None`: poll.
    pub listen_url: Option<String>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            poll_interval: defaults::POLL_INTERVAL,
            lease_duration: defaults::LEASE_DURATION,
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            rescue_interval: defaults::RESCUE_INTERVAL,
            completion_flush_interval: defaults::COMPLETION_FLUSH_INTERVAL,
            completion_max_batch: defaults::COMPLETION_MAX_BATCH,
            fetch_max_batch: defaults::FETCH_MAX_BATCH,
            retry_backoff: defaults::RETRY_BACKOFF,
            default_max_attempts: defaults::MAX_ATTEMPTS,
            statement_timeout: defaults::STATEMENT_TIMEOUT,
            db_backoff: defaults::DB_BACKOFF,
            shutdown_flush_timeout: defaults::SHUTDOWN_FLUSH_TIMEOUT,
            max_job_age: defaults::MAX_JOB_AGE,
            listen_url: None,
        }
    }
}

// The listen URL may carry a password: never print it.
impl std::fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueConfig")
            .field("poll_interval", &self.poll_interval)
            .field("lease_duration", &self.lease_duration)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("rescue_interval", &self.rescue_interval)
            .field("completion_flush_interval", &self.completion_flush_interval)
            .field("completion_max_batch", &self.completion_max_batch)
            .field("fetch_max_batch", &self.fetch_max_batch)
            .field("retry_backoff", &self.retry_backoff)
            .field("default_max_attempts", &self.default_max_attempts)
            .field("statement_timeout", &self.statement_timeout)
            .field("db_backoff", &self.db_backoff)
            .field("shutdown_flush_timeout", &self.shutdown_flush_timeout)
            .field("max_job_age", &self.max_job_age)
            .field("listen_url", &self.listen_url.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Per-worker settings for [`crate::Queue::worker_backend`].
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Jobs leased at once by this worker (running + fetched but not yet started). Give the
    /// same number to `WorkerBuilder::concurrency`.
    pub concurrency: usize,
    /// Run the lease rescuer from this worker (any worker may; one is enough).
    pub run_rescuer: bool,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            concurrency: defaults::CONCURRENCY,
            run_rescuer: true,
        }
    }
}

impl BackendOptions {
    pub fn with_concurrency(concurrency: usize) -> Self {
        Self {
            concurrency,
            ..Self::default()
        }
    }
}
