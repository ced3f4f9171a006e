//! Our pipeline end to end, in process: seeded leads, the producer, the worker
//! (`insights_worker::runner::run_worker_with`, the code `insights work` runs) on insights-queue,
//! the in-process mock LLM.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use insights_core::Settings;
use insights_llm::mock::{MockHandle, MockLlmConfig, serve_mock};
use insights_llm::{LlmClient, LlmConfig};
use insights_queue::Queue;
use insights_store::{PoolSettings, Store, StoreOptions};
use insights_worker::producer::{self, EnqueueRequest};
use insights_worker::runner::{self, RunOptions, WorkerParts};
use insights_worker::{Metrics, WorkSummary};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::bench_db::{BenchDb, admin_url};
use crate::defaults::{PROGRESS_POLL_INTERVAL, SEED};
use crate::measure::{
    BackendSampler, DoneCounter, drain_deadline, peak_rss_mb, rate, reset_peak_rss, timed, wait_for,
};

/// One pipeline run's shape.
#[derive(Debug, Clone, Copy)]
pub struct PipelineSpec {
    pub leads: usize,
    pub llm_latency: Duration,
    pub concurrency: usize,
    /// `INSIGHTS_DB_POOL_MAX`: the worker's one pool (shared by store and queue, as in
    /// `insights work` when the queue lives in the app database).
    pub pool_max: u32,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct PipelineOutcome {
    pub leads: u64,
    /// From the producer's start to the last insight durable.
    pub end_to_end_leads_per_s: f64,
    /// From the first job's start to the last job's completion (queue timestamps).
    pub worker_leads_per_s: f64,
    pub peak_backends: i64,
    /// Store connection hold per lead (`Store::stats`, as `WorkSummary::mean_hold_ms`).
    pub mean_hold_ms: f64,
    /// Peak RSS of this process while the worker ran (reset just before it started).
    pub peak_rss_mb: Option<f64>,
    pub llm_calls: u64,
    pub summary: WorkSummary,
}

/// A bench database with the domain and queue schemas, a running mock LLM and settings that
/// point at both.
pub struct PipelineEnv {
    pub db: BenchDb,
    pub mock: MockHandle,
    pub settings: Settings,
}

impl PipelineEnv {
    pub async fn create(label: &str, spec: &PipelineSpec) -> anyhow::Result<Self> {
        let db = BenchDb::create(label).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the mock LLM")?;
        let mock = serve_mock(listener, MockLlmConfig::with_latency(spec.llm_latency))
            .context("starting the mock LLM")?;
        let settings = settings(&db.url, &mock.base_url(), spec)?;
        insights_worker::admin::migrate(&settings, &insights_core::Profile::builtin()?)
            .await
            .map_err(|e| anyhow!("migrate: {e}"))?;
        Ok(Self { db, mock, settings })
    }

    /// Seeds `leads` leads (appending) and books every one of them, so each is a candidate.
    pub async fn seed(&self, leads: usize) -> anyhow::Result<()> {
        let pool = self.db.pool(2).await?;
        let t = Instant::now();
        let report = insights_store::seed(&pool, leads, SEED)
            .await
            .map_err(|e| anyhow!("seed: {e}"))?;
        tracing::info!(took = ?t.elapsed(), ?report, "seeded");
        timed(
            sqlx::query(
                "update leads set booked_at = coalesce(booked_at, now()) where booked_at is null",
            )
            .execute(&pool),
        )
        .await?;
        tracing::info!(took = ?t.elapsed(), "booked");
        for sql in ["vacuum analyze leads", "vacuum analyze messages"] {
            timed(sqlx::query(sql).execute(&pool)).await?;
        }
        tracing::info!(took = ?t.elapsed(), "vacuumed");
        pool.close().await;
        Ok(())
    }
}

/// The bench owns its database: direct, no pooler, no LISTEN, no HTTP server; everything the
/// spec does not set keeps its production default.
fn settings(db_url: &str, llm_url: &str, spec: &PipelineSpec) -> anyhow::Result<Settings> {
    use insights_core::config::{
        DATABASE_URL, INSIGHTS_CONCURRENCY, INSIGHTS_DB_POOL_MAX, INSIGHTS_LLM_BASE_URL,
    };
    let checked = || -> Result<Settings, insights_core::ConfigError> {
        Ok(Settings {
            database_url: DATABASE_URL.parse(db_url)?,
            llm_base_url: INSIGHTS_LLM_BASE_URL.parse(llm_url)?,
            concurrency: INSIGHTS_CONCURRENCY.check(spec.concurrency)?,
            db_pool_max: INSIGHTS_DB_POOL_MAX.check(spec.pool_max)?,
            ..Settings::default()
        })
    };
    checked().map_err(|e| anyhow!("settings: {e}"))
}

/// The app pool, as `insights work` builds it.
pub async fn app_pool(settings: &Settings) -> anyhow::Result<(PgPool, PoolSettings)> {
    let ps = PoolSettings::app_from_settings(settings).map_err(|e| anyhow!("{e}"))?;
    let pool = insights_store::pool::connect(&ps)
        .await
        .map_err(|e| anyhow!("app pool: {e}"))?;
    Ok((pool, ps))
}

/// Runs the producer and the worker until every candidate has its insight.
pub async fn run(env: &PipelineEnv, spec: &PipelineSpec) -> anyhow::Result<PipelineOutcome> {
    let s = &env.settings;
    // As `insights work` builds them: one pool shared by the store and the queue when both live
    // at the same URL.
    let pools = insights_worker::pools(s)
        .await
        .map_err(|e| anyhow!("pools: {e}"))?;
    let app = pools.app.clone();
    let queue_pool = pools.queue.clone();
    let store = Store::new(app.clone(), StoreOptions::for_pool(&pools.app_settings));
    let queue = Queue::new(queue_pool.clone(), insights_worker::queue_config(s));
    let llm_base = s.require_llm_base_url().map_err(|e| anyhow!("{e}"))?;
    let llm = LlmClient::new(LlmConfig::from_settings(
        s,
        llm_base.as_str().trim_end_matches('/'),
    ))
    .map_err(|e| anyhow!("LLM client: {e}"))?;

    let counter = DoneCounter::connect(
        &env.db.url,
        "select count(*) from lead_conversation_insights",
    )
    .await?;
    let already = counter.count().await?;
    let calls_before = env.mock.stats().total;
    let sampler = BackendSampler::start(&admin_url(), &env.db.name, &[counter.pid]).await?;
    let rss_reset = reset_peak_rss();

    // The worker is up before the producer runs, as in production (a long-running
    // deployment, and `insights enqueue` from a cron): it takes jobs as their chunks commit.
    let stop = CancellationToken::new();
    let mut options = RunOptions::from_settings(s).map_err(|e| anyhow!("{e}"))?;
    // Stopped by the bench once every insight is durable, like a deployment that stays up.
    options.exit_when_idle = false;
    options.http_bind = None;
    options.concurrency = spec.concurrency;
    options.name = "insights-bench".to_owned();
    options.summary_interval = Duration::from_secs(3600);
    let metrics = Metrics::new();
    let mut worker = tokio::spawn(runner::run_worker_with(WorkerParts {
        store: store.clone(),
        queue: queue.clone(),
        llm,
        metrics: metrics.clone(),
        options,
        backend_sampler: None,
        stop: Some(stop.clone()),
    }));

    let t0 = Instant::now();
    let report = producer::enqueue(
        &store,
        &queue,
        EnqueueRequest {
            limit: u64::MAX,
            lead_ids: Vec::new(),
            dry_run: false,
        },
    )
    .await
    .map_err(|e| {
        stop.cancel();
        anyhow!("enqueue: {e}")
    })?;
    let expected = report.enqueued;
    if expected == 0 {
        stop.cancel();
        bail!("the producer enqueued nothing");
    }

    let per_lead = spec.llm_latency.max(Duration::from_millis(1));
    let deadline = drain_deadline(expected as usize, per_lead, spec.concurrency);
    let target = already + i64::try_from(expected).unwrap_or(i64::MAX);
    // Memory first (cheap), then the database for the durable count.
    let waited = async {
        wait_for(deadline, PROGRESS_POLL_INTERVAL, || async {
            Ok(metrics.processed() >= expected || worker.is_finished())
        })
        .await
        .context("waiting for the worker to process every job")?;
        wait_for(deadline, crate::defaults::DONE_POLL_INTERVAL, || async {
            Ok(counter.count().await? >= target)
        })
        .await
        .context("waiting for every insight to be durable")?;
        anyhow::Ok(Instant::now())
    }
    .await;
    let done_at = match waited {
        Ok(t) => t,
        Err(e) => {
            worker.abort();
            return Err(e.context(format!("{} of {expected} processed", metrics.processed())));
        }
    };
    stop.cancel();
    let summary = match tokio::time::timeout(Duration::from_secs(120), &mut worker).await {
        Ok(Ok(Ok(summary))) => summary,
        Ok(Ok(Err(e))) => bail!("worker: {e}"),
        Ok(Err(e)) => bail!("worker task: {e}"),
        Err(_) => {
            worker.abort();
            bail!("the worker did not stop within 120 s of the queue draining")
        }
    };
    let peak_rss_mb = match rss_reset {
        Ok(()) => peak_rss_mb("self").ok(),
        Err(_) => None,
    };
    let peak_backends = sampler.finish().await?;

    let (first_start, last_done): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = timed(
        sqlx::query_as(
            "select min(attempted_at), max(finalized_at) from insights_queue.jobs \
             where state = 'completed'",
        )
        .fetch_one(&app),
    )
    .await?;
    let worker_span = match (first_start, last_done) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    };
    counter.close().await;
    app.close().await;
    queue_pool.close().await;

    let n = usize::try_from(expected).unwrap_or(usize::MAX);
    Ok(PipelineOutcome {
        leads: expected,
        end_to_end_leads_per_s: rate(n, t0, done_at),
        worker_leads_per_s: if worker_span.is_zero() {
            f64::NAN
        } else {
            expected as f64 / worker_span.as_secs_f64()
        },
        peak_backends,
        mean_hold_ms: summary.mean_hold_ms,
        peak_rss_mb,
        llm_calls: env.mock.stats().total - calls_before,
        summary,
    })
}
