use insights_store::{ConversationLoader, LoaderConfig};

use crate::support::{env, lead, message};

#[tokio::test]
async fn loader_coalesces_and_answers_each_caller() {
    let e = env("store_loader").await;
    for id in 1..=100 {
        lead(&e.pool, id, true).await;
    }
    sqlx::query(
        "INSERT INTO messages (lead_id, direction, body, sent_at)
         SELECT l, 'inbound', 'lead ' || l || ' msg ' || k, now() + k * interval '1 minute'
           FROM generate_series(1, 100) l, generate_series(1, 5) k",
    )
    .execute(&e.pool)
    .await
    .unwrap();
    message(&e.pool, 7, 1_000_000, "the newest of lead 7").await;
    let loader = ConversationLoader::spawn(e.store.clone(), LoaderConfig::new(3));
    // 100 leads, a missing one and a duplicate, all at once.
    let wanted: Vec<i64> = (1..=100).chain([404, 7]).collect();
    let results = futures::future::join_all(wanted.iter().map(|&id| {
        let l = loader.clone();
        async move { (id, l.load(insights_core::LeadKey::Int(id)).await.unwrap()) }
    }))
    .await;
    for (id, loaded) in results {
        if id == 404 {
            assert!(loaded.is_none());
            continue;
        }
        let c = loaded.unwrap().input;
        assert_eq!(c.lead["id"], id);
        assert_eq!(c.messages.len(), 3);
        if id == 7 {
            assert_eq!(c.total_message_count, 6);
            assert_eq!(c.messages[2]["body"], "the newest of lead 7");
        } else {
            assert_eq!(c.total_message_count, 5);
            assert_eq!(c.messages[2]["body"], format!("lead {id} msg 5"));
        }
    }
    assert!(
        loader.statements() < 100,
        "102 concurrent loads should share statements, took {}",
        loader.statements()
    );
    assert_eq!(e.store.stats().checked_out_now, 0);
}
