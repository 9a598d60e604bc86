//! # sim — the lbsim command and its library
//!
//! Drives the [`datapath`] pipeline: reads captures, runs them through the pipeline in
//! virtual time, and reports what happened.
//!
//! ## Map of the code (lowest layer first; a module only uses the ones above it)
//! - [`stats`] — latency percentiles and the machine a cost was measured on (every layer uses them).
//! - [`capture`] — streaming pcap / pcapng / gzip reader, errors located by packet and offset.
//! - [`diagnostics`] — located errors: one type, TOML key spans, one rustc-style renderer.
//! - [`svg`] — SVG charts (plotters) and HTML escaping for report.html and plan.html.
//! - [`appliance`] — the appliance file (`flows`, `[shield]`, `[[director]]`) → a pipeline.
//! - [`scenario`] — scenario files: units, parsing, validation (destinations included).
//! - [`net`] — the simulated network: world (hosts, routing), links, rng streams, smoltcp glue.
//! - [`actors`] — everything the engine drives: traffic sources and backends.
//! - [`engine`] — the discrete-event engine of one shard: event queue, series, results.
//! - [`record`] — the per-packet record (the common currency of replay, run and diff).
//! - [`report`] — the deterministic report of a run (JSON, markdown) and its wall-clock part.
//! - [`report_html`] — `report.html` of `sim run`: the report with inline SVG plots.
//! - [`run`] — run a loaded scenario's shards in parallel and merge them; summary and writers.
//! - [`kernel`] — the kernel runner (netns, rules, AF_PACKET), `sim kernel …` and `sim diff`.
//! - [`fuzzing`] — the bodies of the fuzz targets (cargo-fuzz in `fuzz/`, replayed as tests).
//! - [`cli`] — the subcommand front-ends (run, replay, flows, director, plan, tui, check, …).
//!
//! The datapath crate's own map is in `datapath/src/lib.rs`. `tests/layers.rs` fails on any
//! import cycle between modules.

pub mod stats;

pub mod capture;

pub mod diagnostics;

pub mod svg;

pub mod appliance;

pub mod scenario;

pub mod net;

pub mod actors;

pub mod engine;

pub mod record;

pub mod report;

pub mod report_html;

pub mod run;

pub mod kernel;

pub mod fuzzing;

pub mod cli;
