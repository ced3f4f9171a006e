//! Every default of the LLM client and the mock server, named once with the reason for its value.

use std::time::Duration;

use insights_pg::{Backoff, Jitter};

/// The built-in mock's address shape; a real deployment always sets `INSIGHTS_LLM_BASE_URL`.
pub const BASE_URL: &str = "http://127.0.0.1:8089/v1";

/// A small, cheap model that supports strict `json_schema` output (the environment's default,
/// defined once in insights-core).
pub const MODEL: &str = insights_core::defaults::LLM_MODEL;

/// TCP + TLS handshake bound: a blackholed host should fail fast and be retried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Total bound of one HTTP request (headers and body). Unbounded requests hang forever in
/// practice; healthy calls take 30-120 s, reasoning models longer, and the connect phase has
/// its own short bound. Same value as `INSIGHTS_LLM_TIMEOUT_MS`'s default.
pub const REQUEST_TIMEOUT: Duration =
    Duration::from_millis(insights_core::defaults::LLM_TIMEOUT_MS);

/// Inline retries of transient failures (408/409/429/5xx, connect errors, timeouts) within one
/// `generate_insight` call; the queue's own backoff takes over after that. The OpenAI SDKs use 2;
/// one more smooths over short blips without holding a worker slot for long.
pub const MAX_RETRIES: u32 = 3;

/// Waits between transient retries without a server hint: from 0.5 s doubling up to 8 s, as
/// the OpenAI SDKs do, with full jitter so clients that failed together do not retry together.
/// The cap is also the wait handed to the queue for a 429 that named none.
pub const RETRY: Backoff = Backoff::new(
    Duration::from_millis(500),
    Duration::from_secs(8),
    Jitter::Full,
);

/// A `retry-after` longer than this is handed back to the caller (`LlmError::RetryLater`) so the
/// job is rescheduled instead of holding a worker slot while it waits.
pub const MAX_INLINE_WAIT: Duration = Duration::from_secs(10);

/// Extra attempts when the model's content is not valid JSON for the schema; models rarely fail
/// twice in a row under strict mode, and every retry costs tokens.
pub const MALFORMED_RETRIES: u32 = 2;

/// Characters of conversation text in the prompt (~4 characters per token); the default of
/// `INSIGHTS_PROMPT_BUDGET_CHARS`.
pub const PROMPT_BUDGET_CHARS: usize = insights_core::defaults::PROMPT_BUDGET_CHARS;

/// `finish_reason=length` halves the budget down to this floor; below it the lead is failed.
pub const MIN_PROMPT_BUDGET_CHARS: usize = 2_000;

/// Completion token cap: the insight is a few sentences and two short lists.
pub const MAX_TOKENS: u32 = 800;

/// Response bodies above this are cut off and treated as malformed: an insight is a few KB.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Raw model output kept in `LlmError::Malformed` for diagnosis, in characters.
pub const MALFORMED_SNIPPET_CHARS: usize = 300;

/// Fraction of a server-given retry-after added as random jitter (0..this), so a burst of
/// workers told to wait the same time does not return in lockstep.
pub const RETRY_AFTER_JITTER: f64 = 0.1;
