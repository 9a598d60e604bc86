//! Placeholder replaced by the engine benchmark below.
fn main() {}
