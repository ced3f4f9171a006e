//! The shapes every drain scenario shares, whichever queue runs it.

use std::time::Duration;

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
    /// Handler-completion rate of the last 10% over the first 10% (None when too few jobs).
    pub decay_ratio: Option<f64>,
}
