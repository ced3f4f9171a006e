use insights_store::UpsertOutcome;

use crate::support::{env, lead, record, summary_of};

#[tokio::test]
async fn upsert_only_overwrites_with_newer_source() {
    let e = env("store_upsert").await;
    let p = &e.pool;
    lead(p, 1, true).await;
    let s = &e.store;
    assert_eq!(
        s.upsert_insight(&record(1, 10, "first")).await.unwrap(),
        UpsertOutcome::Written
    );
    assert_eq!(
        s.upsert_insight(&record(1, 10, "same source"))
            .await
            .unwrap(),
        UpsertOutcome::StaleIgnored
    );
    assert_eq!(
        s.upsert_insight(&record(1, 5, "older")).await.unwrap(),
        UpsertOutcome::StaleIgnored
    );
    assert_eq!(summary_of(p, 1).await.as_deref(), Some("first"));
    assert_eq!(
        s.upsert_insight(&record(1, 11, "newer")).await.unwrap(),
        UpsertOutcome::Written
    );
    assert_eq!(summary_of(p, 1).await.as_deref(), Some("newer"));
    let (objections, req): (serde_json::Value, Option<String>) = sqlx::query_as(
        "SELECT objections, llm_request_id FROM lead_conversation_insights WHERE lead_id = 1",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(objections, serde_json::json!(["price"]));
    assert_eq!(req.as_deref(), Some("req-1"));

    // Lead gone: nothing written, no error.
    assert_eq!(
        s.upsert_insight(&record(42, 1, "ghost")).await.unwrap(),
        UpsertOutcome::LeadGone
    );

    // A batch with two records for one lead: the newer wins, the other is reported stale.
    lead(p, 2, true).await;
    let out = s
        .upsert_batch(&[
            record(2, 3, "b-new"),
            record(2, 1, "b-old"),
            record(1, 12, "a"),
            record(77, 1, "gone"),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            UpsertOutcome::Written,
            UpsertOutcome::StaleIgnored,
            UpsertOutcome::Written,
            UpsertOutcome::LeadGone
        ]
    );
    assert_eq!(summary_of(p, 2).await.as_deref(), Some("b-new"));
    assert_eq!(summary_of(p, 1).await.as_deref(), Some("a"));
    assert_eq!(s.stats().checked_out_now, 0);
}
