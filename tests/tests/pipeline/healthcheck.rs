//! `insights healthcheck`, the container image's HEALTHCHECK: exit 0 while the HTTP server of
//! the same machine answers `/healthz`, 1 (never 2, which container runtimes reserve) otherwise.

use insights_e2e::defaults::{CONDITION_TIMEOUT, SHUTDOWN_TIMEOUT};
use insights_e2e::{E2eDb, Insights, WorkerEnv, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_while_the_server_answers_and_1_once_it_is_gone() {
    let db = E2eDb::create("e2e_healthcheck").await.unwrap();
    let port = insights_testkit::free_port().unwrap();
    // The server binds every interface; the check reaches it through loopback.
    let env = WorkerEnv::new(&db.url, "http://127.0.0.1:9/v1")
        .set("INSIGHTS_HTTP_BIND", format!("0.0.0.0:{port}"))
        .set("INSIGHTS_DASHBOARD_TOKEN", "tok-healthcheck");
    let mut server = Insights::with_env(&env)
        .arg("dashboard")
        .spawn("dashboard")
        .unwrap();
    let check = Insights::new().env("INSIGHTS_HTTP_BIND", format!("0.0.0.0:{port}"));

    let healthy = wait_until(CONDITION_TIMEOUT, "the health check to pass", || {
        let check = check.clone();
        async move {
            check
                .arg("healthcheck")
                .run()
                .await
                .is_ok_and(|out| out.code() == Some(0))
        }
    })
    .await;
    assert!(healthy.is_ok(), "{healthy:?}\n{}", server.describe());

    server.terminate(SHUTDOWN_TIMEOUT).await.unwrap();
    let out = check.arg("healthcheck").run().await.unwrap();
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(out.stderr.contains("/healthz"), "{}", out.describe());
}
