//! The event loop of one shard: actors, links, lanes, the appliance, hosts.

use super::*;

impl<'a> Engine<'a> {
    pub(super) fn schedule_wake(&mut self, actor: u16, at: TimeNs) {
        let slot = &mut self.scheduled[usize::from(actor)];
        if slot.is_none_or(|current| at < current) {
            *slot = Some(at);
            if !self.queue.push(at, Event::Wake(actor)) {
                *slot = None;
            }
        }
    }

    /// Call `observer` with a snapshot every `interval_ns` of virtual time (and at the end).
    /// Observing does not change the run.
    pub fn observe(&mut self, interval_ns: TimeNs, observer: Observer<'a>) {
        self.observer = Some((interval_ns.max(1), observer));
    }

    /// The shard's cumulative results so far (without records and emitted frames).
    pub fn snapshot(&self) -> ShardResult {
        self.probe(None).result()
    }

    pub(super) fn probe<'s>(&'s self, shared: Option<&'s SharedStages>) -> ShardProbe<'s> {
        ShardProbe {
            pipeline: &self.pipeline,
            result: &self.result,
            actors: &self.actors,
            shared,
        }
    }

    /// Tell the observer about every interval boundary up to and including `time`; returns
    /// the next boundary.
    pub(super) fn observe_until(
        &self,
        next: TimeNs,
        time: TimeNs,
        shared: Option<&SharedStages>,
    ) -> TimeNs {
        let Some((interval, observer)) = self.observer else {
            return TimeNs::MAX;
        };
        let mut boundary = next;
        while boundary <= time {
            observer(ShardSnapshot {
                queue: self.queue_index,
                now: boundary,
                state: ShardState::Running(self.probe(shared)),
            });
            boundary = boundary.saturating_add(interval);
        }
        boundary
    }

    /// Run to the end of the scenario; `progress` is told how much virtual time passed.
    /// (For a shard whose pipeline keeps all its stages; see [`super::shared`].)
    pub fn run(mut self, progress: &dyn Fn(TimeNs)) -> ShardResult {
        self.start();
        self.run_until(self.end.saturating_add(1), progress, None);
        self.end_run(progress)
    }

    /// Schedule every actor's first wake-up and the timed events.
    pub(super) fn start(&mut self) {
        for actor in 0..self.actors.len() as u16 {
            self.schedule_wake(actor, 0);
        }
        for (index, event) in self.scenario.events.iter().enumerate() {
            self.queue
                .push(event.get_ref().at().0, Event::Timed(index as u16));
        }
        self.boundary = self.observer.map_or(TimeNs::MAX, |(interval, _)| interval);
    }

    /// The time of the next event, if it is within the run.
    pub(super) fn next_time(&self) -> Option<TimeNs> {
        self.queue.peek_time().filter(|&time| time <= self.end)
    }

    /// Handle every event before `limit` (and not after the end). Nothing handled here
    /// makes anything happen before `limit` that is not handled here too: actors run
    /// ahead only up to it.
    /// `shared`: the shared stages, shown to the observer (while they are out).
    pub(super) fn run_until(
        &mut self,
        limit: TimeNs,
        progress: &dyn Fn(TimeNs),
        shared: Option<&SharedStages>,
    ) {
        self.limit = limit;
        while let Some(time) = self.queue.peek_time() {
            if time > self.end || time >= limit {
                break;
            }
            if time > self.boundary {
                self.boundary = self.observe_until(self.boundary, time - 1, shared);
            }
            let Some((now, event)) = self.queue.pop() else {
                break;
            };
            if now - self.reported >= 1_000_000 {
                progress(now - self.reported);
                self.reported = now;
            }
            if now >= self.next_sample {
                self.sample(now);
            }
            self.handle(now, event);
        }
    }

    /// After the last event: the last progress, the last observer boundaries, the results.
    pub(super) fn end_run(self, progress: &dyn Fn(TimeNs)) -> ShardResult {
        progress(self.end.saturating_sub(self.reported));
        if self.boundary < self.end {
            self.observe_until(self.boundary, self.end - 1, None);
        }
        self.finish_observed()
    }

    /// Finish the run and give the observer the final state (at the end of the scenario).
    pub(super) fn finish_observed(self) -> ShardResult {
        let observer = self.observer;
        let (queue, end) = (self.queue_index, self.end);
        let result = self.finish();
        if let Some((_, observer)) = observer {
            let snapshot = ShardResult {
                counters: result.counters.clone(),
                totals: result.totals.clone(),
                flows: result.flows.clone(),
                backends: result.backends.clone(),
                delivered: result.delivered.clone(),
                timeline: result.timeline.clone(),
                actors: result.actors.clone(),
                events: result.events.clone(),
                records: Vec::new(),
                emitted: Vec::new(),
                appliance: result.appliance.clone(),
                series: result.series.clone(),
                connections: result.connections.clone(),
                translated: result.translated.clone(),
                persistence: result.persistence.clone(),
            };
            observer(ShardSnapshot {
                queue,
                now: end,
                state: ShardState::Finished(Box::new(snapshot)),
            });
        }
        result
    }

    /// Sample the series' ActiveConn at the first event of a bucket.
    pub(super) fn sample(&mut self, now: TimeNs) {
        let series = &mut self.result.series;
        // An event at the very end of a run that ends on a bucket boundary starts no bucket
        // of the run (whether such an event exists must not change the series).
        if now < self.end || !self.end.is_multiple_of(series.bucket_ns) {
            series.sample_active(now, self.pipeline.directors());
        }
        self.next_sample = (now / series.bucket_ns + 1) * series.bucket_ns;
    }

    pub(super) fn handle(&mut self, now: TimeNs, event: Event) {
        match event {
            Event::Wake(actor) => self.wake(now, actor),
            Event::Lane(lane) => self.lane_arrival(now, lane),
            Event::Frame(slot) => {
                if let Some((lane, frame)) = self.held.take(slot) {
                    self.in_flight -= 1;
                    self.arrived(now, lane, frame);
                }
            }
            Event::Timed(index) => self.timed(now, index),
        }
    }

    /// The first frame of `lane` arrives; the next one (if any) gets the lane's event.
    pub(super) fn lane_arrival(&mut self, now: TimeNs, lane: u16) {
        let fifo = &mut self.lanes[usize::from(lane)];
        let Some(head) = fifo.pop_front() else {
            return;
        };
        debug_assert_eq!(head.at, now);
        if let Some(next) = fifo.front() {
            let (at, seq) = (next.at, next.seq);
            self.queue.push_keyed(at, seq, Event::Lane(lane));
        }
        self.in_flight -= 1;
        self.arrived(now, lane, head.frame);
    }

    pub(super) fn arrived(&mut self, now: TimeNs, lane: u16, frame: Vec<u8>) {
        let host = lane / 2;
        if lane % 2 == Direction::ToAppliance as u16 {
            self.at_appliance(now, host, frame);
        } else {
            self.at_host(now, host, frame);
        }
    }

    pub(super) fn wake(&mut self, mut now: TimeNs, actor: u16) {
        let index = usize::from(actor);
        if self.scheduled[index] != Some(now) {
            return; // superseded by an earlier wake-up
        }
        self.scheduled[index] = None;
        loop {
            let next = self.actors[index].wake(now, &mut self.outbox);
            self.send_outbox(now);
            match next {
                Some(next) if next > now && next < self.run_ahead_limit() => now = next,
                _ => return self.after_actor(now, actor, next),
            }
        }
    }

    /// An actor asking to be woken before this time (and after now) is woken at once
    /// instead of through the queue: its wake-up would be the very next event anyway —
    /// earlier than everything queued (a queued event at the same time was scheduled first
    /// and runs first), before the next series sample and observer boundary, not after the
    /// end — so the order of events is unchanged. A flood thus sends packet after packet
    /// without an event per packet while nothing else is due.
    pub(super) fn run_ahead_limit(&self) -> TimeNs {
        if !self.shortcuts {
            return 0;
        }
        self.queue
            .peek_time()
            .unwrap_or(TimeNs::MAX)
            .min(self.next_sample)
            .min(self.boundary.saturating_add(1))
            .min(self.end.saturating_add(1))
            .min(self.limit)
    }

    pub(super) fn after_actor(&mut self, now: TimeNs, actor: u16, next: Option<TimeNs>) {
        let Some(mut next) = next else {
            return;
        };
        let index = usize::from(actor);
        let (instant, count) = &mut self.same_instant[index];
        if next <= now {
            next = now;
            if *instant == now {
                *count += 1;
            } else {
                (*instant, *count) = (now, 1);
            }
            if *count > MAX_SAME_INSTANT_WAKES {
                next = now + 1_000;
            }
        }
        self.schedule_wake(actor, next);
    }

    pub(super) fn send_outbox(&mut self, now: TimeNs) {
        if self.outbox.is_empty() {
            return;
        }
        let mut sending = std::mem::take(&mut self.sending);
        self.outbox.drain_into(&mut sending);
        for (host, frame) in sending.drain(..) {
            self.result.totals.sent += 1;
            self.travel(now, host, Direction::ToAppliance, frame);
        }
        self.sending = sending;
    }

    /// Send `frame` over `host`'s link in `direction`: lost, tail-dropped, or arriving
    /// (with its duplicate, when the link makes one). A frame reaching the appliance at the
    /// instant it was sent is processed at once; every other arrival is queued.
    pub(super) fn travel(
        &mut self,
        now: TimeNs,
        host: HostId,
        direction: Direction,
        mut frame: Vec<u8>,
    ) {
        let (to_appliance, from_appliance) = &mut self.links[usize::from(host)];
        let pipe = match direction {
            Direction::ToAppliance => to_appliance,
            Direction::FromAppliance => from_appliance,
        };
        let sent = pipe.send_frame(now, &mut frame);
        let totals = &mut self.result.totals;
        totals.link_reordered += u64::from(sent.reordered);
        totals.link_corrupted += u64::from(sent.corrupted);
        let at = match sent.transit {
            Transit::Arrives(at) => at,
            Transit::Lost | Transit::QueueFull => {
                if sent.transit == Transit::Lost {
                    totals.link_lost += 1;
                } else {
                    totals.link_queue_full += 1;
                }
                self.outbox.recycle(frame);
                return;
            }
        };
        let copy = sent.duplicated.then(|| {
            totals.link_duplicated += 1;
            let mut copy = self.outbox.buffer();
            copy.extend_from_slice(&frame);
            copy
        });
        self.arrive_or_enqueue(now, at, host, direction, frame);
        if let Some(copy) = copy {
            self.arrive_or_enqueue(now, at, host, direction, copy);
        }
    }

    /// A frame arriving at `at`: processed at once when it reaches the appliance now, else
    /// queued on its lane.
    pub(super) fn arrive_or_enqueue(
        &mut self,
        now: TimeNs,
        at: TimeNs,
        host: HostId,
        direction: Direction,
        frame: Vec<u8>,
    ) {
        if direction == Direction::ToAppliance && at == now {
            self.at_appliance(now, host, frame);
        } else {
            self.enqueue(at, lane_of(host, direction), frame);
        }
    }

    /// Put a frame on its way: at the end of its lane's FIFO when it arrives no earlier than
    /// the FIFO's last frame, else as an event of its own.
    pub(super) fn enqueue(&mut self, at: TimeNs, lane: u16, frame: Vec<u8>) {
        if self.in_flight >= IN_FLIGHT_CAPACITY {
            self.result.totals.link_queue_full += 1;
            self.outbox.recycle(frame);
            return;
        }
        let seq = self.queue.reserve_seq();
        let fifo = &mut self.lanes[usize::from(lane)];
        if fifo.back().is_none_or(|last| last.at <= at) {
            fifo.push_back(InFlight { at, seq, frame });
            self.in_flight += 1;
            if fifo.len() == 1 {
                self.queue.push_keyed(at, seq, Event::Lane(lane));
            }
        } else {
            let slot = self.held.hold(lane, frame);
            if self.queue.push_keyed(at, seq, Event::Frame(slot)) {
                self.in_flight += 1;
            } else if let Some((_, frame)) = self.held.take(slot) {
                self.outbox.recycle(frame);
            }
        }
    }

    pub(super) fn second(&mut self, now: TimeNs) -> &mut SecondRow {
        second_row(&mut self.result.timeline, &mut self.cursors.0, now)
    }

    pub(super) fn at_appliance(&mut self, now: TimeNs, host: HostId, frame: Vec<u8>) {
        let iface = self.world.hosts[usize::from(host)].iface;
        let wire_len = frame.len() as u32;
        if !self.split {
            let outcome = self
                .pipeline
                .process(now, iface, LinkType::Ethernet, frame, wire_len);
            return self.after_pipeline(now, Some(outcome));
        }
        match self
            .pipeline
            .process_local(now, iface, LinkType::Ethernet, frame, wire_len)
        {
            Local::Done(outcome) => self.after_pipeline(now, Some(outcome)),
            Local::Deferred(work) => self.defer(now, work),
        }
        if self.pipeline.has_deferred() {
            let frames: Vec<_> = self.pipeline.take_deferred().collect();
            for work in frames {
                self.defer(now, work);
            }
        }
    }

    /// Work for the shared stages, kept for the shared pass.
    fn defer(&mut self, now: TimeNs, work: Deferred) {
        let order = self.pending.len() as u64;
        self.pending.push(shared::Pending::work(now, order, work));
    }

    /// Count what the pipeline decided (`None`: frames the shield sent, no packet of their
    /// own) and route what it emitted.
    pub(super) fn after_pipeline(&mut self, now: TimeNs, outcome: Option<PacketOutcome>) {
        if let Some(buffer) = self.pipeline.take_spare_frame() {
            self.outbox.recycle(buffer);
        }
        let mut emitted = std::mem::take(&mut self.emitted);
        self.pipeline.drain_emitted_into(&mut emitted);
        match outcome {
            Some(outcome) => {
                self.count_outcome(now, &outcome, emitted.len());
                self.record(now, outcome, emitted.len());
            }
            None => {
                self.result.totals.emitted += emitted.len() as u64;
                self.second(now).emitted += emitted.len() as u64;
                let row = self.result.series.row(now, &mut self.cursors.1);
                row.emitted += emitted.len() as u64;
            }
        }
        if self.track_tuples {
            for frame in &emitted {
                self.note_translated(now, &frame.frame);
            }
        }
        for frame in emitted.drain(..) {
            self.route(now, frame.frame, frame.next_hop);
        }
        self.emitted = emitted;
    }

    /// A TCP SYN the appliance sends with another source endpoint than the packet it
    /// processed had: a NAT-translated connection opening, kept for the reuse check.
    fn note_translated(&mut self, now: TimeNs, frame: &[u8]) {
        use datapath::packet::{ParseOptions, parse_into};
        let mut meta = PacketMeta::default();
        let options = ParseOptions::default();
        parse_into(
            &options,
            LinkType::Ethernet,
            frame,
            frame.len() as u32,
            0,
            &mut meta,
        );
        let syn = meta.tcp_flags & 0x12 == 0x02;
        let input = self.pipeline.last_meta();
        let endpoint = |ip: Option<IpAddr>, port: Option<u16>| Some(SocketAddr::new(ip?, port?));
        let (Some(src), Some(dst), Some(original)) = (
            endpoint(meta.src, meta.sport),
            endpoint(meta.dst, meta.dport),
            endpoint(input.src, input.sport),
        ) else {
            return;
        };
        if syn && src != original {
            let line = TranslatedSyn {
                at: now,
                translated: (src, dst),
                original,
            };
            self.result.translated.push(line);
        }
    }

    /// Keep a per-packet record (`--packets`).
    fn record(&mut self, now: TimeNs, outcome: PacketOutcome, emitted: usize) {
        if !self.collect.records {
            return;
        }
        if self.result.records.len() < RECORD_CAPACITY {
            self.result.records.push(PacketLine {
                time: now,
                queue: self.queue_index,
                meta: self.pipeline.last_meta().clone(),
                outcome,
                emitted: emitted as u16,
            });
        } else {
            self.result.totals.not_kept += 1;
        }
    }

    pub(super) fn count_outcome(&mut self, now: TimeNs, outcome: &PacketOutcome, emitted: usize) {
        self.result.totals.processed += 1;
        self.result.totals.emitted += emitted as u64;
        if let (Some(flow), rule) = (outcome.flow, outcome.flow_rule) {
            *self
                .result
                .flows
                .entry((flow, rule.unwrap_or(0)))
                .or_default() += 1;
        }
        if let Some(backend) = outcome.backend {
            *self.result.backends.entry(backend).or_default() += 1;
            self.result.series.count_backend(now, backend);
        }
        if let (Some((service, true)), Some(real)) = (outcome.director, outcome.backend) {
            let meta = self.pipeline.last_meta();
            if let (Some(address), Some(port)) = (meta.src, meta.sport) {
                self.result.connections.push(ConnectionLine {
                    at: now,
                    client: SocketAddr::new(address, port),
                    service,
                    real,
                    queue: self.queue_index,
                });
            }
        }
        count_row(self.second(now), outcome, emitted);
        count_row(
            self.result.series.row(now, &mut self.cursors.1),
            outcome,
            emitted,
        );
    }

    /// Send a frame the appliance emitted to the host owning its destination, or its
    /// route's gateway (`next_hop`, from a routing table) when it has one.
    pub(super) fn route(&mut self, now: TimeNs, frame: Vec<u8>, next_hop: Option<IpAddr>) {
        if self.collect.emitted {
            if self.result.emitted.len() < CAPTURE_CAPACITY {
                self.result.emitted.push((now, frame.clone()));
            } else {
                self.result.totals.not_kept += 1;
            }
        }
        let Some(destination) = next_hop.or_else(|| frame_destination(&frame)) else {
            self.result.totals.non_ip += 1;
            self.outbox.recycle(frame);
            return;
        };
        let Some(host) = self.world.route(destination) else {
            self.result.totals.unroutable += 1;
            self.outbox.recycle(frame);
            return;
        };
        if self.deliver_to_sink(now, host) {
            self.outbox.recycle(frame);
            return;
        }
        self.travel(now, host, Direction::FromAppliance, frame);
    }

    /// A frame to a host where nothing listens (no backend, no client owns an address of
    /// it: flood replies to spoofed sources) over a link that only delays it (no bandwidth
    /// limit, loss or faults, so no random draw and no queue): its fate is known now, so it
    /// is counted now — delivered in the rows of its arrival time, or in flight when that is
    /// after the end — instead of travelling as an event. Nothing else can observe it, so
    /// every count is what the event would have made; only a live observer sees such
    /// deliveries up to one link latency early. Returns false (the frame travels) otherwise.
    pub(super) fn deliver_to_sink(&mut self, now: TimeNs, host: HostId) -> bool {
        let index = usize::from(host);
        if !self.shortcuts || self.backend_actor[index].is_some() || self.has_clients[index] {
            return false;
        }
        let Some(latency) = self.links[index].1.fixed_latency() else {
            return false;
        };
        let at = now.saturating_add(latency);
        if at > self.end {
            self.result.totals.in_flight += 1;
            return true;
        }
        let result = &mut self.result;
        result.totals.delivered += 1;
        result.totals.delivered_to_sink += 1;
        result.delivered[index] += 1;
        second_row(&mut result.timeline, &mut self.sink_cursors.0, at).delivered += 1;
        result.series.row(at, &mut self.sink_cursors.1).delivered += 1;
        true
    }

    pub(super) fn at_host(&mut self, now: TimeNs, host: HostId, frame: Vec<u8>) {
        self.result.totals.delivered += 1;
        self.result.delivered[usize::from(host)] += 1;
        self.second(now).delivered += 1;
        self.result.series.row(now, &mut self.cursors.1).delivered += 1;
        let receiver = match self.backend_actor[usize::from(host)] {
            Some(actor) => Receiver::Actor(actor),
            None => frame_destination(&frame)
                .and_then(|dst| self.client_actor.get(&dst).copied())
                .map_or(Receiver::Sink, Receiver::Actor),
        };
        match receiver {
            Receiver::Sink => self.result.totals.delivered_to_sink += 1,
            Receiver::Actor(actor) => {
                let next = self.actors[usize::from(actor)].deliver(now, &frame, &mut self.outbox);
                self.send_outbox(now);
                self.after_actor(now, actor, next);
            }
        }
        self.outbox.recycle(frame);
    }

    pub(super) fn finish(mut self) -> ShardResult {
        for actor in &mut self.actors {
            actor.finish(self.end);
        }
        self.result.actors = self.actors.iter().map(|a| a.stats()).collect();
        self.result.counters = self.pipeline.counters().clone();
        self.result.appliance = crate::appliance::report(&self.pipeline);
        let series = &mut self.result.series;
        series.record_modes(self.queue_index, &self.pipeline);
        let buckets = self.end.div_ceil(series.bucket_ns) as usize;
        // Buckets after the last event's start with the final state.
        series.fill_active(buckets, self.pipeline.directors());
        series.finish(buckets);
        if let Some(directors) = self.pipeline.directors() {
            let services = directors.services().iter();
            let timeouts = services.map(|s| s.spec.persistence.map(|p| p.timeout));
            self.result.persistence = timeouts.collect();
        }
        // Shared timed events are logged when the shared pass runs them.
        self.result.events.sort_by_key(|e| e.at_ns);
        self.result.totals.event_overflow = self.queue.overflow();
        let out_of_order = self
            .queue
            .pending()
            .filter(|e| matches!(e, Event::Frame(_)))
            .count();
        let in_lanes: usize = self.lanes.iter().map(VecDeque::len).sum();
        // Plus frames to sinks that arrive after the end (counted when sent).
        self.result.totals.in_flight += (out_of_order + in_lanes) as u64;
        self.result
    }
}
