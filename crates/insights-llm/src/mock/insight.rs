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
/// that `insights_core::build_prompt` renders.
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
