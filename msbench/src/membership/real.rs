//! The real-process half of `msbench membership`: one group of `n`
//! mservers on loopback through a real mcaster, and the trials of DESIGN.md
//! section 10 run against it (idle traffic, SIGKILL, SIGSTOP and SIGCONT,
//! join and graceful leave), every latency measured with the bench's clock
//! from the arrival of the mservers' "view installed" log lines.

// The benchmark owns the clock.
#![allow(clippy::disallowed_methods)]

use super::procs::{Binaries, Cluster, LogKind, ViewMember};
use crate::stats::Latencies;
use anyhow::bail;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Longest wait for one expected view (a failed trial after that).
const TRIAL_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for the group to converge between trials.
const CONVERGE_LIMIT: Duration = Duration::from_secs(30);
/// Quiet time after convergence before the next fault, plus a random part
/// up to one query interval, so that faults land at random phases of the
/// monitoring round.
const SETTLE: Duration = Duration::from_millis(300);
const SETTLE_JITTER_MS: u64 = 200;

/// Options of the real-process runs.
#[derive(Clone, Debug)]
pub struct RealOptions {
    /// Trials per measurement.
    pub trials: usize,
    /// Length of the idle measurement.
    pub idle: Duration,
    /// Print progress on stderr.
    pub progress: bool,
}

/// What one group size measured.
#[derive(Default)]
pub struct RealRun {
    /// Seconds to form the group one member at a time.
    pub formation_s: f64,
    /// Newcomer's "mserver started" line -> view with it at every member.
    pub join_from_started: Latencies,
    /// Newcomer's spawn -> view with it at every member.
    pub join_from_spawn: Latencies,
    /// SIGKILL -> view without the victim at every survivor.
    pub crash: Latencies,
    /// SIGSTOP -> view without the victim at every survivor.
    pub pause: Latencies,
    /// SIGCONT -> one view with every member (the resumed one rejoined).
    pub resume: Latencies,
    /// SIGTERM -> view without the leaver at every remaining member.
    pub leave: Latencies,
    /// How long running kill(1) for SIGSTOP/SIGCONT took (included in the
    /// pause and resume figures).
    pub signal_cmd: Latencies,
    /// The idle measurement.
    pub idle: Value,
    /// Trials that did not end as expected.
    pub failures: Vec<Value>,
    /// Warnings and errors the mservers logged, by message.
    pub warnings: BTreeMap<String, u64>,
    /// Set when the run had to stop early.
    pub aborted: Option<String>,
}

/// Lets the group be quiet for [`SETTLE`] plus a random part of a query
/// interval, so the next fault lands at a random phase of monitoring.
pub(crate) fn settle(c: &mut Cluster, rng: &mut ChaCha8Rng) {
    let jitter = Duration::from_millis(rng.random_range(0..=SETTLE_JITTER_MS));
    c.idle(SETTLE + jitter);
}

/// Whether the member list `m` has `a`.
pub(crate) fn contains(m: &[ViewMember], a: SocketAddr) -> bool {
    m.iter().any(|x| x.addr == a)
}

/// Mserver `i`'s rank in the latest view it logged.
pub(crate) fn rank_of(c: &Cluster, i: usize) -> Option<u64> {
    let a = c.addr(i);
    c.latest
        .get(&i)?
        .members
        .iter()
        .find(|m| m.addr == a)
        .map(|m| m.rank)
}

/// Runs every trial for a group of `n` mservers.
pub fn run_size(
    bins: &Binaries,
    n: usize,
    opts: &RealOptions,
    rng: &mut ChaCha8Rng,
    tag: u16,
) -> RealRun {
    let mut run = RealRun::default();
    let mut c = match Cluster::new(bins, tag) {
        Ok(c) => c,
        Err(e) => {
            run.aborted = Some(format!("{e:#}"));
            return run;
        }
    };
    if let Err(e) = trials(&mut c, n, opts, rng, &mut run) {
        run.aborted = Some(format!("{e:#}"));
        run.failures
            .push(diagnose(&c, "aborted", 0, &format!("{e:#}")));
    }
    run.warnings = c.warnings.clone();
    run
}

fn progress(opts: &RealOptions, msg: &str) {
    if opts.progress {
        eprintln!("msbench membership: {msg}");
    }
}

fn trials(
    c: &mut Cluster,
    n: usize,
    opts: &RealOptions,
    rng: &mut ChaCha8Rng,
    run: &mut RealRun,
) -> anyhow::Result<()> {
    // Formation, one member at a time.
    progress(opts, &format!("{n} mservers: forming the group"));
    let t0 = Instant::now();
    for i in 0..n {
        c.mark();
        c.start(i)?;
        let a = c.addr(i);
        let upto: Vec<usize> = (0..=i).collect();
        if c.wait_for(CONVERGE_LIMIT, |c| {
            c.all_installed(&upto, |m| contains(m, a))
        })
        .is_none()
        {
            bail!("mserver {i} did not join the group of {upto:?}");
        }
    }
    converge(c, n)?;
    run.formation_s = t0.elapsed().as_secs_f64();
    c.idle(Duration::from_secs(1));

    progress(
        opts,
        &format!("{n} mservers: idle traffic ({:?})", opts.idle),
    );
    run.idle = measure_idle(c, opts.idle)?;

    progress(opts, &format!("{n} mservers: SIGKILL trials"));
    for t in 0..opts.trials {
        settle(c, rng);
        let victim = rng.random_range(1..n);
        let va = c.addr(victim);
        let survivors: Vec<usize> = c.indexes().into_iter().filter(|i| *i != victim).collect();
        c.mark();
        let Some(t0) = c.kill(victim) else {
            bail!("mserver {victim} was not running");
        };
        match c.wait_for(TRIAL_LIMIT, |c| {
            c.all_installed(&survivors, |m| !contains(m, va))
        }) {
            Some(t) => run.crash.push(t.saturating_duration_since(t0)),
            None => {
                let what = format!("no view without {va} at every survivor");
                run.failures.push(diagnose(c, "crash", t, &what));
            }
        }
        c.start(victim)?;
        converge(c, n)?;
    }

    progress(opts, &format!("{n} mservers: SIGSTOP/SIGCONT trials"));
    for t in 0..opts.trials {
        pause_resume_trial(
            c,
            n,
            t,
            rng,
            PauseResumeSink {
                pause: &mut run.pause,
                resume: &mut run.resume,
                signal_cmd: Some(&mut run.signal_cmd),
                failures: &mut run.failures,
            },
        )?;
    }

    progress(opts, &format!("{n} mservers: join and leave trials"));
    let newcomer = n - 1;
    c.terminate(newcomer)?;
    c.reap(newcomer, TRIAL_LIMIT)?;
    converge(c, n - 1)?;
    let everyone: Vec<usize> = (0..n).collect();
    let rest: Vec<usize> = (0..n - 1).collect();
    let na = c.addr(newcomer);
    for t in 0..opts.trials {
        settle(c, rng);
        c.mark();
        let spawn = c.start(newcomer)?;
        match c.wait_for(TRIAL_LIMIT, |c| {
            c.all_installed(&everyone, |m| contains(m, na))
        }) {
            Some(t) => {
                run.join_from_spawn.push(t.saturating_duration_since(spawn));
                if let Some(started) = c.server(newcomer).and_then(|s| s.started) {
                    run.join_from_started
                        .push(t.saturating_duration_since(started));
                }
            }
            None => {
                let what = format!("no view with the newcomer {na} at every member");
                run.failures.push(diagnose(c, "join", t, &what));
            }
        }
        converge(c, n)?;
        settle(c, rng);
        c.mark();
        let t0 = c.terminate(newcomer)?;
        match c.wait_for(TRIAL_LIMIT, |c| {
            c.all_installed(&rest, |m| !contains(m, na))
        }) {
            Some(t) => run.leave.push(t.saturating_duration_since(t0)),
            None => {
                let what = format!("no view without the leaver {na} at every member");
                run.failures.push(diagnose(c, "leave", t, &what));
            }
        }
        if let Err(e) = c.reap(newcomer, TRIAL_LIMIT) {
            run.failures
                .push(diagnose(c, "leave", t, &format!("{e:#}")));
        }
        converge(c, n - 1)?;
    }
    Ok(())
}

/// Waits until the mservers `0..n` (started if missing) agree on one view
/// of exactly them, then checks it with msctl.
/// Where one SIGSTOP/SIGCONT trial records its figures.
pub(crate) struct PauseResumeSink<'a> {
    /// SIGSTOP -> view without the victim at every other member.
    pub pause: &'a mut Latencies,
    /// SIGCONT -> one view with every member (the victim rejoined).
    pub resume: &'a mut Latencies,
    /// How long running kill(1) took, if recorded.
    pub signal_cmd: Option<&'a mut Latencies>,
    /// Trials that did not end as expected.
    pub failures: &'a mut Vec<Value>,
}

/// One SIGSTOP/SIGCONT trial on a converged group of `n`: a random member
/// is stopped until every other member installed a view without it, then
/// continued until it rejoined (a new rank) and one view holds everyone.
pub(crate) fn pause_resume_trial(
    c: &mut Cluster,
    n: usize,
    t: usize,
    rng: &mut ChaCha8Rng,
    sink: PauseResumeSink<'_>,
) -> anyhow::Result<()> {
    let PauseResumeSink {
        pause,
        resume,
        mut signal_cmd,
        failures,
    } = sink;
    settle(c, rng);
    let victim = rng.random_range(0..n);
    let va = c.addr(victim);
    let old_rank = rank_of(c, victim);
    let others: Vec<usize> = c.indexes().into_iter().filter(|i| *i != victim).collect();
    c.mark();
    let t0 = c.stop_cont(victim, true)?;
    if let Some(s) = signal_cmd.as_deref_mut() {
        s.push(t0.elapsed());
    }
    match c.wait_for(TRIAL_LIMIT, |c| {
        c.all_installed(&others, |m| !contains(m, va))
    }) {
        Some(at) => pause.push(at.saturating_duration_since(t0)),
        None => {
            let what = format!("no view without the stopped {va} at every other member");
            failures.push(diagnose(c, "pause", t, &what));
            return recover(c, n);
        }
    }
    let t1 = c.stop_cont(victim, false)?;
    if let Some(s) = signal_cmd {
        s.push(t1.elapsed());
    }
    let back = c.wait_for(TRIAL_LIMIT, |c| {
        let at = c.converged()?;
        (rank_of(c, victim) != old_rank).then_some(at)
    });
    match back {
        Some(at) => resume.push(at.saturating_duration_since(t1)),
        None => {
            let what = format!("{va} did not rejoin (new rank, one view everywhere)");
            failures.push(diagnose(c, "resume", t, &what));
            recover(c, n)?;
        }
    }
    converge(c, n)
}

pub(crate) fn converge(c: &mut Cluster, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        if c.server(i).is_none() {
            c.start(i)?;
        }
    }
    if c.wait_for(CONVERGE_LIMIT, |c| c.converged()).is_none() {
        let latest: BTreeMap<usize, String> = c
            .latest
            .iter()
            .map(|(i, v)| (*i, format!("view {} {:?}", v.view, v.addrs())))
            .collect();
        bail!(
            "the group of {n} did not converge within {CONVERGE_LIMIT:?}; latest views: {latest:?}"
        );
    }
    c.verify_with_msctl(Duration::from_secs(5))
}

/// After a failed trial: every member continued (SIGCONT) and running.
pub(crate) fn recover(c: &mut Cluster, n: usize) -> anyhow::Result<()> {
    for i in c.indexes() {
        if c.server(i).is_some_and(|s| s.stopped) {
            c.stop_cont(i, false)?;
        }
    }
    converge(c, n)
}

/// A failure record: what was expected, each member's latest view, and the
/// last log lines.
pub(crate) fn diagnose(c: &Cluster, phase: &str, trial: usize, what: &str) -> Value {
    let latest: BTreeMap<String, Value> = c
        .latest
        .iter()
        .map(|(i, v)| {
            let members: Vec<String> = v
                .members
                .iter()
                .map(|m| format!("{}#{}", m.addr, m.rank))
                .collect();
            (
                c.addr(*i).to_string(),
                json!({"view": v.view, "members": members}),
            )
        })
        .collect();
    let tails: BTreeMap<String, Vec<String>> = c
        .tails(6)
        .into_iter()
        .map(|(i, t)| (c.addr(i).to_string(), t))
        .collect();
    let f = json!({
        "phase": phase,
        "trial": trial,
        "what": what,
        "latest_views": latest,
        "log_tails": tails,
    });
    eprintln!("msbench: {phase} trial {trial} failed: {what}");
    f
}

/// Per-member bytes and datagrams sent per second over `d` of idleness,
/// from `msctl stats --json` before and after (the mservers' own uptime
/// clocks give the interval); `rpc` (msctl's own traffic) is left out.
fn measure_idle(c: &mut Cluster, d: Duration) -> anyhow::Result<Value> {
    let idx = c.indexes();
    c.mark();
    let before: Vec<Option<Value>> = idx.iter().map(|i| c.msctl_stats(*i)).collect();
    c.idle(d);
    let after: Vec<Option<Value>> = idx.iter().map(|i| c.msctl_stats(*i)).collect();
    let views_while_idle = c
        .log
        .iter()
        .filter(|e| matches!(e.kind, LogKind::ViewInstalled { .. }))
        .count();
    let mut per_member = Vec::new();
    let mut per_protocol: BTreeMap<String, f64> = BTreeMap::new();
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
        let mut bytes = 0.0;
        let mut datagrams = 0.0;
        if let Some(protos) = a["protocols"].as_object() {
            for (name, t) in protos {
                if name == "rpc" {
                    continue;
                }
                let field = |v: &Value, f: &str| v[f].as_u64().unwrap_or(0) as f64;
                let db = field(t, "bytes_sent") - field(&b["protocols"][name], "bytes_sent");
                let dd = field(t, "sent") - field(&b["protocols"][name], "sent");
                bytes += db;
                datagrams += dd;
                *per_protocol.entry(name.clone()).or_default() += db / secs;
            }
        }
        per_member.push((c.addr(*i).to_string(), bytes / secs, datagrams / secs, secs));
    }
    let n = per_member.len().max(1) as f64;
    let mean = per_member.iter().map(|m| m.1).sum::<f64>() / n;
    let max = per_member.iter().map(|m| m.1).fold(0.0, f64::max);
    let dg_mean = per_member.iter().map(|m| m.2).sum::<f64>() / n;
    let interval = per_member.iter().map(|m| m.3).fold(0.0, f64::max);
    let r2 = crate::stats::round2;
    Ok(json!({
        "interval_s": r2(interval),
        "bytes_per_s_mean": r2(mean),
        "bytes_per_s_max": r2(max),
        "datagrams_per_s_mean": r2(dg_mean),
        "bytes_per_s_mean_by_protocol": per_protocol
            .iter()
            .map(|(k, v)| (k.clone(), json!(r2(v / n))))
            .collect::<serde_json::Map<String, Value>>(),
        "per_member_bytes_per_s": per_member
            .iter()
            .map(|m| (m.0.clone(), json!(r2(m.1))))
            .collect::<serde_json::Map<String, Value>>(),
        "views_installed_while_idle": views_while_idle,
    }))
}
