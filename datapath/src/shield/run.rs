//! [`Run`]: one packet's run through one context — the state the client-side stages
//! ([`super::stages`]) and the SYN proxy's server side ([`super::proxy`]) both work on.

use super::config::{ContextTables, InstanceTables};
use super::{ContextId, State};
use crate::verdict::TimeNs;

/// One packet's run through one context.
pub(crate) struct Run<'a> {
    pub now: TimeNs,
    pub id: ContextId,
    pub instance: &'a InstanceTables,
    pub context: &'a ContextTables,
    pub state: &'a mut State,
    pub ethernet: bool,
}

impl Run<'_> {
    pub(crate) fn context_state(&mut self) -> &mut super::ContextState {
        &mut self.state.contexts[self.id.0 as usize]
    }
}
