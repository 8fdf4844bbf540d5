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
//! [`Incoming`] names the UDP peer the copy came from and carries the whole
//! datagram.
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

mod check;
mod either;
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
use crate::sansio::{Core, Incoming};
use crate::time::Instant;
use crate::wire::{AuthConfig, Header, KeyRing, WireCodec};
use check::FnInvariant;
use net::Network;
use node::{Buffered, Node, UNREACHABLE_COST};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering;
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

/// What happens at one point of virtual time.
enum Ev {
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
struct Scheduled {
    at: Instant,
    seq: u64,
    ev: Ev,
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

    // ----- processes -----------------------------------------------------

    /// Adds a node at `id` and starts it (the factory builds its core).
    /// Returns its incarnation.
    ///
    /// # Panics
    ///
    /// If `id` was already added, or is a multicast address.
    pub fn add_node(&mut self, id: NodeId) -> Incarnation {
        if self.nodes.contains_key(&id) {
            self.fail(format!("add_node({id}): node already exists"));
        }
        if is_group(id) {
            self.fail(format!("add_node({id}): a multicast address"));
        }
        self.nodes.insert(id, Node::new());
        let inc = self.spawn(id);
        self.run_checkers();
        inc
    }

    /// Crashes `id` (SIGKILL): its state, timer and socket buffer are gone
    /// and datagrams to it vanish until a restart. Returns false if it was
    /// not up.
    pub fn crash(&mut self, id: NodeId) -> bool {
        let done = self.crash_inner(id);
        if done {
            self.run_checkers();
        }
        done
    }

    /// Restarts `id` with a fresh core and a new, later incarnation (a
    /// running or paused node is crashed first). Multicast group
    /// memberships persist across restarts (the daemon rejoins at start).
    ///
    /// # Panics
    ///
    /// If `id` was never added.
    pub fn restart(&mut self, id: NodeId) -> Incarnation {
        let inc = self.restart_inner(id);
        self.run_checkers();
        inc
    }

    /// Pauses `id` (SIGSTOP). Returns false if it was not running.
    pub fn pause(&mut self, id: NodeId) -> bool {
        let done = self.pause_inner(id);
        if done {
            self.run_checkers();
        }
        done
    }

    /// Resumes `id` (SIGCONT): it handles its queued datagrams and its
    /// overdue timer now. Returns false if it was not paused.
    pub fn resume(&mut self, id: NodeId) -> bool {
        let done = self.resume_inner(id);
        if done {
            self.run_checkers();
        }
        done
    }

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

    // ----- internals: heap --------------------------------------------------

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

    fn push(&mut self, at: Instant, ev: Ev) {
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

    fn peek_live_time(&mut self) -> Option<Instant> {
        loop {
            let top = self.heap.peek()?;
            if !self.is_stale(top) {
                return Some(top.at);
            }
            self.heap.pop();
        }
    }

    fn pop_live(&mut self) -> Option<Scheduled> {
        while let Some(s) = self.heap.pop() {
            if !self.is_stale(&s) {
                return Some(s);
            }
        }
        None
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

    // ----- internals: processes ---------------------------------------------

    fn new_incarnation(&mut self, id: NodeId) -> Incarnation {
        let mut millis = self
            .config
            .epoch_unix_millis
            .saturating_add(self.now.as_micros() / 1000);
        let node = self.nodes.get_mut(&id).expect("node exists");
        if let Some(last) = node.last_incarnation_millis {
            // Later than the previous life, even within one millisecond.
            millis = millis.max(last + 1);
        }
        node.last_incarnation_millis = Some(millis);
        let mut random = [0u8; 10];
        self.rng.fill_bytes(&mut random);
        Incarnation::from_parts(millis, random)
    }

    /// Starts a new life of an existing, crashed node.
    fn spawn(&mut self, id: NodeId) -> Incarnation {
        let incarnation = self.new_incarnation(id);
        let seed = self.rng.next_u64();
        let now = self.now;
        let core = (self.factory)(NodeSpawn {
            id,
            incarnation,
            seed,
            now,
        });
        let codec = match &self.config.auth {
            Some(ring) => WireCodec::with_auth(AuthConfig::new(ring.clone())),
            None => WireCodec::new(),
        };
        let node = self.nodes.get_mut(&id).expect("node exists");
        node.core = Some(core);
        node.codec = codec;
        node.incarnation = Some(incarnation);
        node.paused = false;
        node.stats.starts += 1;
        self.trace.mix(&[
            b"spawn",
            &now.as_micros().to_be_bytes(),
            &node_bytes(id),
            &incarnation.to_bytes(),
            &seed.to_be_bytes(),
        ]);
        self.trace
            .line(now, || format!("start {id} {incarnation:?}"));
        self.after_input(id);
        incarnation
    }

    fn crash_inner(&mut self, id: NodeId) -> bool {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id).filter(|n| n.is_up()) else {
            return false;
        };
        node.core = None;
        node.incarnation = None;
        node.paused = false;
        node.stats.vanished += node.buffer.len() as u64;
        node.buffer.clear();
        node.buffer_bytes = 0;
        node.stats.crashes += 1;
        node.timer.deadline = None;
        if node.timer.entry.take().is_some() {
            node.timer.gen += 1;
            self.live_timers -= 1;
        }
        self.trace
            .mix(&[b"crash", &now.as_micros().to_be_bytes(), &node_bytes(id)]);
        self.trace.line(now, || format!("crash {id}"));
        true
    }

    fn restart_inner(&mut self, id: NodeId) -> Incarnation {
        if !self.nodes.contains_key(&id) {
            self.fail(format!("restart({id}): no such node (use add_node)"));
        }
        self.crash_inner(id);
        self.spawn(id)
    }

    fn pause_inner(&mut self, id: NodeId) -> bool {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id).filter(|n| n.is_running()) else {
            return false;
        };
        node.paused = true;
        node.stats.pauses += 1;
        self.trace
            .mix(&[b"pause", &now.as_micros().to_be_bytes(), &node_bytes(id)]);
        self.trace.line(now, || format!("pause {id}"));
        true
    }

    fn resume_inner(&mut self, id: NodeId) -> bool {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id).filter(|n| n.is_up() && n.paused) else {
            return false;
        };
        node.paused = false;
        let queued = std::mem::take(&mut node.buffer);
        node.buffer_bytes = 0;
        let timer_first = match self.config.resume_order {
            ResumeOrder::PacketsFirst => false,
            ResumeOrder::TimerFirst => true,
            ResumeOrder::Random => self.rng.random::<bool>(),
        };
        self.trace.mix(&[
            b"resume",
            &now.as_micros().to_be_bytes(),
            &node_bytes(id),
            &[u8::from(timer_first)],
        ]);
        self.trace
            .line(now, || format!("resume {id} ({} queued)", queued.len()));
        if timer_first {
            self.fire_if_due(id);
        }
        for item in queued {
            match item {
                Buffered::Datagram(peer, bytes) => self.deliver_now(id, peer, &bytes),
                Buffered::Unreachable(dest) => self.unreachable_now(id, dest),
            }
        }
        if !timer_first {
            self.fire_if_due(id);
        }
        // Make sure a timer entry exists for a deadline set before the pause.
        let deadline = self.nodes.get(&id).and_then(|n| n.timer.deadline);
        self.arm_timer(id, deadline);
        true
    }

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

    // ----- internals: timers ------------------------------------------------

    /// Records the core's deadline and makes sure a heap entry fires no
    /// later than it.
    fn arm_timer(&mut self, id: NodeId, deadline: Option<Instant>) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let slot = &mut node.timer;
        slot.deadline = deadline;
        match deadline {
            None => {
                if slot.entry.take().is_some() {
                    slot.gen += 1;
                    self.live_timers -= 1;
                }
            }
            Some(d) => {
                let d = d.max(now);
                if matches!(slot.entry, Some(e) if e <= d) {
                    // The existing entry fires first and re-checks.
                    return;
                }
                if slot.entry.is_some() {
                    self.live_timers -= 1;
                }
                slot.gen += 1;
                slot.entry = Some(d);
                let gen = slot.gen;
                self.live_timers += 1;
                self.push(d, Ev::Timer { node: id, gen });
            }
        }
    }

    fn on_timer(&mut self, id: NodeId) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        // The entry is consumed (pop_live checked that it was the live one).
        node.timer.entry = None;
        self.live_timers -= 1;
        if node.paused {
            // Overdue: fires at resume.
            return;
        }
        let deadline = node.timer.deadline;
        match deadline {
            Some(d) if d > now => self.arm_timer(id, Some(d)),
            Some(_) => self.fire_if_due(id),
            None => {}
        }
    }

    fn fire_if_due(&mut self, id: NodeId) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.timer.deadline.is_some_and(|d| d <= now) {
            return;
        }
        let Some(core) = node.core.as_mut() else {
            return;
        };
        node.stats.timeouts += 1;
        core.handle_timeout(now);
        self.trace.line(now, || format!("timeout {id}"));
        self.after_input(id);
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
    fn after_input(&mut self, id: NodeId) {
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

    fn on_deliver(&mut self, from: NodeId, to: NodeId, bytes: Vec<u8>, unicast: bool) {
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

    fn on_unreachable(&mut self, to: NodeId, dest: NodeId) {
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
    fn deliver_now(&mut self, to: NodeId, peer: NodeId, bytes: &[u8]) {
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
                        body: packet.body,
                        peer,
                        datagram: bytes,
                    },
                );
                self.trace.line(now, || {
                    let what = C::describe_packet(packet.body)
                        .unwrap_or_else(|| format!("{} bytes", bytes.len()));
                    format!("deliver {} -> {to} ({what})", h.source)
                });
                self.after_input(to);
            }
        }
    }

    /// Hands an unreachable report to a running node.
    fn unreachable_now(&mut self, to: NodeId, dest: NodeId) {
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
