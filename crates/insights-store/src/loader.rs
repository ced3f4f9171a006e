//! Batched conversation loader: concurrent handlers' loads are coalesced into one statement
//! (`WHERE id = ANY($1)`), each caller getting its own lead back. Same shape as the writer.
//!
//! Why: a load is a short statement, and at thousands of leads per second the per-statement
//! overhead (round trip, executor start-up, a connection checkout) dominates. Loads are
//! coalesced only while earlier loads are in flight (no waiting by default), so a lone load is
//! not delayed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::batcher::{self, Batching};
use crate::defaults;
use crate::error::StoreError;
use crate::store::{LoadedLead, Store};
use insights_core::LeadKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Newest messages loaded per lead.
    pub max_messages: u32,
    pub max_batch: usize,
    /// Extra wait for more loads after the first; zero = take only what is already queued.
    pub linger: Duration,
    pub max_concurrent_loads: usize,
    pub queue_capacity: usize,
}

impl LoaderConfig {
    pub fn new(max_messages: u32) -> Self {
        Self {
            max_messages,
            max_batch: defaults::LOADER_MAX_BATCH,
            linger: defaults::LOADER_LINGER,
            max_concurrent_loads: defaults::LOADER_MAX_CONCURRENT_LOADS,
            queue_capacity: defaults::LOADER_QUEUE_CAPACITY,
        }
    }
}

type Reply = oneshot::Sender<Result<Option<LoadedLead>, StoreError>>;

/// Handle to the loader task; cheap to clone. The task ends when every handle is dropped.
#[derive(Clone)]
pub struct ConversationLoader {
    tx: mpsc::Sender<(LeadKey, Reply)>,
    statements: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for ConversationLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationLoader").finish_non_exhaustive()
    }
}

impl ConversationLoader {
    /// Spawns the loader task on the current Tokio runtime.
    pub fn spawn(store: Store, config: LoaderConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let statements = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(run(store, config, rx, Arc::clone(&statements)));
        Self { tx, statements }
    }

    /// Same as [`Store::load_conversation`], possibly sharing a statement with other loads.
    pub async fn load(&self, key: LeadKey) -> Result<Option<LoadedLead>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((key, reply))
            .await
            .map_err(|_| StoreError::LoaderClosed)?;
        answer.await.map_err(|_| StoreError::LoaderClosed)?
    }

    /// Statements issued so far.
    pub fn statements(&self) -> u64 {
        self.statements.load(std::sync::atomic::Ordering::Acquire)
    }
}

async fn run(
    store: Store,
    config: LoaderConfig,
    rx: mpsc::Receiver<(LeadKey, Reply)>,
    statements: Arc<std::sync::atomic::AtomicU64>,
) {
    let batching = Batching {
        max_batch: config.max_batch,
        linger: config.linger,
        max_in_flight: config.max_concurrent_loads,
    };
    let max_messages = config.max_messages;
    batcher::run(rx, batching, statements, move |batch| {
        let store = store.clone();
        async move { load(&store, batch, max_messages).await }
    })
    .await;
}

async fn load(store: &Store, batch: Vec<(LeadKey, Reply)>, max_messages: u32) {
    let mut keys: Vec<LeadKey> = batch.iter().map(|(key, _)| key.clone()).collect();
    keys.sort_unstable();
    keys.dedup();
    match store.load_leads(&keys, max_messages).await {
        Ok(found) => {
            let mut found: HashMap<LeadKey, LoadedLead> = found;
            // Duplicate keys in one batch each get a copy.
            let mut wanted: HashMap<LeadKey, usize> = HashMap::new();
            for (key, _) in &batch {
                *wanted.entry(key.clone()).or_default() += 1;
            }
            for (key, reply) in batch {
                let left = wanted.entry(key.clone()).or_default();
                *left -= 1;
                let value = if *left == 0 {
                    found.remove(&key)
                } else {
                    found.get(&key).cloned()
                };
                let _ = reply.send(Ok(value));
            }
        }
        Err(e) => {
            for (_, reply) in batch {
                let _ = reply.send(Err(e.shared()));
            }
        }
    }
}
