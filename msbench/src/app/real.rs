//! `msbench app`'s real-process half: an mcaster, 3 mservers, 3 MIs and
//! `msctl join` children whose stamped views are read by threads; per
//! group size, the join and death trials (see the parent module's docs).

use super::{ms3, progress, round3, AppArgs};
use crate::membership::procs::{Binaries, Cluster};
use crate::membership::real::converge;
use crate::raw;
use crate::stats::Latencies;
use anyhow::{anyhow, bail, Context as _};
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

/// Longest wait for one trial's view at every member.
pub(super) const TRIAL_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for a size's S members to see each other.
const SETUP_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for an MI's socket to appear.
const MI_START_LIMIT: Duration = Duration::from_secs(10);
/// Longest stdout line read from a member (longer ones are cut).
const MAX_LINE: u64 = 256 * 1024;
/// Most views remembered per member process.
const MAX_VIEWS_KEPT: usize = 10_000;

/// CLOCK_REALTIME in nanoseconds since the Unix epoch (the clock msctl's
/// `--timestamps` fields use).
fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

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
pub(super) fn real_half(args: &AppArgs) -> anyhow::Result<Value> {
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
}
