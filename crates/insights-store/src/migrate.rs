//! The domain migrations (`migrations/*.sql` at the repository root, embedded at build time),
//! run by the workspace's one migrator (`insights_pg::Migrator`: one transaction under a
//! transaction-scoped advisory lock, so safe behind a pooler and when runs race; checksummed,
//! so an applied migration whose text changed is an error: fix forward with a new file).

use std::time::Duration;

use insights_pg::{Migration, Migrator};
use sqlx::PgPool;

pub use insights_pg::MigrateReport;

use crate::error::StoreError;

/// Every domain migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "domain",
        sql: include_str!("../../../migrations/0001_domain.sql"),
    },
    Migration {
        version: 2,
        name: "candidates",
        sql: include_str!("../../../migrations/0002_candidates.sql"),
    },
];

pub const MIGRATIONS_TABLE: &str = "insights_domain_migrations";

/// Advisory lock key of the domain migrations ("insdomn1"); distinct from the queue's.
pub const MIGRATION_LOCK_KEY: i64 = 0x696e_7364_6f6d_6e31;

/// DDL on a big table can take a while; still bounded.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);

pub const MIGRATOR: Migrator = Migrator {
    schema: None,
    table: MIGRATIONS_TABLE,
    lock_key: MIGRATION_LOCK_KEY,
    timeout: MIGRATION_TIMEOUT,
    migrations: MIGRATIONS,
};

/// Applies the pending domain migrations. Idempotent and safe to run concurrently.
pub async fn migrate(pool: &PgPool) -> Result<MigrateReport, StoreError> {
    Ok(MIGRATOR.run(pool).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Databases migrated by earlier releases hold these checksums; a different value here
    /// means an applied migration's text changed.
    #[test]
    fn applied_migrations_keep_their_checksums() {
        let sums: Vec<_> = MIGRATIONS.iter().map(Migration::checksum).collect();
        assert_eq!(sums, ["d7da3991a1ed5252", "b3d3fe24579ef59b"]);
    }
}
