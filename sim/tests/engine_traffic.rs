//! Engine behaviour through today's pass-through pipeline: smoltcp clients complete every
//! connection to a smoltcp backend (also over a lossy link), floods send exactly their rate,
//! frames to nobody are unroutable, UDP clients get answers, and a slow link tail-drops.

use std::path::Path;

use sim::engine::Collect;
use sim::run::{RunOptions, RunOutput, run_scenario};

const TOPOLOGY: &str = r#"
[topology]
interfaces = ["outside", "inside"]

[[topology.network]]
name = "clients"
prefix = "198.51.100.0/24"
iface = "outside"
link = { latency = "1ms", bandwidth = "100Mbit/s", loss_ppm = LOSS }

[[topology.backend]]
name = "web"
addr = "10.0.1.2"
also = ["192.0.2.10"]
iface = "inside"
tcp_ports = [80]
udp_ports = [53]
service_time = "500us"
link = { latency = "100us" }
"#;

fn run(body: &str, loss_ppm: u32, threads: usize) -> RunOutput {
    let text = format!(
        "seed = 42\nqueues = 4\n{body}\n{}",
        TOPOLOGY.replace("LOSS", &loss_ppm.to_string())
    );
    let loaded =
        sim::scenario::parse(Path::new("test.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        threads,
        collect: Collect::default(),
    };
    run_scenario(&loaded, options, &|_| {}).unwrap()
}

const CLIENTS: &str = r#"
name = "clients"
duration = "DURATION"

[[traffic]]
kind = "tcp_clients"
from = "clients"
clients = 10
connections = 60
rate = "600/s"
dst = "192.0.2.10:80"
response_bytes = 5000
timeout = "TIMEOUT"
"#;

#[test]
fn tcp_clients_complete_every_connection_through_the_pass_through_pipeline() {
    let body = CLIENTS
        .replace("DURATION", "300ms")
        .replace("TIMEOUT", "200ms");
    let output = run(&body, 0, 2);
    let tcp = output.report.clients.tcp.expect("tcp clients ran");
    assert_eq!(
        (tcp.attempted, tcp.established, tcp.completed),
        (60, 60, 60)
    );
    assert_eq!(
        (tcp.failed_timeout, tcp.failed_reset, tcp.unfinished),
        (0, 0, 0)
    );
    assert_eq!(tcp.success_ratio, 1.0);
    // Setup takes one round trip: 2 × (1 ms + 100 µs) plus serialization.
    let connect = tcp.connect_ns.expect("connect times");
    assert!((2_200_000..3_000_000).contains(&connect.p50), "{connect:?}");
    let web = output
        .report
        .hosts
        .iter()
        .find(|h| h.name == "web")
        .unwrap();
    let backend = web.backend.as_ref().unwrap();
    assert_eq!((backend.tcp_accepted, backend.tcp_served), (60, 60));
}

#[test]
fn tcp_clients_recover_from_loss_by_retransmitting() {
    let body = CLIENTS
        .replace("DURATION", "3s")
        .replace("TIMEOUT", "2900ms");
    let output = run(&body, 20_000, 2);
    let tcp = output.report.clients.tcp.expect("tcp clients ran");
    assert!(output.report.totals.link_lost > 0, "2% loss lost nothing");
    assert_eq!((tcp.attempted, tcp.completed), (60, 60), "{tcp:?}");
}

#[test]
fn floods_send_exactly_their_rate_and_unowned_destinations_are_unroutable() {
    let body = r#"
name = "flood"
duration = "100ms"

[[traffic]]
kind = "syn_flood"
from = "clients"
rate = "10k/s"
dst = "203.0.113.7:80"
src_ports = "1024-2047"
ttl = [64, 128]
"#;
    for threads in [1, 2] {
        let output = run(body, 0, threads);
        let totals = &output.report.totals;
        // The last millisecond's 10 packets are still on the 1 ms link when the run ends.
        assert_eq!(
            (totals.sent, totals.processed, totals.unroutable),
            (1000, 990, 990)
        );
        assert_eq!(output.report.sources[0].sent, 1000);
    }
}

#[test]
fn udp_clients_get_every_answer() {
    let body = r#"
name = "udp"
duration = "200ms"

[[traffic]]
kind = "udp_clients"
from = "clients"
clients = 4
requests = 100
rate = "1000/s"
dst = "192.0.2.10:53"
timeout = "50ms"
"#;
    let udp = run(body, 0, 1).report.clients.udp.expect("udp clients ran");
    assert_eq!((udp.sent, udp.answered, udp.failed_timeout), (100, 100, 0));
    let rtt = udp.rtt_ns.expect("round trips");
    assert!(rtt.p50 >= 2_700_000, "{rtt:?}"); // 2 × 1.1 ms + 0.5 ms service
}

#[test]
fn a_slow_link_tail_drops_a_flood() {
    let body = r#"
name = "slow"
duration = "300ms"

[[traffic]]
kind = "udp_flood"
from = "clients"
rate = "50k/s"
dst = "192.0.2.10:9"
payload = 1000
"#;
    // 50k × 1 kB/s = 400 Mbit/s into a 100 Mbit/s link with a 100 ms queue.
    let output = run(body, 0, 1);
    assert!(output.report.totals.link_queue_full > 0);
    assert!(output.report.totals.processed < 15_000);
}
