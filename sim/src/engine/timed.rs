//! Timed scenario events: link changes, server down/up and weights, shield modes.

use super::*;
use datapath::director::Directors;

impl Engine<'_> {
    pub(super) fn timed(&mut self, now: TimeNs, index: u16) {
        let event = self.scenario.events[usize::from(index)].get_ref().clone();
        let status = match &event {
            TimedEvent::Link { .. } => self.link_event(&event),
            // The shared stages' events: once (queue 0 logs them), in the shared order.
            _ if self.split && is_director_event(&event) => {
                if self.queue_index != 0 {
                    return;
                }
                return self.pending.push(shared::Pending::timed(now, index));
            }
            other => apply_stage_event(&mut self.pipeline, other),
        };
        self.result.events.push(EventLogEntry {
            at_ns: now,
            event,
            status,
        });
    }

    /// Apply a timed link change to both directions of the host's link.
    pub(super) fn link_event(&mut self, event: &TimedEvent) -> String {
        let TimedEvent::Link {
            host,
            latency,
            bandwidth,
            loss_ppm,
            duplicate_ppm,
            reorder_ppm,
            reorder_delay,
            corrupt_ppm,
            ..
        } = event
        else {
            return "ignored: not a link event".into();
        };
        let Some(id) = self.world.host(host) else {
            return "applied".into();
        };
        let queues = self.scenario.queues;
        let (pipe_in, pipe_out) = &mut self.links[usize::from(id)];
        for pipe in [pipe_in, pipe_out] {
            let (old_latency, old_bandwidth, old_loss) = pipe.parameters();
            let bandwidth = bandwidth
                .map(|b| b.0)
                .or(old_bandwidth.map(|b| b * u64::from(queues)));
            pipe.apply(
                latency.map_or(old_latency, |l| l.0),
                bandwidth,
                loss_ppm.unwrap_or(old_loss),
                queues,
            );
            let old = pipe.faults();
            pipe.set_faults(Faults {
                duplicate_ppm: duplicate_ppm.unwrap_or(old.duplicate_ppm),
                reorder_ppm: reorder_ppm.unwrap_or(old.reorder_ppm),
                reorder_delay_ns: reorder_delay.map_or(old.reorder_delay_ns, |d| d.0),
                corrupt_ppm: corrupt_ppm.unwrap_or(old.corrupt_ppm),
            });
        }
        "applied".into()
    }
}

/// Apply a timed event that needs a stage API (server down/up, weight, shield mode).
///
/// The pipeline has no such API yet: the event is recorded as pending. When the director and
/// shield land, the lead replaces the body with calls such as
/// `pipeline.set_server_state(director, server, up)`, `pipeline.set_server_weight(...)` and
/// `pipeline.set_syn_cookie_mode(context, mode, now)` and returns `"applied"`.
pub fn apply_stage_event(pipeline: &mut Pipeline, event: &TimedEvent) -> String {
    match event {
        TimedEvent::Mode {
            at,
            context,
            syn_cookies,
        } => mode_event(pipeline, at.0, *context, syn_cookies),
        TimedEvent::Link { .. } => "applied".into(),
        director_event => apply_director_event(pipeline.directors_mut(), director_event),
    }
}

/// Whether a timed event changes the directors (server down/up, weight).
pub(super) fn is_director_event(event: &TimedEvent) -> bool {
    matches!(
        event,
        TimedEvent::ServerDown { .. } | TimedEvent::ServerUp { .. } | TimedEvent::Weight { .. }
    )
}

/// Apply a server down/up or weight event to the directors (other events: ignored).
pub fn apply_director_event(directors: Option<&mut Directors>, event: &TimedEvent) -> String {
    match event {
        TimedEvent::ServerDown {
            at,
            director,
            server,
        } => director_event(directors, director.as_deref(), |d, name| {
            d.set_down(at.0, name, *server)
        }),
        TimedEvent::ServerUp {
            at,
            director,
            server,
        } => director_event(directors, director.as_deref(), |d, name| {
            d.set_up(at.0, name, *server)
        }),
        TimedEvent::Weight {
            at,
            director,
            server,
            weight,
        } => {
            let weight = i32::try_from(*weight).unwrap_or(i32::MAX);
            director_event(directors, director.as_deref(), |d, name| {
                d.set_weight(at.0, name, *server, weight)
            })
        }
        TimedEvent::Mode { .. } | TimedEvent::Link { .. } => "ignored: not a director event".into(),
        // Replaced by the director event they cause when the scenario loads.
        TimedEvent::CheckFail { .. } | TimedEvent::CheckOk { .. } => {
            "ignored: a health-check event left unexpanded".into()
        }
    }
}

/// Force the SYN-cookie mode of the shield contexts for `context` (every context with that
/// destination, in every instance; the default contexts when absent) to `on`, `off` or
/// `auto` at `now`: the change shows in the contexts' mode timelines.
fn mode_event(pipeline: &mut Pipeline, now: u64, context: Option<IpAddr>, setting: &str) -> String {
    use datapath::shield::{ContextScope, InstanceScope, MODE_SYN_COOKIES, ModeSetting};
    let Some(shield) = pipeline.shield_mut() else {
        return "ignored: no shield configured".into();
    };
    let setting = match setting {
        "on" => ModeSetting::On,
        "off" => ModeSetting::Off,
        "auto" => ModeSetting::Auto,
        other => return format!("failed: syn_cookies must be on, off or auto, not {other:?}"),
    };
    let scope = context.map_or(ContextScope::Default, ContextScope::Destination);
    match shield.override_modes(now, InstanceScope::All, scope, MODE_SYN_COOKIES, setting) {
        Ok(contexts) => {
            let names: Vec<String> = contexts.iter().map(|c| shield.context_name(*c)).collect();
            format!("applied to {}", names.join(", "))
        }
        Err(error) => format!("failed: {error}"),
    }
}

/// Apply a health change to the named director, or to every director that has the server.
fn director_event(
    directors: Option<&mut Directors>,
    director: Option<&str>,
    mut change: impl FnMut(
        &mut datapath::director::Directors,
        &str,
    ) -> Result<(), datapath::director::HealthError>,
) -> String {
    let Some(directors) = directors else {
        return "ignored: no director configured".into();
    };
    let names: Vec<String> = match director {
        Some(name) => vec![name.to_string()],
        None => directors
            .services()
            .iter()
            .map(|s| s.spec.name.clone())
            .collect(),
    };
    let mut applied = Vec::new();
    let mut errors = Vec::new();
    for name in &names {
        match change(directors, name) {
            Ok(()) => applied.push(name.as_str()),
            Err(error) if director.is_some() => errors.push(error.to_string()),
            Err(_) => {}
        }
    }
    match (applied.is_empty(), errors.is_empty()) {
        (false, _) => format!("applied to {}", applied.join(", ")),
        (true, false) => format!("failed: {}", errors.join("; ")),
        (true, true) => "ignored: no director has that server".into(),
    }
}
