//! `sim director which`: which real server would a new connection get?
//!
//! Loads the `[[director]]` tables of an appliance file (other top-level keys `flows` and
//! `shield` are accepted and ignored here), then feeds each `--packet` in order as a new
//! connection (TCP SYN or UDP datagram) at successive virtual nanoseconds, so stateful
//! schedulers (rr, wrr, lc, …) advance exactly as they would. Packet syntax:
//! `tcp SRC:PORT > VIP:PORT [mark N]` (`udp` likewise; `mark` is the firewall mark flows
//! would set). This command does not run shield or flows.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use datapath::director::{DirectorOptions, Directors};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, parse};
use serde::Serialize;

/// `sim director …`.
#[derive(Args, Debug)]
pub struct DirectorArgs {
    #[command(subcommand)]
    command: DirectorCommand,
}

#[derive(Subcommand, Debug)]
enum DirectorCommand {
    /// Which real server a new connection would get (packets are fed in order).
    #[command(after_help = "Examples:
  sim director which --appliance scenarios/appliances/game.toml --packet 'tcp 198.51.100.7:40000 > 10.10.10.10:25565'
  sim director which --appliance scenarios/appliances/game.toml --packet 'tcp 198.51.100.7:40000 > 10.10.10.10:25565' --packet 'tcp 198.51.100.8:40000 > 10.10.10.10:25565' --json")]
    Which(WhichArgs),
}

/// `sim director which`.
#[derive(Args, Debug)]
pub struct WhichArgs {
    /// Appliance file with `[[director]]` tables.
    #[arg(long)]
    appliance: PathBuf,
    /// `tcp SRC:PORT > VIP:PORT [mark N]`; repeatable, fed in order.
    #[arg(long = "packet", required = true)]
    packets: Vec<String>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

/// One parsed `--packet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PacketSpec {
    udp: bool,
    source: SocketAddr,
    destination: SocketAddr,
    mark: Option<u32>,
}

fn parse_packet(text: &str) -> anyhow::Result<PacketSpec> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let syntax = || format!("packet {text:?}: expected 'tcp SRC:PORT > VIP:PORT [mark N]'");
    let (proto, source, arrow, destination) = match words.as_slice() {
        [p, s, a, d, ..] => (*p, *s, *a, *d),
        _ => bail!(syntax()),
    };
    let udp = match proto {
        "tcp" => false,
        "udp" => true,
        _ => bail!(syntax()),
    };
    if arrow != ">" {
        bail!(syntax());
    }
    let mark = match &words[4..] {
        [] => None,
        ["mark", value] => Some(value.parse().with_context(syntax)?),
        _ => bail!(syntax()),
    };
    Ok(PacketSpec {
        udp,
        source: source.parse().with_context(syntax)?,
        destination: destination.parse().with_context(syntax)?,
        mark,
    })
}

/// One answer of `sim director which`.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// The packet as given.
    pub packet: String,
    /// The director that decided.
    pub director: Option<String>,
    /// Its verdict.
    pub verdict: String,
    /// The real server chosen, if any.
    pub backend: Option<String>,
}

fn frame(spec: &PacketSpec) -> anyhow::Result<Vec<u8>> {
    if spec.source.is_ipv4() != spec.destination.is_ipv4() {
        bail!("source and destination of different address families");
    }
    let builder = PacketBuilder::eth().ip(spec.source.ip(), spec.destination.ip());
    let (sport, dport) = (spec.source.port(), spec.destination.port());
    Ok(if spec.udp {
        builder.udp(sport, dport).build()
    } else {
        builder.tcp(sport, dport).syn().build()
    })
}

/// What `sim director which` answers for one `--packet` fed at virtual time `now`: the
/// real server (`backend`, as text) among the rest.
pub fn answer(directors: &mut Directors, now: u64, text: &str) -> anyhow::Result<Answer> {
    let spec = parse_packet(text)?;
    let mut bytes = frame(&spec)?;
    let meta = parse(LinkType::Ethernet, &bytes, bytes.len() as u32, 0);
    let (director, verdict, backend) = match directors.process(now, &mut bytes, &meta, spec.mark) {
        ControlFlow::Continue(()) => (None, "not for a director".to_string(), None),
        ControlFlow::Break(decision) => {
            let name = directors.service(decision.service).spec.name.clone();
            let verdict = match decision.verdict.drop_reason() {
                Some(reason) => format!("drop {}", reason.name()),
                None => decision.verdict.name().to_string(),
            };
            (Some(name), verdict, decision.backend.map(|b| b.to_string()))
        }
    };
    Ok(Answer {
        packet: text.to_string(),
        director,
        verdict,
        backend,
    })
}

/// Load the appliance file and build the directors.
pub fn load(path: &std::path::Path) -> anyhow::Result<Directors> {
    let file = crate::appliance::ApplianceConfig::load(path)?;
    Directors::build(&file.director, DirectorOptions::default())
        .with_context(|| format!("in {}", path.display()))
}

/// Run `sim director …`.
pub fn run(args: &DirectorArgs) -> anyhow::Result<ExitCode> {
    let DirectorCommand::Which(which) = &args.command;
    let mut directors = load(&which.appliance)?;
    for (index, text) in which.packets.iter().enumerate() {
        let answer = answer(&mut directors, index as u64, text)?;
        if which.json {
            println!("{}", serde_json::to_string(&answer)?);
        } else {
            let director = answer.director.as_deref().unwrap_or("-");
            let backend = answer.backend.as_deref().unwrap_or("-");
            println!(
                "{}  ->  {director} {} {backend}",
                answer.packet, answer.verdict
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_syntax() {
        let spec = parse_packet("tcp 198.51.100.7:40000 > 192.0.2.10:80 mark 80").unwrap();
        assert_eq!(spec.mark, Some(80));
        assert!(!spec.udp);
        assert!(parse_packet("tcp 1.2.3.4:1 -> 5.6.7.8:2").is_err());
    }

    #[test]
    fn wrr_sequence_from_an_appliance_file() {
        let dir = std::env::temp_dir().join(format!("lbsim-director-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("appliance.toml");
        std::fs::write(
            &path,
            r#"flows = "web.flowmgr"
[shield]
syn_cookies = "auto"
[[director]]
name = "web"
vip = "192.0.2.10"
port = 80
proto = "tcp"
scheduler = "wrr"
real = [{ addr = "10.0.1.4:80", weight = 2 }, { addr = "10.0.1.3:80", weight = 3 }, { addr = "10.0.1.2:80", weight = 4 }]
"#,
        )
        .unwrap();
        let mut directors = load(&path).unwrap();
        let got: Vec<String> = (0..9)
            .map(|i| {
                let text = format!("tcp 198.51.100.7:{} > 192.0.2.10:80", 1000 + i);
                answer(&mut directors, i, &text).unwrap().backend.unwrap()
            })
            .collect();
        let short: Vec<&str> = got.iter().map(|b| &b[7..8]).collect();
        // Config lists .4 (2), .3 (3), .2 (4), added one by one as `ipvsadm -a` does: the
        // kernel keeps them newest first and `ip_vs_wrr_dest_changed` leaves the current
        // weight where the last add put it (the guest kernel's IPVS answers the same: see
        // sim/tests/ipvs_guest_oracle.rs).
        assert_eq!(short.join(""), "234223234");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
