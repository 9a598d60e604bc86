//! SACK blocks through the SYN proxy, as fixture packets: after a cookie handshake and the
//! proxy's handshake with the server, the client's SACK blocks (acknowledging server data,
//! in the cookie's sequence space) are shifted into the server's space like the ACK number,
//! and the server's SACK blocks (acknowledging client data, whose numbers the proxy does not
//! shift) pass unchanged — the kernel's SYNPROXY with `nf_ct_sack_adjust`. Checksums stay
//! valid, timestamps are translated alongside.

mod shield_common;

use datapath::packet::builder::PacketBuilder;
use datapath::packet::tcp_flags;
use datapath::shield::Shield;
use datapath::shield::emit::tcp_checksum;
use shield_common::*;

const MS: u64 = 1_000_000;
const CLIENT: &str = "198.51.100.7";
const VIP: &str = "192.0.2.10";
const CLIENT_ISN: u32 = 0x1000_0000;
const SERVER_ISN: u32 = 0x7000_0000;
const CLIENT_TSVAL: u32 = 5_000;
const SERVER_TSVAL: u32 = 900_000;

/// Append raw TCP option bytes (a multiple of 4) to a built IPv4 frame without VLAN,
/// fixing the data offset, lengths and checksums.
fn with_options(frame: &[u8], extra: &[u8]) -> Vec<u8> {
    assert_eq!(extra.len() % 4, 0);
    let (ip, tcp) = (14, 34);
    let header_len = usize::from(frame[tcp + 12] >> 4) * 4;
    let mut out = frame[..tcp + header_len].to_vec();
    out.extend_from_slice(extra);
    out.extend_from_slice(&frame[tcp + header_len..]);
    out[tcp + 12] = (((header_len + extra.len()) / 4) as u8) << 4;
    let total = (out.len() - ip) as u16;
    out[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
    out[ip + 10..ip + 12].fill(0);
    let ip_sum = !fold(&out[ip..tcp]);
    out[ip + 10..ip + 12].copy_from_slice(&ip_sum.to_be_bytes());
    out[tcp + 16..tcp + 18].fill(0);
    let sum = tcp_checksum(addr(&out, ip + 12), addr(&out, ip + 16), &out[tcp..]);
    out[tcp + 16..tcp + 18].copy_from_slice(&sum.to_be_bytes());
    out
}

fn fold(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn addr(frame: &[u8], at: usize) -> std::net::IpAddr {
    let octets: [u8; 4] = frame[at..at + 4].try_into().unwrap();
    std::net::IpAddr::from(octets)
}

/// `NOP NOP SACK(len)` with the given blocks.
fn sack(blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut option = vec![1, 1, 5, (2 + 8 * blocks.len()) as u8];
    for (left, right) in blocks {
        option.extend_from_slice(&left.to_be_bytes());
        option.extend_from_slice(&right.to_be_bytes());
    }
    option
}

/// The SACK blocks of a frame (NOP NOP SACK layout as written by [`sack`]).
fn blocks_of(frame: &[u8]) -> Vec<(u32, u32)> {
    let tcp = 34;
    let header_len = usize::from(frame[tcp + 12] >> 4) * 4;
    let options = &frame[tcp + 20..tcp + header_len];
    let at = options.iter().position(|b| *b == 5).expect("a SACK option");
    let len = usize::from(options[at + 1]);
    options[at + 2..at + len]
        .chunks(8)
        .map(|block| {
            let left = u32::from_be_bytes(block[..4].try_into().unwrap());
            let right = u32::from_be_bytes(block[4..].try_into().unwrap());
            (left, right)
        })
        .collect()
}

fn from_client() -> PacketBuilder {
    tcp(CLIENT, 40_000, VIP, 443)
}

fn from_server() -> PacketBuilder {
    tcp(VIP, 443, CLIENT, 40_000)
}

/// A proxied connection: cookie handshake with the client, the proxy's with the server.
/// Returns the cookie (the client's view of the server ISN) and the cookie TSval.
fn proxied(shield: &mut Shield) -> (u32, u32) {
    let syn = from_client()
        .syn()
        .seq_ack(CLIENT_ISN, 0)
        .mss(1460)
        .sack_permitted()
        .timestamps(CLIENT_TSVAL, 0)
        .window_scale(7)
        .build();
    let answer = run(shield, MS, &syn, 0);
    assert_eq!(answer.flow, REPLY);
    let syn_ack = meta_of(&answer.emitted[0].bytes);
    let cookie = syn_ack.tcp.unwrap().seq;
    let cookie_tsval = syn_ack.tcp.unwrap().options.timestamps.unwrap().0;
    let ack = from_client()
        .seq_ack(CLIENT_ISN + 1, cookie.wrapping_add(1))
        .timestamps(CLIENT_TSVAL + 1, cookie_tsval)
        .build();
    let opened = run(shield, 2 * MS, &ack, 0);
    assert_eq!(opened.flow, REPLY, "the proxy's SYN to the server");
    let server_syn_ack = from_server()
        .syn_ack()
        .seq_ack(SERVER_ISN, CLIENT_ISN + 1)
        .mss(1460)
        .sack_permitted()
        .timestamps(SERVER_TSVAL, CLIENT_TSVAL + 1)
        .window_scale(7)
        .build();
    let completed = run(shield, 3 * MS, &server_syn_ack, 1);
    assert_eq!(
        completed.flow, REPLY,
        "ACK to the server, window update to the client"
    );
    (cookie, cookie_tsval)
}

#[test]
fn sack_blocks_are_translated_in_both_directions() {
    let mut shield = shield(
        r#"
        syn_cookies = "on"
        [[context]]
        dst = "192.0.2.10"
        protected_tcp_ports = [443]
        "#,
    );
    let (cookie, cookie_tsval) = proxied(&mut shield);
    let delta = cookie.wrapping_sub(SERVER_ISN);
    // The client saw server bytes 1..1001 and 2001..3001 (client view: cookie + n).
    let client_blocks = [
        (cookie.wrapping_add(2001), cookie.wrapping_add(3001)),
        (cookie.wrapping_add(4001), cookie.wrapping_add(4501)),
    ];
    let client_ack = with_options(
        &from_client()
            .seq_ack(CLIENT_ISN + 1, cookie.wrapping_add(1001))
            .timestamps(CLIENT_TSVAL + 2, cookie_tsval)
            .build(),
        &sack(&client_blocks),
    );
    let out = run(&mut shield, 4 * MS, &client_ack, 0);
    assert_eq!(out.flow, PASS);
    let meta = meta_of(&out.frame);
    assert_eq!(meta.invalid, None, "checksums still valid");
    assert_eq!(
        meta.tcp.unwrap().ack,
        SERVER_ISN + 1001,
        "ACK in the server's space"
    );
    assert_eq!(
        meta.tcp.unwrap().options.timestamps,
        Some((CLIENT_TSVAL + 2, SERVER_TSVAL)),
        "TSecr back in the server's clock"
    );
    assert_eq!(
        blocks_of(&out.frame),
        [
            (SERVER_ISN + 2001, SERVER_ISN + 3001),
            (SERVER_ISN + 4001, SERVER_ISN + 4501),
        ]
    );
    assert_eq!(
        blocks_of(&out.frame)[0].0,
        client_blocks[0].0.wrapping_sub(delta)
    );

    // The server saw client bytes 501..1001 but not 1..501: its SACK block is in the
    // client's own space, which the proxy does not shift.
    let server_blocks = [(CLIENT_ISN + 501, CLIENT_ISN + 1001)];
    let server_ack = with_options(
        &from_server()
            .seq_ack(SERVER_ISN + 1001, CLIENT_ISN + 1)
            .timestamps(SERVER_TSVAL + 7, CLIENT_TSVAL + 2)
            .payload(b"more data")
            .build(),
        &sack(&server_blocks),
    );
    let back = run(&mut shield, 5 * MS, &server_ack, 1);
    assert_eq!(back.flow, PASS);
    let meta = meta_of(&back.frame);
    assert_eq!(meta.invalid, None, "checksums still valid");
    let tcp = meta.tcp.unwrap();
    assert_eq!(
        tcp.seq,
        cookie.wrapping_add(1001),
        "SEQ in the client's view"
    );
    assert_eq!(tcp.ack, CLIENT_ISN + 1);
    assert_eq!(
        tcp.options.timestamps,
        Some((cookie_tsval + 7, CLIENT_TSVAL + 2))
    );
    assert_eq!(blocks_of(&back.frame), server_blocks);
    assert_eq!(meta.tcp_flags & tcp_flags::ACK, tcp_flags::ACK);
    assert_eq!(&back.frame[back.frame.len() - 9..], b"more data");
}
