//! The LLM endpoint refuses connections for a minute in the middle of a run, with
//! `INSIGHTS_MAX_ATTEMPTS=2`: no job is discarded (an outage snoozes, it does not spend
//! attempts), the breaker holds the worker to a few probe connections per second and `/readyz`
//! to not ready while it lasts, and every lead is written once the endpoint is back.

use std::time::{Duration, Instant};

use insights_e2e::defaults::{CONDITION_TIMEOUT, DRAIN_TIMEOUT};
use insights_e2e::mock::start_mock;
use insights_e2e::{E2eDb, Insights, WorkerEnv, wait_until};
use insights_llm::mock::MockLlmConfig;
use insights_testkit::{FaultProxy, ProxyMode, free_port};

use crate::support::enqueue;

const LEADS: usize = 200;
const CONCURRENCY: usize = 16;
const OUTAGE: Duration = Duration::from_secs(60);
/// Time the breaker gets to trip after the endpoint went away: in-flight calls spend the
/// client's inline retries (a few seconds) first.
const TRIP_WITHIN: Duration = Duration::from_secs(15);
/// "A handful" of connection attempts per second once the breaker holds.
const MAX_PROBES_PER_SECOND: f64 = 5.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_long_llm_outage_discards_nothing_and_probes_gently() {
    let db = E2eDb::create("e2e_llm_outage").await.unwrap();
    db.seed(LEADS, 31).await.unwrap();
    db.book_all().await.unwrap();
    let mock = start_mock(MockLlmConfig::with_latency(Duration::from_millis(400)))
        .await
        .unwrap();
    let proxy = FaultProxy::start(mock.addr).await.unwrap();
    let http_port = free_port().unwrap();
    let env = WorkerEnv::new(&db.url, &format!("http://127.0.0.1:{}/v1", proxy.port()))
        .concurrency(CONCURRENCY)
        .set("INSIGHTS_MAX_ATTEMPTS", 2)
        .set("INSIGHTS_HTTP_BIND", format!("127.0.0.1:{http_port}"));
    let report = enqueue(&env, &[]).await;
    assert_eq!(report.enqueued, LEADS as u64, "{report:?}");

    let mut worker = Insights::with_env(&env)
        .args(["work", "--exit-when-idle", "--json"])
        .spawn("work-llm-outage")
        .unwrap();
    wait_until(
        CONDITION_TIMEOUT,
        "a first share of insights written",
        || async { db.insight_count().await.unwrap_or(0) >= 30 },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", worker.describe()));

    proxy.set_mode(ProxyMode::Reset);
    let outage_start = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let readyz = format!("http://127.0.0.1:{http_port}/readyz");
    let mut ready_while_held = Vec::new();
    let mut probes = 0;
    while outage_start.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if outage_start.elapsed() < TRIP_WITHIN {
            continue;
        }
        let status = http.get(&readyz).send().await.map(|r| r.status().as_u16());
        probes += 1;
        if !matches!(status, Ok(503)) {
            ready_while_held.push((outage_start.elapsed(), status.map_err(|e| e.to_string())));
        }
    }
    let held_from = outage_start + TRIP_WITHIN;
    let attempts = proxy.attempts_between(held_from, None);
    let per_second = attempts as f64 / (OUTAGE - TRIP_WITHIN).as_secs_f64();
    let written_during = db.insight_count().await.unwrap();
    proxy.set_mode(ProxyMode::Pass);
    let outage_end = Instant::now();
    println!(
        "LLM outage {OUTAGE:?}: {attempts} connection attempts after the first {TRIP_WITHIN:?} \
         ({per_second:.2}/s), /readyz probed {probes} times, {written_during} leads written before"
    );
    assert!(
        ready_while_held.is_empty(),
        "/readyz not 503 while the endpoint was down: {ready_while_held:?}"
    );
    assert!(
        per_second <= MAX_PROBES_PER_SECOND,
        "{per_second:.2} connection attempts per second during the outage"
    );

    let status = worker.wait(DRAIN_TIMEOUT).await.unwrap();
    assert!(status.success(), "{}", worker.describe());
    println!(
        "drained {:?} after the endpoint came back",
        outage_end.elapsed()
    );
    let counts = db.job_counts().await.unwrap();
    assert_eq!(counts.get("discarded"), None, "{counts:?}");
    assert_eq!(counts.get("completed"), Some(&(LEADS as u64)), "{counts:?}");
    db.assert_pipeline_done().await.unwrap();
    assert!(
        db.jobs(None).await.unwrap().iter().all(|j| j.attempt <= 2),
        "attempts beyond the maximum"
    );
}
