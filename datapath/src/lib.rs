//! # datapath — the L4 load-balancer pipeline
//!
//! The real pipeline of the appliance, in its order: **shield → flows → director/NAT**.
//! Pure code: no I/O, no wall clock, no ambient randomness. Time (`now`, virtual
//! nanoseconds) and randomness (seeds) are passed in, so a run is a deterministic function
//! of (tables, state, time, packets).
//!
//! ## Map of the code (lowest layer first)
//! - [`hash`] — SipHash, the keyed hash packet-keyed tables must use, the fast hash for config keys.
//! - [`packet`] — frames: link/VLAN, the parser and `PacketMeta`, checksums, fragments, `FlowKey`, TCP option walking, in-place rewrites (RFC 1624), a frame builder.
//! - [`verdict`] — `Verdict`, `DropReason`, `Stage`, virtual time: the vocabulary every stage answers in.
//! - [`shield`] — PacketShield: contexts, invalid/deny/allow stages, protection modes, SYN cookies and proxy.
//! - [`flows`] — the flowmgr language: parser, table and evaluator, iptables/nft compilers.
//! - [`director`] — LVS/IPVS: services, the 13 schedulers, persistence, connection table, NAT/DR/TUN forwarding.
//! - [`ip`] — the Linux IP layer: reassembly, the routing decision (martians, rp_filter, multicast/broadcast), forwarding checks (TTL, MTU) and the ICMP errors they send.
//! - [`nat`] — DNAT/SNAT/MASQUERADE rules and their connection tracking ([`nat::conntrack`]).
//! - [`pipeline`] — composes the stages: `Pipeline::process(now, iface, link, frame)` → outcome, emitted frames, counters.

pub mod director;
pub mod flows;
pub mod hash;
pub mod ip;
pub mod nat;
pub mod packet;
pub mod pipeline;
pub mod shield;
pub mod verdict;

pub use packet::{InvalidReason, PacketMeta};
pub use verdict::{DropReason, Stage, TimeNs, Verdict};
