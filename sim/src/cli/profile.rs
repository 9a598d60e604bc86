//! `sim profile`: the CPU model's cost profiles. `calibrate` measures lbsim's own datapath
//! on this machine (the classes `sim plan` calibrates, repeated `--rounds` times) and writes
//! the `lbsim` profile with each path's median and spread; `show` prints a profile (bundled
//! or a file) with every path's cost resolved. The `linux` profile comes from
//! `sim kernel calibrate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;

use crate::cli::plan::calibrate::{Machine, calibrate};
use crate::cli::plan::model::CostClass;
use crate::engine::cpu::{CostProfile, CostTable, PathClass};

/// Arguments of `sim profile`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProfileArgs {
    #[command(subcommand)]
    command: ProfileCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum ProfileCommand {
    /// Measure lbsim's datapath per path on this machine and write the `lbsim` profile.
    #[command(after_help = "Examples:
  sim profile calibrate
  sim profile calibrate --rounds 5 --out sim/profiles/lbsim.toml")]
    Calibrate {
        /// Calibrations (each times every class); the median is kept, the spread reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Where to write the profile.
        #[arg(long, default_value = "reports/calibrate/lbsim.toml")]
        out: PathBuf,
    },
    /// Print a profile (`lbsim`, `linux` or a file) with every path's cost resolved.
    #[command(after_help = "Examples:
  sim profile show lbsim
  sim profile show linux
  sim profile show reports/calibrate/lbsim.toml")]
    Show {
        /// Profile name or file.
        profile: String,
    },
}

/// Median and (max − min) / median of `values`.
fn median_spread(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    let spread = (values[values.len() - 1] - values[0]) / median.max(f64::MIN_POSITIVE);
    (median, spread)
}

/// The `lbsim` profile from `rounds` calibrations.
pub fn lbsim_profile(rounds: usize) -> anyhow::Result<CostProfile> {
    if rounds == 0 {
        bail!("--rounds must be positive");
    }
    let mut samples: BTreeMap<CostClass, Vec<f64>> = BTreeMap::new();
    for _ in 0..rounds {
        for (class, cost) in calibrate()?.classes {
            samples.entry(class).or_default().push(cost.ns_per_packet);
        }
    }
    let mut medians = BTreeMap::new();
    let mut spread = BTreeMap::new();
    for (class, values) in &mut samples {
        let key = match class {
            CostClass::Parse => PathClass::Parse,
            CostClass::ShieldDrop => PathClass::ShieldDrop,
            CostClass::SynCookie => PathClass::SynCookie,
            CostClass::FlowsOnly => PathClass::Flows,
            CostClass::NatEstablished => PathClass::Director,
        };
        let (median, relative) = median_spread(values);
        medians.insert(key, (median * 10.0).round() / 10.0);
        spread.insert(key.name().to_string(), (relative * 1000.0).round() / 1000.0);
    }
    let get = |class| medians.get(&class).copied();
    let machine = Machine::detect();
    Ok(CostProfile {
        name: "lbsim".into(),
        source: format!(
            "sim profile calibrate: {rounds} calibrations (fastest of 7 batches of 4096 packets each), median; {} build on {} ({} CPUs); new_connection and nat not measured (cost as director and parse)",
            machine.profile, machine.cpu_model, machine.nproc
        ),
        spread,
        ns: CostTable {
            parse: get(PathClass::Parse).unwrap_or(1.0),
            shield_drop: get(PathClass::ShieldDrop),
            syn_cookie: get(PathClass::SynCookie),
            flows: get(PathClass::Flows),
            flow_rule: None,
            director: get(PathClass::Director),
            new_connection: None,
            nat: None,
        },
    })
}

/// Run `sim profile`.
pub fn run(args: &ProfileArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ProfileCommand::Calibrate { rounds, out } => {
            let profile = lbsim_profile(*rounds)?;
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(out, toml::to_string(&profile)?)?;
            print!("{}", show(&profile));
            println!("wrote {}", out.display());
        }
        ProfileCommand::Show { profile } => {
            let profile =
                CostProfile::named(profile, Path::new(".")).map_err(anyhow::Error::msg)?;
            print!("{}", show(&profile));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A profile as text: name, source, each path's cost (and spread when measured).
pub fn show(profile: &CostProfile) -> String {
    let mut text = format!("profile {}: {}\n", profile.name, profile.source);
    for (class, ns) in profile.ns.resolved() {
        let spread = profile
            .spread
            .get(class.name())
            .map_or(String::new(), |s| format!(" (spread {:.1}%)", s * 100.0));
        text += &format!("  {:<15} {ns:>9.1} ns{spread}\n", class.name());
    }
    if let Some(rule) = profile.ns.flow_rule {
        text += &format!("  {:<15} {rule:>9.1} ns per rule\n", "flow_rule");
    }
    text
}
