//! `[[health_check]]` out to the checkers' own forms: a keepalived `TCP_CHECK` / `HTTP_GET`
//! / `MISC_CHECK` … block inside `real_server`, and ldirectord's per-service `checktype`,
//! `checkport`, `request`, `receive`, `checkinterval`, … lines.
//!
//! The timing is written so that importing the file gives back the same `detect` and
//! `recover` (see [`super::health`] for how they are read): keepalived gets the check's own
//! `delay_loop` (= recover), `connect_timeout` (= detect − recover) and `retry 0`;
//! ldirectord `checkinterval` (= recover), `checktimeout` or `negotiatetimeout`
//! (= detect − recover) and `failurecount = 1`. A check of the other checker's kind is
//! translated where the two agree (port, request path, command) and noted where not.

use std::fmt::Write as _;

use datapath::director::config::{DirectorConfig, parse_duration};

use super::health::{HealthCheckConfig, OnFailure};

/// The check of `real` (an `addr:port`) in director `director`, if any.
pub fn of<'a>(
    checks: &'a [HealthCheckConfig],
    director: &str,
    real: &str,
) -> Option<&'a HealthCheckConfig> {
    let addr = real.parse().ok()?;
    checks.iter().find(|h| h.covers(Some(director), addr))
}

/// `(recover, detect − recover)` in nanoseconds; a note when detect is shorter.
fn timing(h: &HealthCheckConfig, notes: &mut Vec<String>) -> (u64, u64) {
    let recover = parse_duration(&h.recover).unwrap_or(0);
    let detect = parse_duration(&h.detect).unwrap_or(0);
    if detect < recover {
        notes.push(format!(
            "health_check of {}: detect {} is shorter than recover {}: a checker notices a failure one interval ({}) after it at the earliest; exported with a zero timeout",
            h.server, h.detect, h.recover, h.recover
        ));
    }
    (recover, detect.saturating_sub(recover))
}

/// Seconds as keepalived writes them: `6`, `1.5` (millisecond precision).
fn seconds_text(ns: u64) -> String {
    let ms = ns.div_ceil(1_000_000);
    if ms.is_multiple_of(1000) {
        (ms / 1000).to_string()
    } else {
        let text = format!("{}.{:03}", ms / 1000, ms % 1000);
        text.trim_end_matches('0').to_string()
    }
}

fn split(setting: &str) -> (&str, &str) {
    setting.split_once(' ').unwrap_or((setting, ""))
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// The keepalived kind and settings of `h`; ldirectord checks translated.
fn keepalived_form(h: &HealthCheckConfig, notes: &mut Vec<String>) -> (String, Vec<String>) {
    let Some(kind) = h.kind.strip_prefix("ldirectord ") else {
        let kind = if h.kind.is_empty() {
            "TCP_CHECK"
        } else {
            &h.kind
        };
        return (kind.to_string(), h.settings.clone());
    };
    let https = h.settings.iter().any(|s| split(s) == ("service", "https"));
    let kind = match kind {
        "negotiate" if https => "SSL_GET",
        "negotiate" => "HTTP_GET",
        "external" | "external-perl" => "MISC_CHECK",
        "ping" => "PING_CHECK",
        "connect" => "TCP_CHECK",
        other => {
            notes.push(format!(
                "health_check of {}: ldirectord checktype {other} has no keepalived form: exported as TCP_CHECK",
                h.server
            ));
            "TCP_CHECK"
        }
    };
    let mut settings = Vec::new();
    for setting in &h.settings {
        let (key, value) = split(setting);
        let value = unquote(value);
        match key {
            "checkport" => settings.push(format!("connect_port {value}")),
            "request" if kind.ends_with("_GET") => {
                let slash = if value.starts_with('/') { "" } else { "/" };
                settings.push(format!("url.path {slash}{value}"));
            }
            "checkcommand" => settings.push(format!("misc_path \"{value}\"")),
            "service" => {}
            _ => notes.push(format!(
                "health_check of {}: ldirectord `{setting}` has no keepalived form: not exported",
                h.server
            )),
        }
    }
    (kind.to_string(), settings)
}

/// The lines of a keepalived `real_server` block for its check: `inhibit_on_failure` and
/// the checker block, indented by 8.
pub fn keepalived_block(h: &HealthCheckConfig, notes: &mut Vec<String>) -> String {
    let mut out = String::new();
    if h.on_failure == OnFailure::Quiesce {
        out.push_str("        inhibit_on_failure\n");
    }
    let (kind, settings) = keepalived_form(h, notes);
    let _ = writeln!(out, "        {kind} {{");
    let entries: Vec<(Vec<&str>, &str)> = settings
        .iter()
        .map(|s| {
            let (key, value) = split(s);
            (key.split('.').collect(), value)
        })
        .collect();
    nested(&entries, 12, &mut out);
    let (recover, timeout) = timing(h, notes);
    let _ = writeln!(out, "            delay_loop {}", seconds_text(recover));
    let _ = writeln!(out, "            connect_timeout {}", seconds_text(timeout));
    out.push_str("            retry 0\n        }\n");
    out
}

/// Flattened `a.b value` settings back into blocks: a run of keys under one block name is
/// one block, and a key seen again in the run opens the next (two `url` blocks).
fn nested(entries: &[(Vec<&str>, &str)], indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    let mut i = 0;
    while i < entries.len() {
        let (path, value) = &entries[i];
        if path.len() == 1 {
            let line = format!("{pad}{} {value}", path[0]);
            let _ = writeln!(out, "{}", line.trim_end());
            i += 1;
            continue;
        }
        let mut run: Vec<(Vec<&str>, &str)> = Vec::new();
        let mut j = i;
        while j < entries.len()
            && entries[j].0.len() > 1
            && entries[j].0[0] == path[0]
            && !run.iter().any(|(p, _)| *p == entries[j].0[1..])
        {
            run.push((entries[j].0[1..].to_vec(), entries[j].1));
            j += 1;
        }
        let _ = writeln!(out, "{pad}{} {{", path[0]);
        nested(&run, indent + 4, out);
        let _ = writeln!(out, "{pad}}}");
        i = j;
    }
}

/// ldirectord's checktype and `(key, value)` settings of `h`; keepalived checks translated.
fn ldirectord_form(
    h: &HealthCheckConfig,
    notes: &mut Vec<String>,
) -> (String, Vec<(String, String)>) {
    if let Some(kind) = h.kind.strip_prefix("ldirectord ") {
        // ldirectord reads request and receive strings quoted or not; quoted they may hold
        // spaces.
        let settings = h.settings.iter().map(|s| split(s)).map(|(k, v)| match k {
            "request" | "receive" => (k.into(), format!("\"{}\"", unquote(v))),
            _ => (k.into(), v.into()),
        });
        return (kind.to_string(), settings.collect());
    }
    let mut settings = Vec::new();
    let kind = match h.kind.as_str() {
        "HTTP_GET" | "SSL_GET" => {
            let service = if h.kind == "SSL_GET" { "https" } else { "http" };
            settings.push(("service".to_string(), service.to_string()));
            "negotiate"
        }
        "MISC_CHECK" => "external",
        "PING_CHECK" => "ping",
        "TCP_CHECK" | "" => "connect",
        other => {
            notes.push(format!(
                "health_check of {}: keepalived {other} has no ldirectord form: exported as checktype = connect",
                h.server
            ));
            "connect"
        }
    };
    let mut request = false;
    for setting in &h.settings {
        let (key, value) = split(setting);
        match key {
            "connect_port" => settings.push(("checkport".into(), value.into())),
            "url.path" if !request => {
                request = true;
                settings.push(("request".into(), format!("\"{}\"", unquote(value))));
            }
            "misc_path" => settings.push(("checkcommand".into(), value.into())),
            _ => notes.push(format!(
                "health_check of {}: keepalived `{setting}` has no ldirectord form: not exported",
                h.server
            )),
        }
    }
    (kind.to_string(), settings)
}

/// A whole number of seconds, at least 1 (ldirectord reads only those), with a note when
/// `ns` is not one.
fn whole_seconds(h: &HealthCheckConfig, key: &str, ns: u64, notes: &mut Vec<String>) -> u64 {
    let secs = ns.div_ceil(1_000_000_000).max(1);
    if ns != secs * 1_000_000_000 {
        notes.push(format!(
            "health_check of {}: ldirectord's {key} is whole seconds: {} ns written as {secs}",
            h.server, ns
        ));
    }
    secs
}

/// The check lines of an ldirectord `virtual=` block (tab-indented): `checktype = on` when
/// no real server has a check. ldirectord checks every real server of a service the same
/// way: reals with other checks, or none, are noted.
pub fn ldirectord_lines(
    d: &DirectorConfig,
    checks: &[HealthCheckConfig],
    notes: &mut Vec<String>,
) -> String {
    let found: Vec<Option<&HealthCheckConfig>> = d
        .real
        .iter()
        .map(|r| of(checks, &d.name, &r.addr))
        .collect();
    let Some(h) = found.iter().flatten().next() else {
        return "\tchecktype = on\n".into();
    };
    let same = |o: &HealthCheckConfig| {
        (&o.kind, &o.settings, &o.detect, &o.recover, o.on_failure)
            == (&h.kind, &h.settings, &h.detect, &h.recover, h.on_failure)
    };
    if found.iter().any(|f| !f.is_some_and(same)) {
        notes.push(format!(
            "director {}: ldirectord checks all real servers of a service alike: exported the check of {} for every one",
            d.name, h.server
        ));
    }
    let (kind, settings) = ldirectord_form(h, notes);
    let mut out = String::new();
    let _ = writeln!(out, "\tchecktype = {kind}");
    for (key, value) in settings {
        let _ = writeln!(out, "\t{key} = {value}");
    }
    let (recover, timeout) = timing(h, notes);
    let interval = whole_seconds(h, "checkinterval", recover, notes);
    let timeout = whole_seconds(h, "checktimeout", timeout, notes);
    let timeout_key = if kind == "negotiate" {
        "negotiatetimeout"
    } else {
        "checktimeout"
    };
    let _ = writeln!(out, "\tcheckinterval = {interval}");
    let _ = writeln!(out, "\t{timeout_key} = {timeout}");
    out.push_str("\tfailurecount = 1\n");
    let quiescent = if h.on_failure == OnFailure::Quiesce {
        "yes"
    } else {
        "no"
    };
    let _ = writeln!(out, "\tquiescent = {quiescent}");
    out
}
