//! How IPVS connections live and die: the TCP/UDP state transitions with the
//! active/inactive accounting (`set_tcp_state`, `udp_state_transition`), and the timers —
//! connection and template expiry, lblc garbage collection, rate estimators
//! ([`Directors::advance`]).
//!
//! Not here: scheduling and creating connections (`mod.rs`), the table itself
//! (`connection`).

use super::*;

impl Directors {
    /// `set_tcp_state` / `udp_state_transition`, with the active/inactive accounting.
    pub(super) fn transition(&mut self, now: TimeNs, slot: u32, direction: Direction, flags: u8) {
        let Some(connection) = self.table.connections[slot as usize].as_mut() else {
            return;
        };
        match connection.state {
            ProtocolState::Tcp(old) => {
                let mut direction = direction;
                if connection.no_output {
                    if direction == Direction::Output {
                        connection.no_output = false;
                    } else {
                        direction = Direction::InputOnly;
                    }
                }
                let new = next_tcp_state(old, direction, flags);
                if new != old {
                    let server = self.services[connection.service]
                        .dests
                        .get_mut(connection.dest);
                    if !connection.inactive && !new.is_active() {
                        server.set_activity(false);
                        connection.inactive = true;
                    } else if connection.inactive && new.is_active() {
                        server.set_activity(true);
                        connection.inactive = false;
                    }
                }
                connection.state = ProtocolState::Tcp(new);
                connection.timeout = new.timeout();
            }
            ProtocolState::Udp => connection.timeout = UDP_TIMEOUT,
        }
        connection.expires = now + connection.timeout;
    }

    /// Run every timer due by `now`: connection and template expiry, lblc garbage
    /// collection, rate estimators. `process` calls it; call it directly to let time pass
    /// without packets.
    pub fn advance(&mut self, now: TimeNs) {
        while let Some((at, entry)) = self.table.pop_due(now) {
            match entry {
                TimerEntry::Connection(slot) => self.connection_timer(at, now, slot),
                TimerEntry::Template(slot) => self.template_timer(at, now, slot),
            }
        }
        // The rate estimator runs once per interval; after a long quiet gap (a capture that
        // spans years, a scenario with an idle period) the averages have decayed to zero long
        // before the gap ends, so at most MAX_ESTIMATOR_CATCH_UP intervals are replayed and
        // the rest skipped: the result is the same, the cost bounded.
        let mut replayed = 0;
        while self.next_estimate <= now && replayed < MAX_ESTIMATOR_CATCH_UP {
            for service in &mut self.services {
                listing::estimate(service);
            }
            self.next_estimate += listing::ESTIMATOR_INTERVAL;
            replayed += 1;
        }
        if self.next_estimate <= now {
            let behind = (now - self.next_estimate) / listing::ESTIMATOR_INTERVAL + 1;
            self.next_estimate += behind * listing::ESTIMATOR_INTERVAL;
        }
        for service in &mut self.services {
            service.scheduler.tick(now);
        }
    }

    pub(super) fn connection_timer(&mut self, at: TimeNs, now: TimeNs, slot: u32) {
        let Some(connection) = self.table.connections[slot as usize].as_ref() else {
            return;
        };
        if connection.expires > now {
            let expires = connection.expires;
            self.table
                .timers
                .insert((expires, TimerEntry::Connection(slot)));
            return;
        }
        if connection.controlled > 0 {
            // `ip_vs_conn_expire`: "do I control anybody?" — checked again in 60 s.
            let connection = self.table.connections[slot as usize]
                .as_mut()
                .expect("live connection");
            connection.timeout = ftp::CONTROLLER_RECHECK;
            connection.expires = at.max(connection.expires) + ftp::CONTROLLER_RECHECK;
            let expires = connection.expires;
            self.table
                .timers
                .insert((expires, TimerEntry::Connection(slot)));
            return;
        }
        self.expire_connection(slot);
    }

    pub(super) fn expire_connection(&mut self, slot: u32) {
        let Some(connection) = self.table.remove_connection(slot) else {
            return;
        };
        self.ftp_unbind(slot, &connection);
        let kind = if connection.inactive {
            BindKind::Inactive
        } else {
            BindKind::Active
        };
        self.services[connection.service]
            .dests
            .get_mut(connection.dest)
            .unbind(kind);
        if let Some(template) = connection.template
            && let Some(t) = self.table.templates[template as usize].as_mut()
        {
            t.controlled = t.controlled.saturating_sub(1);
        }
    }

    pub(super) fn template_timer(&mut self, at: TimeNs, now: TimeNs, slot: u32) {
        let Some(template) = self.table.templates[slot as usize].as_mut() else {
            return;
        };
        if template.expires > now {
            let expires = template.expires;
            self.table
                .timers
                .insert((expires, TimerEntry::Template(slot)));
            return;
        }
        if template.controlled > 0 {
            template.timeout = connection::TEMPLATE_RECHECK;
            template.expires = at.max(template.expires) + template.timeout;
            let expires = template.expires;
            self.table
                .timers
                .insert((expires, TimerEntry::Template(slot)));
            return;
        }
        if let Some(template) = self.table.remove_template(slot) {
            self.services[template.service]
                .dests
                .get_mut(template.dest)
                .unbind(BindKind::Template);
        }
    }
}
