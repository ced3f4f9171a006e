//! insights-llm (skeleton).
