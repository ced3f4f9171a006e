use std::sync::Arc;
use std::time::{Duration, Instant};

use insights_core::DatabaseUrl;
use insights_store::{PoolSettings, RetryPolicy, Store, StoreOptions, connect};
use insights_testkit::{FaultProxy, ProxyMode, wait_until};

use crate::support::{BigintKeys, env};

/// While the database is unreachable, eight callers hammering the store cost about one
/// connection attempt per gate backoff (counted at a proxy), not one per call; once it is back,
/// the gate's next probe reopens it for everyone within the backoff cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_costs_one_probe_per_backoff_and_recovery_is_quick() {
    let e = env("store_gate").await;
    let mut url = url::Url::parse(&e.db.url).unwrap();
    let proxy = FaultProxy::start_to_port(url.port().unwrap_or(5432))
        .await
        .unwrap();
    url.set_port(Some(proxy.port())).unwrap();
    let mut settings = PoolSettings::new(DatabaseUrl::new(url.to_string()));
    settings.acquire_timeout = Duration::from_secs(2);
    let pool = connect(&settings).await.unwrap();
    let store = Store::new(
        pool,
        StoreOptions {
            retry: RetryPolicy::none(),
            ..StoreOptions::for_pool(&settings)
        },
    );
    store.candidate_ids(None, 1).await.unwrap();

    proxy.set_mode(ProxyMode::Reset);
    let down = Instant::now();
    let outage = Duration::from_secs(3);
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let calls = calls.clone();
        callers.push(tokio::spawn(async move {
            while down.elapsed() < outage {
                let _ = store.candidate_ids(None, 1).await;
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    let attempts = proxy.attempts_between(down, None);
    let later = proxy.attempts_between(down + Duration::from_millis(100), None);
    let calls = calls.load(std::sync::atomic::Ordering::Relaxed);
    let gate = store.gate().stats();
    let at: Vec<u128> = proxy
        .attempt_log()
        .iter()
        .filter(|a| a.at >= down)
        .map(|a| (a.at - down).as_millis())
        .collect();
    println!("outage: {attempts} connection attempts at {at:?} ms for {calls} calls ({gate:?})");
    // At most the eight calls already under way when the outage began, then only the probes:
    // backoffs of 250 ms doubling to 2 s, each at least three quarters of its nominal value, so
    // at most four probes start within 3 s (five allowed: a loaded machine's timers).
    assert!(
        attempts - later <= 8 && later <= 5,
        "connection attempts at {at:?} ms for {calls} calls in {outage:?} ({gate:?})"
    );
    assert!(later <= gate.probes as usize, "{at:?} {gate:?}");
    assert!(calls >= 200, "the callers kept calling: {calls}");
    // Every call was refused without touching the pool, except the eight that began together
    // with the outage and the probes.
    assert!(
        gate.refused + gate.probes + 8 >= calls,
        "{gate:?} of {calls} calls"
    );
    assert!(!store.gate().is_open());

    proxy.set_mode(ProxyMode::Pass);
    let back = Instant::now();
    wait_until(Duration::from_secs(10), "a call succeeds again", || async {
        store.candidate_ids(None, 1).await.is_ok()
    })
    .await
    .unwrap();
    let recovery = back.elapsed();
    println!("recovered {recovery:?} after the database came back");
    // The cap (2 s) bounds the wait for the next probe; generous slack for a loaded machine.
    assert!(
        recovery < Duration::from_secs(4),
        "recovered after {recovery:?}"
    );
    assert!(store.gate().is_open());
    proxy.shutdown().await;
}
