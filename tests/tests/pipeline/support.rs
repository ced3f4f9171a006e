//! Shared setup of the pipeline tests.

use std::time::Duration;

use insights_e2e::defaults::DRAIN_TIMEOUT;
use insights_e2e::{E2eDb, Insights, RunOutput, WorkerEnv};
use insights_worker::EnqueueReport;
use serde_json::Value;

/// `insights enqueue --json [extra]`.
pub async fn enqueue(env: &WorkerEnv, extra: &[&str]) -> EnqueueReport {
    let out = Insights::with_env(env)
        .args(["enqueue", "--json"])
        .args(extra.iter().copied())
        .run()
        .await
        .unwrap()
        .ok()
        .unwrap();
    out.json().unwrap()
}

/// `insights work --exit-when-idle --json`: the final summary, after checking the exit code.
pub async fn work_until_idle(env: &WorkerEnv) -> (Value, RunOutput) {
    work_until_idle_within(env, DRAIN_TIMEOUT).await
}

pub async fn work_until_idle_within(env: &WorkerEnv, within: Duration) -> (Value, RunOutput) {
    let out = Insights::with_env(env)
        .args(["work", "--exit-when-idle", "--json"])
        .run_within(within)
        .await
        .unwrap();
    assert_eq!(out.code(), Some(0), "worker failed: {}", out.describe());
    assert!(
        !out.stderr.contains("panicked"),
        "worker panicked: {}",
        out.describe()
    );
    let summary: Value = out.json().unwrap();
    (summary, out)
}

/// A counter of the `work --json` summary.
pub fn field(summary: &Value, name: &str) -> u64 {
    summary
        .get(name)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("summary has no counter {name}: {summary}"))
}

/// `insights jobs show ID --json`.
pub async fn show_job(env: &WorkerEnv, id: i64) -> Value {
    let out = Insights::with_env(env)
        .args(["jobs", "show", &id.to_string(), "--json"])
        .run()
        .await
        .unwrap()
        .ok()
        .unwrap();
    out.json().unwrap()
}

/// The error texts recorded on a job shown by `jobs show --json`.
pub fn job_errors(job: &Value) -> Vec<String> {
    job.get("errors")
        .and_then(Value::as_array)
        .map(|errs| {
            errs.iter()
                .filter_map(|e| e.get("error").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A conversation of `n` alternating messages of about `chars` characters each.
pub fn conversation(n: usize, chars: usize) -> Vec<(bool, String)> {
    (0..n)
        .map(|i| {
            let inbound = i % 2 == 0;
            let mut body = format!(
                "Message {i}: {} ",
                if inbound {
                    "Thanks, sounds good, but the price is a concern for our budget."
                } else {
                    "Happy to help; let me walk you through the plans before our call."
                }
            );
            while body.len() < chars {
                body.push_str("More detail about the team, the timeline and the rollout. ");
            }
            (inbound, body)
        })
        .collect()
}

/// A migrated database with one booked lead (id 1) and a short conversation, enqueued.
pub async fn one_lead(label: &str, llm_base_url: &str) -> (E2eDb, WorkerEnv) {
    let db = E2eDb::create(label).await.unwrap();
    db.insert_lead(1, true, &conversation(6, 80)).await.unwrap();
    let env = WorkerEnv::new(&db.url, llm_base_url);
    let report = enqueue(&env, &["--lead-id", "1"]).await;
    assert_eq!(report.enqueued, 1, "{report:?}");
    (db, env)
}

/// A file of `examples/prisma-supabase/`.
pub fn example_file(name: &str) -> std::path::PathBuf {
    repo_file(&format!("examples/prisma-supabase/{name}"))
}

/// A file of the repository, by its path from the root.
pub fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// Runs a SQL file (several statements, simple protocol) as psql would without variables.
pub async fn apply_sql_file(pool: &sqlx::PgPool, path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let sql =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .with_context(|| format!("applying {}", path.display()))?;
    Ok(())
}
