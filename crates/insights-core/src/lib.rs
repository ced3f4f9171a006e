//! Domain core of insights-worker: lead and conversation types, the job payload, the insight
//! content with its JSON schema and validation, prompt building, secret redaction, and the
//! configuration: one row per environment variable (name, default, accepted form, meaning) that
//! parses `Settings` and renders the README's table; the profile (a team's statements, prompt
//! templates, insight schema and LLM parameters in one TOML file) and lead keys of any SQL type.
//!
//! This crate does no I/O: no database, no network, no process environment (configuration is
//! read through a lookup closure the caller supplies), except reading a profile file and the
//! files it names, and the secret files that `_FILE` variables name (`Settings::from_lookup`
//! reads them; `Settings::from_sources` takes the reader as a closure). Everything else here is
//! pure and unit-tested.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod conversation;
pub mod defaults;
pub mod insight;
pub mod job;
pub mod profile;
pub mod prompt;
pub mod secret;

pub use config::{
    AuthHeader, ConfigError, PoolerMode, Row, Settings, Sources, VARIABLES, Var, variables_markdown,
};
pub use conversation::{Conversation, Direction, LeadSnapshot, Message};
pub use insight::{
    InsightContent, InsightRecord, InsightValidationError, Sentiment, insight_json_schema,
    normalise_insight, parse_insight,
};
pub use job::{INSIGHTS_QUEUE, InsightJob};
pub use profile::{LeadKey, LeadKeyKind, Profile, ProfileError};
pub use prompt::{PROMPT_VERSION, Prompt};
pub use secret::{DatabaseUrl, Secret, SecretString};
