//! The worker in process, built like `insights work` builds it (separate app and queue pools
//! from the same settings), so a test can read the store's connection statistics and the
//! worker's metrics while it runs.

use std::time::Duration;

use anyhow::Context;
use insights_core::Settings;
use insights_llm::{LlmClient, LlmConfig};
use insights_queue::{Queue, QueueConfig};
use insights_store::{PoolSettings, Store, StoreOptions};
use insights_worker::WorkerError;
use insights_worker::metrics::Metrics;
use insights_worker::runner::{WorkSummary, WorkerOptions, WorkerParts, run_worker_with};
use tokio::task::JoinHandle;

/// A worker running in a task of the test's runtime.
pub struct InProcessWorker {
    pub store: Store,
    pub queue: Queue,
    pub metrics: Metrics,
    task: JoinHandle<Result<WorkSummary, WorkerError>>,
}

impl std::fmt::Debug for InProcessWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessWorker").finish_non_exhaustive()
    }
}

impl InProcessWorker {
    /// Starts a worker from `settings` (concurrency, pool sizes, URLs) with the LLM client
    /// `llm` (`LlmConfig::from_settings(&settings, base)` unless a test tunes it). With
    /// `exit_when_idle` it ends once the queue has nothing left; otherwise only [`Self::abort`]
    /// ends it (a SIGTERM would reach the whole test process).
    pub async fn start(
        settings: &Settings,
        llm: LlmConfig,
        exit_when_idle: bool,
    ) -> anyhow::Result<Self> {
        let app_ps = PoolSettings::app_from_settings(settings)?;
        let queue_ps = PoolSettings::queue_from_settings(settings)?;
        let app_pool = insights_store::connect(&app_ps)
            .await
            .map_err(|e| anyhow::anyhow!("app pool: {e}"))?;
        let queue_pool = insights_store::connect(&queue_ps)
            .await
            .map_err(|e| anyhow::anyhow!("queue pool: {e}"))?;
        let store = Store::new(app_pool, StoreOptions::for_pool(&app_ps));
        // As `insights work` configures its queue (insights-worker's wiring).
        let queue = Queue::new(
            queue_pool,
            QueueConfig {
                default_max_attempts: i32::try_from(settings.max_attempts).unwrap_or(i32::MAX),
                statement_timeout: settings.db_statement_timeout,
                ..QueueConfig::default()
            },
        );
        let llm = LlmClient::new(llm).map_err(|e| anyhow::anyhow!("LLM client: {e}"))?;
        let mut options = WorkerOptions::from_settings(settings)?;
        options.exit_when_idle = exit_when_idle;
        options.http_bind = None;
        let metrics = Metrics::new();
        let sampler =
            insights_worker::runner::pool_size_sampler(store.pool().clone(), queue.pool().clone());
        let task = tokio::spawn(run_worker_with(WorkerParts {
            store: store.clone(),
            queue: queue.clone(),
            llm,
            metrics: metrics.clone(),
            options,
            backend_sampler: Some(sampler),
        }));
        Ok(Self {
            store,
            queue,
            metrics,
            task,
        })
    }

    /// Waits for a worker started with `exit_when_idle` to finish, at most `within`.
    pub async fn join(self, within: Duration) -> anyhow::Result<WorkSummary> {
        let mut task = self.task;
        match tokio::time::timeout(within, &mut task).await {
            Ok(joined) => joined
                .context("worker task panicked")?
                .map_err(|e| anyhow::anyhow!("worker failed: {e}")),
            Err(_) => {
                task.abort();
                anyhow::bail!(
                    "worker did not finish within {within:?}; metrics: {:?}",
                    self.metrics.snapshot()
                )
            }
        }
    }

    /// Stops the worker abruptly (its leased jobs stay `running` until their leases expire).
    pub fn abort(self) {
        self.task.abort();
    }
}
