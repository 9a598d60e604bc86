//! The guest kernel layer (`sim::kernel::guest`): boot `linux.uml`, configure real IPVS
//! services from an appliance's directors, read the listings back. Skips (with the reason)
//! only outside CI when the guest cannot run here.

use datapath::director::config::{DirectorConfig, build_all};
use sim::kernel::guest::{self, ipvs};

fn specs(text: &str) -> Vec<datapath::director::config::ServiceSpec> {
    #[derive(serde::Deserialize)]
    struct File {
        director: Vec<DirectorConfig>,
    }
    let file: File = toml::from_str(text).unwrap();
    build_all(&file.director).unwrap()
}

const APPLIANCE: &str = r#"
[[director]]
name = "web"
vip = "10.99.0.1"
port = 80
scheduler = "wrr"
persistence = "120s"
persistence_netmask = "255.255.255.0"
real = [{ addr = "10.99.1.2:80", weight = 4, upper_threshold = 9, lower_threshold = 3 },
        { addr = "10.99.1.3:80", weight = 3 }, { addr = "10.99.1.4:8080", weight = 0 }]

[[director]]
name = "dns"
vip = "10.99.0.1"
port = 53
proto = "udp"
scheduler = "sh"
flags = ["sh-port"]
real = [{ addr = "10.99.1.2:53" }]
"#;

#[test]
fn guest_boots_and_takes_the_appliance_services() {
    let Some(guest) = guest::guest_for_test("guest_boots_and_takes_the_appliance_services") else {
        return;
    };
    let specs = specs(APPLIANCE);
    let body = format!(
        "set -e\nuname -r > \"$OUT/uname\"\nload_modules {} dummy\n\
         ip link add lb0 type dummy\nip addr add 10.99.1.254/24 dev lb0\nip link set lb0 up\n\
         {}\nipvsadm -L -n > \"$OUT/plain\"\nipvsadm -L -n --stats --exact > \"$OUT/stats\"\n",
        ipvs::modules(&specs).join(" "),
        ipvs::service_commands(&specs).join("\n")
    );
    let output = guest.run(&body).expect("guest run");
    assert_eq!(output.status, 0, "stderr: {}", output.stderr);
    assert_eq!(
        output.file("uname").unwrap().trim(),
        guest::boot::module_version().unwrap()
    );
    let plain = ipvs::parse_listing(output.file("plain").unwrap()).unwrap();
    assert_eq!(plain.len(), 2, "{plain:?}");
    let web = plain.iter().find(|s| s.address == "10.99.0.1:80").unwrap();
    assert_eq!(web.columns[..4], ["wrr", "persistent", "120", "mask"]);
    let weights: Vec<(String, String)> = web
        .reals
        .iter()
        .map(|r| (r.address.to_string(), r.columns[1].clone()))
        .collect();
    assert_eq!(
        weights,
        [
            ("10.99.1.2:80".into(), "4".into()),
            ("10.99.1.3:80".into(), "3".into()),
            ("10.99.1.4:8080".into(), "0".into())
        ]
    );
    let dns = plain.iter().find(|s| s.proto == "UDP").unwrap();
    assert_eq!(dns.columns, ["sh", "(sh-port)"]);
    let stats = ipvs::parse_listing(output.file("stats").unwrap()).unwrap();
    assert_eq!(stats[0].columns, ["0", "0", "0", "0", "0"]);
}

#[test]
fn a_guest_that_leaves_no_result_is_a_clear_error() {
    let Some(guest) = guest::guest_for_test("a_guest_that_leaves_no_result_is_a_clear_error")
    else {
        return;
    };
    let error = guest.run("poweroff -f").unwrap_err().to_string();
    assert!(error.contains("without a result"), "{error}");
    assert!(error.contains("console tail"), "{error}");
}
