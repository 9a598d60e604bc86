//! conntrack: not built yet (see the issue tracker).
