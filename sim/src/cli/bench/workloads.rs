//! The benchmark workloads: for each one, the packets and the configured pipeline, in one
//! place, so `sim bench`, the criterion benches (`sim/benches/workloads.rs`) and the
//! callgrind instruction counter (`lbsim-callgrind`) time exactly the same thing.
//!
//! Every frame carries the outcome it must have ([`Expect`]); the measuring code checks
//! them on an untimed pass before timing, so a workload never times the wrong path.
//!
//! Not here: timing ([`super::measure`]), the whole-run comparisons (`threads_2_vs_1`,
//! `vs_kernel`: [`super::compare`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use datapath::director::config::DirectorConfig;
use datapath::director::scheduler::SchedulerKind;
use datapath::director::{DirectorOptions, Directors};
use datapath::flows::{FlowAction, FlowTable, TableConfig};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, ParseOptions, parse, tcp_flags};
use datapath::pipeline::Pipeline;
use datapath::shield::ShieldConfig;
use datapath::verdict::{DropReason, Stage, Verdict};

/// Distinct frames in one pass of a workload (a pass is repeated to reach the packet count).
pub const PASS_FRAMES: usize = 4096;
/// Virtual time between two packets of a pass, ns (1 Mpps of virtual traffic).
pub const PACKET_SPACING_NS: u64 = 1_000;
/// Virtual time of the first packet of a freshly built pipeline, ns.
pub const START_NS: u64 = 1_000_000;

/// The virtual IP every workload's clients talk to.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const CLIENTS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const DENIED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// Every IPVS scheduler the director has, in `ipvsadm` order.
pub const SCHEDULERS: [SchedulerKind; 13] = {
    use SchedulerKind::*;
    [Rr, Wrr, Lc, Wlc, Sed, Nq, Sh, Dh, Mh, Lblc, Lblcr, Fo, Ovf]
};

/// Every workload name `sim bench` knows, in table order.
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = [
        "parse",
        "deny_drop",
        "syn_cookie",
        "cookie_ack_proxy",
        "flows_10",
        "flows_100",
        "flows_1000",
    ]
    .map(String::from)
    .to_vec();
    names.extend(SCHEDULERS.iter().map(|s| format!("schedule_{}", s.name())));
    names.extend(
        [
            "established",
            "pipeline_mixed",
            "replay_file",
            "vs_kernel",
            "threads_2_vs_1",
            "director_threads_2_vs_1",
            "engine_synflood",
            "engine_synflood_cookies",
            "realtime_10g",
            "realtime_10g_1t",
        ]
        .map(String::from),
    );
    names
}

/// The outcome a frame must have: the deciding stage and verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Stage that decides.
    pub stage: Stage,
    /// Its verdict.
    pub verdict: Verdict,
}

const fn expect(stage: Stage, verdict: Verdict) -> Expect {
    Expect { stage, verdict }
}

/// One frame of a pass and the outcome it must have.
#[derive(Clone, Debug)]
pub struct BenchFrame {
    /// The Ethernet frame.
    pub frame: Vec<u8>,
    /// What the pipeline must decide.
    pub expect: Expect,
}

/// Builds a workload's pipeline (called again for every pass of a `fresh` workload).
pub type Builder = Box<dyn Fn() -> anyhow::Result<Pipeline> + Send + Sync>;

/// A workload through [`Pipeline::process`].
pub struct PipelineWorkload {
    /// Builds the pipeline.
    pub build: Builder,
    /// Frames processed once, untimed, right after building (e.g. the SYNs that open the
    /// connections an `established` pass uses).
    pub prime: Vec<Vec<u8>>,
    /// One pass.
    pub frames: Vec<BenchFrame>,
    /// A pass changes state that later passes must not see (new connections, proxied
    /// sessions): every pass gets a freshly built and primed pipeline, built untimed.
    pub fresh: bool,
}

impl PipelineWorkload {
    /// Build and prime a pipeline, returning it and the virtual time to continue from.
    pub fn ready(&self) -> anyhow::Result<(Pipeline, u64)> {
        let mut pipeline = (self.build)()?;
        pipeline.keep_spare_frames(true);
        let mut now = START_NS;
        for frame in &self.prime {
            let wire_len = frame.len() as u32;
            pipeline.process(now, 0, LinkType::Ethernet, frame.clone(), wire_len);
            now += PACKET_SPACING_NS;
        }
        Ok((pipeline, now))
    }
}

/// What a workload runs.
pub enum Body {
    /// `parse_into` on every frame, no pipeline (and no allocation).
    Parse(Vec<Vec<u8>>),
    /// [`Pipeline::process`] on every frame.
    Pipeline(PipelineWorkload),
    /// `sim replay --appliance`'s path ([`crate::cli::replay::replay_files`]): a pcap file of
    /// these frames through a pipeline, every pass a fresh pipeline.
    ReplayFile(PipelineWorkload),
}

/// A named workload with its per-core target.
pub struct Workload {
    /// Name (`parse`, `deny_drop`, …).
    pub name: String,
    /// The issue's target on one core, Mpps.
    pub target_mpps: Option<f64>,
    /// What it runs.
    pub body: Body,
}

impl Workload {
    /// Distinct frames in one pass.
    pub fn pass_len(&self) -> usize {
        match &self.body {
            Body::Parse(frames) => frames.len(),
            Body::Pipeline(work) | Body::ReplayFile(work) => work.frames.len(),
        }
    }
}

/// The per-packet workload called `name` (not the whole-run comparisons), or `None`.
pub fn workload(name: &str) -> anyhow::Result<Option<Workload>> {
    let (target, body) = match name {
        "parse" => (Some(25.0), Body::Parse(parse_frames())),
        // The issue's denylist (40), SYN → cookie (15) and established (10) targets are the
        // stages' own: `cargo bench -p datapath --bench shield|director`. These rows run the
        // whole pipeline, so they carry no target.
        "deny_drop" => (None, Body::Pipeline(deny_drop()?)),
        "syn_cookie" => (None, Body::Pipeline(syn_cookie()?)),
        "cookie_ack_proxy" => (None, Body::Pipeline(cookie_ack_proxy()?)),
        "flows_10" => (None, Body::Pipeline(flows(10)?)),
        "flows_100" => (None, Body::Pipeline(flows(100)?)),
        "flows_1000" => (None, Body::Pipeline(flows(1000)?)),
        "established" => (None, Body::Pipeline(established()?)),
        "pipeline_mixed" => (None, Body::Pipeline(mixed()?)),
        "replay_file" => (Some(8.0), Body::ReplayFile(mixed()?)),
        other => match other.strip_prefix("schedule_").and_then(scheduler_named) {
            Some(kind) => (None, Body::Pipeline(schedule(kind)?)),
            None => return Ok(None),
        },
    };
    Ok(Some(Workload {
        name: name.to_string(),
        target_mpps: target,
        body,
    }))
}

fn scheduler_named(name: &str) -> Option<SchedulerKind> {
    SCHEDULERS.into_iter().find(|kind| kind.name() == name)
}

/// Client `i`'s address counting from `base`.
fn client(base: Ipv4Addr, i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add(i as u32))
}

fn client_port(i: usize) -> u16 {
    1024 + (i % 60_000) as u16
}

fn syn(source: Ipv4Addr, i: usize, port: u16) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(source, VIP)
        .tcp(client_port(i), port)
        .syn()
        .seq_ack(i as u32, 0)
        .mss(1460)
        .build()
}

fn data(source: Ipv4Addr, i: usize, port: u16) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(source, VIP)
        .tcp(client_port(i), port)
        .seq_ack(i as u32 + 1, 1)
        .payload(&[0x5a; 64])
        .build()
}

/// The parse mix: SYN with options, data, VLAN UDP, IPv6 SYN, ICMP echo, varied sources.
pub fn parse_frames() -> Vec<Vec<u8>> {
    let v6 = |i: usize| format!("2001:db8::{:x}", i + 1).parse().expect("address");
    (0..PASS_FRAMES)
        .map(|i| {
            let source = client(CLIENTS, i);
            match i % 5 {
                0 => PacketBuilder::eth()
                    .ipv4(source, VIP)
                    .tcp(client_port(i), 80)
                    .syn()
                    .mss(1460)
                    .window_scale(7)
                    .sack_permitted()
                    .timestamps(1, 0)
                    .build(),
                1 => data(source, i, 443),
                2 => PacketBuilder::eth()
                    .vlan(42)
                    .ipv4(source, VIP)
                    .udp(client_port(i), 53)
                    .payload(&[0; 32])
                    .build(),
                3 => PacketBuilder::eth()
                    .ipv6(v6(i), v6(0xfffe))
                    .tcp(client_port(i), 80)
                    .syn()
                    .build(),
                _ => PacketBuilder::eth()
                    .ipv4(source, VIP)
                    .echo_request(1, i as u16)
                    .payload(&[0; 56])
                    .build(),
            }
        })
        .collect()
}

/// The shield every shield workload uses: SYN cookies forced on for port 80, a denylist,
/// rate limits out of the way (a benchmark sends millions of SYNs per virtual second).
pub const SHIELD_TOML: &str = r#"
syn_cookies = "on"
surge = "off"
ttl_filter = "off"
deny = ["203.0.113.0/24"]
[thresholds]
cookie_rate_max = 1000000000000
source_syn_rate_max = 1000000000000
[[context]]
dst = "192.0.2.10"
protected_tcp_ports = [80]
"#;

/// The NAT director of the director workloads: 4 weighted reals (weights 4:3:2:1; for
/// `ovf`, which stops using a real once its active connections reach its weight, scaled up
/// so a pass of new connections fits).
pub fn director_toml(scheduler: SchedulerKind, port: u16) -> String {
    let scale = if scheduler == SchedulerKind::Ovf {
        PASS_FRAMES
    } else {
        1
    };
    let reals: Vec<String> = (0..4)
        .map(|i| {
            format!(
                "{{ addr = \"10.0.1.{}:{port}\", weight = {} }}",
                i + 2,
                (4 - i) * scale
            )
        })
        .collect();
    format!(
        "[[director]]\nname = \"web\"\nvip = \"192.0.2.10\"\nport = {port}\nproto = \"tcp\"\nscheduler = \"{}\"\nforward = \"nat\"\nreal = [{}]\n",
        scheduler.name(),
        reals.join(", ")
    )
}

/// Parse a shield configuration.
pub fn shield_config(text: &str) -> anyhow::Result<ShieldConfig> {
    Ok(toml::from_str(text)?)
}

/// Parse `[[director]]` tables.
pub fn director_configs(text: &str) -> anyhow::Result<Vec<DirectorConfig>> {
    #[derive(serde::Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    Ok(toml::from_str::<File>(text)?.director)
}

fn with_shield(pipeline: Pipeline) -> anyhow::Result<Pipeline> {
    let shield = datapath::shield::build(&shield_config(SHIELD_TOML)?, 7, &[])
        .map_err(|e| anyhow!("[shield]: {e}"))?;
    Ok(pipeline.with_shield(shield))
}

fn with_directors(pipeline: Pipeline, text: &str) -> anyhow::Result<Pipeline> {
    let directors = Directors::build(&director_configs(text)?, DirectorOptions::default())
        .map_err(|e| anyhow!("[[director]]: {e}"))?;
    Ok(pipeline.with_directors(directors))
}

fn bare() -> Pipeline {
    Pipeline::new(ParseOptions::default())
}

fn pass(frame: impl Fn(usize) -> Vec<u8>, expected: Expect) -> Vec<BenchFrame> {
    (0..PASS_FRAMES)
        .map(|i| BenchFrame {
            frame: frame(i),
            expect: expected,
        })
        .collect()
}

fn deny_drop() -> anyhow::Result<PipelineWorkload> {
    Ok(PipelineWorkload {
        build: Box::new(|| with_shield(bare())),
        prime: Vec::new(),
        frames: pass(
            |i| data(client(DENIED, i % 250), i, 8080),
            expect(Stage::Shield, Verdict::Drop(DropReason::Denylist)),
        ),
        fresh: false,
    })
}

fn syn_cookie() -> anyhow::Result<PipelineWorkload> {
    Ok(PipelineWorkload {
        build: Box::new(|| with_shield(bare())),
        prime: Vec::new(),
        frames: pass(
            |i| syn(client(CLIENTS, i), i, 80),
            expect(Stage::Shield, Verdict::Reply),
        ),
        fresh: false,
    })
}

/// The ACK completing client `i`'s handshake with the cookie SYN-ACK `reply`.
fn cookie_ack(i: usize, reply: &[u8]) -> anyhow::Result<Vec<u8>> {
    let meta = parse(LinkType::Ethernet, reply, reply.len() as u32, 0);
    let Some(tcp) = meta.tcp else {
        return Err(anyhow!("the shield's reply is not a TCP segment"));
    };
    let syn_ack = tcp_flags::SYN | tcp_flags::ACK;
    anyhow::ensure!(
        meta.tcp_flags & syn_ack == syn_ack,
        "the shield's reply is not a SYN-ACK"
    );
    let cookie = tcp.seq;
    Ok(PacketBuilder::eth()
        .ipv4(client(CLIENTS, i), VIP)
        .tcp(client_port(i), 80)
        .seq_ack(i as u32 + 1, cookie.wrapping_add(1))
        .build())
}

/// Cookie ACKs: the SYNs are answered (untimed, at build time) by a pipeline with the same
/// seed; the timed pass validates each ACK's cookie and opens the proxied connection to
/// the server (the shield's SYN, through the later stages). Fresh: a second pass would
/// find the sessions open.
fn cookie_ack_proxy() -> anyhow::Result<PipelineWorkload> {
    let mut answering = with_shield(bare())?;
    let mut frames = Vec::with_capacity(PASS_FRAMES);
    for i in 0..PASS_FRAMES {
        let syn = syn(client(CLIENTS, i), i, 80);
        let wire_len = syn.len() as u32;
        answering.process(START_NS, 0, LinkType::Ethernet, syn, wire_len);
        let reply = answering
            .emitted()
            .first()
            .ok_or_else(|| anyhow!("no cookie SYN-ACK for SYN {i}"))?;
        frames.push(BenchFrame {
            frame: cookie_ack(i, &reply.frame)?,
            expect: expect(Stage::Shield, Verdict::Reply),
        });
    }
    Ok(PipelineWorkload {
        build: Box::new(|| with_shield(bare())),
        prime: Vec::new(),
        frames,
        fresh: true,
    })
}

/// A flowmgr file of `flows` flows (3 rules each) and a final deny, as in the datapath
/// `flows` bench.
pub fn flow_file(flows: usize) -> String {
    let mut text = String::new();
    for index in 0..flows {
        let (high, low) = (index / 250, index % 250);
        text.push_str(&format!(
            "flow f{index} permit\n  ignore not src 172.16.0.0/12\n  match proto tcp dst 10.{high}.{low}.1 dstport {}\n  match proto udp dst 10.{high}.{low}.0/24 dstport 5000:5100\n",
            80 + index % 8,
        ));
    }
    text.push_str("flow rest deny\n  match\n");
    text
}

/// Packets aimed at the flows' addresses and ports (xorshift, deterministic): some match
/// a `permit` rule, the rest fall to `rest deny`. Each frame's expected outcome is the
/// table's own `classify` of it (the pass checks the pipeline runs the stage, and times it).
fn flows(count: usize) -> anyhow::Result<PipelineWorkload> {
    let text = flow_file(count);
    let table = flow_table(&text)?;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let frames = (0..PASS_FRAMES)
        .map(|i| {
            let index = (next() as usize) % count;
            let dst = Ipv4Addr::new(10, (index / 250) as u8, (index % 250) as u8, 1);
            let src = Ipv4Addr::new(172, 16 + (next() % 20) as u8, 1, 2);
            let builder = PacketBuilder::eth().ipv4(src, dst);
            let builder = if next() % 2 == 0 {
                builder.tcp(40_000 + (i % 1000) as u16, 80 + (next() % 10) as u16)
            } else {
                builder.udp(40_000, 5000 + (next() % 200) as u16)
            };
            let frame = builder.payload(&[0; 32]).build();
            let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
            let expect = match table.classify(&meta).map(|hit| hit.action) {
                Some(FlowAction::Drop) => expect(Stage::Flows, Verdict::Drop(DropReason::FlowDeny)),
                Some(_) => expect(Stage::Flows, Verdict::Pass),
                None => expect(Stage::Forward, Verdict::Pass),
            };
            BenchFrame { frame, expect }
        })
        .collect();
    Ok(PipelineWorkload {
        build: Box::new(move || Ok(bare().with_flows(flow_table(&text)?))),
        prime: Vec::new(),
        frames,
        fresh: false,
    })
}

fn flow_table(text: &str) -> anyhow::Result<FlowTable> {
    FlowTable::from_source(text, &TableConfig::default())
        .map_err(|errors| anyhow!("flow file: {errors:?}"))
}

/// New connections (one SYN each) through a NAT director with this scheduler. Fresh: a
/// second pass would find the connections established.
fn schedule(kind: SchedulerKind) -> anyhow::Result<PipelineWorkload> {
    let text = director_toml(kind, 80);
    with_directors(bare(), &text)?;
    Ok(PipelineWorkload {
        build: Box::new(move || with_directors(bare(), &text)),
        prime: Vec::new(),
        frames: pass(
            |i| syn(client(CLIENTS, i), i, 80),
            expect(Stage::Director, Verdict::Forward),
        ),
        fresh: true,
    })
}

/// Data segments of established NAT connections (connection lookup, NAT rewrite,
/// incremental checksums); the SYNs that opened them are primed.
fn established() -> anyhow::Result<PipelineWorkload> {
    let text = director_toml(SchedulerKind::Wlc, 80);
    Ok(PipelineWorkload {
        build: Box::new(move || with_directors(bare(), &text)),
        prime: (0..PASS_FRAMES)
            .map(|i| syn(client(CLIENTS, i), i, 80))
            .collect(),
        frames: pass(
            |i| data(client(CLIENTS, i), i, 80),
            expect(Stage::Director, Verdict::Forward),
        ),
        fresh: false,
    })
}

/// The flows of the mixed appliance: web (TCP 443) and DNS (UDP 53) permitted, the rest
/// denied.
pub const MIXED_FLOWS: &str = "flow web permit\n  match proto tcp dst 192.0.2.10 dstport 443\n  match proto tcp dst 192.0.2.10 dstport 80\nflow dns permit\n  match proto udp dst 192.0.2.10 dstport 53\nflow rest deny\n  match\n";

/// The whole appliance: shield (denylist, SYN cookies on port 80), flows, a wlc NAT
/// director on port 443.
pub fn mixed_pipeline() -> anyhow::Result<Pipeline> {
    let pipeline = with_shield(bare())?.with_flows(flow_table(MIXED_FLOWS)?);
    with_directors(pipeline, &director_toml(SchedulerKind::Wlc, 443))
}

/// One mixed frame: 1/8 denylisted, 2/8 SYN → cookie, 3/8 established HTTPS data through
/// the director, 1/8 DNS permitted by flows, 1/8 SSH denied by flows.
fn mixed_frame(i: usize) -> BenchFrame {
    let (source, index) = (client(CLIENTS, i % 1024), i % 1024);
    let (frame, expected) = match i % 8 {
        0 => (
            data(client(DENIED, i % 250), i, 8080),
            expect(Stage::Shield, Verdict::Drop(DropReason::Denylist)),
        ),
        1 | 2 => (
            syn(client(CLIENTS, 4096 + i), i, 80),
            expect(Stage::Shield, Verdict::Reply),
        ),
        3..=5 => (
            data(source, index, 443),
            expect(Stage::Director, Verdict::Forward),
        ),
        6 => (
            PacketBuilder::eth()
                .ipv4(source, VIP)
                .udp(client_port(i), 53)
                .payload(&[0; 40])
                .build(),
            expect(Stage::Flows, Verdict::Pass),
        ),
        _ => (
            data(source, index, 22),
            expect(Stage::Flows, Verdict::Drop(DropReason::FlowDeny)),
        ),
    };
    BenchFrame {
        frame,
        expect: expected,
    }
}

fn mixed() -> anyhow::Result<PipelineWorkload> {
    mixed_pipeline()?;
    Ok(PipelineWorkload {
        build: Box::new(mixed_pipeline),
        prime: (0..1024).map(|i| syn(client(CLIENTS, i), i, 443)).collect(),
        frames: (0..PASS_FRAMES).map(mixed_frame).collect(),
        fresh: false,
    })
}

/// Write `frames` as a classic pcap (microsecond timestamps, 1 µs apart) to `path`.
pub fn write_pcap(path: &Path, frames: &[BenchFrame]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(&[
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ])?;
    for (i, frame) in frames.iter().enumerate() {
        let length = frame.frame.len() as u32;
        let (seconds, micros) = ((i / 1_000_000) as u32, (i % 1_000_000) as u32);
        for field in [seconds, micros, length, length] {
            out.write_all(&field.to_le_bytes())?;
        }
        out.write_all(&frame.frame)?;
    }
    out.flush()?;
    Ok(())
}

/// A temporary file path unique to this process and `name`.
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lbsim-bench-{}-{name}", std::process::id()))
}
