//! TLS to the database, as managed Postgres (Supabase, Neon, RDS) requires it: a throwaway
//! cluster with `ssl = on` and a certificate signed by a CA made for the test.

use std::time::Duration;

use insights_e2e::mock::start_mock;
use insights_e2e::{E2eDb, Insights, WorkerEnv};
use insights_llm::mock::MockLlmConfig;
use insights_testkit::{Cluster, TestCa, wait_until};
use sqlx::{Connection, PgConnection};

use crate::support::enqueue;

const LEADS: usize = 20;
/// Sent in every URL below: the cluster trusts every login, so it is never checked; it must
/// never be printed.
const PASSWORD: &str = "tls-s3cret-pw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_ca_encrypts_every_backend_and_fails_in_one_line_without_it() {
    let ca = TestCa::create("tls-ca").unwrap();
    let cert = ca.server_cert.display().to_string();
    let key = ca.server_key.display().to_string();
    let cluster = Cluster::start_with(&[
        ("ssl", "on"),
        ("ssl_cert_file", &cert),
        ("ssl_key_file", &key),
    ])
    .await
    .unwrap();
    let name = "insights_tls";
    let mut admin = PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.ok();
    let db = E2eDb::attach(&cluster.url(name), name).await.unwrap();
    db.migrate().await.unwrap();
    db.seed(LEADS, 7).await.unwrap();
    db.book_all().await.unwrap();
    let candidates = db.candidate_ids().await.unwrap().len() as u64;
    assert!(candidates > 0);

    let mock = start_mock(MockLlmConfig {
        latency: Duration::from_millis(200),
        ..MockLlmConfig::default()
    })
    .await
    .unwrap();
    let url = |query: &str| {
        format!(
            "postgres://postgres:{PASSWORD}@localhost:{}/{name}?{query}",
            cluster.port
        )
    };
    let ca_path = ca.ca_cert.display().to_string();

    // verify-full with the CA: the whole pipeline runs, every backend of the worker encrypted.
    let env = WorkerEnv::new(
        &url(&format!("sslmode=verify-full&sslrootcert={ca_path}")),
        &mock.base_url(),
    );
    let report = enqueue(&env, &[]).await;
    assert_eq!(report.enqueued, candidates, "{report:?}");
    let mut worker = Insights::with_env(&env)
        .arg("work")
        .spawn("tls-worker")
        .unwrap();
    let encrypted_sample = std::sync::Mutex::new(None);
    wait_until(
        Duration::from_secs(60),
        "the worker writes every insight",
        || {
            let db = &db;
            let sample = &encrypted_sample;
            async move {
                // (backends of the worker, of which encrypted), sampled while it runs.
                let row: (i64, i64) = sqlx::query_as(
                    "SELECT count(*), count(*) FILTER (WHERE s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = current_database() AND a.application_name = 'insights-worker'",
                )
                .fetch_one(&db.pool)
                .await
                .unwrap_or((0, 0));
                if row.0 > 0 {
                    *sample.lock().unwrap() = Some(row);
                }
                db.insight_count().await.unwrap_or(0) == candidates
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", worker.describe()));
    worker.terminate(Duration::from_secs(20)).await.unwrap();
    let (backends, encrypted) = encrypted_sample
        .into_inner()
        .unwrap()
        .expect("sampled the worker's backends");
    println!("worker backends: {backends}, encrypted: {encrypted}");
    assert_eq!(backends, encrypted, "every backend of the worker uses TLS");
    assert!(
        !worker.stderr().contains(PASSWORD) && !worker.stdout().contains(PASSWORD),
        "the password leaked into the worker's output"
    );

    // verify-full without the CA: refused at start-up, one line naming the server and the
    // certificate problem, the password redacted.
    let out = Insights::with_env(&WorkerEnv::new(
        &url("sslmode=verify-full"),
        &mock.base_url(),
    ))
    .args(["enqueue", "--dry-run"])
    .run_within(Duration::from_secs(60))
    .await
    .unwrap();
    println!("without the CA: {}", out.describe());
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    let stderr = out.stderr.trim();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!("localhost:{}", cluster.port)),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");

    // require: encrypted without verifying the server, as libpq does.
    let out = Insights::with_env(&WorkerEnv::new(&url("sslmode=require"), &mock.base_url()))
        .args(["enqueue", "--dry-run", "--json"])
        .run_within(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(out.code(), Some(0), "{}", out.describe());
}
