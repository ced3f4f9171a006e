//! `run_worker`: builds the pools, the store, the queue backend, the LLM client and the HTTP
//! server, runs the apalis worker under a `Monitor` until SIGTERM/ctrl-c (or, with
//! `exit_when_idle`, until the queue has nothing left to do), logs periodic and final
//! summaries, and returns the final figures.
//!
//! A database outage never ends it: the backend retries its own fetches, jobs snooze and the
//! circuit breaker pauses fetching; only a signal or idleness stops the loop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::WorkerBuilderExt;
use apalis_core::monitor::Monitor;
use apalis_core::worker::builder::WorkerBuilder;
use insights_core::{INSIGHTS_QUEUE, InsightJob, SecretString, Settings};
use insights_llm::LlmClient;
use insights_queue::{FetchControl, Queue, QueueBackend, WorkerStats};
use insights_store::{ConversationLoader, InsightWriter, LoaderConfig, Store, WriterConfig};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::breaker::Breaker;
use crate::defaults::{
    HANDLER_STORE_RETRY, IDLE_POLL_INTERVAL, READY_CACHE, SHUTDOWN_TIMEOUT, SUMMARY_INTERVAL,
};
use crate::error::WorkerError;
use crate::handler::{Pipeline, PipelineConfig, handle_insight_job};
use crate::http::{self, HttpParts};
use crate::metrics::{Metrics, Snapshot};
use crate::wiring;

/// Everything `run_worker` needs, from the environment (`from_settings`) plus run-time flags.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub settings: Settings,
    pub concurrency: usize,
    pub exit_when_idle: bool,
    /// `None`: no HTTP server.
    pub http_bind: Option<SocketAddr>,
    pub dashboard_token: Option<SecretString>,
    /// Name of the worker in logs and the dashboard.
    pub name: String,
    pub summary_interval: Duration,
}

impl WorkerOptions {
    /// Validates what `work` needs (database and LLM URLs) and takes the rest as configured.
    pub fn from_settings(settings: &Settings) -> Result<Self, WorkerError> {
        settings.require_database_url()?;
        settings.require_llm_base_url()?;
        Ok(Self {
            settings: settings.clone(),
            concurrency: settings.concurrency,
            exit_when_idle: false,
            http_bind: Some(settings.http_bind),
            dashboard_token: settings.dashboard_token.clone(),
            name: default_worker_name(),
            summary_interval: SUMMARY_INTERVAL,
        })
    }
}

fn default_worker_name() -> String {
    format!("insights-worker-{}", std::process::id())
}

/// The final figures of a run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkSummary {
    #[serde(flatten)]
    pub metrics: Snapshot,
    pub wall_ms: u64,
    /// Jobs finished per second of wall time.
    pub jobs_per_s: f64,
    pub breaker_trips: u64,
    /// Mean time a job kept an app-database connection checked out (all its store calls).
    pub mean_hold_ms: f64,
    /// App-database transactions (store calls) in the run.
    pub store_transactions: u64,
}

/// Built pieces, for callers that construct them differently (the demo, benchmarks).
pub struct WorkerParts {
    pub store: Store,
    pub queue: Queue,
    pub llm: LlmClient,
    pub metrics: Metrics,
    pub options: WorkerOptions,
    /// Called periodically to sample database backends for the peak figure (`None`: no
    /// sampling).
    pub backend_sampler: Option<BackendSampler>,
    /// Stops the worker gracefully when cancelled, as SIGTERM does (for embedding the worker
    /// in another program; `None`: signals and `exit_when_idle` only).
    pub stop: Option<CancellationToken>,
}

/// Returns the current number of backends of the database.
pub type BackendSampler = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<u64>> + Send>>
        + Send
        + Sync,
>;

/// Samples the connections this process has open in its two pools: no SQL needed, and on a
/// direct URL each one is a database backend (behind a pooler, a client connection).
pub fn pool_size_sampler(app: sqlx::PgPool, queue: sqlx::PgPool) -> BackendSampler {
    Arc::new(move || {
        let n = u64::from(app.size()) + u64::from(queue.size());
        Box::pin(async move { Some(n) })
    })
}

/// Like [`pool_size_sampler`], counting a shared pool once.
pub fn pools_sampler(pools: &wiring::Pools) -> BackendSampler {
    let pools = pools.clone();
    Arc::new(move || {
        let n = pools.size();
        Box::pin(async move { Some(n) })
    })
}

/// Connects everything from the options and runs until a signal (or idleness).
pub async fn run_worker(options: WorkerOptions) -> Result<WorkSummary, WorkerError> {
    let s = &options.settings;
    let llm = wiring::llm_client(s)?;
    let pools = wiring::pools(s).await?;
    let backend_sampler = Some(pools_sampler(&pools));
    // The handler's store calls retry once (a single dropped connection); a longer outage is
    // the circuit breaker's and the queue's business, so store-level retries do not multiply
    // the connection attempts against a database that is down.
    let store = Store::new(
        pools.app.clone(),
        insights_store::StoreOptions {
            retry: HANDLER_STORE_RETRY,
            ..insights_store::StoreOptions::for_pool(&pools.app_settings)
        },
    );
    let queue = Queue::new(pools.queue.clone(), wiring::queue_config(s));
    tracing::debug!(
        queue_target = %pools.queue_settings.target(),
        shared_pool = pools.shared,
        "pools ready"
    );
    run_worker_with(WorkerParts {
        store,
        queue,
        llm,
        metrics: Metrics::new(),
        options,
        backend_sampler,
        stop: None,
    })
    .await
}

/// Runs a worker on pre-built pieces.
pub async fn run_worker_with(parts: WorkerParts) -> Result<WorkSummary, WorkerError> {
    let WorkerParts {
        store,
        queue,
        llm,
        metrics,
        options,
        backend_sampler,
        stop,
    } = parts;
    let started = Instant::now();
    let concurrency = options.concurrency.max(1);
    let s = &options.settings;

    let backend: QueueBackend<InsightJob> = queue.worker_backend(
        INSIGHTS_QUEUE,
        insights_queue::WorkerOptions::with_concurrency(concurrency),
    );
    let control: FetchControl = backend.fetch_control();
    let backend_stats = backend.stats();
    let breaker = Breaker::new(s.breaker_threshold, Arc::new(control));
    let writer = InsightWriter::spawn(store.clone(), WriterConfig::default());
    let loader = ConversationLoader::spawn(store.clone(), LoaderConfig::new(s.max_messages));
    let pipeline = Pipeline::new(PipelineConfig {
        loader,
        writer: writer.clone(),
        llm,
        breaker: breaker.clone(),
        metrics: metrics.clone(),
    });

    tracing::info!(
        worker = %options.name,
        concurrency,
        app_pool_max = s.db_pool_max,
        queue_pool_max = s.db_pool_max,
        app_pooler = s.pooler.as_str(),
        queue_pooler = s.queue_pooler.as_str(),
        max_attempts = s.max_attempts,
        breaker_threshold = s.breaker_threshold,
        max_messages = s.max_messages,
        prompt_budget_chars = s.prompt_budget_chars,
        llm_model = %s.llm_model,
        listen = s.direct_database_url.is_some(),
        exit_when_idle = options.exit_when_idle,
        "worker starting"
    );

    // One "stop" switch for the background tasks of this run.
    let (stop_tx, stop_rx) = watch::channel(false);

    let http_task = match options.http_bind {
        Some(bind) => {
            let probe = queue_probe(&queue, Some(backend_stats.clone()), Some(store.clone()));
            let parts = HttpParts {
                metrics: metrics.clone(),
                breaker: Some(breaker.clone()),
                probe: Some(probe),
                board: Some(crate::admin::board_router(&queue)),
                token: options.dashboard_token.clone(),
            };
            let (addr, handle) = http::serve(bind, parts, wait_stop(stop_rx.clone())).await?;
            tracing::info!(%addr, "HTTP server listening (/healthz, /readyz, /metrics, dashboard at /)");
            Some(handle)
        }
        None => None,
    };

    let summary_task = tokio::spawn(summary_loop(
        metrics.clone(),
        options.summary_interval,
        stop_rx.clone(),
    ));
    let sampler_task = backend_sampler
        .map(|sampler| tokio::spawn(sample_loop(sampler, metrics.clone(), stop_rx.clone())));

    // The monitor builds the worker through a factory; the backend (and so the fetch control
    // the breaker holds) is built once above and handed over the first time. A restart (which
    // our backend never asks for: it does not return errors) would get a fresh backend.
    let slot = Arc::new(Mutex::new(Some(backend)));
    let factory_queue = queue.clone();
    let name = options.name.clone();
    let monitor = Monitor::new()
        .register(move |_restarts| {
            let backend = slot
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .unwrap_or_else(|| {
                    factory_queue.worker_backend(
                        INSIGHTS_QUEUE,
                        insights_queue::WorkerOptions::with_concurrency(concurrency),
                    )
                });
            WorkerBuilder::new(name.as_str())
                .backend(backend)
                .concurrency(concurrency)
                .catch_panic()
                .data(pipeline.clone())
                .build(handle_insight_job)
        })
        .shutdown_timeout(SHUTDOWN_TIMEOUT);

    let signal = stop_signal(options.exit_when_idle.then(|| queue.clone()), stop);
    let result = monitor.run_with_signal(signal).await;

    let _ = stop_tx.send(true);
    // The writer task flushes what is queued and ends once its last handle is gone.
    drop(writer);
    summary_task.abort();
    if let Some(t) = sampler_task {
        t.abort();
    }
    if let Some(h) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }

    let snapshot = metrics.snapshot();
    let snapshot_jobs = snapshot.processed;
    let store_stats = store.stats();
    let wall = started.elapsed();
    let summary = WorkSummary {
        jobs_per_s: if wall.as_secs_f64() > 0.0 {
            snapshot.processed as f64 / wall.as_secs_f64()
        } else {
            0.0
        },
        metrics: snapshot,
        wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
        breaker_trips: breaker.total_trips(),
        mean_hold_ms: if snapshot_jobs == 0 {
            0.0
        } else {
            store_stats.total_hold.as_secs_f64() * 1000.0 / snapshot_jobs as f64
        },
        store_transactions: store_stats.transactions,
    };
    log_summary("worker stopped", &summary.metrics);
    if let Err(e) = result {
        return Err(WorkerError::Runtime(format!(
            "worker ended with an error: {}",
            one_line(&e.to_string())
        )));
    }
    Ok(summary)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Readiness of the databases without turning probes into connection attempts: not ready while
/// the connection gate of the queue's pool (or of the app store's, when given) is closed, or as
/// soon as the worker's own queue calls failed since the last look (no query at all);
/// otherwise one cheap count query whose answer is reused for [`READY_CACHE`].
fn queue_probe(
    queue: &Queue,
    backend_stats: Option<WorkerStats>,
    store: Option<Store>,
) -> http::ReadyProbe {
    struct Seen {
        at: Option<Instant>,
        answer: Result<(), String>,
        db_errors: u64,
    }
    let seen = Arc::new(tokio::sync::Mutex::new(Seen {
        at: None,
        answer: Ok(()),
        db_errors: 0,
    }));
    let queue = queue.clone();
    Arc::new(move || {
        let q = queue.clone();
        let seen = seen.clone();
        let stats = backend_stats.clone();
        let store = store.clone();
        Box::pin(async move {
            // During an outage the gates answer from memory: no connection is opened for a
            // probe while the worker's own calls are refused.
            if !q.is_reachable() {
                return Err("queue database unreachable (connection gate closed)".to_owned());
            }
            if store.as_ref().is_some_and(|s| !s.gate().is_open()) {
                return Err("app database unreachable (connection gate closed)".to_owned());
            }
            // One probe at a time: concurrent callers wait for (and reuse) its answer.
            let mut seen = seen.lock().await;
            if let Some(stats) = &stats {
                let errors = stats.snapshot().db_errors;
                let grew = errors > seen.db_errors;
                seen.db_errors = errors;
                if grew {
                    seen.at = Some(Instant::now());
                    seen.answer = Err("the worker's queue calls are failing".to_owned());
                    return seen.answer.clone();
                }
            }
            if let Some(at) = seen.at
                && at.elapsed() < READY_CACHE
            {
                return seen.answer.clone();
            }
            let answer = q
                .counts(INSIGHTS_QUEUE)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            seen.at = Some(Instant::now());
            seen.answer = answer.clone();
            answer
        })
    })
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm() => {}
    }
}

/// `insights dashboard`: the HTTP surface (board, health, metrics) without a worker.
pub async fn run_dashboard(settings: &Settings) -> Result<(), WorkerError> {
    let queue = wiring::queue(settings).await?;
    let probe = queue_probe(&queue, None, None);
    let parts = HttpParts {
        metrics: Metrics::new(),
        breaker: None,
        probe: Some(probe),
        board: Some(crate::admin::board_router(&queue)),
        token: settings.dashboard_token.clone(),
    };
    let (addr, handle) = http::serve(settings.http_bind, parts, shutdown_signal()).await?;
    tracing::info!(%addr, "dashboard listening (UI at /, API at /api/v1, /healthz, /readyz, /metrics)");
    let _ = handle.await;
    queue.pool().close().await;
    Ok(())
}

/// Resolves on ctrl-c, SIGTERM, the embedder's stop token, or (with a queue) once the queue is
/// idle.
async fn stop_signal(
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
pub(crate) async fn wait_idle(queue: &Queue) {
    loop {
        match queue.counts(INSIGHTS_QUEUE).await {
            Ok(c) if c.available + c.scheduled + c.retryable + c.running == 0 => return,
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "idle check failed; will retry"),
        }
        tokio::time::sleep(IDLE_POLL_INTERVAL).await;
    }
}

async fn summary_loop(metrics: Metrics, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => log_summary("progress", &metrics.snapshot()),
            _ = stop.changed() => return,
        }
    }
}

async fn sample_loop(sampler: BackendSampler, metrics: Metrics, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(crate::defaults::BACKEND_SAMPLE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(n) = sampler().await {
                    metrics.observe_backends(n);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

fn log_summary(what: &str, s: &Snapshot) {
    tracing::info!(
        processed = s.processed,
        written = s.written,
        skipped = s.skipped,
        failed = s.failed,
        discarded = s.discarded,
        snoozed = s.snoozed,
        connection_errors = s.connection_errors,
        llm_calls = s.llm_calls,
        p50_ms = s.latency_p50_ms,
        p95_ms = s.latency_p95_ms,
        "{what}"
    );
}
