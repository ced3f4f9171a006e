//! Connection economy: 32 jobs wait on a slow LLM while the app pool (max 2) holds nothing and
//! no backend sits idle in a transaction; the same pipeline behind pgbouncer.

use std::time::{Duration, Instant};

use insights_e2e::defaults::DRAIN_TIMEOUT;
use insights_e2e::mock::start_mock;
use insights_e2e::pooler::{pooler_url, start_pgbouncer};
use insights_e2e::{BackendSample, E2eDb, InProcessWorker, Insights, WorkerEnv};
use insights_llm::LlmConfig;
use insights_llm::mock::{MockHandle, MockLlmConfig};

use crate::support::{enqueue, field};

const LEADS: usize = 200;
const CONCURRENCY: u64 = 32;
const POOL_MAX: u32 = 2;
const LLM_LATENCY: Duration = Duration::from_millis(300);
/// Samples taken while the mock holds every slot's request.
const SAMPLES_WANTED: usize = 5;

/// One observation made while the mock held `CONCURRENCY` requests (checked before and after).
#[derive(Debug, Clone, Copy)]
struct HeldSample {
    in_flight: u64,
    backends: BackendSample,
    /// Store connections checked out (None when the worker runs out of process).
    checked_out: Option<u64>,
}

/// Samples until `SAMPLES_WANTED` samples were taken with the mock holding `CONCURRENCY`
/// requests, or the run ends.
async fn sample_while_held(
    db: &E2eDb,
    mock: &MockHandle,
    store: Option<&insights_store::Store>,
    done: impl Fn() -> bool,
) -> Vec<HeldSample> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut samples = Vec::new();
    while samples.len() < SAMPLES_WANTED && Instant::now() < deadline && !done() {
        if mock.in_flight() >= CONCURRENCY {
            let before = store.map(|s| s.stats().checked_out_now);
            let backends = db.backends().await.unwrap();
            let after = store.map(|s| s.stats().checked_out_now);
            let still = mock.in_flight();
            if still >= CONCURRENCY {
                samples.push(HeldSample {
                    in_flight: still,
                    backends,
                    checked_out: before.zip(after).map(|(a, b)| a.max(b)),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_economy_pool_of_two_serves_32_llm_calls() {
    let db = E2eDb::create("e2e_economy").await.unwrap();
    db.seed(LEADS, 11).await.unwrap();
    db.book_all().await.unwrap();
    let mock = start_mock(MockLlmConfig::with_latency(LLM_LATENCY))
        .await
        .unwrap();
    let env = WorkerEnv::new(&db.url, &mock.base_url())
        .pool_max(POOL_MAX)
        .concurrency(CONCURRENCY as usize);
    let report = enqueue(&env, &[]).await;
    assert_eq!(report.enqueued, LEADS as u64, "{report:?}");

    let settings = env.settings().unwrap();
    let started = Instant::now();
    let worker = InProcessWorker::start(
        &settings,
        LlmConfig::from_settings(&settings, mock.base_url()),
        true,
    )
    .await
    .unwrap();
    let store = worker.store.clone();
    let metrics = worker.metrics.clone();
    let samples = sample_while_held(&db, &mock, Some(&store), || {
        metrics.processed() >= LEADS as u64
    })
    .await;
    let summary = worker.join(DRAIN_TIMEOUT).await.unwrap();
    let wall = started.elapsed();

    let check = db.assert_pipeline_done().await.unwrap();
    let stats = mock.stats();
    let store_stats = store.stats();
    println!(
        "connection economy: {LEADS} leads, concurrency {CONCURRENCY}, pool max {POOL_MAX} (app) + \
         {POOL_MAX} (queue), LLM latency {LLM_LATENCY:?}: wall {wall:.2?}, {:.1} leads/s, \
         mock peak in flight {}, store peak checked out {}, store mean hold {:.2?} over {} \
         transactions, peak pool connections {}, samples while {CONCURRENCY} held: {samples:?}",
        LEADS as f64 / wall.as_secs_f64(),
        stats.peak_in_flight,
        store_stats.peak_checked_out,
        store_stats.mean_hold(),
        store_stats.transactions,
        summary.metrics.peak_backends,
    );

    assert_eq!(check.fresh, LEADS as u64);
    assert_eq!(summary.metrics.written, LEADS as u64, "{summary:?}");
    assert_eq!(summary.metrics.failed, 0, "{summary:?}");
    // One LLM call per lead: nothing was paid twice.
    assert_eq!(stats.total, LEADS as u64);
    assert!(stats.per_lead.values().all(|s| s.requests == 1));
    assert!(
        samples.len() >= 3,
        "the mock never held {CONCURRENCY} requests long enough to sample (peak in flight {})",
        stats.peak_in_flight
    );
    for s in &samples {
        assert!(s.in_flight >= CONCURRENCY, "{s:?}");
        assert_eq!(
            s.backends.idle_in_transaction, 0,
            "a backend sat idle in a transaction while the LLM held every slot: {s:?}"
        );
        assert_eq!(
            s.checked_out,
            Some(0),
            "the store held a connection while the LLM held every slot: {s:?}"
        );
        assert!(s.backends.total <= u64::from(2 * POOL_MAX), "{s:?}");
    }
    // The pools never grew beyond their caps.
    assert!(store_stats.peak_checked_out <= u64::from(POOL_MAX));
    assert!(summary.metrics.peak_backends <= u64::from(2 * POOL_MAX));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_pipeline_behind_pgbouncer_has_no_prepared_statement_errors() {
    let db = E2eDb::create_empty("e2e_pgbouncer").await.unwrap();
    let pgbouncer = start_pgbouncer(POOL_MAX).await.unwrap();
    let url = pooler_url(&pgbouncer, &db.name);
    let mock = start_mock(MockLlmConfig::with_latency(LLM_LATENCY))
        .await
        .unwrap();
    let env = WorkerEnv::new(&url, &mock.base_url())
        .pool_max(POOL_MAX)
        .concurrency(CONCURRENCY as usize);

    // Everything through the pooler: migrate, seed, enqueue, work.
    let migrate = Insights::with_env(&env).arg("migrate").run().await.unwrap();
    assert_eq!(migrate.code(), Some(0), "{}", migrate.describe());
    let seed = Insights::with_env(&env)
        .args(["seed", "--leads", &LEADS.to_string(), "--seed", "12"])
        .run()
        .await
        .unwrap();
    assert_eq!(seed.code(), Some(0), "{}", seed.describe());
    db.book_all().await.unwrap();
    let report = enqueue(&env, &[]).await;
    assert_eq!(report.enqueued, LEADS as u64, "{report:?}");

    let started = Instant::now();
    let mut worker = Insights::with_env(&env)
        .args(["work", "--exit-when-idle", "--json"])
        .spawn("work-pgbouncer")
        .unwrap();
    let mut samples = Vec::new();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while samples.len() < SAMPLES_WANTED && Instant::now() < deadline && worker.is_running() {
        if mock.in_flight() >= CONCURRENCY {
            let backends = db.backends().await.unwrap();
            if mock.in_flight() >= CONCURRENCY {
                samples.push(HeldSample {
                    in_flight: CONCURRENCY,
                    backends,
                    checked_out: None,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let status = worker.wait(DRAIN_TIMEOUT).await.unwrap();
    let wall = started.elapsed();
    assert!(status.success(), "{}", worker.describe());
    // Every log of the run: the commands', the worker's and pgbouncer's own.
    let log = [
        migrate.stderr.as_str(),
        seed.stderr.as_str(),
        &worker.stderr(),
        &pgbouncer.log(),
    ]
    .join("\n");
    let prepared = insights_e2e::prepared_statement_errors(&log);
    let jobs_with_errors: Vec<_> = db
        .jobs(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| !j.errors.is_empty())
        .collect();
    let summary: serde_json::Value = serde_json::from_str(
        worker
            .stdout()
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .expect("work --json printed nothing"),
    )
    .unwrap();
    let counts = db.job_counts().await.unwrap();
    println!(
        "pgbouncer (transaction mode, default_pool_size={POOL_MAX}): {LEADS} leads in {wall:.2?}, \
         jobs {counts:?}, failed {}, connection errors {}, prepared-statement log lines {}, \
         samples while {CONCURRENCY} held: {samples:?}",
        field(&summary, "failed"),
        field(&summary, "connection_errors"),
        prepared.len()
    );

    assert!(
        prepared.is_empty(),
        "prepared-statement errors behind pgbouncer:\n{}",
        prepared.join("\n")
    );
    assert_eq!(field(&summary, "failed"), 0, "{summary}");
    assert!(
        jobs_with_errors.is_empty(),
        "no attempt may fail behind the pooler: {jobs_with_errors:?}"
    );
    assert_eq!(field(&summary, "written"), LEADS as u64, "{summary}");
    assert_eq!(counts.get("completed").copied(), Some(LEADS as u64));
    assert_eq!(counts.get("discarded"), None, "{counts:?}");
    db.assert_pipeline_done().await.unwrap();
    assert_eq!(mock.stats().total, LEADS as u64);
    assert!(!samples.is_empty(), "never sampled with {CONCURRENCY} held");
    for s in &samples {
        assert_eq!(s.backends.idle_in_transaction, 0, "{s:?}");
        // pgbouncer's pool is the only way in.
        assert!(s.backends.total <= u64::from(POOL_MAX), "{s:?}");
    }
}
