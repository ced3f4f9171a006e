//! The mock's "model": a deterministic insight derived from the prompt text, so tests can check
//! that what was stored came from the conversation that was sent.

use insights_core::{InsightContent, Sentiment};

const POSITIVE: [&str; 10] = [
    "great",
    "thanks",
    "thank you",
    "love",
    "perfect",
    "excited",
    "interested",
    "sounds good",
    "looking forward",
    "works for me",
];
const NEGATIVE: [&str; 10] = [
    "expensive",
    "too much",
    "budget",
    "cancel",
    "not interested",
    "unhappy",
    "problem",
    "worried",
    "concern",
    "competitor",
];

/// What the mock reads from the prompt: the lines `[time] Lead: ...` / `[time] Agent: ...`
/// that the built-in prompt template renders.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PromptFacts {
    pub messages: usize,
    pub last_from_lead: Option<bool>,
    pub lead_lines: Vec<String>,
}

pub fn read_prompt(user_text: &str) -> PromptFacts {
    let mut facts = PromptFacts::default();
    for line in user_text.lines() {
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((_, after)) = rest.split_once("] ") else {
            continue;
        };
        if let Some(body) = after.strip_prefix("Lead: ") {
            facts.messages += 1;
            facts.last_from_lead = Some(true);
            facts.lead_lines.push(body.to_lowercase());
        } else if after.starts_with("Agent: ") {
            facts.messages += 1;
            facts.last_from_lead = Some(false);
        }
    }
    facts
}

/// The insight for `lead` given the facts; valid for `insights_core::parse_insight` by
/// construction (non-empty summary, short lists).
pub fn derive_insight(lead: &str, facts: &PromptFacts) -> InsightContent {
    let hits = |words: &[&str]| -> Vec<String> {
        words
            .iter()
            .filter(|w| facts.lead_lines.iter().any(|l| l.contains(**w)))
            .map(|w| (*w).to_owned())
            .collect()
    };
    let positive = hits(&POSITIVE);
    let negative = hits(&NEGATIVE);
    let sentiment = match (positive.is_empty(), negative.is_empty()) {
        (false, false) => Sentiment::Mixed,
        (false, true) => Sentiment::Positive,
        (true, false) => Sentiment::Negative,
        (true, true) => Sentiment::Neutral,
    };
    let last = match facts.last_from_lead {
        Some(true) => "inbound (from the lead)",
        Some(false) => "outbound (from the agent)",
        None => "absent",
    };
    let summary = format!(
        "Lead {lead}: {} messages in the prompt; the last message is {last}. Overall sentiment: {}.",
        facts.messages,
        sentiment.as_str()
    );
    let objections = negative
        .iter()
        .map(|w| format!("The lead mentioned \"{w}\"."))
        .collect();
    let mut next_steps = vec![match facts.last_from_lead {
        Some(true) => "Reply to the lead's latest message.".to_owned(),
        _ => "Follow up if the lead does not answer within two days.".to_owned(),
    }];
    next_steps.push("Prepare for the booked call.".to_owned());
    InsightContent {
        summary,
        sentiment,
        objections,
        next_steps,
    }
}

/// A document valid for `schema` (the subset of JSON Schema that structured outputs use:
/// objects, arrays, strings with `enum` or `maxLength`, numbers with bounds, booleans, `anyOf`,
/// nullable types), derived from the lead and the facts so different leads get different
/// answers. Every property is filled, and arrays get one item when they may hold any.
pub fn sample_document(
    schema: &serde_json::Value,
    lead: &str,
    facts: &PromptFacts,
) -> serde_json::Value {
    use serde_json::{Value, json};
    let seed = lead.bytes().fold(facts.messages, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.is_empty()
    {
        return values[seed % values.len()].clone();
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = ["anyOf", "oneOf"]
        .iter()
        .find_map(|k| schema.get(*k).and_then(Value::as_array))
        .and_then(|options| options.first())
    {
        return sample_document(first, lead, facts);
    }
    let ty = match schema.get("type") {
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        Some(Value::String(t)) => t.as_str(),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    out.insert(name.clone(), sample_document(prop, lead, facts));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let max = schema.get("maxItems").and_then(Value::as_u64).unwrap_or(1);
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let n = min.max(max.min(1));
            let item = schema.get("items").cloned().unwrap_or(json!({}));
            Value::Array(
                (0..n)
                    .map(|_| sample_document(&item, lead, facts))
                    .collect(),
            )
        }
        "number" | "integer" => {
            let lo = schema.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
            let hi = schema
                .get("maximum")
                .and_then(Value::as_f64)
                .unwrap_or(lo + 1.0);
            let v = lo + (hi - lo) * ((seed % 5) as f64) / 4.0;
            if ty == "integer" {
                json!(v.floor() as i64)
            } else {
                json!(v)
            }
        }
        "boolean" => json!(facts.last_from_lead.unwrap_or(seed % 2 == 0)),
        "null" => Value::Null,
        _ => {
            let text = format!("Lead {lead}: {} messages in the prompt.", facts.messages);
            let max = schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .map_or(usize::MAX, |m| m as usize);
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            let mut text: String = text.chars().take(max).collect();
            while text.chars().count() < min {
                text.push('.');
            }
            json!(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rendered_lines_and_scores_sentiment() {
        let text = "Lead id: 9\nConversation: 3 messages, oldest first.\n\
            [2026-01-01 10:00] Agent: Hello!\n\
            [2026-01-01 10:05] Lead: Sounds good, but it is too expensive.\n\
            [2026-01-01 10:06] Lead: Thanks anyway\n";
        let facts = read_prompt(text);
        assert_eq!(facts.messages, 3);
        assert_eq!(facts.last_from_lead, Some(true));
        let insight = derive_insight("9", &facts);
        assert_eq!(insight.sentiment, Sentiment::Mixed);
        assert!(insight.summary.starts_with("Lead 9: 3 messages"));
        assert_eq!(insight.objections.len(), 1);
        let raw = serde_json::to_string(&insight).unwrap_or_default();
        assert_eq!(insights_core::parse_insight(&raw).ok(), Some(insight));
    }
}
