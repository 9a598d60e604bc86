//! The FTP command and reply parsers of `ip_vs_ftp.c` (Linux 6.1), byte for byte.
//!
//! - [`scan_input`]: a client → server segment: `PASV\r\n` or `EPSV[ 1|2]\r\n` anywhere in
//!   it switches the control connection to passive mode; otherwise `PORT h1,h2,h3,h4,p1,p2`
//!   or `EPRT |1|a.b.c.d|port|` at the start of the payload names the client's data
//!   address (active mode).
//! - [`parse_reply`]: a server → client segment while passive mode is pending: a
//!   `227 … (h1,h2,h3,h4,p1,p2)` or `229 … (|||port|)` reply, with the byte range the
//!   kernel replaces.
//!
//! Matching is ASCII case-insensitive as `strncasecmp` is, every number is bounded as the
//! kernel bounds it (octets ≤ 255, ports 1–65535), and a reply cut short by the end of the
//! segment is not a match (the kernel looks at one segment at a time, never reassembles).
//! IPv4 addresses in `EPRT` follow `in4_pton`; IPv6 addresses use the standard parser
//! (the kernel's `in6_pton` accepts the same RFC 4291 text forms; exotic forms it takes
//! or refuses differently are not modelled).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the helper remembers about a control connection (`cp->app_data`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `IP_VS_FTP_ACTIVE`: nothing pending.
    Active,
    /// `IP_VS_FTP_PASV`: a `PASV` was seen; the next `227` reply is rewritten.
    Pasv,
    /// `IP_VS_FTP_EPSV`: an `EPSV` was seen; the next `229` reply is rewritten.
    Epsv,
}

/// What a client → server segment asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputCommand {
    /// Nothing the helper acts on.
    None,
    /// `PASV\r\n`: passive mode on.
    Pasv,
    /// `EPSV\r\n` or `EPSV 1\r\n` (IPv4) / `EPSV 2\r\n` (IPv6): extended passive mode on.
    Epsv,
    /// `PORT` / `EPRT`: the client listens at this address and port.
    Port(IpAddr, u16),
}

/// An address and port found in a payload, with the bytes `start..end` the kernel
/// replaces when it rewrites it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// The address (for a `229` reply without one: the preset, the real server).
    pub address: IpAddr,
    /// The port.
    pub port: u16,
    /// First replaced byte, as an offset in the payload.
    pub start: usize,
    /// One past the last replaced byte.
    pub end: usize,
}

/// `ip_vs_ftp_get_addrport`'s format and mode arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `h1,h2,h3,h4,p1,p2` (PORT, 227).
    Classic,
    /// `<d>af<d>address<d>port<d>` (EPRT, 229); `reply` allows an empty af and address.
    Extended { reply: bool },
}

fn starts_with_ignore_case(data: &[u8], pattern: &[u8]) -> bool {
    data.len() >= pattern.len() && data[..pattern.len()].eq_ignore_ascii_case(pattern)
}

/// `ip_vs_ftp_in`'s scan. `ipv6`: the control connection's family.
pub fn scan_input(payload: &[u8], ipv6: bool) -> InputCommand {
    let mut at = 0;
    while at + 6 <= payload.len() {
        let data = &payload[at..];
        if !ipv6 && starts_with_ignore_case(data, b"PASV\r\n") {
            return InputCommand::Pasv;
        }
        if starts_with_ignore_case(data, b"EPSV") && matches!(data[4], b' ' | b'\r') {
            if data[4] == b' ' {
                // `data > data_limit - 7 || data[6] != '\r'`: stop scanning.
                if data.len() < 7 || data[6] != b'\r' {
                    return InputCommand::None;
                }
                let wanted = if ipv6 { b'2' } else { b'1' };
                if data[5] != wanted {
                    return InputCommand::None;
                }
            }
            return InputCommand::Epsv;
        }
        at += 1;
    }
    let preset = unspecified(ipv6);
    let classic = (!ipv6)
        .then(|| get_addrport(payload, b"PORT", b' ', Format::Classic, preset))
        .flatten();
    let found = classic.or_else(|| {
        let format = Format::Extended { reply: false };
        get_addrport(payload, b"EPRT", b' ', format, preset)
    });
    match found {
        Some(found) => InputCommand::Port(found.address, found.port),
        None => InputCommand::None,
    }
}

/// `ip_vs_ftp_out`'s parse of a server → client segment in `mode`; `server` is the control
/// connection's real server (the address a `229` reply leaves out).
pub fn parse_reply(payload: &[u8], mode: Mode, server: IpAddr) -> Option<Found> {
    match mode {
        Mode::Active => None,
        Mode::Pasv => get_addrport(payload, b"227 ", b'(', Format::Classic, server),
        Mode::Epsv => {
            let format = Format::Extended { reply: true };
            get_addrport(payload, b"229 ", b'(', format, server)
        }
    }
}

fn unspecified(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// `ip_vs_ftp_get_addrport` returning 1; its -1 and 0 are both `None`.
fn get_addrport(
    data: &[u8],
    pattern: &[u8],
    skip: u8,
    format: Format,
    preset: IpAddr,
) -> Option<Found> {
    if !starts_with_ignore_case(data, pattern) {
        return None;
    }
    let mut s = pattern.len();
    let mut found = false;
    loop {
        let c = *data.get(s)?;
        if !found {
            // "(" is optional for the classic format: a digit starts the address.
            if format == Format::Classic && c.is_ascii_digit() {
                break;
            }
            if c == skip {
                found = true;
            }
        } else if c != skip {
            break;
        }
        s += 1;
    }
    match format {
        Format::Classic => classic(data, s),
        Format::Extended { reply } => extended(data, s, reply, preset),
    }
}

fn classic(data: &[u8], start: usize) -> Option<Found> {
    let mut parts = [0u8; 6];
    let mut i = 0;
    let mut at = start;
    loop {
        let c = *data.get(at)?;
        if c.is_ascii_digit() {
            let value = u32::from(parts[i]) * 10 + u32::from(c - b'0');
            if value > 255 {
                return None;
            }
            parts[i] = value as u8;
        } else if c == b',' && i < 5 {
            i += 1;
        } else {
            break;
        }
        at += 1;
    }
    (i == 5).then(|| Found {
        address: IpAddr::V4(Ipv4Addr::new(parts[0], parts[1], parts[2], parts[3])),
        port: u16::from_be_bytes([parts[4], parts[5]]),
        start,
        end: at,
    })
}

fn extended(data: &[u8], start: usize, reply: bool, preset: IpAddr) -> Option<Found> {
    let ipv6 = preset.is_ipv6();
    let mut s = start;
    let delimiter = *data.get(s)?;
    if !(33..=126).contains(&delimiter) {
        return None;
    }
    s += 1;
    let mut address = preset;
    if *data.get(s)? == delimiter {
        // The address family (and then the address) may be left out of a 229 reply.
        if !reply {
            return None;
        }
        s += 1;
        if *data.get(s)? != delimiter {
            return None;
        }
        s += 1;
    } else {
        let family = if ipv6 { b'2' } else { b'1' };
        if data[s] != family {
            return None;
        }
        s += 1;
        if *data.get(s)? != delimiter {
            return None;
        }
        s += 1;
        if s == data.len() {
            return None;
        }
        let (parsed, after) = if ipv6 {
            ipv6_text(data, s, delimiter)?
        } else {
            in4_pton(data, s, delimiter)?
        };
        address = parsed;
        s = after;
        if *data.get(s)? != delimiter {
            return None;
        }
        s += 1;
    }
    let mut port: u32 = 0;
    loop {
        let c = *data.get(s)?;
        if !c.is_ascii_digit() {
            break;
        }
        port = port * 10 + u32::from(c - b'0');
        if port > 65535 {
            return None;
        }
        s += 1;
    }
    if port == 0 || data[s] != delimiter {
        return None;
    }
    Some(Found {
        address,
        port: port as u16,
        start,
        end: s + 1,
    })
}

/// `in4_pton(s, data_limit - s, addr, delimiter, &end)`: four decimal octets separated by
/// dots, ended by the delimiter, a NUL, a colon or the end of the data; the offset where
/// it stopped.
fn in4_pton(data: &[u8], start: usize, delimiter: u8) -> Option<(IpAddr, usize)> {
    let mut octets = [0u8; 4];
    let (mut i, mut value, mut digits) = (0usize, 0u32, false);
    let mut s = start;
    loop {
        let c = data.get(s).copied().unwrap_or(0);
        let terminator = c == delimiter || c == 0 || c == b':';
        if terminator || c == b'.' {
            if !digits {
                return None;
            }
            octets[i] = value as u8;
            i += 1;
            (value, digits) = (0, false);
            if terminator {
                return (i == 4).then_some((IpAddr::V4(octets.into()), s));
            }
        } else if c.is_ascii_digit() {
            value = value * 10 + u32::from(c - b'0');
            digits = true;
            if value > 255 {
                return None;
            }
        } else {
            return None;
        }
        if i >= 4 {
            return None;
        }
        s += 1;
    }
}

fn ipv6_text(data: &[u8], start: usize, delimiter: u8) -> Option<(IpAddr, usize)> {
    let length = data[start..].iter().position(|&c| c == delimiter)?;
    let text = std::str::from_utf8(&data[start..start + length]).ok()?;
    let address: Ipv6Addr = text.parse().ok()?;
    Some((IpAddr::V6(address), start + length))
}

/// The text the kernel writes over `start..end` of a reply: `h1,h2,h3,h4,p1,p2` for a 227
/// (the virtual address and port), `|||port|` for a 229.
pub fn replacement(mode: Mode, address: IpAddr, port: u16) -> Vec<u8> {
    match (mode, address) {
        (Mode::Pasv, IpAddr::V4(v4)) => {
            let [a, b, c, d] = v4.octets();
            format!("{a},{b},{c},{d},{},{}", port >> 8, port & 0xff).into_bytes()
        }
        (Mode::Epsv, _) => format!("|||{port}|").into_bytes(),
        _ => Vec::new(),
    }
}
