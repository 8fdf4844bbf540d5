//! The sender half: sequencing, the send buffer, MAB flow control,
//! retransmission, Sync, timed purges, the receiver handshake and suspects.

use super::packet::{BestEffortFragment, Data, Hello, Nack, NotReceiver, Obsolete, Start, Status};
use super::ranges::Ranges;
use super::{
    Ctx, Delivery, ParcelId, ReceiverInfo, RmcastConfig, RmcastEvent, RmcastPacket, SendError,
    SenderInfo,
};
use crate::id::{Incarnation, NodeId};
use crate::rpc::Bytes;
use crate::time::{earliest, Instant};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A sequenced parcel the sender holds: queued, or transmitted and not yet
/// acknowledged by every current receiver.
#[derive(Debug)]
struct OutParcel {
    id: u64,
    count: u32,
    frag: usize,
    data: Vec<u8>,
    deadline: Option<Instant>,
}

impl OutParcel {
    fn fragment(&self, index: u32) -> &[u8] {
        let start = (index as usize)
            .saturating_mul(self.frag)
            .min(self.data.len());
        let end = start.saturating_add(self.frag).min(self.data.len());
        self.data.get(start..end).unwrap_or_default()
    }
}

/// What the sender knows about one current receiver.
#[derive(Debug, Clone)]
struct Peer {
    incarnation: Option<Incarnation>,
    epoch: Option<u64>,
    start: u64,
    acked: u64,
    mab: u64,
    heard_at: Option<Instant>,
    /// Since when it has had data outstanding (the current episode).
    waiting_since: Option<Instant>,
    suspected: bool,
    /// A Sync went out since it began blocking the window unheard.
    announced: bool,
    /// The last `Start` sent to resynchronize it.
    last_resync: Option<Instant>,
}

impl Peer {
    fn new(start: u64) -> Peer {
        Peer {
            incarnation: None,
            epoch: None,
            start,
            acked: start,
            mab: start,
            heard_at: None,
            waiting_since: None,
            suspected: false,
            announced: false,
            last_resync: None,
        }
    }

    /// Starts the receiver over at `start` (a new life or a new epoch).
    fn restart(&mut self, start: u64) {
        self.start = start;
        self.acked = start;
        self.mab = start;
    }
}

/// How a message from a receiver relates to what the sender knows.
enum Admit {
    /// Same incarnation and epoch.
    Current,
    /// A new epoch (or the first): a `Start` was sent, the content is
    /// superseded.
    Adopted,
    /// Stale or from a non-member: dropped (counted).
    Drop,
}

#[derive(Debug)]
pub(super) struct Sender {
    next_parcel: u64,
    next_seq: u64,
    next_tx: u64,
    max_sent: Option<u64>,
    base: u64,
    out: BTreeMap<u64, OutParcel>,
    held_bytes: usize,
    obsolete: Ranges,
    expiries: BTreeSet<(Instant, u64)>,
    /// Last retransmission of a sequence (or of an obsolete notice, keyed
    /// by the range's first sequence), for the hold-off.
    last_rtx: BTreeMap<u64, Instant>,
    receivers: BTreeMap<NodeId, Peer>,
    sync_at: Option<Instant>,
    sync_backoff: Duration,
    queue_full: bool,
}

impl Sender {
    pub(super) fn new() -> Sender {
        Sender {
            next_parcel: 0,
            next_seq: 0,
            next_tx: 0,
            max_sent: None,
            base: 0,
            out: BTreeMap::new(),
            held_bytes: 0,
            obsolete: Ranges::default(),
            expiries: BTreeSet::new(),
            last_rtx: BTreeMap::new(),
            receivers: BTreeMap::new(),
            sync_at: None,
            sync_backoff: Duration::ZERO,
            queue_full: false,
        }
    }

    pub(super) fn info(&self) -> SenderInfo {
        SenderInfo {
            next_seq: self.next_seq,
            next_tx: self.next_tx,
            base: self.base,
            max_sent: self.max_sent,
            limit: self.limit(),
            held_parcels: self.out.len(),
            held_bytes: self.held_bytes,
            obsolete_ranges: self.obsolete.len(),
        }
    }

    pub(super) fn receiver_info(&self, node: NodeId) -> Option<ReceiverInfo> {
        self.receivers.get(&node).map(|p| ReceiverInfo {
            incarnation: p.incarnation,
            epoch: p.epoch,
            start: p.start,
            acked: p.acked,
            mab: p.mab,
            heard_at: p.heard_at,
            suspected: p.suspected,
        })
    }

    /// The transmission limit: no sequence at or above it may be sent.
    fn limit(&self) -> u64 {
        self.receivers
            .values()
            .map(|p| p.mab)
            .min()
            .unwrap_or(u64::MAX)
    }

    pub(super) fn set_receivers(&mut self, now: Instant, set: &BTreeSet<NodeId>, ctx: &mut Ctx) {
        self.receivers.retain(|n, _| set.contains(n));
        for n in set {
            self.receivers
                .entry(*n)
                .or_insert_with(|| Peer::new(self.next_seq));
        }
        self.after_change(now, ctx);
    }

    pub(super) fn send(
        &mut self,
        now: Instant,
        payload: Vec<u8>,
        mode: Delivery,
        ctx: &mut Ctx,
    ) -> Result<ParcelId, SendError> {
        let len = payload.len();
        if len > ctx.config.max_parcel {
            return Err(SendError::TooLarge {
                len,
                limit: ctx.config.max_parcel,
            });
        }
        let frag = ctx.config.fragment_payload;
        let count = u32::try_from(len.div_ceil(frag).max(1)).unwrap_or(u32::MAX);
        let deadline = match mode {
            Delivery::BestEffort => {
                let id = self.next_parcel;
                self.next_parcel += 1;
                ctx.stats.parcels_sent += 1;
                for index in 0..count {
                    let start = (index as usize) * frag;
                    let end = (start + frag).min(len);
                    ctx.stats.best_effort_sent += 1;
                    ctx.multicast(RmcastPacket::BestEffort(BestEffortFragment {
                        parcel: id,
                        index,
                        count,
                        len: len as u32,
                        data: Bytes(payload.get(start..end).unwrap_or_default().to_vec()),
                    }));
                }
                return Ok(ParcelId(id));
            }
            Delivery::Reliable => None,
            Delivery::Timed(ttl) => Some(now + ttl),
        };
        if self.held_bytes.saturating_add(len) > ctx.config.send_buffer_bytes
            || self.out.len() >= ctx.config.send_buffer_parcels
        {
            self.queue_full = true;
            ctx.stats.queue_full += 1;
            return Err(SendError::QueueFull);
        }
        let id = self.next_parcel;
        self.next_parcel += 1;
        ctx.stats.parcels_sent += 1;
        let first = self.next_seq;
        self.next_seq += u64::from(count);
        self.held_bytes += len;
        if let Some(d) = deadline {
            self.expiries.insert((d, first));
        }
        self.out.insert(
            first,
            OutParcel {
                id,
                count,
                frag,
                data: payload,
                deadline,
            },
        );
        self.after_change(now, ctx);
        Ok(ParcelId(id))
    }

    /// Transmits sequence `seq` from the parcel holding it.
    fn transmit(&mut self, now: Instant, seq: u64, retransmission: bool, ctx: &mut Ctx) -> bool {
        let Some((&first, p)) = self.out.range(..=seq).next_back() else {
            return false;
        };
        if seq >= first + u64::from(p.count) {
            return false;
        }
        let index = (seq - first) as u32;
        let ttl_ms = p.deadline.map(|d| {
            let left = d.saturating_duration_since(now).as_millis();
            u32::try_from(left).unwrap_or(u32::MAX)
        });
        let data = Data {
            seq,
            parcel: p.id,
            index,
            count: p.count,
            len: p.data.len() as u32,
            ttl_ms,
            retransmission,
            data: Bytes(p.fragment(index).to_vec()),
        };
        ctx.multicast(RmcastPacket::Data(data));
        self.max_sent = Some(self.max_sent.map_or(seq, |m| m.max(seq)));
        if retransmission {
            ctx.stats.retransmitted += 1;
            self.last_rtx.insert(seq, now);
        } else {
            ctx.stats.data_sent += 1;
        }
        true
    }

    /// Sends what the window admits: the queue in sequence order, skipping
    /// (and announcing) obsolete ranges.
    fn pump(&mut self, now: Instant, ctx: &mut Ctx) {
        let limit = self.limit();
        while self.next_tx < self.next_seq && self.next_tx < limit {
            if let Some(end) = self.obsolete.end_of(self.next_tx) {
                // Expired before it was (fully) transmitted.
                let from = self.next_tx;
                self.next_tx = end.min(self.next_seq).max(from + 1);
                ctx.stats.obsolete_sent += 1;
                ctx.multicast(RmcastPacket::Obsolete(Obsolete {
                    from,
                    to: self.next_tx,
                }));
                continue;
            }
            let expired = self
                .out
                .range(..=self.next_tx)
                .next_back()
                .and_then(|(&first, p)| p.deadline.filter(|d| now >= *d).map(|_| first));
            if let Some(first) = expired {
                self.expire(first, ctx);
                continue;
            }
            if !self.transmit(now, self.next_tx, false, ctx) {
                // Not held: impossible, but never loop on it.
                ctx.stats.drops.record_kind("sequence_not_held");
            }
            self.next_tx += 1;
        }
    }

    /// Purges timed parcel `first` at its deadline.
    fn expire(&mut self, first: u64, ctx: &mut Ctx) {
        let Some(p) = self.out.remove(&first) else {
            return;
        };
        self.held_bytes = self.held_bytes.saturating_sub(p.data.len());
        if let Some(d) = p.deadline {
            self.expiries.remove(&(d, first));
        }
        let end = first + u64::from(p.count);
        self.obsolete.insert(first, end);
        if first < self.next_tx {
            // (Partly) transmitted: tell the receivers to skip it now.
            self.next_tx = self.next_tx.max(end);
            ctx.stats.obsolete_sent += 1;
            ctx.multicast(RmcastPacket::Obsolete(Obsolete {
                from: first,
                to: end,
            }));
        }
        ctx.stats.parcels_expired += 1;
        ctx.events.push_back(RmcastEvent::Expired {
            parcel: ParcelId(p.id),
        });
    }

    /// Frees what every current receiver acknowledged.
    fn advance_base(&mut self, ctx: &mut Ctx) {
        let acked = self.receivers.values().map(|p| p.acked).min();
        let base = acked.unwrap_or(u64::MAX).min(self.next_tx);
        self.base = self.base.max(base);
        while let Some((&first, p)) = self.out.first_key_value() {
            if first + u64::from(p.count) > self.base {
                break;
            }
            let id = p.id;
            if let Some(p) = self.out.remove(&first) {
                self.held_bytes = self.held_bytes.saturating_sub(p.data.len());
                if let Some(d) = p.deadline {
                    self.expiries.remove(&(d, first));
                }
            }
            ctx.stats.parcels_acknowledged += 1;
            ctx.events.push_back(RmcastEvent::Acknowledged {
                parcel: ParcelId(id),
            });
        }
        self.obsolete.remove_below(self.base);
        self.last_rtx = self.last_rtx.split_off(&self.base);
    }

    /// After any change: free, transmit, update episodes and the Sync timer,
    /// report an open send window.
    fn after_change(&mut self, now: Instant, ctx: &mut Ctx) {
        self.advance_base(ctx);
        self.pump(now, ctx);
        self.advance_base(ctx);
        let (next_tx, next_seq) = (self.next_tx, self.next_seq);
        let mut any = false;
        let mut announce = false;
        for p in self.receivers.values_mut() {
            let blocking = next_tx < next_seq && p.mab <= next_tx;
            if p.acked < next_tx || blocking {
                any = true;
                p.waiting_since.get_or_insert(now);
                if blocking && p.heard_at.is_none() && !p.announced {
                    p.announced = true;
                    announce = true;
                }
            } else {
                p.waiting_since = None;
            }
        }
        if !any {
            self.sync_at = None;
            self.sync_backoff = ctx.config.sync_interval;
        } else if announce {
            // A receiver that never spoke holds the window at its start:
            // announce the stream at once so that it says hello.
            self.sync_at = Some(now);
        } else if self.sync_at.is_none() {
            self.sync_at = Some(now + ctx.config.sync_interval);
        }
        if self.queue_full
            && self.held_bytes <= ctx.config.send_buffer_bytes / 2
            && self.out.len() <= ctx.config.send_buffer_parcels / 2
        {
            self.queue_full = false;
            ctx.events.push_back(RmcastEvent::SendWindowOpen);
        }
    }

    /// Matches a receiver's incarnation and epoch with what is known.
    fn admit(&mut self, from: NodeId, from_inc: Incarnation, epoch: u64, ctx: &mut Ctx) -> Admit {
        let next_seq = self.next_seq;
        let Some(p) = self.receivers.get_mut(&from) else {
            ctx.stats.drops.record_kind("from_non_member");
            ctx.stats.not_receiver_sent += 1;
            ctx.send(
                from,
                RmcastPacket::NotReceiver(NotReceiver {
                    receiver_incarnation: from_inc,
                    epoch,
                }),
            );
            return Admit::Drop;
        };
        match p.incarnation {
            Some(known) if from_inc < known => {
                ctx.stats.drops.record_kind("stale_receiver_incarnation");
                return Admit::Drop;
            }
            Some(known) if from_inc > known => {
                // The receiver restarted: its new life is owed what is sent
                // from now on.
                *p = Peer::new(next_seq);
            }
            _ => {}
        }
        p.incarnation = Some(from_inc);
        match p.epoch {
            Some(e) if epoch < e => {
                ctx.stats.drops.record_kind("stale_epoch");
                Admit::Drop
            }
            Some(e) if epoch == e => Admit::Current,
            Some(_) => {
                // The receiver started the stream over (it dropped its
                // state): a fresh start, like a new receiver.
                p.restart(next_seq);
                p.epoch = Some(epoch);
                Admit::Adopted
            }
            None => {
                p.epoch = Some(epoch);
                Admit::Adopted
            }
        }
    }

    fn send_start(&mut self, to: NodeId, ctx: &mut Ctx) {
        let Some(p) = self.receivers.get(&to) else {
            return;
        };
        let (Some(inc), Some(epoch)) = (p.incarnation, p.epoch) else {
            return;
        };
        ctx.stats.starts_sent += 1;
        ctx.send(
            to,
            RmcastPacket::Start(Start {
                receiver_incarnation: inc,
                epoch,
                start: p.start,
                next: self.next_tx,
            }),
        );
    }

    fn heard(&mut self, now: Instant, from: NodeId) {
        if let Some(p) = self.receivers.get_mut(&from) {
            p.heard_at = Some(now);
            p.suspected = false;
            p.waiting_since = None;
        }
    }

    pub(super) fn on_hello(
        &mut self,
        now: Instant,
        from: NodeId,
        from_inc: Incarnation,
        h: Hello,
        ctx: &mut Ctx,
    ) {
        if let Admit::Drop = self.admit(from, from_inc, h.epoch, ctx) {
            return;
        }
        self.heard(now, from);
        let window = u64::from(h.window.min(ctx.config.window));
        if let Some(p) = self.receivers.get_mut(&from) {
            p.mab = p.mab.max(p.start.saturating_add(window));
        }
        self.send_start(from, ctx);
        self.after_change(now, ctx);
    }

    pub(super) fn on_status(
        &mut self,
        now: Instant,
        from: NodeId,
        from_inc: Incarnation,
        s: Status,
        ctx: &mut Ctx,
    ) {
        if s.mab < s.next {
            ctx.stats.drops.record_kind("malformed_status");
            return;
        }
        match self.admit(from, from_inc, s.epoch, ctx) {
            Admit::Drop => return,
            Admit::Adopted => {
                self.heard(now, from);
                self.send_start(from, ctx);
                self.after_change(now, ctx);
                return;
            }
            Admit::Current => {}
        }
        ctx.stats.statuses_received += 1;
        self.heard(now, from);
        // A receiver may purge an expired timed parcel (and skip sequences
        // not transmitted yet) slightly before the sender does: never count
        // acknowledgements beyond what was sent.
        let acked = s.next.min(self.next_tx);
        let window = u64::from(ctx.config.window);
        let mut resync = false;
        let mut progress = false;
        if let Some(p) = self.receivers.get_mut(&from) {
            if s.next < p.start {
                resync = true;
            } else {
                let mab = s.mab.min(acked.saturating_add(window));
                progress = acked > p.acked || mab > p.mab;
                p.acked = p.acked.max(acked);
                p.mab = p.mab.max(mab);
            }
        }
        if resync {
            self.resync(now, from, ctx);
        }
        if progress {
            // Things move: postpone the Sync and reset its back-off.
            self.sync_backoff = ctx.config.sync_interval;
            if self.sync_at.is_some() {
                self.sync_at = Some(now + ctx.config.sync_interval);
            }
        }
        self.after_change(now, ctx);
    }

    pub(super) fn on_nack(
        &mut self,
        now: Instant,
        from: NodeId,
        from_inc: Incarnation,
        n: &Nack,
        ctx: &mut Ctx,
    ) {
        match self.admit(from, from_inc, n.epoch, ctx) {
            Admit::Drop => return,
            Admit::Adopted => {
                self.send_start(from, ctx);
                self.after_change(now, ctx);
                return;
            }
            Admit::Current => {}
        }
        ctx.stats.nacks_received += 1;
        let start = self.receivers.get(&from).map_or(0, |p| p.start);
        let holdoff = ctx.config.retransmit_holdoff;
        let mut resync = false;
        let mut purged = false;
        let mut never_sent = false;
        for &(a, b) in &n.ranges {
            if a < start {
                resync = true;
            }
            let a = a.max(start);
            if a < self.base {
                purged = true;
            }
            if b > self.next_tx {
                never_sent = true;
            }
            let mut x = a.max(self.base);
            let hi = b.min(self.next_tx);
            while x < hi {
                if let Some(end) = self.obsolete.end_of(x) {
                    // Only what was transmitted (or skipped) so far: a
                    // receiver must never get ahead of `next_tx`.
                    let end = end.min(self.next_tx);
                    let key = x;
                    let recent = self
                        .last_rtx
                        .get(&key)
                        .is_some_and(|t| now.saturating_duration_since(*t) < holdoff);
                    if !recent {
                        self.last_rtx.insert(key, now);
                        ctx.stats.obsolete_sent += 1;
                        ctx.multicast(RmcastPacket::Obsolete(Obsolete { from: x, to: end }));
                    }
                    x = end;
                    continue;
                }
                let recent = self
                    .last_rtx
                    .get(&x)
                    .is_some_and(|t| now.saturating_duration_since(*t) < holdoff);
                if !recent && !self.transmit(now, x, true, ctx) {
                    ctx.stats.drops.record_kind("sequence_not_held");
                }
                x += 1;
            }
        }
        if purged {
            ctx.stats.drops.record_kind("nack_purged");
        }
        if never_sent {
            ctx.stats.drops.record_kind("nack_never_sent");
        }
        if resync {
            self.resync(now, from, ctx);
        }
    }

    /// Tells a receiver that is behind its start where it starts, at most
    /// once per Sync interval (answers to Hellos are not limited: receivers
    /// back their Hellos off).
    fn resync(&mut self, now: Instant, to: NodeId, ctx: &mut Ctx) {
        let Some(p) = self.receivers.get_mut(&to) else {
            return;
        };
        if p.last_resync
            .is_some_and(|t| now.saturating_duration_since(t) < ctx.config.sync_interval)
        {
            return;
        }
        p.last_resync = Some(now);
        self.send_start(to, ctx);
    }

    pub(super) fn on_timeout(&mut self, now: Instant, ctx: &mut Ctx) {
        while let Some(&(d, first)) = self.expiries.first() {
            if d > now {
                break;
            }
            self.expire(first, ctx);
        }
        if self.sync_at.is_some_and(|t| t <= now) {
            ctx.stats.syncs_sent += 1;
            ctx.multicast(RmcastPacket::Sync(super::packet::Sync {
                next: self.next_tx,
            }));
            self.sync_backoff = self
                .sync_backoff
                .max(ctx.config.sync_interval)
                .min(ctx.config.sync_max);
            self.sync_at = Some(now + self.sync_backoff);
            self.sync_backoff = (self.sync_backoff * 2).min(ctx.config.sync_max);
        }
        let after = ctx.config.suspect_after;
        for (node, p) in self.receivers.iter_mut() {
            if let Some(t) = Self::suspect_at(p, after) {
                if t <= now {
                    p.suspected = true;
                    ctx.stats.suspects += 1;
                    ctx.events.push_back(RmcastEvent::Suspect { node: *node });
                }
            }
        }
        self.after_change(now, ctx);
    }

    fn suspect_at(p: &Peer, after: Duration) -> Option<Instant> {
        if p.suspected {
            return None;
        }
        let since = p.waiting_since?;
        Some(p.heard_at.map_or(since, |h| h.max(since)) + after)
    }

    pub(super) fn next_deadline(&self, config: &RmcastConfig) -> Option<Instant> {
        let mut t = self.expiries.first().map(|(d, _)| *d);
        t = earliest(t, self.sync_at);
        for p in self.receivers.values() {
            t = earliest(t, Self::suspect_at(p, config.suspect_after));
        }
        t
    }
}
