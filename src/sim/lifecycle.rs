//! The node lifecycle in the simulator: a node's lives and its one timer.
//!
//! A node is added once and then started, crashed (SIGKILL: its core, timer
//! and socket buffer are dropped), restarted (a fresh core from the factory
//! with a new, later [`Incarnation`]), paused (SIGSTOP: datagrams queue in its
//! socket buffer, its timer does not fire) and resumed (SIGCONT: the queue
//! and the overdue timer are handled at the resume time, in the
//! [`ResumeOrder`] of the run). The timer keeps one live heap entry per node,
//! re-armed after every input from the core's [`Core::poll_timeout`].

use super::datapath::Ev;
use super::is_group;
use super::node::{Buffered, Node, NodeSpawn};
use super::trace::node_bytes;
use super::{ResumeOrder, Simulator};
use crate::id::{Incarnation, NodeId};
use crate::sansio::Core;
use crate::time::Instant;
use crate::wire::{AuthConfig, WireCodec};
use rand::{Rng, RngCore};

impl<C: Core> Simulator<C> {
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

    pub(super) fn crash_inner(&mut self, id: NodeId) -> bool {
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

    pub(super) fn restart_inner(&mut self, id: NodeId) -> Incarnation {
        if !self.nodes.contains_key(&id) {
            self.fail(format!("restart({id}): no such node (use add_node)"));
        }
        self.crash_inner(id);
        self.spawn(id)
    }

    pub(super) fn pause_inner(&mut self, id: NodeId) -> bool {
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

    pub(super) fn resume_inner(&mut self, id: NodeId) -> bool {
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

    // ----- internals: timers ------------------------------------------------

    /// Records the core's deadline and makes sure a heap entry fires no
    /// later than it.
    pub(super) fn arm_timer(&mut self, id: NodeId, deadline: Option<Instant>) {
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

    pub(super) fn on_timer(&mut self, id: NodeId) {
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
}
