use std::time::Duration;

use chrono::{TimeZone, Utc};
use std::future::Future;

use insights_core::profile::PromptInput;
use insights_core::{Conversation, Direction, InsightContent, LeadKey, LeadSnapshot, Message};
use insights_llm::{LlmClient, LlmConfig, LlmError, LlmInsight};
use insights_pg::{Backoff, Jitter};
use serde_json::{Value, json};

/// A conversation of `n` messages alternating lead/agent, each about `body_len` characters.
pub fn conversation(lead_id: i64, n: usize, body_len: usize) -> Conversation {
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
    let messages = (0..n)
        .map(|i| {
            let mut body = format!("message {i} of lead {lead_id}: ");
            if i % 2 == 0 {
                body.push_str("thanks, sounds good but the price is too expensive. ");
            }
            while body.len() < body_len {
                body.push('x');
            }
            Message {
                id: i as i64,
                direction: if i % 2 == 0 {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
                body,
                sent_at: base + chrono::Duration::minutes(i as i64),
            }
        })
        .collect();
    Conversation {
        lead: LeadSnapshot {
            id: lead_id,
            name: format!("Lead {lead_id}"),
            email: format!("lead{lead_id}@example.com"),
            booked_at: Some(base),
            last_message_at: Some(base + chrono::Duration::minutes(n as i64)),
        },
        messages,
        total_message_count: n as i64,
    }
}

/// Fast retries so fault tests take milliseconds, not seconds.
pub fn fast_config(base_url: String) -> LlmConfig {
    LlmConfig {
        base_url,
        model: "test-model".to_owned(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        max_retries: 3,
        retry: Backoff::new(
            Duration::from_millis(5),
            Duration::from_millis(20),
            Jitter::Full,
        ),
        max_inline_wait: Duration::from_secs(5),
        malformed_retries: 2,
        ..LlmConfig::default()
    }
}

pub fn insight_json() -> String {
    json!({
        "summary": "The lead wants a demo next week.",
        "sentiment": "positive",
        "objections": ["price"],
        "next_steps": ["send the deck"]
    })
    .to_string()
}

/// A chat completion body with the given content and finish reason.
pub fn completion(content: &str, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1,
        "model": "test-model-2026",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish_reason
        }],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    })
}

pub fn error_body(kind: &str, code: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// The client's call for one of the typed conversations above (the built-in profile's shape).
pub trait GenerateFor {
    fn generate_for(
        &self,
        conversation: &Conversation,
    ) -> impl Future<Output = Result<LlmInsight, LlmError>> + Send;
}

impl GenerateFor for LlmClient {
    async fn generate_for(&self, conversation: &Conversation) -> Result<LlmInsight, LlmError> {
        let input = PromptInput::from_conversation(conversation).unwrap();
        self.generate_insight(&LeadKey::Int(conversation.lead.id), &input)
            .await
    }
}

/// The built-in insight a reply carried.
pub fn content(insight: &LlmInsight) -> InsightContent {
    serde_json::from_value(insight.document.clone()).unwrap()
}
