//! The worker crate's error: a configuration problem or a profile the database cannot serve
//! (the CLI exits 2) or a runtime failure (exit 1), each with one-line, secret-free reasons.

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Bad configuration or usage: names the variable or flag and the expected form.
    #[error("{0}")]
    Config(String),
    /// Something failed at run time (database unreachable, bind failed, ...).
    #[error("{0}")]
    Runtime(String),
    /// The profile cannot be used against this database (`insights check`'s errors): one line
    /// per problem; the CLI prints each and exits 2.
    #[error("{}", .0.join("; "))]
    Unusable(Vec<String>),
}

impl WorkerError {
    pub fn is_config(&self) -> bool {
        matches!(self, WorkerError::Config(_) | WorkerError::Unusable(_))
    }
}

impl From<insights_core::ConfigError> for WorkerError {
    fn from(e: insights_core::ConfigError) -> Self {
        WorkerError::Config(e.to_string())
    }
}
