//! Benchmarks of issue 2 (the queue) and issue 3 (the pipeline), each against its baseline:
//! apalis-postgres 1.0 for the queue, a connection-holding naive worker for the pipeline.
//!
//! Bench-only: the production binary never links this crate (it alone carries apalis-postgres).
//! It creates and drops its own databases (`insights_bench_*`) on the local server and must not
//! touch any other database.

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
