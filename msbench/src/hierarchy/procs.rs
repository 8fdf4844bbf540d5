//! Real mserver processes in a two-level tree for `msbench hierarchy`: an
//! mcaster and eight mservers on 127.0.0.(10 + i) in three child sets of
//! 3, 3 and 2 (`set-0`, `set-1`, `set-2`), each started with `--parent
//! top@...`, as `mserver/tests/tree.rs` builds it. Each mserver's stderr
//! (`--log-format json`) is read by a thread that stamps the lines the
//! bench cares about on arrival with the bench's own clock (as `msbench
//! membership` does); `msctl tree --json` on every mserver says when the
//! tree is whole.
//!
//! Every wait is bounded; every child is a [`testkit::Proc`], killed (and
//! a stopped one continued) when the [`Tree`] is dropped.

// The benchmark owns the clock.
#![allow(clippy::disallowed_methods)]

use crate::membership::procs::{free_port, parse_members, read_log_lines, Binaries, ViewMember};
use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::cluster::{agreement, mcaster_command, msctl_command, mserver_command};
use testkit::Proc;

/// The three child sets: their mservers (indices).
pub const SETS: [&[usize]; 3] = [&[0, 1, 2], &[3, 4, 5], &[6, 7]];
/// Mservers in the tree.
pub const SERVERS: usize = 8;
/// The top group's name.
pub const TOP: &str = "top";

/// The child set of mserver `i`.
pub fn set_of(i: usize) -> usize {
    SETS.iter().position(|s| s.contains(&i)).unwrap_or(0)
}

/// The name of child set `k`.
pub fn set_name(k: usize) -> String {
    format!("set-{k}")
}

/// What a log line said.
#[derive(Clone, Debug, PartialEq)]
pub enum LogKind {
    /// "view installed" of one level's group.
    ViewInstalled {
        /// The group's name.
        group: String,
        /// Its level.
        level: u64,
        /// The view number.
        view: u64,
        /// The members, as listed.
        members: Vec<ViewMember>,
    },
    /// "became a parent of our level-N group".
    Parent {
        /// The child set's level.
        level: u64,
    },
    /// "stepped down as a parent of our level-N group".
    SteppedDown,
    /// "standby: staying at level N".
    Standby,
    /// "new incarnation: rejoining".
    NewIncarnation,
    /// The group of some level excluded this mserver.
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

/// Interprets one JSON log line of an mserver (`None`: of no interest or
/// not JSON).
pub fn parse_line(line: &[u8]) -> Option<LogKind> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let fields = v.get("fields")?;
    let message = fields.get("message")?.as_str()?;
    match message {
        "view installed" => Some(LogKind::ViewInstalled {
            group: fields.get("group")?.as_str()?.to_string(),
            level: fields.get("level").and_then(Value::as_u64).unwrap_or(1),
            view: fields.get("view")?.as_u64()?,
            members: parse_members(fields.get("members")?.as_str()?)?,
        }),
        "new incarnation: rejoining" => Some(LogKind::NewIncarnation),
        m if m.starts_with("became a parent of our level-") => Some(LogKind::Parent {
            level: fields.get("level").and_then(Value::as_u64).unwrap_or(1),
        }),
        m if m.starts_with("stepped down as a parent") => Some(LogKind::SteppedDown),
        m if m.starts_with("standby:") => Some(LogKind::Standby),
        m if m.starts_with("the group excluded us") => Some(LogKind::Excluded),
        m => match v.get("level").and_then(Value::as_str) {
            Some("WARN") | Some("ERROR") => Some(LogKind::Warning(m.to_string())),
            _ => None,
        },
    }
}

type Tails = Arc<Mutex<BTreeMap<usize, VecDeque<String>>>>;

/// Reads `stderr` until it closes, sending the lines of interest.
fn reader_thread(server: usize, life: u64, stderr: impl Read, tx: Sender<LogEvent>, tail: Tails) {
    read_log_lines(server, "hier-mserver", stderr, &tail, |line, at| {
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

/// One running (or stopped) mserver process.
pub struct Server {
    child: Proc,
    /// Which life this is.
    pub life: u64,
    /// Whether it is stopped (SIGSTOP).
    pub stopped: bool,
}

/// The tree: an mcaster and up to [`SERVERS`] mservers.
pub struct Tree {
    bins: Binaries,
    port: u16,
    mcaster_addr: SocketAddr,
    set_addrs: Vec<SocketAddr>,
    top: String,
    _mcaster: Proc,
    servers: BTreeMap<usize, Server>,
    next_life: u64,
    tx: Sender<LogEvent>,
    rx: Receiver<LogEvent>,
    tail: Tails,
    /// Every event since the last [`Tree::mark`] (current lives only).
    pub log: Vec<LogEvent>,
    /// Warnings and errors seen, by message (whole run).
    pub warnings: BTreeMap<String, u64>,
    /// The latest view of each (mserver, group) in the mserver's current
    /// life, kept across marks: (view number, member addresses, arrival).
    pub latest: BTreeMap<(usize, String), Held>,
}

/// A view an mserver holds, as its log said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The view number.
    pub view: u64,
    /// Its members' addresses.
    pub members: BTreeSet<SocketAddr>,
    /// When its line arrived.
    pub at: Instant,
}

/// What `msctl tree --json` on every mserver says when the tree is whole:
/// each child set's parent (mserver index by set).
pub type Parents = BTreeMap<usize, usize>;

impl Tree {
    /// A new tree with its own mcaster; no mserver yet.
    pub fn new(bins: &Binaries) -> anyhow::Result<Tree> {
        let mcaster_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let port = free_port()?;
        let base = free_port()?;
        let set_addrs = (0..SETS.len())
            .map(|k| SocketAddr::from(([239, 255, 73, 1 + k as u8], base)))
            .collect();
        let top = format!("{TOP}@239.255.73.100:{base}");
        let mut cmd = mcaster_command(&bins.mcaster, mcaster_addr);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mcaster = Proc::try_spawn("mcaster", &mut cmd).context("cannot start the mcaster")?;
        let (tx, rx) = channel();
        Ok(Tree {
            bins: bins.clone(),
            port,
            mcaster_addr,
            set_addrs,
            top,
            _mcaster: mcaster,
            servers: BTreeMap::new(),
            next_life: 0,
            tx,
            rx,
            tail: Arc::new(Mutex::new(BTreeMap::new())),
            log: Vec::new(),
            warnings: BTreeMap::new(),
            latest: BTreeMap::new(),
        })
    }

    /// The address of mserver `i`: 127.0.0.(10 + i), the tree's port.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 10u8.saturating_add(i as u8)], self.port))
    }

    /// The mserver listening on `a`, if one of ours.
    pub fn index_of(&self, a: SocketAddr) -> Option<usize> {
        (0..SERVERS).find(|i| self.addr(*i) == a)
    }

    /// The indexes of the mservers that have a process.
    pub fn indexes(&self) -> Vec<usize> {
        self.servers.keys().copied().collect()
    }

    /// Mserver `i`, if it has a process.
    pub fn server(&self, i: usize) -> Option<&Server> {
        self.servers.get(&i)
    }

    /// Starts mserver `i` (a new life) in its child set with `--parent
    /// top@...`.
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        if self.servers.contains_key(&i) {
            bail!("mserver {i} is already running");
        }
        let k = set_of(i);
        let life = self.next_life;
        self.next_life += 1;
        let mut cmd = mserver_command(
            &self.bins.mserver,
            &set_name(k),
            self.set_addrs[k],
            self.addr(i),
            self.mcaster_addr,
        );
        cmd.args(["--parent", &self.top])
            .args(["--log-format", "json", "--log-level"])
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
        self.servers.insert(
            i,
            Server {
                child,
                life,
                stopped: false,
            },
        );
        Ok(())
    }

    /// SIGKILLs mserver `i` and reaps it. Returns the instant just before
    /// the signal.
    pub fn kill(&mut self, i: usize) -> Option<Instant> {
        let mut s = self.servers.remove(&i)?;
        self.latest.retain(|(j, _), _| *j != i);
        let t0 = Instant::now();
        s.child.kill();
        Some(t0)
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
            let current = self
                .servers
                .get(&ev.server)
                .is_some_and(|s| s.life == ev.life);
            if !current {
                continue; // a line of a life that has been killed since
            }
            match &ev.kind {
                LogKind::Warning(m)
                    if self.warnings.len() < 100 || self.warnings.contains_key(m) =>
                {
                    *self.warnings.entry(m.clone()).or_default() += 1;
                }
                LogKind::ViewInstalled {
                    group,
                    view,
                    members,
                    ..
                } => {
                    self.latest.insert(
                        (ev.server, group.clone()),
                        Held {
                            view: *view,
                            members: members.iter().map(|m| m.addr).collect(),
                            at: ev.at,
                        },
                    );
                }
                _ => {}
            }
            if self.log.len() < 100_000 {
                self.log.push(ev);
            }
        }
    }

    /// Processes log lines until `cond` gives a value or `limit` passes.
    pub fn wait_for<T>(
        &mut self,
        limit: Duration,
        cond: impl FnMut(&Tree) -> Option<T>,
    ) -> Option<T> {
        testkit::wait::pumping(self, limit, Duration::from_millis(10), cond, |s, d| {
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

    /// The arrival of mserver `i`'s first view of `group` since the mark
    /// whose members satisfy `p` (its current life).
    pub fn first_view(
        &self,
        i: usize,
        group: &str,
        p: impl Fn(&[ViewMember]) -> bool,
    ) -> Option<Instant> {
        let life = self.servers.get(&i)?.life;
        self.log.iter().find_map(|e| match &e.kind {
            LogKind::ViewInstalled {
                group: g, members, ..
            } if e.server == i && e.life == life && g == group && p(members) => Some(e.at),
            _ => None,
        })
    }

    /// The latest arrival, over `servers`, of the first view of `group`
    /// since the mark whose members satisfy `p`; `None` until every one
    /// has one.
    pub fn all_first(
        &self,
        servers: &[usize],
        group: &str,
        p: impl Fn(&[ViewMember]) -> bool,
    ) -> Option<Instant> {
        let mut last: Option<Instant> = None;
        for &i in servers {
            let at = self.first_view(i, group, &p)?;
            last = Some(last.map_or(at, |l| l.max(at)));
        }
        last
    }

    /// If each group of `groups` (name, its members) is held by each of
    /// its members in one view of exactly those members: the latest
    /// arrival of those views' lines.
    pub fn agreed(&self, groups: &[(String, Vec<usize>)]) -> Option<Instant> {
        let mut last: Option<Instant> = None;
        for (g, members) in groups {
            let want: BTreeSet<SocketAddr> = members.iter().map(|i| self.addr(*i)).collect();
            let mut number = None;
            for i in members {
                let h = self.latest.get(&(*i, g.clone()))?;
                if h.members != want || number.is_some_and(|n| n != h.view) {
                    return None;
                }
                number = Some(h.view);
                last = Some(last.map_or(h.at, |l| l.max(h.at)));
            }
        }
        last
    }

    /// A `msctl --server <mserver i> --timeout-ms 1000 ARGS` command, not
    /// yet run.
    pub fn msctl_command(&self, i: usize, args: &[&str]) -> Command {
        msctl_command(&self.bins.msctl, self.addr(i), args)
    }

    /// `msctl tree --json` of mserver `i`.
    pub fn msctl_tree(&self, i: usize) -> Option<Value> {
        testkit::cluster::json_output(&mut self.msctl_command(i, &["tree", "--json"]))
    }

    /// `msctl stats --json` of mserver `i`.
    pub fn msctl_stats(&self, i: usize) -> Option<Value> {
        testkit::cluster::json_output(&mut self.msctl_command(i, &["stats", "--json"]))
    }

    /// `msctl tree --json` of every mserver with a process, asked at once.
    fn trees(&self) -> BTreeMap<usize, Option<Value>> {
        let children: Vec<(usize, Option<std::process::Child>)> = self
            .servers
            .keys()
            .map(|i| (*i, self.msctl_command(*i, &["tree", "--json"]).spawn().ok()))
            .collect();
        children
            .into_iter()
            .map(|(i, c)| {
                let v = c
                    .and_then(|c| c.wait_with_output().ok())
                    .filter(|o| o.status.success())
                    .and_then(|o| serde_json::from_slice(&o.stdout).ok());
                (i, v)
            })
            .collect()
    }

    /// Whether the tree of the running mservers is whole now (the check of
    /// `mserver/tests/tree.rs`): every child set (its running members) one
    /// idle level-1 view of exactly them with exactly one parent; the
    /// parents' level-2 views one idle view of exactly the parents, each
    /// row naming its child set; nobody else above level 1. `Err` says
    /// what is not yet so.
    pub fn whole(&self) -> Result<Parents, String> {
        let trees = self.trees();
        let tree = |i: usize| trees.get(&i).cloned().flatten();
        let mut parents = Parents::new();
        for (k, set) in SETS.iter().enumerate() {
            let running: Vec<usize> = set
                .iter()
                .copied()
                .filter(|i| self.servers.contains_key(i))
                .collect();
            let want: BTreeSet<String> =
                running.iter().map(|i| self.addr(*i).to_string()).collect();
            let views: Vec<Option<Value>> = running
                .iter()
                .map(|i| tree(*i).map(|t| t["levels"][0].clone()))
                .collect();
            let view =
                agreement(&views, &want).map_err(|e| format!("{} level 1: {e}", set_name(k)))?;
            let flagged: Vec<String> = view["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["parent"] == true)
                .filter_map(|m| m["addr"].as_str().map(str::to_string))
                .collect();
            let [parent] = flagged.as_slice() else {
                return Err(format!("{} has parents {flagged:?}", set_name(k)));
            };
            let p = running
                .iter()
                .copied()
                .find(|i| self.addr(*i).to_string() == *parent)
                .ok_or(format!("{}'s parent {parent} is not running", set_name(k)))?;
            parents.insert(k, p);
        }
        let want: BTreeSet<String> = parents
            .values()
            .map(|i| self.addr(*i).to_string())
            .collect();
        let views: Vec<Option<Value>> = parents
            .values()
            .map(|i| tree(*i).map(|t| t["levels"][1].clone()))
            .collect();
        let top = agreement(&views, &want).map_err(|e| format!("top: {e}"))?;
        if top["level"] != 2 || top["group"] != TOP || !top["parent_group"].is_null() {
            return Err(format!("top group's view: {top}"));
        }
        for (k, i) in &parents {
            let row = top["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["addr"] == self.addr(*i).to_string())
                .cloned()
                .unwrap_or_default();
            if row["child_group"] != set_name(*k) {
                return Err(format!("top row of mserver {i}: {row}"));
            }
        }
        for i in self.servers.keys() {
            let Some(t) = tree(*i) else {
                return Err(format!("mserver {i} did not answer msctl tree"));
            };
            let levels = t["levels"].as_array().map_or(0, Vec::len);
            let expect = if parents.values().any(|p| p == i) {
                2
            } else {
                1
            };
            if levels != expect {
                return Err(format!("mserver {i} is in {levels} levels, not {expect}"));
            }
            if t["levels"][0]["parent_group"]["name"] != TOP {
                return Err(format!(
                    "mserver {i}'s set records {}",
                    t["levels"][0]["parent_group"]
                ));
            }
            if !t["task"].is_null() {
                return Err(format!("mserver {i} has a task: {}", t["task"]));
            }
        }
        Ok(parents)
    }

    /// Waits (up to `limit`, polling every `every` while processing log
    /// lines) until the tree is whole: its parents and when the check
    /// passed, or the last reason it was not.
    pub fn wait_whole(
        &mut self,
        limit: Duration,
        every: Duration,
    ) -> Result<(Parents, Instant), String> {
        let end = Instant::now() + limit;
        let mut last;
        loop {
            match self.whole() {
                Ok(p) => return Ok((p, Instant::now())),
                Err(e) => last = e,
            }
            if Instant::now() >= end {
                return Err(last);
            }
            self.idle(every);
        }
    }

    /// Runs `msctl ARGS(i)` against every mserver of `ids` at once and
    /// waits for all of them; how long that took.
    pub fn msctl_all(
        &self,
        ids: &[usize],
        args_of: impl Fn(usize) -> Vec<String>,
    ) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let mut children = Vec::new();
        for &i in ids {
            let args = args_of(i);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let child = self
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
            bail!("msctl failed: {}", errors.join("; "));
        }
        Ok(t0.elapsed())
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

impl Drop for Tree {
    fn drop(&mut self) {
        for i in self.indexes() {
            self.kill(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_level_views_and_tree_events() {
        let line = br#"{"timestamp":"x","level":"INFO","fields":{"message":"view installed","group":"top","level":2,"view":5,"coordinator":"abc","members":"[127.0.0.10:7200#0 127.0.0.13:7200#3]","joined":"[]","failed":"[]","left":"[]","took_ms":1.5},"target":"mserver"}"#;
        match parse_line(line) {
            Some(LogKind::ViewInstalled {
                group,
                level,
                view,
                members,
            }) => {
                assert_eq!((group.as_str(), level, view), ("top", 2, 5));
                assert_eq!(members.len(), 2);
                assert_eq!(members[1].rank, 3);
            }
            other => panic!("{other:?}"),
        }
        let parent = br#"{"level":"INFO","fields":{"message":"became a parent of our level-1 group, a member of top","level":1,"parent_group":"top@239.255.73.100:1"}}"#;
        assert_eq!(parse_line(parent), Some(LogKind::Parent { level: 1 }));
        let warn = br#"{"level":"WARN","fields":{"message":"something odd"}}"#;
        assert_eq!(
            parse_line(warn),
            Some(LogKind::Warning("something odd".into()))
        );
        assert_eq!(parse_line(b"not json"), None);
        assert_eq!(set_of(7), 2);
        assert_eq!(set_of(3), 1);
    }
}
