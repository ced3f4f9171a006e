//! The built-in prompt's system text and version, the rendered [`Prompt`], and the budget rule
//! every prompt follows (the newest messages that fit). Prompts are rendered by
//! [`crate::profile::PromptTemplates`]; the built-in templates reproduce this project's prompt.
//! Bump [`PROMPT_VERSION`] whenever the built-in wording changes: it is stored with every
//! insight so a team can tell which insights were written by which prompt.

#[cfg(test)]
use crate::conversation::{Conversation, Message};

pub const PROMPT_VERSION: &str = "insight-v1";

pub(crate) const SYSTEM: &str = "You are a sales assistant. You read the conversation between a sales agent \
and a lead who has booked a call, and you write a short, factual insight for the agent: a summary \
of where things stand, the lead's overall sentiment, the objections the lead raised, and concrete \
next steps. Use only what the conversation says. Answer with JSON that matches the given schema.";

/// Marks a message cut to fit the budget.
const ELLIPSIS: &str = "…";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub system: String,
    pub user: String,
    /// How many of the conversation's (newest) messages the prompt carries.
    pub included_messages: usize,
}

/// The built-in prompt as it was written before templates: kept as the test oracle that
/// [`crate::profile::PromptTemplates::builtin`] must reproduce exactly.
///
/// Builds the prompt, keeping the NEWEST messages whose rendered lines fit in `budget_chars`
/// (the recent part of a thread is what the next step depends on). If not even the newest
/// message fits, it is included cut to the budget, so a non-empty conversation never yields an
/// empty prompt unless the budget is 0. The LLM client shrinks the budget after a
/// `finish_reason=length` answer and calls this again.
#[cfg(test)]
pub(crate) fn build_prompt(conversation: &Conversation, budget_chars: usize) -> Prompt {
    let lines: Vec<String> = conversation.messages.iter().map(render).collect();
    let kept = newest_within(&lines, budget_chars).1;
    let lead = &conversation.lead;
    let included = kept.len();
    let total = usize::try_from(conversation.total_message_count)
        .unwrap_or(0)
        .max(included);
    let omitted = total - included;
    let mut user = format!(
        "Lead id: {}\nLead name: {}\nBooked: {}\n",
        lead.id,
        lead.name,
        lead.booked_at
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "no".to_owned()),
    );
    if omitted > 0 {
        user.push_str(&format!(
            "Conversation: the newest {included} of {total} messages, oldest first ({omitted} earlier messages omitted).\n"
        ));
    } else {
        user.push_str(&format!(
            "Conversation: {included} messages, oldest first.\n"
        ));
    }
    for line in &kept {
        user.push_str(line);
        user.push('\n');
    }
    Prompt {
        system: SYSTEM.to_owned(),
        user,
        included_messages: included,
    }
}

/// The newest `lines` whose characters (plus one newline each) fit in `budget_chars`, oldest
/// first, with the index of the first one kept. When not even the newest fits, it alone is kept,
/// cut to the budget (nothing for a budget of 0).
pub(crate) fn newest_within(lines: &[String], budget_chars: usize) -> (usize, Vec<String>) {
    let mut used = 0usize;
    let mut start = lines.len();
    for (i, line) in lines.iter().enumerate().rev() {
        let cost = line.chars().count() + 1;
        if used + cost > budget_chars {
            break;
        }
        used += cost;
        start = i;
    }
    if start == lines.len()
        && budget_chars > 0
        && let Some(newest) = lines.last()
    {
        return (lines.len() - 1, vec![cut(newest, budget_chars)]);
    }
    (start, lines.get(start..).unwrap_or_default().to_vec())
}

#[cfg(test)]
fn render(m: &Message) -> String {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    let t = m.sent_at;
    let speaker = m.direction.speaker();
    let mut line = String::with_capacity(m.body.len() + speaker.len() + 24);
    // Fields written directly: chrono's `format` re-parses its pattern for every message, and
    // this runs for every message of every lead (it was the largest CPU item on the LLM path).
    let _ = write!(
        line,
        "[{:04}-{:02}-{:02} {:02}:{:02}] {speaker}: ",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute()
    );
    // Newlines inside a body would make one message look like several.
    line.extend(
        m.body
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c }),
    );
    line
}

pub(crate) fn cut(line: &str, budget: usize) -> String {
    let keep = budget.saturating_sub(ELLIPSIS.chars().count());
    let mut out: String = line.chars().take(keep).collect();
    out.push_str(ELLIPSIS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Direction, LeadSnapshot};
    use chrono::{TimeZone, Utc};

    fn conv(n: usize) -> Conversation {
        let messages = (0..n)
            .map(|i| Message {
                id: i as i64,
                direction: if i % 2 == 0 {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
                body: format!("message number {i}"),
                sent_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, i as u32, 0).unwrap(),
            })
            .collect();
        Conversation {
            lead: LeadSnapshot {
                id: 4711,
                name: "Ada".into(),
                email: "ada@example.com".into(),
                booked_at: None,
                last_message_at: None,
            },
            messages,
            total_message_count: n as i64 + 5,
        }
    }

    #[test]
    fn renders_a_message_as_one_timestamped_line() {
        let m = Message {
            id: 1,
            direction: Direction::Outbound,
            body: "two\r\nlines".into(),
            sent_at: Utc.with_ymd_and_hms(2026, 3, 7, 9, 5, 59).unwrap(),
        };
        assert_eq!(render(&m), "[2026-03-07 09:05] Agent: two  lines");
    }

    #[test]
    fn keeps_newest_messages_within_budget() {
        let c = conv(10);
        let all = build_prompt(&c, usize::MAX);
        assert_eq!(all.included_messages, 10);
        assert!(all.user.contains("Lead id: 4711"));
        assert!(all.user.contains("5 earlier messages omitted"));
        let line_len = render(&c.messages[9]).chars().count() + 1;
        let p = build_prompt(&c, line_len * 3 + 2);
        assert_eq!(p.included_messages, 3);
        assert!(p.user.contains("message number 9"));
        assert!(p.user.contains("message number 7"));
        assert!(!p.user.contains("message number 6"));
        assert!(p.user.contains("Lead id: 4711"));
        let smaller = build_prompt(&c, line_len * 2);
        assert!(smaller.user.len() < p.user.len());
    }

    #[test]
    fn tiny_budget_still_carries_the_newest_message_cut() {
        let c = conv(3);
        let p = build_prompt(&c, 10);
        assert_eq!(p.included_messages, 1);
        assert!(p.user.contains(ELLIPSIS));
        assert_eq!(build_prompt(&c, 0).included_messages, 0);
        assert_eq!(build_prompt(&conv(0), 1000).included_messages, 0);
    }
}
