//! `msbench soak`: false failures under load (DESIGN.md section 10: "no
//! false positive in a 10-minute run with both CPU cores busy"; issue 16).
//!
//! An mcaster, 5 mservers (127.0.0.30-34, through the mcaster, default
//! timings, each with its HTTP endpoint on a free port), 2 member
//! interfaces (attached to mservers 0 and 1) with 2 members each in one
//! application group (`msctl --mi ... join --json`), and one spinning
//! process per CPU core (`sh -c 'while :; do :; done'`). Once every
//! mserver shows one view of the 5 and every member the group of 4, the
//! baseline is taken; then nothing is done for `--minutes`. Counted from
//! the baseline: views installed at each mserver (`ms_views_installed_total`
//! from `/metrics`), failure detections (`ms_failures_detected_total`),
//! and application views printed by the members. With nobody killed, every
//! one of them is a false failure (or its consequence): `false_failures`
//! is the views installed after the baseline, summed over the mservers,
//! and must be 0. `--minutes` may be fractional (a smoke run).

// A benchmark owns the clock.
#![allow(clippy::disallowed_methods)]

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::cluster::{mcaster_command, msctl_json, mserver_command, wait_agreement};
use testkit::{Lines, Proc};

/// Options of `msbench soak`.
#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// Print one JSON object instead of a readable summary.
    #[arg(long)]
    json: bool,
    /// How long to soak, in minutes (fractions allowed: 0.1 is 6 s).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Spinning processes keeping the CPU busy [default: one per core].
    #[arg(long)]
    spinners: Option<usize>,
    /// Progress lines on stderr.
    #[arg(long)]
    verbose: bool,
}

const MSERVERS: usize = 5;
const MIS: usize = 2;
const MEMBERS_PER_MI: usize = 2;
const SETTLE: Duration = Duration::from_secs(60);

fn metric(body: &str, name: &str) -> f64 {
    // The sum of every series of `name` (any labels).
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Per mserver: views installed and failures detected so far.
fn counts(http: &[SocketAddr]) -> anyhow::Result<Vec<(f64, f64)>> {
    http.iter()
        .map(|h| {
            let (status, body) = testkit::http::get(*h, "/metrics", Duration::from_secs(10))
                .map_err(|e| anyhow::anyhow!("/metrics at {h}: {e}"))?;
            if status != 200 {
                bail!("/metrics at {h}: HTTP {status}");
            }
            Ok((
                metric(&body, "ms_views_installed_total"),
                metric(&body, "ms_failures_detected_total"),
            ))
        })
        .collect()
}

/// Runs `msbench soak`.
pub fn run(args: &SoakArgs) -> anyhow::Result<()> {
    if !(args.minutes > 0.0 && args.minutes <= 24.0 * 60.0) {
        bail!(
            "--minutes {} must be above 0 and at most a day",
            args.minutes
        );
    }
    let [mserver, msctl, mcaster, mi] =
        testkit::bins::locate(["mserver", "msctl", "mcaster", "member-interface"])
            .map_err(|e| anyhow::anyhow!(e))?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let spinners = args.spinners.unwrap_or(cores).min(64);
    let dir = std::env::temp_dir().join(format!("msbench-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).context("temp dir")?;
    let say = |m: &str| {
        if args.verbose {
            eprintln!("soak: {m}");
        }
    };

    let port = testkit::ports::try_free_port().context("no free port")?;
    let mc_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut procs: Vec<Proc> = Vec::new();
    let mut cmd = mcaster_command(&mcaster, mc_addr);
    procs.push(Proc::try_spawn(
        "mcaster",
        cmd.stdout(Stdio::null())
            .stderr(testkit::procs::log_file(&dir.join("mcaster.log"))),
    )?);
    let ms_port = testkit::ports::try_free_port().context("no free port")?;
    let group_port = testkit::ports::try_free_port().context("no free port")?;
    let group_addr = SocketAddr::from(([239, 255, 72, 1], group_port));
    let addrs: Vec<SocketAddr> = (0..MSERVERS)
        .map(|i| SocketAddr::from(([127, 0, 0, 30 + i as u8], ms_port)))
        .collect();
    let mut http = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let h = SocketAddr::from((
            [127, 0, 0, 1],
            testkit::ports::try_free_port().context("no free port")?,
        ));
        http.push(h);
        let mut cmd = mserver_command(&mserver, "soak", group_addr, *a, mc_addr);
        cmd.args(["--http", &h.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(testkit::procs::log_file(
                &dir.join(format!("mserver-{i}.log")),
            ));
        procs.push(Proc::try_spawn(&format!("mserver {i}"), &mut cmd)?);
    }
    let want: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    wait_agreement(SETTLE, Duration::from_millis(200), &want, || {
        addrs
            .iter()
            .map(|a| msctl_json(&msctl, *a, "view"))
            .collect()
    })
    .map_err(|e| anyhow::anyhow!("the 5 mservers did not agree: {e}"))?;
    say("5 mservers in one view");

    let mut lines = Lines::new();
    let mut socks = Vec::new();
    for (m, attach) in addrs.iter().enumerate().take(MIS) {
        let sock = dir.join(format!("mi{m}.sock"));
        let mut cmd = Command::new(&mi);
        cmd.args(["--mserver", &attach.to_string(), "--listen", "127.0.0.1:0"])
            .arg("--socket")
            .arg(&sock)
            .args(["--host", &format!("soak{m}")])
            .stdout(Stdio::null())
            .stderr(testkit::procs::log_file(&dir.join(format!("mi{m}.log"))));
        procs.push(Proc::try_spawn(&format!("MI {m}"), &mut cmd)?);
        if !testkit::wait::until_true(SETTLE, Duration::from_millis(20), || sock.exists()) {
            bail!("MI {m} did not open its socket");
        }
        socks.push(sock);
    }
    let created = Command::new(&msctl)
        .arg("--mi")
        .arg(&socks[0])
        .args(["--timeout-ms", "10000", "create", "soakgroup"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run msctl create")?;
    if !created.status.success() {
        bail!(
            "msctl create soakgroup: {}",
            String::from_utf8_lossy(&created.stderr).trim()
        );
    }
    let mut members = Vec::new();
    for (m, sock) in socks.iter().enumerate() {
        for k in 0..MEMBERS_PER_MI {
            let name = format!("m{m}-{k}");
            let mut cmd = Command::new(&msctl);
            cmd.arg("--mi").arg(sock).args([
                "--timeout-ms",
                "10000",
                "join",
                "soakgroup",
                "--name",
                &name,
                "--json",
            ]);
            members.push(lines.try_spawn(&name, cmd)?);
        }
    }
    let total = MIS * MEMBERS_PER_MI;
    let names: Vec<String> = (0..MIS)
        .flat_map(|m| (0..MEMBERS_PER_MI).map(move |k| format!("m{m}-{k}")))
        .collect();
    let full = lines.wait(SETTLE, |l| {
        names.iter().all(|n| {
            l.json
                .get(n)
                .and_then(|v| v.last())
                .and_then(|v| v["members"].as_array())
                .is_some_and(|a| a.len() == total)
        })
    });
    if !full {
        bail!(
            "the members did not all see the group of {total}: {}",
            lines.tail(20)
        );
    }
    say("4 members in the application group");

    for i in 0..spinners {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "while :; do :; done"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        procs.push(Proc::try_spawn(&format!("spinner {i}"), &mut cmd)?);
    }
    // A moment for the spinners to take the cores, then the baseline.
    std::thread::sleep(Duration::from_secs(1));
    let base = counts(&http)?;
    let app_base: BTreeMap<String, usize> = names
        .iter()
        .map(|n| (n.clone(), lines.json.get(n).map_or(0, Vec::len)))
        .collect();
    let soak = Duration::from_secs_f64(args.minutes * 60.0);
    say(&format!("soaking {soak:?} with {spinners} spinners"));
    let started = Instant::now();
    let mut samples = 0u64;
    let mut load = Vec::new();
    while started.elapsed() < soak {
        let left = soak.saturating_sub(started.elapsed());
        let _ = lines.wait(left.min(Duration::from_secs(10)), |_| false);
        samples += 1;
        if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
            if let Some(one) = l
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            {
                load.push(one);
            }
        }
        if let Some(exited) = procs
            .iter_mut()
            .find_map(|p| p.try_exit().map(|_| p.name.clone()))
        {
            bail!("{exited} exited during the soak");
        }
    }
    let elapsed = started.elapsed();
    let end = counts(&http)?;
    let views_after: Vec<f64> = end.iter().zip(&base).map(|(e, b)| e.0 - b.0).collect();
    let detections_after: Vec<f64> = end.iter().zip(&base).map(|(e, b)| e.1 - b.1).collect();
    let app_views_after: usize = names
        .iter()
        .map(|n| lines.json.get(n).map_or(0, Vec::len) - app_base[n])
        .sum();
    let final_view = wait_agreement(
        Duration::from_secs(10),
        Duration::from_millis(200),
        &want,
        || {
            addrs
                .iter()
                .map(|a| msctl_json(&msctl, *a, "view"))
                .collect()
        },
    );
    let false_failures: f64 = views_after.iter().sum();
    let mean_load = if load.is_empty() {
        0.0
    } else {
        load.iter().sum::<f64>() / load.len() as f64
    };
    let out: Value = json!({
        "scenario": "soak",
        "minutes": elapsed.as_secs_f64() / 60.0,
        "mservers": MSERVERS,
        "member_interfaces": MIS,
        "app_members": total,
        "spinners": spinners,
        "cores": cores,
        "mean_load_1m": (mean_load * 100.0).round() / 100.0,
        "samples": samples,
        "timings": {"query_interval_ms": 200, "reply_timeout_ms": 100, "retries": 2},
        "false_failures": false_failures as u64,
        "views_installed_after_baseline": views_after,
        "failures_detected_after_baseline": detections_after,
        "app_views_after_baseline": app_views_after,
        "final_agreement": final_view.is_ok(),
        "final_view": final_view.as_ref().ok().map(|v| v["view"].clone()),
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "soak {:.1} min, {MSERVERS} mservers, {MIS} MIs with {total} members, {spinners} spinners \
             (mean load {mean_load:.2}): false failures {}, detections {:?}, application views {}, \
             final agreement {}",
            elapsed.as_secs_f64() / 60.0,
            false_failures,
            detections_after,
            app_views_after,
            final_view.is_ok()
        );
    }
    drop(members);
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
