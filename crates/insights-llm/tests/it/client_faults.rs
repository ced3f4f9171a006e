//! The retry policy against exact fault sequences served by wiremock.

use std::time::{Duration, Instant};

use insights_core::SecretString;
use insights_llm::{LlmClient, LlmError, LlmErrorKind};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    GenerateFor, completion, content, conversation, error_body, fast_config, insight_json,
};

const ENDPOINT: &str = "/v1/chat/completions";

async fn server() -> MockServer {
    MockServer::start().await
}

fn client(server: &MockServer) -> LlmClient {
    LlmClient::new(fast_config(format!("{}/v1", server.uri()))).unwrap()
}

fn ok() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(completion(&insight_json(), "stop"))
        .insert_header("x-request-id", "req-ok")
}

/// Mounts `template` for the first `times` requests only (earlier mounts take precedence).
async fn first(server: &MockServer, times: u64, template: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(ENDPOINT))
        .respond_with(template)
        .up_to_n_times(times)
        .mount(server)
        .await;
}

async fn always(server: &MockServer, template: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(ENDPOINT))
        .respond_with(template)
        .mount(server)
        .await;
}

async fn bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

async fn request_count(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn success_records_usage_request_id_and_sends_the_schema() {
    let server = server().await;
    always(&server, ok()).await;
    let mut cfg = fast_config(format!("{}/v1", server.uri()));
    cfg.api_key = Some(SecretString::new("sk-test-123".to_owned()));
    cfg.max_tokens = 321;
    let client = LlmClient::new(cfg).unwrap();

    let insight = client.generate_for(&conversation(42, 6, 40)).await.unwrap();
    assert_eq!(
        content(&insight).summary,
        "The lead wants a demo next week."
    );
    assert_eq!(insight.model, "test-model-2026");
    assert_eq!(insight.prompt_tokens, 100);
    assert_eq!(insight.completion_tokens, 20);
    assert_eq!(insight.request_id.as_deref(), Some("req-ok"));
    assert_eq!(insight.attempts, 1);
    assert_eq!(insight.included_messages, 6);

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].headers.get("authorization").unwrap(),
        "Bearer sk-test-123"
    );
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["user"], "lead-42");
    assert_eq!(body["max_tokens"], 321);
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        body["response_format"]["json_schema"]["schema"],
        insights_core::insight_json_schema()
    );
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["role"], "user");
    assert!(
        body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("message 5 of lead 42")
    );
}

#[tokio::test]
async fn rate_limit_waits_at_least_retry_after_ms() {
    let server = server().await;
    first(
        &server,
        1,
        ResponseTemplate::new(429)
            .insert_header("retry-after-ms", "700")
            .insert_header("retry-after", "30")
            .set_body_json(error_body(
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached",
            )),
    )
    .await;
    always(&server, ok()).await;

    let started = Instant::now();
    let insight = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    // retry-after-ms wins over retry-after (30 s would have exceeded max_inline_wait).
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(insight.attempts, 2);
    assert_eq!(request_count(&server).await, 2);
}

#[tokio::test]
async fn rate_limit_honours_retry_after_seconds() {
    let server = server().await;
    first(
        &server,
        1,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "1.2")
            .set_body_json(error_body(
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached",
            )),
    )
    .await;
    always(&server, ok()).await;

    let started = Instant::now();
    let insight = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1200), "{elapsed:?}");
    assert_eq!(insight.attempts, 2);
}

#[tokio::test]
async fn long_retry_after_is_handed_back_instead_of_waiting() {
    let server = server().await;
    always(
        &server,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "120")
            .set_body_json(error_body(
                "tokens",
                "rate_limit_exceeded",
                "Rate limit reached",
            )),
    )
    .await;

    let started = Instant::now();
    let err = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match &err {
        LlmError::RetryLater { after, .. } => assert_eq!(*after, Duration::from_secs(120)),
        other => panic!("expected RetryLater, got {other:?}"),
    }
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
    assert!(!err.is_permanent());
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn persistent_rate_limit_without_hint_is_handed_back() {
    let server = server().await;
    always(
        &server,
        ResponseTemplate::new(429).set_body_json(error_body(
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached",
        )),
    )
    .await;
    let err = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::RateLimited);
    // No hint from the server: the backoff cap.
    assert_eq!(err.retry_after(), Some(Duration::from_millis(20)));
    assert_eq!(request_count(&server).await, 4);
}

#[tokio::test]
async fn insufficient_quota_is_not_retried() {
    let server = server().await;
    Mock::given(method("POST"))
        .and(path(ENDPOINT))
        .respond_with(ResponseTemplate::new(429).set_body_json(error_body(
            "insufficient_quota",
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
        )))
        .expect(1)
        .mount(&server)
        .await;

    let err = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    assert_eq!(err.kind(), LlmErrorKind::Quota);
    assert!(err.kind().needs_operator());
    assert_eq!(err.retry_after(), None);
    assert_eq!(request_count(&server).await, 1);
    server.verify().await;
}

#[tokio::test]
async fn malformed_content_is_retried_a_bounded_number_of_times() {
    let server = server().await;
    always(
        &server,
        ResponseTemplate::new(200)
            .set_body_json(completion("this is not json {\"summary\": oops", "stop")),
    )
    .await;

    let err = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap_err();
    match &err {
        LlmError::Malformed {
            snippet, attempts, ..
        } => {
            assert!(snippet.contains("this is not json"), "{snippet}");
            assert_eq!(*attempts, 3);
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert!(err.is_permanent());
    assert_eq!(err.kind(), LlmErrorKind::Malformed);
    // malformed_retries = 2: the first request and two more.
    assert_eq!(request_count(&server).await, 3);
}

#[tokio::test]
async fn schema_violation_then_valid_content_succeeds() {
    let server = server().await;
    first(
        &server,
        1,
        ResponseTemplate::new(200).set_body_json(completion(
            r#"{"summary":"x","sentiment":"furious","objections":[],"next_steps":[]}"#,
            "stop",
        )),
    )
    .await;
    always(&server, ok()).await;
    let insight = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap();
    assert_eq!(insight.attempts, 2);
    // Both attempts were billed.
    assert_eq!(insight.prompt_tokens, 200);
}

#[tokio::test]
async fn malformed_snippet_is_truncated() {
    let server = server().await;
    let huge = "y".repeat(50_000);
    always(
        &server,
        ResponseTemplate::new(200).set_body_json(completion(&huge, "stop")),
    )
    .await;
    let err = client(&server)
        .generate_for(&conversation(1, 2, 40))
        .await
        .unwrap_err();
    let LlmError::Malformed { snippet, .. } = err else {
        panic!("expected Malformed");
    };
    assert!(snippet.chars().count() <= insights_llm::defaults::MALFORMED_SNIPPET_CHARS + 1);
    assert!(snippet.ends_with('…'));
}

#[tokio::test]
async fn timeout_is_retried() {
    let server = server().await;
    first(&server, 1, ok().set_delay(Duration::from_secs(30))).await;
    always(&server, ok()).await;
    let mut cfg = fast_config(format!("{}/v1", server.uri()));
    cfg.request_timeout = Duration::from_millis(300);
    let client = LlmClient::new(cfg).unwrap();

    let started = Instant::now();
    let insight = client.generate_for(&conversation(1, 4, 40)).await.unwrap();
    assert_eq!(insight.attempts, 2);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Did not wait for the slow answer.
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(request_count(&server).await, 2);
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let server = server().await;
    first(
        &server,
        2,
        ResponseTemplate::new(500).set_body_json(error_body("server_error", "", "boom")),
    )
    .await;
    always(&server, ok()).await;
    let insight = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap();
    assert_eq!(insight.attempts, 3);
    assert_eq!(request_count(&server).await, 3);
}

#[tokio::test]
async fn server_errors_exhaust_the_bounded_retries() {
    let server = server().await;
    always(
        &server,
        ResponseTemplate::new(503).set_body_string("upstream down"),
    )
    .await;
    let err = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap_err();
    match &err {
        LlmError::Transient {
            status, attempts, ..
        } => {
            assert_eq!(*status, Some(503));
            assert_eq!(*attempts, 4);
        }
        other => panic!("expected Transient, got {other:?}"),
    }
    assert!(!err.is_permanent());
    assert_eq!(err.kind(), LlmErrorKind::Transient);
    // max_retries = 3: the first request and three more.
    assert_eq!(request_count(&server).await, 4);
}

#[tokio::test]
async fn request_timeout_and_conflict_statuses_are_retried() {
    for status in [408u16, 409] {
        let server = server().await;
        first(&server, 1, ResponseTemplate::new(status)).await;
        always(&server, ok()).await;
        let insight = client(&server)
            .generate_for(&conversation(1, 4, 40))
            .await
            .unwrap();
        assert_eq!(insight.attempts, 2, "status {status}");
    }
}

#[tokio::test]
async fn other_client_errors_are_permanent() {
    for (status, kind) in [
        (400u16, LlmErrorKind::BadRequest),
        (404, LlmErrorKind::BadRequest),
        (401, LlmErrorKind::Auth),
        (403, LlmErrorKind::Auth),
    ] {
        let server = server().await;
        always(
            &server,
            ResponseTemplate::new(status).set_body_json(error_body(
                "invalid_request_error",
                "model_not_found",
                "The model does not exist",
            )),
        )
        .await;
        let err = client(&server)
            .generate_for(&conversation(1, 4, 40))
            .await
            .unwrap_err();
        assert!(err.is_permanent(), "{status}: {err:?}");
        assert_eq!(err.kind(), kind, "{status}");
        assert!(
            err.to_string().contains("The model does not exist"),
            "{err}"
        );
        assert_eq!(request_count(&server).await, 1, "{status}");
    }
}

#[tokio::test]
async fn connection_refused_is_retried_then_transient() {
    // Bind and drop to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = LlmClient::new(fast_config(format!("http://127.0.0.1:{port}/v1"))).unwrap();
    let err = client
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap_err();
    match &err {
        LlmError::Transient {
            attempts, reason, ..
        } => {
            assert_eq!(*attempts, 4);
            assert!(reason.contains("connect"), "{reason}");
        }
        other => panic!("expected Transient, got {other:?}"),
    }
}

#[tokio::test]
async fn finish_reason_length_shrinks_the_prompt() {
    let server = server().await;
    first(
        &server,
        1,
        ResponseTemplate::new(200).set_body_json(completion(
            r#"{"summary":"The lead has been aski"#,
            "length",
        )),
    )
    .await;
    always(&server, ok()).await;
    // 100 messages of ~100 characters: all fit the default 24,000-character budget.
    let conv = conversation(7, 100, 100);
    let insight = client(&server).generate_for(&conv).await.unwrap();
    assert_eq!(insight.attempts, 2);
    assert!(
        insight.included_messages < 100,
        "{}",
        insight.included_messages
    );
    assert!(insight.included_messages > 0);

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1].body.len() < requests[0].body.len(),
        "second request {} bytes, first {}",
        requests[1].body.len(),
        requests[0].body.len()
    );
    let bodies = bodies(&server).await;
    let second_user = bodies[1]["messages"][1]["content"].as_str().unwrap();
    // The newest message is kept, the oldest dropped.
    assert!(second_user.contains("message 99 of lead 7"));
    assert!(!second_user.contains("message 0 of lead 7:"));
}

#[tokio::test]
async fn finish_reason_length_at_the_smallest_prompt_is_permanent() {
    let server = server().await;
    always(
        &server,
        ResponseTemplate::new(200).set_body_json(completion(r#"{"summary":"cut"#, "length")),
    )
    .await;
    let err = client(&server)
        .generate_for(&conversation(7, 100, 100))
        .await
        .unwrap_err();
    assert!(err.is_permanent());
    assert_eq!(err.kind(), LlmErrorKind::Truncated);
    let bodies = bodies(&server).await;
    // Every request smaller than the one before; bounded by the halvings down to the floor.
    assert!(bodies.len() >= 2 && bodies.len() <= 8, "{}", bodies.len());
    let sizes: Vec<usize> = bodies.iter().map(|b| b.to_string().len()).collect();
    assert!(sizes.windows(2).all(|w| w[1] < w[0]), "{sizes:?}");
}

#[tokio::test]
async fn unknown_finish_reason_is_accepted() {
    let server = server().await;
    always(
        &server,
        ResponseTemplate::new(200).set_body_json(completion(&insight_json(), "eos")),
    )
    .await;
    let insight = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap();
    assert_eq!(insight.attempts, 1);
    assert_eq!(content(&insight).next_steps, vec!["send the deck"]);
}

#[tokio::test]
async fn http_200_with_error_object_is_retried() {
    let server = server().await;
    first(
        &server,
        1,
        ResponseTemplate::new(200).set_body_json(json!({
            "error": {"message": "Upstream provider error", "code": 502},
            "user_id": "u"
        })),
    )
    .await;
    always(&server, ok()).await;
    let insight = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap();
    assert_eq!(insight.attempts, 2);
    assert_eq!(request_count(&server).await, 2);
}

#[tokio::test]
async fn refusal_and_content_filter_are_refused() {
    let server = server().await;
    always(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."},
                "finish_reason": "stop"
            }]
        })),
    )
    .await;
    let err = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap_err();
    match &err {
        LlmError::Refused { reason } => assert!(reason.contains("can't help"), "{reason}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(err.is_permanent());
    assert_eq!(request_count(&server).await, 1);

    let server = server_with_filter().await;
    let err = client(&server)
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Refused);
    assert_eq!(request_count(&server).await, 1);
}

async fn server_with_filter() -> MockServer {
    let server = server().await;
    always(
        &server,
        ResponseTemplate::new(200).set_body_json(completion("", "content_filter")),
    )
    .await;
    server
}

#[tokio::test]
async fn the_api_key_never_appears_in_debug_or_errors() {
    let server = server().await;
    always(
        &server,
        ResponseTemplate::new(401).set_body_json(error_body(
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided",
        )),
    )
    .await;
    let secret = "sk-live-SUPERSECRET-0123456789";
    let mut cfg = fast_config(format!("{}/v1", server.uri()));
    cfg.api_key = Some(SecretString::new(secret.to_owned()));
    let shown_cfg = format!("{cfg:?} {cfg:#?}");
    assert!(!shown_cfg.contains("SUPERSECRET"), "{shown_cfg}");
    assert!(shown_cfg.contains("api_key"));
    let client = LlmClient::new(cfg).unwrap();
    let shown_client = format!("{client:?}");
    assert!(!shown_client.contains("SUPERSECRET"), "{shown_client}");

    let err = client
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Auth);
    let shown_err = format!("{err} {err:?}");
    assert!(!shown_err.contains("SUPERSECRET"), "{shown_err}");
    // It was sent, though.
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests[0].headers.get("authorization").unwrap(),
        &format!("Bearer {secret}")
    );
}
