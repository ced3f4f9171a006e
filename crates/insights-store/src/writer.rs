//! Batched insight writer: many handlers' insights go to the database in one statement per
//! flush, and each caller learns its outcome only after the batch containing its record has
//! committed (so a job is completed only once its insight is durable).
//!
//! Why: one commit per lead caps the pipeline near the server's single-row commit rate; a batch
//! of N costs about one commit. A flush starts when `max_batch` records are queued or the oldest
//! has waited `linger`; up to `max_concurrent_flushes` run at once.

use std::sync::Arc;
use std::time::Duration;

use insights_core::InsightRecord;
use tokio::sync::{mpsc, oneshot};

use crate::batcher::{self, Batching};
use crate::defaults;
use insights_pg::ErrorClass;

use crate::error::StoreError;
use crate::store::{Store, UpsertOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    pub max_batch: usize,
    pub linger: Duration,
    pub max_concurrent_flushes: usize,
    pub queue_capacity: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: defaults::WRITER_MAX_BATCH,
            linger: defaults::WRITER_LINGER,
            max_concurrent_flushes: defaults::WRITER_MAX_CONCURRENT_FLUSHES,
            queue_capacity: defaults::WRITER_QUEUE_CAPACITY,
        }
    }
}

struct Pending {
    record: InsightRecord,
    reply: oneshot::Sender<Result<UpsertOutcome, StoreError>>,
}

/// Handle to the writer task; cheap to clone. The task ends when every handle is dropped, after
/// flushing what is queued.
#[derive(Clone)]
pub struct InsightWriter {
    tx: mpsc::Sender<Pending>,
    flushes: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for InsightWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsightWriter").finish_non_exhaustive()
    }
}

impl InsightWriter {
    /// Spawns the writer task on the current Tokio runtime.
    pub fn spawn(store: Store, config: WriterConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let flushes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(run(store, config, rx, Arc::clone(&flushes)));
        Self { tx, flushes }
    }

    /// Queues the record and waits until the batch containing it has committed.
    pub async fn write(&self, record: InsightRecord) -> Result<UpsertOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { record, reply })
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        answer.await.map_err(|_| StoreError::WriterClosed)?
    }

    /// Flushes (statements sent) so far; with the number of writes this gives the batch size.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Acquire)
    }
}

async fn run(
    store: Store,
    config: WriterConfig,
    rx: mpsc::Receiver<Pending>,
    flushes: Arc<std::sync::atomic::AtomicU64>,
) {
    let batching = Batching {
        max_batch: config.max_batch,
        linger: config.linger,
        max_in_flight: config.max_concurrent_flushes,
    };
    batcher::run(rx, batching, flushes, move |batch| {
        let store = store.clone();
        async move { flush(&store, batch).await }
    })
    .await;
}

async fn flush(store: &Store, batch: Vec<Pending>) {
    let records: Vec<InsightRecord> = batch.iter().map(|p| p.record.clone()).collect();
    match store.upsert_batch(&records).await {
        Ok(outcomes) => {
            for (p, outcome) in batch.into_iter().zip(outcomes) {
                let _ = p.reply.send(Ok(outcome));
            }
        }
        // A permanent failure may belong to one record (bad data, a lead deleted mid-statement):
        // write them one by one so only the culprit fails.
        Err(e) if e.class() == ErrorClass::Permanent && batch.len() > 1 => {
            tracing::warn!(error = %e, records = batch.len(), "insight batch failed; writing its records one by one");
            for p in batch {
                let outcome = store.upsert_insight(&p.record).await;
                let _ = p.reply.send(outcome);
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.reply.send(Err(e.shared()));
            }
        }
    }
}
