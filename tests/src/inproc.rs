//! The worker in process, built like `insights work` builds it (its pools and queue from the
//! same settings), so a test can read the store's connection statistics and the
//! worker's metrics while it runs.

use std::time::Duration;

use anyhow::Context;
use insights_core::Settings;
use insights_llm::{LlmClient, LlmConfig};
use insights_queue::Queue;
use insights_store::{Store, StoreOptions};
use insights_worker::WorkerError;
use insights_worker::metrics::Metrics;
use insights_worker::runner::{RunOptions, WorkSummary, WorkerParts, run_worker_with};
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
        // The pools and queue exactly as `insights work` builds them (one shared pool when the
        // queue lives in the app database).
        let pools = insights_worker::pools(settings)
            .await
            .map_err(|e| anyhow::anyhow!("pools: {e}"))?;
        let store = Store::new(
            pools.app.clone(),
            StoreOptions::for_pool(&pools.app_settings),
        );
        let queue = Queue::new(pools.queue.clone(), insights_worker::queue_config(settings));
        let llm = LlmClient::new(llm).map_err(|e| anyhow::anyhow!("LLM client: {e}"))?;
        let mut options = RunOptions::from_settings(settings)?;
        options.exit_when_idle = exit_when_idle;
        options.http_bind = None;
        let metrics = Metrics::new();
        let sampler = insights_worker::runner::pools_sampler(&pools);
        let task = tokio::spawn(run_worker_with(WorkerParts {
            store: store.clone(),
            queue: queue.clone(),
            llm,
            metrics: metrics.clone(),
            options,
            backend_sampler: Some(sampler),
            stop: None,
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
