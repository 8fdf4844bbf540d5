//! The core-set protocol in the deterministic simulator (issue 4; DESIGN.md
//! sections 5 and 9; seed 003 Appendix C).
//!
//! `coreset_many_seeds` runs 2000 seeds (more with `SIM_RUNS`). Each seed
//! draws a group of 3 to 16 mservers, a link loss of 0 to 20% (with some
//! duplication and reordering), and maybe one "fmserver" that waits before
//! every COMMIT it coordinates (the thesis's test 6). During a 2.5 s chaos
//! phase it starts (joins), crashes, restarts at once (kill + new join),
//! pauses (SIGSTOP, 100 ms to 1.5 s), and asks members to leave; it starts
//! several members within the same millisecond; and it crashes or pauses
//! coordinators at every phase: in phase I after the first ACK, in the
//! commit delay, and while taking over from a failed coordinator. The
//! four view invariants (`membership::coreset::invariants`: (a) same view
//! id, same table; (b) view numbers go up by one per life; (c) no view
//! without oneself; (d) forked sequences end a life within 5 s) run after
//! every step. Then a healed phase: no loss, every paused member resumed,
//! and within `HEAL_BOUND` of virtual time every live member is in one
//! view that contains exactly the live members (with their current
//! incarnations), and no fork is left open.
//!
//! The daemon around each core is emulated the way `mserver` behaves: a
//! member that reports `Left` exits (its node crashes), and optionally the
//! OS-level watch on the clockwise neighbour (`Watch` events) reports a
//! crashed neighbour at once (a refused TCP connection).
//!
//! The targeted tests replay the thesis's Appendix C scenarios and the
//! issue's extra ones, and `sim_latencies` prints the virtual-time figures
//! quoted in `docs/protocol.md`.
//!
//! `SIM_SEED=N cargo test --test sim_coreset -- coreset_many_seeds` replays
//! one seed.

use membership::coreset::invariants::{self, SequenceReport};
use membership::coreset::{
    ChangeRole, CoreSet, CoreSetConfig, CoreSetEvent, CoreSetStats, GroupRef, Member, TreeOp,
};
use membership::id::{Incarnation, NodeId, ViewId};
use membership::sansio::Core;
use membership::sim::{self, LinkConfig, ResumeOrder, SimConfig, Simulator};
use membership::sim_replay;
use membership::time::Instant;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const GROUP: &str = "sim";
const CHAOS: Duration = Duration::from_millis(2500);
/// Healed phase: every live member in one view within this much virtual time.
const HEAL_BOUND: Duration = Duration::from_secs(10);
/// (d): a fork must end one of the two lives within this.
const FORK_BOUND: Duration = Duration::from_secs(5);

fn group_addr() -> NodeId {
    NodeId::v4(239, 9, 9, 9, 7000)
}

fn node(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7000)
}

/// Per-node settings of a test.
#[derive(Clone, Default)]
struct Setup {
    /// Nodes that wait this long before every COMMIT (fmservers).
    commit_delay: BTreeMap<NodeId, Duration>,
    /// Group address per node (default `group_addr()`).
    group_of: BTreeMap<NodeId, NodeId>,
}

/// A simulator of `CoreSet`s with the daemon around each emulated.
struct Harness {
    sim: Simulator<CoreSet>,
    report: SequenceReport,
    /// Watcher -> watched (from `Watch` events).
    watches: BTreeMap<NodeId, NodeId>,
    /// Report a crash to the crashed node's watchers at once.
    emulate_watch: bool,
    /// Every event drained, in order.
    log: Vec<(Instant, NodeId, CoreSetEvent)>,
    keep_log: bool,
    /// Nodes whose daemon exited after `Left`.
    gone: BTreeSet<NodeId>,
    /// Counters of lives that ended (a crash drops the core).
    ended: CoreSetStats,
    /// Tree changes dropped at the base they would apply to.
    tree_refused: u64,
    setup: Setup,
}

impl Harness {
    fn new(seed: u64, test: &str, link: LinkConfig, setup: Setup, emulate_watch: bool) -> Self {
        Self::build(seed, test, link, setup, emulate_watch, true)
    }

    fn build(
        seed: u64,
        test: &str,
        link: LinkConfig,
        setup: Setup,
        emulate_watch: bool,
        unreachable: bool,
    ) -> Self {
        let mut config = SimConfig::new(seed, sim_replay!(test))
            .with_link(link)
            .with_unreachable(unreachable);
        if let Ok(lines) = std::env::var("SIM_TRACE") {
            // Readable trace lines in failure messages, for replays.
            config = config.with_trace_tail(lines.parse().unwrap_or(300));
        }
        Self::build_with(config, setup, emulate_watch)
    }

    fn build_with(config: SimConfig, setup: Setup, emulate_watch: bool) -> Self {
        let s = setup.clone();
        let mut sim = Simulator::new(config, move |spawn| {
            let g = s
                .group_of
                .get(&spawn.id)
                .copied()
                .unwrap_or_else(group_addr);
            let mut c = CoreSetConfig::new(spawn.id, spawn.incarnation, GROUP, g);
            c.commit_delay = s.commit_delay.get(&spawn.id).copied();
            match CoreSet::new(c, spawn.now, spawn.seed) {
                Ok(core) => core,
                Err(e) => panic!("config: {e}"),
            }
        });
        sim.track_incarnation(|e| match e {
            CoreSetEvent::NewIncarnation(i) => Some(*i),
            _ => None,
        });
        let report = invariants::add_all(&mut sim, FORK_BOUND);
        Harness {
            sim,
            report,
            watches: BTreeMap::new(),
            emulate_watch,
            log: Vec::new(),
            keep_log: true,
            gone: BTreeSet::new(),
            ended: CoreSetStats::default(),
            tree_refused: 0,
            setup,
        }
    }

    fn group_of(&self, n: NodeId) -> NodeId {
        self.setup
            .group_of
            .get(&n)
            .copied()
            .unwrap_or_else(group_addr)
    }

    /// Starts `n` (a new node, or a new life of a crashed or exited one).
    fn start(&mut self, n: NodeId) {
        self.gone.remove(&n);
        if self.sim.nodes().any(|x| x == n) {
            self.note_end(n);
            self.sim.restart(n);
        } else {
            let g = self.group_of(n);
            self.sim.join_group(n, g);
            self.sim.add_node(n);
        }
        self.drain();
    }

    fn note_end(&mut self, n: NodeId) {
        if let Some(c) = self.sim.core(n) {
            add_stats(&mut self.ended, c.stats());
        }
    }

    fn crash(&mut self, n: NodeId) {
        self.note_end(n);
        if !self.sim.crash(n) {
            return;
        }
        self.watches.remove(&n);
        if self.emulate_watch {
            let watchers: Vec<NodeId> = self
                .watches
                .iter()
                .filter(|(_, t)| **t == n)
                .map(|(w, _)| *w)
                .collect();
            let at = self.sim.now() + Duration::from_micros(300);
            for w in watchers {
                self.sim.schedule(at, move |s| {
                    let _ = s.with_core(w, |c, now| c.handle_unreachable(now, n));
                });
            }
        }
    }

    fn leave(&mut self, n: NodeId) {
        let _ = self.sim.with_core(n, |c, now| c.leave(now));
        self.drain();
    }

    /// Handles the events like the daemons would.
    fn drain(&mut self) {
        for (t, n, e) in self.sim.take_events() {
            match &e {
                CoreSetEvent::Watch(Some(target)) => {
                    self.watches.insert(n, *target);
                }
                CoreSetEvent::Watch(None) => {
                    self.watches.remove(&n);
                }
                CoreSetEvent::TreeRefused { .. } => self.tree_refused += 1,
                CoreSetEvent::Left => {
                    // The daemon exits.
                    self.note_end(n);
                    self.sim.crash(n);
                    self.watches.remove(&n);
                    self.gone.insert(n);
                }
                _ => {}
            }
            if self.keep_log {
                self.log.push((t, n, e));
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.sim.now() + d;
        while self.sim.now() < end {
            let step = Duration::from_millis(5).min(end - self.sim.now());
            self.sim.run_for(step);
            self.drain();
        }
    }

    /// Runs until `cond` holds (checked after every event) or `limit`.
    fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Self) -> bool) -> bool {
        let end = self.sim.now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            match self.sim.next_event_time() {
                Some(t) if t <= end => {
                    self.sim.step();
                    self.drain();
                }
                _ => {
                    self.sim.run_until(end);
                    self.drain();
                    return cond(self);
                }
            }
        }
    }

    /// Live members: up, running, not exited.
    fn live(&self) -> Vec<NodeId> {
        self.sim
            .up_nodes()
            .filter(|n| self.sim.is_running(*n) && !self.gone.contains(n))
            .collect()
    }

    /// Every node of `nodes` is an idle member of one view whose members
    /// are exactly `nodes`, in their current lives.
    fn one_view_of(&self, nodes: &[NodeId]) -> bool {
        let mut view = None;
        for &n in nodes {
            let Some(c) = self.sim.core(n) else {
                return false;
            };
            let (Some(v), Some(t)) = (c.view(), c.table()) else {
                return false;
            };
            if c.change_role().is_some() || view.is_some_and(|x| x != v) {
                return false;
            }
            view = Some(v);
            if t.len() != nodes.len() {
                return false;
            }
            for r in &t.rows {
                let cur = self.sim.core(r.addr).map(|c| c.incarnation());
                if !nodes.contains(&r.addr) || cur != Some(r.incarnation) {
                    return false;
                }
            }
        }
        true
    }

    fn converged(&self) -> bool {
        let live = self.live();
        !live.is_empty() && self.one_view_of(&live)
    }

    /// The view installs in the log, by node: (time, view number, members).
    /// Pauses `x` (SIGSTOP) and resumes it `d` later.
    fn pause_for(&mut self, x: NodeId, d: Duration) {
        self.sim.pause(x);
        let back = self.sim.now() + d;
        self.sim.schedule(back, move |s| {
            s.resume(x);
        });
    }

    /// Each node's current incarnation (its life), in the order given.
    fn lives(&self, nodes: &[NodeId]) -> Vec<Option<Incarnation>> {
        nodes
            .iter()
            .map(|n| self.sim.core(*n).map(|c| c.incarnation()))
            .collect()
    }

    /// Every view install and exclusion so far, one line each (for
    /// failure messages).
    fn view_story(&self) -> Vec<String> {
        self.log
            .iter()
            .filter(|(_, _, e)| {
                matches!(
                    e,
                    CoreSetEvent::Excluded { .. } | CoreSetEvent::ViewInstalled { .. }
                )
            })
            .map(|(t, n, e)| match e {
                CoreSetEvent::ViewInstalled { view, members, .. } => {
                    format!("{t:?} {n} view {} of {}", view.number, members.len())
                }
                other => format!("{t:?} {n} {other:?}"),
            })
            .collect()
    }

    fn installs(&self, n: NodeId) -> Vec<(Instant, u64, Vec<Member>)> {
        self.log
            .iter()
            .filter(|(_, x, _)| *x == n)
            .filter_map(|(t, _, e)| match e {
                CoreSetEvent::ViewInstalled { view, members, .. } => {
                    Some((*t, view.number, members.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// When `n` first installed a view whose members satisfy `p`, at or
    /// after `from`.
    fn installed_when(
        &self,
        n: NodeId,
        from: Instant,
        p: impl Fn(&[Member]) -> bool,
    ) -> Option<Instant> {
        self.installs(n)
            .into_iter()
            .find(|(t, _, m)| *t >= from && p(m))
            .map(|(t, _, _)| t)
    }

    /// The stats of every life, ended or running.
    fn total_stats(&self) -> CoreSetStats {
        let mut s = self.ended.clone();
        for n in self.sim.up_nodes() {
            if let Some(c) = self.sim.core(n) {
                add_stats(&mut s, c.stats());
            }
        }
        s
    }
}

fn add_stats(into: &mut CoreSetStats, s: &CoreSetStats) {
    into.views_installed += s.views_installed;
    into.tree_commits += s.tree_commits;
    into.changes_coordinated += s.changes_coordinated;
    into.founded += s.founded;
    into.takeovers += s.takeovers;
    into.compressed_takeovers += s.compressed_takeovers;
    into.elections += s.elections;
    into.aborts += s.aborts;
    into.inferred_commits += s.inferred_commits;
    into.excluded += s.excluded;
    into.merge_offers += s.merge_offers;
    into.merges_coordinated += s.merges_coordinated;
    into.merges_absorbed += s.merges_absorbed;
    into.monitor_failures += s.monitor_failures;
    into.hint_failures += s.hint_failures;
    into.silent_failures += s.silent_failures;
    into.restarts_detected += s.restarts_detected;
    into.unreachable_hints += s.unreachable_hints;
    into.late_timers += s.late_timers;
    into.overdue += s.overdue;
    into.drops.unacked_commit += s.drops.unacked_commit;
    into.drops.stale_view += s.drops.stale_view;
    into.drops.non_member += s.drops.non_member;
    into.drops.stale_incarnation += s.drops.stale_incarnation;
    into.drops.commit_mismatch += s.drops.commit_mismatch;
    into.drops.malformed += s.drops.malformed;
    into.sent.busy += s.sent.busy;
    into.sent.abort += s.sent.abort;
    into.sent.co_fail += s.sent.co_fail;
    into.sent.not_member += s.sent.not_member;
}

fn members_are(m: &[Member], nodes: &[NodeId]) -> bool {
    m.len() == nodes.len() && nodes.iter().all(|n| m.iter().any(|x| x.addr == *n))
}

/// Starts `nodes` one after the other and waits until they are one view.
fn form_group(h: &mut Harness, nodes: &[NodeId]) {
    for &n in nodes {
        h.start(n);
        let upto: Vec<NodeId> = nodes
            .iter()
            .copied()
            .take_while(|x| *x != n)
            .chain([n])
            .collect();
        let ok = h.run_until(Duration::from_secs(5), |h| h.one_view_of(&upto));
        assert!(ok, "{n} did not join {upto:?}");
    }
    h.run_for(Duration::from_millis(300));
}

// ----- the many-seed chaos test --------------------------------------------

/// What the chaos runs exercised, summed over seeds.
#[derive(Default, Debug)]
struct Tally {
    seeds: u64,
    starts: u64,
    simultaneous_starts: u64,
    crashes: u64,
    restarts: u64,
    pauses: u64,
    leaves: u64,
    coordinator_kills_phase1: u64,
    coordinator_kills_delay: u64,
    coordinator_kills_takeover: u64,
    coordinator_pauses: u64,
    lossy_seeds: u64,
    max_members: usize,
    max_heal: Duration,
    max_heal_seed: u64,
    forks: u64,
    fork_seed: u64,
    stats: CoreSetStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trap {
    /// A coordinator in phase I that has at least one ACK.
    PhaseOne,
    /// A coordinator waiting its commit delay.
    Delaying,
    /// A member that took over from a failed coordinator.
    Takeover,
}

fn coordinator_in(h: &Harness, trap: Trap) -> Option<NodeId> {
    h.sim.up_nodes().filter(|n| h.sim.is_running(*n)).find(|n| {
        match h.sim.core(*n).and_then(|c| c.change_role()) {
            Some(ChangeRole::Coordinator {
                takeover,
                delaying,
                acked,
                ..
            }) => match trap {
                Trap::PhaseOne => !delaying && acked >= 1 && !takeover,
                Trap::Delaying => delaying,
                Trap::Takeover => takeover && !delaying,
            },
            _ => false,
        }
    })
}

fn chaos_run(seed: u64, test: &str, tally: &mut Tally) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00C0_5E75);
    let n_max: u8 = if rng.random_bool(0.25) {
        rng.random_range(9..=16)
    } else {
        rng.random_range(3..=8)
    };
    let nodes: Vec<NodeId> = (1..=n_max).map(node).collect();
    let loss = if rng.random_bool(0.3) {
        0.0
    } else {
        rng.random_range(0.0..=0.2)
    };
    let mut link = LinkConfig::lan().with_loss(loss);
    link.duplicate = if rng.random_bool(0.3) { 0.02 } else { 0.0 };
    link.reorder = if rng.random_bool(0.3) { 0.05 } else { 0.0 };
    link.reorder_delay = Duration::from_millis(2);
    let mut setup = Setup::default();
    if rng.random_bool(0.25) {
        let f = nodes[0];
        setup
            .commit_delay
            .insert(f, Duration::from_millis(rng.random_range(50..=900)));
    }
    let emulate_watch = rng.random_bool(0.5);
    let mut h = Harness::new(seed, test, link.clone(), setup, emulate_watch);
    if rng.random_bool(0.3) {
        // A resumed process may see its overdue timers before its queued
        // datagrams.
        let mut c = h.sim.config().clone();
        c.resume_order = ResumeOrder::Random;
        h = Harness::build_with(c, h.setup.clone(), emulate_watch);
    }
    h.keep_log = false;
    tally.seeds += 1;
    tally.max_members = tally.max_members.max(nodes.len());
    if loss > 0.0 {
        tally.lossy_seeds += 1;
    }

    // Initial members: all at once (same millisecond) or staggered.
    let first = rng.random_range(1..=nodes.len());
    if rng.random_bool(0.3) {
        tally.simultaneous_starts += 1;
        for &n in &nodes[..first] {
            h.start(n);
            tally.starts += 1;
        }
    } else {
        for &n in &nodes[..first] {
            h.start(n);
            tally.starts += 1;
            let gap = rng.random_range(0..=150);
            h.run_for(Duration::from_millis(gap));
        }
    }

    let end = h.sim.now() + CHAOS;
    let mut paused: Vec<(NodeId, Instant)> = Vec::new();
    while h.sim.now() < end {
        let gap = Duration::from_millis(rng.random_range(20..=300));
        h.run_for(gap.min(end - h.sim.now()));
        // Resume members whose pause is over.
        let now = h.sim.now();
        paused.retain(|(n, until)| {
            if *until <= now {
                h.sim.resume(*n);
                false
            } else {
                true
            }
        });
        h.drain();
        let up: Vec<NodeId> = h
            .sim
            .up_nodes()
            .filter(|n| h.sim.is_running(*n) && !h.gone.contains(n))
            .collect();
        let down: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| !h.sim.is_up(*n) || h.gone.contains(n))
            .collect();
        match rng.random_range(0..100) {
            0..=24 => {
                if let Some(&n) = pick(&mut rng, &down) {
                    h.start(n);
                    tally.starts += 1;
                }
            }
            25..=36 if up.len() > 1 => {
                if let Some(&n) = pick(&mut rng, &up) {
                    h.crash(n);
                    tally.crashes += 1;
                }
            }
            37..=44 => {
                // Kill and restart at once (a new life at the same address).
                if let Some(&n) = pick(&mut rng, &up) {
                    h.crash(n);
                    h.start(n);
                    tally.restarts += 1;
                }
            }
            45..=56 if up.len() > 1 => {
                if let Some(&n) = pick(&mut rng, &up) {
                    let d = Duration::from_millis(rng.random_range(100..=1500));
                    h.sim.pause(n);
                    paused.push((n, h.sim.now() + d));
                    tally.pauses += 1;
                }
            }
            57..=64 => {
                let members: Vec<NodeId> = up
                    .iter()
                    .copied()
                    .filter(|n| h.sim.core(*n).is_some_and(|c| c.is_member()))
                    .collect();
                if let Some(&n) = pick(&mut rng, &members) {
                    h.leave(n);
                    tally.leaves += 1;
                }
            }
            65..=74 => {
                // Several newcomers within the same millisecond.
                let k = rng.random_range(2..=4);
                for &n in down.iter().take(k) {
                    h.start(n);
                    tally.starts += 1;
                }
            }
            75..=99 => {
                // A trap: crash (or pause) a coordinator at a phase.
                let trap = match rng.random_range(0..3) {
                    0 => Trap::PhaseOne,
                    1 => Trap::Delaying,
                    _ => Trap::Takeover,
                };
                let limit = Duration::from_millis(rng.random_range(100..=800));
                let limit = limit.min(end - h.sim.now());
                // Make a change likely: a newcomer, or a crash.
                if let Some(&n) = pick(&mut rng, &down) {
                    h.start(n);
                    tally.starts += 1;
                }
                let hit = h.run_until(limit, |h| coordinator_in(h, trap).is_some());
                if hit {
                    if let Some(c) = coordinator_in(&h, trap) {
                        if rng.random_bool(0.8) {
                            h.crash(c);
                            match trap {
                                Trap::PhaseOne => tally.coordinator_kills_phase1 += 1,
                                Trap::Delaying => tally.coordinator_kills_delay += 1,
                                Trap::Takeover => tally.coordinator_kills_takeover += 1,
                            }
                        } else {
                            let d = Duration::from_millis(rng.random_range(300..=1500));
                            h.sim.pause(c);
                            paused.push((c, h.sim.now() + d));
                            tally.coordinator_pauses += 1;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // Healed phase.
    let mut clean = link;
    clean.loss = 0.0;
    clean.duplicate = 0.0;
    h.sim.set_default_link(clean);
    for (n, _) in paused.drain(..) {
        h.sim.resume(n);
    }
    let healed_from = h.sim.now();
    let deadline = healed_from + HEAL_BOUND;
    let mut ok = false;
    while h.sim.now() < deadline {
        if h.live().is_empty() {
            // Everyone left or crashed: an operator starts one again.
            h.start(nodes[0]);
        }
        let left = deadline - h.sim.now();
        ok = h.run_until(left, |h| h.converged() || h.live().is_empty());
        if ok && h.converged() {
            break;
        }
        ok = false;
    }
    if !ok {
        let mut s = String::new();
        for n in h.sim.up_nodes() {
            if let Some(c) = h.sim.core(n) {
                s.push_str(&format!(
                    "\n  {n}: {:?} role {:?}",
                    c.snapshot(h.sim.now()),
                    c.change_role()
                ));
            }
        }
        h.sim.fail(format!(
            "no single view of the live members {:?} within {HEAL_BOUND:?}:{s}",
            h.live()
        ));
    }
    let heal = h.sim.now() - healed_from;
    if heal > tally.max_heal {
        tally.max_heal = heal;
        tally.max_heal_seed = seed;
    }
    // Let forks with a dead side resolve, then none may be open.
    h.run_for(Duration::from_millis(50));
    let open = h.report.open_forks();
    if !open.is_empty() {
        h.sim
            .fail(format!("forks still open after healing: {open:?}"));
    }
    tally.forks += h.report.forks_seen();
    if h.report.forks_seen() > 0 && tally.fork_seed == 0 {
        tally.fork_seed = seed;
    }
    add_stats(&mut tally.stats, &h.total_stats());
    h.sim.trace_hex()
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, v: &'a [T]) -> Option<&'a T> {
    if v.is_empty() {
        None
    } else {
        v.get(rng.random_range(0..v.len()))
    }
}

#[test]
fn coreset_many_seeds() {
    let replay = sim_replay!("coreset_many_seeds");
    let mut tally = Tally::default();
    sim::run_seeds(&replay, 2000, |seed| {
        chaos_run(seed, "coreset_many_seeds", &mut tally);
    });
    eprintln!("{tally:#?}");
    if tally.seeds >= 200 {
        // Not vacuous: every fault kind happened, and the protocol used
        // every path.
        assert!(tally.crashes > 0 && tally.restarts > 0 && tally.pauses > 0);
        assert!(tally.leaves > 0 && tally.simultaneous_starts > 0);
        assert!(tally.coordinator_kills_phase1 > 0);
        assert!(tally.coordinator_kills_delay > 0);
        assert!(tally.coordinator_kills_takeover > 0);
        let s = &tally.stats;
        assert!(s.takeovers > 0 && s.elections > 0 && s.excluded > 0);
        assert!(s.hint_failures > 0 && s.monitor_failures > 0 && s.silent_failures > 0);
        assert!(s.late_timers > 0 && s.restarts_detected > 0);
    }
}

// ----- tree changes racing faults (docs/hierarchy.md, build step 2) ----------

/// What the tree-change runs exercised, summed over seeds.
#[derive(Default, Debug)]
struct TreeTally {
    seeds: u64,
    submitted: u64,
    refused_at_submit: u64,
    /// Tree changes installed, summed over members.
    installed: u64,
    dropped_at_base: u64,
    crashes: u64,
    coordinator_kills: u64,
    app_changes: u64,
}

/// A random tree change about a member of `c`'s view, as an mserver would
/// submit it: flag or unflag a member, or retarget the parent group.
fn random_tree_op(rng: &mut ChaCha8Rng, c: &CoreSet) -> Option<TreeOp> {
    let table = c.table()?;
    let rank = pick(rng, &table.rows)?.rank;
    let group = |i: u8| GroupRef::new(format!("up-{i}"), NodeId::v4(239, 9, 9, 10 + i, 7000)).ok();
    Some(match rng.random_range(0..10) {
        0..=4 => TreeOp::SetParent {
            rank,
            parent: true,
            declined: false,
            group: group(rng.random_range(0..2)),
        },
        5..=7 => TreeOp::SetParent {
            rank,
            parent: false,
            declined: rng.random_bool(0.5),
            group: None,
        },
        _ => TreeOp::SetParentGroup {
            group: group(rng.random_range(0..2)),
        },
    })
}

/// One seed: a group of 3 to 8 under 0 to 10% loss takes tree changes
/// submitted at random members, racing crashes, restarts, application
/// changes and coordinators killed in phase I; invariants (a)-(d) run
/// after every step (the tree record is part of the table (a) compares).
/// After the faults every live member holds one view with one table, and
/// the tree record is one every member could have validated: no more
/// parents than the group keeps, bits only for members.
fn tree_race_run(seed: u64, tally: &mut TreeTally) {
    let test = "tree_changes_race_faults";
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7EEE);
    let nodes: Vec<NodeId> = (1..=rng.random_range(3..=8u8)).map(node).collect();
    let loss = if rng.random_bool(0.4) {
        0.0
    } else {
        rng.random_range(0.0..=0.1)
    };
    let link = LinkConfig::lan().with_loss(loss);
    let mut h = Harness::new(
        seed,
        test,
        link.clone(),
        Setup::default(),
        rng.random_bool(0.5),
    );
    h.keep_log = false;
    tally.seeds += 1;
    form_group(&mut h, &nodes);
    for _ in 0..30 {
        let up = h.live();
        let members: Vec<NodeId> = up
            .iter()
            .copied()
            .filter(|n| h.sim.core(*n).is_some_and(|c| c.is_member()))
            .collect();
        match rng.random_range(0..100) {
            0..=49 => {
                // One to three tree changes at once, at random members.
                for _ in 0..rng.random_range(1..=3) {
                    let Some(&n) = pick(&mut rng, &members) else {
                        break;
                    };
                    let Some(op) = h.sim.core(n).and_then(|c| random_tree_op(&mut rng, c)) else {
                        continue;
                    };
                    tally.submitted += 1;
                    let r = h.sim.with_core(n, |c, now| c.submit_tree(now, op));
                    if matches!(r, Some(Err(_))) {
                        tally.refused_at_submit += 1;
                    }
                }
            }
            50..=59 => {
                if let Some(&n) = pick(&mut rng, &members) {
                    let _ = h
                        .sim
                        .with_core(n, |c, now| c.submit_app(now, b"app".to_vec()));
                    tally.app_changes += 1;
                }
            }
            60..=74 if up.len() > 2 => {
                if let Some(&n) = pick(&mut rng, &up) {
                    h.crash(n);
                    tally.crashes += 1;
                }
            }
            75..=84 => {
                let down: Vec<NodeId> = nodes.iter().copied().filter(|n| !up.contains(n)).collect();
                if let Some(&n) = pick(&mut rng, &down) {
                    h.start(n);
                }
            }
            _ if up.len() > 2 => {
                // Kill the coordinator of a tree change in phase I.
                if let Some(&n) = pick(&mut rng, &members) {
                    if let Some(op) = h.sim.core(n).and_then(|c| random_tree_op(&mut rng, c)) {
                        let _ = h.sim.with_core(n, |c, now| c.submit_tree(now, op));
                    }
                }
                let limit = Duration::from_millis(50);
                if h.run_until(limit, |h| coordinator_in(h, Trap::PhaseOne).is_some()) {
                    if let Some(c) = coordinator_in(&h, Trap::PhaseOne) {
                        h.crash(c);
                        tally.coordinator_kills += 1;
                    }
                }
            }
            _ => {}
        }
        h.drain();
        let gap = Duration::from_millis(rng.random_range(0..=120));
        h.run_for(gap);
    }
    let mut clean = link;
    clean.loss = 0.0;
    h.sim.set_default_link(clean);
    if h.live().is_empty() {
        h.start(nodes[0]);
    }
    if !h.run_until(HEAL_BOUND, |h| h.converged()) {
        h.sim.fail(format!(
            "no single view of the live members {:?} within {HEAL_BOUND:?}",
            h.live()
        ));
    }
    let live = h.live();
    let tables: Vec<_> = live
        .iter()
        .filter_map(|n| h.sim.core(*n).and_then(|c| c.table().cloned()))
        .collect();
    if tables.windows(2).any(|w| w[0] != w[1]) {
        h.sim.fail(format!("one view, two tables: {tables:#?}"));
    }
    if let Some(t) = tables.first() {
        if t.validate().is_err() || t.tree.parents().len() > usize::from(t.tree.max_parents) {
            h.sim
                .fail(format!("a tree record no member should accept: {t:#?}"));
        }
    }
    tally.installed += h.total_stats().tree_commits;
    tally.dropped_at_base += h.tree_refused;
}

/// Tree changes racing faults in one group, 300 seeds (more with
/// `SIM_RUNS`); `SIM_SEED=N` replays one.
#[test]
fn tree_changes_race_faults() {
    let replay = sim_replay!("tree_changes_race_faults");
    let mut tally = TreeTally::default();
    sim::run_seeds(&replay, 300, |seed| tree_race_run(seed, &mut tally));
    eprintln!("{tally:#?}");
    if tally.seeds >= 100 {
        assert!(tally.installed > 0 && tally.refused_at_submit > 0 && tally.dropped_at_base > 0);
        assert!(tally.crashes > 0 && tally.coordinator_kills > 0);
    }
}

#[test]
fn coreset_sim_is_deterministic() {
    let replay = sim_replay!("coreset_sim_is_deterministic");
    sim::run_seeds(&replay, 3, |seed| {
        let a = chaos_run(seed, "coreset_sim_is_deterministic", &mut Tally::default());
        let b = chaos_run(seed, "coreset_sim_is_deterministic", &mut Tally::default());
        assert_eq!(a, b, "seed {seed}: two runs, two traces");
    });
}

// ----- Appendix C and the scenarios ----------------------------------

fn nodes(range: std::ops::RangeInclusive<u8>) -> Vec<NodeId> {
    range.map(node).collect()
}

/// A harness with `members` formed into one group (started in order).
fn formed(seed: u64, test: &str, members: &[NodeId], setup: Setup, watch: bool) -> Harness {
    let mut h = Harness::new(seed, test, LinkConfig::lan(), setup, watch);
    form_group(&mut h, members);
    h
}

fn view_number(h: &Harness, n: NodeId) -> u64 {
    h.sim.core(n).and_then(|c| c.view()).map_or(0, |v| v.number)
}

#[test]
fn appendix_c_1_add_member() {
    let mut h = formed(
        1,
        "appendix_c_1_add_member",
        &nodes(1..=3),
        Setup::default(),
        false,
    );
    let before = view_number(&h, node(1));
    let t0 = h.sim.now();
    h.start(node(4));
    let all = nodes(1..=4);
    assert!(h.run_until(Duration::from_secs(1), |h| h.one_view_of(&all)));
    // One change: every member went from the same view to the next one.
    for n in nodes(1..=3) {
        assert_eq!(view_number(&h, n), before + 1, "{n}");
        let t = h.installed_when(n, t0, |m| members_are(m, &all));
        assert!(t.is_some(), "{n} never installed the 4-member view");
    }
    assert_eq!(
        h.sim
            .core(node(4))
            .map(|c| c.snapshot(Instant::ZERO).me.rank),
        Some(3)
    );
}

#[test]
fn appendix_c_2_kill_member() {
    for watch in [false, true] {
        let mut h = formed(
            2,
            "appendix_c_2_kill_member",
            &nodes(1..=4),
            Setup::default(),
            watch,
        );
        let t0 = h.sim.now();
        h.crash(node(3));
        let rest = [node(1), node(2), node(4)];
        assert!(h.run_until(Duration::from_secs(1), |h| h.one_view_of(&rest)));
        for n in rest {
            let failed: Vec<NodeId> = h
                .log
                .iter()
                .filter(|(t, x, _)| *x == n && *t >= t0)
                .filter_map(|(_, _, e)| match e {
                    CoreSetEvent::ViewInstalled { failed, .. } => Some(failed.clone()),
                    _ => None,
                })
                .flatten()
                .map(|m| m.addr)
                .collect();
            assert_eq!(failed, vec![node(3)], "{n}");
        }
    }
}

#[test]
fn appendix_c_3_suspend_until_failed_then_resume() {
    let mut h = formed(
        3,
        "appendix_c_3_suspend",
        &nodes(1..=4),
        Setup::default(),
        false,
    );
    let old = h.sim.core(node(2)).map(|c| c.incarnation()).unwrap();
    let t0 = h.sim.now();
    h.sim.pause(node(2));
    let rest = [node(1), node(3), node(4)];
    assert!(h.run_until(Duration::from_secs(2), |h| h.one_view_of(&rest)));
    assert!(
        h.sim.now() - t0 <= Duration::from_millis(600),
        "silent failure too slow"
    );
    h.run_for(Duration::from_millis(500));
    h.sim.resume(node(2));
    let all = nodes(1..=4);
    assert!(h.run_until(Duration::from_secs(2), |h| h.one_view_of(&all)));
    let c = h.sim.core(node(2)).unwrap();
    assert_ne!(c.incarnation(), old, "rejoined with a new incarnation");
    assert_eq!(c.stats().excluded, 1);
    let events: Vec<&CoreSetEvent> = h
        .log
        .iter()
        .filter(|(t, n, _)| *n == node(2) && *t >= t0)
        .map(|(_, _, e)| e)
        .collect();
    assert!(matches!(
        events.first(),
        Some(CoreSetEvent::Excluded { .. })
    ));
    assert!(events
        .iter()
        .any(|e| matches!(e, CoreSetEvent::NewIncarnation(i) if *i != old)));
    // Nobody ever installed a view with the old life after it was failed.
    let failed_at = h.installed_when(node(1), t0, |m| m.len() == 3).unwrap();
    for (t, _, e) in &h.log {
        if let CoreSetEvent::ViewInstalled { members, .. } = e {
            if *t > failed_at {
                assert!(!members.iter().any(|m| m.incarnation == old));
            }
        }
    }
}

#[test]
fn appendix_c_4_kill_and_immediate_join() {
    // A new mserver joins while a member's failure is undetected.
    let mut h = formed(
        4,
        "appendix_c_4_kill_join",
        &nodes(1..=4),
        Setup::default(),
        false,
    );
    h.crash(node(4));
    h.start(node(5));
    let want = [node(1), node(2), node(3), node(5)];
    assert!(h.run_until(Duration::from_secs(2), |h| h.one_view_of(&want)));
    // A member killed and restarted at once at the same address: the old
    // life is failed, the new one admitted.
    let old = h.sim.core(node(2)).map(|c| c.incarnation()).unwrap();
    h.crash(node(2));
    h.start(node(2));
    assert!(h.run_until(Duration::from_secs(2), |h| h.one_view_of(&want)));
    assert_ne!(h.sim.core(node(2)).map(|c| c.incarnation()), Some(old));
    let restarts: u64 = want
        .iter()
        .filter_map(|n| h.sim.core(*n))
        .map(|c| c.stats().restarts_detected)
        .sum();
    assert!(restarts >= 1);
}

#[test]
fn appendix_c_5_two_groups_side_by_side() {
    // Different group addresses (same name): each group only hears itself.
    let other = NodeId::v4(239, 9, 9, 10, 7000);
    let b: Vec<NodeId> = (11..=13).map(node).collect();
    let mut setup = Setup::default();
    for n in &b {
        setup.group_of.insert(*n, other);
    }
    let mut h = Harness::new(5, "appendix_c_5", LinkConfig::lan(), setup, false);
    let a = nodes(1..=3);
    for i in 0..3 {
        h.start(a[i]);
        h.start(b[i]);
        h.run_for(Duration::from_millis(400));
    }
    assert!(h.run_until(Duration::from_secs(3), |h| h.one_view_of(&a)
        && h.one_view_of(&b)));
    // Changes in one leave the other alone.
    let vb = view_number(&h, b[0]);
    h.crash(a[1]);
    let a2 = [a[0], a[2]];
    assert!(h.run_until(Duration::from_secs(1), |h| h.one_view_of(&a2)));
    h.run_for(Duration::from_millis(500));
    assert_eq!(view_number(&h, b[0]), vb);
    assert!(h.one_view_of(&b));
}

#[test]
fn same_address_other_name_is_ignored() {
    // Two groups on one group address with different names.
    let config = SimConfig::new(6, sim_replay!("same_address_other_name_is_ignored"));
    let mut sim = Simulator::new(config, move |spawn| {
        let name = if spawn.id.addr().ip().to_string().ends_with(".1")
            || spawn.id.addr().ip().to_string().ends_with(".2")
        {
            "alpha"
        } else {
            "beta"
        };
        let c = CoreSetConfig::new(spawn.id, spawn.incarnation, name, group_addr());
        CoreSet::new(c, spawn.now, spawn.seed).expect("config")
    });
    let report = invariants::add_all(&mut sim, FORK_BOUND);
    for i in 1..=4 {
        sim.join_group(node(i), group_addr());
        sim.add_node(node(i));
        sim.run_for(Duration::from_millis(400));
    }
    sim.run_for(Duration::from_secs(2));
    for (x, y) in [(1, 2), (3, 4)] {
        let cx = sim.core(node(x)).unwrap();
        let cy = sim.core(node(y)).unwrap();
        assert_eq!(cx.view(), cy.view());
        assert_eq!(cx.table().map(|t| t.len()), Some(2));
        assert!(cx.stats().drops.wrong_group > 0, "hears the other group");
    }
    assert!(report.open_forks().is_empty());
}

#[test]
fn appendix_c_6_coordinator_of_join_killed_between_phases() {
    for unreachable in [true, false] {
        let mut setup = Setup::default();
        // The fmserver: founds the group (rank 0, coordinator of joins)
        // and waits 2 s before every COMMIT.
        setup.commit_delay.insert(node(1), Duration::from_secs(2));
        let config = if unreachable { "on" } else { "off" };
        let mut h = Harness::build(
            7,
            "appendix_c_6",
            LinkConfig::lan(),
            setup,
            false,
            unreachable,
        );
        form_group(&mut h, &nodes(1..=3));
        let t0 = h.sim.now();
        h.start(node(4));
        let hit = h.run_until(Duration::from_secs(1), |h| {
            matches!(
                h.sim.core(node(1)).and_then(|c| c.change_role()),
                Some(ChangeRole::Coordinator {
                    delaying: true,
                    join: true,
                    ..
                })
            )
        });
        assert!(
            hit,
            "unreachable {config}: the fmserver never finished phase I"
        );
        h.crash(node(1));
        let want = nodes(2..=4);
        assert!(
            h.run_until(Duration::from_secs(3), |h| h.one_view_of(&want)),
            "unreachable {config}"
        );
        // The join was completed (a view with the newcomer and the old
        // coordinator), then the old coordinator removed.
        for n in nodes(2..=3) {
            let with_both = h.installed_when(n, t0, |m| {
                m.iter().any(|x| x.addr == node(4)) && m.iter().any(|x| x.addr == node(1))
            });
            let without = h.installed_when(n, t0, |m| members_are(m, &want));
            assert!(
                with_both.is_some() && without.is_some(),
                "{n}, unreachable {config}"
            );
            assert!(with_both < without);
        }
        let s = h.total_stats();
        assert!(
            s.takeovers + s.inferred_commits >= 1 && s.elections >= 1,
            "{s:?}"
        );
    }
}

#[test]
fn eight_simultaneous_starts_end_in_one_view() {
    let replay = sim_replay!("eight_simultaneous_starts_end_in_one_view");
    sim::run_seeds(&replay, 40, |seed| {
        let loss = if seed % 4 == 0 { 0.05 } else { 0.0 };
        let mut h = Harness::new(
            seed,
            "eight_simultaneous_starts_end_in_one_view",
            LinkConfig::lan().with_loss(loss),
            Setup::default(),
            false,
        );
        let all = nodes(1..=8);
        for &n in &all {
            h.start(n);
        }
        let ok = h.run_until(Duration::from_secs(5), |h| h.one_view_of(&all));
        if !ok {
            h.sim
                .fail("8 simultaneous starts did not end in one view within 5 s");
        }
        if loss == 0.0 {
            // Without loss only the lowest address founds.
            let founded: u64 = all
                .iter()
                .filter_map(|n| h.sim.core(*n))
                .map(|c| c.stats().founded)
                .sum();
            assert_eq!(founded, 1, "seed {seed}");
            assert!(
                h.sim.now() < Instant::from_millis(1000),
                "seed {seed}: {:?}",
                h.sim.now()
            );
        }
    });
}

#[test]
fn two_kills_at_once_one_batched_view() {
    for watch in [true, false] {
        let mut h = formed(
            8,
            "two_kills_at_once",
            &nodes(1..=6),
            Setup::default(),
            watch,
        );
        let t0 = h.sim.now();
        let v0 = view_number(&h, node(1));
        // Two neighbours in the ring (ranks 2 and 3).
        h.crash(node(3));
        h.crash(node(4));
        let rest = [node(1), node(2), node(5), node(6)];
        assert!(h.run_until(Duration::from_secs(2), |h| h.one_view_of(&rest)));
        for n in rest {
            assert_eq!(view_number(&h, n), v0 + 1, "{n}: one view, watch {watch}");
            let installs: Vec<_> = h
                .installs(n)
                .into_iter()
                .filter(|(t, _, _)| *t >= t0)
                .collect();
            assert_eq!(installs.len(), 1, "{n}");
        }
    }
}

#[test]
fn coordinator_of_a_failure_change_killed() {
    // At every phase: after the first ACK, and in the commit delay.
    for phase in [Trap::PhaseOne, Trap::Delaying] {
        let mut setup = Setup::default();
        if phase == Trap::Delaying {
            for n in nodes(1..=5) {
                setup.commit_delay.insert(n, Duration::from_millis(300));
            }
        }
        let mut h = formed(
            9,
            "coordinator_of_a_failure_change_killed",
            &nodes(1..=5),
            setup,
            false,
        );
        h.crash(node(3));
        let hit = h.run_until(Duration::from_secs(2), |h| {
            h.sim
                .up_nodes()
                .any(|n| match h.sim.core(n).and_then(|c| c.change_role()) {
                    Some(ChangeRole::Coordinator {
                        join: false,
                        delaying,
                        acked,
                        ..
                    }) => match phase {
                        Trap::Delaying => delaying,
                        _ => !delaying && acked >= 1,
                    },
                    _ => false,
                })
        });
        assert!(hit, "{phase:?}");
        let coordinator = coordinator_in(&h, phase).expect("a coordinator");
        h.crash(coordinator);
        let rest: Vec<NodeId> = nodes(1..=5)
            .into_iter()
            .filter(|n| *n != node(3) && *n != coordinator)
            .collect();
        assert!(
            h.run_until(Duration::from_secs(3), |h| h.one_view_of(&rest)),
            "{phase:?}"
        );
        assert!(h.total_stats().elections >= 1 || h.total_stats().hint_failures >= 2);
    }
}

// ----- latencies (virtual time) ----------------------------------------------

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len().saturating_sub(1)) as f64 * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

/// When every node of `nodes` has installed a view satisfying `p`, after
/// `from` (the latest of their first such installs).
fn everywhere(
    h: &Harness,
    nodes: &[NodeId],
    from: Instant,
    p: impl Fn(&[Member]) -> bool,
) -> Duration {
    nodes
        .iter()
        .map(|n| h.installed_when(*n, from, &p).expect("installed") - from)
        .max()
        .unwrap_or_default()
}

fn report(scenario: &str, members: usize, v: &[Duration]) -> Duration {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = percentile(v, 0.99);
    println!(
        "{{\"scenario\": \"{scenario}\", \"members\": {members}, \"trials\": {}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}}}",
        v.len(),
        ms(percentile(v, 0.5)),
        ms(p99)
    );
    p99
}

/// The figures of `docs/protocol.md` ("Measured in the simulator"): LAN
/// links (100-500 us), default timings, 20 trials each, printed as JSON
/// lines. The assertions are on virtual time, so they are deterministic.
#[test]
fn sim_latencies() {
    const TRIALS: u64 = 20;
    for size in [4u8, 8, 16] {
        let all = nodes(1..=size);
        let (mut join, mut crash, mut crash_watch, mut pause) = (vec![], vec![], vec![], vec![]);
        let mut idle: Vec<f64> = Vec::new();
        for trial in 0..TRIALS {
            let seed = 1000 * u64::from(size) + trial;
            // Join: a newcomer, until the view with it is everywhere.
            let mut h = formed(
                seed,
                "sim_latencies",
                &all[..all.len() - 1],
                Setup::default(),
                false,
            );
            h.run_for(Duration::from_millis(seed % 200));
            let t0 = h.sim.now();
            h.start(all[all.len() - 1]);
            assert!(h.run_until(Duration::from_secs(2), |h| h.one_view_of(&all)));
            join.push(everywhere(&h, &all, t0, |m| m.len() == all.len()));

            // Idle traffic, on the same group.
            h.run_for(Duration::from_secs(1));
            let before: Vec<u64> = all
                .iter()
                .map(|n| h.sim.node_stats(*n).map_or(0, |s| s.sent_bytes))
                .collect();
            h.run_for(Duration::from_secs(10));
            for (i, n) in all.iter().enumerate() {
                let after = h.sim.node_stats(*n).map_or(0, |s| s.sent_bytes);
                idle.push((after - before[i]) as f64 / 10.0);
            }

            // Crash, pause: a member other than the lowest rank, at a
            // random point of the heartbeat cycle.
            for (watch, kind) in [(false, 0), (true, 0), (false, 1)] {
                let mut h = formed(seed, "sim_latencies", &all, Setup::default(), watch);
                h.run_for(Duration::from_micros((seed * 7919) % 200_000));
                let victim = all[1 + (seed as usize % (all.len() - 1))];
                let rest: Vec<NodeId> = all.iter().copied().filter(|n| *n != victim).collect();
                let t0 = h.sim.now();
                if kind == 0 {
                    h.crash(victim);
                } else {
                    h.sim.pause(victim);
                }
                assert!(h.run_until(Duration::from_secs(2), |h| h.one_view_of(&rest)));
                let d = everywhere(&h, &rest, t0, |m| !m.iter().any(|x| x.addr == victim));
                match (watch, kind) {
                    (false, 0) => crash.push(d),
                    (true, 0) => crash_watch.push(d),
                    _ => pause.push(d),
                }
            }
        }
        let n = all.len();
        report("join", n, &join);
        report("crash (unreachable hints)", n, &crash);
        let watch_p99 = report("crash (watch on the neighbour)", n, &crash_watch);
        let pause_p99 = report("pause (silent failure)", n, &pause);
        let mean = idle.iter().sum::<f64>() / idle.len() as f64;
        let max = idle.iter().cloned().fold(0.0, f64::max);
        println!(
            "{{\"scenario\": \"idle bytes/s sent per member\", \"members\": {n}, \"mean\": {mean:.0}, \"max\": {max:.0}}}"
        );
        assert!(
            pause_p99 <= Duration::from_millis(600),
            "silent failure p99 {pause_p99:?}"
        );
        assert!(
            watch_p99 <= Duration::from_millis(100),
            "crash p99 {watch_p99:?}"
        );
        assert!(mean <= 700.0, "idle {mean} B/s");
    }
}

#[test]
fn paused_coordinator_resumes_with_a_stale_commit() {
    let mut setup = Setup::default();
    setup.commit_delay.insert(node(1), Duration::from_secs(1));
    let mut h = Harness::new(
        11,
        "paused_coordinator_resumes",
        LinkConfig::lan(),
        setup,
        false,
    );
    form_group(&mut h, &nodes(1..=3));
    let old = h.sim.core(node(1)).map(|c| c.incarnation()).unwrap();
    h.start(node(4));
    assert!(h.run_until(Duration::from_secs(1), |h| matches!(
        h.sim.core(node(1)).and_then(|c| c.change_role()),
        Some(ChangeRole::Coordinator { delaying: true, .. })
    )));
    // SIGSTOP between phase I and the COMMIT: the others take over, commit
    // the join and fail the coordinator.
    h.sim.pause(node(1));
    let rest = nodes(2..=4);
    assert!(h.run_until(Duration::from_secs(3), |h| h.one_view_of(&rest)));
    let view = h.sim.core(node(2)).and_then(|c| c.view()).unwrap();
    // SIGCONT: its overdue COMMIT goes out; nobody installs it, it learns
    // it was failed and rejoins with a new incarnation.
    h.sim.resume(node(1));
    let all = nodes(1..=4);
    assert!(h.run_until(Duration::from_secs(3), |h| h.one_view_of(&all)));
    assert_ne!(h.sim.core(node(1)).map(|c| c.incarnation()), Some(old));
    for n in rest {
        // Straight from `view` to the view that re-admits node 1.
        let numbers: Vec<u64> = h
            .installs(n)
            .into_iter()
            .map(|(_, v, _)| v)
            .filter(|v| *v > view.number)
            .collect();
        assert_eq!(numbers, vec![view.number + 1], "{n}");
        let c = h.sim.core(n).unwrap();
        assert!(c.stats().drops.non_member + c.stats().drops.stale_view > 0);
    }
}

// ----- partitions (issue 5) ----------------------------------------------------

/// 6 members split 3|3: each side installs its own view of 3; after the
/// heal, one merge change: every member installs one view of all 6,
/// numbered above both sides', in the life it had at the heal (nobody
/// restarts to merge), with ranks in age order.
#[test]
fn split_3_3_heals_into_one_merged_view() {
    let replay = sim_replay!("split_3_3_heals_into_one_merged_view");
    sim::run_seeds(&replay, 200, |seed| {
        let all = nodes(1..=6);
        let mut h = formed(
            seed,
            "split_3_3_heals_into_one_merged_view",
            &all,
            Setup::default(),
            false,
        );
        let (a, b) = (all[..3].to_vec(), all[3..].to_vec());
        let split_at = h.sim.now();
        h.sim.partition(&[a.clone(), b.clone()]);
        assert!(
            h.run_until(Duration::from_secs(5), |h| h.one_view_of(&a)
                && h.one_view_of(&b)),
            "seed {seed}: the sides did not settle"
        );
        // The partition lasts a while after the sides settle.
        h.run_for(Duration::from_millis(700));
        assert!(
            h.one_view_of(&a) && h.one_view_of(&b),
            "seed {seed}: sides unstable"
        );
        let side_views = [view_number(&h, a[0]), view_number(&h, b[0])];
        let side_table = |n: NodeId| {
            h.sim
                .core(n)
                .and_then(|c| c.table().cloned())
                .map(|t| t.rows)
                .unwrap_or_default()
        };
        let sides = [side_table(a[0]), side_table(b[0])];
        let side_orders: Vec<Vec<NodeId>> = sides
            .iter()
            .map(|rows| rows.iter().map(|r| r.addr).collect())
            .collect();
        let side_incs: Vec<Vec<Incarnation>> = sides
            .iter()
            .map(|rows| rows.iter().map(|r| r.incarnation).collect())
            .collect();
        // The lives at the heal: the merge keeps every one of them.
        let lives = h.lives(&all);
        let healed_at = h.sim.now();
        h.sim.heal();
        h.run_until(Duration::from_secs(5), |h| h.one_view_of(&all));
        if std::env::var("SIM_TRACE").is_ok() {
            for l in h.sim.trace_tail() {
                eprintln!("{l}");
            }
            for n in &all {
                if let Some(c) = h.sim.core(*n) {
                    eprintln!("{n}: {:?}", c.stats());
                }
            }
        }
        assert!(
            h.one_view_of(&all),
            "seed {seed}: no merged view within 5 s of the heal"
        );
        let merged = view_number(&h, all[0]);
        assert!(
            merged > side_views[0].max(side_views[1]),
            "seed {seed}: merged view {merged} not above {side_views:?}"
        );
        let now = h.lives(&all);
        let events = h.view_story();
        assert_eq!(
            lives, now,
            "seed {seed}: a member restarted to merge (partition at {split_at:?}, heal at {healed_at:?}): {events:#?}"
        );
        for n in &all {
            let after: Vec<_> = h
                .installs(*n)
                .into_iter()
                .filter(|(t, _, _)| *t > healed_at)
                .collect();
            assert_eq!(after.len(), 1, "seed {seed}: {n} installed {after:?}");
        }
        // Ranks in age order: each side keeps its own order, and between
        // the sides the older incarnation goes first (a member that
        // rejoined while the group formed is younger than its rank says).
        let rows = h
            .sim
            .core(all[0])
            .and_then(|c| c.table().cloned())
            .map(|t| t.rows)
            .unwrap_or_default();
        for side in [&side_orders[0], &side_orders[1]] {
            let kept: Vec<NodeId> = rows
                .iter()
                .map(|r| r.addr)
                .filter(|n| side.contains(n))
                .collect();
            assert_eq!(&kept, side, "seed {seed}: a side's order changed: {rows:?}");
        }
        let sorted = |v: &[Incarnation]| v.windows(2).all(|w| w[0] < w[1]);
        let incs: Vec<Incarnation> = rows.iter().map(|r| r.incarnation).collect();
        if side_incs.iter().all(|v| sorted(v)) {
            assert!(sorted(&incs), "seed {seed}: not in age order: {rows:?}");
        }
    });
}

/// Random partitions of 3-16 members into 2-4 parts, with crashes and
/// pauses while split, then a heal: the checkers hold at every step (view
/// numbers jump only at merges), and within `MERGE_BOUND` of the heal every
/// live member is in one view with all the others. A third of the seeds
/// cut the parts symmetrically, a third one way only (the lower part no
/// longer hears the higher ones; they still hear it), and a third flap:
/// the symmetric cut comes and goes every 100-700 ms.
///
/// After a symmetric cut nobody is ever held down as flapping (merge races
/// do not count as flaps: `docs/partitions.md`, "Heals without
/// hold-downs"). After a one-way or flapping cut a member that the cut
/// itself failed twice for silence may be held down (that is the flap
/// detector's job); the bound for it starts when its hold-down ends.
/// `SIM_HEAL_REPORT=1` prints one line per seed (mode, heal time, the
/// hold-downs that began before and after the heal).
#[test]
fn random_partitions_heal_into_one_view() {
    const MERGE_BOUND: Duration = Duration::from_secs(2);
    let replay = sim_replay!("random_partitions_heal_into_one_view");
    let mut merges = 0u64;
    let mut seeds = 0u64;
    let mut longest = Duration::ZERO;
    let mut heals: Vec<Duration> = Vec::new();
    // Seeds with a member held down, by mode (symmetric, one-way, flapping).
    let mut held_downs = [0u64; 3];
    sim::run_seeds(&replay, 1000, |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_9a27);
        let n = rng.random_range(3..=16u8);
        let all = nodes(1..=n);
        let mut h = formed(
            seed,
            "random_partitions_heal_into_one_view",
            &all,
            Setup::default(),
            rng.random_bool(0.5),
        );
        let parts = rng.random_range(2..=4usize).min(all.len());
        let mut sets: Vec<Vec<NodeId>> = vec![Vec::new(); parts];
        for (i, x) in all.iter().enumerate() {
            // Every part gets one member, the rest at random.
            let k = if i < parts {
                i
            } else {
                rng.random_range(0..parts)
            };
            if let Some(s) = sets.get_mut(k) {
                s.push(*x);
            }
        }
        let mode = rng.random_range(0..3u8);
        let cut = |h: &mut Harness| {
            if mode == 1 {
                for (i, from) in sets.iter().enumerate() {
                    for to in sets.iter().take(i) {
                        for f in from {
                            for t in to {
                                h.sim.block_one_way(*f, *t);
                            }
                        }
                    }
                }
            } else {
                h.sim.partition(&sets);
            }
        };
        cut(&mut h);
        let split_for = Duration::from_millis(rng.random_range(300..2500));
        let end = h.sim.now() + split_for;
        let mut flap_at = h.sim.now() + Duration::from_millis(rng.random_range(100..700));
        let mut cut_now = true;
        while h.sim.now() < end {
            h.run_for(Duration::from_millis(100));
            if mode == 2 && h.sim.now() >= flap_at {
                if cut_now {
                    h.sim.heal();
                } else {
                    cut(&mut h);
                }
                cut_now = !cut_now;
                flap_at = h.sim.now() + Duration::from_millis(rng.random_range(100..700));
            }
            let live = h.live();
            match rng.random_range(0..20) {
                0 if live.len() > 2 => {
                    if let Some(x) = pick(&mut rng, &live).copied() {
                        h.crash(x);
                    }
                }
                1 => {
                    if let Some(x) = pick(&mut rng, &live).copied() {
                        h.pause_for(x, Duration::from_millis(rng.random_range(50..900)));
                    }
                }
                _ => {}
            }
        }
        h.sim.heal();
        for x in h.sim.nodes().collect::<Vec<_>>() {
            if !h.sim.is_running(x) && h.sim.is_up(x) {
                h.sim.resume(x);
            }
        }
        let healed = h.sim.now();
        let mut ok = h.run_until(MERGE_BOUND, |h| h.converged());
        // A member excluded again right after rejoining (merge races can
        // do that) is held down as flapping: the bound for it starts when
        // its hold-down ends.
        let held = h
            .log
            .iter()
            .filter_map(|(t, _, e)| match e {
                CoreSetEvent::HeldDown { remaining } => Some(*t + *remaining),
                _ => None,
            })
            .max();
        if mode == 0 {
            // A symmetric cut: no member is ever held down, before the
            // heal or after it.
            let holds: Vec<String> = h
                .log
                .iter()
                .filter(|(_, _, e)| matches!(e, CoreSetEvent::HeldDown { .. }))
                .map(|(t, x, e)| format!("{t:?} {x} {e:?}"))
                .collect();
            assert!(
                holds.is_empty(),
                "seed {seed}: held down after a symmetric cut of {n} members in {parts} parts \
                 (healed at {healed:?}): {holds:?}"
            );
        }
        if held.is_some() {
            held_downs[usize::from(mode)] += 1;
            if std::env::var("SIM_TRACE_HELD").is_ok() {
                for l in h.sim.trace_tail() {
                    eprintln!("{l}");
                }
            }
        }
        if let Some(until) = held.filter(|_| !ok) {
            let left = until.saturating_duration_since(h.sim.now());
            ok = h.run_until(left + MERGE_BOUND, |h| h.converged());
        }
        if !ok {
            if std::env::var("SIM_TRACE").is_ok() {
                for l in h.sim.trace_tail() {
                    eprintln!("{l}");
                }
            }
            let now = h.sim.now();
            let states: Vec<String> = h
                .sim
                .nodes()
                .filter_map(|x| h.sim.core(x).map(|c| (x, c.snapshot(now))))
                .map(|(x, s)| {
                    format!(
                        "{x}: view {} of {} joined {} held down {:?}",
                        s.view.number,
                        s.members.len(),
                        s.joined,
                        s.held_down
                    )
                })
                .collect();
            panic!(
                "seed {seed}: {n} members in {parts} parts not one view {MERGE_BOUND:?} after the heal (split {sets:?}):\n{}",
                states.join("\n")
            );
        }
        longest = longest.max(h.sim.now().saturating_duration_since(healed));
        if held.is_none() {
            heals.push(h.sim.now().saturating_duration_since(healed));
        }
        if mode == 0 {
            let now = h.sim.now();
            for x in h.live() {
                let held_down = h.sim.core(x).map(|c| c.snapshot(now).held_down);
                assert!(
                    held_down.as_ref().is_none_or(|v| v.is_empty()),
                    "seed {seed}: {x} still holds {held_down:?} down after a symmetric heal"
                );
            }
        }
        if std::env::var("SIM_HEAL_REPORT").is_ok() {
            // One line per seed: mode, members, parts, heal time (ms), the
            // hold-downs that started before the heal and after it, with
            // their members.
            let heal_ms = h.sim.now().saturating_duration_since(healed).as_millis();
            let holds = |after: bool| -> Vec<String> {
                h.log
                    .iter()
                    .filter(|(t, _, e)| {
                        matches!(e, CoreSetEvent::HeldDown { .. }) && (*t >= healed) == after
                    })
                    .map(|(t, x, _)| {
                        if after {
                            format!("{x}@+{}", t.saturating_duration_since(healed).as_millis())
                        } else {
                            format!("{x}@-{}", healed.saturating_duration_since(*t).as_millis())
                        }
                    })
                    .collect()
            };
            eprintln!(
                "HEAL seed={seed} mode={mode} n={n} parts={parts} heal_ms={heal_ms} \
                 held_before={:?} held_after={:?}",
                holds(false),
                holds(true)
            );
        }
        merges += h.total_stats().merges_coordinated;
        seeds += 1;
    });
    eprintln!(
        "random partitions: {seeds} seeds, {merges} merges, longest heal {longest:?} \
         (without a hold-down: p99 {:?}, max {:?}), seeds with a member held down: \
         {} symmetric, {} one-way, {} flapping",
        percentile(&heals, 0.99),
        heals.iter().max().copied().unwrap_or_default(),
        held_downs[0],
        held_downs[1],
        held_downs[2]
    );
    if seeds >= 100 {
        assert!(merges > 0, "no merge happened");
    }
}

/// Six members split into the ranks 1, 3, 5 and 2, 4, 6, so that every
/// ring neighbour is on the other side: each side fails the other without
/// failing any of its own, and the heal merges them; no member takes a new
/// incarnation from the cut to the merged view.
#[test]
fn interleaved_split_keeps_every_life() {
    let replay = sim_replay!("interleaved_split_keeps_every_life");
    sim::run_seeds(&replay, 200, |seed| {
        let all = nodes(1..=6);
        let mut h = formed(
            seed,
            "interleaved_split_keeps_every_life",
            &all,
            Setup::default(),
            false,
        );
        let lives = h.lives(&all);
        let a: Vec<NodeId> = all.iter().copied().step_by(2).collect();
        let b: Vec<NodeId> = all.iter().copied().skip(1).step_by(2).collect();
        h.sim.partition(&[a.clone(), b.clone()]);
        assert!(
            h.run_until(Duration::from_secs(5), |h| h.one_view_of(&a)
                && h.one_view_of(&b)),
            "seed {seed}: the sides did not settle"
        );
        h.run_for(Duration::from_millis(300));
        h.sim.heal();
        h.run_until(Duration::from_secs(5), |h| h.one_view_of(&all));
        if std::env::var("SIM_TRACE").is_ok() {
            for l in h.sim.trace_tail() {
                eprintln!("{l}");
            }
        }
        assert!(
            h.one_view_of(&all),
            "seed {seed}: no merged view within 5 s of the heal"
        );
        let now = h.lives(&all);
        let events = h.view_story();
        assert_eq!(lives, now, "seed {seed}: a member restarted: {events:#?}");
    });
}

/// Sixty-four members split at random into two parts, then healed: the
/// merge keeps every life (no member restarts from the cut to the merged
/// view) and ends in one view of all.
#[test]
fn big_split_heals_without_restarts() {
    let replay = sim_replay!("big_split_heals_without_restarts");
    sim::run_seeds(&replay, 20, |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xb16_5b17);
        let all = nodes(1..=64);
        let mut h = formed(
            seed,
            "big_split_heals_without_restarts",
            &all,
            Setup::default(),
            false,
        );
        let lives = h.lives(&all);
        let mut a = Vec::new();
        let mut b = Vec::new();
        for x in &all {
            if rng.random_bool(0.5) {
                a.push(*x);
            } else {
                b.push(*x);
            }
        }
        if a.is_empty() || b.is_empty() {
            return;
        }
        h.sim.partition(&[a.clone(), b.clone()]);
        assert!(
            h.run_until(Duration::from_secs(10), |h| h.one_view_of(&a)
                && h.one_view_of(&b)),
            "seed {seed}: the sides did not settle"
        );
        h.run_for(Duration::from_millis(rng.random_range(0..1000)));
        let healed = h.sim.now();
        h.sim.heal();
        let ok = h.run_until(Duration::from_secs(10), |h| h.one_view_of(&all));
        h.run_for(Duration::from_millis(500));
        let now = h.lives(&all);
        if std::env::var("SIM_TRACE").is_ok() && (lives != now || !ok) {
            for l in h.sim.trace_tail() {
                eprintln!("{l}");
            }
        }
        assert!(ok, "seed {seed}: no merged view within 10 s of the heal");
        let restarted: Vec<NodeId> = all
            .iter()
            .zip(lives.iter().zip(now.iter()))
            .filter(|(_, (a, b))| a != b)
            .map(|(n, _)| *n)
            .collect();
        assert!(
            restarted.is_empty(),
            "seed {seed}: restarted after the heal at {healed:?}: {restarted:?}"
        );
    });
}

/// A one-way link inside a group of five: member 2 no longer hears member
/// 3, its clockwise neighbour, while 3 still hears everyone. Member 3 (the
/// side its monitor cannot hear) is excluded, every time; it rejoins once
/// at once, then member 2 keeps watching it wherever it sits in the ring,
/// fails it again, and the group holds it down for a growing time, so the
/// views stop changing instead of oscillating.
#[test]
fn one_way_link_excludes_one_side_and_holds_it_down() {
    let replay = sim_replay!("one_way_link_excludes_one_side_and_holds_it_down");
    sim::run_seeds(&replay, 50, |seed| {
        let all = nodes(1..=5);
        let mut h = formed(
            seed,
            "one_way_link_excludes_one_side_and_holds_it_down",
            &all,
            Setup::default(),
            false,
        );
        let (deaf, unheard) = (all[1], all[2]);
        let start = h.sim.now();
        h.sim.block_one_way(unheard, deaf);
        h.run_for(Duration::from_secs(30));
        let rest: Vec<NodeId> = all.iter().copied().filter(|n| *n != unheard).collect();
        assert!(
            h.one_view_of(&rest),
            "seed {seed}: the others are not in one view"
        );
        let now = h.sim.now();
        let snap = h
            .sim
            .core(all[0])
            .map(|c| c.snapshot(now))
            .expect("member 1 runs");
        assert!(
            !snap.members.iter().any(|m| m.addr == unheard),
            "seed {seed}: the member nobody should hear is in the view: {snap:?}"
        );
        assert!(
            snap.members.iter().any(|m| m.addr == deaf),
            "seed {seed}: the deaf member was excluded instead: {snap:?}"
        );
        let held = snap.held_down.iter().find(|x| x.addr == unheard);
        assert!(
            held.is_some_and(|x| x.strikes >= 3 && x.remaining_ms > 0),
            "seed {seed}: not held down: {snap:?}"
        );
        // One exclusion, one re-admission, then a few more, spaced out by
        // the growing hold-down (5 s, 10 s, ...): not one per second.
        let views = h
            .installs(all[0])
            .into_iter()
            .filter(|(t, _, _)| *t > start)
            .count();
        assert!(
            (3..=10).contains(&views),
            "seed {seed}: {views} views in 30 s"
        );
        // Member 3 was told why it waits.
        assert!(
            h.log
                .iter()
                .any(|(_, n, e)| *n == unheard && matches!(e, CoreSetEvent::HeldDown { .. })),
            "seed {seed}: no HeldDown event at the held-down member"
        );
    });
}

/// Application changes (the hook of the application-group layer, issue 6)
/// submitted at random members while members crash, pause and rejoin:
/// every member that installs a view with application changes reports the
/// same payloads for it; no payload is committed twice; each submitter's
/// payloads commit in the order it submitted them; and every payload
/// submitted at a member that stayed up and in the group commits.
#[test]
fn app_changes_commit_in_one_order_everywhere() {
    let replay = sim_replay!("app_changes_commit_in_one_order_everywhere");
    sim::run_seeds(&replay, 300, |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa99_c0de);
        let n = rng.random_range(3..=8u8);
        let all = nodes(1..=n);
        let mut h = formed(
            seed,
            "app_changes_commit_in_one_order_everywhere",
            &all,
            Setup::default(),
            false,
        );
        let mut submitted: Vec<(NodeId, Vec<u8>)> = Vec::new();
        let mut counter = 0u32;
        for _ in 0..40 {
            h.run_for(Duration::from_millis(rng.random_range(1..60)));
            let live = h.live();
            match rng.random_range(0..30) {
                0 if live.len() > 2 => {
                    if let Some(x) = pick(&mut rng, &live).copied() {
                        h.crash(x);
                    }
                }
                1 => {
                    if let Some(x) = pick(&mut rng, &live).copied() {
                        h.pause_for(x, Duration::from_millis(rng.random_range(50..900)));
                    }
                }
                _ => {}
            }
            for _ in 0..rng.random_range(1..4) {
                let Some(x) = pick(&mut rng, &h.live()).copied() else {
                    continue;
                };
                counter += 1;
                let payload = format!("{x}/{counter}").into_bytes();
                let ok = h
                    .sim
                    .with_core(x, |c, now| c.submit_app(now, payload.clone()))
                    .is_some_and(|r| r.is_ok());
                if ok {
                    submitted.push((x, payload));
                }
            }
        }
        for x in h.sim.nodes().collect::<Vec<_>>() {
            if !h.sim.is_running(x) && h.sim.is_up(x) {
                h.sim.resume(x);
            }
        }
        assert!(
            h.run_until(Duration::from_secs(10), |h| h.converged()),
            "seed {seed}: no single view at the end"
        );
        h.run_for(Duration::from_secs(1));
        // Same view id -> same payloads, at every member that reported it.
        let mut by_view: BTreeMap<ViewId, Vec<Vec<u8>>> = BTreeMap::new();
        let mut committed_at: BTreeMap<NodeId, Vec<Vec<u8>>> = BTreeMap::new();
        for (_, node, e) in &h.log {
            if let CoreSetEvent::AppCommitted { view, payloads, .. } = e {
                let key = *view;
                match by_view.get(&key) {
                    Some(p) => assert_eq!(
                        p, payloads,
                        "seed {seed}: view {key:?} committed different payloads at {node}"
                    ),
                    None => {
                        by_view.insert(key, payloads.clone());
                    }
                }
                committed_at
                    .entry(*node)
                    .or_default()
                    .extend(payloads.iter().cloned());
            }
        }
        // No payload twice (in any view).
        let mut seen = BTreeSet::new();
        for payloads in by_view.values() {
            for p in payloads {
                assert!(
                    seen.insert(p.clone()),
                    "seed {seed}: {:?} committed twice",
                    String::from_utf8_lossy(p)
                );
            }
        }
        // Per submitter, in submission order, at every member.
        for list in committed_at.values() {
            for (x, _) in &submitted {
                let order: Vec<&Vec<u8>> = submitted
                    .iter()
                    .filter(|(y, _)| y == x)
                    .map(|(_, p)| p)
                    .filter(|p| list.contains(p))
                    .collect();
                let got: Vec<&Vec<u8>> = list
                    .iter()
                    .filter(|p| submitted.iter().any(|(y, q)| y == x && q == *p))
                    .collect();
                assert_eq!(got, order, "seed {seed}: {x}'s changes out of order");
            }
        }
        // A submitter that was never crashed, paused or excluded: all of
        // its payloads committed.
        let disturbed: BTreeSet<NodeId> = h
            .log
            .iter()
            .filter(|(_, _, e)| matches!(e, CoreSetEvent::Excluded { .. }))
            .map(|(_, n, _)| *n)
            .chain(h.gone.iter().copied())
            .collect();
        for (x, p) in &submitted {
            if h.sim.incarnation(*x) == h.sim.core(*x).map(|c| c.incarnation())
                && !disturbed.contains(x)
                && h.sim.is_running(*x)
            {
                assert!(
                    seen.contains(p),
                    "seed {seed}: {:?} submitted at {x} never committed",
                    String::from_utf8_lossy(p)
                );
            }
        }
    });
}

/// Application groups over the core-set (issue 6): random creates, joins,
/// leaves and MI failures, encoded as `AppOp`s and submitted at random
/// mservers while mservers crash and pause. Every mserver applies what its
/// core-set commits to its own `Registry`; every mserver that saw every
/// application change (never crashed or excluded) ends with the same
/// groups, and per group the same views: numbered 1, 2, 3 ... without a
/// gap, the same members for the same number.
#[test]
fn app_group_views_agree_at_every_mserver() {
    use membership::appgroup::{
        AppMember, AppOp, AppView, GroupName, GroupOptions, MemberKind, MemberName, Registry,
        RequestId,
    };
    let replay = sim_replay!("app_group_views_agree_at_every_mserver");
    let mut seeds = 0u64;
    let mut busy_seeds = 0u64;
    let mut views_seen = 0usize;
    sim::run_seeds(&replay, 1000, |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa77_6a0b);
        let n = rng.random_range(3..=7u8);
        let all = nodes(1..=n);
        let mut h = formed(
            seed,
            "app_group_views_agree_at_every_mserver",
            &all,
            Setup::default(),
            false,
        );
        let groups = [
            GroupName::parse("g1").expect("name"),
            GroupName::parse("g2").expect("name"),
        ];
        let mut joined: Vec<(usize, u128)> = Vec::new();
        let mut next_id = 1u128;
        // The latest attachment submitted per MI: an `MiFailed` names it
        // (one naming an older attachment spares the MI).
        let mut attach_seq: BTreeMap<u128, u64> = BTreeMap::new();
        for step in 0..60 {
            h.run_for(Duration::from_millis(rng.random_range(1..40)));
            let live = h.live();
            if rng.random_range(0..40) == 0 && live.len() > 2 {
                if let Some(x) = pick(&mut rng, &live).copied() {
                    h.crash(x);
                }
            } else if rng.random_range(0..40) == 0 {
                if let Some(x) = pick(&mut rng, &live).copied() {
                    h.pause_for(x, Duration::from_millis(rng.random_range(50..700)));
                }
            }
            let seq = u64::try_from(step).unwrap_or(u64::MAX) + 1;
            let mi = rng.random_range(1..=3u128);
            let req = RequestId {
                mi: uuid::Uuid::from_u128(mi),
                seq,
            };
            let g = groups[rng.random_range(0..2usize)].clone();
            let op = if step < 2 {
                AppOp::Create {
                    req,
                    group: groups[step].clone(),
                    options: GroupOptions::default(),
                }
            } else if step < 5 || rng.random_range(0..10) == 0 {
                // Every MI attaches first, and again now and then (after
                // an `MiFailed`, its joins are refused until it does).
                let mi = if step < 5 {
                    u128::try_from(step).unwrap_or(1) - 1
                } else {
                    mi
                };
                attach_seq.insert(mi, seq);
                AppOp::Attach {
                    req: RequestId {
                        mi: uuid::Uuid::from_u128(mi),
                        seq,
                    },
                    host: format!("mi{mi}"),
                    mserver: NodeId::v4(127, 0, 0, 1, 7200),
                }
            } else {
                match rng.random_range(0..10) {
                    0..=5 => {
                        next_id += 1;
                        let name = format!("p{}", rng.random_range(0..12));
                        joined.push((0, next_id));
                        AppOp::Join {
                            req,
                            group: g,
                            member: AppMember {
                                name: MemberName::parse(&name).expect("name"),
                                kind: MemberKind::default(),
                                id: uuid::Uuid::from_u128(next_id),
                                host: format!("mi{mi}"),
                            },
                        }
                    }
                    6..=8 if !joined.is_empty() => {
                        let k = rng.random_range(0..joined.len());
                        let (_, id) = joined.swap_remove(k);
                        AppOp::Leave {
                            req,
                            group: g,
                            member: uuid::Uuid::from_u128(id),
                        }
                    }
                    _ => AppOp::MiFailed {
                        mis: vec![(
                            uuid::Uuid::from_u128(mi),
                            attach_seq.get(&mi).copied().unwrap_or(0),
                        )],
                    },
                }
            };
            let payload = op.encode().expect("encodes");
            // Sometimes the same request twice (an MI resubmitting after
            // a failover): it must apply once.
            let copies = if rng.random_range(0..10) == 0 { 2 } else { 1 };
            for _ in 0..copies {
                if let Some(x) = pick(&mut rng, &h.live()).copied() {
                    let _ = h
                        .sim
                        .with_core(x, |c, now| c.submit_app(now, payload.clone()));
                }
            }
        }
        for x in h.sim.nodes().collect::<Vec<_>>() {
            if !h.sim.is_running(x) && h.sim.is_up(x) {
                h.sim.resume(x);
            }
        }
        assert!(
            h.run_until(Duration::from_secs(10), |h| h.converged()),
            "seed {seed}: no single view at the end"
        );
        h.run_for(Duration::from_secs(1));
        let disturbed: BTreeSet<NodeId> = h
            .log
            .iter()
            .filter(|(_, _, e)| matches!(e, CoreSetEvent::Excluded { .. }))
            .map(|(_, n, _)| *n)
            .chain(h.gone.iter().copied())
            .collect();
        let mut registries: BTreeMap<NodeId, (Registry, Vec<AppView>)> = BTreeMap::new();
        for (_, node, e) in &h.log {
            if let CoreSetEvent::AppCommitted { payloads, .. } = e {
                let (r, views) = registries.entry(*node).or_default();
                for p in payloads {
                    let out = r.apply_payload(p);
                    views.extend(out.views);
                }
            }
        }
        let steady: Vec<&NodeId> = registries
            .keys()
            .filter(|n| !disturbed.contains(n) && h.sim.is_running(**n))
            .collect();
        let mut reference: Option<(&NodeId, Vec<AppView>)> = None;
        for node in steady {
            let (r, views) = &registries[node];
            // Per group: 1, 2, 3 ... without a gap.
            for g in &groups {
                let numbers: Vec<u64> = views
                    .iter()
                    .filter(|v| &v.group == g)
                    .map(|v| v.number)
                    .collect();
                let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
                assert_eq!(numbers, expected, "seed {seed}: {node} views of {g:?}");
            }
            match &reference {
                None => {
                    views_seen += views.len();
                    if r.views().iter().any(|v| v.number >= 3) {
                        busy_seeds += 1;
                    }
                    reference = Some((node, r.views()))
                }
                Some((first, theirs)) => assert_eq!(
                    &r.views(),
                    theirs,
                    "seed {seed}: {node} and {first} hold different groups"
                ),
            }
        }
        seeds += 1;
    });
    eprintln!(
        "app groups: {seeds} seeds, {busy_seeds} with a group past view 3, {views_seen} views"
    );
    if seeds >= 100 {
        assert!(busy_seeds * 2 > seeds, "too few seeds exercised the groups");
    }
}
