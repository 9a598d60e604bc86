//! `sim completions SHELL` and `sim man`: shell completion scripts and man pages generated
//! from the command-line definition itself (clap_complete, clap_mangen), so they cannot drift.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `sim completions`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  sim completions bash > ~/.local/share/bash-completion/completions/sim
  sim completions zsh > ~/.zfunc/_sim
  sim completions fish > ~/.config/fish/completions/sim.fish")]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    pub shell: clap_complete::Shell,
}

/// Arguments of `sim man`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  sim man | man -l -
  sim man --dir /usr/local/share/man/man1")]
pub struct ManArgs {
    /// Write one page per command (`sim.1`, `sim-run.1`, …) into this directory instead of
    /// printing `sim.1` on stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Writes the completion script for `args.shell` on stdout.
pub fn completions(mut command: clap::Command, args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let name = command.get_name().to_string();
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, name, &mut stdout);
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the man page of `command` on stdout, or every page into `args.dir`.
pub fn man(command: clap::Command, args: &ManArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        clap_mangen::generate_to(command, dir)
            .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&page)?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
