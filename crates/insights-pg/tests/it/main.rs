//! Integration tests of insights-pg on a real Postgres (one test binary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod migrator;
