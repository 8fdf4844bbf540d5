//! The BLAST sender (seed 004, section 5.3.1): fragments a message, keeps
//! at most a window of fragments in flight, resends exactly the fragments an
//! SRR reports missing, POLLs when SRRs stop coming and gives up on DONE.
//!
//! Deviations from the book (the window, POLL, round-trip measurement from
//! the per-transmission sequence numbers an SRR echoes) are explained in the
//! [`blast`](super) module docs.

use super::config::BlastConfig;
use super::config::MAX_RTT_HINT;
use super::packet::{bit, bitmap_len, BlastPacket, Fragment, Srr};
use super::shared::{BlastError, BlastEvent, SendInfo, Shared, TimerKey};
use crate::id::NodeId;
use crate::rpc::bytes::Bytes;
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

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

/// The sending side of a BLAST endpoint: the multi-fragment messages it
/// still holds. Its methods take the endpoint's [`Shared`] part (settings,
/// timers, output queues, counters) from the [`Blast`](super::Blast) core.
#[derive(Debug)]
pub(super) struct Sender {
    next_mid: u64,
    outgoing: BTreeMap<u64, Outgoing>,
}

impl Sender {
    /// Nothing sent yet; message ids start at `initial_mid`.
    pub(super) fn new(initial_mid: u64) -> Self {
        Sender {
            next_mid: initial_mid,
            outgoing: BTreeMap::new(),
        }
    }

    /// Multi-fragment messages still held.
    pub(super) fn outgoing_len(&self) -> usize {
        self.outgoing.len()
    }

    /// Whether multi-fragment message `mid` is still held.
    pub(super) fn is_sending(&self, mid: u64) -> bool {
        self.outgoing.contains_key(&mid)
    }

    /// Fragments in flight per held message (tests check the window).
    #[cfg(test)]
    pub(super) fn in_flight_counts(&self) -> Vec<u32> {
        self.outgoing.values().map(Outgoing::in_flight).collect()
    }

    /// [`Blast::send`](super::Blast::send), with the round trip to `dest` as the layer above
    /// knows it: until BLAST has measured its own, it uses this for POLL and
    /// tells the receiver (see [`Fragment::rtt_hint_ms`]).
    pub(super) fn send(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        dest: NodeId,
        message: Arc<[u8]>,
        rtt_hint: Option<Duration>,
    ) -> Result<SendInfo, BlastError> {
        let len = message.len();
        if len > sh.config.max_message {
            return Err(BlastError::TooLarge {
                len,
                limit: sh.config.max_message,
            });
        }
        let count = sh.fragments_for(len);
        let mid = self.next_mid;
        self.next_mid = self.next_mid.wrapping_add(1);
        sh.stats.messages_sent += 1;
        let frag_size = sh.config.fragment_payload as u32;
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
            done_at: now + sh.config.done_timeout,
        };
        if count == 1 {
            sh.stats.single_fragment_messages += 1;
            self.emit_fragment(sh, now, mid, &mut out, 0, false);
            return Ok(SendInfo { mid, fragments: 1 });
        }
        out.poll_at = now + poll_timeout_for(&sh.config, &out);
        out.done_at = now + done_timeout_for(&sh.config, &out);
        self.fill_window(sh, now, mid, &mut out);
        sh.timers
            .set(TimerKey::Sender(mid), out.poll_at.min(out.done_at));
        self.outgoing.insert(mid, out);
        Ok(SendInfo {
            mid,
            fragments: count,
        })
    }

    /// Stops sending `mid` (no event follows). Returns whether it was held.
    pub(super) fn cancel(&mut self, sh: &mut Shared, mid: u64) -> bool {
        sh.timers.cancel(&TimerKey::Sender(mid));
        self.outgoing.remove(&mid).is_some()
    }

    fn emit_fragment(
        &mut self,
        sh: &mut Shared,
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
            window: sh.config.window,
            seq,
            poll,
            rtt_hint_ms: out.srtt.map_or(0, |r| {
                u32::try_from(r.as_millis()).unwrap_or(u32::MAX).max(1)
            }),
            data: Bytes(out.data.get(start..end).unwrap_or_default().to_vec()),
        });
        sh.stats.fragments_sent += 1;
        sh.push_packet(out.dest, &packet);
    }

    pub(super) fn on_srr(&mut self, sh: &mut Shared, now: Instant, from: NodeId, s: Srr) {
        if s.sender != sh.incarnation {
            sh.stats.drops.record_kind("srr_wrong_incarnation");
            return;
        }
        let Some(mut out) = self.outgoing.remove(&s.mid) else {
            sh.stats.srrs_unknown += 1;
            return;
        };
        if out.dest != from
            || s.prefix > s.upto
            || s.upto > out.count
            || s.received.len() != bitmap_len(s.upto - s.prefix)
        {
            sh.stats.drops.record_kind(if out.dest != from {
                "srr_wrong_source"
            } else {
                "malformed_srr"
            });
            self.outgoing.insert(s.mid, out);
            return;
        }
        sh.stats.srrs_received += 1;
        if s.complete {
            self.finish(sh, s.mid, out.dest);
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
            sh.stats.fragments_retransmitted += 1;
            self.emit_fragment(sh, now, s.mid, &mut out, i, false);
        }
        self.fill_window(sh, now, s.mid, &mut out);
        out.polls = 0;
        out.poll_at = now + poll_timeout_for(&sh.config, &out);
        if out.acked_count > acked_before {
            // DONE measures silence *without progress*: an SRR that
            // acknowledges nothing new does not postpone it, so a path that
            // loses every data fragment still ends in a give-up.
            out.done_at = now + done_timeout_for(&sh.config, &out);
        }
        sh.timers
            .set(TimerKey::Sender(s.mid), out.poll_at.min(out.done_at));
        self.outgoing.insert(s.mid, out);
    }

    /// Sends fragments while the window admits them.
    fn fill_window(&mut self, sh: &mut Shared, now: Instant, mid: u64, out: &mut Outgoing) {
        while out.in_flight() < sh.config.window {
            let Some(i) = out.next_unsent() else {
                break;
            };
            out.set_state(i, FragState::InFlight);
            self.emit_fragment(sh, now, mid, out, i, false);
        }
    }

    fn finish(&mut self, sh: &mut Shared, mid: u64, to: NodeId) {
        sh.timers.cancel(&TimerKey::Sender(mid));
        sh.stats.messages_acked += 1;
        sh.events.push_back(BlastEvent::Acked { to, mid });
    }

    pub(super) fn on_sender_timer(&mut self, sh: &mut Shared, now: Instant, mid: u64) {
        let Some(mut out) = self.outgoing.remove(&mid) else {
            return;
        };
        if now >= out.done_at {
            sh.stats.messages_abandoned += 1;
            sh.events
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
                sh.stats.polls_sent += 1;
                self.emit_fragment(sh, now, mid, &mut out, i, true);
            }
            out.polls = out.polls.saturating_add(1);
            let backoff = 1u32 << out.polls.min(6);
            out.poll_at = now + poll_timeout_for(&sh.config, &out).saturating_mul(backoff);
        }
        sh.timers
            .set(TimerKey::Sender(mid), out.poll_at.min(out.done_at));
        self.outgoing.insert(mid, out);
    }
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
