//! Errors of the queue itself, and the markers a handler returns to steer a job's fate.

use std::time::Duration;

use insights_pg::{ErrorClass, MigrateError, classify};

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
    #[error("queue {0}")]
    Migrate(#[from] MigrateError),
}

impl QueueError {
    /// What retrying can achieve, per the workspace's one classification
    /// (`insights_pg::classify`). A timeout counts as a connection error (a blackholed
    /// connection looks exactly like one), and so does a refusal by the connection gate.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Timeout { .. } | Self::Unavailable { .. } => ErrorClass::Connection,
            Self::Database { source, .. } => classify(source),
            Self::Migrate(e) => e.class(),
            Self::Encode { .. } | Self::Invalid(_) => ErrorClass::Permanent,
        }
    }

    /// Whether retrying later may succeed (connection trouble, timeouts, serialization
    /// failures, statement and lock timeouts), as opposed to a bug or bad input.
    pub fn is_transient(&self) -> bool {
        self.class().is_transient()
    }

    /// Whether the database (or the pooler in front of it) is unreachable, dropped us or
    /// refuses connections, as opposed to answering with an error: what closes the connection
    /// gate.
    pub fn is_connection(&self) -> bool {
        self.class().is_connection()
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

    #[test]
    fn a_changed_migration_is_permanent() {
        let e = QueueError::from(MigrateError::Changed {
            version: 1,
            name: "jobs".into(),
            applied: "a".into(),
            embedded: "b".into(),
        });
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(e.to_string().contains("was changed"), "{e}");
    }
}
