//! The configuration defaults other crates need as constants: the store's pool and timeouts, the
//! LLM client's model, timeout and prompt budget. Each is the default of its variable's row in
//! [`crate::config`], which reads it from here; every other default is written only in its row.

/// `INSIGHTS_DB_POOL_MAX`.
pub const DB_POOL_MAX: u32 = 4;
/// `INSIGHTS_DB_ACQUIRE_TIMEOUT_MS`.
pub const DB_ACQUIRE_TIMEOUT_MS: u64 = 5_000;
/// `INSIGHTS_DB_STATEMENT_TIMEOUT_MS`: without a client-side bound a blackholed connection
/// hangs a call forever.
pub const DB_STATEMENT_TIMEOUT_MS: u64 = 10_000;
/// `INSIGHTS_LLM_MODEL`: a small, cheap model that supports strict `json_schema` output.
pub const LLM_MODEL: &str = "gpt-4o-mini";
/// `INSIGHTS_LLM_TIMEOUT_MS`: healthy calls take 30-120 s (reasoning models longer), and a call
/// cut short is paid for and asked again; five minutes still ends a request that hangs.
pub const LLM_TIMEOUT_MS: u64 = 300_000;
/// `INSIGHTS_PROMPT_BUDGET_CHARS` (about 4 characters per token).
pub const PROMPT_BUDGET_CHARS: usize = 24_000;
