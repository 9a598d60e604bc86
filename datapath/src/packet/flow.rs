//! [`FlowKey`]: a TCP/UDP flow as seen on the wire (protocol, source and destination
//! address and port), the key of the director's NAT bookkeeping and of connection tracking.
//! Its `Hash` is packed for the keyed hash of packet-keyed tables ([`crate::hash::keyed`]).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use super::{PacketMeta, ip_proto};
use crate::hash::keyed::write_socket;

/// A flow as seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    /// IP protocol.
    pub proto: u8,
    /// Source address and port (port 0 without ports).
    pub source: SocketAddr,
    /// Destination address and port.
    pub destination: SocketAddr,
}

impl FlowKey {
    /// The flow of a parsed TCP/UDP packet.
    pub fn from_meta(meta: &PacketMeta) -> Option<Self> {
        let proto = meta.proto?;
        if proto != ip_proto::TCP && proto != ip_proto::UDP {
            return None;
        }
        Some(Self {
            proto,
            source: SocketAddr::new(meta.src?, meta.sport?),
            destination: SocketAddr::new(meta.dst?, meta.dport?),
        })
    }

    /// The same flow seen from the other end.
    pub fn reversed(&self) -> Self {
        Self {
            proto: self.proto,
            source: self.destination,
            destination: self.source,
        }
    }
}

impl Hash for FlowKey {
    /// Packed (addresses as one integer): fewer SipHash rounds than the derived form.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.proto);
        write_socket(state, &self.source);
        write_socket(state, &self.destination);
    }
}
