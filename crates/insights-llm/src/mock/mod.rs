//! A mock OpenAI-compatible server for tests, the demo and benchmarks.
//!
//! Routes: `POST /v1/chat/completions` (a deterministic insight derived from the prompt, or an
//! injected fault, or a 429 over its request budget), `GET /stats`, `POST /stats/reset`, `POST /control/outage?on=BOOL`,
//! `GET /healthz`. Leads are identified by the request's `user` field (`lead-<id>`).
//! Every request sleeps its own latency; no lock is held across the sleep, so hundreds of
//! requests wait concurrently.

mod config;
mod insight;
mod server;
mod stats;

pub use config::{MockLlmConfig, PlannedFault, RateLimitBurst, RequestBudget};
pub use insight::{PromptFacts, derive_insight, read_prompt};
pub use server::{MockHandle, serve_mock};
pub use stats::{LeadStats, MockStats};
