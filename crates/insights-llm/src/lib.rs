//! insights-llm owns the conversation with the LLM: an OpenAI-compatible chat-completions client
//! with its retry policy ([`LlmClient`]), and a mock server for tests, the demo and benchmarks
//! ([`mock`]).
//!
//! It must not know about the database or the queue: it takes an `insights_core::Conversation`
//! and returns an insight or an [`LlmError`] that says whether and when to retry.

mod client;
mod config;
pub mod defaults;
mod error;
pub mod mock;
mod retry_after;
pub mod wire;

pub use client::{LlmClient, LlmInsight};
pub use config::LlmConfig;
pub use error::{LlmError, LlmErrorKind};
pub use retry_after::parse_retry_after;
