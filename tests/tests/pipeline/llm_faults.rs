//! LLM faults end to end: a scripted wiremock LLM, the real worker binary, and the outcome in
//! the queue and the insights table. (The client's retry rules themselves are unit-tested in
//! crates/insights-llm/tests; here: what the pipeline does with them.)

use std::time::Duration;

use insights_e2e::defaults::{CONDITION_TIMEOUT, SHUTDOWN_TIMEOUT};
use insights_e2e::llm_script::{Reply, ScriptedLlm};
use insights_e2e::wait_until;

use crate::support::{conversation, field, job_errors, one_lead, show_job, work_until_idle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_waits_at_least_retry_after_ms_then_writes() {
    const RETRY_AFTER_MS: u64 = 1_500;
    let llm = ScriptedLlm::start(
        vec![Reply::RateLimited {
            retry_after_ms: RETRY_AFTER_MS,
        }],
        Reply::Ok,
    )
    .await;
    let (db, env) = one_lead("e2e_llm_429", &llm.base_url()).await;
    let (summary, _) = work_until_idle(&env).await;

    let seen = llm.seen();
    assert_eq!(seen.len(), 2, "one 429, then one success");
    let waited = seen[1].at - seen[0].at;
    println!("429 with retry-after-ms {RETRY_AFTER_MS}: next request after {waited:?}");
    assert!(
        waited >= Duration::from_millis(RETRY_AFTER_MS),
        "retried after {waited:?}, before the server's {RETRY_AFTER_MS} ms"
    );
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    assert_eq!(field(&summary, "written"), 1, "{summary}");
    db.assert_pipeline_done().await.unwrap();
    let job = db.job_for_lead(1).await.unwrap().unwrap();
    assert_eq!(job.state, "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_quota_is_not_retried_and_does_not_burn_the_job() {
    let llm = ScriptedLlm::start(Vec::new(), Reply::Quota).await;
    let (db, env) = one_lead("e2e_llm_quota", &llm.base_url()).await;
    // Without --exit-when-idle: a snoozed job keeps the queue busy, so the worker is stopped
    // with SIGTERM once the job has been handed back.
    let mut worker = insights_e2e::Insights::with_env(&env)
        .arg("work")
        .spawn("work-quota")
        .unwrap();
    wait_until(
        CONDITION_TIMEOUT,
        "the quota-failed job handed back",
        || async {
            db.job_for_lead(1)
                .await
                .ok()
                .flatten()
                .is_some_and(|j| j.state != "running" && j.state != "available")
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", worker.describe()));
    let status = worker.terminate(SHUTDOWN_TIMEOUT).await.unwrap();
    assert!(status.success(), "{}", worker.describe());

    assert_eq!(llm.count(), 1, "insufficient_quota must not be retried");
    let job = db.job_for_lead(1).await.unwrap().unwrap();
    println!(
        "insufficient_quota: 1 request; job {} is {} (attempt {}/{}), run_at {}, errors {:?}",
        job.id, job.state, job.attempt, job.max_attempts, job.run_at, job.errors
    );
    // The worker's mapping: quota needs a person, so fetching pauses and the job is snoozed
    // (scheduled later) without spending an attempt: not discarded, not burned.
    assert_eq!(job.state, "scheduled", "{job:?}");
    assert_eq!(
        job.attempt, 0,
        "the snooze must give the attempt back: {job:?}"
    );
    assert!(
        job.run_at > chrono::Utc::now() + chrono::Duration::seconds(10),
        "snoozed for a while: {job:?}"
    );
    assert!(
        job.last_error().is_some_and(|e| e.contains("quota")),
        "{job:?}"
    );
    assert_eq!(db.insight_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_retried_a_bounded_number_of_times_then_discarded() {
    let llm = ScriptedLlm::start(Vec::new(), Reply::Malformed).await;
    let (db, env) = one_lead("e2e_llm_malformed", &llm.base_url()).await;
    // The key is sent to the LLM but never printed, even at debug level.
    const KEY: &str = "sk-e2e-secret-key-0123456789";
    let env = env
        .set("INSIGHTS_LLM_API_KEY", KEY)
        .set("RUST_LOG", "debug");
    let (summary, out) = work_until_idle(&env).await;
    assert!(
        llm.seen()
            .iter()
            .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {KEY}"))),
        "the API key is sent"
    );
    assert!(
        !out.stderr.contains(KEY) && !out.stdout.contains(KEY),
        "the API key leaked into the worker's output"
    );

    let expected = 1 + insights_llm::defaults::MALFORMED_RETRIES as usize;
    assert_eq!(
        llm.count(),
        expected,
        "one request plus {} malformed retries, then no more",
        insights_llm::defaults::MALFORMED_RETRIES
    );
    assert_eq!(field(&summary, "discarded"), 1, "{summary}");
    let id = db.job_for_lead(1).await.unwrap().unwrap().id;
    let job = show_job(&env, id).await;
    assert_eq!(job["state"], "discarded", "{job}");
    let errors = job_errors(&job);
    assert!(
        errors.last().is_some_and(|e| e.contains("malformed")),
        "the reason is kept: {job}"
    );
    assert_eq!(db.insight_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_is_retried_and_the_insight_written() {
    let llm = ScriptedLlm::start(
        vec![Reply::Delayed(Duration::from_secs(6), Box::new(Reply::Ok))],
        Reply::Ok,
    )
    .await;
    let (db, env) = one_lead("e2e_llm_timeout", &llm.base_url()).await;
    let env = env.set("INSIGHTS_LLM_TIMEOUT_MS", 1_000);
    let (summary, _) = work_until_idle(&env).await;

    let seen = llm.seen();
    assert!(seen.len() >= 2, "the timed-out request was not retried");
    let gap = seen[1].at - seen[0].at;
    println!(
        "LLM timeout 1 s: retried after {gap:?}, {} requests",
        seen.len()
    );
    assert!(
        gap >= Duration::from_secs(1),
        "retried before the timeout: {gap:?}"
    );
    assert_eq!(field(&summary, "written"), 1, "{summary}");
    db.assert_pipeline_done().await.unwrap();
    assert_eq!(
        db.job_for_lead(1).await.unwrap().unwrap().state,
        "completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_reason_length_leads_to_a_smaller_request() {
    let llm = ScriptedLlm::start(vec![Reply::Length], Reply::Ok).await;
    let db = insights_e2e::E2eDb::create("e2e_llm_length").await.unwrap();
    // Long enough that halving the prompt stays above the client's floor.
    db.insert_lead(1, true, &conversation(60, 200))
        .await
        .unwrap();
    let env = insights_e2e::WorkerEnv::new(&db.url, &llm.base_url());
    let report = crate::support::enqueue(&env, &["--lead-id", "1"]).await;
    assert_eq!(report.enqueued, 1);
    let (summary, _) = work_until_idle(&env).await;

    let seen = llm.seen();
    assert_eq!(seen.len(), 2, "truncated once, then answered");
    println!(
        "finish_reason=length: prompt {} → {} chars, body {} → {} bytes",
        seen[0].prompt_chars(),
        seen[1].prompt_chars(),
        seen[0].body_len,
        seen[1].body_len
    );
    assert!(seen[1].prompt_chars() < seen[0].prompt_chars());
    assert!(seen[1].body_len < seen[0].body_len);
    assert_eq!(field(&summary, "written"), 1, "{summary}");
    db.assert_pipeline_done().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_hands_the_job_back_until_then() {
    // Beyond the client's inline wait: the job goes back to the queue instead of holding a slot.
    let retry_after = insights_llm::defaults::MAX_INLINE_WAIT + Duration::from_secs(3);
    let retry_after_ms = retry_after.as_millis() as u64;
    let llm = ScriptedLlm::start(vec![Reply::RateLimited { retry_after_ms }], Reply::Ok).await;
    let (db, env) = one_lead("e2e_llm_429_long", &llm.base_url()).await;
    let (summary, _) = work_until_idle(&env).await;

    let seen = llm.seen();
    assert_eq!(seen.len(), 2, "one 429, then one success");
    let waited = seen[1].at - seen[0].at;
    println!(
        "429 with retry-after-ms {retry_after_ms} (beyond the inline wait): next request after {waited:?}"
    );
    assert!(waited >= retry_after, "retried after {waited:?}");
    assert_eq!(field(&summary, "snoozed"), 1, "{summary}");
    assert_eq!(field(&summary, "written"), 1, "{summary}");
    db.assert_pipeline_done().await.unwrap();
    let job = db.job_for_lead(1).await.unwrap().unwrap();
    assert_eq!(job.state, "completed");
    assert_eq!(
        job.attempt, 1,
        "a rate limit is not the job's fault: the hand-back gives the attempt back: {job:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_arriving_during_the_llm_call_makes_the_lead_a_candidate_again() {
    // The first answer takes long enough for the lead to write again meanwhile.
    let llm = ScriptedLlm::start(
        vec![Reply::Delayed(Duration::from_secs(2), Box::new(Reply::Ok))],
        Reply::Ok,
    )
    .await;
    let (db, env) = one_lead("e2e_llm_race", &llm.base_url()).await;
    let mut worker = insights_e2e::Insights::with_env(&env)
        .args(["work", "--exit-when-idle", "--json"])
        .spawn("work-race")
        .unwrap();
    wait_until(CONDITION_TIMEOUT, "the LLM call in flight", || async {
        llm.count() >= 1
    })
    .await
    .unwrap();
    let newer = db
        .add_message(1, "Actually, one more thing.")
        .await
        .unwrap();
    let status = worker
        .wait(insights_e2e::defaults::DRAIN_TIMEOUT)
        .await
        .unwrap();
    assert!(status.success(), "{}", worker.describe());

    // The insight describes what was sent, and the lead is stale again.
    let stored = db
        .insight_source(1)
        .await
        .unwrap()
        .expect("insight written");
    assert!(stored < newer, "{stored} vs {newer}");
    assert_eq!(db.candidate_ids().await.unwrap(), vec![1]);
    let report = crate::support::enqueue(&env, &[]).await;
    assert_eq!((report.candidates, report.enqueued), (1, 1), "{report:?}");
    work_until_idle(&env).await;
    assert_eq!(db.insight_source(1).await.unwrap(), Some(newer));
    db.assert_pipeline_done().await.unwrap();
    assert_eq!(llm.count(), 2);
}
