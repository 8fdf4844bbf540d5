//! A harness for the real-process tests: an mcaster and mservers on
//! 127.0.0.x (a unicast-only LAN, so through the mcaster), `msctl` to read
//! their views, signals (SIGKILL, SIGSTOP, SIGCONT, SIGTERM), and
//! partitions made with the fault interceptor (`msctl fault`, DESIGN.md
//! section 4): [`Cluster::partition`], [`Cluster::block_one_way`],
//! [`Cluster::heal`].
//!
//! Every wait is bounded ([`PATIENCE`] unless said otherwise); children are
//! killed when the harness is dropped, also when a test fails; each
//! mserver's stderr goes to a file whose tail is printed on failure.

// Every test binary compiles this module on its own and uses a subset.
#![allow(dead_code)]
// Tests own the clock (bounded waits).
#![allow(clippy::disallowed_methods)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Generous bound on waits for convergence (never a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The `mserver` binary.
pub fn mserver_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mserver"))
}

/// The `msctl` binary.
pub fn msctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_msctl"))
}

/// The `mcaster` binary (another package of the workspace): next to ours,
/// built on demand when this package is tested alone.
pub fn mcaster_bin() -> PathBuf {
    let dir = mserver_bin()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = dir.join("mcaster");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "mcaster", "--bin", "mcaster"])
            .status()
            .expect("run cargo to build the mcaster");
        assert!(status.success(), "building the mcaster failed");
    }
    path
}

/// A distinct block of ports per harness (tests of one binary run in
/// parallel): ports are taken from a per-process counter starting at a
/// pid-derived offset, and checked free.
fn next_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 20_000) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..2000 {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        let p = if p >= 60_000 { 20_000 + p % 1000 } else { p };
        if UdpSocket::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port found");
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "KILL", "STOP", "CONT", "TERM").
    pub fn signal(&self, signal: &str) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", self.pid())])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Whether it has exited; its exit code if so.
    pub fn try_exit(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|s| s.code())
    }

    /// Waits (bounded) for it to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Option<i32>> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(code) = self.try_exit() {
                return Some(code);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A stopped process must be continued to die of SIGKILL promptly.
        let _ = self.child.kill();
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -CONT {} 2>/dev/null", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
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
        let mcaster_port = next_port();
        let port = next_port();
        let group_port = next_port();
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
        let child = Command::new(mcaster_bin())
            .args([
                "--listen",
                &self.mcaster_addr.to_string(),
                "--multicast",
                "off",
                "--summary-interval-secs",
                "0",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_file(&log))
            .spawn()
            .expect("start mcaster");
        self.mcaster = Some(Proc { child, log });
    }

    /// The address of mserver `i`: 127.0.0.(10 + i), the cluster's port.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 10 + i as u8], self.port))
    }

    /// Starts mserver `i` with the cluster's flags plus `extra`.
    pub fn start(&mut self, i: usize, extra: &[&str]) {
        let addr = self.addr(i);
        let log = self.dir.join(format!("mserver-{i}.log"));
        let mut args: Vec<String> = vec![
            "--group".into(),
            self.name.clone(),
            "--group-addr".into(),
            self.group_addr.to_string(),
            "--listen".into(),
            addr.to_string(),
            "--mcaster".into(),
            self.mcaster_addr.to_string(),
            "--multicast".into(),
            "off".into(),
        ];
        args.extend(self.extra.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(mserver_bin())
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file(&log))
            .spawn()
            .expect("start mserver");
        self.servers.insert(i, Proc { child, log });
        self.addrs.insert(i, addr);
    }

    /// Sends `signal` to mserver `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        self.servers.get(&i).expect("started").signal(signal);
    }

    /// Sends `signal` to several mservers with one `kill` command, so
    /// they are hit within microseconds of each other.
    pub fn signal_many(&self, ids: &[usize], signal: &str) {
        let pids: Vec<String> = ids
            .iter()
            .map(|i| self.servers.get(i).expect("started").pid().to_string())
            .collect();
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", pids.join(" "))])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pids:?}");
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
        let out = Command::new(msctl_bin())
            .args([
                "--server",
                &self.addr(i).to_string(),
                "--timeout-ms",
                "1000",
                "view",
                "--json",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
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
        let mut want: Vec<String> = members.iter().map(|i| self.addr(*i).to_string()).collect();
        want.sort();
        let views: Vec<Option<Value>> = members.iter().map(|i| self.view(*i)).collect();
        agreed(&views, &want)
    }

    /// Waits until one of the `candidates` (sets of mservers) agrees on a
    /// view of exactly itself (as [`Cluster::wait_converged`]); which one
    /// (its index) and the view. Panics (with the logs) after `limit`.
    pub fn wait_converged_any(&self, candidates: &[Vec<usize>], limit: Duration) -> (usize, Value) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            for (k, members) in candidates.iter().enumerate() {
                if let Some(v) = self.converged_now(members) {
                    return (k, v);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
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
        let want: Vec<String> = {
            let mut v: Vec<String> = members.iter().map(|i| self.addr(*i).to_string()).collect();
            v.sort();
            v
        };
        let end = Instant::now() + limit;
        let mut last: Vec<Option<Value>> = Vec::new();
        while Instant::now() < end {
            last = members.iter().map(|i| self.view(*i)).collect();
            if let Some(v) = agreed(&last, &want) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.fail(&format!(
            "no agreement on {want:?} within {limit:?}; last views: {last:#?}"
        ));
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

fn log_file(path: &Path) -> Stdio {
    std::fs::File::create(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// The addresses of a view's members, sorted.
pub fn member_addrs(view: &Value) -> Vec<String> {
    let mut v: Vec<String> = view["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["addr"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
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
/// and has exactly `want` (sorted addresses) as members: that view.
pub fn agreed(views: &[Option<Value>], want: &[String]) -> Option<Value> {
    let first = views.first()?.as_ref()?;
    for v in views {
        let v = v.as_ref()?;
        if v["state"] != "idle"
            || v["view"] != first["view"]
            || v["coordinator"] != first["coordinator"]
            || v["members"] != first["members"]
        {
            return None;
        }
    }
    (member_addrs(first) == want).then(|| first.clone())
}
