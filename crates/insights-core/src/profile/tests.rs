use std::path::PathBuf;

use serde_json::json;

use super::*;
use crate::insight::insight_json_schema;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/prisma-supabase/profile.toml")
}

/// A directory of its own under the system's temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "insights-profile-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const MINIMAL: &str = r#"[statements]
lead_key = "uuid"
candidates = "SELECT 1"
load = "SELECT 2"
upsert = "SELECT 3"

[prompt]
version = "v1"
system = "Be brief."
message = "{{ message.body }}"
user = "{{ lead.name }}: {{ lines | join(' / ') }}"

[output]
schema = { type = "object", properties = { ok = { type = "boolean" } }, required = ["ok"], additionalProperties = false }
"#;

fn parse(text: &str) -> Result<Profile, ProfileError> {
    Profile::parse(text, Path::new("/teams/acme/profile.toml"))
}

#[test]
fn example_profile_loads_renders_and_validates() {
    let profile = Profile::load(example_path()).unwrap();
    let statements = profile.statements.as_ref().unwrap();
    assert_eq!(statements.lead_key, LeadKeyKind::Text);
    assert!(statements.candidates.contains(r#"FROM "Lead" l"#));
    assert!(
        statements.load.contains(r#"'direction', r."direction""#),
        "load_file read"
    );
    assert!(
        statements
            .upsert
            .contains(r#"INSERT INTO "LeadConversationInsight""#)
    );
    assert_eq!(profile.prompt.version, "deal-review-v1");
    assert_eq!(profile.prompt.budget_chars, Some(16_000));
    assert_eq!(profile.prompt.max_messages, Some(80));
    assert_eq!(profile.output.schema_name, "deal_review");
    assert_eq!(
        profile.llm,
        LlmProfile {
            model: Some("gpt-4o-mini".into()),
            temperature: Some(0.2),
            max_output_tokens: Some(600),
            token_limit_parameter: TokenLimitParameter::MaxCompletionTokens,
        }
    );

    // The shape the example's load returns (to_jsonb of timestamptz, the enum as its label).
    let input = PromptInput {
        lead: json!({"id": "clx2v9k3b0000qz8h4f1e2a3b", "name": "Grace", "email": "grace@acme.test",
                     "company": "Acme", "bookedAt": "2026-03-09T15:00:00+00:00"}),
        messages: vec![
            json!({"direction": "INBOUND", "body": "Can we\nsee pricing?", "sentAt": "2026-03-02T09:15:00.123+00:00"}),
            json!({"direction": "OUTBOUND", "body": "Sure, sent.", "sentAt": "2026-03-02T09:20:00+00:00"}),
        ],
        total_message_count: 5,
    };
    let prompt = profile.prompt.templates.render(&input, 10_000).unwrap();
    assert_eq!(
        prompt.user,
        "Customer: Grace <grace@acme.test> at Acme\n\
         Call booked for: Monday 09 March 2026, 15:00 UTC\n\
         The 2 most recent of 5 messages (3 older ones left out):\n\
         02 Mar 2026 09:15 Customer: Can we see pricing?\n\
         02 Mar 2026 09:20 Rep: Sure, sent.\n"
    );
    assert!(prompt.system.starts_with("You are a B2B sales coach."));
    let newest_only = profile.prompt.templates.render(&input, 40).unwrap();
    assert_eq!(newest_only.included_messages, 1);
    assert!(newest_only.user.contains("Rep: Sure, sent.") && !newest_only.user.contains("pricing"));

    let good = json!({"stage": "evaluation", "buyingSignals": ["asked for pricing"], "risks": [],
                      "nextAction": "Send the pricing sheet", "confidence": 0.6});
    assert_eq!(profile.output.schema.validate(&good), Ok(()));
    let bad = json!({"stage": "won", "buyingSignals": [], "risks": [], "nextAction": "x",
                     "confidence": 1.5, "summary": "built-in field"});
    let SchemaViolations(lines) = profile.output.schema.validate(&bad).unwrap_err();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("/stage: ")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("/confidence: 1.5")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("/: ") && l.contains("summary")),
        "{lines:#?}"
    );

    let rf = profile.response_format().unwrap();
    assert_eq!(rf["json_schema"]["name"], "deal_review");
    assert_eq!(rf["json_schema"]["strict"], true);
    assert_eq!(rf["json_schema"]["schema"]["required"][0], "stage");
}

#[test]
fn builtin_profile_is_todays_behaviour() {
    let p = Profile::builtin().unwrap();
    assert!(p.origin.is_none() && p.statements.is_none());
    assert_eq!(p.prompt.version, crate::prompt::PROMPT_VERSION);
    assert_eq!(p.prompt.templates.system(), crate::prompt::SYSTEM);
    assert_eq!(p.output.schema.schema(), &insight_json_schema());
    assert_eq!(
        p.response_format(),
        Some(json!({"type": "json_schema", "json_schema": {
            "name": INSIGHT_SCHEMA_NAME, "strict": true, "schema": insight_json_schema()}}))
    );
    assert_eq!((p.prompt.budget_chars, p.prompt.max_messages), (None, None));
    assert_eq!(p.llm.temperature, None);
    assert_eq!(p.llm.token_limit_parameter.as_str(), "max_tokens");
}

#[test]
fn minimal_profile_parses_with_defaults() {
    let p = parse(MINIMAL).unwrap();
    assert_eq!(
        p.origin.as_deref(),
        Some(Path::new("/teams/acme/profile.toml"))
    );
    assert_eq!(p.statements.unwrap().lead_key, LeadKeyKind::Uuid);
    assert_eq!(p.output.schema_name, INSIGHT_SCHEMA_NAME);
    assert!(p.output.structured);
    assert_eq!(p.llm.model, None);
    assert_eq!(p.llm.token_limit_parameter, TokenLimitParameter::MaxTokens);
    assert_eq!(p.output.schema.validate(&json!({"ok": true})), Ok(()));
    assert!(p.output.schema.validate(&json!({"ok": "yes"})).is_err());
}

#[test]
fn toml_syntax_error_names_file_line_and_column() {
    let text = MINIMAL.replace("version = \"v1\"", "version = \"v1");
    let err = parse(&text).unwrap_err();
    let ProfileError::Syntax { path, line, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(path, Path::new("/teams/acme/profile.toml"));
    assert_eq!(*line, 8);
    assert!(
        err.to_string().starts_with("/teams/acme/profile.toml:8:"),
        "{err}"
    );
}

#[test]
fn unknown_keys_and_bad_values_are_rejected_where_they_are() {
    let typo = MINIMAL.replace("system = ", "sytem = ");
    let err = parse(&typo).unwrap_err();
    assert!(matches!(err, ProfileError::Syntax { line: 9, .. }), "{err}");
    assert!(err.to_string().contains("sytem"), "{err}");

    let table = format!("{MINIMAL}\n[extras]\nx = 1\n");
    assert!(matches!(
        parse(&table),
        Err(ProfileError::Syntax { line: 16, .. })
    ));

    let param = format!("{MINIMAL}\n[llm]\ntoken_limit_parameter = \"max_toks\"\n");
    let err = parse(&param).unwrap_err();
    assert!(
        matches!(err, ProfileError::Syntax { line: 17, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("max_completion_tokens"), "{err}");

    let hot = format!("{MINIMAL}\n[llm]\ntemperature = 2.5\n");
    let err = parse(&hot).unwrap_err();
    assert!(
        matches!(&err, ProfileError::Invalid { field, at: Some((17, _)), .. } if field == "llm.temperature"),
        "{err}"
    );

    let zero = MINIMAL.replace("[output]", "budget_chars = 0\n\n[output]");
    let err = parse(&zero).unwrap_err();
    assert!(
        matches!(&err, ProfileError::Invalid { field, .. } if field == "prompt.budget_chars"),
        "{err}"
    );

    let key = MINIMAL.replace("\"uuid\"", "\"int\"");
    assert!(matches!(
        parse(&key),
        Err(ProfileError::Syntax { line: 2, .. })
    ));

    let name = format!("{MINIMAL}schema_name = \"deal review\"\n");
    let err = parse(&name).unwrap_err();
    assert!(
        matches!(&err, ProfileError::Invalid { field, .. } if field == "output.schema_name"),
        "{err}"
    );
}

#[test]
fn a_statement_is_text_or_file_not_both_nor_neither() {
    let both = MINIMAL.replace(
        "load = \"SELECT 2\"",
        "load = \"SELECT 2\"\nload_file = \"load.sql\"",
    );
    let err = parse(&both).unwrap_err();
    assert!(
        matches!(&err, ProfileError::Invalid { field, at: Some((5, _)), .. } if field == "statements.load"),
        "{err}"
    );
    assert!(err.to_string().contains("not both"), "{err}");

    let neither = MINIMAL.replace("upsert = \"SELECT 3\"\n", "");
    let err = parse(&neither).unwrap_err();
    assert!(
        matches!(&err, ProfileError::Invalid { field, .. } if field == "statements.upsert"),
        "{err}"
    );
}

#[test]
fn files_resolve_relative_to_the_profile_and_missing_ones_are_named() {
    let dir = Scratch::new("files");
    std::fs::create_dir_all(dir.0.join("sql")).unwrap();
    dir.write("sql/load.sql", "SELECT 'from file'");
    dir.write("user.j2", "{{ lines | length }}");
    dir.write(
        "schema.json",
        r#"{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"],"additionalProperties":false}"#,
    );
    let text = MINIMAL
        .replace("load = \"SELECT 2\"", "load_file = \"sql/load.sql\"")
        .replace(
            "user = \"{{ lead.name }}: {{ lines | join(' / ') }}\"",
            "user_file = \"user.j2\"",
        )
        .replace(
            &MINIMAL[MINIMAL.find("schema = ").unwrap()..],
            "schema_file = \"schema.json\"\n",
        );
    let path = dir.write("profile.toml", &text);
    let p = Profile::load(&path).unwrap();
    assert_eq!(p.statements.unwrap().load, "SELECT 'from file'");
    assert_eq!(p.output.schema.validate(&json!({"n": 3})), Ok(()));
    let input = PromptInput {
        lead: json!({}),
        messages: vec![json!({"body": "a"}), json!({"body": "b"})],
        total_message_count: 2,
    };
    assert_eq!(p.prompt.templates.render(&input, 100).unwrap().user, "2");

    std::fs::remove_file(dir.0.join("sql/load.sql")).unwrap();
    let err = Profile::load(&path).unwrap_err();
    assert!(
        matches!(&err, ProfileError::Invalid { field, .. } if field == "statements.load_file"),
        "{err}"
    );
    assert!(err.to_string().contains("sql/load.sql"), "{err}");

    dir.write("schema.json", "{ not json");
    dir.write("sql/load.sql", "SELECT 2");
    let err = Profile::load(&path).unwrap_err();
    assert!(
        matches!(&err, ProfileError::Invalid { field, .. } if field == "output.schema_file"),
        "{err}"
    );

    let err = Profile::load(dir.0.join("nope.toml")).unwrap_err();
    assert!(matches!(err, ProfileError::Read { .. }), "{err}");
}

#[test]
fn template_and_schema_errors_fail_the_load() {
    let unknown = MINIMAL.replace("{{ lead.name }}", "{{ customer.name }}");
    let err = parse(&unknown).unwrap_err();
    assert!(
        matches!(&err, ProfileError::Invalid { field, .. } if field == "prompt.user"),
        "{err}"
    );
    assert!(err.to_string().contains("customer"), "{err}");

    let broken = MINIMAL.replace("{{ message.body }}", "{{ message.body");
    assert!(
        matches!(parse(&broken), Err(ProfileError::Invalid { field, .. }) if field == "prompt.message")
    );

    let schema = MINIMAL.replace("type = \"boolean\"", "type = \"bool\"");
    let err = parse(&schema).unwrap_err();
    assert!(
        matches!(&err, ProfileError::Invalid { field, .. } if field == "output.schema"),
        "{err}"
    );
}
