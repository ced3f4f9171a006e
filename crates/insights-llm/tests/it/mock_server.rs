//! The mock server: insights, determinism, stats, faults, concurrency.

use std::time::{Duration, Instant};

use futures::future::join_all;
use insights_core::Sentiment;
use insights_llm::mock::{
    MockHandle, MockLlmConfig, MockStats, PlannedFault, RateLimitBurst, RequestBudget, serve_mock,
};
use insights_llm::{LlmClient, LlmConfig, LlmErrorKind};
use serde_json::json;

use crate::support::{GenerateFor, content, conversation, fast_config};

async fn start(cfg: MockLlmConfig) -> MockHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_mock(listener, cfg).unwrap()
}

fn client_for(mock: &MockHandle) -> LlmClient {
    LlmClient::new(fast_config(mock.base_url())).unwrap()
}

/// One raw chat request for `lead`; returns the HTTP status.
async fn raw(http: &reqwest::Client, mock: &MockHandle, lead: i64) -> u16 {
    http.post(format!("{}/chat/completions", mock.base_url()))
        .json(&json!({
            "model": "m",
            "messages": [{"role": "user", "content": "[2026-01-01 10:00] Lead: hello"}],
            "user": format!("lead-{lead}")
        }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn serves_an_insight_derived_from_the_conversation() {
    let mock = start(MockLlmConfig::default()).await;
    let client = client_for(&mock);
    let insight = client
        .generate_for(&conversation(4711, 5, 60))
        .await
        .unwrap();
    let summary = &content(&insight).summary;
    assert!(summary.contains("Lead 4711"), "{summary}");
    assert!(summary.contains("5 messages"), "{summary}");
    // Message 4 (the last) is inbound.
    assert!(summary.contains("inbound"), "{summary}");
    // "thanks, sounds good" and "too expensive" are both in the lead's lines.
    assert_eq!(content(&insight).sentiment, Sentiment::Mixed);
    assert!(!content(&insight).objections.is_empty());
    assert!(insight.prompt_tokens > 50, "{}", insight.prompt_tokens);
    assert!(insight.completion_tokens > 10);
    assert!(
        insight
            .request_id
            .as_deref()
            .is_some_and(|id| id.starts_with("mock-"))
    );
    assert_eq!(insight.model, "test-model");

    // Same conversation, same insight.
    let again = client
        .generate_for(&conversation(4711, 5, 60))
        .await
        .unwrap();
    assert_eq!(content(&again), content(&insight));

    let stats = mock.stats();
    assert_eq!(stats.total, 2);
    assert_eq!(stats.per_lead["4711"].requests, 2);
    assert_eq!(stats.per_lead["4711"].ok, 2);
    mock.shutdown().await.unwrap();
}

#[tokio::test]
async fn faults_are_deterministic_for_a_seed() {
    let cfg = MockLlmConfig {
        fail_rate: 0.3,
        malformed_rate: 0.2,
        seed: 42,
        ..MockLlmConfig::default()
    };
    let http = reqwest::Client::new();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mock = start(cfg.clone()).await;
        let mut statuses = Vec::new();
        for lead in 0..40 {
            for _ in 0..2 {
                statuses.push(raw(&http, &mock, lead).await);
            }
        }
        runs.push((statuses, mock.stats()));
        mock.shutdown().await.unwrap();
    }
    assert_eq!(runs[0].0, runs[1].0);
    assert_eq!(runs[0].1.per_lead, runs[1].1.per_lead);
    // And the plan predicts them.
    let mut i = 0;
    for lead in 0..40 {
        for n in 0..2 {
            let expected = match cfg.planned_fault(&lead.to_string(), n) {
                Some(PlannedFault::ServerError) => 500,
                _ => 200,
            };
            assert_eq!(runs[0].0[i], expected, "lead {lead} request {n}");
            i += 1;
        }
    }
    assert!(runs[0].1.server_errors > 0);
    assert!(runs[0].1.malformed > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_calls_per_lead_as_the_plan_predicts() {
    let cfg = MockLlmConfig {
        fail_rate: 0.3,
        malformed_rate: 0.2,
        seed: 9,
        ..MockLlmConfig::default()
    };
    let mock = start(cfg.clone()).await;
    let mut llm = fast_config(mock.base_url());
    llm.max_retries = 20;
    llm.malformed_retries = 20;
    let client = LlmClient::new(llm).unwrap();
    let results = join_all((1..=60).map(|lead| {
        let client = client.clone();
        async move { client.generate_for(&conversation(lead, 3, 30)).await }
    }))
    .await;
    for (i, r) in results.iter().enumerate() {
        let insight = r.as_ref().unwrap();
        let lead = (i + 1).to_string();
        let expected = cfg.requests_until_ok(&lead, 40).unwrap();
        assert_eq!(u64::from(insight.attempts), expected, "lead {lead}");
    }
    let stats = mock.stats();
    let mut retried = 0;
    for lead in 1..=60 {
        let key = lead.to_string();
        let s = stats.per_lead[&key];
        let expected = cfg.requests_until_ok(&key, 40).unwrap();
        assert_eq!(s.requests, expected, "lead {lead}");
        assert_eq!(s.ok, 1, "lead {lead}");
        assert_eq!(s.failed, expected - 1, "lead {lead}");
        assert_eq!(s.server_errors + s.malformed, s.failed);
        if expected > 1 {
            retried += 1;
        }
    }
    assert!(retried > 10, "{retried}");
    assert_eq!(stats.ok, 60);

    // The same document over HTTP, then reset.
    let http = reqwest::Client::new();
    let served: MockStats = http
        .get(format!("http://{}/stats", mock.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served.per_lead, stats.per_lead);
    assert_eq!(served.total, stats.total);
    let status = http
        .post(format!("http://{}/stats/reset", mock.addr))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success());
    assert_eq!(mock.stats(), MockStats::default());
    let health = http
        .get(format!("http://{}/healthz", mock.addr))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    mock.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_rate_is_roughly_honoured() {
    let mock = start(MockLlmConfig {
        fail_rate: 0.25,
        seed: 3,
        ..MockLlmConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    let statuses = join_all((0..800).map(|lead| {
        let http = http.clone();
        let mock = &mock;
        async move { raw(&http, mock, lead).await }
    }))
    .await;
    let failures = statuses.iter().filter(|&&s| s == 500).count();
    assert!((140..260).contains(&failures), "{failures} of 800");
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        800 - failures
    );
    let stats = mock.stats();
    assert_eq!(stats.server_errors, failures as u64);
    assert_eq!(stats.total, 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_bursts_are_retried_by_the_client() {
    let mock = start(MockLlmConfig {
        rate_limit: Some(RateLimitBurst {
            every_n: 4,
            burst_len: 1,
            retry_after_ms: 50,
        }),
        ..MockLlmConfig::default()
    })
    .await;
    let client = client_for(&mock);
    for lead in 0..12 {
        let started = Instant::now();
        let insight = client
            .generate_for(&conversation(lead, 2, 20))
            .await
            .unwrap();
        if insight.attempts > 1 {
            assert!(started.elapsed() >= Duration::from_millis(50));
        }
    }
    let stats = mock.stats();
    assert_eq!(stats.ok, 12);
    // Arrivals 3, 7 and 11 are limited: 12 good answers take 15 requests.
    assert_eq!(stats.rate_limited, 3);
    assert_eq!(stats.total, 15);
}

#[tokio::test]
async fn outage_switch_fails_every_request_until_cleared() {
    let mock = start(MockLlmConfig::default()).await;
    let client = client_for(&mock);
    mock.set_outage(true);
    let err = client
        .generate_for(&conversation(5, 2, 20))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Transient);
    assert_eq!(mock.stats().per_lead["5"].outage, 4);
    mock.set_outage(false);
    client.generate_for(&conversation(5, 2, 20)).await.unwrap();

    // The HTTP switch does the same for a mock in another process.
    let http = reqwest::Client::new();
    let on = http
        .post(format!("http://{}/control/outage?on=true", mock.addr))
        .send()
        .await
        .unwrap();
    assert!(on.status().is_success());
    assert_eq!(raw(&http, &mock, 6).await, 503);
    http.post(format!("http://{}/control/outage?on=false", mock.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(raw(&http, &mock, 6).await, 200);
    mock.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_request_bodies_get_a_400() {
    let mock = start(MockLlmConfig::default()).await;
    let status = reqwest::Client::new()
        .post(format!("{}/chat/completions", mock.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 400);
    assert_eq!(mock.stats().bad_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_256_concurrent_requests_with_latency() {
    let latency = Duration::from_millis(200);
    let mock = start(MockLlmConfig::with_latency(latency)).await;
    let client = LlmClient::new(LlmConfig {
        request_timeout: Duration::from_secs(30),
        ..fast_config(mock.base_url())
    })
    .unwrap();
    let started = Instant::now();
    let results = join_all((0..256).map(|lead| {
        let client = client.clone();
        async move { client.generate_for(&conversation(lead, 4, 40)).await }
    }))
    .await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(|r| r.is_ok()));
    let stats = mock.stats();
    assert_eq!(stats.ok, 256);
    assert_eq!(stats.per_lead.len(), 256);
    assert!(elapsed >= latency);
    // Serially this would take 51 s; concurrently about one latency plus connection set-up.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    // Loose: on a loaded machine connection set-up can spread the arrivals.
    assert!(stats.peak_in_flight >= 32, "peak {}", stats.peak_in_flight);
    assert_eq!(mock.in_flight(), 0);
    eprintln!(
        "256 requests at {latency:?} latency: {elapsed:?}, peak in flight {}",
        stats.peak_in_flight
    );
    mock.shutdown().await.unwrap();
}

/// Throughput of client + mock at zero latency, for sizing the pipeline benchmark:
/// `cargo test -p insights-llm --release --test it -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput_at_zero_latency() {
    let mock = start(MockLlmConfig::default()).await;
    let client = client_for(&mock);
    let conv = std::sync::Arc::new(conversation(1, 20, 120));
    let total = 20_000usize;
    let concurrency = 64usize;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let client = client.clone();
        let conv = conv.clone();
        let next = next.clone();
        async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                client.generate_for(&conv).await.unwrap();
            }
        }
    });
    join_all(workers).await;
    let elapsed = started.elapsed();
    eprintln!(
        "{total} insights over {concurrency} tasks in {elapsed:?}: {:.0}/s",
        total as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(mock.stats().ok, total as u64);
}

#[tokio::test]
async fn a_request_budget_answers_429_rate_limit_exceeded_with_provider_headers() {
    let mock = start(MockLlmConfig {
        request_budget: Some(RequestBudget {
            requests: 3,
            per: Duration::from_secs(60),
        }),
        ..MockLlmConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    let post = || {
        http.post(format!("{}/chat/completions", mock.base_url()))
            .json(&json!({
                "model": "m",
                "messages": [{"role": "user", "content": "[2026-01-01 10:00] Lead: hello"}],
                "user": "lead-1"
            }))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(post().await.unwrap().status().as_u16(), 200);
    }
    let limited = post().await.unwrap();
    assert_eq!(limited.status().as_u16(), 429);
    let header = |name: &str| {
        limited
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let wait_ms: u64 = header("retry-after-ms").unwrap().parse().unwrap();
    assert!(wait_ms > 0 && wait_ms <= 60_000, "{wait_ms}");
    assert_eq!(header("x-ratelimit-limit-requests").as_deref(), Some("3"));
    assert_eq!(
        header("x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    assert!(
        header("x-ratelimit-reset-requests")
            .unwrap()
            .ends_with("ms")
    );
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(mock.stats().rate_limited, 1);

    // The client waits out a short window inline, but a minute-long one is handed back as a
    // rate limit for the queue to wait, not a failure of the lead.
    let err = client_for(&mock)
        .generate_for(&conversation(1, 2, 20))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
    assert!(err.retry_after().unwrap() > Duration::from_secs(1));
}
