//! Simulated nodes (one process each) and their counters (DESIGN.md
//! section 3).

use crate::id::{Incarnation, NodeId};
use crate::time::Instant;
use crate::wire::{DropCounters, WireCodec};
use std::collections::VecDeque;

/// What the factory gets to build one life of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSpawn {
    /// The node's address.
    pub id: NodeId,
    /// The new life's incarnation: fresh at every start, and later than the
    /// previous life's of the same node.
    pub incarnation: Incarnation,
    /// A seed for the core's own RNG, drawn from the simulator's RNG.
    pub seed: u64,
    /// The virtual time of the start.
    pub now: Instant,
}

/// Per-node counters. Everything on the receiving path (losses, partition
/// drops, decoder drops, ...) is counted at the intended receiver; they
/// survive crashes and restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Datagrams this node sent (a multicast counts once).
    pub sent: u64,
    /// Bytes this node sent, sealed (a multicast counts once).
    pub sent_bytes: u64,
    /// Datagrams that passed the decoder and reached this node's core.
    pub delivered: u64,
    /// Datagrams to this node lost by the link model.
    pub lost: u64,
    /// Extra copies made by link duplication on the way to this node.
    pub duplicated: u64,
    /// Copies corrupted on the way to this node.
    pub corrupted: u64,
    /// Copies truncated on the way to this node.
    pub truncated: u64,
    /// Copies given an extra reordering delay on the way to this node.
    pub reordered: u64,
    /// Datagrams to this node dropped by a partition or a one-way block.
    pub partitioned: u64,
    /// Times a datagram from or to this node was held by a clog.
    pub clog_held: u64,
    /// Datagrams (and unreachable reports) dropped because this paused node's
    /// socket buffer was full.
    pub buffer_dropped: u64,
    /// Datagrams that arrived while this node was crashed (or never
    /// started), and buffered datagrams lost when it crashed.
    pub vanished: u64,
    /// Datagrams rejected by this node's [`WireCodec`], by kind.
    pub decoder: DropCounters,
    /// "Port unreachable" reports generated for datagrams sent to this
    /// address while no process was listening.
    pub unreachable_generated: u64,
    /// "Port unreachable" reports delivered to this node's core.
    pub unreachable_received: u64,
    /// Transmits the codec refused to seal (body too large): a core bug.
    pub encode_errors: u64,
    /// Calls to `handle_timeout`.
    pub timeouts: u64,
    /// Core events drained.
    pub events: u64,
    /// Times this node was crashed (including crashes implied by a restart
    /// of a running node).
    pub crashes: u64,
    /// Lives started (the first start included).
    pub starts: u64,
    /// Times this node was paused.
    pub pauses: u64,
}

impl NodeStats {
    /// Adds every counter of `other` to `self`.
    pub fn add(&mut self, other: &NodeStats) {
        self.sent += other.sent;
        self.sent_bytes += other.sent_bytes;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.corrupted += other.corrupted;
        self.truncated += other.truncated;
        self.reordered += other.reordered;
        self.partitioned += other.partitioned;
        self.clog_held += other.clog_held;
        self.buffer_dropped += other.buffer_dropped;
        self.vanished += other.vanished;
        for (kind, count) in other.decoder.iter() {
            for _ in 0..count {
                self.decoder.record_kind(kind);
            }
        }
        self.unreachable_generated += other.unreachable_generated;
        self.unreachable_received += other.unreachable_received;
        self.encode_errors += other.encode_errors;
        self.timeouts += other.timeouts;
        self.events += other.events;
        self.crashes += other.crashes;
        self.starts += other.starts;
        self.pauses += other.pauses;
    }
}

/// A summary of a whole simulation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Nodes ever added.
    pub nodes: usize,
    /// Nodes running now (not crashed, not paused).
    pub running: usize,
    /// Nodes paused now.
    pub paused: usize,
    /// Events processed so far.
    pub steps: u64,
    /// The most events the heap ever held (stale timer entries included).
    pub max_heap_len: usize,
    /// Datagrams and unreachable reports in flight now.
    pub in_flight: u64,
    /// The sum of every node's counters.
    pub totals: NodeStats,
    /// Counters for datagrams sent to addresses where no node was ever
    /// added (they vanish, and may produce unreachable reports).
    pub unknown_destinations: NodeStats,
}

/// Something a paused node's socket holds until it resumes.
#[derive(Debug)]
pub(crate) enum Buffered {
    /// A datagram, still sealed.
    /// The bytes and the UDP peer they came from.
    Datagram(NodeId, Vec<u8>),
    /// A "port unreachable" report about `dest`.
    Unreachable(NodeId),
}

/// Nominal socket-buffer cost of a queued unreachable report, in bytes.
pub(crate) const UNREACHABLE_COST: usize = 64;

/// The single armed timer of a node.
///
/// `deadline` is what the core asked for; `entry` is when the heap entry
/// with generation `gen` fires (never later than `deadline`). A deadline
/// that moves later keeps the old entry, which re-checks when it fires.
#[derive(Debug, Default)]
pub(crate) struct TimerSlot {
    pub(crate) deadline: Option<Instant>,
    pub(crate) entry: Option<Instant>,
    pub(crate) gen: u64,
}

/// One simulated process at one address.
pub(crate) struct Node<C> {
    /// The running core; `None` while crashed.
    pub(crate) core: Option<C>,
    pub(crate) codec: WireCodec,
    pub(crate) incarnation: Option<Incarnation>,
    /// The millisecond timestamp of the last incarnation handed out.
    pub(crate) last_incarnation_millis: Option<u64>,
    pub(crate) paused: bool,
    pub(crate) buffer: VecDeque<Buffered>,
    pub(crate) buffer_bytes: usize,
    pub(crate) timer: TimerSlot,
    pub(crate) stats: NodeStats,
}

impl<C> Node<C> {
    pub(crate) fn new() -> Self {
        Node {
            core: None,
            codec: WireCodec::new(),
            incarnation: None,
            last_incarnation_millis: None,
            paused: false,
            buffer: VecDeque::new(),
            buffer_bytes: 0,
            timer: TimerSlot::default(),
            stats: NodeStats::default(),
        }
    }

    /// Alive: started and not crashed (maybe paused).
    pub(crate) fn is_up(&self) -> bool {
        self.core.is_some()
    }

    /// Alive and not paused.
    pub(crate) fn is_running(&self) -> bool {
        self.core.is_some() && !self.paused
    }
}
