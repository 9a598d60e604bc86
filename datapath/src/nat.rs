//! nat: not built yet (see the issue tracker).
