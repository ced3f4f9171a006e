use std::time::Duration;

use insights_core::{DatabaseUrl, INSIGHTS_QUEUE, LeadKey, Settings};
use insights_llm::mock::{MockHandle, MockLlmConfig, serve_mock};
use insights_queue::Queue;
use insights_store::{Store, StoreOptions};
use insights_testkit::TestDb;
use insights_worker::metrics::Metrics;
use insights_worker::producer::{EnqueueRequest, enqueue};
use insights_worker::runner::{RunOptions, WorkSummary, WorkerParts, run_worker_with};
use url::Url;

/// Bound on one worker run: generous for a loaded 2-core machine.
const RUN_LIMIT: Duration = Duration::from_secs(120);

struct Env {
    _db: TestDb,
    settings: Settings,
    store: Store,
    queue: Queue,
    mock: MockHandle,
}

async fn setup(label: &str, leads: u64, mock: MockLlmConfig) -> Env {
    let db = TestDb::create(label).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = serve_mock(listener, mock).unwrap();
    let settings = Settings {
        database_url: Some(DatabaseUrl::new(db.url.clone())),
        llm_base_url: Some(Url::parse(&mock.base_url()).unwrap()),
        concurrency: 16,
        db_pool_max: 2,
        ..Settings::default()
    };
    insights_worker::admin::migrate(&settings, &insights_core::Profile::builtin().unwrap())
        .await
        .unwrap();
    let ps = insights_store::PoolSettings::app_from_settings(&settings).unwrap();
    let pool = insights_store::connect(&ps).await.unwrap();
    if leads > 0 {
        insights_store::seed(&pool, leads as usize, 7)
            .await
            .unwrap();
    }
    let store = Store::new(pool.clone(), StoreOptions::for_pool(&ps));
    let queue = Queue::new(pool, insights_queue::QueueConfig::default());
    Env {
        _db: db,
        settings,
        store,
        queue,
        mock,
    }
}

impl Env {
    async fn enqueue(&self, lead_ids: Vec<i64>) -> insights_worker::EnqueueReport {
        enqueue(
            &self.store,
            &self.queue,
            EnqueueRequest {
                limit: 1_000_000,
                lead_ids: lead_ids.into_iter().map(LeadKey::Int).collect(),
                dry_run: false,
            },
        )
        .await
        .unwrap()
    }

    async fn work(&self) -> WorkSummary {
        let mut options = RunOptions::from_settings(&self.settings).unwrap();
        options.exit_when_idle = true;
        options.http_bind = None;
        let llm = insights_llm::LlmClient::new(insights_llm::LlmConfig::from_settings(
            &self.settings,
            self.mock.base_url(),
        ))
        .unwrap();
        tokio::time::timeout(
            RUN_LIMIT,
            run_worker_with(WorkerParts {
                store: self.store.clone(),
                queue: self.queue.clone(),
                llm,
                metrics: Metrics::new(),
                options,
                backend_sampler: None,
                stop: None,
            }),
        )
        .await
        .expect("worker did not drain the queue in time")
        .unwrap()
    }

    async fn booked_ids(&self) -> Vec<i64> {
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .candidate_keys(after.as_ref(), 1000)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.clone());
            ids.extend(page.into_iter().map(|k| match k {
                LeadKey::Int(id) => id,
                LeadKey::Text(t) => panic!("text key {t} from the built-in statements"),
            }));
        }
        ids
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_candidate_gets_one_insight_and_redelivery_costs_nothing() {
    let env = setup("worker_pipeline", 60, MockLlmConfig::default()).await;
    let candidates = env.booked_ids().await;
    assert!(!candidates.is_empty());

    let first = env.enqueue(Vec::new()).await;
    assert_eq!(first.candidates, candidates.len() as u64);
    assert_eq!(first.enqueued, candidates.len() as u64);
    assert_eq!(first.duplicates, 0);
    // Enqueued twice in a row: the second run enqueues nothing.
    let second = env.enqueue(Vec::new()).await;
    assert_eq!(second.enqueued, 0);
    assert_eq!(second.duplicates, candidates.len() as u64);

    let summary = env.work().await;
    assert_eq!(summary.metrics.written, candidates.len() as u64);
    assert_eq!(summary.metrics.failed, 0);
    assert_eq!(env.mock.stats().total, candidates.len() as u64);
    let counts = env.queue.counts(INSIGHTS_QUEUE).await.unwrap();
    assert_eq!(counts.completed, candidates.len() as u64);
    // Done: no candidates left.
    assert!(env.booked_ids().await.is_empty());

    // A forced re-delivery of a fresh lead completes as skipped without an LLM call.
    let forced = env.enqueue(vec![candidates[0]]).await;
    assert_eq!(forced.enqueued, 1);
    let again = env.work().await;
    assert_eq!(again.metrics.skipped_fresh, 1);
    assert_eq!(again.metrics.llm_calls, 0);
    assert_eq!(env.mock.stats().total, candidates.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ids_must_exist_and_be_booked() {
    let env = setup("worker_explicit", 20, MockLlmConfig::default()).await;
    let booked = env.booked_ids().await;
    let report = env.enqueue(vec![booked[0], booked[0], 9_999_999]).await;
    assert_eq!(report.candidates, 1, "{report:?}");
    assert_eq!(report.enqueued, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_discard_the_job_with_the_reason() {
    let mock = MockLlmConfig {
        malformed_rate: 1.0,
        ..MockLlmConfig::default()
    };
    let env = setup("worker_malformed", 5, mock).await;
    let booked = env.booked_ids().await;
    let report = env.enqueue(vec![booked[0]]).await;
    assert_eq!(report.enqueued, 1);
    let summary = env.work().await;
    assert_eq!(summary.metrics.discarded, 1);
    assert_eq!(summary.metrics.written, 0);
    let jobs = env
        .queue
        .list(
            INSIGHTS_QUEUE,
            Some(insights_queue::JobState::Discarded),
            10,
            0,
        )
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let err = jobs[0].last_error.clone().unwrap_or_default();
    assert!(err.contains("malformed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_fails_fast_with_one_line() {
    let settings = Settings {
        database_url: Some(DatabaseUrl::new("postgres://postgres@127.0.0.1:1/none")),
        llm_base_url: Some(Url::parse("http://127.0.0.1:9/v1").unwrap()),
        ..Settings::default()
    };
    let opts = RunOptions::from_settings(&settings).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), insights_worker::run_worker(opts))
        .await
        .expect("start-up must fail fast, not hang")
        .unwrap_err();
    assert!(!err.is_config());
    let msg = err.to_string();
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}
