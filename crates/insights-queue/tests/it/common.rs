//! Shared test harness: a fresh database with the queue schema, a test handler whose behaviour
//! is chosen by the payload, and a worker runner with graceful stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::WorkerBuilderExt;
use apalis_core::error::{AbortError, BoxDynError, RetryAfterError, WorkerError};
use apalis_core::task::attempt::Attempt;
use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::builder::WorkerBuilder;
use insights_queue::{BackendOptions, Permanent, Queue, QueueConfig, Snooze};
use insights_testkit::TestDb;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const Q: &str = "test";

/// What the test handler does with a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Behave {
    Ok,
    Sleep { ms: u64 },
    PanicOnce,
    SleepOnce { ms: u64 },
    Fail,
    Abort,
    Permanent,
    RetryAfter { ms: u64 },
    SnoozeOnce { ms: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestJob {
    pub n: i64,
    pub behave: Behave,
}

impl TestJob {
    pub fn ok(n: i64) -> Self {
        Self {
            n,
            behave: Behave::Ok,
        }
    }
    pub fn with(n: i64, behave: Behave) -> Self {
        Self { n, behave }
    }
}

/// What handlers observed, shared with the test.
pub struct TestState {
    /// App-side pool for the effects and overlap tables (direct).
    pub app: PgPool,
    pub started: AtomicUsize,
    pub finished: AtomicUsize,
    pub in_handler: AtomicUsize,
    pub max_in_handler: AtomicUsize,
    /// Overlap violations seen (a PK conflict on running_now).
    pub overlaps: AtomicUsize,
    /// Effects already present (a job's effect applied twice).
    pub duplicate_effects: AtomicUsize,
    /// attempt numbers seen per job n.
    pub attempts: Mutex<HashMap<i64, Vec<usize>>>,
    /// Other errors from the handler's own bookkeeping.
    pub errors: Mutex<Vec<String>>,
}

impl TestState {
    pub fn new(app: PgPool) -> Arc<Self> {
        Arc::new(Self {
            app,
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            in_handler: AtomicUsize::new(0),
            max_in_handler: AtomicUsize::new(0),
            overlaps: AtomicUsize::new(0),
            duplicate_effects: AtomicUsize::new(0),
            attempts: Mutex::new(HashMap::new()),
            errors: Mutex::new(Vec::new()),
        })
    }

    pub fn attempts_of(&self, n: i64) -> Vec<usize> {
        self.attempts
            .lock()
            .unwrap()
            .get(&n)
            .cloned()
            .unwrap_or_default()
    }
}

pub struct Env {
    pub db: TestDb,
    pub pool: PgPool,
    pub queue: Queue,
}

/// A config for tests: short intervals so behaviour shows within seconds.
pub fn test_config() -> QueueConfig {
    QueueConfig {
        poll_interval: Duration::from_millis(50),
        lease_duration: Duration::from_secs(5),
        heartbeat_interval: Duration::from_millis(500),
        rescue_interval: Duration::from_millis(500),
        retry_backoff: insights_queue::Backoff {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(2),
            ..insights_queue::defaults::RETRY_BACKOFF
        },
        ..QueueConfig::default()
    }
}

pub async fn pool_for(url: &str, max: u32) -> PgPool {
    let opts: PgConnectOptions = url.parse().unwrap();
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts.extra_float_digits(None))
        .await
        .unwrap()
}

/// Fresh database + queue schema + app tables used by the handler.
pub async fn env(label: &str, config: QueueConfig) -> Env {
    let db = TestDb::create(label).await.unwrap();
    let pool = pool_for(&db.url, 10).await;
    insights_queue::migrate(&pool).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE running_now (job_id bigint PRIMARY KEY);
         CREATE TABLE effects (job_id bigint PRIMARY KEY, n bigint NOT NULL, at timestamptz DEFAULT now());",
    )
    .execute(&pool)
    .await
    .unwrap();
    let queue = Queue::new(pool.clone(), config);
    Env { db, pool, queue }
}

pub async fn handler(
    job: TestJob,
    id: TaskId,
    attempt: Attempt,
    st: Data<Arc<TestState>>,
) -> Result<(), BoxDynError> {
    let job_id = id.as_int().unwrap_or_default() as i64;
    let attempt = attempt.current();
    st.started.fetch_add(1, Ordering::SeqCst);
    let now = st.in_handler.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_in_handler.fetch_max(now, Ordering::SeqCst);
    st.attempts
        .lock()
        .unwrap()
        .entry(job.n)
        .or_default()
        .push(attempt);
    let inserted =
        sqlx::query("INSERT INTO running_now (job_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(job_id)
            .execute(&st.app)
            .await;
    match inserted {
        Ok(r) if r.rows_affected() == 0 => {
            st.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        Ok(_) => {}
        Err(e) => st.errors.lock().unwrap().push(e.to_string()),
    }
    let res: Result<(), BoxDynError> = async {
        match &job.behave {
            Behave::Ok => Ok(()),
            Behave::Sleep { ms } => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                Ok(())
            }
            Behave::PanicOnce => {
                if attempt == 1 {
                    let _ = sqlx::query("DELETE FROM running_now WHERE job_id = $1")
                        .bind(job_id)
                        .execute(&st.app)
                        .await;
                    panic!("test panic on attempt 1");
                }
                Ok(())
            }
            Behave::SleepOnce { ms } => {
                if attempt == 1 {
                    tokio::time::sleep(Duration::from_millis(*ms)).await;
                }
                Ok(())
            }
            Behave::Fail => Err("always fails".into()),
            Behave::Abort => Err(AbortError::new("aborted by handler").into()),
            Behave::Permanent => Err(Permanent::new("bad input").into()),
            Behave::RetryAfter { ms } => {
                if attempt == 1 {
                    Err(RetryAfterError::new("429", Duration::from_millis(*ms)).into())
                } else {
                    Ok(())
                }
            }
            Behave::SnoozeOnce { ms } => {
                if attempt == 1 && st.attempts_of(job.n).len() == 1 {
                    Err(Snooze::new(Duration::from_millis(*ms), "app db down").into())
                } else {
                    Ok(())
                }
            }
        }
    }
    .await;
    let res = match res {
        Ok(()) => {
            let r = sqlx::query(
                "INSERT INTO effects (job_id, n) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(job_id)
            .bind(job.n)
            .execute(&st.app)
            .await;
            match r {
                Ok(r) => {
                    if r.rows_affected() == 0 {
                        st.duplicate_effects.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(())
                }
                // The effect did not happen: the job must not complete.
                Err(e) => {
                    st.errors.lock().unwrap().push(e.to_string());
                    Err(e.into())
                }
            }
        }
        Err(e) => Err(e),
    };
    let _ = sqlx::query("DELETE FROM running_now WHERE job_id = $1")
        .bind(job_id)
        .execute(&st.app)
        .await;
    st.in_handler.fetch_sub(1, Ordering::SeqCst);
    st.finished.fetch_add(1, Ordering::SeqCst);
    res
}

pub struct RunningWorker {
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<Result<(), WorkerError>>,
    pub control: insights_queue::FetchControl,
    pub stats: insights_queue::WorkerStats,
    #[allow(dead_code)]
    pub worker_id: String,
}

impl RunningWorker {
    /// Graceful stop; returns what the worker returned.
    pub async fn stop(mut self) -> Result<(), WorkerError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("worker did not stop within 60 s")
            .expect("worker task panicked")
    }
}

pub struct WorkerSpec {
    pub name: String,
    pub concurrency: usize,
    pub timeout: Option<Duration>,
    pub run_rescuer: bool,
    /// Paused before the worker starts, so not even its first fetch can run.
    pub paused_for: Option<Duration>,
}

impl WorkerSpec {
    pub fn new(name: &str, concurrency: usize) -> Self {
        Self {
            name: name.into(),
            concurrency,
            timeout: None,
            run_rescuer: true,
            paused_for: None,
        }
    }
}

pub fn spawn_worker(queue: &Queue, spec: WorkerSpec, st: Arc<TestState>) -> RunningWorker {
    let backend = queue.worker_backend::<TestJob>(
        Q,
        BackendOptions {
            concurrency: spec.concurrency,
            run_rescuer: spec.run_rescuer,
        },
    );
    let control = backend.fetch_control();
    if let Some(d) = spec.paused_for {
        control.pause_for(d);
    }
    let worker_id = backend.worker_id().to_owned();
    let stats = backend.stats();
    let worker = WorkerBuilder::new(spec.name.as_str())
        .backend(backend)
        .concurrency(spec.concurrency)
        .catch_panic()
        .option_layer(spec.timeout.map(tower::timeout::TimeoutLayer::new))
        .data(st)
        .build(handler);
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
        Ok::<(), std::io::Error>(())
    }));
    RunningWorker {
        stop: Some(tx),
        handle,
        control,
        stats,
        worker_id,
    }
}

pub async fn state_count(pool: &PgPool, state: &str) -> i64 {
    sqlx::query("SELECT count(*) FROM insights_queue.jobs WHERE state = $1")
        .bind(state)
        .fetch_one(pool)
        .await
        .map(|r| r.get::<i64, _>(0))
        .unwrap_or(-1)
}

pub async fn effects(pool: &PgPool) -> i64 {
    sqlx::query("SELECT count(*) FROM effects")
        .fetch_one(pool)
        .await
        .map(|r| r.get::<i64, _>(0))
        .unwrap_or(-1)
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
