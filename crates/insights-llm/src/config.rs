//! Client configuration. Defaults live in [`crate::defaults`].

use std::fmt;
use std::time::Duration;

use insights_core::{SecretString, Settings};
use insights_pg::Backoff;

use crate::defaults;

/// How to reach an OpenAI-compatible server and how hard to try.
#[derive(Clone)]
pub struct LlmConfig {
    /// As in the OpenAI SDKs: includes `/v1`; the client appends `/chat/completions`.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer ...` when set. Never printed.
    pub api_key: Option<SecretString>,
    pub connect_timeout: Duration,
    /// Total bound of one HTTP request.
    pub request_timeout: Duration,
    /// Inline retries of transient failures (408/409/429/5xx, connect errors, timeouts).
    pub max_retries: u32,
    /// Waits between inline retries without a server hint; its cap is also the wait handed
    /// back for a 429 that named none.
    pub retry: Backoff,
    /// A server-requested wait longer than this becomes [`crate::LlmError::RetryLater`].
    pub max_inline_wait: Duration,
    /// Extra attempts when the content is not valid for the schema.
    pub malformed_retries: u32,
    /// Characters of conversation text in the first prompt.
    pub prompt_budget_chars: usize,
    /// Floor of the budget when `finish_reason=length` makes the client shrink the prompt.
    pub min_prompt_budget_chars: usize,
    /// `max_tokens` sent with every request.
    pub max_tokens: u32,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            base_url: defaults::BASE_URL.to_owned(),
            model: defaults::MODEL.to_owned(),
            api_key: None,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            request_timeout: defaults::REQUEST_TIMEOUT,
            max_retries: defaults::MAX_RETRIES,
            retry: defaults::RETRY,
            max_inline_wait: defaults::MAX_INLINE_WAIT,
            malformed_retries: defaults::MALFORMED_RETRIES,
            prompt_budget_chars: defaults::PROMPT_BUDGET_CHARS,
            min_prompt_budget_chars: defaults::MIN_PROMPT_BUDGET_CHARS,
            max_tokens: defaults::MAX_TOKENS,
        }
    }
}

impl LlmConfig {
    /// Defaults with the given server and model.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            ..Self::default()
        }
    }

    /// What the environment configures (model, key, timeout, prompt budget), talking to
    /// `base_url`: the caller resolves it (`Settings::require_llm_base_url` for `work`, the
    /// in-process mock's `MockHandle::base_url` for `demo`). Retry tuning keeps its defaults.
    pub fn from_settings(settings: &Settings, base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: settings.llm_model.clone(),
            api_key: settings.llm_api_key.clone(),
            request_timeout: settings.llm_timeout,
            prompt_budget_chars: settings.prompt_budget_chars,
            ..Self::default()
        }
    }

    /// The chat-completions endpoint derived from `base_url`.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

// Written by hand so that a future field cannot leak the key through a derive.
impl fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("retry", &self.retry)
            .field("max_inline_wait", &self.max_inline_wait)
            .field("malformed_retries", &self.malformed_retries)
            .field("prompt_budget_chars", &self.prompt_budget_chars)
            .field("min_prompt_budget_chars", &self.min_prompt_budget_chars)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_settings_takes_the_llm_settings_and_hides_the_key() {
        let settings = Settings {
            llm_model: "my-model".to_owned(),
            llm_api_key: Some(SecretString::new("sk-hidden-value".to_owned())),
            llm_timeout: Duration::from_millis(1234),
            ..Settings::default()
        };
        let cfg = LlmConfig::from_settings(&settings, "http://127.0.0.1:9/v1/");
        assert_eq!(cfg.model, "my-model");
        assert_eq!(cfg.request_timeout, Duration::from_millis(1234));
        assert_eq!(
            cfg.api_key.as_ref().map(|k| k.expose().as_str()),
            Some("sk-hidden-value")
        );
        assert_eq!(cfg.endpoint(), "http://127.0.0.1:9/v1/chat/completions");
        assert!(!format!("{cfg:?}").contains("sk-hidden-value"));
        assert_eq!(cfg.max_retries, defaults::MAX_RETRIES);
    }
}
