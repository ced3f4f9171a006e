//! The one migration runner, for every schema in the workspace (the queue's, the domain's).
//!
//! A run is ONE transaction that first takes `pg_advisory_xact_lock` on the migrator's key: the
//! lock is released at COMMIT, so nothing outlives the transaction (safe behind a
//! transaction-mode pooler, unlike sqlx's session lock), and concurrent runs serialise (the
//! second sees the first's bookkeeping and applies nothing). Each applied migration is recorded
//! with the FNV-1a 64 checksum of its text; an applied migration whose text changed is an error
//! naming both checksums (fix forward with a new migration instead).
//!
//! Bookkeeping written by an earlier runner without checksums (a `version integer` table with
//! no `checksum` column) is adopted in place: the column is added and filled with the checksums
//! of the migrations this binary carries, and verified from then on. The version column keeps
//! its type, so a process of that earlier release that still runs its own migrator keeps
//! reading it.

use std::time::Duration;

use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use crate::classify::{ErrorClass, classify};

/// One migration: applied once, in ascending `version` order, as one simple-protocol batch.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// The checksum recorded when this migration is applied.
    pub fn checksum(&self) -> String {
        checksum(self.sql)
    }
}

/// A row of the bookkeeping table.
struct Applied {
    version: i64,
    name: String,
    /// `None`: applied by a runner that kept no checksums.
    checksum: Option<String>,
}

/// A schema's migrations and where their bookkeeping lives.
#[derive(Debug, Clone, Copy)]
pub struct Migrator {
    /// Created (if missing) before the bookkeeping table, when the table lives in it.
    pub schema: Option<&'static str>,
    /// The bookkeeping table, schema-qualified when it has a schema (a trusted constant: it is
    /// spliced into SQL).
    pub table: &'static str,
    /// The `pg_advisory_xact_lock` key; one per bookkeeping table.
    pub lock_key: i64,
    /// Bound on the whole run (DDL may wait for locks held by running statements).
    pub timeout: Duration,
    /// In ascending version order.
    pub migrations: &'static [Migration],
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrateReport {
    /// Versions applied by this run (empty when the schema was up to date).
    pub applied: Vec<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migrating {table}: database error: {source}")]
    Database {
        table: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating {table}: not finished within {}s", after.as_secs())]
    Timeout {
        table: &'static str,
        after: Duration,
    },
    #[error(
        "migration {version} ({name}) was changed after it was applied (checksum {applied} in the database, {embedded} in this binary)"
    )]
    Changed {
        version: i64,
        name: String,
        applied: String,
        embedded: String,
    },
    #[error("migrations of {table} out of order: version {version} does not follow {previous}")]
    OutOfOrder {
        table: &'static str,
        version: i64,
        previous: i64,
    },
}

impl MigrateError {
    /// What retrying the run can achieve.
    pub fn class(&self) -> ErrorClass {
        match self {
            MigrateError::Database { source, .. } => classify(source),
            MigrateError::Timeout { .. } => ErrorClass::Connection,
            MigrateError::Changed { .. } | MigrateError::OutOfOrder { .. } => ErrorClass::Permanent,
        }
    }
}

impl Migrator {
    /// Applies the pending migrations. Idempotent; concurrent runs wait for each other.
    pub async fn run(&self, pool: &PgPool) -> Result<MigrateReport, MigrateError> {
        self.check_order()?;
        tokio::time::timeout(self.timeout, self.run_locked(pool))
            .await
            .map_err(|_| MigrateError::Timeout {
                table: self.table,
                after: self.timeout,
            })?
    }

    fn check_order(&self) -> Result<(), MigrateError> {
        for w in self.migrations.windows(2) {
            if w[1].version <= w[0].version {
                return Err(MigrateError::OutOfOrder {
                    table: self.table,
                    version: w[1].version,
                    previous: w[0].version,
                });
            }
        }
        Ok(())
    }

    fn db(&self) -> impl Fn(sqlx::Error) -> MigrateError + '_ {
        move |source| MigrateError::Database {
            table: self.table,
            source,
        }
    }

    async fn run_locked(&self, pool: &PgPool) -> Result<MigrateReport, MigrateError> {
        let mut tx = pool.begin().await.map_err(self.db())?;
        self.prepare(&mut tx).await?;
        let applied = self.applied(&mut tx).await?;
        let mut report = MigrateReport::default();
        for m in self.migrations {
            match applied.iter().find(|a| a.version == m.version) {
                Some(a) => self.verify(&mut tx, m, a).await?,
                None => {
                    self.apply(&mut tx, m).await?;
                    report.applied.push(m.version);
                }
            }
        }
        tx.commit().await.map_err(self.db())?;
        Ok(report)
    }

    /// Takes the lock and makes sure the bookkeeping exists, with checksums.
    async fn prepare(&self, tx: &mut Transaction<'static, Postgres>) -> Result<(), MigrateError> {
        let e = self.db();
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(self.lock_key)
            .persistent(false)
            .execute(&mut **tx)
            .await
            .map_err(&e)?;
        // A role's or pool's statement_timeout is sized for ordinary statements, not DDL; the
        // run has its own client-side bound. LOCAL: gone at COMMIT, so pooler-safe.
        sqlx::raw_sql("SET LOCAL statement_timeout = 0")
            .execute(&mut **tx)
            .await
            .map_err(&e)?;
        if let Some(schema) = self.schema {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&mut **tx)
            .await
            .map_err(&e)?;
        }
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {} (
                version    bigint      PRIMARY KEY,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
            self.table
        )))
        .execute(&mut **tx)
        .await
        .map_err(&e)?;
        self.adopt_unchecksummed(tx).await
    }

    async fn applied(
        &self,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<Vec<Applied>, MigrateError> {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT version::bigint, name, checksum FROM {}",
            self.table
        )))
        .persistent(false)
        .fetch_all(&mut **tx)
        .await
        .map_err(self.db())?;
        Ok(rows
            .into_iter()
            .map(|(version, name, checksum)| Applied {
                version,
                name,
                checksum,
            })
            .collect())
    }

    /// An applied migration's text must be the one this binary carries.
    async fn verify(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        m: &Migration,
        applied: &Applied,
    ) -> Result<(), MigrateError> {
        let embedded = m.checksum();
        match &applied.checksum {
            // Applied by a runner that kept no checksums: nothing recorded the text it applied,
            // so this binary's text becomes the reference from now on.
            None => self.record_checksum(tx, m.version, &embedded).await,
            Some(stored) if *stored != embedded => Err(MigrateError::Changed {
                version: m.version,
                name: applied.name.clone(),
                applied: stored.clone(),
                embedded,
            }),
            Some(_) => Ok(()),
        }
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        m: &Migration,
    ) -> Result<(), MigrateError> {
        let e = self.db();
        sqlx::raw_sql(AssertSqlSafe(m.sql))
            .execute(&mut **tx)
            .await
            .map_err(&e)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (version, name, checksum) VALUES ($1, $2, $3)",
            self.table
        )))
        .bind(m.version)
        .bind(m.name)
        .bind(m.checksum())
        .persistent(false)
        .execute(&mut **tx)
        .await
        .map_err(&e)?;
        tracing::info!(
            table = self.table,
            version = m.version,
            name = m.name,
            "applied migration"
        );
        Ok(())
    }

    async fn record_checksum(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        version: i64,
        checksum: &str,
    ) -> Result<(), MigrateError> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET checksum = $2 WHERE version = $1",
            self.table
        )))
        .bind(version)
        .bind(checksum)
        .persistent(false)
        .execute(&mut **tx)
        .await
        .map_err(self.db())?;
        Ok(())
    }

    /// Bookkeeping from a runner that kept no checksums gains the column; the run then records
    /// this binary's checksums for the rows that lack one (in the same run).
    async fn adopt_unchecksummed(
        &self,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(), MigrateError> {
        let e = self.db();
        let has_checksum: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute
                             WHERE attrelid = to_regclass($1) AND attname = 'checksum'
                               AND NOT attisdropped)",
        )
        .bind(self.table)
        .persistent(false)
        .fetch_one(&mut **tx)
        .await
        .map_err(&e)?;
        if has_checksum {
            return Ok(());
        }
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE {} ADD COLUMN checksum text",
            self.table
        )))
        .execute(&mut **tx)
        .await
        .map_err(&e)?;
        tracing::info!(
            table = self.table,
            "bookkeeping gains checksums: the applied migrations' are recorded on this run"
        );
        Ok(())
    }
}

/// FNV-1a 64 of the text as 16 hex digits: stable across Rust versions and platforms, unlike
/// `DefaultHasher`. Databases migrated by earlier releases hold these exact values.
pub fn checksum(sql: &str) -> String {
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
    fn checksums_are_fnv1a_64() {
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_eq!(checksum("a"), "af63dc4c8601ec8c");
        assert_ne!(checksum("a"), checksum("b"));
    }

    #[test]
    fn out_of_order_migrations_are_refused_before_connecting() {
        const M: &[Migration] = &[
            Migration {
                version: 2,
                name: "b",
                sql: "",
            },
            Migration {
                version: 1,
                name: "a",
                sql: "",
            },
        ];
        let m = Migrator {
            schema: None,
            table: "t",
            lock_key: 1,
            timeout: Duration::from_secs(1),
            migrations: M,
        };
        assert!(matches!(
            m.check_order(),
            Err(MigrateError::OutOfOrder {
                version: 1,
                previous: 2,
                ..
            })
        ));
    }
}
