//! What reaches the server for each kind of provider (OpenAI, Azure OpenAI, gateways): the key's
//! header, extra headers and query parameters, configured through the environment's variables;
//! and what a timeout tells the operator.

use std::collections::HashMap;
use std::time::Duration;

use insights_core::{SecretString, Settings};
use insights_llm::{LlmClient, LlmConfig, LlmError, LlmErrorKind};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{GenerateFor, completion, conversation, insight_json};

fn settings(vars: &[(&str, &str)]) -> Settings {
    let vars: HashMap<&str, &str> = vars.iter().copied().collect();
    Settings::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned())).unwrap()
}

/// The environment's configuration talking to `base_url`, with retries fast enough for tests.
fn config(settings: &Settings, base_url: String) -> LlmConfig {
    LlmConfig {
        retry: crate::support::fast_config(base_url.clone()).retry,
        ..LlmConfig::from_settings(settings, base_url)
    }
}

fn ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(completion(&insight_json(), "stop"))
}

fn header_of<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn azure_sends_the_key_in_api_key_and_the_api_version_in_the_query() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/openai/deployments/insights-4o-mini/chat/completions",
        ))
        .and(query_param("api-version", "2024-10-21"))
        .and(header("api-key", "azure-key-123"))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;
    let env = settings(&[
        ("INSIGHTS_LLM_AUTH_HEADER", "api-key"),
        ("INSIGHTS_LLM_API_KEY", "azure-key-123"),
        ("INSIGHTS_LLM_QUERY_PARAMS", "api-version=2024-10-21"),
    ]);
    let base = format!("{}/openai/deployments/insights-4o-mini", server.uri());
    let client = LlmClient::new(config(&env, base)).unwrap();

    let insight = client.generate_for(&conversation(7, 4, 40)).await.unwrap();
    assert_eq!(insight.attempts, 1);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "the Azure-shaped request did not match");
    assert_eq!(requests[0].url.query(), Some("api-version=2024-10-21"));
    assert_eq!(header_of(&requests[0], "api-key"), Some("azure-key-123"));
    assert_eq!(header_of(&requests[0], "authorization"), None);
}

#[tokio::test]
async fn the_default_sends_the_key_as_authorization_bearer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok())
        .mount(&server)
        .await;
    let env = settings(&[("OPENAI_API_KEY", "sk-default-456")]);
    let client = LlmClient::new(config(&env, format!("{}/v1", server.uri()))).unwrap();

    client.generate_for(&conversation(1, 4, 40)).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url.path(), "/v1/chat/completions");
    assert_eq!(requests[0].url.query(), None);
    assert_eq!(
        header_of(&requests[0], "authorization"),
        Some("Bearer sk-default-456")
    );
    assert_eq!(header_of(&requests[0], "api-key"), None);
}

#[tokio::test]
async fn without_a_key_no_auth_header_is_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok())
        .mount(&server)
        .await;
    let env = settings(&[]);
    let client = LlmClient::new(config(&env, format!("{}/v1", server.uri()))).unwrap();

    client.generate_for(&conversation(1, 4, 40)).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(header_of(&requests[0], "authorization"), None);
}

#[tokio::test]
async fn extra_headers_and_query_params_arrive_with_every_request() {
    let server = MockServer::start().await;
    // A retried request must carry them too.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok())
        .mount(&server)
        .await;
    let env = settings(&[
        ("OPENAI_API_KEY", "sk-abc"),
        (
            "INSIGHTS_LLM_EXTRA_HEADERS",
            "OpenAI-Project: proj_123; cf-aig-authorization: Bearer gw-secret-789;",
        ),
        ("INSIGHTS_LLM_QUERY_PARAMS", "tenant=crm&note=a%20b"),
    ]);
    let client = LlmClient::new(config(&env, format!("{}/v1", server.uri()))).unwrap();

    let insight = client.generate_for(&conversation(1, 4, 40)).await.unwrap();
    assert_eq!(insight.attempts, 2);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(header_of(request, "openai-project"), Some("proj_123"));
        assert_eq!(
            header_of(request, "cf-aig-authorization"),
            Some("Bearer gw-secret-789")
        );
        assert_eq!(header_of(request, "authorization"), Some("Bearer sk-abc"));
        let query: Vec<(String, String)> = request
            .url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            query,
            [
                ("tenant".to_owned(), "crm".to_owned()),
                ("note".to_owned(), "a b".to_owned())
            ]
        );
    }
}

#[tokio::test]
async fn a_timeout_names_the_configured_value_and_the_variable_that_raises_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok().set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let env = settings(&[("INSIGHTS_LLM_TIMEOUT_MS", "250")]);
    let cfg = LlmConfig {
        max_retries: 1,
        ..config(&env, format!("{}/v1", server.uri()))
    };
    assert_eq!(cfg.request_timeout, Duration::from_millis(250));
    let client = LlmClient::new(cfg).unwrap();

    let err = client
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Transient { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(err.is_outage());
    assert_eq!(
        err.to_string(),
        "LLM request failed after 2 attempts: request timed out after 250ms \
         (INSIGHTS_LLM_TIMEOUT_MS=250; raise it for slow models)"
    );
}

#[tokio::test]
async fn debug_output_shows_header_names_but_no_values_and_no_key() {
    let env = settings(&[
        ("INSIGHTS_LLM_API_KEY", "sk-KEY-SECRET"),
        ("INSIGHTS_LLM_AUTH_HEADER", "api-key"),
        (
            "INSIGHTS_LLM_EXTRA_HEADERS",
            "X-Gateway-Token: GATEWAY-SECRET",
        ),
        ("INSIGHTS_LLM_QUERY_PARAMS", "api-version=2024-10-21"),
    ]);
    let cfg = LlmConfig::from_settings(&env, "http://127.0.0.1:9/v1");
    let client = LlmClient::new(cfg.clone()).unwrap();
    for shown in [
        format!("{cfg:?}"),
        format!("{cfg:#?}"),
        format!("{client:?}"),
        format!("{env:?}"),
    ] {
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("X-Gateway-Token"), "{shown}");
        assert!(shown.contains("api-key"), "{shown}");
        assert!(shown.contains("api-version"), "{shown}");
    }
}

#[tokio::test]
async fn a_header_that_would_carry_the_key_twice_is_a_configuration_error() {
    let env = settings(&[
        ("INSIGHTS_LLM_API_KEY", "sk-one"),
        ("INSIGHTS_LLM_AUTH_HEADER", "api-key"),
        ("INSIGHTS_LLM_EXTRA_HEADERS", "API-Key: sk-two"),
    ]);
    let err = LlmClient::new(LlmConfig::from_settings(&env, "http://127.0.0.1:9/v1")).unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Config);
    let shown = err.to_string();
    assert!(
        shown.contains(
            r#"INSIGHTS_LLM_EXTRA_HEADERS entry "API-Key" is the header INSIGHTS_LLM_AUTH_HEADER sends the API key in"#
        ),
        "{shown}"
    );
    assert!(!shown.contains("sk-"), "{shown}");
    // Without a key nothing collides: the extra header is the only one.
    let keyless = Settings {
        llm_api_key: None,
        ..env
    };
    assert!(LlmClient::new(LlmConfig::from_settings(&keyless, "http://127.0.0.1:9/v1")).is_ok());
}

#[tokio::test]
async fn a_query_in_the_base_url_points_at_the_query_variable() {
    let cfg = LlmConfig::new(
        "https://example.openai.azure.com/openai/deployments/d?api-version=2024-10-21",
        "d",
    );
    let err = LlmClient::new(cfg).unwrap_err();
    assert_eq!(err.kind(), LlmErrorKind::Config);
    let shown = err.to_string();
    assert!(shown.contains("INSIGHTS_LLM_BASE_URL: expected a URL without a query (set its parameters in INSIGHTS_LLM_QUERY_PARAMS)"), "{shown}");
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_the_key_stays_with_the_configured_host() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok())
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(307).insert_header(
            "location",
            format!("{}/v1/chat/completions", elsewhere.uri()).as_str(),
        ))
        .mount(&server)
        .await;
    let mut cfg = config(&settings(&[]), format!("{}/v1", server.uri()));
    cfg.api_key = Some(SecretString::new("azure-key".to_owned()));
    cfg.auth_header = insights_core::AuthHeader {
        name: "api-key".to_owned(),
        scheme: None,
    };
    let client = LlmClient::new(cfg).unwrap();

    let err = client
        .generate_for(&conversation(1, 4, 40))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    assert!(err.to_string().contains("HTTP 307"), "{err}");
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
}
