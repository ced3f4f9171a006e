//! insights-bench (skeleton).
