//! Store errors. What retrying can achieve is the workspace's one classification
//! (`insights_pg::classify`: connection, transient, permanent); a client-side timeout and a
//! refusal by the connection gate count as connection errors (a blackholed connection looks
//! exactly like a timeout).

use std::time::Duration;

use insights_pg::{ErrorClass, MigrateError, classify};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database call `{op}` timed out after {}ms", after.as_millis())]
    Timeout { op: &'static str, after: Duration },
    /// Refused by the connection gate: the database did not answer recently and another call
    /// is (or will be) the probe. Nothing was sent.
    #[error(
        "database call `{op}` not attempted: the database did not answer recently (next probe in {}ms)",
        retry_in.as_millis()
    )]
    Unavailable {
        op: &'static str,
        retry_in: Duration,
    },
    #[error("database call `{op}` failed: {source}")]
    Sqlx {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// One line, for the CLI: "cannot reach database at <redacted URL> (<variable>): <reason>".
    #[error("cannot reach database at {target}: {reason}")]
    Connect {
        target: String,
        reason: String,
        class: ErrorClass,
    },
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("{op}: unexpected data from the database: {detail}")]
    Decode { op: &'static str, detail: String },
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("the insight writer has shut down")]
    WriterClosed,
    #[error("the conversation loader has shut down")]
    LoaderClosed,
    /// The same failure reported to every caller whose record was in a failed batch.
    #[error("{message}")]
    Shared { message: String, class: ErrorClass },
}

impl StoreError {
    pub(crate) fn sqlx(op: &'static str, source: sqlx::Error) -> Self {
        StoreError::Sqlx { op, source }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Timeout { .. } | StoreError::Unavailable { .. } => ErrorClass::Connection,
            StoreError::Sqlx { source, .. } => classify(source),
            StoreError::Connect { class, .. } | StoreError::Shared { class, .. } => *class,
            StoreError::Migrate(e) => e.class(),
            StoreError::Config(_)
            | StoreError::Decode { .. }
            | StoreError::WriterClosed
            | StoreError::LoaderClosed => ErrorClass::Permanent,
        }
    }

    /// Retrying later may succeed (connection trouble included).
    pub fn is_transient(&self) -> bool {
        self.class().is_transient()
    }

    /// The database (or the pooler in front of it) is unreachable, dropped us or refuses
    /// connections: what the worker's circuit breaker counts.
    pub fn is_connection(&self) -> bool {
        self.class().is_connection()
    }

    /// A copy for fan-out (sqlx errors are not `Clone`) keeping message, class and connection.
    pub fn shared(&self) -> StoreError {
        // A gate refusal stays one, so every caller of a refused batch learns when to come back.
        if let StoreError::Unavailable { op, retry_in } = self {
            return StoreError::Unavailable {
                op,
                retry_in: *retry_in,
            };
        }
        StoreError::Shared {
            message: self.to_string(),
            class: self.class(),
        }
    }

    /// The SQLSTATE, when the server sent one.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            StoreError::Sqlx { source, .. } => insights_pg::sqlstate(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::{Connection, Permanent};

    #[test]
    fn driver_errors() {
        let io = StoreError::sqlx(
            "t",
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        );
        assert_eq!(io.class(), Connection);
        assert_eq!(
            StoreError::sqlx("t", sqlx::Error::RowNotFound).class(),
            Permanent
        );
        let t = StoreError::Timeout {
            op: "load",
            after: Duration::from_secs(1),
        };
        assert!(t.is_transient() && t.is_connection());
        assert_eq!(t.to_string(), "database call `load` timed out after 1000ms");
        assert_eq!(StoreError::WriterClosed.class(), Permanent);
        let refused = StoreError::Unavailable {
            op: "load",
            retry_in: Duration::from_millis(250),
        };
        assert!(refused.is_transient() && refused.is_connection());
        assert!(matches!(
            refused.shared(),
            StoreError::Unavailable { retry_in, .. } if retry_in == Duration::from_millis(250)
        ));
        let e = StoreError::sqlx("candidates", sqlx::Error::PoolTimedOut);
        assert!(e.is_transient() && e.is_connection());
        let fanned = e.shared();
        assert!(matches!(fanned, StoreError::Shared { .. }));
        assert_eq!(fanned.class(), Connection, "a copy keeps the class");
        assert_eq!(fanned.to_string(), e.to_string());
    }
}
