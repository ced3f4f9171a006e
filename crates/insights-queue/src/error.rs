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
    /// Refused by the connection gate: the database did not answer recently and another call
    /// is (or will be) the probe. Nothing was sent.
    #[error(
        "queue {op}: not attempted, the database did not answer recently (next probe in {}ms)",
        retry_in.as_millis()
    )]
    Unavailable {
        op: &'static str,
        retry_in: Duration,
    },
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
            Self::Timeout { .. } | Self::Unavailable { .. } => true,
            Self::Database { source, .. } => is_transient_sqlx(source),
            Self::Encode { .. } | Self::Invalid(_) => false,
        }
    }

    /// Whether the database (or the pooler in front of it) is unreachable or dropped us, as
    /// opposed to answering with an error: what closes the connection gate. A timeout counts (a
    /// blackholed connection looks exactly like one); serialization failures and deadlocks do
    /// not (the server answered).
    pub fn is_connection(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Unavailable { .. } => true,
            Self::Database { source, .. } => is_connection_sqlx(source),
            Self::Encode { .. } | Self::Invalid(_) => false,
        }
    }
}

/// The connection-class subset of [`is_transient_sqlx`] (research/pgbouncer-sqlx.md): I/O,
/// pool timeouts, SQLSTATE class 08 except a non-fatal 08P01 (protocol misuse), 57P01-57P03
/// (the server going away), 53300 (no connection slots), and pgbouncer's own FATAL 08P01s.
pub(crate) fn is_connection_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            !matches!(&*code, "40001" | "40P01") && is_transient_sqlx(e)
        }
        other => is_transient_sqlx(other),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_class() {
        let db = |source| QueueError::Database { op: "t", source };
        let io = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        for e in [
            db(io()),
            db(sqlx::Error::PoolTimedOut),
            db(sqlx::Error::PoolClosed),
            QueueError::Timeout {
                op: "t",
                after: Duration::from_secs(1),
            },
            QueueError::Unavailable {
                op: "t",
                retry_in: Duration::from_millis(250),
            },
        ] {
            assert!(e.is_connection() && e.is_transient(), "{e}");
        }
        for e in [
            db(sqlx::Error::RowNotFound),
            db(sqlx::Error::Protocol("x".into())),
            QueueError::Invalid("x".into()),
        ] {
            assert!(!e.is_connection() && !e.is_transient(), "{e}");
        }
    }
}
