//! Forwarding methods: NAT (rewrite destination / un-NAT the source of replies), DR
//! (rewrite the destination MAC only) and TUN (IP-in-IP encapsulation).
//!
//! NAT uses the incremental checksum rewrites of [`crate::nat`]. DR needs an Ethernet
//! frame; other link types pass unchanged. TUN inserts an outer IPv4 header (protocol 4
//! for IPv4 inside, 41 for IPv6 inside) or an outer IPv6 header, from the virtual IP to the
//! real server, copying TTL/hop limit, TOS/traffic class and (IPv4) the DF bit from the
//! inner header; the kernel takes the outer source from the route, which lbsim does not
//! model, so the virtual IP is used. Nothing here parses: offsets come from `PacketMeta`.

use std::net::{IpAddr, SocketAddr};

use smoltcp::wire::checksum;

use super::dest::Forward;
use crate::packet::flow::FlowKey;
use crate::packet::rewrite::{End, RewriteError, rewrite};
use crate::packet::{L3, PacketMeta, ip_proto};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;

/// Forward a client → server packet of a connection; returns the flow as it leaves.
pub(super) fn forward_input(
    frame: &mut Vec<u8>,
    meta: &PacketMeta,
    flow: &FlowKey,
    forward: Forward,
    real: SocketAddr,
    mac: [u8; 6],
    ethernet: bool,
) -> Result<FlowKey, RewriteError> {
    match forward {
        Forward::Nat => {
            rewrite(frame, meta, End::Destination, real)?;
            Ok(FlowKey {
                destination: real,
                ..*flow
            })
        }
        Forward::Dr => {
            if ethernet && frame.len() >= 6 {
                frame[..6].copy_from_slice(&mac);
            }
            Ok(*flow)
        }
        Forward::Tun => {
            encapsulate(frame, meta, flow.destination.ip(), real.ip(), ethernet)?;
            Ok(*flow)
        }
    }
}

/// Un-NAT a server → client reply: its source becomes the virtual address.
pub(super) fn forward_reply(
    frame: &mut [u8],
    meta: &PacketMeta,
    flow: &FlowKey,
    virtual_address: SocketAddr,
) -> Result<FlowKey, RewriteError> {
    rewrite(frame, meta, End::Source, virtual_address)?;
    Ok(FlowKey {
        source: virtual_address,
        ..*flow
    })
}

fn outer_ipv4(meta: &PacketMeta, inner: &[u8], source: IpAddr, destination: IpAddr) -> Vec<u8> {
    let (IpAddr::V4(source), IpAddr::V4(destination)) = (source, destination) else {
        return Vec::new();
    };
    let (tos, dont_fragment, protocol) = match meta.l3 {
        L3::Ipv4 => (inner[1], inner[6] & 0x40, IPPROTO_IPIP),
        _ => (((inner[0] & 0x0f) << 4) | (inner[1] >> 4), 0, IPPROTO_IPV6),
    };
    let total = (20 + meta.ip_len) as u16;
    let mut header = vec![0x45, tos];
    header.extend_from_slice(&total.to_be_bytes());
    header.extend_from_slice(&[0, 0, dont_fragment, 0, meta.ttl, protocol, 0, 0]);
    header.extend_from_slice(&source.octets());
    header.extend_from_slice(&destination.octets());
    let sum = !checksum::data(&header);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    header
}

fn outer_ipv6(meta: &PacketMeta, source: IpAddr, destination: IpAddr) -> Vec<u8> {
    let (IpAddr::V6(source), IpAddr::V6(destination)) = (source, destination) else {
        return Vec::new();
    };
    let next = if meta.l3 == L3::Ipv4 {
        IPPROTO_IPIP
    } else {
        IPPROTO_IPV6
    };
    let mut header = vec![0x60, 0, 0, 0];
    header.extend_from_slice(&(meta.ip_len as u16).to_be_bytes());
    header.extend_from_slice(&[next, meta.ttl]);
    header.extend_from_slice(&source.octets());
    header.extend_from_slice(&destination.octets());
    header
}

fn encapsulate(
    frame: &mut Vec<u8>,
    meta: &PacketMeta,
    source: IpAddr,
    destination: IpAddr,
    ethernet: bool,
) -> Result<(), RewriteError> {
    let l3 = usize::from(meta.l3_offset);
    let inner = frame.get(l3..l3 + 8).ok_or(RewriteError::Truncated)?;
    let source = match (source, destination) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => source,
        (_, IpAddr::V4(_)) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        (_, IpAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let header = match destination {
        IpAddr::V4(_) => outer_ipv4(meta, inner, source, destination),
        IpAddr::V6(_) => outer_ipv6(meta, source, destination),
    };
    if header.is_empty() || !matches!(meta.proto, Some(ip_proto::TCP | ip_proto::UDP)) {
        return Err(RewriteError::NotTransport);
    }
    if ethernet && l3 >= 2 {
        let ethertype = if destination.is_ipv4() {
            ETHERTYPE_IPV4
        } else {
            ETHERTYPE_IPV6
        };
        frame[l3 - 2..l3].copy_from_slice(&ethertype.to_be_bytes());
    }
    frame.splice(l3..l3, header);
    Ok(())
}
