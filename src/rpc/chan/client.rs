//! The CHAN client (seed 004, section 5.3.2, the client side of request/reply):
//! the calls this endpoint makes and the servers it calls.
//!
//! A call goes through three phases: *resolving* (first contact: `Hello`
//! until the server's `Iam` names its incarnation), *sending* (the request,
//! retransmitted on the RETRANSMIT timer while it is one fragment, moved by
//! BLAST while it is several) and *waiting* (acknowledged: PROBE every
//! [`ChanConfig::probe_interval`]). Every timer has a retry count and every
//! call an overall deadline; exactly one [`ChanEvent::Completed`] ends each
//! call. Per server, the client keeps the incarnation it believes current,
//! the adaptive retransmission state ([`PeerRto`], see the
//! [`rtt`](super::rtt) module), the replies it still has to acknowledge
//! (piggybacked on the next request, or sent alone as
//! [`ChanMessage::ReplyAck`] after [`ChanConfig::ack_delay`]) and the
//! host's unreachable reports.

use super::config::{CallOptions, ChanConfig};
use super::message::{ChanMessage, Outcome, Request, MAX_ACKS};
use super::rtt::{self, PeerRto, RttEstimator};
use super::shared::{CallError, CallId, ChanEvent, Shared, TimerKey};
use crate::id::{Incarnation, NodeId};
use crate::rpc::bytes::Bytes;
use crate::time::Instant;
use crate::wire;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Send times kept per call for RTT samples: the last this many attempts.
/// An answer echoing an older attempt (or one never sent) is no sample.
pub const SENT_HISTORY: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `Iam`.
    Resolving,
    /// Request sent; `transfer`: the BLAST message while it is multi-fragment
    /// and still moving.
    Sending { transfer: Option<u64> },
    /// Acknowledged; probing.
    Waiting {
        probe_outstanding: bool,
        probe_retries: u32,
    },
}

/// A request as the call keeps it for (re)transmission.
#[derive(Debug)]
enum Encoded {
    /// One fragment: re-encoded per transmission with its attempt number.
    Small(Request),
    /// Several fragments (BLAST), encoded once with attempt 0: the transfer
    /// gives no RTT sample, so it asks for no echo.
    Large(Arc<[u8]>),
}

#[derive(Debug)]
struct Call {
    id: CallId,
    node: NodeId,
    procedure: u16,
    body: Option<Vec<u8>>,
    request: Option<Encoded>,
    pinned: Option<Incarnation>,
    phase: Phase,
    retries: u32,
    max_retries: u32,
    deadline: Instant,
    next_action: Instant,
    /// The last attempt number used (0: none yet).
    attempt: u32,
    /// `(attempt, sent at)` of recent sampleable transmissions, in slot
    /// `attempt % SENT_HISTORY`; an entry is taken by its first answer.
    sent: [Option<(u32, Instant)>; SENT_HISTORY],
    /// Doublings inherited from the peer at the start of the current phase
    /// (at most [`ChanConfig::max_inherited_backoff`]); the phase's
    /// retransmissions add theirs on top.
    inherited: u32,
}

impl Call {
    /// A fresh attempt number; recorded for sampling (sent at `now`) if
    /// `sampleable`.
    fn next_attempt(&mut self, now: Instant, sampleable: bool) -> u32 {
        self.attempt = self.attempt.checked_add(1).unwrap_or(1);
        let slot = self.attempt as usize % SENT_HISTORY;
        self.sent[slot] = sampleable.then_some((self.attempt, now));
        self.attempt
    }

    /// The send time of `attempt` if it is recent and unanswered; takes it.
    fn take_sent(&mut self, attempt: u32) -> Option<Instant> {
        if attempt == 0 {
            return None;
        }
        let slot = &mut self.sent[attempt as usize % SENT_HISTORY];
        match *slot {
            Some((a, at)) if a == attempt => {
                *slot = None;
                Some(at)
            }
            _ => None,
        }
    }
}

/// What the client keeps about one server.
#[derive(Debug, Default)]
struct Peer {
    incarnation: Option<Incarnation>,
    rto: PeerRto,
    calls: BTreeSet<u64>,
    pending_acks: BTreeSet<u64>,
    unreachable_strikes: u32,
    last_used: Instant,
}

/// The client side of a CHAN endpoint: pending calls and the peer table.
///
/// Its methods take the endpoint's [`Shared`] part (settings, BLAST, timers,
/// events, counters) from the [`Chan`](super::Chan) core that composes it
/// with the [`Server`](super::server::Server).
#[derive(Debug)]
pub(super) struct Client {
    next_call: u64,
    next_mid: u64,
    calls: BTreeMap<u64, Call>,
    call_ids: BTreeMap<CallId, u64>,
    peers: BTreeMap<NodeId, Peer>,
    /// Multi-fragment requests still moving: BLAST message id -> call.
    transfers: BTreeMap<u64, u64>,
}

impl Client {
    /// No calls yet; call ids start at `initial_mid`.
    pub(super) fn new(initial_mid: u64) -> Self {
        Client {
            next_call: 1,
            next_mid: initial_mid,
            calls: BTreeMap::new(),
            call_ids: BTreeMap::new(),
            peers: BTreeMap::new(),
            transfers: BTreeMap::new(),
        }
    }

    /// Calls still pending.
    pub(super) fn pending_calls(&self) -> usize {
        self.calls.len()
    }

    /// The RTO towards `node` before back-off.
    pub(super) fn rto(&self, config: &ChanConfig, node: NodeId) -> Duration {
        rtt::base_rto(config, self.peer_rto(node))
    }

    /// The RTT estimator of `node`, if it is in the peer table.
    pub(super) fn rtt(&self, node: NodeId) -> Option<&RttEstimator> {
        self.peers.get(&node).map(|p| &p.rto.rtt)
    }

    /// The back-off remembered for `node`, if it is in the peer table.
    pub(super) fn backoff(&self, node: NodeId) -> Option<u32> {
        self.peers.get(&node).map(|p| p.rto.backoff)
    }

    /// The first retransmission timeout a new call to `node` would use.
    pub(super) fn initial_call_rto(&self, config: &ChanConfig, node: NodeId) -> Duration {
        let peer = self.peer_rto(node);
        rtt::backed_off_rto(config, peer, rtt::inherited_shift(config, peer))
    }

    /// The incarnation of `node` this side believes current.
    pub(super) fn known_incarnation(&self, node: NodeId) -> Option<Incarnation> {
        self.peers.get(&node).and_then(|p| p.incarnation)
    }

    /// Our idea of the round trip to `node` as its client, for BLAST (whose
    /// first window waits on it): the estimate if there is one, else the
    /// current (backed-off) RTO; `None` if `node` is not in the peer table.
    pub(super) fn rtt_hint(&self, config: &ChanConfig, node: NodeId) -> Option<Duration> {
        self.peers.get(&node).map(|p| {
            p.rto
                .rtt
                .estimated()
                .unwrap_or_else(|| self.initial_call_rto(config, node))
        })
    }

    fn peer_rto(&self, node: NodeId) -> Option<&PeerRto> {
        self.peers.get(&node).map(|p| &p.rto)
    }

    /// The RTO of call `mid`'s transmission after `retries` retransmissions
    /// in its current phase.
    fn call_rto(&self, config: &ChanConfig, mid: u64, retries: u32) -> Duration {
        match self.calls.get(&mid) {
            Some(c) => rtt::backed_off_rto(
                config,
                self.peer_rto(c.node),
                c.inherited.saturating_add(retries),
            ),
            None => config.max_rto,
        }
    }

    /// Remembers for the peer of call `mid` that its RTO was doubled for the
    /// `retries`-th retransmission.
    fn note_backoff(&mut self, mid: u64, retries: u32) {
        let Some(c) = self.calls.get(&mid) else {
            return;
        };
        let shift = c.inherited.saturating_add(retries);
        if let Some(p) = self.peers.get_mut(&c.node) {
            p.rto.note_backoff(shift);
        }
    }

    /// Sends `msg` to `node` (a peer: every call's server is in the table).
    fn send_message(&self, sh: &mut Shared, now: Instant, to: NodeId, msg: &ChanMessage) {
        let hint = self.rtt_hint(&sh.config, to);
        sh.send_message(now, to, msg, hint);
    }

    fn touch_peer(&mut self, sh: &mut Shared, now: Instant, node: NodeId) {
        if !self.peers.contains_key(&node) && self.peers.len() >= sh.config.max_peers {
            let idle = self
                .peers
                .iter()
                .filter(|(_, p)| p.calls.is_empty())
                .min_by_key(|(n, p)| (p.last_used, **n))
                .map(|(n, _)| *n);
            if let Some(n) = idle {
                self.peers.remove(&n);
                sh.timers.cancel(&TimerKey::AckFlush(n));
            }
        }
        self.peers.entry(node).or_default().last_used = now;
    }

    /// Starts a call; see [`Chan::call`](super::Chan::call).
    pub(super) fn call(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        node: NodeId,
        procedure: u16,
        body: Vec<u8>,
        options: CallOptions,
    ) -> CallId {
        let id = CallId(self.next_call);
        self.next_call += 1;
        sh.stats.calls += 1;
        if body.len() > sh.max_body() {
            sh.stats.calls_failed += 1;
            sh.events.push_back(ChanEvent::Completed {
                id,
                node,
                result: Err(CallError::TooLarge),
            });
            return id;
        }
        let mid = self.next_mid;
        self.next_mid = self.next_mid.wrapping_add(1);
        let timeout = options.timeout.unwrap_or(sh.config.call_timeout);
        let mut deadline = now + timeout;
        if let Some(d) = options.deadline {
            deadline = deadline.min(d);
        }
        self.touch_peer(sh, now, node);
        let known = self.peers.get_mut(&node).and_then(|p| {
            p.calls.insert(mid);
            p.incarnation
        });
        self.call_ids.insert(id, mid);
        let inherited = rtt::inherited_shift(&sh.config, self.peer_rto(node));
        self.calls.insert(
            mid,
            Call {
                id,
                node,
                procedure,
                body: Some(body),
                request: None,
                pinned: None,
                phase: Phase::Resolving,
                retries: 0,
                max_retries: options.max_retries.unwrap_or(sh.config.max_retries),
                deadline,
                next_action: now,
                attempt: 0,
                sent: [None; SENT_HISTORY],
                inherited,
            },
        );
        match known {
            Some(inc) => self.pin_and_send(sh, now, mid, inc),
            None => self.send_hello(sh, now, mid),
        }
        id
    }

    /// Ends call `id` with [`CallError::Cancelled`]. Returns whether it was
    /// pending.
    pub(super) fn cancel(&mut self, sh: &mut Shared, id: CallId) -> bool {
        match self.call_ids.get(&id).copied() {
            Some(mid) => {
                self.finish_call(sh, mid, Err(CallError::Cancelled));
                true
            }
            None => false,
        }
    }

    /// Records `node`'s incarnation; see
    /// [`Chan::learn_incarnation`](super::Chan::learn_incarnation).
    pub(super) fn learn_incarnation(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        node: NodeId,
        incarnation: Incarnation,
    ) {
        self.touch_peer(sh, now, node);
        self.learn(sh, now, node, incarnation);
    }

    fn learn(&mut self, sh: &mut Shared, now: Instant, node: NodeId, inc: Incarnation) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        match peer.incarnation {
            Some(old) if old == inc => {}
            Some(old) if old > inc => return,
            _ => {
                peer.incarnation = Some(inc);
                peer.pending_acks.clear();
                sh.timers.cancel(&TimerKey::AckFlush(node));
                let stale: Vec<u64> = peer
                    .calls
                    .iter()
                    .copied()
                    .filter(|m| {
                        self.calls
                            .get(m)
                            .and_then(|c| c.pinned)
                            .is_some_and(|p| p < inc)
                    })
                    .collect();
                for m in stale {
                    self.finish_call(sh, m, Err(CallError::PeerRestarted));
                }
            }
        }
        let resolving: Vec<u64> = self
            .peers
            .get(&node)
            .map(|p| p.calls.iter().copied().collect())
            .unwrap_or_default();
        for m in resolving {
            if self
                .calls
                .get(&m)
                .is_some_and(|c| c.phase == Phase::Resolving)
            {
                self.pin_and_send(sh, now, m, inc);
            }
        }
    }

    fn arm_call(&self, sh: &mut Shared, mid: u64) {
        if let Some(c) = self.calls.get(&mid) {
            let at = c.next_action.min(c.deadline);
            if at == Instant::MAX {
                sh.timers.cancel(&TimerKey::Call(mid));
            } else {
                sh.timers.set(TimerKey::Call(mid), at);
            }
        }
    }

    fn send_hello(&mut self, sh: &mut Shared, now: Instant, mid: u64) {
        let Some(c) = self.calls.get(&mid) else {
            return;
        };
        let (node, retries) = (c.node, c.retries);
        let rto = self.call_rto(&sh.config, mid, retries);
        let Some(c) = self.calls.get_mut(&mid) else {
            return;
        };
        c.phase = Phase::Resolving;
        c.next_action = now + rto;
        let attempt = c.next_attempt(now, true);
        sh.stats.hellos_sent += 1;
        self.send_message(
            sh,
            now,
            node,
            &ChanMessage::Hello {
                nonce: mid,
                attempt,
            },
        );
        self.arm_call(sh, mid);
    }

    fn pin_and_send(&mut self, sh: &mut Shared, now: Instant, mid: u64, inc: Incarnation) {
        let Some(c) = self.calls.get_mut(&mid) else {
            return;
        };
        c.pinned = Some(inc);
        c.retries = 0;
        let node = c.node;
        let body = c.body.take().unwrap_or_default();
        let procedure = c.procedure;
        let (acks, done_below) = self.take_acks(sh, node);
        let patience_ms = self.patience_ms(&sh.config, now, mid);
        let rtt_hint_ms = self
            .rtt_hint(&sh.config, node)
            .map_or(0, |r| u32::try_from(r.as_millis()).unwrap_or(u32::MAX));
        let msg = ChanMessage::Request(Request {
            mid,
            client: sh.incarnation,
            server: inc,
            procedure,
            done_below,
            acks,
            patience_ms,
            attempt: 0,
            rtt_hint_ms,
            body: Bytes(body),
        });
        let encoded = match wire::encode_body(&msg) {
            Ok(b) if b.len() <= sh.blast.config().max_message => b,
            _ => {
                self.finish_call(sh, mid, Err(CallError::TooLarge));
                return;
            }
        };
        // An attempt number adds at most 4 bytes to the encoding (varints).
        let stamped_len = encoded.len() + 4;
        let request = if sh.blast.fragments_for(stamped_len) > 1
            || stamped_len > sh.blast.config().max_message
        {
            Encoded::Large(Arc::from(encoded))
        } else {
            match msg {
                ChanMessage::Request(r) => Encoded::Small(r),
                _ => return,
            }
        };
        let inherited = rtt::inherited_shift(&sh.config, self.peer_rto(node));
        if let Some(c) = self.calls.get_mut(&mid) {
            c.request = Some(request);
            c.inherited = inherited;
        }
        self.send_request(sh, now, mid);
    }

    /// How much longer call `mid` may ask for its reply, in milliseconds:
    /// until its deadline, and at most what its retries can take.
    fn patience_ms(&self, config: &ChanConfig, now: Instant, mid: u64) -> u32 {
        let Some(c) = self.calls.get(&mid) else {
            return 0;
        };
        let retries = config
            .max_rto
            .saturating_mul(c.max_retries.saturating_add(2))
            .saturating_add(config.probe_interval);
        let left = (c.deadline - now).min(retries);
        u32::try_from(left.as_millis()).unwrap_or(u32::MAX)
    }

    /// Acknowledgements for `node` to piggyback, and its `done_below`.
    fn take_acks(&mut self, sh: &mut Shared, node: NodeId) -> (Vec<u64>, u64) {
        let next_mid = self.next_mid;
        let Some(peer) = self.peers.get_mut(&node) else {
            return (Vec::new(), next_mid);
        };
        let mut acks = Vec::new();
        while acks.len() < MAX_ACKS {
            match peer.pending_acks.pop_first() {
                Some(m) => acks.push(m),
                None => break,
            }
        }
        if peer.pending_acks.is_empty() {
            sh.timers.cancel(&TimerKey::AckFlush(node));
        }
        let done_below = peer.calls.first().copied().unwrap_or(next_mid);
        (acks, done_below)
    }

    fn send_request(&mut self, sh: &mut Shared, now: Instant, mid: u64) {
        let Some(c) = self.calls.get(&mid) else {
            return;
        };
        let (node, retries) = (c.node, c.retries);
        let rto = self.call_rto(&sh.config, mid, retries);
        let Some(c) = self.calls.get_mut(&mid) else {
            return;
        };
        let (bytes, small) = match &c.request {
            Some(Encoded::Large(b)) => (b.clone(), false),
            Some(Encoded::Small(r)) => {
                // One fragment at most: copying it to stamp it is cheap.
                let mut r = r.clone();
                r.attempt = c.next_attempt(now, true);
                match wire::encode_body(&ChanMessage::Request(r)) {
                    Ok(b) => (Arc::from(b), true),
                    Err(_) => {
                        sh.stats.drops.record_kind("encode_failed");
                        return;
                    }
                }
            }
            None => return,
        };
        sh.stats.requests_sent += 1;
        let hint = self.rtt_hint(&sh.config, node);
        let transfer = sh.send_bytes(now, node, bytes, hint);
        if let Some(b) = transfer {
            self.transfers.insert(b, mid);
        }
        if let Some(c) = self.calls.get_mut(&mid) {
            if small && transfer.is_some() {
                // Against expectation more than one fragment: no sample.
                c.sent[c.attempt as usize % SENT_HISTORY] = None;
            }
            c.phase = Phase::Sending { transfer };
            c.next_action = if transfer.is_some() {
                Instant::MAX
            } else {
                now + rto
            };
        }
        self.arm_call(sh, mid);
    }

    fn send_probe(&mut self, sh: &mut Shared, now: Instant, mid: u64) {
        let Some(c) = self.calls.get(&mid) else {
            return;
        };
        let (node, pinned) = (c.node, c.pinned);
        let probe_retries = match c.phase {
            Phase::Waiting { probe_retries, .. } => probe_retries,
            _ => 0,
        };
        let Some(server) = pinned else {
            return;
        };
        let rto = self.call_rto(&sh.config, mid, probe_retries);
        let patience_ms = self.patience_ms(&sh.config, now, mid);
        let Some(c) = self.calls.get_mut(&mid) else {
            return;
        };
        c.phase = Phase::Waiting {
            probe_outstanding: true,
            probe_retries,
        };
        c.next_action = now + rto;
        let attempt = c.next_attempt(now, true);
        sh.stats.probes_sent += 1;
        let client = sh.incarnation;
        self.send_message(
            sh,
            now,
            node,
            &ChanMessage::Probe {
                mid,
                client,
                server,
                patience_ms,
                attempt,
            },
        );
        self.arm_call(sh, mid);
    }

    fn enter_waiting(&mut self, sh: &mut Shared, now: Instant, mid: u64) {
        let probe_at = now + sh.config.probe_interval;
        let inherited = self.calls.get(&mid).map_or(0, |c| {
            rtt::inherited_shift(&sh.config, self.peer_rto(c.node))
        });
        if let Some(c) = self.calls.get_mut(&mid) {
            if let Phase::Sending {
                transfer: Some(b), ..
            } = c.phase
            {
                self.transfers.remove(&b);
                sh.blast.cancel(b);
            }
            c.phase = Phase::Waiting {
                probe_outstanding: false,
                probe_retries: 0,
            };
            c.retries = 0;
            c.inherited = inherited;
            c.next_action = probe_at;
        }
        self.arm_call(sh, mid);
    }

    fn finish_call(&mut self, sh: &mut Shared, mid: u64, result: Result<Vec<u8>, CallError>) {
        let Some(c) = self.calls.remove(&mid) else {
            return;
        };
        self.call_ids.remove(&c.id);
        sh.timers.cancel(&TimerKey::Call(mid));
        if let Phase::Sending { transfer: Some(b) } = c.phase {
            self.transfers.remove(&b);
            sh.blast.cancel(b);
        }
        if let Some(p) = self.peers.get_mut(&c.node) {
            p.calls.remove(&mid);
        }
        match &result {
            Ok(_) => sh.stats.calls_succeeded += 1,
            Err(e) => {
                sh.stats.calls_failed += 1;
                match e {
                    CallError::Timeout => sh.stats.timeouts += 1,
                    CallError::PeerRestarted => sh.stats.peer_restarted += 1,
                    CallError::Unreachable => sh.stats.unreachable += 1,
                    CallError::Cancelled => sh.stats.cancelled += 1,
                    _ => {}
                }
            }
        }
        sh.events.push_back(ChanEvent::Completed {
            id: c.id,
            node: c.node,
            result,
        });
    }

    /// Takes an RTT sample from `from`'s answer to call `mid` echoing
    /// `echo`: if that attempt is among the call's recent sampleable
    /// transmissions and not answered before, the sample is `now` minus its
    /// send time, unambiguous even for a retransmission. A valid sample
    /// clears the peer's back-off.
    fn sample_echo(&mut self, sh: &mut Shared, now: Instant, from: NodeId, mid: u64, echo: u32) {
        let Some(c) = self.calls.get_mut(&mid) else {
            return;
        };
        if c.node != from {
            return;
        }
        let Some(sent_at) = c.take_sent(echo) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&from) {
            p.rto.sample(now - sent_at);
            sh.stats.rtt_samples += 1;
        }
    }

    /// The RETRANSMIT or PROBE timer of call `mid` (or its deadline) is due.
    pub(super) fn on_call_timer(&mut self, sh: &mut Shared, now: Instant, mid: u64) {
        let Some(c) = self.calls.get(&mid) else {
            return;
        };
        if now >= c.deadline {
            self.finish_call(sh, mid, Err(CallError::Timeout));
            return;
        }
        if now < c.next_action {
            self.arm_call(sh, mid);
            return;
        }
        let (phase, max_retries) = (c.phase, c.max_retries);
        let retries = c.retries.saturating_add(1);
        match phase {
            Phase::Resolving | Phase::Sending { transfer: None } => {
                if retries > max_retries {
                    self.finish_call(sh, mid, Err(CallError::Timeout));
                    return;
                }
                if let Some(c) = self.calls.get_mut(&mid) {
                    c.retries = retries;
                }
                self.note_backoff(mid, retries);
                sh.stats.retransmissions += 1;
                if phase == Phase::Resolving {
                    self.send_hello(sh, now, mid);
                } else {
                    self.send_request(sh, now, mid);
                }
            }
            Phase::Sending { transfer: Some(_) } => self.arm_call(sh, mid),
            Phase::Waiting {
                probe_outstanding,
                probe_retries,
            } => {
                if probe_outstanding {
                    let probe_retries = probe_retries.saturating_add(1);
                    if probe_retries > max_retries {
                        self.finish_call(sh, mid, Err(CallError::Timeout));
                        return;
                    }
                    self.note_backoff(mid, probe_retries);
                    if let Some(c) = self.calls.get_mut(&mid) {
                        c.phase = Phase::Waiting {
                            probe_outstanding: true,
                            probe_retries,
                        };
                    }
                }
                self.send_probe(sh, now, mid);
            }
        }
    }

    /// Whether `mid` is a pending call to `from` pinned to server
    /// incarnation `server`.
    fn answered_call(&self, from: NodeId, mid: u64, server: Incarnation) -> bool {
        self.calls
            .get(&mid)
            .is_some_and(|c| c.node == from && c.pinned == Some(server))
    }

    fn queue_reply_ack(&mut self, sh: &mut Shared, now: Instant, node: NodeId, mid: u64) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        peer.pending_acks.insert(mid);
        if peer.pending_acks.len() >= MAX_ACKS {
            self.flush_acks(sh, now, node);
        } else if sh.timers.get(&TimerKey::AckFlush(node)).is_none() {
            sh.timers
                .set(TimerKey::AckFlush(node), now + sh.config.ack_delay);
        }
    }

    /// Sends the acknowledgements pending for `node` as a `ReplyAck` (the
    /// ACK_DELAY timer, or a full batch).
    pub(super) fn flush_acks(&mut self, sh: &mut Shared, now: Instant, node: NodeId) {
        let server = self.peers.get(&node).and_then(|p| p.incarnation);
        let (mids, done_below) = self.take_acks(sh, node);
        sh.timers.cancel(&TimerKey::AckFlush(node));
        if mids.is_empty() {
            return;
        }
        let Some(server) = server else {
            return;
        };
        sh.stats.reply_acks_sent += 1;
        let client = sh.incarnation;
        self.send_message(
            sh,
            now,
            node,
            &ChanMessage::ReplyAck {
                client,
                server,
                mids,
                done_below,
            },
        );
        if self
            .peers
            .get(&node)
            .is_some_and(|p| !p.pending_acks.is_empty())
        {
            sh.timers
                .set(TimerKey::AckFlush(node), now + sh.config.ack_delay);
        }
    }

    /// Any message from `node` arrived: it is reachable again.
    pub(super) fn heard_from(&mut self, node: NodeId) {
        if let Some(p) = self.peers.get_mut(&node) {
            p.unreachable_strikes = 0;
        }
    }

    /// A server's answer (`Iam`, `Reply`, `Ack`, `Unknown`, `Forgotten`,
    /// `Restarted`) from `from`; anything else is dropped and counted.
    pub(super) fn on_message(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        from: NodeId,
        msg: ChanMessage,
    ) {
        match msg {
            ChanMessage::Iam {
                nonce,
                incarnation,
                echo,
            } => {
                self.sample_echo(sh, now, from, nonce, echo);
                if self.peers.contains_key(&from) {
                    self.learn(sh, now, from, incarnation);
                }
            }
            ChanMessage::Reply {
                mid,
                server,
                echo,
                outcome,
            } => {
                if self.answered_call(from, mid, server) {
                    self.sample_echo(sh, now, from, mid, echo);
                    let result = match outcome {
                        Outcome::Ok(b) => Ok(b.0),
                        Outcome::NoSuchProcedure => Err(CallError::NoSuchProcedure),
                        Outcome::TooLarge => Err(CallError::TooLarge),
                    };
                    self.finish_call(sh, mid, result);
                }
                if self
                    .peers
                    .get(&from)
                    .is_some_and(|p| p.incarnation == Some(server))
                {
                    self.queue_reply_ack(sh, now, from, mid);
                }
            }
            ChanMessage::Ack { mid, server, echo } => {
                if !self.answered_call(from, mid, server) {
                    return;
                }
                self.sample_echo(sh, now, from, mid, echo);
                self.enter_waiting(sh, now, mid);
            }
            ChanMessage::Unknown { mid, server, echo } => {
                if !self.answered_call(from, mid, server) {
                    return;
                }
                self.sample_echo(sh, now, from, mid, echo);
                let Some(c) = self.calls.get_mut(&mid) else {
                    return;
                };
                if !matches!(c.phase, Phase::Waiting { .. }) {
                    return;
                }
                c.retries = c.retries.saturating_add(1);
                if c.retries > c.max_retries {
                    self.finish_call(sh, mid, Err(CallError::Timeout));
                    return;
                }
                sh.stats.retransmissions += 1;
                self.send_request(sh, now, mid);
            }
            ChanMessage::Forgotten { mid, server, echo } => {
                if self.answered_call(from, mid, server) {
                    self.sample_echo(sh, now, from, mid, echo);
                    self.finish_call(sh, mid, Err(CallError::ReplyLost));
                }
            }
            ChanMessage::Restarted { mid, server, echo } => {
                let newer = self
                    .calls
                    .get(&mid)
                    .is_some_and(|c| c.node == from && c.pinned.is_some_and(|p| p < server));
                if newer {
                    // The path's round trip, whichever life answered.
                    self.sample_echo(sh, now, from, mid, echo);
                    // `learn` fails every call pinned to an older life.
                    self.learn(sh, now, from, server);
                }
            }
            _ => sh.stats.drops.record_kind("unexpected_message"),
        }
    }

    /// BLAST acknowledged the whole message `blast_mid`. Returns false if it
    /// is not one of this side's requests.
    pub(super) fn on_transfer_acked(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        blast_mid: u64,
    ) -> bool {
        let Some(call) = self.transfers.remove(&blast_mid) else {
            return false;
        };
        let sending = self.calls.get(&call).is_some_and(|c| {
            c.phase
                == Phase::Sending {
                    transfer: Some(blast_mid),
                }
        });
        if sending {
            if let Some(c) = self.calls.get_mut(&call) {
                // Already removed from `transfers`.
                c.phase = Phase::Sending { transfer: None };
            }
            self.enter_waiting(sh, now, call);
        }
        true
    }

    /// BLAST gave up on the message `blast_mid` (its DONE timer). Returns
    /// false if it is not one of this side's requests.
    pub(super) fn on_transfer_abandoned(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        blast_mid: u64,
    ) -> bool {
        let Some(call) = self.transfers.remove(&blast_mid) else {
            return false;
        };
        let sending = self.calls.get(&call).is_some_and(|c| {
            c.phase
                == Phase::Sending {
                    transfer: Some(blast_mid),
                }
        });
        if sending {
            // Did the request get there? Ask (a probe is small);
            // `Unknown` makes us resend it.
            let max = self.calls.get(&call).map_or(0, |c| c.max_retries);
            let retries = self
                .calls
                .get(&call)
                .map_or(0, |c| c.retries)
                .saturating_add(1);
            if retries > max {
                self.finish_call(sh, call, Err(CallError::Timeout));
                return true;
            }
            if let Some(c) = self.calls.get_mut(&call) {
                c.retries = retries;
                c.phase = Phase::Waiting {
                    probe_outstanding: false,
                    probe_retries: 0,
                };
            }
            self.send_probe(sh, now, call);
        }
        true
    }

    /// The host reported `node` unreachable; see
    /// [`Chan::unreachable`](super::Chan::unreachable).
    pub(super) fn unreachable(&mut self, sh: &mut Shared, now: Instant, node: NodeId) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        if peer.calls.is_empty() {
            return;
        }
        peer.unreachable_strikes = peer.unreachable_strikes.saturating_add(1);
        let strikes = peer.unreachable_strikes;
        let calls: Vec<u64> = peer.calls.iter().copied().collect();
        if strikes >= 2 {
            if let Some(p) = self.peers.get_mut(&node) {
                p.unreachable_strikes = 0;
            }
            for m in calls {
                self.finish_call(sh, m, Err(CallError::Unreachable));
            }
            return;
        }
        for m in calls {
            let Some(c) = self.calls.get_mut(&m) else {
                continue;
            };
            match c.phase {
                Phase::Resolving => {
                    sh.stats.retransmissions += 1;
                    self.send_hello(sh, now, m);
                }
                Phase::Sending { transfer: None } => {
                    sh.stats.retransmissions += 1;
                    self.send_request(sh, now, m);
                }
                Phase::Sending { transfer: Some(_) } => {}
                Phase::Waiting { .. } => self.send_probe(sh, now, m),
            }
        }
    }
}
