//! The kernel side of the FTP comparison (see [`super::ftp`]): the guest kernel with
//! `ip_vs_ftp ports=21` loaded, `nf_conntrack` and `net.ipv4.vs.conntrack=1` in the LB's
//! namespace (the helper mangles replies through conntrack's `nf_nat_mangle_tcp_packet`
//! and adjusts sequence numbers with conntrack's seqadj: without a conntrack entry
//! nothing is rewritten), and the script's director as `ipvsadm` makes it.
//!
//! [`run_in_guest`] boots the guest with a body that loads the modules and runs this
//! `sim` binary's hidden `sim kernel guest-ftp --out FILE`; [`drive`] (inside) builds the
//! namespaces of the director oracle (`lb0`, `e0` with `c0` / `s0`: see
//! [`super::oracle::setup_script`]) and plays the script through [`KernelWire`]: each
//! segment is injected with AF_PACKET, then a marker datagram in each direction; what the
//! LB sent on the far side before the marker is what it forwarded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use pnet_datalink::{DataLinkReceiver, DataLinkSender};
use serde::{Deserialize, Serialize};

use super::boot::Guest;
use super::ftp::{FtpRecord, Service, Wire, play, script};
use super::oracle::{
    Case, LB_CLIENT_MAC, LB_SERVER_MAC, LB_SYSCTLS, is_marker, is_noise, marker_frame, setup_script,
};
use crate::kernel::wire::{enter_namespace, open_channel};

/// Modules of the run; `ip_vs_ftp` comes after them, with its `ports` argument.
const MODULES: &[&str] = &[
    "ip_tables",
    "iptable_mangle",
    "xt_mark",
    "xt_tcpudp",
    "ipv6",
    "veth",
    "af_packet",
    "nf_conntrack",
    "nf_nat",
    "ip_vs",
    "ip_vs_rr",
];
/// The helper's module arguments.
pub const FTP_MODULE: &str = "ip_vs_ftp ports=21";
/// How long to wait for a marker.
const MARKER_TIMEOUT: Duration = Duration::from_secs(3);

/// What the guest sends back.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FtpGuestResult {
    /// The guest's `uname -r`.
    pub release: String,
    /// The script as the kernel forwarded it.
    pub record: FtpRecord,
    /// `ipvsadm -Lcn` at the end.
    pub connections: String,
    /// `/sys/module/ip_vs_ftp/parameters/ports`: the helper really loaded with them.
    pub ports: String,
    /// The LB namespace's conntrack table at the end (`/proc/net/nf_conntrack`).
    pub conntrack: String,
}

/// Host side: boot the guest, play the script through its IPVS, return what it saw.
pub fn run_in_guest(guest: &Guest, sim: &Path, service: Service) -> anyhow::Result<FtpGuestResult> {
    let fwmark = if service == Service::Fwmark {
        " --fwmark"
    } else {
        ""
    };
    let body = format!(
        "load_modules {} || exit 3\n\
         modprobe -d \"$MODDIR\" {FTP_MODULE} || exit 4\n\
         exec {} kernel guest-ftp{fwmark} --out \"$OUT/result.json\"\n",
        MODULES.join(" "),
        sim.display()
    );
    let output = guest.run(&body)?;
    let Some(text) = output.file("result.json").filter(|_| output.status == 0) else {
        bail!(
            "the guest FTP run failed (status {}): {}\n{}",
            output.status,
            output.stderr.trim(),
            output.stdout.trim()
        );
    };
    serde_json::from_str(text).context("reading the guest's FTP result")
}

/// Guest side (`sim kernel guest-ftp`): set up, play, list, write `out`.
pub fn drive(out: &Path, service: Service) -> anyhow::Result<()> {
    let case = Case {
        appliance: service.appliance().to_string(),
        marks: service.marks(),
        conns: Vec::new(),
        events: Vec::new(),
        edits: Vec::new(),
    };
    let setup = setup_script(&case, 0)?;
    run_tool("ip", &["-batch", "-"], &setup.root_batch)?;
    run_tool("ip", &["-n", "lb0", "-batch", "-"], &setup.lb_batch)?;
    run_tool("ip", &["-n", "e0", "-batch", "-"], &setup.ends_batch)?;
    let (ipvsadm, iptables) = (setup.ipvsadm.clone(), setup.iptables.clone());
    in_namespace("lb0", move || {
        for (key, value) in LB_SYSCTLS
            .iter()
            .copied()
            .chain([("net/ipv4/vs/conntrack", "1")])
        {
            std::fs::write(format!("/proc/sys/{key}"), value)
                .with_context(|| format!("sysctl {key}"))?;
        }
        if !iptables.is_empty() {
            run_tool("iptables-legacy-restore", &[], &iptables)?;
        }
        run_tool("ipvsadm", &["-R"], &ipvsadm).map(drop)
    })?;
    let record = std::thread::spawn(|| -> anyhow::Result<FtpRecord> {
        let mut wire = KernelWire {
            client: open_channel("e0", "c0")?,
            server: open_channel("e0", "s0")?,
            markers: 0,
        };
        play(&script(), &mut wire)
    })
    .join()
    .map_err(|_| anyhow!("the FTP injection thread panicked"))??;
    let connections = in_namespace("lb0", || run_tool("ipvsadm", &["-Lcn"], ""))?;
    let conntrack = in_namespace("lb0", || {
        Ok(std::fs::read_to_string("/proc/net/nf_conntrack").unwrap_or_default())
    })?;
    let result = FtpGuestResult {
        release: std::fs::read_to_string("/proc/sys/kernel/osrelease")?
            .trim()
            .to_string(),
        record,
        connections,
        conntrack,
        ports: std::fs::read_to_string("/sys/module/ip_vs_ftp/parameters/ports")
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    std::fs::write(out, serde_json::to_vec(&result)?)
        .with_context(|| format!("writing {}", out.display()))
}

type Channel = (Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>);

/// The guest kernel's director, reached through the ends' veths.
pub struct KernelWire {
    client: Channel,
    server: Channel,
    markers: usize,
}

impl Wire for KernelWire {
    fn exchange(&mut self, frame: Vec<u8>, from_client: bool) -> anyhow::Result<Vec<Vec<u8>>> {
        let n = self.markers;
        self.markers += 1;
        send(
            if from_client {
                &mut self.client
            } else {
                &mut self.server
            },
            &frame,
        )?;
        send(&mut self.client, &marker_frame(n, true))?;
        send(&mut self.server, &marker_frame(n, false))?;
        let at_server = read_until_marker(&mut self.server, LB_SERVER_MAC, n)?;
        let at_client = read_until_marker(&mut self.client, LB_CLIENT_MAC, n)?;
        Ok(if from_client { at_server } else { at_client })
    }
}

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

fn run_tool(program: &str, args: &[&str], input: &str) -> anyhow::Result<String> {
    use std::io::Write;
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
