//! What can go wrong calling the LLM, classified for the caller: retry now, retry later, or
//! give up on this lead (and whether the whole worker should pause).

use std::time::Duration;

/// Coarse classification of an [`LlmError`], for metrics and for the worker's decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LlmErrorKind {
    /// The server asked for a wait (429, or a 5xx with `retry-after`) beyond the inline budget,
    /// or rate limits persisted through the inline retries: reschedule after the hint.
    RateLimited,
    /// 429 `insufficient_quota` or a billing error: nothing succeeds until a person acts, so the
    /// worker should pause rather than burn every job.
    Quota,
    /// 401/403: the key is wrong or lacks access; also needs a person.
    Auth,
    /// Other 4xx (bad request, unknown model, payload too large, ...).
    BadRequest,
    /// 408/409/5xx, an `error` object in a 200, connection errors and timeouts, after the
    /// bounded inline retries.
    Transient,
    /// The model's content was not valid JSON for the schema, after the bounded retries.
    Malformed,
    /// The model refused or the content filter stopped it: a per-lead outcome.
    Refused,
    /// `finish_reason=length` even at the smallest prompt budget.
    Truncated,
    /// The client could not be built or the request could not be formed.
    Config,
    /// The prompt could not be rendered from this lead's loaded rows (a field the template
    /// reads is missing or of the wrong kind for a filter): a per-lead outcome, no request made.
    Prompt,
}

impl LlmErrorKind {
    /// Stable lower-case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmErrorKind::RateLimited => "rate_limited",
            LlmErrorKind::Quota => "quota",
            LlmErrorKind::Auth => "auth",
            LlmErrorKind::BadRequest => "bad_request",
            LlmErrorKind::Transient => "transient",
            LlmErrorKind::Malformed => "malformed",
            LlmErrorKind::Refused => "refused",
            LlmErrorKind::Truncated => "truncated",
            LlmErrorKind::Config => "config",
            LlmErrorKind::Prompt => "prompt",
        }
    }

    /// Errors that no job can get past until someone changes the account or the configuration;
    /// the worker should pause fetching instead of discarding every job.
    pub fn needs_operator(self) -> bool {
        matches!(
            self,
            LlmErrorKind::Quota | LlmErrorKind::Auth | LlmErrorKind::Config
        )
    }
}

impl std::fmt::Display for LlmErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The server asked us to wait longer than the inline budget: reschedule the job after
    /// `after` instead of holding a worker slot.
    #[error("LLM asked to retry after {after:?}: {reason}")]
    RetryLater { after: Duration, reason: String },

    /// Transient failures persisted through the inline retries; the job may be retried later.
    #[error("LLM request failed after {attempts} attempts: {reason}")]
    Transient {
        reason: String,
        status: Option<u16>,
        attempts: u32,
        /// A server hint seen on the last attempt, if any.
        retry_after: Option<Duration>,
    },

    /// Retrying cannot help (quota, auth, bad request, truncation at the minimum budget).
    #[error("LLM request failed permanently ({kind}): {reason}")]
    Permanent {
        kind: LlmErrorKind,
        status: Option<u16>,
        reason: String,
    },

    /// The model kept answering with content that is not valid for the schema.
    #[error("LLM returned malformed content after {attempts} attempts: {reason}; raw: {snippet:?}")]
    Malformed {
        reason: String,
        /// Start of the raw content (truncated), for diagnosis.
        snippet: String,
        attempts: u32,
    },

    /// The model refused or the content filter stopped it.
    #[error("LLM refused: {reason}")]
    Refused { reason: String },
}

impl LlmError {
    pub fn kind(&self) -> LlmErrorKind {
        match self {
            LlmError::RetryLater { .. } => LlmErrorKind::RateLimited,
            LlmError::Transient { .. } => LlmErrorKind::Transient,
            LlmError::Permanent { kind, .. } => *kind,
            LlmError::Malformed { .. } => LlmErrorKind::Malformed,
            LlmError::Refused { .. } => LlmErrorKind::Refused,
        }
    }

    /// When the job may be tried again, if the server said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RetryLater { after, .. } => Some(*after),
            LlmError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// True when the endpoint itself looks down rather than this request being at fault: a
    /// connection error, a timeout, a transport failure or a 5xx (also an upstream error
    /// relayed in a 200) that outlasted the inline retries. Repeated, these should stop the
    /// worker from sending more requests than probes.
    pub fn is_outage(&self) -> bool {
        match self {
            LlmError::Transient { status, .. } => status.is_none_or(|s| s >= 500),
            _ => false,
        }
    }

    /// True when retrying the same lead cannot succeed without a change elsewhere: the job
    /// should be discarded with this error (and, for [`LlmErrorKind::needs_operator`] kinds, the
    /// worker paused).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            LlmError::Permanent { .. } | LlmError::Malformed { .. } | LlmError::Refused { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(status: Option<u16>) -> LlmError {
        LlmError::Transient {
            reason: "r".into(),
            status,
            attempts: 4,
            retry_after: None,
        }
    }

    #[test]
    fn outage_is_connect_timeout_or_5xx_not_a_per_request_answer() {
        assert!(transient(None).is_outage());
        assert!(transient(Some(500)).is_outage());
        assert!(transient(Some(503)).is_outage());
        assert!(!transient(Some(408)).is_outage());
        assert!(!transient(Some(409)).is_outage());
        let later = LlmError::RetryLater {
            after: Duration::from_secs(1),
            reason: "429".into(),
        };
        assert!(!later.is_outage());
        assert_eq!(later.kind(), LlmErrorKind::RateLimited);
    }
}
