use std::time::Duration;

use insights_store::{InsightWriter, UpsertOutcome, WriterConfig};

use crate::support::{env, record};

#[tokio::test]
async fn writer_batches_and_answers_after_commit() {
    let e = env("store_writer").await;
    sqlx::query(
        "INSERT INTO leads (id, name, email, booked_at)
         SELECT g, 'n', 'e', now() FROM generate_series(1, 200) g",
    )
    .execute(&e.pool)
    .await
    .unwrap();
    let writer = InsightWriter::spawn(
        e.store.clone(),
        WriterConfig {
            max_batch: 64,
            linger: Duration::from_millis(50),
            ..WriterConfig::default()
        },
    );
    let before = e.store.stats().transactions;
    let writes = (1..=200).map(|id| {
        let w = writer.clone();
        let pool = e.pool.clone();
        async move {
            let outcome = w.write(record(id, 1, "w")).await.unwrap();
            // Durable by the time write() returns: visible to another connection.
            let seen: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM lead_conversation_insights WHERE lead_id = $1)",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
            (outcome, seen)
        }
    });
    let results = futures::future::join_all(writes).await;
    assert!(
        results
            .iter()
            .all(|(o, seen)| *o == UpsertOutcome::Written && *seen)
    );
    let flushes = writer.flushes();
    assert!(
        (4..=40).contains(&flushes),
        "200 writes should take a handful of batched statements, took {flushes}"
    );
    assert!(e.store.stats().transactions - before <= flushes);
    // Rewrites with the same source are reported stale, through the writer too.
    assert_eq!(
        writer.write(record(1, 1, "again")).await.unwrap(),
        UpsertOutcome::StaleIgnored
    );
    assert_eq!(
        writer.write(record(999, 1, "ghost")).await.unwrap(),
        UpsertOutcome::LeadGone
    );
}

#[tokio::test]
async fn a_bad_record_fails_alone_not_its_batch() {
    let e = env("store_writer_bad").await;
    sqlx::query(
        "INSERT INTO leads (id, name, email, booked_at)
         SELECT g, 'n', 'e', now() FROM generate_series(1, 20) g",
    )
    .execute(&e.pool)
    .await
    .unwrap();
    let writer = InsightWriter::spawn(
        e.store.clone(),
        WriterConfig {
            linger: Duration::from_millis(100),
            ..WriterConfig::default()
        },
    );
    let writes = (1..=20).map(|id| {
        let w = writer.clone();
        async move {
            // Postgres text cannot hold NUL: a permanent error for this one record.
            let summary = if id == 13 { "bad\0summary" } else { "fine" };
            (id, w.write(record(id, 1, summary)).await)
        }
    });
    let results = futures::future::join_all(writes).await;
    for (id, r) in results {
        if id == 13 {
            let err = r.unwrap_err();
            assert!(!err.is_transient(), "{err}");
        } else {
            assert_eq!(r.unwrap(), UpsertOutcome::Written, "lead {id}");
        }
    }
}
