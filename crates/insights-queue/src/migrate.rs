//! The queue's own schema (`insights_queue`): its migrations (`migrations/*.sql` in this crate,
//! embedded at build time) run by the workspace's one migrator (`insights_pg::Migrator`). No
//! extensions, no superuser; safe to run from many processes at once and through a transaction
//! pooler.

use std::time::Duration;

use insights_pg::{MigrateReport, Migration, Migrator};
use sqlx::PgPool;

use crate::error::QueueError;

/// The queue's migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "jobs",
        sql: include_str!("../migrations/0001_jobs.sql"),
    },
    Migration {
        version: 2,
        name: "fetch_functions",
        sql: include_str!("../migrations/0002_fetch_functions.sql"),
    },
    Migration {
        version: 3,
        name: "notify_from_push",
        sql: include_str!("../migrations/0003_notify_from_push.sql"),
    },
    Migration {
        version: 4,
        name: "fetch_generic_plan_async_claim",
        sql: include_str!("../migrations/0004_fetch_generic_plan_async_claim.sql"),
    },
    Migration {
        version: 5,
        name: "add_job",
        sql: include_str!("../migrations/0005_add_job.sql"),
    },
];

/// Bookkeeping of the queue's migrations. Releases before checksums were kept created it with
/// an `integer` version and no checksum column; the migrator adopts that shape in place.
pub const MIGRATIONS_TABLE: &str = "insights_queue.schema_migrations";

/// The queue's migrator: an arbitrary constant lock key shared by every caller, distinct from
/// the domain migrations' key; DDL can wait on locks held by running workers, so it gets more
/// room than a normal call.
pub const MIGRATOR: Migrator = Migrator {
    schema: Some("insights_queue"),
    table: MIGRATIONS_TABLE,
    lock_key: 1_896_814_939_470_127_461,
    timeout: Duration::from_secs(60),
    migrations: MIGRATIONS,
};

/// Creates or upgrades the `insights_queue` schema. Idempotent; concurrent callers wait for
/// each other.
pub async fn migrate(pool: &PgPool) -> Result<MigrateReport, QueueError> {
    Ok(MIGRATOR.run(pool).await?)
}
