//! The subcommand front-ends of the `sim` command: each parses its arguments and drives the
//! layers below (scenario, engine, run, report, kernel runner).
//!
//! - [`run`] — `sim run` (`--tui` dispatched here to [`tui`]).
//! - [`replay`] — `sim replay`: parse captures, summarise, per-packet JSON records.
//! - [`flows`] — `sim flows check|compile|eval`: flowmgr files, errors rendered rustc-style.
//! - [`director`] — `sim director which`: which real server a new connection gets.
//! - [`inline`] — `sim inline`: the pipeline in real time between two veths.
//! - [`plan`] — `sim plan`: capacity planning sweeps (plan.json/md/html).
//! - [`tui`] — `sim tui` and `sim run --tui`: the live terminal UI.
//! - [`check`] — `sim check`: the regression corpus, `--bless`, JUnit output.
//! - [`shard`] — `--partition K/N` for `sim plan` / `sim check`, shard files, their merge.
//! - [`confio`] — `sim import` / `sim export`: keepalived, ipvsadm, iptables, nft.
//! - [`generate`] — `sim gen`: deterministic synthetic captures.
//! - [`docs`] — `sim completions SHELL` and `sim man`: generated from the CLI definition.
//! - [`bench`](mod@bench) — `sim bench`: benchmark workloads and the callgrind baseline.
//!
//! `sim kernel` and `sim diff` live with the kernel runner ([`crate::kernel`]).

pub mod bench;
pub mod check;
pub mod confio;
pub mod director;
pub mod docs;
pub mod flows;
pub mod generate;
pub mod inline;
pub mod plan;
pub mod replay;
pub mod run;
pub mod shard;
pub mod tui;
