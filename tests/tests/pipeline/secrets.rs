//! Secrets as deployments hand them over: read from the files that `_FILE` variables name, never
//! printed, never in the worker's arguments, and a password given as `?password=` redacted like
//! one in the userinfo.

use std::path::PathBuf;

use insights_e2e::defaults::{CONDITION_TIMEOUT, DRAIN_TIMEOUT};
use insights_e2e::llm_script::{Reply, ScriptedLlm};
use insights_e2e::proc::log_dir;
use insights_e2e::{E2eDb, Insights, WorkerEnv, wait_until};
use serde_json::Value;

use crate::support::{conversation, enqueue, field};

const DB_PASSWORD: &str = "pw-from-a-file-7f3a";
const API_KEY: &str = "sk-from-a-file-91c2";

/// `url` with `?password=` (or `&password=`) appended: trust auth ignores it, so it is a
/// secret that must stay hidden without needing a role with a password.
fn with_query_password(url: &str, password: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}password={password}")
}

/// A file in a fresh directory holding `contents` followed by a newline, as `kubectl create
/// secret --from-file` and Docker's secrets usually write it.
fn secret_file(label: &str, contents: &str) -> PathBuf {
    let path = log_dir(label).unwrap().join("secret");
    std::fs::write(&path, format!("{contents}\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_read_from_files_reach_the_worker_and_never_its_output_or_arguments() {
    let db = E2eDb::create("e2e_secrets").await.unwrap();
    for lead in 1..=4 {
        db.insert_lead(lead, true, &conversation(4, 60))
            .await
            .unwrap();
    }
    // Each answer takes a moment, so the worker is surely running when its arguments are read.
    let llm = ScriptedLlm::start(
        Vec::new(),
        Reply::Delayed(std::time::Duration::from_millis(300), Box::new(Reply::Ok)),
    )
    .await;
    let url_file = secret_file("secret-db", &with_query_password(&db.url, DB_PASSWORD));
    let key_file = secret_file("secret-llm", API_KEY);
    let env = WorkerEnv::new(&db.url, &llm.base_url())
        .remove("DATABASE_URL")
        .set("DATABASE_URL_FILE", url_file.display())
        .set("INSIGHTS_LLM_API_KEY_FILE", key_file.display())
        .set("RUST_LOG", "debug");
    let report = enqueue(&env, &[]).await;
    assert_eq!(report.enqueued, 4, "{report:?}");

    let mut worker = Insights::with_env(&env)
        .args(["work", "--exit-when-idle", "--json"])
        .spawn("work-secrets")
        .unwrap();
    // Right after the spawn the new program may not have set up its arguments yet.
    let mut cmdline = String::new();
    wait_until(CONDITION_TIMEOUT, "the worker's arguments", || {
        cmdline = worker.cmdline().unwrap_or_default();
        let exec_done = cmdline.contains("work");
        async move { exec_done }
    })
    .await
    .unwrap();
    let status = worker.wait(DRAIN_TIMEOUT).await.unwrap();
    let (stdout, stderr) = (worker.stdout(), worker.stderr());

    assert!(status.success(), "{}", worker.describe());
    for secret in [DB_PASSWORD, API_KEY] {
        assert!(
            !cmdline.contains(secret),
            "{secret} in the arguments: {cmdline}"
        );
        assert!(!stdout.contains(secret), "{secret} on stdout: {stdout}");
        assert!(!stderr.contains(secret), "{secret} on stderr: {stderr}");
    }
    let summary: Value = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary: {}", worker.describe()));
    assert_eq!(field(&summary, "written"), 4, "{summary}");
    db.assert_pipeline_done().await.unwrap();
    // The key read from the file, without its newline, is the one the LLM saw.
    let seen = llm.seen();
    assert_eq!(seen.len(), 4);
    for request in seen {
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {API_KEY}").as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_password_is_redacted_in_the_unreachable_database_error() {
    let port = insights_testkit::free_port().unwrap();
    let url = with_query_password(
        &format!("postgres://postgres@127.0.0.1:{port}/insights"),
        DB_PASSWORD,
    );
    let from_file = secret_file("secret-unreachable", &url);
    let envs = [
        WorkerEnv::new(&url, "http://127.0.0.1:9/v1"),
        WorkerEnv::new(&url, "http://127.0.0.1:9/v1")
            .remove("DATABASE_URL")
            .set("DATABASE_URL_FILE", from_file.display()),
    ];
    for env in envs {
        let out = Insights::with_env(&env).arg("work").run().await.unwrap();
        println!("unreachable database: {}", out.stderr.trim());
        assert_eq!(out.code(), Some(1), "{}", out.describe());
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "one line: {}", out.describe());
        assert!(
            lines[0].contains(&format!("127.0.0.1:{port}")),
            "{}",
            out.describe()
        );
        assert!(
            !out.stderr.contains(DB_PASSWORD),
            "leaked: {}",
            out.describe()
        );
    }
    // A refused URL is echoed redacted.
    let out = Insights::with_env(&WorkerEnv::new(
        &format!("mysql://app@127.0.0.1:{port}/crm?password={DB_PASSWORD}"),
        "http://127.0.0.1:9/v1",
    ))
    .arg("work")
    .run()
    .await
    .unwrap();
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(out.stderr.contains("password=***"), "{}", out.describe());
    assert!(
        !out.stderr.contains(DB_PASSWORD),
        "leaked: {}",
        out.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_set_twice_or_an_unreadable_file_exits_2_naming_the_variables() {
    let base = WorkerEnv::new("postgres://postgres@127.0.0.1:9/x", "http://127.0.0.1:9/v1");
    let key_file = secret_file("secret-twice", API_KEY);
    let twice = Insights::with_env(
        &base
            .clone()
            .set("INSIGHTS_LLM_API_KEY", "sk-direct-value")
            .set("INSIGHTS_LLM_API_KEY_FILE", key_file.display()),
    )
    .arg("work")
    .run()
    .await
    .unwrap();
    assert_eq!(twice.code(), Some(2), "{}", twice.describe());
    assert!(
        twice
            .stderr
            .contains("INSIGHTS_LLM_API_KEY and INSIGHTS_LLM_API_KEY_FILE are both set"),
        "{}",
        twice.describe()
    );
    for secret in ["sk-direct-value", API_KEY] {
        assert!(
            !twice.stderr.contains(secret),
            "leaked: {}",
            twice.describe()
        );
    }

    let missing = key_file.with_file_name("absent");
    let unreadable = Insights::with_env(
        &base
            .clone()
            .set("INSIGHTS_DASHBOARD_TOKEN_FILE", missing.display()),
    )
    .arg("work")
    .run()
    .await
    .unwrap();
    assert_eq!(unreadable.code(), Some(2), "{}", unreadable.describe());
    assert!(
        unreadable.stderr.contains(&format!(
            "INSIGHTS_DASHBOARD_TOKEN_FILE: cannot read {}",
            missing.display()
        )),
        "{}",
        unreadable.describe()
    );
}
