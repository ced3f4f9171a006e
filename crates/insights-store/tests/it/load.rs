use crate::support::{BigintKeys, bodies, env, lead, message, record};

#[tokio::test]
async fn load_returns_newest_messages_and_watermark() {
    let e = env("store_load").await;
    let p = &e.pool;
    lead(p, 1, true).await;
    for m in 1..=10 {
        message(p, 1, m, &format!("m{m}")).await;
    }
    let loaded = e.store.load_conversation(1, 3).await.unwrap().unwrap();
    let c = &loaded.input;
    assert_eq!(c.lead["id"], 1);
    assert_eq!(c.lead["name"], "Lead 1");
    assert_eq!(c.total_message_count, 10);
    assert_eq!(
        bodies(&loaded),
        vec!["m8", "m9", "m10"],
        "newest 3, oldest first"
    );
    assert_eq!(loaded.source_last_message_at, Some(crate::support::t(10)));
    assert!(loaded.eligible);
    assert_eq!(loaded.stored_source_last_message_at, None);
    assert!(!loaded.is_fresh());

    e.store.upsert_insight(&record(1, 10, "s")).await.unwrap();
    let loaded = e.store.load_conversation(1, 3).await.unwrap().unwrap();
    assert_eq!(
        loaded.stored_source_last_message_at,
        Some(crate::support::t(10))
    );
    assert!(loaded.is_fresh());

    // No messages: an empty conversation, not an error.
    lead(p, 2, true).await;
    let empty = e.store.load_conversation(2, 50).await.unwrap().unwrap();
    assert!(empty.input.messages.is_empty());
    assert_eq!(empty.input.total_message_count, 0);
    assert_eq!(empty.source_last_message_at, None);

    // Deleted (or never existing) lead: None.
    sqlx::query("DELETE FROM leads WHERE id = 1")
        .execute(p)
        .await
        .unwrap();
    assert!(e.store.load_conversation(1, 3).await.unwrap().is_none());
    assert!(e.store.load_conversation(999, 3).await.unwrap().is_none());

    let stats = e.store.stats();
    assert_eq!(stats.checked_out_now, 0);
    assert!(stats.transactions >= 5);
    assert!(stats.total_hold > std::time::Duration::ZERO);
}
