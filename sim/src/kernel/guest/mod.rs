//! A guest Linux kernel with IPVS: Debian's `user-mode-linux` (Linux 6.1, `linux.uml`) run
//! as an ordinary process with the host's filesystem as its root, so the host's `ipvsadm`,
//! `iptables-legacy`, `ip` and the `sim` binary itself run inside it unchanged.
//!
//! - [`boot`] — [`Guest::run`]`(script_body)`: boot, run a POSIX shell body as PID 1's
//!   payload in a per-run directory under `/tmp`, return its stdout / stderr / status and
//!   the files it wrote into `$OUT` ([`GuestOutput`]); clear errors when the guest cannot
//!   start ([`Guest::check`], [`Unavailable`]) or leaves no result (console tail).
//! - [`ipvs`] — the appliance's directors as the `ipvsadm` commands an operator types
//!   ([`ipvs::service_commands`]), fwmark rules through `iptables-legacy`, and parsers for
//!   `ipvsadm -Lcn` ([`ipvs::parse_connections`]) and `ipvsadm -L -n [--stats|--rate]
//!   --exact` ([`ipvs::parse_listing`]).
//!
//! - [`ftp`], [`ftp_run`] — an FTP exchange through IPVS with `ip_vs_ftp` (rewritten
//!   `227` / `229` replies, sequence adjustment, data connections) against lbsim's helper.
//!
//! A body typically does:
//! ```sh
//! load_modules ip_vs ip_vs_wrr dummy veth
//! ip link add lb0 type dummy; ip addr add 10.0.1.254/24 dev lb0; ip link set lb0 up
//! ipvsadm -A -t 10.0.0.1:80 -s wrr; ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.2:80 -m -w 4
//! ipvsadm -L -n --stats --exact > "$OUT/stats"
//! ```
//!
//! One guest uses one host CPU and boots in 2–3 s: batch work into one boot. Timing inside
//! it says nothing about a host kernel.
//!
//! Tests call [`guest_for_test`]: `None` (with the reason printed) when the guest cannot run
//! here, a panic instead when `CI=true`, so CI never skips the guest silently.

pub mod boot;
pub mod driver;
pub mod ftp;
pub mod ftp_run;
pub mod ipvs;
pub mod oracle;
pub mod oracle_compare;
pub mod oracle_sim;
pub mod random_case;

pub use boot::{Guest, GuestOutput, Unavailable};

/// For tests: a [`Guest`] when one can start here. Outside CI, `None` with the reason on
/// stderr (not root, package missing); with `CI=true` a missing guest is a test failure.
pub fn guest_for_test(test: &str) -> Option<Guest> {
    match Guest::check() {
        Ok(()) => Some(Guest::default()),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: the guest kernel must run in CI but cannot: {why}")
        }
        Err(why) => {
            eprintln!("{test}: skipped, the guest kernel cannot run here: {why}");
            None
        }
    }
}
