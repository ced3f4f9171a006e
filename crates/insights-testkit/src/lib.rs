//! Test support shared by every crate's tests: throwaway databases on the local Postgres,
//! throwaway pgbouncer instances and throwaway Postgres clusters (both run as the `postgres`
//! OS user), a TCP fault proxy, a certificate authority for TLS tests, and a `wait_until`
//! helper.
//!
//! It is a dev-dependency only and must never be linked into the production binary. It only
//! drops databases it created itself (names start with [`TEST_DB_PREFIX`]), and only stops
//! processes it started.

mod cluster;
mod fault_proxy;
mod pgbouncer;
mod proc_util;
mod test_db;
mod tls;
mod wait;

pub use cluster::{Cluster, pg_bin_dir};
pub use fault_proxy::{Attempt, FaultProxy, ProxyMode};
pub use pgbouncer::{ClientTls, PGBOUNCER_BIN, Pgbouncer, PgbouncerOptions};
pub use proc_util::{PG_OS_USER, free_port, wait_for_port};
pub use test_db::{TEST_DB_PREFIX, TestDb, admin_url, replace_database};
pub use tls::TestCa;
pub use wait::wait_until;
