//! The job handler: for one lead, load (one short transaction, connection released), re-check
//! freshness, call the LLM with no connection held, write through the batched writer (riding
//! out outages: an answer already paid for is worth waiting for), and map every failure to a
//! queue outcome.
//!
//! A job is discarded only for its own fault; trouble elsewhere snoozes it (the attempt given
//! back, bounded by the queue's maximum job age). Outcome mapping (see `insights_queue` for
//! what each error does to the job), in the pure functions [`store_verdict`] and
//! [`llm_verdict`]:
//! - app database connection trouble (unreachable, timed out, too many connections 53300)
//!   → `Snooze`, and the breaker is told;
//! - other transient database errors (statement or lock timeout 57014/55P03, serialization
//!   40001, ...) → `Snooze`: the database, not the job, is at fault;
//! - permanent database errors → `Permanent` (discarded with the reason);
//! - LLM rate limited (429 `rate_limit_exceeded` after the client's inline retries, or a wait
//!   beyond its inline limit) → `Snooze` for the server's hint, jittered up (never sooner);
//! - LLM outage (connect error, timeout, 5xx after the inline retries) → `Snooze`, and the
//!   breaker's LLM side is told (repeated, it pauses fetching and lets one probe through at a
//!   time). A 5xx that is really about one request (one lead) snoozes too: from one answer the
//!   two cannot be told apart, and a snooze costs the lead a wait, not its insight;
//! - other transient LLM errors (408, 409) → `Snooze`;
//! - LLM quota / auth / configuration (needs a person) → fetching paused, job snoozed;
//! - LLM malformed / refused / bad request / truncated → `Permanent` with the reason.
//!
//! An insight already paid for is written once the database takes it: the write retries
//! transient errors (per a `Backoff`) for as long as the job may still live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis_core::error::{BoxDynError, RetryAfterError};
use apalis_core::task::data::Data;
use chrono::Utc;
use insights_core::profile::PromptInput;
use insights_core::{InsightJob, InsightRecord, LeadKey, LeadKeyKind};
use insights_llm::{LlmClient, LlmError, LlmInsight};
use insights_pg::Jitter;
use insights_queue::{JobLease, Permanent, Snooze};
use insights_store::{ConversationLoader, InsightWriter, LoadedLead, StoreError, UpsertOutcome};
use serde::Serialize;

use crate::breaker::{Breaker, LlmPermit};
use crate::defaults::{
    CONNECTION_SNOOZE, GATE_REFUSED_MIN_WAIT, LLM_OUTAGE_SNOOZE, LLM_SNOOZE_JITTER, QUOTA_PAUSE,
    QUOTA_SNOOZE, WRITE_RETRY,
};
use crate::metrics::{Metrics, SkipReason, Stage};

/// How a job ended successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "reason")]
pub enum JobOutcome {
    /// An insight was written.
    Written,
    /// Completed without an LLM call.
    Skipped(SkipReason),
    /// The LLM answered but a newer insight was written meanwhile (by another job); ours was
    /// not stored.
    Superseded,
}

/// What the handler needs; built once per worker.
pub struct PipelineConfig {
    /// Batched loads (concurrent jobs share a statement); configured with the message window.
    pub loader: ConversationLoader,
    /// Batched writes.
    pub writer: InsightWriter,
    /// Carries the profile: prompt, schema and the version stored with every insight.
    pub llm: LlmClient,
    /// The SQL type of the profile's lead keys; a job whose key does not fit is discarded.
    pub lead_key: LeadKeyKind,
    pub breaker: Breaker,
    pub metrics: Metrics,
}

/// Shared handler state (cheap `Clone`), injected with `WorkerBuilder::data`.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<PipelineConfig>,
    /// The queue's `max_job_age`: how long a job may keep waiting, which bounds how long a
    /// paid-for write keeps retrying.
    max_job_age: Duration,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

/// What to tell the queue about a failed job. [`store_verdict`] and [`llm_verdict`] only
/// snooze or discard; `RetryAfter` and `Retry` (which spend an attempt) remain for failures
/// that are the job's own but may pass on another try.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Run again after `delay` without burning an attempt.
    Snooze { delay: Duration, reason: String },
    /// Retry after the server's hint (an attempt is counted).
    RetryAfter { after: Duration, reason: String },
    /// Never retry: discard with the reason.
    Discard { reason: String },
    /// Retry with the queue's backoff.
    Retry { reason: String },
}

impl Verdict {
    /// The error value the queue backend understands.
    pub fn into_error(self) -> BoxDynError {
        match self {
            Verdict::Snooze { delay, reason } => Box::new(Snooze::new(delay, reason)),
            Verdict::RetryAfter { after, reason } => Box::new(RetryAfterError::new(reason, after)),
            Verdict::Discard { reason } => Box::new(Permanent::new(reason)),
            Verdict::Retry { reason } => reason.into(),
        }
    }
}

/// The verdict for a database error, and whether it is a connection error (for the breaker).
pub fn store_verdict(e: &StoreError) -> (Verdict, bool) {
    let reason = e.to_string();
    if e.is_connection() {
        (
            Verdict::Snooze {
                delay: CONNECTION_SNOOZE,
                reason: format!("app database unreachable: {reason}"),
            },
            true,
        )
    } else if e.is_transient() {
        (
            Verdict::Snooze {
                delay: CONNECTION_SNOOZE,
                reason: format!("app database busy: {reason}"),
            },
            false,
        )
    } else {
        (Verdict::Discard { reason }, false)
    }
}

/// What an LLM error tells the breaker about the endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LlmSignal {
    /// The endpoint answered (the error is about this request or this account's rate).
    Answered,
    /// The endpoint looks down: counts towards opening the breaker's LLM side.
    Outage,
    /// The endpoint answered, but no job can succeed until a person acts (quota, credentials,
    /// configuration): pause all fetching this long.
    PauseFetching(Duration),
}

/// The verdict for an LLM error, and what it tells the breaker.
pub fn llm_verdict(e: &LlmError) -> (Verdict, LlmSignal) {
    let reason = e.to_string();
    if e.kind().needs_operator() {
        return (
            Verdict::Snooze {
                delay: QUOTA_SNOOZE,
                reason,
            },
            LlmSignal::PauseFetching(QUOTA_PAUSE),
        );
    }
    if e.is_permanent() {
        return (Verdict::Discard { reason }, LlmSignal::Answered);
    }
    if let LlmError::RetryLater { after, .. } = e {
        return (
            Verdict::Snooze {
                delay: LLM_SNOOZE_JITTER.apply(*after),
                reason: format!("LLM rate limited: {reason}"),
            },
            LlmSignal::Answered,
        );
    }
    let wait = e.retry_after().unwrap_or(LLM_OUTAGE_SNOOZE);
    let signal = if e.is_outage() {
        LlmSignal::Outage
    } else {
        LlmSignal::Answered
    };
    (
        Verdict::Snooze {
            delay: LLM_SNOOZE_JITTER.apply(wait.max(LLM_OUTAGE_SNOOZE)),
            reason: format!("LLM unavailable: {reason}"),
        },
        signal,
    )
}

/// Why a loaded lead needs no LLM call, if it does not.
pub fn skip_reason(loaded: &LoadedLead) -> Option<SkipReason> {
    if !loaded.eligible {
        Some(SkipReason::NotEligible)
    } else if loaded.input.messages.is_empty() || loaded.source_last_message_at.is_none() {
        Some(SkipReason::NoMessages)
    } else if loaded.is_fresh() {
        Some(SkipReason::Fresh)
    } else {
        None
    }
}

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Self {
        Self {
            inner: Arc::new(config),
            max_job_age: insights_queue::defaults::MAX_JOB_AGE,
        }
    }

    /// The queue's `max_job_age` (default: the queue's default), which bounds how long the
    /// write of a paid-for insight keeps retrying.
    pub fn with_max_job_age(mut self, max_job_age: Duration) -> Self {
        self.max_job_age = max_job_age;
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Processes one job; `Err` carries the verdict for the queue. `lease` (the queue's view
    /// of the job) gives its age; without one the job is taken as just enqueued.
    pub async fn process(
        &self,
        job: InsightJob,
        lease: Option<&JobLease>,
    ) -> Result<JobOutcome, Verdict> {
        let lead_id = match self.inner.lead_key.fit(job.lead_id) {
            Ok(key) => key,
            Err(e) => {
                return Err(Verdict::Discard {
                    reason: format!(
                        "{e}: the profile's statements take {} keys",
                        self.inner.lead_key.sql_type()
                    ),
                });
            }
        };
        let age = lease
            .and_then(|l| l.age(Utc::now()))
            .unwrap_or(Duration::ZERO);
        let write_deadline = Instant::now() + self.max_job_age.saturating_sub(age);

        let Some(loaded) = self.load(&lead_id).await? else {
            return Ok(self.skip(&lead_id, SkipReason::LeadGone));
        };
        // A duplicate or re-delivered job pays nothing.
        if let Some(reason) = skip_reason(&loaded) {
            return Ok(self.skip(&lead_id, reason));
        }
        let Some(source_last_message_at) = loaded.source_last_message_at else {
            return Ok(self.skip(&lead_id, SkipReason::NoMessages));
        };
        let insight = self.generate(&lead_id, &loaded.input).await?;
        let record = InsightRecord {
            document: insight.document,
            model: insight.model,
            prompt_version: self.inner.llm.profile().prompt.version.clone(),
            source_last_message_at,
            source_message_count: loaded.input.total_message_count,
            prompt_tokens: insight.prompt_tokens,
            completion_tokens: insight.completion_tokens,
            llm_request_id: insight.request_id,
            lead_key: lead_id,
        };
        self.write(record, write_deadline).await
    }

    /// Loads the lead and its newest messages in one short statement (shared with concurrent
    /// jobs); the connection is back in the pool before anything else happens. `None`: the
    /// lead is gone.
    async fn load(&self, lead_id: &LeadKey) -> Result<Option<LoadedLead>, Verdict> {
        let p = &*self.inner;
        // While the breaker's pause runs the database is presumed down: adding to the
        // connection attempts would only prolong that.
        if p.breaker.pause_remaining().is_some() {
            return Err(Verdict::Snooze {
                delay: CONNECTION_SNOOZE,
                reason: "app database unavailable (circuit breaker open)".to_owned(),
            });
        }
        let t = Instant::now();
        let loaded = p.loader.load(lead_id.clone()).await;
        p.metrics.stage(Stage::Load, t.elapsed());
        match loaded {
            Ok(l) => {
                p.breaker.record_success();
                Ok(l)
            }
            Err(e) => Err(self.store_failure(&e)),
        }
    }

    /// Asks the LLM for the insight, with no database connection held; while the endpoint is
    /// presumed down only one probe goes through.
    async fn generate(
        &self,
        lead_id: &LeadKey,
        input: &PromptInput,
    ) -> Result<LlmInsight, Verdict> {
        let p = &*self.inner;
        let _probe = match p.breaker.llm_permit() {
            LlmPermit::Go => None,
            LlmPermit::Probe(guard) => Some(guard),
            LlmPermit::Wait(remaining) => {
                return Err(Verdict::Snooze {
                    delay: LLM_SNOOZE_JITTER.apply(remaining.max(LLM_OUTAGE_SNOOZE)),
                    reason: "LLM endpoint unavailable (circuit breaker open)".to_owned(),
                });
            }
        };
        let t = Instant::now();
        let insight = p.llm.generate_insight(lead_id, input).await;
        p.metrics.stage(Stage::Llm, t.elapsed());
        match insight {
            Ok(i) => {
                p.breaker.record_llm_answer();
                p.metrics.llm_call(
                    u64::try_from(i.prompt_tokens).unwrap_or(0),
                    u64::try_from(i.completion_tokens).unwrap_or(0),
                );
                Ok(i)
            }
            Err(e) => Err(self.llm_failure(lead_id, &e)),
        }
    }

    /// Writes the insight (batched with other jobs), retrying transient trouble until
    /// `deadline`.
    async fn write(&self, record: InsightRecord, deadline: Instant) -> Result<JobOutcome, Verdict> {
        let p = &*self.inner;
        let lead_id = record.lead_key.clone();
        let t = Instant::now();
        let written = self.write_with_retry(record, deadline).await;
        p.metrics.stage(Stage::Write, t.elapsed());
        match written {
            Ok(UpsertOutcome::Written) => {
                p.metrics.written();
                Ok(JobOutcome::Written)
            }
            Ok(UpsertOutcome::StaleIgnored) => Ok(JobOutcome::Superseded),
            Ok(UpsertOutcome::LeadGone) => Ok(self.skip(&lead_id, SkipReason::LeadGone)),
            Err(e) => Err(self.store_failure(&e)),
        }
    }

    fn skip(&self, lead_id: &LeadKey, reason: SkipReason) -> JobOutcome {
        tracing::debug!(%lead_id, %reason, "skipped");
        self.inner.metrics.skipped(reason);
        JobOutcome::Skipped(reason)
    }

    fn store_failure(&self, e: &StoreError) -> Verdict {
        let (verdict, connection) = store_verdict(e);
        if connection {
            self.inner.metrics.connection_error();
            self.inner.breaker.record_connection_error();
        }
        verdict
    }

    fn llm_failure(&self, lead_id: &LeadKey, e: &LlmError) -> Verdict {
        let p = &*self.inner;
        let (verdict, signal) = llm_verdict(e);
        match signal {
            LlmSignal::Answered => p.breaker.record_llm_answer(),
            LlmSignal::Outage => {
                p.metrics.llm_outage_error();
                p.breaker.record_llm_outage();
            }
            LlmSignal::PauseFetching(pause) => {
                p.breaker.record_llm_answer();
                p.breaker.pause_for(e.kind().as_str(), pause);
            }
        }
        if matches!(verdict, Verdict::Discard { .. }) {
            tracing::warn!(%lead_id, kind = %e.kind(), error = %e, "LLM failed permanently: discarding job");
        } else {
            tracing::debug!(%lead_id, kind = %e.kind(), error = %e, "LLM call failed");
        }
        verdict
    }

    /// The LLM answer is paid for: keep trying the write until the database takes it, for as
    /// long as the job may live (`deadline`), rather than failing the job (which would pay for
    /// the LLM again).
    ///
    /// While the app database is presumed down, the store's connection gate refuses a write
    /// without a connection attempt and says when its next probe may go; the write comes back
    /// then. Every waiting write wakes at about the same instant, so they go out together in one
    /// batch: one probe, not one per job, and the write lands within one gate backoff (at most
    /// 1.5 s) of the database's return rather than after the breaker's (growing) pause.
    async fn write_with_retry(
        &self,
        record: InsightRecord,
        deadline: Instant,
    ) -> Result<UpsertOutcome, StoreError> {
        let p = &*self.inner;
        let mut retries: u32 = 0;
        loop {
            match p.writer.write(record.clone()).await {
                Ok(outcome) => {
                    p.breaker.record_success();
                    return Ok(outcome);
                }
                Err(e) if e.is_transient() => {
                    if e.is_connection() {
                        p.metrics.connection_error();
                        p.breaker.record_connection_error();
                    }
                    let wait = match &e {
                        StoreError::Unavailable { retry_in, .. } => {
                            (*retry_in).max(GATE_REFUSED_MIN_WAIT)
                                + Jitter::Full.apply(GATE_REFUSED_MIN_WAIT)
                        }
                        _ => {
                            retries = retries.saturating_add(1);
                            WRITE_RETRY.delay(retries)
                        }
                    };
                    if Instant::now() + wait >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(lead_id = %record.lead_key, error = %e, ?wait, "insight write failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The apalis handler: `WorkerBuilder::...data(pipeline).build(handle_insight_job)`.
pub async fn handle_insight_job(
    job: InsightJob,
    pipeline: Data<Pipeline>,
    lease: Data<JobLease>,
) -> Result<JobOutcome, BoxDynError> {
    let started = Instant::now();
    let result = pipeline.process(job, Some(&lease)).await;
    let m = pipeline.metrics();
    m.job_finished(started.elapsed());
    match result {
        Ok(outcome) => Ok(outcome),
        Err(verdict) => {
            m.failed();
            match &verdict {
                Verdict::Snooze { .. } => m.snoozed(),
                Verdict::Discard { .. } => m.discarded(),
                Verdict::RetryAfter { .. } | Verdict::Retry { .. } => m.retried(),
            }
            Err(verdict.into_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use insights_llm::LlmErrorKind;
    use insights_store::ErrorClass;

    fn loaded(booked: bool, messages: usize, stored_secs: Option<i64>) -> LoadedLead {
        let at = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).single().unwrap();
        let messages: Vec<serde_json::Value> = (0..messages)
            .map(|i| serde_json::json!({"body": "hi", "sent_at": at(i as i64 * 10)}))
            .collect();
        let last = (!messages.is_empty()).then(|| at((messages.len() as i64 - 1) * 10));
        LoadedLead {
            key: LeadKey::Int(1),
            eligible: booked,
            input: PromptInput {
                lead: serde_json::json!({"id": 1}),
                total_message_count: messages.len() as i64,
                messages,
            },
            source_last_message_at: last,
            stored_source_last_message_at: stored_secs.map(at),
        }
    }

    #[test]
    fn skip_rules() {
        assert_eq!(
            skip_reason(&loaded(false, 3, None)),
            Some(SkipReason::NotEligible)
        );
        assert_eq!(
            skip_reason(&loaded(true, 0, None)),
            Some(SkipReason::NoMessages)
        );
        // Stored insight covers message 2 (at +20 s): fresh.
        assert_eq!(
            skip_reason(&loaded(true, 3, Some(20))),
            Some(SkipReason::Fresh)
        );
        // Stored insight is older than the newest message: work to do.
        assert_eq!(skip_reason(&loaded(true, 3, Some(10))), None);
        assert_eq!(skip_reason(&loaded(true, 3, None)), None);
    }

    fn shared(message: &str, class: ErrorClass) -> StoreError {
        StoreError::Shared {
            message: message.into(),
            class,
        }
    }

    /// What kind of verdict, for the tables.
    fn shape(v: &Verdict) -> &'static str {
        match v {
            Verdict::Snooze { .. } => "snooze",
            Verdict::RetryAfter { .. } => "retry_after",
            Verdict::Discard { .. } => "discard",
            Verdict::Retry { .. } => "retry",
        }
    }

    #[test]
    fn store_verdicts_snooze_what_is_not_the_jobs_fault() {
        let cases = [
            (
                "client timeout",
                StoreError::Timeout {
                    op: "load_conversation",
                    after: Duration::from_secs(1),
                },
                "snooze",
                true,
            ),
            (
                "53300 too many connections",
                shared("53300", ErrorClass::Connection),
                "snooze",
                true,
            ),
            (
                "57014 statement timeout",
                shared("57014", ErrorClass::Transient),
                "snooze",
                false,
            ),
            (
                "55P03 lock timeout",
                shared("55P03", ErrorClass::Transient),
                "snooze",
                false,
            ),
            (
                "40001 serialization",
                shared("40001", ErrorClass::Transient),
                "snooze",
                false,
            ),
            (
                "decode",
                StoreError::Decode {
                    op: "load_conversation",
                    detail: "bad".into(),
                },
                "discard",
                false,
            ),
            (
                "23505 permanent",
                shared("23505", ErrorClass::Permanent),
                "discard",
                false,
            ),
        ];
        for (name, e, want, want_conn) in cases {
            let (v, conn) = store_verdict(&e);
            assert_eq!(shape(&v), want, "{name}");
            assert_eq!(conn, want_conn, "{name}");
            if let Verdict::Snooze { delay, reason } = &v {
                assert_eq!(*delay, CONNECTION_SNOOZE, "{name}");
                assert!(reason.contains(&e.to_string()), "{name}: {reason}");
            }
        }
    }

    fn transient(status: Option<u16>, hint: Option<Duration>) -> LlmError {
        LlmError::Transient {
            reason: format!("{status:?}"),
            status,
            attempts: 4,
            retry_after: hint,
        }
    }

    #[test]
    fn llm_verdicts_discard_only_for_the_leads_own_fault() {
        let permanent = |kind| LlmError::Permanent {
            kind,
            status: Some(400),
            reason: "r".into(),
        };
        let cases = [
            (
                "rate limited",
                LlmError::RetryLater {
                    after: Duration::from_millis(1500),
                    reason: "429 rate_limit_exceeded".into(),
                },
                "snooze",
                LlmSignal::Answered,
            ),
            (
                "connect error",
                transient(None, None),
                "snooze",
                LlmSignal::Outage,
            ),
            (
                "503",
                transient(Some(503), None),
                "snooze",
                LlmSignal::Outage,
            ),
            (
                "500 with a hint",
                transient(Some(500), Some(Duration::from_secs(3))),
                "snooze",
                LlmSignal::Outage,
            ),
            (
                "408",
                transient(Some(408), None),
                "snooze",
                LlmSignal::Answered,
            ),
            (
                "quota",
                permanent(LlmErrorKind::Quota),
                "snooze",
                LlmSignal::PauseFetching(QUOTA_PAUSE),
            ),
            (
                "auth",
                permanent(LlmErrorKind::Auth),
                "snooze",
                LlmSignal::PauseFetching(QUOTA_PAUSE),
            ),
            (
                "bad request",
                permanent(LlmErrorKind::BadRequest),
                "discard",
                LlmSignal::Answered,
            ),
            (
                "truncated",
                permanent(LlmErrorKind::Truncated),
                "discard",
                LlmSignal::Answered,
            ),
            (
                "malformed",
                LlmError::Malformed {
                    reason: "not json".into(),
                    snippet: "{".into(),
                    attempts: 3,
                },
                "discard",
                LlmSignal::Answered,
            ),
            (
                "refused",
                LlmError::Refused {
                    reason: "content_filter".into(),
                },
                "discard",
                LlmSignal::Answered,
            ),
        ];
        for (name, e, want, want_signal) in cases {
            let (v, signal) = llm_verdict(&e);
            assert_eq!(shape(&v), want, "{name}");
            assert_eq!(signal, want_signal, "{name}");
            if let Verdict::Discard { reason } = &v {
                assert_eq!(*reason, e.to_string(), "{name}");
            }
        }
    }

    #[test]
    fn llm_snoozes_wait_at_least_the_servers_hint_spread_upwards() {
        let hint = Duration::from_millis(4000);
        let later = LlmError::RetryLater {
            after: hint,
            reason: "429".into(),
        };
        let delays: Vec<Duration> = (0..200)
            .map(|_| match llm_verdict(&later).0 {
                Verdict::Snooze { delay, .. } => delay,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(delays.iter().all(|d| *d >= hint && *d <= hint.mul_f64(1.5)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(
            distinct.len() > 100,
            "waiting jobs must not return together"
        );

        // An outage snoozes at least the outage snooze, or the server's hint when longer.
        for (e, least) in [
            (transient(None, None), LLM_OUTAGE_SNOOZE),
            (
                transient(Some(503), Some(Duration::from_secs(7))),
                Duration::from_secs(7),
            ),
        ] {
            let Verdict::Snooze { delay, .. } = llm_verdict(&e).0 else {
                panic!("outage must snooze");
            };
            assert!(delay >= least && delay <= least.mul_f64(1.5), "{delay:?}");
        }
    }

    #[test]
    fn verdicts_become_the_markers_the_queue_understands() {
        let e = Verdict::Snooze {
            delay: Duration::from_secs(1),
            reason: "db".into(),
        }
        .into_error();
        assert!(e.downcast_ref::<Snooze>().is_some());
        let e = Verdict::Discard {
            reason: "bad".into(),
        }
        .into_error();
        assert_eq!(
            e.downcast_ref::<Permanent>().map(|p| p.reason.as_str()),
            Some("bad")
        );
        let e = Verdict::RetryAfter {
            after: Duration::from_secs(3),
            reason: "429".into(),
        }
        .into_error();
        assert_eq!(
            e.downcast_ref::<RetryAfterError>()
                .map(|r| r.get_duration()),
            Some(Duration::from_secs(3))
        );
        let e = Verdict::Retry { reason: "x".into() }.into_error();
        assert!(e.downcast_ref::<Permanent>().is_none() && e.downcast_ref::<Snooze>().is_none());
    }
}
