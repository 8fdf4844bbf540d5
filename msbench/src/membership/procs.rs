//! Real mserver processes for `msbench membership`: an mcaster and mservers
//! on 127.0.0.(10 + i) (`--multicast off`, so every group message goes
//! through the mcaster), each mserver's stderr (`--log-format json`) read by
//! a thread that timestamps the lines the bench cares about on arrival with
//! the bench's own clock.
//!
//! Every wait is bounded; every child is a [`testkit::Proc`], killed (and a
//! stopped one continued) when the [`Cluster`] is dropped. The binaries,
//! ports, command lines and the `msctl view` agreement come from
//! `testkit`, as the mserver tests have them.

// The benchmark owns the clock.
#![allow(clippy::disallowed_methods)]

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::cluster::{agreement, mcaster_command, msctl_command, mserver_command};
use testkit::Proc;

/// Longest stderr line kept (longer ones are cut; the rest is skipped).
const MAX_LINE: usize = 64 * 1024;
/// Log lines kept per mserver for failure reports.
const TAIL_LINES: usize = 40;

/// The three programs, found next to the msbench executable.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The `mserver` daemon.
    pub mserver: PathBuf,
    /// The `msctl` tool.
    pub msctl: PathBuf,
    /// The `mcaster` daemon.
    pub mcaster: PathBuf,
}

impl Binaries {
    /// Looks for `mserver`, `msctl` and `mcaster` in the directory of the
    /// running executable (`testkit::bins::locate`).
    pub fn locate() -> anyhow::Result<Binaries> {
        let [mserver, msctl, mcaster] =
            testkit::bins::locate(["mserver", "msctl", "mcaster"]).map_err(|e| anyhow!(e))?;
        Ok(Binaries {
            mserver,
            msctl,
            mcaster,
        })
    }
}

/// A member of the view as an "view installed" log line lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewMember {
    /// Its address.
    pub addr: SocketAddr,
    /// Its rank (new at every join, never reused).
    pub rank: u64,
}

/// What a log line said.
#[derive(Clone, Debug, PartialEq)]
pub enum LogKind {
    /// "mserver started; joining the group".
    Started,
    /// "view installed".
    ViewInstalled {
        /// The view number.
        view: u64,
        /// The coordinator's incarnation.
        coordinator: String,
        /// The members, as listed.
        members: Vec<ViewMember>,
    },
    /// "new incarnation: rejoining".
    NewIncarnation,
    /// The group excluded this mserver.
    Excluded,
    /// Any other WARN or ERROR line (its message).
    Warning(String),
}

/// One log line of interest, stamped on arrival.
#[derive(Clone, Debug)]
pub struct LogEvent {
    /// Which mserver (its index).
    pub server: usize,
    /// Which life of it (one per spawn).
    pub life: u64,
    /// When the bench read the line.
    pub at: Instant,
    /// What it said.
    pub kind: LogKind,
}

/// Parses the members field: `[127.0.0.10:7200#0 127.0.0.11:7200#1]`.
pub fn parse_members(s: &str) -> Option<Vec<ViewMember>> {
    let inner = s.trim().strip_prefix('[')?.strip_suffix(']')?;
    inner
        .split_whitespace()
        .map(|item| {
            let (addr, rank) = item.rsplit_once('#')?;
            Some(ViewMember {
                addr: addr.parse().ok()?,
                rank: rank.parse().ok()?,
            })
        })
        .collect()
}

/// Interprets one JSON log line of an mserver (`None`: of no interest or
/// not JSON).
pub fn parse_line(line: &[u8]) -> Option<LogKind> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let fields = v.get("fields")?;
    let message = fields.get("message")?.as_str()?;
    match message {
        "mserver started; joining the group" => Some(LogKind::Started),
        "view installed" => Some(LogKind::ViewInstalled {
            view: fields.get("view")?.as_u64()?,
            coordinator: fields
                .get("coordinator")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            members: parse_members(fields.get("members")?.as_str()?)?,
        }),
        "new incarnation: rejoining" => Some(LogKind::NewIncarnation),
        m if m.starts_with("the group excluded us") => Some(LogKind::Excluded),
        m => match v.get("level").and_then(Value::as_str) {
            Some("WARN") | Some("ERROR") => Some(LogKind::Warning(m.to_string())),
            _ => None,
        },
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes (the rest of a longer line
/// is skipped). `Ok(false)` at end of file.
pub(crate) fn read_bounded_line(r: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<bool> {
    out.clear();
    let mut any = false;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(any);
        }
        any = true;
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let room = MAX_LINE.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let newline = done > chunk.len();
        r.consume(done);
        if newline {
            return Ok(true);
        }
    }
}

/// Reads `stderr` until it closes, sending the lines of interest.
fn reader_thread(
    server: usize,
    life: u64,
    stderr: impl Read,
    tx: Sender<LogEvent>,
    tail: Arc<Mutex<BTreeMap<usize, VecDeque<String>>>>,
) {
    read_log_lines(server, "mserver", stderr, &tail, |line, at| {
        if let Some(kind) = parse_line(line) {
            let _ = tx.send(LogEvent {
                server,
                life,
                at,
                kind,
            });
        }
    });
}

/// Reads mserver `server`'s `stderr` line by line (bounded, see
/// [`read_bounded_line`]) until it closes: each line goes to `on_line`
/// with its arrival time, and into `tail` (the last [`TAIL_LINES`]).
/// With `MSBENCH_LOG_DIR` set, every line is also appended to
/// `<dir>/<prefix>-<server>.log` for debugging a run.
pub(crate) fn read_log_lines(
    server: usize,
    prefix: &str,
    stderr: impl Read,
    tail: &Mutex<BTreeMap<usize, VecDeque<String>>>,
    mut on_line: impl FnMut(&[u8], Instant),
) {
    let mut r = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut keep = std::env::var_os("MSBENCH_LOG_DIR").and_then(|dir| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::path::Path::new(&dir).join(format!("{prefix}-{server}.log")))
            .ok()
    });
    while let Ok(true) = read_bounded_line(&mut r, &mut line) {
        let at = Instant::now();
        if let Some(f) = keep.as_mut() {
            use std::io::Write as _;
            let _ = f.write_all(&line).and_then(|()| f.write_all(b"\n"));
        }
        on_line(&line, at);
        if let Ok(mut t) = tail.lock() {
            let q = t.entry(server).or_default();
            if q.len() >= TAIL_LINES {
                q.pop_front();
            }
            q.push_back(String::from_utf8_lossy(&line).into_owned());
        }
    }
}

/// One running (or stopped) mserver process.
pub struct Server {
    child: Proc,
    /// Which life this is.
    pub life: u64,
    /// When its "mserver started" line arrived.
    pub started: Option<Instant>,
    /// Whether it is stopped (SIGSTOP).
    pub stopped: bool,
}

/// The latest view an mserver (in its current life) logged.
#[derive(Clone, Debug)]
pub struct Installed {
    /// View number.
    pub view: u64,
    /// Coordinator incarnation.
    pub coordinator: String,
    /// Members.
    pub members: Vec<ViewMember>,
    /// When the line arrived.
    pub at: Instant,
}

impl Installed {
    /// The member addresses, as a set.
    pub fn addrs(&self) -> BTreeSet<SocketAddr> {
        self.members.iter().map(|m| m.addr).collect()
    }
}

/// An mcaster and mservers of one group on loopback.
pub struct Cluster {
    bins: Binaries,
    group: String,
    group_addr: SocketAddr,
    mcaster_addr: SocketAddr,
    port: u16,
    mcaster: Option<Proc>,
    servers: BTreeMap<usize, Server>,
    next_life: u64,
    tx: Sender<LogEvent>,
    rx: Receiver<LogEvent>,
    tail: Arc<Mutex<BTreeMap<usize, VecDeque<String>>>>,
    /// Latest view per mserver (current life only).
    pub latest: BTreeMap<usize, Installed>,
    /// Every event since the last [`Cluster::mark`].
    pub log: Vec<LogEvent>,
    /// Warnings and errors seen, by message (whole run).
    pub warnings: BTreeMap<String, u64>,
    /// Extra flags of every daemon and msctl (e.g. `--key-file PATH`).
    key_args: Vec<String>,
}

/// A free port on 127.0.0.1 for UDP and TCP (never the same twice).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    testkit::ports::try_free_port().ok_or_else(|| anyhow!("no free port found on 127.0.0.1"))
}

impl Cluster {
    /// A new cluster with its own mcaster; no mserver yet. `tag` makes the
    /// group name and ports distinct between runs.
    pub fn new(bins: &Binaries, tag: u16) -> anyhow::Result<Cluster> {
        Cluster::with_key_args(bins, tag, Vec::new())
    }

    /// [`Cluster::new`] with `key_args` (e.g. `--key-file PATH`) given to
    /// the mcaster, every mserver and every msctl.
    pub fn with_key_args(
        bins: &Binaries,
        tag: u16,
        key_args: Vec<String>,
    ) -> anyhow::Result<Cluster> {
        let mcaster_port = free_port()?;
        let port = free_port()?;
        let group_port = free_port()?;
        let (tx, rx) = channel();
        let mut c = Cluster {
            bins: bins.clone(),
            group: format!("msbench-{tag}"),
            group_addr: SocketAddr::from(([239, 255, 72, 1], group_port)),
            mcaster_addr: SocketAddr::from(([127, 0, 0, 1], mcaster_port)),
            port,
            mcaster: None,
            servers: BTreeMap::new(),
            next_life: 0,
            tx,
            rx,
            tail: Arc::new(Mutex::new(BTreeMap::new())),
            latest: BTreeMap::new(),
            log: Vec::new(),
            warnings: BTreeMap::new(),
            key_args,
        };
        let mut cmd = mcaster_command(&c.bins.mcaster, c.mcaster_addr);
        cmd.args(&c.key_args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        c.mcaster = Some(Proc::try_spawn("mcaster", &mut cmd).context("cannot start the mcaster")?);
        Ok(c)
    }

    /// The address of mserver `i`: 127.0.0.(10 + i), the cluster's port.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 10u8.saturating_add(i as u8)], self.port))
    }

    /// The indexes of the mservers that have a process (running or stopped).
    pub fn indexes(&self) -> Vec<usize> {
        self.servers.keys().copied().collect()
    }

    /// Mserver `i`, if it has a process.
    pub fn server(&self, i: usize) -> Option<&Server> {
        self.servers.get(&i)
    }

    /// Starts mserver `i` (a new life). Returns the spawn time.
    pub fn start(&mut self, i: usize) -> anyhow::Result<Instant> {
        if self.servers.contains_key(&i) {
            bail!("mserver {i} is already running");
        }
        let addr = self.addr(i);
        let life = self.next_life;
        self.next_life += 1;
        let spawned = Instant::now();
        let mut cmd = mserver_command(
            &self.bins.mserver,
            &self.group,
            self.group_addr,
            addr,
            self.mcaster_addr,
        );
        cmd.args(&self.key_args);
        cmd.args(["--log-format", "json", "--log-level"])
            .arg(std::env::var("MSBENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into()))
            .env_remove("RUST_LOG")
            .env_remove("MS_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = Proc::try_spawn(&format!("mserver {i}"), &mut cmd)
            .with_context(|| format!("cannot start mserver {i}"))?;
        let stderr = child
            .child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe for mserver {i}"))?;
        let tx = self.tx.clone();
        let tail = self.tail.clone();
        std::thread::spawn(move || reader_thread(i, life, stderr, tx, tail));
        self.latest.remove(&i);
        self.servers.insert(
            i,
            Server {
                child,
                life,
                started: None,
                stopped: false,
            },
        );
        Ok(spawned)
    }

    /// SIGKILLs mserver `i` and reaps it. Returns the instant just before
    /// the signal.
    pub fn kill(&mut self, i: usize) -> Option<Instant> {
        let mut s = self.servers.remove(&i)?;
        self.latest.remove(&i);
        let t0 = Instant::now();
        s.child.kill();
        Some(t0)
    }

    /// Sends SIGTERM (graceful leave) to mserver `i`; returns the instant
    /// just before.
    pub fn terminate(&mut self, i: usize) -> anyhow::Result<Instant> {
        let s = self
            .servers
            .get(&i)
            .ok_or_else(|| anyhow!("mserver {i} is not running"))?;
        let t0 = Instant::now();
        s.child.try_signal("TERM").map_err(|e| anyhow!(e))?;
        Ok(t0)
    }

    /// Waits (bounded) for mserver `i` to exit after a SIGTERM, and forgets
    /// it; SIGKILLs it if it does not exit in time.
    pub fn reap(&mut self, i: usize, limit: Duration) -> anyhow::Result<()> {
        let exited = self
            .servers
            .get_mut(&i)
            .is_some_and(|s| s.child.wait_exit(limit).is_some());
        self.kill(i);
        if !exited {
            bail!("mserver {i} did not exit within {limit:?} of SIGTERM");
        }
        Ok(())
    }

    /// SIGSTOPs (`stop`) or SIGCONTs mserver `i`; returns the instant just
    /// before spawning kill(1).
    pub fn stop_cont(&mut self, i: usize, stop: bool) -> anyhow::Result<Instant> {
        let s = self
            .servers
            .get_mut(&i)
            .ok_or_else(|| anyhow!("mserver {i} is not running"))?;
        let t0 = Instant::now();
        s.child
            .try_signal(if stop { "STOP" } else { "CONT" })
            .map_err(|e| anyhow!(e))?;
        s.stopped = stop;
        Ok(t0)
    }

    /// Forgets the event log (the next waits look at what comes after).
    pub fn mark(&mut self) {
        self.log.clear();
    }

    /// Takes every event that has arrived (waiting at most `wait` for the
    /// first one).
    fn pump(&mut self, wait: Duration) {
        let mut first = true;
        loop {
            let ev = if first {
                first = false;
                match self.rx.recv_timeout(wait) {
                    Ok(e) => e,
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match self.rx.try_recv() {
                    Ok(e) => e,
                    Err(_) => return,
                }
            };
            self.apply(ev);
        }
    }

    fn apply(&mut self, ev: LogEvent) {
        let current = self
            .servers
            .get(&ev.server)
            .is_some_and(|s| s.life == ev.life);
        if !current {
            return; // a line of a life that has been killed since
        }
        match &ev.kind {
            LogKind::Started => {
                if let Some(s) = self.servers.get_mut(&ev.server) {
                    s.started.get_or_insert(ev.at);
                }
            }
            LogKind::ViewInstalled {
                view,
                coordinator,
                members,
            } => {
                self.latest.insert(
                    ev.server,
                    Installed {
                        view: *view,
                        coordinator: coordinator.clone(),
                        members: members.clone(),
                        at: ev.at,
                    },
                );
            }
            LogKind::Warning(m) => {
                if self.warnings.len() < 100 || self.warnings.contains_key(m) {
                    *self.warnings.entry(m.clone()).or_default() += 1;
                }
            }
            LogKind::NewIncarnation | LogKind::Excluded => {}
        }
        if self.log.len() < 100_000 {
            self.log.push(ev);
        }
    }

    /// Processes log lines until `cond` gives a value or `limit` passes.
    pub fn wait_for<T>(
        &mut self,
        limit: Duration,
        cond: impl FnMut(&Cluster) -> Option<T>,
    ) -> Option<T> {
        testkit::wait::pumping(self, limit, Duration::from_millis(20), cond, |s, d| {
            s.pump(d)
        })
    }

    /// Lets `d` pass while processing log lines.
    pub fn idle(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.pump((end - Instant::now()).min(Duration::from_millis(20)));
        }
    }

    /// The latest arrival, over `servers`, of the first view since the
    /// mark whose members satisfy `p`; `None` until every one has one.
    pub fn all_installed(
        &self,
        servers: &[usize],
        p: impl Fn(&[ViewMember]) -> bool,
    ) -> Option<Instant> {
        let mut last: Option<Instant> = None;
        for &i in servers {
            let life = self.servers.get(&i)?.life;
            let at = self.log.iter().find_map(|e| match &e.kind {
                LogKind::ViewInstalled { members, .. }
                    if e.server == i && e.life == life && p(members) =>
                {
                    Some(e.at)
                }
                _ => None,
            })?;
            last = Some(last.map_or(at, |l| l.max(at)));
        }
        last
    }

    /// If every mserver with a process has logged the same latest view
    /// (number and coordinator) and its members are exactly their
    /// addresses: the latest arrival of that view's line.
    pub fn converged(&self) -> Option<Instant> {
        let want: BTreeSet<SocketAddr> = self.servers.keys().map(|i| self.addr(*i)).collect();
        let mut first: Option<&Installed> = None;
        let mut last: Option<Instant> = None;
        for i in self.servers.keys() {
            let v = self.latest.get(i)?;
            if let Some(f) = first {
                if f.view != v.view || f.coordinator != v.coordinator {
                    return None;
                }
            }
            if v.addrs() != want {
                return None;
            }
            first = Some(v);
            last = Some(last.map_or(v.at, |l: Instant| l.max(v.at)));
        }
        last
    }

    /// `msctl view --json` of mserver `i`.
    pub fn msctl_view(&self, i: usize) -> Option<Value> {
        testkit::cluster::json_output(&mut self.msctl_command(i, &["view", "--json"]))
    }

    /// `msctl stats --json` of mserver `i`.
    pub fn msctl_stats(&self, i: usize) -> Option<Value> {
        testkit::cluster::json_output(&mut self.msctl_command(i, &["stats", "--json"]))
    }

    /// A `msctl --server <mserver i> --timeout-ms 1000 ARGS` command, not
    /// yet run (stdin closed, output piped), so that callers can run
    /// several at once.
    pub fn msctl_command(&self, i: usize, args: &[&str]) -> Command {
        let mut cmd = msctl_command(&self.bins.msctl, self.addr(i), &[]);
        cmd.args(&self.key_args).args(args);
        cmd
    }

    /// Checks with msctl that every mserver is idle in the same view with
    /// exactly the expected members (retried for up to `limit`).
    pub fn verify_with_msctl(&self, limit: Duration) -> anyhow::Result<()> {
        let want: BTreeSet<String> = self
            .servers
            .keys()
            .map(|i| self.addr(*i).to_string())
            .collect();
        let mut last = String::new();
        let agreed = testkit::wait::until(limit, Duration::from_millis(50), || {
            let views: Vec<Option<Value>> =
                self.servers.keys().map(|i| self.msctl_view(*i)).collect();
            agreement(&views, &want).map_err(|e| last = e).ok()
        });
        if agreed.is_none() {
            bail!("msctl views do not agree: {last}")
        }
        Ok(())
    }

    /// The last log lines of every mserver, for failure reports.
    pub fn tails(&self, lines: usize) -> BTreeMap<usize, Vec<String>> {
        let t = match self.tail.lock() {
            Ok(t) => t.clone(),
            Err(_) => return BTreeMap::new(),
        };
        t.into_iter()
            .map(|(i, q)| {
                let v: Vec<String> = q.iter().rev().take(lines).rev().cloned().collect();
                (i, v)
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let idx: Vec<usize> = self.servers.keys().copied().collect();
        for i in idx {
            self.kill(i);
        }
        self.mcaster = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_view_lines() {
        let line = br#"{"timestamp":"x","level":"INFO","fields":{"message":"view installed","view":5,"coordinator":"abc","members":"[127.0.0.10:7200#0 127.0.0.11:7200#3]","joined":"[]","failed":"[]","left":"[]","took_ms":1.5},"target":"mserver"}"#;
        match parse_line(line) {
            Some(LogKind::ViewInstalled { view, members, .. }) => {
                assert_eq!(view, 5);
                assert_eq!(members.len(), 2);
                assert_eq!(members[1].rank, 3);
                assert_eq!(members[1].addr, "127.0.0.11:7200".parse().expect("addr"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_members("[]"), Some(vec![]));
        assert_eq!(parse_members("[x#1]"), None);
        assert_eq!(parse_line(b"not json"), None);
        let warn = br#"{"level":"WARN","fields":{"message":"something odd"}}"#;
        assert_eq!(
            parse_line(warn),
            Some(LogKind::Warning("something odd".into()))
        );
    }

    #[test]
    fn missing_binaries_fail_with_the_build_command() {
        // Test executables live in target/<profile>/deps, where the daemons
        // are never placed.
        match Binaries::locate() {
            Ok(b) => panic!("found {b:?} next to the test executable"),
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(msg.contains("mserver"), "{msg}");
                assert!(msg.contains("cargo build --release --workspace"), "{msg}");
                assert_eq!(msg.lines().count(), 1, "{msg}");
            }
        }
    }

    #[test]
    fn bounded_lines() {
        let mut data = vec![b'a'; MAX_LINE + 10];
        data.extend_from_slice(b"\nshort\n");
        let mut r = BufReader::with_capacity(1000, &data[..]);
        let mut line = Vec::new();
        assert!(read_bounded_line(&mut r, &mut line).expect("read"));
        assert_eq!(line.len(), MAX_LINE);
        assert!(read_bounded_line(&mut r, &mut line).expect("read"));
        assert_eq!(line, b"short");
        assert!(!read_bounded_line(&mut r, &mut line).expect("read"));
    }
}
