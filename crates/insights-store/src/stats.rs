//! Connection economy: how long the store keeps pooled connections checked out. The demo and
//! benchmark print the mean hold per job; tests assert nothing is checked out while the LLM
//! is being waited on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A snapshot of [`crate::Store::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Store calls that checked out a connection (each is one transaction).
    pub transactions: u64,
    /// Total time connections were checked out by the store (acquire wait excluded).
    pub total_hold: Duration,
    /// Connections checked out by the store right now.
    pub checked_out_now: u64,
    /// Highest `checked_out_now` seen.
    pub peak_checked_out: u64,
}

impl StoreStats {
    /// Mean hold per transaction.
    pub fn mean_hold(&self) -> Duration {
        if self.transactions == 0 {
            Duration::ZERO
        } else {
            self.total_hold / u32::try_from(self.transactions).unwrap_or(u32::MAX)
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct StatsCell {
    transactions: AtomicU64,
    hold_nanos: AtomicU64,
    checked_out: AtomicU64,
    peak: AtomicU64,
}

impl StatsCell {
    pub(crate) fn checkout(self: &Arc<Self>) -> Checkout {
        let now = self.checked_out.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
        Checkout {
            cell: Arc::clone(self),
            since: Instant::now(),
        }
    }

    pub(crate) fn snapshot(&self) -> StoreStats {
        StoreStats {
            transactions: self.transactions.load(Ordering::Acquire),
            total_hold: Duration::from_nanos(self.hold_nanos.load(Ordering::Acquire)),
            checked_out_now: self.checked_out.load(Ordering::Acquire),
            peak_checked_out: self.peak.load(Ordering::Acquire),
        }
    }
}

/// Held for as long as a connection is checked out; records the hold when dropped (also when a
/// call is cancelled by its timeout).
pub(crate) struct Checkout {
    cell: Arc<StatsCell>,
    since: Instant,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let held = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.cell.hold_nanos.fetch_add(held, Ordering::AcqRel);
        self.cell.transactions.fetch_add(1, Ordering::AcqRel);
        self.cell.checked_out.fetch_sub(1, Ordering::AcqRel);
    }
}
