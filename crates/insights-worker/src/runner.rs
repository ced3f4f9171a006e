//! `run_worker`: builds the pools, the store, the queue backend, the LLM client and the HTTP
//! server, runs the apalis worker under a `Monitor` until [`crate::signals::stop_signal`]
//! resolves, logs periodic and final summaries, and returns the final figures.
//!
//! A database outage never ends it: the backend retries its own fetches, jobs snooze and the
//! circuit breaker pauses fetching; only a signal, the embedder's stop token or idleness stops
//! the loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::WorkerBuilderExt;
use apalis_core::monitor::Monitor;
use apalis_core::worker::builder::WorkerBuilder;
use insights_core::{INSIGHTS_QUEUE, InsightJob, Profile, SecretString, Settings};
use insights_llm::LlmClient;
use insights_queue::{BackendOptions, Queue, QueueBackend, WorkerStats};
use insights_store::{ConversationLoader, InsightWriter, LoaderConfig, Store, WriterConfig};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::breaker::Breaker;
use crate::defaults::{
    BACKEND_SAMPLE_INTERVAL, HANDLER_STORE_RETRY, SHUTDOWN_TIMEOUT, SUMMARY_INTERVAL,
};
use crate::error::WorkerError;
use crate::handler::{Pipeline, PipelineConfig, handle_insight_job};
use crate::http::{self, HttpParts};
use crate::metrics::{Metrics, Snapshot};
use crate::signals::{StopSwitch, stop_signal};
use crate::wiring;

/// How long the HTTP server may take to finish its open requests once the worker stopped.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything `run_worker` needs, from the environment (`from_settings`) plus run-time flags.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub settings: Settings,
    /// The team's statements, prompt and insight shape (the built-in one by default).
    pub profile: Arc<Profile>,
    pub concurrency: usize,
    pub exit_when_idle: bool,
    /// `None`: no HTTP server.
    pub http_bind: Option<SocketAddr>,
    pub dashboard_token: Option<SecretString>,
    /// Name of the worker in logs and the dashboard.
    pub name: String,
    pub summary_interval: Duration,
}

impl RunOptions {
    /// Validates what `work` needs (database and LLM URLs) and takes the rest as configured.
    pub fn from_settings(settings: &Settings) -> Result<Self, WorkerError> {
        settings.require_database_url()?;
        settings.require_llm_base_url()?;
        Ok(Self {
            settings: settings.clone(),
            profile: wiring::load_profile(settings.profile.as_deref())?,
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
    pub options: RunOptions,
    /// Called periodically to sample database backends for the peak figure (`None`: no
    /// sampling).
    pub backend_sampler: Option<BackendSampler>,
    /// Stops the worker gracefully when cancelled, as SIGTERM does (for embedding the worker
    /// in another program; `None`: signals and `exit_when_idle` only).
    pub stop: Option<CancellationToken>,
}

/// Returns the current number of backends of the database.
pub type BackendSampler =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Option<u64>> + Send>> + Send + Sync>;

/// Samples the connections this process has open in its pools (a shared pool counted once):
/// no SQL needed, and on a direct URL each one is a database backend (behind a pooler, a
/// client connection).
pub fn pools_sampler(pools: &wiring::Pools) -> BackendSampler {
    let pools = pools.clone();
    Arc::new(move || {
        let n = pools.size();
        Box::pin(async move { Some(n) })
    })
}

/// Checks the profile against the app database (`insights check`; an error stops here), then
/// connects everything from the options and runs until a signal (or idleness).
pub async fn run_worker(options: RunOptions) -> Result<WorkSummary, WorkerError> {
    let s = &options.settings;
    let llm = wiring::llm_client(s, Arc::clone(&options.profile))?;
    crate::check::startup_check(s, &options.profile).await?;
    let pools = wiring::pools(s).await?;
    wiring::check_listen_url(s).await?;
    let backend_sampler = Some(pools_sampler(&pools));
    // The handler's store calls retry once (a single dropped connection); a longer outage is
    // the circuit breaker's and the queue's business, so store-level retries do not multiply
    // the connection attempts against a database that is down.
    let store = wiring::store(
        pools.app.clone(),
        &options.profile,
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
        BackendOptions::with_concurrency(concurrency),
    );
    let backend_stats = backend.stats();
    let breaker = Breaker::new(s.breaker_threshold, Arc::new(backend.fetch_control()));
    let writer = InsightWriter::spawn(store.clone(), WriterConfig::default());
    let max_messages = llm.profile().prompt.max_messages.unwrap_or(s.max_messages);
    let pipeline = Pipeline::new(PipelineConfig {
        loader: ConversationLoader::spawn(store.clone(), LoaderConfig::new(max_messages)),
        writer: writer.clone(),
        lead_key: store.options().statements.lead_key,
        llm,
        breaker: breaker.clone(),
        metrics: metrics.clone(),
    })
    .with_max_job_age(queue.config().max_job_age);
    log_start(&options, concurrency);

    let switch = StopSwitch::new();
    let background = Background::start(
        &options,
        HttpSources {
            queue: &queue,
            store: &store,
            metrics: &metrics,
            breaker: &breaker,
            backend_stats,
        },
        backend_sampler,
        &switch,
    )
    .await?;

    let monitor = monitor(&queue, backend, pipeline, &options.name, concurrency);
    let signal = stop_signal(options.exit_when_idle.then(|| queue.clone()), stop);
    let result = monitor.run_with_signal(signal).await;

    switch.stop();
    // The writer task flushes what is queued and ends once its last handle is gone (the
    // pipeline's clones went with the monitor).
    drop(writer);
    background.finish().await;

    let summary = summarize(&metrics, &store, &breaker, started.elapsed());
    log_summary("worker stopped", &summary.metrics);
    if let Err(e) = result {
        return Err(WorkerError::Runtime(format!(
            "worker ended with an error: {}",
            one_line(&e.to_string())
        )));
    }
    Ok(summary)
}

fn log_start(options: &RunOptions, concurrency: usize) {
    let s = &options.settings;
    tracing::info!(
        worker = %options.name,
        concurrency,
        app_pool_max = s.db_pool_max,
        queue_pool_max = s.db_pool_max,
        app_pooler = s.pooler.as_str(),
        queue_pooler = s.queue_pooler.as_str(),
        max_attempts = s.max_attempts,
        breaker_threshold = s.breaker_threshold,
        profile = %options
            .profile
            .origin
            .as_ref()
            .map_or("built-in".into(), |p| p.display().to_string()),
        max_messages = options.profile.prompt.max_messages.unwrap_or(s.max_messages),
        prompt_budget_chars = options
            .profile
            .prompt
            .budget_chars
            .unwrap_or(s.prompt_budget_chars),
        llm_model = options.profile.llm.model.as_deref().unwrap_or(&s.llm_model),
        listen = s.direct_database_url.is_some(),
        exit_when_idle = options.exit_when_idle,
        "worker starting"
    );
}

/// The apalis worker under a `Monitor`. The monitor builds the worker through a factory; the
/// backend (and so the fetch control the breaker holds) is built by the caller and handed over
/// the first time. A restart (which our backend never asks for: it does not return errors)
/// would get a fresh backend.
fn monitor(
    queue: &Queue,
    backend: QueueBackend<InsightJob>,
    pipeline: Pipeline,
    name: &str,
    concurrency: usize,
) -> Monitor {
    let slot = Arc::new(Mutex::new(Some(backend)));
    let queue = queue.clone();
    let name = name.to_owned();
    Monitor::new()
        .register(move |_restarts| {
            let backend = slot
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .unwrap_or_else(|| {
                    queue.worker_backend(
                        INSIGHTS_QUEUE,
                        BackendOptions::with_concurrency(concurrency),
                    )
                });
            WorkerBuilder::new(name.as_str())
                .backend(backend)
                .concurrency(concurrency)
                .catch_panic()
                .data(pipeline.clone())
                .build(handle_insight_job)
        })
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
}

/// What the worker's HTTP server shows.
struct HttpSources<'a> {
    queue: &'a Queue,
    store: &'a Store,
    metrics: &'a Metrics,
    breaker: &'a Breaker,
    backend_stats: WorkerStats,
}

/// The tasks that run beside the worker: the HTTP server, periodic summaries, backend sampling.
struct Background {
    http: Option<JoinHandle<()>>,
    summary: JoinHandle<()>,
    sampler: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts them, each watching `switch`. Fails only when the HTTP server cannot start.
    async fn start(
        options: &RunOptions,
        sources: HttpSources<'_>,
        backend_sampler: Option<BackendSampler>,
        switch: &StopSwitch,
    ) -> Result<Self, WorkerError> {
        let metrics = sources.metrics.clone();
        let http = match options.http_bind {
            Some(bind) => Some(serve_http(bind, options, sources, switch).await?),
            None => None,
        };
        let summary = tokio::spawn(summary_loop(
            metrics.clone(),
            options.summary_interval,
            switch.stopped(),
        ));
        let sampler = backend_sampler
            .map(|sampler| tokio::spawn(sample_loop(sampler, metrics, switch.stopped())));
        Ok(Self {
            http,
            summary,
            sampler,
        })
    }

    /// Ends the loops and lets the HTTP server finish its open requests (bounded).
    async fn finish(self) {
        self.summary.abort();
        if let Some(t) = self.sampler {
            t.abort();
        }
        if let Some(h) = self.http {
            let _ = tokio::time::timeout(HTTP_DRAIN_TIMEOUT, h).await;
        }
    }
}

async fn serve_http(
    bind: SocketAddr,
    options: &RunOptions,
    sources: HttpSources<'_>,
    switch: &StopSwitch,
) -> Result<JoinHandle<()>, WorkerError> {
    let probe = http::ready_probe(
        sources.queue,
        Some(sources.backend_stats),
        Some(sources.store.clone()),
    );
    let parts = HttpParts {
        metrics: sources.metrics.clone(),
        breaker: Some(sources.breaker.clone()),
        probe: Some(probe),
        board: Some(http::board_router(sources.queue)),
        token: options.dashboard_token.clone(),
    };
    let (addr, handle) = http::serve(bind, parts, switch.stopped()).await?;
    tracing::info!(%addr, "HTTP server listening (/healthz, /readyz, /metrics, dashboard at /)");
    Ok(handle)
}

fn summarize(metrics: &Metrics, store: &Store, breaker: &Breaker, wall: Duration) -> WorkSummary {
    let snapshot = metrics.snapshot();
    let jobs = snapshot.processed;
    let store_stats = store.stats();
    WorkSummary {
        jobs_per_s: if wall.as_secs_f64() > 0.0 {
            jobs as f64 / wall.as_secs_f64()
        } else {
            0.0
        },
        metrics: snapshot,
        wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
        breaker_trips: breaker.total_trips(),
        mean_hold_ms: if jobs == 0 {
            0.0
        } else {
            store_stats.total_hold.as_secs_f64() * 1000.0 / jobs as f64
        },
        store_transactions: store_stats.transactions,
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn summary_loop(metrics: Metrics, every: Duration, stopped: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => log_summary("progress", &metrics.snapshot()),
            () = &mut stopped => return,
        }
    }
}

async fn sample_loop(sampler: BackendSampler, metrics: Metrics, stopped: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(BACKEND_SAMPLE_INTERVAL);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(n) = sampler().await {
                    metrics.observe_backends(n);
                }
            }
            () = &mut stopped => return,
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
