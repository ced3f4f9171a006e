//! insights-worker: the pipeline. One module per concern:
//! - `producer`: candidates → jobs.
//! - `handler`: one job (load → LLM → write, with freshness re-check and error-to-outcome
//!   mapping); `breaker`: the circuit breaker; `metrics`: counters and their Prometheus text.
//! - `runner`: the apalis worker under a `Monitor`, its background tasks and its summaries.
//! - `signals`: shutdown (ctrl-c, SIGTERM, the embedder's stop token, idleness) and the switch
//!   that stops a run's background tasks.
//! - `http`: every route (health, readiness, metrics, dashboard) and `insights dashboard`.
//! - `check`: `insights check` (a profile against the live database) and the same checks
//!   before `work` starts.
//! - `admin`: the one-shot operations the CLI wires; `demo`: the one-command demo;
//!   `wiring`: pools and clients from `Settings`.
//!
//! It must not contain SQL: every statement lives in `insights-store` (app data) or
//! `insights-queue` (jobs). It must not hold a database connection across an LLM call.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod breaker;
pub mod check;
pub mod defaults;
pub mod demo;
pub mod error;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod producer;
pub mod runner;
pub mod signals;
mod wiring;

pub use breaker::{Breaker, FetchGate};
pub use error::WorkerError;
pub use handler::{JobOutcome, Pipeline};
pub use metrics::{Metrics, SkipReason, Snapshot};
pub use producer::{EnqueueReport, EnqueueRequest, enqueue};
pub use runner::{RunOptions, WorkSummary, run_worker};
pub use wiring::{Pools, load_profile, pools, queue_config};
