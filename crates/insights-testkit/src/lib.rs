//! Test support shared by every crate's tests: throwaway databases on the local Postgres (and,
//! as the suites grow, pgbouncer instances, throwaway clusters and a TCP fault proxy).
//!
//! It is a dev-dependency only and must never be linked into the production binary. It only
//! drops databases it created itself (names start with [`TEST_DB_PREFIX`]).

mod test_db;

pub use test_db::{TEST_DB_PREFIX, TestDb, admin_url};
