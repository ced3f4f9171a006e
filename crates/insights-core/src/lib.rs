//! insights-core (skeleton).
