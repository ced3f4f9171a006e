//! The app's data on Postgres: pool construction (direct or behind a transaction pooler), the
//! domain migrations, the three domain statements (candidate query, conversation load, insight
//! upsert) with a batched conversation loader and a batched insight writer, store errors and
//! backon retries, the connection gate in front of every call, connection hold
//! instrumentation, deterministic seeding, and the read-only introspection `insights check`
//! runs (`check`: describe, plan, never write). Error classification, backoff, the gate and the
//! migration runner are insights-pg's; the store only applies them.
//!
//! It must not know about the job queue or the LLM. Every call is bounded by a timeout and never
//! keeps a connection beyond its own statement.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod batcher;
pub mod check;
pub mod defaults;
pub mod error;
pub mod loader;
pub mod migrate;
pub mod pool;
pub mod retry;
pub mod seed;
pub mod statements;
pub mod stats;
pub mod store;
mod tls;
pub mod writer;

pub use error::StoreError;
pub use insights_pg::{Backoff, ConnectionGate, ErrorClass, GatePolicy, GateStats, Jitter};
pub use loader::{ConversationLoader, LoaderConfig};
pub use migrate::{MigrateReport, migrate};
pub use pool::{PoolSettings, PoolerMode, connect, connect_lazy};
pub use retry::{RetryPolicy, retry_transient};
pub use seed::{SeedReport, seed};
pub use statements::DomainStatements;
pub use stats::StoreStats;
pub use store::{LoadedLead, Store, StoreOptions, UpsertOutcome};
pub use writer::{InsightWriter, WriterConfig};
