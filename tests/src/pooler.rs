//! pgbouncer (transaction mode) in front of a test database, and the URLs that use it.

use insights_testkit::{Pgbouncer, PgbouncerOptions};

/// Starts a transaction-mode pgbouncer in front of the local Postgres (127.0.0.1:5432) with
/// `default_pool_size` server connections per database/user pair.
pub async fn start_pgbouncer(default_pool_size: u32) -> anyhow::Result<Pgbouncer> {
    Pgbouncer::start(PgbouncerOptions {
        default_pool_size,
        ..PgbouncerOptions::default()
    })
    .await
}

/// URL of `database` through `pgbouncer`, flagged so the worker runs in pooler mode.
pub fn pooler_url(pgbouncer: &Pgbouncer, database: &str) -> String {
    with_pgbouncer_flag(&pgbouncer.url(database))
}

/// Adds `pgbouncer=true` to a URL's query string.
pub fn with_pgbouncer_flag(url: &str) -> String {
    if url.contains('?') {
        format!("{url}&pgbouncer=true")
    } else {
        format!("{url}?pgbouncer=true")
    }
}
