//! Throwaway databases, one per scenario, so no run sees another run's dead tuples.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use insights_core::DatabaseUrl;
use insights_store::PoolSettings;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, PgPool};

use crate::defaults::{ADMIN_URL, BENCH_DB_PREFIX, STATEMENT_TIMEOUT};
use crate::timed;

/// Server URL the bench connects to as a superuser.
pub fn admin_url() -> String {
    std::env::var("INSIGHTS_BENCH_PG_URL").unwrap_or_else(|_| ADMIN_URL.to_owned())
}

/// A database `insights_bench_<label>_<unique>` that is dropped (with `FORCE`) on `Drop`.
#[derive(Debug)]
pub struct BenchDb {
    pub name: String,
    /// Direct URL of the new database.
    pub url: String,
    admin_url: String,
}

impl BenchDb {
    pub async fn create(label: &str) -> anyhow::Result<Self> {
        let admin_url = admin_url();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "{BENCH_DB_PREFIX}{label}_{:x}_{:x}",
            std::process::id(),
            nanos & 0xffff_ffff
        );
        let mut conn = timed(PgConnection::connect(&admin_url))
            .await
            .with_context(|| format!("connecting to {}", redact(&admin_url)))?;
        timed(conn.execute(sqlx::raw_sql(AssertSqlSafe(format!(
            r#"CREATE DATABASE "{name}""#
        )))))
        .await
        .with_context(|| format!("creating database {name}"))?;
        conn.close().await.ok();
        let url = replace_database(&admin_url, &name);
        Ok(Self {
            name,
            url,
            admin_url,
        })
    }

    /// A pool on this database with at most `max` connections, built as `insights work` builds
    /// its pool (`insights_store::pool`: no ping per checkout, a bounded check per release), so
    /// both queues in a comparison run on the pool production uses.
    pub async fn pool(&self, max: u32) -> anyhow::Result<PgPool> {
        let mut settings = PoolSettings::new(DatabaseUrl::new(self.url.clone()));
        settings.max_connections = max;
        settings.acquire_timeout = STATEMENT_TIMEOUT;
        settings.statement_timeout = STATEMENT_TIMEOUT;
        insights_store::pool::connect(&settings)
            .await
            .map_err(|e| anyhow::anyhow!("connecting a pool to {}: {e}", self.name))
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        // Drop cannot await; psql is synchronous and is installed wherever Postgres is.
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        let _ = Command::new("psql")
            .args(["-q", "-d", &self.admin_url, "-c", &sql])
            .output();
    }
}

/// `postgres://u@h:p/old?x` → `postgres://u@h:p/new?x`.
pub fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            )
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_and_keeps_the_query() {
        assert_eq!(
            replace_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://u@h", "x"), "postgres://u@h/x");
    }

    #[test]
    fn redacts_a_password() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
