//! The real-process half of `msbench hierarchy`: the two-level tree of
//! [`procs`](super::procs) (8 mservers, 3 child sets, a top group of their
//! parents) and its trials:
//!
//! - **SIGKILL of a parent** (each child set once per round of three
//!   trials, in a random order within the round): kill -> (1) `child`: the child set's view
//!   without it at every survivor of the set; (2) `top_without`: the top
//!   group's view without it at every other top member; (3)
//!   `reparented`: the top group's view with the set's new parent (and
//!   without the dead one) at every member of the top group, the new
//!   parent included. Then the mserver restarts with its configuration
//!   (it stays a standby) and the bench waits until `msctl tree --json`
//!   says the tree is whole before the next trial.
//! - **SIGSTOP of a parent**: the same three figures from the SIGSTOP; the
//!   mserver stays stopped until all three are seen, then SIGCONT ->
//!   `resume_whole`: the tree whole again by `msctl tree --json`, polled
//!   every 100 ms (a bound, not a precise figure).
//! - **a subtree cut**: one child set (its parent included; the same
//!   order of sets as above) cut from
//!   every other mserver, both ways (`msctl fault --clear --block ADDR...`
//!   on all eight, run at once); `cut`: the cut parent alone in its top
//!   group and the other parents in a top view without it. After a random
//!   quiet time up to 1 s, `msctl fault --clear` everywhere at once;
//!   `heal_merged`: from the clear to the last line of the views that make
//!   every level one view again (every child set one view of its members
//!   at each of them, the top group one view of the three parents at each
//!   of them), which must then stay unchanged for 1 s; `heal_whole`: the
//!   same checked with `msctl tree --json` (one parent per child set, each
//!   naming its set), polled every 100 ms from the merged views on (so it
//!   is a bound: merged + up to one poll + the msctl calls).
//! - **idle traffic per role**: `msctl stats --json` before and after a
//!   quiet window, bytes sent per second without `rpc` (msctl's own), for
//!   plain members and for parents.
//!
//! Latencies come from the mservers' log lines stamped on arrival, as in
//! `msbench membership`.

// The benchmark owns the clock.
#![allow(clippy::disallowed_methods)]

use super::procs::{set_name, Parents, Tree, SERVERS, SETS, TOP};
use crate::membership::procs::{Binaries, ViewMember};
use crate::stats::{round2, Latencies};
use anyhow::{anyhow, bail};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Longest wait for the figures of one fault (a failed trial after that).
const TRIAL_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for the tree to be whole again (as `mserver/tests/tree.rs`).
const WHOLE_LIMIT: Duration = Duration::from_secs(40);
/// How often `msctl tree` is asked while waiting for the whole tree.
const WHOLE_POLL: Duration = Duration::from_millis(100);
/// Longest wait for the merged views after a heal.
const HEAL_LIMIT: Duration = Duration::from_secs(20);
/// How long the merged views must stay unchanged to count.
const STABLE: Duration = Duration::from_secs(1);
/// Quiet time before each fault, plus up to one query interval at random
/// (faults land at random phases of the monitoring round).
const SETTLE: Duration = Duration::from_millis(500);
const SETTLE_JITTER_MS: u64 = 200;

/// Options of the real-process runs.
#[derive(Clone, Debug)]
pub struct RealOptions {
    /// Trials per fault kind.
    pub trials: usize,
    /// Length of the idle measurement.
    pub idle: Duration,
    /// Print progress on stderr.
    pub progress: bool,
}

/// The figures of one kind of parent fault.
#[derive(Default)]
pub struct ParentFault {
    /// Fault -> the child set's view without the parent at every survivor.
    pub child: Latencies,
    /// Fault -> the top group's view without it at every other member.
    pub top_without: Latencies,
    /// Fault -> the top group's view with the set's new parent at every
    /// member of the top group.
    pub reparented: Latencies,
    /// SIGCONT -> the tree whole again (`msctl tree`, polled).
    pub resume_whole: Latencies,
    /// Restart of the killed mserver -> the tree whole again (polled).
    pub restart_whole: Latencies,
    /// Which rank of the child set became its parent, per trial (the
    /// lowest-rank survivor, by the rule).
    pub new_parent_was_lowest: Vec<bool>,
    /// Per trial: [child, top_without, reparented] in milliseconds.
    pub per_trial: Vec<[f64; 3]>,
    /// Per trial: whether the victim was the top group's lowest rank.
    pub victim_was_top_coordinator: Vec<bool>,
}

/// What the real-process trials measured.
#[derive(Default)]
pub struct RealRun {
    /// Seconds from starting all eight at once to the whole tree.
    pub formation_s: f64,
    /// SIGKILL of a parent.
    pub kill: ParentFault,
    /// SIGSTOP of a parent.
    pub stop: ParentFault,
    /// Cut -> the cut parent alone at the top, the others without it.
    pub cut: Latencies,
    /// Clear -> every level one merged view (log lines).
    pub heal_merged: Latencies,
    /// Clear -> the whole tree by `msctl tree` (polled).
    pub heal_whole: Latencies,
    /// Views installed (all levels, all mservers) per heal until merged.
    pub heal_views: Vec<usize>,
    /// Level-1 views installed while a child set was cut off (the cut
    /// should change only the top group).
    pub cut_level1_views: Vec<usize>,
    /// How long the `msctl fault` commands took (all at once).
    pub fault_cmd: Latencies,
    /// How long kill(1) for SIGSTOP/SIGCONT took (in the figures).
    pub signal_cmd: Latencies,
    /// Idle traffic per role.
    pub idle: Value,
    /// Trials that did not end as expected.
    pub failures: Vec<Value>,
    /// Warnings and errors the mservers logged, by message.
    pub warnings: BTreeMap<String, u64>,
    /// Set when the run had to stop early.
    pub aborted: Option<String>,
}

fn contains(m: &[ViewMember], a: SocketAddr) -> bool {
    m.iter().any(|x| x.addr == a)
}

fn progress(opts: &RealOptions, msg: &str) {
    if opts.progress {
        eprintln!("msbench hierarchy: {msg}");
    }
}

/// Runs every real-process trial.
pub fn run(bins: &Binaries, opts: &RealOptions, rng: &mut ChaCha8Rng) -> RealRun {
    let mut run = RealRun::default();
    let mut t = match Tree::new(bins) {
        Ok(t) => t,
        Err(e) => {
            run.aborted = Some(format!("{e:#}"));
            return run;
        }
    };
    if let Err(e) = trials(&mut t, opts, rng, &mut run) {
        run.aborted = Some(format!("{e:#}"));
        run.failures
            .push(diagnose(&t, "aborted", 0, &format!("{e:#}")));
    }
    run.warnings = t.warnings.clone();
    run
}

fn settle(t: &mut Tree, rng: &mut ChaCha8Rng) {
    let jitter = Duration::from_millis(rng.random_range(0..=SETTLE_JITTER_MS));
    t.idle(SETTLE + jitter);
}

/// Waits for the whole tree or fails the run with the reason.
fn whole(t: &mut Tree, what: &str) -> anyhow::Result<(Parents, Instant)> {
    t.wait_whole(WHOLE_LIMIT, WHOLE_POLL)
        .map_err(|e| anyhow!("{what}: the tree is not whole within {WHOLE_LIMIT:?}: {e}"))
}

fn trials(
    t: &mut Tree,
    opts: &RealOptions,
    rng: &mut ChaCha8Rng,
    run: &mut RealRun,
) -> anyhow::Result<()> {
    progress(
        opts,
        "forming the tree (8 mservers, 3 child sets, top group)",
    );
    let t0 = Instant::now();
    for i in 0..SERVERS {
        t.start(i)?;
    }
    let (mut parents, at) = whole(t, "formation")?;
    run.formation_s = at.saturating_duration_since(t0).as_secs_f64();
    t.idle(Duration::from_secs(1));

    progress(opts, &format!("idle traffic ({:?})", opts.idle));
    run.idle = measure_idle(t, &parents, opts.idle)?;

    for (kind, name) in [(Fault::Kill, "SIGKILL"), (Fault::Stop, "SIGSTOP")] {
        progress(opts, &format!("{name} of a parent, {} trials", opts.trials));
        let order = set_order(opts.trials, rng);
        for (n, k) in order.into_iter().enumerate() {
            parents = parent_trial(t, kind, n, k, &parents, rng, run)?;
        }
    }

    progress(
        opts,
        &format!("subtree cut and heal, {} trials", opts.trials),
    );
    let order = set_order(opts.trials, rng);
    for (n, k) in order.into_iter().enumerate() {
        parents = cut_trial(t, n, k, &parents, rng, run)?;
    }
    Ok(())
}

/// Which child set each of `trials` trials hits: every set once per
/// round of three, in a random order within the round. (A fixed rotation
/// would always hit the parent that has been in the top group longest,
/// its lowest rank, which is also its join coordinator.)
fn set_order(trials: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    use rand::seq::SliceRandom;
    let mut out = Vec::with_capacity(trials);
    while out.len() < trials {
        let mut round: Vec<usize> = (0..SETS.len()).collect();
        round.shuffle(rng);
        out.extend(round);
    }
    out.truncate(trials);
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Stop,
}

/// The three figures of a parent fault, once all are seen: (child set
/// without it, top without it, top with the new parent), each the latest
/// arrival over the mservers concerned, and the new parent.
fn parent_figures(
    t: &Tree,
    k: usize,
    victim: usize,
    parents: &Parents,
) -> Option<(Instant, Instant, Instant, usize)> {
    let va = t.addr(victim);
    let survivors: Vec<usize> = SETS[k]
        .iter()
        .copied()
        .filter(|i| *i != victim && t.server(*i).is_some())
        .collect();
    let other_top: Vec<usize> = parents.values().copied().filter(|i| *i != victim).collect();
    let child = t.all_first(&survivors, &set_name(k), |m| !contains(m, va))?;
    let top_without = t.all_first(&other_top, TOP, |m| !contains(m, va))?;
    // The new parent: the survivor of the set in a top view without the
    // victim.
    let np = survivors.iter().copied().find(|i| {
        let a = t.addr(*i);
        t.first_view(*i, TOP, |m| contains(m, a) && !contains(m, va))
            .is_some()
    })?;
    let na = t.addr(np);
    let mut top_members = other_top;
    top_members.push(np);
    let reparented = t.all_first(&top_members, TOP, |m| contains(m, na) && !contains(m, va))?;
    Some((child, top_without, reparented, np))
}

/// One SIGKILL or SIGSTOP trial (number `n`): the parent of child set `k`.
fn parent_trial(
    t: &mut Tree,
    kind: Fault,
    n: usize,
    k: usize,
    parents: &Parents,
    rng: &mut ChaCha8Rng,
    run: &mut RealRun,
) -> anyhow::Result<Parents> {
    let victim = *parents
        .get(&k)
        .ok_or_else(|| anyhow!("{} has no parent", set_name(k)))?;
    // Whether it is the top group's lowest rank (its join coordinator).
    let coordinator = top_lowest_rank(t, victim) == Some(victim);
    // The rule: the lowest-rank survivor of the set becomes its parent.
    let lowest = lowest_rank_survivor(t, k, victim);
    settle(t, rng);
    t.mark();
    let phase = if kind == Fault::Kill { "kill" } else { "stop" };
    let t0 = match kind {
        Fault::Kill => t
            .kill(victim)
            .ok_or_else(|| anyhow!("mserver {victim} was not running"))?,
        Fault::Stop => {
            let t0 = t.stop_cont(victim, true)?;
            run.signal_cmd.push(t0.elapsed());
            t0
        }
    };
    let sink = if kind == Fault::Kill {
        &mut run.kill
    } else {
        &mut run.stop
    };
    match t.wait_for(TRIAL_LIMIT, |t| parent_figures(t, k, victim, parents)) {
        Some((child, top_without, reparented, np)) => {
            sink.child.push(child.saturating_duration_since(t0));
            sink.top_without
                .push(top_without.saturating_duration_since(t0));
            sink.reparented
                .push(reparented.saturating_duration_since(t0));
            if let Some(l) = lowest {
                sink.new_parent_was_lowest.push(l == np);
            }
            let ms = |i: Instant| i.saturating_duration_since(t0).as_secs_f64() * 1000.0;
            sink.per_trial
                .push([ms(child), ms(top_without), ms(reparented)]);
            sink.victim_was_top_coordinator.push(coordinator);
        }
        None => {
            let what = format!(
                "{phase} of {}'s parent (mserver {victim}): not every figure seen within {TRIAL_LIMIT:?}",
                set_name(k)
            );
            run.failures.push(diagnose(t, phase, n, &what));
        }
    }
    let (back, at) = match kind {
        Fault::Kill => {
            t.start(victim)?;
            let t1 = Instant::now();
            let r = whole(t, &format!("{phase} trial {n}, after the restart"))?;
            run.kill
                .restart_whole
                .push(r.1.saturating_duration_since(t1));
            (r.0, r.1)
        }
        Fault::Stop => {
            let t1 = t.stop_cont(victim, false)?;
            run.signal_cmd.push(t1.elapsed());
            let r = whole(t, &format!("{phase} trial {n}, after SIGCONT"))?;
            run.stop
                .resume_whole
                .push(r.1.saturating_duration_since(t1));
            (r.0, r.1)
        }
    };
    let _ = at;
    Ok(back)
}

/// The lowest-rank member of child set `k` other than `victim`, by the
/// latest set view `victim`'s set mates logged (from `msctl tree`).
fn lowest_rank_survivor(t: &Tree, k: usize, victim: usize) -> Option<usize> {
    let someone = SETS[k].iter().copied().find(|i| *i != victim)?;
    let tree = t.msctl_tree(someone)?;
    tree["levels"][0]["members"]
        .as_array()?
        .iter()
        .filter_map(|m| {
            let addr: SocketAddr = m["addr"].as_str()?.parse().ok()?;
            Some((m["rank"].as_u64()?, t.index_of(addr)?))
        })
        .filter(|(_, i)| *i != victim)
        .min()
        .map(|(_, i)| i)
}

/// The mserver with the lowest rank in `someone`'s top-group view (from
/// `msctl tree`).
fn top_lowest_rank(t: &Tree, someone: usize) -> Option<usize> {
    let tree = t.msctl_tree(someone)?;
    tree["levels"][1]["members"]
        .as_array()?
        .iter()
        .filter_map(|m| {
            let addr: SocketAddr = m["addr"].as_str()?.parse().ok()?;
            Some((m["rank"].as_u64()?, t.index_of(addr)?))
        })
        .min()
        .map(|(_, i)| i)
}

/// `fault --clear --block ADDR...` with the addresses of `other`.
fn block_args(t: &Tree, other: &[usize]) -> Vec<String> {
    let mut v = vec!["fault".to_string(), "--clear".to_string()];
    for j in other {
        v.push("--block".into());
        v.push(t.addr(*j).to_string());
    }
    v
}

/// One subtree cut and heal (number `n`): child set `k` cut from every
/// other mserver and healed.
fn cut_trial(
    t: &mut Tree,
    n: usize,
    k: usize,
    parents: &Parents,
    rng: &mut ChaCha8Rng,
    run: &mut RealRun,
) -> anyhow::Result<Parents> {
    let inside: Vec<usize> = SETS[k].to_vec();
    let everyone = t.indexes();
    let outside: Vec<usize> = everyone
        .iter()
        .copied()
        .filter(|i| !inside.contains(i))
        .collect();
    let pk = parents[&k];
    let pa = t.addr(pk);
    let other_top: Vec<usize> = parents.values().copied().filter(|i| *i != pk).collect();
    settle(t, rng);
    t.mark();
    let cut = Instant::now();
    let cmd = t.msctl_all(&everyone, |i| {
        block_args(
            t,
            if inside.contains(&i) {
                &outside
            } else {
                &inside
            },
        )
    })?;
    run.fault_cmd.push(cmd);
    let sides = t.wait_for(TRIAL_LIMIT, |t| {
        let alone = t.first_view(pk, TOP, |m| m.len() == 1 && contains(m, pa))?;
        let others = t.all_first(&other_top, TOP, |m| !contains(m, pa))?;
        Some(alone.max(others))
    });
    match sides {
        Some(at) => run.cut.push(at.saturating_duration_since(cut)),
        None => {
            let what = format!(
                "cut of {}: the top group did not split within {TRIAL_LIMIT:?}",
                set_name(k)
            );
            run.failures.push(diagnose(t, "cut", n, &what));
        }
    }
    // A random quiet time, so the heal lands at a random phase of the
    // sides' ANNOUNCE rounds (one per second).
    t.idle(Duration::from_millis(rng.random_range(0..=1000)));
    run.cut_level1_views.push(
        t.log
            .iter()
            .filter(|e| {
                matches!(
                    &e.kind,
                    super::procs::LogKind::ViewInstalled { level: 1, .. }
                )
            })
            .count(),
    );
    t.mark();
    let heal = Instant::now();
    let cmd = t.msctl_all(&everyone, |_| vec!["fault".into(), "--clear".into()])?;
    run.fault_cmd.push(cmd);
    // Every level one view of its members: each set at its members, the
    // top at the parents (unchanged by a cut of a whole set).
    let mut groups: Vec<(String, Vec<usize>)> = SETS
        .iter()
        .enumerate()
        .map(|(j, s)| (set_name(j), s.to_vec()))
        .collect();
    groups.push((TOP.to_string(), parents.values().copied().collect()));
    let mut whole_at = None;
    match wait_stable(t, &groups, heal) {
        Some((at, w)) => {
            whole_at = w;
            run.heal_merged.push(at.saturating_duration_since(heal));
            run.heal_views.push(
                t.log
                    .iter()
                    .filter(|e| {
                        e.at <= at && matches!(e.kind, super::procs::LogKind::ViewInstalled { .. })
                    })
                    .count(),
            );
        }
        None => {
            let what = format!(
                "heal of {}: no stable merged views within {HEAL_LIMIT:?}",
                set_name(k)
            );
            run.failures.push(diagnose(t, "heal", n, &what));
        }
    }
    let (back, at) = whole(t, &format!("cut trial {n}, after the heal"))?;
    run.heal_whole
        .push(whole_at.unwrap_or(at).saturating_duration_since(heal));
    Ok(back)
}

/// Waits until `groups` are each one view of their members and the views
/// stay so for [`STABLE`]: the arrival of the last line of those views,
/// and the first instant within the stable window at which `msctl tree`
/// found the tree whole (polled every [`WHOLE_POLL`]). Views installed
/// before `since` count (a level the cut did not touch), but at least one
/// must come after it.
fn wait_stable(
    t: &mut Tree,
    groups: &[(String, Vec<usize>)],
    since: Instant,
) -> Option<(Instant, Option<Instant>)> {
    let end = Instant::now() + HEAL_LIMIT;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let at = t.wait_for(left, |t| t.agreed(groups).filter(|a| *a >= since))?;
        let stable_end = Instant::now() + STABLE;
        let mut whole_at = None;
        while Instant::now() < stable_end {
            if whole_at.is_none() && t.whole().is_ok() {
                whole_at = Some(Instant::now());
            }
            t.idle(WHOLE_POLL.min(stable_end.saturating_duration_since(Instant::now())));
        }
        if t.agreed(groups) == Some(at) {
            return Some((at, whole_at));
        }
        if Instant::now() >= end {
            return None;
        }
    }
}

/// A failure record: what was expected, the views each mserver holds, and
/// the last log lines.
fn diagnose(t: &Tree, phase: &str, trial: usize, what: &str) -> Value {
    let held: BTreeMap<String, Value> = t
        .latest
        .iter()
        .map(|((i, g), h)| {
            (
                format!("{} {g}", t.addr(*i)),
                json!({"view": h.view, "members": h.members.iter().map(|a| a.to_string()).collect::<Vec<_>>()}),
            )
        })
        .collect();
    let tails: BTreeMap<String, Vec<String>> = t
        .tails(8)
        .into_iter()
        .map(|(i, l)| (t.addr(i).to_string(), l))
        .collect();
    eprintln!("msbench hierarchy: {phase} trial {trial} failed: {what}");
    json!({
        "phase": phase,
        "trial": trial,
        "what": what,
        "views_held": held,
        "log_tails": tails,
    })
}

/// Bytes and datagrams sent per second per mserver over `d` of idleness,
/// from `msctl stats --json` before and after (the mservers' own uptime
/// clocks give the interval), without `rpc` (msctl's own traffic), by
/// role: plain members and parents.
fn measure_idle(t: &mut Tree, parents: &Parents, d: Duration) -> anyhow::Result<Value> {
    let idx = t.indexes();
    t.mark();
    let before: Vec<Option<Value>> = idx.iter().map(|i| t.msctl_stats(*i)).collect();
    t.idle(d);
    let after: Vec<Option<Value>> = idx.iter().map(|i| t.msctl_stats(*i)).collect();
    let views_while_idle = t
        .log
        .iter()
        .filter(|e| matches!(e.kind, super::procs::LogKind::ViewInstalled { .. }))
        .count();
    // Per mserver: (bytes/s, datagrams/s, bytes/s by protocol).
    let mut rows: Vec<(usize, f64, f64, BTreeMap<String, f64>)> = Vec::new();
    let mut interval: f64 = 0.0;
    for ((i, b), a) in idx.iter().zip(&before).zip(&after) {
        let (Some(b), Some(a)) = (b, a) else {
            bail!("mserver {i} did not answer msctl stats");
        };
        let secs = (a["uptime_ms"].as_u64().unwrap_or(0) as f64
            - b["uptime_ms"].as_u64().unwrap_or(0) as f64)
            / 1000.0;
        if secs <= 0.0 {
            bail!("mserver {i}: no uptime interval between the stats calls");
        }
        interval = interval.max(secs);
        let field = |v: &Value, f: &str| v[f].as_u64().unwrap_or(0) as f64;
        let mut bytes = 0.0;
        let mut datagrams = 0.0;
        let mut by = BTreeMap::new();
        if let Some(protos) = a["protocols"].as_object() {
            for (name, x) in protos {
                if name == "rpc" {
                    continue;
                }
                let db = field(x, "bytes_sent") - field(&b["protocols"][name], "bytes_sent");
                let dd = field(x, "sent") - field(&b["protocols"][name], "sent");
                bytes += db;
                datagrams += dd;
                by.insert(name.clone(), db / secs);
            }
        }
        rows.push((*i, bytes / secs, datagrams / secs, by));
    }
    let role = |parent: bool| -> Value {
        let of: Vec<&(usize, f64, f64, BTreeMap<String, f64>)> = rows
            .iter()
            .filter(|r| parents.values().any(|p| *p == r.0) == parent)
            .collect();
        let n = of.len().max(1) as f64;
        let mut by: BTreeMap<String, f64> = BTreeMap::new();
        for r in &of {
            for (k, v) in &r.3 {
                *by.entry(k.clone()).or_default() += v / n;
            }
        }
        json!({
            "mservers": of.len(),
            "bytes_per_s_mean": round2(of.iter().map(|r| r.1).sum::<f64>() / n),
            "bytes_per_s_max": round2(of.iter().map(|r| r.1).fold(0.0, f64::max)),
            "datagrams_per_s_mean": round2(of.iter().map(|r| r.2).sum::<f64>() / n),
            "bytes_per_s_mean_by_protocol": by
                .iter()
                .map(|(k, v)| (k.clone(), json!(round2(*v))))
                .collect::<serde_json::Map<String, Value>>(),
        })
    };
    let plain = role(false);
    let parent = role(true);
    let r2 = round2;
    let coreset = |v: &Value| {
        v["bytes_per_s_mean_by_protocol"]["coreset"]
            .as_f64()
            .unwrap_or(0.0)
    };
    Ok(json!({
        "interval_s": r2(interval),
        "plain": plain,
        "parent": parent,
        // What a parent's second level costs it: its core-set bytes above
        // a plain member's (the lowest rank's ANNOUNCE and the parent flag
        // in the table are in both).
        "parent_upper_level_coreset_bytes_per_s": r2(coreset(&parent) - coreset(&plain)),
        "per_mserver_bytes_per_s": rows
            .iter()
            .map(|r| (t.addr(r.0).to_string(), json!(r2(r.1))))
            .collect::<serde_json::Map<String, Value>>(),
        "views_installed_while_idle": views_while_idle,
    }))
}
