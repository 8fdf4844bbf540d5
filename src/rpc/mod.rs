//! The RPC layer: BLAST, CHAN and SELECT (seed 004, section 5.3) composed
//! into one sans-IO endpoint, [`Rpc`] (DESIGN.md section 4, "rpc").
//!
//! - [`blast`]: fragmentation, reassembly, selective retransmission;
//! - [`chan`]: request/reply with at-most-once execution, incarnations as
//!   boot ids, probes, adaptive retransmission;
//! - [`select`]: dispatch by procedure number.
//!
//! On top, [`Rpc::call`] is the thesis's `reliable_link` (one call, one
//! completion) and [`Rpc::call_all`] its `rel_mlink` (the same request to a
//! set of nodes; the replies and the nodes that never answered).
//!
//! [`Rpc`] implements [`Core`]: every datagram it sends uses
//! [`ProtocolId::Rpc`] and a body of at most [`wire::MAX_BODY`] bytes, the
//! bincode encoding of a [`blast::BlastPacket`]; CHAN's [`chan::ChanMessage`]
//! travels inside BLAST messages and is decoded with
//! [`wire::decode_message`] after reassembly.
//!
//! Guarantees: every call ends in exactly one [`RpcEvent::CallCompleted`]
//! (or, for the calls of a `call_all`, one [`RpcEvent::CallAllCompleted`]
//! for the set); a handler runs at most once per call, also across server
//! restarts; no timer lacks a retry count and a give-up; no input panics
//! and every table is bounded (see the configs).

pub mod blast;
mod bytes;
pub mod chan;
pub mod select;
mod timers;

#[cfg(test)]
mod tests;

pub use blast::{BlastConfig, BlastEvent, BlastPacket, BlastStats, Fragment, Srr};
pub use bytes::Bytes;
pub use chan::{
    CallError, CallId, CallOptions, ChanConfig, ChanMessage, ChanStats, Outcome, Request,
    RequestToken, RttEstimator,
};
pub use select::{Handler, HandlerResult, Procedure, RequestContext, SelectStats};

use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire::{self, DropCounters};
use chan::{Chan, ChanEvent};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use select::{Dispatch, Select};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// RPC settings: BLAST's and CHAN's (defaults documented field by field in
/// [`BlastConfig`] and [`ChanConfig`]; in short: 1300-byte fragments, a
/// window of 128, LAST_FRAG 50 ms, RETRY 100 ms × 3, POLL 200 ms, DONE 2 s,
/// initial RTO 100 ms clamped to 5 ms..2 s, 5 retries, 30 s call timeout,
/// probes every 1 s, 4 MiB messages).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpcConfig {
    /// The BLAST layer.
    pub blast: BlastConfig,
    /// The CHAN layer.
    pub chan: ChanConfig,
}

/// A `call_all`, as returned by [`Rpc::call_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallAllId(pub u64);

/// What the RPC endpoint reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcEvent {
    /// A call from [`Rpc::call`] ended.
    CallCompleted {
        /// The call.
        id: CallId,
        /// The server.
        node: NodeId,
        /// The reply, or why there is none.
        result: Result<Vec<u8>, CallError>,
    },
    /// Every call of a [`Rpc::call_all`] ended.
    CallAllCompleted {
        /// The set.
        id: CallAllId,
        /// The nodes that replied, with their replies (by node order).
        replies: Vec<(NodeId, Vec<u8>)>,
        /// The nodes that did not reply (the thesis's non-responders, for
        /// the fail list): every node in `errors`, by node order.
        unanswered: Vec<NodeId>,
        /// Why each of those did not reply.
        errors: Vec<(NodeId, CallError)>,
    },
    /// A request for a deferred handler; answer with [`Rpc::respond`].
    Request {
        /// Pass to [`Rpc::respond`].
        token: RequestToken,
        /// The caller.
        from: NodeId,
        /// The caller's incarnation.
        from_incarnation: Incarnation,
        /// The procedure.
        procedure: Procedure,
        /// The argument.
        body: Vec<u8>,
    },
}

/// All RPC counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpcStats {
    /// BLAST (fragments, SRRs, reassemblies, drops).
    pub blast: BlastStats,
    /// CHAN (calls, retransmissions, executions, duplicates, drops).
    pub chan: ChanStats,
    /// SELECT (dispatches).
    pub select: SelectStats,
    /// `call_all`s started.
    pub call_alls: u64,
    /// Packets dropped by the endpoint itself (e.g. wrong protocol).
    pub drops: DropCounters,
}

impl RpcStats {
    /// Dropped packets and messages of every layer.
    pub fn dropped_total(&self) -> u64 {
        self.blast.drops.total() + self.chan.drops.total() + self.drops.total()
    }
}

#[derive(Debug, Default)]
struct Group {
    pending: BTreeSet<CallId>,
    replies: BTreeMap<NodeId, Vec<u8>>,
    errors: BTreeMap<NodeId, CallError>,
}

/// The RPC endpoint of one node: BLAST, CHAN and SELECT composed.
///
/// Drive it through [`Core`]; issue calls with [`Rpc::call`] and
/// [`Rpc::call_all`]; serve with [`Rpc::register`] (and [`Rpc::respond`]
/// for deferred handlers).
#[derive(Debug)]
pub struct Rpc {
    node: NodeId,
    incarnation: Incarnation,
    chan: Chan,
    select: Select,
    groups: BTreeMap<CallAllId, Group>,
    group_of: BTreeMap<CallId, CallAllId>,
    next_group: u64,
    call_alls: u64,
    events: VecDeque<RpcEvent>,
    drops: DropCounters,
}

impl Rpc {
    /// The endpoint of `node` in its life `incarnation`. `seed` seeds the
    /// RNG that draws the initial message ids (the only randomness).
    pub fn new(node: NodeId, incarnation: Incarnation, config: RpcConfig, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // 32 random bits: ids differ between lives, and 2^64 - 2^32 ids
        // remain before a wrap.
        let mid = u64::from(rng.random::<u32>());
        let blast_mid = u64::from(rng.random::<u32>());
        Rpc {
            node,
            incarnation,
            chan: Chan::new(incarnation, config.chan, config.blast, mid, blast_mid),
            select: Select::new(),
            groups: BTreeMap::new(),
            group_of: BTreeMap::new(),
            next_group: 1,
            call_alls: 0,
            events: VecDeque::new(),
            drops: DropCounters::default(),
        }
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The effective (clamped) configuration.
    pub fn config(&self) -> RpcConfig {
        RpcConfig {
            blast: self.chan.blast().config().clone(),
            chan: self.chan.config().clone(),
        }
    }

    /// Registers `handler` for `procedure`, returning the one it replaces.
    pub fn register(
        &mut self,
        procedure: impl Into<Procedure>,
        handler: impl FnMut(&RequestContext, &[u8]) -> HandlerResult + 'static,
    ) -> Option<Handler> {
        self.select.register(procedure.into(), Box::new(handler))
    }

    /// Removes the handler of `procedure`.
    pub fn unregister(&mut self, procedure: impl Into<Procedure>) -> Option<Handler> {
        self.select.unregister(procedure.into())
    }

    /// Calls `procedure` on `node` with `body`. Exactly one
    /// [`RpcEvent::CallCompleted`] with this id follows.
    pub fn call(
        &mut self,
        now: Instant,
        node: NodeId,
        procedure: impl Into<Procedure>,
        body: Vec<u8>,
        options: CallOptions,
    ) -> CallId {
        let id = self.chan.call(now, node, procedure.into().0, body, options);
        self.pump(now);
        id
    }

    /// Calls `procedure` with `body` on every node of `nodes` (duplicates
    /// ignored). Exactly one [`RpcEvent::CallAllCompleted`] with this id
    /// follows, once every node has replied or failed (at once for an empty
    /// set).
    pub fn call_all(
        &mut self,
        now: Instant,
        nodes: impl IntoIterator<Item = NodeId>,
        procedure: impl Into<Procedure>,
        body: Vec<u8>,
        options: CallOptions,
    ) -> CallAllId {
        let procedure = procedure.into();
        let id = CallAllId(self.next_group);
        self.next_group += 1;
        self.call_alls += 1;
        let nodes: BTreeSet<NodeId> = nodes.into_iter().collect();
        self.groups.insert(id, Group::default());
        for node in nodes {
            let call = self
                .chan
                .call(now, node, procedure.0, body.clone(), options);
            self.group_of.insert(call, id);
            if let Some(g) = self.groups.get_mut(&id) {
                g.pending.insert(call);
            }
        }
        self.pump(now);
        self.maybe_finish_group(id);
        id
    }

    /// Answers the deferred request `token` with `body`. Returns whether the
    /// token was pending.
    pub fn respond(&mut self, now: Instant, token: RequestToken, body: Vec<u8>) -> bool {
        let r = self.chan.respond(now, token, Outcome::Ok(Bytes(body)));
        self.pump(now);
        r
    }

    /// Records `node`'s incarnation, learnt elsewhere, to save the
    /// first-contact round trip (see [`chan`]).
    pub fn learn_incarnation(&mut self, now: Instant, node: NodeId, incarnation: Incarnation) {
        self.chan.learn_incarnation(now, node, incarnation);
        self.pump(now);
    }

    /// The incarnation of `node` this endpoint believes current.
    pub fn known_incarnation(&self, node: NodeId) -> Option<Incarnation> {
        self.chan.known_incarnation(node)
    }

    /// Cancels a call: it completes with [`CallError::Cancelled`] (in its
    /// `call_all`, if it belongs to one). Returns whether it was pending.
    pub fn cancel(&mut self, call: CallId) -> bool {
        let r = self.chan.cancel(call);
        self.pump(Instant::ZERO);
        r
    }

    /// Cancels every pending call of a `call_all`; it completes with those
    /// as [`CallError::Cancelled`]. Returns whether it was pending.
    pub fn cancel_all(&mut self, id: CallAllId) -> bool {
        let Some(g) = self.groups.get(&id) else {
            return false;
        };
        let pending: Vec<CallId> = g.pending.iter().copied().collect();
        for call in pending {
            self.chan.cancel(call);
        }
        self.pump(Instant::ZERO);
        true
    }

    /// The current retransmission timeout towards `node` (before back-off).
    pub fn rto(&self, node: NodeId) -> std::time::Duration {
        self.chan.rto(node)
    }

    /// Calls pending (including those of `call_all`s).
    pub fn pending_calls(&self) -> usize {
        self.chan.pending_calls()
    }

    /// Deferred requests not yet answered.
    pub fn pending_requests(&self) -> usize {
        self.chan.executing()
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> RpcStats {
        RpcStats {
            blast: self.chan.blast().stats().clone(),
            chan: self.chan.stats().clone(),
            select: self.select.stats().clone(),
            call_alls: self.call_alls,
            drops: self.drops.clone(),
        }
    }

    /// Processes CHAN's events: runs handlers, completes calls and groups.
    /// `now` is only used to answer requests (cancellation passes zero, and
    /// cancellation produces no requests).
    fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.chan.poll_event() {
            match ev {
                ChanEvent::Execute {
                    token,
                    from,
                    from_incarnation,
                    procedure,
                    body,
                } => {
                    let ctx = RequestContext {
                        from,
                        from_incarnation,
                        procedure: Procedure(procedure),
                        now,
                    };
                    match self.select.dispatch(&ctx, &body) {
                        Dispatch::Reply(reply) => {
                            self.chan.respond(now, token, Outcome::Ok(Bytes(reply)));
                        }
                        Dispatch::NoSuchProcedure => {
                            self.chan.respond(now, token, Outcome::NoSuchProcedure);
                        }
                        Dispatch::Deferred => {
                            self.chan.acknowledge(now, token);
                            self.events.push_back(RpcEvent::Request {
                                token,
                                from,
                                from_incarnation,
                                procedure: Procedure(procedure),
                                body,
                            });
                        }
                    }
                }
                ChanEvent::Completed { id, node, result } => match self.group_of.remove(&id) {
                    Some(gid) => {
                        if let Some(g) = self.groups.get_mut(&gid) {
                            g.pending.remove(&id);
                            match result {
                                Ok(r) => {
                                    g.replies.insert(node, r);
                                }
                                Err(e) => {
                                    g.errors.insert(node, e);
                                }
                            }
                        }
                        self.maybe_finish_group(gid);
                    }
                    None => self
                        .events
                        .push_back(RpcEvent::CallCompleted { id, node, result }),
                },
            }
        }
    }

    fn maybe_finish_group(&mut self, id: CallAllId) {
        if !self.groups.get(&id).is_some_and(|g| g.pending.is_empty()) {
            return;
        }
        let Some(g) = self.groups.remove(&id) else {
            return;
        };
        self.events.push_back(RpcEvent::CallAllCompleted {
            id,
            replies: g.replies.into_iter().collect(),
            unanswered: g.errors.keys().copied().collect(),
            errors: g.errors.into_iter().collect(),
        });
    }
}

impl Core for Rpc {
    type Event = RpcEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        if packet.protocol != ProtocolId::Rpc {
            self.drops.record_kind("wrong_protocol");
            return;
        }
        if packet.body.len() > wire::MAX_BODY {
            self.drops.record_kind("oversized_body");
            return;
        }
        self.chan.handle_packet(now, packet);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.chan.handle_timeout(now);
        self.pump(now);
    }

    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        self.chan.handle_unreachable(now, node);
        self.pump(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.chan.poll_transmit()
    }

    fn poll_event(&mut self) -> Option<RpcEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.chan.poll_timeout()
    }
}
