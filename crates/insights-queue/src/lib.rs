//! insights-queue (skeleton).
