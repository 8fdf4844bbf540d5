//! The simulated half of `msbench hierarchy`: a tree of [`Chain`]s in the
//! deterministic simulator (`membership::sim`, virtual time, the LAN link
//! model [`LinkConfig::lan`]: 100-500 us one way, no loss, default
//! timings at every level), built as `tests/sim_tree.rs` builds its
//! trees: every mserver is configured with its level-1 group (its child
//! set) and, as `--parent` entries, the groups above it. With the default
//! layout, 1,000 mservers in 100 child sets of 10; the 100 parents in 10
//! level-2 groups of 10; those groups' 10 parents in one top group.
//!
//! The daemon around each chain is emulated as `mserver` behaves: it joins
//! and leaves the multicast addresses the chain reports, and its crash
//! watches (`ChainEvent::Watch`, the union of the levels' clockwise
//! neighbours) report a crashed target one link latency later, as a
//! refused TCP connection would; the simulator's "port unreachable"
//! answers to datagrams sent to a dead node are on too.
//!
//! Measured:
//!
//! - idle bytes and datagrams sent per second per mserver, by role (plain
//!   member, level-2 parent, level-3 parent), over `--sim-idle-secs` of
//!   virtual idleness;
//! - parent crash (a level-2 parent; an mserver in all three levels) ->
//!   `child` (its child set's view without it at every survivor),
//!   `upper_without` (every upper group it was in, a view without it at
//!   every other member), `reparented` (every group it was a parent in has
//!   a new parent, in a view of the group above held by all its members),
//!   `consistent` (every level of the whole tree at a quiet point: one
//!   view per group of exactly its live members, one parent per child
//!   set, and T1, T2, T4 of `docs/hierarchy.md`); then the crashed
//!   mserver restarts with its configuration and the tree is consistent
//!   again (`restart_consistent`);
//! - the same for a pause (SIGSTOP) of a parent: the figures above from
//!   the pause, the mserver paused until the tree is consistent without
//!   it, then resumed -> consistent again (`resume_consistent`);
//! - per crash, the change-protocol messages (joins, AGREE, ACK, COMMIT,
//!   ...: everything but QUERY, REPLY and ANNOUNCE) sent and received per
//!   mserver, for the mservers of the groups the crashed one was in and
//!   for everyone else, with the datagrams that reached an mserver for a
//!   group it is not in (`wrong_group`): both must be zero for everyone
//!   else.

use crate::stats::{round2, Latencies};
use membership::coreset::{CoreSetConfig, CoreSetEvent, GroupRef, MsgCounts};
use membership::id::{NodeId, ViewId};
use membership::sansio::Core;
use membership::sim::{LinkConfig, SimConfig, Simulator};
use membership::time::Instant;
use membership::tree::{Chain, ChainConfig, ChainEvent, LevelSettings};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

/// Longest virtual wait for the tree to form.
const FORM_LIMIT: Duration = Duration::from_secs(120);
/// Longest virtual wait for the tree to be consistent after a fault.
const TRIAL_LIMIT: Duration = Duration::from_secs(30);
/// Quiet virtual time before each fault, plus up to one query interval.
const SETTLE: Duration = Duration::from_millis(300);
const SETTLE_JITTER_US: u64 = 200_000;
/// Delay of the emulated crash watch's report (a refused TCP connection).
const WATCH_DELAY: Duration = Duration::from_micros(300);
/// Virtual gap between the starts of two child sets while forming.
const FORM_STAGGER: Duration = Duration::from_millis(20);

/// The shape of the simulated tree.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Child sets (level-1 groups).
    pub sets: usize,
    /// Mservers per child set.
    pub set_size: usize,
    /// Groups of one level per group of the level above.
    pub fanout: usize,
    /// Groups per level, level 1 first (the last is 1: the top).
    groups: Vec<Vec<GroupRef>>,
}

impl Layout {
    /// `sets` child sets of `set_size`, grouped `fanout` to a group per
    /// level up to one top group.
    pub fn new(sets: usize, set_size: usize, fanout: usize) -> Result<Layout, String> {
        if sets == 0 || set_size == 0 || fanout < 2 {
            return Err("a tree needs child sets, members and a fanout of 2 or more".into());
        }
        if sets * set_size > 60_000 {
            return Err("at most 60,000 simulated mservers".into());
        }
        let mut groups = Vec::new();
        let mut count = sets;
        let mut level = 1u8;
        loop {
            let gs = (0..count)
                .map(|j| {
                    let addr =
                        NodeId::v4(239, 70 + level, (j / 250) as u8, (j % 250 + 1) as u8, 7000);
                    let name = match (level, count) {
                        (l, 1) if l > 1 => "top".to_string(),
                        (1, _) => format!("c{j}"),
                        (l, _) => format!("l{l}g{j}"),
                    };
                    GroupRef::new(name, addr).map_err(|e| format!("group: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            groups.push(gs);
            if count == 1 {
                break;
            }
            count = count.div_ceil(fanout);
            level += 1;
        }
        Ok(Layout {
            sets,
            set_size,
            fanout,
            groups,
        })
    }

    /// Levels of the tree.
    pub fn levels(&self) -> u8 {
        self.groups.len() as u8
    }

    /// Mservers in the tree.
    pub fn mservers(&self) -> usize {
        self.sets * self.set_size
    }

    /// The address of mserver `i`.
    pub fn node(i: usize) -> NodeId {
        NodeId::v4(
            10,
            1 + (i / 62_500) as u8,
            ((i / 250) % 250) as u8,
            (i % 250 + 1) as u8,
            7000,
        )
    }

    /// Mserver `i`'s groups, level 1 first.
    fn chain_of(&self, i: usize) -> Vec<GroupRef> {
        let mut index = i / self.set_size;
        let mut out = Vec::new();
        for gs in &self.groups {
            out.push(gs[index.min(gs.len() - 1)].clone());
            index /= self.fanout;
        }
        out
    }

    fn config(&self, i: usize, n: NodeId, incarnation: membership::id::Incarnation) -> ChainConfig {
        let chain = self.chain_of(i);
        let level1 = CoreSetConfig::new(n, incarnation, chain[0].name.clone(), chain[0].addr);
        let parents = chain[1..]
            .iter()
            .map(|g| LevelSettings {
                group: g.clone(),
                query_interval: level1.query_interval,
                reply_timeout: level1.reply_timeout,
                retries: level1.retries,
            })
            .collect();
        ChainConfig { level1, parents }
    }
}

/// One view installed while logging.
struct Install {
    at: Instant,
    node: NodeId,
    group: String,
    members: Vec<NodeId>,
}

/// The simulator with the daemons emulated.
struct Harness {
    sim: Simulator<Chain>,
    layout: Rc<Layout>,
    nodes: Vec<NodeId>,
    /// Upper-level group addresses each mserver listens on.
    upper: BTreeMap<NodeId, Vec<NodeId>>,
    /// Each mserver's crash watch targets.
    watches: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// Whether the last drain took any event.
    evented: bool,
    log: Option<Vec<Install>>,
}

impl Harness {
    fn new(seed: u64, layout: Rc<Layout>) -> Harness {
        let config = SimConfig::new(seed, membership::sim_replay!("msbench_hierarchy"))
            .with_link(LinkConfig::lan());
        let l = layout.clone();
        let index: BTreeMap<NodeId, usize> = (0..layout.mservers())
            .map(|i| (Layout::node(i), i))
            .collect();
        let mut sim = Simulator::new(config, move |spawn| {
            let i = index.get(&spawn.id).copied().unwrap_or(0);
            match Chain::new(
                l.config(i, spawn.id, spawn.incarnation),
                spawn.now,
                spawn.seed,
            ) {
                Ok(c) => c,
                // The layout is fixed and valid; a failure here is a bug
                // in this program.
                Err(e) => panic!("chain config: {e}"),
            }
        });
        sim.track_incarnation(|e| match e {
            ChainEvent::NewIncarnation(i) => Some(*i),
            _ => None,
        });
        Harness {
            sim,
            nodes: (0..layout.mservers()).map(Layout::node).collect(),
            layout,
            upper: BTreeMap::new(),
            watches: BTreeMap::new(),
            evented: false,
            log: None,
        }
    }

    fn start(&mut self, i: usize) {
        let n = Layout::node(i);
        let g1 = self.layout.chain_of(i)[0].addr;
        self.sim.join_group(n, g1);
        self.sim.add_node(n);
        self.drain();
    }

    /// Carries out what the chains report, as the daemon does.
    fn drain(&mut self) {
        let events = self.sim.take_events();
        self.evented = !events.is_empty();
        for (at, n, e) in events {
            match e {
                ChainEvent::JoinGroup(g) => {
                    self.sim.join_group(n, g.addr);
                    self.upper.entry(n).or_default().push(g.addr);
                }
                ChainEvent::LeaveGroup(g) => {
                    self.sim.leave_group(n, g.addr);
                    if let Some(v) = self.upper.get_mut(&n) {
                        v.retain(|a| *a != g.addr);
                    }
                }
                ChainEvent::Watch(targets) => {
                    self.watches.insert(n, targets);
                }
                ChainEvent::Level {
                    group,
                    event: CoreSetEvent::ViewInstalled { members, .. },
                    ..
                } => {
                    if let Some(log) = self.log.as_mut() {
                        log.push(Install {
                            at,
                            node: n,
                            group: group.name,
                            members: members.iter().map(|m| m.addr).collect(),
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Kills `n` (SIGKILL): its upper-level multicast memberships go with
    /// the process, and its watchers' crash watches report it.
    fn crash(&mut self, n: NodeId) {
        self.sim.crash(n);
        for g in self.upper.remove(&n).unwrap_or_default() {
            self.sim.leave_group(n, g);
        }
        self.watches.remove(&n);
        let watchers: Vec<NodeId> = self
            .watches
            .iter()
            .filter(|(_, t)| t.contains(&n))
            .map(|(w, _)| *w)
            .collect();
        let at = self.sim.now() + WATCH_DELAY;
        for w in watchers {
            self.sim.schedule(at, move |s| {
                let _ = s.with_core(w, |c, now| c.handle_unreachable(now, n));
            });
        }
        self.drain();
    }

    /// Starts `n` again with its configuration (a new life).
    fn restart(&mut self, n: NodeId) {
        self.sim.restart(n);
        self.drain();
    }

    /// Runs `d` of virtual time in 5 ms steps, draining after each.
    fn run_for(&mut self, d: Duration) {
        let end = self.sim.now() + d;
        while self.sim.now() < end {
            let step = Duration::from_millis(5).min(end - self.sim.now());
            self.sim.run_for(step);
            self.drain();
        }
    }

    /// Steps until `cond` holds, checked after every step that produced
    /// an event (and every 1,024 steps), or `limit` passes: when it held.
    fn run_until(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&Harness) -> bool,
    ) -> Option<Instant> {
        let end = self.sim.now() + limit;
        let mut steps = 0u64;
        loop {
            if cond(self) {
                return Some(self.sim.now());
            }
            loop {
                match self.sim.next_event_time() {
                    Some(t) if t <= end => {
                        self.sim.step();
                        self.drain();
                        steps += 1;
                        if self.evented || steps % 1024 == 0 {
                            break;
                        }
                    }
                    _ => {
                        self.sim.run_until(end);
                        self.drain();
                        return cond(self).then(|| self.sim.now());
                    }
                }
            }
        }
    }

    /// Like [`Harness::run_until`], checking only every `every` of
    /// virtual time (for expensive checks while much happens).
    fn run_until_coarse(
        &mut self,
        limit: Duration,
        every: Duration,
        mut cond: impl FnMut(&Harness) -> bool,
    ) -> Option<Instant> {
        let end = self.sim.now() + limit;
        loop {
            if cond(self) {
                return Some(self.sim.now());
            }
            if self.sim.now() >= end {
                return None;
            }
            let d = every.min(end - self.sim.now());
            self.run_for(d);
        }
    }

    /// Running mservers.
    fn live(&self) -> Vec<NodeId> {
        self.sim
            .up_nodes()
            .filter(|n| self.sim.is_running(*n))
            .collect()
    }

    /// Whether the whole tree is consistent at a quiet point; what is not,
    /// otherwise. Every running chain settled (no change, no task, at its
    /// configured top or a standby); every group one view, held by exactly
    /// the members its table lists; T2 (each level records its level), T1
    /// both ways per mserver (flagged below <-> a member above naming the
    /// child set, and the child set records that parent group), T4 (one
    /// parent group per group: the holders agree by holding one view);
    /// every group below the top exactly one parent, the top none above;
    /// no two members of an upper group naming one child set.
    fn consistent(&self) -> Result<(), String> {
        struct G<'a> {
            view: ViewId,
            holders: BTreeSet<NodeId>,
            table: &'a membership::coreset::Table,
        }
        let levels = self.layout.levels();
        let mut groups: BTreeMap<&str, G<'_>> = BTreeMap::new();
        for n in self.live() {
            let Some(c) = self.sim.core(n) else {
                return Err(format!("{n}: no core"));
            };
            if !c.is_settled() {
                return Err(format!("{n}: not settled (task {:?})", c.task_kind()));
            }
            if c.top() != levels && c.standby().is_none() {
                return Err(format!("{n}: at level {} and not a standby", c.top()));
            }
            for level in 1..=c.top() {
                let (Some(core), Some(g)) = (c.level(level), c.group(level)) else {
                    return Err(format!("{n}: no level {level}"));
                };
                let (Some(v), Some(t)) = (core.view(), core.table()) else {
                    return Err(format!("{n}: no view at level {level}"));
                };
                if t.tree.level != level {
                    return Err(format!(
                        "{n}: its level-{level} group records level {}",
                        t.tree.level
                    ));
                }
                let e = groups.entry(g.name.as_str()).or_insert(G {
                    view: v,
                    holders: BTreeSet::new(),
                    table: t,
                });
                if e.view != v {
                    return Err(format!("{}: two views ({n})", g.name));
                }
                e.holders.insert(n);
            }
            for level in 1..c.top() {
                let (Some(low), Some(high)) = (c.level(level), c.level(level + 1)) else {
                    continue;
                };
                let (Some(lt), Some(ht)) = (low.table(), high.table()) else {
                    continue;
                };
                if !low.my_rank().is_some_and(|r| lt.tree.is_parent(r)) {
                    return Err(format!("{n}: above level {level} but not flagged there"));
                }
                let claims = high.my_rank().and_then(|r| ht.tree.bits(r).child_group);
                if claims.as_ref() != c.group(level) {
                    return Err(format!("{n}: its level-{} row names {claims:?}", level + 1));
                }
                if lt.tree.parent_group.as_ref() != c.group(level + 1) {
                    return Err(format!("{n}: level {level} records another parent group"));
                }
            }
            if let (Some(core), false) = (c.level(c.top()), c.has_task()) {
                if let (Some(t), Some(r)) = (core.table(), core.my_rank()) {
                    if t.tree.is_parent(r) {
                        return Err(format!("{n}: flagged at its top"));
                    }
                }
            }
        }
        for (name, g) in &groups {
            let rows: BTreeSet<NodeId> = g.table.rows.iter().map(|r| r.addr).collect();
            if rows != g.holders {
                return Err(format!(
                    "{name}: table {} members, {} holders",
                    rows.len(),
                    g.holders.len()
                ));
            }
            let parents = g.table.tree.parents().len();
            if g.table.tree.level < levels {
                if g.table.tree.parent_group.is_none() || parents != 1 {
                    return Err(format!("{name}: {parents} parents"));
                }
            } else if g.table.tree.parent_group.is_some() || parents != 0 {
                return Err(format!("{name}: the top records a parent"));
            }
            if g.table.tree.level >= 2 {
                let mut seen = BTreeSet::new();
                for r in &g.table.rows {
                    match g.table.tree.bits(r.rank).child_group {
                        Some(c) if seen.insert(c.name.clone()) => {}
                        other => return Err(format!("{name}: child set {other:?} twice or none")),
                    }
                }
            }
        }
        let want = self.layout.groups.iter().map(Vec::len).sum::<usize>();
        if groups.len() != want {
            return Err(format!("{} groups, not {want}", groups.len()));
        }
        Ok(())
    }

    /// Each mserver's counters now.
    fn counters(&self) -> BTreeMap<NodeId, Counters> {
        self.nodes
            .iter()
            .map(|n| {
                let mut c = Counters::default();
                if let Some(s) = self.sim.node_stats(*n) {
                    c.sent = s.sent;
                    c.bytes = s.sent_bytes;
                }
                if let Some(chain) = self.sim.core(*n) {
                    c.wrong_group = chain.stats().wrong_group;
                    for level in 1..=chain.top() {
                        if let (Some(core), Some(g)) = (chain.level(level), chain.group(level)) {
                            let s = core.stats();
                            c.change.insert(
                                g.name.clone(),
                                change_kinds(&s.sent) + change_kinds(&s.received),
                            );
                        }
                    }
                }
                (*n, c)
            })
            .collect()
    }
}

/// Change-protocol messages (everything but QUERY, REPLY and ANNOUNCE).
fn change_kinds(c: &MsgCounts) -> u64 {
    c.m_join_req
        + c.join_wait
        + c.join_refused
        + c.agree_j
        + c.agree_l
        + c.agree_m
        + c.merge_offer
        + c.agree_ack
        + c.busy
        + c.abort
        + c.commit
        + c.co_fail
        + c.not_member
}

/// One mserver's counters at one moment.
#[derive(Clone, Default)]
struct Counters {
    /// Datagrams sent (a multicast counts once).
    sent: u64,
    /// Bytes of those.
    bytes: u64,
    /// Datagrams for no group of its chain.
    wrong_group: u64,
    /// Change-protocol messages sent and received, per group of its
    /// chain (the current life of each level).
    change: BTreeMap<String, u64>,
}

/// Change messages of `n` between `before` and `after` (a level whose
/// core is new counts from zero).
fn change_between(before: Option<&Counters>, after: &Counters) -> u64 {
    after
        .change
        .iter()
        .map(|(g, a)| {
            let b = before.and_then(|b| b.change.get(g)).copied().unwrap_or(0);
            if *a >= b {
                a - b
            } else {
                *a
            }
        })
        .sum()
}

/// Options of the simulated run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The tree's shape.
    pub layout: Layout,
    /// Crash trials per kind.
    pub trials: usize,
    /// Virtual length of the idle measurement.
    pub idle: Duration,
    /// The simulator's seed.
    pub seed: u64,
    /// Print progress on stderr.
    pub progress: bool,
}

/// Figures of one kind of crash.
#[derive(Default)]
struct CrashRun {
    child: Latencies,
    upper_without: Latencies,
    reparented: Latencies,
    consistent: Latencies,
    /// Restart (crash) or resume (pause) -> consistent again.
    back_consistent: Latencies,
    /// Pause rather than crash.
    pause: bool,
    /// Per trial, per concerned mserver: change messages.
    concerned: Vec<u64>,
    /// Per trial, per other mserver: change messages and wrong-group
    /// datagrams.
    others: Vec<u64>,
    others_wrong_group: u64,
    concerned_mservers: Vec<usize>,
    trials: usize,
    /// Per trial: [child, upper_without, reparented] in milliseconds.
    per_trial: Vec<[f64; 3]>,
}

impl CrashRun {
    fn json(&self) -> Value {
        let stats = |v: &[u64]| {
            let n = v.len().max(1) as f64;
            json!({
                "mean": round2(v.iter().sum::<u64>() as f64 / n),
                "max": v.iter().copied().max().unwrap_or(0),
            })
        };
        let mean_concerned = if self.concerned_mservers.is_empty() {
            0.0
        } else {
            self.concerned_mservers.iter().sum::<usize>() as f64
                / self.concerned_mservers.len() as f64
        };
        let mut v = json!({
            "trials": self.trials,
            "child": super::latency(&self.child, None),
            "upper_without": super::latency(&self.upper_without, None),
            "reparented": super::latency(&self.reparented, Some(super::REPARENT_P99_MS)),
            "consistent": super::latency(&self.consistent, None),
            "messages": {
                "what": "change-protocol messages sent + received per mserver, fault to consistent",
                "concerned_mservers_per_trial": round2(mean_concerned),
                "concerned": stats(&self.concerned),
                "others": stats(&self.others),
                "others_wrong_group_datagrams": self.others_wrong_group,
            },
        });
        v["per_trial_ms"] = json!({
            "what": "[child, upper_without, reparented] per trial",
            "trials": self.per_trial.iter().map(|t| t.map(round2)).collect::<Vec<_>>(),
        });
        let back = if self.pause {
            "resume_consistent"
        } else {
            "restart_consistent"
        };
        v[back] = super::latency(&self.back_consistent, None);
        v
    }
}

/// Runs the simulated half: the `"sim"` object of the output.
#[allow(clippy::disallowed_methods)] // wall time of the run, for the report
pub fn run(opts: &SimOptions, rng: &mut ChaCha8Rng) -> Value {
    let wall = std::time::Instant::now();
    let layout = Rc::new(opts.layout.clone());
    let n = layout.mservers();
    let levels = layout.levels();
    let progress = |msg: &str| {
        if opts.progress {
            eprintln!(
                "msbench hierarchy: sim {n}: {msg} ({:.1} s wall)",
                wall.elapsed().as_secs_f64()
            );
        }
    };
    let mut out = json!({
        "layout": {
            "mservers": n,
            "levels": levels,
            "child_sets": layout.sets,
            "set_size": layout.set_size,
            "fanout": layout.fanout,
            "groups_per_level": layout.groups.iter().map(Vec::len).collect::<Vec<_>>(),
        },
        "link": "LinkConfig::lan(): 100-500 us one way, uniform, no loss",
        "timings": "defaults at every level: query 200 ms, reply timeout 100 ms, 2 retries",
        "crash_watch": "emulated: a watcher hears of its target's crash 300 us later",
    });
    let mut failures: Vec<String> = Vec::new();
    let mut h = Harness::new(opts.seed, layout.clone());

    progress("forming the tree");
    for set in 0..layout.sets {
        for m in 0..layout.set_size {
            h.start(set * layout.set_size + m);
        }
        h.run_for(FORM_STAGGER);
    }
    let t0 = membership::time::Instant::ZERO;
    let formed = h.run_until_coarse(FORM_LIMIT, Duration::from_millis(100), |h| {
        h.consistent().is_ok()
    });
    match formed {
        Some(at) => {
            out["formation_virtual_s"] =
                json!(round2(at.saturating_duration_since(t0).as_secs_f64()));
            out["formation_wall_s"] = json!(round2(wall.elapsed().as_secs_f64()));
        }
        None => {
            failures.push(format!(
                "the tree did not form within {FORM_LIMIT:?} of virtual time: {}",
                h.consistent().err().unwrap_or_default()
            ));
            out["failures"] = json!(failures);
            out["wall_s"] = json!(round2(wall.elapsed().as_secs_f64()));
            return out;
        }
    }
    h.run_for(Duration::from_secs(1));

    progress("idle traffic");
    let before = h.counters();
    let views_before = total_views(&h);
    h.run_for(opts.idle);
    let after = h.counters();
    let secs = opts.idle.as_secs_f64();
    let mut by_role: BTreeMap<u8, Vec<(f64, f64)>> = BTreeMap::new();
    for node in &h.nodes {
        let top = h.sim.core(*node).map_or(0, |c| c.top());
        let (b, a) = (&before[node], &after[node]);
        by_role.entry(top).or_default().push((
            (a.bytes - b.bytes) as f64 / secs,
            (a.sent - b.sent) as f64 / secs,
        ));
    }
    let mut idle = json!({
        "virtual_s": secs,
        "views_installed_while_idle": total_views(&h) - views_before,
    });
    for (top, v) in &by_role {
        let name = match top {
            1 => "plain".to_string(),
            t => format!("level{t}_parent"),
        };
        let k = v.len().max(1) as f64;
        let max = v.iter().map(|x| x.0).fold(0.0, f64::max);
        let per_level_max = max / f64::from(*top);
        idle[name] = json!({
            "levels": top,
            "mservers": v.len(),
            "bytes_per_s_mean": round2(v.iter().map(|x| x.0).sum::<f64>() / k),
            "bytes_per_s_max": round2(max),
            "bytes_per_s_per_level_max": round2(per_level_max),
            "datagrams_per_s_mean": round2(v.iter().map(|x| x.1).sum::<f64>() / k),
            "target_bytes_per_s_per_level": super::IDLE_BYTES_PER_S,
            "met": per_level_max <= super::IDLE_BYTES_PER_S,
        });
    }
    out["idle"] = idle;

    for (pause, role) in (2..=levels)
        .map(|r| (false, r))
        .chain((2..=levels).map(|r| (true, r)))
    {
        let what = if pause { "pause" } else { "crash" };
        progress(&format!(
            "{what} of a level-{role} parent, {} trials",
            opts.trials
        ));
        let mut cr = CrashRun {
            pause,
            ..CrashRun::default()
        };
        for t in 0..opts.trials {
            if let Err(e) = fault_trial(&mut h, role, rng, &mut cr) {
                failures.push(format!("level-{role} parent {what} trial {t}: {e}"));
                for n in h.nodes.clone() {
                    if h.sim.is_paused(n) {
                        h.sim.resume(n);
                    }
                }
                h.drain();
                if h.run_until_coarse(TRIAL_LIMIT, Duration::from_millis(50), |h| {
                    h.consistent().is_ok()
                })
                .is_none()
                {
                    failures.push("the tree did not recover; stopping".into());
                    out[format!("{what}_level{role}_parent")] = cr.json();
                    out["failures"] = json!(failures);
                    out["wall_s"] = json!(round2(wall.elapsed().as_secs_f64()));
                    return out;
                }
            }
        }
        out[format!("{what}_level{role}_parent")] = cr.json();
    }
    out["failures"] = json!(failures);
    out["wall_s"] = json!(round2(wall.elapsed().as_secs_f64()));
    progress("done");
    out
}

/// Views installed by every running mserver's levels, in their lives.
fn total_views(h: &Harness) -> u64 {
    h.live()
        .iter()
        .filter_map(|n| h.sim.core(*n))
        .map(|c| {
            (1..=c.top())
                .filter_map(|l| c.level(l))
                .map(|x| x.stats().views_installed)
                .sum::<u64>()
        })
        .sum()
}

/// One crash (or pause) of an mserver whose top is level `role`, then its
/// restart (or resume).
fn fault_trial(
    h: &mut Harness,
    role: u8,
    rng: &mut ChaCha8Rng,
    cr: &mut CrashRun,
) -> Result<(), String> {
    let jitter = Duration::from_micros(rng.random_range(0..=SETTLE_JITTER_US));
    h.run_for(SETTLE + jitter);
    let pool: Vec<NodeId> = h
        .live()
        .into_iter()
        .filter(|n| h.sim.core(*n).is_some_and(|c| c.top() == role))
        .collect();
    if pool.is_empty() {
        return Err(format!("no mserver at level {role}"));
    }
    let victim = pool[rng.random_range(0..pool.len())];
    // Its groups and their members, before the crash.
    let chain = h.sim.core(victim).ok_or("no core")?;
    let mut groups: Vec<(String, BTreeSet<NodeId>)> = Vec::new();
    for level in 1..=chain.top() {
        let g = chain.group(level).ok_or("no group")?.name.clone();
        let rows = chain
            .level(level)
            .and_then(|c| c.table())
            .map(|t| {
                t.rows
                    .iter()
                    .map(|r| r.addr)
                    .filter(|a| *a != victim)
                    .collect()
            })
            .unwrap_or_default();
        groups.push((g, rows));
    }
    let concerned: BTreeSet<NodeId> = groups.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    let before = h.counters();
    h.log = Some(Vec::new());
    let t0 = h.sim.now();
    if cr.pause {
        h.sim.pause(victim);
        h.drain();
    } else {
        h.crash(victim);
    }
    let done = h.run_until(TRIAL_LIMIT, |h| h.consistent().is_ok());
    let log = h.log.take().unwrap_or_default();
    let Some(at) = done else {
        return Err(format!(
            "not consistent within {TRIAL_LIMIT:?}: {}",
            h.consistent().err().unwrap_or_default()
        ));
    };
    cr.trials += 1;
    cr.consistent.push(at.saturating_duration_since(t0));
    // The first view of `group` at `node` since the crash that `p` likes.
    let first = |node: NodeId, group: &str, p: &dyn Fn(&[NodeId]) -> bool| {
        log.iter()
            .find(|x| x.node == node && x.group == group && p(&x.members))
            .map(|x| x.at)
    };
    let without = |m: &[NodeId]| !m.contains(&victim);
    let latest = |nodes: &BTreeSet<NodeId>, group: &str, p: &dyn Fn(&[NodeId]) -> bool| {
        nodes
            .iter()
            .map(|n| first(*n, group, p))
            .try_fold(t0, |acc, x| x.map(|x| acc.max(x)))
    };
    let (g1, m1) = &groups[0];
    let child = latest(m1, g1, &without).ok_or("no child-set view without it")?;
    cr.child.push(child.saturating_duration_since(t0));
    let mut upper = t0;
    for (g, m) in &groups[1..] {
        upper = upper.max(latest(m, g, &without).ok_or("no upper view without it")?);
    }
    cr.upper_without.push(upper.saturating_duration_since(t0));
    // Each group it was a parent of has a new parent, in a view of the
    // group above held by all that group's members now.
    let mut reparented = t0;
    for k in 0..groups.len() - 1 {
        let (gk, _) = &groups[k];
        let (above, _) = &groups[k + 1];
        let (np, holders) = new_parent(h, gk, above).ok_or("no new parent")?;
        let p = move |m: &[NodeId]| m.contains(&np) && !m.contains(&victim);
        reparented =
            reparented.max(latest(&holders, above, &p).ok_or("no view with the new parent")?);
    }
    cr.reparented.push(reparented.saturating_duration_since(t0));
    let ms = |i: Instant| i.saturating_duration_since(t0).as_secs_f64() * 1000.0;
    cr.per_trial.push([ms(child), ms(upper), ms(reparented)]);
    // Messages.
    let after = h.counters();
    for (n, a) in &after {
        if *n == victim {
            continue;
        }
        let m = change_between(before.get(n), a);
        if concerned.contains(n) {
            cr.concerned.push(m);
        } else {
            cr.others.push(m);
            cr.others_wrong_group += a
                .wrong_group
                .saturating_sub(before.get(n).map_or(0, |b| b.wrong_group));
        }
    }
    cr.concerned_mservers.push(concerned.len());
    // The restart (or resume): it rejoins its child set and stays a
    // standby.
    let t1 = h.sim.now();
    if cr.pause {
        h.sim.resume(victim);
        h.drain();
    } else {
        h.restart(victim);
    }
    let back = h
        .run_until(TRIAL_LIMIT, |h| {
            h.consistent().is_ok()
                && h.sim
                    .core(victim)
                    .is_some_and(|c| c.level(1).is_some_and(|x| x.is_member()))
        })
        .ok_or_else(|| {
            format!(
                "not consistent within {TRIAL_LIMIT:?} of the restart: {}",
                h.consistent().err().unwrap_or_default()
            )
        })?;
    cr.back_consistent.push(back.saturating_duration_since(t1));
    Ok(())
}

/// The parent group `gk` has now (in group `above`), and the mservers
/// holding `above`.
fn new_parent(h: &Harness, gk: &str, above: &str) -> Option<(NodeId, BTreeSet<NodeId>)> {
    let mut np = None;
    let mut holders = BTreeSet::new();
    for n in h.live() {
        let c = h.sim.core(n)?;
        for level in 1..=c.top() {
            let name = c.group(level).map(|g| g.name.as_str());
            if name == Some(above) {
                holders.insert(n);
            }
            if name == Some(gk) && level < c.top() {
                np = Some(n);
            }
        }
    }
    Some((np?, holders))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A small three-level tree goes through every trial kind in virtual
    /// time: formation, idle traffic by role, crashes of level-2 and
    /// level-3 parents, with nobody outside the crashed one's groups
    /// taking part.
    #[test]
    fn small_tree_measures_every_trial() {
        let opts = SimOptions {
            layout: Layout::new(4, 3, 2).expect("layout"),
            trials: 2,
            idle: Duration::from_secs(2),
            seed: 3,
            progress: false,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let out = run(&opts, &mut rng);
        assert_eq!(out["failures"], json!([]), "{out:#}");
        assert_eq!(out["layout"]["levels"], 3);
        assert_eq!(out["layout"]["groups_per_level"], json!([4, 2, 1]));
        for role in ["plain", "level2_parent", "level3_parent"] {
            assert!(
                out["idle"][role]["mservers"].as_u64().unwrap_or(0) > 0,
                "{role}: {out:#}"
            );
        }
        for kind in [
            "crash_level2_parent",
            "crash_level3_parent",
            "pause_level2_parent",
            "pause_level3_parent",
        ] {
            let c = &out[kind];
            assert_eq!(c["trials"], 2, "{kind}: {c:#}");
            assert_eq!(c["reparented"]["samples"], 2, "{kind}: {c:#}");
            assert_eq!(c["messages"]["others"]["max"], 0, "{kind}: {c:#}");
            assert_eq!(
                c["messages"]["others_wrong_group_datagrams"], 0,
                "{kind}: {c:#}"
            );
        }
        assert_eq!(out["idle"]["views_installed_while_idle"], 0);
    }
}
