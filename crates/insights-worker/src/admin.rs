//! The one-shot operations the CLI wires: migrate, seed, enqueue, status, job inspection and
//! steering, and the standalone mock LLM. Each connects what it needs from `Settings` and
//! returns plain values (and their text form) for the CLI to print.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use insights_core::{INSIGHTS_QUEUE, Profile, Settings};
use insights_llm::mock::{MockLlmConfig, serve_mock};
use insights_queue::{JobDetail, JobState, JobSummary, StateCounts};
use insights_store::pool::{self, PoolSettings};
use insights_store::{SeedReport, StoreOptions};
use serde::Serialize;

use crate::error::WorkerError;
use crate::producer::{EnqueueReport, EnqueueRequest};
use crate::wiring::{self, queue_err, store_err};

/// Migrates the queue, and this project's own tables unless the profile brings the team's
/// (whose schema is theirs to manage: their migrations, not ours, create it).
pub async fn migrate(settings: &Settings, profile: &Profile) -> Result<(), WorkerError> {
    let ps = PoolSettings::migration_from_settings(settings)?;
    let pool = pool::connect(&ps).await.map_err(store_err)?;
    if profile.statements.is_none() {
        let report = insights_store::migrate(&pool).await.map_err(store_err)?;
        tracing::info!(applied = ?report.applied, "domain migrations done");
    }
    let same_db = settings.queue_database_url == settings.database_url;
    if same_db {
        insights_queue::migrate(&pool).await.map_err(queue_err)?;
    } else {
        let (qpool, _) = wiring::queue_pool(settings).await?;
        insights_queue::migrate(&qpool).await.map_err(queue_err)?;
        qpool.close().await;
    }
    tracing::info!("queue migrations done");
    pool.close().await;
    Ok(())
}

/// Seeds `leads` deterministic leads.
pub async fn seed(settings: &Settings, leads: u64, seed: u64) -> Result<SeedText, WorkerError> {
    let (pool, _) = wiring::app_pool(settings).await?;
    let n = usize::try_from(leads)
        .map_err(|_| WorkerError::Config(format!("--leads: {leads} is too large")))?;
    let report = insights_store::seed(&pool, n, seed)
        .await
        .map_err(store_err)?;
    pool.close().await;
    Ok(SeedText(report))
}

/// A seed report as one line.
#[derive(Debug, Clone)]
pub struct SeedText(pub SeedReport);

impl fmt::Display for SeedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.0;
        write!(
            f,
            "seeded {} leads ({} booked, ids {}..={}) with {} messages in {:.1}s",
            r.leads,
            r.booked,
            r.first_lead_id,
            r.last_lead_id,
            r.messages,
            r.elapsed.as_secs_f64()
        )
    }
}

/// Runs the producer once.
pub async fn enqueue(
    settings: &Settings,
    profile: &Profile,
    req: EnqueueRequest,
) -> Result<EnqueueReport, WorkerError> {
    let (app, app_ps) = wiring::app_pool(settings).await?;
    let store = wiring::store(app.clone(), profile, StoreOptions::for_pool(&app_ps));
    let queue = wiring::queue(settings).await?;
    let report = crate::producer::enqueue(&store, &queue, req).await;
    app.close().await;
    queue.pool().close().await;
    report
}

/// `insights status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub queue: String,
    pub counts: StateCounts,
    pub total: u64,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "queue {}", self.queue)?;
        for st in JobState::ALL {
            writeln!(f, "  {:<10} {}", st.as_str(), self.counts.get(st))?;
        }
        writeln!(f, "  {:<10} {}", "total", self.total)
    }
}

pub async fn status(settings: &Settings) -> Result<Status, WorkerError> {
    let queue = wiring::queue(settings).await?;
    let counts = queue.counts(INSIGHTS_QUEUE).await.map_err(queue_err)?;
    queue.pool().close().await;
    Ok(Status {
        queue: INSIGHTS_QUEUE.to_owned(),
        total: counts.total(),
        counts,
    })
}

pub async fn list_jobs(
    settings: &Settings,
    state: Option<JobState>,
    limit: u32,
) -> Result<Vec<JobSummary>, WorkerError> {
    let queue = wiring::queue(settings).await?;
    let jobs = queue
        .list(INSIGHTS_QUEUE, state, limit, 0)
        .await
        .map_err(queue_err);
    queue.pool().close().await;
    jobs
}

pub async fn show_job(settings: &Settings, id: i64) -> Result<JobDetail, WorkerError> {
    let queue = wiring::queue(settings).await?;
    let job = queue.show(id).await.map_err(queue_err);
    queue.pool().close().await;
    job?.ok_or_else(|| WorkerError::Runtime(format!("job {id} does not exist")))
}

pub async fn retry_job(settings: &Settings, id: i64) -> Result<(), WorkerError> {
    let queue = wiring::queue(settings).await?;
    let done = queue.retry(id).await.map_err(queue_err);
    queue.pool().close().await;
    if done? {
        Ok(())
    } else {
        Err(WorkerError::Runtime(format!(
            "job {id} cannot be retried (it does not exist or is not discarded/cancelled)"
        )))
    }
}

pub async fn cancel_job(settings: &Settings, id: i64) -> Result<(), WorkerError> {
    let queue = wiring::queue(settings).await?;
    let done = queue.cancel(id).await.map_err(queue_err);
    queue.pool().close().await;
    if done? {
        Ok(())
    } else {
        Err(WorkerError::Runtime(format!(
            "job {id} cannot be cancelled (it does not exist or is running or finished)"
        )))
    }
}

/// A job listing as a table.
pub fn format_job_list(jobs: &[JobSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>10}  {:<10}  {:>7}  {:<16}  {:<20}  last error",
        "id", "state", "attempt", "dedupe key", "run at"
    );
    for j in jobs {
        let _ = writeln!(
            out,
            "{:>10}  {:<10}  {:>3}/{:<3}  {:<16}  {:<20}  {}",
            j.id,
            j.state.as_str(),
            j.attempt,
            j.max_attempts,
            j.dedupe_key.as_deref().unwrap_or("-"),
            j.run_at.format("%Y-%m-%d %H:%M:%S"),
            j.last_error.as_deref().map(first_line).unwrap_or("")
        );
    }
    out
}

/// One job in detail.
pub fn format_job(j: &JobDetail) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "job {} ({})", j.id, j.queue);
    let _ = writeln!(out, "  state        {}", j.state);
    let _ = writeln!(out, "  payload      {}", j.payload);
    let _ = writeln!(out, "  attempt      {}/{}", j.attempt, j.max_attempts);
    let _ = writeln!(
        out,
        "  dedupe key   {}",
        j.dedupe_key.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "  run at       {}", j.run_at);
    let _ = writeln!(out, "  created at   {}", j.created_at);
    if let Some(t) = j.finalized_at {
        let _ = writeln!(out, "  finalized at {t}");
    }
    if let Some(w) = &j.locked_by {
        let _ = writeln!(out, "  locked by    {w}");
    }
    for e in &j.errors {
        let _ = writeln!(
            out,
            "  error (attempt {}, {}): {}",
            e.attempt, e.at, e.error
        );
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Serves the mock LLM until ctrl-c or SIGTERM.
pub async fn serve_mock_llm(bind: SocketAddr, config: MockLlmConfig) -> Result<(), WorkerError> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| WorkerError::Runtime(format!("cannot bind the mock LLM to {bind}: {e}")))?;
    let handle = serve_mock(listener, config)
        .map_err(|e| WorkerError::Runtime(format!("cannot start the mock LLM: {e}")))?;
    // Tests read this line to learn the port when binding to :0.
    println!(
        "mock LLM listening on {} (base URL {})",
        handle.addr,
        handle.base_url()
    );
    crate::signals::shutdown_signal().await;
    handle
        .shutdown()
        .await
        .map_err(|e| WorkerError::Runtime(format!("mock LLM stopped with an error: {e}")))
}
