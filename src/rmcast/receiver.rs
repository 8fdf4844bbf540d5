//! The receiver half: one [`Stream`] per sender in the receiver set, with
//! the handshake, gap detection, NACKs and their suppression, reassembly,
//! FIFO delivery, timed purges, MAB advertisements and best effort.

use super::packet::{
    assemble, BestEffortFragment, Data, Hello, Nack, NotReceiver, Obsolete, Start, Status, Sync,
    MAX_NACK_RANGES,
};
use super::ranges::Ranges;
use super::{Ctx, Delivery, ParcelId, RmcastConfig, RmcastEvent, RmcastPacket, StreamInfo};
use crate::id::{Incarnation, NodeId};
use crate::rpc::Bytes;
use crate::time::{earliest, Instant};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The last best-effort parcel delivered from each sender, kept across
/// stream resets (view changes) so that a late duplicate is never
/// delivered again. Bounded; the least recently used sender is forgotten.
#[derive(Debug)]
pub(super) struct BeMemory {
    cap: usize,
    clock: u64,
    map: BTreeMap<NodeId, (Incarnation, u64, u64)>,
}

impl BeMemory {
    pub(super) fn new(cap: usize) -> BeMemory {
        BeMemory {
            cap: cap.max(1),
            clock: 0,
            map: BTreeMap::new(),
        }
    }

    fn get(&self, node: NodeId, inc: Incarnation) -> Option<u64> {
        self.map
            .get(&node)
            .filter(|(i, _, _)| *i == inc)
            .map(|(_, id, _)| *id)
    }

    fn set(&mut self, node: NodeId, inc: Incarnation, id: u64) {
        self.clock += 1;
        if !self.map.contains_key(&node) && self.map.len() >= self.cap {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(n, (_, _, used))| (*used, **n))
                .map(|(n, _)| *n);
            if let Some(n) = oldest {
                self.map.remove(&n);
            }
        }
        self.map.insert(node, (inc, id, self.clock));
    }
}

#[derive(Debug, Clone, Copy)]
struct Miss {
    at: Instant,
    tries: u32,
}

/// The sequenced half of a stream, once the handshake told its start.
#[derive(Debug)]
struct SeqState {
    start: u64,
    /// The first sequence of the oldest parcel not yet delivered (or
    /// skipped); always a parcel boundary, `<= next`.
    deliver_base: u64,
    /// Every sequence below this was received or skipped.
    next: u64,
    /// Every sequence below this is known to exist.
    known: u64,
    /// Missing entries exist for the unreceived sequences in
    /// `[next, scanned)`.
    scanned: u64,
    /// Fragments in `[deliver_base, next + window)`.
    held: BTreeMap<u64, Data>,
    /// Obsolete (expired) or inconsistent ranges to skip.
    skip: Ranges,
    missing: BTreeMap<u64, Miss>,
    nack_due: BTreeSet<(Instant, u64)>,
    /// Timed parcels with a fragment here: first -> (local deadline, end).
    timed: BTreeMap<u64, (Instant, u64)>,
    timed_due: BTreeSet<(Instant, u64)>,
    /// `next` as last advertised.
    sent: Option<u64>,
    /// The largest MAB advertised.
    max_mab: u64,
    ack_at: Option<Instant>,
}

impl SeqState {
    fn new(start: u64, known: u64, window: u64) -> SeqState {
        SeqState {
            start,
            deliver_base: start,
            next: start,
            known: known.max(start),
            scanned: start,
            held: BTreeMap::new(),
            skip: Ranges::default(),
            missing: BTreeMap::new(),
            nack_due: BTreeSet::new(),
            timed: BTreeMap::new(),
            timed_due: BTreeSet::new(),
            sent: None,
            // The Hello advertised start + window.
            max_mab: start.saturating_add(window),
            ack_at: None,
        }
    }

    fn remove_missing(&mut self, x: u64) {
        if let Some(m) = self.missing.remove(&x) {
            self.nack_due.remove(&(m.at, x));
        }
    }

    fn remove_timed(&mut self, first: u64) {
        if let Some((d, _)) = self.timed.remove(&first) {
            self.timed_due.remove(&(d, first));
        }
    }

    /// Forgets held fragments, missing entries and timed entries in
    /// `[from, to)`.
    fn clear_range(&mut self, from: u64, to: u64) {
        let held: Vec<u64> = self.held.range(from..to).map(|(k, _)| *k).collect();
        for k in held {
            self.held.remove(&k);
        }
        let missing: Vec<u64> = self.missing.range(from..to).map(|(k, _)| *k).collect();
        for k in missing {
            self.remove_missing(k);
        }
        let timed: Vec<u64> = self.timed.range(from..to).map(|(k, _)| *k).collect();
        for k in timed {
            self.remove_timed(k);
        }
    }

    /// Marks `[from, to)` as skipped (clipped below at `deliver_base`).
    fn skip_range(&mut self, from: u64, to: u64) {
        let from = from.max(self.deliver_base);
        if from >= to {
            return;
        }
        self.skip.insert(from, to);
        self.clear_range(from, to);
        self.known = self.known.max(to);
    }

    /// Accepts a fragment that arrived at `arrived` (a timed parcel's local
    /// deadline counts from then); false (counted) if it is a duplicate, not
    /// owed, or beyond the window.
    fn insert(&mut self, arrived: Instant, d: Data, window: u64, ctx: &mut Ctx) -> bool {
        if d.seq < self.next
            || d.first() < self.deliver_base
            || self.held.contains_key(&d.seq)
            || self.skip.end_of(d.seq).is_some()
        {
            ctx.stats.duplicates += 1;
            return false;
        }
        if d.seq >= self.next.saturating_add(window) {
            ctx.stats.drops.record_kind("beyond_window");
            return false;
        }
        if let Some(ttl) = d.ttl_ms {
            let deadline = arrived + Duration::from_millis(u64::from(ttl));
            let (first, end) = (d.first(), d.end());
            match self.timed.get(&first).copied() {
                Some((old, _)) if old <= deadline => {}
                other => {
                    if let Some((old, _)) = other {
                        self.timed_due.remove(&(old, first));
                    }
                    self.timed.insert(first, (deadline, end));
                    self.timed_due.insert((deadline, first));
                }
            }
        }
        self.known = self.known.max(d.seq + 1);
        self.remove_missing(d.seq);
        self.held.insert(d.seq, d);
        ctx.stats.data_received += 1;
        true
    }

    /// Moves `next` over received and skipped sequences.
    fn advance_next(&mut self) {
        loop {
            if self.held.contains_key(&self.next) {
                self.next += 1;
            } else if let Some(end) = self.skip.end_of(self.next) {
                self.next = end;
            } else {
                break;
            }
        }
    }

    /// Delivers (or skips) the head parcel if it is complete; false if
    /// nothing changed.
    fn deliver_one(&mut self, now: Instant, from: NodeId, inc: Incarnation, ctx: &mut Ctx) -> bool {
        let b = self.deliver_base;
        if b >= self.next {
            return false;
        }
        if let Some(end) = self.skip.end_of(b) {
            self.clear_range(b, end);
            self.deliver_base = end;
            return true;
        }
        let Some(head) = self.held.get(&b) else {
            // Below `next` and not skipped means held: unreachable.
            return false;
        };
        if head.index != 0 {
            // The parcel began before the stream's delivery point (a
            // skipped range cut it): it can never be whole.
            let end = head.end();
            ctx.stats.drops.record_kind("inconsistent_parcel");
            self.skip_range(b, end);
            self.advance_next();
            return true;
        }
        let end = b + u64::from(head.count);
        if end > self.next {
            return false;
        }
        let frags: Vec<Data> = (b..end).filter_map(|s| self.held.remove(&s)).collect();
        let timed = self.timed.get(&b).map(|(d, _)| *d);
        self.remove_timed(b);
        self.deliver_base = end;
        let Some(first) = frags.first() else {
            return true;
        };
        let (parcel, len, count, is_timed) =
            (first.parcel, first.len, first.count, first.ttl_ms.is_some());
        let consistent = frags
            .iter()
            .all(|f| f.parcel == parcel && f.ttl_ms.is_some() == is_timed);
        let payload = if consistent {
            assemble(
                len,
                count,
                frags
                    .iter()
                    .map(|f| (f.index, f.count, f.len, f.data.as_slice())),
            )
        } else {
            None
        };
        let Some(payload) = payload else {
            ctx.stats.drops.record_kind("inconsistent_parcel");
            return true;
        };
        let mode = match (is_timed, timed) {
            (false, _) => Delivery::Reliable,
            (true, Some(deadline)) if now < deadline => Delivery::Timed(deadline - now),
            (true, _) => {
                // Whole, but its deadline passed while an earlier parcel
                // held it up: never delivered late.
                ctx.stats.timed_purged += 1;
                return true;
            }
        };
        ctx.stats.parcels_delivered += 1;
        ctx.events.push_back(RmcastEvent::Delivered {
            from,
            from_incarnation: inc,
            parcel: ParcelId(parcel),
            mode,
            payload,
        });
        true
    }

    /// Creates missing entries for the unreceived known sequences inside
    /// the window, NACKable at `at`.
    fn scan(&mut self, at: Instant, window: u64) {
        let limit = self.known.min(self.next.saturating_add(window));
        self.scanned = self.scanned.max(self.next);
        let mut x = self.scanned;
        while x < limit {
            if let Some(end) = self.skip.end_of(x) {
                x = end;
                continue;
            }
            if !self.held.contains_key(&x) && !self.missing.contains_key(&x) {
                self.missing.insert(x, Miss { at, tries: 0 });
                self.nack_due.insert((at, x));
            }
            x += 1;
        }
        self.scanned = self.scanned.max(limit);
    }

    fn has_unscanned(&self, window: u64) -> bool {
        self.scanned.max(self.next) < self.known.min(self.next.saturating_add(window))
    }

    /// Jumps the stream forward to a (later) start: everything below is not
    /// owed.
    fn jump(&mut self, start: u64) {
        self.clear_range(0, start);
        self.skip.remove_below(start);
        self.start = start;
        self.deliver_base = start;
        self.next = self.next.max(start);
        self.scanned = self.scanned.max(self.next);
        self.known = self.known.max(start);
    }
}

#[derive(Debug)]
struct BePartial {
    count: u32,
    len: u32,
    frags: BTreeMap<u32, Bytes>,
    bytes: usize,
    last: Instant,
}

/// What this receiver holds of one sender's stream.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) incarnation: Incarnation,
    epoch: u64,
    window: u64,
    /// `None` until the sender answered the handshake with a `Start`.
    seq: Option<SeqState>,
    /// Data that arrived before the `Start` (at most `window` fragments),
    /// with its arrival time.
    pending: BTreeMap<u64, (Instant, Data)>,
    hello_at: Instant,
    hello_backoff: Duration,
    be: BTreeMap<u64, BePartial>,
    be_bytes: usize,
    be_timeout: Duration,
}

impl Stream {
    pub(super) fn new(incarnation: Incarnation, epoch: u64, config: &RmcastConfig) -> Stream {
        Stream {
            incarnation,
            epoch,
            window: u64::from(config.window),
            seq: None,
            pending: BTreeMap::new(),
            hello_at: Instant::ZERO,
            hello_backoff: config.hello_interval,
            be: BTreeMap::new(),
            be_bytes: 0,
            be_timeout: config.best_effort_timeout,
        }
    }

    pub(super) fn info(&self) -> StreamInfo {
        StreamInfo {
            incarnation: self.incarnation,
            epoch: self.epoch,
            synced: self.seq.as_ref().map(|s| (s.start, s.next, s.max_mab)),
            buffered_fragments: self.pending.len() + self.seq.as_ref().map_or(0, |s| s.held.len()),
            missing: self.seq.as_ref().map_or(0, |s| s.missing.len()),
            skipped_ranges: self.seq.as_ref().map_or(0, |s| s.skip.len()),
            best_effort_partials: self.be.len(),
            best_effort_bytes: self.be_bytes,
        }
    }

    /// Says hello (rate-limited) while the handshake is not done.
    fn maybe_hello(&mut self, now: Instant, from: NodeId, ctx: &mut Ctx) {
        if self.seq.is_some() || now < self.hello_at {
            return;
        }
        ctx.stats.hellos_sent += 1;
        ctx.send(
            from,
            RmcastPacket::Hello(Hello {
                sender_incarnation: self.incarnation,
                epoch: self.epoch,
                window: self.window as u32,
            }),
        );
        self.hello_at = now + self.hello_backoff;
        self.hello_backoff = (self.hello_backoff * 2).min(ctx.config.sync_max);
    }

    fn send_status(&mut self, from: NodeId, ctx: &mut Ctx) {
        let Some(st) = self.seq.as_mut() else {
            return;
        };
        let mab = st.next.saturating_add(self.window);
        st.sent = Some(st.next);
        st.max_mab = st.max_mab.max(mab);
        st.ack_at = None;
        ctx.stats.statuses_sent += 1;
        ctx.send(
            from,
            RmcastPacket::Status(Status {
                sender_incarnation: self.incarnation,
                epoch: self.epoch,
                next: st.next,
                mab,
            }),
        );
    }

    /// After new data or skips: advance, deliver, detect gaps, acknowledge.
    fn progress(&mut self, now: Instant, from: NodeId, ctx: &mut Ctx) {
        let window = self.window;
        let inc = self.incarnation;
        let Some(st) = self.seq.as_mut() else {
            return;
        };
        loop {
            st.advance_next();
            if !st.deliver_one(now, from, inc, ctx) {
                break;
            }
        }
        st.skip.remove_below(st.deliver_base);
        while let Some((&x, _)) = st.missing.first_key_value() {
            if x >= st.next {
                break;
            }
            st.remove_missing(x);
        }
        if st.has_unscanned(window) {
            let at = now + ctx.jitter(ctx.config.nack_delay);
            st.scan(at, window);
        }
        let sent = st.sent.unwrap_or(st.start);
        if st.sent == Some(st.next) {
            return;
        }
        if st.next >= sent.saturating_add((window / 4).max(1)) {
            self.send_status(from, ctx);
        } else if st.ack_at.is_none() {
            st.ack_at = Some(now + ctx.config.ack_delay);
        }
    }

    pub(super) fn on_data(&mut self, now: Instant, from: NodeId, d: Data, ctx: &mut Ctx) {
        let window = self.window;
        let Some(st) = self.seq.as_mut() else {
            if self.pending.contains_key(&d.seq) {
                ctx.stats.duplicates += 1;
            } else if self.pending.len() as u64 >= window {
                ctx.stats.drops.record_kind("pending_full");
            } else {
                self.pending.insert(d.seq, (now, d));
            }
            self.maybe_hello(now, from, ctx);
            return;
        };
        if st.insert(now, d, window, ctx) {
            self.progress(now, from, ctx);
        }
    }

    pub(super) fn on_sync(&mut self, now: Instant, from: NodeId, y: Sync, ctx: &mut Ctx) {
        let Some(st) = self.seq.as_mut() else {
            self.maybe_hello(now, from, ctx);
            return;
        };
        st.known = st.known.max(y.next);
        self.progress(now, from, ctx);
        // The sender lacks an acknowledgement from someone: answer.
        self.send_status(from, ctx);
    }

    pub(super) fn on_obsolete(&mut self, now: Instant, from: NodeId, o: Obsolete, ctx: &mut Ctx) {
        let window = self.window;
        let Some(st) = self.seq.as_mut() else {
            self.maybe_hello(now, from, ctx);
            return;
        };
        if o.from >= st.next.saturating_add(window) {
            ctx.stats.drops.record_kind("beyond_window");
            return;
        }
        st.skip_range(o.from, o.to);
        self.progress(now, from, ctx);
    }

    pub(super) fn on_start(&mut self, now: Instant, from: NodeId, s: Start, ctx: &mut Ctx) {
        if s.epoch != self.epoch {
            ctx.stats.drops.record_kind("stale_start");
            return;
        }
        let window = self.window;
        match self.seq.as_mut() {
            None => {
                let mut st = SeqState::new(s.start, s.next, window);
                for (_, (arrived, d)) in std::mem::take(&mut self.pending) {
                    if d.seq < s.start {
                        ctx.stats.duplicates += 1;
                    } else {
                        st.insert(arrived, d, window, ctx);
                    }
                }
                self.seq = Some(st);
                self.hello_backoff = ctx.config.hello_interval;
            }
            Some(st) => {
                if s.start > st.deliver_base {
                    st.jump(s.start);
                }
                st.known = st.known.max(s.next);
            }
        }
        self.progress(now, from, ctx);
        self.send_status(from, ctx);
    }

    pub(super) fn on_not_receiver(&mut self, nr: NotReceiver, ctx: &mut Ctx) {
        if nr.epoch != self.epoch {
            ctx.stats.drops.record_kind("stale_not_receiver");
            return;
        }
        // The sender does not count us (yet): forget the sequenced state and
        // start over with a new epoch when it is heard again.
        self.seq = None;
        self.pending.clear();
        self.epoch = ctx.new_epoch();
        ctx.stats.stream_resets += 1;
    }

    /// Another receiver's NACK for this stream: wait for the retransmission
    /// instead of NACKing the same sequences (and learn of gaps not seen).
    pub(super) fn on_nack_heard(&mut self, now: Instant, n: &Nack, ctx: &mut Ctx) {
        let window = self.window;
        let Some(st) = self.seq.as_mut() else {
            return;
        };
        let retry_at = now + ctx.config.nack_retry;
        let hi = st.next.saturating_add(window);
        if let Some(&(_, end)) = n.ranges.last() {
            let end = end.min(hi);
            if end > st.known {
                st.known = end;
                st.scan(retry_at, window);
            }
        }
        let mut postponed = false;
        for &(a, b) in &n.ranges {
            let keys: Vec<u64> = st
                .missing
                .range(a..b)
                .filter(|(_, m)| m.at < retry_at)
                .map(|(k, _)| *k)
                .collect();
            for x in keys {
                if let Some(m) = st.missing.get_mut(&x) {
                    st.nack_due.remove(&(m.at, x));
                    m.at = retry_at;
                    st.nack_due.insert((retry_at, x));
                    postponed = true;
                }
            }
        }
        if postponed {
            ctx.stats.nacks_suppressed += 1;
        }
    }

    pub(super) fn on_best_effort(
        &mut self,
        now: Instant,
        from: NodeId,
        f: BestEffortFragment,
        memory: &mut BeMemory,
        ctx: &mut Ctx,
    ) {
        if memory
            .get(from, self.incarnation)
            .is_some_and(|last| f.parcel <= last)
        {
            ctx.stats.duplicates += 1;
            return;
        }
        if f.count == 1 {
            self.be_deliver(from, f.parcel, f.data.into_vec(), memory, ctx);
            return;
        }
        if !self.be.contains_key(&f.parcel) {
            while self.be.len() >= ctx.config.best_effort_partials {
                if !self.be_evict(None, ctx) {
                    break;
                }
            }
            self.be.insert(
                f.parcel,
                BePartial {
                    count: f.count,
                    len: f.len,
                    frags: BTreeMap::new(),
                    bytes: 0,
                    last: now,
                },
            );
        }
        match self.be.get(&f.parcel) {
            Some(p) if p.count != f.count || p.len != f.len => {
                ctx.stats.drops.record_kind("inconsistent_fragment");
                return;
            }
            Some(p) if p.frags.contains_key(&f.index) => {
                ctx.stats.duplicates += 1;
                return;
            }
            _ => {}
        }
        let limit = ctx.config.max_parcel.saturating_mul(2);
        while self.be_bytes.saturating_add(f.data.len()) > limit {
            if !self.be_evict(Some(f.parcel), ctx) {
                ctx.stats.drops.record_kind("best_effort_full");
                return;
            }
        }
        let Some(p) = self.be.get_mut(&f.parcel) else {
            return;
        };
        p.bytes += f.data.len();
        self.be_bytes += f.data.len();
        p.last = now;
        p.frags.insert(f.index, f.data);
        if p.frags.len() as u32 != p.count {
            return;
        }
        let Some(p) = self.be.remove(&f.parcel) else {
            return;
        };
        self.be_bytes = self.be_bytes.saturating_sub(p.bytes);
        let payload = assemble(
            p.len,
            p.count,
            p.frags
                .iter()
                .map(|(i, d)| (*i, p.count, p.len, d.as_slice())),
        );
        match payload {
            Some(payload) => self.be_deliver(from, f.parcel, payload, memory, ctx),
            None => ctx.stats.drops.record_kind("inconsistent_parcel"),
        }
    }

    /// Evicts the oldest incomplete best-effort parcel other than `keep`.
    fn be_evict(&mut self, keep: Option<u64>, ctx: &mut Ctx) -> bool {
        let victim = self.be.keys().copied().find(|k| Some(*k) != keep);
        match victim.and_then(|k| self.be.remove(&k)) {
            Some(p) => {
                self.be_bytes = self.be_bytes.saturating_sub(p.bytes);
                ctx.stats.best_effort_abandoned += 1;
                true
            }
            None => false,
        }
    }

    fn be_deliver(
        &mut self,
        from: NodeId,
        parcel: u64,
        payload: Vec<u8>,
        memory: &mut BeMemory,
        ctx: &mut Ctx,
    ) {
        memory.set(from, self.incarnation, parcel);
        // Older incomplete parcels can no longer be delivered in order.
        let later = self.be.split_off(&parcel);
        for p in std::mem::replace(&mut self.be, later).into_values() {
            self.be_bytes = self.be_bytes.saturating_sub(p.bytes);
            ctx.stats.best_effort_abandoned += 1;
        }
        ctx.stats.best_effort_delivered += 1;
        ctx.events.push_back(RmcastEvent::Delivered {
            from,
            from_incarnation: self.incarnation,
            parcel: ParcelId(parcel),
            mode: Delivery::BestEffort,
            payload,
        });
    }

    pub(super) fn on_timeout(&mut self, now: Instant, from: NodeId, ctx: &mut Ctx) {
        let stale: Vec<u64> = self
            .be
            .iter()
            .filter(|(_, p)| p.last + self.be_timeout <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(p) = self.be.remove(&k) {
                self.be_bytes = self.be_bytes.saturating_sub(p.bytes);
                ctx.stats.best_effort_abandoned += 1;
            }
        }
        let Some(st) = self.seq.as_mut() else {
            return;
        };
        let mut changed = false;
        while let Some(&(d, first)) = st.timed_due.first() {
            if d > now {
                break;
            }
            st.timed_due.remove(&(d, first));
            if let Some((_, end)) = st.timed.remove(&first) {
                if first >= st.deliver_base {
                    ctx.stats.timed_purged += 1;
                    st.skip_range(first, end);
                    changed = true;
                }
            }
        }
        let mut due = Vec::new();
        while let Some(&(at, x)) = st.nack_due.first() {
            if at > now {
                break;
            }
            st.nack_due.remove(&(at, x));
            if st.missing.contains_key(&x) {
                due.push(x);
            }
        }
        if !due.is_empty() {
            due.sort_unstable();
            let mut ranges: Vec<(u64, u64)> = Vec::new();
            for &x in &due {
                match ranges.last_mut() {
                    Some((_, end)) if *end == x => *end = x + 1,
                    _ => ranges.push((x, x + 1)),
                }
            }
            for chunk in ranges.chunks(MAX_NACK_RANGES) {
                ctx.stats.nacks_sent += 1;
                ctx.multicast(RmcastPacket::Nack(Nack {
                    sender: from,
                    sender_incarnation: self.incarnation,
                    epoch: self.epoch,
                    ranges: chunk.to_vec(),
                }));
            }
            for x in due {
                let jitter = ctx.jitter(ctx.config.nack_delay);
                if let Some(m) = st.missing.get_mut(&x) {
                    m.tries = m.tries.saturating_add(1);
                    let backoff = ctx
                        .config
                        .nack_retry
                        .saturating_mul(1 << (m.tries - 1).min(16))
                        .min(ctx.config.nack_retry_max);
                    m.at = now + backoff + jitter;
                    st.nack_due.insert((m.at, x));
                }
            }
        }
        let ack_due = st.ack_at.is_some_and(|t| t <= now);
        if changed {
            self.progress(now, from, ctx);
        }
        if ack_due {
            if let Some(st) = self.seq.as_mut() {
                st.ack_at = None;
                if st.sent != Some(st.next) {
                    self.send_status(from, ctx);
                }
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let mut t = self.be.values().map(|p| p.last + self.be_timeout).min();
        if let Some(st) = &self.seq {
            t = earliest(t, st.timed_due.first().map(|(d, _)| *d));
            t = earliest(t, st.nack_due.first().map(|(d, _)| *d));
            t = earliest(t, st.ack_at);
        }
        t
    }
}
