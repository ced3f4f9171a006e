use insights_store::UpsertOutcome;

use crate::support::{BigintKeys, all_candidates, env, lead, message, record};

#[tokio::test]
async fn candidate_semantics_and_keyset_paging() {
    let e = env("store_candidates").await;
    let p = &e.pool;
    // 1: booked, messages, no insight -> candidate (missing)
    lead(p, 1, true).await;
    message(p, 1, 1, "hi").await;
    // 2: booked, insight older than the newest message -> candidate (stale)
    lead(p, 2, true).await;
    message(p, 2, 1, "hi").await;
    message(p, 2, 5, "more").await;
    assert_eq!(
        e.store.upsert_insight(&record(2, 1, "old")).await.unwrap(),
        UpsertOutcome::Written
    );
    // 3: booked, insight covers the newest message -> not a candidate (fresh)
    lead(p, 3, true).await;
    message(p, 3, 7, "hi").await;
    e.store
        .upsert_insight(&record(3, 7, "fresh"))
        .await
        .unwrap();
    // 4: not booked -> never
    lead(p, 4, false).await;
    message(p, 4, 1, "hi").await;
    // 5: booked, no messages -> nothing to summarise
    lead(p, 5, true).await;

    assert_eq!(all_candidates(&e.store, 100).await, vec![1, 2]);

    // A new message on the fresh lead makes exactly that lead a candidate again.
    message(p, 3, 9, "one more thing").await;
    assert_eq!(all_candidates(&e.store, 100).await, vec![1, 2, 3]);
    // After writing insights for all, nothing is left.
    for (id, m) in [(1, 1), (2, 5), (3, 9)] {
        e.store.upsert_insight(&record(id, m, "s")).await.unwrap();
    }
    assert!(all_candidates(&e.store, 100).await.is_empty());

    // Keyset paging: pages of 7 over 30 candidates give each id exactly once, in order.
    for id in 100..130 {
        lead(p, id, true).await;
        message(p, id, 1, "x").await;
    }
    let paged = all_candidates(&e.store, 7).await;
    assert_eq!(paged, (100..130).collect::<Vec<_>>());
    let first = e.store.candidate_ids(Some(110), 3).await.unwrap();
    assert_eq!(first, vec![111, 112, 113]);
    assert_eq!(e.store.stats().checked_out_now, 0);
}

#[tokio::test]
async fn candidate_query_walks_the_partial_index() {
    let e = env("store_explain").await;
    insights_store::seed(&e.pool, 20_000, 7).await.unwrap();
    // Give half the leads an insight so both sides of the anti-join have data.
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM leads WHERE id % 2 = 0")
        .fetch_all(&e.pool)
        .await
        .unwrap();
    for chunk in ids.chunks(1000) {
        let recs: Vec<_> = chunk
            .iter()
            .map(|&id| record(id, 100_000_000, "s"))
            .collect();
        e.store.upsert_batch(&recs).await.unwrap();
    }
    sqlx::raw_sql("ANALYZE leads, lead_conversation_insights")
        .execute(&e.pool)
        .await
        .unwrap();
    let sql = insights_store::DomainStatements::default().candidates;
    let plan: serde_json::Value =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {sql}")))
            .bind(5_000i64)
            .bind(1_000i64)
            .fetch_one(&e.pool)
            .await
            .unwrap();
    let text = plan.to_string();
    assert!(
        text.contains("leads_booked_id_idx"),
        "the walk over booked leads should use the partial index: {text}"
    );
    assert!(
        !text.contains(r#""Node Type":"Seq Scan""#),
        "no sequential scan expected: {text}"
    );
    // Page semantics on the seeded data: odd ids only (even ones are fresh), booked ones.
    let page = e.store.candidate_ids(Some(5_000), 1_000).await.unwrap();
    assert_eq!(page.len(), 1_000);
    assert!(page.iter().all(|id| id % 2 == 1 && *id > 5_000));
}
