//! `rr` and `wrr` (`ip_vs_rr.c`, `ip_vs_wrr.c`).
//!
//! rr keeps a cursor into the server list and takes the next server after it that has a
//! positive weight and is not overloaded, wrapping once. wrr walks the list in passes: the
//! first pass takes servers whose weight is at least `max − (gcd − 1)`, each later pass
//! lowers the bar by the gcd, the last pass takes every weight ≥ 1; so weights 4, 3, 2 in
//! list order A, B, C give A A B A B C A B C from `ip_vs_wrr_init_svc`'s state. Any change to
//! the server list resets the wrr cursor to the list head and re-aligns the current bar
//! exactly as `ip_vs_wrr_dest_changed` does — including each `ipvsadm -a` of a service
//! being configured, which is how a service starts (see `Scheduler::configured`).

use super::super::dest::{DestId, Dests};
use super::{DestChange, usable};

/// rr: take the next usable server after the cursor.
pub(super) fn rr(cursor: &mut Option<DestId>, dests: &Dests) -> Option<DestId> {
    let order = &dests.order;
    let start = cursor.and_then(|id| order.iter().position(|&d| d == id));
    let after = start.map_or(0, |p| p + 1)..order.len();
    let wrapped = 0..start.map_or(0, |p| p + 1);
    let chosen = after
        .chain(wrapped)
        .map(|position| order[position])
        .find(|&id| usable(dests.get(id)))?;
    *cursor = Some(chosen);
    Some(chosen)
}

/// rr's `del_dest`: a cursor on the removed server moves to the entry before it.
pub(super) fn rr_dest_changed(cursor: &mut Option<DestId>, dests: &Dests, change: DestChange) {
    if let DestChange::Removed(id, position) = change
        && *cursor == Some(id)
    {
        *cursor = position.checked_sub(1).map(|p| dests.order[p]);
    }
}

/// The wrr mark (`struct ip_vs_wrr_mark`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrrMark {
    /// Current server (`None` = list head).
    pub current: Option<DestId>,
    /// Current weight bar (`cw`).
    pub current_weight: i64,
    /// Maximum weight less (gcd − 1) (`mw`).
    pub max_weight: i64,
    /// Step: gcd of the positive weights (`di`).
    pub step: i64,
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn weights_gcd(dests: &Dests) -> i64 {
    let positive = dests
        .linked()
        .map(|(_, s)| i64::from(s.weight))
        .filter(|&w| w > 0);
    let g = positive.fold(0, |g, w| if g > 0 { gcd(w, g) } else { w });
    if g > 0 { g } else { 1 }
}

fn weights_max(dests: &Dests) -> i64 {
    dests
        .linked()
        .map(|(_, s)| i64::from(s.weight))
        .fold(0, i64::max)
}

impl WrrMark {
    /// `ip_vs_wrr_init_svc`.
    pub fn new(dests: &Dests) -> Self {
        let step = weights_gcd(dests);
        let max_weight = weights_max(dests) - (step - 1);
        Self {
            current: None,
            current_weight: max_weight,
            max_weight,
            step,
        }
    }

    /// `ip_vs_wrr_dest_changed`.
    pub fn dest_changed(&mut self, dests: &Dests) {
        self.current = None;
        self.step = weights_gcd(dests);
        self.max_weight = weights_max(dests) - (self.step - 1);
        if self.current_weight > self.max_weight || self.current_weight == 0 {
            self.current_weight = self.max_weight;
        } else if self.step > 1 {
            self.current_weight = (self.current_weight / self.step) * self.step + 1;
        }
    }

    /// `ip_vs_wrr_schedule`.
    pub fn schedule(&mut self, dests: &Dests) -> Option<DestId> {
        let order = &dests.order;
        if self.max_weight == 0 {
            return None;
        }
        let mut position = self
            .current
            .and_then(|id| order.iter().position(|&d| d == id));
        let last = position;
        let mut stop: Option<usize> = None;
        let (mut last_pass, mut restarted) = (false, false);
        loop {
            let from = position.map_or(0, |p| p + 1);
            for (p, &id) in order.iter().enumerate().skip(from) {
                let server = dests.get(id);
                if !server.overloaded && i64::from(server.weight) >= self.current_weight {
                    self.current = Some(id);
                    return self.current;
                }
                if stop == Some(p) {
                    self.current = Some(id);
                    return None;
                }
            }
            position = None;
            self.current_weight -= self.step;
            if self.current_weight <= 0 {
                self.current_weight = self.max_weight;
                if last_pass || last.is_none() {
                    self.current = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.current_weight <= self.step;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
    }
}
