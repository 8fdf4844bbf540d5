//! `msbench partition`: how fast the core-set protocol (seed 003, section
//! III.D; DESIGN.md sections 5 and 10; issue 5) puts a group back together
//! after a partition heals, and after a paused member resumes.
//!
//! The real-process half (this file): `--members` (default 6) `mserver`s
//! on 127.0.0.(10 + i) through a real `mcaster` (`--multicast off`), using
//! the process helpers of `msbench membership` ([`Cluster`]).
//! `--trials` (default 20) of each:
//!
//! - **split and heal**: a random half of the members is cut from the
//!   other with the fault interceptor (`msctl fault --clear --block ADDR...`
//!   on every member, the commands run at once); once every member has
//!   installed the view of its own side (`split`: cut -> both sides'
//!   views), and a random quiet time later, every fault is cleared at once
//!   (`msctl fault --clear`) and `heal` is measured from just before the
//!   first clear to the arrival of the last member's line for the merged
//!   view: the view of all members that every one of them holds and that
//!   stays unchanged for [`STABLE`] (so a view that is replaced at once by
//!   another, as when a dissolved side is failed again while rejoining,
//!   does not count). `restarts` counts the members that took a new
//!   incarnation during a heal, `views_per_member` the views each one
//!   installed on the way, the merged one included (a true merge: no
//!   restart, one view).
//! - **pause and resume**: one random member is SIGSTOPped until every
//!   other member installed a view without it (`pause`), then SIGCONTed;
//!   `resume` is SIGCONT -> one view with every member, the resumed one
//!   rejoined with a new rank.
//!
//! The simulated half ([`sim`]): `--sim-members` (default 64) core-sets in
//! the deterministic simulator, split into 2 and into 4 random parts and
//! healed, `--sim-trials` (default 20) each, on virtual time; its figures
//! go under the `sim` key. `--sim-only` and `--real-only` run one half.
//!
//! Latencies are taken from the mservers' "view installed" log lines,
//! stamped by the bench as they arrive on its pipes (more precise than
//! polling `msctl view`, which the bench still uses to check every
//! convergence), as in `msbench membership`. The raw baseline of the same
//! run is a loopback UDP ping-pong. Targets (DESIGN.md section 10): heal ->
//! merged p99 <= 1 s, resume -> consistent <= 1 s. Output: one JSON object
//! (`--json`) whose `real` key holds these figures and whose `sim` key
//! holds the simulator's.

// The benchmark owns the clock.
#![allow(clippy::disallowed_methods)]

mod sim;

use crate::membership::procs::{Binaries, Cluster, LogKind, ViewMember};
use crate::membership::real::{
    contains, converge, diagnose, pause_resume_trial, recover, settle, PauseResumeSink,
};
use crate::membership::{fmt_lat, latency, ms_summary, with_max, RESUME_MS};
use crate::raw;
use crate::stats::{round2, Latencies};
use anyhow::{bail, Context as _};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// DESIGN.md section 10: partition heals -> one merged view, p99.
const HEAL_P99_MS: f64 = 1000.0;
/// Longest wait for the sides' views after a cut, or for a paused
/// member's exclusion (a failed trial after that).
const TRIAL_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for the merged view after a heal.
const HEAL_LIMIT: Duration = Duration::from_secs(20);
/// How long the merged view must stay unchanged to count as the end of the
/// heal.
const STABLE: Duration = Duration::from_secs(1);

/// Options of `msbench partition`.
#[derive(clap::Args, Debug)]
pub struct PartitionArgs {
    /// Print one JSON object instead of a readable summary.
    #[arg(long)]
    json: bool,
    /// Mservers in the real group (4 to 64; split in two halves).
    #[arg(long, default_value_t = 6)]
    members: usize,
    /// Trials of each measurement (split and heal, pause and resume).
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Seed of the random choices (sides, victims, quiet times, the
    /// simulator).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Members of the simulated group (4 to 1000; split in 2 and in 4
    /// parts).
    #[arg(long, default_value_t = 64)]
    sim_members: usize,
    /// Split-and-heal trials per part count in the simulator.
    #[arg(long, default_value_t = 20)]
    sim_trials: usize,
    /// Run only the simulated half.
    #[arg(long, conflicts_with = "real_only")]
    sim_only: bool,
    /// Run only the real-process half.
    #[arg(long)]
    real_only: bool,
    /// Progress lines on stderr.
    #[arg(long)]
    verbose: bool,
}

/// What the real-process trials measured.
#[derive(Default)]
struct PartitionRun {
    /// Seconds to form the group one member at a time.
    formation_s: f64,
    /// Cut -> every member holds the view of its own side.
    split: Latencies,
    /// Heal -> every member holds the (stable) merged view.
    heal: Latencies,
    /// How long running the `msctl fault` commands of a cut or a heal took
    /// (all at once; included in `split` and `heal`).
    fault_cmd: Latencies,
    /// Members that took a new incarnation during each heal.
    restarts: Vec<usize>,
    /// Per heal, the most views one member installed until the merged one.
    views_per_member: Vec<usize>,
    /// SIGSTOP -> view without the victim at every other member.
    pause: Latencies,
    /// SIGCONT -> one view with every member (the resumed one rejoined).
    resume: Latencies,
    /// Trials that did not end as expected.
    failures: Vec<Value>,
    /// Set when the run had to stop early.
    aborted: Option<String>,
}

/// Runs `msbench partition`.
pub fn run(args: &PartitionArgs) -> anyhow::Result<()> {
    let do_real = !args.sim_only;
    let do_sim = !args.real_only;
    if args.trials == 0 || args.sim_trials == 0 {
        bail!("--trials and --sim-trials must be at least 1");
    }
    if do_real && !(4..=64).contains(&args.members) {
        bail!(
            "--members {}: real groups have 4 to 64 mservers",
            args.members
        );
    }
    if do_sim && !(4..=1000).contains(&args.sim_members) {
        bail!(
            "--sim-members {}: simulated groups have 4 to 1000 mservers",
            args.sim_members
        );
    }
    let mut out = json!({
        "scenario": "partition",
        "machine": super::machine(),
        "seed": args.seed,
        "defaults": {"query_interval_ms": 200, "reply_timeout_ms": 100, "retries": 2},
    });
    if do_real {
        out["real"] = real_half(args)?;
    }
    if do_sim {
        out["sim"] = sim::run(&sim::SimOptions {
            members: args.sim_members,
            trials: args.sim_trials,
            seed: args.seed,
            progress: args.verbose,
        });
    }
    if args.json {
        println!("{out}");
    } else {
        print_summary(&out);
    }
    Ok(())
}

/// The real-process half: the `"real"` object of the output.
fn real_half(args: &PartitionArgs) -> anyhow::Result<Value> {
    let bins = Binaries::locate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let raw_rtt = raw::ping_pong(64, 500, 5000).context("raw UDP ping-pong")?;
    let r = run_real(&bins, args, &mut rng);
    let raw_after = raw::ping_pong(64, 500, 5000).context("raw UDP ping-pong")?;
    Ok(json!({
            "transport": "mcaster on 127.0.0.1, mservers on 127.0.0.(10+i), --multicast off",
            "partition": "msctl fault --block between two random halves, cleared at once",
            "members": args.members,
            "trials": args.trials,
            "formation_s": round2(r.formation_s),
            "raw_udp_rtt": with_max(&raw_rtt),
            "raw_udp_rtt_after": with_max(&raw_after),
            "split": latency(&r.split, None, Some(&raw_rtt)),
            "heal": latency(&r.heal, Some(HEAL_P99_MS), Some(&raw_rtt)),
            "heal_restarted_members": counts(&r.restarts),
            "heal_views_per_member": counts(&r.views_per_member),
            "fault_cmd": ms_summary(&r.fault_cmd),
            "pause": latency(&r.pause, None, Some(&raw_rtt)),
            "resume": latency(&r.resume, Some(RESUME_MS), Some(&raw_rtt)),
            "failures": r.failures,
            "aborted": r.aborted,
    }))
}

/// `{"mean", "max", "per_trial"}` of small counts.
fn counts(v: &[usize]) -> Value {
    let mean = if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<usize>() as f64 / v.len() as f64
    };
    json!({
        "mean": round2(mean),
        "max": v.iter().copied().max().unwrap_or(0),
        "per_trial": v,
    })
}

fn progress(args: &PartitionArgs, msg: &str) {
    if args.verbose {
        eprintln!("msbench partition: {msg}");
    }
}

fn run_real(bins: &Binaries, args: &PartitionArgs, rng: &mut ChaCha8Rng) -> PartitionRun {
    let mut run = PartitionRun::default();
    let tag = 500 + (args.seed % 100) as u16;
    let mut c = match Cluster::new(bins, tag) {
        Ok(c) => c,
        Err(e) => {
            run.aborted = Some(format!("{e:#}"));
            return run;
        }
    };
    if let Err(e) = trials(&mut c, args, rng, &mut run) {
        run.aborted = Some(format!("{e:#}"));
        run.failures
            .push(diagnose(&c, "aborted", 0, &format!("{e:#}")));
    }
    run
}

/// Runs `msctl ARGS(i)` against every mserver of `ids` at once and waits
/// for all of them; how long that took.
fn fault_all(
    c: &Cluster,
    ids: &[usize],
    args_of: impl Fn(usize) -> Vec<String>,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut children = Vec::new();
    for &i in ids {
        let args = args_of(i);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = c
            .msctl_command(i, &refs)
            .spawn()
            .with_context(|| format!("cannot run msctl for mserver {i}"))?;
        children.push((i, child));
    }
    let mut errors = Vec::new();
    for (i, child) in children {
        let out = child
            .wait_with_output()
            .with_context(|| format!("msctl for mserver {i}"))?;
        if !out.status.success() {
            errors.push(format!(
                "mserver {i}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    if !errors.is_empty() {
        bail!("msctl fault failed: {}", errors.join("; "));
    }
    Ok(t0.elapsed())
}

/// `fault --clear --block ADDR...` with the addresses of `other`.
fn block_args(c: &Cluster, other: &[usize]) -> Vec<String> {
    let mut v = vec!["fault".to_string(), "--clear".to_string()];
    for j in other {
        v.push("--block".into());
        v.push(c.addr(*j).to_string());
    }
    v
}

fn clear_args(_: usize) -> Vec<String> {
    vec!["fault".into(), "--clear".into()]
}

/// Exactly the addresses of `ids`.
fn is_exactly(c: &Cluster, ids: &[usize]) -> impl Fn(&[ViewMember]) -> bool {
    let want: BTreeSet<SocketAddr> = ids.iter().map(|i| c.addr(*i)).collect();
    move |m: &[ViewMember]| m.iter().map(|x| x.addr).collect::<BTreeSet<_>>() == want
}

/// Waits (up to `limit`) until every mserver holds the same view of all of
/// them and it stays so for [`STABLE`]; the arrival of the last member's
/// line for that view.
fn wait_stable(c: &mut Cluster, limit: Duration) -> Option<Instant> {
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let at = c.wait_for(left, |c| c.converged())?;
        c.idle(STABLE);
        if c.converged() == Some(at) {
            return Some(at);
        }
        if Instant::now() >= end {
            return None;
        }
    }
}

fn trials(
    c: &mut Cluster,
    args: &PartitionArgs,
    rng: &mut ChaCha8Rng,
    run: &mut PartitionRun,
) -> anyhow::Result<()> {
    let n = args.members;
    progress(args, &format!("{n} mservers: forming the group"));
    let t0 = Instant::now();
    for i in 0..n {
        c.mark();
        c.start(i)?;
        let a = c.addr(i);
        let upto: Vec<usize> = (0..=i).collect();
        if c.wait_for(TRIAL_LIMIT, |c| c.all_installed(&upto, |m| contains(m, a)))
            .is_none()
        {
            bail!("mserver {i} did not join the group of {upto:?}");
        }
    }
    converge(c, n)?;
    run.formation_s = t0.elapsed().as_secs_f64();

    progress(args, &format!("{n} mservers: split and heal trials"));
    let everyone: Vec<usize> = (0..n).collect();
    for t in 0..args.trials {
        settle(c, rng);
        let mut order = everyone.clone();
        order.shuffle(rng);
        let (a, b) = order.split_at(n / 2);
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort_unstable();
        b.sort_unstable();
        progress(args, &format!("trial {t}: split {a:?} | {b:?}"));
        c.mark();
        let cut = Instant::now();
        let cmd = fault_all(c, &everyone, |i| {
            block_args(c, if a.contains(&i) { &b } else { &a })
        })?;
        run.fault_cmd.push(cmd);
        let (pa, pb) = (is_exactly(c, &a), is_exactly(c, &b));
        let sides = c.wait_for(TRIAL_LIMIT, |c| {
            Some(c.all_installed(&a, &pa)?.max(c.all_installed(&b, &pb)?))
        });
        match sides {
            Some(at) => run.split.push(at.saturating_duration_since(cut)),
            None => {
                let what = format!("the sides {a:?} | {b:?} did not install their own views");
                run.failures.push(diagnose(c, "split", t, &what));
                fault_all(c, &everyone, clear_args)?;
                recover(c, n)?;
                continue;
            }
        }
        // A random quiet time, so the heal lands at a random phase of the
        // sides' ANNOUNCE rounds (one per second).
        c.idle(Duration::from_millis(rng.random_range(0..=1000)));
        c.mark();
        let heal = Instant::now();
        let cmd = fault_all(c, &everyone, clear_args)?;
        run.fault_cmd.push(cmd);
        match wait_stable(c, HEAL_LIMIT) {
            Some(at) => {
                run.heal.push(at.saturating_duration_since(heal));
                let mut restarted = BTreeSet::new();
                let mut views: BTreeMap<usize, usize> = BTreeMap::new();
                for e in &c.log {
                    if e.at > at {
                        continue;
                    }
                    match e.kind {
                        LogKind::NewIncarnation => {
                            restarted.insert(e.server);
                        }
                        LogKind::ViewInstalled { .. } => *views.entry(e.server).or_default() += 1,
                        _ => {}
                    }
                }
                run.restarts.push(restarted.len());
                run.views_per_member
                    .push(views.values().copied().max().unwrap_or(0));
            }
            None => {
                let what = "no stable view of every member after the heal".to_string();
                run.failures.push(diagnose(c, "heal", t, &what));
            }
        }
        converge(c, n)?;
    }

    progress(args, &format!("{n} mservers: SIGSTOP/SIGCONT trials"));
    for t in 0..args.trials {
        pause_resume_trial(
            c,
            n,
            t,
            rng,
            PauseResumeSink {
                pause: &mut run.pause,
                resume: &mut run.resume,
                signal_cmd: None,
                failures: &mut run.failures,
            },
        )?;
    }
    Ok(())
}

fn print_summary(out: &Value) {
    if let Some(real) = out.get("real") {
        print_real(real);
    }
    if let Some(s) = out.get("sim") {
        sim::print_summary(s);
    }
}

fn print_real(real: &Value) {
    let raw = &real["raw_udp_rtt"];
    println!(
        "raw UDP ping-pong on loopback: p50 {} us, p99 {} us",
        raw["p50_us"], raw["p99_us"]
    );
    println!(
        "== real: {} mservers through the mcaster, {} trials",
        real["members"], real["trials"]
    );
    for (label, key) in [
        ("cut -> sides    ", "split"),
        ("heal -> merged  ", "heal"),
        ("SIGSTOP -> view ", "pause"),
        ("SIGCONT -> one  ", "resume"),
        ("msctl fault cmds", "fault_cmd"),
    ] {
        println!("  {label} {}", fmt_lat(&real[key]));
    }
    println!(
        "  per heal: {} members restarted (mean; max {}), {} views per member (mean; max {})",
        real["heal_restarted_members"]["mean"],
        real["heal_restarted_members"]["max"],
        real["heal_views_per_member"]["mean"],
        real["heal_views_per_member"]["max"]
    );
    let failures = real["failures"].as_array().map_or(0, Vec::len);
    if failures > 0 {
        println!("  FAILED TRIALS: {failures} (see --json)");
    }
    if let Some(a) = real["aborted"].as_str() {
        println!("  ABORTED: {a}");
    }
}
