//! Typed, validated configuration from the environment.
//!
//! [`VARIABLES`] is the one table of every variable, its default and its meaning; the README's
//! table is generated from / checked against it. [`Settings::from_lookup`] reads through a
//! closure, so tests never touch the process environment:
//! `Settings::from_lookup(|name| std::env::var(name).ok())`.
//!
//! An empty (or all-whitespace) value counts as unset. Errors name the variable and the expected
//! form and never echo a secret.

use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use crate::defaults;
use crate::secret::{DatabaseUrl, SecretString};

/// One documented environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarDoc {
    pub name: &'static str,
    /// The default as a user would write it; `""` when there is none (see `meaning`).
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every variable the `insights` binary reads, in README order.
pub const VARIABLES: &[VarDoc] = &[
    VarDoc {
        name: "DATABASE_URL",
        default: "",
        meaning: "App database (leads, messages, insights); may point at a transaction pooler. Required by every command that touches the database except `demo`, which uses the local Postgres.",
    },
    VarDoc {
        name: "INSIGHTS_DB_POOLER",
        default: "none",
        meaning: "`none` or `transaction`. `transaction` (also implied by `?pgbouncer=true` in a URL) makes every statement unnamed inside a transaction and drops the `extra_float_digits` start-up parameter.",
    },
    VarDoc {
        name: "QUEUE_DATABASE_URL",
        default: "DATABASE_URL",
        meaning: "Database of the job queue (schema `insights_queue`).",
    },
    VarDoc {
        name: "DIRECT_DATABASE_URL",
        default: "",
        meaning: "Direct (or session-mode) URL used for migrations and LISTEN/NOTIFY. Unset: migrations use DATABASE_URL and workers poll.",
    },
    VarDoc {
        name: "INSIGHTS_CONCURRENCY",
        default: "8",
        meaning: "Maximum jobs in flight per worker process (1 to 4096).",
    },
    VarDoc {
        name: "INSIGHTS_DB_POOL_MAX",
        default: "4",
        meaning: "Maximum connections of the worker's pool, 1 to 1000: one pool serves store and queue when both use the same URL; with a separate QUEUE_DATABASE_URL each of the two pools gets this many.",
    },
    VarDoc {
        name: "INSIGHTS_DB_ACQUIRE_TIMEOUT_MS",
        default: "5000",
        meaning: "How long a call waits for a free pooled connection before failing (transient).",
    },
    VarDoc {
        name: "INSIGHTS_DB_STATEMENT_TIMEOUT_MS",
        default: "10000",
        meaning: "Client-side bound on every database call, connection wait included.",
    },
    VarDoc {
        name: "INSIGHTS_ENQUEUE_LIMIT",
        default: "10000",
        meaning: "Maximum leads enqueued per producer run.",
    },
    VarDoc {
        name: "INSIGHTS_MAX_ATTEMPTS",
        default: "8",
        meaning: "Attempts before a job is discarded (1 to 100).",
    },
    VarDoc {
        name: "INSIGHTS_BREAKER_THRESHOLD",
        default: "3",
        meaning: "Consecutive database connection errors that pause fetching (1 to 1000).",
    },
    VarDoc {
        name: "INSIGHTS_LLM_BASE_URL",
        default: "",
        meaning: "OpenAI-compatible base URL including `/v1` (the client appends `/chat/completions`). Required for `work`; `demo` uses its built-in mock.",
    },
    VarDoc {
        name: "INSIGHTS_LLM_MODEL",
        default: "gpt-4o-mini",
        meaning: "Model name sent with every request.",
    },
    VarDoc {
        name: "INSIGHTS_LLM_API_KEY",
        default: "",
        meaning: "Bearer token for the LLM API. Unset: OPENAI_API_KEY; both unset: no Authorization header (local servers).",
    },
    VarDoc {
        name: "OPENAI_API_KEY",
        default: "",
        meaning: "Fallback for INSIGHTS_LLM_API_KEY.",
    },
    VarDoc {
        name: "INSIGHTS_LLM_TIMEOUT_MS",
        default: "60000",
        meaning: "Total timeout of one LLM request.",
    },
    VarDoc {
        name: "INSIGHTS_MAX_MESSAGES",
        default: "200",
        meaning: "Newest messages loaded per lead (1 to 100000).",
    },
    VarDoc {
        name: "INSIGHTS_PROMPT_BUDGET_CHARS",
        default: "24000",
        meaning: "Characters of conversation the prompt may carry; the newest messages are kept (100 to 10000000).",
    },
    VarDoc {
        name: "INSIGHTS_HTTP_BIND",
        default: "127.0.0.1:9090",
        meaning: "Address of the health, metrics and dashboard server.",
    },
    VarDoc {
        name: "INSIGHTS_DASHBOARD_TOKEN",
        default: "",
        meaning: "Bearer token for the dashboard; required when INSIGHTS_HTTP_BIND is not a loopback address.",
    },
    VarDoc {
        name: "RUST_LOG",
        default: "info",
        meaning: "Log filter (tracing-subscriber syntax), e.g. `info,insights_queue=debug`.",
    },
];

/// [`VARIABLES`] as a Markdown table (variable, default, meaning), for the README.
pub fn variables_markdown() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for v in VARIABLES {
        let default = match v.default {
            "" => "unset".to_owned(),
            d => format!("`{d}`"),
        };
        out.push_str(&format!("| `{}` | {} | {} |\n", v.name, default, v.meaning));
    }
    out
}

/// Whether a URL points at Postgres directly or at a transaction-mode pooler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolerMode {
    /// Postgres itself or a session-mode pooler: named statements are fine.
    #[default]
    Direct,
    /// pgbouncer / Supavisor in transaction mode: unnamed statements inside transactions only.
    Transaction,
}

impl PoolerMode {
    /// The setting combined with the URL's `?pgbouncer=true` hint: either one turns it on.
    pub fn resolve(setting: PoolerMode, url: &DatabaseUrl) -> PoolerMode {
        if setting == PoolerMode::Transaction || url.pooler_hint() {
            PoolerMode::Transaction
        } else {
            PoolerMode::Direct
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PoolerMode::Direct => "none",
            PoolerMode::Transaction => "transaction",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: expected {expected}, got {got:?}")]
    Invalid {
        name: &'static str,
        expected: String,
        /// The offending value, or a placeholder for secrets.
        got: String,
    },
    #[error("{name}: required ({why})")]
    Missing {
        name: &'static str,
        why: &'static str,
    },
}

/// The validated configuration. Values that only some commands need are `Option`s with a
/// `require_*` accessor, so each command fails with a clear message only when it needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `DATABASE_URL` as given (the store strips `pgbouncer=true` before connecting).
    pub database_url: Option<DatabaseUrl>,
    /// Pooler mode of the app pool: `INSIGHTS_DB_POOLER` or the URL hint.
    pub pooler: PoolerMode,
    /// `QUEUE_DATABASE_URL`, else `DATABASE_URL`.
    pub queue_database_url: Option<DatabaseUrl>,
    /// Pooler mode of the queue pool (the setting or the queue URL's hint).
    pub queue_pooler: PoolerMode,
    pub direct_database_url: Option<DatabaseUrl>,
    pub concurrency: usize,
    pub db_pool_max: u32,
    pub db_acquire_timeout: Duration,
    pub db_statement_timeout: Duration,
    pub enqueue_limit: u64,
    pub max_attempts: u32,
    pub breaker_threshold: u32,
    pub llm_base_url: Option<Url>,
    pub llm_model: String,
    pub llm_api_key: Option<SecretString>,
    pub llm_timeout: Duration,
    pub max_messages: u32,
    pub prompt_budget_chars: usize,
    pub http_bind: SocketAddr,
    pub dashboard_token: Option<SecretString>,
    pub log_filter: String,
}

impl Settings {
    /// Reads and validates every variable through `lookup` (name → value).
    pub fn from_lookup<F>(lookup: F) -> Result<Self, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let database_url = get("DATABASE_URL")
            .map(|v| parse_db_url("DATABASE_URL", v))
            .transpose()?;
        let pooler_setting = match get("INSIGHTS_DB_POOLER").as_deref() {
            None | Some("none") => PoolerMode::Direct,
            Some("transaction") => PoolerMode::Transaction,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "INSIGHTS_DB_POOLER",
                    expected: "`none` or `transaction`".to_owned(),
                    got: other.to_owned(),
                });
            }
        };
        let queue_database_url = match get("QUEUE_DATABASE_URL") {
            Some(v) => Some(parse_db_url("QUEUE_DATABASE_URL", v)?),
            None => database_url.clone(),
        };
        let direct_database_url = get("DIRECT_DATABASE_URL")
            .map(|v| parse_db_url("DIRECT_DATABASE_URL", v))
            .transpose()?;
        let pooler = database_url
            .as_ref()
            .map_or(pooler_setting, |u| PoolerMode::resolve(pooler_setting, u));
        let queue_pooler = queue_database_url
            .as_ref()
            .map_or(pooler_setting, |u| PoolerMode::resolve(pooler_setting, u));

        let concurrency = parse_int(
            "INSIGHTS_CONCURRENCY",
            get("INSIGHTS_CONCURRENCY"),
            defaults::CONCURRENCY as u64,
            1,
            defaults::MAX_CONCURRENCY as u64,
        )? as usize;
        let db_pool_max = parse_int(
            "INSIGHTS_DB_POOL_MAX",
            get("INSIGHTS_DB_POOL_MAX"),
            defaults::DB_POOL_MAX.into(),
            1,
            defaults::MAX_POOL.into(),
        )? as u32;
        let db_acquire_timeout = parse_ms(
            "INSIGHTS_DB_ACQUIRE_TIMEOUT_MS",
            get("INSIGHTS_DB_ACQUIRE_TIMEOUT_MS"),
            defaults::DB_ACQUIRE_TIMEOUT_MS,
        )?;
        let db_statement_timeout = parse_ms(
            "INSIGHTS_DB_STATEMENT_TIMEOUT_MS",
            get("INSIGHTS_DB_STATEMENT_TIMEOUT_MS"),
            defaults::DB_STATEMENT_TIMEOUT_MS,
        )?;
        let enqueue_limit = parse_int(
            "INSIGHTS_ENQUEUE_LIMIT",
            get("INSIGHTS_ENQUEUE_LIMIT"),
            defaults::ENQUEUE_LIMIT,
            1,
            100_000_000,
        )?;
        let max_attempts = parse_int(
            "INSIGHTS_MAX_ATTEMPTS",
            get("INSIGHTS_MAX_ATTEMPTS"),
            defaults::MAX_ATTEMPTS.into(),
            1,
            100,
        )? as u32;
        let breaker_threshold = parse_int(
            "INSIGHTS_BREAKER_THRESHOLD",
            get("INSIGHTS_BREAKER_THRESHOLD"),
            defaults::BREAKER_THRESHOLD.into(),
            1,
            1000,
        )? as u32;
        let llm_base_url = get("INSIGHTS_LLM_BASE_URL")
            .map(|v| parse_http_url("INSIGHTS_LLM_BASE_URL", v))
            .transpose()?;
        let llm_model = get("INSIGHTS_LLM_MODEL").unwrap_or_else(|| defaults::LLM_MODEL.to_owned());
        let llm_api_key = get("INSIGHTS_LLM_API_KEY")
            .or_else(|| get("OPENAI_API_KEY"))
            .map(SecretString::new);
        let llm_timeout = parse_ms(
            "INSIGHTS_LLM_TIMEOUT_MS",
            get("INSIGHTS_LLM_TIMEOUT_MS"),
            defaults::LLM_TIMEOUT_MS,
        )?;
        let max_messages = parse_int(
            "INSIGHTS_MAX_MESSAGES",
            get("INSIGHTS_MAX_MESSAGES"),
            defaults::MAX_MESSAGES.into(),
            1,
            100_000,
        )? as u32;
        let prompt_budget_chars = parse_int(
            "INSIGHTS_PROMPT_BUDGET_CHARS",
            get("INSIGHTS_PROMPT_BUDGET_CHARS"),
            defaults::PROMPT_BUDGET_CHARS as u64,
            100,
            10_000_000,
        )? as usize;
        let http_bind = match get("INSIGHTS_HTTP_BIND") {
            None => parse_bind(defaults::HTTP_BIND.to_owned())?,
            Some(v) => parse_bind(v)?,
        };
        let dashboard_token = get("INSIGHTS_DASHBOARD_TOKEN").map(SecretString::new);
        let log_filter = get("RUST_LOG").unwrap_or_else(|| "info".to_owned());

        let settings = Settings {
            database_url,
            pooler,
            queue_database_url,
            queue_pooler,
            direct_database_url,
            concurrency,
            db_pool_max,
            db_acquire_timeout,
            db_statement_timeout,
            enqueue_limit,
            max_attempts,
            breaker_threshold,
            llm_base_url,
            llm_model,
            llm_api_key,
            llm_timeout,
            max_messages,
            prompt_budget_chars,
            http_bind,
            dashboard_token,
            log_filter,
        };
        settings.check_http_exposure()?;
        Ok(settings)
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The app database URL, or the error a command that needs it reports.
    pub fn require_database_url(&self) -> Result<&DatabaseUrl, ConfigError> {
        self.database_url.as_ref().ok_or(ConfigError::Missing {
            name: "DATABASE_URL",
            why: "a postgres:// URL of the app database",
        })
    }

    /// The queue database URL (falls back to `DATABASE_URL`).
    pub fn require_queue_database_url(&self) -> Result<&DatabaseUrl, ConfigError> {
        self.queue_database_url
            .as_ref()
            .ok_or(ConfigError::Missing {
                name: "DATABASE_URL",
                why: "a postgres:// URL (or QUEUE_DATABASE_URL for the queue)",
            })
    }

    /// The URL migrations run through: `DIRECT_DATABASE_URL` when set, else `DATABASE_URL`.
    pub fn require_migration_url(&self) -> Result<&DatabaseUrl, ConfigError> {
        match &self.direct_database_url {
            Some(u) => Ok(u),
            None => self.require_database_url(),
        }
    }

    /// The LLM base URL, required by `work`.
    pub fn require_llm_base_url(&self) -> Result<&Url, ConfigError> {
        self.llm_base_url.as_ref().ok_or(ConfigError::Missing {
            name: "INSIGHTS_LLM_BASE_URL",
            why: "an http(s) URL including /v1, e.g. https://api.openai.com/v1",
        })
    }

    /// The dashboard must not be reachable beyond loopback without a token. Call again after a
    /// CLI flag changes `http_bind`.
    pub fn check_http_exposure(&self) -> Result<(), ConfigError> {
        if !self.http_bind.ip().is_loopback() && self.dashboard_token.is_none() {
            return Err(ConfigError::Missing {
                name: "INSIGHTS_DASHBOARD_TOKEN",
                why: "INSIGHTS_HTTP_BIND is not a loopback address",
            });
        }
        Ok(())
    }
}

fn parse_int(
    name: &'static str,
    value: Option<String>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    match v.replace('_', "").parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            name,
            expected: format!("a whole number from {min} to {max}"),
            got: v,
        }),
    }
}

fn parse_ms(
    name: &'static str,
    value: Option<String>,
    default_ms: u64,
) -> Result<Duration, ConfigError> {
    let ms =
        parse_int(name, value, default_ms, 1, defaults::MAX_TIMEOUT_MS).map_err(|e| match e {
            ConfigError::Invalid { name, got, .. } => ConfigError::Invalid {
                name,
                expected: format!(
                    "a duration in whole milliseconds from 1 to {}",
                    defaults::MAX_TIMEOUT_MS
                ),
                got,
            },
            other => other,
        })?;
    Ok(Duration::from_millis(ms))
}

fn parse_db_url(name: &'static str, value: String) -> Result<DatabaseUrl, ConfigError> {
    let url = DatabaseUrl::new(value);
    url.validate().map_err(|reason| ConfigError::Invalid {
        name,
        expected: format!("a postgres:// URL ({reason})"),
        got: url.redacted(),
    })?;
    Ok(url)
}

fn parse_http_url(name: &'static str, value: String) -> Result<Url, ConfigError> {
    let invalid = |v: &str| ConfigError::Invalid {
        name,
        expected: "an http(s) URL including /v1, e.g. https://api.openai.com/v1".to_owned(),
        got: v.to_owned(),
    };
    let url = Url::parse(&value).map_err(|_| invalid(&value))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(&value));
    }
    Ok(url)
}

fn parse_bind(value: String) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Invalid {
        name: "INSIGHTS_HTTP_BIND",
        expected: "an IP address and port such as 127.0.0.1:9090".to_owned(),
        got: value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_apply_and_match_the_documented_table() {
        let s = settings(&[("DATABASE_URL", "postgres://u@localhost/db")]).unwrap();
        assert_eq!(s.concurrency, defaults::CONCURRENCY);
        assert_eq!(s.db_pool_max, defaults::DB_POOL_MAX);
        assert_eq!(s.pooler, PoolerMode::Direct);
        assert_eq!(s.queue_database_url, s.database_url);
        assert!(s.llm_base_url.is_none());
        assert!(s.require_llm_base_url().is_err());
        // Every documented numeric default parses to the value the code uses.
        let doc_settings = settings(
            &VARIABLES
                .iter()
                .filter(|v| {
                    v.name.starts_with("INSIGHTS_")
                        && !v.default.is_empty()
                        && v.name != "INSIGHTS_DB_POOLER"
                })
                .map(|v| (v.name, v.default))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let none = settings(&[]).unwrap();
        assert_eq!(doc_settings, none);
        assert!(
            VARIABLES
                .iter()
                .any(|v| v.name == "INSIGHTS_CONCURRENCY" && v.default == "8")
        );
    }

    #[test]
    fn every_variable_read_is_documented() {
        let src = include_str!("config.rs");
        let body = src.split("fn from_lookup").nth(1).unwrap();
        let body = body.split("fn from_env").next().unwrap();
        for part in body.split("get(\"").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(
                VARIABLES.iter().any(|v| v.name == name),
                "{name} is read but not in VARIABLES"
            );
        }
    }

    #[test]
    fn readme_documents_every_variable_with_its_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        for v in VARIABLES {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", v.name)))
                .unwrap_or_else(|| panic!("README has no table row for {}", v.name));
            if !v.default.is_empty() {
                assert!(
                    row.contains(&format!("`{}`", v.default)),
                    "README row for {} does not show the default `{}`: {row}",
                    v.name,
                    v.default
                );
            }
        }
        assert!(variables_markdown().lines().count() == VARIABLES.len() + 2);
    }

    #[test]
    fn bad_numbers_name_the_variable_and_the_form() {
        let e = settings(&[("INSIGHTS_CONCURRENCY", "abc")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"INSIGHTS_CONCURRENCY: expected a whole number from 1 to 4096, got "abc""#
        );
        let e = settings(&[("INSIGHTS_CONCURRENCY", "0")]).unwrap_err();
        assert!(e.to_string().starts_with("INSIGHTS_CONCURRENCY: expected"));
        let e = settings(&[("INSIGHTS_DB_POOL_MAX", "-1")]).unwrap_err();
        assert!(e.to_string().starts_with("INSIGHTS_DB_POOL_MAX: "));
        let e = settings(&[("INSIGHTS_LLM_TIMEOUT_MS", "1.5s")]).unwrap_err();
        assert!(e.to_string().contains("milliseconds"), "{e}");
        let e = settings(&[("INSIGHTS_DB_POOLER", "session")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("INSIGHTS_DB_POOLER: expected `none` or `transaction`")
        );
        let e = settings(&[("INSIGHTS_LLM_BASE_URL", "localhost:8080")]).unwrap_err();
        assert!(e.to_string().starts_with("INSIGHTS_LLM_BASE_URL: "));
        let e = settings(&[("INSIGHTS_HTTP_BIND", "9090")]).unwrap_err();
        assert!(e.to_string().starts_with("INSIGHTS_HTTP_BIND: "));
        // Whitespace-only counts as unset.
        assert_eq!(
            settings(&[("INSIGHTS_CONCURRENCY", " ")])
                .unwrap()
                .concurrency,
            8
        );
    }

    #[test]
    fn database_url_errors_do_not_leak_the_password() {
        let e = settings(&[("DATABASE_URL", "mysql://app:hunter2@h/db")]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("DATABASE_URL: expected a postgres:// URL"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(!format!("{e:?}").contains("hunter2"));
        let missing = settings(&[]).unwrap().require_database_url().unwrap_err();
        assert!(missing.to_string().starts_with("DATABASE_URL: required"));
    }

    #[test]
    fn pooler_mode_from_setting_or_url_hint() {
        let s = settings(&[("DATABASE_URL", "postgres://u@h:6543/db?pgbouncer=true")]).unwrap();
        assert_eq!(s.pooler, PoolerMode::Transaction);
        let s = settings(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            (
                "QUEUE_DATABASE_URL",
                "postgres://u@q:6543/db?pgbouncer=true",
            ),
        ])
        .unwrap();
        assert_eq!(s.pooler, PoolerMode::Direct);
        assert_eq!(s.queue_pooler, PoolerMode::Transaction);
        let s = settings(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("INSIGHTS_DB_POOLER", "transaction"),
        ])
        .unwrap();
        assert_eq!(s.pooler, PoolerMode::Transaction);
        let s = settings(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("DIRECT_DATABASE_URL", "postgres://u@direct/db"),
        ])
        .unwrap();
        assert_eq!(
            s.require_migration_url().unwrap().host_port(),
            "direct:5432"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = settings(&[
            ("DATABASE_URL", "postgres://app:hunter2@h/db"),
            ("OPENAI_API_KEY", "sk-topsecret"),
            ("INSIGHTS_DASHBOARD_TOKEN", "tok-secret"),
        ])
        .unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("sk-topsecret"), "{dbg}");
        assert!(!dbg.contains("tok-secret"), "{dbg}");
        assert_eq!(s.llm_api_key.unwrap().expose(), "sk-topsecret");
        let s = settings(&[
            ("INSIGHTS_LLM_API_KEY", "primary"),
            ("OPENAI_API_KEY", "fallback"),
        ])
        .unwrap();
        assert_eq!(s.llm_api_key.unwrap().expose(), "primary");
    }

    #[test]
    fn dashboard_beyond_loopback_needs_a_token() {
        let e = settings(&[("INSIGHTS_HTTP_BIND", "0.0.0.0:9090")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("INSIGHTS_DASHBOARD_TOKEN: required")
        );
        assert!(
            settings(&[
                ("INSIGHTS_HTTP_BIND", "0.0.0.0:9090"),
                ("INSIGHTS_DASHBOARD_TOKEN", "t")
            ])
            .is_ok()
        );
    }
}
