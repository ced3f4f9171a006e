//! insights-worker: the pipeline. It owns the producer (candidates → jobs), the job handler
//! (load → LLM → write, with freshness re-check and error-to-outcome mapping), the circuit
//! breaker, metrics, the HTTP surface (health, readiness, metrics, dashboard), the worker
//! runner with graceful shutdown, the operations the CLI wires (`admin`) and the demo.
//!
//! It must not contain SQL: every statement lives in `insights-store` (app data) or
//! `insights-queue` (jobs). It must not hold a database connection across an LLM call.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod breaker;
pub mod defaults;
pub mod demo;
pub mod error;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod producer;
pub mod runner;
mod wiring;

pub use breaker::{Breaker, FetchGate};
pub use error::WorkerError;
pub use handler::{JobOutcome, Pipeline};
pub use metrics::{Metrics, SkipReason, Snapshot};
pub use producer::{EnqueueReport, EnqueueRequest, enqueue};
pub use runner::{WorkSummary, WorkerOptions, run_worker};
pub use wiring::{Pools, pools, queue_config};
