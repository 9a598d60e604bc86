//! Records: not built yet.
