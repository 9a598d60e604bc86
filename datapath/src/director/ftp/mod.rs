//! The FTP application helper of the director (`ip_vs_ftp` with `ip_vs_app`, Linux 6.1).
//!
//! When the helper is on ([`super::Directors::with_ftp`], the module's `ports` parameter,
//! 21 by default), every TCP connection whose virtual port is one of the ports is an FTP
//! control connection. In NAT mode, on an ESTABLISHED control connection:
//!
//! - client → server: `PASV` / `EPSV` switch the connection to passive mode; `PORT` /
//!   `EPRT` create the active data connection `client-address:port → VIP:(vport-1)`, sent
//!   to the control connection's real server at `(dport-1)`. The command itself is not
//!   rewritten (the client's own address is what the server must connect to).
//! - server → client, while passive mode is pending: the `227` reply's address is
//!   replaced with the virtual address (`h1,h2,h3,h4,p1,p2`, so its length may change),
//!   a `229` reply's `(|…|port|)` with `|||port|`; the passive data connection
//!   `client:* → VIP:port → server-address:port` is created (client port filled by the
//!   client's first packet). The reply clears passive mode.
//! - every later segment of the control connection has its sequence, acknowledgement
//!   and SACK numbers shifted by the length changes ([`seqadj`], conntrack's offsets).
//!
//! Data connections start in LISTEN (2 minutes), are scheduled to the control
//! connection's real server whatever the scheduler or persistence says, and keep their
//! controller alive (`n_control`: a control connection that still controls one is
//! re-armed for 60 s instead of expiring). DR and TUN connections are never inspected,
//! as in the kernel (its helper runs in the NAT transmitter only).
//!
//! Bounded: at most [`FTP_CONTROL_CAPACITY`] control connections carry helper state.
//! **Overflow policy: no helper.** A control connection that arrives while the table is
//! full is forwarded like any other connection — its commands are not inspected, its
//! replies not rewritten — and counted in [`FtpCounters::overflows`]; established helper
//! state is never evicted.

pub mod parse;
pub mod seqadj;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use self::parse::{InputCommand, Mode};
use self::seqadj::{AdjustError, SeqAdjust};
use super::Directors;
use super::connection::{ClientKey, Connection, ProtocolState, RealKey, TcpState};
use super::dest::{BindKind, Forward};
use crate::packet::{PacketMeta, ip_proto};
use crate::verdict::{NS_PER_SEC, TimeNs};

/// Default capacity of the helper's control-connection table.
pub const FTP_CONTROL_CAPACITY: usize = 1 << 16;
/// `FTPPORT`: a TCP service on this port also takes the VIP's data connections
/// (`ip_vs_service_find`), whether or not the helper is loaded.
pub const FTP_CONTROL_PORT: u16 = 21;
/// `FTPDATA`: the active-mode data port.
pub const FTP_DATA_PORT: u16 = 20;
/// The module's default `ports` parameter.
pub const FTP_DEFAULT_PORTS: [u16; 1] = [21];
/// How long a control connection that still controls data connections is kept
/// (`ip_vs_conn_expire`'s `expire_later`).
pub const CONTROLLER_RECHECK: TimeNs = 60 * NS_PER_SEC;

/// Helper state of one control connection (`cp->app_data` and the conntrack seqadj
/// extension).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FtpControl {
    /// Pending passive mode, if any.
    pub mode: Option<Mode>,
    /// Offsets of the original (client → server) and reply directions.
    pub seqadj: [SeqAdjust; 2],
}

/// What the helper did, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FtpCounters {
    /// Control connections the helper attached to.
    pub control_connections: u64,
    /// Control connections left without the helper: its table was full.
    pub overflows: u64,
    /// `PASV` / `EPSV` commands seen.
    pub passive_commands: u64,
    /// `PORT` / `EPRT` commands seen.
    pub port_commands: u64,
    /// `227` / `229` replies rewritten.
    pub replies_rewritten: u64,
    /// Replies whose rewrite changed the segment's length.
    pub length_changes: u64,
    /// Data connections created.
    pub data_connections: u64,
    /// Packets dropped: a data connection could not be created (table full) or the
    /// segment could not be mangled or adjusted.
    pub drops: u64,
}

/// The helper: its ports and the bounded per-control-connection state.
#[derive(Clone, Debug)]
pub struct FtpHelper {
    ports: Vec<u16>,
    capacity: usize,
    controls: BTreeMap<u32, FtpControl>,
    no_client_port: usize,
    /// QA: refuse new control connections as if at capacity.
    pub report_full: bool,
    /// Counters.
    pub counters: FtpCounters,
}

impl FtpHelper {
    /// A helper on these control ports (`ip_vs_ftp ports=…`) with room for `capacity`
    /// control connections.
    pub fn new(ports: &[u16], capacity: usize) -> Self {
        let mut ports = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        Self {
            ports,
            capacity,
            controls: BTreeMap::new(),
            no_client_port: 0,
            report_full: false,
            counters: FtpCounters::default(),
        }
    }

    /// The control ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Control connections with helper state.
    pub fn len(&self) -> usize {
        self.controls.len()
    }

    /// No control connection has helper state.
    pub fn is_empty(&self) -> bool {
        self.controls.is_empty()
    }

    /// The helper state of a connection slot.
    pub fn control(&self, slot: u32) -> Option<&FtpControl> {
        self.controls.get(&slot)
    }

    fn bind(&mut self, slot: u32, virtual_port: u16) {
        if !self.ports.contains(&virtual_port) {
            return;
        }
        if self.controls.len() >= self.capacity || self.report_full {
            self.counters.overflows += 1;
            return;
        }
        self.controls.insert(slot, FtpControl::default());
        self.counters.control_connections += 1;
    }
}

/// Which end of a data connection is fixed when it is created.
struct DataConnection {
    client: SocketAddr,
    virtual_address: SocketAddr,
    real: SocketAddr,
}

impl Directors {
    /// Turn the FTP helper on for these control ports (`modprobe ip_vs_ftp ports=21`),
    /// with room for [`FTP_CONTROL_CAPACITY`] control connections.
    pub fn with_ftp(mut self, ports: &[u16]) -> Self {
        self.ftp = Some(FtpHelper::new(ports, FTP_CONTROL_CAPACITY));
        self
    }

    /// The FTP helper, when on.
    pub fn ftp(&self) -> Option<&FtpHelper> {
        self.ftp.as_ref()
    }

    /// The FTP helper, when on (QA switches, capacity tests).
    pub fn ftp_mut(&mut self) -> Option<&mut FtpHelper> {
        self.ftp.as_mut()
    }

    /// `ip_vs_bind_app`: a new TCP connection on a control port gets helper state.
    pub(super) fn ftp_bind(&mut self, slot: u32) {
        let Some(helper) = self.ftp.as_mut() else {
            return;
        };
        let Some(connection) = self.table.connections[slot as usize].as_ref() else {
            return;
        };
        if connection.key.proto == ip_proto::TCP {
            helper.bind(slot, connection.key.virtual_address.port());
        }
    }

    /// A connection left the table: forget its helper state, release its controller.
    pub(super) fn ftp_unbind(&mut self, slot: u32, connection: &Connection) {
        if let Some(helper) = self.ftp.as_mut() {
            helper.controls.remove(&slot);
            if connection.key.client.port() == 0 {
                helper.no_client_port = helper.no_client_port.saturating_sub(1);
            }
        }
        if let Some(controller) = connection.controller
            && let Some(control) = self.table.connections[controller as usize].as_mut()
        {
            control.controlled = control.controlled.saturating_sub(1);
        }
    }

    /// `ip_vs_conn_in_get`'s second try: a passive data connection created before the
    /// client's port was known, found by client address; its port is filled in
    /// (`ip_vs_conn_fill_cport`) and the connection re-indexed.
    pub(super) fn ftp_no_client_port(&mut self, key: &ClientKey) -> Option<u32> {
        if self.ftp.as_ref().is_none_or(|h| h.no_client_port == 0) {
            return None;
        }
        let zero = ClientKey {
            client: SocketAddr::new(key.client.ip(), 0),
            ..*key
        };
        let slot = *self.table.by_client.get(&zero)?;
        let connection = self.table.connections[slot as usize].as_mut()?;
        self.table.by_client.remove(&zero);
        let old_real = RealKey {
            proto: key.proto,
            real: connection.real,
            client: zero.client,
        };
        connection.key.client = key.client;
        if connection.forward == Forward::Nat && self.table.by_real.get(&old_real) == Some(&slot) {
            self.table.by_real.remove(&old_real);
            let real_key = RealKey {
                client: key.client,
                ..old_real
            };
            self.table.by_real.insert(real_key, slot);
        }
        self.table.by_client.insert(*key, slot);
        if let Some(helper) = self.ftp.as_mut() {
            helper.no_client_port -= 1;
        }
        Some(slot)
    }

    fn ftp_control_of(&self, slot: u32) -> Option<(&Connection, FtpControl)> {
        let control = *self.ftp.as_ref()?.controls.get(&slot)?;
        let connection = self.table.connections[slot as usize].as_ref()?;
        let established = connection.state == ProtocolState::Tcp(TcpState::Established);
        (connection.forward == Forward::Nat && established).then_some((connection, control))
    }

    /// `ip_vs_ftp_in`, after the packet's state transition: passive mode on, or the
    /// active data connection. `Err(())`: the packet is dropped (no room for the data
    /// connection).
    pub(super) fn ftp_input(
        &mut self,
        now: TimeNs,
        slot: u32,
        frame: &[u8],
        meta: &PacketMeta,
    ) -> Result<(), ()> {
        let Some((connection, _)) = self.ftp_control_of(slot) else {
            return Ok(());
        };
        let (key, real) = (connection.key, connection.real);
        let Some(payload) = payload(frame, meta) else {
            return Ok(());
        };
        let command = parse::scan_input(payload, key.client.is_ipv6());
        let helper = self.ftp.as_mut().expect("helper on");
        let control = helper.controls.get_mut(&slot).expect("bound");
        let (address, port) = match command {
            InputCommand::None => return Ok(()),
            InputCommand::Pasv | InputCommand::Epsv => {
                control.mode = Some(if command == InputCommand::Pasv {
                    Mode::Pasv
                } else {
                    Mode::Epsv
                });
                helper.counters.passive_commands += 1;
                return Ok(());
            }
            InputCommand::Port(address, port) => (address, port),
        };
        control.mode = None;
        helper.counters.port_commands += 1;
        let data = DataConnection {
            client: SocketAddr::new(address, port),
            virtual_address: SocketAddr::new(
                key.virtual_address.ip(),
                key.virtual_address.port().wrapping_sub(1),
            ),
            real: SocketAddr::new(real.ip(), real.port().wrapping_sub(1)),
        };
        let client_key = ClientKey {
            proto: ip_proto::TCP,
            client: data.client,
            virtual_address: data.virtual_address,
        };
        let existing = self.table.by_client.get(&client_key).copied();
        self.ftp_listen(now, slot, existing, &data).map(|_| ())
    }

    /// `ip_vs_ftp_out`, before the packet's state transition: rewrite a pending passive
    /// reply and create the passive data connection. `Err(())`: dropped.
    pub(super) fn ftp_output(
        &mut self,
        now: TimeNs,
        slot: u32,
        frame: &mut Vec<u8>,
        meta: &PacketMeta,
    ) -> Result<(), ()> {
        let Some((connection, control)) = self.ftp_control_of(slot) else {
            return Ok(());
        };
        let Some(mode) = control.mode else {
            return Ok(());
        };
        let (key, real) = (connection.key, connection.real);
        let Some(found) = payload(frame, meta).and_then(|p| parse::parse_reply(p, mode, real.ip()))
        else {
            return Ok(());
        };
        let data = DataConnection {
            client: SocketAddr::new(key.client.ip(), 0),
            virtual_address: SocketAddr::new(key.virtual_address.ip(), found.port),
            real: SocketAddr::new(found.address, found.port),
        };
        let real_key = RealKey {
            proto: ip_proto::TCP,
            real: data.real,
            client: data.client,
        };
        let existing = self.table.by_real.get(&real_key).copied();
        // A data connection that cannot be created drops the reply and leaves passive
        // mode pending (`return 0` before `app_data` is reset).
        let data_slot = self.ftp_listen(now, slot, existing, &data)?;
        let advertised = self.table.connections[data_slot as usize]
            .as_ref()
            .map(|c| c.key.virtual_address)
            .expect("live data connection");
        let text = parse::replacement(mode, advertised.ip(), advertised.port());
        let result = self.ftp_mangle(slot, frame, meta, found.start, found.end, &text);
        let helper = self.ftp.as_mut().expect("helper on");
        if let Some(control) = helper.controls.get_mut(&slot) {
            control.mode = None;
        }
        result
    }

    fn ftp_mangle(
        &mut self,
        slot: u32,
        frame: &mut Vec<u8>,
        meta: &PacketMeta,
        start: usize,
        end: usize,
        text: &[u8],
    ) -> Result<(), ()> {
        let helper = self.ftp.as_mut().expect("helper on");
        let seq = meta.tcp.as_ref().map_or(0, |tcp| tcp.seq);
        match seqadj::mangle(frame, meta, start, end, text) {
            Ok(difference) => {
                helper.counters.replies_rewritten += 1;
                if difference != 0 {
                    helper.counters.length_changes += 1;
                    if let Some(control) = helper.controls.get_mut(&slot) {
                        control.seqadj[1].record(seq, difference);
                    }
                }
                Ok(())
            }
            Err(_) => {
                helper.counters.drops += 1;
                Err(())
            }
        }
    }

    /// Find or create a data connection controlled by `control`, and put it in LISTEN
    /// (`ip_vs_conn_new` + `ip_vs_control_add` + `ip_vs_tcp_conn_listen`).
    fn ftp_listen(
        &mut self,
        now: TimeNs,
        control: u32,
        existing: Option<u32>,
        data: &DataConnection,
    ) -> Result<u32, ()> {
        let slot = match existing {
            Some(slot) => slot,
            None => self.ftp_new_data_connection(now, control, data)?,
        };
        if let Some(connection) = self.table.connections[slot as usize].as_mut() {
            connection.state = ProtocolState::Tcp(TcpState::Listen);
            connection.timeout = TcpState::Listen.timeout();
            connection.expires = now + connection.timeout;
        }
        Ok(slot)
    }

    fn ftp_new_data_connection(
        &mut self,
        now: TimeNs,
        control: u32,
        data: &DataConnection,
    ) -> Result<u32, ()> {
        if !self.table.reserve_connection() {
            if let Some(helper) = self.ftp.as_mut() {
                helper.counters.drops += 1;
            }
            return Err(());
        }
        let controller = self.table.connections[control as usize]
            .as_mut()
            .expect("live control connection");
        controller.controlled += 1;
        let (service, dest, forward) = (controller.service, controller.dest, controller.forward);
        self.services[service]
            .dests
            .get_mut(dest)
            .bind(BindKind::Inactive);
        let connection = Connection {
            key: ClientKey {
                proto: ip_proto::TCP,
                client: data.client,
                virtual_address: data.virtual_address,
            },
            service,
            dest,
            real: data.real,
            forward,
            state: ProtocolState::Tcp(TcpState::None),
            inactive: true,
            no_output: forward != Forward::Nat,
            template: None,
            timeout: super::INITIAL_TIMEOUT,
            expires: now + super::INITIAL_TIMEOUT,
            controller: Some(control),
            controlled: 0,
        };
        let slot = self.table.insert_connection(connection);
        let helper = self.ftp.as_mut().expect("helper on");
        helper.counters.data_connections += 1;
        if data.client.port() == 0 {
            helper.no_client_port += 1;
        }
        self.ftp_bind(slot);
        Ok(slot)
    }

    /// `nf_ct_seq_adjust` on a forwarded segment of a control connection whose replies
    /// changed length. `Err(())`: dropped (a partial TCP option).
    pub(super) fn ftp_adjust(
        &mut self,
        slot: u32,
        frame: &mut [u8],
        meta: &PacketMeta,
        reply: bool,
    ) -> Result<(), ()> {
        let Some(helper) = self.ftp.as_mut() else {
            return Ok(());
        };
        let Some(control) = helper.controls.get(&slot) else {
            return Ok(());
        };
        if control.seqadj == [SeqAdjust::default(); 2] {
            return Ok(());
        }
        let (this_way, other_way) = if reply {
            (&control.seqadj[1], &control.seqadj[0])
        } else {
            (&control.seqadj[0], &control.seqadj[1])
        };
        match seqadj::adjust(frame, meta, this_way, other_way) {
            Ok(()) => Ok(()),
            Err(AdjustError::PartialOption | AdjustError::Truncated | AdjustError::TooLong) => {
                helper.counters.drops += 1;
                Err(())
            }
        }
    }
}

/// The TCP payload of a parsed frame (without link padding).
fn payload<'a>(frame: &'a [u8], meta: &PacketMeta) -> Option<&'a [u8]> {
    let start = usize::from(meta.payload_offset);
    let end = usize::from(meta.l3_offset) + meta.ip_len as usize;
    (start > 0 && start < end)
        .then(|| frame.get(start..end))
        .flatten()
}

#[cfg(test)]
mod tests;
