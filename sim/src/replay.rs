//! `sim replay`: not built yet.

use std::process::ExitCode;

/// Arguments of `sim replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Capture files (pcap, pcapng, optionally gzip-compressed).
    pub files: Vec<std::path::PathBuf>,
}

/// Run `sim replay`.
pub fn run(_args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
