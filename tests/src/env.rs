//! The worker's environment as one value: the same variables drive the binary (as its
//! environment) and the in-process worker (as `Settings`), so both paths see one configuration.

use std::collections::BTreeMap;

use insights_core::Settings;

/// Environment variables for `insights` (names as in the README).
#[derive(Debug, Clone, Default)]
pub struct WorkerEnv {
    vars: BTreeMap<String, String>,
}

impl WorkerEnv {
    /// `DATABASE_URL` and `INSIGHTS_LLM_BASE_URL`, with the HTTP server on an ephemeral
    /// loopback port (parallel workers would collide on the default 9090).
    pub fn new(database_url: &str, llm_base_url: &str) -> Self {
        Self::default()
            .set("DATABASE_URL", database_url)
            .set("INSIGHTS_LLM_BASE_URL", llm_base_url)
            .set("INSIGHTS_HTTP_BIND", "127.0.0.1:0")
    }

    pub fn set(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.vars.insert(key.into(), value.to_string());
        self
    }

    pub fn remove(mut self, key: &str) -> Self {
        self.vars.remove(key);
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// `INSIGHTS_CONCURRENCY`.
    pub fn concurrency(self, n: usize) -> Self {
        self.set("INSIGHTS_CONCURRENCY", n)
    }

    /// `INSIGHTS_DB_POOL_MAX`.
    pub fn pool_max(self, n: u32) -> Self {
        self.set("INSIGHTS_DB_POOL_MAX", n)
    }

    /// Parsed and validated exactly as the binary would (no process environment involved).
    pub fn settings(&self) -> anyhow::Result<Settings> {
        Settings::from_lookup(|name| self.vars.get(name).cloned())
            .map_err(|e| anyhow::anyhow!("invalid test environment: {e}"))
    }
}
