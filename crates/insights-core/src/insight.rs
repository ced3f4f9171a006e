//! The insight the LLM writes: its content, the strict JSON schema sent with the request, the
//! validation of what comes back, and the record persisted with its provenance.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::profile::LeadKey;

/// Caps that keep one odd model answer from bloating the table or the dashboard.
pub const MAX_SUMMARY_CHARS: usize = 4_000;
pub const MAX_LIST_ITEMS: usize = 20;
pub const MAX_ITEM_CHARS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sentiment {
    Positive,
    Neutral,
    Negative,
    Mixed,
}

impl Sentiment {
    pub const ALL: [Sentiment; 4] = [
        Sentiment::Positive,
        Sentiment::Neutral,
        Sentiment::Negative,
        Sentiment::Mixed,
    ];

    /// The value stored in `lead_conversation_insights.sentiment`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sentiment::Positive => "positive",
            Sentiment::Neutral => "neutral",
            Sentiment::Negative => "negative",
            Sentiment::Mixed => "mixed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What the LLM is asked to produce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsightContent {
    pub summary: String,
    pub sentiment: Sentiment,
    pub objections: Vec<String>,
    pub next_steps: Vec<String>,
}

/// The schema for `response_format: {"type":"json_schema","json_schema":{"name":"lead_insight",
/// "strict":true,"schema": <this>}}`. OpenAI's strict mode requires every property listed in
/// `required` and `additionalProperties: false` on every object.
pub fn insight_json_schema() -> serde_json::Value {
    let sentiments: Vec<&str> = Sentiment::ALL.iter().map(|s| s.as_str()).collect();
    json!({
        "type": "object",
        "properties": {
            "summary": {
                "type": "string",
                "description": "Two to four sentences: where the conversation stands and what the lead wants."
            },
            "sentiment": {
                "type": "string",
                "enum": sentiments,
                "description": "The lead's overall sentiment."
            },
            "objections": {
                "type": "array",
                "items": { "type": "string" },
                "description": "Concerns or objections the lead raised; empty if none."
            },
            "next_steps": {
                "type": "array",
                "items": { "type": "string" },
                "description": "Concrete next actions for the sales agent."
            }
        },
        "required": ["summary", "sentiment", "objections", "next_steps"],
        "additionalProperties": false
    })
}

/// Name sent as `json_schema.name`.
pub const INSIGHT_SCHEMA_NAME: &str = "lead_insight";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsightValidationError {
    #[error("insight is not valid JSON for the schema: {0}")]
    Json(String),
    #[error("insight summary is empty")]
    EmptySummary,
    #[error("insight {field} is {len} characters long, at most {max} allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("insight {field} has {count} items, at most {max} allowed")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
}

/// Parses and validates the model's message content (a JSON string) as the built-in insight.
pub fn parse_insight(raw: &str) -> Result<InsightContent, InsightValidationError> {
    let content: InsightContent = serde_json::from_str(raw.trim())
        .map_err(|e| InsightValidationError::Json(e.to_string()))?;
    normalise_insight(content)
}

/// The built-in insight's rules beyond its schema: whitespace is trimmed and empty list items
/// are dropped (harmless noise); an empty summary or anything over the caps is an error, which
/// the LLM client retries a bounded number of times.
pub fn normalise_insight(
    mut content: InsightContent,
) -> Result<InsightContent, InsightValidationError> {
    content.summary = content.summary.trim().to_owned();
    if content.summary.is_empty() {
        return Err(InsightValidationError::EmptySummary);
    }
    let len = content.summary.chars().count();
    if len > MAX_SUMMARY_CHARS {
        return Err(InsightValidationError::TooLong {
            field: "summary",
            len,
            max: MAX_SUMMARY_CHARS,
        });
    }
    content.objections = clean_list("objections", content.objections)?;
    content.next_steps = clean_list("next_steps", content.next_steps)?;
    Ok(content)
}

fn clean_list(
    field: &'static str,
    items: Vec<String>,
) -> Result<Vec<String>, InsightValidationError> {
    let items: Vec<String> = items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if items.len() > MAX_LIST_ITEMS {
        return Err(InsightValidationError::TooMany {
            field,
            count: items.len(),
            max: MAX_LIST_ITEMS,
        });
    }
    if let Some(len) = items
        .iter()
        .map(|s| s.chars().count())
        .find(|&l| l > MAX_ITEM_CHARS)
    {
        return Err(InsightValidationError::TooLong {
            field,
            len,
            max: MAX_ITEM_CHARS,
        });
    }
    Ok(items)
}

/// One insight to write: the validated document and where it came from. The profile's upsert
/// maps the document's fields to the team's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsightRecord {
    pub lead_key: LeadKey,
    /// The insight, valid against the profile's schema.
    pub document: serde_json::Value,
    pub model: String,
    pub prompt_version: String,
    /// Freshness watermark: the newest message the insight was written from. The upsert only
    /// overwrites a row whose watermark is older.
    pub source_last_message_at: DateTime<Utc>,
    /// Messages the lead had when the insight was written (not only those in the prompt).
    pub source_message_count: i64,
    /// Token usage as reported by the LLM; 0 when the server did not report it.
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// The LLM's `x-request-id` (or response id), for support.
    pub llm_request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_content_and_trims() {
        let raw = r#"{"summary":"  Wants a demo. ","sentiment":"positive","objections":["price"," "],"next_steps":["send deck"]}"#;
        let c = parse_insight(raw).unwrap();
        assert_eq!(c.summary, "Wants a demo.");
        assert_eq!(c.sentiment, Sentiment::Positive);
        assert_eq!(c.objections, vec!["price"]);
        assert_eq!(c.next_steps, vec!["send deck"]);
    }

    #[test]
    fn rejects_bad_content() {
        assert!(matches!(
            parse_insight("not json"),
            Err(InsightValidationError::Json(_))
        ));
        assert!(matches!(
            parse_insight(r#"{"summary":"x","sentiment":"angry","objections":[],"next_steps":[]}"#),
            Err(InsightValidationError::Json(_))
        ));
        assert!(matches!(
            parse_insight(r#"{"summary":"x","sentiment":"mixed","objections":[]}"#),
            Err(InsightValidationError::Json(_))
        ));
        assert_eq!(
            parse_insight(
                r#"{"summary":"  ","sentiment":"mixed","objections":[],"next_steps":[]}"#
            ),
            Err(InsightValidationError::EmptySummary)
        );
        let long = "a".repeat(MAX_SUMMARY_CHARS + 1);
        let raw = format!(
            r#"{{"summary":"{long}","sentiment":"mixed","objections":[],"next_steps":[]}}"#
        );
        assert!(matches!(
            parse_insight(&raw),
            Err(InsightValidationError::TooLong {
                field: "summary",
                ..
            })
        ));
        let many: Vec<String> = (0..=MAX_LIST_ITEMS).map(|i| format!("o{i}")).collect();
        let raw = json!({"summary":"s","sentiment":"neutral","objections":many,"next_steps":[]})
            .to_string();
        assert!(matches!(
            parse_insight(&raw),
            Err(InsightValidationError::TooMany {
                field: "objections",
                ..
            })
        ));
    }

    #[test]
    fn schema_is_strict() {
        let s = insight_json_schema();
        assert_eq!(s["additionalProperties"], json!(false));
        let props = s["properties"].as_object().unwrap();
        let required: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(props.len(), required.len());
        for k in props.keys() {
            assert!(required.contains(&k.as_str()), "{k} not required");
        }
        assert_eq!(
            s["properties"]["sentiment"]["enum"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
    }
}
