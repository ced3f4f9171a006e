//! Store throughput, for the record (ignored by default; timing is not a test on a shared
//! machine): `cargo test --release -p insights-store --test it throughput -- --ignored --nocapture`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use insights_core::LeadKey;
use insights_store::{
    ConversationLoader, InsightWriter, LoaderConfig, UpsertOutcome, WriterConfig,
};

use crate::support::{BigintKeys, env, record};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run explicitly"]
async fn throughput() {
    let e = env("store_throughput").await;
    let n = 20_000usize;
    insights_store::seed(&e.pool, n, 1).await.unwrap();
    let ids: Arc<Vec<i64>> = Arc::new((1..=n as i64).collect());

    for concurrency in [8usize, 32] {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (store, ids, next) = (e.store.clone(), ids.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&id) = ids.get(i) else { return };
                        store.load_conversation(id, 200).await.unwrap().unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let s = started.elapsed().as_secs_f64();
        eprintln!(
            "load_conversation: {n} in {s:.2}s = {:.0}/s (concurrency {concurrency}, pool 4)",
            n as f64 / s
        );
    }

    for concurrency in [8usize, 32, 128] {
        let loader = ConversationLoader::spawn(e.store.clone(), LoaderConfig::new(200));
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (loader, ids, next) = (loader.clone(), ids.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&id) = ids.get(i) else { return };
                        loader.load(LeadKey::Int(id)).await.unwrap().unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let s = started.elapsed().as_secs_f64();
        eprintln!(
            "ConversationLoader: {n} in {s:.2}s = {:.0}/s in {} statements (concurrency {concurrency})",
            n as f64 / s,
            loader.statements()
        );
    }

    let writer = InsightWriter::spawn(e.store.clone(), WriterConfig::default());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..256)
        .map(|_| {
            let (writer, ids, next) = (writer.clone(), ids.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&id) = ids.get(i) else { return };
                    let o = writer.write(record(id, 1, "summary")).await.unwrap();
                    assert_eq!(o, UpsertOutcome::Written);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = started.elapsed().as_secs_f64();
    eprintln!(
        "writer: {n} insights in {s:.2}s = {:.0}/s in {} flushes (256 writers)",
        n as f64 / s,
        writer.flushes()
    );
    let stats = e.store.stats();
    eprintln!(
        "store: {} transactions, mean hold {:?}",
        stats.transactions,
        stats.mean_hold()
    );
}
