//! Benchmarks of the queue and of the pipeline, each against its baseline:
//! apalis-postgres 1.0 for the queue, a connection-holding naive worker for the pipeline.
//!
//! Bench-only: the production binary never links this crate (it alone carries apalis-postgres).
//! It creates and drops its own databases (`insights_bench_*`) on the local server and must not
//! touch any other database.
//!
//! Run (release mode; each prints a table, or one JSON object with `--json`):
//! - `cargo run --release -p insights-bench -- queue` — ours vs apalis-postgres 1.0 (poll 50 ms,
//!   batch 10 and 100): no-op drain (20,000 jobs, concurrency 32), bulk enqueue (100,000), a
//!   200 ms handler (5,000 jobs, concurrency 50, peak backends), decay (100,000-job drain).
//! - `cargo run --release -p insights-bench -- pipeline` — 20,000 seeded leads, producer and
//!   worker in process, mock LLM at 0 ms: leads/s end to end.
//! - `cargo run --release -p insights-bench -- connections` — mock LLM at 1 s, concurrency 256,
//!   pool max 4: leads/s, peak backends, mean connection hold per lead, worker peak RSS; and
//!   the naive connection-holding worker.
//!
//! How it measures: every scenario gets a fresh database; drains are clocked from the first
//! handler start to the moment the database shows every job done (the bench's own counting
//! connection is excluded from the backend count); backends are the bench database's client
//! backends sampled every 20 ms from a connection to another database. Sizes shrink with flags
//! (`--quick`, `--noop-jobs`, `--leads`, ...); every wait has a deadline.

pub mod apalis_baseline;
pub mod bench_db;
pub mod defaults;
pub mod measure;
pub mod naive;
pub mod ours_queue;
pub mod pipeline;
pub mod pipeline_cmd;
pub mod queue_cmd;
pub mod report;
pub mod scenario;

pub use measure::timed;
