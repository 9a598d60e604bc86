//! The simulated network: the resolved topology ([`world`]: hosts, addresses, routing, the
//! receive-queue hash), the links between hosts and the appliance ([`link`]), the seeded
//! random streams ([`rng`]) and the smoltcp host glue ([`stack`]).
//!
//! Not here: what hosts do (see [`crate::actors`]) and the event loop (see [`crate::engine`]).

pub mod link;
pub mod rng;
pub mod stack;
pub mod world;
