//! The simulated half of `msbench partition`: a group of `--sim-members`
//! (default 64) [`CoreSet`](membership::coreset::CoreSet)s in the
//! deterministic simulator (virtual time, the LAN link model
//! [`LinkConfig::lan`](membership::sim::LinkConfig::lan): 100-500 us one
//! way, no loss), split into 2 and into 4 parts and healed, `--sim-trials`
//! (default 20) times each. It follows seed 003, section III.D (partitions)
//! as DESIGN.md section 5 resolves it: the sides' lowest ranks announce,
//! the younger subgroups offer themselves to the oldest, which absorbs them
//! in one `AGREE_M` change (`src/coreset/merge.rs`).
//!
//! Per part count, the group is formed once (as `msbench membership` forms
//! it, [`Group::form`]) and reused trial after trial; it is formed anew
//! only after a trial that did not settle. One trial:
//!
//! - a quiet time, then a random split into k non-empty parts of random
//!   sizes, the members shuffled first so that ring neighbours usually land
//!   in different parts (`Simulator::partition`);
//! - `split`: cut -> every part holds one view of exactly its own members
//!   (the latest first install of that view at any member);
//! - a random quiet time of 0 to 1 s (so the heal lands at a random phase
//!   of the parts' ANNOUNCE rounds), then `Simulator::heal`;
//! - `heal`: heal -> every member holds one view of all of them that stays
//!   unchanged for a further [`STABLE`]; the figure is the first install of
//!   that final view at the last member (a view replaced at once does not
//!   count);
//! - per heal: members whose incarnation changed between the cut and the
//!   merged view (the merge should keep every life; counted, not failed),
//!   views each member installed from the heal to the merged one (that one
//!   included), merges (distinct views installed with `merged: true`), and
//!   datagrams and bytes each member sent from the heal to the merged view
//!   (the simulator's node stats) and change-protocol messages (the cores'
//!   counters).
//!
//! Every wait is bounded in virtual time ([`SPLIT_LIMIT`], [`HEAL_LIMIT`]);
//! a trial that does not settle is listed in `failures` with its seeds and
//! part sizes, and the run goes on with a newly formed group.

use super::counts;
use crate::membership::sim::{Counters, Group, Install};
use crate::membership::{latency, ms_summary};
use crate::stats::{round2, Latencies};
use membership::id::{Incarnation, NodeId, ViewId};
use membership::time::Instant;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// DESIGN.md section 10: partition heals -> one merged view, p99.
const HEAL_P99_MS: f64 = super::HEAL_P99_MS;
/// Longest virtual wait for every part's own view after a cut.
const SPLIT_LIMIT: Duration = Duration::from_secs(20);
/// Longest virtual wait, from the heal, for a stable merged view.
const HEAL_LIMIT: Duration = Duration::from_secs(20);
/// How long the merged view must stay unchanged to end the heal.
const STABLE: Duration = Duration::from_secs(1);
/// The longest random quiet time between the sides' views and the heal.
const QUIET_MAX_MS: u64 = 1000;
/// The part counts measured.
const PART_COUNTS: [usize; 2] = [2, 4];

/// Options of the simulated half.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Members of the simulated group.
    pub members: usize,
    /// Split-and-heal trials per part count.
    pub trials: usize,
    /// The seed of every random choice (splits, quiet times, simulators).
    pub seed: u64,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// What the trials of one part count measured.
#[derive(Default)]
struct PartsRun {
    /// Virtual seconds of each formation of the group.
    formations_virtual_s: Vec<f64>,
    /// Cut -> every part holds one view of exactly its members.
    split: Latencies,
    /// Heal -> one stable view of all members everywhere.
    heal: Latencies,
    /// The random quiet time between the sides' views and the heal.
    quiet: Latencies,
    /// The simulator seed of each formation.
    sim_seeds: Vec<u64>,
    /// One line per trial: its simulator seed, part sizes and figures.
    per_trial: Vec<Value>,
    /// Per trial, members with a new incarnation from the cut to the
    /// sides' views.
    split_restarts: Vec<usize>,
    /// Per heal, members with a new incarnation from the cut to the merged
    /// view.
    restarts: Vec<usize>,
    /// Per heal, the most views one member installed until the merged one.
    views_max: Vec<usize>,
    /// Per heal, the views installed per member until the merged one.
    views_mean: Vec<f64>,
    /// Per heal, distinct views installed with `merged: true`.
    merges: Vec<usize>,
    /// Per heal, datagrams sent per member (mean).
    datagrams_mean: Vec<f64>,
    /// Per heal, the most datagrams one member sent.
    datagrams_max: Vec<u64>,
    /// Per heal, bytes sent per member (mean).
    bytes_mean: Vec<f64>,
    /// Per heal, change-protocol messages sent per member (mean).
    change_msgs_mean: Vec<f64>,
    /// Trials that did not settle.
    failures: Vec<Value>,
    /// Wall seconds the part count took.
    wall_s: f64,
}

/// Runs the simulated half; the `"sim"` object of the output.
pub fn run(opts: &SimOptions) -> Value {
    let wall = std::time::Instant::now();
    let mut out = json!({
        "members": opts.members,
        "trials": opts.trials,
        "link": "LinkConfig::lan(): 100-500 us one way, uniform, no loss",
        "partition": "Simulator::partition into k random non-empty parts of shuffled members; Simulator::heal after 0-1 s quiet",
        "stable_ms": STABLE.as_millis() as u64,
        "heal_limit_ms": HEAL_LIMIT.as_millis() as u64,
    });
    for k in PART_COUNTS {
        let r = run_parts(k, opts);
        out[format!("split_{k}")] = parts_json(k, opts.trials, &r);
    }
    out["wall_s"] = json!(round2(wall.elapsed().as_secs_f64()));
    out
}

fn parts_json(k: usize, trials: usize, r: &PartsRun) -> Value {
    let mean_f = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            round2(v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    let r2all = |v: &[f64]| v.iter().map(|x| round2(*x)).collect::<Vec<_>>();
    json!({
        "parts": k,
        "trials": trials,
        "formations": r.formations_virtual_s.len(),
        "formation_virtual_s": r2all(&r.formations_virtual_s),
        "sim_seeds": r.sim_seeds,
        "split": latency(&r.split, None, None),
        "quiet": ms_summary(&r.quiet),
        "heal": latency(&r.heal, Some(HEAL_P99_MS), None),
        "split_restarted_members": counts(&r.split_restarts),
        "heal_restarted_members": counts(&r.restarts),
        "heal_views_per_member": {
            "max": r.views_max.iter().copied().max().unwrap_or(0),
            "mean": mean_f(&r.views_mean),
            "per_trial_max": r.views_max,
            "per_trial_mean": r2all(&r.views_mean),
        },
        "heal_merges": counts(&r.merges),
        "heal_messages_per_member": {
            "datagrams_mean": mean_f(&r.datagrams_mean),
            "datagrams_max": r.datagrams_max.iter().copied().max().unwrap_or(0),
            "bytes_mean": mean_f(&r.bytes_mean),
            "change_msgs_mean": mean_f(&r.change_msgs_mean),
            "per_trial_datagrams_mean": r2all(&r.datagrams_mean),
        },
        "failures": r.failures,
        "per_trial": r.per_trial,
        "wall_s": round2(r.wall_s),
    })
}

/// A 64-bit mix of the bench seed and the coordinates of a run (the
/// simulator's seed of one formation).
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut x =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x
}

/// `nodes` shuffled and cut at k - 1 distinct random places: k non-empty
/// parts of random sizes (`k <= nodes.len()`), each sorted.
fn random_split(nodes: &[NodeId], k: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<NodeId>> {
    let n = nodes.len();
    let k = k.clamp(1, n.max(1));
    let mut order = nodes.to_vec();
    order.shuffle(rng);
    let mut cuts: Vec<usize> = rand::seq::index::sample(rng, n.saturating_sub(1), k - 1)
        .into_iter()
        .map(|i| i + 1)
        .collect();
    cuts.sort_unstable();
    cuts.push(n);
    let mut parts = Vec::with_capacity(k);
    let mut from = 0;
    for c in cuts {
        let mut p = order[from..c].to_vec();
        p.sort_unstable();
        parts.push(p);
        from = c;
    }
    parts
}

/// When `node` first installed `view`, from the install log.
fn installed_at(log: &[Install], node: NodeId, view: ViewId) -> Option<Instant> {
    log.iter()
        .filter(|i| i.node == node && i.view == view)
        .map(|i| i.at)
        .min()
}

/// The latest, over `nodes`, of the first install of its current view; the
/// time every one of them had it. `None` if one has no view or none logged.
fn all_installed_at(g: &Group, nodes: &[NodeId]) -> Option<Instant> {
    let mut last: Option<Instant> = None;
    for &n in nodes {
        let v = g.sim.core(n)?.view()?;
        let t = installed_at(&g.log, n, v)?;
        last = Some(last.map_or(t, |l| l.max(t)));
    }
    last
}

fn incarnations(g: &Group) -> BTreeMap<NodeId, Option<Incarnation>> {
    g.nodes
        .iter()
        .map(|n| (*n, g.sim.core(*n).map(|c| c.incarnation())))
        .collect()
}

fn changed(before: &BTreeMap<NodeId, Option<Incarnation>>, g: &Group) -> usize {
    incarnations(g)
        .iter()
        .filter(|(n, i)| before.get(*n) != Some(*i))
        .count()
}

/// The current view of `nodes[0]`, if every node of `nodes` holds one view
/// of exactly them.
fn common_view(g: &Group, nodes: &[NodeId]) -> Option<ViewId> {
    if !g.one_view_of(nodes) {
        return None;
    }
    g.sim.core(*nodes.first()?)?.view()
}

/// Waits (up to [`HEAL_LIMIT`] from `healed`) until every member holds one
/// view of all of them that then stays for [`STABLE`]: that view's first
/// install at the last member, and every node's counters at that point.
fn wait_stable(g: &mut Group, healed: Instant) -> Option<(Instant, BTreeMap<NodeId, Counters>)> {
    let all = g.nodes.clone();
    let end = healed + HEAL_LIMIT;
    // Each round takes at least STABLE of virtual time: bounded by the
    // limit; the count bound is a second guard.
    for _ in 0..=(HEAL_LIMIT.as_millis() / STABLE.as_millis()) {
        let left = end.saturating_duration_since(g.sim.now());
        if left.is_zero() || !g.run_until(left, |g| g.one_view_of(&all)) {
            return None;
        }
        let view = common_view(g, &all)?;
        let at = all_installed_at(g, &all)?;
        let counters = g.counters();
        let logged = g.log.len();
        g.run_for(STABLE);
        if common_view(g, &all) == Some(view) && g.log.len() == logged {
            return Some((at, counters));
        }
    }
    None
}

/// Every trial with `k` parts.
fn run_parts(k: usize, opts: &SimOptions) -> PartsRun {
    let wall = std::time::Instant::now();
    let n = opts.members;
    let mut run = PartsRun::default();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(opts.seed, k as u64, u64::MAX));
    let progress = |msg: &str| {
        if opts.progress {
            eprintln!("msbench partition: sim {n} in {k} parts: {msg}");
        }
    };
    let mut group: Option<(Group, u64)> = None;
    for t in 0..opts.trials {
        if group.is_none() {
            let formations = run.sim_seeds.len();
            let sim_seed = mix(opts.seed, k as u64, formations as u64);
            progress(&format!("forming the group (simulator seed {sim_seed})"));
            run.sim_seeds.push(sim_seed);
            let mut g = Group::new(sim_seed, n);
            match g.form() {
                Ok(d) => run.formations_virtual_s.push(d.as_secs_f64()),
                Err(e) => {
                    run.failures.push(json!({
                        "phase": "formation",
                        "trial": t,
                        "seed": opts.seed,
                        "sim_seed": sim_seed,
                        "what": e,
                    }));
                    break;
                }
            }
            g.run_for(Duration::from_secs(1));
            group = Some((g, sim_seed));
        }
        let Some((g, sim_seed)) = group.as_mut() else {
            break;
        };
        let sim_seed = *sim_seed;
        g.settle(&mut rng);
        let all = g.nodes.clone();
        let parts = random_split(&all, k, &mut rng);
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        progress(&format!("trial {t}: parts of {sizes:?}"));
        let ms = |d: Duration| round2(d.as_secs_f64() * 1000.0);
        let mut line = json!({"trial": t, "sim_seed": sim_seed, "part_sizes": sizes});
        let failure = |phase: &str, what: &str, g: &Group| {
            json!({
                "phase": phase,
                "trial": t,
                "seed": opts.seed,
                "sim_seed": sim_seed,
                "virtual_ms": g.sim.now().as_micros() / 1000,
                "part_sizes": sizes,
                "parts": parts.iter().map(|p| p.iter().map(|x| x.to_string()).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "what": what,
            })
        };

        // The cut.
        let lives = incarnations(g);
        g.log.clear();
        g.logging = true;
        let cut = g.sim.now();
        g.sim.partition(&parts);
        g.drain();
        let settled = g.run_until(SPLIT_LIMIT, |g| parts.iter().all(|p| g.one_view_of(p)));
        match (settled, all_installed_at(g, &all)) {
            (true, Some(at)) => {
                let d = at.saturating_duration_since(cut);
                run.split.push(d);
                line["split_ms"] = json!(ms(d));
            }
            _ => {
                let f = failure("split", "the parts did not install their own views", g);
                run.failures.push(f);
                line["failed"] = json!("split");
                run.per_trial.push(line);
                g.sim.heal();
                g.logging = false;
                group = None;
                continue;
            }
        }
        run.split_restarts.push(changed(&lives, g));

        // A random quiet time, then the heal.
        let quiet = Duration::from_millis(rng.random_range(0..=QUIET_MAX_MS));
        g.run_for(quiet);
        run.quiet.push(quiet);
        line["quiet_ms"] = json!(ms(quiet));
        let before = g.counters();
        g.log.clear();
        let healed = g.sim.now();
        g.sim.heal();
        g.drain();
        let Some((at, after)) = wait_stable(g, healed) else {
            let f = failure("heal", "no stable view of every member after the heal", g);
            run.failures.push(f);
            line["failed"] = json!("heal");
            run.per_trial.push(line);
            g.logging = false;
            group = None;
            continue;
        };
        let d = at.saturating_duration_since(healed);
        run.heal.push(d);
        line["heal_ms"] = json!(ms(d));
        let restarts = changed(&lives, g);
        run.restarts.push(restarts);
        line["restarts"] = json!(restarts);
        let mut views: BTreeMap<NodeId, usize> = all.iter().map(|x| (*x, 0)).collect();
        let mut merged = BTreeSet::new();
        for i in g.log.iter().filter(|i| i.at <= at) {
            *views.entry(i.node).or_default() += 1;
            if i.merged {
                merged.insert(i.view);
            }
        }
        run.views_max
            .push(views.values().copied().max().unwrap_or(0));
        run.views_mean
            .push(views.values().sum::<usize>() as f64 / n.max(1) as f64);
        run.merges.push(merged.len());
        line["views_max"] = json!(views.values().copied().max().unwrap_or(0));
        line["merges"] = json!(merged.len());
        run.per_trial.push(line);
        let mut dg = Vec::with_capacity(n);
        let (mut bytes, mut change) = (0u64, 0u64);
        for (x, a) in &after {
            let b = before.get(x).cloned().unwrap_or_default();
            dg.push(a.datagrams.saturating_sub(b.datagrams));
            bytes += a.bytes.saturating_sub(b.bytes);
            // A restarted node's core counters start again from zero.
            change += if a.change >= b.change {
                a.change - b.change
            } else {
                a.change
            };
        }
        let per = |x: u64| x as f64 / n.max(1) as f64;
        run.datagrams_mean.push(per(dg.iter().sum()));
        run.datagrams_max
            .push(dg.iter().copied().max().unwrap_or(0));
        run.bytes_mean.push(per(bytes));
        run.change_msgs_mean.push(per(change));
        g.logging = false;
        g.log.clear();
    }
    run.wall_s = wall.elapsed().as_secs_f64();
    run
}

/// The readable lines of the `"sim"` object.
pub fn print_summary(sim: &Value) {
    use crate::membership::fmt_lat;
    println!(
        "== sim: {} members, {} trials per part count, {} s wall ({})",
        sim["members"], sim["trials"], sim["wall_s"], sim["link"]
    );
    for k in PART_COUNTS {
        let s = &sim[format!("split_{k}")];
        println!(
            "  {k} parts ({} formation(s), {} s wall)",
            s["formations"], s["wall_s"]
        );
        for (label, key) in [("cut -> parts    ", "split"), ("heal -> merged  ", "heal")] {
            println!("    {label} {}", fmt_lat(&s[key]));
        }
        let m = &s["heal_messages_per_member"];
        println!(
            "    per heal: {} members restarted (mean; max {}), {} views per member (mean; max {}), {} merges (mean; max {})",
            s["heal_restarted_members"]["mean"],
            s["heal_restarted_members"]["max"],
            s["heal_views_per_member"]["mean"],
            s["heal_views_per_member"]["max"],
            s["heal_merges"]["mean"],
            s["heal_merges"]["max"],
        );
        println!(
            "    per heal per member: {} datagrams (max {}), {} bytes, {} change msgs",
            m["datagrams_mean"], m["datagrams_max"], m["bytes_mean"], m["change_msgs_mean"]
        );
        let failures = s["failures"].as_array().map_or(0, Vec::len);
        if failures > 0 {
            println!("    FAILED TRIALS: {failures} ({})", s["failures"]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_split_gives_k_nonempty_disjoint_parts() {
        let nodes: Vec<NodeId> = (0..8u8)
            .map(|i| NodeId::v4(10, 0, 0, i + 1, 7000))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for k in [1, 2, 4, 8] {
            for _ in 0..50 {
                let parts = random_split(&nodes, k, &mut rng);
                assert_eq!(parts.len(), k);
                assert!(parts.iter().all(|p| !p.is_empty()));
                let mut seen: Vec<NodeId> = parts.concat();
                seen.sort_unstable();
                assert_eq!(seen, nodes);
            }
        }
    }

    /// The smoke run CI can afford: 8 members, 2 trials per part count.
    /// Every trial settles, the JSON has every key, and the figures fit
    /// the protocol's timer arithmetic (virtual time, no wall clock).
    #[test]
    fn small_group_splits_and_heals() {
        let opts = SimOptions {
            members: 8,
            trials: 2,
            seed: 5,
            progress: false,
        };
        let out = run(&opts);
        assert_eq!(out["members"], 8);
        assert!(out["link"].is_string());
        assert!(out["wall_s"].is_number());
        for k in PART_COUNTS {
            let s = &out[format!("split_{k}")];
            assert_eq!(s["failures"], json!([]), "{k} parts: {s}");
            assert_eq!(s["formations"], 1, "{k} parts");
            for key in ["split", "heal"] {
                assert_eq!(s[key]["samples"], 2, "{k} parts, {key}: {s}");
                let max = s[key]["max_ms"].as_f64().unwrap_or(f64::MAX);
                assert!(max > 0.0 && max < 10_000.0, "{k} parts, {key}: {max}");
            }
            assert!(s["heal"]["met"].is_boolean());
            assert_eq!(s["heal"]["target_p99_ms"], HEAL_P99_MS);
            let per_trial = s["per_trial"].as_array().cloned().unwrap_or_default();
            assert_eq!(per_trial.len(), 2, "{k} parts");
            for line in &per_trial {
                assert!(line["heal_ms"].is_number() && line["split_ms"].is_number());
                let v: Vec<u64> = line["part_sizes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64)
                    .collect();
                assert_eq!(v.len(), k);
                assert_eq!(v.iter().sum::<u64>(), 8);
                assert!(v.iter().all(|x| *x >= 1));
            }
            // Every member installed at least the merged view in each heal,
            // at least one merge made it, and it cost messages.
            assert!(s["heal_views_per_member"]["mean"].as_f64().unwrap_or(0.0) >= 1.0);
            assert!(s["heal_merges"]["max"].as_u64().unwrap_or(0) >= 1);
            for key in ["datagrams_mean", "bytes_mean", "change_msgs_mean"] {
                let v = s["heal_messages_per_member"][key].as_f64().unwrap_or(0.0);
                assert!(v > 0.0, "{k} parts: {key}");
            }
            for key in ["heal_restarted_members", "split_restarted_members"] {
                assert!(s[key]["max"].is_u64(), "{k} parts: {key}");
            }
        }
    }
}
