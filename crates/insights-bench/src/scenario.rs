//! The shapes every drain scenario shares, whichever queue runs it.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data};

use crate::measure::{HandlerTiming, Progress};

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
    /// Diagnostic: handler duration, idle slot time per job, tail.
    pub timing: HandlerTiming,
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

/// The one handler both queues run: record the start, work for `work` (if any), record the end.
///
/// The work is a sleep on a blocking-pool thread, because a Tokio sleep lasts until the next
/// millisecond tick and then until the runtime wakes: 201.2 ms on average for 200 ms, which
/// alone would cost the 200 ms scenario 0.6% of its ideal rate. A thread sleep overshoots by
/// about 0.1 ms. The measured mean is reported with the scenario.
pub async fn handler(_job: u64, spec: Data<HandlerSpec>) -> Result<(), BoxDynError> {
    let started = spec.progress.started();
    if !spec.work.is_zero() {
        let work = spec.work;
        tokio::task::spawn_blocking(move || std::thread::sleep(work)).await?;
    }
    spec.progress.finished(started);
    Ok(())
}
