//! The lab's namespaces: `lbsim-<pid>-inline<n>-cli` (the client host), `…-lb` (only the two
//! veths lbsim reads and writes with AF_PACKET; no addresses, so the kernel there routes
//! nothing) and `…-srv` (every backend address on one veth). Checksum offload is off on
//! every veth so frames carry complete checksums (the pipeline verifies them, and a veth
//! has no wire to compute them on); IPv6 is off so only the lab's traffic flows.
//!
//! [`LabNamespaces`] is a guard: dropping it deletes the namespaces (and with them the
//! veths). The names follow the kernel runner's `lbsim-<pid>-…` scheme, so `sim kernel
//! cleanup` removes what a killed lab left. Nothing is created in the host namespace.
//!
//! Not here: the addressing plan (`plan`), packet I/O (`io`), the HTTP servers (`server`).

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

use super::plan::LabPlan;
use crate::kernel::topology::{NAMESPACE_PREFIX, mac_text, remove_prefix, run_command};

/// Client veth in the client namespace.
pub const CLIENT_IFACE: &str = "cli";
/// The lab's client-side veth (in the LB namespace).
pub const LAB_CLIENT_IFACE: &str = "lbc";
/// The lab's backend-side veth (in the LB namespace).
pub const LAB_BACKEND_IFACE: &str = "lbs";
/// Backend veth in the backend namespace.
pub const BACKEND_IFACE: &str = "srv";
/// MTU of the lab's veths (a plain Ethernet hop).
pub const LAB_MTU: u32 = 1500;

/// MACs: client host, lab client side, lab backend side, backend host.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x6c, 0x62, 0x01, 0x00, 0x01];
/// The lab's MAC on the client side.
pub const LAB_CLIENT_MAC: [u8; 6] = [0x02, 0x6c, 0x62, 0x01, 0x00, 0x02];
/// The lab's MAC on the backend side.
pub const LAB_BACKEND_MAC: [u8; 6] = [0x02, 0x6c, 0x62, 0x01, 0x00, 0x03];
/// The backend namespace's MAC.
pub const BACKEND_MAC: [u8; 6] = [0x02, 0x6c, 0x62, 0x01, 0x00, 0x04];

/// The lab's namespaces; dropping this deletes them.
#[derive(Debug)]
pub struct LabNamespaces {
    prefix: String,
}

/// Fail clearly when the lab cannot run here: not root, no namespaces, no `ip`/`ethtool`.
pub fn check_environment() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the inline lab needs root (network namespaces, veths, AF_PACKET); run as root");
    }
    if !std::path::Path::new("/proc/self/ns/net").exists() {
        bail!("network namespaces are not available (no /proc/self/ns/net)");
    }
    run_command("ip", &["netns", "list"], None)
        .context("`ip netns` is unavailable (install iproute2)")?;
    run_command("ethtool", &["--version"], None)
        .context("`ethtool` is needed to switch veth checksum offload off (install ethtool)")?;
    Ok(())
}

impl LabNamespaces {
    /// Create the namespaces, veths, addresses and routes of `plan`. On error, what was
    /// made so far is removed.
    pub fn create(plan: &LabPlan) -> anyhow::Result<Self> {
        check_environment()?;
        static NEXT_LAB: AtomicU32 = AtomicU32::new(0);
        let run = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let lab = Self {
            prefix: format!("{NAMESPACE_PREFIX}{}-inline{run}", std::process::id()),
        };
        lab.build(plan)
            .with_context(|| format!("creating the inline lab {}", lab.prefix))?;
        Ok(lab)
    }

    /// The run prefix (`lbsim-<pid>-inline<n>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The client namespace.
    pub fn client_ns(&self) -> String {
        format!("{}-cli", self.prefix)
    }

    /// The namespace holding the lab's two veths.
    pub fn lab_ns(&self) -> String {
        format!("{}-lb", self.prefix)
    }

    /// The backend namespace.
    pub fn backend_ns(&self) -> String {
        format!("{}-srv", self.prefix)
    }

    /// All three, client first.
    pub fn namespaces(&self) -> [String; 3] {
        [self.client_ns(), self.lab_ns(), self.backend_ns()]
    }

    fn exec(&self, ns: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(args);
        run_command("ip", &full, None)
    }

    fn build(&self, plan: &LabPlan) -> anyhow::Result<()> {
        for ns in self.namespaces() {
            run_command("ip", &["netns", "add", &ns], None)?;
            for setting in [
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ] {
                self.exec(&ns, &["sysctl", "-qw", setting])?;
            }
            self.exec(&ns, &["ip", "link", "set", "lo", "up"])?;
        }
        let (cli, lab, srv) = (self.client_ns(), self.lab_ns(), self.backend_ns());
        self.veth(&lab, LAB_CLIENT_IFACE, &cli, CLIENT_IFACE)?;
        self.veth(&lab, LAB_BACKEND_IFACE, &srv, BACKEND_IFACE)?;
        self.link_up(&cli, CLIENT_IFACE, CLIENT_MAC)?;
        self.link_up(&lab, LAB_CLIENT_IFACE, LAB_CLIENT_MAC)?;
        self.link_up(&lab, LAB_BACKEND_IFACE, LAB_BACKEND_MAC)?;
        self.link_up(&srv, BACKEND_IFACE, BACKEND_MAC)?;
        self.addresses(plan)
    }

    fn veth(&self, ns: &str, name: &str, peer_ns: &str, peer: &str) -> anyhow::Result<()> {
        let mtu = LAB_MTU.to_string();
        let args = [
            "ip", "link", "add", name, "mtu", &mtu, "type", "veth", "peer", "name", peer, "mtu",
            &mtu, "netns", peer_ns,
        ];
        self.exec(ns, &args).map(drop)
    }

    fn link_up(&self, ns: &str, name: &str, mac: [u8; 6]) -> anyhow::Result<()> {
        self.exec(ns, &["ip", "link", "set", name, "address", &mac_text(mac)])?;
        // Complete checksums in software, one frame per packet (no TSO/GSO/GRO batches).
        let offloads = [
            "-K", name, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
        ];
        self.exec(ns, &[&["ethtool"][..], &offloads[..]].concat())?;
        self.exec(ns, &["ip", "link", "set", name, "up"]).map(drop)
    }

    fn addresses(&self, plan: &LabPlan) -> anyhow::Result<()> {
        let (cli, srv) = (self.client_ns(), self.backend_ns());
        for client in &plan.clients {
            let address = client.address.to_string();
            self.exec(&cli, &["ip", "addr", "add", &address, "dev", CLIENT_IFACE])?;
        }
        if let Some(first) = plan.clients.first() {
            let gateway = first.gateway.to_string();
            self.exec(&cli, &["ip", "route", "add", "default", "via", &gateway])?;
        }
        for address in plan.backend_addresses() {
            let address = format!("{address}/32");
            self.exec(&srv, &["ip", "addr", "add", &address, "dev", BACKEND_IFACE])?;
        }
        let gateway = plan.backend_gateway.to_string();
        let route = [
            "ip",
            "route",
            "add",
            "default",
            "via",
            &gateway,
            "dev",
            BACKEND_IFACE,
            "onlink",
        ];
        self.exec(&srv, &route).map(drop)
    }
}

impl Drop for LabNamespaces {
    fn drop(&mut self) {
        remove_prefix(&self.prefix);
    }
}
