//! The BLAST receiver (seed 004, section 5.3.1): reassembles multi-fragment
//! messages, answers with selective retransmission requests (on the last
//! fragment, on the LAST_FRAG timer, every half window, and to a POLL),
//! retries them on RETRY and gives up after the last one. It bounds its
//! reassemblies (per peer, in total, in bytes) and remembers the ids of
//! recently completed messages so that a late fragment is answered with a
//! "complete" SRR; see the [`blast`](super) module docs.

use super::config::MAX_RTT_HINT;
use super::packet::{bitmap_len, check_fragment, BlastPacket, Fragment, Srr, MAX_FRAGMENTS};
use super::shared::{BlastEvent, ReasmKey, Shared, TimerKey};
use crate::id::{Incarnation, NodeId};
use crate::rpc::bytes::Bytes;
use crate::time::Instant;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

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

/// The receiving side of a BLAST endpoint: reassemblies in progress and the
/// ids of completed messages. Its methods take the endpoint's [`Shared`]
/// part from the [`Blast`](super::Blast) core.
#[derive(Debug, Default)]
pub(super) struct Receiver {
    incoming: BTreeMap<ReasmKey, Reassembly>,
    per_peer: BTreeMap<NodeId, usize>,
    buffered: usize,
    completed: BTreeMap<NodeId, CompletedPeer>,
    completed_clock: u64,
}

impl Receiver {
    /// Reassemblies in progress.
    pub(super) fn reassemblies_len(&self) -> usize {
        self.incoming.len()
    }

    /// Fragment bytes buffered by reassemblies.
    pub(super) fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    fn send_srr(&mut self, sh: &mut Shared, key: &ReasmKey, stalled: bool) {
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
        sh.stats.srrs_sent += 1;
        sh.push_packet(key.0, &BlastPacket::Srr(srr));
    }

    fn send_complete_srr(
        &mut self,
        sh: &mut Shared,
        to: NodeId,
        sender: Incarnation,
        mid: u64,
        count: u32,
    ) {
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
        sh.stats.srrs_sent += 1;
        sh.push_packet(to, &BlastPacket::Srr(srr));
    }

    fn remove_reassembly(&mut self, sh: &mut Shared, key: &ReasmKey) -> Option<Reassembly> {
        let r = self.incoming.remove(key)?;
        self.buffered = self.buffered.saturating_sub(r.bytes);
        if let Some(n) = self.per_peer.get_mut(&key.0) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&key.0);
            }
        }
        sh.timers.cancel(&TimerKey::Receiver(*key));
        Some(r)
    }

    /// Evicts the least recently active reassembly (of `peer`, if given),
    /// never `keep`. Returns whether one was evicted.
    fn evict_one(
        &mut self,
        sh: &mut Shared,
        peer: Option<NodeId>,
        keep: Option<&ReasmKey>,
    ) -> bool {
        let victim = self
            .incoming
            .iter()
            .filter(|(k, _)| peer.map_or(true, |p| k.0 == p) && Some(*k) != keep)
            .min_by_key(|(k, r)| (r.last_activity, **k))
            .map(|(k, _)| *k);
        match victim {
            Some(k) => {
                self.remove_reassembly(sh, &k);
                sh.stats.reassemblies_evicted += 1;
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

    fn remember_completed(&mut self, sh: &mut Shared, from: NodeId, inc: Incarnation, mid: u64) {
        self.completed_clock += 1;
        let clock = self.completed_clock;
        if !self.completed.contains_key(&from)
            && self.completed.len() >= sh.config.max_completed_peers
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
        if p.recent.len() >= sh.config.completed_per_peer {
            p.recent.pop_front();
        }
        p.recent.push_back((inc, mid));
    }

    pub(super) fn on_fragment(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        from: NodeId,
        from_inc: Incarnation,
        f: Fragment,
    ) {
        if let Err(kind) = check_fragment(&f, sh.config.max_message) {
            sh.stats.drops.record_kind(kind);
            return;
        }
        if f.count == 1 {
            sh.stats.messages_delivered += 1;
            sh.events.push_back(BlastEvent::Delivered {
                from,
                from_incarnation: from_inc,
                message: f.data.0,
            });
            return;
        }
        let key = (from, from_inc, f.mid);
        if self.is_completed(from, from_inc, f.mid) {
            sh.stats.duplicate_fragments += 1;
            if f.poll || f.index + 1 == f.count {
                self.send_complete_srr(sh, from, from_inc, f.mid, f.count);
            }
            return;
        }
        match self.incoming.get(&key) {
            Some(r) => {
                if r.count != f.count || r.frag_size != f.frag_size || r.total_len != f.total_len {
                    sh.stats.drops.record_kind("inconsistent_fragment");
                    return;
                }
            }
            None => {
                let peer_count = self.per_peer.get(&from).copied().unwrap_or(0);
                if peer_count >= sh.config.max_reassemblies_per_peer {
                    self.evict_one(sh, Some(from), None);
                }
                if self.incoming.len() >= sh.config.max_reassemblies {
                    self.evict_one(sh, None, None);
                }
                sh.stats.reassemblies_started += 1;
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
            while self.buffered.saturating_add(len) > sh.config.max_reassembly_bytes {
                if !self.evict_one(sh, None, Some(&key)) {
                    break;
                }
            }
            if self.buffered.saturating_add(len) > sh.config.max_reassembly_bytes {
                sh.stats.drops.record_kind("reassembly_bytes_full");
                return;
            }
        }
        let Some(r) = self.incoming.get_mut(&key) else {
            return;
        };
        r.seen_seq = r.seen_seq.max(f.seq);
        r.last_activity = now;
        r.rtt_hint = Duration::from_millis(u64::from(f.rtt_hint_ms)).min(MAX_RTT_HINT);
        let last_frag_timeout = sh.config.last_frag_timeout.max(r.rtt_hint * 2);
        let retry_timeout = sh.config.retry_timeout.max(r.rtt_hint * 2);
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
            sh.stats.duplicate_fragments += 1;
        }
        if r.frags.len() as u32 == r.count {
            self.complete(sh, key);
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
                sh.timers
                    .get(&TimerKey::Receiver(key))
                    .unwrap_or(now + retry_timeout)
            } else {
                now + last_frag_timeout
            };
        }
        sh.timers.set(TimerKey::Receiver(key), timer_at);
        if f.poll {
            self.send_srr(sh, &key, true);
        } else if last || progress {
            self.send_srr(sh, &key, false);
        }
    }

    fn complete(&mut self, sh: &mut Shared, key: ReasmKey) {
        let Some(r) = self.remove_reassembly(sh, &key) else {
            return;
        };
        let mut message = Vec::with_capacity(r.total_len as usize);
        for (_, frag) in r.frags {
            message.extend_from_slice(&frag);
        }
        sh.stats.reassemblies_completed += 1;
        sh.stats.messages_delivered += 1;
        self.remember_completed(sh, key.0, key.1, key.2);
        self.send_complete_srr(sh, key.0, key.1, key.2, r.count);
        sh.events.push_back(BlastEvent::Delivered {
            from: key.0,
            from_incarnation: key.1,
            message,
        });
    }

    pub(super) fn on_receiver_timer(&mut self, sh: &mut Shared, now: Instant, key: ReasmKey) {
        let max = sh.config.max_srr_retries;
        let Some(r) = self.incoming.get_mut(&key) else {
            return;
        };
        if r.retrying {
            r.retry_expirations += 1;
            if r.retry_expirations >= max {
                self.remove_reassembly(sh, &key);
                sh.stats.reassemblies_given_up += 1;
                return;
            }
        } else {
            // LAST_FRAG expired.
            r.retrying = true;
            r.retry_expirations = 0;
        }
        r.new_since_srr = 0;
        let retry_timeout = sh.config.retry_timeout.max(r.rtt_hint * 2);
        sh.timers.set(TimerKey::Receiver(key), now + retry_timeout);
        self.send_srr(sh, &key, true);
    }
}
