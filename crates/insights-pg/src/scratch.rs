//! Throwaway databases for tests and benchmarks (cargo feature `scratch`): created empty on a
//! server reached through an admin URL, dropped (`WITH (FORCE)`) when the value is dropped.

use std::time::Duration;

use rand::RngExt;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::url::replace_database;
use insights_core::secret::redact_url;

/// Bound on connecting to the server and on each of `CREATE DATABASE` and `DROP DATABASE`.
pub const SCRATCH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error("connecting to {server}: {source}")]
    Connect {
        /// Password redacted.
        server: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("creating database {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{what} did not finish within {}s", SCRATCH_TIMEOUT.as_secs())]
    Timeout { what: String },
}

/// A fresh, empty database named `<prefix><label>_<random>`, dropped with the value.
#[derive(Debug)]
pub struct ScratchDb {
    pub name: String,
    /// URL of the new database: the admin URL with its database replaced (direct, no pooler).
    pub url: String,
    admin_url: String,
}

impl ScratchDb {
    /// `admin_url` must be allowed to create and drop databases; the prefix makes leftovers
    /// recognisable.
    pub async fn create(admin_url: &str, prefix: &str, label: &str) -> Result<Self, ScratchError> {
        let suffix: u64 = rand::rng().random();
        let name = format!("{prefix}{label}_{suffix:x}");
        let server = redact_url(admin_url);
        let mut conn = bounded(format!("connecting to {server}"), async {
            PgConnection::connect(admin_url)
                .await
                .map_err(|source| ScratchError::Connect {
                    server: server.clone(),
                    source,
                })
        })
        .await?;
        bounded(format!("creating database {name}"), async {
            sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
                .execute(&mut conn)
                .await
                .map_err(|source| ScratchError::Create {
                    name: name.clone(),
                    source,
                })
        })
        .await?;
        let _ = tokio::time::timeout(SCRATCH_TIMEOUT, conn.close()).await;
        Ok(Self {
            url: replace_database(admin_url, &name),
            name,
            admin_url: admin_url.to_owned(),
        })
    }
}

async fn bounded<T>(
    what: String,
    fut: impl Future<Output = Result<T, ScratchError>>,
) -> Result<T, ScratchError> {
    tokio::time::timeout(SCRATCH_TIMEOUT, fut)
        .await
        .unwrap_or(Err(ScratchError::Timeout { what }))
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        // Drop cannot await, and may run on a runtime thread that must not block on that
        // runtime: the statement runs on a thread of its own with a runtime of its own.
        let admin_url = self.admin_url.clone();
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let _ = tokio::time::timeout(SCRATCH_TIMEOUT, async {
                    let mut conn = PgConnection::connect(&admin_url).await?;
                    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await?;
                    conn.close().await
                })
                .await;
            });
        });
        let _ = dropper.join();
    }
}
