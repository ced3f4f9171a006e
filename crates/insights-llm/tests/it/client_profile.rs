//! The client under a team's profile: the request carries the profile's schema, model,
//! temperature and token-limit parameter; replies are validated against the profile's schema.

use std::path::PathBuf;
use std::sync::Arc;

use insights_core::profile::PromptInput;
use insights_core::{LeadKey, Profile};
use insights_llm::mock::{MockLlmConfig, serve_mock};
use insights_llm::{LlmClient, LlmError, LlmErrorKind};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{GenerateFor, completion, conversation, fast_config, insight_json};

fn example_profile() -> Arc<Profile> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/prisma-supabase/profile.toml");
    Arc::new(Profile::load(path).unwrap())
}

/// A lead as the example's load returns it.
fn input() -> PromptInput {
    PromptInput {
        lead: json!({"id": "clx1", "name": "Ada", "email": "ada@example.com", "company": "Acme",
                     "bookedAt": "2026-03-02T14:30:00+00:00"}),
        messages: vec![
            json!({"direction": "INBOUND", "body": "Is the price final?", "sentAt": "2026-03-01T09:00:00+00:00"}),
            json!({"direction": "OUTBOUND", "body": "We can talk about it.", "sentAt": "2026-03-01T09:05:00+00:00"}),
        ],
        total_message_count: 2,
    }
}

fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

#[tokio::test]
async fn requests_carry_the_profiles_schema_model_and_token_parameter() {
    let server = MockServer::start().await;
    let doc = json!({"stage": "negotiation", "buyingSignals": ["asked about price"],
                     "risks": [], "nextAction": "Send the quote.", "confidence": 0.7});
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(completion(&doc.to_string(), "stop")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let profile = example_profile();
    let client = LlmClient::with_profile(fast_config(server.uri()), Arc::clone(&profile)).unwrap();
    let insight = client
        .generate_insight(&LeadKey::Text("clx1".into()), &input())
        .await
        .unwrap();
    assert_eq!(
        insight.document, doc,
        "the document is kept field for field"
    );

    let requests = server.received_requests().await.unwrap();
    let sent = body(&requests[0]);
    assert_eq!(sent["model"], "gpt-4o-mini", "the profile's model wins");
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["max_completion_tokens"], 600);
    assert!(sent.get("max_tokens").is_none(), "{sent}");
    let format = &sent["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["name"], "deal_review");
    assert_eq!(format["json_schema"]["strict"], true);
    assert_eq!(
        &format["json_schema"]["schema"],
        profile.output.schema.schema()
    );
    let user = sent["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.contains("Customer: Ada <ada@example.com> at Acme"),
        "{user}"
    );
    assert!(
        user.contains("01 Mar 2026 09:00 Customer: Is the price final?"),
        "{user}"
    );
    assert!(
        user.contains("01 Mar 2026 09:05 Rep: We can talk about it."),
        "{user}"
    );
    assert_eq!(sent["user"], "lead-clx1");
}

#[tokio::test]
async fn the_builtin_profile_sends_max_tokens_and_its_own_schema() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(&insight_json(), "stop")))
        .mount(&server)
        .await;
    let client = LlmClient::new(fast_config(server.uri())).unwrap();
    client.generate_for(&conversation(3, 2, 20)).await.unwrap();
    let sent = body(&server.received_requests().await.unwrap()[0]);
    assert_eq!(sent["max_tokens"], client.config().max_tokens);
    assert!(sent.get("max_completion_tokens").is_none());
    assert!(
        sent.get("temperature").is_none(),
        "not sent unless the profile sets it"
    );
    assert_eq!(
        sent["response_format"]["json_schema"]["name"],
        "lead_insight"
    );
}

#[tokio::test]
async fn a_reply_that_breaks_the_schema_is_asked_again_then_rejected_with_the_violation() {
    let server = MockServer::start().await;
    let bad = json!({"stage": "won", "buyingSignals": [], "risks": [], "nextAction": "x",
                     "confidence": 3});
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(completion(&bad.to_string(), "stop")),
        )
        .mount(&server)
        .await;
    let cfg = fast_config(server.uri());
    let retries = cfg.malformed_retries;
    let client = LlmClient::with_profile(cfg, example_profile()).unwrap();
    let err = client
        .generate_insight(&LeadKey::Text("clx1".into()), &input())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Malformed, "{err}");
    let LlmError::Malformed {
        reason, attempts, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*attempts, retries + 1);
    assert!(
        reason.contains("/stage") && reason.contains("/confidence"),
        "{reason}"
    );
    assert_eq!(
        server.received_requests().await.unwrap().len() as u32,
        retries + 1
    );
}

#[tokio::test]
async fn a_template_field_the_lead_lacks_fails_this_lead_without_a_request() {
    let server = MockServer::start().await;
    let client = LlmClient::with_profile(fast_config(server.uri()), example_profile()).unwrap();
    let mut lead = input();
    lead.lead = json!({"id": "clx1"});
    let err = client
        .generate_insight(&LeadKey::Text("clx1".into()), &lead)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Prompt, "{err}");
    assert!(err.to_string().contains("lead.name"), "{err}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_mock_answers_any_profile_schema_with_a_valid_document() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = serve_mock(listener, MockLlmConfig::default()).unwrap();
    let profile = example_profile();
    let client =
        LlmClient::with_profile(fast_config(mock.base_url()), Arc::clone(&profile)).unwrap();
    for key in ["clx1", "clx2", "clx3"] {
        let insight = client
            .generate_insight(&LeadKey::Text(key.into()), &input())
            .await
            .unwrap();
        profile.output.schema.validate(&insight.document).unwrap();
        assert!(
            insight.document["nextAction"]
                .as_str()
                .unwrap()
                .contains(key),
            "{}",
            insight.document
        );
    }
    mock.shutdown().await.unwrap();
}
