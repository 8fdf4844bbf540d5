//! Invariant checkers (DESIGN.md section 3: "invariant checkers ... run
//! after every step").
//!
//! A checker is an [`Invariant`] (or a closure given to
//! [`super::Simulator::add_checker`]). The simulator runs every checker after
//! every step and after every direct input (`with_core`, `add_node`,
//! `restart`, `resume`), handing it a read-only [`CheckView`]. A checker that
//! returns `Err` fails the run: the simulator panics with the checker's
//! name, the message, the virtual time, the tail of the trace (if enabled)
//! and the one-line replay.

use super::node::NodeStats;
use super::Simulator;
use crate::id::{Incarnation, NodeId};
use crate::sansio::Core;
use crate::time::Instant;

/// An invariant over the whole simulation, checked after every step.
pub trait Invariant<C: Core> {
    /// A short name for failure messages.
    fn name(&self) -> &str;

    /// Checks the invariant; `Err` explains the violation.
    fn check(&mut self, view: &CheckView<'_, C>) -> Result<(), String>;
}

/// A closure with a name, as an [`Invariant`].
pub(crate) struct FnInvariant<F> {
    pub(crate) name: String,
    pub(crate) f: F,
}

impl<C, F> Invariant<C> for FnInvariant<F>
where
    C: Core,
    F: FnMut(&CheckView<'_, C>) -> Result<(), String>,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&mut self, view: &CheckView<'_, C>) -> Result<(), String> {
        (self.f)(view)
    }
}

/// Read access to the simulation for a checker.
pub struct CheckView<'a, C: Core> {
    pub(crate) sim: &'a Simulator<C>,
    pub(crate) new_events: &'a [(Instant, NodeId, C::Event)],
}

/// One node as a checker sees it.
pub struct NodeView<'a, C> {
    /// The node's address.
    pub id: NodeId,
    /// The current life's incarnation (`None` while crashed).
    pub incarnation: Option<Incarnation>,
    /// Whether the node is paused (it still has its state).
    pub paused: bool,
    /// The core, if the node is up (running or paused).
    pub core: Option<&'a C>,
}

impl<C> NodeView<'_, C> {
    /// Up: started and not crashed (maybe paused).
    pub fn is_up(&self) -> bool {
        self.core.is_some()
    }

    /// Up and not paused.
    pub fn is_running(&self) -> bool {
        self.core.is_some() && !self.paused
    }
}

impl<'a, C: Core> CheckView<'a, C> {
    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.sim.now()
    }

    /// Every node ever added, in address order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeView<'a, C>> + 'a {
        let sim: &'a Simulator<C> = self.sim;
        sim.nodes().map(move |id| NodeView {
            id,
            incarnation: sim.incarnation(id),
            paused: sim.is_paused(id),
            core: sim.core(id),
        })
    }

    /// The core of `id`, if it is up (running or paused).
    pub fn core(&self, id: NodeId) -> Option<&'a C> {
        self.sim.core(id)
    }

    /// Whether `id` is up (running or paused).
    pub fn is_up(&self, id: NodeId) -> bool {
        self.sim.is_up(id)
    }

    /// Whether `id` is paused.
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.sim.is_paused(id)
    }

    /// The incarnation of the current life of `id`, if up.
    pub fn incarnation(&self, id: NodeId) -> Option<Incarnation> {
        self.sim.incarnation(id)
    }

    /// Whether partitions and blocks let datagrams from `from` reach `to`
    /// (link loss and clogs aside).
    pub fn can_reach(&self, from: NodeId, to: NodeId) -> bool {
        self.sim.can_reach(from, to)
    }

    /// The counters of `id`.
    pub fn stats(&self, id: NodeId) -> Option<&'a NodeStats> {
        self.sim.node_stats(id)
    }

    /// The core events recorded since checkers last ran, in order.
    pub fn new_events(&self) -> &'a [(Instant, NodeId, C::Event)] {
        self.new_events
    }

    /// The whole simulator, read-only.
    pub fn sim(&self) -> &'a Simulator<C> {
        self.sim
    }
}
