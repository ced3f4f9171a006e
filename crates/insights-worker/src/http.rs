//! Every route of the worker's HTTP surface: `/healthz` (the process lives), `/readyz` (503
//! while the circuit breaker is open or the queue database does not answer), `/metrics`
//! (Prometheus text) and the apalis-board dashboard (REST under `/api/v1`, the embedded UI at
//! `/`); the readiness probe behind `/readyz`; and `insights dashboard`, the same surface
//! without a worker.
//!
//! Bound beyond loopback the server requires a bearer token (`INSIGHTS_DASHBOARD_TOKEN`) for
//! everything except the two probes, and refuses to start without one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use insights_core::{INSIGHTS_QUEUE, InsightJob, SecretString, Settings};
use insights_queue::{Queue, WorkerStats};
use insights_store::Store;

use crate::breaker::Breaker;
use crate::defaults::READY_CACHE;
use crate::error::WorkerError;
use crate::metrics::Metrics;
use crate::signals::shutdown_signal;
use crate::wiring;

/// A readiness probe of the queue database: `Ok` when it answers.
pub type ReadyProbe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Bound on the readiness probe: a probe that hangs is a failed probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Cookie that carries the dashboard token for the browser UI (its requests cannot add a
/// header), set by visiting `/?token=...` once.
const TOKEN_COOKIE: &str = "insights_dashboard_token";

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    breaker: Option<Breaker>,
    probe: Option<ReadyProbe>,
}

#[derive(Clone)]
struct AuthState {
    token: Option<Arc<SecretString>>,
}

/// What the server shows.
pub struct HttpParts {
    pub metrics: Metrics,
    /// `None` for the dashboard-only process (no worker, no breaker).
    pub breaker: Option<Breaker>,
    pub probe: Option<ReadyProbe>,
    /// The apalis-board router (API nested at `/api/v1` and UI fallback), when available.
    pub board: Option<Router>,
    pub token: Option<SecretString>,
}

/// Fails with a configuration error when `bind` is not loopback and no token is set.
pub fn check_bind(bind: SocketAddr, token: Option<&SecretString>) -> Result<(), WorkerError> {
    if !bind.ip().is_loopback() && token.is_none() {
        return Err(WorkerError::Config(format!(
            "INSIGHTS_HTTP_BIND={bind} is reachable beyond this machine: set INSIGHTS_DASHBOARD_TOKEN \
             (a bearer token) or bind to 127.0.0.1"
        )));
    }
    Ok(())
}

/// The full router.
pub fn router(parts: HttpParts) -> Router {
    let state = AppState {
        metrics: parts.metrics,
        breaker: parts.breaker,
        probe: parts.probe,
    };
    let auth = AuthState {
        token: parts.token.map(Arc::new),
    };
    let mut protected = Router::new()
        .route("/metrics", get(metrics_handler))
        .with_state(state.clone());
    if let Some(board) = parts.board {
        protected = protected.merge(board);
    }
    let protected = protected.layer(middleware::from_fn_with_state(auth, require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(state)
        .merge(protected)
}

/// Binds and serves until `shutdown` resolves, in a task of its own. Returns the bound address
/// (port 0 picks a free one) and that task.
pub async fn serve(
    bind: SocketAddr,
    parts: HttpParts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), WorkerError> {
    check_bind(bind, parts.token.as_ref())?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| WorkerError::Runtime(format!("cannot bind the HTTP server to {bind}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| WorkerError::Runtime(format!("cannot read the HTTP address: {e}")))?;
    let app = router(parts);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok((addr, handle))
}

/// `insights dashboard`: the HTTP surface (board, health, metrics) without a worker, until
/// ctrl-c or SIGTERM.
pub async fn run_dashboard(settings: &Settings) -> Result<(), WorkerError> {
    let queue = wiring::queue(settings).await?;
    let parts = HttpParts {
        metrics: Metrics::new(),
        breaker: None,
        probe: Some(ready_probe(&queue, None, None)),
        board: Some(board_router(&queue)),
        token: settings.dashboard_token.clone(),
    };
    let (addr, handle) = serve(settings.http_bind, parts, shutdown_signal()).await?;
    tracing::info!(%addr, "dashboard listening (UI at /, API at /api/v1, /healthz, /readyz, /metrics)");
    let _ = handle.await;
    queue.pool().close().await;
    Ok(())
}

/// The apalis-board dashboard for the insights queue: REST API under `/api/v1`, the embedded
/// UI for every other path.
pub fn board_router(queue: &Queue) -> Router {
    use apalis_board::axum::framework::{ApiBuilder, RegisterRoute};
    use apalis_board::axum::ui::ServeUI;
    let api = ApiBuilder::new(Router::new())
        .register(INSIGHTS_QUEUE, queue.board::<InsightJob>(INSIGHTS_QUEUE))
        .build();
    // The UI hard-codes `/api/v1` and root-relative assets, so it is served at `/`.
    Router::new()
        .nest("/api/v1", api)
        .fallback_service(ServeUI::new())
}

/// Readiness of the databases without turning probes into connection attempts: not ready while
/// the connection gate of the queue's pool (or of the app store's, when given) is closed, or as
/// soon as the worker's own queue calls failed since the last look (no query at all);
/// otherwise one cheap count query whose answer is reused for [`READY_CACHE`].
pub fn ready_probe(
    queue: &Queue,
    backend_stats: Option<WorkerStats>,
    store: Option<Store>,
) -> ReadyProbe {
    struct Seen {
        at: Option<Instant>,
        answer: Result<(), String>,
        db_errors: u64,
    }
    let seen = Arc::new(tokio::sync::Mutex::new(Seen {
        at: None,
        answer: Ok(()),
        db_errors: 0,
    }));
    let queue = queue.clone();
    Arc::new(move || {
        let q = queue.clone();
        let seen = seen.clone();
        let stats = backend_stats.clone();
        let store = store.clone();
        Box::pin(async move {
            // During an outage the gates answer from memory: no connection is opened for a
            // probe while the worker's own calls are refused.
            if !q.is_reachable() {
                return Err("queue database unreachable (connection gate closed)".to_owned());
            }
            if store.as_ref().is_some_and(|s| !s.gate().is_open()) {
                return Err("app database unreachable (connection gate closed)".to_owned());
            }
            // One probe at a time: concurrent callers wait for (and reuse) its answer.
            let mut seen = seen.lock().await;
            if let Some(stats) = &stats {
                let errors = stats.snapshot().db_errors;
                let grew = errors > seen.db_errors;
                seen.db_errors = errors;
                if grew {
                    seen.at = Some(Instant::now());
                    seen.answer = Err("the worker's queue calls are failing".to_owned());
                    return seen.answer.clone();
                }
            }
            if let Some(at) = seen.at
                && at.elapsed() < READY_CACHE
            {
                return seen.answer.clone();
            }
            let answer = q
                .counts(INSIGHTS_QUEUE)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            seen.at = Some(Instant::now());
            seen.answer = answer.clone();
            answer
        })
    })
}

async fn metrics_handler(State(st): State<AppState>) -> Response {
    let open = st.breaker.as_ref().is_some_and(Breaker::is_open);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        st.metrics.render_prometheus(open),
    )
        .into_response()
}

async fn ready_handler(State(st): State<AppState>) -> Response {
    if let Some(breaker) = st.breaker.as_ref().filter(|b| b.is_open()) {
        let cause = match (breaker.is_db_open(), breaker.is_llm_open()) {
            (true, true) => "app database connection errors and LLM endpoint outage",
            (false, true) => "LLM endpoint outage",
            _ => "app database connection errors",
        };
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: circuit breaker open ({cause})\n"),
        )
            .into_response();
    }
    if let Some(probe) = &st.probe {
        match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: queue database: {e}\n"),
                )
                    .into_response();
            }
            Err(_) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: queue database probe timed out\n",
                )
                    .into_response();
            }
        }
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn require_token(State(auth): State<AuthState>, req: Request, next: Next) -> Response {
    let Some(token) = auth.token.as_deref() else {
        return next.run(req).await;
    };
    let expected = token.expose().as_bytes();
    // `/?token=...` from a browser: set the cookie the UI's own requests will carry.
    if let Some(q) = req.uri().query()
        && let Some(given) = q.split('&').find_map(|kv| kv.strip_prefix("token="))
    {
        if ct_eq(given.as_bytes(), expected) {
            let cookie = format!("{TOKEN_COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/");
            let mut resp = (StatusCode::SEE_OTHER, "").into_response();
            resp.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/"));
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            return resp;
        }
        return unauthorized();
    }
    if presented_tokens(req.headers()).any(|t| ct_eq(t.as_bytes(), expected)) {
        return next.run(req).await;
    }
    unauthorized()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        "missing or wrong bearer token\n",
    )
        .into_response()
}

fn presented_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='));
    bearer.chain(cookies)
}

/// Comparison whose time does not depend on where the first difference is.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn parts(token: Option<&str>) -> HttpParts {
        HttpParts {
            metrics: Metrics::new(),
            breaker: None,
            probe: None,
            board: Some(Router::new().route("/api/v1/queues", get(|| async { "[]" }))),
            token: token.map(|t| SecretString::from(t.to_owned())),
        }
    }

    async fn status(app: &Router, uri: &str, auth: Option<&str>) -> StatusCode {
        let mut req = Request::builder().uri(uri);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        app.clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn probes_are_open_and_the_rest_needs_the_token() {
        let app = router(parts(Some("s3cret")));
        assert_eq!(status(&app, "/healthz", None).await, StatusCode::OK);
        assert_eq!(status(&app, "/readyz", None).await, StatusCode::OK);
        assert_eq!(
            status(&app, "/metrics", None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&app, "/api/v1/queues", Some("Bearer nope")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&app, "/api/v1/queues", Some("Bearer s3cret")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, "/metrics", Some("Bearer s3cret")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, "/?token=s3cret", None).await,
            StatusCode::SEE_OTHER
        );
    }

    #[tokio::test]
    async fn without_a_token_everything_is_open() {
        let app = router(parts(None));
        assert_eq!(status(&app, "/metrics", None).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn readiness_follows_the_breaker_and_the_probe() {
        let breaker = Breaker::new(1, Arc::new(crate::breaker::NoGate));
        let mut p = parts(None);
        p.breaker = Some(breaker.clone());
        let app = router(p);
        assert_eq!(status(&app, "/readyz", None).await, StatusCode::OK);
        breaker.record_connection_error();
        assert_eq!(
            status(&app, "/readyz", None).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        breaker.record_success();
        assert_eq!(status(&app, "/readyz", None).await, StatusCode::OK);

        let mut p = parts(None);
        p.probe = Some(Arc::new(|| {
            Box::pin(async { Err("connection refused".to_owned()) })
        }));
        let app = router(p);
        assert_eq!(
            status(&app, "/readyz", None).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn beyond_loopback_needs_a_token() {
        let any: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        assert!(check_bind(any, None).is_err());
        assert!(check_bind(lo, None).is_ok());
        assert!(check_bind(any, Some(&SecretString::from("t".to_owned()))).is_ok());
    }
}
