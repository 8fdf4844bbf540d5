//! BLAST: fragmentation, reassembly and selective retransmission of messages
//! larger than one datagram (seed 004, section 5.3.1, "BLAST Algorithm" and
//! "BLAST Message Format").
//!
//! A message of up to [`BlastConfig::max_message`] bytes (at most
//! [`wire::MAX_MESSAGE`], 4 MiB) is cut into fragments of
//! [`BlastConfig::fragment_payload`] bytes; every fragment is one datagram
//! whose body is a [`BlastPacket::Fragment`]. The receiver answers with
//! selective retransmission requests ([`BlastPacket::Srr`]) that say which
//! fragments arrived; the sender retransmits exactly the missing ones.
//!
//! Timers, as in the book:
//!
//! - receiver, **LAST_FRAG**: re-armed by every new fragment; when it expires
//!   the receiver sends an SRR and arms RETRY;
//! - receiver, **RETRY**: armed by the LAST_FRAG SRR and by the SRR sent when
//!   the last fragment arrives with others missing; the first
//!   `max_srr_retries - 1` expirations resend the SRR, the next one gives up
//!   and frees the fragments (with the default of 3: "at most 3 times");
//! - sender, **DONE**: re-armed by every SRR that acknowledges something
//!   new; when it expires the sender gives up and frees its copy
//!   ([`BlastEvent::Abandoned`]).
//!
//! Deviations from the book, and why:
//!
//! - **Window.** The book sends all fragments back to back; a 1 MiB message
//!   is ~800 datagrams, more than a ~200 KB kernel socket buffer holds. The
//!   sender keeps at most [`BlastConfig::window`] fragments sent but not yet
//!   acknowledged, and the receiver sends a progress SRR every `window / 2`
//!   new fragments (the window travels in every fragment header), besides
//!   the book's SRRs on the last fragment and on LAST_FRAG.
//! - **SRR format.** The book's 32-bit `FragMask` limits a message to 32
//!   fragments. An [`Srr`] carries a contiguous prefix count and a bitmap of
//!   the range after it (at most [`MAX_FRAGMENTS`] bits, 1 KiB), plus the
//!   highest per-transmission sequence number seen, so the sender resends a
//!   missing fragment only if something it sent *later* arrived (no duplicate
//!   resends when two SRRs cross a retransmission). An SRR sent by a timer
//!   (or in answer to a POLL) is marked `stalled`: then every missing
//!   fragment sent more than about one round trip ago is resent (the sender
//!   measures the round trip from the transmission an SRR reports last), so
//!   a LAST_FRAG that fires early on a long path does not resend fragments
//!   still on their way.
//! - **POLL.** When no SRR arrives for [`BlastConfig::poll_timeout`] (the
//!   last SRR or the whole tail of the window was lost), the sender resends
//!   its lowest unacknowledged fragment flagged `poll`, which the receiver
//!   answers with an SRR at once (a "complete" SRR if it already delivered
//!   the message). Without it, losing the final "complete" SRR of a 1 MiB
//!   message would cost a DONE timeout and a retransmission of the whole
//!   message by CHAN. Polls back off exponentially; DONE still bounds them.
//! - **Long paths.** The sender measures the round trip (from the
//!   transmission an SRR reports last) and sends its estimate in every
//!   fragment; the receiver stretches LAST_FRAG and RETRY to at least twice
//!   it, and the sender its POLL, so a path whose round trip exceeds the
//!   configured timers (the window makes the receiver wait one round trip
//!   per window) is not mistaken for a stalled one.
//! - **One-fragment messages** carry no state on either side and are never
//!   acknowledged by BLAST (CHAN's reply or ACK is the acknowledgement).
//!
//! Bounds on the receiver (all in [`BlastConfig`]): concurrent reassemblies
//! per peer and in total, and buffered bytes in total; when a new reassembly
//! or fragment does not fit, the least recently active *other* reassembly is
//! evicted (counted in [`BlastStats::reassemblies_evicted`]), so a flood of
//! first fragments from many fake peers displaces idle entries, not the
//! transfers that are making progress. Fragment headers with impossible
//! counts, sizes, offsets or lengths are dropped and counted by kind. The
//! ids of recently completed messages are remembered (a bounded number per
//! peer, for a bounded number of peers) so that a late fragment of a
//! delivered message is answered with a "complete" SRR instead of starting a
//! new reassembly.
//!
//! The module: [`packet`] holds the [`BlastPacket`]s, the fragment limits
//! and the receiver's check of a fragment header; [`config`] the settings
//! and their defaults; this file the [`Blast`] core, the sender's side
//! (`send`, SRRs, POLL, DONE) and the receiver's (reassembly, LAST_FRAG,
//! RETRY, bounds). Its tests are in `src/rpc/tests/blast.rs`.

use super::bytes::Bytes;
use super::timers::Timers;
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire::{self, DropCounters, MAX_BODY};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

pub mod config;
pub mod packet;

pub use config::{BlastConfig, DEFAULT_FRAGMENT_PAYLOAD, DEFAULT_WINDOW, MAX_RTT_HINT};
pub(crate) use packet::bitmap_len;
use packet::{bit, check_fragment};
pub use packet::{
    BlastPacket, Fragment, Srr, FRAGMENT_OVERHEAD, MAX_FRAGMENTS, MAX_FRAGMENT_PAYLOAD,
    MIN_FRAGMENT_PAYLOAD,
};

/// What BLAST reports to the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlastEvent {
    /// A whole message arrived.
    Delivered {
        /// The sender.
        from: NodeId,
        /// The sender's incarnation (from the packet header).
        from_incarnation: Incarnation,
        /// The reassembled message.
        message: Vec<u8>,
    },
    /// The receiver confirmed every fragment of a multi-fragment message.
    Acked {
        /// The destination.
        to: NodeId,
        /// The message id returned by [`Blast::send`].
        mid: u64,
    },
    /// DONE expired: the sender gave up on a multi-fragment message.
    Abandoned {
        /// The destination.
        to: NodeId,
        /// The message id returned by [`Blast::send`].
        mid: u64,
    },
}

/// Why [`Blast::send`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlastError {
    /// Larger than [`BlastConfig::max_message`].
    #[error("message of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// Bytes allowed.
        limit: usize,
    },
}

/// What [`Blast::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendInfo {
    /// The message id (appears in [`BlastEvent::Acked`] / `Abandoned`).
    pub mid: u64,
    /// Number of fragments; 1 means no state was kept and no event follows.
    pub fragments: u32,
}

/// BLAST counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlastStats {
    /// Messages handed to [`Blast::send`].
    pub messages_sent: u64,
    /// Of which fit in one fragment.
    pub single_fragment_messages: u64,
    /// Fragment datagrams transmitted (first sends, resends and polls).
    pub fragments_sent: u64,
    /// Of which were resends requested by an SRR.
    pub fragments_retransmitted: u64,
    /// Of which were POLLs.
    pub polls_sent: u64,
    /// Multi-fragment messages fully acknowledged.
    pub messages_acked: u64,
    /// Multi-fragment messages given up by DONE.
    pub messages_abandoned: u64,
    /// SRRs transmitted.
    pub srrs_sent: u64,
    /// SRRs accepted.
    pub srrs_received: u64,
    /// SRRs for messages no longer (or never) held (e.g. duplicates).
    pub srrs_unknown: u64,
    /// Messages delivered up.
    pub messages_delivered: u64,
    /// Reassemblies begun.
    pub reassemblies_started: u64,
    /// Reassemblies completed.
    pub reassemblies_completed: u64,
    /// Reassemblies freed after the last RETRY.
    pub reassemblies_given_up: u64,
    /// Reassemblies evicted to admit another (limits).
    pub reassemblies_evicted: u64,
    /// Fragments already held, or of an already delivered message.
    pub duplicate_fragments: u64,
    /// Dropped datagrams and fragments, by kind.
    pub drops: DropCounters,
}

type ReasmKey = (NodeId, Incarnation, u64);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Sender(u64),
    Receiver(ReasmKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FragState {
    /// Not sent yet, or to be sent again because the receiver lost it after
    /// acknowledging it.
    Unsent,
    /// Sent, not acknowledged: counts against the window.
    InFlight,
    /// Acknowledged by an SRR.
    Acked,
}

#[derive(Debug)]
struct Outgoing {
    dest: NodeId,
    data: Arc<[u8]>,
    count: u32,
    frag_size: u32,
    state: Vec<FragState>,
    in_flight: u32,
    acked_count: u32,
    /// Fragments `0..next_new` have been sent at least once.
    next_new: u32,
    /// Fragments below `next_new` that are `Unsent` again.
    requeued: BTreeSet<u32>,
    last_seq: Vec<u32>,
    last_sent: Vec<Instant>,
    next_seq: u32,
    max_reported_seq: Option<u32>,
    /// Smoothed time from sending a fragment to an SRR reporting it.
    srtt: Option<Duration>,
    polls: u32,
    poll_at: Instant,
    done_at: Instant,
}

impl Outgoing {
    fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// The next fragment the window may admit.
    fn next_unsent(&mut self) -> Option<u32> {
        if let Some(i) = self.requeued.pop_first() {
            return Some(i);
        }
        if self.next_new < self.count {
            self.next_new += 1;
            return Some(self.next_new - 1);
        }
        None
    }

    fn set_state(&mut self, i: u32, new: FragState) {
        let Some(st) = self.state.get_mut(i as usize) else {
            return;
        };
        let old = std::mem::replace(st, new);
        match old {
            FragState::InFlight => self.in_flight = self.in_flight.saturating_sub(1),
            FragState::Acked => self.acked_count = self.acked_count.saturating_sub(1),
            FragState::Unsent => {}
        }
        match new {
            FragState::InFlight => self.in_flight += 1,
            FragState::Acked => self.acked_count += 1,
            FragState::Unsent => {}
        }
    }
}

#[derive(Debug)]
struct Reassembly {
    count: u32,
    frag_size: u32,
    total_len: u32,
    window: u32,
    frags: BTreeMap<u32, Vec<u8>>,
    bytes: usize,
    prefix: u32,
    upto: u32,
    seen_seq: u32,
    new_since_srr: u32,
    /// The sender's round-trip hint (clamped).
    rtt_hint: Duration,
    /// RETRY is armed (instead of LAST_FRAG).
    retrying: bool,
    retry_expirations: u32,
    last_activity: Instant,
}

#[derive(Debug, Default)]
struct CompletedPeer {
    last_used: u64,
    recent: VecDeque<(Incarnation, u64)>,
}

/// The BLAST core. It implements [`Core`] on its own (for tests and for
/// protocols that want bare fragmentation); CHAN drives one inside.
#[derive(Debug)]
pub struct Blast {
    incarnation: Incarnation,
    config: BlastConfig,
    next_mid: u64,
    outgoing: BTreeMap<u64, Outgoing>,
    incoming: BTreeMap<ReasmKey, Reassembly>,
    per_peer: BTreeMap<NodeId, usize>,
    buffered: usize,
    completed: BTreeMap<NodeId, CompletedPeer>,
    completed_clock: u64,
    timers: Timers<TimerKey>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<BlastEvent>,
    stats: BlastStats,
}

impl Blast {
    /// A BLAST endpoint for this node's `incarnation`. `initial_mid` seeds
    /// the message-id counter (drawn from the owner's seeded RNG).
    pub fn new(incarnation: Incarnation, config: BlastConfig, initial_mid: u64) -> Self {
        Blast {
            incarnation,
            config: config.sanitized(),
            next_mid: initial_mid,
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            per_peer: BTreeMap::new(),
            buffered: 0,
            completed: BTreeMap::new(),
            completed_clock: 0,
            timers: Timers::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: BlastStats::default(),
        }
    }

    /// The (sanitized) configuration.
    pub fn config(&self) -> &BlastConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &BlastStats {
        &self.stats
    }

    /// Fragments a message would take with this configuration.
    pub fn fragments_for(&self, len: usize) -> u32 {
        let n = len.div_ceil(self.config.fragment_payload).max(1);
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Multi-fragment messages still held by the sender.
    pub fn outgoing_len(&self) -> usize {
        self.outgoing.len()
    }

    /// Reassemblies in progress.
    pub fn reassemblies_len(&self) -> usize {
        self.incoming.len()
    }

    /// Fragment bytes buffered by reassemblies.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Whether the sender still holds multi-fragment message `mid`.
    pub fn is_sending(&self, mid: u64) -> bool {
        self.outgoing.contains_key(&mid)
    }

    /// Fragments sent and not yet acknowledged, for each multi-fragment
    /// message the sender holds (tests check the window with it).
    #[cfg(test)]
    pub(crate) fn in_flight_counts(&self) -> Vec<u32> {
        self.outgoing.values().map(Outgoing::in_flight).collect()
    }

    /// Sends `message` to `dest`: fragments it and transmits the first
    /// window. A one-fragment message is sent and forgotten.
    pub fn send(
        &mut self,
        now: Instant,
        dest: NodeId,
        message: Arc<[u8]>,
    ) -> Result<SendInfo, BlastError> {
        self.send_with_rtt_hint(now, dest, message, None)
    }

    /// [`Blast::send`], with the round trip to `dest` as the layer above
    /// knows it: until BLAST has measured its own, it uses this for POLL and
    /// tells the receiver (see [`Fragment::rtt_hint_ms`]).
    pub fn send_with_rtt_hint(
        &mut self,
        now: Instant,
        dest: NodeId,
        message: Arc<[u8]>,
        rtt_hint: Option<Duration>,
    ) -> Result<SendInfo, BlastError> {
        let len = message.len();
        if len > self.config.max_message {
            return Err(BlastError::TooLarge {
                len,
                limit: self.config.max_message,
            });
        }
        let count = self.fragments_for(len);
        let mid = self.next_mid;
        self.next_mid = self.next_mid.wrapping_add(1);
        self.stats.messages_sent += 1;
        let frag_size = self.config.fragment_payload as u32;
        let mut out = Outgoing {
            dest,
            data: message,
            count,
            frag_size,
            state: vec![FragState::Unsent; count as usize],
            in_flight: 0,
            acked_count: 0,
            next_new: 0,
            requeued: BTreeSet::new(),
            last_seq: vec![0; count as usize],
            last_sent: vec![now; count as usize],
            next_seq: 0,
            max_reported_seq: None,
            srtt: rtt_hint.map(|r| r.min(MAX_RTT_HINT)),
            polls: 0,
            poll_at: now,
            done_at: now + self.config.done_timeout,
        };
        if count == 1 {
            self.stats.single_fragment_messages += 1;
            self.emit_fragment(now, mid, &mut out, 0, false);
            return Ok(SendInfo { mid, fragments: 1 });
        }
        out.poll_at = now + Self::poll_timeout_for(&self.config, &out);
        out.done_at = now + Self::done_timeout_for(&self.config, &out);
        self.fill_window(now, mid, &mut out);
        self.timers
            .set(TimerKey::Sender(mid), out.poll_at.min(out.done_at));
        self.outgoing.insert(mid, out);
        Ok(SendInfo {
            mid,
            fragments: count,
        })
    }

    /// Stops sending `mid` (no event follows). Returns whether it was held.
    pub fn cancel(&mut self, mid: u64) -> bool {
        self.timers.cancel(&TimerKey::Sender(mid));
        self.outgoing.remove(&mid).is_some()
    }

    fn push_packet(&mut self, dest: NodeId, packet: &BlastPacket) {
        match wire::encode_body(packet) {
            Ok(body) if body.len() <= MAX_BODY => {
                self.transmits
                    .push_back(Transmit::new(dest, ProtocolId::Rpc, body))
            }
            // Unreachable with sanitized limits; counted rather than panicking.
            _ => self.stats.drops.record_kind("encode_failed"),
        }
    }

    fn emit_fragment(
        &mut self,
        now: Instant,
        mid: u64,
        out: &mut Outgoing,
        index: u32,
        poll: bool,
    ) {
        let fs = out.frag_size as usize;
        let start = (index as usize).saturating_mul(fs).min(out.data.len());
        let end = start.saturating_add(fs).min(out.data.len());
        let seq = out.next_seq;
        out.next_seq = out.next_seq.saturating_add(1);
        if let Some(s) = out.last_seq.get_mut(index as usize) {
            *s = seq;
        }
        if let Some(t) = out.last_sent.get_mut(index as usize) {
            *t = now;
        }
        let packet = BlastPacket::Fragment(Fragment {
            mid,
            index,
            count: out.count,
            frag_size: out.frag_size,
            total_len: out.data.len() as u32,
            window: self.config.window,
            seq,
            poll,
            rtt_hint_ms: out.srtt.map_or(0, |r| {
                u32::try_from(r.as_millis()).unwrap_or(u32::MAX).max(1)
            }),
            data: Bytes(out.data.get(start..end).unwrap_or_default().to_vec()),
        });
        self.stats.fragments_sent += 1;
        self.push_packet(out.dest, &packet);
    }

    fn send_srr(&mut self, key: &ReasmKey, stalled: bool) {
        let Some(r) = self.incoming.get(key) else {
            return;
        };
        let bits = r.upto.saturating_sub(r.prefix);
        let mut bitmap = vec![0u8; bitmap_len(bits)];
        for (&i, _) in r.frags.range(r.prefix..r.upto) {
            let off = i - r.prefix;
            if let Some(b) = bitmap.get_mut((off / 8) as usize) {
                *b |= 1 << (off % 8);
            }
        }
        let srr = Srr {
            mid: key.2,
            sender: key.1,
            prefix: r.prefix,
            upto: r.upto,
            received: Bytes(bitmap),
            seen_seq: r.seen_seq,
            complete: false,
            stalled,
        };
        self.stats.srrs_sent += 1;
        self.push_packet(key.0, &BlastPacket::Srr(srr));
    }

    fn send_complete_srr(&mut self, to: NodeId, sender: Incarnation, mid: u64, count: u32) {
        let srr = Srr {
            mid,
            sender,
            prefix: count,
            upto: count,
            received: Bytes::default(),
            seen_seq: u32::MAX,
            complete: true,
            stalled: false,
        };
        self.stats.srrs_sent += 1;
        self.push_packet(to, &BlastPacket::Srr(srr));
    }

    fn remove_reassembly(&mut self, key: &ReasmKey) -> Option<Reassembly> {
        let r = self.incoming.remove(key)?;
        self.buffered = self.buffered.saturating_sub(r.bytes);
        if let Some(n) = self.per_peer.get_mut(&key.0) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&key.0);
            }
        }
        self.timers.cancel(&TimerKey::Receiver(*key));
        Some(r)
    }

    /// Evicts the least recently active reassembly (of `peer`, if given),
    /// never `keep`. Returns whether one was evicted.
    fn evict_one(&mut self, peer: Option<NodeId>, keep: Option<&ReasmKey>) -> bool {
        let victim = self
            .incoming
            .iter()
            .filter(|(k, _)| peer.map_or(true, |p| k.0 == p) && Some(*k) != keep)
            .min_by_key(|(k, r)| (r.last_activity, **k))
            .map(|(k, _)| *k);
        match victim {
            Some(k) => {
                self.remove_reassembly(&k);
                self.stats.reassemblies_evicted += 1;
                true
            }
            None => false,
        }
    }

    fn is_completed(&mut self, from: NodeId, inc: Incarnation, mid: u64) -> bool {
        self.completed_clock += 1;
        let clock = self.completed_clock;
        match self.completed.get_mut(&from) {
            Some(p) if p.recent.contains(&(inc, mid)) => {
                p.last_used = clock;
                true
            }
            _ => false,
        }
    }

    fn remember_completed(&mut self, from: NodeId, inc: Incarnation, mid: u64) {
        self.completed_clock += 1;
        let clock = self.completed_clock;
        if !self.completed.contains_key(&from)
            && self.completed.len() >= self.config.max_completed_peers
        {
            let oldest = self
                .completed
                .iter()
                .min_by_key(|(n, p)| (p.last_used, **n))
                .map(|(n, _)| *n);
            if let Some(n) = oldest {
                self.completed.remove(&n);
            }
        }
        let p = self.completed.entry(from).or_default();
        p.last_used = clock;
        if p.recent.len() >= self.config.completed_per_peer {
            p.recent.pop_front();
        }
        p.recent.push_back((inc, mid));
    }

    fn on_fragment(&mut self, now: Instant, from: NodeId, from_inc: Incarnation, f: Fragment) {
        if let Err(kind) = check_fragment(&f, self.config.max_message) {
            self.stats.drops.record_kind(kind);
            return;
        }
        if f.count == 1 {
            self.stats.messages_delivered += 1;
            self.events.push_back(BlastEvent::Delivered {
                from,
                from_incarnation: from_inc,
                message: f.data.0,
            });
            return;
        }
        let key = (from, from_inc, f.mid);
        if self.is_completed(from, from_inc, f.mid) {
            self.stats.duplicate_fragments += 1;
            if f.poll || f.index + 1 == f.count {
                self.send_complete_srr(from, from_inc, f.mid, f.count);
            }
            return;
        }
        match self.incoming.get(&key) {
            Some(r) => {
                if r.count != f.count || r.frag_size != f.frag_size || r.total_len != f.total_len {
                    self.stats.drops.record_kind("inconsistent_fragment");
                    return;
                }
            }
            None => {
                let peer_count = self.per_peer.get(&from).copied().unwrap_or(0);
                if peer_count >= self.config.max_reassemblies_per_peer {
                    self.evict_one(Some(from), None);
                }
                if self.incoming.len() >= self.config.max_reassemblies {
                    self.evict_one(None, None);
                }
                self.stats.reassemblies_started += 1;
                *self.per_peer.entry(from).or_insert(0) += 1;
                self.incoming.insert(
                    key,
                    Reassembly {
                        count: f.count,
                        frag_size: f.frag_size,
                        total_len: f.total_len,
                        window: f.window.clamp(2, MAX_FRAGMENTS),
                        frags: BTreeMap::new(),
                        bytes: 0,
                        prefix: 0,
                        upto: 0,
                        seen_seq: 0,
                        new_since_srr: 0,
                        rtt_hint: Duration::ZERO,
                        retrying: false,
                        retry_expirations: 0,
                        last_activity: now,
                    },
                );
            }
        }
        let len = f.data.len();
        let is_new = self
            .incoming
            .get(&key)
            .is_some_and(|r| !r.frags.contains_key(&f.index));
        if is_new {
            while self.buffered.saturating_add(len) > self.config.max_reassembly_bytes {
                if !self.evict_one(None, Some(&key)) {
                    break;
                }
            }
            if self.buffered.saturating_add(len) > self.config.max_reassembly_bytes {
                self.stats.drops.record_kind("reassembly_bytes_full");
                return;
            }
        }
        let Some(r) = self.incoming.get_mut(&key) else {
            return;
        };
        r.seen_seq = r.seen_seq.max(f.seq);
        r.last_activity = now;
        r.rtt_hint = Duration::from_millis(u64::from(f.rtt_hint_ms)).min(MAX_RTT_HINT);
        let last_frag_timeout = self.config.last_frag_timeout.max(r.rtt_hint * 2);
        let retry_timeout = self.config.retry_timeout.max(r.rtt_hint * 2);
        if is_new {
            r.frags.insert(f.index, f.data.0);
            r.bytes += len;
            self.buffered += len;
            while r.frags.contains_key(&r.prefix) {
                r.prefix += 1;
            }
            r.upto = r.upto.max(f.index + 1);
            r.new_since_srr += 1;
            r.retrying = false;
            r.retry_expirations = 0;
        } else {
            self.stats.duplicate_fragments += 1;
        }
        if r.frags.len() as u32 == r.count {
            self.complete(key);
            return;
        }
        let last = f.index + 1 == r.count;
        let progress = r.new_since_srr >= (r.window / 2).max(1);
        let timer_at;
        if f.poll || last {
            r.new_since_srr = 0;
            r.retrying = true;
            timer_at = now + retry_timeout;
        } else if progress {
            r.new_since_srr = 0;
            timer_at = now + last_frag_timeout;
        } else {
            timer_at = if r.retrying && !is_new {
                // A duplicate does not postpone a running RETRY.
                self.timers
                    .get(&TimerKey::Receiver(key))
                    .unwrap_or(now + retry_timeout)
            } else {
                now + last_frag_timeout
            };
        }
        self.timers.set(TimerKey::Receiver(key), timer_at);
        if f.poll {
            self.send_srr(&key, true);
        } else if last || progress {
            self.send_srr(&key, false);
        }
    }

    fn complete(&mut self, key: ReasmKey) {
        let Some(r) = self.remove_reassembly(&key) else {
            return;
        };
        let mut message = Vec::with_capacity(r.total_len as usize);
        for (_, frag) in r.frags {
            message.extend_from_slice(&frag);
        }
        self.stats.reassemblies_completed += 1;
        self.stats.messages_delivered += 1;
        self.remember_completed(key.0, key.1, key.2);
        self.send_complete_srr(key.0, key.1, key.2, r.count);
        self.events.push_back(BlastEvent::Delivered {
            from: key.0,
            from_incarnation: key.1,
            message,
        });
    }

    fn on_srr(&mut self, now: Instant, from: NodeId, s: Srr) {
        if s.sender != self.incarnation {
            self.stats.drops.record_kind("srr_wrong_incarnation");
            return;
        }
        let Some(mut out) = self.outgoing.remove(&s.mid) else {
            self.stats.srrs_unknown += 1;
            return;
        };
        if out.dest != from
            || s.prefix > s.upto
            || s.upto > out.count
            || s.received.len() != bitmap_len(s.upto - s.prefix)
        {
            self.stats.drops.record_kind(if out.dest != from {
                "srr_wrong_source"
            } else {
                "malformed_srr"
            });
            self.outgoing.insert(s.mid, out);
            return;
        }
        self.stats.srrs_received += 1;
        if s.complete {
            self.finish(s.mid, out.dest);
            return;
        }
        // A receiver's state only grows while its reassembly lives, so an
        // SRR with a higher `seen_seq` than any before that lacks an
        // acknowledged fragment means the receiver started over (it gave up
        // or was evicted): those fragments are queued again. Only a
        // `complete` SRR ends the transfer.
        let newer = out.max_reported_seq.map_or(true, |m| s.seen_seq > m);
        if out.max_reported_seq.map_or(true, |m| s.seen_seq >= m) {
            out.max_reported_seq = Some(s.seen_seq);
        }
        // The transmission the receiver saw last gives an RTT sample (a
        // sequence number names one transmission: no Karn ambiguity).
        if let Some(i) = out.last_seq.iter().position(|&q| q == s.seen_seq) {
            if i < out.next_new as usize && !s.complete {
                let sample = now - out.last_sent.get(i).copied().unwrap_or(now);
                out.srtt = Some(match out.srtt {
                    Some(r) => (r * 7 + sample) / 8,
                    None => sample,
                });
            }
        }
        // A stalled SRR reports everything the receiver got; fragments sent
        // more than about one round trip ago and not in it are lost, more
        // recent ones may still be on their way. Without an RTT sample yet,
        // every missing fragment is resent.
        let settled = out.srtt.map(|r| r + r / 4);
        let acked_before = out.acked_count;
        let mut resend = Vec::new();
        for i in 0..out.next_new {
            let got = if i < s.prefix {
                true
            } else if i < s.upto {
                bit(&s.received.0, i - s.prefix)
            } else {
                false
            };
            match out.state.get(i as usize).copied() {
                Some(FragState::Acked) if !got && newer => {
                    out.set_state(i, FragState::Unsent);
                    out.requeued.insert(i);
                }
                Some(FragState::InFlight) if got => out.set_state(i, FragState::Acked),
                Some(FragState::InFlight)
                    if out
                        .last_seq
                        .get(i as usize)
                        .is_some_and(|&q| q < s.seen_seq)
                        || (s.stalled
                            && settled.map_or(true, |r| {
                                now - out.last_sent.get(i as usize).copied().unwrap_or(now) >= r
                            })) =>
                {
                    resend.push(i);
                }
                Some(FragState::Unsent) if got => {
                    out.requeued.remove(&i);
                    out.set_state(i, FragState::Acked);
                }
                _ => {}
            }
        }
        for i in resend {
            self.stats.fragments_retransmitted += 1;
            self.emit_fragment(now, s.mid, &mut out, i, false);
        }
        self.fill_window(now, s.mid, &mut out);
        out.polls = 0;
        out.poll_at = now + Self::poll_timeout_for(&self.config, &out);
        if out.acked_count > acked_before {
            // DONE measures silence *without progress*: an SRR that
            // acknowledges nothing new does not postpone it, so a path that
            // loses every data fragment still ends in a give-up.
            out.done_at = now + Self::done_timeout_for(&self.config, &out);
        }
        self.timers
            .set(TimerKey::Sender(s.mid), out.poll_at.min(out.done_at));
        self.outgoing.insert(s.mid, out);
    }

    /// POLL: the configured time, or twice the round trip if longer.
    fn poll_timeout_for(config: &BlastConfig, out: &Outgoing) -> Duration {
        config
            .poll_timeout
            .max(out.srtt.map_or(Duration::ZERO, |r| r * 2))
    }

    /// DONE: the configured time, or four round trips if longer.
    fn done_timeout_for(config: &BlastConfig, out: &Outgoing) -> Duration {
        config
            .done_timeout
            .max(out.srtt.map_or(Duration::ZERO, |r| r * 4))
    }

    /// Sends fragments while the window admits them.
    fn fill_window(&mut self, now: Instant, mid: u64, out: &mut Outgoing) {
        while out.in_flight() < self.config.window {
            let Some(i) = out.next_unsent() else {
                break;
            };
            out.set_state(i, FragState::InFlight);
            self.emit_fragment(now, mid, out, i, false);
        }
    }

    fn finish(&mut self, mid: u64, to: NodeId) {
        self.timers.cancel(&TimerKey::Sender(mid));
        self.stats.messages_acked += 1;
        self.events.push_back(BlastEvent::Acked { to, mid });
    }

    fn on_sender_timer(&mut self, now: Instant, mid: u64) {
        let Some(mut out) = self.outgoing.remove(&mid) else {
            return;
        };
        if now >= out.done_at {
            self.stats.messages_abandoned += 1;
            self.events
                .push_back(BlastEvent::Abandoned { to: out.dest, mid });
            return;
        }
        if now >= out.poll_at {
            // The lowest fragment in flight; if every fragment is
            // acknowledged but no `complete` SRR came, the last one.
            let lowest = out
                .state
                .iter()
                .position(|&st| st == FragState::InFlight)
                .map(|i| i as u32)
                .or(out.count.checked_sub(1));
            if let Some(i) = lowest {
                self.stats.polls_sent += 1;
                self.emit_fragment(now, mid, &mut out, i, true);
            }
            out.polls = out.polls.saturating_add(1);
            let backoff = 1u32 << out.polls.min(6);
            out.poll_at = now + Self::poll_timeout_for(&self.config, &out).saturating_mul(backoff);
        }
        self.timers
            .set(TimerKey::Sender(mid), out.poll_at.min(out.done_at));
        self.outgoing.insert(mid, out);
    }

    fn on_receiver_timer(&mut self, now: Instant, key: ReasmKey) {
        let max = self.config.max_srr_retries;
        let Some(r) = self.incoming.get_mut(&key) else {
            return;
        };
        if r.retrying {
            r.retry_expirations += 1;
            if r.retry_expirations >= max {
                self.remove_reassembly(&key);
                self.stats.reassemblies_given_up += 1;
                return;
            }
        } else {
            // LAST_FRAG expired.
            r.retrying = true;
            r.retry_expirations = 0;
        }
        r.new_since_srr = 0;
        let retry_timeout = self.config.retry_timeout.max(r.rtt_hint * 2);
        self.timers
            .set(TimerKey::Receiver(key), now + retry_timeout);
        self.send_srr(&key, true);
    }
}

impl Core for Blast {
    type Event = BlastEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        if packet.protocol != ProtocolId::Rpc {
            self.stats.drops.record_kind("wrong_protocol");
            return;
        }
        match wire::decode_body::<BlastPacket>(packet.body) {
            Ok(BlastPacket::Fragment(f)) => {
                self.on_fragment(now, packet.source, packet.source_incarnation, f)
            }
            Ok(BlastPacket::Srr(s)) => self.on_srr(now, packet.source, s),
            Err(_) => self.stats.drops.record_kind("malformed_packet"),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(key) = self.timers.pop_due(now) {
            match key {
                TimerKey::Sender(mid) => self.on_sender_timer(now, mid),
                TimerKey::Receiver(k) => self.on_receiver_timer(now, k),
            }
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<BlastEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }
}
