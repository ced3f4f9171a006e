//! The job payload the producer enqueues and the worker consumes.

use serde::{Deserialize, Serialize};

/// Name of the queue the insight jobs live on.
pub const INSIGHTS_QUEUE: &str = "lead-insights";

/// Primary key of a lead (`leads.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeadId(pub i64);

impl std::fmt::Display for LeadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<i64> for LeadId {
    fn from(id: i64) -> Self {
        Self(id)
    }
}

/// One job per lead: "bring this lead's insight up to date". The payload carries only the id;
/// the handler loads the current conversation, so a job enqueued long ago never works on stale
/// data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsightJob {
    pub lead_id: i64,
}

impl InsightJob {
    pub fn new(lead_id: i64) -> Self {
        Self { lead_id }
    }

    /// Dedupe key for the queue: one live job per lead.
    pub fn dedupe_key(&self) -> String {
        format!("lead:{}", self.lead_id)
    }

    pub fn lead(&self) -> LeadId {
        LeadId(self.lead_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_lead_id_is_transparent() {
        let job = InsightJob::new(42);
        let json = serde_json::to_string(&job).unwrap();
        assert_eq!(json, r#"{"lead_id":42}"#);
        assert_eq!(serde_json::from_str::<InsightJob>(&json).unwrap(), job);
        assert_eq!(serde_json::to_string(&LeadId(7)).unwrap(), "7");
        assert!(serde_json::from_str::<InsightJob>(r#"{"lead":1}"#).is_err());
    }
}
