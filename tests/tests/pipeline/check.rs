//! `insights check` through the binary, against real schemas: the example profile on the
//! example schema is usable and the database is left as it was; each kind of problem exits 2
//! naming what is wrong (a column's type, a template field, a TOML line, the server's message);
//! a missing index is a warning; an unreachable database exits 1; `work` refuses to start on
//! the same errors; without a profile the built-in one is checked; a transaction pooler is
//! left with nothing prepared.

use std::path::{Path, PathBuf};

use insights_e2e::pooler::{pooler_url, start_pgbouncer};
use insights_e2e::{E2eDb, Insights, RunOutput, WorkerEnv};
use serde_json::Value;

use crate::support::{apply_sql_file, example_file, repo_file};

/// The example schema with the example seed (200 leads) on a fresh database.
async fn example_db(label: &str) -> E2eDb {
    let db = E2eDb::create_empty(label).await.unwrap();
    apply_sql_file(&db.pool, &example_file("schema.sql"))
        .await
        .unwrap();
    apply_sql_file(&db.pool, &example_file("seed.sql"))
        .await
        .unwrap();
    db
}

/// A copy of a profile directory (`examples/prisma-supabase` or a fixture) in a directory of
/// its own, to edit; removed on drop.
struct ProfileCopy {
    dir: PathBuf,
}

impl ProfileCopy {
    fn of(source: &Path, tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "insights-check-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(source).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        Self { dir }
    }

    fn example(tag: &str) -> Self {
        Self::of(&example_file(""), tag)
    }

    /// Replaces `from` (which must occur) with `to` in `file`.
    fn edit(self, file: &str, from: &str, to: &str) -> Self {
        let path = self.dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        self
    }

    fn profile(&self) -> String {
        self.dir.join("profile.toml").display().to_string()
    }
}

impl Drop for ProfileCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn env(db: &E2eDb) -> WorkerEnv {
    WorkerEnv::new(&db.url, "http://127.0.0.1:9/v1")
}

async fn check(env: &WorkerEnv, profile: &str, extra: &[&str]) -> RunOutput {
    Insights::with_env(env)
        .args(["check", "--profile", profile])
        .args(extra.iter().copied())
        .run()
        .await
        .unwrap()
}

/// Problems of a `--json` report with this severity, as `statement: message` lines.
fn problems(out: &RunOutput, severity: &str) -> Vec<String> {
    let report: Value = out.json().unwrap();
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["severity"] == severity)
        .map(|p| match p["statement"].as_str() {
            Some(s) => format!("{s}: {}", p["message"].as_str().unwrap()),
            None => p["message"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// Every table of the database with its row count and a digest of its rows, and the
/// database's objects: what a check must leave as it was.
async fn fingerprint(db: &E2eDb) -> Vec<(String, i64, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let (count, digest): (i64, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"
        )))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        out.push((table, count, digest.unwrap_or_default()));
    }
    let objects: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    out.push(("objects".to_owned(), objects, String::new()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_profile_is_usable_on_the_example_schema_and_nothing_changes() {
    let db = example_db("e2e_check_example").await;
    let before = fingerprint(&db).await;
    let profile = example_file("profile.toml").display().to_string();

    let out = check(&env(&db), &profile, &["--json", "--show-prompt"]).await;
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(problems(&out, "error"), Vec::<String>::new());
    assert_eq!(problems(&out, "warning"), Vec::<String>::new());
    let report: Value = out.json().unwrap();
    assert_eq!(report["lead_key"], "text");
    let plan = report["plan"].as_str().unwrap();
    assert!(plan.contains(r#"on "Lead" l"#), "{plan}");
    assert_eq!(report["sample"]["source"], "candidate", "{report}");
    let user = report["sample"]["user"].as_str().unwrap();
    assert!(user.contains("Call booked for: "), "{user}");
    assert!(user.contains("Customer: "), "{user}");

    // The human form: the plan and the sample, no error.
    let out = check(&env(&db), &profile, &[]).await;
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert!(out.stdout.contains("usable"), "{}", out.describe());
    assert!(!out.stderr.contains("error"), "{}", out.describe());

    assert_eq!(
        fingerprint(&db).await,
        before,
        "the check changed the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_column_of_the_wrong_type_exits_2_naming_statement_column_and_type() {
    let db = example_db("e2e_check_column").await;
    let copy = ProfileCopy::example("column").edit(
        "load.sql",
        "END AS total_message_count",
        "END::text AS total_message_count",
    );
    let out = check(&env(&db), &copy.profile(), &[]).await;
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(
        out.stderr
            .contains(r#"error: load: column "total_message_count" is text, expected bigint"#),
        "{}",
        out.describe()
    );

    let out = check(&env(&db), &copy.profile(), &["--json"]).await;
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    let report: Value = out.json().unwrap();
    let problem = &report["problems"][0];
    assert_eq!(problem["severity"], "error", "{report}");
    assert_eq!(problem["statement"], "load");
    assert_eq!(problem["column"], "total_message_count");
    assert_eq!(problem["expected"], "bigint");
    assert_eq!(problem["found"], "text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_query_no_index_serves_is_a_warning_naming_the_table() {
    let db = example_db("e2e_check_index").await;
    sqlx::raw_sql(
        r#"DROP INDEX "Lead_candidates_idx";
           ALTER TABLE "Lead" DROP CONSTRAINT "Lead_pkey" CASCADE"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let profile = example_file("profile.toml").display().to_string();
    let out = check(&env(&db), &profile, &["--json"]).await;
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let warnings = problems(&out, "warning");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(r#"candidates: table "Lead" is scanned sequentially"#),
        "{warnings:?}"
    );
    assert!(
        out.stderr.contains(r#"warning: candidates: table "Lead""#),
        "{}",
        out.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_using_unknown_variables_exit_2_naming_them() {
    let db = example_db("e2e_check_template").await;
    // A field the load does not return: found when the prompt renders for a real lead.
    let field = ProfileCopy::example("field").edit(
        "profile.toml",
        "Customer: {{ lead.name }}",
        "Customer: {{ lead.nosuch }}",
    );
    let out = check(&env(&db), &field.profile(), &[]).await;
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {}", out.describe()));
    assert!(line.contains("lead.nosuch"), "{line}");
    // A top-level name no template is given: found when the profile loads.
    let name = ProfileCopy::example("name").edit(
        "profile.toml",
        "Customer: {{ lead.name }}",
        "Customer: {{ leed.name }}",
    );
    let out = check(&env(&db), &name.profile(), &[]).await;
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(out.stderr.contains("leed"), "{}", out.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toml_syntax_error_exits_2_with_its_line() {
    let db = example_db("e2e_check_toml").await;
    let copy = ProfileCopy::example("toml").edit(
        "profile.toml",
        r#"version = "deal-review-v1""#,
        r#"version = "deal-review-v1"#,
    );
    let text = std::fs::read_to_string(copy.dir.join("profile.toml")).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("version = "))
        .unwrap()
        + 1;
    let out = check(&env(&db), &copy.profile(), &[]).await;
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    let expected = format!("profile.toml:{line}:");
    assert!(
        out.stderr.contains(&expected),
        "{expected}: {}",
        out.describe()
    );
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .count(),
        1,
        "{}",
        out.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_does_not_parse_exits_2_with_the_servers_message() {
    let db = example_db("e2e_check_syntax").await;
    let copy = ProfileCopy::example("syntax").edit(
        "profile.toml",
        r#"SELECT l."id" AS lead_key"#,
        r#"SELEC l."id" AS lead_key"#,
    );
    let out = check(&env(&db), &copy.profile(), &[]).await;
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(
        out.stderr
            .contains(r#"error: candidates: syntax error at or near "SELEC""#),
        "{}",
        out.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_exits_1() {
    let port = insights_testkit::free_port().unwrap();
    let env = WorkerEnv::new(
        &format!("postgres://postgres@127.0.0.1:{port}/nowhere"),
        "http://127.0.0.1:9/v1",
    );
    let profile = example_file("profile.toml").display().to_string();
    let out = check(&env, &profile, &[]).await;
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("cannot reach database"),
        "{}",
        out.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixtures_of_other_key_types_are_usable() {
    for fixture in ["uuid-keys", "bigint-keys"] {
        let dir = repo_file(&format!("tests/fixtures/{fixture}"));
        let db = E2eDb::create_empty(&format!("e2e_check_{}", &fixture[..4]))
            .await
            .unwrap();
        apply_sql_file(&db.pool, &dir.join("schema.sql"))
            .await
            .unwrap();
        apply_sql_file(&db.pool, &dir.join("seed.sql"))
            .await
            .unwrap();
        let profile = dir.join("profile.toml").display().to_string();
        let out = check(&env(&db), &profile, &["--json"]).await;
        assert_eq!(out.code(), Some(0), "{fixture}: {}", out.describe());
        assert_eq!(problems(&out, "error"), Vec::<String>::new(), "{fixture}");
        assert_eq!(problems(&out, "warning"), Vec::<String>::new(), "{fixture}");
        let report: Value = out.json().unwrap();
        assert_eq!(
            report["sample"]["source"], "candidate",
            "{fixture}: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_profile_the_builtin_one_is_checked_against_this_projects_tables() {
    let db = E2eDb::create("e2e_check_builtin").await.unwrap();
    db.seed(20, 7).await.unwrap();
    let out = Insights::with_env(&env(&db))
        .args(["check", "--json"])
        .run()
        .await
        .unwrap();
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(problems(&out, "error"), Vec::<String>::new());
    let report: Value = out.json().unwrap();
    assert_eq!(report["profile"], "built-in");
    assert_eq!(report["lead_key"], "bigint");
    assert_eq!(report["sample"]["source"], "candidate", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_refuses_to_start_with_the_lines_check_prints() {
    let db = example_db("e2e_check_work").await;
    let copy = ProfileCopy::example("work").edit(
        "load.sql",
        "END AS total_message_count",
        "END::text AS total_message_count",
    );
    let checked = check(&env(&db), &copy.profile(), &[]).await;
    let worked = Insights::with_env(&env(&db))
        .args(["work", "--profile", &copy.profile()])
        .run()
        .await
        .unwrap();
    assert_eq!(worked.code(), Some(2), "{}", worked.describe());
    let errors = |out: &RunOutput| -> Vec<String> {
        out.stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(errors(&worked), errors(&checked), "{}", worked.describe());
    assert_eq!(
        errors(&worked),
        [r#"error: load: column "total_message_count" is text, expected bigint"#]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_leaves_nothing_behind_on_a_transaction_pooler() {
    let db = example_db("e2e_check_pooler").await;
    // One server connection: a statement left prepared by one check would collide with the
    // next check's.
    let pgbouncer = start_pgbouncer(1).await.unwrap();
    let env = WorkerEnv::new(&pooler_url(&pgbouncer, &db.name), "http://127.0.0.1:9/v1");
    let profile = example_file("profile.toml").display().to_string();
    for _ in 0..2 {
        let out = check(&env, &profile, &["--json"]).await;
        assert_eq!(out.code(), Some(0), "{}", out.describe());
        assert_eq!(problems(&out, "error"), Vec::<String>::new());
    }
    let bad = ProfileCopy::example("pooled").edit(
        "profile.toml",
        r#"SELECT l."id" AS lead_key"#,
        r#"SELEC l."id" AS lead_key"#,
    );
    let out = check(&env, &bad.profile(), &[]).await;
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    let out = check(&env, &profile, &[]).await;
    assert_eq!(
        out.code(),
        Some(0),
        "after a refused statement: {}",
        out.describe()
    );
    let log = pgbouncer.log();
    assert!(
        insights_e2e::prepared_statement_errors(&log).is_empty(),
        "pooler errors: {log}"
    );
}
