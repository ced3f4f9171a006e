//! The backend's middleware: it sees every handler result (including panics turned into errors
//! by `catch_panic` and timeouts) and turns it into a completion for the batched writer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use tower::{Layer, Service};

use crate::driver::Shared;
use crate::outcome::{JobLease, completion_for};

/// `BackendConfig::Layer` of [`crate::QueueBackend`].
#[derive(Clone)]
pub struct QueueLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QueueLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueLayer")
            .field("worker_id", &self.shared.worker_id)
            .finish()
    }
}

impl QueueLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl<S> Layer<S> for QueueLayer {
    type Service = QueueService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        QueueService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Service produced by [`QueueLayer`].
#[derive(Clone)]
pub struct QueueService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for QueueService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueService").finish_non_exhaustive()
    }
}

/// Frees the slot even if the job's future is dropped before it finishes (forced shutdown).
/// Such a job also stops being heartbeated, so its lease lapses and the rescuer returns it.
struct SlotGuard {
    shared: Arc<Shared>,
    lease: JobLease,
    reported: bool,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if !self.reported {
            self.shared.forget_lease(self.lease.id, self.lease.token);
        }
        self.shared.release_slot();
    }
}

impl<S, T> Service<Task<T>> for QueueService<S>
where
    S: Service<Task<T>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxDynError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<T>) -> Self::Future {
        let lease = task.data().get::<JobLease>().cloned();
        let fut = self.inner.call(task);
        let shared = self.shared.clone();
        Box::pin(async move {
            let mut guard = lease.map(|lease| SlotGuard {
                shared: shared.clone(),
                lease,
                reported: false,
            });
            let res = fut.await.map_err(Into::into);
            if let Some(g) = guard.as_mut() {
                let completion = completion_for(&g.lease, &res, &shared.queue.inner.config);
                shared.complete(completion);
                g.reported = true;
            }
            drop(guard);
            res
        })
    }
}
