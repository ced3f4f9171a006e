//! The one way the queue talks to Postgres: a bounded-time transaction per call, unnamed
//! statements only (`.persistent(false)`), no session state. That is what keeps a single code
//! path correct both directly and behind a transaction-mode pooler.

use std::future::Future;
use std::time::Duration;

use crate::error::QueueError;

pub(crate) fn op_err(op: &'static str) -> impl Fn(sqlx::Error) -> QueueError {
    move |source| QueueError::Database { op, source }
}

/// Runs `fut` (which must open, use and commit its own transaction) within `after`.
pub(crate) async fn with_timeout<T>(
    op: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout(after, fut).await {
        Ok(res) => res,
        Err(_) => Err(QueueError::Timeout { op, after }),
    }
}
