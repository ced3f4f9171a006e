//! The producer through the binary: dedupe of a second run, nothing left once done, and exactly
//! the lead that got a new message.

use insights_e2e::mock::{requests_for, start_mock};
use insights_e2e::{E2eDb, WorkerEnv};
use insights_llm::mock::MockLlmConfig;

use crate::support::{enqueue, field, work_until_idle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_is_deduplicated_then_empty_then_exactly_the_changed_lead() {
    let db = E2eDb::create("e2e_producer").await.unwrap();
    db.seed(40, 21).await.unwrap();
    let mock = start_mock(MockLlmConfig::default()).await.unwrap();
    let env = WorkerEnv::new(&db.url, &mock.base_url()).concurrency(8);
    let expected = db.expected_leads().await.unwrap();
    assert!(expected.len() > 10, "seed gave too few booked leads");

    // Twice in a row: the second run finds the same candidates and enqueues nothing.
    let first = enqueue(&env, &[]).await;
    assert_eq!(first.candidates, expected.len() as u64, "{first:?}");
    assert_eq!(first.enqueued, expected.len() as u64, "{first:?}");
    assert_eq!(first.duplicates, 0, "{first:?}");
    let second = enqueue(&env, &[]).await;
    assert_eq!(second.enqueued, 0, "{second:?}");
    assert_eq!(second.duplicates, expected.len() as u64, "{second:?}");
    assert_eq!(
        db.job_counts().await.unwrap().get("available").copied(),
        Some(expected.len() as u64)
    );

    // Every lead done: no candidates, nothing enqueued.
    let (summary, _) = work_until_idle(&env).await;
    assert_eq!(
        field(&summary, "written"),
        expected.len() as u64,
        "{summary}"
    );
    db.assert_pipeline_done().await.unwrap();
    let dry = enqueue(&env, &["--dry-run"]).await;
    assert_eq!(dry.candidates, 0, "{dry:?}");
    let after = enqueue(&env, &[]).await;
    assert_eq!((after.candidates, after.enqueued), (0, 0), "{after:?}");

    // A new message on one lead: exactly that lead.
    let lead = expected[expected.len() / 2];
    let sent_at = db
        .add_message(lead, "One more question: can we move the call?")
        .await
        .unwrap();
    assert_eq!(db.candidate_ids().await.unwrap(), vec![lead]);
    let dry = enqueue(&env, &["--dry-run"]).await;
    assert_eq!(dry.candidates, 1, "{dry:?}");
    let report = enqueue(&env, &[]).await;
    assert_eq!((report.candidates, report.enqueued), (1, 1), "{report:?}");
    let available = db.jobs(Some("available")).await.unwrap();
    assert_eq!(available.len(), 1, "{available:?}");
    assert_eq!(available[0].payload["lead_id"].as_i64(), Some(lead));

    // Worked again: the insight now covers the new message, and only that lead paid again.
    let before = mock.stats();
    let (summary, _) = work_until_idle(&env).await;
    assert_eq!(field(&summary, "written"), 1, "{summary}");
    assert_eq!(db.insight_source(lead).await.unwrap(), Some(sent_at));
    db.assert_pipeline_done().await.unwrap();
    let stats = mock.stats();
    assert_eq!(stats.total, before.total + 1);
    assert_eq!(requests_for(&stats, lead), 2);
}
