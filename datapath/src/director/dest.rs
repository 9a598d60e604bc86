//! Real servers ("destinations" in IPVS) and the list order schedulers walk.
//!
//! A [`RealServer`] keeps what IPVS keeps in `struct ip_vs_dest`: weight and `last_weight`,
//! forwarding method, connection thresholds and the overload flag, and the active /
//! inactive / persistent connection counters. [`Dests`] is the per-service arena plus the
//! kernel's list order. The kernel *prepends* every added destination to the service list
//! (`list_add_rcu` on the list head), so the list — and `ipvsadm -L` — shows the servers
//! last-added first; [`Dests::order`] reproduces that. Counting rules for connections live
//! here ([`RealServer::bind`], [`RealServer::unbind`]); the connection table calls them.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Index of a real server in its service's arena (stable for the life of the service).
pub type DestId = usize;

/// How packets reach a real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// Masquerading: rewrite the destination to the real server, un-NAT the replies.
    Nat,
    /// Direct routing: rewrite the destination MAC only.
    Dr,
    /// IP-in-IP tunnelling.
    Tun,
}

impl Forward {
    /// `Masq`, `Route` or `Tunnel`, as `ipvsadm -L` prints it.
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            Self::Nat => "Masq",
            Self::Dr => "Route",
            Self::Tun => "Tunnel",
        }
    }
}

/// Per-server traffic counters (the `--stats` columns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DestStats {
    /// Connections scheduled to this server.
    pub connections: u64,
    /// Packets client → server.
    pub packets_in: u64,
    /// Packets server → client (seen only with NAT).
    pub packets_out: u64,
    /// Bytes client → server.
    pub bytes_in: u64,
    /// Bytes server → client.
    pub bytes_out: u64,
}

/// One real server of a virtual service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealServer {
    /// Address and port (port 0 = keep the client's destination port).
    pub address: SocketAddr,
    /// Current weight; 0 = quiescent.
    pub weight: i32,
    /// Latest non-zero weight (what `mh` builds its table from).
    pub last_weight: i32,
    /// Forwarding method.
    pub forward: Forward,
    /// Upper connection threshold (0 = none).
    pub upper_threshold: u32,
    /// Lower connection threshold (0 = none).
    pub lower_threshold: u32,
    /// `IP_VS_DEST_F_OVERLOAD`.
    pub overloaded: bool,
    /// `IP_VS_DEST_F_AVAILABLE`: linked into the service (false once removed / down).
    pub available: bool,
    /// Active connections.
    pub active: u32,
    /// Inactive connections.
    pub inactive: u32,
    /// Persistence templates pointing at this server.
    pub persistent: u32,
    /// Traffic counters.
    pub stats: DestStats,
    /// MAC address used by direct routing.
    pub mac: [u8; 6],
}

impl RealServer {
    /// A server as added by `ipvsadm -a`.
    pub fn new(address: SocketAddr, weight: i32, forward: Forward) -> Self {
        Self {
            address,
            weight,
            last_weight: weight,
            forward,
            upper_threshold: 0,
            lower_threshold: 0,
            overloaded: false,
            available: true,
            active: 0,
            inactive: 0,
            persistent: 0,
            stats: DestStats::default(),
            mac: default_mac(address),
        }
    }

    /// `ip_vs_dest_conn_overhead`: active × 256 + inactive.
    pub fn connection_overhead(&self) -> i64 {
        (i64::from(self.active) << 8) + i64::from(self.inactive)
    }

    /// Active + inactive (what the thresholds compare against).
    pub fn total_connections(&self) -> u32 {
        self.active + self.inactive
    }

    /// Account a new connection (or template) bound to this server (`ip_vs_bind_dest`).
    pub fn bind(&mut self, kind: BindKind) {
        match kind {
            BindKind::Template => self.persistent += 1,
            BindKind::Active => self.active += 1,
            BindKind::Inactive => self.inactive += 1,
        }
        if self.upper_threshold != 0 && self.total_connections() >= self.upper_threshold {
            self.overloaded = true;
        }
    }

    /// Account a connection (or template) leaving this server (`ip_vs_unbind_dest`).
    pub fn unbind(&mut self, kind: BindKind) {
        match kind {
            BindKind::Template => self.persistent = self.persistent.saturating_sub(1),
            BindKind::Active => self.active = self.active.saturating_sub(1),
            BindKind::Inactive => self.inactive = self.inactive.saturating_sub(1),
        }
        let total = u64::from(self.total_connections());
        if self.lower_threshold != 0 {
            if total < u64::from(self.lower_threshold) {
                self.overloaded = false;
            }
        } else if self.upper_threshold != 0 {
            if total * 4 < u64::from(self.upper_threshold) * 3 {
                self.overloaded = false;
            }
        } else {
            self.overloaded = false;
        }
    }

    /// Move one connection between the active and inactive counters.
    pub fn set_activity(&mut self, active: bool) {
        if active {
            self.inactive = self.inactive.saturating_sub(1);
            self.active += 1;
        } else {
            self.active = self.active.saturating_sub(1);
            self.inactive += 1;
        }
    }
}

/// Which counter a bound connection occupies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindKind {
    /// A persistence template (`persistconns`).
    Template,
    /// An active connection.
    Active,
    /// An inactive connection.
    Inactive,
}

/// A deterministic locally administered MAC for a server without a configured one:
/// `02:00` followed by the last four bytes of its address.
pub fn default_mac(address: SocketAddr) -> [u8; 6] {
    let tail = match address.ip() {
        std::net::IpAddr::V4(v4) => v4.octets(),
        std::net::IpAddr::V6(v6) => {
            let o = v6.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x02, 0x00, tail[0], tail[1], tail[2], tail[3]]
}

/// A service's real servers: an arena and the kernel list order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dests {
    /// Every server ever added, by [`DestId`].
    pub servers: Vec<RealServer>,
    /// The kernel list: ids of linked servers, list head first.
    pub order: Vec<DestId>,
}

impl Dests {
    /// Add a server the way `ipvsadm -a` does (prepended to the list).
    pub fn add(&mut self, server: RealServer) -> DestId {
        let id = self.servers.len();
        self.servers.push(server);
        self.order.insert(0, id);
        id
    }

    /// Relink a previously removed server (prepended, as a fresh `ipvsadm -a` would). Its
    /// overload flag stays while it has an upper threshold: `__ip_vs_update_dest` (the
    /// server comes back from IPVS's trash) clears it only when the threshold is removed
    /// or raised.
    pub fn relink(&mut self, id: DestId) {
        if !self.order.contains(&id) {
            self.order.insert(0, id);
            let server = &mut self.servers[id];
            server.available = true;
            if server.upper_threshold == 0 {
                server.overloaded = false;
            }
        }
    }

    /// Unlink a server (`ipvsadm -d`); returns its former list position.
    pub fn unlink(&mut self, id: DestId) -> Option<usize> {
        let position = self.order.iter().position(|&d| d == id)?;
        self.order.remove(position);
        self.servers[id].available = false;
        Some(position)
    }

    /// Linked servers in list order.
    pub fn linked(&self) -> impl Iterator<Item = (DestId, &RealServer)> + '_ {
        self.order.iter().map(move |&id| (id, &self.servers[id]))
    }

    /// Server by id.
    pub fn get(&self, id: DestId) -> &RealServer {
        &self.servers[id]
    }

    /// Server by id, mutable.
    pub fn get_mut(&mut self, id: DestId) -> &mut RealServer {
        &mut self.servers[id]
    }

    /// Find a server by address.
    pub fn find(&self, address: SocketAddr) -> Option<DestId> {
        self.servers.iter().position(|s| s.address == address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(port: u16) -> RealServer {
        RealServer::new(SocketAddr::from(([10, 0, 1, 2], port)), 1, Forward::Nat)
    }

    #[test]
    fn added_servers_are_prepended_like_the_kernel_list() {
        let mut dests = Dests::default();
        let a = dests.add(server(1));
        let b = dests.add(server(2));
        assert_eq!(dests.order, vec![b, a]);
        assert_eq!(dests.unlink(b), Some(0));
        dests.relink(b);
        assert_eq!(dests.order, vec![b, a]);
    }

    #[test]
    fn thresholds_set_and_clear_overload() {
        let mut s = server(1);
        s.upper_threshold = 4;
        for _ in 0..4 {
            s.bind(BindKind::Inactive);
        }
        assert!(s.overloaded);
        s.unbind(BindKind::Inactive); // 3 * 4 = 12 < 12 is false
        assert!(s.overloaded);
        s.unbind(BindKind::Inactive); // 2 * 4 = 8 < 12
        assert!(!s.overloaded);
        s.lower_threshold = 2;
        s.bind(BindKind::Active);
        s.bind(BindKind::Active);
        assert!(s.overloaded);
        s.unbind(BindKind::Active); // 3 < 2 false
        assert!(s.overloaded);
        s.unbind(BindKind::Active);
        s.unbind(BindKind::Inactive); // 1 < 2
        assert!(!s.overloaded);
    }
}
