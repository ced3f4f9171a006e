//! Pipeline tests on a real Postgres (one fresh database per test) with the in-process mock LLM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pipeline;
