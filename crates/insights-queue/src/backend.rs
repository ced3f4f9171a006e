//! [`QueueBackend`]: the apalis-core 1.0 `Backend` a worker pulls jobs from.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use crate::config::BackendOptions;
use crate::control::FetchControl;
use crate::driver::{self, Driver, Shared};
use crate::error::QueueError;
use crate::layer::QueueLayer;
use crate::outcome::JobLease;
use crate::queue::Queue;
use crate::statements::{Completion, FetchedJob};
use crate::stats::WorkerStats;

/// A worker's source of jobs from one queue, yielding `Task<T>`.
///
/// Build one per worker (a `Monitor` factory builds a fresh one on restart):
/// `WorkerBuilder::new(name).backend(queue.worker_backend::<T>("q", opts)).concurrency(n)...`.
/// It never returns an error to apalis: database trouble is logged and retried with backoff.
pub struct QueueBackend<T> {
    shared: Arc<Shared>,
    options: BackendOptions,
    driver: Option<Driver>,
    closing: Option<JoinHandle<()>>,
    _payload: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for QueueBackend<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBackend")
            .field("queue", &self.shared.queue_name)
            .field("worker_id", &self.shared.worker_id)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// A backend for one worker on `queue`.
    pub fn worker_backend<T>(&self, queue: &str, options: BackendOptions) -> QueueBackend<T>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let shared = Arc::new(Shared::new(
            self.clone(),
            queue,
            options.concurrency,
            options.run_rescuer,
        ));
        QueueBackend {
            shared,
            options,
            driver: None,
            closing: None,
            _payload: PhantomData,
        }
    }
}

impl<T> QueueBackend<T> {
    /// The switch the worker's circuit breaker uses to stop and restart fetching.
    pub fn fetch_control(&self) -> FetchControl {
        self.shared.control.clone()
    }

    /// Counters of this backend (fetches, completions, database errors, rescues).
    pub fn stats(&self) -> WorkerStats {
        self.shared.stats.clone()
    }

    /// Identifier written to `locked_by` of the jobs this backend leases.
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    fn ensure_started(&mut self, worker: &WorkerContext) {
        if self.driver.is_none() {
            self.driver = Some(Driver::start(&self.shared, worker));
        }
    }
}

impl<T> Drop for QueueBackend<T> {
    fn drop(&mut self) {
        // A backend dropped without a graceful close leaves its leases to the rescuer.
        self.shared.stop_fetch.cancel();
        self.shared.stop_all.cancel();
        if let Some(d) = &self.driver {
            d.abort();
        }
    }
}

fn build_task<T: DeserializeOwned>(
    job: &FetchedJob,
    queue: &str,
) -> Result<Task<T>, serde_json::Error> {
    let args: T = serde_json::from_str(&job.payload)?;
    let lease = JobLease {
        id: job.id,
        token: job.token,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        created_at: job.created_at,
    };
    // apalis counts the attempt itself when the task starts, so hand it the previous count.
    let prev_attempts = usize::try_from(job.attempt.saturating_sub(1)).unwrap_or(0);
    let mut builder = TaskBuilder::new(args)
        .task_id(TaskId::from_int(u64::try_from(job.id).unwrap_or(0)))
        .attempt(prev_attempts)
        .max_attempts(usize::try_from(job.max_attempts).unwrap_or(1))
        .queue(apalis_core::backend::queue::Queue::from(queue))
        .run_at_timestamp(u64::try_from(job.run_at.timestamp()).unwrap_or(0))
        .data(lease);
    if let Some(key) = &job.dedupe_key {
        builder = builder.idempotency_key(key);
    }
    Ok(builder.build())
}

impl<T> Backend for QueueBackend<T>
where
    T: DeserializeOwned + Send + 'static,
{
    type Task = Task<T>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.ensure_started(worker);
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.ensure_started(worker);
        loop {
            let Some(job) = self.shared.pop_buffered() else {
                self.shared.set_waker(cx.waker());
                // A fetch may have landed between the pop and the waker registration.
                match self.shared.pop_buffered() {
                    Some(job) => {
                        if let Some(task) = self.decode(job) {
                            return Poll::Ready(Some(Ok(task)));
                        }
                        continue;
                    }
                    None => return Poll::Pending,
                }
            };
            if let Some(task) = self.decode(job) {
                return Poll::Ready(Some(Ok(task)));
            }
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        if self.driver.is_none() {
            return Poll::Ready(Ok(()));
        }
        let handle = self
            .closing
            .get_or_insert_with(|| tokio::spawn(driver::close(self.shared.clone())));
        match Pin::new(handle).poll(cx) {
            Poll::Ready(res) => {
                if let Err(e) = res {
                    tracing::warn!(error = %e, "queue backend close task failed");
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: DeserializeOwned> QueueBackend<T> {
    /// Decodes a fetched job; a payload that does not decode is discarded with the decode error
    /// (retrying cannot fix it) and never reaches the handler.
    fn decode(&self, job: FetchedJob) -> Option<Task<T>> {
        match build_task::<T>(&job, &self.shared.queue_name) {
            Ok(task) => Some(task),
            Err(e) => {
                tracing::warn!(job_id = job.id, error = %e, "discarding job whose payload does not decode");
                self.shared.complete(Completion {
                    id: job.id,
                    token: job.token,
                    state: "discarded",
                    delay: std::time::Duration::ZERO,
                    error: Some(format!(
                        "payload does not decode as {}: {e}",
                        std::any::type_name::<T>()
                    )),
                    refund: false,
                });
                self.shared.release_slot();
                None
            }
        }
    }
}

impl<T> BackendConfig for QueueBackend<T>
where
    T: DeserializeOwned + Send + 'static,
{
    type Args = T;
    type Id = i64;
    type Kind = Ephemeral;
    type Config = BackendOptions;
    type Layer = QueueLayer;

    fn config(&self) -> &Self::Config {
        &self.options
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        QueueLayer::new(self.shared.clone())
    }
}
