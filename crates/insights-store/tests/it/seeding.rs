use std::time::Instant;

use crate::support::env;

async fn fingerprint(pool: &sqlx::PgPool) -> (i64, i64, String) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM leads), (SELECT count(*) FROM messages),
                md5(string_agg(l.name || l.email || coalesce(l.booked_at::text, '-') || m.body || m.sent_at::text,
                               ',' ORDER BY m.id))
           FROM messages m JOIN leads l ON l.id = m.lead_id",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn seeding_is_deterministic_fast_and_consistent() {
    let a = env("store_seed_a").await;
    let b = env("store_seed_b").await;
    let started = Instant::now();
    let report = insights_store::seed(&a.pool, 20_000, 42).await.unwrap();
    let took = started.elapsed();
    eprintln!(
        "seeded 20,000 leads / {} messages in {took:?}",
        report.messages
    );
    assert_eq!(report.leads, 20_000);
    assert_eq!((report.first_lead_id, report.last_lead_id), (1, 20_000));
    assert!(report.booked > 15_000 && report.booked < 20_000);
    assert!(report.messages >= 3 * 20_000 && report.messages <= 30 * 20_000);
    // Generous: the issue wants "a few seconds"; this guards against a per-row regression.
    assert!(took.as_secs() < 60, "{took:?}");

    let small_a = insights_store::seed(&b.pool, 300, 42).await.unwrap();
    assert_eq!(small_a.leads, 300);
    let c = env("store_seed_c").await;
    insights_store::seed(&c.pool, 300, 42).await.unwrap();
    assert_eq!(fingerprint(&b.pool).await, fingerprint(&c.pool).await);

    // last_message_at matches the newest message of every lead (the candidate query's input).
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM leads l
          WHERE l.last_message_at IS DISTINCT FROM (SELECT max(sent_at) FROM messages m WHERE m.lead_id = l.id)",
    )
    .fetch_one(&a.pool)
    .await
    .unwrap();
    assert_eq!(mismatched, 0);
    // Seeding again appends after the existing ids.
    let more = insights_store::seed(&b.pool, 10, 1).await.unwrap();
    assert_eq!(more.first_lead_id, 301);
}
