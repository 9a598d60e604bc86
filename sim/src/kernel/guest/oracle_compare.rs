//! Comparing lbsim's and the guest IPVS's records of the same cases, and printing a case as
//! a reproduction (appliance TOML, mark rules, event list).

use std::fmt::Write as _;
use std::path::Path;

use super::boot::Guest;
use super::driver::{KernelRun, run_job};
use super::oracle::{Case, CaseRecord};
use super::oracle_sim::{kernel_state, simulate};

/// Both sides' records of a case and their differences (empty = agreement).
#[derive(Clone, Debug)]
pub struct Verdict {
    /// lbsim's record.
    pub lbsim: CaseRecord,
    /// The guest kernel's record.
    pub kernel: CaseRecord,
    /// One line per difference.
    pub differences: Vec<String>,
    /// Guest milliseconds: setup, packets, dumps.
    pub millis: [u64; 3],
}

/// Run `cases` through lbsim and (in one guest boot) through the guest's IPVS, and compare.
pub fn check_cases(guest: &Guest, sim: &Path, cases: &[Case]) -> anyhow::Result<Vec<Verdict>> {
    let runs = run_job(guest, sim, cases)?;
    cases
        .iter()
        .zip(runs)
        .map(|(case, run)| {
            let millis = run.millis;
            let lbsim = simulate(case)?;
            let (kernel, mut differences) = kernel_record(run)?;
            differences.extend(compare(case, &lbsim, &kernel));
            Ok(Verdict {
                lbsim,
                kernel,
                differences,
                millis,
            })
        })
        .collect()
}

/// The kernel's record of a run (and harness errors as differences).
pub fn kernel_record(run: KernelRun) -> anyhow::Result<(CaseRecord, Vec<String>)> {
    let mut problems = Vec::new();
    if let Some(error) = run.harness_error {
        problems.push(format!("harness: {error}"));
    }
    let mut record = CaseRecord {
        setup_error: run.setup_error,
        packets: run.packets,
        ..CaseRecord::default()
    };
    if record.setup_error.is_none() && !run.dump.is_empty() {
        let (counters, connections) = kernel_state(&run.dump)?;
        record.counters = counters;
        record.connections = connections;
    }
    Ok((record, problems))
}

fn shown(outcome: &super::oracle::PacketOutcome) -> Vec<String> {
    if outcome.sent {
        outcome.forwarded.clone()
    } else {
        vec!["(not sent)".to_string()]
    }
}

fn event_text(case: &Case, n: usize) -> String {
    let event = &case.events[n];
    let conn = &case.conns[event.conn];
    let proto = if conn.proto == 17 { "udp" } else { "tcp" };
    let side = if event.from_client {
        "client"
    } else {
        "server"
    };
    format!(
        "#{n} {side} {:?} conn {} ({proto} {} > {})",
        event.kind, event.conn, conn.client, conn.vip
    )
}

/// The differences between lbsim's and the kernel's records.
pub fn compare(case: &Case, lbsim: &CaseRecord, kernel: &CaseRecord) -> Vec<String> {
    let mut differences = Vec::new();
    match (&lbsim.setup_error, &kernel.setup_error) {
        (Some(_), Some(_)) => return differences,
        (None, None) => {}
        (l, k) => {
            differences.push(format!(
                "setup: lbsim {}, kernel {}",
                l.as_deref()
                    .map_or("accepts".into(), |e| format!("refuses ({e})")),
                k.as_deref()
                    .map_or("accepts".into(), |e| format!("refuses ({e})"))
            ));
            return differences;
        }
    }
    for (n, (l, k)) in lbsim.packets.iter().zip(&kernel.packets).enumerate() {
        let (lf, kf) = (comparable(&l.forwarded), comparable(&k.forwarded));
        if l.sent != k.sent || lf != kf {
            differences.push(format!(
                "packet {}: lbsim {:?}, kernel {:?}",
                event_text(case, n),
                shown(l),
                shown(k),
            ));
        }
    }
    if lbsim.packets.len() != kernel.packets.len() {
        differences.push(format!(
            "packets: lbsim {} kernel {}",
            lbsim.packets.len(),
            kernel.packets.len()
        ));
    }
    let keys: std::collections::BTreeSet<&String> = lbsim
        .counters
        .keys()
        .chain(kernel.counters.keys())
        .collect();
    let revived = revived_reals(case);
    for key in keys {
        let (mut l, mut k) = (
            lbsim.counters.get(key).copied(),
            kernel.counters.get(key).copied(),
        );
        if revived.contains(key) {
            // Linux zeroes or keeps these depending on where the new service struct lands
            // in memory (`__ip_vs_update_dest`'s `old_svc != svc`): only the connection
            // counts are compared.
            for counters in [&mut l, &mut k].into_iter().flatten() {
                counters.stats = [0; 5];
            }
        }
        if l != k {
            differences.push(format!("counters {key}: lbsim {l:?}, kernel {k:?}"));
        }
    }
    let (lc, kc) = (entries(&lbsim.connections), entries(&kernel.connections));
    for line in &lc {
        if !kc.contains(line) {
            differences.push(format!("connection only in lbsim: {line}"));
        }
    }
    for line in &kc {
        if !lc.contains(line) {
            differences.push(format!("connection only in the kernel: {line}"));
        }
    }
    differences
}

/// The counter keys (`SERVICE REAL`) of the real servers of services deleted and added
/// back by the case's edits.
fn revived_reals(case: &Case) -> std::collections::BTreeSet<String> {
    use super::oracle::Change;
    let Ok(configs) = super::oracle::case_directors(case) else {
        return Default::default();
    };
    let directors = case.edits.iter().filter(|e| e.change == Change::AddService);
    directors
        .filter_map(|e| configs.get(e.director)?.build().ok())
        .flat_map(|spec| {
            let name = super::oracle_sim::service_name(&spec.key);
            spec.reals
                .iter()
                .map(|r| format!("{name} {}", r.address))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Forwarded frames as compared: a tunnel's outer source is the kernel's route source
/// address toward the real server (the LB's address on that network), which lbsim does
/// not model (it uses the virtual address), so it is left out.
fn comparable(frames: &[String]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f.strip_prefix("tunnel ") {
            Some(rest) => format!("tunnel * >{}", rest.split_once(" >").map_or("", |(_, r)| r)),
            None => f.clone(),
        })
        .collect()
}

/// Connection lines as compared: templates without their state (the kernel marks a
/// template ASSURED, `IP_VS_CTPL_S_ASSURED`, which lbsim does not keep).
fn entries(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|line| match line.rsplit_once(' ') {
            Some((rest, "NONE" | "ASSURED")) => format!("{rest} template"),
            _ => line.clone(),
        })
        .collect()
}

/// A case as a reproduction: the appliance TOML, the mark rules and the events.
pub fn render_case(case: &Case) -> String {
    let mut text = format!("# appliance\n{}\n", case.appliance.trim());
    for rule in &case.marks {
        let _ = writeln!(
            text,
            "# mark: -p {} -d {} -j MARK --set-mark {}",
            rule.proto, rule.network, rule.mark
        );
    }
    text.push_str("# events\n");
    let commands = super::oracle::edit_commands(case).unwrap_or_default();
    for n in 0..=case.events.len() {
        for (edit, command) in case.edits.iter().zip(&commands) {
            if edit.before == n {
                let command = command.as_deref().unwrap_or("(no such server)");
                let _ = writeln!(text, "ipvsadm {command}   # {:?}", edit.change);
            }
        }
        if n < case.events.len() {
            let _ = writeln!(text, "{}", event_text(case, n));
        }
    }
    text
}

/// Smaller variants of a failing case, most aggressive first: without each director
/// (by index), without each event, without each real server of each director.
pub fn shrink_candidates(case: &Case) -> Vec<Case> {
    let mut candidates = Vec::new();
    if let Ok(table) = case.appliance.parse::<toml_edit::DocumentMut>()
        && let Some(directors) = table.get("director").and_then(|d| d.as_array_of_tables())
    {
        let count = directors.len();
        for skip in 0..count {
            let mut smaller = table.clone();
            if let Some(d) = smaller
                .get_mut("director")
                .and_then(|d| d.as_array_of_tables_mut())
            {
                d.remove(skip);
            }
            candidates.push(Case {
                appliance: smaller.to_string(),
                ..case.clone()
            });
        }
        for index in 0..count {
            let reals = directors
                .get(index)
                .and_then(|d| d.get("real"))
                .and_then(|r| r.as_array())
                .map_or(0, |r| r.len());
            for skip in 0..reals {
                let mut smaller = table.clone();
                if let Some(real) = smaller["director"][index]["real"].as_array_mut() {
                    real.remove(skip);
                }
                candidates.push(Case {
                    appliance: smaller.to_string(),
                    ..case.clone()
                });
            }
        }
    }
    for skip in 0..case.edits.len() {
        let mut smaller = case.clone();
        smaller.edits.remove(skip);
        candidates.push(smaller);
    }
    for skip in (0..case.events.len()).rev() {
        let mut smaller = case.clone();
        smaller.events.remove(skip);
        for edit in &mut smaller.edits {
            if edit.before > skip {
                edit.before -= 1;
            }
        }
        candidates.push(smaller);
    }
    candidates.retain(|c| c != case && edits_apply(c));
    candidates
}

/// Whether every edit of `case` is one `ipvsadm` accepts when it is made (removing an edit
/// can leave, say, a `-A` of a service that was never deleted): no edit of a deleted
/// service but its `-A`, no `-d` of a deleted server, no `-a` of a present one.
fn edits_apply(case: &Case) -> bool {
    use super::oracle::Change;
    let mut gone = std::collections::BTreeSet::new();
    let mut reals_gone = std::collections::BTreeSet::new();
    let mut edits: Vec<_> = case.edits.iter().collect();
    edits.sort_by_key(|e| e.before);
    edits.iter().all(|edit| {
        let d = edit.director;
        match edit.change {
            Change::AddService => {
                reals_gone.retain(|&(director, _)| director != d);
                gone.remove(&d)
            }
            _ if gone.contains(&d) => false,
            Change::DeleteService => gone.insert(d),
            Change::Delete { real } => reals_gone.insert((d, real)),
            Change::Add { real } => reals_gone.remove(&(d, real)),
            Change::Weight { real, .. } => !reals_gone.contains(&(d, real)),
            Change::EditService { .. } => true,
        }
    })
}
