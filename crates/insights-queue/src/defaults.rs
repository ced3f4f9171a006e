//! Every default of the queue, named once. [`crate::QueueConfig::default`] and
//! [`crate::BackendOptions::default`] are built from these.

use std::time::Duration;

use insights_pg::{Backoff, Jitter};

/// How long an idle worker waits before asking for work again. A fetch that fills every free
/// slot re-polls at once, so this only bounds the pick-up latency of an idle worker.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a fetched job stays leased without a heartbeat. After that any worker's rescuer may
/// hand it to someone else, so it must comfortably exceed a stalled heartbeat round.
pub const LEASE_DURATION: Duration = Duration::from_secs(30);

/// How often a worker extends the leases of its in-flight jobs (a third of the lease, so two
/// heartbeats may fail before a lease lapses).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// How often each worker looks for expired leases. The statement is an index range scan on
/// running rows only, so running it from every worker is cheap.
pub const RESCUE_INTERVAL: Duration = Duration::from_secs(15);

/// How long the first finished job waits for others so that their completions share one
/// statement. Zero: a completion is written at once, and completions that arrive while a flush
/// is on the wire go together in the next flush (group commit), so batches still grow with the
/// load. A fixed wait only added latency (`insights-bench queue`: the 200 ms case's tail).
pub const COMPLETION_FLUSH_INTERVAL: Duration = Duration::ZERO;

/// Longest a completion flush waits for fetch statements on the wire to land first.
pub const COMPLETION_YIELD_MAX: Duration = Duration::from_millis(10);

/// Most completions written by one statement.
pub const COMPLETION_MAX_BATCH: usize = 1_000;

/// How often a worker's fetch scans the index from its head instead of after its cursor, so
/// jobs that sort before the cursor (handed back, higher priority) wait at most this long
/// while a backlog is being drained.
pub const FULL_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Most jobs claimed by one fetch statement (a fetch never claims more than the free slots).
pub const FETCH_MAX_BATCH: usize = 200;

/// First retry delay of a failed job; doubles per attempt (full jitter).
pub const RETRY_BACKOFF_BASE: Duration = Duration::from_secs(2);

/// Longest retry delay of a failed job, also the cap on a handler's retry-after hint.
pub const RETRY_BACKOFF_CAP: Duration = Duration::from_secs(600);

/// A failed job's retry delay: full jitter, because a crowd of jobs that failed together (a
/// dependency was down) should come back spread out, and their mean wait does not matter.
pub const RETRY_BACKOFF: Backoff =
    Backoff::new(RETRY_BACKOFF_BASE, RETRY_BACKOFF_CAP, Jitter::Full);

/// Attempts before a failing job is discarded.
pub const MAX_ATTEMPTS: i32 = 8;

/// Age past which a snoozed job is discarded instead of scheduled again: a day outlasts any
/// outage worth waiting for, and an insight a day late is still worth having.
pub const MAX_JOB_AGE: Duration = Duration::from_secs(24 * 3600);

/// Upper bound on every database round trip of the queue (begin, statement, commit).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// First delay after a failed database call of the fetch loop, heartbeat or completer.
pub const DB_BACKOFF_BASE: Duration = Duration::from_millis(100);

/// Longest delay between database retries during an outage.
pub const DB_BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Delay between database retries of a worker's loops: full jitter, so workers that lost the
/// database together do not return together.
pub const DB_BACKOFF: Backoff = Backoff::new(DB_BACKOFF_BASE, DB_BACKOFF_CAP, Jitter::Full);

// The connection gate's defaults live with it (`insights_pg::GATE_BASE`, ...).

/// How long `poll_close` keeps trying to write pending completions during shutdown before it
/// gives up and leaves those jobs to the rescuer (their leases lapse).
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows per `push_bulk` statement.
pub const PUSH_CHUNK: usize = 2_500;

/// `push_bulk` statements in flight at once (each on its own connection).
pub const PUSH_PARALLEL: usize = 3;

/// Rescued rows per rescue statement.
pub const RESCUE_BATCH: i64 = 1_000;

/// Errors kept per job (oldest dropped first), so a job snoozed for hours stays small.
pub const ERRORS_KEPT: i32 = 20;

/// Jobs a worker runs at once when [`crate::BackendOptions::concurrency`] is not set.
pub const CONCURRENCY: usize = 8;

/// Channel the queue notifies on insert; only listened to over a direct URL.
pub const NOTIFY_CHANNEL: &str = "insights_queue_jobs";
