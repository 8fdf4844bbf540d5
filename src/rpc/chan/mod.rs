//! CHAN: request/reply with at-most-once execution (seed 004, section
//! 5.3.2), over [`Blast`], with the adaptive retransmission timeout of
//! section 5.2.6 (Jacobson/Karels), its samples made unambiguous by echoed
//! attempt numbers (the idea of TCP's timestamps, RFC 7323) instead of
//! Karn/Partridge's rule.
//!
//! Every CHAN message ([`ChanMessage`]) travels as one BLAST message; small
//! ones are a single fragment. The book's fields map as follows:
//!
//! - **MID**: a per-endpoint 64-bit call id (`mid`), starting at a value
//!   drawn from the injected RNG; the reply carries the request's `mid`.
//! - **BID** (boot id): the [`Incarnation`] of each side. The request names
//!   the client's incarnation *and the server incarnation the client
//!   expects*; the server executes only requests addressed to its current
//!   incarnation. On first contact the client does not know it, so it sends
//!   a small [`ChanMessage::Hello`] and the server answers
//!   [`ChanMessage::Iam`] without executing anything (one extra round trip
//!   per peer, skipped by [`Chan::learn_incarnation`]). A call keeps the
//!   incarnation it was first sent to for its whole life; a request that
//!   reaches a different (restarted) server is answered
//!   [`ChanMessage::Restarted`] and the call fails with
//!   [`CallError::PeerRestarted`]. So a handler runs at most once per call,
//!   even across server restarts.
//! - **CID** (channel): not needed. Concurrent calls to one server are
//!   distinguished by `mid`; the book's "one transaction per channel" is
//!   replaced by a per-client duplicate table on the server.
//! - **ACK**: implicit (the reply acknowledges the request, and the next
//!   request, through `acks` and `done_below`, acknowledges earlier
//!   replies); explicit [`ChanMessage::Ack`] from the server when a request
//!   is deferred, repeated, or probed while running; explicit
//!   [`ChanMessage::ReplyAck`] from the client after [`ChanConfig::ack_delay`]
//!   when no request is going that way to carry it.
//! - **PROBE**: once the request is acknowledged, the client sends
//!   [`ChanMessage::Probe`] every [`ChanConfig::probe_interval`]; the server
//!   answers `Ack` while the handler runs, the saved reply when it has one,
//!   [`ChanMessage::Unknown`] if it never got the request (the client then
//!   resends it) and [`ChanMessage::Forgotten`] if it executed the call but
//!   no longer holds the reply.
//!
//! At-most-once on the server: per client node (and only its newest
//! incarnation: requests from an older one are dropped), a watermark `low`
//! below which every call is finished, and a table of the calls at or above
//! it: running (deferred), replied (saved reply), or done (reply freed, id
//! kept). A request is executed only if its id is in neither. The watermark
//! rises with the client's `done_below` (the smallest id it still waits
//! for) and when the table exceeds its bound. Saved replies are freed when
//! acknowledged, when they expire, or when over the per-client or total
//! bounds (soonest to expire first); the id stays as "done". A saved reply
//! expires [`ChanConfig::reply_retention`] after it was sent or last asked
//! for, or later if the client's *patience* (carried by every request and
//! probe: how much longer the call may go on, at most
//! [`ChanConfig::max_reply_retention`]) says it may still ask: so a live
//! client never finds its reply gone unless memory bounds forced it. A
//! client's whole table is dropped only after [`ChanConfig::client_retention`]
//! of silence, which assumes no datagram survives in the network that long
//! (the book assumes 60 s; the default is 120 s).
//!
//! Timers (every one with a count and a give-up): the client's RETRANSMIT
//! timer (for `Hello` and single-fragment requests) starts at the peer's RTO
//! and doubles per retransmission (exponential back-off) up to
//! [`ChanConfig::max_rto`]; after `max_retries` unanswered retransmissions
//! the call fails with [`CallError::Timeout`]. Multi-fragment requests are
//! not retransmitted while BLAST still moves them: BLAST's acknowledgement
//! counts as CHAN's ACK; its DONE give-up sends a probe. The PROBE timer has
//! the same retry count and back-off. Every call also has an overall
//! deadline.
//!
//! RTT samples: every transmission of a `Hello`, a single-fragment request
//! or a probe carries a fresh per-call `attempt` number, and every answer
//! echoes the attempt it answers (see [`ChanMessage`]); the client keeps the
//! send times of its last [`SENT_HISTORY`] attempts per call and takes the
//! sample `now − sent_at[echo]` from the first answer to each, whether it
//! was a first transmission or a retransmission. So Karn's ambiguity is
//! gone and samples keep coming through loss streaks, as a Reply answered
//! from the server's duplicate cache echoes the retransmission that asked
//! for it. An answer echoing an attempt never sent, one too old to be kept,
//! or one already answered is no sample. Answers that do not answer a
//! transmission at once echo 0 and are no samples: a deferred handler's
//! reply (the handler's time is no part of the round trip) and a
//! multi-fragment reply or request (the transfer time is not either; the
//! server sends an `Ack` carrying the echo ahead of a multi-fragment reply).
//!
//! Back-off memory: retransmissions raise the peer's back-off (the RTO's
//! doublings), and any valid sample clears it. A new call, and a new phase
//! of a call (the request after `Iam`, probing after `Ack`), inherits at most
//! [`ChanConfig::max_inherited_backoff`] doublings of it (default 2, so at
//! most 4 × the base RTO) and doubles from there on each retransmission.
//! With the default `max_rto` of 2 s this bounds what one loss streak costs
//! the calls after it: on a LAN a lost first transmission costs a few base
//! RTOs, not the seconds that an unbounded remembered back-off would, while
//! a dead or congested peer still sees exponentially fewer retransmissions.
//!
//! The module follows those seams:
//!
//! - [`message`]: the [`ChanMessage`]s and their limits;
//! - [`config`]: [`ChanConfig`] and a call's [`CallOptions`];
//! - [`rtt`]: the Jacobson/Karels estimator ([`RttEstimator`]) and the
//!   per-peer RTO with back-off;
//! - `client`: the calls this endpoint makes (RETRANSMIT, PROBE, ACK
//!   delay, unreachable reports);
//! - `server`: at-most-once execution, duplicate tables and saved replies;
//! - this file: [`Chan`], which composes the client and the server over one
//!   [`Blast`] and routes what arrives to the side it is for.

pub mod config;
pub mod message;
pub mod rtt;

mod client;
mod server;
mod shared;

pub use client::SENT_HISTORY;
pub use config::{CallOptions, ChanConfig};
pub use message::{ChanMessage, Outcome, Request, MAX_ACKS, MESSAGE_OVERHEAD};
pub use rtt::RttEstimator;
pub use shared::{CallError, CallId, ChanEvent, ChanStats, RequestToken};

use super::blast::{Blast, BlastConfig, BlastEvent};
use super::timers::Timers;
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire;
use client::Client;
use server::{ProbeIn, Remote, Server};
use shared::{Shared, TimerKey};
use std::collections::VecDeque;
use std::time::Duration;

/// The CHAN core: client and server sides of request/reply, over its own
/// [`Blast`]. It implements [`Core`] (datagrams in and out); the layer
/// above executes [`ChanEvent::Execute`] and calls [`Chan::respond`].
#[derive(Debug)]
pub struct Chan {
    shared: Shared,
    client: Client,
    server: Server,
}

impl Chan {
    /// A CHAN endpoint for this node's `incarnation`, over a BLAST layer
    /// configured by `blast`. `initial_mid` and `initial_blast_mid` seed the
    /// id counters (from the owner's RNG).
    pub fn new(
        incarnation: Incarnation,
        config: ChanConfig,
        blast: BlastConfig,
        initial_mid: u64,
        initial_blast_mid: u64,
    ) -> Self {
        let mut config = config;
        config.min_rto = config.min_rto.max(Duration::from_micros(100));
        config.max_rto = config.max_rto.max(config.min_rto);
        config.initial_rto = config.initial_rto.clamp(config.min_rto, config.max_rto);
        config.probe_interval = config.probe_interval.max(Duration::from_millis(1));
        config.max_clients = config.max_clients.max(1);
        config.max_saved_replies_per_client = config.max_saved_replies_per_client.max(1);
        config.max_done_per_client = config.max_done_per_client.max(1);
        config.max_executing = config.max_executing.max(1);
        config.max_peers = config.max_peers.max(1);
        let blast = Blast::new(incarnation, blast, initial_blast_mid);
        Chan {
            shared: Shared {
                incarnation,
                config,
                blast,
                timers: Timers::default(),
                events: VecDeque::new(),
                stats: ChanStats::default(),
            },
            client: Client::new(initial_mid),
            server: Server::new(),
        }
    }

    /// This endpoint's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.shared.incarnation
    }

    /// The (sanitized) configuration.
    pub fn config(&self) -> &ChanConfig {
        &self.shared.config
    }

    /// CHAN counters.
    pub fn stats(&self) -> &ChanStats {
        &self.shared.stats
    }

    /// The BLAST layer (for its counters).
    pub fn blast(&self) -> &Blast {
        &self.shared.blast
    }

    /// Calls still pending.
    pub fn pending_calls(&self) -> usize {
        self.client.pending_calls()
    }

    /// Requests handed up and not yet answered.
    pub fn executing(&self) -> usize {
        self.server.executing()
    }

    /// Bytes of saved replies.
    pub fn saved_reply_bytes(&self) -> usize {
        self.server.saved_reply_bytes()
    }

    /// The current retransmission timeout towards `node` (before back-off).
    pub fn rto(&self, node: NodeId) -> Duration {
        self.client.rto(&self.shared.config, node)
    }

    /// The RTT estimator of `node`, if it is in the peer table.
    pub fn rtt(&self, node: NodeId) -> Option<&RttEstimator> {
        self.client.rtt(node)
    }

    /// The back-off (doublings of the RTO) remembered for `node` since its
    /// last valid RTT sample, if it is in the peer table. A new call
    /// inherits at most [`ChanConfig::max_inherited_backoff`] of it.
    pub fn backoff(&self, node: NodeId) -> Option<u32> {
        self.client.backoff(node)
    }

    /// The first retransmission timeout a new call to `node` would use: the
    /// RTO with the inherited part of the peer's back-off.
    pub fn initial_call_rto(&self, node: NodeId) -> Duration {
        self.client.initial_call_rto(&self.shared.config, node)
    }

    /// The incarnation of `node` this side believes current.
    pub fn known_incarnation(&self, node: NodeId) -> Option<Incarnation> {
        self.client.known_incarnation(node)
    }

    /// `node` as the server side answers it: with our own round-trip
    /// estimate to it if we call it too (see [`Remote`]).
    fn remote(&self, node: NodeId) -> Remote {
        Remote {
            node,
            our_rtt: self.client.rtt_hint(&self.shared.config, node),
        }
    }

    /// Starts a call of `procedure` on `node`. Exactly one
    /// [`ChanEvent::Completed`] follows (possibly at once, e.g. for
    /// [`CallError::TooLarge`]).
    pub fn call(
        &mut self,
        now: Instant,
        node: NodeId,
        procedure: u16,
        body: Vec<u8>,
        options: CallOptions,
    ) -> CallId {
        self.client
            .call(&mut self.shared, now, node, procedure, body, options)
    }

    /// Ends call `id` with [`CallError::Cancelled`]. Returns whether it was
    /// pending.
    pub fn cancel(&mut self, id: CallId) -> bool {
        self.client.cancel(&mut self.shared, id)
    }

    /// Records that `node` runs `incarnation` (learnt by another layer), so
    /// calls to it skip the `Hello` round trip. A newer incarnation than the
    /// one known fails the calls pinned to the old one with
    /// [`CallError::PeerRestarted`]; an older one is ignored.
    pub fn learn_incarnation(&mut self, now: Instant, node: NodeId, incarnation: Incarnation) {
        self.client
            .learn_incarnation(&mut self.shared, now, node, incarnation);
    }

    /// Tells the client of `token` that its request runs (so it stops
    /// retransmitting and starts probing). Returns whether the token is
    /// pending.
    pub fn acknowledge(&mut self, now: Instant, token: RequestToken) -> bool {
        let our_rtt = self.token_rtt(token);
        self.server
            .acknowledge(&mut self.shared, our_rtt, now, token)
    }

    /// Answers request `token`. Returns whether the token was pending (a
    /// token answers once).
    pub fn respond(&mut self, now: Instant, token: RequestToken, outcome: Outcome) -> bool {
        let our_rtt = self.token_rtt(token);
        self.server
            .respond(&mut self.shared, our_rtt, now, token, outcome)
    }

    /// Our own round-trip estimate to the client of `token`, if we call it.
    fn token_rtt(&self, token: RequestToken) -> Option<Duration> {
        self.server
            .token_node(token)
            .and_then(|node| self.client.rtt_hint(&self.shared.config, node))
    }

    /// The host reported `node` unreachable: retransmit to it once at once;
    /// a second report before any answer fails its calls with
    /// [`CallError::Unreachable`].
    pub fn unreachable(&mut self, now: Instant, node: NodeId) {
        self.client.unreachable(&mut self.shared, now, node);
    }

    // ---------------------------------------------------------------- input

    /// A whole CHAN message from `from`: requests, probes, `Hello`s and
    /// `ReplyAck`s go to the server side, answers to the client side.
    fn on_message(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        let msg = match wire::decode_message::<ChanMessage>(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.shared.stats.drops.record_kind("malformed_message");
                return;
            }
        };
        self.client.heard_from(from);
        match msg {
            ChanMessage::Hello { nonce, attempt } => {
                let remote = self.remote(from);
                self.server
                    .on_hello(&mut self.shared, now, remote, nonce, attempt);
            }
            ChanMessage::Request(req) => {
                let remote = self.remote(from);
                self.server.on_request(&mut self.shared, now, remote, req);
            }
            ChanMessage::Probe {
                mid,
                client,
                server,
                patience_ms,
                attempt,
            } => {
                let remote = self.remote(from);
                self.server.on_probe(
                    &mut self.shared,
                    now,
                    remote,
                    ProbeIn {
                        mid,
                        client,
                        server,
                        patience_ms,
                        attempt,
                    },
                );
            }
            ChanMessage::ReplyAck {
                client,
                server,
                mids,
                done_below,
            } => self.server.on_reply_ack(
                &mut self.shared,
                now,
                from,
                (client, server),
                mids,
                done_below,
            ),
            other => self.client.on_message(&mut self.shared, now, from, other),
        }
    }

    fn on_blast_event(&mut self, now: Instant, ev: BlastEvent) {
        match ev {
            BlastEvent::Delivered { from, message, .. } => self.on_message(now, from, &message),
            BlastEvent::Acked { mid, .. } => {
                if !self.client.on_transfer_acked(&mut self.shared, now, mid) {
                    self.server.on_transfer_acked(mid);
                }
            }
            BlastEvent::Abandoned { mid, .. } => {
                if !self
                    .client
                    .on_transfer_abandoned(&mut self.shared, now, mid)
                {
                    self.server.on_transfer_abandoned(mid);
                }
            }
        }
    }

    fn pump_blast(&mut self, now: Instant) {
        while let Some(ev) = self.shared.blast.poll_event() {
            self.on_blast_event(now, ev);
        }
    }
}

impl Core for Chan {
    type Event = ChanEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        if packet.protocol != ProtocolId::Rpc {
            self.shared.stats.drops.record_kind("wrong_protocol");
            return;
        }
        self.shared.blast.handle_packet(now, packet);
        self.pump_blast(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.shared.blast.handle_timeout(now);
        self.pump_blast(now);
        while let Some(key) = self.shared.timers.pop_due(now) {
            let sh = &mut self.shared;
            match key {
                TimerKey::Call(mid) => self.client.on_call_timer(sh, now, mid),
                TimerKey::AckFlush(node) => self.client.flush_acks(sh, now, node),
                TimerKey::Sweep => self.server.on_sweep(sh, now),
            }
            self.pump_blast(now);
        }
    }

    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        self.unreachable(now, node);
        self.pump_blast(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.shared.blast.poll_transmit()
    }

    fn poll_event(&mut self) -> Option<ChanEvent> {
        self.shared.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        crate::time::earliest(self.shared.timers.next(), self.shared.blast.poll_timeout())
    }
}
