//! The insights-bench binary.
fn main() {}
