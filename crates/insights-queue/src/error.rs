//! Errors of the queue itself, and the markers a handler returns to steer a job's fate.

use std::time::Duration;

/// An error from a queue operation. Every variant says which operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {op}: database error: {source}")]
    Database {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("queue {op}: no answer from the database within {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("queue {op}: payload could not be encoded: {source}")]
    Encode {
        op: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("queue: invalid argument: {0}")]
    Invalid(String),
}

impl QueueError {
    /// Whether retrying later may succeed (connection trouble, timeouts, serialization
    /// failures), as opposed to a bug or bad input.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Database { source, .. } => is_transient_sqlx(source),
            Self::Encode { .. } | Self::Invalid(_) => false,
        }
    }
}

pub(crate) fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("08") && code != "08P01"
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "53300")
                // pgbouncer reports its own trouble (server login retry, query_wait_timeout,
                // max_client_conn) as FATAL 08P01.
                || (code == "08P01" && db.message().contains("FATAL"))
                || db.message().contains("server login has been failing")
                || db.message().contains("query_wait_timeout")
                || db.message().contains("no more connections allowed")
        }
        _ => false,
    }
}

/// Handler error: the job can never succeed; discard it and keep this error.
#[derive(Debug, thiserror::Error)]
#[error("permanent failure: {reason}")]
pub struct Permanent {
    pub reason: String,
}

impl Permanent {
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// Handler error: not the job's fault (say the application database is down); run it again after
/// `delay` without consuming an attempt.
#[derive(Debug, thiserror::Error)]
#[error("snoozed for {delay:?}: {reason}")]
pub struct Snooze {
    pub delay: Duration,
    pub reason: String,
}

impl Snooze {
    pub fn new(delay: Duration, reason: impl Into<String>) -> Self {
        Self {
            delay,
            reason: reason.into(),
        }
    }
}
