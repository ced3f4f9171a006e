//! The one way the queue talks to Postgres: a bounded-time transaction per call, unnamed
//! statements only (`.persistent(false)`), no session state. That is what keeps a single code
//! path correct both directly and behind a transaction-mode pooler.
//!
//! The one exception is the fetch, the hot path of a busy worker: it is a single simple-protocol
//! statement (`sqlx::raw_sql`) carrying only literals that we quote ourselves. The simple
//! protocol sends text and gets rows in one message exchange, so there is no unnamed statement
//! a pooler could hand to another client between Parse and Bind, and Postgres runs a lone
//! simple-protocol statement in its own implicit transaction. That saves the BEGIN and COMMIT
//! round trips and the Parse/Describe round trip: one round trip per fetch instead of four.
//! It still goes through [`Db::run`] (same gate and timeout).
//!
//! Every call of the running queue goes through [`Db::run`], so it passes the connection gate
//! first: while the database is presumed down a call fails at once with
//! [`QueueError::Unavailable`] without touching the pool (see `insights_pg::gate`).

use std::future::Future;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::QueueError;
use insights_pg::{ConnectionGate, GatePolicy};

pub(crate) fn op_err(op: &'static str) -> impl Fn(sqlx::Error) -> QueueError {
    move |source| QueueError::Database { op, source }
}

/// The queue's pool behind its connection gate.
#[derive(Debug)]
pub(crate) struct Db {
    pool: PgPool,
    gate: ConnectionGate,
}

impl Db {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            gate: ConnectionGate::new("queue database", GatePolicy::default()),
        }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn gate(&self) -> &ConnectionGate {
        &self.gate
    }

    /// A transaction on a pooled connection; only inside [`Db::run`]. A call still waiting for
    /// a connection when another call finds the database gone gives up rather than add a
    /// connection attempt of its own.
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        tokio::select! {
            tx = self.pool.begin() => tx,
            _ = self.gate.closes() => Err(gate_closed()),
        }
    }

    /// A bare pooled connection, for the one statement that runs without an explicit
    /// transaction: the fetch (see `statements::fetch`). Only inside [`Db::run`].
    pub(crate) async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        tokio::select! {
            conn = self.pool.acquire() => conn,
            _ = self.gate.closes() => Err(gate_closed()),
        }
    }

    /// Runs `fut` (which must open, use and commit its own transaction) within `after`, if the
    /// connection gate lets it through; reports its outcome to the gate.
    pub(crate) async fn run<T>(
        &self,
        op: &'static str,
        after: Duration,
        fut: impl Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        let ticket = self
            .gate
            .enter()
            .map_err(|retry_in| QueueError::Unavailable { op, retry_in })?;
        let res = with_timeout(op, after, fut).await;
        ticket.record(matches!(&res, Err(e) if e.is_connection()));
        res
    }
}

/// A statement built with `sqlx::query` and its binds.
pub(crate) type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// One statement in its own short transaction, through [`Db::run`]: the shape of every
/// operations-API and dashboard call. The statement is sent unnamed (`.persistent(false)`).
impl Db {
    pub(crate) async fn fetch_all_tx(
        &self,
        op: &'static str,
        after: Duration,
        query: PgQuery<'_>,
    ) -> Result<Vec<PgRow>, QueueError> {
        self.run(op, after, async {
            let mut tx = self.begin().await.map_err(op_err(op))?;
            let rows = query
                .persistent(false)
                .fetch_all(&mut *tx)
                .await
                .map_err(op_err(op))?;
            tx.commit().await.map_err(op_err(op))?;
            Ok(rows)
        })
        .await
    }

    pub(crate) async fn fetch_optional_tx(
        &self,
        op: &'static str,
        after: Duration,
        query: PgQuery<'_>,
    ) -> Result<Option<PgRow>, QueueError> {
        self.run(op, after, async {
            let mut tx = self.begin().await.map_err(op_err(op))?;
            let row = query
                .persistent(false)
                .fetch_optional(&mut *tx)
                .await
                .map_err(op_err(op))?;
            tx.commit().await.map_err(op_err(op))?;
            Ok(row)
        })
        .await
    }

    /// Rows affected.
    pub(crate) async fn execute_tx(
        &self,
        op: &'static str,
        after: Duration,
        query: PgQuery<'_>,
    ) -> Result<u64, QueueError> {
        self.run(op, after, async {
            let mut tx = self.begin().await.map_err(op_err(op))?;
            let done = query
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(op_err(op))?;
            tx.commit().await.map_err(op_err(op))?;
            Ok(done.rows_affected())
        })
        .await
    }
}

/// Hands a connection back and waits until it is idle in the pool. sqlx's drop handler does
/// the same in a spawned task (a Sync round trip to test the connection), and a call starting
/// in that window finds no idle connection and opens another one: awaiting it here keeps the
/// queue's backends at the number of its calls in flight. Only inside [`Db::run`], so the
/// round trip is under the same timeout. (`return_to_pool` is public but doc-hidden in sqlx
/// 0.9; if it goes away, dropping the connection is the fallback, at the cost of that window.)
pub(crate) async fn give_back(mut conn: PoolConnection<Postgres>) {
    conn.return_to_pool().await;
}

fn gate_closed() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the database stopped answering while this call waited for a connection",
    ))
}

/// Runs `fut` within `after`.
async fn with_timeout<T>(
    op: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout(after, fut).await {
        Ok(res) => res,
        Err(_) => Err(QueueError::Timeout { op, after }),
    }
}
