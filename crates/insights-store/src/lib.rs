//! insights-store (skeleton).
