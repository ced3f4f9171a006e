//! Shutdown: when a process stops and how its background tasks learn of it.
//!
//! - [`shutdown_signal`]: ctrl-c or SIGTERM, for processes without a worker (dashboard, mock LLM).
//! - [`stop_signal`]: what ends a worker run: ctrl-c, SIGTERM, the embedder's cancellation
//!   token, or (with `--exit-when-idle`) a queue with nothing left to do.
//! - [`StopSwitch`]: one switch per run that the HTTP server, the summaries and the sampler
//!   watch, flipped once the worker has stopped.

use std::future::Future;

use insights_core::INSIGHTS_QUEUE;
use insights_queue::Queue;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::defaults::IDLE_POLL_INTERVAL;

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm() => {}
    }
}

/// Resolves on ctrl-c, SIGTERM, the embedder's stop token, or (with a queue) once the queue is
/// idle. The worker's `Monitor` then lets in-flight jobs finish.
pub(crate) async fn stop_signal(
    idle_queue: Option<Queue>,
    stop: Option<CancellationToken>,
) -> std::io::Result<()> {
    let idle = async move {
        match idle_queue {
            Some(q) => wait_idle(&q).await,
            None => std::future::pending::<()>().await,
        }
    };
    let stopped = async move {
        match stop {
            Some(t) => t.cancelled().await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = stopped => {
            tracing::info!("stop requested: finishing in-flight jobs");
            Ok(())
        }
        r = tokio::signal::ctrl_c() => {
            tracing::info!("interrupt: finishing in-flight jobs");
            r
        }
        () = sigterm() => {
            tracing::info!("SIGTERM: finishing in-flight jobs");
            Ok(())
        }
        () = idle => {
            tracing::info!("queue idle: stopping");
            Ok(())
        }
    }
}

#[cfg(unix)]
async fn sigterm() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
async fn sigterm() {
    std::future::pending::<()>().await;
}

/// Polls the queue counts until nothing is available, scheduled, retryable or running. Errors
/// (a database outage) only delay the answer.
async fn wait_idle(queue: &Queue) {
    loop {
        match queue.counts(INSIGHTS_QUEUE).await {
            Ok(c) if c.available + c.scheduled + c.retryable + c.running == 0 => return,
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "idle check failed; will retry"),
        }
        tokio::time::sleep(IDLE_POLL_INTERVAL).await;
    }
}

/// Stops the background tasks of one run. Every task holds a future from [`Self::stopped`];
/// [`Self::stop`] resolves them all (dropping the switch does too, so a task cannot outlive
/// the run that started it).
pub(crate) struct StopSwitch {
    tx: watch::Sender<bool>,
}

impl StopSwitch {
    pub(crate) fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Self { tx }
    }

    /// Resolves once the switch is flipped or dropped.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            // An error means the switch is gone: stop as well.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    pub(crate) fn stop(&self) {
        self.tx.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn stopped_waits_for_the_switch_and_resolves_when_it_is_dropped() {
        let switch = StopSwitch::new();
        let before = switch.stopped();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), switch.stopped())
                .await
                .is_err(),
            "resolved before the switch was flipped"
        );
        switch.stop();
        tokio::time::timeout(Duration::from_secs(1), before)
            .await
            .expect("a waiter taken before the stop resolves");
        tokio::time::timeout(Duration::from_secs(1), switch.stopped())
            .await
            .expect("a waiter taken after the stop resolves at once");

        let dropped = StopSwitch::new();
        let waiter = dropped.stopped();
        drop(dropped);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("dropping the switch stops its waiters");
    }
}
