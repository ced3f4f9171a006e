//! The mock LLM, in process (`insights_llm::mock`) or as an `insights mock-llm` child, and
//! helpers to read its per-lead statistics.

use std::time::Duration;

use anyhow::{Context, bail};
use insights_llm::mock::{MockHandle, MockLlmConfig, MockStats, serve_mock};
use insights_testkit::{free_port, wait_until};

use crate::bin::Insights;
use crate::defaults::CONDITION_TIMEOUT;
use crate::proc::Proc;

/// Serves the mock on an ephemeral loopback port in the current runtime.
pub async fn start_mock(cfg: MockLlmConfig) -> anyhow::Result<MockHandle> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the mock LLM")?;
    Ok(serve_mock(listener, cfg)?)
}

/// Waits until `mock` has at least `n` requests in flight (sleeping in their latency).
pub async fn wait_in_flight(mock: &MockHandle, n: u64, within: Duration) -> anyhow::Result<()> {
    wait_until(within, &format!("{n} LLM requests in flight"), || async {
        mock.in_flight() >= n
    })
    .await
}

/// `insights mock-llm` as a child process (for suites that restart or isolate it).
#[derive(Debug)]
pub struct MockLlmProcess {
    pub proc: Proc,
    pub port: u16,
    http: reqwest::Client,
}

impl MockLlmProcess {
    /// Starts it on a free port with extra flags (`--latency-ms 100`, `--fail-rate 0.3`, ...)
    /// and waits until `/healthz` answers.
    pub async fn start(extra_args: &[&str]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let proc = Insights::new()
            .args(["mock-llm", "--bind", &format!("127.0.0.1:{port}")])
            .args(extra_args.iter().copied())
            .spawn("mock-llm")?;
        let me = Self {
            proc,
            port,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        let url = format!("{}/healthz", me.root());
        let http = me.http.clone();
        wait_until(CONDITION_TIMEOUT, "mock-llm /healthz", || {
            let http = http.clone();
            let url = url.clone();
            async move {
                http.get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await
        .with_context(|| me.proc.describe())?;
        Ok(me)
    }

    fn root(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What `INSIGHTS_LLM_BASE_URL` should be.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.root())
    }

    pub async fn stats(&self) -> anyhow::Result<MockStats> {
        fetch_stats(&self.http, &self.root()).await
    }

    /// Turns the outage (every request 503) on or off.
    pub async fn set_outage(&self, on: bool) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/control/outage?on={on}", self.root()))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("outage switch answered {}", r.status());
        }
        Ok(())
    }
}

/// `GET <root>/stats` of a mock (in another process, or in process through HTTP).
pub async fn fetch_stats(http: &reqwest::Client, root: &str) -> anyhow::Result<MockStats> {
    let r = http
        .get(format!("{root}/stats"))
        .send()
        .await
        .context("GET /stats")?;
    if !r.status().is_success() {
        bail!("/stats answered {}", r.status());
    }
    r.json().await.context("decoding /stats")
}

/// Requests the mock received for `lead_id` (0 when it never asked).
pub fn requests_for(stats: &MockStats, lead_id: i64) -> u64 {
    stats
        .per_lead
        .get(&lead_id.to_string())
        .map_or(0, |s| s.requests)
}
