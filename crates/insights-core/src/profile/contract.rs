//! The statement contract as data: for each of a profile's three statements, its parameters
//! and the columns it returns, in order, with their Postgres types, given the lead key's type
//! `K` (`bigint`, `uuid` or `text`; enums cast to `text` where returned). `insights check`
//! compares each prepared statement with it. A test keeps the table below equal to the data.
//!
//! | statement | parameters | returns (columns are read by name) |
//! |---|---|---|
//! | `candidates` | `$1 K` return keys greater than this (NULL for the first page), `$2 bigint` page size | `lead_key K`, ascending: the leads that need an insight (missing, or older than the lead's newest message) |
//! | `load` | `$1 K[]` lead keys, `$2 bigint` newest messages to load | one row per EXISTING lead: `lead_key K`, `eligible boolean`, `lead jsonb`, `messages jsonb`, `total_message_count bigint`, `source_last_message_at timestamptz`, `stored_source_last_message_at timestamptz` |
//! | `upsert` | parallel arrays, one element per insight, unique keys: `$1 K[]` lead keys, `$2 jsonb[]` insights, `$3 text[]` model, `$4 text[]` prompt version, `$5 timestamptz[]` source_last_message_at, `$6 bigint[]` source_message_count, `$7 bigint[]` prompt_tokens, `$8 bigint[]` completion_tokens, `$9 text[]` llm_request_id | one row per input: `lead_key K`, `written boolean`, `lead_exists boolean` |
//!
//! Each must be a single statement: it runs as one snapshot, also behind a transaction pooler.
//! The upsert must only overwrite a stored insight whose watermark is older and skip keys whose
//! lead no longer exists.

use std::fmt;

use serde::Serialize;

use super::LeadKeyKind;

/// One of a profile's three statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementKind {
    Candidates,
    Load,
    Upsert,
}

impl StatementKind {
    /// Every statement, in the order a profile lists them.
    pub const ALL: [StatementKind; 3] = [
        StatementKind::Candidates,
        StatementKind::Load,
        StatementKind::Upsert,
    ];

    /// The statement's key in a profile's `[statements]` table.
    pub fn name(self) -> &'static str {
        match self {
            StatementKind::Candidates => "candidates",
            StatementKind::Load => "load",
            StatementKind::Upsert => "upsert",
        }
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The element types the contract uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scalar {
    Bigint,
    Text,
    Uuid,
    Jsonb,
    Boolean,
    Timestamptz,
}

impl Scalar {
    /// The type of a lead key of `kind`.
    pub fn key(kind: LeadKeyKind) -> Self {
        match kind {
            LeadKeyKind::Bigint => Scalar::Bigint,
            LeadKeyKind::Uuid => Scalar::Uuid,
            LeadKeyKind::Text => Scalar::Text,
        }
    }

    /// The short name a statement would cast to (`timestamptz`).
    pub fn name(self) -> &'static str {
        match self {
            Scalar::Bigint => "bigint",
            Scalar::Text => "text",
            Scalar::Uuid => "uuid",
            Scalar::Jsonb => "jsonb",
            Scalar::Boolean => "boolean",
            Scalar::Timestamptz => "timestamptz",
        }
    }

    /// The name Postgres' `format_type` gives it (`timestamp with time zone`).
    pub fn format_type(self) -> &'static str {
        match self {
            Scalar::Timestamptz => "timestamp with time zone",
            other => other.name(),
        }
    }
}

/// A contract type: a scalar or a one-dimensional array of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlType {
    pub scalar: Scalar,
    pub array: bool,
}

impl SqlType {
    pub const fn of(scalar: Scalar) -> Self {
        Self {
            scalar,
            array: false,
        }
    }

    pub const fn array_of(scalar: Scalar) -> Self {
        Self {
            scalar,
            array: true,
        }
    }

    /// Whether a type as Postgres' `format_type(oid, NULL)` names it is this one.
    pub fn matches(self, format_type: &str) -> bool {
        let scalar = self.scalar.format_type();
        match format_type.strip_suffix("[]") {
            Some(element) => self.array && element == scalar,
            None => !self.array && format_type == scalar,
        }
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let brackets = if self.array { "[]" } else { "" };
        write!(f, "{}{brackets}", self.scalar.name())
    }
}

/// A type as `format_type` names it, shortened the way the contract writes types
/// (`timestamp with time zone[]` → `timestamptz[]`), for messages.
pub fn short_type_name(format_type: &str) -> String {
    const SHORT: [(&str, &str); 3] = [
        ("timestamp with time zone", "timestamptz"),
        ("timestamp without time zone", "timestamp"),
        ("character varying", "varchar"),
    ];
    let (element, brackets) = match format_type.strip_suffix("[]") {
        Some(element) => (element, "[]"),
        None => (format_type, ""),
    };
    let element = SHORT
        .iter()
        .find(|(long, _)| *long == element)
        .map_or(element, |(_, short)| short);
    format!("{element}{brackets}")
}

/// One parameter: `$number`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// 1-based, as in `$1`.
    pub number: usize,
    pub sql_type: SqlType,
    pub meaning: &'static str,
}

/// One returned column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub sql_type: SqlType,
    pub meaning: &'static str,
}

/// What one statement takes and returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementContract {
    pub statement: StatementKind,
    /// In parameter order (`$1` first).
    pub params: Vec<Param>,
    /// In the order the statement returns them.
    pub columns: Vec<Column>,
}

impl StatementContract {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The contract of `statement` for lead keys of `key`.
pub fn contract(statement: StatementKind, key: LeadKeyKind) -> StatementContract {
    use Scalar::{Bigint, Boolean, Jsonb, Text, Timestamptz};
    let k = Scalar::key(key);
    let params = |list: &[(SqlType, &'static str)]| {
        list.iter()
            .enumerate()
            .map(|(i, (sql_type, meaning))| Param {
                number: i + 1,
                sql_type: *sql_type,
                meaning,
            })
            .collect()
    };
    let columns = |list: &[(&'static str, SqlType, &'static str)]| {
        list.iter()
            .map(|(name, sql_type, meaning)| Column {
                name,
                sql_type: *sql_type,
                meaning,
            })
            .collect()
    };
    let one = SqlType::of;
    let many = SqlType::array_of;
    match statement {
        StatementKind::Candidates => StatementContract {
            statement,
            params: params(&[
                (
                    one(k),
                    "return keys greater than this; NULL for the first page",
                ),
                (one(Bigint), "page size"),
            ]),
            columns: columns(&[(
                "lead_key",
                one(k),
                "a lead that needs an insight (missing, or older than its newest message), ascending",
            )]),
        },
        StatementKind::Load => StatementContract {
            statement,
            params: params(&[
                (many(k), "lead keys"),
                (one(Bigint), "newest messages to load per lead"),
            ]),
            columns: columns(&[
                ("lead_key", one(k), "one row per existing lead"),
                (
                    "eligible",
                    one(Boolean),
                    "false: the lead no longer wants an insight (e.g. unbooked since it was enqueued); the job is skipped without an LLM call",
                ),
                ("lead", one(Jsonb), "an object: the templates' `lead`"),
                (
                    "messages",
                    one(Jsonb),
                    "an array of objects, oldest first: the templates' messages",
                ),
                (
                    "total_message_count",
                    one(Bigint),
                    "messages the lead has in total",
                ),
                (
                    "source_last_message_at",
                    one(Timestamptz),
                    "the freshness watermark of what was loaded: the newest message's time, or the lead's last-message time if that is newer",
                ),
                (
                    "stored_source_last_message_at",
                    one(Timestamptz),
                    "the stored insight's watermark; NULL if none",
                ),
            ]),
        },
        StatementKind::Upsert => StatementContract {
            statement,
            params: params(&[
                (many(k), "lead keys, unique"),
                (
                    many(Jsonb),
                    "the insight documents, validated against the schema",
                ),
                (many(Text), "model"),
                (many(Text), "prompt version"),
                (many(Timestamptz), "source_last_message_at"),
                (many(Bigint), "source_message_count"),
                (many(Bigint), "prompt_tokens"),
                (many(Bigint), "completion_tokens"),
                (many(Text), "llm_request_id; NULL when unknown"),
            ]),
            columns: columns(&[
                ("lead_key", one(k), "one row per input"),
                (
                    "written",
                    one(Boolean),
                    "stored: there was none, or the stored one's watermark was older",
                ),
                ("lead_exists", one(Boolean), "false: the lead is gone"),
            ]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_follow_the_kind() {
        for (kind, key) in [
            (LeadKeyKind::Bigint, "bigint"),
            (LeadKeyKind::Uuid, "uuid"),
            (LeadKeyKind::Text, "text"),
        ] {
            let candidates = contract(StatementKind::Candidates, kind);
            assert_eq!(candidates.params[0].sql_type.to_string(), key);
            assert_eq!(candidates.params[1].sql_type.to_string(), "bigint");
            assert_eq!(candidates.columns[0].sql_type.to_string(), key);
            let load = contract(StatementKind::Load, kind);
            assert_eq!(load.params[0].sql_type.to_string(), format!("{key}[]"));
            let upsert = contract(StatementKind::Upsert, kind);
            assert_eq!(upsert.params[0].sql_type.to_string(), format!("{key}[]"));
            assert_eq!(
                upsert.column("lead_key").map(|c| c.sql_type.to_string()),
                Some(key.to_owned())
            );
        }
    }

    #[test]
    fn the_load_returns_eligible_right_after_the_key() {
        let load = contract(StatementKind::Load, LeadKeyKind::Text);
        let names: Vec<&str> = load.columns.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "lead_key",
                "eligible",
                "lead",
                "messages",
                "total_message_count",
                "source_last_message_at",
                "stored_source_last_message_at"
            ]
        );
        let numbers: Vec<usize> = contract(StatementKind::Upsert, LeadKeyKind::Uuid)
            .params
            .iter()
            .map(|p| p.number)
            .collect();
        assert_eq!(numbers, (1..=9).collect::<Vec<_>>());
    }

    /// `T` as the docs table writes it: the key's type as `K`.
    fn doc_type(t: SqlType, key: Scalar) -> String {
        let element = if t.scalar == key {
            "K"
        } else {
            t.scalar.name()
        };
        format!("{element}{}", if t.array { "[]" } else { "" })
    }

    #[test]
    fn the_docs_table_is_the_contract() {
        let docs: Vec<&str> = include_str!("contract.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `"))
            .collect();
        // Uuid appears in no contract type but the key's, so `K` is unambiguous.
        let kind = LeadKeyKind::Uuid;
        for statement in StatementKind::ALL {
            let c = contract(statement, kind);
            let row = docs
                .iter()
                .find(|r| r.starts_with(&format!("{statement}`")))
                .unwrap_or_else(|| panic!("no docs row for {statement}"));
            let key = Scalar::key(kind);
            let mut expected: Vec<String> = c
                .params
                .iter()
                .map(|p| format!("`${} {}`", p.number, doc_type(p.sql_type, key)))
                .collect();
            expected.extend(
                c.columns
                    .iter()
                    .map(|col| format!("`{} {}`", col.name, doc_type(col.sql_type, key))),
            );
            let mut at = 0;
            for token in expected {
                let found = row[at..]
                    .find(&token)
                    .unwrap_or_else(|| panic!("{statement}: {token} missing or out of order"));
                at += found + token.len();
            }
            // The row lost its first backtick to the prefix; the statement's name is not listed.
            let written = row.matches('`').count().div_ceil(2) - 1;
            assert_eq!(
                written,
                c.params.len() + c.columns.len(),
                "{statement}: the docs row lists something the contract does not"
            );
        }
    }

    #[test]
    fn types_match_postgres_names_and_shorten_for_messages() {
        let tz = SqlType::of(Scalar::Timestamptz);
        assert!(tz.matches("timestamp with time zone"));
        assert!(!tz.matches("timestamp without time zone"));
        assert!(!tz.matches("timestamp with time zone[]"));
        assert!(SqlType::array_of(Scalar::Timestamptz).matches("timestamp with time zone[]"));
        assert!(SqlType::array_of(Scalar::Uuid).matches("uuid[]"));
        assert!(!SqlType::of(Scalar::Bigint).matches("integer"));
        assert!(SqlType::of(Scalar::Boolean).matches("boolean"));
        assert_eq!(
            short_type_name("timestamp with time zone[]"),
            "timestamptz[]"
        );
        assert_eq!(short_type_name("timestamp without time zone"), "timestamp");
        assert_eq!(
            short_type_name("\"MessageDirection\""),
            "\"MessageDirection\""
        );
    }
}
