//! insights-pg: the Postgres foundation that the queue and the store share, so that each
//! concern exists once: the classification of database errors ([`classify`]), the one retry
//! policy ([`Backoff`]), the connection gate ([`ConnectionGate`]).
//!
//! It must not know a domain type (leads, insights, jobs) or either schema: insights-queue and
//! insights-store both build on it and must not depend on each other.

pub mod backoff;
pub mod classify;
pub mod gate;

pub use backoff::{Backoff, Jitter, Retries};
pub use classify::{ErrorClass, classify, classify_sqlstate, sqlstate};
pub use gate::{
    ConnectionGate, GATE_BASE, GATE_CAP, GATE_PROBE_PATIENCE, GatePolicy, GateStats, GateTicket,
};
