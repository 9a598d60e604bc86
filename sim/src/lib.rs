//! # sim — the lbsim command and its library
//!
//! Drives the [`datapath`] pipeline: reads captures, runs them through the pipeline in
//! virtual time, and reports what happened.
//!
//! ## Map of the code
//! - [`appliance`] — the appliance file (`flows`, `[shield]`, `[[director]]`) → a pipeline.
//! - [`capture`] — streaming pcap / pcapng / gzip reader: format by magic number, errors
//!   with file, packet index and byte offset.
//! - [`replay`] — `sim replay`: parse every packet of one or more captures, summarise, and
//!   write per-packet JSON records.
//! - [`flows_cli`] — `sim flows check|compile|eval`: lint, compile and evaluate flowmgr
//!   files, errors rendered rustc-style.
//! - [`director_cli`] — `sim director which`: which real server a new connection gets.
//! - [`kernel`] — the kernel runner: netns + veth topology, rules from the same tables,
//!   AF_PACKET injection and observation, `sim kernel ...` and the `sim diff` verdict diff.
//! - [`inline`] — `sim inline`: the lbsim pipeline in real time between two veths, with
//!   real client and backend namespaces (curl, ping) on either side.
//! - [`plan`] — `sim plan`: sweep a scenario's load and settings, measure per-packet cost,
//!   and report the cores, memory and first broken constraint (plan.json/md/html).
//! - [`fuzzing`] — the bodies of the fuzz targets (cargo-fuzz in `fuzz/`, replayed as tests).
//! - [`check`] — `sim check`: the regression corpus (captures + appliance + expected
//!   results), run in parallel, with diffs, `--bless` and JUnit output.
//! - [`generate`] — `sim gen`: deterministic synthetic captures (floods, conversations,
//!   malformed packets, damaged files).
//! - [`report_html`] — `report.html` of `sim run`: the report with inline SVG plots.
//! - [`record`] — the per-packet record (the common currency of replay, run and diff).
//! - [`bench`] — `sim bench`: the benchmark workloads end to end (ns/packet, Mpps, targets,
//!   lbsim vs kernel and 2 vs 1 threads), and the callgrind instruction-count baseline.
//! - [`tui`] — `sim tui` and `sim run --tui`: the live terminal UI (ratatui) over a model
//!   fed by an engine observer or a finished run's `report.json`.

pub mod appliance;
pub mod bench;
pub mod capture;
pub mod check;
pub mod director_cli;
pub mod engine;
pub mod flows_cli;
pub mod fuzzing;
pub mod generate;
pub mod inline;
pub mod kernel;
pub mod plan;
pub mod record;
pub mod replay;
pub mod report;
pub mod report_html;
pub mod run;
pub mod scenario;
pub mod traffic;
pub mod tui;
