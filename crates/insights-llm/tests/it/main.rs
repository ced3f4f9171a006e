//! Integration tests of insights-llm: client faults and provider setups (headers, query,
//! timeouts) against wiremock, happy paths and load against the crate's own mock server. One
//! binary for the crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_faults;
mod client_profile;
mod mock_server;
mod provider;
mod support;
