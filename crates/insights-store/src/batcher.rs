//! The group-commit loop that the conversation loader and the insight writer share: callers
//! send requests into a channel; one task collects them into batches and runs each batch as one
//! statement, with a bounded number of batches in flight.
//!
//! A batch slot is taken BEFORE collecting: while every slot is busy, requests pile up in the
//! channel and the next batch picks them all up at once, so batches grow exactly when the
//! database is the bottleneck and stay single requests when it is not.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// How requests are grouped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    /// Most requests per batch (0 counts as 1).
    pub max_batch: usize,
    /// How long a batch waits for more requests after its first; zero sends at once with
    /// whatever has already arrived.
    pub linger: Duration,
    /// Batches in flight at once (0 counts as 1).
    pub max_in_flight: usize,
}

/// Runs until every sender is dropped, then waits for the batches in flight. `batches` counts
/// the batches started; `process` runs one.
pub(crate) async fn run<T, F, Fut>(
    mut rx: mpsc::Receiver<T>,
    batching: Batching,
    batches: Arc<AtomicU64>,
    mut process: F,
) where
    T: Send + 'static,
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(batching.max_in_flight.max(1)));
    let mut running = JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let Some(batch) = collect(&mut rx, batching).await else {
            break;
        };
        batches.fetch_add(1, Ordering::AcqRel);
        let work = process(batch);
        running.spawn(async move {
            work.await;
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// The next batch: the first request (waiting for it), then whatever else has arrived, up to
/// `max_batch`, lingering for more only when `linger` is not zero. `None` once the channel is
/// closed and empty.
async fn collect<T>(rx: &mut mpsc::Receiver<T>, batching: Batching) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let max_batch = batching.max_batch.max(1);
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + batching.linger;
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(p) => {
                batch.push(p);
                continue;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        if batching.linger.is_zero() {
            break;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(p)) => batch.push(p),
            Ok(None) | Err(_) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn requests_waiting_for_a_busy_slot_go_out_as_one_batch() {
        let (tx, rx) = mpsc::channel(64);
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (release, released) = tokio::sync::watch::channel(false);
        let batches = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&sizes);
        let runner = tokio::spawn(run(
            rx,
            Batching {
                max_batch: 8,
                linger: Duration::ZERO,
                max_in_flight: 1,
            },
            Arc::clone(&batches),
            move |batch: Vec<u32>| {
                seen.lock().unwrap().push(batch.len());
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|r| *r).await;
                }
            },
        ));
        // The first request takes the only slot and holds it; ten more pile up meanwhile.
        tx.send(0).await.unwrap();
        tokio::task::yield_now().await;
        for n in 1..=10 {
            tx.send(n).await.unwrap();
        }
        let _ = release.send(true);
        drop(tx);
        runner.await.unwrap();
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 11, "{sizes:?}");
        assert_eq!(sizes, [1, 8, 2], "capped at max_batch, then the rest");
        assert_eq!(batches.load(Ordering::Acquire), 3);
    }
}
