use std::process::Command;

use anyhow::Context;
use rand::RngExt;
use sqlx::{Connection, PgConnection};

/// Every database a test creates starts with this, so a leftover is easy to recognise.
pub const TEST_DB_PREFIX: &str = "insights_test_";

/// Server URL used to create and drop test databases. Override with `INSIGHTS_TEST_PG_URL`.
pub fn admin_url() -> String {
    std::env::var("INSIGHTS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty database on the local Postgres, dropped when the value is dropped.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    /// URL of the new database (direct, not through any pooler).
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// Creates `insights_test_<label>_<random>`.
    pub async fn create(label: &str) -> anyhow::Result<Self> {
        let admin_url = admin_url();
        let suffix: u64 = rand::rng().random();
        let name = format!("{TEST_DB_PREFIX}{label}_{suffix:x}");
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to the test server at {admin_url}"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating test database {name}"))?;
        conn.close().await.ok();
        let url = replace_database(&admin_url, &name);
        Ok(Self {
            name,
            url,
            admin_url,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside any async context we could rely on; psql is synchronous and present
        // wherever the Postgres client is.
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
