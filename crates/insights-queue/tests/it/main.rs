//! Integration tests of insights-queue against the real Postgres (one binary), one module per
//! behaviour: schema migration, enqueue and dedupe, fetch, leases, failure outcomes, the
//! connection gate, outages, pgbouncer, the operations API and dashboard, graceful shutdown and
//! a killed worker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod crash;
mod enqueue;
mod failures;
mod fetch;
mod gate;
mod leases;
mod migrate;
mod ops;
mod outage;
mod pooler;
mod schema_upgrade;
mod shutdown;
mod snooze;
