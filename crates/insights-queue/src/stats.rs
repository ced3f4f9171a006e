//! Counters of one worker backend, for the worker's metrics and for tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shared counters; clone freely.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    fetched: AtomicU64,
    completions_written: AtomicU64,
    completions_fenced_out: AtomicU64,
    db_errors: AtomicU64,
    rescued: AtomicU64,
}

/// A point-in-time copy of [`WorkerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStatsSnapshot {
    /// Jobs leased by fetches.
    pub fetched: u64,
    /// Completions applied to their rows.
    pub completions_written: u64,
    /// Completions skipped because the lease had been lost (rescued, cancelled).
    pub completions_fenced_out: u64,
    /// Failed database calls of the fetch loop, heartbeat, completer, rescuer, listener.
    pub db_errors: u64,
    /// Expired leases this worker's rescuer returned.
    pub rescued: u64,
}

impl WorkerStats {
    pub fn snapshot(&self) -> WorkerStatsSnapshot {
        let i = &self.inner;
        WorkerStatsSnapshot {
            fetched: i.fetched.load(Ordering::Relaxed),
            completions_written: i.completions_written.load(Ordering::Relaxed),
            completions_fenced_out: i.completions_fenced_out.load(Ordering::Relaxed),
            db_errors: i.db_errors.load(Ordering::Relaxed),
            rescued: i.rescued.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add_fetched(&self, n: u64) {
        self.inner.fetched.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_completions(&self, written: u64, fenced_out: u64) {
        self.inner
            .completions_written
            .fetch_add(written, Ordering::Relaxed);
        self.inner
            .completions_fenced_out
            .fetch_add(fenced_out, Ordering::Relaxed);
    }
    pub(crate) fn add_db_error(&self) {
        self.inner.db_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_rescued(&self, n: u64) {
        self.inner.rescued.fetch_add(n, Ordering::Relaxed);
    }
}
