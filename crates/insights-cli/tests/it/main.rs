//! Exit codes and messages of the `insights` binary that need no database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn insights(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_insights"));
    cmd.args(args);
    // A clean slate: only what the test sets.
    for var in [
        "DATABASE_URL",
        "QUEUE_DATABASE_URL",
        "DIRECT_DATABASE_URL",
        "INSIGHTS_CONCURRENCY",
        "INSIGHTS_LLM_BASE_URL",
        "INSIGHTS_HTTP_BIND",
        "INSIGHTS_DASHBOARD_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const DB: (&str, &str) = ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none");
const LLM: (&str, &str) = ("INSIGHTS_LLM_BASE_URL", "http://127.0.0.1:9/v1");

#[test]
fn bad_concurrency_exits_2_naming_the_variable() {
    for bad in ["abc", "0"] {
        let o = insights(&["work"], &[DB, LLM, ("INSIGHTS_CONCURRENCY", bad)]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("INSIGHTS_CONCURRENCY"), "{err}");
        assert!(err.contains("whole number"), "{err}");
    }
    let o = insights(&["work", "--concurrency", "abc"], &[DB, LLM]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("INSIGHTS_CONCURRENCY"));
}

#[test]
fn out_of_range_flags_exit_2_naming_the_flag() {
    let o = insights(&["demo", "--concurrency", "0"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("--concurrency"), "{err}");
    assert!(err.contains("from 1 to 4096"), "{err}");
    for flag in ["--fail-rate", "--malformed-rate"] {
        let o = insights(&["mock-llm", flag, "1.5"], &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(flag), "{err}");
        assert!(err.contains("fraction from 0 to 1"), "{err}");
    }
}

#[test]
fn missing_settings_exit_2() {
    let o = insights(&["work"], &[LLM]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("DATABASE_URL"), "{}", stderr(&o));
    let o = insights(&["work"], &[DB]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("INSIGHTS_LLM_BASE_URL"),
        "{}",
        stderr(&o)
    );
    let o = insights(
        &["work"],
        &[DB, LLM, ("INSIGHTS_HTTP_BIND", "0.0.0.0:9090")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("INSIGHTS_DASHBOARD_TOKEN"),
        "{}",
        stderr(&o)
    );
    let o = insights(&["no-such-command"], &[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn unreachable_database_exits_1_with_one_line() {
    for args in [&["work"][..], &["enqueue"], &["status"], &["migrate"]] {
        let o = insights(args, &[DB, LLM]);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains("127.0.0.1:1"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!err.contains("backtrace"), "{err}");
    }
}
