//! The one classification of database errors, used by the queue and the store alike.
//!
//! The rule, per SQLSTATE and severity (Postgres and pgbouncer in transaction mode):
//! - **Connection**: the database or the pooler is unreachable, dropped us, or refuses new
//!   connections for now. I/O errors, pool timeouts (every pooled connection busy or none can be
//!   opened), SQLSTATE class 08 (but 08P01 only as FATAL: pgbouncer reports its own trouble,
//!   `server_login_retry`, `query_wait_timeout`, `max_client_conn`, as FATAL 08P01), the server
//!   going away (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now) and 53300
//!   (too many connections). Retry after a wait; this is what closes a connection gate and
//!   trips a circuit breaker.
//! - **Transient**: the server answered, but the same call may succeed later: 57014 (statement
//!   cancelled, e.g. a `statement_timeout` set on the role or database, as on Supabase), 55P03
//!   (lock not available under `lock_timeout`), 40001 (serialization failure), 40P01
//!   (deadlock), 53200 (out of memory) and 53100 (disk full).
//! - **Permanent**: everything else, including a non-fatal 08P01 (a prepared-statement mix-up
//!   behind a transaction pooler: retrying would hide a configuration bug).

use sqlx::postgres::{PgDatabaseError, PgSeverity};

/// What retrying a failed database call can achieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database or pooler is unreachable or refusing connections: wait, retry, and count it
    /// towards an outage.
    Connection,
    /// The server answered with an error that goes away by itself: wait and retry.
    Transient,
    /// Retrying gives the same answer.
    Permanent,
}

impl ErrorClass {
    /// Retrying later may succeed (connection trouble included).
    pub fn is_transient(self) -> bool {
        !matches!(self, ErrorClass::Permanent)
    }

    /// The database (or the pooler in front of it) is unreachable or refused us.
    pub fn is_connection(self) -> bool {
        matches!(self, ErrorClass::Connection)
    }
}

/// The class of a sqlx error.
pub fn classify(error: &sqlx::Error) -> ErrorClass {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => ErrorClass::Connection,
        sqlx::Error::Database(db) => match db.try_downcast_ref::<PgDatabaseError>() {
            Some(pg) => classify_sqlstate(pg.code(), pg.severity()),
            None => ErrorClass::Permanent,
        },
        _ => ErrorClass::Permanent,
    }
}

/// The SQLSTATE part of the rule, separate so it can be table-tested without a server.
pub fn classify_sqlstate(code: &str, severity: PgSeverity) -> ErrorClass {
    let fatal = matches!(severity, PgSeverity::Fatal | PgSeverity::Panic);
    match code {
        "08P01" if !fatal => ErrorClass::Permanent,
        c if c.starts_with("08") => ErrorClass::Connection,
        "57P01" | "57P02" | "57P03" | "53300" => ErrorClass::Connection,
        "57014" | "55P03" | "40001" | "40P01" | "53200" | "53100" => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// The SQLSTATE of a sqlx error, when the server sent one.
pub fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::{Connection, Permanent, Transient};

    #[test]
    fn sqlstate_table() {
        use PgSeverity::{Error, Fatal};
        let cases = [
            // pgbouncer: server_login_retry, query_wait_timeout, max_client_conn.
            ("08P01", Fatal, Connection),
            // A bind message mismatch behind a transaction pooler: a configuration bug.
            ("08P01", Error, Permanent),
            ("08006", Fatal, Connection),
            ("08001", Error, Connection),
            ("08003", Error, Connection),
            ("57P01", Fatal, Connection),
            ("57P02", Fatal, Connection),
            ("57P03", Fatal, Connection),
            ("53300", Fatal, Connection),
            ("57014", Error, Transient),
            ("55P03", Error, Transient),
            ("40001", Error, Transient),
            ("40P01", Error, Transient),
            ("53200", Error, Transient),
            ("53100", Error, Transient),
            ("57P04", Fatal, Permanent),
            ("26000", Error, Permanent),
            ("42P05", Error, Permanent),
            ("23505", Error, Permanent),
            ("42P01", Error, Permanent),
            ("42601", Error, Permanent),
            ("22P02", Error, Permanent),
        ];
        for (code, severity, class) in cases {
            assert_eq!(
                classify_sqlstate(code, severity),
                class,
                "{code} {severity:?}"
            );
        }
    }

    #[test]
    fn driver_errors() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert_eq!(classify(&io), Connection);
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Connection);
        assert_eq!(classify(&sqlx::Error::PoolClosed), Connection);
        assert_eq!(classify(&sqlx::Error::WorkerCrashed), Connection);
        assert_eq!(classify(&sqlx::Error::RowNotFound), Permanent);
        assert_eq!(classify(&sqlx::Error::Protocol("x".into())), Permanent);
        assert_eq!(sqlstate(&sqlx::Error::PoolTimedOut), None);
    }

    #[test]
    fn classes_answer_both_questions() {
        assert!(Connection.is_transient() && Connection.is_connection());
        assert!(Transient.is_transient() && !Transient.is_connection());
        assert!(!Permanent.is_transient() && !Permanent.is_connection());
    }
}
