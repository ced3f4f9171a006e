use std::ops::Deref;

use insights_pg::ScratchDb;

pub use insights_pg::url::replace_database;

/// Every database a test creates starts with this, so a leftover is easy to recognise.
pub const TEST_DB_PREFIX: &str = "insights_test_";

/// Server URL used to create and drop test databases. Override with `INSIGHTS_TEST_PG_URL`.
pub fn admin_url() -> String {
    std::env::var("INSIGHTS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty database on the local Postgres, dropped when the value is dropped. Its
/// `name` and `url` (direct, not through any pooler) are those of the [`ScratchDb`] inside.
#[derive(Debug)]
pub struct TestDb(ScratchDb);

impl TestDb {
    /// Creates `insights_test_<label>_<random>`.
    pub async fn create(label: &str) -> anyhow::Result<Self> {
        Ok(Self(
            ScratchDb::create(&admin_url(), TEST_DB_PREFIX, label).await?,
        ))
    }
}

impl Deref for TestDb {
    type Target = ScratchDb;

    fn deref(&self) -> &ScratchDb {
        &self.0
    }
}
