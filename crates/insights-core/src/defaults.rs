//! Every default of the configuration, named once. `config::VARIABLES` documents them and
//! the README table is checked against that list.

pub const CONCURRENCY: usize = 8;
pub const DB_POOL_MAX: u32 = 4;
pub const ENQUEUE_LIMIT: u64 = 10_000;
pub const MAX_ATTEMPTS: u32 = 8;
pub const BREAKER_THRESHOLD: u32 = 3;
pub const HTTP_BIND: &str = "127.0.0.1:9090";
pub const LLM_MODEL: &str = "gpt-4o-mini";
/// How long a pool waits for a free connection before giving up (a transient error).
pub const DB_ACQUIRE_TIMEOUT_MS: u64 = 5_000;
/// Bound on every store/queue call measured on the client (a blackholed connection otherwise
/// hangs forever; see research/pgbouncer-sqlx.md).
pub const DB_STATEMENT_TIMEOUT_MS: u64 = 10_000;
/// Total timeout of one LLM HTTP request.
pub const LLM_TIMEOUT_MS: u64 = 60_000;
/// Newest messages loaded per lead.
pub const MAX_MESSAGES: u32 = 200;
/// Characters of conversation text the prompt may carry (~4 characters per token).
pub const PROMPT_BUDGET_CHARS: usize = 24_000;

/// Upper bounds used by validation; a value beyond them is almost surely a typo.
pub const MAX_CONCURRENCY: usize = 4096;
pub const MAX_POOL: u32 = 1000;
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
