//! `msbench membership`: how fast the core-set protocol (seed 003, chapters
//! III and IV; DESIGN.md sections 5 and 10) admits, fails and readmits
//! mservers, and what it costs while idle.
//!
//! Two halves, both on by default:
//!
//! - **Real processes** ([`real`], [`procs`]): `mserver`s on 127.0.0.x
//!   through a real `mcaster` (`--multicast off`), 4 and 8 members
//!   (`--members`), `--trials` each: join latency, SIGKILL -> new view at
//!   every survivor, SIGSTOP -> new view, SIGCONT -> consistent again, a
//!   graceful leave, and idle bytes per second per mserver from `msctl
//!   stats --json`. Latencies are taken from the mservers' "view installed"
//!   log lines, stamped by the bench as they arrive on its pipes. The raw
//!   baseline of the same run is a loopback UDP ping-pong; each latency is
//!   also given as a multiple of its round trip.
//! - **Simulator** ([`sim`]): the same trials on virtual time with the LAN
//!   link model, 16, 64 and 256 members (`--sim-sizes`), plus message counts
//!   per member per change and idle datagrams and bytes per member.
//!
//! Each figure with a DESIGN.md section 10 target is printed next to it with
//! `met`. `docs/benchmarks.md` ("Membership") explains each number.

pub(crate) mod procs;
pub(crate) mod real;
pub(crate) mod sim;

use super::raw;
use super::stats::{ratio, round2, Latencies};
use anyhow::{bail, Context as _};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::time::Duration;

/// DESIGN.md section 10: process crash -> new view at every survivor, p99.
const CRASH_P99_MS: f64 = 100.0;
/// DESIGN.md section 10: silent failure -> new view, p99, default timings.
const SILENT_P99_MS: f64 = 600.0;
/// DESIGN.md section 10: a paused member is consistent again within 1 s.
pub(crate) const RESUME_MS: f64 = 1000.0;
/// DESIGN.md section 10: idle monitoring traffic sent per mserver, bytes/s.
const IDLE_BYTES_PER_S: f64 = 700.0;

/// Options of `msbench membership`.
#[derive(clap::Args, Debug)]
pub struct MembershipArgs {
    /// Print one JSON object instead of a readable summary.
    #[arg(long)]
    json: bool,
    /// Run only the simulator half.
    #[arg(long, conflicts_with = "real")]
    sim: bool,
    /// Run only the real-process half.
    #[arg(long)]
    real: bool,
    /// Group sizes of the real-process runs (2 to 64).
    #[arg(long, value_delimiter = ',', default_value = "4,8")]
    members: Vec<usize>,
    /// Trials per measurement in the real-process runs.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Seconds of the real idle-traffic measurement (at least 10 is
    /// meaningful; the stats are read before and after).
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Group sizes of the simulated runs (2 to 1000).
    #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
    sim_sizes: Vec<usize>,
    /// Trials per measurement in the simulated runs.
    #[arg(long, default_value_t = 20)]
    sim_trials: usize,
    /// Virtual seconds of the simulated idle-traffic measurement.
    #[arg(long, default_value_t = 10)]
    sim_idle_secs: u64,
    /// Seed of the random choices (victims, fault phases, the simulator).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Progress lines on stderr.
    #[arg(long)]
    verbose: bool,
}

/// `{"samples", "p50_ms", "p99_ms", "max_ms", "mean_ms"}` of `l`.
pub(crate) fn ms_summary(l: &Latencies) -> Value {
    let mean_us = l.summary()["mean_us"].as_f64().unwrap_or(0.0);
    json!({
        "samples": l.len(),
        "p50_ms": round2(l.quantile_us(0.5) / 1000.0),
        "p99_ms": round2(l.quantile_us(0.99) / 1000.0),
        "max_ms": round2(l.quantile_us(1.0) / 1000.0),
        "mean_ms": round2(mean_us / 1000.0),
    })
}

/// A latency summary with its target (p99 <= `target_ms`, if any) and, for
/// real runs, its ratio to the raw loopback round trip of the same run.
pub(crate) fn latency(l: &Latencies, target_ms: Option<f64>, raw: Option<&Latencies>) -> Value {
    let mut v = ms_summary(l);
    if let Some(t) = target_ms {
        v["target_p99_ms"] = json!(t);
        v["met"] = json!(l.len() > 0 && l.quantile_us(0.99) / 1000.0 <= t);
    }
    if let Some(r) = raw {
        v["ratio_p50_to_raw_rtt_p50"] = json!(ratio(l.quantile_us(0.5), r.quantile_us(0.5)));
        v["ratio_p99_to_raw_rtt_p99"] = json!(ratio(l.quantile_us(0.99), r.quantile_us(0.99)));
    }
    v
}

/// Adds the idle target to an idle measurement (`bytes_per_s_max` must be
/// within it: every mserver, not only the average one).
fn with_idle_target(mut idle: Value) -> Value {
    if let Some(max) = idle["bytes_per_s_max"].as_f64() {
        idle["target_bytes_per_s"] = json!(IDLE_BYTES_PER_S);
        idle["met"] = json!(max <= IDLE_BYTES_PER_S);
    }
    idle
}

/// Runs `msbench membership`.
pub fn run(args: &MembershipArgs) -> anyhow::Result<()> {
    let do_real = !args.sim;
    let do_sim = !args.real;
    if args.trials == 0 || args.sim_trials == 0 {
        bail!("--trials and --sim-trials must be at least 1");
    }
    if let Some(n) = args.members.iter().find(|n| !(2..=64).contains(*n)) {
        bail!("--members {n}: real groups have 2 to 64 mservers");
    }
    if let Some(n) = args.sim_sizes.iter().find(|n| !(2..=1000).contains(*n)) {
        bail!("--sim-sizes {n}: simulated groups have 2 to 1000 mservers");
    }
    let bins = if do_real {
        Some(procs::Binaries::locate()?)
    } else {
        None
    };
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut out = json!({
        "scenario": "membership",
        "machine": super::machine(),
        "seed": args.seed,
        "defaults": {"query_interval_ms": 200, "reply_timeout_ms": 100, "retries": 2},
    });

    if let Some(bins) = &bins {
        // The raw baseline first, while nothing else runs.
        let raw_rtt = raw::ping_pong(64, 500, 5000).context("raw UDP ping-pong")?;
        let opts = real::RealOptions {
            trials: args.trials,
            idle: Duration::from_secs(args.idle_secs),
            progress: args.verbose,
        };
        let mut sizes = Vec::new();
        for (k, &n) in args.members.iter().enumerate() {
            let r = real::run_size(bins, n, &opts, &mut rng, k as u16);
            sizes.push(json!({
                "members": n,
                "trials": args.trials,
                "formation_s": round2(r.formation_s),
                "join_from_started": latency(&r.join_from_started, None, Some(&raw_rtt)),
                "join_from_spawn": latency(&r.join_from_spawn, None, Some(&raw_rtt)),
                "crash": latency(&r.crash, Some(CRASH_P99_MS), Some(&raw_rtt)),
                "pause": latency(&r.pause, Some(SILENT_P99_MS), Some(&raw_rtt)),
                "resume": latency(&r.resume, Some(RESUME_MS), Some(&raw_rtt)),
                "leave": latency(&r.leave, None, Some(&raw_rtt)),
                "kill_cmd": ms_summary(&r.signal_cmd),
                "idle": with_idle_target(r.idle.clone()),
                "failures": r.failures,
                "warnings_logged": r.warnings,
                "aborted": r.aborted,
            }));
        }
        // The raw round trip again at the end: the load may have changed.
        let raw_after = raw::ping_pong(64, 500, 5000).context("raw UDP ping-pong")?;
        out["real"] = json!({
            "transport": "mcaster on 127.0.0.1, mservers on 127.0.0.(10+i), --multicast off",
            "raw_udp_rtt": with_max(&raw_rtt),
            "raw_udp_rtt_after": with_max(&raw_after),
            "sizes": sizes,
        });
    }

    if do_sim {
        let opts = sim::SimOptions {
            idle: Duration::from_secs(args.sim_idle_secs.max(1)),
            seed: args.seed,
            progress: args.verbose,
        };
        let mut sizes = Vec::new();
        for &n in &args.sim_sizes {
            let r = sim::run_size(n, args.sim_trials, &opts, &mut rng);
            sizes.push(json!({
                "members": n,
                "trials": r.trials,
                "formation_virtual_s": round2(r.formation_virtual_s),
                "wall_s": round2(r.wall_s),
                "join": latency(&r.join, None, None),
                "crash": latency(&r.crash, Some(CRASH_P99_MS), None),
                "crash_watch": latency(&r.crash_watch, Some(CRASH_P99_MS), None),
                "pause": latency(&r.pause, Some(SILENT_P99_MS), None),
                "resume": latency(&r.resume, Some(RESUME_MS), None),
                "messages": r.messages,
                "idle": with_idle_target(r.idle.clone()),
                "failures": r.failures,
            }));
        }
        out["sim"] = json!({
            "link": "LinkConfig::lan(): 100-500 us one way, uniform, no loss",
            "unreachable_hints": true,
            "sizes": sizes,
        });
    }

    if args.json {
        println!("{out}");
    } else {
        print_summary(&out);
    }
    Ok(())
}

/// The summary of `l` in microseconds, with its maximum.
pub(crate) fn with_max(l: &Latencies) -> Value {
    let mut v = l.summary();
    v["max_us"] = json!(round2(l.quantile_us(1.0)));
    v
}

/// One readable line for a latency summary of [`latency`].
pub(crate) fn fmt_lat(v: &Value) -> String {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let mut s = format!(
        "p50 {:>8.1}  p99 {:>8.1}  max {:>8.1}  mean {:>8.1} ms ({} samples)",
        f("p50_ms"),
        f("p99_ms"),
        f("max_ms"),
        f("mean_ms"),
        v["samples"]
    );
    if let Some(t) = v["target_p99_ms"].as_f64() {
        let met = if v["met"].as_bool().unwrap_or(false) {
            "met"
        } else {
            "NOT met"
        };
        s.push_str(&format!("  target p99 <= {t} ms: {met}"));
    }
    s
}

fn fmt_idle(v: &Value) -> String {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let met = if v["met"].as_bool().unwrap_or(false) {
        "met"
    } else {
        "NOT met"
    };
    format!(
        "mean {:.1} B/s, max {:.1} B/s, {:.2} datagrams/s (target <= {IDLE_BYTES_PER_S} B/s: {met}); views while idle: {}",
        f("bytes_per_s_mean"),
        f("bytes_per_s_max"),
        f("datagrams_per_s_mean"),
        v["views_installed_while_idle"]
    )
}

fn print_summary(out: &Value) {
    if let Some(real) = out.get("real") {
        let raw = &real["raw_udp_rtt"];
        println!(
            "raw UDP ping-pong on loopback: p50 {} us, p99 {} us",
            raw["p50_us"], raw["p99_us"]
        );
        for s in real["sizes"].as_array().into_iter().flatten() {
            println!("== real: {} mservers through the mcaster", s["members"]);
            for (label, key) in [
                ("join (started)", "join_from_started"),
                ("join (spawn)  ", "join_from_spawn"),
                ("SIGKILL       ", "crash"),
                ("SIGSTOP       ", "pause"),
                ("SIGCONT       ", "resume"),
                ("SIGTERM leave ", "leave"),
            ] {
                println!("  {label} {}", fmt_lat(&s[key]));
            }
            println!("  idle           {}", fmt_idle(&s["idle"]));
            let failures = s["failures"].as_array().map_or(0, Vec::len);
            if failures > 0 {
                println!("  FAILED TRIALS: {failures} (see --json)");
            }
            if let Some(a) = s["aborted"].as_str() {
                println!("  ABORTED: {a}");
            }
        }
    }
    if let Some(sim) = out.get("sim") {
        for s in sim["sizes"].as_array().into_iter().flatten() {
            println!(
                "== sim: {} members ({} trials, {} s wall)",
                s["members"], s["trials"], s["wall_s"]
            );
            for (label, key) in [
                ("join          ", "join"),
                ("crash (hints) ", "crash"),
                ("crash (watch) ", "crash_watch"),
                ("pause         ", "pause"),
                ("resume        ", "resume"),
            ] {
                println!("  {label} {}", fmt_lat(&s[key]));
            }
            println!("  idle           {}", fmt_idle(&s["idle"]));
            for kind in ["crash", "join", "pause"] {
                let m = &s["messages"][kind];
                println!(
                    "  per {kind} change: {} datagrams/member ({} change msgs/member, coordinator {})",
                    m["datagrams_per_member_per_change"],
                    m["change_msgs_per_member_per_change"],
                    m["coordinator_change_msgs_per_change"]
                );
            }
            let failures = s["failures"].as_array().map_or(0, Vec::len);
            if failures > 0 {
                println!("  FAILED TRIALS: {} ({})", failures, s["failures"]);
            }
        }
    }
}
