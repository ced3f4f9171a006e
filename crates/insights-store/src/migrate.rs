//! The domain migrations (`migrations/*.sql` at the repository root, embedded at build time) and
//! their runner.
//!
//! Why our own runner rather than `sqlx::migrate!`: sqlx's takes a session advisory lock, which a
//! transaction-mode pooler breaks. Here everything happens in ONE transaction that first takes
//! `pg_advisory_xact_lock` (released at COMMIT), so it is safe behind a pooler and concurrent
//! runs serialise: the second sees the first's bookkeeping and applies nothing.
//! Bookkeeping lives in `insights_domain_migrations`; an applied migration whose text changed is
//! an error (fix forward with a new file).

use std::time::Duration;

use sqlx::{Connection, PgPool};

use crate::error::StoreError;

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

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

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrateReport {
    /// Versions applied by this call (empty when the schema was up to date).
    pub applied: Vec<i64>,
}

/// Applies the pending domain migrations. Idempotent and safe to run concurrently.
pub async fn migrate(pool: &PgPool) -> Result<MigrateReport, StoreError> {
    let op = "migrate";
    tokio::time::timeout(MIGRATION_TIMEOUT, run(pool))
        .await
        .map_err(|_| StoreError::Timeout {
            op,
            after: MIGRATION_TIMEOUT,
        })?
}

async fn run(pool: &PgPool) -> Result<MigrateReport, StoreError> {
    let op = "migrate";
    let e = |e| StoreError::sqlx(op, e);
    let mut conn = pool.acquire().await.map_err(e)?;
    let mut tx = Connection::begin(&mut *conn).await.map_err(e)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .persistent(false)
        .execute(&mut *tx)
        .await
        .map_err(e)?;
    // The pool's server-side statement_timeout is sized for domain statements, not DDL; the
    // runner has its own (client-side) bound. LOCAL: gone at COMMIT, so pooler-safe.
    sqlx::raw_sql("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .map_err(e)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS insights_domain_migrations (
            version    bigint PRIMARY KEY,
            name       text        NOT NULL,
            checksum   text        NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(e)?;
    let applied: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT version, name, checksum FROM insights_domain_migrations")
            .persistent(false)
            .fetch_all(&mut *tx)
            .await
            .map_err(e)?;
    let mut report = MigrateReport::default();
    for m in MIGRATIONS {
        let checksum = checksum(m.sql);
        if let Some((_, name, stored)) = applied.iter().find(|(v, _, _)| *v == m.version) {
            if *stored != checksum {
                return Err(StoreError::MigrationChanged {
                    version: m.version,
                    name: name.clone(),
                    applied: stored.clone(),
                    embedded: checksum,
                });
            }
            continue;
        }
        sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(e)?;
        sqlx::query(
            "INSERT INTO insights_domain_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(&checksum)
        .persistent(false)
        .execute(&mut *tx)
        .await
        .map_err(e)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied domain migration"
        );
        report.applied.push(m.version);
    }
    tx.commit().await.map_err(e)?;
    Ok(report)
}

/// FNV-1a 64 of the text: stable across Rust versions, unlike `DefaultHasher`.
fn checksum(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_ascend_and_checksums_are_stable() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_ne!(checksum("a"), checksum("b"));
    }
}
