//! flows: not built yet (see the issue tracker).
