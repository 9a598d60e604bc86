//! One nft rule's expressions → the iptables-save options of the equivalent rule (two rules
//! for `meta mark set N accept`: `-j MARK` then `-j ACCEPT`, as iptables writes it).

/// Build the iptables arguments (each starting with a space) of a rule, or why it has none.
pub fn translate(words: &[String]) -> Result<Vec<String>, String> {
    let mut r = Builder::default();
    let mut i = 0;
    while i < words.len() {
        i = r.expression(words, i)?;
    }
    r.finish()
}

#[derive(Default)]
struct Builder {
    matches: Vec<String>,
    proto: Option<String>,
    /// The address family some condition implies (`ip saddr`, `icmp type`).
    family_implied: bool,
    nfproto: bool,
    mark: Option<String>,
    verdict: Option<String>,
}

/// The value after an optional operator: `(negated, value, next index)`. An anonymous set
/// `{ a, b }` is returned as `a,b`.
fn value(words: &[String], mut i: usize) -> Result<(bool, String, usize), String> {
    let mut negated = false;
    match words.get(i).map(String::as_str) {
        Some("!=") => {
            negated = true;
            i += 1;
        }
        Some("==" | "eq") => i += 1,
        Some(op @ ("<" | ">" | "<=" | ">=" | "&" | "|" | "^")) => {
            return Err(format!("operator `{op}` has no appliance form"));
        }
        _ => {}
    }
    match words.get(i).map(String::as_str) {
        None => Err("an expression without a value".into()),
        Some("{") => {
            let end = words[i..]
                .iter()
                .position(|w| w == "}")
                .ok_or("an anonymous set is never closed")?;
            let items: Vec<&str> = words[i + 1..i + end]
                .iter()
                .map(String::as_str)
                .filter(|w| *w != ",")
                .collect();
            if items.is_empty() {
                return Err("an empty set".into());
            }
            Ok((negated, items.join(","), i + end + 1))
        }
        Some(v) if v.starts_with('@') || v.starts_with('$') => Err(format!(
            "`{v}`: named sets, maps and variables are not read by the importer"
        )),
        Some(v) => {
            // `established,related` reaches here as `established` `,` `related`.
            let mut value = v.trim_matches('"').to_string();
            let mut j = i + 1;
            while words.get(j).is_some_and(|w| w == ",") {
                let Some(next) = words.get(j + 1) else { break };
                value.push(',');
                value.push_str(next);
                j += 2;
            }
            Ok((negated, value, j))
        }
    }
}

fn bang(negated: bool) -> &'static str {
    if negated { " !" } else { "" }
}

/// ICMP type names nft prints, as numbers (the flow form).
fn icmp_type(name: &str) -> Option<u8> {
    name.parse().ok().or(match name {
        "echo-reply" => Some(0),
        "destination-unreachable" => Some(3),
        "source-quench" => Some(4),
        "redirect" => Some(5),
        "echo-request" => Some(8),
        "router-advertisement" => Some(9),
        "router-solicitation" => Some(10),
        "time-exceeded" => Some(11),
        "parameter-problem" => Some(12),
        "timestamp-request" => Some(13),
        "timestamp-reply" => Some(14),
        _ => None,
    })
}

impl Builder {
    fn set_proto(&mut self, proto: &str) -> Result<(), String> {
        match &self.proto {
            Some(p) if p != proto => Err(format!("protocols `{p}` and `{proto}` in one rule")),
            Some(_) => Ok(()),
            None => {
                self.proto = Some(proto.to_string());
                self.matches.push(format!(" -p {proto}"));
                Ok(())
            }
        }
    }

    /// Read one expression at `i`; the index after it.
    fn expression(&mut self, w: &[String], i: usize) -> Result<usize, String> {
        match self.condition(w, i)? {
            Some(next) => Ok(next),
            None => self.statement(w, i),
        }
    }

    /// A match (or a statement that changes nothing: `counter`, `comment`) at `i`: the index
    /// after it, `None` when `w[i]` starts no match.
    fn condition(&mut self, w: &[String], i: usize) -> Result<Option<usize>, String> {
        let word = w[i].as_str();
        let next = w.get(i + 1).map(String::as_str);
        Ok(Some(match (word, next) {
            ("counter", _) => {
                let mut j = i + 1;
                while matches!(w.get(j).map(String::as_str), Some("packets" | "bytes")) {
                    j += 2;
                }
                j
            }
            ("comment", Some(_)) => i + 2,
            ("ip" | "ip6", Some(field @ ("saddr" | "daddr"))) => {
                let (neg, v, j) = value(w, i + 2)?;
                if v.contains(',') {
                    return Err(format!("a set of addresses `{v}` has no flow form"));
                }
                let opt = if field == "saddr" { "-s" } else { "-d" };
                self.matches.push(format!("{} {opt} {v}", bang(neg)));
                self.family_implied = true;
                j
            }
            ("ip", Some("protocol")) | ("ip6", Some("nexthdr")) | ("meta", Some("l4proto")) => {
                let (neg, v, j) = value(w, i + 2)?;
                if neg || v.contains(',') {
                    return Err(format!("protocol `{}{v}` has no flow form", bang(neg)));
                }
                self.set_proto(&v)?;
                j
            }
            ("meta", Some("nfproto")) => {
                let (neg, v, j) = value(w, i + 2)?;
                if neg || !matches!(v.as_str(), "ipv4" | "ipv6") {
                    return Err(format!("`meta nfproto {}{v}` has no flow form", bang(neg)));
                }
                self.nfproto = true;
                j
            }
            ("tcp" | "udp", Some(field @ ("sport" | "dport"))) => {
                let proto = word.to_string();
                let (neg, v, j) = value(w, i + 2)?;
                self.set_proto(&proto)?;
                let v = v.replace('-', ":");
                if v.contains(',') {
                    if neg {
                        return Err("a negated port set has no flow form".into());
                    }
                    self.matches.push(format!(" -m multiport --{field}s {v}"));
                } else {
                    self.matches.push(format!("{} --{field} {v}", bang(neg)));
                }
                j
            }
            ("icmp", Some("type")) => {
                let (neg, v, j) = value(w, i + 2)?;
                let t = icmp_type(&v).ok_or(format!("ICMP type `{v}` has no flow form"))?;
                self.set_proto("icmp")?;
                self.family_implied = true;
                self.matches.push(format!("{} --icmp-type {t}", bang(neg)));
                j
            }
            ("iifname" | "oifname" | "iif" | "oif", Some(_)) => {
                let (neg, v, j) = value(w, i + 1)?;
                let opt = if word.starts_with('i') { "-i" } else { "-o" };
                self.matches.push(format!("{} {opt} {v}", bang(neg)));
                j
            }
            ("ct", Some("state")) => {
                let (neg, v, j) = value(w, i + 2)?;
                let states = v.to_ascii_uppercase();
                self.matches
                    .push(format!(" -m conntrack{} --ctstate {states}", bang(neg)));
                j
            }
            _ => return Ok(None),
        }))
    }

    /// A statement (mark, verdict, NAT) at `i`: the index after it.
    fn statement(&mut self, w: &[String], i: usize) -> Result<usize, String> {
        let word = w[i].as_str();
        let next = w.get(i + 1).map(String::as_str);
        Ok(match (word, next) {
            ("meta", Some("mark")) | ("mark", Some("set")) => {
                let j = if word == "meta" { i + 2 } else { i + 1 };
                if w.get(j).map(String::as_str) != Some("set") {
                    return Err("matching a packet mark has no flow form".into());
                }
                let v = w.get(j + 1).ok_or("`mark set` without a value")?;
                self.mark = Some(v.clone());
                j + 2
            }
            ("accept" | "drop" | "return" | "continue", _) => {
                self.verdict = Some(word.to_ascii_uppercase());
                i + 1
            }
            ("reject", _) => {
                self.verdict = Some("REJECT".into());
                // `reject with icmp type …`: the variant does not change the verdict.
                w.len()
            }
            ("jump" | "goto", Some(target)) => {
                let opt = if word == "jump" { "-j" } else { "-g" };
                self.verdict = Some(format!("{opt} {target}"));
                i + 2
            }
            ("dnat" | "snat", Some(_)) => {
                let mut j = i + 1;
                if matches!(w.get(j).map(String::as_str), Some("ip" | "ip6")) {
                    j += 1;
                }
                if w.get(j).map(String::as_str) != Some("to") {
                    return Err(format!("`{word}` without `to`"));
                }
                let to = w
                    .get(j + 1)
                    .ok_or(format!("`{word} to` without an address"))?;
                let (target, opt) = if word == "dnat" {
                    ("DNAT", "--to-destination")
                } else {
                    ("SNAT", "--to-source")
                };
                self.verdict = Some(format!("-j {target} {opt} {to}"));
                j + 2
            }
            ("masquerade", _) => {
                let mut verdict = "-j MASQUERADE".to_string();
                let mut j = i + 1;
                if w.get(j).map(String::as_str) == Some("to") {
                    let ports = w.get(j + 1).ok_or("`masquerade to` without ports")?;
                    verdict.push_str(&format!(" --to-ports {}", ports.trim_start_matches(':')));
                    j += 2;
                }
                self.verdict = Some(verdict);
                j
            }
            (other, _) => return Err(format!("nft expression `{other}` has no appliance form")),
        })
    }

    fn finish(self) -> Result<Vec<String>, String> {
        if self.nfproto && !self.family_implied {
            return Err(
                "`meta nfproto` alone (no address that implies it) has no flow form".into(),
            );
        }
        let matches: String = self.matches.concat();
        let verdict = |v: &str| {
            if v.starts_with('-') {
                format!("{matches} {v}")
            } else {
                format!("{matches} -j {v}")
            }
        };
        let mut out = Vec::new();
        if let Some(mark) = &self.mark {
            out.push(format!("{matches} -j MARK --set-mark {mark}"));
        }
        match self.verdict.as_deref() {
            None | Some("CONTINUE") if self.mark.is_none() => {
                return Err("a rule without a verdict only counts packets".into());
            }
            None | Some("CONTINUE") => {}
            Some(v) => out.push(verdict(v)),
        }
        Ok(out)
    }
}
