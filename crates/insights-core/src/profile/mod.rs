//! The profile: one TOML file that adapts insights-worker to a team's tables, prompt and insight
//! shape without code. Without one, [`Profile::builtin`] is exactly today's behaviour: this
//! project's tables (the store's built-in statements), the prompt of
//! [`crate::prompt::build_prompt`] and the insight of [`crate::insight`].
//! `examples/prisma-supabase/profile.toml` is a complete profile.
//!
//! ```toml
//! [statements]
//! lead_key = "text"         # the SQL type of the lead key: bigint | uuid | text
//! candidates = "..."        # each statement as SQL text, or as `candidates_file = "c.sql"`
//! load_file = "load.sql"    # (relative to the profile's directory): one of the two
//! upsert = "..."
//!
//! [prompt]
//! version = "pipeline-v3"   # stored with every insight
//! system = "..."            # or system_file; plain text
//! message = "..."           # or message_file; template of one message line
//! user = "..."              # or user_file; template of the user message
//! budget_chars = 24000      # optional: characters of message lines (default INSIGHTS_PROMPT_BUDGET_CHARS)
//! max_messages = 50         # optional: newest messages loaded (default INSIGHTS_MAX_MESSAGES)
//!
//! [output]
//! schema_file = "insight.schema.json"   # or an inline `[output.schema]` table
//! schema_name = "lead_insight"          # optional: `json_schema.name`
//! structured = true                     # optional: send `response_format` json_schema, strict
//!
//! [llm]                                 # optional table, every key optional
//! model = "gpt-4o-mini"                 # default INSIGHTS_LLM_MODEL
//! temperature = 0.2                     # 0..=2; not sent when absent
//! max_output_tokens = 800               # default: the LLM client's
//! token_limit_parameter = "max_tokens"  # or "max_completion_tokens"
//! ```
//!
//! What each statement takes and returns (the statement contract, `K` being the `lead_key`
//! type) is data in [`mod@contract`], with its table in that module's docs.
//!
//! Loading validates everything that can be checked without a database: TOML syntax (errors
//! name the file, line and column), unknown keys, both or neither of text and file, the
//! templates (they compile and use only known variables), the schema (it compiles), the
//! temperature range and the token-limit parameter. Whether the statements run against the
//! team's database cannot be checked here (`insights check` does that against the contract).
//! The template variables, filters and the budget rule are described in [`template`].

pub mod contract;
pub mod lead_key;
pub mod output;
pub mod template;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use contract::{StatementContract, StatementKind, contract};
pub use lead_key::{LeadKey, LeadKeyError, LeadKeyKind};
pub use output::{OutputSchema, SchemaError, SchemaViolations};
pub use template::{
    BUILTIN_MESSAGE_TEMPLATE, BUILTIN_USER_TEMPLATE, PromptInput, PromptTemplates, RenderError,
    TemplateError,
};

use crate::insight::INSIGHT_SCHEMA_NAME;
use crate::prompt::PROMPT_VERSION;

/// A loaded, validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The file it was loaded from; `None` for the built-in profile.
    pub origin: Option<PathBuf>,
    /// The team's SQL; `None` means the store's built-in statements for this project's tables.
    pub statements: Option<Statements>,
    pub prompt: PromptProfile,
    pub output: OutputProfile,
    pub llm: LlmProfile,
}

/// The team's domain SQL (what each statement takes and returns: [`mod@contract`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statements {
    pub lead_key: LeadKeyKind,
    pub candidates: String,
    pub load: String,
    pub upsert: String,
}

#[derive(Debug, Clone)]
pub struct PromptProfile {
    /// Stored with every insight, so a team can tell which prompt wrote it.
    pub version: String,
    pub templates: PromptTemplates,
    /// `None`: `INSIGHTS_PROMPT_BUDGET_CHARS`.
    pub budget_chars: Option<usize>,
    /// `None`: `INSIGHTS_MAX_MESSAGES`.
    pub max_messages: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct OutputProfile {
    /// `response_format.json_schema.name`.
    pub schema_name: String,
    pub schema: OutputSchema,
    /// Whether requests carry `response_format` `json_schema` (strict). Replies are validated
    /// against the schema either way.
    pub structured: bool,
    /// The built-in insight's rules beyond its schema ([`crate::insight::normalise_insight`]):
    /// on for the built-in profile only.
    pub builtin_rules: bool,
}

/// Why a reply's content is not an insight: it is not JSON, breaks the schema, or (built-in
/// profile) breaks the built-in insight's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReplyRejected(pub String);

impl OutputProfile {
    /// The document to write from a reply's message content, or why there is none.
    pub fn accept(&self, content: &str) -> Result<serde_json::Value, ReplyRejected> {
        let document: serde_json::Value = serde_json::from_str(content.trim())
            .map_err(|e| ReplyRejected(format!("the reply is not JSON: {e}")))?;
        self.schema
            .validate(&document)
            .map_err(|v| ReplyRejected(v.to_string()))?;
        if !self.builtin_rules {
            return Ok(document);
        }
        let content = serde_json::from_value(document)
            .map_err(|e| ReplyRejected(format!("the reply is not an insight: {e}")))?;
        let content =
            crate::insight::normalise_insight(content).map_err(|e| ReplyRejected(e.to_string()))?;
        serde_json::to_value(content).map_err(|e| ReplyRejected(e.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmProfile {
    /// `None`: `INSIGHTS_LLM_MODEL`.
    pub model: Option<String>,
    /// `None`: not sent (the server's default).
    pub temperature: Option<f64>,
    /// `None`: the LLM client's default.
    pub max_output_tokens: Option<u32>,
    pub token_limit_parameter: TokenLimitParameter,
}

/// The request field that carries the output token limit: OpenAI's newer models accept only
/// `max_completion_tokens`; most compatible servers only `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenLimitParameter {
    #[default]
    MaxTokens,
    MaxCompletionTokens,
}

impl TokenLimitParameter {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenLimitParameter::MaxTokens => "max_tokens",
            TokenLimitParameter::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

/// Why a profile cannot be used. Every variant names the file; syntax errors also the line and
/// column, invalid values the field (and its line when known).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {field}: {reason}", Located(path, *at))]
    Invalid {
        path: PathBuf,
        /// Line and column of the offending value, when known.
        at: Option<(usize, usize)>,
        field: String,
        reason: String,
    },
}

struct Located<'a>(&'a Path, Option<(usize, usize)>);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some((line, column)) => write!(f, "{}:{line}:{column}", self.0.display()),
            None => write!(f, "{}", self.0.display()),
        }
    }
}

impl Profile {
    /// Today's behaviour as a profile.
    pub fn builtin() -> Result<Self, ProfileError> {
        let invalid = |field: &str, reason: String| ProfileError::Invalid {
            path: PathBuf::from("<built-in profile>"),
            at: None,
            field: field.to_owned(),
            reason,
        };
        Ok(Self {
            origin: None,
            statements: None,
            prompt: PromptProfile {
                version: PROMPT_VERSION.to_owned(),
                templates: PromptTemplates::builtin()
                    .map_err(|e| invalid("prompt", e.to_string()))?,
                budget_chars: None,
                max_messages: None,
            },
            output: OutputProfile {
                schema_name: INSIGHT_SCHEMA_NAME.to_owned(),
                schema: OutputSchema::builtin()
                    .map_err(|e| invalid("output.schema", e.to_string()))?,
                structured: true,
                builtin_rules: true,
            },
            llm: LlmProfile {
                model: None,
                temperature: None,
                max_output_tokens: None,
                token_limit_parameter: TokenLimitParameter::MaxTokens,
            },
        })
    }

    /// Reads and validates the profile at `path`; `*_file` paths are relative to its directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ProfileError> {
        let path = path.as_ref();
        let source = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&source, path)
    }

    /// Validates profile text as if read from `path` (which names it in errors and anchors its
    /// `*_file` paths).
    pub fn parse(source: &str, path: &Path) -> Result<Self, ProfileError> {
        let raw: RawProfile = toml::from_str(source).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(source, s.start))
                .unwrap_or((1, 1));
            ProfileError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        let cx = Resolver {
            path,
            dir: path.parent().unwrap_or(Path::new("")),
            source,
        };
        Ok(Self {
            origin: Some(path.to_owned()),
            statements: Some(raw.statements.resolve(&cx)?),
            prompt: raw.prompt.resolve(&cx)?,
            output: raw.output.resolve(&cx)?,
            llm: raw.llm.resolve(&cx)?,
        })
    }

    /// The SQL type of the lead keys: the statements', or `bigint` (this project's tables).
    pub fn lead_key(&self) -> LeadKeyKind {
        self.statements
            .as_ref()
            .map_or(LeadKeyKind::Bigint, |s| s.lead_key)
    }

    /// The request's `response_format` when structured outputs are on: the schema, strict.
    pub fn response_format(&self) -> Option<serde_json::Value> {
        self.output.structured.then(|| {
            serde_json::json!({
                "type": "json_schema",
                "json_schema": {
                    "name": self.output.schema_name,
                    "strict": true,
                    "schema": self.output.schema.schema(),
                }
            })
        })
    }
}

/// Resolves text-or-file fields and builds errors for one profile file.
struct Resolver<'a> {
    path: &'a Path,
    dir: &'a Path,
    source: &'a str,
}

impl Resolver<'_> {
    fn invalid(
        &self,
        field: &str,
        span: Option<std::ops::Range<usize>>,
        reason: String,
    ) -> ProfileError {
        ProfileError::Invalid {
            path: self.path.to_owned(),
            at: span.map(|s| line_column(self.source, s.start)),
            field: field.to_owned(),
            reason,
        }
    }

    fn text(
        &self,
        field: &str,
        text: Option<Spanned<String>>,
        file: Option<Spanned<String>>,
    ) -> Result<String, ProfileError> {
        match (text, file) {
            (Some(text), None) => Ok(text.into_inner()),
            (None, Some(file)) => self.read(&format!("{field}_file"), &file),
            (Some(_), Some(file)) => Err(self.invalid(
                field,
                Some(file.span()),
                format!("give either {field} or {field}_file, not both"),
            )),
            (None, None) => Err(self.invalid(
                field,
                None,
                format!("missing: give {field} or {field}_file"),
            )),
        }
    }

    fn read(&self, field: &str, file: &Spanned<String>) -> Result<String, ProfileError> {
        let resolved = self.dir.join(file.get_ref());
        std::fs::read_to_string(&resolved).map_err(|e| {
            self.invalid(
                field,
                Some(file.span()),
                format!("cannot read {}: {e}", resolved.display()),
            )
        })
    }

    fn positive<T: PartialEq + Default>(
        &self,
        field: &str,
        value: Option<Spanned<T>>,
    ) -> Result<Option<T>, ProfileError> {
        match value {
            Some(v) if *v.get_ref() == T::default() => {
                Err(self.invalid(field, Some(v.span()), "must be greater than 0".into()))
            }
            v => Ok(v.map(Spanned::into_inner)),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    statements: RawStatements,
    prompt: RawPrompt,
    output: RawOutput,
    #[serde(default)]
    llm: RawLlm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatements {
    lead_key: LeadKeyKind,
    candidates: Option<Spanned<String>>,
    candidates_file: Option<Spanned<String>>,
    load: Option<Spanned<String>>,
    load_file: Option<Spanned<String>>,
    upsert: Option<Spanned<String>>,
    upsert_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrompt {
    version: Spanned<String>,
    system: Option<Spanned<String>>,
    system_file: Option<Spanned<String>>,
    message: Option<Spanned<String>>,
    message_file: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    user_file: Option<Spanned<String>>,
    budget_chars: Option<Spanned<usize>>,
    max_messages: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    schema: Option<serde_json::Value>,
    schema_file: Option<Spanned<String>>,
    schema_name: Option<Spanned<String>>,
    structured: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLlm {
    model: Option<Spanned<String>>,
    temperature: Option<Spanned<f64>>,
    max_output_tokens: Option<Spanned<u32>>,
    token_limit_parameter: Option<TokenLimitParameter>,
}

impl RawStatements {
    fn resolve(self, cx: &Resolver<'_>) -> Result<Statements, ProfileError> {
        let statements = Statements {
            lead_key: self.lead_key,
            candidates: cx.text(
                "statements.candidates",
                self.candidates,
                self.candidates_file,
            )?,
            load: cx.text("statements.load", self.load, self.load_file)?,
            upsert: cx.text("statements.upsert", self.upsert, self.upsert_file)?,
        };
        for (field, sql) in [
            ("statements.candidates", &statements.candidates),
            ("statements.load", &statements.load),
            ("statements.upsert", &statements.upsert),
        ] {
            if sql.trim().is_empty() {
                return Err(cx.invalid(field, None, "is empty".into()));
            }
        }
        Ok(statements)
    }
}

impl RawPrompt {
    fn resolve(self, cx: &Resolver<'_>) -> Result<PromptProfile, ProfileError> {
        if self.version.get_ref().trim().is_empty() {
            return Err(cx.invalid(
                "prompt.version",
                Some(self.version.span()),
                "is empty".into(),
            ));
        }
        let system = cx.text("prompt.system", self.system, self.system_file)?;
        let message = cx.text("prompt.message", self.message, self.message_file)?;
        let user = cx.text("prompt.user", self.user, self.user_file)?;
        let templates = PromptTemplates::new(system, message, user).map_err(|e| {
            let field = match &e {
                TemplateError::Compile { template, .. }
                | TemplateError::UnknownVariables { template, .. } => format!("prompt.{template}"),
            };
            cx.invalid(&field, None, e.to_string())
        })?;
        Ok(PromptProfile {
            budget_chars: cx.positive("prompt.budget_chars", self.budget_chars)?,
            max_messages: cx.positive("prompt.max_messages", self.max_messages)?,
            version: self.version.into_inner(),
            templates,
        })
    }
}

impl RawOutput {
    fn resolve(self, cx: &Resolver<'_>) -> Result<OutputProfile, ProfileError> {
        let schema = schema_value(cx, self.schema, self.schema_file)?;
        let schema = OutputSchema::compile(schema)
            .map_err(|e| cx.invalid("output.schema", None, e.to_string()))?;
        let schema_name = match self.schema_name {
            None => INSIGHT_SCHEMA_NAME.to_owned(),
            Some(name) => {
                let ok = (1..=64).contains(&name.get_ref().len())
                    && name
                        .get_ref()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !ok {
                    return Err(cx.invalid(
                        "output.schema_name",
                        Some(name.span()),
                        "must be 1 to 64 letters, digits, '_' or '-'".into(),
                    ));
                }
                name.into_inner()
            }
        };
        Ok(OutputProfile {
            schema_name,
            schema,
            structured: self.structured.unwrap_or(true),
            builtin_rules: false,
        })
    }
}

/// The schema as JSON, given inline or as a file.
fn schema_value(
    cx: &Resolver<'_>,
    inline: Option<serde_json::Value>,
    file: Option<Spanned<String>>,
) -> Result<serde_json::Value, ProfileError> {
    match (inline, file) {
        (Some(schema), None) => Ok(schema),
        (None, Some(file)) => {
            let text = cx.read("output.schema_file", &file)?;
            serde_json::from_str(&text).map_err(|e| {
                cx.invalid(
                    "output.schema_file",
                    Some(file.span()),
                    format!("{} is not JSON: {e}", cx.dir.join(file.get_ref()).display()),
                )
            })
        }
        (Some(_), Some(_)) => Err(cx.invalid(
            "output.schema",
            None,
            "give either schema or schema_file, not both".into(),
        )),
        (None, None) => Err(cx.invalid(
            "output.schema",
            None,
            "missing: give schema or schema_file".into(),
        )),
    }
}

impl RawLlm {
    fn resolve(self, cx: &Resolver<'_>) -> Result<LlmProfile, ProfileError> {
        if let Some(t) = &self.temperature
            && !(0.0..=2.0).contains(t.get_ref())
        {
            return Err(cx.invalid(
                "llm.temperature",
                Some(t.span()),
                format!("{} is outside 0 to 2", t.get_ref()),
            ));
        }
        if let Some(m) = &self.model
            && m.get_ref().trim().is_empty()
        {
            return Err(cx.invalid("llm.model", Some(m.span()), "is empty".into()));
        }
        Ok(LlmProfile {
            model: self.model.map(Spanned::into_inner),
            temperature: self.temperature.map(Spanned::into_inner),
            max_output_tokens: cx.positive("llm.max_output_tokens", self.max_output_tokens)?,
            token_limit_parameter: self.token_limit_parameter.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests;
