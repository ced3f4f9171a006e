//! `insights check`: is a profile usable against the live app database? Nothing in the database
//! changes: introspection runs in `insights_store::check`'s READ ONLY transaction, and the
//! sample lead is read only after the plans of the statements that read it show no write.
//!
//! In order:
//! 1. the profile loads (`Profile::load` reports syntax with its line, unknown keys, templates,
//!    the schema); without `INSIGHTS_PROFILE`, the built-in profile and this project's tables;
//! 2. each statement is prepared and its parameter and result types compared with the
//!    contract (`insights_core::profile::contract`); a statement the server refuses is an
//!    error with the server's message;
//! 3. the candidate query is planned for its first page with sequential scans disabled: a
//!    sequential scan left in the plan means no index serves that table (a warning);
//! 4. the prompt is rendered for a real lead: the first candidate, else any lead (the table the
//!    `lead_key` column comes from); a field the templates use and the load does not return is
//!    an error naming it.
//!
//! The report lists every problem with its severity; the profile is usable when none is an
//! error. `insights work` runs the same checks before it starts ([`startup_check`]).

use std::fmt;

use insights_core::profile::contract::{SqlType, short_type_name};
use insights_core::profile::{StatementContract, StatementKind, contract};
use insights_core::{LeadKeyKind, Profile, Settings};
use insights_store::check::{CheckSession, Described, Plan, PlanArg, Refused};
use insights_store::pool::PoolSettings;
use insights_store::statements::DomainStatements;
use insights_store::{Store, StoreOptions};
use serde::Serialize;

use crate::defaults::PRODUCER_PAGE;
use crate::error::WorkerError;
use crate::wiring::{self, store_err};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The profile cannot be used.
    Error,
    /// Usable, but something deserves attention (a missing index, a step not checked).
    Warning,
}

/// One finding. `message` reads on its own after the statement's name ([`Problem::line`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<StatementKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// 1-based, as in `$1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    pub message: String,
}

impl Problem {
    fn new(severity: Severity, statement: Option<StatementKind>, message: String) -> Self {
        Self {
            severity,
            statement,
            column: None,
            parameter: None,
            expected: None,
            found: None,
            message,
        }
    }

    fn error(statement: Option<StatementKind>, message: String) -> Self {
        Self::new(Severity::Error, statement, message)
    }

    fn warning(statement: Option<StatementKind>, message: String) -> Self {
        Self::new(Severity::Warning, statement, message)
    }

    /// The one line the CLI prints: `load: column "x" is text, expected bigint`.
    pub fn line(&self) -> String {
        match self.statement {
            Some(statement) => format!("{statement}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

/// The prompt rendered for a sample lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampleReport {
    pub lead_key: String,
    /// `candidate` (the candidate query's first) or `any lead`.
    pub source: &'static str,
    pub included_messages: usize,
    pub total_messages: i64,
    /// Present with `--show-prompt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What `insights check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The profile's path, or `built-in`.
    pub profile: String,
    /// `None` when the profile did not load.
    pub lead_key: Option<LeadKeyKind>,
    pub problems: Vec<Problem>,
    /// EXPLAIN of the candidate query's first page (sequential scans disabled).
    pub plan: Option<String>,
    pub sample: Option<SampleReport>,
}

impl CheckReport {
    /// No error: the worker can run with this profile.
    pub fn usable(&self) -> bool {
        !self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
    }

    /// The lines of the errors: what the CLI prints before exiting 2.
    pub fn error_lines(&self) -> Vec<String> {
        self.errors().map(Problem::line).collect()
    }
}

/// The human-readable report (problems excluded: the CLI prints them on stderr).
impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lead_key {
            Some(kind) => writeln!(f, "profile {} (lead key {})", self.profile, kind.sql_type())?,
            None => writeln!(f, "profile {}", self.profile)?,
        }
        if let Some(plan) = &self.plan {
            writeln!(
                f,
                "candidate query, first page (sequential scans disabled):"
            )?;
            for line in plan.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        if let Some(sample) = &self.sample {
            writeln!(
                f,
                "prompt rendered for lead {} ({}): {} of {} messages",
                sample.lead_key, sample.source, sample.included_messages, sample.total_messages
            )?;
            if let (Some(system), Some(user)) = (&sample.system, &sample.user) {
                writeln!(f, "--- system\n{system}\n--- user\n{user}\n---")?;
            }
        }
        let (errors, warnings) = (self.errors().count(), self.warnings().count());
        if errors == 0 {
            writeln!(f, "usable ({warnings} warning(s))")
        } else {
            writeln!(f, "not usable: {errors} error(s), {warnings} warning(s)")
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Keep the rendered prompt in the report.
    pub show_prompt: bool,
}

/// Checks the profile `settings` names (`INSIGHTS_PROFILE`; the built-in one without) against
/// the app database. `Err` only when the database cannot be reached (or the configuration
/// lacks its URL); every finding is in the report, a profile that does not load included.
pub async fn check(settings: &Settings, options: CheckOptions) -> Result<CheckReport, WorkerError> {
    match wiring::load_profile(settings.profile.as_deref()) {
        Ok(profile) => check_profile(settings, &profile, options).await,
        Err(e) => Ok(CheckReport {
            profile: origin(settings.profile.as_deref()),
            lead_key: None,
            problems: vec![Problem::error(None, one_line(&e.to_string()))],
            plan: None,
            sample: None,
        }),
    }
}

/// [`check`] of a loaded profile.
pub async fn check_profile(
    settings: &Settings,
    profile: &Profile,
    options: CheckOptions,
) -> Result<CheckReport, WorkerError> {
    let statements = DomainStatements::from_profile(profile.statements.as_ref());
    let mut report = CheckReport {
        profile: origin(profile.origin.as_deref()),
        lead_key: Some(statements.lead_key),
        problems: Vec::new(),
        plan: None,
        sample: None,
    };
    let ps = PoolSettings::app_from_settings(settings)?;
    let mut session = CheckSession::open(&ps).await.map_err(store_err)?;
    let outcome = inspect(&mut session, &statements, &mut report).await;
    let closed = session.close().await;
    let sample = outcome.map_err(store_err)?;
    closed.map_err(store_err)?;
    if let Some(sample) = sample {
        render_sample(
            settings,
            &ps,
            profile,
            &statements,
            sample,
            options,
            &mut report,
        )
        .await?;
    }
    Ok(report)
}

/// The checks `insights work` runs before it starts: warnings logged, errors returned as
/// [`WorkerError::Unusable`] (the CLI prints each line and exits 2).
pub async fn startup_check(settings: &Settings, profile: &Profile) -> Result<(), WorkerError> {
    let report = check_profile(settings, profile, CheckOptions::default()).await?;
    for warning in report.warnings() {
        tracing::warn!(profile = %report.profile, "{}", warning.line());
    }
    if report.usable() {
        return Ok(());
    }
    Err(WorkerError::Unusable(report.error_lines()))
}

fn origin(path: Option<&std::path::Path>) -> String {
    path.map_or_else(|| "built-in".to_owned(), |p| p.display().to_string())
}

/// Where the sample step finds a lead when the candidate query returns none.
struct SampleSource {
    /// A key read from the table column the statements' `lead_key` comes from; `None` when
    /// that column is not a plain table column or the table is empty.
    any_lead: Option<String>,
}

/// Steps 2 and 3 inside the read-only session. `None`: no sample is to be read (the candidate
/// query or the load is not usable, or one of them writes).
async fn inspect(
    session: &mut CheckSession,
    statements: &DomainStatements,
    report: &mut CheckReport,
) -> Result<Option<SampleSource>, insights_store::StoreError> {
    let kind = statements.lead_key;
    // Per statement: prepared at all, and fits the contract (no error).
    let mut prepared = Vec::new();
    let mut fits = Vec::new();
    let mut origin = None;
    for statement in StatementKind::ALL {
        match session.describe(sql_of(statements, statement)).await? {
            Ok(described) => {
                let found = compare(&contract(statement, kind), &described);
                if found.iter().all(|p| p.severity == Severity::Warning) {
                    fits.push(statement);
                }
                report.problems.extend(found);
                prepared.push(statement);
                if origin.is_none() && statement != StatementKind::Upsert {
                    origin = described
                        .columns
                        .iter()
                        .find(|c| c.name == "lead_key")
                        .and_then(|c| c.origin);
                }
            }
            Err(refused) => report
                .problems
                .push(refusal(statement, "prepare", &refused)),
        }
    }
    let mut writes = false;
    if prepared.contains(&StatementKind::Candidates) {
        let first_page = [PlanArg::Null, PlanArg::Int(PRODUCER_PAGE)];
        match plan(
            session,
            statements,
            StatementKind::Candidates,
            &first_page,
            true,
        )
        .await?
        {
            Ok(plan) => {
                for table in &plan.seq_scans {
                    report.problems.push(Problem::warning(
                        Some(StatementKind::Candidates),
                        format!(
                            "table \"{table}\" is scanned sequentially even with sequential scans disabled: no index serves the candidate query there, so every page reads the whole table"
                        ),
                    ));
                }
                writes |= plan.modifies;
                report.plan = Some(plan.text);
            }
            Err(problem) => report.problems.push(problem),
        }
    }
    let readable = fits.contains(&StatementKind::Candidates) && fits.contains(&StatementKind::Load);
    if !readable {
        return Ok(None);
    }
    match plan(
        session,
        statements,
        StatementKind::Load,
        &[PlanArg::Null, PlanArg::Int(1)],
        false,
    )
    .await?
    {
        Ok(plan) => writes |= plan.modifies,
        Err(problem) => {
            report.problems.push(problem);
            return Ok(None);
        }
    }
    if writes {
        report.problems.push(Problem::error(
            None,
            "the candidate query or the load writes (INSERT, UPDATE, DELETE or MERGE in its plan): both must only read".to_owned(),
        ));
        return Ok(None);
    }
    let any_lead = match origin {
        None => None,
        Some(origin) => match session.any_value(origin).await? {
            Ok(value) => value,
            Err(refused) => {
                report.problems.push(Problem::warning(
                    None,
                    format!(
                        "cannot read a lead key to render the prompt with: {}",
                        refused.message
                    ),
                ));
                None
            }
        },
    };
    Ok(Some(SampleSource { any_lead }))
}

/// Plans one statement with its contract's parameter types.
async fn plan(
    session: &mut CheckSession,
    statements: &DomainStatements,
    statement: StatementKind,
    args: &[PlanArg],
    without_seq_scans: bool,
) -> Result<Result<Plan, Problem>, insights_store::StoreError> {
    let types: Vec<String> = contract(statement, statements.lead_key)
        .params
        .iter()
        .map(|p| p.sql_type.to_string())
        .collect();
    Ok(session
        .plan(
            sql_of(statements, statement),
            &types,
            args,
            without_seq_scans,
        )
        .await?
        .map_err(|refused| refusal(statement, "plan", &refused)))
}

/// Step 4: one lead loaded through the store, as the worker loads it, and the prompt rendered.
async fn render_sample(
    settings: &Settings,
    ps: &PoolSettings,
    profile: &Profile,
    statements: &DomainStatements,
    source: SampleSource,
    options: CheckOptions,
    report: &mut CheckReport,
) -> Result<(), WorkerError> {
    let kind = statements.lead_key;
    let pool = insights_store::check::read_only_pool(ps).map_err(store_err)?;
    let store = Store::new(
        pool.clone(),
        StoreOptions {
            statements: statements.clone(),
            ..StoreOptions::for_pool(ps)
        },
    );
    let outcome = sample(settings, profile, &store, kind, source, options).await;
    insights_store::pool::close(&pool, ps.statement_timeout).await;
    match outcome.map_err(store_err)? {
        Ok(Some(sample)) => report.sample = Some(sample),
        Ok(None) => report.problems.push(Problem::warning(
            None,
            "no candidate, and no lead found in the table lead_key comes from: the prompt was not rendered".to_owned(),
        )),
        Err(problem) => report.problems.push(problem),
    }
    Ok(())
}

async fn sample(
    settings: &Settings,
    profile: &Profile,
    store: &Store,
    kind: LeadKeyKind,
    source: SampleSource,
    options: CheckOptions,
) -> Result<Result<Option<SampleReport>, Problem>, insights_store::StoreError> {
    let (key, from) = match store.candidate_keys(None, 1).await?.into_iter().next() {
        Some(key) => (key, "candidate"),
        None => match source.any_lead.as_deref().map(|k| kind.parse(k)) {
            Some(Ok(key)) => (key, "any lead"),
            Some(Err(e)) => {
                return Ok(Err(Problem::warning(
                    None,
                    format!("the prompt was not rendered: {e}"),
                )));
            }
            None => return Ok(Ok(None)),
        },
    };
    let max_messages = profile.prompt.max_messages.unwrap_or(settings.max_messages);
    let budget = profile
        .prompt
        .budget_chars
        .unwrap_or(settings.prompt_budget_chars);
    let Some(loaded) = store
        .load_leads(std::slice::from_ref(&key), max_messages)
        .await?
        .remove(&key)
    else {
        return Ok(Err(Problem::error(
            Some(StatementKind::Load),
            format!("returns no row for lead {key}, which the {from} query found"),
        )));
    };
    match profile.prompt.templates.render(&loaded.input, budget) {
        Ok(prompt) => Ok(Ok(Some(SampleReport {
            lead_key: key.to_string(),
            source: from,
            included_messages: prompt.included_messages,
            total_messages: loaded.input.total_message_count,
            system: options.show_prompt.then(|| prompt.system.clone()),
            user: options.show_prompt.then_some(prompt.user),
        }))),
        Err(e) => Ok(Err(Problem::error(
            None,
            format!("prompt for lead {key}: {}", one_line(&e.to_string())),
        ))),
    }
}

fn sql_of(statements: &DomainStatements, statement: StatementKind) -> &str {
    match statement {
        StatementKind::Candidates => &statements.candidates,
        StatementKind::Load => &statements.load,
        StatementKind::Upsert => &statements.upsert,
    }
}

/// A step the server refused: an error with its message, or a warning when the refusal says
/// nothing about the statement (a lock held elsewhere, a timeout).
fn refusal(statement: StatementKind, step: &str, refused: &Refused) -> Problem {
    if refused.transient {
        Problem::warning(
            Some(statement),
            format!("not checked ({step}): {}", refused.message),
        )
    } else {
        Problem::error(Some(statement), refused.message.clone())
    }
}

/// The differences between a prepared statement and its contract: each parameter by number,
/// each column by name (the store reads columns by name; order is free). Extra columns are
/// warnings: nothing reads them.
pub fn compare(contract: &StatementContract, described: &Described) -> Vec<Problem> {
    let statement = Some(contract.statement);
    let mut problems = Vec::new();
    let mismatch = |what: String, expected: SqlType, found: &str| {
        format!("{what} is {}, expected {expected}", short_type_name(found))
    };
    for (i, expected) in contract.params.iter().enumerate() {
        let n = expected.number;
        let problem = match described.params.get(i) {
            Some(found) if expected.sql_type.matches(found) => continue,
            Some(found) => Problem {
                found: Some(short_type_name(found)),
                ..Problem::error(
                    statement,
                    mismatch(format!("parameter ${n}"), expected.sql_type, found),
                )
            },
            None => Problem::error(
                statement,
                format!(
                    "parameter ${n} is not used, expected {} ({}): the worker binds it",
                    expected.sql_type, expected.meaning
                ),
            ),
        };
        problems.push(Problem {
            parameter: Some(n),
            expected: Some(expected.sql_type.to_string()),
            ..problem
        });
    }
    for (i, found) in described
        .params
        .iter()
        .enumerate()
        .skip(contract.params.len())
    {
        problems.push(Problem {
            parameter: Some(i + 1),
            found: Some(short_type_name(found)),
            ..Problem::error(
                statement,
                format!(
                    "parameter ${} is not in the contract: the worker binds {}",
                    i + 1,
                    contract.params.len()
                ),
            )
        });
    }
    for expected in &contract.columns {
        let found = described.columns.iter().find(|c| c.name == expected.name);
        let problem = match found {
            Some(c) if expected.sql_type.matches(&c.type_name) => continue,
            Some(c) => Problem {
                found: Some(short_type_name(&c.type_name)),
                ..Problem::error(
                    statement,
                    mismatch(
                        format!("column \"{}\"", expected.name),
                        expected.sql_type,
                        &c.type_name,
                    ),
                )
            },
            None => Problem::error(
                statement,
                format!(
                    "column \"{}\" is missing, expected {} ({})",
                    expected.name, expected.sql_type, expected.meaning
                ),
            ),
        };
        problems.push(Problem {
            column: Some(expected.name.to_owned()),
            expected: Some(expected.sql_type.to_string()),
            ..problem
        });
    }
    for extra in described
        .columns
        .iter()
        .filter(|c| contract.column(&c.name).is_none())
    {
        problems.push(Problem {
            column: Some(extra.name.clone()),
            found: Some(short_type_name(&extra.type_name)),
            ..Problem::warning(
                statement,
                format!("column \"{}\" is not in the contract (ignored)", extra.name),
            )
        });
    }
    problems
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use insights_store::check::DescribedColumn;

    fn described(params: &[&str], columns: &[(&str, &str)]) -> Described {
        Described {
            params: params.iter().map(|p| (*p).to_owned()).collect(),
            columns: columns
                .iter()
                .map(|(name, type_name)| DescribedColumn {
                    name: (*name).to_owned(),
                    type_name: (*type_name).to_owned(),
                    origin: None,
                })
                .collect(),
        }
    }

    fn lines(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(Problem::line).collect()
    }

    const LOAD_COLUMNS: [(&str, &str); 7] = [
        ("lead_key", "text"),
        ("eligible", "boolean"),
        ("lead", "jsonb"),
        ("messages", "jsonb"),
        ("total_message_count", "bigint"),
        ("source_last_message_at", "timestamp with time zone"),
        ("stored_source_last_message_at", "timestamp with time zone"),
    ];

    #[test]
    fn a_statement_that_fits_the_contract_has_no_problem() {
        let load = contract(StatementKind::Load, LeadKeyKind::Text);
        let mut columns = LOAD_COLUMNS;
        columns.reverse();
        assert_eq!(
            compare(&load, &described(&["text[]", "bigint"], &columns)),
            vec![],
            "order is free"
        );
    }

    #[test]
    fn wrong_types_name_the_statement_the_column_or_parameter_and_the_expected_type() {
        let load = contract(StatementKind::Load, LeadKeyKind::Text);
        let mut columns = LOAD_COLUMNS.to_vec();
        columns[4] = ("total_message_count", "text");
        columns[5] = ("source_last_message_at", "timestamp without time zone");
        let problems = compare(&load, &described(&["uuid[]", "integer"], &columns));
        assert_eq!(
            lines(&problems),
            [
                "load: parameter $1 is uuid[], expected text[]",
                "load: parameter $2 is integer, expected bigint",
                "load: column \"total_message_count\" is text, expected bigint",
                "load: column \"source_last_message_at\" is timestamp, expected timestamptz",
            ]
        );
        assert!(problems.iter().all(|p| p.severity == Severity::Error));
        assert_eq!(problems[2].column.as_deref(), Some("total_message_count"));
        assert_eq!(problems[2].expected.as_deref(), Some("bigint"));
        assert_eq!(problems[2].found.as_deref(), Some("text"));
        assert_eq!(problems[1].parameter, Some(2));
    }

    #[test]
    fn missing_and_extra_columns_and_parameters_are_named() {
        let candidates = contract(StatementKind::Candidates, LeadKeyKind::Bigint);
        let problems = compare(
            &candidates,
            &described(&["bigint"], &[("id", "bigint"), ("name", "text")]),
        );
        assert_eq!(
            lines(&problems),
            [
                "candidates: parameter $2 is not used, expected bigint (page size): the worker binds it",
                "candidates: column \"lead_key\" is missing, expected bigint (a lead that needs an insight (missing, or older than its newest message), ascending)",
                "candidates: column \"id\" is not in the contract (ignored)",
                "candidates: column \"name\" is not in the contract (ignored)",
            ]
        );
        assert_eq!(problems[2].severity, Severity::Warning);
        let extra = compare(
            &candidates,
            &described(&["bigint", "bigint", "text"], &[("lead_key", "bigint")]),
        );
        assert_eq!(
            lines(&extra),
            ["candidates: parameter $3 is not in the contract: the worker binds 2"]
        );
    }

    #[test]
    fn the_report_is_usable_with_warnings_only() {
        let mut report = CheckReport {
            profile: "p.toml".into(),
            lead_key: Some(LeadKeyKind::Uuid),
            problems: vec![Problem::warning(
                Some(StatementKind::Candidates),
                "w".into(),
            )],
            plan: Some("Limit\n  ->  Index Scan".into()),
            sample: None,
        };
        assert!(report.usable());
        assert!(report.to_string().contains("usable (1 warning(s))"));
        report
            .problems
            .push(Problem::error(None, "p.toml:3:1: bad".into()));
        assert!(!report.usable());
        assert_eq!(report.error_lines(), ["p.toml:3:1: bad"]);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["problems"][0]["severity"], "warning");
        assert_eq!(json["problems"][0]["statement"], "candidates");
        assert_eq!(json["problems"][1]["severity"], "error");
        assert_eq!(json["lead_key"], "uuid");
    }
}
