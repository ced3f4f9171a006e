//! Every deadline and default of the harness, named once. Deadlines are generous: the suites run
//! on a loaded 2-core machine next to other builds.

use std::time::Duration;

/// Bound on a short CLI command (`migrate`, `seed`, `enqueue`, `jobs show`, a start-up failure).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a worker run that drains a test queue (`work --exit-when-idle`).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(150);
/// How long a SIGTERMed worker may take to finish in-flight jobs and exit.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(45);
/// Bound on waiting for a condition inside a test (a job state, an in-flight count).
pub const CONDITION_TIMEOUT: Duration = Duration::from_secs(60);
/// `application_name` of the harness's own connections, so backend sampling leaves them out.
pub const HARNESS_APPLICATION_NAME: &str = "insights-e2e";
/// Connections of the harness's own pool per test database.
pub const HARNESS_POOL_MAX: u32 = 2;
/// `RUST_LOG` of spawned binaries unless a test sets its own.
pub const CHILD_RUST_LOG: &str = "info";
/// Server-side `statement_timeout` of the harness's own connections: a query stuck behind a
/// lock fails the test with a message instead of hanging it.
pub const HARNESS_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait for a connection of the harness's own pool.
pub const HARNESS_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
