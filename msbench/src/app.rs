//! `msbench app`: how fast application groups (seed 003, chapter II and
//! section II.B.4 "Member Interfaces"; DESIGN.md sections 6 and 10; issue
//! 6) deliver a new view to every member after a `join()` and after a
//! member process dies, and how long the core-set takes to bootstrap one
//! big group in the simulator.
//!
//! **Real processes** ([`real_half`]): an `mcaster`, 3 `mserver`s on
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
//! Every wait is bounded ([`TRIAL_LIMIT`]); a trial that times out is
//! counted in `failures` (with details) and the group is brought back to
//! its S members before the next one. All timestamps are CLOCK_REALTIME
//! on the same host, so they compare across processes.
//!
//! **Simulator** ([`sim_half`]): 3 [`MserverNode`]s (no mcaster) and
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

// The benchmark owns the clock.
#![allow(clippy::disallowed_methods)]

use crate::membership::procs::{Binaries, Cluster};
use crate::membership::real::converge;
use crate::raw;
use crate::stats::Latencies;
use anyhow::{anyhow, bail, Context as _};
use membership::appgroup::agent::{MiAgent, MiAgentConfig, MiAnswer, MiEvent, MiRequest};
use membership::appgroup::{AppMember, GroupName, GroupOptions, MemberKind, MemberName};
use membership::coreset::{CoreSet, CoreSetConfig};
use membership::id::NodeId;
use membership::mserver::node::{MserverNode, NodeEvent};
use membership::rpc::{Rpc, RpcConfig};
use membership::sim::{Either, EitherEvent, SimConfig, Simulator};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};
use testkit::Proc;
use uuid::Uuid;

/// Issue 6: `join()` -> the new view at every member, p50, loopback.
const JOIN_P50_MS: f64 = 5.0;
/// Issue 6: process killed -> the new view at every member, p99.
const DEATH_P99_MS: f64 = 100.0;
/// Issue 6: one group of 2,000 members across 100 MIs, simulated seconds.
const SIM_BOOTSTRAP_S: f64 = 5.0;
/// The size and MI count the simulated target is stated for.
const SIM_TARGET_MEMBERS: usize = 2000;
const SIM_TARGET_MIS: usize = 100;
/// Longest wait for one trial's view at every member.
const TRIAL_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for a size's S members to see each other.
const SETUP_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for an MI's socket to appear.
const MI_START_LIMIT: Duration = Duration::from_secs(10);
/// Longest stdout line read from a member (longer ones are cut).
const MAX_LINE: u64 = 256 * 1024;
/// Most views remembered per member process.
const MAX_VIEWS_KEPT: usize = 10_000;
/// Largest real group size.
const MAX_REAL_SIZE: usize = 200;
/// The simulated mservers.
const SIM_SERVERS: u8 = 3;
/// Longest virtual wait, from the first join request, for the bootstrap.
const SIM_LIMIT: Duration = Duration::from_secs(60);
/// Virtual step between two looks at the simulator's events.
const SIM_STEP: Duration = Duration::from_millis(1);

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
        let real = real_half(args)?;
        targets["join_p50_met"] = real_met(&real, "join_ms", "p50", JOIN_P50_MS);
        targets["death_p99_met"] = real_met(&real, "death_ms", "p99", DEATH_P99_MS);
        out["real"] = real;
    }
    if do_sim {
        let sim = sim_half(args);
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

/// CLOCK_REALTIME in nanoseconds since the Unix epoch (the clock msctl's
/// `--timestamps` fields use).
fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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

// ------------------------------------------------------------ real processes

/// What one member process reported: one view.
#[derive(Clone, Debug)]
struct Seen {
    view: u64,
    names: BTreeSet<String>,
    at_ns: u64,
    join_called_ns: Option<u64>,
}

/// What a member's reader thread sends.
enum Report {
    View(String, Seen),
    Closed(String),
}

/// Parses one `join --json --timestamps` line.
fn parse_seen(line: &[u8]) -> Option<Seen> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let names = v["members"]
        .as_array()?
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect();
    Some(Seen {
        view: v["view"].as_u64()?,
        names,
        at_ns: v["at_ns"].as_u64()?,
        join_called_ns: v["join_called_ns"].as_u64(),
    })
}

/// Reads a member's stdout until it closes, sending each view.
fn read_member(name: String, out: impl Read, tx: Sender<Report>) {
    let mut r = BufReader::new(out);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut r).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if let Some(seen) = parse_seen(&line) {
                    if tx.send(Report::View(name.clone(), seen)).is_err() {
                        return;
                    }
                }
            }
        }
    }
    let _ = tx.send(Report::Closed(name));
}

/// A `msctl --mi ... join` child, SIGKILLed on drop.
struct Member {
    child: Proc,
    stderr: PathBuf,
}

/// The member interfaces, their sockets' directory, the member processes
/// and what they printed. Every child is killed when it is dropped.
struct Apps {
    msctl: PathBuf,
    mi_bin: PathBuf,
    /// Sockets and logs (removed on drop when it is our own temporary
    /// directory).
    dir: PathBuf,
    own_dir: bool,
    mis: Vec<Proc>,
    members: BTreeMap<String, Member>,
    tx: Sender<Report>,
    rx: Receiver<Report>,
    views: BTreeMap<String, Vec<Seen>>,
    closed: BTreeSet<String>,
}

impl Drop for Apps {
    fn drop(&mut self) {
        self.members.clear();
        self.mis.clear();
        if self.own_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Apps {
    fn new(bins: &Binaries, mi_bin: PathBuf) -> anyhow::Result<Apps> {
        let (dir, own_dir) = match std::env::var_os("MSBENCH_LOG_DIR") {
            Some(d) => (PathBuf::from(d), false),
            None => (
                std::env::temp_dir().join(format!("msbench-app-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let (tx, rx) = channel();
        Ok(Apps {
            msctl: bins.msctl.clone(),
            mi_bin,
            dir,
            own_dir,
            mis: Vec::new(),
            members: BTreeMap::new(),
            tx,
            rx,
            views: BTreeMap::new(),
            closed: BTreeSet::new(),
        })
    }

    fn socket(&self, mi: usize) -> PathBuf {
        self.dir.join(format!("mi{mi}.sock"))
    }

    /// Starts MI `i`, attached preferably to `mservers[0]`; waits for its
    /// socket.
    fn start_mi(&mut self, i: usize, mservers: &[std::net::SocketAddr]) -> anyhow::Result<()> {
        let sock = self.socket(i);
        let _ = std::fs::remove_file(&sock);
        let log = std::fs::File::create(self.dir.join(format!("mi{i}.log")))
            .context("cannot create an MI log file")?;
        let mut cmd = Command::new(&self.mi_bin);
        for m in mservers {
            cmd.args(["--mserver", &m.to_string()]);
        }
        cmd.arg("--socket")
            .arg(&sock)
            .args(["--host", &format!("h{i}"), "--listen", "127.0.0.1:0"])
            .env("MS_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(log);
        let child = Proc::try_spawn(&format!("MI {i}"), &mut cmd)
            .with_context(|| format!("cannot start {}", self.mi_bin.display()))?;
        self.mis.push(child);
        let up =
            testkit::wait::until_true(MI_START_LIMIT, Duration::from_millis(20), || sock.exists());
        if !up {
            bail!("MI {i} did not create its socket within {MI_START_LIMIT:?}");
        }
        Ok(())
    }

    /// `msctl --mi MI(mi) --timeout-ms 10000 ARGS`, run to its end.
    fn msctl(&self, mi: usize, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.msctl)
            .arg("--mi")
            .arg(self.socket(mi))
            .args(["--timeout-ms", "10000"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run msctl")?;
        if !out.status.success() {
            bail!(
                "msctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `msctl --mi MI(mi) join group --name name --json
    /// --timestamps`, its stdout read by a thread.
    fn join(&mut self, mi: usize, group: &str, name: &str) -> anyhow::Result<()> {
        let stderr = self.dir.join(format!("{group}-{name}.err"));
        let mut cmd = Command::new(&self.msctl);
        cmd.arg("--mi")
            .arg(self.socket(mi))
            .args(["--timeout-ms", "10000", "join", group, "--name", name])
            .args(["--json", "--timestamps"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).context("cannot create a log file")?);
        let mut child = Proc::try_spawn(name, &mut cmd).context("cannot start msctl join")?;
        let Some(out) = child.child.stdout.take() else {
            bail!("no stdout pipe for {name}");
        };
        let tx = self.tx.clone();
        let n = name.to_string();
        std::thread::spawn(move || read_member(n, out, tx));
        self.views.insert(name.to_string(), Vec::new());
        self.closed.remove(name);
        self.members
            .insert(name.to_string(), Member { child, stderr });
        Ok(())
    }

    /// SIGKILLs member `name` (and reaps it after); the realtime just
    /// before the signal.
    fn kill(&mut self, name: &str) -> Option<u64> {
        let mut m = self.members.remove(name)?;
        let t0 = realtime_ns();
        m.child.kill();
        Some(t0)
    }

    /// Kills every member process and forgets what they printed.
    fn kill_all(&mut self) {
        self.members.clear();
        self.pump(Duration::from_millis(50));
        self.views.clear();
        self.closed.clear();
    }

    /// Takes the reports that arrived (waiting at most `wait` for one).
    fn pump(&mut self, wait: Duration) {
        let mut next = self.rx.recv_timeout(wait);
        loop {
            match next {
                Ok(Report::View(name, seen)) => {
                    if let Some(v) = self.views.get_mut(&name) {
                        if v.len() < MAX_VIEWS_KEPT {
                            v.push(seen);
                        }
                    }
                }
                Ok(Report::Closed(name)) => {
                    self.closed.insert(name);
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return,
            }
            next = self.rx.try_recv().map_err(|_| RecvTimeoutError::Timeout);
        }
    }

    /// Processes reports until `cond` gives a value or `limit` passes.
    fn wait_for<T>(&mut self, limit: Duration, cond: impl FnMut(&Apps) -> Option<T>) -> Option<T> {
        testkit::wait::pumping(self, limit, Duration::from_millis(20), cond, |s, d| {
            s.pump(d)
        })
    }

    /// How many views each member has printed so far.
    fn marks(&self) -> BTreeMap<String, usize> {
        self.views
            .iter()
            .map(|(n, v)| (n.clone(), v.len()))
            .collect()
    }

    /// The first view `name` printed after `mark` views that satisfies `p`.
    fn first_after(&self, name: &str, mark: usize, p: impl Fn(&Seen) -> bool) -> Option<&Seen> {
        self.views.get(name)?.iter().skip(mark).find(|s| p(s))
    }

    /// Whether every member of `names` last printed a view of exactly
    /// `names`, all with the same number.
    fn all_see_exactly(&self, names: &BTreeSet<String>) -> bool {
        let mut number = None;
        names.iter().all(|n| {
            let Some(last) = self.views.get(n).and_then(|v| v.last()) else {
                return false;
            };
            let same = *number.get_or_insert(last.view) == last.view;
            same && last.names == *names
        })
    }

    /// For failure reports: each member's latest view and whether its
    /// output closed, and the end of `extra`'s stderr.
    fn diagnose(&self, what: &str, size: usize, trial: usize, extra: Option<&str>) -> Value {
        let latest: BTreeMap<&String, Value> = self
            .views
            .iter()
            .map(|(n, v)| {
                let last = v
                    .last()
                    .map(|s| json!({"view": s.view, "members": s.names.len()}));
                (
                    n,
                    json!({"latest": last, "closed": self.closed.contains(n)}),
                )
            })
            .collect();
        let stderr = extra
            .and_then(|n| self.members.get(n))
            .and_then(|m| std::fs::read_to_string(&m.stderr).ok())
            .map(|s| s.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
        json!({
            "size": size,
            "trial": trial,
            "what": what,
            "members": latest,
            "stderr": stderr,
        })
    }
}

/// What one real group size measured.
#[derive(Default)]
struct SizeRun {
    join: Latencies,
    death: Latencies,
    /// The same to the first member that printed the view (the pipeline
    /// before the fan-out to the member processes).
    join_first: Latencies,
    death_first: Latencies,
    failures: Vec<Value>,
    setup_s: f64,
    aborted: Option<String>,
}

/// The real-process half: the `"real"` object of the output.
fn real_half(args: &AppArgs) -> anyhow::Result<Value> {
    let bins = Binaries::locate()?;
    let [mi_bin] = testkit::bins::locate(["member-interface"]).map_err(|e| anyhow!(e))?;
    let raw_rtt = raw::ping_pong(64, 500, 5000).context("raw UDP ping-pong")?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let tag = 600 + (args.seed % 100) as u16;
    let mut c = Cluster::new(&bins, tag)?;
    let mut apps = Apps::new(&bins, mi_bin)?;
    let mut aborted = None;
    let mut sizes = Vec::new();
    match setup(&mut c, &mut apps, args) {
        Ok(()) => {
            for &size in &args.sizes {
                progress(args, &format!("size {size}: {} trials", args.trials));
                let r = run_size(&mut apps, args, size, &mut rng);
                apps.kill_all();
                // Let the mservers log what they did (and the leaves of
                // the killed members commit) before the next size.
                c.idle(Duration::from_millis(500));
                sizes.push(json!({
                    "size": size,
                    "join_ms": ms3(&r.join),
                    "death_ms": ms3(&r.death),
                    "join_first_member_ms": ms3(&r.join_first),
                    "death_first_member_ms": ms3(&r.death_first),
                    "failures": r.failures.len(),
                    "failure_details": r.failures,
                    "setup_s": round3(r.setup_s),
                    "aborted": r.aborted,
                }));
            }
        }
        Err(e) => aborted = Some(format!("{e:#}")),
    }
    let warnings = c.warnings.clone();
    drop(apps);
    drop(c);
    Ok(json!({
        "transport": "3 mservers on 127.0.0.(10+i) through an mcaster (--multicast off); \
                      3 member-interface daemons on 127.0.0.1, MI i attached to mserver i; \
                      members are msctl --mi join processes",
        "mservers": 3,
        "mis": 3,
        "trials": args.trials,
        "raw_udp_rtt_ms": ms3(&raw_rtt),
        "sizes": sizes,
        "mserver_warnings": warnings,
        "aborted": aborted,
    }))
}

/// The mservers in one view, the MIs up, one group per size.
fn setup(c: &mut Cluster, apps: &mut Apps, args: &AppArgs) -> anyhow::Result<()> {
    progress(args, "3 mservers: forming the group");
    converge(c, 3)?;
    let addrs: Vec<std::net::SocketAddr> = (0..3).map(|i| c.addr(i)).collect();
    for i in 0..3 {
        let pref: Vec<std::net::SocketAddr> = (0..3).map(|k| addrs[(i + k) % 3]).collect();
        apps.start_mi(i, &pref)?;
    }
    progress(args, "3 MIs up: creating the groups");
    for &size in &args.sizes {
        apps.msctl(0, &["create", &group_name(size), "--json"])?;
    }
    Ok(())
}

fn group_name(size: usize) -> String {
    format!("bench-{size}")
}

/// The trials of one group size.
fn run_size(apps: &mut Apps, args: &AppArgs, size: usize, rng: &mut ChaCha8Rng) -> SizeRun {
    let mut run = SizeRun::default();
    let group = group_name(size);
    let base: BTreeSet<String> = (0..size).map(|i| format!("m{i}")).collect();
    let t0 = Instant::now();
    for i in 0..size {
        if let Err(e) = apps.join(i % 3, &group, &format!("m{i}")) {
            run.aborted = Some(format!("{e:#}"));
            return run;
        }
    }
    if apps
        .wait_for(SETUP_LIMIT, |a| a.all_see_exactly(&base).then_some(()))
        .is_none()
    {
        run.failures
            .push(apps.diagnose("setup: the members never saw each other", size, 0, None));
        run.aborted = Some(format!("the {size} members did not all see each other"));
        return run;
    }
    run.setup_s = t0.elapsed().as_secs_f64();
    for t in 0..args.trials {
        // A random pause, so trials do not fall in step with the mservers'
        // query rounds.
        apps.pump(Duration::from_millis(rng.random_range(20..=120)));
        if let Err(e) = trial(apps, &group, &base, size, t, &mut run) {
            run.aborted = Some(format!("{e:#}"));
            return run;
        }
    }
    run
}

/// One join and one death; a failed one is recorded and the group brought
/// back to `base` (an error if that fails too).
fn trial(
    apps: &mut Apps,
    group: &str,
    base: &BTreeSet<String>,
    size: usize,
    t: usize,
    run: &mut SizeRun,
) -> anyhow::Result<()> {
    let j = format!("j{t}");
    let marks = apps.marks();
    apps.join(t % 3, group, &j)?;
    let everyone: Vec<String> = base.iter().cloned().chain([j.clone()]).collect();
    let joined = apps.wait_for(TRIAL_LIMIT, |a| {
        let called = a.views.get(&j)?.first()?.join_called_ns?;
        let (mut first, mut last) = (u64::MAX, 0);
        for n in &everyone {
            let mark = marks.get(n).copied().unwrap_or(0);
            let at = a.first_after(n, mark, |s| s.names.contains(&j))?.at_ns;
            (first, last) = (first.min(at), last.max(at));
        }
        Some((first.saturating_sub(called), last.saturating_sub(called)))
    });
    match joined {
        Some((first, last)) => {
            run.join_first.push(Duration::from_nanos(first));
            run.join.push(Duration::from_nanos(last));
        }
        None => {
            run.failures.push(apps.diagnose(
                "join: not every member saw the new one",
                size,
                t,
                Some(&j),
            ));
            apps.kill(&j);
            return recover(apps, base);
        }
    }
    let marks = apps.marks();
    let Some(killed) = apps.kill(&j) else {
        bail!("{j} is gone");
    };
    let died = apps.wait_for(TRIAL_LIMIT, |a| {
        let (mut first, mut last) = (u64::MAX, 0);
        for n in base {
            let mark = marks.get(n).copied().unwrap_or(0);
            let at = a.first_after(n, mark, |s| !s.names.contains(&j))?.at_ns;
            (first, last) = (first.min(at), last.max(at));
        }
        Some((first.saturating_sub(killed), last.saturating_sub(killed)))
    });
    match died {
        Some((first, last)) => {
            run.death_first.push(Duration::from_nanos(first));
            run.death.push(Duration::from_nanos(last));
        }
        None => {
            run.failures.push(apps.diagnose(
                "death: not every member saw the view without the killed one",
                size,
                t,
                None,
            ));
            return recover(apps, base);
        }
    }
    if let Some(v) = apps.views.get_mut(&j) {
        v.clear();
    }
    Ok(())
}

/// After a failed trial: every base member sees exactly the base group.
fn recover(apps: &mut Apps, base: &BTreeSet<String>) -> anyhow::Result<()> {
    if apps
        .wait_for(SETUP_LIMIT, |a| a.all_see_exactly(base).then_some(()))
        .is_none()
    {
        bail!(
            "after a failed trial the {} members did not get back to a view of themselves",
            base.len()
        );
    }
    Ok(())
}

// ----------------------------------------------------------------- simulator

fn sim_group_addr() -> NodeId {
    NodeId::v4(239, 9, 9, 9, 7000)
}

fn sim_server(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7200)
}

/// MI `i` (0-based) of the simulation.
fn sim_mi(i: usize) -> NodeId {
    NodeId::v4(10, 0, 1, (i % 250 + 1) as u8, 7400)
}

/// One simulated host: an mserver or an MI (as `mserver/tests/sim_apps.rs`).
type Host = Either<Box<MserverNode>, Box<MiAgent>>;
/// What a simulated host reports.
type HostEvent = EitherEvent<NodeEvent, MiEvent>;

/// A simulator with the 3 mservers' factory and the MIs' (MI i prefers
/// mserver i % 3, then the others).
fn simulator(seed: u64) -> Simulator<Host> {
    let config = SimConfig::new(seed, membership::sim_replay!("msbench_app"));
    let mut sim = Simulator::new(config, move |spawn| {
        if spawn.id.addr().port() == 7200 {
            let c = CoreSetConfig::new(spawn.id, spawn.incarnation, "lan", sim_group_addr());
            let coreset = match CoreSet::new(c, spawn.now, spawn.seed) {
                Ok(core) => core,
                // The configuration is fixed and valid; a failure here is a
                // bug in this program.
                Err(e) => panic!("core-set config: {e}"),
            };
            let rpc = Rpc::new(
                spawn.id,
                spawn.incarnation,
                RpcConfig::default(),
                spawn.seed ^ 0x5eed,
            );
            Host::Left(Box::new(MserverNode::new(
                spawn.now,
                sim_group_addr(),
                coreset,
                None,
                rpc,
            )))
        } else {
            let ip = spawn.id.addr().ip().to_string();
            let k: usize = ip
                .rsplit('.')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
            let mut c = MiAgentConfig::new(
                spawn.id,
                spawn.incarnation,
                Uuid::from_bytes(spawn.incarnation.to_bytes()),
                format!("host{k}"),
            );
            c.mservers = (0..SIM_SERVERS)
                .map(|j| {
                    sim_server(
                        1 + ((k.saturating_sub(1) % usize::from(SIM_SERVERS)) as u8 + j)
                            % SIM_SERVERS,
                    )
                })
                .collect();
            Host::Right(Box::new(MiAgent::new(
                spawn.now,
                c,
                RpcConfig::default(),
                spawn.seed,
            )))
        }
    });
    for i in 1..=SIM_SERVERS {
        sim.join_group(sim_server(i), sim_group_addr());
    }
    sim
}

/// What one simulated bootstrap measured.
#[derive(Default)]
struct Bootstrap {
    members: usize,
    mis: usize,
    /// Virtual seconds from the join requests to the last answer.
    answered_s: Option<f64>,
    /// Virtual seconds to the last MI's first view with every member.
    all_views_s: Option<f64>,
    answered_ok: usize,
    errors: BTreeMap<String, usize>,
    mis_with_full_view: usize,
    view_events: u64,
    member_entries: u64,
    views_pushed: u64,
    ops_applied: u64,
    datagrams: u64,
    bytes: u64,
    wall_s: f64,
    setup_wall_s: f64,
    virtual_reached_s: f64,
    stopped: Option<String>,
}

impl Bootstrap {
    fn to_json(&self) -> Value {
        let done = match (self.answered_s, self.all_views_s) {
            (Some(a), Some(v)) => Some(round3(a.max(v))),
            _ => None,
        };
        json!({
            "members": self.members,
            "mis": self.mis,
            "bootstrap_s": done,
            "all_answered_s": self.answered_s.map(round3),
            "all_mis_full_view_s": self.all_views_s.map(round3),
            "joins_ok": self.answered_ok,
            "join_errors": self.errors,
            "mis_with_full_view": self.mis_with_full_view,
            "views_pushed": self.views_pushed,
            "ops_applied_per_mserver": self.ops_applied / u64::from(SIM_SERVERS),
            "view_events_at_mis": self.view_events,
            "member_entries_delivered": self.member_entries,
            "datagrams": self.datagrams,
            "bytes": self.bytes,
            "bytes_at_1gbps_s": round3(self.bytes as f64 * 8.0 / 1e9),
            "wall_s": round3(self.wall_s),
            "setup_wall_s": round3(self.setup_wall_s),
            "virtual_reached_s": round3(self.virtual_reached_s),
            "stopped": self.stopped,
        })
    }
}

/// The simulated half: the `"sim"` object of the output. With
/// `MSBENCH_SIM_LOG=LEVEL` (e.g. `info`) the cores' log lines go to stderr,
/// stamped with wall time (not virtual time), for finding out why a run
/// stalls.
fn sim_half(args: &AppArgs) -> Value {
    if let Ok(level) = std::env::var("MSBENCH_SIM_LOG") {
        if let Err(e) = membership::runtime::logging::init_logging(
            &level,
            membership::runtime::logging::LogFormat::Human,
        ) {
            eprintln!("msbench app: MSBENCH_SIM_LOG: {e}");
        }
    }
    let mut runs = Vec::new();
    let mut met = Value::Null;
    for &n in &args.sim_members {
        progress(
            args,
            &format!("simulator: {n} members across {} MIs", args.sim_mis),
        );
        let b = bootstrap(n, args.sim_mis, args.seed, args);
        if n >= SIM_TARGET_MEMBERS && args.sim_mis >= SIM_TARGET_MIS {
            let ok = b.stopped.is_none()
                && b.answered_ok == n
                && b.answered_s.is_some_and(|a| a < SIM_BOOTSTRAP_S)
                && b.all_views_s.is_some_and(|v| v < SIM_BOOTSTRAP_S);
            met = json!(ok && met != json!(false));
        }
        progress(args, &format!("simulator: {}", b.to_json()));
        runs.push(b.to_json());
    }
    json!({
        "mservers": SIM_SERVERS,
        "link": "LinkConfig::lan: 100-500 us one way, no loss, no bandwidth limit",
        "runs": runs,
        "target_s": SIM_BOOTSTRAP_S,
        "met": met,
    })
}

/// One bootstrap: `n` joins at once across `mis` MIs.
fn bootstrap(n: usize, mis: usize, seed: u64, args: &AppArgs) -> Bootstrap {
    let wall0 = Instant::now();
    let wall_limit = Duration::from_secs(args.sim_wall_limit_secs);
    let mut b = Bootstrap {
        members: n,
        mis,
        ..Bootstrap::default()
    };
    let mut sim = simulator(seed ^ ((n as u64) << 20));
    for i in 1..=SIM_SERVERS {
        sim.add_node(sim_server(i));
        sim.run_for(Duration::from_millis(300));
    }
    sim.run_for(Duration::from_secs(1));
    let mi_ids: Vec<NodeId> = (0..mis).map(sim_mi).collect();
    for mi in &mi_ids {
        sim.add_node(*mi);
    }
    let attached = sim.run_until_condition(Duration::from_secs(10), |s| {
        mi_ids
            .iter()
            .all(|mi| matches!(s.core(*mi), Some(Host::Right(a)) if a.attached_to().is_some()))
    });
    sim.take_events();
    if !attached {
        b.stopped = Some("not every MI attached within 10 s (virtual)".into());
        return b;
    }
    let Ok(group) = GroupName::parse("big") else {
        b.stopped = Some("invalid group name".into());
        return b;
    };
    sim.with_core(mi_ids[0], |c, now| {
        if let Host::Right(a) = c {
            a.request(
                now,
                0,
                MiRequest::Create {
                    group: group.clone(),
                    options: GroupOptions::default(),
                },
            );
        }
    });
    let mut created = None;
    let end = sim.now() + Duration::from_secs(10);
    while created.is_none() && sim.now() < end {
        sim.run_for(SIM_STEP);
        for (_, _, e) in sim.take_events() {
            if let HostEvent::Right(MiEvent::Answered { handle: 0, result }) = e {
                created = Some(result.map(|_| ()));
            }
        }
    }
    match created {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            b.stopped = Some(format!("create failed: {e}"));
            return b;
        }
        None => {
            b.stopped = Some("create not answered within 10 s (virtual)".into());
            return b;
        }
    }
    sim.run_for(Duration::from_millis(100));
    sim.take_events();
    b.setup_wall_s = wall0.elapsed().as_secs_f64();

    // Every join at the same virtual instant, member k through MI k % mis.
    let wall1 = Instant::now();
    let start = sim.now();
    for k in 0..n {
        let mi = mi_ids[k % mis];
        let Ok(name) = MemberName::parse(&format!("m{k}")) else {
            continue;
        };
        let member = AppMember {
            name,
            kind: MemberKind::default(),
            id: Uuid::from_u128(k as u128 + 1),
            host: format!("host{}", k % mis + 1),
        };
        let request = MiRequest::Join {
            group: group.clone(),
            member,
        };
        sim.with_core(mi, |c, now| {
            if let Host::Right(a) = c {
                a.request(now, k as u64 + 1, request);
            }
        });
    }
    let mut answered = 0usize;
    let mut full: BTreeSet<NodeId> = BTreeSet::new();
    let limit = start + SIM_LIMIT;
    loop {
        sim.run_for(SIM_STEP);
        for (t, node, e) in sim.take_events() {
            let HostEvent::Right(e) = e else { continue };
            let since = t.saturating_duration_since(start).as_secs_f64();
            match e {
                MiEvent::Answered { handle, result } if handle >= 1 => {
                    answered += 1;
                    match result {
                        Ok(MiAnswer::Joined(_)) => b.answered_ok += 1,
                        Ok(other) => *b.errors.entry(format!("{other:?}")).or_default() += 1,
                        Err(e) => *b.errors.entry(e.to_string()).or_default() += 1,
                    }
                    if answered == n {
                        b.answered_s = Some(since);
                    }
                }
                MiEvent::View(v) if v.group == group => {
                    b.view_events += 1;
                    b.member_entries += v.members.len() as u64;
                    if v.members.len() == n && full.insert(node) && full.len() == mis {
                        b.all_views_s = Some(since);
                    }
                }
                _ => {}
            }
        }
        if answered >= n && full.len() == mis {
            break;
        }
        if sim.now() >= limit {
            b.stopped = Some(format!(
                "not done within {SIM_LIMIT:?} (virtual): {answered} of {n} joins answered, \
                 {} of {mis} MIs with a full view",
                full.len()
            ));
            break;
        }
        if wall1.elapsed() >= wall_limit {
            b.stopped = Some(format!(
                "stopped after {wall_limit:?} of wall time: {answered} of {n} joins answered, \
                 {} of {mis} MIs with a full view",
                full.len()
            ));
            break;
        }
    }
    b.wall_s = wall1.elapsed().as_secs_f64();
    b.virtual_reached_s = sim.now().saturating_duration_since(start).as_secs_f64();
    b.mis_with_full_view = full.len();
    for i in 1..=SIM_SERVERS {
        if let Some(Host::Left(s)) = sim.core(sim_server(i)) {
            b.views_pushed += s.apps().stats().views_pushed;
            b.ops_applied += s.apps().stats().applied;
        }
    }
    let totals = sim.stats().totals;
    b.datagrams = totals.sent;
    b.bytes = totals.sent_bytes;
    b
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

    #[test]
    fn parses_stamped_lines() {
        let line = br#"{"group":"g","view":3,"me":{"name":"a"},"members":[{"name":"a"},{"name":"b"}],"at_ns":20,"join_called_ns":10}"#;
        let s = parse_seen(line).expect("a stamped line");
        assert_eq!(s.view, 3);
        assert_eq!(s.at_ns, 20);
        assert_eq!(s.join_called_ns, Some(10));
        assert_eq!(s.names.len(), 2);
        // Without at_ns (no --timestamps) or not JSON: ignored.
        assert!(parse_seen(br#"{"group":"g","view":3,"members":[]}"#).is_none());
        assert!(parse_seen(b"view 3 of g: a (h)").is_none());
    }

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
