//! insights-worker (skeleton).
