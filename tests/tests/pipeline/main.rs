//! The pipeline end to end: real Postgres, the real `insights` binary (or the worker in process
//! where a test needs the store's statistics), the mock LLM or a scripted wiremock LLM. It
//! proves that every booked lead with a missing or stale insight gets one fresh insight per LLM
//! answer, that bad input and LLM faults end in the documented outcome, that the producer
//! enqueues each lead once, that no app-database connection is held while the LLM thinks, that
//! secrets read from files never reach output or process arguments, that TLS to the database
//! and to pgbouncer holds for every `sslmode` and URL, that `insights demo` runs in one command,
//! that `insights check` judges a profile against a real schema without changing it, and that
//! the app can enqueue by itself (a trigger, `add_job`), also through a transaction pooler.
//! One test binary; run with `cargo test -p insights-e2e --test pipeline` after building the
//! binary (`cargo build -p insights-cli --bin insights`, which `scripts/test` does).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app_enqueue;
mod bad_input;
mod check;
mod db_faults;
mod demo;
mod economy;
mod harness;
mod healthcheck;
mod llm_faults;
mod llm_outage;
mod producer;
mod profiles;
mod rate_limits;
mod secrets;
mod support;
mod tls;

#[test]
fn the_binary_is_built() {
    insights_e2e::insights_bin().unwrap();
}
