//! The IPVS connection table: connections, persistence templates, the TCP state machine
//! and the per-state timeouts (`ip_vs_conn.c`, `ip_vs_proto_tcp.c`, `ip_vs_proto_udp.c`).
//!
//! Connections are found by the client side `(proto, client, virtual)` and — for NAT —
//! by the reply side `(proto, real, client)`. Templates (persistence) are found by
//! `(proto, masked client, virtual address or fwmark, virtual port or 0)`. Every entry has
//! an expiry time in virtual nanoseconds; a single ordered timer queue holds one check per
//! entry and is drained by the owner ([`super::Directors`]) with the `now` it is given.
//!
//! The table is bounded: [`CONNECTION_TABLE_CAPACITY`] connections and
//! [`TEMPLATE_TABLE_CAPACITY`] templates by default. **Overflow policy: drop new.** A
//! packet that would create an entry in a full table is dropped
//! (`DropReason::ConnTableFull`) and counted; established entries are never evicted.
//! For QA, [`ConnectionTable::report_full`] makes either table refuse new entries as if it
//! were at capacity, so the policy can be exercised after a chosen number of packets.
//!
//! The indexes are keyed by client addresses and ports, which an attacker chooses: they
//! hash with keyed SipHash-1-3 ([`crate::hash::keyed`], keys from the run's seed, as IPVS
//! keys its jhash with a random secret), over the packed key (`Hash` is written by hand:
//! addresses as one integer, no discriminants). They are never iterated, so hash order
//! never reaches any output.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use super::dest::{DestId, Forward};
use super::timers::Timers;
use crate::hash::keyed::{KeyedState, write_address, write_socket};
use crate::verdict::{NS_PER_SEC, TimeNs};

/// Default capacity of the connection table.
pub const CONNECTION_TABLE_CAPACITY: usize = 1 << 20;
/// Default capacity of the persistence-template table.
pub const TEMPLATE_TABLE_CAPACITY: usize = 1 << 18;
/// UDP connection timeout (`IP_VS_UDP_S_NORMAL`): 300 s.
pub const UDP_TIMEOUT: TimeNs = 300 * NS_PER_SEC;
/// The re-check interval of a template that still controls connections.
pub const TEMPLATE_RECHECK: TimeNs = 60 * NS_PER_SEC;

/// IPVS TCP states, numbered as in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    /// NONE.
    None = 0,
    /// ESTABLISHED.
    Established = 1,
    /// SYN_SENT.
    SynSent = 2,
    /// SYN_RECV.
    SynRecv = 3,
    /// FIN_WAIT.
    FinWait = 4,
    /// TIME_WAIT.
    TimeWait = 5,
    /// CLOSE.
    Close = 6,
    /// CLOSE_WAIT.
    CloseWait = 7,
    /// LAST_ACK.
    LastAck = 8,
    /// LISTEN.
    Listen = 9,
    /// SYNACK.
    SynAck = 10,
}

use TcpState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI,
    None as NO, SynAck as SA, SynRecv as SR, SynSent as SS, TimeWait as TW,
};

/// Next state by [direction × event][current state] (`tcp_states`, current mainline).
/// Rows: input syn/fin/ack/rst, output syn/fin/ack/rst, input-only syn/fin/ack/rst.
/// Columns follow the state numbering NO ES SS SR FW TW CL CW LA LI SA.
const TRANSITIONS: [[TcpState; 11]; 12] = [
    [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
    [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
    [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
    [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
    [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
    [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
    [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
    [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
];

impl TcpState {
    /// The kernel's name (`ipvsadm -lc`).
    pub fn name(self) -> &'static str {
        match self {
            NO => "NONE",
            ES => "ESTABLISHED",
            SS => "SYN_SENT",
            SR => "SYN_RECV",
            FW => "FIN_WAIT",
            TW => "TIME_WAIT",
            CL => "CLOSE",
            CW => "CLOSE_WAIT",
            LA => "LAST_ACK",
            LI => "LISTEN",
            SA => "SYNACK",
        }
    }

    /// Default timeout of the state (`tcp_timeouts`).
    pub fn timeout(self) -> TimeNs {
        let seconds = match self {
            NO => 2,
            ES => 15 * 60,
            SS | FW | TW | LI | SA => 2 * 60,
            SR | CW => 60,
            CL => 10,
            LA => 30,
        };
        seconds * NS_PER_SEC
    }

    /// Counted as an active connection (`tcp_state_active_table`: ESTABLISHED and the
    /// handshake states).
    pub fn is_active(self) -> bool {
        matches!(self, ES | SS | SR | SA)
    }
}

/// Packet direction relative to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client → real server.
    Input,
    /// Real server → client.
    Output,
    /// Client → real server on a connection whose replies bypass the director (DR/TUN).
    InputOnly,
}

/// The kernel's `tcp_state_idx`: RST, then SYN, then FIN, then ACK; `None` otherwise.
fn event_index(tcp_flags: u8) -> Option<usize> {
    use crate::packet::tcp_flags::{ACK, FIN, RST, SYN};
    if tcp_flags & RST != 0 {
        Some(3)
    } else if tcp_flags & SYN != 0 {
        Some(0)
    } else if tcp_flags & FIN != 0 {
        Some(1)
    } else if tcp_flags & ACK != 0 {
        Some(2)
    } else {
        None
    }
}

/// `set_tcp_state`'s table lookup: the next state (CLOSE for a packet with no known flag).
pub fn next_tcp_state(current: TcpState, direction: Direction, tcp_flags: u8) -> TcpState {
    let offset = match direction {
        Direction::Input => 0,
        Direction::Output => 4,
        Direction::InputOnly => 8,
    };
    match event_index(tcp_flags) {
        Some(event) => TRANSITIONS[offset + event][current as usize],
        None => CL,
    }
}

/// Connection lookup key from the client side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientKey {
    /// IP protocol.
    pub proto: u8,
    /// Client address and port.
    pub client: SocketAddr,
    /// Virtual address and port (the packet's destination).
    pub virtual_address: SocketAddr,
}

/// Connection lookup key from the real-server side (NAT replies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RealKey {
    /// IP protocol.
    pub proto: u8,
    /// Real server address and port (the reply's source).
    pub real: SocketAddr,
    /// Client address and port (the reply's destination).
    pub client: SocketAddr,
}

/// What a persistence template is keyed on besides the client network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TemplateTarget {
    /// `<proto, client-net, 0, vaddr, vport>` (vport 0 for port-zero services).
    Virtual(IpAddr, u16),
    /// `<IPPROTO_IP, client-net, 0, fwmark, 0>`.
    Fwmark(u32),
}

/// Persistence template key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TemplateKey {
    /// Protocol (0 for fwmark templates).
    pub proto: u8,
    /// Client address masked with the persistence netmask.
    pub client_network: IpAddr,
    /// Service side of the key.
    pub target: TemplateTarget,
}

impl Hash for ClientKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.proto);
        write_socket(state, &self.client);
        write_socket(state, &self.virtual_address);
    }
}

impl Hash for RealKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.proto);
        write_socket(state, &self.real);
        write_socket(state, &self.client);
    }
}

impl Hash for TemplateKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.proto);
        write_address(state, &self.client_network);
        match self.target {
            TemplateTarget::Virtual(address, port) => {
                write_address(state, &address);
                state.write_u16(port);
            }
            TemplateTarget::Fwmark(mark) => state.write_u32(mark),
        }
    }
}

/// Protocol state of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolState {
    /// TCP, with its IPVS state.
    Tcp(TcpState),
    /// UDP (one state, `NORMAL`).
    Udp,
}

/// One connection (`struct ip_vs_conn`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Client-side key.
    pub key: ClientKey,
    /// Owning service index.
    pub service: usize,
    /// Real server.
    pub dest: DestId,
    /// Real server address and port the connection goes to.
    pub real: SocketAddr,
    /// Forwarding method.
    pub forward: Forward,
    /// Protocol state.
    pub state: ProtocolState,
    /// `IP_VS_CONN_F_INACTIVE`.
    pub inactive: bool,
    /// `IP_VS_CONN_F_NOOUTPUT` (DR/TUN until a reply is seen).
    pub no_output: bool,
    /// Controlling persistence template.
    pub template: Option<u32>,
    /// Current timeout.
    pub timeout: TimeNs,
    /// Expiry time.
    pub expires: TimeNs,
    /// The FTP control connection that created this data connection (`cp->control`).
    pub controller: Option<u32>,
    /// Data connections this one controls (`n_control`): it does not expire while any
    /// is left.
    pub controlled: u32,
}

/// One persistence template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Key.
    pub key: TemplateKey,
    /// Owning service index.
    pub service: usize,
    /// Real server.
    pub dest: DestId,
    /// Timeout (the persistence timeout; 60 s after it was kept alive by its connections).
    pub timeout: TimeNs,
    /// Expiry time.
    pub expires: TimeNs,
    /// Connections it controls (`n_control`).
    pub controlled: u32,
    /// Still reachable by its key (false once invalidated by `ip_vs_check_template`).
    pub hashed: bool,
}

/// A timer queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerEntry {
    /// A connection slot.
    Connection(u32),
    /// A template slot.
    Template(u32),
}

/// Counters of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableCounters {
    /// Connections created.
    pub connections_created: u64,
    /// Connections expired.
    pub connections_expired: u64,
    /// Templates created.
    pub templates_created: u64,
    /// Templates expired.
    pub templates_expired: u64,
    /// New connections refused because the connection table was full.
    pub connection_overflows: u64,
    /// New templates refused because the template table was full.
    pub template_overflows: u64,
}

/// The bounded connection and template table.
#[derive(Clone, Debug)]
pub struct ConnectionTable {
    /// Connection slots.
    pub connections: Vec<Option<Connection>>,
    free_connections: Vec<u32>,
    /// Client-side index.
    pub by_client: HashMap<ClientKey, u32, KeyedState>,
    /// Real-side index (NAT only).
    pub by_real: HashMap<RealKey, u32, KeyedState>,
    /// Template slots.
    pub templates: Vec<Option<Template>>,
    free_templates: Vec<u32>,
    /// Template index (hashed templates only).
    pub by_template_key: HashMap<TemplateKey, u32, KeyedState>,
    /// One pending expiry check per entry, ordered by (time, entry).
    pub timers: Timers<TimerEntry>,
    /// Connection capacity.
    pub connection_capacity: usize,
    /// Template capacity.
    pub template_capacity: usize,
    /// Live connections.
    pub connection_count: usize,
    /// Live templates.
    pub template_count: usize,
    /// Counters.
    pub counters: TableCounters,
    /// QA: the connection table refuses new entries as if full.
    pub connections_report_full: bool,
    /// QA: the template table refuses new entries as if full.
    pub templates_report_full: bool,
}

/// A table of [`ConnectionTable`] the QA option can make report full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// Connections.
    Connections,
    /// Persistence templates.
    Templates,
}

impl ConnectionTable {
    /// QA: make one table refuse new entries as if at capacity (`full`), or stop doing so.
    /// Its overflow policy (drop new) and counter apply as they would at capacity.
    pub fn report_full(&mut self, table: TableKind, full: bool) {
        match table {
            TableKind::Connections => self.connections_report_full = full,
            TableKind::Templates => self.templates_report_full = full,
        }
    }

    /// An empty table with the given capacities, its indexes keyed from `hash_seed`.
    pub fn new(connection_capacity: usize, template_capacity: usize, hash_seed: u64) -> Self {
        Self {
            connections: Vec::new(),
            free_connections: Vec::new(),
            by_client: HashMap::with_hasher(KeyedState::new(hash_seed, 0x6970_7673_636c_6e74)),
            by_real: HashMap::with_hasher(KeyedState::new(hash_seed, 0x6970_7673_7265_616c)),
            templates: Vec::new(),
            free_templates: Vec::new(),
            by_template_key: HashMap::with_hasher(KeyedState::new(
                hash_seed,
                0x6970_7673_746d_706c,
            )),
            timers: Timers::new(),
            connection_capacity,
            template_capacity,
            connection_count: 0,
            template_count: 0,
            counters: TableCounters::default(),
            connections_report_full: false,
            templates_report_full: false,
        }
    }

    /// Whether a new connection fits; counts the overflow when not.
    pub fn reserve_connection(&mut self) -> bool {
        let fits =
            self.connection_count < self.connection_capacity && !self.connections_report_full;
        if !fits {
            self.counters.connection_overflows += 1;
        }
        fits
    }

    /// Whether a new template fits; counts the overflow when not.
    pub fn reserve_template(&mut self) -> bool {
        let fits = self.template_count < self.template_capacity && !self.templates_report_full;
        if !fits {
            self.counters.template_overflows += 1;
        }
        fits
    }

    /// Insert a connection (capacity already reserved); returns its slot.
    pub fn insert_connection(&mut self, connection: Connection) -> u32 {
        let key = connection.key;
        let real_key = (connection.forward == Forward::Nat).then_some(RealKey {
            proto: key.proto,
            real: connection.real,
            client: key.client,
        });
        let expires = connection.expires;
        let slot = match self.free_connections.pop() {
            Some(slot) => {
                self.connections[slot as usize] = Some(connection);
                slot
            }
            None => {
                self.connections.push(Some(connection));
                (self.connections.len() - 1) as u32
            }
        };
        self.by_client.insert(key, slot);
        if let Some(real_key) = real_key {
            self.by_real.insert(real_key, slot);
        }
        self.timers.insert((expires, TimerEntry::Connection(slot)));
        self.connection_count += 1;
        self.counters.connections_created += 1;
        slot
    }

    /// Remove a connection slot; returns the connection.
    pub fn remove_connection(&mut self, slot: u32) -> Option<Connection> {
        let connection = self.connections.get_mut(slot as usize)?.take()?;
        // A reused 5-tuple's new connection may already hold the keys (see `process_input`).
        if self.by_client.get(&connection.key) == Some(&slot) {
            self.by_client.remove(&connection.key);
        }
        let real_key = RealKey {
            proto: connection.key.proto,
            real: connection.real,
            client: connection.key.client,
        };
        if connection.forward == Forward::Nat && self.by_real.get(&real_key) == Some(&slot) {
            self.by_real.remove(&real_key);
        }
        self.free_connections.push(slot);
        self.connection_count -= 1;
        self.counters.connections_expired += 1;
        Some(connection)
    }

    /// Insert a template (capacity already reserved); returns its slot.
    pub fn insert_template(&mut self, template: Template) -> u32 {
        let key = template.key;
        let expires = template.expires;
        let slot = match self.free_templates.pop() {
            Some(slot) => {
                self.templates[slot as usize] = Some(template);
                slot
            }
            None => {
                self.templates.push(Some(template));
                (self.templates.len() - 1) as u32
            }
        };
        self.by_template_key.insert(key, slot);
        self.timers.insert((expires, TimerEntry::Template(slot)));
        self.template_count += 1;
        self.counters.templates_created += 1;
        slot
    }

    /// Make a template unreachable by its key (it lives on until it expires).
    pub fn unhash_template(&mut self, slot: u32) {
        if let Some(template) = self.templates[slot as usize].as_mut()
            && template.hashed
        {
            template.hashed = false;
            self.by_template_key.remove(&template.key);
        }
    }

    /// Remove a template slot; returns the template.
    pub fn remove_template(&mut self, slot: u32) -> Option<Template> {
        self.unhash_template(slot);
        let template = self.templates.get_mut(slot as usize)?.take()?;
        self.free_templates.push(slot);
        self.template_count -= 1;
        self.counters.templates_expired += 1;
        Some(template)
    }

    /// Pop the earliest timer due at or before `now`.
    pub fn pop_due(&mut self, now: TimeNs) -> Option<(TimeNs, TimerEntry)> {
        let first = self.timers.first()?;
        if first.0 > now {
            return None;
        }
        self.timers.pop_first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tcp_flags::{ACK, FIN, RST, SYN};

    #[test]
    fn handshake_and_close_follow_the_kernel_table() {
        let mut state = NO;
        state = next_tcp_state(state, Direction::Input, SYN);
        assert_eq!(state, SR);
        state = next_tcp_state(state, Direction::Output, SYN | ACK);
        assert_eq!(state, SR);
        state = next_tcp_state(state, Direction::Input, ACK);
        assert_eq!(state, ES);
        state = next_tcp_state(state, Direction::Input, FIN | ACK);
        assert_eq!(state, CW);
        state = next_tcp_state(state, Direction::Output, FIN | ACK);
        assert_eq!(state, TW);
        assert_eq!(next_tcp_state(ES, Direction::Input, RST | ACK), CL);
        assert_eq!(next_tcp_state(ES, Direction::InputOnly, FIN), FW);
        assert_eq!(next_tcp_state(ES, Direction::Input, 0), CL);
    }

    #[test]
    fn timeouts_are_the_kernel_defaults() {
        assert_eq!(ES.timeout(), 900 * NS_PER_SEC);
        assert_eq!(FW.timeout(), 120 * NS_PER_SEC);
        assert_eq!(CL.timeout(), 10 * NS_PER_SEC);
        assert_eq!(UDP_TIMEOUT, 300 * NS_PER_SEC);
        assert!(SR.is_active() && !FW.is_active());
    }
}
