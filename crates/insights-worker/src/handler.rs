//! The job handler: for one lead, load (one short transaction, connection released), re-check
//! freshness, call the LLM with no connection held, write through the batched writer (riding
//! out short outages: an answer already paid for is worth waiting for), and map every failure
//! to a queue outcome.
//!
//! Outcome mapping (see `insights_queue` for what each error does to the job):
//! - app database connection trouble → `Snooze` (no attempt burned) and the breaker is told;
//! - other transient database errors → plain error (queue backoff, attempt counted);
//! - permanent database errors → `Permanent` (discarded with the reason);
//! - LLM `RetryLater{after}` or a transient error with a server hint → `RetryAfterError`;
//! - LLM quota / auth / configuration (needs a person) → fetching paused, job snoozed;
//! - LLM malformed / refused / bad request / truncated → `Permanent` with the reason;
//! - other LLM errors → plain error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis_core::error::{BoxDynError, RetryAfterError};
use apalis_core::task::data::Data;
use insights_core::{InsightJob, InsightRecord, PROMPT_VERSION};
use insights_llm::{LlmClient, LlmError};
use insights_queue::{Permanent, Snooze};
use insights_store::{
    ConversationLoader, InsightWriter, LoadedConversation, StoreError, UpsertOutcome,
};
use serde::Serialize;

use crate::breaker::Breaker;
use crate::defaults::{
    CONNECTION_SNOOZE, GATE_REFUSED_MIN_WAIT, QUOTA_PAUSE, QUOTA_SNOOZE, WRITE_RETRY_BUDGET,
    WRITE_RETRY_MAX, WRITE_RETRY_MIN,
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
    pub llm: LlmClient,
    pub breaker: Breaker,
    pub metrics: Metrics,
}

/// Shared handler state (cheap `Clone`), injected with `WorkerBuilder::data`.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<PipelineConfig>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

/// What to tell the queue about a failed job.
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
        (Verdict::Retry { reason }, false)
    } else {
        (Verdict::Discard { reason }, false)
    }
}

/// The verdict for an LLM error, and a pause of all fetching when no job can succeed until a
/// person acts (quota, credentials, configuration).
pub fn llm_verdict(e: &LlmError) -> (Verdict, Option<Duration>) {
    let reason = e.to_string();
    if e.kind().needs_operator() {
        return (
            Verdict::Snooze {
                delay: QUOTA_SNOOZE,
                reason,
            },
            Some(QUOTA_PAUSE),
        );
    }
    if let LlmError::RetryLater { after, .. } = e {
        return (
            Verdict::RetryAfter {
                after: *after,
                reason,
            },
            None,
        );
    }
    if e.is_permanent() {
        return (Verdict::Discard { reason }, None);
    }
    match e.retry_after() {
        Some(after) => (Verdict::RetryAfter { after, reason }, None),
        None => (Verdict::Retry { reason }, None),
    }
}

/// Why a loaded conversation needs no LLM call, if it does not.
pub fn skip_reason(loaded: &LoadedConversation) -> Option<SkipReason> {
    let conv = &loaded.conversation;
    if conv.lead.booked_at.is_none() {
        Some(SkipReason::NotBooked)
    } else if conv.is_empty() || conv.source_last_message_at().is_none() {
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
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Processes one job; `Err` carries the verdict for the queue.
    pub async fn process(&self, job: InsightJob) -> Result<JobOutcome, Verdict> {
        let p = &*self.inner;
        let lead_id = job.lead_id;

        // 1. Load: one short statement (shared with concurrent jobs), connection back in the pool
        // before anything else happens.
        // While the breaker's pause runs the database is presumed down: do not add to the
        // connection attempts; come back later without burning an attempt.
        if p.breaker.pause_remaining().is_some() {
            return Err(Verdict::Snooze {
                delay: CONNECTION_SNOOZE,
                reason: "app database unavailable (circuit breaker open)".to_owned(),
            });
        }
        let t = Instant::now();
        let loaded = p.loader.load(lead_id).await;
        p.metrics.stage(Stage::Load, t.elapsed());
        let loaded = match loaded {
            Ok(l) => {
                p.breaker.record_success();
                l
            }
            Err(e) => return Err(self.store_failure(&e)),
        };
        let Some(loaded) = loaded else {
            return Ok(self.skip(lead_id, SkipReason::LeadGone));
        };
        // 2. Freshness re-check: a duplicate or re-delivered job pays nothing.
        if let Some(reason) = skip_reason(&loaded) {
            return Ok(self.skip(lead_id, reason));
        }
        let conv = loaded.conversation;
        let Some(source_last_message_at) = conv.source_last_message_at() else {
            return Ok(self.skip(lead_id, SkipReason::NoMessages));
        };

        // 3. The LLM, with no database connection held.
        let t = Instant::now();
        let insight = p.llm.generate_insight(&conv).await;
        p.metrics.stage(Stage::Llm, t.elapsed());
        let insight = match insight {
            Ok(i) => i,
            Err(e) => {
                let (verdict, pause) = llm_verdict(&e);
                if let Some(pause) = pause {
                    p.breaker.pause_for(e.kind().as_str(), pause);
                }
                if matches!(verdict, Verdict::Discard { .. }) {
                    tracing::warn!(lead_id, kind = %e.kind(), error = %e, "LLM failed permanently: discarding job");
                } else {
                    tracing::debug!(lead_id, kind = %e.kind(), error = %e, "LLM call failed");
                }
                return Err(verdict);
            }
        };
        p.metrics.llm_call(
            u64::try_from(insight.prompt_tokens).unwrap_or(0),
            u64::try_from(insight.completion_tokens).unwrap_or(0),
        );

        // 4. Write (batched with other jobs), retrying transient trouble.
        let record = InsightRecord {
            lead_id,
            content: insight.content,
            model: insight.model,
            prompt_version: PROMPT_VERSION.to_owned(),
            source_last_message_at,
            source_message_count: conv.total_message_count,
            prompt_tokens: insight.prompt_tokens,
            completion_tokens: insight.completion_tokens,
            llm_request_id: insight.request_id,
        };
        let t = Instant::now();
        let written = self.write_with_retry(record).await;
        p.metrics.stage(Stage::Write, t.elapsed());
        match written {
            Ok(UpsertOutcome::Written) => {
                p.metrics.written();
                Ok(JobOutcome::Written)
            }
            Ok(UpsertOutcome::StaleIgnored) => Ok(JobOutcome::Superseded),
            Ok(UpsertOutcome::LeadGone) => Ok(self.skip(lead_id, SkipReason::LeadGone)),
            Err(e) => Err(self.store_failure(&e)),
        }
    }

    fn skip(&self, lead_id: i64, reason: SkipReason) -> JobOutcome {
        tracing::debug!(lead_id, %reason, "skipped");
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

    /// The LLM answer is paid for: keep trying the write through a short outage rather than
    /// failing the job (which would pay for the LLM again).
    ///
    /// While the app database is presumed down, the store's connection gate refuses a write
    /// without a connection attempt and says when its next probe may go; the write comes back
    /// then. Every waiting write wakes at about the same instant, so they go out together in one
    /// batch: one probe, not one per job, and the write lands within one gate backoff (at most
    /// 2 s) of the database's return rather than after the breaker's (growing) pause.
    async fn write_with_retry(&self, record: InsightRecord) -> Result<UpsertOutcome, StoreError> {
        let p = &*self.inner;
        let deadline = Instant::now() + WRITE_RETRY_BUDGET;
        let mut delay = WRITE_RETRY_MIN;
        loop {
            match p.writer.write(record.clone()).await {
                Ok(outcome) => {
                    p.breaker.record_success();
                    return Ok(outcome);
                }
                Err(e) if e.is_transient() && Instant::now() + delay < deadline => {
                    if e.is_connection() {
                        p.metrics.connection_error();
                        p.breaker.record_connection_error();
                    }
                    tracing::debug!(lead_id = record.lead_id, error = %e, "insight write failed; retrying");
                    let wait = match &e {
                        StoreError::Unavailable { retry_in, .. } => {
                            (*retry_in).max(GATE_REFUSED_MIN_WAIT)
                                + GATE_REFUSED_MIN_WAIT.mul_f64(rand::random::<f64>())
                        }
                        _ => {
                            let jittered = delay / 2 + delay.mul_f64(rand::random::<f64>() / 2.0);
                            delay = (delay * 2).min(WRITE_RETRY_MAX);
                            jittered
                        }
                    };
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
) -> Result<JobOutcome, BoxDynError> {
    let started = Instant::now();
    let result = pipeline.process(job).await;
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
    use insights_core::{Conversation, Direction, LeadSnapshot, Message};
    use insights_llm::LlmErrorKind;

    fn loaded(booked: bool, messages: usize, stored_secs: Option<i64>) -> LoadedConversation {
        let at = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).single().unwrap();
        let messages: Vec<Message> = (0..messages)
            .map(|i| Message {
                id: i as i64,
                direction: Direction::Inbound,
                body: "hi".into(),
                sent_at: at(i as i64 * 10),
            })
            .collect();
        let last = messages.last().map(|m| m.sent_at);
        LoadedConversation {
            conversation: Conversation {
                lead: LeadSnapshot {
                    id: 1,
                    name: "n".into(),
                    email: "e".into(),
                    booked_at: booked.then(|| at(0)),
                    last_message_at: last,
                },
                total_message_count: messages.len() as i64,
                messages,
            },
            stored_source_last_message_at: stored_secs.map(at),
        }
    }

    #[test]
    fn skip_rules() {
        assert_eq!(
            skip_reason(&loaded(false, 3, None)),
            Some(SkipReason::NotBooked)
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

    #[test]
    fn connection_errors_snooze_and_count_for_the_breaker() {
        let e = StoreError::Timeout {
            op: "load_conversation",
            after: Duration::from_secs(1),
        };
        let (v, conn) = store_verdict(&e);
        assert!(conn);
        assert!(matches!(v, Verdict::Snooze { delay, .. } if delay == CONNECTION_SNOOZE));
        let e = StoreError::Decode {
            op: "load_conversation",
            detail: "bad".into(),
        };
        let (v, conn) = store_verdict(&e);
        assert!(!conn);
        assert!(matches!(v, Verdict::Discard { .. }));
    }

    #[test]
    fn llm_errors_map_to_queue_outcomes() {
        let later = LlmError::RetryLater {
            after: Duration::from_millis(1500),
            reason: "429".into(),
        };
        assert!(
            matches!(llm_verdict(&later), (Verdict::RetryAfter { after, .. }, None) if after == Duration::from_millis(1500))
        );

        let quota = LlmError::Permanent {
            kind: LlmErrorKind::Quota,
            status: Some(429),
            reason: "insufficient_quota".into(),
        };
        let (v, pause) = llm_verdict(&quota);
        assert!(matches!(v, Verdict::Snooze { .. }));
        assert_eq!(pause, Some(QUOTA_PAUSE));

        let malformed = LlmError::Malformed {
            reason: "not json".into(),
            snippet: "{".into(),
            attempts: 3,
        };
        assert!(
            matches!(llm_verdict(&malformed), (Verdict::Discard { reason }, None) if reason.contains("not json"))
        );

        let refused = LlmError::Refused {
            reason: "content_filter".into(),
        };
        assert!(matches!(
            llm_verdict(&refused),
            (Verdict::Discard { .. }, None)
        ));

        let transient = LlmError::Transient {
            reason: "503".into(),
            status: Some(503),
            attempts: 3,
            retry_after: None,
        };
        assert!(matches!(
            llm_verdict(&transient),
            (Verdict::Retry { .. }, None)
        ));
        let hinted = LlmError::Transient {
            reason: "503".into(),
            status: Some(503),
            attempts: 3,
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(matches!(
            llm_verdict(&hinted),
            (Verdict::RetryAfter { .. }, None)
        ));
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
