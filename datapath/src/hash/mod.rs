//! Hashing, in one place: which hash a table uses is a security decision.
//!
//! **The rule.** A table whose keys come from packets (addresses, ports, flows — fields an
//! attacker chooses) must use the keyed hash: [`keyed::KeyedState`] for a `HashMap`,
//! [`keyed::keyed_hash`] for a bucketed table, keyed from the run's seed. Without the key,
//! an attacker can pick keys that collide and make every lookup walk one long chain. The
//! unkeyed [`fast::FastBuild`] is only for maps whose keys come from the configuration
//! (context selectors, services), never for packet-keyed tables.
//!
//! - [`siphash`] — the SipRound and a one-pass SipHash-1-3 ([`siphash::siphash13`]), also
//!   used by SYN cookies and the simulator's receive-queue hash.
//! - [`keyed`] — keyed SipHash-1-3 for packet-keyed tables, seeded per run.
//! - [`fast`] — the FxHash-style multiply mix for configuration-keyed maps.
//!
//! IPVS's own scheduler hashes (`hash_32`, `hsiphash`) reproduce the kernel bit for bit and
//! live with the schedulers ([`crate::director::hash`]).

pub mod fast;
pub mod keyed;
pub mod siphash;
