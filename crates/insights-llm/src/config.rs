//! Client configuration. Defaults live in [`crate::defaults`].

use std::fmt;
use std::time::Duration;

use insights_core::config::{
    INSIGHTS_LLM_AUTH_HEADER, INSIGHTS_LLM_BASE_URL, INSIGHTS_LLM_EXTRA_HEADERS,
    INSIGHTS_LLM_QUERY_PARAMS,
};
use insights_core::{AuthHeader, SecretString, Settings};
use insights_pg::Backoff;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::defaults;

/// How to reach an OpenAI-compatible server and how hard to try.
#[derive(Clone)]
pub struct LlmConfig {
    /// As in the OpenAI SDKs: includes `/v1`; the client appends `/chat/completions`.
    pub base_url: String,
    pub model: String,
    /// Sent in `auth_header` when set. Never printed.
    pub api_key: Option<SecretString>,
    /// The header that carries `api_key` and the scheme before it: `Authorization: Bearer` by
    /// default, `api-key` alone for Azure OpenAI.
    pub auth_header: AuthHeader,
    /// Sent with every request. The values may be secret: `Debug` shows the names only.
    pub extra_headers: Vec<(String, SecretString)>,
    /// Added to the endpoint's query (Azure OpenAI's `api-version`). Not secret: the URL appears
    /// in error messages.
    pub query_params: Vec<(String, String)>,
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
            auth_header: AuthHeader::default(),
            extra_headers: Vec::new(),
            query_params: Vec::new(),
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

    /// What the environment configures (model, key and headers, query, timeout, prompt budget), talking to
    /// `base_url`: the caller resolves it (`Settings::require_llm_base_url` for `work`, the
    /// in-process mock's `MockHandle::base_url` for `demo`). Retry tuning keeps its defaults.
    pub fn from_settings(settings: &Settings, base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: settings.llm_model.clone(),
            api_key: settings.llm_api_key.clone(),
            auth_header: settings.llm_auth_header.clone(),
            extra_headers: settings.llm_extra_headers.clone(),
            query_params: settings.llm_query_params.clone(),
            request_timeout: settings.llm_timeout,
            prompt_budget_chars: settings.prompt_budget_chars,
            ..Self::default()
        }
    }

    /// The chat-completions endpoint derived from `base_url`.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }

    /// [`Self::endpoint`] with `query_params`, or why it cannot be one.
    pub(crate) fn endpoint_url(&self) -> Result<reqwest::Url, String> {
        let mut url = reqwest::Url::parse(&self.endpoint())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                format!(
                    "{}: expected an http:// or https:// URL, got {:?}",
                    INSIGHTS_LLM_BASE_URL.name, self.base_url
                )
            })?;
        if url.query().is_some() {
            // The path is appended to the base URL, so its query would end up inside the path.
            return Err(format!(
                "{}: expected a URL without a query (set its parameters in {}), got {:?}",
                INSIGHTS_LLM_BASE_URL.name, INSIGHTS_LLM_QUERY_PARAMS.name, self.base_url
            ));
        }
        if !self.query_params.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.query_params);
        }
        Ok(url)
    }

    /// The headers every request carries: the key in `auth_header`, then `extra_headers`; all
    /// marked sensitive, so HTTP/2 never indexes them and their `Debug` hides them.
    pub(crate) fn headers(&self) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        let mut key_header = None;
        if let Some(key) = &self.api_key {
            let name = HeaderName::from_bytes(self.auth_header.name.as_bytes()).map_err(|_| {
                format!(
                    "{}: {:?} is not a header name",
                    INSIGHTS_LLM_AUTH_HEADER.name, self.auth_header.name
                )
            })?;
            let value = sensitive(self.auth_header.value(key).expose()).ok_or_else(|| {
                format!(
                    "the API key is not printable ASCII once written in {}",
                    INSIGHTS_LLM_AUTH_HEADER.name
                )
            })?;
            headers.insert(name.clone(), value);
            key_header = Some(name);
        }
        for (name, value) in &self.extra_headers {
            let what = || format!("{} entry {name:?}", INSIGHTS_LLM_EXTRA_HEADERS.name);
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{}: not a header name", what()))?;
            if key_header.as_ref() == Some(&name) {
                return Err(format!(
                    "{} is the header {} sends the API key in: set one of them",
                    what(),
                    INSIGHTS_LLM_AUTH_HEADER.name
                ));
            }
            if headers.contains_key(&name) {
                return Err(format!("{}: set twice", what()));
            }
            let value = sensitive(value.expose())
                .ok_or_else(|| format!("{}: the value is not printable ASCII", what()))?;
            headers.insert(name, value);
        }
        Ok(headers)
    }
}

fn sensitive(text: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

// Written by hand so that a future field cannot leak the key through a derive.
impl fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("auth_header", &self.auth_header.to_string())
            .field("extra_headers", &self.extra_headers)
            .field("query_params", &self.query_params)
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
    #![allow(clippy::unwrap_used)]

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

    #[test]
    fn a_long_request_timeout_leaves_the_connect_timeout_short() {
        assert_eq!(
            LlmConfig::default().request_timeout,
            Duration::from_secs(300)
        );
        let settings = Settings {
            llm_timeout: Duration::from_secs(900),
            ..Settings::default()
        };
        let cfg = LlmConfig::from_settings(&settings, "http://127.0.0.1:9/v1");
        assert_eq!(cfg.request_timeout, Duration::from_secs(900));
        assert_eq!(cfg.connect_timeout, Duration::from_secs(5));
    }

    #[test]
    fn query_params_are_encoded_into_the_endpoint() {
        let mut cfg = LlmConfig::new("https://r.openai.azure.com/openai/deployments/d/", "d");
        assert_eq!(
            cfg.endpoint_url().unwrap().as_str(),
            "https://r.openai.azure.com/openai/deployments/d/chat/completions"
        );
        cfg.query_params = vec![
            ("api-version".to_owned(), "2024-10-21".to_owned()),
            ("note".to_owned(), "a b&c".to_owned()),
        ];
        assert_eq!(
            cfg.endpoint_url().unwrap().as_str(),
            "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21&note=a+b%26c"
        );
        let ftp = LlmConfig::new("ftp://h/v1", "m")
            .endpoint_url()
            .unwrap_err();
        assert!(
            ftp.starts_with("INSIGHTS_LLM_BASE_URL: expected an http"),
            "{ftp}"
        );
    }

    #[test]
    fn every_header_is_sensitive_and_the_key_takes_the_configured_form() {
        let mut cfg = LlmConfig::new("http://h/v1", "m");
        assert!(cfg.headers().unwrap().is_empty());
        cfg.api_key = Some(SecretString::new("k1".to_owned()));
        cfg.extra_headers = vec![("X-Team".to_owned(), SecretString::new("crm".to_owned()))];
        let headers = cfg.headers().unwrap();
        assert_eq!(headers["authorization"], "Bearer k1");
        assert_eq!(headers["x-team"], "crm");
        assert!(headers.values().all(HeaderValue::is_sensitive));
        cfg.auth_header = AuthHeader {
            name: "api-key".to_owned(),
            scheme: None,
        };
        let headers = cfg.headers().unwrap();
        assert_eq!(headers["api-key"], "k1");
        assert!(!headers.contains_key("authorization"));
        cfg.extra_headers
            .push(("x-team".to_owned(), SecretString::new("b".to_owned())));
        let twice = cfg.headers().unwrap_err();
        assert!(twice.ends_with("set twice"), "{twice}");
        assert!(!twice.contains("crm"), "{twice}");
    }
}
