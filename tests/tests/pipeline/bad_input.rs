//! Bad input: jobs that cannot or need not run, bad configuration, an unreachable database.

use insights_e2e::mock::{requests_for, start_mock};
use insights_e2e::{E2eDb, Insights, WorkerEnv};
use insights_llm::mock::MockLlmConfig;
use serde_json::json;

use crate::support::{conversation, enqueue, field, work_until_idle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_empty_leads_are_skipped_and_an_unparseable_payload_is_discarded() {
    let db = E2eDb::create("e2e_bad_jobs").await.unwrap();
    let mock = start_mock(MockLlmConfig::default()).await.unwrap();
    let env = WorkerEnv::new(&db.url, &mock.base_url());
    const GOOD: i64 = 1;
    const DELETED: i64 = 2;
    const EMPTY: i64 = 3;
    db.insert_lead(GOOD, true, &conversation(4, 60))
        .await
        .unwrap();
    db.insert_lead(DELETED, true, &conversation(4, 60))
        .await
        .unwrap();
    db.insert_lead(EMPTY, true, &[]).await.unwrap();
    let report = enqueue(
        &env,
        &["--lead-id", "1", "--lead-id", "2", "--lead-id", "3"],
    )
    .await;
    assert_eq!(report.enqueued, 3, "{report:?}");
    // The lead is deleted after its job was enqueued.
    db.delete_lead(DELETED).await.unwrap();
    // A payload that does not parse as a job, straight into the queue.
    let bad = db
        .insert_raw_job(json!({"lead": "not-a-number"}))
        .await
        .unwrap();

    let (summary, _) = work_until_idle(&env).await;

    assert_eq!(field(&summary, "written"), 1, "{summary}");
    assert_eq!(field(&summary, "skipped_lead_gone"), 1, "{summary}");
    assert_eq!(field(&summary, "skipped_no_messages"), 1, "{summary}");
    for lead in [DELETED, EMPTY] {
        let job = db.job_for_lead(lead).await.unwrap().unwrap();
        assert_eq!(job.state, "completed", "lead {lead}: {job:?}");
        assert_eq!(
            requests_for(&mock.stats(), lead),
            0,
            "lead {lead} cost an LLM call"
        );
    }
    let jobs = db.jobs(Some("discarded")).await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].id, bad);
    let reason = jobs[0].last_error().unwrap_or_default().to_owned();
    println!("unparseable payload discarded with: {reason}");
    assert!(
        reason.contains("decode") || reason.contains("lead_id"),
        "the reason names the decode failure: {reason}"
    );
    // Nothing else was affected.
    db.assert_pipeline_done().await.unwrap();
    assert_eq!(mock.stats().total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_concurrency_exits_2_naming_the_variable() {
    let db_url = "postgres://postgres@127.0.0.1:5432/postgres";
    for value in ["abc", "0"] {
        let out = Insights::with_env(&WorkerEnv::new(db_url, "http://127.0.0.1:9/v1"))
            .env("INSIGHTS_CONCURRENCY", value)
            .arg("work")
            .run()
            .await
            .unwrap();
        assert_eq!(
            out.code(),
            Some(2),
            "INSIGHTS_CONCURRENCY={value}: {}",
            out.describe()
        );
        assert!(
            out.stderr.contains("INSIGHTS_CONCURRENCY"),
            "the message names the variable: {}",
            out.describe()
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    }
    // The flag goes through the same validation.
    let out = Insights::with_env(&WorkerEnv::new(db_url, "http://127.0.0.1:9/v1"))
        .args(["work", "--concurrency", "0"])
        .run()
        .await
        .unwrap();
    assert_eq!(out.code(), Some(2), "{}", out.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_garbled_database_url_exits_2_without_echoing_it() {
    let no_db = Insights::new()
        .env("INSIGHTS_LLM_BASE_URL", "http://127.0.0.1:9/v1")
        .arg("work")
        .run()
        .await
        .unwrap();
    assert_eq!(no_db.code(), Some(2), "{}", no_db.describe());
    assert!(
        no_db.stderr.contains("DATABASE_URL"),
        "{}",
        no_db.describe()
    );
    let garbled = Insights::with_env(&WorkerEnv::new(
        "postgres//user:hunter2-secret@host",
        "http://127.0.0.1:9/v1",
    ))
    .arg("work")
    .run()
    .await
    .unwrap();
    assert_eq!(garbled.code(), Some(2), "{}", garbled.describe());
    assert!(
        garbled.stderr.contains("DATABASE_URL"),
        "{}",
        garbled.describe()
    );
    assert!(
        !garbled.stderr.contains("hunter2-secret"),
        "the password leaked: {}",
        garbled.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_exits_1_with_a_one_line_reason() {
    // A port nothing listens on; a password that must not be printed.
    let port = insights_testkit::free_port().unwrap();
    let url = format!("postgres://postgres:pw-must-not-leak@127.0.0.1:{port}/insights");
    for command in ["work", "enqueue", "migrate"] {
        let out = Insights::with_env(&WorkerEnv::new(&url, "http://127.0.0.1:9/v1"))
            .arg(command)
            .run()
            .await
            .unwrap();
        println!("unreachable database, {command}: {}", out.stderr.trim());
        assert_eq!(out.code(), Some(1), "{command}: {}", out.describe());
        assert!(!out.stderr.contains("panicked"), "{}", out.describe());
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "{command}: one line: {}", out.describe());
        assert!(lines[0].starts_with("error: "), "{}", out.describe());
        assert!(
            lines[0].contains(&format!("127.0.0.1:{port}")),
            "the reason names the target: {}",
            out.describe()
        );
        assert!(
            !out.stderr.contains("pw-must-not-leak"),
            "the password leaked: {}",
            out.describe()
        );
    }
}
