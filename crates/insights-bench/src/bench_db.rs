//! Throwaway databases, one per scenario, so no run sees another run's dead tuples.

use std::ops::Deref;

use insights_core::DatabaseUrl;
use insights_pg::ScratchDb;
use insights_store::PoolSettings;
use sqlx::PgPool;

use crate::defaults::{ADMIN_URL, BENCH_DB_PREFIX, STATEMENT_TIMEOUT};

/// Server URL the bench connects to as a superuser.
pub fn admin_url() -> String {
    std::env::var("INSIGHTS_BENCH_PG_URL").unwrap_or_else(|_| ADMIN_URL.to_owned())
}

/// A database `insights_bench_<label>_<unique>` that is dropped (with `FORCE`) on `Drop`; its
/// `name` and direct `url` are those of the [`ScratchDb`] inside.
#[derive(Debug)]
pub struct BenchDb(ScratchDb);

impl BenchDb {
    pub async fn create(label: &str) -> anyhow::Result<Self> {
        Ok(Self(
            ScratchDb::create(&admin_url(), BENCH_DB_PREFIX, label).await?,
        ))
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

impl Deref for BenchDb {
    type Target = ScratchDb;

    fn deref(&self) -> &ScratchDb {
        &self.0
    }
}
