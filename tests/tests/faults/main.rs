//! The fault suite (issue 4): every failure users meet, injected into a real `insights work`
//! running against its own throwaway Postgres cluster behind its own pgbouncer (transaction
//! mode) and a TCP fault proxy. Run with
//! `cargo build -p insights-cli && cargo test -p insights-e2e --test faults -- --nocapture`;
//! each scenario prints one `FAULT-REPORT` line with its measured figures.
//!
//! Scenarios run one at a time (see [`SERIAL`]): they measure recovery times and connection
//! attempts, which a neighbour competing for the 2 CI cores would distort.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod defaults;
mod monitor;
mod runner;
mod scenarios;
mod topology;

/// Held for the whole of a scenario.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
