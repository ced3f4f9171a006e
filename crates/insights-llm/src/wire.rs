//! The subset of the OpenAI chat-completions wire format this crate speaks, shared by the client
//! and the mock so the two cannot drift apart. Responses are parsed leniently: unknown fields are
//! ignored and `finish_reason` is an open string (compatible servers send values such as `eos`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// OpenAI's newer models take the output limit only under this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// End-user identifier (`lead-<id>`): providers use it for abuse monitoring, the mock to count
    /// requests per lead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The client's view of [`ChatRequest`]: borrows the prompt and the pre-built schema, so a request
/// costs no copies of either (they are the bulk of the body).
#[derive(Debug, Serialize)]
pub struct ChatRequestRef<'a> {
    pub model: &'a str,
    pub messages: [ChatMessageRef<'a>; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<&'a serde_json::Value>,
    /// Exactly one of the two token-limit fields is set, as the profile names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    pub user: &'a str,
}

#[derive(Debug, Serialize)]
pub struct ChatMessageRef<'a> {
    pub role: &'a str,
    pub content: &'a str,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// Absent or null in some assistant messages (refusals, tool calls).
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatResponse {
    #[serde(default)]
    pub id: Option<String>,
    /// `chat.completion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// OpenRouter and some proxies answer HTTP 200 with an error object (an upstream failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: ChatMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// `{"error": {...}}` as sent with 4xx/5xx (and sometimes 200) responses.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ApiError,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub param: Option<serde_json::Value>,
    /// A string for OpenAI, a number for some compatible servers.
    #[serde(default)]
    pub code: Option<serde_json::Value>,
}

impl ApiError {
    /// `code` as text whether the server sent a string or a number.
    pub fn code_str(&self) -> Option<String> {
        match &self.code {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Quota and billing errors: retrying cannot help until a person acts.
    pub fn is_quota(&self) -> bool {
        const QUOTA_MARKERS: [&str; 4] = [
            "insufficient_quota",
            "billing_hard_limit_reached",
            "billing_not_active",
            "access_terminated",
        ];
        let code = self.code_str().unwrap_or_default();
        let kind = self.kind.clone().unwrap_or_default();
        QUOTA_MARKERS
            .iter()
            .any(|m| code.eq_ignore_ascii_case(m) || kind.eq_ignore_ascii_case(m))
    }

    /// One line for error messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        if let Some(kind) = &self.kind {
            out.push_str(kind);
        }
        if let Some(code) = self.code_str() {
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(&code);
        }
        if let Some(message) = &self.message {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(message);
        }
        if out.is_empty() {
            out.push_str("unspecified error");
        }
        out
    }
}
