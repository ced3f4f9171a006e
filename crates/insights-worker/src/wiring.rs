//! Building the long-lived pieces (pools, store, queue, LLM client) from `Settings`, with
//! one-line, secret-free errors. Shared by the runner, the admin commands and the demo.

use std::path::Path;
use std::sync::Arc;

use insights_core::{Profile, Settings};
use insights_llm::{LlmClient, LlmConfig};
use insights_queue::{Queue, QueueConfig};
use insights_store::pool::{self, PoolSettings};
use insights_store::statements::DomainStatements;
use insights_store::{Store, StoreOptions};
use sqlx::PgPool;

use crate::error::WorkerError;

/// A store error as the CLI prints it: configuration problems exit 2, the rest 1.
pub(crate) fn store_err(e: insights_store::StoreError) -> WorkerError {
    match e {
        insights_store::StoreError::Config(msg) => WorkerError::Config(msg),
        other => WorkerError::Runtime(other.to_string()),
    }
}

pub(crate) fn queue_err(e: insights_queue::QueueError) -> WorkerError {
    WorkerError::Runtime(e.to_string())
}

/// The app pool (`DATABASE_URL`), after proving the database answers.
pub(crate) async fn app_pool(settings: &Settings) -> Result<(PgPool, PoolSettings), WorkerError> {
    let ps = PoolSettings::app_from_settings(settings)?;
    let pool = pool::connect(&ps).await.map_err(store_err)?;
    Ok((pool, ps))
}

/// The queue pool (`QUEUE_DATABASE_URL`, else `DATABASE_URL`).
pub(crate) async fn queue_pool(settings: &Settings) -> Result<(PgPool, PoolSettings), WorkerError> {
    let ps = PoolSettings::queue_from_settings(settings)?;
    let pool = pool::connect(&ps).await.map_err(store_err)?;
    Ok((pool, ps))
}

/// The worker's database pools: one shared pool when the queue lives at the app's URL.
#[derive(Debug, Clone)]
pub struct Pools {
    /// For the store (`DATABASE_URL`).
    pub app: PgPool,
    pub app_settings: PoolSettings,
    /// For the queue: a clone of `app` when `shared`.
    pub queue: PgPool,
    pub queue_settings: PoolSettings,
    /// One pool serves both: at most `INSIGHTS_DB_POOL_MAX` backends instead of twice that.
    pub shared: bool,
}

impl Pools {
    /// The connections this process has open in its pools (each counted once).
    pub fn size(&self) -> u64 {
        if self.shared {
            u64::from(self.app.size())
        } else {
            u64::from(self.app.size()) + u64::from(self.queue.size())
        }
    }
}

/// The app pool and the queue pool. When `QUEUE_DATABASE_URL` is unset (or names the same
/// database in the same pooler mode) one pool of `INSIGHTS_DB_POOL_MAX` serves both: the
/// store's batched statements and the queue's fetch/complete statements are all short, so
/// they share connections well, and a worker never holds more backends than the setting says.
/// Each side keeps its own connection gate over the shared pool; during an outage that is at
/// most one probe per side, as with two pools.
pub async fn pools(settings: &Settings) -> Result<Pools, WorkerError> {
    let (app, app_settings) = app_pool(settings).await?;
    let queue_settings = PoolSettings::queue_from_settings(settings)?;
    let shared =
        queue_settings.url == app_settings.url && queue_settings.mode() == app_settings.mode();
    let queue = if shared {
        app.clone()
    } else {
        pool::connect(&queue_settings).await.map_err(store_err)?
    };
    Ok(Pools {
        app,
        app_settings,
        queue,
        queue_settings,
        shared,
    })
}

/// Proves the LISTEN URL (`DIRECT_DATABASE_URL`, when set) answers before a worker relies on
/// it: the listener only logs its failures and retries, so a certificate that does not verify
/// or a wrong CA file would otherwise go unnoticed while the worker falls back to polling.
pub(crate) async fn check_listen_url(settings: &Settings) -> Result<(), WorkerError> {
    if settings.direct_database_url.is_none() {
        return Ok(());
    }
    let ps = PoolSettings::migration_from_settings(settings)?;
    let opts = pool::connect_options(&ps).map_err(store_err)?;
    pool::probe(&ps, &opts).await.map_err(store_err)
}

/// Queue settings from the environment: attempts, call timeout, LISTEN over the direct URL.
pub fn queue_config(settings: &Settings) -> QueueConfig {
    QueueConfig {
        default_max_attempts: i32::try_from(settings.max_attempts).unwrap_or(i32::MAX),
        statement_timeout: settings.db_statement_timeout,
        max_job_age: settings.max_job_age,
        listen_url: settings
            .direct_database_url
            .as_ref()
            .map(|u| u.without_pooler_hint().expose().to_owned()),
        ..QueueConfig::default()
    }
}

pub(crate) async fn queue(settings: &Settings) -> Result<Queue, WorkerError> {
    let (pool, _) = queue_pool(settings).await?;
    Ok(Queue::new(pool, queue_config(settings)))
}

/// The profile at `path` (errors name the file, line and field; they exit 2), or the built-in
/// one.
pub fn load_profile(path: Option<&Path>) -> Result<Arc<Profile>, WorkerError> {
    let profile = match path {
        Some(path) => Profile::load(path),
        None => Profile::builtin(),
    };
    profile
        .map(Arc::new)
        .map_err(|e| WorkerError::Config(e.to_string()))
}

/// The store over `pool` running the profile's statements; `options` gives the rest.
pub fn store(pool: PgPool, profile: &Profile, options: StoreOptions) -> Store {
    Store::new(
        pool,
        StoreOptions {
            statements: DomainStatements::from_profile(profile.statements.as_ref()),
            ..options
        },
    )
}

pub(crate) fn llm_client(
    settings: &Settings,
    profile: Arc<Profile>,
) -> Result<LlmClient, WorkerError> {
    let base = settings.require_llm_base_url()?;
    let cfg = LlmConfig::from_settings(settings, base.as_str().trim_end_matches('/'));
    // The client's configuration errors name the variable at fault.
    LlmClient::with_profile(cfg, profile).map_err(|e| WorkerError::Config(e.to_string()))
}
