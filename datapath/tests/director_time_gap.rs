//! A capture or scenario may jump years forward in time: the director catches its timers and
//! rate estimator up in bounded work, and the estimated rates have decayed to zero.

use std::net::Ipv4Addr;

use datapath::director::config::DirectorConfig;
use datapath::director::listing::{ListFormat, render};
use datapath::director::{DirectorOptions, Directors};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, parse};

#[derive(serde::Deserialize)]
struct File {
    director: Vec<DirectorConfig>,
}

#[test]
fn ten_years_of_quiet_cost_bounded_work_and_leave_zero_rates() {
    let file: File = toml::from_str(
        r#"
        [[director]]
        name = "web"
        vip = "192.0.2.10"
        port = 80
        proto = "tcp"
        scheduler = "rr"
        real = [{ addr = "10.0.1.2:80", weight = 1 }]
        "#,
    )
    .unwrap();
    let mut directors = Directors::build(&file.director, DirectorOptions::default()).unwrap();
    let ten_years: u64 = 10 * 365 * 24 * 3600 * 1_000_000_000;
    let mut rates_after = String::new();
    for (port, now) in [(40000, 0), (40001, 1_000_000_000), (40002, ten_years)] {
        let mut frame = PacketBuilder::eth()
            .ipv4(Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(192, 0, 2, 10))
            .tcp(port, 80)
            .syn()
            .build();
        let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
        // Before the catch-up was bounded this call replayed ~158 million estimator
        // intervals (minutes of CPU); now it replays at most MAX_ESTIMATOR_CATCH_UP.
        let decision = directors.process(now, &mut frame, &meta, None);
        assert!(decision.is_break(), "every SYN is scheduled");
        if now == ten_years {
            directors.advance(now + 1);
            rates_after = render(&directors, ListFormat::Rate);
        }
    }
    // One new connection in the last interval: the only non-zero rate can come from it,
    // never from the traffic ten years earlier.
    assert!(rates_after.contains("10.0.1.2:80"), "{rates_after}");
}
