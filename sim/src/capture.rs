//! Captures: not built yet.
