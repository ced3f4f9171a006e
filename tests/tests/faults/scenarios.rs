//! One test per fault. Each builds its own topology and checks every acceptance criterion (see
//! `runner`); the number given to `Spec::new` names the scenario in the `FAULT-REPORT` line and
//! seeds the mock LLM.

use insights_llm::mock::RateLimitBurst;

use crate::defaults::{
    BLACKHOLE_FOR, BURST_EVERY, BURST_LEN, BURST_RETRY_AFTER_MS, LLM_FAIL_RATE, LLM_MALFORMED_RATE,
    LONG_BLACKHOLE_FOR,
};
use crate::runner::{Fault, Spec, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_killed_and_restarted_after_3s() {
    run(Spec::new(
        1,
        "pgbouncer SIGKILL, restart after 3 s",
        Fault::KillPooler,
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fast_shutdown_restarted_after_5s() {
    run(Spec::new(
        2,
        "Postgres fast shutdown, restart after 5 s",
        Fault::StopPostgres,
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_backends_terminated_every_500ms_for_5s() {
    run(Spec::new(
        3,
        "pg_terminate_backend every 500 ms for 5 s",
        Fault::TerminateBackends,
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooler_saturated_for_5s() {
    run(Spec::new(
        4,
        "every pgbouncer server connection held by others for 5 s",
        Fault::SaturatePooler,
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_blackhole_for_10s() {
    run(Spec::new(
        5,
        "10 s network blackhole",
        Fault::Blackhole(BLACKHOLE_FOR),
    ))
    .await
    .unwrap();
}

/// The same blackhole, longer than the worker's 10 s statement timeout, so statements time out
/// while the network still swallows everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_blackhole_longer_than_the_statement_timeout() {
    run(Spec::new(
        50,
        "25 s network blackhole",
        Fault::Blackhole(LONG_BLACKHOLE_FOR),
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sigkilled_and_started_again() {
    run(Spec::new(
        6,
        "worker SIGKILL, started again",
        Fault::KillWorker,
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_one_sigtermed() {
    run(Spec::new(
        7,
        "two workers, one SIGTERM",
        Fault::TermOneOfTwo,
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_errors_rate_limits_outage_malformed() {
    let mut spec = Spec::new(
        8,
        "LLM: 30% 500s, 429 bursts, 10 s outage, malformed bodies",
        Fault::LlmOutage,
    );
    spec.mock.fail_rate = LLM_FAIL_RATE;
    spec.mock.malformed_rate = LLM_MALFORMED_RATE;
    spec.mock.rate_limit = Some(RateLimitBurst {
        every_n: BURST_EVERY,
        burst_len: BURST_LEN,
        retry_after_ms: BURST_RETRY_AFTER_MS,
    });
    run(spec).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payload_in_the_queue() {
    run(Spec::new(9, "malformed job payload", Fault::MalformedJob))
        .await
        .unwrap();
}
