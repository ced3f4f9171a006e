//! Pool construction for a direct Postgres URL or a transaction-mode pooler (pgbouncer,
//! Supavisor). Pooler mode is `INSIGHTS_DB_POOLER=transaction` or `?pgbouncer=true` in the URL;
//! the parameter is stripped before the URL reaches sqlx.
//!
//! Pooler mode differs in what is sent at start-up, not in the pool: `extra_float_digits` is
//! not sent (pgbouncer refuses it) and no server options are set. The statements themselves are
//! made pooler-safe by the callers (`.persistent(false)` inside a transaction).
//!
//! TLS is the URL's: `sslmode` and `sslrootcert` reach sqlx unchanged, in both modes and for
//! every pool; the CA file is checked before the first connection (see `tls.rs`).

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use insights_core::config::{DATABASE_URL, DIRECT_DATABASE_URL, QUEUE_DATABASE_URL};
use insights_core::{ConfigError, DatabaseUrl, Settings};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

pub use insights_core::PoolerMode;

use crate::defaults;
use insights_pg::{ErrorClass, classify};

use crate::error::StoreError;
use crate::tls;

/// Everything needed to build one pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Redacted in `Debug`.
    pub url: DatabaseUrl,
    /// The variable the URL came from (`DATABASE_URL`, ...), named in messages so a user with
    /// three URLs knows which one to fix.
    pub variable: Option<&'static str>,
    /// Explicit setting; the URL's `pgbouncer=true` also turns pooler mode on (see [`Self::mode`]).
    pub pooler: PoolerMode,
    pub max_connections: u32,
    /// Wait for a free pooled connection.
    pub acquire_timeout: Duration,
    /// Client-side bound on each store call; also the server-side `statement_timeout` on direct
    /// connections.
    pub statement_timeout: Duration,
    pub application_name: String,
}

impl PoolSettings {
    /// Defaults for everything but the URL.
    pub fn new(url: DatabaseUrl) -> Self {
        Self {
            url,
            variable: None,
            pooler: PoolerMode::Direct,
            max_connections: defaults::POOL_MAX,
            acquire_timeout: defaults::ACQUIRE_TIMEOUT,
            statement_timeout: defaults::CALL_TIMEOUT,
            application_name: defaults::APPLICATION_NAME.to_owned(),
        }
    }

    /// The app pool (`DATABASE_URL`).
    pub fn app_from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self::with_settings(
            settings.require_database_url()?.clone(),
            DATABASE_URL.name,
            settings.pooler,
            settings,
        ))
    }

    /// The queue pool (`QUEUE_DATABASE_URL`, else `DATABASE_URL`).
    pub fn queue_from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let variable = if settings.queue_database_url.is_some() {
            QUEUE_DATABASE_URL.name
        } else {
            DATABASE_URL.name
        };
        Ok(Self::with_settings(
            settings.require_queue_database_url()?.clone(),
            variable,
            settings.queue_pooler,
            settings,
        ))
    }

    /// The migration connection (`DIRECT_DATABASE_URL`, else `DATABASE_URL`). With a direct URL
    /// the pooler setting does not apply; the migration runner is pooler-safe either way.
    pub fn migration_from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let url = settings.require_migration_url()?.clone();
        let (variable, pooler) = if settings.direct_database_url.is_some() {
            (DIRECT_DATABASE_URL.name, PoolerMode::Direct)
        } else {
            (DATABASE_URL.name, settings.pooler)
        };
        let mut s = Self::with_settings(url, variable, pooler, settings);
        s.max_connections = 1;
        // DDL can legitimately run longer than a domain statement.
        s.statement_timeout = s.statement_timeout.max(Duration::from_secs(300));
        Ok(s)
    }

    fn with_settings(
        url: DatabaseUrl,
        variable: &'static str,
        pooler: PoolerMode,
        settings: &Settings,
    ) -> Self {
        Self {
            url,
            variable: Some(variable),
            pooler,
            max_connections: settings.db_pool_max,
            acquire_timeout: settings.db_acquire_timeout,
            statement_timeout: settings.db_statement_timeout,
            application_name: defaults::APPLICATION_NAME.to_owned(),
        }
    }

    /// The effective mode: the setting or the URL hint.
    pub fn mode(&self) -> PoolerMode {
        PoolerMode::resolve(self.pooler, &self.url)
    }

    /// The URL for messages: password redacted, `sslmode` and the rest kept, followed by the
    /// variable it came from.
    pub fn target(&self) -> String {
        match self.variable {
            Some(name) => format!("{} ({name})", self.url),
            None => self.url.to_string(),
        }
    }
}

/// Connect options for one connection in the effective mode. Fails on a malformed URL or a CA
/// file (`sslrootcert`) that cannot be read or holds no certificate.
pub fn connect_options(settings: &PoolSettings) -> Result<PgConnectOptions, StoreError> {
    let invalid = |reason: String| StoreError::Config(format!("{}: {reason}", settings.target()));
    let url = settings.url.without_pooler_hint();
    let mut opts = PgConnectOptions::from_str(url.expose())
        .map_err(|e| invalid(e.to_string()))?
        .application_name(&settings.application_name);
    if let Some(path) = tls::root_cert_file(url.expose()) {
        tls::check_root_cert(&path).map_err(invalid)?;
    }
    match settings.mode() {
        PoolerMode::Transaction => {
            opts = opts.extra_float_digits(None);
        }
        PoolerMode::Direct => {
            opts = opts.options([
                (
                    "statement_timeout",
                    settings.statement_timeout.as_millis().to_string(),
                ),
                (
                    "idle_in_transaction_session_timeout",
                    defaults::IDLE_IN_TRANSACTION_TIMEOUT
                        .as_millis()
                        .to_string(),
                ),
            ]);
        }
    }
    Ok(opts)
}

pub(crate) fn pool_options(settings: &PoolSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(defaults::POOL_IDLE_TIMEOUT)
        .max_lifetime(defaults::POOL_MAX_LIFETIME)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| -> BoxFuture<'_, Result<bool, sqlx::Error>> {
            Box::pin(async move {
                if meta.idle_for >= defaults::PING_IF_IDLE_FOR {
                    // A broken connection is dropped here instead of failing the caller's query.
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_release(|conn, _meta| -> BoxFuture<'_, Result<bool, sqlx::Error>> {
            Box::pin(async move {
                // A timed-out call drops its future and hands the connection back mid-protocol;
                // sqlx then pings it with no bound. Bounding the check here means a connection
                // that cannot answer is closed hard (an `Err` skips sqlx's own ping) instead of
                // holding its pool slot forever. A healthy connection answers in microseconds.
                match tokio::time::timeout(defaults::RELEASE_PING_TIMEOUT, conn.ping()).await {
                    Ok(Ok(())) => Ok(true),
                    Ok(Err(error)) => Err(error),
                    Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection did not answer its release check",
                    ))),
                }
            })
        })
}

/// A pool that connects on first use. Fails only on a malformed URL or CA file.
pub fn connect_lazy(settings: &PoolSettings) -> Result<PgPool, StoreError> {
    let opts = connect_options(settings)?;
    Ok(pool_options(settings).connect_lazy_with(opts))
}

/// A pool, after proving the database is reachable with one bare connection (a pool would only
/// report `PoolTimedOut`; the bare connection says why). The error is one line:
/// `cannot reach database at <redacted URL> (<variable>): <reason>`, a certificate that did not
/// verify named with what to change in the URL.
pub async fn connect(settings: &PoolSettings) -> Result<PgPool, StoreError> {
    let opts = connect_options(settings)?;
    probe(settings, &opts).await?;
    Ok(pool_options(settings).connect_lazy_with(opts))
}

/// Opens and closes one connection, bounded by the acquire timeout.
pub async fn probe(settings: &PoolSettings, opts: &PgConnectOptions) -> Result<(), StoreError> {
    let conn = connect_one(settings, opts).await?;
    let _ = tokio::time::timeout(settings.acquire_timeout, conn.close()).await;
    Ok(())
}

/// One connection that answered a query, bounded by the acquire timeout. The error is one
/// line: `cannot reach database at <redacted URL> (<variable>): <reason>`.
pub async fn connect_one(
    settings: &PoolSettings,
    opts: &PgConnectOptions,
) -> Result<PgConnection, StoreError> {
    let target = settings.target();
    let timeout = settings.acquire_timeout;
    // Connect and run one query: a pooler accepts the login even when Postgres behind it is
    // down, so only a query proves the database is reachable. Simple protocol: pooler-safe.
    let attempt = async {
        let mut conn = PgConnection::connect_with(opts).await?;
        match sqlx::raw_sql("SELECT 1").execute(&mut conn).await {
            Ok(_) => Ok(conn),
            Err(e) => {
                let _ = conn.close().await;
                Err(e)
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(StoreError::Connect {
            target,
            reason: format!("no answer within {}ms", timeout.as_millis()),
            class: ErrorClass::Connection,
        }),
        Ok(Err(e)) => Err(StoreError::Connect {
            target,
            reason: one_line(&tls::failure_reason(
                &e,
                tls::root_cert_file(settings.url.expose()).is_some(),
            )),
            class: classify(&e),
        }),
        Ok(Ok(conn)) => Ok(conn),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Closes the pool, bounded by `within`: with a blackholed connection `PgPool::close` waits
/// forever (it waits for every connection to be returned, and a blackholed one never is). Returns false when it gave up waiting.
pub async fn close(pool: &PgPool, within: Duration) -> bool {
    tokio::time::timeout(within, pool.close()).await.is_ok()
}
