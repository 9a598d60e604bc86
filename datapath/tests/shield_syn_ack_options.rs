//! Fixture table for the options of cookie SYN-ACKs: input SYN options → expected SYN-ACK
//! option bytes, as nft synproxy builds them (`nf_synproxy_core.c`: `synproxy_options_size`,
//! `synproxy_build_options`; `nft_synproxy.c`: `nft_synproxy_tcp_options` with the flags
//! `mss wscale timestamp sack-perm`):
//! - MSS (`syn_proxy_mss`) only when the client's SYN carried an MSS option;
//! - timestamps only when the client's SYN carried them: `4 2 8 10` with SACK-permitted,
//!   else `1 1 8 10`; TSval = millisecond clock with the low 6 bits holding the client's
//!   window scale (15: none, clamped to 14) and SACK (bit 4); never ECN (bit 5), which the
//!   rule's flags mask off;
//! - SACK-permitted and window scale (`1 3 3 syn_proxy_wscale`) only with timestamps;
//! - flags SYN+ACK only (no ECE), window 0.
//!
//! The cookie of a SYN without MSS encodes the first table value (536, IPv6 1220), as the
//! kernel's `__cookie_v4_init_sequence` does with MSS 0, and the proxy's SYN to the server
//! carries that MSS.

mod shield_common;

use datapath::packet::builder::PacketBuilder;
use datapath::packet::tcp_flags;
use datapath::shield::SessionKey;
use datapath::shield::Toward;
use datapath::shield::cookie::SynCookies;
use shield_common::*;

const CONFIG: &str = r#"
syn_cookies = "on"
surge = "off"
ttl_filter = "off"
syn_proxy_mss = 1412
syn_proxy_wscale = 9

[[context]]
dst = "192.0.2.10"
protected_tcp_ports = [443]

[[context]]
dst = "2001:db8::10"
protected_tcp_ports = [443]
"#;

/// 64 063 ms: the low 6 bits of the millisecond clock are all ones, so the cookie TSval is
/// `64 000 | option bits` (never ahead of the clock, no adjustment).
const NOW: u64 = 64_063_000_000;
const TS_BASE: u32 = 64_000;
const CLIENT_TSVAL: u32 = 0x0102_0304;
const ISN: u32 = 0x1234_5678;

/// The options of a client SYN.
#[derive(Clone, Copy, Default)]
struct SynOptions {
    mss: Option<u16>,
    window_scale: Option<u8>,
    sack: bool,
    timestamps: bool,
    ecn: bool,
}

struct Row {
    name: &'static str,
    v6: bool,
    syn: SynOptions,
    /// Expected SYN-ACK option bytes, TSval/TSecr written out.
    options: Vec<u8>,
}

const MSS_OPTION: [u8; 4] = [2, 4, 0x05, 0x84]; // 1412
const WSCALE_OPTION: [u8; 4] = [1, 3, 3, 9];

/// `kind` (`[1, 1, 8, 10]` or `[4, 2, 8, 10]`), then TSval with `bits`, then the client's
/// TSval echoed.
fn timestamps(kind: [u8; 4], bits: u32) -> Vec<u8> {
    let mut bytes = kind.to_vec();
    bytes.extend_from_slice(&(TS_BASE | bits).to_be_bytes());
    bytes.extend_from_slice(&CLIENT_TSVAL.to_be_bytes());
    bytes
}

const NOP_TS: [u8; 4] = [1, 1, 8, 10];
const SACK_TS: [u8; 4] = [4, 2, 8, 10];

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn rows() -> Vec<Row> {
    let mss = Some(1460);
    let row = |name, syn, options| Row {
        name,
        v6: false,
        syn,
        options,
    };
    let all = SynOptions {
        mss,
        window_scale: Some(7),
        sack: true,
        timestamps: true,
        ecn: false,
    };
    vec![
        row("no options", SynOptions::default(), vec![]),
        row(
            "MSS",
            SynOptions {
                mss,
                ..SynOptions::default()
            },
            MSS_OPTION.to_vec(),
        ),
        row(
            "MSS, SACK, window scale without timestamps: MSS only",
            SynOptions {
                timestamps: false,
                ..all
            },
            MSS_OPTION.to_vec(),
        ),
        row(
            "SACK and window scale without MSS or timestamps: nothing",
            SynOptions {
                mss: None,
                timestamps: false,
                ..all
            },
            vec![],
        ),
        row(
            "timestamps only",
            SynOptions {
                timestamps: true,
                ..SynOptions::default()
            },
            timestamps(NOP_TS, 0xf),
        ),
        row(
            "MSS and timestamps",
            SynOptions {
                mss,
                timestamps: true,
                ..SynOptions::default()
            },
            concat(&[&MSS_OPTION, &timestamps(NOP_TS, 0xf)]),
        ),
        row(
            "MSS, timestamps, SACK",
            SynOptions {
                window_scale: None,
                ..all
            },
            concat(&[&MSS_OPTION, &timestamps(SACK_TS, 0x1f)]),
        ),
        row(
            "MSS, timestamps, window scale 3",
            SynOptions {
                window_scale: Some(3),
                sack: false,
                ..all
            },
            concat(&[&MSS_OPTION, &timestamps(NOP_TS, 3), &WSCALE_OPTION]),
        ),
        row(
            "everything",
            all,
            concat(&[&MSS_OPTION, &timestamps(SACK_TS, 0x17), &WSCALE_OPTION]),
        ),
        row(
            "timestamps, SACK, window scale without MSS",
            SynOptions { mss: None, ..all },
            concat(&[&timestamps(SACK_TS, 0x17), &WSCALE_OPTION]),
        ),
        row(
            "window scale 15 is clamped to 14",
            SynOptions {
                window_scale: Some(15),
                ..all
            },
            concat(&[&MSS_OPTION, &timestamps(SACK_TS, 0x1e), &WSCALE_OPTION]),
        ),
        row(
            "ECE+CWR: no ECN bit in TSval, no ECE",
            SynOptions { ecn: true, ..all },
            concat(&[&MSS_OPTION, &timestamps(SACK_TS, 0x17), &WSCALE_OPTION]),
        ),
        Row {
            name: "IPv6, no options",
            v6: true,
            syn: SynOptions::default(),
            options: vec![],
        },
        Row {
            name: "IPv6, everything",
            v6: true,
            syn: all,
            options: concat(&[&MSS_OPTION, &timestamps(SACK_TS, 0x17), &WSCALE_OPTION]),
        },
        Row {
            name: "IPv6, ECE+CWR and timestamps without MSS",
            v6: true,
            syn: SynOptions {
                mss: None,
                window_scale: None,
                sack: false,
                timestamps: true,
                ecn: true,
            },
            options: timestamps(NOP_TS, 0xf),
        },
    ]
}

fn endpoints(v6: bool) -> (&'static str, &'static str) {
    if v6 {
        ("2001:db8:1::5", "2001:db8::10")
    } else {
        ("198.51.100.7", "192.0.2.10")
    }
}

fn syn_frame(v6: bool, options: SynOptions) -> Vec<u8> {
    let (client, server) = endpoints(v6);
    let mut flags = tcp_flags::SYN;
    if options.ecn {
        flags |= tcp_flags::ECE | tcp_flags::CWR;
    }
    let mut builder: PacketBuilder = tcp(client, 40_000, server, 443)
        .flags(flags)
        .seq_ack(ISN, 0);
    if let Some(mss) = options.mss {
        builder = builder.mss(mss);
    }
    if options.sack {
        builder = builder.sack_permitted();
    }
    if options.timestamps {
        builder = builder.timestamps(CLIENT_TSVAL, 0);
    }
    if let Some(shift) = options.window_scale {
        builder = builder.window_scale(shift);
    }
    builder.build()
}

/// The TCP option bytes of a frame.
fn tcp_options(frame: &[u8]) -> Vec<u8> {
    let meta = meta_of(frame);
    let l4 = usize::from(meta.l4_offset);
    let header_len = usize::from(frame[l4 + 12] >> 4) * 4;
    frame[l4 + 20..l4 + header_len].to_vec()
}

#[test]
fn cookie_syn_ack_options_follow_nft_synproxy() {
    for row in rows() {
        let mut shield = shield(CONFIG);
        let syn = syn_frame(row.v6, row.syn);
        let outcome = run(&mut shield, NOW, &syn, 0);
        assert_eq!(outcome.flow, REPLY, "{}", row.name);
        assert_eq!(outcome.emitted.len(), 1, "{}", row.name);
        let reply = &outcome.emitted[0].bytes;
        assert_eq!(tcp_options(reply), row.options, "{}: options", row.name);
        let meta = meta_of(reply);
        let tcp = meta.tcp.expect("a TCP reply");
        assert_eq!(
            meta.tcp_flags,
            tcp_flags::SYN | tcp_flags::ACK,
            "{}: flags",
            row.name
        );
        assert_eq!(tcp.window, 0, "{}: window", row.name);
        assert_eq!(tcp.ack, ISN.wrapping_add(1), "{}: ack", row.name);
        let request = meta_of(&syn);
        let flow = SessionKey {
            src: request.src.unwrap(),
            dst: request.dst.unwrap(),
            sport: 40_000,
            dport: 443,
        };
        let (cookie, _) = SynCookies::new(SEED).generate(NOW, &flow, ISN, row.syn.mss.unwrap_or(0));
        assert_eq!(tcp.seq, cookie, "{}: cookie", row.name);
        let table_first = if row.v6 { 1220 } else { 536 };
        let expected_mss = match row.syn.mss {
            Some(offered) => SynCookies::mss_index(&flow, offered).1,
            None => table_first,
        };
        let checked = SynCookies::new(SEED).check(NOW, &flow, ISN, cookie);
        assert_eq!(checked, Ok(expected_mss), "{}: cookie MSS", row.name);
    }
}

/// A client without an MSS option completes the cookie handshake: the proxy's SYN to the
/// server carries the MSS the cookie encoded, the table's first value (536; IPv6 1220).
#[test]
fn proxy_syn_carries_the_default_mss_for_a_syn_without_one() {
    for (v6, default_mss) in [(false, 536), (true, 1220)] {
        let mut shield = shield(CONFIG);
        let syn = syn_frame(v6, SynOptions::default());
        let answer = run(&mut shield, NOW, &syn, 0);
        let cookie = meta_of(&answer.emitted[0].bytes).tcp.unwrap().seq;
        let (client, server) = endpoints(v6);
        let ack = tcp(client, 40_000, server, 443)
            .seq_ack(ISN.wrapping_add(1), cookie.wrapping_add(1))
            .build();
        let opened = run(&mut shield, NOW + 1_000_000, &ack, 0);
        assert_eq!(opened.flow, REPLY);
        assert_eq!(opened.emitted.len(), 1);
        assert_eq!(opened.emitted[0].toward, Toward::Server);
        let proxy_syn = meta_of(&opened.emitted[0].bytes);
        assert_eq!(proxy_syn.tcp_flags, tcp_flags::SYN);
        let options = proxy_syn.tcp.unwrap().options;
        assert_eq!(options.mss, Some(default_mss), "v6 {v6}");
        assert_eq!(options.timestamps, None);
        assert_eq!(options.window_scale, None);
        assert!(!options.sack_permitted);
    }
}
