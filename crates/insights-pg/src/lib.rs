//! insights-pg: the Postgres foundation that the queue and the store share, so that each
//! concern exists once: the classification of database errors ([`classify`]), the one retry
//! policy ([`Backoff`]), the connection gate ([`ConnectionGate`]), the migration runner
//! ([`Migrator`], checksummed bookkeeping under a transaction-scoped advisory lock), URL helpers
//! ([`url`]) and, behind the `scratch` feature, throwaway databases for tests and benchmarks.
//!
//! It must not know a domain type (leads, insights, jobs) or either schema: insights-queue and
//! insights-store bring their own migrations and tables, build on it, and must not depend on
//! each other.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod backoff;
pub mod classify;
pub mod gate;
pub mod migrate;
#[cfg(feature = "scratch")]
pub mod scratch;
pub mod url;

pub use backoff::{Backoff, Jitter, Retries};
pub use classify::{ErrorClass, classify, classify_sqlstate, sqlstate};
pub use gate::{
    ConnectionGate, GATE_BASE, GATE_CAP, GATE_JITTER, GATE_PROBE_PATIENCE, GatePolicy, GateStats,
    GateTicket,
};
pub use migrate::{MigrateError, MigrateReport, Migration, Migrator};
#[cfg(feature = "scratch")]
pub use scratch::{ScratchDb, ScratchError};
