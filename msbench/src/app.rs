//! `msbench app`: how fast application groups (seed 003, chapter II and
//! section II.B.4 "Member Interfaces"; DESIGN.md sections 6 and 10; issue
//! 6) deliver a new view to every member after a `join()` and after a
//! member process dies, and how long the core-set takes to bootstrap one
//! big group in the simulator.
//!
//! **Real processes** ([`real`]): an `mcaster`, 3 `mserver`s on
//! 127.0.0.(10 + i) (`--multicast off`, as `msbench partition`; the
//! process helpers of `msbench membership`, [`Cluster`]), formed into
//! one view (checked with `msctl view --json`), 3 `member-interface`
//! daemons (MI i prefers mserver i, then the two others) and one group per
//! size (`--sizes`, default 2, 8, 32) created with `msctl --mi ... create`.
//! Per size, S members are started as `msctl --mi MI(i % 3) join G --name
//! m{i} --json --timestamps` children whose stdout lines (one JSON view
//! each, with `at_ns`, the realtime msctl received it) are read by threads.
//! Then `--trials` times:
//!
//! - **join**: one more child `j{t}` joins (through MI t % 3); the latency
//!   is the latest `at_ns` of the first view containing `j{t}` over all
//!   S + 1 members, minus `j{t}`'s `join_called_ns` (the realtime just
//!   before it called `join()`), so process start-up and connecting are
//!   not counted;
//! - **death**: `j{t}` is SIGKILLed (t0: the realtime just before), and the
//!   latency is the latest `at_ns` of the first view without `j{t}` over
//!   the S members, minus t0 (the MI sees the closed connection at once).
//!
//! Every wait is bounded ([`real::TRIAL_LIMIT`]); a trial that times out is
//! counted in `failures` (with details) and the group is brought back to
//! its S members before the next one. All timestamps are CLOCK_REALTIME
//! on the same host, so they compare across processes.
//!
//! **Simulator** ([`sim`]): 3 [`MserverNode`]s (no mcaster) and
//! `--sim-mis` [`MiAgent`]s on the deterministic simulator's LAN link model
//! (100-500 us one way, no bandwidth limit), one group created, then
//! `--sim-members` joins requested at the same virtual instant, spread
//! evenly over the MIs. Measured: virtual time until every join is
//! answered and until every MI delivered a view with all members, the wall
//! time, the views the mservers queued for MIs (`views_pushed`), the view
//! events and member entries the MIs delivered, and the bytes sent (with
//! the time they would take at 1 Gb/s, which the link model does not
//! charge).
//!
//! Targets (issue 6): join p50 <= 5 ms on loopback, process death -> view
//! p99 <= 100 ms, simulated bootstrap of 2,000 members across 100 MIs
//! < 5 s. Output: one JSON object (`--json`) or a readable summary.
//!
//! The files: this one holds the options, the targets and the report;
//! `app/real.rs` the real-process half, `app/sim.rs` the simulated one.
//!
//! [`Cluster`]: crate::membership::procs::Cluster
//! [`MserverNode`]: membership::mserver::node::MserverNode
//! [`MiAgent`]: membership::appgroup::agent::MiAgent

// The benchmark owns the clock.
#![allow(clippy::disallowed_methods)]

mod real;
mod sim;

use crate::stats::Latencies;
use anyhow::bail;
use serde_json::{json, Value};

/// Issue 6: `join()` -> the new view at every member, p50, loopback.
const JOIN_P50_MS: f64 = 5.0;
/// Issue 6: process killed -> the new view at every member, p99.
const DEATH_P99_MS: f64 = 100.0;
/// Issue 6: one group of 2,000 members across 100 MIs, simulated seconds.
const SIM_BOOTSTRAP_S: f64 = 5.0;
/// Largest real group size.
const MAX_REAL_SIZE: usize = 200;

/// Options of `msbench app`.
#[derive(clap::Args, Debug)]
pub struct AppArgs {
    /// Print one JSON object instead of a readable summary.
    #[arg(long)]
    json: bool,
    /// Trials of each measurement (join, death) per group size.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Group sizes of the real-process runs (members besides the joining
    /// one; 1 to 200).
    #[arg(long, value_delimiter = ',', default_value = "2,8,32")]
    sizes: Vec<usize>,
    /// Run only the real-process half.
    #[arg(long, conflicts_with = "sim_only")]
    real_only: bool,
    /// Run only the simulated half.
    #[arg(long)]
    sim_only: bool,
    /// Members joining the simulated group at once (a list runs each).
    #[arg(long, value_delimiter = ',', default_value = "2000")]
    sim_members: Vec<usize>,
    /// Member interfaces in the simulator (1 to 250).
    #[arg(long, default_value_t = 100)]
    sim_mis: usize,
    /// Wall-clock limit of one simulated run, in seconds (the run is
    /// reported as timed out beyond it).
    #[arg(long, default_value_t = 600)]
    sim_wall_limit_secs: u64,
    /// Seed of the random pauses between trials and of the simulator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Progress lines on stderr.
    #[arg(long)]
    verbose: bool,
}

/// Runs `msbench app`.
pub fn run(args: &AppArgs) -> anyhow::Result<()> {
    if args.trials == 0 {
        bail!("--trials must be at least 1");
    }
    let do_real = !args.sim_only;
    let do_sim = !args.real_only;
    if do_real {
        if args.sizes.is_empty() {
            bail!("--sizes: give at least one group size");
        }
        if let Some(s) = args
            .sizes
            .iter()
            .find(|s| !(1..=MAX_REAL_SIZE).contains(*s))
        {
            bail!("--sizes {s}: real groups have 1 to {MAX_REAL_SIZE} members");
        }
    }
    if do_sim {
        if !(1..=250).contains(&args.sim_mis) {
            bail!("--sim-mis {}: 1 to 250 member interfaces", args.sim_mis);
        }
        if let Some(n) = args
            .sim_members
            .iter()
            .find(|n| !(1..=membership::appgroup::MAX_GROUP_MEMBERS).contains(*n))
        {
            bail!(
                "--sim-members {n}: 1 to {} members",
                membership::appgroup::MAX_GROUP_MEMBERS
            );
        }
    }
    let mut out = json!({
        "bench": "app",
        "scenario": "app",
        "machine": super::machine(),
        "seed": args.seed,
    });
    let mut targets = json!({
        "join_p50_ms": JOIN_P50_MS,
        "death_p99_ms": DEATH_P99_MS,
        "sim_bootstrap_s": SIM_BOOTSTRAP_S,
    });
    if do_real {
        let real = real::real_half(args)?;
        targets["join_p50_met"] = real_met(&real, "join_ms", "p50", JOIN_P50_MS);
        targets["death_p99_met"] = real_met(&real, "death_ms", "p99", DEATH_P99_MS);
        out["real"] = real;
    }
    if do_sim {
        let sim = sim::sim_half(args);
        targets["sim_bootstrap_met"] = sim["met"].clone();
        out["sim"] = sim;
    }
    out["targets"] = targets;
    if args.json {
        println!("{out}");
    } else {
        print_summary(&out);
    }
    Ok(())
}

/// Whether `key.quantile` is within `limit` at every size (with samples and
/// no failure); `null` without sizes.
fn real_met(real: &Value, key: &str, quantile: &str, limit: f64) -> Value {
    let Some(sizes) = real["sizes"].as_array().filter(|s| !s.is_empty()) else {
        return Value::Null;
    };
    let ok = sizes.iter().all(|s| {
        s[key]["n"].as_u64().unwrap_or(0) > 0
            && s[key][quantile].as_f64().is_some_and(|v| v <= limit)
            && s["failures"].as_u64() == Some(0)
    });
    json!(ok && real["aborted"].is_null())
}

fn progress(args: &AppArgs, msg: &str) {
    if args.verbose {
        eprintln!("msbench app: {msg}");
    }
}

/// Rounds to three decimals.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `{"p50", "p99", "mean", "max", "n"}` in milliseconds, three decimals.
fn ms3(l: &Latencies) -> Value {
    let mean_us = l.summary()["mean_us"].as_f64().unwrap_or(0.0);
    json!({
        "p50": round3(l.quantile_us(0.5) / 1000.0),
        "p99": round3(l.quantile_us(0.99) / 1000.0),
        "mean": round3(mean_us / 1000.0),
        "max": round3(l.quantile_us(1.0) / 1000.0),
        "n": l.len(),
    })
}

// ------------------------------------------------------------------- summary

fn fmt_ms(v: &Value) -> String {
    format!(
        "p50 {} ms, p99 {} ms, mean {} ms, max {} ms (n {})",
        v["p50"], v["p99"], v["mean"], v["max"], v["n"]
    )
}

fn print_summary(out: &Value) {
    if let Some(real) = out.get("real") {
        println!(
            "== real: 3 mservers, 3 MIs, {} trials per size (raw UDP ping-pong p50 {} ms)",
            real["trials"], real["raw_udp_rtt_ms"]["p50"]
        );
        for s in real["sizes"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            println!("  {} members:", s["size"]);
            println!("    join() -> view at all  {}", fmt_ms(&s["join_ms"]));
            println!("    kill -> view at all    {}", fmt_ms(&s["death_ms"]));
            println!(
                "    (to the first member: join p50 {} ms, kill p50 {} ms)",
                s["join_first_member_ms"]["p50"], s["death_first_member_ms"]["p50"]
            );
            if s["failures"].as_u64().unwrap_or(0) > 0 {
                println!("    FAILED TRIALS: {} (see --json)", s["failures"]);
            }
            if let Some(a) = s["aborted"].as_str() {
                println!("    ABORTED: {a}");
            }
        }
        if let Some(a) = real["aborted"].as_str() {
            println!("  ABORTED: {a}");
        }
    }
    if let Some(sim) = out.get("sim") {
        println!("== simulator: 3 mservers, LAN link model");
        for r in sim["runs"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            println!(
                "  {} members across {} MIs: bootstrap {} s (answers {} s, full views {} s), \
                 {} views pushed, {} member entries delivered, {} MB sent, wall {} s",
                r["members"],
                r["mis"],
                r["bootstrap_s"],
                r["all_answered_s"],
                r["all_mis_full_view_s"],
                r["views_pushed"],
                r["member_entries_delivered"],
                round3(r["bytes"].as_f64().unwrap_or(0.0) / 1e6),
                r["wall_s"]
            );
            if let Some(s) = r["stopped"].as_str() {
                println!("    STOPPED: {s}");
            }
        }
    }
    let t = &out["targets"];
    println!(
        "targets: join p50 <= {} ms: {}; death p99 <= {} ms: {}; sim bootstrap < {} s: {}",
        t["join_p50_ms"],
        t["join_p50_met"],
        t["death_p99_ms"],
        t["death_p99_met"],
        t["sim_bootstrap_s"],
        t["sim_bootstrap_met"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latencies_in_ms_with_three_decimals() {
        let mut l = Latencies::default();
        for us in [1234, 2000, 3000] {
            l.push(Duration::from_micros(us));
        }
        let v = ms3(&l);
        assert_eq!(v["p50"], 2.0);
        assert_eq!(v["max"], 3.0);
        assert_eq!(v["n"], 3);
        assert_eq!(v["mean"], 2.078);
    }
}
