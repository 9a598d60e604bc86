//! `sim export --to ipvsadm` loaded with the real `ipvsadm-restore` into the guest kernel's
//! IPVS (user-mode Linux), saved back with `ipvsadm-save -n` and imported again: the same
//! services, schedulers, flags, persistence, real servers, forwarding methods, weights and
//! thresholds. The kernel lists real servers in its own order and fills in the default
//! persistence mask; those two are normalised before comparing.

use datapath::director::config::{DirectorConfig, RealConfig};
use datapath::director::dest::Forward;
use datapath::director::scheduler::SchedulerKind;
use sim::appliance::ApplianceConfig;
use sim::appliance::confio::export::{ExportFormat, export};
use sim::appliance::confio::{self, Imported};
use sim::kernel::guest::guest_for_test;

const SCHEDULERS: [SchedulerKind; 13] = {
    use SchedulerKind::*;
    [Rr, Wrr, Lc, Wlc, Sed, Nq, Sh, Dh, Mh, Lblc, Lblcr, Fo, Ovf]
};

/// One service per scheduler (VIP:port, TCP and UDP, and firewall marks), with every
/// forwarding method, persistence with and without a mask, scheduler flags, thresholds.
fn directors() -> Vec<DirectorConfig> {
    let forwards = [Forward::Nat, Forward::Dr, Forward::Tun];
    SCHEDULERS
        .iter()
        .enumerate()
        .map(|(i, &scheduler)| {
            let n = i as u8;
            let fwmark = (i % 4 == 3).then_some(100 + i as u32);
            let flags = match scheduler {
                SchedulerKind::Sh => vec!["sh-port".to_string()],
                SchedulerKind::Mh => vec!["mh-fallback".to_string()],
                _ => vec![],
            };
            let forward_of = |r: u8| {
                if r == 2 {
                    forwards[(i + 1) % 3]
                } else {
                    forwards[i % 3]
                }
            };
            let real = (0..3u8)
                .map(|r| RealConfig {
                    // The kernel gives DR and tunnelled real servers the service's port.
                    addr: format!(
                        "10.0.{}.{}:{}",
                        n + 1,
                        r + 2,
                        match (fwmark, forward_of(r)) {
                            (Some(_), _) => 0,
                            (None, Forward::Nat) => 8000 + u16::from(r),
                            (None, _) => 80 + u16::from(n),
                        }
                    ),
                    weight: Some(i32::from(r) + i as i32),
                    forward: (r == 2).then_some(forwards[(i + 1) % 3]),
                    upper_threshold: (r == 1).then_some(100 + i as u32),
                    lower_threshold: (r == 1).then_some(10),
                    mac: None,
                })
                .collect();
            let mut d = DirectorConfig {
                name: String::new(),
                vip: fwmark.is_none().then(|| [192, 0, 2, n + 1].into()),
                port: fwmark.is_none().then_some(80 + u16::from(n)),
                proto: fwmark
                    .is_none()
                    .then(|| if i % 2 == 0 { "tcp" } else { "udp" }.to_string()),
                fwmark,
                scheduler: Some(scheduler),
                flags,
                persistence: (i % 3 == 0).then(|| format!("{}s", 60 * (i + 1))),
                persistence_netmask: (i % 6 == 0).then(|| "255.255.255.0".to_string()),
                forward: Some(forwards[i % 3]),
                real,
            };
            d.name = confio::director_name(&d);
            d
        })
        .collect()
}

/// `ipvsadm-save` (v1.31) does not write thresholds: they are checked from `ipvsadm -L -n
/// --thresholds` (columns Uthreshold, Lthreshold) instead, so they are left out here.
fn normalised(mut directors: Vec<DirectorConfig>) -> Vec<DirectorConfig> {
    for d in &mut directors {
        for r in &mut d.real {
            r.upper_threshold = None;
            r.lower_threshold = None;
            r.forward = r.forward.or(d.forward);
        }
        d.forward = None;
        d.real.sort_by(|a, b| a.addr.cmp(&b.addr));
        if d.persistence.is_some() && d.persistence_netmask.is_none() {
            d.persistence_netmask = Some("255.255.255.255".into());
        }
    }
    directors.sort_by(|a, b| a.name.cmp(&b.name));
    directors
}

#[test]
fn ipvsadm_export_restores_into_the_guest_kernel_and_saves_back_equal() {
    let Some(guest) = guest_for_test("ipvsadm_export_restores_into_the_guest_kernel") else {
        return;
    };
    let original = directors();
    let config = ApplianceConfig {
        director: original.clone(),
        ..Default::default()
    };
    let exported = export(&config, std::path::Path::new("."), ExportFormat::Ipvsadm).unwrap();
    assert!(exported.notes.is_empty(), "{:?}", exported.notes);
    let modules: Vec<String> = SCHEDULERS
        .iter()
        .map(|s| format!("ip_vs_{}", s.name()))
        .collect();
    let body = format!(
        "load_modules ip_vs {} dummy\n\
         ip link add lb0 type dummy\nip addr add 10.0.0.254/16 dev lb0\nip link set lb0 up\n\
         ipvsadm-restore < \"$IN/rules\" 2> \"$OUT/restore-errors\"\n\
         ipvsadm-save -n > \"$OUT/saved\"\n\
         ipvsadm -L -n --thresholds > \"$OUT/thresholds\"\n",
        modules.join(" ")
    );
    let output = guest
        .run_with_inputs(&body, &[("rules", exported.text.as_bytes())])
        .unwrap();
    let errors = output
        .files
        .get("restore-errors")
        .cloned()
        .unwrap_or_default();
    assert!(
        errors.trim().is_empty(),
        "ipvsadm-restore: {errors}\n{}",
        exported.text
    );
    let saved = output.files.get("saved").expect("ipvsadm-save output");
    let mut imported = Imported::default();
    confio::import_text("ipvsadm-save", saved, confio::detect(saved), &mut imported)
        .unwrap_or_else(|e| panic!("{e}\n{saved}"));
    assert!(
        imported.warnings.is_empty(),
        "{}",
        imported.render_warnings()
    );
    assert_eq!(
        normalised(imported.config.director),
        normalised(original.clone()),
        "saved:\n{saved}\nexported:\n{}",
        exported.text
    );
    let listing = sim::kernel::guest::ipvs::parse_listing(&output.files["thresholds"]).unwrap();
    let mut listed: Vec<(String, u32, u32)> = listing
        .iter()
        .flat_map(|s| s.reals.iter())
        .map(|r| {
            (
                r.address.to_string(),
                r.number(0).unwrap() as u32,
                r.number(1).unwrap() as u32,
            )
        })
        .collect();
    let mut expected: Vec<(String, u32, u32)> = original
        .iter()
        .flat_map(|d| d.real.iter())
        .map(|r| {
            (
                r.addr.clone(),
                r.upper_threshold.unwrap_or(0),
                r.lower_threshold.unwrap_or(0),
            )
        })
        .collect();
    listed.sort();
    expected.sort();
    assert_eq!(
        listed, expected,
        "thresholds:\n{}",
        output.files["thresholds"]
    );
}
