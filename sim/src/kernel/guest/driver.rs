//! The oracle's guest side: `sim kernel guest-drive --job JOB.json --out OUT.json`, run
//! inside the guest kernel by [`run_job`]'s init script. For each case: run its setup
//! script (namespaces, IPVS services, mark rules), inject its packets with AF_PACKET
//! ([`super::super::wire`]), read what the LB sends until the markers, dump `ipvsadm`'s
//! tables, remove the namespaces. Nothing here compares; the host does.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use pnet_datalink::{DataLinkReceiver, DataLinkSender};
use serde::{Deserialize, Serialize};

use super::boot::{Guest, GuestOutput};
use super::oracle::{
    CONNECTION_LISTINGS, Case, LB_CLIENT_MAC, LB_SERVER_MAC, LB_SYSCTLS, PacketOutcome,
    STATS_LISTING, Setup, event_frame, is_marker, is_noise, marker_frame, nat_target, reuses_tuple,
    setup_script, teardown_batch, wire_text,
};
use crate::kernel::wire::{enter_namespace, open_channel};

/// Cases set up and injected before one wait for the IPVS estimator and the dumps.
const CASES_PER_BATCH: usize = 64;
/// Longer than the IPVS estimator period (2 s).
const STATS_SETTLE: Duration = Duration::from_millis(2600);
/// How long to wait for a marker before giving up on a case.
const MARKER_TIMEOUT: Duration = Duration::from_secs(3);
/// The pause after a SYN that may reuse a closed connection's 5-tuple: longer than a
/// timer tick of the guest (HZ=100), so that the old connection, which `ip_vs_in` only
/// `ip_vs_conn_expire_now`s (its timer fires on the next jiffy), is gone before the next
/// packet, as lbsim has it.
const REUSE_PAUSE: Duration = Duration::from_millis(30);

/// One case of a job: the case and its guest setup script.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobCase {
    /// The case.
    pub case: Case,
    /// [`setup_script`] for it.
    pub setup: Setup,
}

/// What the guest saw for one case.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KernelRun {
    /// The setup script's error output when it failed (e.g. ipvsadm refused a service).
    pub setup_error: Option<String>,
    /// Per packet.
    pub packets: Vec<PacketOutcome>,
    /// `ipvsadm` dump ([`dump_script`]).
    pub dump: String,
    /// A failure of the harness itself (lost marker, socket error).
    pub harness_error: Option<String>,
    /// Milliseconds spent in the guest: setup, injection, dumps.
    pub millis: [u64; 3],
}

/// Boot the guest once and run every case in it. `sim` is the host's `sim` binary (it runs
/// inside the guest unchanged).
pub fn run_job(guest: &Guest, sim: &Path, cases: &[Case]) -> anyhow::Result<Vec<KernelRun>> {
    let job: Vec<JobCase> = cases
        .iter()
        .enumerate()
        .map(|(index, case)| {
            Ok(JobCase {
                case: case.clone(),
                setup: setup_script(case, index)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let job = serde_json::to_vec(&job)?;
    let body = format!(
        "load_modules ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sed ip_vs_nq ip_vs_sh \
         ip_vs_dh ip_vs_mh ip_vs_lblc ip_vs_lblcr ip_vs_fo ip_vs_ovf veth ipip ip6_tunnel \
         ip_tables iptable_mangle ip6_tables ip6table_mangle xt_mark xt_tcpudp || exit 3\n\
         {} kernel guest-drive --job \"$IN/job.json\" --out \"$OUT/result.json\"\n",
        sim.display()
    );
    let output: GuestOutput = guest.run_with_inputs(&body, &[("job.json", &job)])?;
    let Some(result) = output.file("result.json") else {
        bail!(
            "the guest driver left no result (status {}):\n{}\n{}",
            output.status,
            output.stderr,
            output.stdout
        );
    };
    let runs: Vec<KernelRun> = serde_json::from_str(result)?;
    if runs.len() != cases.len() {
        bail!(
            "the guest driver ran {} of {} cases",
            runs.len(),
            cases.len()
        );
    }
    Ok(runs)
}

/// `sim kernel guest-drive`: run a job file's cases here (inside the guest), in batches:
/// set up and inject each case of a batch, wait for the IPVS estimator, dump and remove
/// the batch's namespaces.
pub fn drive(job: &Path, out: &Path) -> anyhow::Result<()> {
    let text = std::fs::read(job).with_context(|| format!("reading {}", job.display()))?;
    let cases: Vec<JobCase> = serde_json::from_slice(&text)?;
    let mut runs = Vec::with_capacity(cases.len());
    for (batch_number, batch) in cases.chunks(CASES_PER_BATCH).enumerate() {
        let first = batch_number * CASES_PER_BATCH;
        let mut batch_runs: Vec<KernelRun> = batch
            .iter()
            .enumerate()
            .map(|(offset, job_case)| run_case(first + offset, job_case.clone()))
            .collect();
        // IPVS 6.1 folds the per-CPU counters into what `--stats` shows only when its
        // estimator timer runs (every 2 s): wait for it once per batch.
        std::thread::sleep(STATS_SETTLE);
        let mut teardown = String::new();
        for (offset, run) in batch_runs.iter_mut().enumerate() {
            if run.setup_error.is_none() {
                let lb = format!("lb{}", first + offset);
                match in_namespace(&lb, || run_tool("ipvsadm", STATS_LISTING, "")) {
                    Ok(stdout) => run.dump.push_str(&stdout),
                    Err(error) => {
                        run.harness_error.get_or_insert(format!("{error:#}"));
                    }
                }
            }
            teardown.push_str(&teardown_batch(first + offset));
        }
        let _ = run_tool("ip", &["-force", "-batch", "-"], &teardown);
        runs.extend(batch_runs);
    }
    std::fs::write(out, serde_json::to_vec(&runs)?)?;
    Ok(())
}

/// Run `program args` with `input` on its stdin; its stdout, or an error with its stderr.
fn run_tool(program: &str, args: &[&str], input: &str) -> anyhow::Result<String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Run `work` on a thread inside network namespace `ns` (processes it starts are there too).
fn in_namespace<T: Send + 'static>(
    ns: &str,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_namespace(&ns)?;
        work()
    })
    .join()
    .map_err(|_| anyhow!("thread in namespace panicked"))?
}

/// Namespaces, LB addresses and sysctls, IPVS services, mark rules.
fn set_up(index: usize, setup: &Setup) -> anyhow::Result<()> {
    run_tool("ip", &["-batch", "-"], &setup.root_batch)?;
    let lb = format!("lb{index}");
    run_tool("ip", &["-n", &lb, "-batch", "-"], &setup.lb_batch)?;
    run_tool(
        "ip",
        &["-n", &format!("e{index}"), "-batch", "-"],
        &setup.ends_batch,
    )?;
    let setup = setup.clone();
    in_namespace(&lb, move || {
        for (key, value) in LB_SYSCTLS {
            std::fs::write(format!("/proc/sys/{key}"), value)
                .with_context(|| format!("sysctl {key}"))?;
        }
        if !setup.iptables.is_empty() {
            run_tool("iptables-legacy-restore", &[], &setup.iptables)?;
        }
        if !setup.ip6tables.is_empty() {
            run_tool("ip6tables-legacy-restore", &[], &setup.ip6tables)?;
        }
        run_tool("ipvsadm", &["-R"], &setup.ipvsadm)?;
        Ok(())
    })
}

/// Set up one case, inject its packets and list its connections (the `--stats` listing
/// and the teardown come later, per batch).
fn run_case(index: usize, job: JobCase) -> KernelRun {
    let mut run = KernelRun::default();
    let started = Instant::now();
    let setup = set_up(index, &job.setup);
    run.millis[0] = started.elapsed().as_millis() as u64;
    if let Err(error) = setup {
        run.setup_error = Some(format!("{error:#}"));
        return run;
    }
    let (case, edits) = (job.case, job.setup.edits);
    match std::thread::spawn(move || inject_case(index, &case, &edits)).join() {
        Ok(Ok(packets)) => run.packets = packets,
        Ok(Err(error)) => run.harness_error = Some(format!("{error:#}")),
        Err(_) => run.harness_error = Some("injection thread panicked".into()),
    }
    run.millis[1] = started.elapsed().as_millis() as u64 - run.millis[0];
    // Connections and their counts now, before CLOSE (10 s) connections expire.
    let dumped = Instant::now();
    let listed = in_namespace(&format!("lb{index}"), || {
        let mut dump = String::new();
        for args in CONNECTION_LISTINGS {
            dump.push_str(&run_tool("ipvsadm", args, "")?);
            dump.push_str("#--\n");
        }
        Ok(dump)
    });
    match listed {
        Ok(dump) => run.dump = dump,
        Err(error) => {
            run.harness_error.get_or_insert(format!("{error:#}"));
        }
    }
    run.millis[2] = dumped.elapsed().as_millis() as u64;
    run
}

type Channel = (Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>);

fn send(channel: &mut Channel, frame: &[u8]) -> anyhow::Result<()> {
    match channel.0.send_to(frame, None) {
        Some(Ok(())) => Ok(()),
        Some(Err(error)) => Err(anyhow!("sending a frame: {error}")),
        None => Err(anyhow!("sending a frame: no buffer")),
    }
}

/// Frames from `lb_mac` until marker `n` (markers and noise left out).
fn read_until_marker(
    channel: &mut Channel,
    lb_mac: [u8; 6],
    n: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let deadline = Instant::now() + MARKER_TIMEOUT;
    let mut frames = Vec::new();
    while Instant::now() < deadline {
        let Ok(frame) = channel.1.next() else {
            continue;
        };
        if frame.get(6..12) != Some(&lb_mac[..]) {
            continue;
        }
        if is_marker(frame, n) {
            return Ok(frames);
        }
        if !is_noise(frame) {
            frames.push(frame.to_vec());
        }
    }
    bail!("marker {n} did not come back within {MARKER_TIMEOUT:?}")
}

/// Run the edits due before event `n` (`ipvsadm -R`, one line each, in the LB's namespace).
fn run_edits(index: usize, edits: &[(usize, String)], n: usize) -> anyhow::Result<()> {
    for (_, line) in edits.iter().filter(|(before, _)| *before == n) {
        let line = format!("{line}\n");
        in_namespace(&format!("lb{index}"), move || {
            run_tool("ipvsadm", &["-R"], &line).map(drop)
        })?;
    }
    Ok(())
}

fn inject_case(
    index: usize,
    case: &Case,
    edits: &[(usize, String)],
) -> anyhow::Result<Vec<PacketOutcome>> {
    let mut client = open_channel(&format!("e{index}"), "c0")?;
    let mut server = open_channel(&format!("e{index}"), "s0")?;
    let mut targets = vec![None; case.conns.len()];
    let mut packets = Vec::with_capacity(case.events.len());
    for (n, event) in case.events.iter().enumerate() {
        run_edits(index, edits, n)?;
        let conn = &case.conns[event.conn];
        let Some(frame) = event_frame(conn, event, targets[event.conn]) else {
            packets.push(PacketOutcome::default());
            continue;
        };
        let sender = if event.from_client {
            &mut client
        } else {
            &mut server
        };
        send(sender, &frame)?;
        send(&mut client, &marker_frame(n, true))?;
        send(&mut server, &marker_frame(n, false))?;
        let at_server = read_until_marker(&mut server, LB_SERVER_MAC, n)?;
        let at_client = read_until_marker(&mut client, LB_CLIENT_MAC, n)?;
        let (far, near) = if event.from_client {
            (at_server, at_client)
        } else {
            (at_client, at_server)
        };
        if event.from_client
            && let Some(first) = far.first()
        {
            targets[event.conn] = nat_target(first, conn);
        }
        let text =
            |frames: &[Vec<u8>]| frames.iter().map(|f| wire_text(f, conn.vip.ip())).collect();
        packets.push(PacketOutcome {
            sent: true,
            forwarded: text(&far),
            answered: text(&near),
        });
        if reuses_tuple(case, n) {
            std::thread::sleep(REUSE_PAUSE);
        }
    }
    run_edits(index, edits, case.events.len())?;
    Ok(packets)
}
