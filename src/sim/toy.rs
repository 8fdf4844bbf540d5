//! A tiny ping/echo [`Core`] for testing the simulator and drivers
//! (DESIGN.md section 3). It speaks [`ProtocolId::Test`].
//!
//! Every `interval` (with a little jitter) a [`Toy`] pings each of its peers
//! and, if it has a group, the group (group pings ask for no reply). A ping
//! is answered with a pong that echoes the pinger's incarnation. A pong is
//! accepted only if it answers a ping this very life sent to that peer and
//! that is still outstanding, so duplicates, pongs to a previous life and
//! pongs from the wrong node are counted and ignored; accepted pongs are
//! reported as [`ToyEvent::Pong`]. That gives tests a simple invariant that
//! restarts, duplication and reordering can break if the filtering is wrong:
//! "every accepted pong answers a distinct ping of the current life".

use super::NodeSpawn;
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire::{decode_body, encode_body};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How many outstanding pings a toy remembers.
const MAX_OUTSTANDING: usize = 4096;

/// What a [`Toy`] does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToyConfig {
    /// Nodes to ping every round (its own address is skipped).
    pub peers: Vec<NodeId>,
    /// A multicast group to ping every round (no replies asked).
    pub group: Option<NodeId>,
    /// The round period; `None`: no timer, only [`Toy::ping`] commands.
    pub interval: Option<Duration>,
    /// Up to this much extra delay per round, from the node's seed.
    pub jitter: Duration,
}

impl ToyConfig {
    /// Pings `peers` every `interval` with 10% jitter.
    pub fn pinging(peers: Vec<NodeId>, interval: Duration) -> Self {
        ToyConfig {
            peers,
            group: None,
            interval: Some(interval),
            jitter: interval / 10,
        }
    }

    /// No timer, no peers: a node that only answers and obeys commands.
    pub fn passive() -> Self {
        ToyConfig::default()
    }
}

/// A toy message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToyMsg {
    /// A ping; `reply` asks for a pong.
    Ping {
        /// The pinger's sequence number in its current life.
        seq: u64,
        /// Whether a pong is wanted.
        reply: bool,
    },
    /// The answer to a ping.
    Pong {
        /// The ping's sequence number.
        seq: u64,
        /// The pinger's incarnation as the ping carried it.
        echo: Incarnation,
    },
}

/// What a [`Toy`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToyEvent {
    /// The periodic round ran.
    Tick,
    /// A ping arrived (`destination` is this node or a group).
    PingReceived {
        /// The pinger.
        from: NodeId,
        /// Where it was addressed.
        destination: NodeId,
        /// Its sequence number.
        seq: u64,
    },
    /// A pong answered an outstanding ping of this life.
    Pong {
        /// The peer that answered.
        from: NodeId,
        /// The ping's sequence number.
        seq: u64,
        /// The incarnation the pong echoed (this life's).
        echo: Incarnation,
    },
    /// The host reported `node` unreachable.
    Unreachable {
        /// The unreachable node.
        node: NodeId,
    },
}

/// What a [`Toy`] has counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToyCounters {
    /// Pings sent (unicast and group).
    pub pings_sent: u64,
    /// Pings received.
    pub pings_received: u64,
    /// Pongs accepted.
    pub pongs: u64,
    /// Pongs echoing another incarnation (a previous life's pings).
    pub stale_pongs: u64,
    /// Pongs for no outstanding ping (duplicates, wrong sender).
    pub unmatched_pongs: u64,
    /// Bodies that did not decode, or other protocols.
    pub bad_bodies: u64,
    /// Unreachable reports.
    pub unreachable: u64,
    /// Timer rounds run.
    pub ticks: u64,
}

/// The toy ping/echo core.
#[derive(Debug)]
pub struct Toy {
    id: NodeId,
    incarnation: Incarnation,
    config: ToyConfig,
    rng: ChaCha8Rng,
    next_tick: Option<Instant>,
    next_seq: u64,
    outstanding: BTreeMap<u64, NodeId>,
    last_pong: BTreeMap<NodeId, Instant>,
    counters: ToyCounters,
    out: VecDeque<Transmit>,
    events: VecDeque<ToyEvent>,
}

impl Toy {
    /// A new life of a toy node. With an interval, the first round comes
    /// at a random point within one interval.
    pub fn new(spawn: &NodeSpawn, config: ToyConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(spawn.seed);
        let next_tick = config.interval.map(|i| {
            let max = u64::try_from(i.as_micros()).unwrap_or(u64::MAX);
            spawn.now + Duration::from_micros(rng.random_range(0..=max))
        });
        Toy {
            id: spawn.id,
            incarnation: spawn.incarnation,
            config,
            rng,
            next_tick,
            next_seq: 0,
            outstanding: BTreeMap::new(),
            last_pong: BTreeMap::new(),
            counters: ToyCounters::default(),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// This node's address.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This life's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The counters of this life.
    pub fn counters(&self) -> &ToyCounters {
        &self.counters
    }

    /// The sequence number the next ping will carry (so every ping of this
    /// life has a smaller one).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// When this life last accepted a pong from `peer`.
    pub fn last_pong(&self, peer: NodeId) -> Option<Instant> {
        self.last_pong.get(&peer).copied()
    }

    /// A command: ping `to` now (a node, or a group without reply).
    pub fn ping(&mut self, to: NodeId) {
        let reply = !super::is_group(to);
        self.send_ping(to, reply);
    }

    /// A command: send arbitrary body bytes to `to` (e.g. garbage, to test
    /// the receiver's body decoding).
    pub fn send_raw(&mut self, to: NodeId, body: Vec<u8>) {
        self.out
            .push_back(Transmit::new(to, ProtocolId::Test, body));
    }

    fn send(&mut self, to: NodeId, msg: &ToyMsg) {
        // A toy message always encodes.
        if let Ok(body) = encode_body(msg) {
            self.out
                .push_back(Transmit::new(to, ProtocolId::Test, body));
        }
    }

    fn send_ping(&mut self, to: NodeId, reply: bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if reply {
            self.outstanding.insert(seq, to);
            while self.outstanding.len() > MAX_OUTSTANDING {
                self.outstanding.pop_first();
            }
        }
        self.counters.pings_sent += 1;
        self.send(to, &ToyMsg::Ping { seq, reply });
    }

    fn round(&mut self, now: Instant) {
        self.counters.ticks += 1;
        self.events.push_back(ToyEvent::Tick);
        let peers: Vec<NodeId> = self
            .config
            .peers
            .iter()
            .copied()
            .filter(|p| *p != self.id)
            .collect();
        for p in peers {
            self.send_ping(p, true);
        }
        if let Some(g) = self.config.group {
            self.send_ping(g, false);
        }
        self.next_tick = self.config.interval.map(|i| {
            let max = u64::try_from(self.config.jitter.as_micros()).unwrap_or(u64::MAX);
            now + i + Duration::from_micros(self.rng.random_range(0..=max))
        });
    }
}

impl Core for Toy {
    type Event = ToyEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        if packet.protocol != ProtocolId::Test {
            self.counters.bad_bodies += 1;
            return;
        }
        let Ok(msg) = decode_body::<ToyMsg>(packet.body) else {
            self.counters.bad_bodies += 1;
            return;
        };
        match msg {
            ToyMsg::Ping { seq, reply } => {
                self.counters.pings_received += 1;
                self.events.push_back(ToyEvent::PingReceived {
                    from: packet.source,
                    destination: packet.destination,
                    seq,
                });
                if reply {
                    let echo = packet.source_incarnation;
                    self.send(packet.source, &ToyMsg::Pong { seq, echo });
                }
            }
            ToyMsg::Pong { seq, echo } => {
                if echo != self.incarnation {
                    self.counters.stale_pongs += 1;
                } else if self.outstanding.get(&seq) == Some(&packet.source) {
                    self.outstanding.remove(&seq);
                    self.counters.pongs += 1;
                    self.last_pong.insert(packet.source, now);
                    self.events.push_back(ToyEvent::Pong {
                        from: packet.source,
                        seq,
                        echo,
                    });
                } else {
                    self.counters.unmatched_pongs += 1;
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        // Early or spurious calls are harmless.
        if self.next_tick.is_some_and(|t| t <= now) {
            self.round(now);
        }
    }

    fn handle_unreachable(&mut self, _now: Instant, node: NodeId) {
        self.counters.unreachable += 1;
        self.events.push_back(ToyEvent::Unreachable { node });
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<ToyEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }
}
