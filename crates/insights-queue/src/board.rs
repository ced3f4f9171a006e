//! [`QueueBoard`]: a read-mostly view of the queue for apalis-board. It implements the traits
//! the board's API needs (`Metrics`, `ListTasks`, `ListAllTasks`, `ListWorkers`, `ListQueues`,
//! `FetchById`, `WireFormatBackend`, and `TaskSink` through `futures::Sink`). It never runs
//! jobs: as a `Backend` it yields nothing.
//!
//! State mapping onto apalis `Status`: available → Pending, scheduled → Queued, running →
//! Running, retryable → Failed (will retry), completed → Done, discarded and cancelled → Killed.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use apalis_core::backend::codec::Codec;
use apalis_core::backend::finalize::Durable;
use apalis_core::backend::{
    Backend, BackendConfig, FetchById, Filter, ListAllTasks, ListQueues, ListTasks, ListWorkers,
    Metrics, QueueInfo, RunningWorker, StatType, Statistic, WireFormatBackend,
};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::metadata::MetadataStore;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::db::op_err;
use crate::error::QueueError;
use crate::job::{JobState, NewJob, StateCounts};
use crate::queue::Queue;

/// JSON codec of the board: the compact form is the stored `jsonb` payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct BoardCodec;

impl<T: Serialize + DeserializeOwned> Codec<T> for BoardCodec {
    type Error = serde_json::Error;
    type Compact = Value;

    fn encode(&self, val: &T) -> Result<Value, serde_json::Error> {
        serde_json::to_value(val)
    }

    fn decode(&self, val: &Value) -> Result<T, serde_json::Error> {
        T::deserialize(val)
    }
}

/// One queue as seen by apalis-board: `ApiBuilder::register(queue_name, queue.board(name))`.
/// `T` is the payload type tasks pushed from the board are checked against.
pub struct QueueBoard<T = Value> {
    queue: Queue,
    name: String,
    codec: BoardCodec,
    unflushed: Vec<Task<Value>>,
    // A Mutex only to make the view `Sync` (the board shares it); polled through `get_mut`.
    flushing: std::sync::Mutex<Option<BoxFuture<'static, Result<(), QueueError>>>>,
    _payload: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for QueueBoard<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBoard")
            .field("queue", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T> Clone for QueueBoard<T> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            name: self.name.clone(),
            codec: BoardCodec,
            unflushed: Vec::new(),
            flushing: std::sync::Mutex::new(None),
            _payload: PhantomData,
        }
    }
}

impl Queue {
    /// A board view of `queue` (see [`QueueBoard`]).
    pub fn board<T>(&self, queue: &str) -> QueueBoard<T> {
        QueueBoard {
            queue: self.clone(),
            name: queue.to_owned(),
            codec: BoardCodec,
            unflushed: Vec::new(),
            flushing: std::sync::Mutex::new(None),
            _payload: PhantomData,
        }
    }
}

pub(crate) fn status_of(state: JobState) -> Status {
    match state {
        JobState::Available => Status::Pending,
        JobState::Scheduled => Status::Queued,
        JobState::Running => Status::Running,
        JobState::Retryable => Status::Failed,
        JobState::Completed => Status::Done,
        JobState::Discarded | JobState::Cancelled => Status::Killed,
    }
}

fn states_of(status: &Status) -> Vec<&'static str> {
    let states: &[JobState] = match status {
        Status::Pending => &[JobState::Available],
        Status::Queued => &[JobState::Scheduled],
        Status::Running => &[JobState::Running],
        Status::Failed => &[JobState::Retryable],
        Status::Done => &[JobState::Completed],
        Status::Killed => &[JobState::Discarded, JobState::Cancelled],
        _ => &[],
    };
    states.iter().map(|s| s.as_str()).collect()
}

const TASK_COLUMNS: &str = "id, queue, state, payload, attempt, max_attempts, priority, dedupe_key, \
    extract(epoch FROM run_at)::bigint AS run_at_s, \
    extract(epoch FROM finalized_at)::bigint AS done_at_s, \
    extract(epoch FROM attempted_at)::bigint AS lock_at_s, locked_by, \
    errors -> -1 ->> 'error' AS last_error";

fn task_from_row(row: &PgRow) -> Result<Task<Value>, sqlx::Error> {
    let to_u64 = |v: Option<i64>| v.and_then(|x| u64::try_from(x).ok());
    let state: String = row.try_get("state")?;
    let state: JobState = state
        .parse()
        .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
    let id: i64 = row.try_get("id")?;
    let attempt: i32 = row.try_get("attempt")?;
    let max_attempts: i32 = row.try_get("max_attempts")?;
    let priority: i16 = row.try_get("priority")?;
    let mut meta = MetadataStore::default();
    let _ = meta.insert("insights_queue.state", state.as_str().to_owned());
    if let Some(err) = row.try_get::<Option<String>, _>("last_error")? {
        let _ = meta.insert("insights_queue.last_error", err);
    }
    let mut b = TaskBuilder::new(row.try_get::<Value, _>("payload")?)
        .task_id(TaskId::from_int(u64::try_from(id).unwrap_or(0)))
        .attempt(usize::try_from(attempt).unwrap_or(0))
        .max_attempts(usize::try_from(max_attempts).unwrap_or(0))
        .priority(usize::try_from(i32::from(priority) - i32::from(i16::MIN)).unwrap_or(0))
        .status(status_of(state))
        .queue(apalis_core::backend::queue::Queue::from(
            row.try_get::<String, _>("queue")?,
        ))
        .run_at_timestamp(to_u64(row.try_get("run_at_s")?).unwrap_or(0))
        .done_at(to_u64(row.try_get("done_at_s")?))
        .lock_at(to_u64(row.try_get("lock_at_s")?))
        .lock_by(row.try_get("locked_by")?)
        .with_metadata(meta);
    if let Some(k) = row.try_get::<Option<String>, _>("dedupe_key")? {
        b = b.idempotency_key(k);
    }
    Ok(b.build())
}

fn stats_of(c: &StateCounts) -> Vec<Statistic> {
    JobState::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| Statistic {
            title: format!("{} jobs", s.as_str()),
            stat_type: StatType::Number,
            value: c.get(*s).to_string(),
            priority: Some(i as u64),
        })
        .collect()
}

impl<T> QueueBoard<T> {
    async fn tasks(
        &self,
        queue: Option<&str>,
        filter: &Filter,
    ) -> Result<Vec<Task<Value>>, QueueError> {
        const OP: &str = "board list tasks";
        let states: Option<Vec<&str>> = filter.status.as_ref().map(states_of);
        let pool = &self.queue.inner.db;
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM insights_queue.jobs \
             WHERE ($1::text IS NULL OR queue = $1) AND ($2::text[] IS NULL OR state = ANY($2)) \
             ORDER BY id DESC LIMIT $3 OFFSET $4"
        );
        let rows = pool
            .fetch_all_tx(
                OP,
                self.queue.inner.config.statement_timeout,
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(queue)
                    .bind(states)
                    .bind(i64::from(filter.limit()))
                    .bind(i64::from(filter.offset())),
            )
            .await?;
        rows.iter()
            .map(task_from_row)
            .collect::<Result<_, _>>()
            .map_err(op_err(OP))
    }

    async fn workers(&self, queue: Option<&str>) -> Result<Vec<RunningWorker>, QueueError> {
        const OP: &str = "board list workers";
        let pool = &self.queue.inner.db;
        let sql = "SELECT id, queue, name, extract(epoch FROM started_at)::bigint AS started, \
                   extract(epoch FROM last_heartbeat)::bigint AS beat \
                   FROM insights_queue.workers WHERE ($1::text IS NULL OR queue = $1) \
                   ORDER BY started_at";
        let rows = pool
            .fetch_all_tx(
                OP,
                self.queue.inner.config.statement_timeout,
                sqlx::query(sql).bind(queue),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RunningWorker {
                    id: r.try_get("id")?,
                    queue: r.try_get("queue")?,
                    backend: "insights-queue".to_owned(),
                    started_at: u64::try_from(r.try_get::<i64, _>("started")?).unwrap_or(0),
                    last_heartbeat: u64::try_from(r.try_get::<i64, _>("beat")?).unwrap_or(0),
                    layers: r.try_get("name")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(op_err(OP))
    }

    async fn queue_names(&self) -> Result<Vec<String>, QueueError> {
        const OP: &str = "board list queues";
        let pool = &self.queue.inner.db;
        let rows = pool
            .fetch_all_tx(
                OP,
                self.queue.inner.config.statement_timeout,
                sqlx::query(
                    "SELECT DISTINCT queue FROM insights_queue.jobs UNION \
                 SELECT queue FROM insights_queue.workers ORDER BY 1",
                ),
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(op_err(OP))
    }

    /// Completed jobs per day over the last 7 days, oldest first.
    async fn activity(&self, queue: &str) -> Result<Vec<usize>, QueueError> {
        const OP: &str = "board activity";
        let pool = &self.queue.inner.db;
        let rows = pool
            .fetch_all_tx(
                OP,
                self.queue.inner.config.statement_timeout,
                sqlx::query(
                    "SELECT d, (SELECT count(*) FROM insights_queue.jobs \
                   WHERE queue = $1 AND state = 'completed' \
                     AND finalized_at >= d AND finalized_at < d + interval '1 day') \
                 FROM generate_series(date_trunc('day', now()) - interval '6 days', \
                                      date_trunc('day', now()), interval '1 day') AS d ORDER BY d",
                )
                .bind(queue),
            )
            .await?;
        rows.iter()
            .map(|r| {
                r.try_get::<i64, _>(1)
                    .map(|n| usize::try_from(n).unwrap_or(0))
            })
            .collect::<Result<_, _>>()
            .map_err(op_err(OP))
    }

    async fn all_counts(&self) -> Result<StateCounts, QueueError> {
        let mut total = StateCounts::default();
        for q in self.queue_names().await? {
            let c = self.queue.counts(&q).await?;
            for s in JobState::ALL {
                total.set(s, total.get(s) + c.get(s));
            }
        }
        Ok(total)
    }
}

impl<T: Send + 'static> Backend for QueueBoard<T> {
    type Task = Task<Value>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Task<Value>, QueueError>>> {
        // A view, not a worker source.
        Poll::Ready(None)
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        Poll::Ready(Ok(()))
    }
}

impl<T: Send + 'static> BackendConfig for QueueBoard<T> {
    type Args = T;
    type Id = i64;
    type Kind = Durable;
    type Config = ();
    type Layer = tower::layer::util::Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        tower::layer::util::Identity::new()
    }
}

impl<T> WireFormatBackend for QueueBoard<T> {
    type Codec = BoardCodec;
    type Compact = Value;

    fn codec(&self) -> &BoardCodec {
        &self.codec
    }
}

impl<T: Send + 'static> FetchById for QueueBoard<T> {
    async fn fetch_by_id(&mut self, task_id: &TaskId) -> Result<Option<Task<Value>>, QueueError> {
        const OP: &str = "board fetch by id";
        let Some(id) = task_id.as_int().and_then(|i| i64::try_from(i).ok()) else {
            return Ok(None);
        };
        let pool = &self.queue.inner.db;
        let sql = format!("SELECT {TASK_COLUMNS} FROM insights_queue.jobs WHERE id = $1");
        let row = pool
            .fetch_optional_tx(
                OP,
                self.queue.inner.config.statement_timeout,
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id),
            )
            .await?;
        row.as_ref()
            .map(task_from_row)
            .transpose()
            .map_err(op_err(OP))
    }
}

impl<T: Send + 'static> ListTasks for QueueBoard<T> {
    async fn list_tasks(&self, filter: &Filter) -> Result<Vec<Task<Value>>, QueueError> {
        self.tasks(Some(&self.name), filter).await
    }
}

impl<T: Send + 'static> ListAllTasks for QueueBoard<T> {
    async fn list_all_tasks(&self, filter: &Filter) -> Result<Vec<Task<Value>>, QueueError> {
        self.tasks(None, filter).await
    }
}

impl<T: Send + 'static> ListWorkers for QueueBoard<T> {
    async fn list_workers(&self) -> Result<Vec<RunningWorker>, QueueError> {
        self.workers(Some(&self.name)).await
    }

    async fn list_all_workers(&self) -> Result<Vec<RunningWorker>, QueueError> {
        self.workers(None).await
    }
}

impl<T: Send + 'static> ListQueues for QueueBoard<T> {
    async fn list_queues(&self) -> Result<Vec<QueueInfo>, QueueError> {
        let mut out = Vec::new();
        for name in self.queue_names().await? {
            let counts = self.queue.counts(&name).await?;
            let workers = self
                .workers(Some(&name))
                .await?
                .into_iter()
                .map(|w| w.id)
                .collect();
            out.push(QueueInfo {
                stats: stats_of(&counts),
                workers,
                activity: self.activity(&name).await?,
                name,
            });
        }
        Ok(out)
    }
}

impl<T: Send + 'static> Metrics for QueueBoard<T> {
    async fn global(&self) -> Result<Vec<Statistic>, QueueError> {
        Ok(stats_of(&self.all_counts().await?))
    }

    async fn fetch_by_queue(&self) -> Result<Vec<Statistic>, QueueError> {
        Ok(stats_of(&self.queue.counts(&self.name).await?))
    }
}

fn new_job_from_task(task: Task<Value>) -> NewJob<Value> {
    let run_at = task
        .run_at()
        .and_then(|s| i64::try_from(s).ok())
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .filter(|t| *t > chrono::Utc::now());
    let dedupe_key = task.idempotency_key().map(str::to_owned);
    let max_attempts = task.max_attempts().and_then(|m| i32::try_from(m).ok());
    NewJob {
        payload: task.args,
        dedupe_key,
        priority: 0,
        run_at,
        max_attempts,
    }
}

fn poll_slot(
    slot: &mut Option<BoxFuture<'static, Result<(), QueueError>>>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), QueueError>> {
    let Some(f) = slot.as_mut() else {
        return Poll::Ready(Ok(()));
    };
    match f.as_mut().poll(cx) {
        Poll::Ready(res) => {
            *slot = None;
            Poll::Ready(res)
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Pushing from the board: tasks are buffered by `start_send` and written by `poll_flush`
/// (one bulk statement).
impl<T> futures::Sink<Task<Value>> for QueueBoard<T> {
    type Error = QueueError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        let slot = self
            .get_mut()
            .flushing
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        poll_slot(slot, cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Task<Value>) -> Result<(), QueueError> {
        self.get_mut().unflushed.push(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        let this = self.get_mut();
        let slot = this.flushing.get_mut().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() && !this.unflushed.is_empty() {
            let jobs: Vec<NewJob<Value>> =
                this.unflushed.drain(..).map(new_job_from_task).collect();
            let queue = this.queue.clone();
            let name = this.name.clone();
            *slot = Some(Box::pin(async move {
                queue.push_bulk(&name, jobs).await.map(|_| ())
            }));
        }
        poll_slot(slot, cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), QueueError>> {
        self.poll_flush(cx)
    }
}
