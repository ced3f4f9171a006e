//! Building the long-lived pieces (pools, store, queue, LLM client) from `Settings`, with
//! one-line, secret-free errors. Shared by the runner, the admin commands and the demo.

use insights_core::Settings;
use insights_llm::{LlmClient, LlmConfig};
use insights_queue::{Queue, QueueConfig};
use insights_store::pool::{self, PoolSettings};
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

/// Queue settings from the environment: attempts, call timeout, LISTEN over the direct URL.
pub(crate) fn queue_config(settings: &Settings) -> QueueConfig {
    QueueConfig {
        default_max_attempts: i32::try_from(settings.max_attempts).unwrap_or(i32::MAX),
        statement_timeout: settings.db_statement_timeout,
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

pub(crate) fn llm_client(settings: &Settings) -> Result<LlmClient, WorkerError> {
    let base = settings.require_llm_base_url()?;
    let cfg = LlmConfig::from_settings(settings, base.as_str().trim_end_matches('/'));
    LlmClient::new(cfg).map_err(|e| WorkerError::Config(format!("INSIGHTS_LLM_BASE_URL: {e}")))
}
