//! `sim import` and `sim export`: production configurations (keepalived.conf, ldirectord.cf,
//! ipvsadm, iptables-save, nft rulesets) to an appliance TOML (+ flowmgr file), and an appliance to the files an
//! operator installs. The conversions live in [`crate::appliance::confio`]; this module
//! reads arguments, writes files and prints warnings.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::appliance::ApplianceConfig;
use crate::appliance::confio::export::{ExportFormat, export};
use crate::appliance::confio::{self, Imported, toml_out};

/// `sim import FILE... [--out DIR|FILE]`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// keepalived.conf, ldirectord.cf, `ipvsadm-save -n` / ipvsadm scripts, iptables-save
    /// files, nft rulesets (text or `nft -j` JSON) (format found from the content), and
    /// optionally one appliance TOML whose tables are kept.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Output: a `.toml` file (flows next to it as `.flowmgr`) or a directory
    /// (`appliance.toml`, `flows.flowmgr`). Without it, the TOML (and flows) go to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `sim export APPLIANCE --to FORMAT`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Appliance file (TOML, or any format `sim import` reads).
    appliance: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    to: ExportFormat,
    /// Write to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Run `sim import`.
pub fn run_import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let (toml_files, production): (Vec<PathBuf>, Vec<PathBuf>) =
        args.files.iter().cloned().partition(|path| {
            std::fs::read_to_string(path).is_ok_and(|t| confio::detect(&t) == confio::Format::Toml)
        });
    let mut imported = confio::import_files(&production)?;
    if let [base] = &toml_files[..] {
        merge_base(&mut imported, base)?;
    } else if toml_files.len() > 1 {
        anyhow::bail!("at most one appliance TOML can be the base of an import");
    }
    confio::finish(&mut imported);
    eprint!("{}", imported.render_warnings());
    let flows = imported.flows();
    let (toml_path, flows_path) = outputs(args.out.as_deref());
    let flows_name = flows.as_ref().map(|_| {
        flows_path
            .as_ref()
            .and_then(|p| p.file_name())
            .map_or("imported.flowmgr".into(), |n| {
                n.to_string_lossy().into_owned()
            })
    });
    let text = toml_out::render(&imported, flows_name.as_deref());
    match toml_path {
        Some(path) => {
            std::fs::write(&path, &text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
            if let (Some(flows), Some(path)) = (&flows, &flows_path) {
                std::fs::write(path, flows)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        None => {
            print!("{text}");
            if let Some(flows) = &flows {
                println!("\n# ---- imported.flowmgr ----");
                for line in flows.lines() {
                    println!("# {line}");
                }
            }
        }
    }
    eprintln!("{}", summary(&imported));
    Ok(ExitCode::SUCCESS)
}

fn summary(imported: &Imported) -> String {
    format!(
        "imported {} director(s), {} nat rule(s), {} flow(s), {} health check(s), {} vrrp instance(s); {} warning(s)",
        imported.config.director.len(),
        imported.config.nat.len(),
        imported.flow_rules.len(),
        imported.checks.len(),
        imported.vrrp.len(),
        imported.warnings.len()
    )
}

fn outputs(out: Option<&Path>) -> (Option<PathBuf>, Option<PathBuf>) {
    match out {
        None => (None, None),
        Some(path) if path.extension().is_some_and(|e| e == "toml") => (
            Some(path.to_path_buf()),
            Some(path.with_extension("flowmgr")),
        ),
        Some(dir) => {
            let _ = std::fs::create_dir_all(dir);
            (
                Some(dir.join("appliance.toml")),
                Some(dir.join("flows.flowmgr")),
            )
        }
    }
}

/// Keep an appliance TOML's `[shield]`, `[interfaces]`, directors and NAT rules.
fn merge_base(imported: &mut Imported, base: &Path) -> anyhow::Result<()> {
    let config = ApplianceConfig::load(base)?;
    if config.flows.is_some() {
        anyhow::bail!(
            "{}: a base appliance with its own `flows` cannot be merged with imported flows",
            base.display()
        );
    }
    if config.shield.is_some() {
        imported.warn(
            &base.display().to_string(),
            1,
            "[shield]",
            "the base's [shield] is not written by sim import: copy it by hand",
        );
    }
    imported.config.interfaces.extend(config.interfaces);
    imported.config.director.extend(config.director);
    imported.config.nat.extend(config.nat);
    imported
        .files
        .push((base.display().to_string(), confio::Format::Toml));
    Ok(())
}

/// Run `sim export`.
pub fn run_export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let config = ApplianceConfig::load(&args.appliance)?;
    let base = args.appliance.parent().unwrap_or(Path::new("."));
    let exported = export(&config, base, args.to)?;
    for note in &exported.notes {
        eprintln!("note: {note}");
    }
    match &args.out {
        Some(path) => std::fs::write(path, &exported.text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => print!("{}", exported.text),
    }
    Ok(ExitCode::SUCCESS)
}
