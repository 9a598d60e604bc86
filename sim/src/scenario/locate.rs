//! Put a scenario's deserialisation error at the offending key: `[[traffic]]` and `[[events]]`
//! elements are tagged by `kind`, `[[appliance.nat]]` rules are read whole (see
//! [`crate::diagnostics::elements`]).
//!
//! Not here: checks made after parsing (see `validate.rs`).

use std::path::Path;

use datapath::nat::config::NatRuleConfig;

use super::{TimedEvent, TrafficSpec};
use crate::diagnostics::elements::{ElementCheck, locate_in_arrays, tagged, whole};
use crate::diagnostics::{KeyPath, LocatedError};

/// The located form of a TOML error in scenario `text`.
pub(super) fn deserialize_error(path: &Path, text: &str, error: &toml::de::Error) -> LocatedError {
    let root = KeyPath::root();
    let arrays: [(KeyPath, ElementCheck); 3] = [
        (root.key("traffic"), tagged::<TrafficSpec>),
        (root.key("events"), tagged::<TimedEvent>),
        (root.key("appliance").key("nat"), whole::<NatRuleConfig>),
    ];
    locate_in_arrays(path, text, error, &arrays)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "name = \"x\"\nseed = 1\nduration = \"1s\"\n\n[[topology.network]]\nname = \"n\"\nprefix = \"198.51.100.0/24\"\niface = \"outside\"\n\n[[traffic]]\nkind = \"udp_flood\"\nfrom = \"n\"\nrate = \"5/s\"\ndst = \"192.0.2.1\"\n\n[[traffic]]\nkind = \"tcp_clients\"\nfrom = \"n\"\n";

    fn error(tail: &str) -> String {
        let text = format!("{HEAD}{tail}");
        super::super::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_in_the_second_array_table_are_at_their_key() {
        assert_eq!(
            error("rate = \"9/s\"\ndst = \"192.0.2.10:99999\"\n"),
            "t.toml:20:7: traffic[1].dst: `192.0.2.10:99999`: port 99999 is out of range (0-65535)"
        );
        assert_eq!(
            error("rate = \"9/s\"\ndst = \"192.0.2.10:80\"\nclients = \"many\"\n"),
            "t.toml:21:11: traffic[1].clients: `many`: invalid type: string \"many\", expected u32"
        );
        assert_eq!(
            error("rate = \"9/s\"\ndst = \"192.0.2.10:80\"\nclinets = 3\n"),
            "t.toml:21:1: traffic[1].clinets: unknown field `clinets`, expected one of `name`, `from`, `clients`, `connections`, `rate`, `dst`, `ports`, `response_bytes`, `timeout`, `start`"
        );
        assert_eq!(
            error("dst = \"192.0.2.10:80\"\n"),
            "t.toml:16:1: traffic[1]: missing field `rate`"
        );
    }

    #[test]
    fn errors_in_events_are_at_their_key() {
        let events = "rate = \"9/s\"\ndst = \"192.0.2.10:80\"\n\n[[events]]\nkind = \"link\"\nat = \"1ms\"\nhost = \"n\"\n\n[[events]]\nkind = \"weight\"\nat = \"soon\"\n";
        assert_eq!(
            error(events),
            "t.toml:29:6: events[1].at: `soon`: invalid duration \"soon\": expected a number and a unit (ns, us, ms, s, m, h), e.g. \"500ms\""
        );
    }
}
