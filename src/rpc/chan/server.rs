//! The CHAN server (seed 004, section 5.3.2, the server side of
//! request/reply): at-most-once execution of the requests this endpoint
//! receives, with saved replies for duplicates.
//!
//! Per client node (and only its newest incarnation) the server keeps a
//! [`DuplicateTable`]: a watermark `low` below which every call is finished,
//! and the calls at or above it, each running (deferred), replied (saved
//! reply) or done (reply freed, id kept). A request is handed up
//! ([`ChanEvent::Execute`]) only if its id is in neither; a duplicate is
//! answered from the table (`Ack`, the saved reply, or `Forgotten`). Probes
//! are answered the same way, or `Unknown`. Saved replies are freed when
//! acknowledged, when they expire, or when over the per-client or total
//! bounds (soonest to expire first); a client's whole table goes after
//! [`ChanConfig::client_retention`] of silence (the SWEEP timer). The
//! details are in the [`chan`](super) module docs.

use super::config::ChanConfig;
use super::message::{stamp_reply, ChanMessage, Outcome, Request, MAX_ACKS};
use super::shared::{ChanEvent, RequestToken, Shared, TimerKey};
use crate::id::{Incarnation, NodeId};
use crate::rpc::blast::MAX_RTT_HINT;
use crate::time::Instant;
use crate::wire;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// One call of a client, at or above the client's watermark.
#[derive(Debug)]
enum Entry {
    Executing {
        token: RequestToken,
        /// Keep the reply at least until then (the client's patience).
        keep_until: Instant,
        /// The attempt of the latest request or probe for it, and when it
        /// arrived: an answer sent at that same instant echoes it.
        asked: (u32, Instant),
    },
    Replied {
        message: Arc<[u8]>,
        expires: Instant,
        transfer: Option<u64>,
    },
    Done,
}

/// The at-most-once table of one client (one incarnation of it).
#[derive(Debug)]
struct DuplicateTable {
    incarnation: Incarnation,
    /// The client's round-trip estimate (clamped), if it sent one.
    rtt_hint: Option<Duration>,
    low: u64,
    entries: BTreeMap<u64, Entry>,
    saved: usize,
    last_activity: Instant,
}

/// The node a server operation answers, with the client side's round-trip
/// estimate to it if this endpoint calls that node too (preferred, for
/// BLAST's hint, to the estimate the node sent as a client).
#[derive(Debug, Clone, Copy)]
pub(super) struct Remote {
    /// The client node.
    pub(super) node: NodeId,
    /// Our own round-trip estimate to it, as its client.
    pub(super) our_rtt: Option<Duration>,
}

/// The fields of a received [`ChanMessage::Probe`].
pub(super) struct ProbeIn {
    pub(super) mid: u64,
    pub(super) client: Incarnation,
    pub(super) server: Incarnation,
    pub(super) patience_ms: u32,
    pub(super) attempt: u32,
}

/// The server side of a CHAN endpoint: the clients' duplicate tables, the
/// requests handed up and the saved replies.
///
/// Its methods take the endpoint's [`Shared`] part from the
/// [`Chan`](super::Chan) core that composes it with the
/// [`Client`](super::client::Client). Those that answer a node take it as a
/// [`Remote`], carrying the client side's round-trip estimate to it.
#[derive(Debug)]
pub(super) struct Server {
    next_token: u64,
    clients: BTreeMap<NodeId, DuplicateTable>,
    tokens: BTreeMap<RequestToken, (NodeId, Incarnation, u64)>,
    /// Saved replies by expiry.
    saved_index: BTreeSet<(Instant, NodeId, u64)>,
    saved_bytes: usize,
    /// Multi-fragment replies still moving: BLAST message id -> (client,
    /// its incarnation, call).
    transfers: BTreeMap<u64, (NodeId, Incarnation, u64)>,
}

impl Server {
    /// No clients yet.
    pub(super) fn new() -> Self {
        Server {
            next_token: 1,
            clients: BTreeMap::new(),
            tokens: BTreeMap::new(),
            saved_index: BTreeSet::new(),
            saved_bytes: 0,
            transfers: BTreeMap::new(),
        }
    }

    /// Requests handed up and not yet answered.
    pub(super) fn executing(&self) -> usize {
        self.tokens.len()
    }

    /// Bytes of saved replies.
    pub(super) fn saved_reply_bytes(&self) -> usize {
        self.saved_bytes
    }

    /// The client node a pending request token belongs to.
    pub(super) fn token_node(&self, token: RequestToken) -> Option<NodeId> {
        self.tokens.get(&token).map(|&(node, _, _)| node)
    }

    /// The round-trip hint for BLAST towards `node`: ours if we call it
    /// too, else what it told us in its last request.
    fn rtt_hint(&self, to: Remote) -> Option<Duration> {
        to.our_rtt
            .or_else(|| self.clients.get(&to.node).and_then(|c| c.rtt_hint))
    }

    fn send_message(&self, sh: &mut Shared, now: Instant, to: Remote, msg: &ChanMessage) {
        let hint = self.rtt_hint(to);
        sh.send_message(now, to.node, msg, hint);
    }

    /// Answers a `Hello` (first contact) with `Iam`: nothing is executed.
    pub(super) fn on_hello(
        &self,
        sh: &mut Shared,
        now: Instant,
        to: Remote,
        nonce: u64,
        attempt: u32,
    ) {
        let msg = ChanMessage::Iam {
            nonce,
            incarnation: sh.incarnation,
            echo: attempt,
        };
        self.send_message(sh, now, to, &msg);
    }

    /// Executes-or-answers request `req` from `from`.
    pub(super) fn on_request(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        remote: Remote,
        req: Request,
    ) {
        let from = remote.node;
        sh.stats.requests_received += 1;
        let echo = req.attempt;
        if req.server != sh.incarnation {
            sh.stats.restarted_answers += 1;
            let msg = ChanMessage::Restarted {
                mid: req.mid,
                server: sh.incarnation,
                echo,
            };
            self.send_message(sh, now, remote, &msg);
            return;
        }
        if req.acks.len() > MAX_ACKS {
            sh.stats.drops.record_kind("too_many_acks");
            return;
        }
        if !self.client_state(sh, now, from, req.client) {
            return;
        }
        if let Some(s) = self.clients.get_mut(&from) {
            if req.rtt_hint_ms > 0 {
                s.rtt_hint =
                    Some(Duration::from_millis(u64::from(req.rtt_hint_ms)).min(MAX_RTT_HINT));
            }
        }
        for &m in &req.acks {
            self.mark_done(from, m);
        }
        self.raise_low(sh, from, req.done_below);
        let mid = req.mid;
        let keep_until = keep_until(&sh.config, now, req.patience_ms);
        self.extend(from, mid, keep_until, (echo, now));
        let state = self.clients.get(&from);
        let entry = state.and_then(|s| s.entries.get(&mid));
        match entry {
            Some(Entry::Executing { .. }) => {
                sh.stats.duplicates_while_executing += 1;
                self.send_ack(sh, now, remote, mid, echo);
            }
            Some(Entry::Replied { .. }) => self.resend_reply(sh, now, remote, mid, echo),
            Some(Entry::Done) => self.send_forgotten(sh, now, remote, mid, echo),
            None if state.is_some_and(|s| mid < s.low) => {
                self.send_forgotten(sh, now, remote, mid, echo)
            }
            None => {
                if self.tokens.len() >= sh.config.max_executing {
                    sh.stats.drops.record_kind("server_busy");
                    return;
                }
                let token = RequestToken(self.next_token);
                self.next_token += 1;
                if let Some(s) = self.clients.get_mut(&from) {
                    s.entries.insert(
                        mid,
                        Entry::Executing {
                            token,
                            keep_until,
                            asked: (echo, now),
                        },
                    );
                }
                self.tokens.insert(token, (from, req.client, mid));
                sh.stats.executions += 1;
                sh.events.push_back(ChanEvent::Execute {
                    token,
                    from,
                    from_incarnation: req.client,
                    procedure: req.procedure,
                    body: req.body.0,
                });
            }
        }
    }

    /// The client asked for `(node, mid)` again (with attempt `asked.0`, at
    /// `asked.1`): keep it until `until`.
    fn extend(&mut self, node: NodeId, mid: u64, until: Instant, asked: (u32, Instant)) {
        let Some(e) = self
            .clients
            .get_mut(&node)
            .and_then(|s| s.entries.get_mut(&mid))
        else {
            return;
        };
        match e {
            Entry::Executing {
                keep_until,
                asked: a,
                ..
            } => {
                *keep_until = (*keep_until).max(until);
                *a = asked;
            }
            Entry::Replied { expires, .. } if *expires < until => {
                self.saved_index.remove(&(*expires, node, mid));
                *expires = until;
                self.saved_index.insert((until, node, mid));
            }
            _ => {}
        }
    }

    /// Finds or makes the duplicate table of `(from, client)`. Returns false
    /// (and counts) if the request must be dropped.
    fn client_state(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        from: NodeId,
        client: Incarnation,
    ) -> bool {
        match self.clients.get(&from) {
            Some(s) if s.incarnation == client => {}
            Some(s) if s.incarnation > client => {
                sh.stats.drops.record_kind("stale_client");
                return false;
            }
            Some(_) => {
                // The client restarted: its previous life's table goes.
                self.drop_client(sh, from);
                self.new_client(sh, now, from, client);
            }
            None => {
                if self.clients.len() >= sh.config.max_clients {
                    let retention = sh.config.client_retention;
                    let victim = self
                        .clients
                        .iter()
                        .filter(|(_, s)| {
                            now - s.last_activity >= retention
                                && !s
                                    .entries
                                    .values()
                                    .any(|e| matches!(e, Entry::Executing { .. }))
                        })
                        .min_by_key(|(n, s)| (s.last_activity, **n))
                        .map(|(n, _)| *n);
                    match victim {
                        Some(v) => {
                            self.drop_client(sh, v);
                            sh.stats.clients_expired += 1;
                        }
                        None => {
                            sh.stats.drops.record_kind("client_table_full");
                            return false;
                        }
                    }
                }
                self.new_client(sh, now, from, client);
            }
        }
        if let Some(s) = self.clients.get_mut(&from) {
            s.last_activity = now;
        }
        true
    }

    fn new_client(&mut self, sh: &mut Shared, now: Instant, from: NodeId, client: Incarnation) {
        self.clients.insert(
            from,
            DuplicateTable {
                incarnation: client,
                rtt_hint: None,
                low: 0,
                entries: BTreeMap::new(),
                saved: 0,
                last_activity: now,
            },
        );
        if sh.timers.get(&TimerKey::Sweep).is_none() {
            sh.timers
                .set(TimerKey::Sweep, now + sweep_interval(&sh.config));
        }
    }

    fn drop_client(&mut self, sh: &mut Shared, node: NodeId) {
        let Some(s) = self.clients.remove(&node) else {
            return;
        };
        for (mid, e) in s.entries {
            if let Entry::Replied {
                message,
                expires,
                transfer,
            } = e
            {
                self.saved_bytes = self.saved_bytes.saturating_sub(message.len());
                self.saved_index.remove(&(expires, node, mid));
                if let Some(b) = transfer {
                    self.transfers.remove(&b);
                    sh.blast.cancel(b);
                }
            }
        }
    }

    /// Frees the saved reply of `(node, mid)`, keeping the id as done. A
    /// BLAST transfer of the reply still under way goes on (BLAST holds its
    /// own reference and its own DONE bound): evicting a saved reply must
    /// not destroy the copy that is about to arrive.
    fn mark_done(&mut self, node: NodeId, mid: u64) {
        let Some(s) = self.clients.get_mut(&node) else {
            return;
        };
        let Some(e) = s.entries.get_mut(&mid) else {
            return;
        };
        // A running call stays running; a done one stays done.
        if !matches!(e, Entry::Replied { .. }) {
            return;
        }
        if let Entry::Replied {
            message, expires, ..
        } = std::mem::replace(e, Entry::Done)
        {
            s.saved = s.saved.saturating_sub(1);
            self.saved_bytes = self.saved_bytes.saturating_sub(message.len());
            self.saved_index.remove(&(expires, node, mid));
        }
    }

    /// Raises the watermark of `node` to `low` and enforces the table bound.
    fn raise_low(&mut self, sh: &mut Shared, node: NodeId, low: u64) {
        let Some(s) = self.clients.get(&node) else {
            return;
        };
        let below: Vec<u64> = s
            .entries
            .range(..low)
            .filter(|(_, e)| !matches!(e, Entry::Executing { .. }))
            .map(|(m, _)| *m)
            .collect();
        for m in below {
            self.mark_done(node, m);
            if let Some(s) = self.clients.get_mut(&node) {
                s.entries.remove(&m);
            }
        }
        let max_done = sh.config.max_done_per_client;
        if let Some(s) = self.clients.get_mut(&node) {
            s.low = s.low.max(low);
        }
        loop {
            let Some(s) = self.clients.get(&node) else {
                return;
            };
            let finished = s
                .entries
                .values()
                .filter(|e| !matches!(e, Entry::Executing { .. }))
                .count();
            if finished <= max_done {
                return;
            }
            let Some(m) = s
                .entries
                .iter()
                .find(|(_, e)| !matches!(e, Entry::Executing { .. }))
                .map(|(m, _)| *m)
            else {
                return;
            };
            if matches!(s.entries.get(&m), Some(Entry::Replied { .. })) {
                sh.stats.saved_replies_evicted += 1;
            }
            self.mark_done(node, m);
            if let Some(s) = self.clients.get_mut(&node) {
                s.entries.remove(&m);
                s.low = s.low.max(m.saturating_add(1));
            }
        }
    }

    fn send_ack(&self, sh: &mut Shared, now: Instant, to: Remote, mid: u64, echo: u32) {
        let msg = ChanMessage::Ack {
            mid,
            server: sh.incarnation,
            echo,
        };
        self.send_message(sh, now, to, &msg);
    }

    fn send_forgotten(&self, sh: &mut Shared, now: Instant, to: Remote, mid: u64, echo: u32) {
        sh.stats.forgotten_answers += 1;
        let msg = ChanMessage::Forgotten {
            mid,
            server: sh.incarnation,
            echo,
        };
        self.send_message(sh, now, to, &msg);
    }

    fn send_unknown(&self, sh: &mut Shared, now: Instant, to: Remote, mid: u64, echo: u32) {
        sh.stats.unknown_answers += 1;
        let msg = ChanMessage::Unknown {
            mid,
            server: sh.incarnation,
            echo,
        };
        self.send_message(sh, now, to, &msg);
    }

    /// Answers a duplicate request or a probe (attempt `echo`) for a call
    /// with a saved reply.
    fn resend_reply(&mut self, sh: &mut Shared, now: Instant, to: Remote, mid: u64, echo: u32) {
        let Some(Entry::Replied {
            message, transfer, ..
        }) = self.clients.get(&to.node).and_then(|s| s.entries.get(&mid))
        else {
            return;
        };
        if transfer.is_some() {
            // The reply is still on its way (multi-fragment): just ACK.
            sh.stats.duplicates_while_executing += 1;
            self.send_ack(sh, now, to, mid, echo);
            return;
        }
        let message = message.clone();
        sh.stats.duplicates_answered_from_cache += 1;
        self.transmit_reply(sh, now, to, mid, message, echo);
    }

    /// Sends the saved reply `message` (encoded with echo 0) of `(to, mid)`
    /// in answer to attempt `echo` (0: to none). A one-fragment reply is
    /// re-encoded carrying `echo`; a multi-fragment one is preceded by an
    /// `Ack` carrying it and itself echoes nothing (its transfer time is no
    /// round trip).
    fn transmit_reply(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        to: Remote,
        mid: u64,
        message: Arc<[u8]>,
        echo: u32,
    ) {
        let Some(inc) = self.clients.get(&to.node).map(|s| s.incarnation) else {
            return;
        };
        // An echo adds at most 4 bytes to the encoding (varints).
        let stamped_len = message.len() + 4;
        let message = if sh.blast.fragments_for(stamped_len) > 1 {
            // Tell the client its request is in hand before a long transfer.
            self.send_ack(sh, now, to, mid, echo);
            message
        } else if stamped_len <= sh.blast.config().max_message {
            stamp_reply(message, echo)
        } else {
            message
        };
        sh.stats.replies_sent += 1;
        let hint = self.rtt_hint(to);
        let transfer = sh.send_bytes(now, to.node, message, hint);
        if let Some(b) = transfer {
            self.transfers.insert(b, (to.node, inc, mid));
            if let Some(Entry::Replied { transfer: t, .. }) = self
                .clients
                .get_mut(&to.node)
                .and_then(|s| s.entries.get_mut(&mid))
            {
                *t = Some(b);
            }
        }
    }

    /// See [`Chan::acknowledge`](super::Chan::acknowledge).
    pub(super) fn acknowledge(
        &mut self,
        sh: &mut Shared,
        our_rtt: Option<Duration>,
        now: Instant,
        token: RequestToken,
    ) -> bool {
        let Some(&(node, inc, mid)) = self.tokens.get(&token) else {
            return false;
        };
        if self
            .clients
            .get(&node)
            .is_some_and(|s| s.incarnation == inc)
        {
            let echo = self.immediate_echo(now, node, mid);
            self.send_ack(sh, now, Remote { node, our_rtt }, mid, echo);
        }
        true
    }

    /// The attempt an answer to running call `(node, mid)` sent at `now`
    /// echoes: that of the request or probe that arrived at this very
    /// instant, if any. An answer sent later (a deferred handler's) echoes
    /// nothing, as the wait is no part of the round trip.
    fn immediate_echo(&self, now: Instant, node: NodeId, mid: u64) -> u32 {
        match self.clients.get(&node).and_then(|s| s.entries.get(&mid)) {
            Some(Entry::Executing {
                asked: (attempt, at),
                ..
            }) if *at == now => *attempt,
            _ => 0,
        }
    }

    /// See [`Chan::respond`](super::Chan::respond).
    pub(super) fn respond(
        &mut self,
        sh: &mut Shared,
        our_rtt: Option<Duration>,
        now: Instant,
        token: RequestToken,
        outcome: Outcome,
    ) -> bool {
        let Some((node, inc, mid)) = self.tokens.remove(&token) else {
            return false;
        };
        let live = self.clients.get(&node).is_some_and(|s| {
            s.incarnation == inc
                && matches!(s.entries.get(&mid), Some(Entry::Executing { token: t, .. }) if *t == token)
        });
        if !live {
            sh.stats.replies_discarded += 1;
            return true;
        }
        let low = self.clients.get(&node).map_or(0, |s| s.low);
        if mid < low {
            // The client has moved on (it timed out or cancelled).
            if let Some(s) = self.clients.get_mut(&node) {
                s.entries.remove(&mid);
            }
            sh.stats.replies_discarded += 1;
            return true;
        }
        let echo = self.immediate_echo(now, node, mid);
        // Saved with echo 0; `transmit_reply` stamps each transmission.
        let mut encoded = wire::encode_body(&ChanMessage::Reply {
            mid,
            server: sh.incarnation,
            echo: 0,
            outcome,
        })
        .ok()
        .filter(|b| b.len() <= sh.blast.config().max_message);
        if encoded.is_none() {
            encoded = wire::encode_body(&ChanMessage::Reply {
                mid,
                server: sh.incarnation,
                echo: 0,
                outcome: Outcome::TooLarge,
            })
            .ok();
        }
        let Some(encoded) = encoded else {
            return true;
        };
        let message: Arc<[u8]> = Arc::from(encoded);
        let mut expires = now + sh.config.reply_retention;
        if let Some(s) = self.clients.get_mut(&node) {
            if let Some(Entry::Executing { keep_until, .. }) = s.entries.get(&mid) {
                expires = expires.max(*keep_until);
            }
            s.entries.insert(
                mid,
                Entry::Replied {
                    message: message.clone(),
                    expires,
                    transfer: None,
                },
            );
            s.saved += 1;
        }
        self.saved_bytes += message.len();
        self.saved_index.insert((expires, node, mid));
        self.transmit_reply(sh, now, Remote { node, our_rtt }, mid, message, echo);
        self.enforce_saved_bounds(sh, node);
        true
    }

    fn enforce_saved_bounds(&mut self, sh: &mut Shared, node: NodeId) {
        let per_client = sh.config.max_saved_replies_per_client;
        while let Some(s) = self.clients.get(&node) {
            if s.saved <= per_client {
                break;
            }
            let oldest = s
                .entries
                .iter()
                .filter_map(|(m, e)| match e {
                    Entry::Replied { expires, .. } => Some((*expires, *m)),
                    _ => None,
                })
                .min();
            let Some((_, m)) = oldest else {
                break;
            };
            sh.stats.saved_replies_evicted += 1;
            self.mark_done(node, m);
        }
        while self.saved_bytes > sh.config.max_saved_reply_bytes {
            let Some(&first) = self.saved_index.first() else {
                break;
            };
            sh.stats.saved_replies_evicted += 1;
            self.mark_done(first.1, first.2);
            // mark_done removes it; make sure, so this loop always ends.
            self.saved_index.remove(&first);
        }
    }

    /// Answers a probe: `Ack` while running, the saved reply, `Forgotten`,
    /// `Unknown`, or `Restarted` if it is for another life of this server.
    pub(super) fn on_probe(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        remote: Remote,
        probe: ProbeIn,
    ) {
        let from = remote.node;
        let ProbeIn {
            mid,
            client,
            server,
            patience_ms,
            attempt: echo,
        } = probe;
        if server != sh.incarnation {
            sh.stats.restarted_answers += 1;
            let msg = ChanMessage::Restarted {
                mid,
                server: sh.incarnation,
                echo,
            };
            self.send_message(sh, now, remote, &msg);
            return;
        }
        let known = self
            .clients
            .get(&from)
            .is_some_and(|s| s.incarnation == client);
        if !known {
            self.send_unknown(sh, now, remote, mid, echo);
            return;
        }
        if let Some(s) = self.clients.get_mut(&from) {
            s.last_activity = now;
        }
        let keep_until = keep_until(&sh.config, now, patience_ms);
        self.extend(from, mid, keep_until, (echo, now));
        let state = self.clients.get(&from);
        match state.and_then(|s| s.entries.get(&mid)) {
            Some(Entry::Executing { .. }) => self.send_ack(sh, now, remote, mid, echo),
            Some(Entry::Replied { .. }) => self.resend_reply(sh, now, remote, mid, echo),
            Some(Entry::Done) => self.send_forgotten(sh, now, remote, mid, echo),
            None if state.is_some_and(|s| mid < s.low) => {
                self.send_forgotten(sh, now, remote, mid, echo)
            }
            None => self.send_unknown(sh, now, remote, mid, echo),
        }
    }

    /// A client's `ReplyAck`: frees the acknowledged replies and raises its
    /// watermark.
    pub(super) fn on_reply_ack(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        from: NodeId,
        (client, server): (Incarnation, Incarnation),
        mids: Vec<u64>,
        done_below: u64,
    ) {
        if server != sh.incarnation
            || mids.len() > MAX_ACKS
            || !self
                .clients
                .get(&from)
                .is_some_and(|s| s.incarnation == client)
        {
            sh.stats.drops.record_kind("stale_reply_ack");
            return;
        }
        if let Some(s) = self.clients.get_mut(&from) {
            s.last_activity = now;
        }
        for m in mids {
            self.mark_done(from, m);
        }
        self.raise_low(sh, from, done_below);
    }

    /// The SWEEP timer: expires saved replies and silent clients' tables.
    pub(super) fn on_sweep(&mut self, sh: &mut Shared, now: Instant) {
        while let Some(&(at, n, m)) = self.saved_index.first() {
            if at > now {
                break;
            }
            sh.stats.saved_replies_expired += 1;
            self.mark_done(n, m);
            self.saved_index.remove(&(at, n, m));
        }
        let client_retention = sh.config.client_retention;
        let idle: Vec<NodeId> = self
            .clients
            .iter()
            .filter(|(_, s)| {
                now - s.last_activity >= client_retention
                    && !s
                        .entries
                        .values()
                        .any(|e| matches!(e, Entry::Executing { .. }))
            })
            .map(|(n, _)| *n)
            .collect();
        for n in idle {
            sh.stats.clients_expired += 1;
            self.drop_client(sh, n);
        }
        if !self.clients.is_empty() {
            sh.timers
                .set(TimerKey::Sweep, now + sweep_interval(&sh.config));
        }
    }

    /// BLAST acknowledged the whole message `blast_mid`: if it is a reply
    /// to a client still in the same life, that is as good as its ack.
    /// Returns false if it is not one of this side's replies.
    pub(super) fn on_transfer_acked(&mut self, blast_mid: u64) -> bool {
        let Some((node, inc, call)) = self.transfers.remove(&blast_mid) else {
            return false;
        };
        if self
            .clients
            .get(&node)
            .is_some_and(|s| s.incarnation == inc)
        {
            self.clear_reply_transfer(node, call);
            self.mark_done(node, call);
        }
        true
    }

    /// BLAST gave up on the message `blast_mid`. Returns false if it is not
    /// one of this side's replies.
    pub(super) fn on_transfer_abandoned(&mut self, blast_mid: u64) -> bool {
        let Some((node, _, call)) = self.transfers.remove(&blast_mid) else {
            return false;
        };
        self.clear_reply_transfer(node, call);
        true
    }

    fn clear_reply_transfer(&mut self, node: NodeId, mid: u64) {
        if let Some(Entry::Replied { transfer, .. }) = self
            .clients
            .get_mut(&node)
            .and_then(|s| s.entries.get_mut(&mid))
        {
            *transfer = None;
        }
    }
}

/// Until when a reply asked for now with `patience_ms` must be kept.
fn keep_until(config: &ChanConfig, now: Instant, patience_ms: u32) -> Instant {
    let patience = Duration::from_millis(u64::from(patience_ms))
        .min(config.max_reply_retention)
        .max(config.reply_retention);
    now + patience
}

/// The SWEEP period.
fn sweep_interval(config: &ChanConfig) -> Duration {
    (config.reply_retention.min(config.client_retention) / 4).max(Duration::from_millis(10))
}
