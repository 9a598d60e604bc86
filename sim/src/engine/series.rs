//! Fine-grained time series of a shard for plots (`report.html`): verdict counts per bucket
//! of virtual time (finer than the report's per-second rows), packets per real server per
//! bucket, each real server's ActiveConn sampled at the first event of every bucket, and each
//! queue's shield mode timeline. Deterministic like everything the engine records; kept out
//! of `report.json` so the report's shape stays as it is.
//!
//! Not here: drawing (see [`crate::report_html`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use datapath::TimeNs;
use datapath::director::Directors;
use datapath::pipeline::Pipeline;

use super::SecondRow;

/// Buckets a run is cut into (about; the width is a whole number of milliseconds).
pub const SERIES_BUCKETS: u64 = 200;
/// Narrowest bucket.
const BUCKET_NS_MIN: TimeNs = 1_000_000;

/// The width of a bucket for a run of `duration_ns`.
pub fn bucket_ns(duration_ns: TimeNs) -> TimeNs {
    duration_ns
        .div_ceil(SERIES_BUCKETS)
        .div_ceil(BUCKET_NS_MIN)
        .max(1)
        * BUCKET_NS_MIN
}

/// One queue's shield mode changes for one context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeTrack {
    /// Context name.
    pub context: String,
    /// Receive queue.
    pub queue: u16,
    /// (virtual ns, mode bits) changes.
    pub changes: Vec<(TimeNs, u8)>,
}

/// Time series of a run (one shard's, or merged).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Bucket width (virtual ns).
    pub bucket_ns: TimeNs,
    /// Per bucket: verdicts, emitted and delivered frames (`second` is the bucket index).
    pub rows: Vec<SecondRow>,
    /// Per real server: packets the director sent it, per bucket.
    pub backend_packets: BTreeMap<SocketAddr, Vec<u64>>,
    /// Per real server (address as the director lists it): ActiveConn per bucket.
    pub active: BTreeMap<String, Vec<u64>>,
    /// Shield mode timelines per context and queue.
    pub modes: Vec<ModeTrack>,
}

impl Series {
    /// Empty series with buckets of `bucket_ns`.
    pub fn new(bucket_ns: TimeNs) -> Self {
        Self {
            bucket_ns: bucket_ns.max(1),
            ..Self::default()
        }
    }

    fn index(&self, now: TimeNs) -> usize {
        (now / self.bucket_ns) as usize
    }

    /// The row of the bucket holding `now` (`cursor` remembers the last bucket).
    pub fn row(&mut self, now: TimeNs, cursor: &mut BucketCursor) -> &mut SecondRow {
        let index = cursor.locate(now, self.bucket_ns);
        if self.rows.len() <= index {
            let from = self.rows.len();
            self.rows.extend((from..=index).map(|i| SecondRow {
                second: i as u64,
                ..SecondRow::default()
            }));
        }
        &mut self.rows[index]
    }

    /// Count a packet the director sent to `backend` at `now`.
    pub fn count_backend(&mut self, now: TimeNs, backend: SocketAddr) {
        let index = self.index(now);
        let counts = self.backend_packets.entry(backend).or_default();
        if counts.len() <= index {
            counts.resize(index + 1, 0);
        }
        counts[index] += 1;
    }

    /// Sample every real server's ActiveConn at `now` (the bucket holding `now` takes it).
    /// Buckets since the last sample had no event before this one, so the state at their
    /// start was the state now: they take it too (not the last sample, which would make the
    /// series depend on which events happen to fall in a bucket).
    pub fn sample_active(&mut self, now: TimeNs, directors: Option<&Directors>) {
        let index = self.index(now);
        self.fill_active(index + 1, directors);
    }

    /// Set every real server's ActiveConn in the buckets from the last sampled one up to
    /// (not including) `buckets` to the pipeline's current value.
    pub fn fill_active(&mut self, buckets: usize, directors: Option<&Directors>) {
        let Some(directors) = directors else {
            return;
        };
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        for service in directors.services() {
            for (_, real) in service.dests.linked() {
                *totals.entry(real.address.to_string()).or_default() += u64::from(real.active);
            }
        }
        for (address, active) in totals {
            let values = self.active.entry(address).or_default();
            if values.len() < buckets {
                values.resize(buckets, active);
            }
        }
    }

    /// Record the pipeline's shield mode timelines for `queue` (at the end of a shard).
    pub fn record_modes(&mut self, queue: u16, pipeline: &Pipeline) {
        let Some(shield) = pipeline.shield() else {
            return;
        };
        for context in shield.contexts() {
            let changes: Vec<(TimeNs, u8)> = shield
                .mode_timeline(context)
                .iter()
                .map(|m| (m.time_ns, m.bits))
                .collect();
            self.modes.push(ModeTrack {
                context: shield.context_name(context),
                queue,
                changes,
            });
        }
    }

    /// Add a later shard's series (call in queue order).
    pub fn merge(&mut self, other: &Self) {
        if self.rows.len() < other.rows.len() {
            let from = self.rows.len();
            self.rows
                .extend((from..other.rows.len()).map(|i| SecondRow {
                    second: i as u64,
                    ..SecondRow::default()
                }));
        }
        for (mine, theirs) in self.rows.iter_mut().zip(&other.rows) {
            mine.merge(theirs);
        }
        for (backend, counts) in &other.backend_packets {
            add_vectors(self.backend_packets.entry(*backend).or_default(), counts);
        }
        for (address, values) in &other.active {
            add_vectors(self.active.entry(address.clone()).or_default(), values);
        }
        self.modes.extend(other.modes.iter().cloned());
    }

    /// Pad ActiveConn samples to `buckets` (repeating the last value) so shards add up.
    pub fn finish(&mut self, buckets: usize) {
        for values in self.active.values_mut() {
            let last = values.last().copied().unwrap_or(0);
            values.resize(buckets.max(values.len()), last);
        }
    }
}

/// The bucket of the last lookup, so that lookups at non-decreasing times (a shard's events)
/// divide only when they enter a new bucket.
#[derive(Clone, Copy, Debug, Default)]
pub struct BucketCursor {
    start: TimeNs,
    end: TimeNs,
    index: usize,
}

impl BucketCursor {
    /// Index of the bucket of `width` ns holding `now`.
    pub fn locate(&mut self, now: TimeNs, width: TimeNs) -> usize {
        if now < self.start || now >= self.end {
            self.index = (now / width) as usize;
            self.start = self.index as u64 * width;
            self.end = self.start.saturating_add(width);
        }
        self.index
    }
}

fn add_vectors(mine: &mut Vec<u64>, theirs: &[u64]) {
    if mine.len() < theirs.len() {
        mine.resize(theirs.len(), 0);
    }
    mine.iter_mut().zip(theirs).for_each(|(a, b)| *a += b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_whole_milliseconds() {
        assert_eq!(bucket_ns(1_000_000_000), 5_000_000);
        assert_eq!(bucket_ns(150_000_000), 1_000_000);
        assert_eq!(bucket_ns(60_000_000_000), 300_000_000);
        assert_eq!(bucket_ns(1), 1_000_000);
    }
}
