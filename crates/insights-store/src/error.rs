//! Store errors and their classification, exactly per research/pgbouncer-sqlx.md ("Classification
//! rule that held"): SQLSTATE class 08 and 57P01-57P03 with severity FATAL, I/O errors,
//! `PoolTimedOut`, `PoolClosed`, 40001 and 40P01 are transient; 08P01 with severity ERROR is
//! protocol misuse (a configuration bug); everything else is permanent. A client-side timeout is
//! transient and counts as a connection error (a blackholed connection looks exactly like that).

use std::time::Duration;

use sqlx::postgres::{PgDatabaseError, PgSeverity};

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Infrastructure trouble that goes away by itself: retry with backoff.
    Transient,
    /// Retrying the same call gives the same answer: do not retry.
    Permanent,
}

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
    /// One line, for the CLI: "cannot reach database at host:port: <reason>".
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
    #[error(
        "migration {version} ({name}) was changed after it was applied (checksum {applied} in the database, {embedded} in this binary)"
    )]
    MigrationChanged {
        version: i64,
        name: String,
        applied: String,
        embedded: String,
    },
    #[error("the insight writer has shut down")]
    WriterClosed,
    #[error("the conversation loader has shut down")]
    LoaderClosed,
    /// The same failure reported to every caller whose record was in a failed batch.
    #[error("{message}")]
    Shared {
        message: String,
        class: ErrorClass,
        connection: bool,
    },
}

impl StoreError {
    pub(crate) fn sqlx(op: &'static str, source: sqlx::Error) -> Self {
        StoreError::Sqlx { op, source }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Timeout { .. } | StoreError::Unavailable { .. } => ErrorClass::Transient,
            StoreError::Sqlx { source, .. } => classify(source).0,
            StoreError::Connect { class, .. } | StoreError::Shared { class, .. } => *class,
            StoreError::Config(_)
            | StoreError::Decode { .. }
            | StoreError::MigrationChanged { .. }
            | StoreError::WriterClosed
            | StoreError::LoaderClosed => ErrorClass::Permanent,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The database (or the pooler in front of it) is unreachable or dropped us: what the
    /// worker's circuit breaker counts.
    pub fn is_connection(&self) -> bool {
        match self {
            StoreError::Timeout { .. } | StoreError::Unavailable { .. } => true,
            StoreError::Sqlx { source, .. } => classify(source).1,
            StoreError::Connect { class, .. } => *class == ErrorClass::Transient,
            StoreError::Shared { connection, .. } => *connection,
            _ => false,
        }
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
            connection: self.is_connection(),
        }
    }

    /// The SQLSTATE, when the server sent one.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            StoreError::Sqlx { source, .. } => source
                .as_database_error()
                .and_then(|e| e.code())
                .map(|c| c.into_owned()),
            _ => None,
        }
    }
}

/// `(class, is_connection)` of a sqlx error.
pub fn classify(error: &sqlx::Error) -> (ErrorClass, bool) {
    use ErrorClass::{Permanent, Transient};
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            (Transient, true)
        }
        sqlx::Error::Database(db) => match db.try_downcast_ref::<PgDatabaseError>() {
            Some(pg) => classify_sqlstate(pg.code(), pg.severity()),
            None => (Permanent, false),
        },
        _ => (Permanent, false),
    }
}

/// The SQLSTATE part of the rule, separate so it can be tested without a server.
pub fn classify_sqlstate(code: &str, severity: PgSeverity) -> (ErrorClass, bool) {
    use ErrorClass::{Permanent, Transient};
    let fatal = matches!(severity, PgSeverity::Fatal | PgSeverity::Panic);
    match code {
        // A prepared-statement mix-up behind a transaction pooler: retrying hides a config bug.
        "08P01" if !fatal => (Permanent, false),
        c if c.starts_with("08") => (Transient, true),
        "57P01" | "57P02" | "57P03" if fatal => (Transient, true),
        "40001" | "40P01" => (Transient, false),
        _ => (Permanent, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::{Permanent, Transient};

    #[test]
    fn sqlstate_table() {
        let cases = [
            ("08P01", PgSeverity::Fatal, Transient, true), // server_login_retry, query_wait_timeout
            ("08P01", PgSeverity::Error, Permanent, false), // bind message mismatch
            ("08006", PgSeverity::Fatal, Transient, true),
            ("08001", PgSeverity::Error, Transient, true),
            ("57P01", PgSeverity::Fatal, Transient, true),
            ("57P02", PgSeverity::Fatal, Transient, true),
            ("57P03", PgSeverity::Fatal, Transient, true),
            ("57P01", PgSeverity::Error, Permanent, false),
            ("57014", PgSeverity::Error, Permanent, false),
            ("40001", PgSeverity::Error, Transient, false),
            ("40P01", PgSeverity::Error, Transient, false),
            ("26000", PgSeverity::Error, Permanent, false),
            ("42P05", PgSeverity::Error, Permanent, false),
            ("23505", PgSeverity::Error, Permanent, false),
            ("42P01", PgSeverity::Error, Permanent, false),
        ];
        for (code, sev, class, conn) in cases {
            assert_eq!(
                classify_sqlstate(code, sev),
                (class, conn),
                "{code} {sev:?}"
            );
        }
    }

    #[test]
    fn driver_errors() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert_eq!(classify(&io), (Transient, true));
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), (Transient, true));
        assert_eq!(classify(&sqlx::Error::PoolClosed), (Transient, true));
        assert_eq!(classify(&sqlx::Error::RowNotFound), (Permanent, false));
        assert_eq!(
            classify(&sqlx::Error::Protocol("x".into())),
            (Permanent, false)
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
    }
}
