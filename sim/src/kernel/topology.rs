//! The kernel-side topology: three network namespaces (`<prefix>-cli`, `<prefix>-lb`,
//! `<prefix>-srv`) joined by two veth pairs, with IPv4 and IPv6 addresses, static neighbours, routes and
//! forwarding on in the load-balancer namespace, and an nft netdev table that clears the
//! 802.1Q tag of frames entering the LB after the shield saw it ([`vlan_nft`]: this kernel
//! has no VLAN sub-interfaces).
//!
//! Everything is created *inside* namespaces this module made (veths are created in the LB
//! namespace with their peer placed straight into the other namespace), so the host
//! namespace's links, addresses and rules are never touched. A [`Topology`] is a guard: its
//! `Drop` deletes the namespaces (which deletes their veths and rules). Ctrl-C / SIGTERM
//! delete every live topology of this process before exiting ([`install_signal_cleanup`]),
//! and [`cleanup_leftovers`] removes namespaces of processes that died (`sim kernel cleanup`).
//! Deleting a namespace first kills any process left inside it ([`delete_namespace`]).
//!
//! Not here: rules (see `rules`) and packet I/O (see `wire`).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

use super::backend::Backend;

/// Every namespace this tool creates starts with this.
pub const NAMESPACE_PREFIX: &str = "lbsim-";
/// MTU of every veth (large enough for jumbo frames from captures).
pub const VETH_MTU: u32 = 9000;

/// Client-side veth in the client namespace.
pub const CLIENT_IFACE: &str = "cli";
/// Client-side veth in the LB namespace (the shield's ingress interface).
pub const LB_CLIENT_IFACE: &str = "lbc";
/// Server-side veth in the LB namespace.
pub const LB_SERVER_IFACE: &str = "lbs";
/// Server-side veth in the server namespace.
pub const SERVER_IFACE: &str = "srv";

/// MAC of the client veth.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x6c, 0x62, 0x00, 0x00, 0x01];
/// MAC of the LB's client-side veth.
pub const LB_CLIENT_MAC: [u8; 6] = [0x02, 0x6c, 0x62, 0x00, 0x00, 0x02];
/// MAC of the LB's server-side veth.
pub const LB_SERVER_MAC: [u8; 6] = [0x02, 0x6c, 0x62, 0x00, 0x00, 0x03];
/// MAC of the server veth.
pub const SERVER_MAC: [u8; 6] = [0x02, 0x6c, 0x62, 0x00, 0x00, 0x04];

/// Link addresses (shared address space, unlikely in captures).
/// Address of the client veth.
pub const CLIENT_ADDR: &str = "100.127.255.2";
/// [`CLIENT_ADDR`] as octets.
pub const CLIENT_ADDR_OCTETS: [u8; 4] = [100, 127, 255, 2];
/// Address of the LB's client-side veth.
pub const LB_CLIENT_ADDR: &str = "100.127.255.1";
const LB_SERVER_ADDR: &str = "100.127.255.5";
/// Address of the server veth (the LB's next hop toward the server side).
pub const SERVER_ADDR: &str = "100.127.255.6";
/// IPv6 link networks (unique local addresses, unlikely in captures): client side
/// `…:1::/64`, server side `…:2::/64`; the LB is `::1` on both, the peers `::2`.
pub const CLIENT_ADDR6: &str = "fd6c:6273:696d:1::2";
/// The LB's IPv6 address on its client-side veth.
pub const LB_CLIENT_ADDR6: &str = "fd6c:6273:696d:1::1";
const LB_SERVER_ADDR6: &str = "fd6c:6273:696d:2::1";
/// The server veth's IPv6 address.
pub const SERVER_ADDR6: &str = "fd6c:6273:696d:2::2";
/// The nft table (family netdev) that untags 802.1Q frames after the shield.
pub const VLAN_TABLE: &str = "lbsim_vlan";
/// Policy routing table for traffic arriving from the client side (an id far from the
/// appliances' own `[[ip.table]]` ids, which the runner installs too).
pub const FROM_CLIENT_TABLE: u32 = 32_000;

static LIVE_PREFIXES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static NEXT_RUN: AtomicU32 = AtomicU32::new(0);

/// A live topology; dropping it deletes its namespaces.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Run a command, failing with its stderr.
pub fn run_command(program: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{program}` (is it installed?)"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Fail with a clear message when kernel runs are impossible here: not root, no `ip`, or
/// network namespaces unavailable.
pub fn check_environment() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("kernel runs need root (network namespaces, nftables, raw sockets); run as root");
    }
    if !std::path::Path::new("/proc/self/ns/net").exists() {
        bail!("network namespaces are not available (no /proc/self/ns/net)");
    }
    run_command("ip", &["netns", "list"], None)
        .context("`ip netns` is unavailable (install iproute2)")?;
    for tool in ["nft", "iptables-restore"] {
        run_command("sh", &["-c", &format!("command -v {tool}")], None)
            .with_context(|| format!("`{tool}` is not installed"))?;
    }
    Ok(())
}

impl Topology {
    /// Create the three namespaces and two veth pairs with a fresh run prefix
    /// (`lbsim-<pid>-<n>`). On any error, what was made so far is removed.
    pub fn create() -> anyhow::Result<Self> {
        Self::create_on(Backend::Host)
    }

    /// [`Topology::create`] on a backend: the guest's kernel has no nf_tables netdev
    /// family, so its LB gets no VLAN-untagging table (tagged frames are not forwarded
    /// there).
    pub fn create_on(backend: Backend) -> anyhow::Result<Self> {
        check_environment()?;
        let run = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{NAMESPACE_PREFIX}{}-{run}", std::process::id());
        lock_live().insert(prefix.clone());
        let topology = Self { prefix };
        topology
            .build(backend)
            .with_context(|| format!("creating the kernel topology {}", topology.prefix))?;
        Ok(topology)
    }

    /// The run prefix (`lbsim-<pid>-<n>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The client namespace.
    pub fn client_ns(&self) -> String {
        format!("{}-cli", self.prefix)
    }

    /// The load-balancer namespace.
    pub fn lb_ns(&self) -> String {
        format!("{}-lb", self.prefix)
    }

    /// The server (backends) namespace.
    pub fn server_ns(&self) -> String {
        format!("{}-srv", self.prefix)
    }

    /// The namespaces, client first.
    pub fn namespaces(&self) -> [String; 3] {
        [self.client_ns(), self.lb_ns(), self.server_ns()]
    }

    /// Run a command inside a namespace (`ip netns exec NS ...`).
    pub fn exec(&self, ns: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(args);
        run_command("ip", &full, stdin)
    }

    /// Route `address` from the LB itself toward the server side (the main table sends
    /// everything else to the client side): real servers and protected destinations, for
    /// packets the LB makes (synproxy's SYN to the server).
    pub fn route_to_server(&self, address: &str) -> anyhow::Result<()> {
        let gateway = if address.contains(':') {
            SERVER_ADDR6
        } else {
            SERVER_ADDR
        };
        let args = ["ip", "route", "replace", address, "via", gateway];
        self.exec(&self.lb_ns(), &args, None).map(drop)
    }

    fn build(&self, backend: Backend) -> anyhow::Result<()> {
        for ns in self.namespaces() {
            run_command("ip", &["netns", "add", &ns], None)?;
            self.exec(&ns, &["ip", "link", "set", "lo", "up"], None)?;
        }
        let (cli, lb, srv) = (self.client_ns(), self.lb_ns(), self.server_ns());
        self.veth(&lb, LB_CLIENT_IFACE, &cli, CLIENT_IFACE)?;
        self.veth(&lb, LB_SERVER_IFACE, &srv, SERVER_IFACE)?;
        self.configure_link(&cli, CLIENT_IFACE, CLIENT_MAC, CLIENT_ADDR)?;
        self.configure_link(&lb, LB_CLIENT_IFACE, LB_CLIENT_MAC, LB_CLIENT_ADDR)?;
        self.configure_link(&lb, LB_SERVER_IFACE, LB_SERVER_MAC, LB_SERVER_ADDR)?;
        self.configure_link(&srv, SERVER_IFACE, SERVER_MAC, SERVER_ADDR)?;
        self.neighbour(&cli, CLIENT_IFACE, LB_CLIENT_ADDR, LB_CLIENT_MAC)?;
        self.neighbour(&lb, LB_CLIENT_IFACE, CLIENT_ADDR, CLIENT_MAC)?;
        self.neighbour(&lb, LB_SERVER_IFACE, SERVER_ADDR, SERVER_MAC)?;
        self.neighbour(&srv, SERVER_IFACE, LB_SERVER_ADDR, LB_SERVER_MAC)?;
        self.routes()?;
        self.ipv6()?;
        if backend == Backend::Guest {
            return Ok(());
        }
        self.exec(&lb, &["nft", "-f", "-"], Some(&vlan_nft()))
            .map(drop)
    }

    /// The IPv6 side: addresses without duplicate address detection, permanent neighbours,
    /// the same routes and policy rule as IPv4, forwarding on in the LB (one `ip -batch`
    /// per namespace).
    fn ipv6(&self) -> anyhow::Result<()> {
        let (cli, lb, srv) = (self.client_ns(), self.lb_ns(), self.server_ns());
        let (client_mac, server_mac) = (mac_text(CLIENT_MAC), mac_text(SERVER_MAC));
        let (lb_client_mac, lb_server_mac) = (mac_text(LB_CLIENT_MAC), mac_text(LB_SERVER_MAC));
        let client = format!(
            "addr add {CLIENT_ADDR6}/64 dev {CLIENT_IFACE} nodad\n\
             neigh replace {LB_CLIENT_ADDR6} lladdr {lb_client_mac} dev {CLIENT_IFACE} nud permanent\n\
             route add default via {LB_CLIENT_ADDR6}\n"
        );
        let server = format!(
            "addr add {SERVER_ADDR6}/64 dev {SERVER_IFACE} nodad\n\
             neigh replace {LB_SERVER_ADDR6} lladdr {lb_server_mac} dev {SERVER_IFACE} nud permanent\n\
             route add default via {LB_SERVER_ADDR6}\n"
        );
        let balancer = format!(
            "addr add {LB_CLIENT_ADDR6}/64 dev {LB_CLIENT_IFACE} nodad\n\
             addr add {LB_SERVER_ADDR6}/64 dev {LB_SERVER_IFACE} nodad\n\
             neigh replace {CLIENT_ADDR6} lladdr {client_mac} dev {LB_CLIENT_IFACE} nud permanent\n\
             neigh replace {SERVER_ADDR6} lladdr {server_mac} dev {LB_SERVER_IFACE} nud permanent\n\
             route add default via {CLIENT_ADDR6} dev {LB_CLIENT_IFACE}\n\
             route add default via {SERVER_ADDR6} dev {LB_SERVER_IFACE} table {FROM_CLIENT_TABLE}\n\
             rule add iif {LB_CLIENT_IFACE} lookup {FROM_CLIENT_TABLE} pref 100\n"
        );
        for (ns, batch) in [(&cli, client), (&srv, server), (&lb, balancer)] {
            self.exec(ns, &["ip", "-6", "-batch", "-"], Some(&batch))?;
        }
        self.exec(
            &lb,
            &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
            None,
        )
        .map(drop)
    }

    fn veth(&self, ns: &str, name: &str, peer_ns: &str, peer: &str) -> anyhow::Result<()> {
        let mtu = VETH_MTU.to_string();
        self.exec(
            ns,
            &[
                "ip", "link", "add", name, "mtu", &mtu, "type", "veth", "peer", "name", peer,
                "mtu", &mtu, "netns", peer_ns,
            ],
            None,
        )
        .map(drop)
    }

    fn configure_link(&self, ns: &str, name: &str, mac: [u8; 6], addr: &str) -> anyhow::Result<()> {
        let mac = mac_text(mac);
        // No IPv6 link-local address: no router solicitations, MLD reports or duplicate
        // address detection on the observed veths (neighbours are static).
        let link = [
            "ip",
            "link",
            "set",
            name,
            "address",
            &mac,
            "addrgenmode",
            "none",
        ];
        self.exec(ns, &link, None)?;
        self.exec(
            ns,
            &["ip", "addr", "add", &format!("{addr}/30"), "dev", name],
            None,
        )?;
        self.exec(ns, &["ip", "link", "set", name, "up"], None)?;
        Ok(())
    }

    fn neighbour(&self, ns: &str, name: &str, addr: &str, mac: [u8; 6]) -> anyhow::Result<()> {
        let mac = mac_text(mac);
        let args = [
            "ip",
            "neigh",
            "replace",
            addr,
            "lladdr",
            &mac,
            "dev",
            name,
            "nud",
            "permanent",
        ];
        self.exec(ns, &args, None).map(drop)
    }

    /// LB: packets from the client side are routed to the server side whatever their
    /// destination (policy table); everything else (replies, locally made ICMP) goes back
    /// to the client side. Reverse-path filtering off: sources are arbitrary.
    fn routes(&self) -> anyhow::Result<()> {
        let (cli, lb, srv) = (self.client_ns(), self.lb_ns(), self.server_ns());
        let table = FROM_CLIENT_TABLE.to_string();
        self.exec(
            &cli,
            &["ip", "route", "add", "default", "via", LB_CLIENT_ADDR],
            None,
        )?;
        self.exec(
            &srv,
            &["ip", "route", "add", "default", "via", LB_SERVER_ADDR],
            None,
        )?;
        self.exec(
            &lb,
            &["ip", "route", "add", "default", "via", CLIENT_ADDR],
            None,
        )?;
        let via_server = [
            "ip",
            "route",
            "add",
            "default",
            "via",
            SERVER_ADDR,
            "table",
            &table,
        ];
        self.exec(&lb, &via_server, None)?;
        let rule = [
            "ip",
            "rule",
            "add",
            "iif",
            LB_CLIENT_IFACE,
            "lookup",
            &table,
            "pref",
            "100",
        ];
        self.exec(&lb, &rule, None)?;
        let sysctls = [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.lbc.rp_filter=0",
            "net.ipv4.conf.lbs.rp_filter=0",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.lbc.send_redirects=0",
        ];
        for setting in sysctls {
            self.exec(&lb, &["sysctl", "-qw", setting], None)?;
        }
        Ok(())
    }
}

/// 802.1Q frames on the LB's veths. This kernel has no `8021q` module (no VLAN
/// sub-interfaces), and a frame whose tag names a VLAN without a sub-interface is not for
/// this host (`PACKET_OTHERHOST`). So after the shield's netdev ingress chain (priority
/// -500) has seen the tag, a later ingress chain clears the VLAN id (`vlan id set 0`: a
/// priority tag, which the stack treats as untagged) and IPv4 forwards the frame as if it
/// had come untagged on the same veth.
pub fn vlan_nft() -> String {
    let mut out = format!("table netdev {VLAN_TABLE}\ndelete table netdev {VLAN_TABLE}\n");
    out.push_str(&format!("table netdev {VLAN_TABLE} {{\n"));
    for (chain, iface) in [("client", LB_CLIENT_IFACE), ("server", LB_SERVER_IFACE)] {
        out.push_str(&format!(
            "\tchain {chain} {{\n\t\ttype filter hook ingress device \"{iface}\" priority 0; policy accept;\n\t\tvlan id != 0 counter vlan id set 0 comment \"802.1Q tag seen by the shield; untagged for IPv4 forwarding (no 8021q)\"\n\t}}\n"
        ));
    }
    out.push_str("}\n");
    out
}

impl Drop for Topology {
    fn drop(&mut self) {
        remove_prefix(&self.prefix);
        lock_live().remove(&self.prefix);
    }
}

fn lock_live() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    LIVE_PREFIXES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every `lbsim-` namespace that exists now, sorted.
pub fn list_namespaces() -> anyhow::Result<Vec<String>> {
    let text = run_command("ip", &["netns", "list"], None)?;
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(NAMESPACE_PREFIX))
        .map(str::to_string)
        .collect();
    names.sort();
    Ok(names)
}

/// Delete every namespace whose name starts with `prefix-` (errors ignored: best effort,
/// used from Drop and signal handlers). Returns how many were deleted.
pub fn remove_prefix(prefix: &str) -> usize {
    let Ok(names) = list_namespaces() else {
        return 0;
    };
    let wanted = format!("{prefix}-");
    names
        .iter()
        .filter(|name| name.starts_with(&wanted))
        .filter(|name| delete_namespace(name).is_ok())
        .count()
}

/// Kill the processes left inside a namespace (a tool this runner started there and
/// that outlived a killed run), then delete the namespace.
pub fn delete_namespace(name: &str) -> anyhow::Result<()> {
    for pid in processes_in(name) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    run_command("ip", &["netns", "del", name], None).map(drop)
}

/// Processes whose network namespace is `name` (`ip netns pids`), this one excepted.
pub fn processes_in(name: &str) -> Vec<i32> {
    let own = i32::try_from(std::process::id()).unwrap_or(0);
    run_command("ip", &["netns", "pids", name], None)
        .map(|text| {
            text.lines()
                .filter_map(|line| line.trim().parse().ok())
                .filter(|&pid| pid != own)
                .collect()
        })
        .unwrap_or_default()
}

/// The process id a namespace name carries (`lbsim-<pid>-...`).
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NAMESPACE_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Remove the namespaces left by runs whose process is gone — `lbsim-<pid>-…` names whose
/// pid no longer exists — or all `lbsim-` namespaces with `force`. Returns the names removed.
pub fn cleanup_leftovers(force: bool) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_namespaces()? {
        // Without --force, only namespaces whose owner is known and gone: a name whose pid
        // cannot be read may belong to a live process of another naming scheme.
        let dead = owner_pid(&name)
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !dead && !force {
            continue;
        }
        delete_namespace(&name)?;
        removed.push(name);
    }
    Ok(removed)
}

/// On Ctrl-C or SIGTERM, delete every live topology of this process, then exit with 130.
/// Installing twice is harmless.
pub fn install_signal_cleanup() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let result = ctrlc::set_handler(|| {
            let prefixes: Vec<String> = lock_live().iter().cloned().collect();
            for prefix in prefixes {
                remove_prefix(&prefix);
            }
            eprintln!("interrupted: kernel namespaces removed");
            std::process::exit(130);
        });
        if let Err(error) = result {
            eprintln!("warning: cannot install the Ctrl-C cleanup handler: {error}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_is_read_from_the_name() {
        assert_eq!(owner_pid("lbsim-1234-0-lb"), Some(1234));
        assert_eq!(owner_pid("lbsim-x-0-lb"), None);
        assert_eq!(owner_pid("other-1-0"), None);
    }

    #[test]
    fn macs_are_written_with_colons() {
        assert_eq!(mac_text(LB_CLIENT_MAC), "02:6c:62:00:00:02");
    }
}
