//! The job payload the producer enqueues and the worker consumes.

use serde::{Deserialize, Serialize};

use crate::profile::LeadKey;

/// Name of the queue the insight jobs live on.
pub const INSIGHTS_QUEUE: &str = "lead-insights";

/// One job per lead: "bring this lead's insight up to date". The payload carries only the key
/// (`{"lead_id": 42}` or `{"lead_id": "clx..."}`); the handler loads the current conversation,
/// so a job enqueued long ago never works on stale data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsightJob {
    pub lead_id: LeadKey,
}

impl InsightJob {
    pub fn new(lead_id: impl Into<LeadKey>) -> Self {
        Self {
            lead_id: lead_id.into(),
        }
    }

    /// Dedupe key for the queue: one live job per lead. `insights_queue.add_job` callers (the
    /// app's own SQL) build the same `lead:<key>`.
    pub fn dedupe_key(&self) -> String {
        format!("lead:{}", self.lead_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_for_every_key_type() {
        let job = InsightJob::new(42);
        let json = serde_json::to_string(&job).unwrap();
        assert_eq!(json, r#"{"lead_id":42}"#);
        assert_eq!(serde_json::from_str::<InsightJob>(&json).unwrap(), job);
        assert_eq!(job.dedupe_key(), "lead:42");
        let job = InsightJob::new(LeadKey::Text("clx2v9k3b0000".into()));
        let json = serde_json::to_string(&job).unwrap();
        assert_eq!(json, r#"{"lead_id":"clx2v9k3b0000"}"#);
        assert_eq!(serde_json::from_str::<InsightJob>(&json).unwrap(), job);
        assert_eq!(job.dedupe_key(), "lead:clx2v9k3b0000");
        assert!(serde_json::from_str::<InsightJob>(r#"{"lead":1}"#).is_err());
    }
}
