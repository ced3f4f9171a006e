//! [`FetchControl`]: lets the application (its circuit breaker) stop a worker from fetching
//! without stopping the worker.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Pause and resume fetching of one worker backend. Cloning shares the switch. Jobs already
/// fetched keep running; leases keep being extended.
#[derive(Debug, Clone, Default)]
pub struct FetchControl {
    inner: Arc<ControlInner>,
}

#[derive(Debug, Default)]
struct ControlInner {
    paused_until: Mutex<Option<Instant>>,
    changed: Notify,
}

impl FetchControl {
    /// Stops fetching for `duration` (replacing any earlier pause).
    pub fn pause_for(&self, duration: Duration) {
        if let Ok(mut p) = self.inner.paused_until.lock() {
            *p = Instant::now().checked_add(duration);
        }
        self.inner.changed.notify_one();
    }

    /// Fetches again at once.
    pub fn resume(&self) {
        if let Ok(mut p) = self.inner.paused_until.lock() {
            *p = None;
        }
        self.inner.changed.notify_one();
    }

    pub fn is_paused(&self) -> bool {
        self.paused_remaining().is_some()
    }

    /// Time left in the current pause, if any.
    pub fn paused_remaining(&self) -> Option<Duration> {
        let p = self.inner.paused_until.lock().ok()?;
        let until = (*p)?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// Completes after the next (or a missed, not yet observed) pause/resume. One permit is
    /// kept, so a change between the fetch loop's check and its wait is not lost.
    pub(crate) async fn changed(&self) {
        self.inner.changed.notified().await;
    }
}
