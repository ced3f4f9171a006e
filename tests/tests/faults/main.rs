//! The fault suite proves that a real `insights work`, running against its own throwaway
//! Postgres cluster behind its own pgbouncer (transaction mode) and a TCP fault proxy, survives
//! every failure users meet (pooler or database down, backends killed, pooler saturated,
//! network blackhole, worker killed or stopped, LLM faults, a malformed job): processing
//! resumes within its recovery budget, connection attempts stay within their budget while the
//! database is down, `/readyz` reports the outage, every candidate lead ends with exactly one
//! fresh insight written from an LLM answer it paid for, and no job is lost. Run with
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
