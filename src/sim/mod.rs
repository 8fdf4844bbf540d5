//! The deterministic network simulator (DESIGN.md section 3, "Sans-IO cores,
//! actix shells", and section 9, "Testing").
//!
//! [`Simulator`] runs any number of [`Core`]s in one process on a virtual
//! clock. It is a discrete-event simulation: an event heap ordered by
//! (virtual time, insertion sequence) that jumps from one event to the next,
//! never ticking. The events are datagram deliveries, the one timer of each
//! node (its core's [`Core::poll_timeout`]), "port unreachable" reports,
//! scheduled [`Fault`]s and scheduled user actions.
//!
//! # How a test drives cores
//!
//! ```
//! use membership::sim::{toy::{Toy, ToyConfig}, LinkConfig, SimConfig, Simulator};
//! use membership::id::NodeId;
//! use std::time::Duration;
//!
//! let a = NodeId::v4(10, 0, 0, 1, 7000);
//! let b = NodeId::v4(10, 0, 0, 2, 7000);
//! let config = SimConfig::new(42, membership::sim_replay!("doc_example"))
//!     .with_link(LinkConfig::lan().with_loss(0.1));
//! // The factory builds one life of a node; it runs again at every restart.
//! let mut sim = Simulator::new(config, move |spawn| {
//!     Toy::new(&spawn, ToyConfig::pinging(vec![a, b], Duration::from_millis(100)))
//! });
//! sim.add_node(a);
//! sim.add_node(b);
//! sim.add_checker("no pong without ping", |view| {
//!     for (_, node, event) in view.new_events() {
//!         let _ = (node, event); // inspect core events here
//!     }
//!     Ok(())
//! });
//! sim.run_for(Duration::from_secs(2));
//! assert!(sim.core(a).unwrap().counters().pongs > 0);
//! let events = sim.take_events(); // (Instant, NodeId, ToyEvent)
//! assert!(!events.is_empty());
//! ```
//!
//! Commands go in through [`Simulator::with_core`], which afterwards drains
//! the core's transmits and events and re-arms its timer, exactly like the
//! runtime's driver does.
//!
//! # The datapath
//!
//! After every input the simulator drains `poll_transmit`, seals each
//! [`crate::sansio::Transmit`] with the sender's [`WireCodec`] (source = the
//! node, its incarnation, `relayed = false`), and passes each datagram
//! through the link model ([`LinkConfig`]: latency with jitter, reordering,
//! loss, duplication, corruption, truncation) and the network faults
//! (partitions, one-way blocks, clogs; see [`Simulator::partition`],
//! [`Simulator::block_one_way`], [`Simulator::clog`]). A
//! destination whose IP is multicast goes to every node that joined the group
//! ([`Simulator::join_group`]) except the sender, each copy independently.
//! A transmit with a `via` goes by UDP to that hop (its header still naming
//! the destination), and a forward ([`crate::sansio::Transmit::forward`],
//! an mcaster relaying) leaves with its bytes unchanged. The receiver's
//! [`Incoming`](crate::sansio::Incoming) names the UDP peer the copy came
//! from and carries the whole datagram.
//! On arrival the bytes go through the receiver's
//! [`WireCodec::open_counted`], so corrupted and truncated datagrams exercise
//! the real decoder and are counted, never seen by the core.
//!
//! A unicast datagram that arrives where no process listens (a crashed node,
//! or an address no node ever had) makes the sender receive
//! [`Core::handle_unreachable`] one link latency later, like ICMP "port
//! unreachable" from a live host ([`SimConfig::unreachable`], default on).
//! Paused nodes and partitioned links never produce it.
//!
//! # Processes
//!
//! [`Simulator::crash`] drops a node's state, cancels its timer and makes
//! datagrams to it vanish; [`Simulator::restart`] builds a new core with the
//! factory and a new, later [`Incarnation`]. [`Simulator::pause`] models
//! SIGSTOP: the node keeps its state but processes nothing; datagrams queue
//! in a bounded socket buffer ([`SimConfig::socket_buffer_bytes`], overflow
//! dropped and counted) and its timer does not fire. [`Simulator::resume`]
//! (SIGCONT) delivers the queue and fires the overdue timer, both with the
//! resume time as `now` (order: [`ResumeOrder`]). A core that takes a new
//! incarnation by itself (a rejoin after exclusion) is followed with
//! [`Simulator::track_incarnation`], as a daemon tells its socket.
//!
//! # Determinism and replay
//!
//! Everything random comes from one `ChaCha8Rng` seeded with
//! [`SimConfig::seed`]; all maps are ordered. The same seed gives the same
//! run, and [`Simulator::trace_hash`] (SHA-256 over every scheduled and
//! processed event, delivered bytes and core events' `Debug` text) proves it.
//! Failures (a checker returning `Err`, a run exceeding its event budget, or
//! [`Simulator::fail`]) panic with a message ending in the one-line replay,
//! e.g. `replay: SIM_SEED=1234 cargo test --test sim_toy -- chaos`; see
//! [`seeds`] and [`run_seeds`].

// This file: the `Simulator` type, its configuration and faults, commands,
// checkers and stepping (the glue). `datapath`: how datagrams travel (the
// event queue, routing, links, faults, delivery). `lifecycle`: a node's
// lives (start, crash, restart, pause, resume, incarnations) and its timer.
mod check;
mod datapath;
mod either;
mod lifecycle;
mod net;
mod node;
mod seeds;
mod trace;

pub mod toy;

#[cfg(test)]
mod tests;

pub use check::{CheckView, Invariant, NodeView};
pub use either::{Either, EitherEvent};
pub use net::{is_group, LinkConfig};
pub use node::{NodeSpawn, NodeStats, Stats};
pub use seeds::{run_seeds, seeds, seeds_from, Replay, DEFAULT_SEED_BASE};

use crate::id::{Incarnation, NodeId};
use crate::sansio::Core;
#[cfg(test)] // the tests (`use super::*`) name it
use crate::sansio::Incoming;
use crate::time::Instant;
use crate::wire::{KeyRing, WireCodec};
use check::FnInvariant;
use datapath::{Ev, Scheduled};
use net::Network;
use node::Node;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Display;
use std::time::Duration;
use trace::{node_bytes, Trace};

/// In which order a resumed node handles its queued datagrams and its
/// overdue timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResumeOrder {
    /// Queued datagrams first, then the overdue timer.
    #[default]
    PacketsFirst,
    /// The overdue timer first (a late timer that fires before the node has
    /// read what arrived while it slept), then the queued datagrams.
    TimerFirst,
    /// Either, drawn from the simulator's RNG at each resume.
    Random,
}

/// Options of a [`Simulator`].
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// How to replay this run, printed with every failure.
    pub replay: Replay,
    /// The link model of every pair without its own.
    pub default_link: LinkConfig,
    /// Whether a unicast datagram to an address without a live process
    /// produces [`Core::handle_unreachable`] at the sender (default on).
    pub unreachable: bool,
    /// The socket buffer of a paused node, in bytes of queued datagrams
    /// (an unreachable report costs 64); default 212 992, Linux's
    /// `rmem_default`.
    pub socket_buffer_bytes: usize,
    /// What a resumed node does first.
    pub resume_order: ResumeOrder,
    /// The most events one `run_*` call may process before the run is failed
    /// as a livelock (default 50 million).
    pub max_events_per_run: u64,
    /// The most events processed at one virtual instant before the run is
    /// failed as a zero-delay loop (default 1 million).
    pub max_events_per_instant: u64,
    /// When set, every node's codec signs and requires authentication with
    /// this shared key ring.
    pub auth: Option<KeyRing>,
    /// Keep core events until [`Simulator::take_events`] (default); when
    /// off they are dropped after the checkers have seen them.
    pub keep_events: bool,
    /// How many readable trace lines to keep for failure messages (default
    /// 0: none, which is fastest).
    pub trace_tail: usize,
    /// The Unix time, in milliseconds, that virtual time zero stands for; it
    /// only feeds the timestamps of incarnations.
    pub epoch_unix_millis: u64,
}

impl SimConfig {
    /// Defaults with this seed and replay line.
    pub fn new(seed: u64, replay: Replay) -> Self {
        SimConfig {
            seed,
            replay,
            default_link: LinkConfig::lan(),
            unreachable: true,
            socket_buffer_bytes: 212_992,
            resume_order: ResumeOrder::PacketsFirst,
            max_events_per_run: 50_000_000,
            max_events_per_instant: 1_000_000,
            auth: None,
            keep_events: true,
            trace_tail: 0,
            epoch_unix_millis: 1_700_000_000_000,
        }
    }

    /// With this default link model.
    pub fn with_link(mut self, link: LinkConfig) -> Self {
        self.default_link = link;
        self
    }

    /// With unreachable reports on or off.
    pub fn with_unreachable(mut self, on: bool) -> Self {
        self.unreachable = on;
        self
    }

    /// With this paused-node socket buffer size in bytes.
    pub fn with_socket_buffer(mut self, bytes: usize) -> Self {
        self.socket_buffer_bytes = bytes;
        self
    }

    /// With this resume order.
    pub fn with_resume_order(mut self, order: ResumeOrder) -> Self {
        self.resume_order = order;
        self
    }

    /// With this per-run event budget.
    pub fn with_max_events_per_run(mut self, max: u64) -> Self {
        self.max_events_per_run = max;
        self
    }

    /// With this per-instant event budget.
    pub fn with_max_events_per_instant(mut self, max: u64) -> Self {
        self.max_events_per_instant = max;
        self
    }

    /// With authentication by this shared key ring on every node.
    pub fn with_auth(mut self, ring: KeyRing) -> Self {
        self.auth = Some(ring);
        self
    }

    /// With core events kept for `take_events` or not.
    pub fn with_keep_events(mut self, keep: bool) -> Self {
        self.keep_events = keep;
        self
    }

    /// Keeping the last `lines` readable trace lines for failure messages.
    pub fn with_trace_tail(mut self, lines: usize) -> Self {
        self.trace_tail = lines;
        self
    }
}

/// A fault or network change, to apply now ([`Simulator::apply`]) or later
/// ([`Simulator::schedule_fault`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// [`Simulator::crash`].
    Crash(NodeId),
    /// [`Simulator::restart`].
    Restart(NodeId),
    /// [`Simulator::pause`].
    Pause(NodeId),
    /// [`Simulator::resume`].
    Resume(NodeId),
    /// [`Simulator::partition`].
    Partition(Vec<Vec<NodeId>>),
    /// [`Simulator::block_one_way`].
    BlockOneWay {
        /// Sender side.
        from: NodeId,
        /// Receiver side.
        to: NodeId,
    },
    /// [`Simulator::unblock_one_way`].
    Unblock {
        /// Sender side.
        from: NodeId,
        /// Receiver side.
        to: NodeId,
    },
    /// [`Simulator::heal`].
    Heal,
    /// [`Simulator::clog`].
    Clog {
        /// The clogged node.
        node: NodeId,
        /// When the clog ends.
        until: Instant,
    },
    /// [`Simulator::unclog`].
    Unclog(NodeId),
    /// [`Simulator::set_link`].
    SetLink {
        /// Sender side.
        from: NodeId,
        /// Receiver side.
        to: NodeId,
        /// The new model.
        link: LinkConfig,
    },
    /// [`Simulator::set_default_link`].
    SetDefaultLink(LinkConfig),
    /// [`Simulator::join_group`].
    JoinGroup {
        /// The member.
        node: NodeId,
        /// The multicast group address.
        group: NodeId,
    },
    /// [`Simulator::leave_group`].
    LeaveGroup {
        /// The member.
        node: NodeId,
        /// The multicast group address.
        group: NodeId,
    },
}

/// A user action scheduled for later.
type Action<C> = Box<dyn FnOnce(&mut Simulator<C>)>;

/// A deterministic discrete-event simulation of many cores on one network.
/// See the [module docs](self).
pub struct Simulator<C: Core> {
    config: SimConfig,
    rng: ChaCha8Rng,
    now: Instant,
    seq: u64,
    heap: BinaryHeap<Scheduled>,
    nodes: BTreeMap<NodeId, Node<C>>,
    factory: Box<dyn FnMut(NodeSpawn) -> C>,
    net: Network,
    events: Vec<(Instant, NodeId, C::Event)>,
    /// `events[..checked_upto]` have been shown to the checkers.
    checked_upto: usize,
    checkers: Vec<Box<dyn Invariant<C>>>,
    actions: BTreeMap<u64, Action<C>>,
    next_action: u64,
    trace: Trace,
    steps: u64,
    same_instant: u64,
    in_flight: u64,
    live_timers: u64,
    pending_scheduled: u64,
    max_heap_len: usize,
    unknown: NodeStats,
    /// Reads a new incarnation out of a core event (see
    /// [`Simulator::track_incarnation`]).
    incarnation_of: Option<IncarnationOf<C>>,
}

/// Reads a new incarnation out of a core event.
type IncarnationOf<C> = Box<dyn Fn(&<C as Core>::Event) -> Option<Incarnation>>;

impl<C: Core> Simulator<C> {
    /// A simulator with no nodes at time zero. `factory` builds a core for
    /// every start of a node ([`Simulator::add_node`], [`Simulator::restart`]).
    ///
    /// # Panics
    ///
    /// If the default link model is invalid.
    pub fn new(config: SimConfig, factory: impl FnMut(NodeSpawn) -> C + 'static) -> Self {
        if let Err(e) = config.default_link.validate() {
            panic!(
                "invalid default link: {e}\n{}",
                config.replay.line(config.seed)
            );
        }
        let mut trace = Trace::new(config.trace_tail);
        trace.mix(&[b"seed", &config.seed.to_be_bytes()]);
        Simulator {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            net: Network::new(config.default_link.clone()),
            config,
            now: Instant::ZERO,
            seq: 0,
            heap: BinaryHeap::new(),
            nodes: BTreeMap::new(),
            factory: Box::new(factory),
            events: Vec::new(),
            checked_upto: 0,
            checkers: Vec::new(),
            actions: BTreeMap::new(),
            next_action: 0,
            trace,
            steps: 0,
            same_instant: 0,
            in_flight: 0,
            live_timers: 0,
            pending_scheduled: 0,
            max_heap_len: 0,
            unknown: NodeStats::default(),
            incarnation_of: None,
        }
    }

    // ----- introspection -------------------------------------------------

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The seed of this run.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// The options of this run.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The line that replays this run.
    pub fn replay_line(&self) -> String {
        self.config.replay.line(self.config.seed)
    }

    /// Every node ever added, in address order (crashed ones included).
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.keys().copied()
    }

    /// Nodes that are up (running or paused), in address order.
    pub fn up_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .iter()
            .filter(|(_, n)| n.is_up())
            .map(|(id, _)| *id)
    }

    /// Whether `id` is up: started and not crashed (running or paused).
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(Node::is_up)
    }

    /// Whether `id` is up and not paused.
    pub fn is_running(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(Node::is_running)
    }

    /// Whether `id` is paused.
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.is_up() && n.paused)
    }

    /// The incarnation of the current life of `id` (`None` while crashed).
    pub fn incarnation(&self, id: NodeId) -> Option<Incarnation> {
        self.nodes.get(&id).and_then(|n| n.incarnation)
    }

    /// The core of `id`, if it is up (running or paused).
    pub fn core(&self, id: NodeId) -> Option<&C> {
        self.nodes.get(&id).and_then(|n| n.core.as_ref())
    }

    /// The counters of `id`, if it was ever added.
    pub fn node_stats(&self, id: NodeId) -> Option<&NodeStats> {
        self.nodes.get(&id).map(|n| &n.stats)
    }

    /// A summary of the whole run.
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            nodes: self.nodes.len(),
            steps: self.steps,
            max_heap_len: self.max_heap_len,
            in_flight: self.in_flight,
            unknown_destinations: self.unknown.clone(),
            ..Stats::default()
        };
        for n in self.nodes.values() {
            s.totals.add(&n.stats);
            if n.is_running() {
                s.running += 1;
            } else if n.is_up() {
                s.paused += 1;
            }
        }
        s
    }

    /// Events processed so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Datagrams and unreachable reports in flight.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// True when nothing is pending: no datagram in flight, no armed timer
    /// (paused nodes' overdue timers aside), no scheduled fault or action.
    pub fn is_quiet(&self) -> bool {
        self.in_flight == 0 && self.live_timers == 0 && self.pending_scheduled == 0
    }

    /// The SHA-256 of the trace so far.
    pub fn trace_hash(&self) -> [u8; 32] {
        self.trace.hash()
    }

    /// [`Simulator::trace_hash`] in hex.
    pub fn trace_hex(&self) -> String {
        hex::encode(self.trace.hash())
    }

    /// The retained readable trace lines ([`SimConfig::trace_tail`]).
    pub fn trace_tail(&self) -> impl Iterator<Item = &str> {
        self.trace.tail()
    }

    /// The recorded core events not yet taken, in order.
    pub fn events(&self) -> &[(Instant, NodeId, C::Event)] {
        &self.events
    }

    /// Takes the recorded core events (time, node, event), in order.
    pub fn take_events(&mut self) -> Vec<(Instant, NodeId, C::Event)> {
        self.checked_upto = 0;
        std::mem::take(&mut self.events)
    }

    /// Fails the run: panics with `msg`, the time, the trace tail and the
    /// replay line. For liveness checks in tests.
    pub fn fail(&self, msg: impl Display) -> ! {
        let mut s = format!(
            "simulation failed at t={} (step {}): {msg}",
            self.now, self.steps
        );
        let mut tail = self.trace.tail().peekable();
        if tail.peek().is_some() {
            s.push_str("\nlast trace lines:");
            for line in tail {
                s.push_str("\n  ");
                s.push_str(line);
            }
        }
        s.push('\n');
        s.push_str(&self.replay_line());
        panic!("{s}")
    }

    // ----- commands ------------------------------------------------------

    /// Runs a command on the core of `id` at the current time (e.g.
    /// `rpc.call(now, ..)`), then drains its transmits and events and
    /// re-arms its timer. `None` if the node is not running (crashed or
    /// paused: a stopped process takes no commands).
    pub fn with_core<R>(&mut self, id: NodeId, f: impl FnOnce(&mut C, Instant) -> R) -> Option<R> {
        let now = self.now;
        let node = self.nodes.get_mut(&id).filter(|n| n.is_running())?;
        let core = node.core.as_mut()?;
        let r = f(core, now);
        self.trace
            .mix(&[b"cmd", &now.as_micros().to_be_bytes(), &node_bytes(id)]);
        self.trace.line(now, || format!("command {id}"));
        self.after_input(id);
        self.run_checkers();
        Some(r)
    }

    /// The wire codec of the current life of `id` (e.g. to rotate its key
    /// ring with `auth_mut().set_ring(..)`). A restart gives the node a fresh
    /// codec built from [`SimConfig::auth`] again.
    pub fn codec_mut(&mut self, id: NodeId) -> Option<&mut WireCodec> {
        self.nodes
            .get_mut(&id)
            .filter(|n| n.is_up())
            .map(|n| &mut n.codec)
    }

    // ----- faults and actions ---------------------------------------------

    /// Applies a fault now.
    pub fn apply(&mut self, fault: Fault) {
        self.apply_inner(fault);
        self.run_checkers();
    }

    /// Applies `fault` at virtual time `at` (now, if `at` has passed).
    pub fn schedule_fault(&mut self, at: Instant, fault: Fault) {
        self.pending_scheduled += 1;
        let at = at.max(self.now);
        self.push(at, Ev::Fault(Box::new(fault)));
    }

    /// Runs `action` at virtual time `at` (now, if `at` has passed), as a
    /// step of its own.
    pub fn schedule(&mut self, at: Instant, action: impl FnOnce(&mut Simulator<C>) + 'static) {
        let id = self.next_action;
        self.next_action += 1;
        self.actions.insert(id, Box::new(action));
        self.pending_scheduled += 1;
        let at = at.max(self.now);
        self.push(at, Ev::Action(id));
    }

    // ----- checkers -------------------------------------------------------

    /// Registers an invariant checker, run after every step and every
    /// direct change to a node.
    pub fn add_checker(
        &mut self,
        name: impl Into<String>,
        check: impl FnMut(&CheckView<'_, C>) -> Result<(), String> + 'static,
    ) {
        self.checkers.push(Box::new(FnInvariant {
            name: name.into(),
            f: check,
        }));
    }

    /// Registers an [`Invariant`].
    pub fn add_invariant(&mut self, invariant: Box<dyn Invariant<C>>) {
        self.checkers.push(invariant);
    }

    /// Lets cores change their own incarnation, like a daemon that tells
    /// its socket (the runtime's `SetIncarnation`) when its core reports a
    /// new life without a restart (e.g. a rejoin after exclusion): when `f`
    /// finds an incarnation in an event, the node's later datagrams carry
    /// it, [`Simulator::incarnation`] reports it, and a later restart gets
    /// a later one still.
    pub fn track_incarnation(&mut self, f: impl Fn(&C::Event) -> Option<Incarnation> + 'static) {
        self.incarnation_of = Some(Box::new(f));
    }

    // ----- stepping -------------------------------------------------------

    /// Processes the next event. Returns false if there is none.
    pub fn step(&mut self) -> bool {
        match self.pop_live() {
            Some(s) => {
                self.process(s);
                true
            }
            None => false,
        }
    }

    /// The time of the next pending event, if any.
    pub fn next_event_time(&mut self) -> Option<Instant> {
        self.peek_live_time()
    }

    /// Processes every event up to and including time `t`, then sets the
    /// clock to `t` (if later). Returns the number of events processed.
    ///
    /// # Panics
    ///
    /// With the replay line, if more than [`SimConfig::max_events_per_run`]
    /// events are processed.
    pub fn run_until(&mut self, t: Instant) -> u64 {
        let mut n = 0;
        while let Some(at) = self.peek_live_time() {
            if at > t {
                break;
            }
            self.step();
            n += 1;
            self.check_budget(n);
        }
        self.advance_to(t);
        n
    }

    /// [`Simulator::run_until`] `now + d`.
    pub fn run_for(&mut self, d: Duration) -> u64 {
        let t = self.now + d;
        self.run_until(t)
    }

    /// Runs until nothing is pending ([`Simulator::is_quiet`]) or `limit`
    /// of virtual time has passed; returns whether it became quiet. The
    /// clock stays at the last event when quiet, else moves to the limit.
    pub fn run_until_quiet(&mut self, limit: Duration) -> bool {
        self.run_until_condition(limit, |sim| sim.is_quiet())
    }

    /// Runs until `cond` holds (checked before the first and after every
    /// step) or `limit` of virtual time has passed; returns whether it held.
    /// The clock stays at the event that made it hold, else moves to the
    /// limit.
    pub fn run_until_condition(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&Self) -> bool,
    ) -> bool {
        let deadline = self.now + limit;
        let mut n = 0;
        loop {
            if cond(self) {
                return true;
            }
            match self.peek_live_time() {
                Some(at) if at <= deadline => {
                    self.step();
                    n += 1;
                    self.check_budget(n);
                }
                _ => break,
            }
        }
        self.advance_to(deadline);
        cond(self)
    }

    // ----- internals: stepping and checking --------------------------------

    fn advance_to(&mut self, t: Instant) {
        if t > self.now {
            self.now = t;
            self.same_instant = 0;
        }
    }

    fn check_budget(&self, n: u64) {
        if n > self.config.max_events_per_run {
            self.fail(format!(
                "more than {} events in one run: livelock?",
                self.config.max_events_per_run
            ));
        }
    }

    fn process(&mut self, s: Scheduled) {
        if s.at > self.now {
            self.now = s.at;
            self.same_instant = 0;
        }
        self.same_instant += 1;
        if self.same_instant > self.config.max_events_per_instant {
            self.fail(format!(
                "more than {} events at one instant: a zero-delay loop (livelock?)",
                self.config.max_events_per_instant
            ));
        }
        self.steps += 1;
        self.trace
            .mix(&[b"P", &s.at.as_micros().to_be_bytes(), &s.seq.to_be_bytes()]);
        match s.ev {
            Ev::Deliver {
                from,
                to,
                bytes,
                unicast,
            } => self.on_deliver(from, to, bytes, unicast),
            Ev::Unreachable { to, dest } => self.on_unreachable(to, dest),
            Ev::Timer { node, .. } => self.on_timer(node),
            Ev::Fault(f) => {
                self.pending_scheduled -= 1;
                self.trace.line(self.now, || format!("fault {f:?}"));
                self.apply_inner(*f);
            }
            Ev::Action(id) => {
                self.pending_scheduled -= 1;
                self.trace.line(self.now, || format!("action {id}"));
                if let Some(action) = self.actions.remove(&id) {
                    action(self);
                }
            }
        }
        self.run_checkers();
    }

    fn run_checkers(&mut self) {
        if !self.checkers.is_empty() {
            let mut checkers = std::mem::take(&mut self.checkers);
            let mut failure = None;
            {
                let view = CheckView {
                    sim: self,
                    new_events: self.events.get(self.checked_upto..).unwrap_or(&[]),
                };
                for c in checkers.iter_mut() {
                    if let Err(msg) = c.check(&view) {
                        failure = Some((c.name().to_string(), msg));
                        break;
                    }
                }
            }
            self.checkers = checkers;
            if let Some((name, msg)) = failure {
                self.fail(format!("invariant `{name}` violated: {msg}"));
            }
        }
        self.checked_upto = self.events.len();
        if !self.config.keep_events {
            self.events.clear();
            self.checked_upto = 0;
        }
    }

    // ----- internals: faults ------------------------------------------------

    fn apply_inner(&mut self, fault: Fault) {
        match fault {
            Fault::Crash(id) => {
                self.crash_inner(id);
            }
            Fault::Restart(id) => {
                self.restart_inner(id);
            }
            Fault::Pause(id) => {
                self.pause_inner(id);
            }
            Fault::Resume(id) => {
                self.resume_inner(id);
            }
            Fault::Partition(sets) => self.partition(&sets),
            Fault::BlockOneWay { from, to } => self.block_one_way(from, to),
            Fault::Unblock { from, to } => self.unblock_one_way(from, to),
            Fault::Heal => self.heal(),
            Fault::Clog { node, until } => self.clog(node, until),
            Fault::Unclog(node) => self.unclog(node),
            Fault::SetLink { from, to, link } => self.set_link(from, to, link),
            Fault::SetDefaultLink(link) => self.set_default_link(link),
            Fault::JoinGroup { node, group } => self.join_group(node, group),
            Fault::LeaveGroup { node, group } => self.leave_group(node, group),
        }
    }
}
