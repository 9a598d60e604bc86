//! Health checks as the appliance keeps them (`[[health_check]]`), and what the checker does
//! when a real server fails or passes its check again, so a scenario's `check_fail` /
//! `check_ok` events act as keepalived or ldirectord would.
//!
//! keepalived removes a failed real server from its virtual service (`ipvsadm -d`), or sets
//! its weight to 0 with `inhibit_on_failure`; ldirectord removes it, or quiesces it (weight 0)
//! with `quiescent = yes`. A quiesced server keeps its established connections and, with
//! the kernel's default `expire_quiescent_template = 0`, its persistence templates; a removed
//! one keeps nothing new. The checker notices a failure after `detect` (the worst case: the
//! next check, every try timing out, the delays between retries) and a recovery after
//! `recover` (the next check).

use serde::{Deserialize, Serialize};

use datapath::director::config::parse_duration;

use super::HealthCheck;

/// What a failed check does to the real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Taken out of the service (`ipvsadm -d`): keepalived's default, ldirectord's
    /// `quiescent = no`.
    #[default]
    Remove,
    /// Weight 0 (keepalived `inhibit_on_failure`, ldirectord `quiescent = yes`).
    Quiesce,
}

/// `[[health_check]]`: a real server's check (imported from keepalived.conf or ldirectord.cf,
/// or written by hand).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// The director (every director with `server` when absent).
    pub director: Option<String>,
    /// The real server (`addr:port`, as in the director's `real` list).
    pub server: std::net::SocketAddr,
    /// What checks it (`TCP_CHECK`, `HTTP_GET`, `ldirectord negotiate`, ...): informative.
    #[serde(default)]
    pub kind: String,
    /// What a failure does.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// From the server failing to the checker acting on it (`"6s"`, `"1500ms"`).
    pub detect: String,
    /// From the server passing again to the checker putting it back.
    pub recover: String,
    /// The checker's own settings besides its timing, as `"key value"` in file order
    /// (keepalived `"connect_port 80"`, `"url.path /health"`; ldirectord `"service http"`,
    /// `"request \"health\""`): kept so that `sim export` writes the check back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<String>,
}

/// What the checker does at a `check_fail` / `check_ok` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Take the server out (`server_down`).
    Remove,
    /// Set its weight to 0.
    Quiesce,
    /// Put it back (`server_up`).
    Restore,
    /// Give it back its configured weight.
    Reweight(u32),
}

impl HealthCheckConfig {
    /// Whether this check is the one of `server` in `director` (`None`: any director).
    pub fn covers(&self, director: Option<&str>, server: std::net::SocketAddr) -> bool {
        self.server == server
            && match (director, self.director.as_deref()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// The delay (ns) and reaction of a failure (`failed`) or a recovery; `weight` is the
    /// real server's configured weight. An unreadable duration is an error naming it.
    pub fn reaction(&self, failed: bool, weight: u32) -> Result<(u64, Reaction), String> {
        let delay = |key: &str, text: &str| {
            parse_duration(text).ok_or_else(|| {
                format!(
                    "health_check of {}: {key} {text:?} is not a duration (\"6s\", \"1500ms\")",
                    self.server
                )
            })
        };
        Ok(match (failed, self.on_failure) {
            (true, OnFailure::Remove) => (delay("detect", &self.detect)?, Reaction::Remove),
            (true, OnFailure::Quiesce) => (delay("detect", &self.detect)?, Reaction::Quiesce),
            (false, OnFailure::Remove) => (delay("recover", &self.recover)?, Reaction::Restore),
            (false, OnFailure::Quiesce) => {
                (delay("recover", &self.recover)?, Reaction::Reweight(weight))
            }
        })
    }
}

/// keepalived checker keys that `detect` and `recover` stand for.
pub(crate) const KEEPALIVED_TIMING: &[&str] = &[
    "delay_loop",
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
];

/// ldirectord keys that `kind`, `on_failure`, `detect` and `recover` stand for.
pub(crate) const LDIRECTORD_TIMING: &[&str] = &[
    "checktype",
    "checktimeout",
    "negotiatetimeout",
    "checkinterval",
    "failurecount",
    "quiescent",
];

/// The settings that are not timing (nor ldirectord's `global.` defaults), as `"key value"`.
fn kept(settings: &[(String, String)], timing: &[&str]) -> Vec<String> {
    settings
        .iter()
        .filter(|(k, _)| !k.starts_with("global.") && !timing.contains(&k.as_str()))
        .map(|(k, v)| format!("{k} {v}"))
        .collect()
}

fn seconds(settings: &[(String, String)], key: &str, default: f64) -> f64 {
    settings
        .iter()
        .rev()
        .find(|(k, _)| k == key || k.ends_with(&format!(".{key}")))
        .and_then(|(_, v)| v.split_whitespace().next()?.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e9)
        .unwrap_or(default)
}

/// A whole number of milliseconds, as a duration string (at most 10⁹ s: a duration any
/// run can hold).
fn duration(secs: f64) -> String {
    let ms = (secs.min(1e9) * 1000.0).round() as u64;
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The `[[health_check]]` of imported checks: one per real server that has a check
/// (keepalived `*_CHECK` / `*_GET` blocks, every ldirectord real server but `checktype =
/// on|off`), with keepalived's and ldirectord's defaults for what the file leaves out.
pub fn from_imported(checks: &[HealthCheck]) -> Vec<HealthCheckConfig> {
    let mut out: Vec<HealthCheckConfig> = Vec::new();
    for check in checks {
        let Ok(server) = check.real.parse() else {
            continue;
        };
        let inhibit = checks.iter().any(|c| {
            c.kind == "inhibit_on_failure" && c.director == check.director && c.real == check.real
        });
        let entry = if let Some(kind) = check.kind.strip_prefix("ldirectord ") {
            if kind == "on" || kind == "off" {
                continue;
            }
            ldirectord(check, kind, server)
        } else if check.kind == "inhibit_on_failure" {
            continue;
        } else {
            keepalived(check, server, inhibit)
        };
        if !out
            .iter()
            .any(|h| h.server == entry.server && h.director == entry.director)
        {
            out.push(entry);
        }
    }
    out
}

/// keepalived: the next check (`delay_loop`, default 60 s), then `retry` + 1 tries of
/// `connect_timeout` (5 s) with `delay_before_retry` (1 s) between them.
fn keepalived(
    check: &HealthCheck,
    server: std::net::SocketAddr,
    inhibit: bool,
) -> HealthCheckConfig {
    let s = &check.settings;
    let delay_loop = seconds(s, "delay_loop", 60.0);
    let timeout = seconds(s, "connect_timeout", 5.0);
    let retry = seconds(s, "retry", seconds(s, "nb_get_retry", 1.0));
    let before_retry = seconds(s, "delay_before_retry", 1.0);
    HealthCheckConfig {
        director: Some(check.director.clone()),
        server,
        kind: check.kind.clone(),
        on_failure: if inhibit {
            OnFailure::Quiesce
        } else {
            OnFailure::Remove
        },
        detect: duration(delay_loop + (retry + 1.0) * timeout + retry * before_retry),
        recover: duration(delay_loop),
        settings: kept(s, KEEPALIVED_TIMING),
    }
}

/// ldirectord: `failurecount` (1) failed checks, each after `checkinterval` (10 s) and a
/// timeout, found in ldirectord's order: for `negotiate`, the service's
/// `negotiatetimeout`, its `checktimeout`, the global ones, then 30 s; for other checks the
/// service's `checktimeout`, its `negotiatetimeout`, the global ones, then 5 s.
fn ldirectord(check: &HealthCheck, kind: &str, server: std::net::SocketAddr) -> HealthCheckConfig {
    let s = &check.settings;
    let get = |key: &str| -> Option<f64> {
        s.iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0 && *v < 1e9)
    };
    let either = |key: &str| get(key).or_else(|| get(&format!("global.{key}")));
    let timeout = if kind == "negotiate" {
        [
            "negotiatetimeout",
            "checktimeout",
            "global.negotiatetimeout",
            "global.checktimeout",
        ]
        .into_iter()
        .find_map(get)
        .unwrap_or(30.0)
    } else {
        [
            "checktimeout",
            "negotiatetimeout",
            "global.checktimeout",
            "global.negotiatetimeout",
        ]
        .into_iter()
        .find_map(get)
        .unwrap_or(5.0)
    };
    let interval = either("checkinterval").unwrap_or(10.0);
    let count = either("failurecount").unwrap_or(1.0).max(1.0);
    let quiescent = s
        .iter()
        .rev()
        .find(|(k, _)| k == "quiescent" || k == "global.quiescent")
        .is_some_and(|(_, v)| v == "yes");
    HealthCheckConfig {
        director: Some(check.director.clone()),
        server,
        kind: check.kind.clone(),
        on_failure: if quiescent {
            OnFailure::Quiesce
        } else {
            OnFailure::Remove
        },
        detect: duration(count * (interval + timeout)),
        recover: duration(interval),
        settings: kept(s, LDIRECTORD_TIMING),
    }
}
