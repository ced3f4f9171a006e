//! insights-queue: a Postgres job queue for apalis 1.0.
//!
//! It owns the `insights_queue` schema and its migrations, enqueue with dedupe, fetch, leases
//! and heartbeats, batched fenced completion, retry scheduling with backoff, lease rescue,
//! retention, and the read-only views apalis-board needs. It must not know about leads, LLMs or
//! any application table; it never touches another schema.
//!
//! Every statement is unnamed (`.persistent(false)`) inside an explicit transaction and under a
//! timeout, with no session state, so one code path works directly and behind pgbouncer in
//! transaction mode; the fetch is one simple-protocol statement carrying only literals (its own
//! implicit transaction; see `db.rs`). LISTEN is only used over [`QueueConfig::listen_url`] (a
//! direct URL).
//!
//! # Guarantees
//! - At least once: a job runs until a completion is written under its lease. A worker that
//!   dies leaves leases that lapse and are rescued; a job may then run again.
//! - A claim (the fetch) commits without waiting for its WAL flush. A database crash can lose
//!   the claims of the last few hundred milliseconds; those jobs are available again and run
//!   again, and the first run's completion is fenced out (its lease is gone). Whatever a
//!   handler committed on the same server afterwards flushed the claim with it.
//! - Completions, retries and discards are ordinary (durable) commits, batched.
//!
//! # Handler outcome conventions
//! What the backend's layer does with the handler's `Result`:
//! - `Ok(_)` → `completed`.
//! - `Err` that is (or wraps) an apalis [`AbortError`](apalis_core::error::AbortError) or a
//!   [`Permanent`] → `discarded`, error kept. Exception: `catch_panic` reports a panic as an
//!   `AbortError` around a `PanicError`; that is treated as a failure (below).
//! - apalis [`RetryAfterError`](apalis_core::error::RetryAfterError) → `retryable` at
//!   `now + min(hint, retry_backoff.cap)`, counting an attempt.
//! - [`Snooze`] → `scheduled` after its delay without consuming an attempt.
//! - anything else, a panic (with `catch_panic`), a timeout (with `.timeout(..)`) →
//!   `retryable` at `now + retry_backoff.delay(attempt)` (`min(cap, base·2^(attempt-1))`, full
//!   jitter by default).
//! - out of attempts → `discarded`. Every failure is kept in `errors` as
//!   `{attempt, at, error}` (the last [`defaults::ERRORS_KEPT`]).
//! - a payload that does not decode into `T` → `discarded` by the backend with the decode
//!   error; the handler never sees it.
//!
//! Give `WorkerBuilder::concurrency(n)` the same `n` as [`BackendOptions::concurrency`]: the
//! backend never leases more jobs than that (`.concurrency` needs apalis' `limit` feature).
//!
//! # The pool (built by the caller)
//! - Behind pgbouncer: `PgConnectOptions::extra_float_digits(None)` (pgbouncer refuses the
//!   start-up parameter); nothing else changes.
//! - A worker uses up to 3 connections at once (two fetches in flight; completions, heartbeat
//!   and rescue take turns on a third; plus LISTEN on its own direct connection when
//!   configured); it works with fewer, it just waits for a connection.
//! - Every call is bounded by [`QueueConfig::statement_timeout`], so the pool's own
//!   `acquire_timeout` only needs to be shorter than that.
//!
//! # Fetch order
//! Lowest `priority` first, then oldest `run_at`, then id. To keep the fetch cheap while a
//! backlog drains (fetched rows leave dead index entries until VACUUM), each worker continues
//! after the last key it fetched and rescans from the head every
//! [`defaults::FULL_SCAN_INTERVAL`] or when nothing is left after its cursor; a job that sorts
//! earlier (higher priority, handed back) therefore waits at most that long behind a backlog.

mod backend;
mod backoff;
mod board;
mod config;
mod control;
mod db;
pub mod defaults;
mod driver;
mod error;
mod job;
mod layer;
mod migrate;
mod ops;
mod outcome;
mod queue;
mod statements;
mod stats;

pub use backend::QueueBackend;
pub use board::{BoardCodec, QueueBoard};
pub use config::{BackendOptions, QueueConfig};
pub use control::FetchControl;
pub use error::{Permanent, QueueError, Snooze};
pub use insights_pg::{Backoff, Jitter, MigrateError, MigrateReport};
pub use job::{JobDetail, JobError, JobState, JobSummary, NewJob, PushOutcome, StateCounts};
pub use layer::{QueueLayer, QueueService};
pub use migrate::migrate;
pub use outcome::JobLease;
pub use queue::Queue;
pub use stats::{WorkerStats, WorkerStatsSnapshot};
