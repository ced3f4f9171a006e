//! Every tuning default of the store, named once. The user-facing ones (pool size, timeouts)
//! come from `insights_core::defaults` through `Settings`; these are internal knobs.

use std::time::Duration;

/// Retries of a transient error by the store's own calls: exponential from
/// [`RETRY_MIN_DELAY`], doubling, capped at [`RETRY_MAX_DELAY`], full jitter (each wait uniform
/// in `[0, d]`), at most [`RETRY_MAX_RETRIES`] retries after the first attempt. Worst case about
/// 0.1+0.2+0.4+0.8 = 1.5 s of waiting, short enough that a job fails fast to the queue's own
/// (longer) backoff and the circuit breaker sees the outage.
pub const RETRY_MIN_DELAY: Duration = Duration::from_millis(100);
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(2);
pub const RETRY_MAX_RETRIES: usize = 4;

// The connection gate's defaults live with it (`insights_pg::GATE_BASE`, ...).

/// Client-side bound on a store call when none is configured (mirrors
/// `insights_core::defaults::DB_STATEMENT_TIMEOUT_MS`).
pub const CALL_TIMEOUT: Duration =
    Duration::from_millis(insights_core::defaults::DB_STATEMENT_TIMEOUT_MS);
pub const ACQUIRE_TIMEOUT: Duration =
    Duration::from_millis(insights_core::defaults::DB_ACQUIRE_TIMEOUT_MS);
pub const POOL_MAX: u32 = insights_core::defaults::DB_POOL_MAX;

/// A pooled connection idle longer than this is pinged before use (a cheaper middle ground
/// than sqlx's ping-on-every-acquire, which costs a round trip per call: under load connections
/// are never idle this long). Short, because after an outage the idle connections are the dead
/// ones: a gate's probe that picked one would fail and double the wait although the database
/// is back (fault suite, scenarios 2 and 3: recovery 3.7 s with 1 s here).
pub const PING_IF_IDLE_FOR: Duration = Duration::from_millis(100);
/// Bound on the health check of a connection handed back to the pool. sqlx's own release check
/// has no bound: on a connection whose bytes vanish (a network blackhole, a middlebox that lost
/// its state) it never returns and the pool slot is lost for good.
pub const RELEASE_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections are closed after this, so a quiet worker holds no backends.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const POOL_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Server-side safety net for direct connections (a pooler rejects start-up options):
/// a transaction left open by a bug is ended by Postgres.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
pub const APPLICATION_NAME: &str = "insights-worker";

/// Batched insight writer: at most this many records per flush ...
pub const WRITER_MAX_BATCH: usize = 256;
/// ... and no extra wait for more: a flush starts as soon as a flush slot is free, taking what
/// is queued. At low load a write costs one round trip; under load records pile up while the
/// slots are busy, so batches grow with the load (group commit, graphile-worker style). A
/// positive linger only added latency: measured by `insights-bench pipeline`.
pub const WRITER_LINGER: Duration = Duration::ZERO;
/// Flushes that may run at once (each on its own connection), so collecting the next batch
/// overlaps with committing the previous one.
pub const WRITER_MAX_CONCURRENT_FLUSHES: usize = 2;
/// Records that may wait for a flush before `write` applies back-pressure.
pub const WRITER_QUEUE_CAPACITY: usize = 8192;

/// Rows per statement when seeding.
pub const SEED_CHUNK_ROWS: usize = 20_000;

/// Batched conversation loader: up to this many leads per statement (as many as the writer's:
/// the queue hands out up to 200 jobs per fetch, and 64 took several round trips to load them;
/// 256 measured about 20% more leads/s in `insights-bench pipeline`) ...
pub const LOADER_MAX_BATCH: usize = 256;
/// ... taking only loads already queued (no waiting: a lone load is never delayed) ...
pub const LOADER_LINGER: Duration = Duration::ZERO;
/// ... with this many statements in flight (each on its own connection).
pub const LOADER_MAX_CONCURRENT_LOADS: usize = 2;
pub const LOADER_QUEUE_CAPACITY: usize = 8192;

/// `lock_timeout` of `insights check`'s transaction (at most its statement timeout): preparing
/// a statement takes the locks running it would, and a table someone holds locked makes that
/// statement "not checked" quickly instead of stalling the check.
pub const CHECK_LOCK_TIMEOUT: Duration = Duration::from_secs(1);
