//! The `insights` binary.
fn main() {}
