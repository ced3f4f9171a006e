use std::time::{Duration, Instant};

use insights_queue::{NewJob, Queue};
use insights_testkit::{FaultProxy, ProxyMode, wait_until};

use crate::common::*;

/// `url` with its port replaced (the test URL is `postgres://user@host:port/db`).
fn with_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    format!("{scheme}://{host}:{port}/{path}")
}

/// While the queue's database is unreachable, the worker's fetch loop, heartbeat, completer and
/// rescuer together cost about one connection attempt per gate backoff (counted at a proxy),
/// `is_reachable` answers from memory, and once the database is back every job finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_queue_database_costs_one_probe_per_backoff() {
    init_tracing();
    let e = env("queue_gate", test_config()).await;
    let upstream: u16 =
        e.db.url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .and_then(|(authority, _)| authority.rsplit_once(':'))
            .map_or(5432, |(_, port)| port.parse().unwrap());
    let proxy = FaultProxy::start_to_port(upstream).await.unwrap();
    let proxied = Queue::new(
        pool_for(&with_port(&e.db.url, proxy.port()), 4).await,
        test_config(),
    );
    let total = 300i64;
    let jobs: Vec<_> = (0..total)
        .map(|i| NewJob::new(TestJob::with(i, Behave::Sleep { ms: 20 })))
        .collect();
    e.queue.push_bulk(Q, jobs).await.unwrap();
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&proxied, WorkerSpec::new("w", 8), st.clone());
    wait_until(secs(60), "some progress before the outage", || async {
        state_count(&e.pool, "completed").await >= 20
    })
    .await
    .unwrap();
    assert!(proxied.is_reachable());

    proxy.set_mode(ProxyMode::Reset);
    let down = Instant::now();
    let outage = Duration::from_secs(3);
    wait_until(outage, "the gate to close", || async {
        !proxied.is_reachable()
    })
    .await
    .unwrap();
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await; // the outage itself
    let attempts = proxy.attempts_between(down, None);
    let later = proxy.attempts_between(down + Duration::from_millis(100), None);
    let at: Vec<u128> = proxy
        .attempt_log()
        .iter()
        .filter(|a| a.at >= down)
        .map(|a| (a.at - down).as_millis())
        .collect();
    println!("outage: {attempts} connection attempts at {at:?} ms");
    // At most the calls under way when the outage began (the pool's 4 connections), then only
    // probes: backoffs of 250 ms doubling to 2 s, each at least three quarters of its nominal
    // value, so at most four within 3 s (five allowed: a loaded machine's timers).
    assert!(
        attempts - later <= 4 && later <= 5,
        "connection attempts at {at:?} ms during a {outage:?} outage"
    );
    assert!(!w.handle.is_finished(), "worker ended during the outage");

    proxy.set_mode(ProxyMode::Pass);
    let back = Instant::now();
    wait_until(secs(90), "all jobs completed after the outage", || async {
        state_count(&e.pool, "completed").await == total
    })
    .await
    .unwrap();
    println!("all done {:?} after the database came back", back.elapsed());
    assert!(proxied.is_reachable());
    let stats = w.stats.snapshot();
    w.stop().await.unwrap();
    assert!(stats.db_errors > 0, "the outage was seen: {stats:?}");
    assert_eq!(effects(&e.pool).await, total);
    proxy.shutdown().await;
}
