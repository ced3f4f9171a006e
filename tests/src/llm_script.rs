//! A scripted OpenAI-compatible LLM on wiremock: the n-th chat request gets the n-th [`Reply`]
//! of the script (then the fallback), and every request is recorded with its arrival time and
//! body, so a test can assert waits (retry-after) and request sizes (prompt shrinking).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use insights_llm::mock::{derive_insight, read_prompt};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with a valid insight derived from the prompt (as the mock LLM derives it).
    Ok,
    /// 200 whose content is not JSON.
    Malformed,
    /// 200, `finish_reason: "length"`, content cut off mid-JSON.
    Length,
    /// 429 `rate_limit_exceeded` with `retry-after-ms` (and `retry-after` in seconds).
    RateLimited { retry_after_ms: u64 },
    /// 429 `insufficient_quota`.
    Quota,
    /// HTTP 500.
    ServerError,
    /// `reply`, sent after `delay` (a delay beyond the client timeout is a timeout).
    Delayed(Duration, Box<Reply>),
}

/// A request the scripted LLM received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub body: Value,
    /// Length of the raw request body in bytes.
    pub body_len: usize,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
}

impl Seen {
    /// The `user` field (`lead-<id>`).
    pub fn user(&self) -> Option<&str> {
        self.body.get("user").and_then(Value::as_str)
    }

    /// Characters of the user message (the conversation text).
    pub fn prompt_chars(&self) -> usize {
        user_text(&self.body).chars().count()
    }
}

struct Script {
    replies: Vec<Reply>,
    fallback: Reply,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Respond for Script {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let n = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.push(Seen {
                at: Instant::now(),
                body: body.clone(),
                body_len: request.body.len(),
                authorization: request
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            });
            seen.len() - 1
        };
        let reply = self.replies.get(n).unwrap_or(&self.fallback);
        render(reply, &body)
    }
}

/// A running scripted LLM.
pub struct ScriptedLlm {
    pub server: MockServer,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl std::fmt::Debug for ScriptedLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedLlm")
            .field("uri", &self.server.uri())
            .finish()
    }
}

impl ScriptedLlm {
    /// Answers `POST /v1/chat/completions` with `replies` in order, then `fallback` forever.
    pub async fn start(replies: Vec<Reply>, fallback: Reply) -> Self {
        let server = MockServer::start().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(Script {
                replies,
                fallback,
                seen: seen.clone(),
            })
            .mount(&server)
            .await;
        Self { server, seen }
    }

    /// What `INSIGHTS_LLM_BASE_URL` should be.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.uri())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn user_text(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn completion(content: &str, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-e2e",
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": "e2e-scripted",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish_reason
        }],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    })
}

fn api_error(status: u16, kind: &str, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    }))
}

fn render(reply: &Reply, body: &Value) -> ResponseTemplate {
    match reply {
        Reply::Ok => {
            let lead = body
                .get("user")
                .and_then(Value::as_str)
                .and_then(|u| u.strip_prefix("lead-"))
                .unwrap_or("unknown");
            let insight = derive_insight(lead, &read_prompt(&user_text(body)));
            let content = serde_json::to_string(&insight).unwrap_or_default();
            ResponseTemplate::new(200).set_body_json(completion(&content, "stop"))
        }
        Reply::Malformed => {
            ResponseTemplate::new(200).set_body_json(completion("this is not JSON, sorry", "stop"))
        }
        Reply::Length => ResponseTemplate::new(200)
            .set_body_json(completion(r#"{"summary": "The lead asked about"#, "length")),
        Reply::RateLimited { retry_after_ms } => api_error(
            429,
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for requests",
        )
        .insert_header("retry-after-ms", retry_after_ms.to_string())
        .insert_header("retry-after", retry_after_ms.div_ceil(1000).to_string()),
        Reply::Quota => api_error(
            429,
            "insufficient_quota",
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
        ),
        Reply::ServerError => api_error(500, "server_error", "server_error", "boom"),
        Reply::Delayed(delay, inner) => render(inner, body).set_delay(*delay),
    }
}
