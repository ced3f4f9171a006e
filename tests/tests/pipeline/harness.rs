//! The harness pieces the fault suite relies on that the other pipeline tests do not exercise:
//! the mock LLM as a child process (stats over HTTP, the outage switch), a worker recovering
//! from an LLM outage, SIGTERM and SIGKILL of children.

use std::time::Duration;

use insights_e2e::defaults::{CONDITION_TIMEOUT, SHUTDOWN_TIMEOUT};
use insights_e2e::mock::requests_for;
use insights_e2e::{E2eDb, Insights, MockLlmProcess, WorkerEnv, wait_until};

use crate::support::{enqueue, work_until_idle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_llm_child_serves_the_worker_and_an_outage_is_ridden_out() {
    let db = E2eDb::create("e2e_harness_mock").await.unwrap();
    db.seed(12, 31).await.unwrap();
    let mut mock = MockLlmProcess::start(&["--latency-ms", "20"])
        .await
        .unwrap();
    let env = WorkerEnv::new(&db.url, &mock.base_url()).concurrency(4);
    let expected = db.expected_leads().await.unwrap();
    enqueue(&env, &[]).await;
    work_until_idle(&env).await;
    db.assert_pipeline_done().await.unwrap();
    let stats = mock.stats().await.unwrap();
    for lead in &expected {
        assert_eq!(requests_for(&stats, *lead), 1, "lead {lead}: {stats:?}");
    }

    // LLM outage: the job fails while it lasts and succeeds once it is over.
    mock.set_outage(true).await.unwrap();
    let lead = expected[0];
    db.add_message(lead, "Are you still there?").await.unwrap();
    assert_eq!(enqueue(&env, &[]).await.enqueued, 1);
    let mut worker = Insights::with_env(&env)
        .arg("work")
        .spawn("work-llm-outage")
        .unwrap();
    wait_until(CONDITION_TIMEOUT, "requests during the outage", || async {
        mock.stats().await.is_ok_and(|s| s.outage >= 1)
    })
    .await
    .unwrap();
    mock.set_outage(false).await.unwrap();
    wait_until(
        Duration::from_secs(90),
        "the lead written after the outage",
        || async { db.candidate_ids().await.is_ok_and(|c| c.is_empty()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", worker.describe()));
    assert!(worker.is_running(), "{}", worker.describe());
    let status = worker.terminate(SHUTDOWN_TIMEOUT).await.unwrap();
    assert!(status.success(), "{}", worker.describe());
    db.assert_pipeline_done().await.unwrap();
    let stats = mock.stats().await.unwrap();
    assert!(stats.per_lead[&lead.to_string()].outage >= 1, "{stats:?}");

    mock.proc.kill().await.unwrap();
    assert!(!mock.proc.is_running());
    assert!(mock.stats().await.is_err(), "the mock is gone");
}
