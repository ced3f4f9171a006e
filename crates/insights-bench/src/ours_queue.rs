//! Our queue (insights-queue) under the same scenarios as the baseline.

use anyhow::bail;

use crate::scenario::{DrainOutcome, DrainSpec};

pub async fn drain(_label: &str, _spec: DrainSpec) -> anyhow::Result<DrainOutcome> {
    bail!("insights-queue not wired yet")
}

pub async fn enqueue(_jobs: usize) -> anyhow::Result<f64> {
    bail!("insights-queue not wired yet")
}
