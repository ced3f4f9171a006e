//! The axum server: routes, fault injection, and the handle that controls it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::config::{MockLlmConfig, PlannedFault};
use super::insight::{derive_insight, read_prompt, sample_document};
use super::stats::{MockStats, Outcome, Recorder};
use crate::wire::{ChatMessage, ChatResponse, Choice, Usage};
use insights_core::insight::INSIGHT_SCHEMA_NAME;

/// How long `shutdown` waits for open connections before aborting the server task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the mock reads of a request. `response_format` and other fields are skipped without
/// building a value tree: the schema would otherwise be parsed into a map on every request.
#[derive(Deserialize)]
struct MockRequest {
    #[serde(default)]
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    response_format: Option<ResponseFormat>,
}

/// The schema is kept as raw text and parsed only when it is not the built-in insight's.
#[derive(Deserialize)]
struct ResponseFormat {
    #[serde(default)]
    json_schema: Option<JsonSchemaFormat>,
}

#[derive(Deserialize)]
struct JsonSchemaFormat {
    #[serde(default)]
    name: String,
    schema: Option<Box<serde_json::value::RawValue>>,
}

impl MockRequest {
    /// The schema the reply must follow when it is not the built-in insight's.
    fn custom_schema(&self) -> Option<&serde_json::value::RawValue> {
        let format = self.response_format.as_ref()?.json_schema.as_ref()?;
        if format.name == INSIGHT_SCHEMA_NAME {
            return None;
        }
        format.schema.as_deref()
    }
}

struct Shared {
    cfg: MockLlmConfig,
    outage: AtomicBool,
    /// Global arrival order of chat requests, for rate-limit bursts.
    arrivals: AtomicU64,
    /// Response ids.
    responses: AtomicU64,
    stats: Recorder,
    /// Start of the request budget's first window.
    started: Instant,
    /// The request budget's current window and the requests it admitted.
    window: Mutex<(u64, u64)>,
}

/// The request budget's verdict on one request.
enum Metered {
    Admitted,
    /// Over the budget: the budget and the time until the window ends.
    Limited {
        limit: u64,
        reset: Duration,
    },
}

impl Shared {
    fn meter(&self) -> Metered {
        let Some(budget) = self.cfg.request_budget else {
            return Metered::Admitted;
        };
        let (index, reset) = budget.window(self.started.elapsed());
        // Plain counters: a poisoned lock still holds usable numbers.
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.0 != index {
            *w = (index, 0);
        }
        if w.1 >= budget.requests {
            return Metered::Limited {
                limit: budget.requests,
                reset,
            };
        }
        w.1 += 1;
        Metered::Admitted
    }
}

/// A running mock. Dropping it stops the server (without waiting).
pub struct MockHandle {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl std::fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHandle")
            .field("addr", &self.addr)
            .field("cfg", &self.shared.cfg)
            .finish()
    }
}

impl MockHandle {
    /// `http://ADDR/v1`, what `LlmConfig::base_url` expects.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn stats(&self) -> MockStats {
        self.shared.stats.snapshot()
    }

    /// Requests being answered now; cheaper than `stats()` for polling.
    pub fn in_flight(&self) -> u64 {
        self.shared.stats.current_in_flight()
    }

    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// While set, every chat request is answered 503 at once.
    pub fn set_outage(&self, on: bool) {
        self.shared.outage.store(on, Ordering::SeqCst);
    }

    pub fn config(&self) -> &MockLlmConfig {
        &self.shared.cfg
    }

    /// Stops accepting, lets open requests finish (up to a grace period), and returns the
    /// server's result.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(io::Error::other(format!("mock server task failed: {join}"))),
            Err(_) => {
                task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves the mock on `listener` in a background task of the current tokio runtime.
pub fn serve_mock(listener: tokio::net::TcpListener, cfg: MockLlmConfig) -> io::Result<MockHandle> {
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        outage: AtomicBool::new(cfg.outage),
        cfg,
        arrivals: AtomicU64::new(0),
        responses: AtomicU64::new(0),
        stats: Recorder::default(),
        started: Instant::now(),
        window: Mutex::new((0, 0)),
    });
    let app = router(shared.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, "mock LLM listening");
    Ok(MockHandle {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset))
        .route("/control/outage", post(outage))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.stats.snapshot()).into_response()
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.stats.reset();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct OutageQuery {
    on: bool,
}

/// `POST /control/outage?on=true|false`: the runtime switch for a mock in another process.
async fn outage(State(shared): State<Arc<Shared>>, Query(q): Query<OutageQuery>) -> StatusCode {
    shared.outage.store(q.on, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

async fn chat(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: MockRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            shared.stats.bad_request();
            return error_response(
                &shared,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                &format!("the body is not a chat completion request: {e}"),
            );
        }
    };
    let lead = lead_key(request.user.as_deref());
    let arrival = shared.stats.arrive(&lead);
    let seq = shared.arrivals.fetch_add(1, Ordering::SeqCst);
    if let Some(refused) = refuse_at_the_door(&shared, &lead, seq) {
        return refused;
    }
    let cfg = &shared.cfg;
    let nth = arrival.nth_for_lead;
    let fault = cfg.planned_fault(&lead, nth);
    {
        // The guard keeps the in-flight count right even if the client hangs up mid-sleep.
        let _in_flight = shared.stats.in_flight();
        let latency = cfg.latency_for(&lead, nth);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
    match fault {
        Some(PlannedFault::ServerError) => {
            shared.stats.finish(&lead, Outcome::ServerError);
            error_response(
                &shared,
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                "mock injected server error",
            )
        }
        Some(PlannedFault::Malformed) => {
            shared.stats.finish(&lead, Outcome::Malformed);
            let content = match cfg.malformed_variant(&lead, nth) {
                0 => r#"{"summary": "The lead wants"#.to_owned(),
                1 => r#"{"summary":"missing fields"}"#.to_owned(),
                _ => "Sure! Here is the insight you asked for.".to_owned(),
            };
            completion(&shared, &request, content)
        }
        None => answer(&shared, &request, &lead),
    }
}

/// The answers given before any work: the outage switch, the request budget, a rate-limit
/// burst. `None`: the request goes on to the model.
fn refuse_at_the_door(shared: &Shared, lead: &str, seq: u64) -> Option<Response> {
    if shared.outage.load(Ordering::SeqCst) {
        shared.stats.finish(lead, Outcome::Outage);
        return Some(error_response(
            shared,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            None,
            "mock outage",
        ));
    }
    if let Metered::Limited { limit, reset } = shared.meter() {
        shared.stats.finish(lead, Outcome::RateLimited);
        return Some(over_budget(shared, limit, reset));
    }
    if let Some(burst) = shared.cfg.rate_limit
        && burst.limits(seq)
    {
        shared.stats.finish(lead, Outcome::RateLimited);
        let mut response = error_response(
            shared,
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            Some("rate_limit_exceeded"),
            "mock rate limit burst",
        );
        let headers = response.headers_mut();
        headers.insert("retry-after-ms", HeaderValue::from(burst.retry_after_ms));
        headers.insert(
            "retry-after",
            HeaderValue::from(burst.retry_after_ms.div_ceil(1000)),
        );
        return Some(response);
    }
    None
}

/// A metered provider's 429: the wait until the window ends and the `x-ratelimit-*` headers.
fn over_budget(shared: &Shared, limit: u64, reset: Duration) -> Response {
    let mut response = error_response(
        shared,
        StatusCode::TOO_MANY_REQUESTS,
        "requests",
        Some("rate_limit_exceeded"),
        &format!("Rate limit reached for requests: limit {limit}, used {limit}"),
    );
    let ms = u64::try_from(reset.as_millis()).unwrap_or(u64::MAX).max(1);
    let headers = response.headers_mut();
    headers.insert("retry-after-ms", HeaderValue::from(ms));
    headers.insert("retry-after", HeaderValue::from(ms.div_ceil(1000)));
    headers.insert("x-ratelimit-limit-requests", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining-requests", HeaderValue::from(0u64));
    if let Ok(v) = HeaderValue::from_str(&format!("{ms}ms")) {
        headers.insert("x-ratelimit-reset-requests", v);
    }
    response
}

/// A valid insight derived from what the prompt says about the lead.
fn answer(shared: &Shared, request: &MockRequest, lead: &str) -> Response {
    let user_text = request
        .messages
        .iter()
        .filter(|m| m.role == "user")
        .filter_map(|m| m.content.as_deref())
        .collect::<Vec<_>>()
        .join("\n");
    let facts = read_prompt(&user_text);
    let content = match request.custom_schema() {
        None => serde_json::to_string(&derive_insight(lead, &facts)),
        Some(raw) => serde_json::from_str(raw.get())
            .and_then(|schema| serde_json::to_string(&sample_document(&schema, lead, &facts))),
    };
    match content {
        Ok(content) => {
            shared.stats.finish(lead, Outcome::Ok);
            completion(shared, request, content)
        }
        Err(e) => {
            shared.stats.finish(lead, Outcome::ServerError);
            error_response(
                shared,
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                &format!("mock could not encode the insight: {e}"),
            )
        }
    }
}

fn lead_key(user: Option<&str>) -> String {
    user.and_then(|u| u.strip_prefix("lead-"))
        .filter(|id| !id.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn completion(shared: &Shared, request: &MockRequest, content: String) -> Response {
    let id = next_id(shared);
    let prompt_chars: usize = request
        .messages
        .iter()
        .filter_map(|m| m.content.as_deref())
        .map(|c| c.chars().count())
        .sum();
    let prompt_tokens = tokens(prompt_chars);
    let completion_tokens = tokens(content.chars().count());
    let body = ChatResponse {
        id: Some(id.clone()),
        object: Some("chat.completion".to_owned()),
        created: Some(unix_now()),
        model: Some(request.model.clone()),
        choices: vec![Choice {
            index: 0,
            message: ChatMessage {
                role: "assistant".to_owned(),
                content: Some(content),
                refusal: None,
            },
            finish_reason: Some("stop".to_owned()),
        }],
        usage: Some(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }),
        error: None,
    };
    with_request_id((StatusCode::OK, axum::Json(body)).into_response(), &id)
}

fn error_response(
    shared: &Shared,
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: &str,
) -> Response {
    let id = next_id(shared);
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    with_request_id((status, axum::Json(body)).into_response(), &id)
}

fn with_request_id(mut response: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        let headers: &mut HeaderMap = response.headers_mut();
        headers.insert("x-request-id", v);
    }
    response
}

fn next_id(shared: &Shared) -> String {
    format!(
        "mock-{}",
        shared.responses.fetch_add(1, Ordering::SeqCst) + 1
    )
}

/// About four characters per token, as for English text with OpenAI's tokenizers.
fn tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
