//! A provider-like request quota (the mock meters requests per second and answers 429
//! `rate_limit_exceeded` with `retry-after-ms` and `x-ratelimit-*` headers) far below what two
//! workers at concurrency 32 ask for: every job completes, none is discarded, and a job that
//! only ever met rate limits keeps its first attempt (waiting out a rate limit is a snooze).

use std::time::Duration;

use insights_e2e::defaults::DRAIN_TIMEOUT;
use insights_e2e::mock::start_mock;
use insights_e2e::{E2eDb, Insights, WorkerEnv};
use insights_llm::mock::{MockLlmConfig, RequestBudget};

use crate::support::enqueue;

const LEADS: usize = 150;
const CONCURRENCY: usize = 32;
/// Requests the mock answers per second: two workers at concurrency 32 ask for hundreds.
const BUDGET_PER_SECOND: u64 = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_budget_far_below_demand_discards_nothing_and_spends_no_attempt() {
    let db = E2eDb::create("e2e_rate_budget").await.unwrap();
    db.seed(LEADS, 21).await.unwrap();
    db.book_all().await.unwrap();
    let mock = start_mock(MockLlmConfig {
        latency: Duration::from_millis(20),
        request_budget: Some(RequestBudget {
            requests: BUDGET_PER_SECOND,
            per: Duration::from_secs(1),
        }),
        ..MockLlmConfig::default()
    })
    .await
    .unwrap();
    let env = WorkerEnv::new(&db.url, &mock.base_url()).concurrency(CONCURRENCY);
    let report = enqueue(&env, &[]).await;
    assert_eq!(report.enqueued, LEADS as u64, "{report:?}");

    let work = |label: &'static str| {
        let cmd = Insights::with_env(&env).args(["work", "--exit-when-idle", "--json"]);
        async move {
            let out = cmd.run_within(DRAIN_TIMEOUT).await.unwrap();
            assert_eq!(out.code(), Some(0), "{label} failed: {}", out.describe());
            out
        }
    };
    let (a, b) = tokio::join!(work("worker a"), work("worker b"));
    assert!(!a.stderr.contains("panicked") && !b.stderr.contains("panicked"));

    let stats = mock.stats();
    println!(
        "request budget {BUDGET_PER_SECOND}/s: {} requests, {} answered, {} rate limited",
        stats.total, stats.ok, stats.rate_limited
    );
    assert!(
        stats.rate_limited > LEADS as u64,
        "the budget must bite: {stats:?}"
    );
    let counts = db.job_counts().await.unwrap();
    assert_eq!(counts.get("discarded"), None, "{counts:?}");
    assert_eq!(counts.get("completed"), Some(&(LEADS as u64)), "{counts:?}");
    db.assert_pipeline_done().await.unwrap();
    // The mock injects nothing but rate limits: every job finished on its first attempt.
    let jobs = db.jobs(None).await.unwrap();
    let respent: Vec<_> = jobs.iter().filter(|j| j.attempt != 1).collect();
    assert!(
        respent.is_empty(),
        "attempts spent on rate limits: {respent:?}"
    );
    let snoozed = jobs
        .iter()
        .filter(|j| j.errors.iter().any(|e| e.contains("rate limited")))
        .count();
    println!("{snoozed} jobs waited out a rate limit in the queue");
}
