//! The simulated half of `msbench membership`: `n` [`CoreSet`]s in the
//! deterministic simulator (`membership::sim`, virtual time, the LAN link
//! model [`LinkConfig::lan`]: 100-500 us one way, no loss), with the same
//! trials as the real-process half, for group sizes the loopback cannot
//! hold (16, 64, 256), and message counts from the simulator's node stats
//! and the cores' own counters.
//!
//! The daemon around each core is emulated as `mserver` behaves: in the
//! `crash_watch` trials, the OS-level watch on the clockwise neighbour
//! (`CoreSetEvent::Watch`) reports a crashed neighbour one link latency
//! later, as a refused TCP connection would; in the `crash` trials only the
//! simulator's "port unreachable" answers to datagrams sent to the dead
//! node help (`SimConfig::unreachable`, on).

use crate::stats::Latencies;
use membership::coreset::{CoreSet, CoreSetConfig, CoreSetEvent, Member, MsgCounts};
use membership::id::{NodeId, ViewId};
use membership::sansio::Core;
use membership::sim::{LinkConfig, SimConfig, Simulator};
use membership::time::Instant;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const GROUP: &str = "msbench";
/// Longest virtual wait for one expected view.
const TRIAL_LIMIT: Duration = Duration::from_secs(20);
/// Longest virtual wait for the group to form.
const FORM_LIMIT: Duration = Duration::from_secs(120);
/// Quiet virtual time before each fault, plus up to one query interval.
const SETTLE: Duration = Duration::from_millis(300);
const SETTLE_JITTER_US: u64 = 200_000;
/// Newcomers started at the same instant while forming the group (the
/// coordinator batches simultaneous join requests).
const FORM_BATCH: usize = 32;
/// Delay of the emulated crash watch's report (a refused TCP connection).
const WATCH_DELAY: Duration = Duration::from_micros(300);

fn group_addr() -> NodeId {
    NodeId::v4(239, 9, 9, 9, 7000)
}

/// The address of simulated mserver `i` (0-based): 10.0.x.y, y in 1..=250.
fn node(i: usize) -> NodeId {
    NodeId::v4(10, 0, (i / 250) as u8, (i % 250 + 1) as u8, 7000)
}

/// Options of the simulated runs.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Virtual length of the idle measurement.
    pub idle: Duration,
    /// The simulator's seed (size is mixed in).
    pub seed: u64,
    /// Print progress on stderr.
    pub progress: bool,
}

/// Messages of one change, summed over the members.
#[derive(Default)]
struct ChangeTraffic {
    /// Changes measured.
    changes: u64,
    /// All datagrams sent by all nodes during the changes (heartbeats
    /// included).
    datagrams: u64,
    /// Bytes of those.
    bytes: u64,
    /// Datagrams delivered to all nodes during the changes (a multicast
    /// counts once per receiver).
    delivered: u64,
    /// Change-protocol messages (join requests, AGREE, MERGE_OFFER, ACK,
    /// BUSY, ABORT, COMMIT, CO_FAIL, NOT_MEMBER).
    change_msgs: u64,
    /// Monitoring messages (QUERY, REPLY) during the changes.
    monitor_msgs: u64,
    /// The most change-protocol messages one node sent in one change (the
    /// coordinator), summed over changes.
    max_node_change_msgs: u64,
}

fn change_kinds(c: &MsgCounts) -> u64 {
    c.m_join_req
        + c.join_wait
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

/// Per-node counters at one moment.
#[derive(Clone, Default)]
pub(crate) struct Counters {
    /// Datagrams sent (the simulator's node stats; a multicast counts once).
    pub(crate) datagrams: u64,
    /// Bytes of those, sealed.
    pub(crate) bytes: u64,
    /// Datagrams delivered to this node's core.
    pub(crate) delivered: u64,
    /// Change-protocol messages sent by the current life's core.
    pub(crate) change: u64,
    /// QUERY and REPLY sent by the current life's core.
    pub(crate) monitor: u64,
}

/// One `ViewInstalled` event, as [`Group`] logs it while
/// [`Group::logging`] is on.
#[derive(Clone, Debug)]
pub(crate) struct Install {
    /// When it was installed (virtual).
    pub(crate) at: Instant,
    /// Where.
    pub(crate) node: NodeId,
    /// The view.
    pub(crate) view: ViewId,
    /// Whether it came from a merge of subgroups.
    pub(crate) merged: bool,
}

/// What one simulated group size measured.
#[derive(Default)]
pub struct SimRun {
    /// Trials per measurement.
    pub trials: usize,
    /// Virtual seconds to form the group.
    pub formation_virtual_s: f64,
    /// Wall seconds the whole size took.
    pub wall_s: f64,
    /// Newcomer start -> view with it at every member.
    pub join: Latencies,
    /// Crash -> view without it at every survivor (unreachable hints only).
    pub crash: Latencies,
    /// Crash -> view without it, with the crash watch emulated.
    pub crash_watch: Latencies,
    /// Pause -> view without it at every other member.
    pub pause: Latencies,
    /// Resume -> one view with every member (rejoined).
    pub resume: Latencies,
    /// Message counts, JSON.
    pub messages: Value,
    /// Idle traffic, JSON.
    pub idle: Value,
    /// Trials that did not end as expected.
    pub failures: Vec<String>,
}

/// Which installed views a trial waits for.
type ViewPredicate = Box<dyn Fn(&[Member]) -> bool>;

/// The simulator with the daemons emulated.
pub(crate) struct Group {
    /// The simulator.
    pub(crate) sim: Simulator<CoreSet>,
    /// Every mserver's address, in start order.
    pub(crate) nodes: Vec<NodeId>,
    /// Watcher -> watched.
    watches: BTreeMap<NodeId, NodeId>,
    /// Nodes that installed a view matching `target` since it was set, and
    /// when (first time).
    reached: BTreeMap<NodeId, Instant>,
    target: Option<ViewPredicate>,
    /// Whether a view was installed in the last drain.
    installed: bool,
    /// Views installed since the counter was reset.
    installs: u64,
    /// Whether [`Group::drain`] appends every install to `log`.
    pub(crate) logging: bool,
    /// The installs seen while `logging` was on.
    pub(crate) log: Vec<Install>,
}

impl Group {
    /// `n` mservers (none started yet) in a simulator seeded with `seed`.
    pub(crate) fn new(seed: u64, n: usize) -> Group {
        let config = SimConfig::new(seed, membership::sim_replay!("msbench_membership"))
            .with_link(LinkConfig::lan());
        let mut sim = Simulator::new(config, move |spawn| {
            let c = CoreSetConfig::new(spawn.id, spawn.incarnation, GROUP, group_addr());
            match CoreSet::new(c, spawn.now, spawn.seed) {
                Ok(core) => core,
                // The configuration is fixed and valid; a failure here is a
                // bug in this program.
                Err(e) => panic!("core-set config: {e}"),
            }
        });
        sim.track_incarnation(|e| match e {
            CoreSetEvent::NewIncarnation(i) => Some(*i),
            _ => None,
        });
        Group {
            sim,
            nodes: (0..n).map(node).collect(),
            watches: BTreeMap::new(),
            reached: BTreeMap::new(),
            target: None,
            installed: false,
            installs: 0,
            logging: false,
            log: Vec::new(),
        }
    }

    /// Forms the group: the founder alone, then the others in batches
    /// started at one instant, each batch admitted before the next starts.
    /// The virtual time it took, or what did not happen.
    pub(crate) fn form(&mut self) -> Result<Duration, String> {
        let n = self.nodes.len();
        let t0 = self.sim.now();
        let Some(&founder) = self.nodes.first() else {
            return Err("no members".into());
        };
        self.start(founder);
        let mut up = vec![founder];
        if !self.run_until(FORM_LIMIT, |g| g.one_view_of(&[founder])) {
            return Err("the founder did not found the group".into());
        }
        let all = self.nodes.clone();
        for batch in all[1..].chunks(FORM_BATCH) {
            for &b in batch {
                self.start(b);
                up.push(b);
            }
            let want = up.clone();
            if !self.run_until(FORM_LIMIT, |g| g.one_view_of(&want)) {
                return Err(format!(
                    "the group did not form ({} of {n} started)",
                    up.len()
                ));
            }
        }
        Ok(self.sim.now().saturating_duration_since(t0))
    }

    fn start(&mut self, n: NodeId) {
        if self.sim.nodes().any(|x| x == n) {
            self.sim.restart(n);
        } else {
            self.sim.join_group(n, group_addr());
            self.sim.add_node(n);
        }
        self.drain();
    }

    fn crash(&mut self, n: NodeId, watch: bool) {
        self.sim.crash(n);
        self.watches.remove(&n);
        if watch {
            let watchers: Vec<NodeId> = self
                .watches
                .iter()
                .filter(|(_, t)| **t == n)
                .map(|(w, _)| *w)
                .collect();
            let at = self.sim.now() + WATCH_DELAY;
            for w in watchers {
                self.sim.schedule(at, move |s| {
                    let _ = s.with_core(w, |c, now| c.handle_unreachable(now, n));
                });
            }
        }
        self.drain();
    }

    fn set_target(&mut self, p: impl Fn(&[Member]) -> bool + 'static) {
        self.reached.clear();
        self.target = Some(Box::new(p));
    }

    /// Takes the simulator's events: watches, installs, targets reached.
    pub(crate) fn drain(&mut self) {
        for (t, n, e) in self.sim.take_events() {
            match e {
                CoreSetEvent::Watch(Some(target)) => {
                    self.watches.insert(n, target);
                }
                CoreSetEvent::Watch(None) => {
                    self.watches.remove(&n);
                }
                CoreSetEvent::ViewInstalled {
                    members,
                    view,
                    merged,
                    ..
                } => {
                    self.installed = true;
                    self.installs += 1;
                    if self.logging {
                        self.log.push(Install {
                            at: t,
                            node: n,
                            view,
                            merged,
                        });
                    }
                    if let Some(p) = &self.target {
                        if p(&members) {
                            self.reached.entry(n).or_insert(t);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Runs `d` of virtual time in 5 ms steps, draining after each.
    pub(crate) fn run_for(&mut self, d: Duration) {
        let end = self.sim.now() + d;
        while self.sim.now() < end {
            let step = Duration::from_millis(5).min(end - self.sim.now());
            self.sim.run_for(step);
            self.drain();
        }
    }

    /// Steps until `cond` holds (checked after every step that installed a
    /// view, and every 256 steps) or `limit` of virtual time passes.
    pub(crate) fn run_until(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&Group) -> bool,
    ) -> bool {
        let end = self.sim.now() + limit;
        let mut steps = 0u64;
        loop {
            if cond(self) {
                return true;
            }
            loop {
                match self.sim.next_event_time() {
                    Some(t) if t <= end => {
                        self.installed = false;
                        self.sim.step();
                        self.drain();
                        steps += 1;
                        if self.installed || steps % 256 == 0 {
                            break;
                        }
                    }
                    _ => {
                        self.sim.run_until(end);
                        self.drain();
                        return cond(self);
                    }
                }
            }
        }
    }

    /// When every node of `nodes` reached the target (the latest of them).
    fn all_reached(&self, nodes: &[NodeId]) -> Option<Instant> {
        let mut last: Option<Instant> = None;
        for n in nodes {
            let t = *self.reached.get(n)?;
            last = Some(last.map_or(t, |l| l.max(t)));
        }
        last
    }

    /// Every node of `nodes` is an idle member of one view whose table is
    /// exactly `nodes` in their current lives.
    pub(crate) fn one_view_of(&self, nodes: &[NodeId]) -> bool {
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
        }
        // Same view id everywhere; check the table once (all equal by the
        // view invariants) against the current incarnations.
        let Some(t) = nodes.first().and_then(|n| self.sim.core(*n)?.table()) else {
            return false;
        };
        let set: BTreeSet<NodeId> = nodes.iter().copied().collect();
        t.rows.iter().all(|r| {
            set.contains(&r.addr)
                && self.sim.core(r.addr).map(|c| c.incarnation()) == Some(r.incarnation)
        })
    }

    /// Every node's counters now.
    pub(crate) fn counters(&self) -> BTreeMap<NodeId, Counters> {
        self.nodes
            .iter()
            .map(|n| {
                let mut c = Counters::default();
                if let Some(s) = self.sim.node_stats(*n) {
                    c.datagrams = s.sent;
                    c.bytes = s.sent_bytes;
                    c.delivered = s.delivered;
                }
                if let Some(core) = self.sim.core(*n) {
                    let s = &core.stats().sent;
                    c.change = change_kinds(s);
                    c.monitor = s.query + s.reply;
                }
                (*n, c)
            })
            .collect()
    }

    /// Adds the traffic between `before` and now to `into` (core counters
    /// of nodes whose life ended in between are not counted).
    fn add_traffic(&self, before: &BTreeMap<NodeId, Counters>, into: &mut ChangeTraffic) {
        let after = self.counters();
        into.changes += 1;
        let mut max_change = 0;
        for (n, a) in &after {
            let b = before.get(n).cloned().unwrap_or_default();
            into.datagrams += a.datagrams.saturating_sub(b.datagrams);
            into.bytes += a.bytes.saturating_sub(b.bytes);
            into.delivered += a.delivered.saturating_sub(b.delivered);
            // A restarted node's core counters start again from zero.
            let (ch, mo) = if a.change >= b.change && a.monitor >= b.monitor {
                (a.change - b.change, a.monitor - b.monitor)
            } else {
                (a.change, a.monitor)
            };
            into.change_msgs += ch;
            into.monitor_msgs += mo;
            max_change = max_change.max(ch);
        }
        into.max_node_change_msgs += max_change;
    }

    /// Quiet virtual time before a fault: 300 ms plus up to 200 ms at random.
    pub(crate) fn settle(&mut self, rng: &mut ChaCha8Rng) {
        let jitter = Duration::from_micros(rng.random_range(0..=SETTLE_JITTER_US));
        self.run_for(SETTLE + jitter);
    }
}

fn traffic_json(t: &ChangeTraffic, n: usize) -> Value {
    let per = |x: u64| {
        if t.changes == 0 {
            0.0
        } else {
            crate::stats::round2(x as f64 / t.changes as f64 / n as f64)
        }
    };
    let per_change = |x: u64| {
        if t.changes == 0 {
            0.0
        } else {
            crate::stats::round2(x as f64 / t.changes as f64)
        }
    };
    json!({
        "changes": t.changes,
        "datagrams_per_member_per_change": per(t.datagrams),
        "bytes_per_member_per_change": per(t.bytes),
        "delivered_per_member_per_change": per(t.delivered),
        "change_msgs_per_member_per_change": per(t.change_msgs),
        "monitor_msgs_per_member_per_change": per(t.monitor_msgs),
        "coordinator_change_msgs_per_change": per_change(t.max_node_change_msgs),
    })
}

fn contains(m: &[Member], a: NodeId) -> bool {
    m.iter().any(|x| x.addr == a)
}

/// Runs every trial for a simulated group of `n`.
#[allow(clippy::disallowed_methods)] // wall time of the run, for the report
pub fn run_size(n: usize, trials: usize, opts: &SimOptions, rng: &mut ChaCha8Rng) -> SimRun {
    let wall = std::time::Instant::now();
    let mut run = SimRun {
        trials,
        ..SimRun::default()
    };
    let mut g = Group::new(opts.seed ^ (n as u64).wrapping_mul(0x9E37_79B9), n);
    let progress = |msg: &str| {
        if opts.progress {
            eprintln!("msbench membership: sim {n}: {msg}");
        }
    };

    progress("forming the group");
    match g.form() {
        Ok(d) => run.formation_virtual_s = d.as_secs_f64(),
        Err(e) => {
            run.failures.push(e);
            return finish(run, wall);
        }
    }
    let all = g.nodes.clone();
    g.run_for(Duration::from_secs(1));

    // Idle traffic.
    progress("idle traffic");
    let before = g.counters();
    g.installs = 0;
    g.run_for(opts.idle);
    let after = g.counters();
    let secs = opts.idle.as_secs_f64();
    let dg: Vec<f64> = all
        .iter()
        .map(|x| (after[x].datagrams - before[x].datagrams) as f64 / secs)
        .collect();
    let by: Vec<f64> = all
        .iter()
        .map(|x| (after[x].bytes - before[x].bytes) as f64 / secs)
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let r2 = crate::stats::round2;
    run.idle = json!({
        "virtual_s": secs,
        "datagrams_per_s_mean": r2(mean(&dg)),
        "datagrams_per_s_max": r2(dg.iter().copied().fold(0.0, f64::max)),
        "bytes_per_s_mean": r2(mean(&by)),
        "bytes_per_s_max": r2(by.iter().copied().fold(0.0, f64::max)),
        "views_installed_while_idle": g.installs,
    });

    let mut crash_traffic = ChangeTraffic::default();
    let mut join_traffic = ChangeTraffic::default();
    let mut pause_traffic = ChangeTraffic::default();

    for watch in [false, true] {
        progress(if watch {
            "crash trials (crash watch emulated)"
        } else {
            "crash trials (unreachable hints only)"
        });
        for t in 0..trials {
            g.settle(rng);
            let victim = all[rng.random_range(1..n)];
            let survivors: Vec<NodeId> = all.iter().copied().filter(|x| *x != victim).collect();
            g.set_target(move |m| !contains(m, victim));
            let before = g.counters();
            let t0 = g.sim.now();
            g.crash(victim, watch);
            if g.run_until(TRIAL_LIMIT, |g| g.all_reached(&survivors).is_some()) {
                if let Some(at) = g.all_reached(&survivors) {
                    let d = at.saturating_duration_since(t0);
                    if watch {
                        run.crash_watch.push(d);
                    } else {
                        run.crash.push(d);
                    }
                }
                g.add_traffic(&before, &mut crash_traffic);
            } else {
                run.failures.push(format!(
                    "crash trial {t}: no view without {victim} everywhere"
                ));
            }
            // The restart is a join.
            g.set_target(move |m| contains(m, victim));
            let before = g.counters();
            let t1 = g.sim.now();
            g.start(victim);
            if g.run_until(TRIAL_LIMIT, |g| g.all_reached(&all).is_some()) {
                if let Some(at) = g.all_reached(&all) {
                    run.join.push(at.saturating_duration_since(t1));
                }
                g.add_traffic(&before, &mut join_traffic);
            } else {
                run.failures
                    .push(format!("join trial {t}: no view with {victim} everywhere"));
            }
            if !g.run_until(TRIAL_LIMIT, |g| g.one_view_of(&all)) {
                run.failures
                    .push(format!("crash trial {t}: no convergence"));
                return finish(run, wall);
            }
        }
    }

    progress("pause trials");
    for t in 0..trials {
        g.settle(rng);
        let victim = all[rng.random_range(0..n)];
        let old = g.sim.incarnation(victim);
        let others: Vec<NodeId> = all.iter().copied().filter(|x| *x != victim).collect();
        g.set_target(move |m| !contains(m, victim));
        let before = g.counters();
        let t0 = g.sim.now();
        g.sim.pause(victim);
        g.drain();
        if g.run_until(TRIAL_LIMIT, |g| g.all_reached(&others).is_some()) {
            if let Some(at) = g.all_reached(&others) {
                run.pause.push(at.saturating_duration_since(t0));
            }
            g.add_traffic(&before, &mut pause_traffic);
        } else {
            run.failures.push(format!(
                "pause trial {t}: no view without {victim} everywhere"
            ));
        }
        let t1 = g.sim.now();
        g.sim.resume(victim);
        g.drain();
        let ok = g.run_until(TRIAL_LIMIT, |g| {
            g.sim.incarnation(victim) != old && g.one_view_of(&all)
        });
        if ok {
            run.resume.push(g.sim.now().saturating_duration_since(t1));
        } else {
            run.failures.push(format!(
                "pause trial {t}: {victim} did not rejoin, or no one view"
            ));
            if !g.run_until(TRIAL_LIMIT, |g| g.one_view_of(&all)) {
                return finish(run, wall);
            }
        }
    }

    run.messages = json!({
        "crash": traffic_json(&crash_traffic, n),
        "join": traffic_json(&join_traffic, n),
        "pause": traffic_json(&pause_traffic, n),
    });
    finish(run, wall)
}

#[allow(clippy::disallowed_methods)] // wall time of the run, for the report
fn finish(mut run: SimRun, wall: std::time::Instant) -> SimRun {
    run.wall_s = wall.elapsed().as_secs_f64();
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A small group goes through every trial kind and every latency lands
    /// within the protocol's timer arithmetic (virtual time: exact bounds,
    /// no wall clock).
    #[test]
    fn small_group_measures_every_trial() {
        let opts = SimOptions {
            idle: Duration::from_secs(2),
            seed: 7,
            progress: false,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let run = run_size(5, 3, &opts, &mut rng);
        assert!(run.failures.is_empty(), "{:?}", run.failures);
        for (name, l) in [
            ("join", &run.join),
            ("crash", &run.crash),
            ("crash_watch", &run.crash_watch),
            ("pause", &run.pause),
            ("resume", &run.resume),
        ] {
            assert!(l.len() >= 3, "{name}: {} samples", l.len());
            // Nothing takes longer than a few seconds of virtual time on a
            // clean LAN.
            assert!(l.quantile_us(1.0) < 5e6, "{name}: {}", l.quantile_us(1.0));
        }
        // The crash watch makes crashes no slower to detect.
        assert!(run.crash_watch.quantile_us(0.5) <= run.crash.quantile_us(0.5));
        assert_eq!(run.idle["views_installed_while_idle"], 0);
        assert!(run.idle["datagrams_per_s_mean"].as_f64().unwrap_or(0.0) > 0.0);
        assert!(run.messages["crash"]["changes"].as_u64().unwrap_or(0) >= 3);
    }
}
