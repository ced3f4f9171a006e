//! Integration tests of insights-store on a real Postgres (one test binary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod candidates;
mod connect;
mod load;
mod migrations;
mod pooler;
mod seeding;
mod support;
mod upsert;
mod writer;
