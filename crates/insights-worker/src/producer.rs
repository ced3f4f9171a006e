//! The producer: finds leads whose insight is missing or stale (keyset pages of ids from the
//! store) and enqueues one job per lead in bulk, deduplicated by `lead:<id>` so a lead never
//! has two live jobs.
//!
//! Explicit lead ids (`--lead-id`) skip the candidate query: each is enqueued when the lead
//! exists and is booked, whatever its insight's freshness (the handler still skips it if the
//! stored insight already covers the newest message, so forcing costs no LLM call).

use insights_core::{INSIGHTS_QUEUE, InsightJob, LeadKey};
use insights_queue::{NewJob, Queue};
use insights_store::Store;
use serde::{Deserialize, Serialize};

use crate::defaults::PRODUCER_PAGE;
use crate::error::WorkerError;
use crate::wiring::{queue_err, store_err};

#[derive(Debug, Clone, Default)]
pub struct EnqueueRequest {
    /// At most this many leads.
    pub limit: u64,
    /// Enqueue these leads instead of querying candidates (keys of the profile's type).
    pub lead_ids: Vec<LeadKey>,
    /// Count only.
    pub dry_run: bool,
}

/// `{"candidates":N,"enqueued":N,"duplicates":N}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnqueueReport {
    /// Leads that qualified (candidates found, or explicit ids that exist and are booked).
    pub candidates: u64,
    /// Jobs inserted.
    pub enqueued: u64,
    /// Leads that already had a live job.
    pub duplicates: u64,
}

impl std::fmt::Display for EnqueueReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "candidates: {}, enqueued: {}, duplicates: {}",
            self.candidates, self.enqueued, self.duplicates
        )
    }
}

fn job_for(lead_id: LeadKey) -> NewJob<InsightJob> {
    let job = InsightJob::new(lead_id);
    let key = job.dedupe_key();
    NewJob::new(job).dedupe_key(key)
}

/// Runs the producer once.
pub async fn enqueue(
    store: &Store,
    queue: &Queue,
    req: EnqueueRequest,
) -> Result<EnqueueReport, WorkerError> {
    if !req.lead_ids.is_empty() {
        return enqueue_explicit(store, queue, req).await;
    }
    let mut report = EnqueueReport::default();
    let mut after: Option<LeadKey> = None;
    while report.candidates < req.limit {
        let want = (req.limit - report.candidates).min(PRODUCER_PAGE as u64);
        let ids = store
            .candidate_keys(after.as_ref(), i64::try_from(want).unwrap_or(PRODUCER_PAGE))
            .await
            .map_err(store_err)?;
        let Some(last) = ids.last() else {
            break;
        };
        after = Some(last.clone());
        report.candidates += ids.len() as u64;
        let page_full = ids.len() as u64 == want;
        if !req.dry_run {
            // One page is one bulk push (chunked inside the queue): memory stays bounded by the
            // page size however many candidates there are.
            let outcome = queue
                .push_bulk(INSIGHTS_QUEUE, ids.into_iter().map(job_for).collect())
                .await
                .map_err(queue_err)?;
            report.enqueued += outcome.inserted;
            report.duplicates += outcome.duplicates;
        }
        if !page_full {
            break;
        }
    }
    tracing::info!(
        candidates = report.candidates,
        enqueued = report.enqueued,
        duplicates = report.duplicates,
        dry_run = req.dry_run,
        "enqueue finished"
    );
    Ok(report)
}

async fn enqueue_explicit(
    store: &Store,
    queue: &Queue,
    req: EnqueueRequest,
) -> Result<EnqueueReport, WorkerError> {
    let mut ids = req.lead_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    let mut qualified = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(PRODUCER_PAGE as usize) {
        // One message is enough to learn whether the lead exists and wants an insight.
        let mut found = store.load_leads(chunk, 1).await.map_err(store_err)?;
        for id in chunk {
            match found.remove(id) {
                Some(l) if l.eligible => qualified.push(id.clone()),
                Some(_) => {
                    tracing::warn!(lead_id = %id, "lead is not eligible (not booked): not enqueued")
                }
                None => tracing::warn!(lead_id = %id, "lead does not exist: not enqueued"),
            }
        }
    }
    qualified.truncate(usize::try_from(req.limit).unwrap_or(usize::MAX));
    let mut report = EnqueueReport {
        candidates: qualified.len() as u64,
        ..EnqueueReport::default()
    };
    if !req.dry_run && !qualified.is_empty() {
        let outcome = queue
            .push_bulk(INSIGHTS_QUEUE, qualified.into_iter().map(job_for).collect())
            .await
            .map_err(queue_err)?;
        report.enqueued = outcome.inserted;
        report.duplicates = outcome.duplicates;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_keyed_by_lead() {
        let j = job_for(LeadKey::Int(42));
        assert_eq!(j.dedupe_key.as_deref(), Some("lead:42"));
        assert_eq!(j.payload, InsightJob::new(42));
        let j = job_for(LeadKey::Text("clx9".into()));
        assert_eq!(j.dedupe_key.as_deref(), Some("lead:clx9"));
    }

    #[test]
    fn report_serialises_in_the_documented_shape() {
        let r = EnqueueReport {
            candidates: 3,
            enqueued: 2,
            duplicates: 1,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"candidates":3,"enqueued":2,"duplicates":1}"#
        );
        assert_eq!(r.to_string(), "candidates: 3, enqueued: 2, duplicates: 1");
    }
}
