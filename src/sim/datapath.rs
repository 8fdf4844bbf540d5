//! The simulator's datapath: how a datagram gets from one core to another.
//!
//! After every input the sending core is drained (`after_input`): its
//! transmits are sealed with its [`WireCodec`](crate::wire::WireCodec) and
//! routed (to every member of a multicast group but the sender, or to one
//! destination or next hop), each copy through the network faults
//! (partitions, one-way blocks, clogs) and its link's model (loss,
//! duplication, latency with jitter, reordering, corruption, truncation;
//! [`LinkConfig`]). A copy that gets through becomes a delivery in the event
//! queue (`Ev`, `Scheduled`: one heap of every timed event, ordered by
//! virtual time and insertion sequence); at its time it is checked against
//! the faults again, held by a clog, queued in a paused node's socket
//! buffer, answered with "port unreachable" where nothing listens, or opened
//! by the receiver's codec and handed to its core. The public network
//! controls (groups, links, partitions, blocks, clogs) live here too, each
//! mixed into the trace.

use super::net::{self, is_group, LinkConfig};
use super::node::{Buffered, NodeStats, UNREACHABLE_COST};
use super::trace::node_bytes;
use super::{Fault, Simulator};
use crate::id::{Incarnation, NodeId};
use crate::sansio::{Core, Incoming};
use crate::time::Instant;
use crate::wire::Header;
use std::cmp::Ordering;
use std::time::Duration;

/// What happens at one point of virtual time.
pub(super) enum Ev {
    /// A datagram (maybe mangled) arrives at `to`.
    Deliver {
        from: NodeId,
        to: NodeId,
        bytes: Vec<u8>,
        unicast: bool,
    },
    /// A "port unreachable" report about `dest` arrives at `to`.
    Unreachable { to: NodeId, dest: NodeId },
    /// The timer entry of `node`, valid while its generation is `gen`.
    Timer { node: NodeId, gen: u64 },
    /// A scheduled fault (boxed: keeps heap entries small).
    Fault(Box<Fault>),
    /// A scheduled user action (by id in `Simulator::actions`).
    Action(u64),
}

/// An event in the heap; ordered by (time, sequence), earliest first.
pub(super) struct Scheduled {
    pub(super) at: Instant,
    pub(super) seq: u64,
    pub(super) ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl<C: Core> Simulator<C> {
    // ----- network -------------------------------------------------------

    /// Makes `node` a member of the multicast group `group`.
    ///
    /// # Panics
    ///
    /// If `group` is not a multicast address.
    pub fn join_group(&mut self, node: NodeId, group: NodeId) {
        if !is_group(group) {
            self.fail(format!(
                "join_group({node}, {group}): not a multicast address"
            ));
        }
        self.net.join_group(node, group);
        self.note_net("join", &[node, group]);
    }

    /// Removes `node` from the multicast group `group`.
    pub fn leave_group(&mut self, node: NodeId, group: NodeId) {
        self.net.leave_group(node, group);
        self.note_net("leave", &[node, group]);
    }

    /// The members of `group`, in address order.
    pub fn group_members(&self, group: NodeId) -> Vec<NodeId> {
        self.net.group_members(group).collect()
    }

    /// Sets the link model of every pair without its own.
    ///
    /// # Panics
    ///
    /// If `link` is invalid.
    pub fn set_default_link(&mut self, link: LinkConfig) {
        if let Err(e) = link.validate() {
            self.fail(e);
        }
        self.trace
            .mix(&[b"net", b"default_link", format!("{link:?}").as_bytes()]);
        self.net.default_link = link;
    }

    /// Sets the model of the directed link `from -> to`.
    ///
    /// # Panics
    ///
    /// If `link` is invalid.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, link: LinkConfig) {
        if let Err(e) = link.validate() {
            self.fail(e);
        }
        self.trace.mix(&[
            b"net",
            b"link",
            &node_bytes(from),
            &node_bytes(to),
            format!("{link:?}").as_bytes(),
        ]);
        self.net.set_link(from, to, link);
    }

    /// Makes `from -> to` use the default model again.
    pub fn clear_link(&mut self, from: NodeId, to: NodeId) {
        self.net.clear_link(from, to);
        self.note_net("clear_link", &[from, to]);
    }

    /// Partitions the network into `sets`: two nodes can talk iff they are
    /// in the same set; the nodes no set lists form one more set together.
    /// Replaces any previous partition.
    ///
    /// # Panics
    ///
    /// If a node is listed in two sets.
    pub fn partition(&mut self, sets: &[Vec<NodeId>]) {
        if let Err(e) = self.net.partition(sets) {
            self.fail(e);
        }
        self.trace
            .mix(&[b"net", b"partition", format!("{sets:?}").as_bytes()]);
    }

    /// Drops every datagram from `from` to `to` (the other direction is
    /// untouched) until [`Simulator::heal`] or [`Simulator::unblock_one_way`].
    pub fn block_one_way(&mut self, from: NodeId, to: NodeId) {
        self.net.block_one_way(from, to);
        self.note_net("block", &[from, to]);
    }

    /// Removes the one-way block `from -> to`.
    pub fn unblock_one_way(&mut self, from: NodeId, to: NodeId) {
        self.net.unblock_one_way(from, to);
        self.note_net("unblock", &[from, to]);
    }

    /// Removes the partition, every one-way block and every clog. (Link
    /// models stay; reset them with [`Simulator::set_default_link`].)
    pub fn heal(&mut self) {
        self.net.heal();
        self.note_net("heal", &[]);
    }

    /// Holds all traffic into and out of `node` until `until`: datagrams
    /// are delayed, not dropped, and continue with their normal latency when
    /// the clog ends. A new clog of the same node replaces the old one.
    pub fn clog(&mut self, node: NodeId, until: Instant) {
        self.net.clog(node, until);
        self.note_net("clog", &[node]);
        self.trace
            .mix(&[b"until", &until.as_micros().to_be_bytes()]);
    }

    /// Ends the clog of `node` (datagrams already held keep the delivery
    /// time they were given).
    pub fn unclog(&mut self, node: NodeId) {
        self.net.unclog(node);
        self.note_net("unclog", &[node]);
    }

    /// Whether partitions and one-way blocks let datagrams from `from`
    /// reach `to` (link loss and clogs aside).
    pub fn can_reach(&self, from: NodeId, to: NodeId) -> bool {
        self.net.is_open(from, to)
    }

    /// Whether a partition is in force.
    pub fn is_partitioned(&self) -> bool {
        self.net.is_partitioned()
    }

    // ----- internals: the event queue ---------------------------------------

    /// Mixes a network change into the trace (and the readable tail).
    fn note_net(&mut self, what: &'static str, nodes: &[NodeId]) {
        let now = self.now;
        let mut record = Vec::with_capacity(nodes.len() * NodeId::WIRE_LEN);
        for n in nodes {
            record.extend_from_slice(&node_bytes(*n));
        }
        self.trace.mix(&[
            b"net",
            what.as_bytes(),
            &now.as_micros().to_be_bytes(),
            &record,
        ]);
        self.trace.line(now, || format!("{what} {nodes:?}"));
    }

    pub(super) fn push(&mut self, at: Instant, ev: Ev) {
        let seq = self.seq;
        self.seq += 1;
        let t = at.as_micros().to_be_bytes();
        let s = seq.to_be_bytes();
        match &ev {
            Ev::Deliver {
                from,
                to,
                bytes,
                unicast,
            } => self.trace.mix(&[
                b"D",
                &t,
                &s,
                &node_bytes(*from),
                &node_bytes(*to),
                &[u8::from(*unicast)],
                bytes,
            ]),
            Ev::Unreachable { to, dest } => {
                self.trace
                    .mix(&[b"U", &t, &s, &node_bytes(*to), &node_bytes(*dest)])
            }
            Ev::Timer { node, .. } => self.trace.mix(&[b"T", &t, &s, &node_bytes(*node)]),
            Ev::Fault(f) => self.trace.mix(&[b"F", &t, &s, format!("{f:?}").as_bytes()]),
            Ev::Action(id) => self.trace.mix(&[b"A", &t, &s, &id.to_be_bytes()]),
        }
        self.heap.push(Scheduled { at, seq, ev });
        self.max_heap_len = self.max_heap_len.max(self.heap.len());
    }

    /// Whether a heap entry is a timer entry that was cancelled or replaced.
    fn is_stale(&self, s: &Scheduled) -> bool {
        match s.ev {
            Ev::Timer { node, gen } => match self.nodes.get(&node) {
                Some(n) => n.timer.gen != gen || n.timer.entry != Some(s.at),
                None => true,
            },
            _ => false,
        }
    }

    pub(super) fn peek_live_time(&mut self) -> Option<Instant> {
        loop {
            let top = self.heap.peek()?;
            if !self.is_stale(top) {
                return Some(top.at);
            }
            self.heap.pop();
        }
    }

    pub(super) fn pop_live(&mut self) -> Option<Scheduled> {
        while let Some(s) = self.heap.pop() {
            if !self.is_stale(&s) {
                return Some(s);
            }
        }
        None
    }

    // ----- internals: datapath ----------------------------------------------

    fn stats_mut(&mut self, id: NodeId) -> &mut NodeStats {
        match self.nodes.get_mut(&id) {
            Some(n) => &mut n.stats,
            None => &mut self.unknown,
        }
    }

    /// Drains the core of `id` after an input: seals and sends its
    /// transmits, records its events, re-arms its timer.
    pub(super) fn after_input(&mut self, id: NodeId) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let mut transmits = Vec::new();
        while let Some(t) = core.poll_transmit() {
            transmits.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = core.poll_event() {
            events.push(e);
        }
        let deadline = core.poll_timeout();
        let incarnation = node.incarnation.unwrap_or(Incarnation::NIL);
        let mut sealed = Vec::with_capacity(transmits.len());
        for t in transmits {
            if t.sealed {
                // A forward (a relay): the bytes go out unchanged.
                node.stats.sent += 1;
                node.stats.sent_bytes += t.body.len() as u64;
                sealed.push((t.destination, t.body));
                continue;
            }
            let hop = t.next_hop();
            let header = Header {
                protocol: t.protocol,
                relayed: false,
                source: id,
                source_incarnation: incarnation,
                destination: t.destination,
            };
            let mut out = Vec::new();
            match node.codec.seal(&header, &t.body, &mut out) {
                Ok(()) => {
                    node.stats.sent += 1;
                    node.stats.sent_bytes += out.len() as u64;
                    sealed.push((hop, out));
                }
                Err(_) => node.stats.encode_errors += 1,
            }
        }
        if let Some(f) = &self.incarnation_of {
            // The core took a new incarnation: later datagrams carry it
            // (this batch was sealed before the driver saw the event, as
            // in the runtime).
            for e in &events {
                if let Some(inc) = f(e) {
                    node.incarnation = Some(inc);
                    let b = inc.to_bytes();
                    let mut ms = [0u8; 8];
                    ms[2..].copy_from_slice(&b[..6]);
                    let millis = u64::from_be_bytes(ms);
                    node.last_incarnation_millis =
                        Some(node.last_incarnation_millis.unwrap_or(0).max(millis));
                    self.trace.mix(&[b"inc", &node_bytes(id), &b]);
                }
            }
        }
        node.stats.events += events.len() as u64;
        for e in events {
            let text = format!("{e:?}");
            self.trace.mix(&[
                b"E",
                &now.as_micros().to_be_bytes(),
                &node_bytes(id),
                text.as_bytes(),
            ]);
            self.trace.line(now, || format!("event {id} {text}"));
            self.events.push((now, id, e));
        }
        for (dest, bytes) in sealed {
            self.route(id, dest, bytes);
        }
        self.arm_timer(id, deadline);
    }

    fn route(&mut self, from: NodeId, dest: NodeId, bytes: Vec<u8>) {
        if is_group(dest) {
            let members: Vec<NodeId> = self
                .net
                .group_members(dest)
                .filter(|m| *m != from)
                .collect();
            self.trace.line(self.now, || {
                format!("send {from} -> group {dest} {members:?}")
            });
            for m in members {
                self.send_copy(from, m, bytes.clone(), false);
            }
        } else {
            self.trace.line(self.now, || {
                format!("send {from} -> {dest} ({} bytes)", bytes.len())
            });
            self.send_copy(from, dest, bytes, true);
        }
    }

    /// Puts one datagram from `from` to `to` through faults and the link.
    fn send_copy(&mut self, from: NodeId, to: NodeId, bytes: Vec<u8>, unicast: bool) {
        let now = self.now;
        if !self.net.is_open(from, to) {
            self.stats_mut(to).partitioned += 1;
            return;
        }
        let link = self.net.link(from, to).clone();
        if net::chance(&mut self.rng, link.loss) {
            self.stats_mut(to).lost += 1;
            return;
        }
        let copies = if net::chance(&mut self.rng, link.duplicate) {
            self.stats_mut(to).duplicated += 1;
            2
        } else {
            1
        };
        let depart = match self.net.clogged_until(from, now) {
            Some(until) => {
                self.stats_mut(from).clog_held += 1;
                until
            }
            None => now,
        };
        let mut original = Some(bytes);
        for i in 0..copies {
            let mut b = if i + 1 == copies {
                original.take().unwrap_or_default()
            } else {
                original.clone().unwrap_or_default()
            };
            let mut delay = net::uniform(&mut self.rng, link.latency_min, link.latency_max);
            if net::chance(&mut self.rng, link.reorder) {
                delay += net::uniform(&mut self.rng, Duration::ZERO, link.reorder_delay);
                self.stats_mut(to).reordered += 1;
            }
            if net::chance(&mut self.rng, link.corrupt) {
                net::corrupt(&mut self.rng, &mut b);
                self.stats_mut(to).corrupted += 1;
            }
            if net::chance(&mut self.rng, link.truncate) {
                net::truncate(&mut self.rng, &mut b);
                self.stats_mut(to).truncated += 1;
            }
            self.in_flight += 1;
            self.push(
                depart + delay,
                Ev::Deliver {
                    from,
                    to,
                    bytes: b,
                    unicast,
                },
            );
        }
    }

    pub(super) fn on_deliver(&mut self, from: NodeId, to: NodeId, bytes: Vec<u8>, unicast: bool) {
        let now = self.now;
        self.in_flight -= 1;
        if !self.net.is_open(from, to) {
            self.stats_mut(to).partitioned += 1;
            self.trace
                .line(now, || format!("partitioned {from} -> {to}"));
            return;
        }
        if let Some(until) = self.net.clogged_until(to, now) {
            self.stats_mut(to).clog_held += 1;
            self.in_flight += 1;
            self.push(
                until,
                Ev::Deliver {
                    from,
                    to,
                    bytes,
                    unicast,
                },
            );
            return;
        }
        match self.nodes.get(&to).map(|n| (n.is_up(), n.paused)) {
            Some((true, false)) => self.deliver_now(to, from, &bytes),
            Some((true, true)) => {
                let cost = bytes.len();
                self.buffer(to, Buffered::Datagram(from, bytes), cost);
            }
            None | Some((false, _)) => {
                self.stats_mut(to).vanished += 1;
                self.trace.line(now, || format!("vanished {from} -> {to}"));
                if unicast && self.config.unreachable {
                    self.stats_mut(to).unreachable_generated += 1;
                    let link = self.net.link(to, from);
                    let (min, max) = (link.latency_min, link.latency_max);
                    let delay = net::uniform(&mut self.rng, min, max);
                    self.in_flight += 1;
                    self.push(now + delay, Ev::Unreachable { to: from, dest: to });
                }
            }
        }
    }

    pub(super) fn on_unreachable(&mut self, to: NodeId, dest: NodeId) {
        let now = self.now;
        self.in_flight -= 1;
        if !self.net.is_open(dest, to) {
            self.stats_mut(to).partitioned += 1;
            return;
        }
        if let Some(until) = self.net.clogged_until(to, now) {
            self.stats_mut(to).clog_held += 1;
            self.in_flight += 1;
            self.push(until, Ev::Unreachable { to, dest });
            return;
        }
        match self.nodes.get(&to).map(|n| (n.is_up(), n.paused)) {
            Some((true, false)) => self.unreachable_now(to, dest),
            Some((true, true)) => self.buffer(to, Buffered::Unreachable(dest), UNREACHABLE_COST),
            None | Some((false, _)) => self.stats_mut(to).vanished += 1,
        }
    }

    /// Queues an item in a paused node's socket buffer, or drops it.
    fn buffer(&mut self, id: NodeId, item: Buffered, cost: usize) {
        let cap = self.config.socket_buffer_bytes;
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.buffer_bytes.saturating_add(cost) > cap {
            node.stats.buffer_dropped += 1;
            self.trace.line(now, || format!("buffer full {id}"));
            return;
        }
        node.buffer_bytes += cost;
        node.buffer.push_back(item);
    }

    /// Hands a datagram to a running node: decoder, then core.
    pub(super) fn deliver_now(&mut self, to: NodeId, peer: NodeId, bytes: &[u8]) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&to) else {
            return;
        };
        let Some(core) = node.core.as_mut() else {
            return;
        };
        match node.codec.open_counted(bytes) {
            Err(e) => {
                node.stats.decoder.record(&e);
                self.trace
                    .line(now, || format!("decoder drop at {to}: {}", e.kind()));
            }
            Ok(packet) => {
                let h = packet.header;
                node.stats.delivered += 1;
                core.handle_packet(
                    now,
                    Incoming {
                        source: h.source,
                        source_incarnation: h.source_incarnation,
                        destination: h.destination,
                        protocol: h.protocol,
                        relayed: h.relayed || peer != h.source,
                        body: &packet.body,
                        peer,
                        datagram: bytes,
                    },
                );
                self.trace.line(now, || {
                    let what = C::describe_packet(&packet.body)
                        .unwrap_or_else(|| format!("{} bytes", bytes.len()));
                    format!("deliver {} -> {to} ({what})", h.source)
                });
                self.after_input(to);
            }
        }
    }

    /// Hands an unreachable report to a running node.
    pub(super) fn unreachable_now(&mut self, to: NodeId, dest: NodeId) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&to) else {
            return;
        };
        let Some(core) = node.core.as_mut() else {
            return;
        };
        node.stats.unreachable_received += 1;
        core.handle_unreachable(now, dest);
        self.trace
            .line(now, || format!("unreachable {dest} reported to {to}"));
        self.after_input(to);
    }
}
