//! Integration tests of insights-queue against the real Postgres (one binary). Module names
//! follow the numbered items of issue 2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod crash;
mod snooze;
mod t1_migrate;
mod t2_enqueue;
mod t3_fetch;
mod t4_leases;
mod t5_failures;
mod t6_gate;
mod t6_outage;
mod t7_pooler;
mod t8_ops;
mod t9_shutdown;
