//! A harness for the real-process tests: an mcaster and mservers on
//! 127.0.0.x (a unicast-only LAN, so through the mcaster), `msctl` to read
//! their views, signals (SIGKILL, SIGSTOP, SIGCONT, SIGTERM), and
//! partitions made with the fault interceptor (`msctl fault`, DESIGN.md
//! section 4): [`Cluster::partition`], [`Cluster::block_one_way`],
//! [`Cluster::heal`].
//!
//! Every wait is bounded ([`PATIENCE`] unless said otherwise); children are
//! `testkit` processes, killed when the harness is dropped, also when a
//! test fails; each mserver's stderr goes to a file whose tail is printed
//! on failure. Binaries, ports, command lines and the agreement of `msctl`
//! views are `testkit`'s (shared with `msbench membership`).

// Every test binary compiles this module on its own and uses a subset.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::cluster::{agreement, mcaster_command, msctl_json, mserver_command, wait_agreement};
use testkit::wait;

pub use testkit::Proc;

/// Generous bound on waits for convergence (never a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(20);
/// How often the waits look again.
const POLL: Duration = Duration::from_millis(50);

/// The `mserver` binary.
pub fn mserver_bin() -> PathBuf {
    testkit::bin("mserver", "mserver")
}

/// The `msctl` binary.
pub fn msctl_bin() -> PathBuf {
    testkit::bin("mserver", "msctl")
}

/// The `mcaster` binary (another package of the workspace).
pub fn mcaster_bin() -> PathBuf {
    testkit::bin("mcaster", "mcaster")
}

/// An mcaster and a set of mservers of one group.
pub struct Cluster {
    pub name: String,
    pub dir: PathBuf,
    pub mcaster_addr: SocketAddr,
    pub group_addr: SocketAddr,
    pub mcaster: Option<Proc>,
    pub servers: BTreeMap<usize, Proc>,
    pub addrs: BTreeMap<usize, SocketAddr>,
    /// Extra flags for every mserver.
    pub extra: Vec<String>,
    port: u16,
}

impl Cluster {
    /// A cluster named `name` (used in paths and the group name), with its
    /// own mcaster on 127.0.0.1.
    pub fn new(name: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("ms-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mcaster_port = testkit::free_port();
        let port = testkit::free_port();
        let group_port = testkit::free_port();
        let mut c = Cluster {
            name: name.to_string(),
            dir,
            mcaster_addr: SocketAddr::from(([127, 0, 0, 1], mcaster_port)),
            group_addr: SocketAddr::from(([239, 255, 71, 1], group_port)),
            mcaster: None,
            servers: BTreeMap::new(),
            addrs: BTreeMap::new(),
            extra: Vec::new(),
            port,
        };
        c.start_mcaster();
        c
    }

    /// Starts (or restarts) the mcaster.
    pub fn start_mcaster(&mut self) {
        let log = self.dir.join("mcaster.log");
        let mut cmd = mcaster_command(&mcaster_bin(), self.mcaster_addr);
        self.mcaster = Some(Proc::spawn_logged("mcaster", &mut cmd, &log));
    }

    /// The address of mserver `i`: 127.0.0.(10 + i), the cluster's port.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 10 + i as u8], self.port))
    }

    /// Starts mserver `i` with the cluster's flags plus `extra`.
    pub fn start(&mut self, i: usize, extra: &[&str]) {
        let addr = self.addr(i);
        let log = self.dir.join(format!("mserver-{i}.log"));
        let mut cmd = mserver_command(
            &mserver_bin(),
            &self.name,
            self.group_addr,
            addr,
            self.mcaster_addr,
        );
        cmd.args(&self.extra).args(extra).env("RUST_LOG", "info");
        let p = Proc::spawn_logged(&format!("mserver {i}"), &mut cmd, &log);
        self.servers.insert(i, p);
        self.addrs.insert(i, addr);
    }

    /// Sends `signal` to mserver `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        self.servers.get(&i).expect("started").signal(signal);
    }

    /// Sends `signal` to several mservers with one `kill` command, so
    /// they are hit within microseconds of each other.
    pub fn signal_many(&self, ids: &[usize], signal: &str) {
        let pids: Vec<u32> = ids
            .iter()
            .map(|i| self.servers.get(i).expect("started").pid())
            .collect();
        if let Err(e) = testkit::procs::signal_all(&pids, signal) {
            panic!("{e}");
        }
    }

    /// SIGKILLs mserver `i` and forgets it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.servers.remove(&i) {
            p.signal("KILL");
            let _ = p.wait_exit(Duration::from_secs(5));
        }
    }

    /// `msctl view --json` of mserver `i` (None if it did not answer).
    pub fn view(&self, i: usize) -> Option<Value> {
        msctl_json(&msctl_bin(), self.addr(i), "view")
    }

    /// Runs msctl against mserver `i` with `args`; (exit code, stdout).
    pub fn msctl(&self, i: usize, args: &[&str]) -> (Option<i32>, String) {
        let out = Command::new(msctl_bin())
            .args(["--server", &self.addr(i).to_string()])
            .args(args)
            .output()
            .expect("run msctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Runs `msctl fault ARGS` against every mserver of `ids` at once (one
    /// msctl process each, spawned together so the faults land within
    /// milliseconds of each other), and waits for all of them. Panics
    /// (with the logs) if one is refused or does not answer.
    pub fn fault_many(&self, ids: &[usize], args_of: impl Fn(usize) -> Vec<String>) {
        let mut children = Vec::new();
        for &i in ids {
            let args = args_of(i);
            let child = Command::new(msctl_bin())
                .args(["--server", &self.addr(i).to_string(), "fault"])
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run msctl fault");
            children.push((i, args, child));
        }
        let mut errors = Vec::new();
        for (i, args, child) in children {
            match child.wait_with_output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => errors.push(format!(
                    "msctl fault {args:?} at mserver {i}: {:?} {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => errors.push(format!("msctl fault at mserver {i}: {e}")),
            }
        }
        if !errors.is_empty() {
            self.fail(&errors.join("\n"));
        }
    }

    /// Cuts all traffic between the mservers of `a` and those of `b` (a
    /// symmetric partition): every member of each side blocks every member
    /// of the other (`msctl fault --clear --block ADDR...`, which replaces
    /// any fault it had). The interceptor matches the node named in the
    /// packet header, so what the mcaster relays is cut too, while each
    /// side still hears itself through the same mcaster.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let blocks = |other: &[usize]| -> Vec<String> {
            let mut args = vec!["--clear".to_string()];
            for j in other {
                args.push("--block".into());
                args.push(self.addr(*j).to_string());
            }
            args
        };
        let everyone: Vec<usize> = a.iter().chain(b).copied().collect();
        self.fault_many(&everyone, |i| {
            if a.contains(&i) {
                blocks(b)
            } else {
                blocks(a)
            }
        });
    }

    /// Removes every fault of the mservers `ids` (`msctl fault --clear`):
    /// heals the partitions and one-way blocks they were part of.
    pub fn heal(&self, ids: &[usize]) {
        self.fault_many(ids, |_| vec!["--clear".to_string()]);
    }

    /// A one-way block: mserver `to` drops everything that arrives from
    /// mserver `from` (`msctl fault --block-in`), so `from` still hears
    /// `to` but `to` no longer hears `from`.
    pub fn block_one_way(&self, from: usize, to: usize) {
        let addr = self.addr(from).to_string();
        self.fault_many(&[to], |_| vec!["--block-in".to_string(), addr.clone()]);
    }

    /// One sample (no wait): the view every mserver in `members` agrees
    /// on, if they all answer an idle view of exactly `members` with the
    /// same view id and table.
    pub fn converged_now(&self, members: &[usize]) -> Option<Value> {
        let want: Vec<String> = members.iter().map(|i| self.addr(*i).to_string()).collect();
        let views: Vec<Option<Value>> = members.iter().map(|i| self.view(*i)).collect();
        agreed(&views, &want)
    }

    /// Waits until one of the `candidates` (sets of mservers) agrees on a
    /// view of exactly itself (as [`Cluster::wait_converged`]); which one
    /// (its index) and the view. Panics (with the logs) after `limit`.
    pub fn wait_converged_any(&self, candidates: &[Vec<usize>], limit: Duration) -> (usize, Value) {
        let found = wait::until(limit, POLL, || {
            candidates
                .iter()
                .enumerate()
                .find_map(|(k, members)| self.converged_now(members).map(|v| (k, v)))
        });
        if let Some(found) = found {
            return found;
        }
        let last: Vec<(usize, Option<Value>)> =
            self.servers.keys().map(|i| (*i, self.view(*i))).collect();
        self.fail(&format!(
            "none of {candidates:?} agreed within {limit:?}; last views: {last:#?}"
        ));
    }

    /// Waits until every mserver in `members` answers an idle view whose
    /// member addresses are exactly `members`' addresses, the same view id
    /// everywhere. Returns that view. Panics (with the logs) after `limit`.
    pub fn wait_converged(&self, members: &[usize], limit: Duration) -> Value {
        let want: Vec<String> = members.iter().map(|i| self.addr(*i).to_string()).collect();
        wait_agreement(limit, POLL, &want, || {
            members.iter().map(|i| self.view(*i)).collect()
        })
        .unwrap_or_else(|e| self.fail(&e))
    }

    /// Panics with `msg` and the tail of every log.
    pub fn fail(&self, msg: &str) -> ! {
        let mut text = format!("{msg}\n");
        for (i, p) in &self.servers {
            text.push_str(&format!(
                "--- mserver {i} ({}) ---\n{}\n",
                self.addr(*i),
                p.log_tail(40)
            ));
        }
        panic!("{text}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.servers.clear();
        self.mcaster = None;
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The incarnation `view` lists for the member at `addr`, if it is there.
pub fn incarnation_in(view: &Value, addr: &str) -> Option<String> {
    view["members"]
        .as_array()?
        .iter()
        .find(|m| m["addr"] == addr)
        .and_then(|m| m["incarnation"].as_str().map(str::to_string))
}

/// If every view is present, idle, equal in (view, coordinator, members)
/// and has exactly the addresses `want` as members: that view.
pub fn agreed(views: &[Option<Value>], want: &[String]) -> Option<Value> {
    let want: BTreeSet<String> = want.iter().cloned().collect();
    agreement(views, &want).ok()
}
