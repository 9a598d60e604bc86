//! # datapath — the L4 load-balancer pipeline
//!
//! The real pipeline of the appliance, in its order: **shield → flows → director/NAT**.
//! Pure code: no I/O, no wall clock, no ambient randomness. Time (`now`, virtual
//! nanoseconds) and randomness (seeds) are passed in, so a run is a deterministic function
//! of (tables, state, time, packets).
//!
//! ## Map of the code
//! - [`packet`] — link types, 802.1Q/802.1ad tags ([`packet::vlan`]), the parser
//!   ([`packet::parse`]) and the compact [`packet::PacketMeta`] it fills once per packet,
//!   with a named [`packet::InvalidReason`] for every malformed case; the fast Internet
//!   checksum ([`packet::checksum`]), the bounded fragment-overlap tracker
//!   ([`packet::fragments`]) and a readable frame builder for fixtures and generators
//!   ([`packet::builder`]).
//! - [`verdict`] — [`verdict::Verdict`], [`verdict::DropReason`], [`verdict::Stage`]:
//!   the one vocabulary every stage answers in.
//! - [`flows`] — the flowmgr language: parser, evaluator, iptables/nft compilers.
//! - [`shield`] — PacketShield: instances and contexts, invalid/deny/allow stages, TCP port
//!   protection, protection modes, Linux-style SYN cookies and the SYN proxy.
//! - [`director`] — LVS/IPVS virtual services, the 13 kernel schedulers, persistence,
//!   the connection table and NAT/DR/TUN forwarding; `ipvsadm`-style listings.
//! - [`nat`], [`conntrack`] — address rewriting and connection tracking for it.
//! - [`siphash`] — the SipRound shared by the hand-unrolled SipHash of SYN cookies and of
//!   the simulator's receive-queue hash.
//! - [`pipeline`] — composes the stages: `Pipeline::process(now, iface, link, frame)` →
//!   [`pipeline::PacketOutcome`], emitted frames, counters per stage and reason.

pub mod conntrack;
pub mod director;
pub mod flows;
pub mod hash;
pub mod nat;
pub mod packet;
pub mod pipeline;
pub mod shield;
pub mod verdict;

pub use packet::{InvalidReason, PacketMeta};
pub use verdict::{DropReason, Stage, TimeNs, Verdict};
