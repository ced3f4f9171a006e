//! insights-e2e: the harness the end-to-end suites share (the pipeline suite in
//! `tests/pipeline`, the fault suite in `tests/faults`).
//!
//! It owns: running the real `insights` binary ([`Insights`], [`Proc`]), the mock LLM in
//! process or as a child ([`mock`]), a scripted wiremock LLM ([`llm_script`]), the worker in
//! process with access to its store statistics ([`InProcessWorker`]), test databases with
//! seeding and the pipeline assertions ([`E2eDb`]), backend sampling ([`BackendSample`]) and
//! pgbouncer in front of a test database ([`pooler`]).
//!
//! It must not touch anything it did not start: it only drops databases it created (through
//! `insights_testkit::TestDb`) and only signals processes it spawned. It never runs cargo (the
//! binary is built before the tests, see [`insights_bin`]).

pub mod bin;
pub mod db;
pub mod defaults;
pub mod env;
pub mod inproc;
pub mod llm_script;
pub mod mock;
pub mod pooler;
pub mod proc;

pub use bin::{Insights, RunOutput, insights_bin};
pub use db::{BackendSample, E2eDb, JobRow, PipelineCheck};
pub use env::WorkerEnv;
pub use inproc::InProcessWorker;
pub use insights_testkit::{TestDb, wait_until};
pub use mock::{MockLlmProcess, start_mock};
pub use proc::Proc;

/// Patterns that betray a named prepared statement reaching a transaction pooler, or a
/// protocol error from it, in worker logs.
pub const PREPARED_STATEMENT_ERRORS: [&str; 4] = ["prepared statement", "08P01", "26000", "42P05"];

/// Lines of `log` that contain any of [`PREPARED_STATEMENT_ERRORS`] (case-insensitive).
pub fn prepared_statement_errors(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let lower = l.to_lowercase();
            PREPARED_STATEMENT_ERRORS
                .iter()
                .any(|p| lower.contains(&p.to_lowercase()))
        })
        .map(str::to_owned)
        .collect()
}
