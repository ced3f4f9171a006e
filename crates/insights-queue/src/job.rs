//! Job values seen by producers and the operations API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A job to enqueue. Lower `priority` runs first (default 0).
#[derive(Debug, Clone)]
pub struct NewJob<T> {
    pub payload: T,
    /// Unique among the queue's non-terminal jobs; `None`: never deduplicated.
    pub dedupe_key: Option<String>,
    pub priority: i16,
    /// Not before this time; `None`: now.
    pub run_at: Option<DateTime<Utc>>,
    /// `None`: [`crate::QueueConfig::default_max_attempts`].
    pub max_attempts: Option<i32>,
}

impl<T> NewJob<T> {
    pub fn new(payload: T) -> Self {
        Self {
            payload,
            dedupe_key: None,
            priority: 0,
            run_at: None,
            max_attempts: None,
        }
    }

    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }
}

/// What a push did: rows inserted, and jobs skipped because a non-terminal job with the same
/// dedupe key exists (including duplicates within the same batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushOutcome {
    pub inserted: u64,
    pub duplicates: u64,
}

/// A job's state. Terminal: completed, discarded, cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Available,
    Scheduled,
    Running,
    Retryable,
    Completed,
    Discarded,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        Self::Available,
        Self::Scheduled,
        Self::Running,
        Self::Retryable,
        Self::Completed,
        Self::Discarded,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Retryable => "retryable",
            Self::Completed => "completed",
            Self::Discarded => "discarded",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Discarded | Self::Cancelled)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

/// Number of jobs per state in one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    pub available: u64,
    pub scheduled: u64,
    pub running: u64,
    pub retryable: u64,
    pub completed: u64,
    pub discarded: u64,
    pub cancelled: u64,
}

impl StateCounts {
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Available => self.available,
            JobState::Scheduled => self.scheduled,
            JobState::Running => self.running,
            JobState::Retryable => self.retryable,
            JobState::Completed => self.completed,
            JobState::Discarded => self.discarded,
            JobState::Cancelled => self.cancelled,
        }
    }

    pub(crate) fn set(&mut self, state: JobState, n: u64) {
        match state {
            JobState::Available => self.available = n,
            JobState::Scheduled => self.scheduled = n,
            JobState::Running => self.running = n,
            JobState::Retryable => self.retryable = n,
            JobState::Completed => self.completed = n,
            JobState::Discarded => self.discarded = n,
            JobState::Cancelled => self.cancelled = n,
        }
    }

    pub fn total(&self) -> u64 {
        JobState::ALL.into_iter().map(|s| self.get(s)).sum()
    }
}

/// One recorded failure of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub error: String,
}

/// A row of a job listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: i64,
    pub queue: String,
    pub state: JobState,
    pub attempt: i32,
    pub max_attempts: i32,
    pub priority: i16,
    pub dedupe_key: Option<String>,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// Everything about one job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobDetail {
    pub id: i64,
    pub queue: String,
    pub state: JobState,
    pub payload: serde_json::Value,
    pub attempt: i32,
    pub max_attempts: i32,
    pub priority: i16,
    pub dedupe_key: Option<String>,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub locked_by: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// Oldest first; at most [`crate::defaults::ERRORS_KEPT`].
    pub errors: Vec<JobError>,
}
