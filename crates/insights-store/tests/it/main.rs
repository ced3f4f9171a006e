//! Integration tests of insights-store on a real Postgres (one test binary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod candidates;
mod check;
mod classify;
mod connect;
mod gate;
mod load;
mod loader;
mod migrations;
mod pooler;
mod seeding;
mod support;
mod throughput;
mod upsert;
mod writer;
