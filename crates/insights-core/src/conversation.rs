//! What the store loads for one lead and the LLM summarises.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who wrote a message, from the business's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Written by the lead.
    Inbound,
    /// Written by the business.
    Outbound,
}

impl Direction {
    /// The value stored in `messages.direction`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// Parses the stored value; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }

    /// How the message author is named in the prompt.
    pub fn speaker(self) -> &'static str {
        match self {
            Direction::Inbound => "Lead",
            Direction::Outbound => "Agent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: i64,
    pub direction: Direction,
    pub body: String,
    pub sent_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadSnapshot {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub booked_at: Option<DateTime<Utc>>,
    pub last_message_at: Option<DateTime<Utc>>,
}

/// A lead with (a window of) its conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub lead: LeadSnapshot,
    /// Oldest first; at most the newest N messages of the thread.
    pub messages: Vec<Message>,
    /// Messages the lead has in total (may exceed `messages.len()`).
    pub total_message_count: i64,
}

impl Conversation {
    /// The newest message's timestamp among the loaded messages, falling back to the lead's
    /// `last_message_at` (the freshness watermark an insight records).
    pub fn source_last_message_at(&self) -> Option<DateTime<Utc>> {
        let newest = self.messages.iter().map(|m| m.sent_at).max();
        match (newest, self.lead.last_message_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn watermark_is_the_newest_of_messages_and_lead() {
        let at = |m: i64| Utc.timestamp_opt(1_700_000_000 + m * 60, 0).unwrap();
        let msg = |m: i64| Message {
            id: m,
            direction: Direction::Outbound,
            body: String::new(),
            sent_at: at(m),
        };
        let mut c = Conversation {
            lead: LeadSnapshot {
                id: 1,
                name: "n".into(),
                email: "e".into(),
                booked_at: None,
                last_message_at: Some(at(3)),
            },
            messages: vec![msg(1), msg(2)],
            total_message_count: 2,
        };
        assert_eq!(c.source_last_message_at(), Some(at(3)));
        c.lead.last_message_at = None;
        assert_eq!(c.source_last_message_at(), Some(at(2)));
        c.messages.clear();
        assert_eq!(c.source_last_message_at(), None);
        assert!(c.is_empty());
        assert_eq!(Direction::parse("inbound"), Some(Direction::Inbound));
        assert_eq!(Direction::parse("Inbound"), None);
        assert_eq!(
            serde_json::to_string(&Direction::Outbound).unwrap(),
            r#""outbound""#
        );
    }
}
