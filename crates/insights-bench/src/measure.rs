//! Instruments shared by every scenario: a handler-side progress recorder, the drain clock, the
//! backend sampler and the peak-RSS reader.

use std::future::Future;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};
use tokio::task::JoinHandle;

use crate::defaults::{
    BACKEND_SAMPLE_INTERVAL, DONE_POLL_INTERVAL, DRAIN_DEADLINE_MIN_RATE, DRAIN_DEADLINE_SLACK,
    PROGRESS_POLL_INTERVAL, QUIESCE_TIMEOUT, STATEMENT_TIMEOUT,
};

/// Runs a fallible future under [`STATEMENT_TIMEOUT`].
pub async fn timed<T, E>(fut: impl Future<Output = Result<T, E>>) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(STATEMENT_TIMEOUT, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => bail!("timed out after {STATEMENT_TIMEOUT:?}"),
    }
}

/// What the handlers record: when the first one ran and when each one finished, in order.
/// Backend-agnostic, so ours and apalis-postgres are clocked the same way.
#[derive(Debug)]
pub struct Progress {
    origin: Instant,
    first: OnceLock<Instant>,
    count: AtomicUsize,
    /// Nanoseconds since `origin` of the i-th handler completion.
    stamps: Vec<AtomicU64>,
    /// Sum of the handlers' own durations, nanoseconds (diagnostic: what the queue did not add).
    busy_nanos: AtomicU64,
}

impl Progress {
    pub fn new(expected: usize) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            first: OnceLock::new(),
            count: AtomicUsize::new(0),
            stamps: (0..expected).map(|_| AtomicU64::new(0)).collect(),
            busy_nanos: AtomicU64::new(0),
        })
    }

    /// Called by a handler when it starts: the first call marks the first fetch. Returns the
    /// start, to hand to [`Self::finished`].
    pub fn started(&self) -> Instant {
        let now = Instant::now();
        self.first.get_or_init(|| now);
        now
    }

    /// Called by a handler when it finishes, with what [`Self::started`] returned.
    pub fn finished(&self, started: Instant) {
        let busy = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy_nanos.fetch_add(busy, Ordering::Relaxed);
        let i = self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.stamps.get(i) {
            let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            slot.store(nanos, Ordering::Relaxed);
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn first(&self) -> Option<Instant> {
        self.first.get().copied()
    }

    /// Mean handler duration (as the handlers clocked themselves).
    pub fn mean_busy(&self) -> Option<Duration> {
        let n = u32::try_from(self.count()).ok().filter(|n| *n > 0)?;
        Some(Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed)) / n)
    }

    /// When the last handler finished.
    pub fn last_finished(&self) -> Option<Instant> {
        let n = self.count().min(self.stamps.len());
        let nanos = self.stamps.get(n.checked_sub(1)?)?.load(Ordering::Relaxed);
        Some(self.origin + Duration::from_nanos(nanos))
    }

    /// The handler-side diagnostics of a drain that the database showed done at `done_at`.
    pub fn timing(&self, concurrency: usize, done_at: Instant) -> HandlerTiming {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let end = self.last_finished();
        HandlerTiming {
            handler_mean_ms: self.mean_busy().map(ms),
            idle_per_job_ms: end
                .and_then(|end| self.idle_per_job(concurrency, end))
                .map(ms),
            tail_ms: end.map(|end| ms(done_at.saturating_duration_since(end))),
        }
    }

    /// Mean time a slot held no handler, per job, over `[first start, until]` at `concurrency`
    /// slots: what the queue adds to every job (fetch latency, hand-over), spread evenly.
    pub fn idle_per_job(&self, concurrency: usize, until: Instant) -> Option<Duration> {
        let first = self.first()?;
        let n = u32::try_from(self.count()).ok().filter(|n| *n > 0)?;
        let slot_time = until.saturating_duration_since(first) * u32::try_from(concurrency).ok()?;
        Some(
            slot_time.saturating_sub(Duration::from_nanos(
                self.busy_nanos.load(Ordering::Relaxed),
            )) / n,
        )
    }

    /// Rate of the last `fraction` of handler completions over the rate of the first `fraction`.
    pub fn decay_ratio(&self, fraction: f64) -> Option<f64> {
        let n = self.count().min(self.stamps.len());
        let window = ((n as f64) * fraction) as usize;
        if window < 2 || n < 2 * window {
            return None;
        }
        let at = |i: usize| self.stamps[i].load(Ordering::Relaxed) as f64 / 1e9;
        // The first window is clocked from the first fetch, so a slow first batch counts.
        let first_start = self
            .first()
            .map(|f| f.duration_since(self.origin).as_secs_f64())
            .unwrap_or_else(|| at(0));
        let first_span = at(window - 1) - first_start;
        let last_span = at(n - 1) - at(n - window - 1);
        if first_span <= 0.0 || last_span <= 0.0 {
            return None;
        }
        Some((window as f64 / last_span) / (window as f64 / first_span))
    }
}

/// Diagnostics of a drain, in ms: the handlers' mean duration, the idle slot time per job (what
/// the queue added between one handler and the next) and the tail (last handler end to the
/// database showing every job done).
#[derive(Debug, Clone, Copy, Default)]
pub struct HandlerTiming {
    pub handler_mean_ms: Option<f64>,
    pub idle_per_job_ms: Option<f64>,
    pub tail_ms: Option<f64>,
}

/// A deadline for draining `jobs` that only trips on a drain far slower than anything measured.
pub fn drain_deadline(jobs: usize, per_job: Duration, concurrency: usize) -> Instant {
    let by_rate = Duration::from_secs_f64(jobs as f64 / DRAIN_DEADLINE_MIN_RATE);
    let by_handler = per_job.mul_f64(jobs as f64 / concurrency.max(1) as f64 * 3.0);
    Instant::now() + by_rate.max(by_handler) + DRAIN_DEADLINE_SLACK
}

/// Polls `check` every `every` until it says yes; an error or the deadline ends the wait.
pub async fn wait_for<F, Fut>(
    deadline: Instant,
    every: Duration,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("deadline passed");
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until every handler has run (memory only), then until the database says all `jobs`
/// are done (the batched completions landed). Returns the instant the last completion was seen.
pub async fn wait_drained<F, Fut>(
    progress: &Progress,
    jobs: usize,
    deadline: Instant,
    mut done_count: F,
) -> anyhow::Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<i64>>,
{
    while progress.count() < jobs {
        if Instant::now() > deadline {
            bail!("deadline: only {} of {jobs} handlers ran", progress.count());
        }
        tokio::time::sleep(PROGRESS_POLL_INTERVAL).await;
    }
    loop {
        let done = done_count().await.context("counting done jobs")?;
        if done >= jobs as i64 {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "deadline: every handler ran but only {done} of {jobs} jobs are done in the database"
            );
        }
        tokio::time::sleep(DONE_POLL_INTERVAL).await;
    }
}

/// The bench's own connection to a bench database for counting done jobs, kept apart from the
/// pool under test (so it never takes one of its connections) and excluded by pid from the
/// backend sampler.
pub struct DoneCounter {
    conn: tokio::sync::Mutex<PgConnection>,
    pub pid: i32,
    sql: &'static str,
}

impl DoneCounter {
    pub async fn connect(url: &str, sql: &'static str) -> anyhow::Result<Self> {
        let mut conn = timed(PgConnection::connect(url))
            .await
            .context("connecting the done counter")?;
        let pid: i32 =
            timed(sqlx::query_scalar("select pg_backend_pid()").fetch_one(&mut conn)).await?;
        Ok(Self {
            conn: tokio::sync::Mutex::new(conn),
            pid,
            sql,
        })
    }

    pub async fn count(&self) -> anyhow::Result<i64> {
        let mut conn = self.conn.lock().await;
        timed(sqlx::query_scalar(self.sql).fetch_one(&mut *conn)).await
    }

    pub async fn close(self) {
        self.conn.into_inner().close().await.ok();
    }
}

/// Counts the client backends connected to one database every [`BACKEND_SAMPLE_INTERVAL`], from
/// its own connection to *another* database, so it never counts itself. Autovacuum workers and
/// other background processes are not counted: only what clients hold.
pub struct BackendSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicI64>,
    samples: Arc<AtomicU64>,
    /// Milliseconds after the start when the peak was first seen.
    peak_at: Arc<AtomicU64>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl BackendSampler {
    /// `exclude_pids`: the bench's own connections to `database` (its done counter).
    pub async fn start(
        admin_url: &str,
        database: &str,
        exclude_pids: &[i32],
    ) -> anyhow::Result<Self> {
        let mut conn = timed(PgConnection::connect(admin_url))
            .await
            .context("connecting the backend sampler")?;
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicI64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let database = database.to_owned();
        let exclude = exclude_pids.to_vec();
        let peak_at = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let task = tokio::spawn({
            let (stop, peak, samples, peak_at) =
                (stop.clone(), peak.clone(), samples.clone(), peak_at.clone());
            async move {
                let mut tick = tokio::time::interval(BACKEND_SAMPLE_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let n: i64 = timed(
                        sqlx::query_scalar(
                            "select count(*) from pg_stat_activity \
                             where datname = $1 and backend_type = 'client backend' \
                             and pid <> all($2)",
                        )
                        .bind(&database)
                        .bind(&exclude)
                        .fetch_one(&mut conn),
                    )
                    .await?;
                    if peak.fetch_max(n, Ordering::Relaxed) < n {
                        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                        peak_at.store(ms, Ordering::Relaxed);
                    }
                    samples.fetch_add(1, Ordering::Relaxed);
                }
                conn.close().await.ok();
                Ok(())
            }
        });
        Ok(Self {
            stop,
            peak,
            samples,
            peak_at,
            task,
        })
    }

    /// Stops sampling and returns the peak count.
    pub async fn finish(self) -> anyhow::Result<i64> {
        Ok(self.finish_with_time().await?.0)
    }

    /// Stops sampling and returns the peak count and when (ms after start) it was first seen.
    pub async fn finish_with_time(self) -> anyhow::Result<(i64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        match tokio::time::timeout(STATEMENT_TIMEOUT, self.task).await {
            Ok(Ok(r)) => r.context("backend sampler")?,
            Ok(Err(e)) => bail!("backend sampler task failed: {e}"),
            Err(_) => bail!("backend sampler did not stop"),
        }
        if self.samples.load(Ordering::Relaxed) == 0 {
            bail!("backend sampler took no sample");
        }
        Ok((
            self.peak.load(Ordering::Relaxed),
            self.peak_at.load(Ordering::Relaxed),
        ))
    }
}

/// Transactions (commits + rollbacks) the server has counted for `database`, read once no client
/// is connected to it, so every backend has flushed its statistics (a backend flushes at exit).
/// Used as a diagnostic: transactions per job during a drain.
pub async fn quiesced_transactions(admin_url: &str, database: &str) -> anyhow::Result<i64> {
    let mut conn = timed(PgConnection::connect(admin_url))
        .await
        .context("connecting to read transaction counts")?;
    let deadline = Instant::now() + QUIESCE_TIMEOUT;
    loop {
        let n: i64 = timed(
            sqlx::query_scalar(
                "select count(*) from pg_stat_activity \
                 where datname = $1 and backend_type = 'client backend'",
            )
            .bind(database)
            .fetch_one(&mut conn),
        )
        .await?;
        if n == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{n} clients still connected to {database} after {QUIESCE_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The stats of a backend that just exited are flushed by its exit; ask for a fresh snapshot.
    timed(sqlx::query("select pg_stat_clear_snapshot()").execute(&mut conn)).await?;
    let n: i64 = timed(
        sqlx::query_scalar(
            "select xact_commit + xact_rollback from pg_stat_database where datname = $1",
        )
        .bind(database)
        .fetch_one(&mut conn),
    )
    .await?;
    conn.close().await.ok();
    Ok(n)
}

/// Peak resident set size (`VmHWM`) of a process, in MiB: `"self"` or a pid.
pub fn peak_rss_mb(pid: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM line")?;
    Ok(kb / 1024.0)
}

/// Resets this process's peak RSS (`VmHWM`) to its current RSS (Linux: `5` into `clear_refs`),
/// so a later [`peak_rss_mb`] covers only what ran since.
pub fn reset_peak_rss() -> anyhow::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
        .context("resetting VmHWM via /proc/self/clear_refs")
}

/// Jobs per second over a span.
pub fn rate(jobs: usize, from: Instant, to: Instant) -> f64 {
    let secs = to.saturating_duration_since(from).as_secs_f64();
    if secs <= 0.0 {
        return f64::INFINITY;
    }
    jobs as f64 / secs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decay_ratio_is_one_for_a_steady_rate() {
        let p = Progress::new(1000);
        let t = p.started();
        for _ in 0..1000 {
            p.finished(t);
            std::thread::sleep(Duration::from_micros(50));
        }
        let r = p.decay_ratio(0.1).unwrap();
        assert!(r > 0.3 && r < 3.0, "ratio {r}");
    }

    #[test]
    fn reads_own_peak_rss() {
        let mb = peak_rss_mb("self").unwrap();
        assert!(mb > 0.5, "{mb}");
    }
}
