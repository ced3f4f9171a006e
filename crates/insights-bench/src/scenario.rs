//! The shapes every drain scenario shares, whichever queue runs it.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data};

use crate::measure::Progress;

/// What to drain: how many jobs, how long each handler works, how many run at once.
#[derive(Debug, Clone, Copy)]
pub struct DrainSpec {
    pub jobs: usize,
    pub work: Duration,
    pub concurrency: usize,
}

/// What a drain measured.
#[derive(Debug, Clone, Copy)]
pub struct DrainOutcome {
    /// Jobs over the span from the first handler start to the last completion seen durable.
    pub jobs_per_s: f64,
    /// Most client backends on the bench database at any 20 ms sample during the drain.
    pub peak_backends: i64,
    /// When the peak was first seen, ms after the sampler started (just before the worker).
    pub peak_backends_at_ms: u64,
    /// Handler-completion rate of the last 10% over the first 10% (None when too few jobs).
    pub decay_ratio: Option<f64>,
    /// Diagnostic: database transactions per job during the drain (fetches, completions,
    /// heartbeats, the bench's own tail polls), from `pg_stat_database`.
    pub transactions_per_job: Option<f64>,
}

/// What every bench handler gets: how long to "work" and where to record progress.
#[derive(Debug, Clone)]
pub struct HandlerSpec {
    pub work: Duration,
    pub progress: Arc<Progress>,
}

/// The one handler both queues run: record the start, sleep `work` (if any), record the end.
pub async fn handler(_job: u64, spec: Data<HandlerSpec>) -> Result<(), BoxDynError> {
    spec.progress.started();
    if !spec.work.is_zero() {
        tokio::time::sleep(spec.work).await;
    }
    spec.progress.finished();
    Ok(())
}
