//! Prompt rendering with minijinja templates.
//!
//! A profile has three prompt parts:
//! - `system`: plain text, sent as the system message;
//! - `message`: a template that renders ONE message as one line. Its variables: `lead` (the
//!   lead object the load returned) and `message` (one element of the load's message array);
//! - `user`: the template of the user message. Its variables: `lead`; `messages`, the kept
//!   messages (oldest first); `lines`, their rendered lines (same order; the only one that may
//!   differ from the `message` template's output is a cut newest line, see below); `included`
//!   (how many are kept), `total` (how many the lead has; never less than `included`) and
//!   `omitted` (`total - included`).
//!
//! The budget rule (the same as [`crate::prompt::build_prompt`]): every message is rendered with
//! the `message` template; the NEWEST lines whose lengths (in characters, plus one for the line
//! break) sum to at most the budget are kept; if not even the newest line fits and the budget is
//! not 0, that line alone is kept, cut to the budget with a trailing `…`. The rest of the prompt
//! (the `user` template around the lines, the system text) is outside the budget. Only `lines`
//! carries the cut: write `{{ line }}` from `lines`, not a re-rendering of `messages`, to honour it.
//!
//! Every variable a template uses must exist: an unknown top-level name is an error when the
//! profile loads, an unknown field (`lead.nosuchcolumn`) an error when the prompt renders.
//! Whitespace: a line break right after a block tag (`{% ... %}`) is dropped and the indentation
//! before one is ignored (`trim_blocks`, `lstrip_blocks`); a template's final line break is kept.
//!
//! Filters besides minijinja's built-ins:
//! - `format_time(format)`: an RFC 3339 timestamp (as `to_jsonb(timestamptz)` prints it) in
//!   UTC, in chrono's `strftime` syntax;
//! - `one_line`: carriage returns and line feeds replaced by spaces, so a message body stays on
//!   its line;
//! - `speaker`: this project's `inbound`/`outbound` directions as `Lead`/`Agent`.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use chrono::{DateTime, Utc};
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};
use serde::Serialize;

use crate::conversation::{Conversation, Direction};
use crate::prompt::{Prompt, SYSTEM, newest_within};

const MESSAGE: &str = "message";
const USER: &str = "user";
const MESSAGE_VARS: &[&str] = &["lead", "message"];
const USER_VARS: &[&str] = &["lead", "messages", "lines", "included", "total", "omitted"];

/// The built-in `message` template: today's `[YYYY-MM-DD HH:MM] Speaker: body` line.
pub const BUILTIN_MESSAGE_TEMPLATE: &str = r#"[{{ message.sent_at | format_time("%Y-%m-%d %H:%M") }}] {{ message.direction | speaker }}: {{ message.body | one_line }}"#;

/// The built-in `user` template: today's header and lines.
pub const BUILTIN_USER_TEMPLATE: &str = r#"Lead id: {{ lead.id }}
Lead name: {{ lead.name }}
Booked: {{ "no" if lead.booked_at is none else lead.booked_at | format_time("%Y-%m-%d %H:%M UTC") }}
{% if omitted > 0 %}
Conversation: the newest {{ included }} of {{ total }} messages, oldest first ({{ omitted }} earlier messages omitted).
{% else %}
Conversation: {{ included }} messages, oldest first.
{% endif %}
{% for line in lines %}
{{ line }}
{% endfor %}
"#;

/// What a prompt is rendered from: the rows the profile's load returned for one lead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptInput {
    /// The lead's fields (a JSON object of whatever the load selects).
    pub lead: serde_json::Value,
    /// The newest messages, oldest first, each a JSON object.
    pub messages: Vec<serde_json::Value>,
    /// Messages the lead has in total (may exceed `messages.len()`).
    pub total_message_count: i64,
}

impl PromptInput {
    /// The built-in load's conversation in template form: `lead` has `id`, `name`, `email`,
    /// `booked_at`, `last_message_at`; each message `id`, `direction`, `body`, `sent_at`
    /// (timestamps as RFC 3339 text, directions as stored).
    pub fn from_conversation(conversation: &Conversation) -> Result<Self, RenderError> {
        let to_json = |v: serde_json::Result<serde_json::Value>| {
            v.map_err(|e| RenderError::Input(e.to_string()))
        };
        Ok(Self {
            lead: to_json(serde_json::to_value(&conversation.lead))?,
            messages: conversation
                .messages
                .iter()
                .map(|m| to_json(serde_json::to_value(m)))
                .collect::<Result<_, _>>()?,
            total_message_count: conversation.total_message_count,
        })
    }
}

/// A template that does not compile or uses a variable it is not given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{template} template: {reason}")]
    Compile {
        template: &'static str,
        reason: String,
    },
    #[error("{template} template uses unknown variable(s) {names}; available: {available}")]
    UnknownVariables {
        template: &'static str,
        names: String,
        available: String,
    },
}

/// Rendering failed: the loaded rows lack a field a template uses, or a filter got a value it
/// cannot handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("cannot render the {template} template: {reason}")]
    Template {
        template: &'static str,
        reason: String,
    },
    #[error("cannot turn the loaded rows into template values: {0}")]
    Input(String),
}

/// The compiled prompt parts of a profile. Cheap to render concurrently (`&self`).
#[derive(Clone)]
pub struct PromptTemplates {
    env: Environment<'static>,
    system: String,
}

impl fmt::Debug for PromptTemplates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptTemplates")
            .field("system", &self.system)
            .finish_non_exhaustive()
    }
}

impl PromptTemplates {
    /// Compiles the templates and checks that they use only the variables they are given.
    pub fn new(
        system: impl Into<String>,
        message: impl Into<String>,
        user: impl Into<String>,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Render errors then name the undefined expression (`lead.nosuchcolumn`).
        env.set_debug(true);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .map_err(|e| TemplateError::Compile {
                template: USER,
                reason: e.to_string(),
            })?;
        env.set_syntax(syntax);
        env.add_filter("format_time", format_time);
        env.add_filter("one_line", one_line);
        env.add_filter("speaker", speaker);
        for (name, source, vars) in [
            (MESSAGE, message.into(), MESSAGE_VARS),
            (USER, user.into(), USER_VARS),
        ] {
            env.add_template_owned(name, source)
                .map_err(|e| TemplateError::Compile {
                    template: name,
                    reason: e.to_string(),
                })?;
            check_variables(&env, name, vars)?;
        }
        Ok(Self {
            env,
            system: system.into(),
        })
    }

    /// Today's prompt ([`crate::prompt::build_prompt`]) as templates.
    pub fn builtin() -> Result<Self, TemplateError> {
        Self::new(SYSTEM, BUILTIN_MESSAGE_TEMPLATE, BUILTIN_USER_TEMPLATE)
    }

    pub fn system(&self) -> &str {
        &self.system
    }

    /// Renders the prompt, keeping the newest messages that fit `budget_chars` (module docs).
    pub fn render(&self, input: &PromptInput, budget_chars: usize) -> Result<Prompt, RenderError> {
        let lines = self.message_lines(input)?;
        self.render_with_lines(input, &lines, budget_chars)
    }

    /// Every message rendered with the `message` template, oldest first. A caller that renders
    /// the same input again with a smaller budget keeps these and calls
    /// [`Self::render_with_lines`]: the lines do not depend on the budget.
    pub fn message_lines(&self, input: &PromptInput) -> Result<Vec<String>, RenderError> {
        let message_template = self.template(MESSAGE)?;
        let lead = Value::from(Serde(&input.lead));
        input
            .messages
            .iter()
            .map(|message| {
                let ctx = minijinja::context! { lead => lead.clone(), message => Value::from(Serde(message)) };
                message_template
                    .render(ctx)
                    .map_err(|e| render_error(MESSAGE, &e))
            })
            .collect()
    }

    /// [`Self::render`] with the lines [`Self::message_lines`] returned for `input`.
    pub fn render_with_lines(
        &self,
        input: &PromptInput,
        lines: &[String],
        budget_chars: usize,
    ) -> Result<Prompt, RenderError> {
        if lines.len() != input.messages.len() {
            return Err(RenderError::Input(format!(
                "{} rendered lines for {} messages",
                lines.len(),
                input.messages.len()
            )));
        }
        let (start, kept) = newest_within(lines, budget_chars);
        let kept_messages = input.messages.get(start..).unwrap_or_default();

        let included = kept.len();
        let total = usize::try_from(input.total_message_count)
            .unwrap_or(0)
            .max(included);
        let ctx = minijinja::context! {
            lead => Value::from(Serde(&input.lead)),
            messages => Value::from(Serde(kept_messages)),
            lines => kept,
            included => included,
            total => total,
            omitted => total - included,
        };
        let user = self
            .template(USER)?
            .render(ctx)
            .map_err(|e| render_error(USER, &e))?;
        Ok(Prompt {
            system: self.system.clone(),
            user,
            included_messages: included,
        })
    }

    fn template(&self, name: &'static str) -> Result<minijinja::Template<'_, '_>, RenderError> {
        self.env
            .get_template(name)
            .map_err(|e| render_error(name, &e))
    }
}

fn check_variables(
    env: &Environment<'static>,
    name: &'static str,
    vars: &[&str],
) -> Result<(), TemplateError> {
    let template = env.get_template(name).map_err(|e| TemplateError::Compile {
        template: name,
        reason: e.to_string(),
    })?;
    let globals: BTreeSet<String> = env.globals().map(|(n, _)| n.to_owned()).collect();
    let unknown: BTreeSet<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !vars.contains(&v.as_str()) && !globals.contains(v))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(TemplateError::UnknownVariables {
        template: name,
        names: unknown.into_iter().collect::<Vec<_>>().join(", "),
        available: vars.join(", "),
    })
}

fn render_error(template: &'static str, e: &Error) -> RenderError {
    RenderError::Template {
        template,
        reason: e.to_string(),
    }
}

fn format_time(value: String, format: String) -> Result<String, Error> {
    let invalid = |why: String| Error::new(ErrorKind::InvalidOperation, why);
    let t: DateTime<Utc> = DateTime::parse_from_rfc3339(value.trim())
        .map_err(|e| invalid(format!("{value:?} is not an RFC 3339 timestamp: {e}")))?
        .with_timezone(&Utc);
    let mut out = String::new();
    // Written, not `to_string()`: an invalid format string is an error, not a panic.
    write!(out, "{}", t.format(&format))
        .map_err(|_| invalid(format!("{format:?} is not a valid time format")))?;
    Ok(out)
}

fn one_line(value: String) -> String {
    value
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

fn speaker(value: String) -> Result<String, Error> {
    Direction::parse(&value)
        .map(|d| d.speaker().to_owned())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("{value:?} is not a message direction (inbound or outbound)"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{LeadSnapshot, Message};
    use crate::prompt::build_prompt;
    use chrono::TimeZone;
    use serde_json::json;

    fn conversation(bodies: &[&str], total: i64, booked: bool) -> Conversation {
        let messages = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| Message {
                id: i as i64 + 100,
                direction: if i % 3 == 0 {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
                body: (*body).to_owned(),
                sent_at: Utc
                    .with_ymd_and_hms(2026, 2, 28, 23, 59, 0)
                    .unwrap()
                    .checked_add_signed(chrono::Duration::seconds(i as i64 * 3_661 + 7))
                    .unwrap(),
            })
            .collect();
        Conversation {
            lead: LeadSnapshot {
                id: 9_007_199_254_740_993,
                name: "Zoë \"Z\" O'Neil <z@example.com>".into(),
                email: "z@example.com".into(),
                booked_at: booked.then(|| Utc.with_ymd_and_hms(2026, 3, 2, 14, 30, 45).unwrap()),
                last_message_at: None,
            },
            messages,
            total_message_count: total,
        }
    }

    #[test]
    fn builtin_templates_render_exactly_what_build_prompt_builds() {
        let t = PromptTemplates::builtin().unwrap();
        let long = "ö".repeat(300);
        let cases = [
            conversation(&[], 0, false),
            conversation(&["hello"], 1, true),
            conversation(
                &[
                    "Hi, is the {{ price }} final?\r\nThanks",
                    "Yes — {% no %}",
                    "ok\n\nbye",
                    "👍",
                ],
                4,
                true,
            ),
            conversation(&["one", "two", "three", "four", "five"], 12, false),
            conversation(&["short", &long], 2, true),
            conversation(&["a", "b"], 0, true),
        ];
        let budgets = [
            0,
            1,
            5,
            10,
            40,
            41,
            42,
            43,
            80,
            120,
            400,
            24_000,
            usize::MAX,
        ];
        let mut cut_seen = false;
        let mut partial_seen = false;
        for c in &cases {
            let input = PromptInput::from_conversation(c).unwrap();
            // Budgets exactly at, just under and just over each newest-k cut.
            let full = build_prompt(c, usize::MAX).user;
            let mut exact = Vec::new();
            let mut sum = 0;
            for line in full.lines().rev().take(c.messages.len()) {
                sum += line.chars().count() + 1;
                exact.extend([sum - 1, sum, sum + 1]);
            }
            for budget in budgets.into_iter().chain(exact) {
                let expected = build_prompt(c, budget);
                let got = t.render(&input, budget).unwrap();
                assert_eq!(got, expected, "budget {budget}, conversation {c:?}");
                cut_seen |= expected.user.contains('…');
                partial_seen |=
                    expected.included_messages > 1 && expected.included_messages < c.messages.len();
            }
        }
        assert!(
            cut_seen && partial_seen,
            "the cases must exercise both budget cuts"
        );
    }

    #[test]
    fn unknown_top_level_variable_is_an_error_at_compile() {
        let err = PromptTemplates::new("s", "{{ message.body }}", "{{ leed.name }}").unwrap_err();
        assert!(
            matches!(&err, TemplateError::UnknownVariables { template: "user", names, .. } if names == "leed"),
            "{err}"
        );
        let err = PromptTemplates::new("s", "{{ messages }}", "{{ lead }}").unwrap_err();
        assert!(matches!(
            err,
            TemplateError::UnknownVariables {
                template: "message",
                ..
            }
        ));
        // Loop variables, `set` and built-in functions are declared.
        PromptTemplates::new(
            "s",
            "{{ message.body }}",
            "{% set n = 2 %}{% for l in lines %}{{ loop.index }}{{ l }}{% endfor %}{{ range(n) | list }}",
        )
        .unwrap();
        assert!(matches!(
            PromptTemplates::new("s", "{{ message.body", "x"),
            Err(TemplateError::Compile {
                template: "message",
                ..
            })
        ));
    }

    #[test]
    fn unknown_field_is_an_error_at_render() {
        let t = PromptTemplates::new("s", "{{ message.body }}", "{{ lead.nosuchcolumn }}").unwrap();
        let input = PromptInput {
            lead: json!({"id": "clx1"}),
            messages: vec![json!({"body": "hi"})],
            total_message_count: 1,
        };
        let err = t.render(&input, 100).unwrap_err();
        assert!(
            matches!(&err, RenderError::Template { template: "user", reason } if reason.contains("lead.nosuchcolumn")),
            "{err}"
        );
        assert!(
            matches!(
                err,
                RenderError::Template {
                    template: "user",
                    ..
                }
            ),
            "{err}"
        );
        let t = PromptTemplates::new("s", "{{ message.text }}", "{{ lines }}").unwrap();
        assert!(matches!(
            t.render(&input, 100),
            Err(RenderError::Template {
                template: "message",
                ..
            })
        ));
    }

    #[test]
    fn filters_reject_what_they_cannot_format() {
        let t = PromptTemplates::new(
            "s",
            r#"{{ message.at | format_time("%H:%M") }}"#,
            "{{ lines | join(',') }}",
        )
        .unwrap();
        let input = |at: &str| PromptInput {
            lead: json!({}),
            messages: vec![json!({"at": at})],
            total_message_count: 1,
        };
        let ok = t
            .render(&input("2026-03-07T09:05:59.123+02:00"), 100)
            .unwrap();
        assert_eq!(ok.user, "07:05");
        assert!(t.render(&input("yesterday"), 100).is_err());
        let bad_format = PromptTemplates::new(
            "s",
            r#"{{ message.at | format_time("%Q") }}"#,
            "{{ lines }}",
        )
        .unwrap();
        assert!(
            bad_format
                .render(&input("2026-03-07T09:05:59Z"), 100)
                .is_err()
        );
    }
}
