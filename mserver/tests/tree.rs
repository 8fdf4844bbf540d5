//! The hierarchy with real processes (issue 15; `docs/hierarchy.md`):
//! one mcaster and eight mservers on 127.0.0.(10+i), in three child sets
//! of 3, 3 and 2 mservers, each mserver started with `--parent top@...`.
//! One member of each child set becomes its parent, and the three parents
//! form the top group (level 2). `msctl tree --json` must agree
//! everywhere: every child set one view with exactly one parent, the
//! parents' level-2 views one view of exactly the three parents, each
//! naming its child set.
//!
//! Then the faults of the issue, each followed by the same check:
//! SIGKILL of a parent (its child set and the top group both reform and
//! the child set re-parents), SIGSTOP of a parent for longer than its
//! detection and SIGCONT (it is excluded at both levels, comes back a
//! plain member or a parent, and the tree is whole again), and a child
//! set cut from every other mserver with the fault interceptor and
//! healed.
//!
//! Every wait is bounded ([`TREE_PATIENCE`]); processes are killed when
//! the test ends, also when it fails (the logs' tails are printed).

#![allow(clippy::disallowed_methods)] // tests own the clock (bounded waits)

mod common;

use common::{mcaster_bin, msctl_bin, mserver_bin, Proc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use testkit::cluster::{json_output, mcaster_command, msctl_command, mserver_command};

/// The `msctl events` entry a top member shows for a parent's crash.
const DETECTION: &str = "failure_detected";

/// Bound on every wait for the tree to be whole again.
const TREE_PATIENCE: Duration = Duration::from_secs(40);

/// The three child sets: their mservers (indices).
const SETS: [&[usize]; 3] = [&[0, 1, 2], &[3, 4, 5], &[6, 7]];

/// An mcaster, eight mservers in three child sets, one top group.
struct Tree {
    dir: PathBuf,
    port: u16,
    mcaster: SocketAddr,
    top: String,
    set_addrs: Vec<SocketAddr>,
    servers: BTreeMap<usize, Proc>,
    _mcaster: Proc,
}

impl Tree {
    fn new(name: &str) -> Tree {
        let dir = std::env::temp_dir().join(format!("ms-tree-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mcaster = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
        let mut cmd = mcaster_command(&mcaster_bin(), mcaster);
        let mcaster_proc = Proc::spawn_logged("mcaster", &mut cmd, &dir.join("mcaster.log"));
        let base = testkit::free_port();
        let set_addrs = (0..SETS.len())
            .map(|k| SocketAddr::from(([239, 255, 72, 1 + k as u8], base)))
            .collect();
        let top = format!("top@239.255.72.100:{base}");
        Tree {
            dir,
            port: testkit::free_port(),
            mcaster,
            top,
            set_addrs,
            servers: BTreeMap::new(),
            _mcaster: mcaster_proc,
        }
    }

    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 10 + i as u8], self.port))
    }

    fn set_of(i: usize) -> usize {
        SETS.iter().position(|s| s.contains(&i)).expect("in a set")
    }

    fn start(&mut self, i: usize) {
        let k = Tree::set_of(i);
        let mut cmd = mserver_command(
            &mserver_bin(),
            &format!("set-{k}"),
            self.set_addrs[k],
            self.addr(i),
            self.mcaster,
        );
        cmd.args(["--parent", &self.top]).env("RUST_LOG", "info");
        let log = self.dir.join(format!("mserver-{i}.log"));
        let p = Proc::spawn_logged(&format!("mserver {i}"), &mut cmd, &log);
        self.servers.insert(i, p);
    }

    fn tree(&self, i: usize) -> Option<Value> {
        json_output(&mut msctl_command(
            &msctl_bin(),
            self.addr(i),
            &["tree", "--json"],
        ))
    }

    fn msctl(&self, i: usize, args: &[&str]) -> bool {
        msctl_command(&msctl_bin(), self.addr(i), args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `msctl ARGS` at mserver `i`: (exit code, stdout, stderr).
    fn msctl_out(&self, i: usize, args: &[&str]) -> (Option<i32>, String, String) {
        match msctl_command(&msctl_bin(), self.addr(i), args).output() {
            Ok(o) => (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ),
            Err(e) => (None, String::new(), e.to_string()),
        }
    }

    /// `msctl ARGS` at mserver `i` must fail with exit code `code` and an
    /// error naming `kind`.
    fn refused(&self, i: usize, args: &[&str], code: i32, kind: &str) {
        let (c, out, err) = self.msctl_out(i, args);
        assert_eq!(c, Some(code), "msctl {args:?} at {i}: {out}{err}");
        assert!(err.contains(kind), "msctl {args:?} at {i}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }

    /// Whether the tree of the running mservers is whole now: every child
    /// set (its running members) one idle level-1 view of exactly them,
    /// with exactly one parent; the parents' level-2 views one idle view
    /// of exactly the parents, each row naming its child set; nobody else
    /// above level 1. `Err` says what is not yet so.
    fn whole(&self) -> Result<BTreeMap<usize, usize>, String> {
        let trees: BTreeMap<usize, Value> = self
            .servers
            .keys()
            .map(|i| {
                self.tree(*i)
                    .map(|t| (*i, t))
                    .ok_or(format!("mserver {i} did not answer msctl tree"))
            })
            .collect::<Result<_, _>>()?;
        let mut parents = BTreeMap::new();
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
                .map(|i| trees.get(i).map(|t| t["levels"][0].clone()))
                .collect();
            let view = testkit::cluster::agreement(&views, &want)
                .map_err(|e| format!("set-{k} level 1: {e}"))?;
            let flagged: Vec<String> = view["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["parent"] == true)
                .filter_map(|m| m["addr"].as_str().map(str::to_string))
                .collect();
            let [parent] = flagged.as_slice() else {
                return Err(format!("set-{k} has parents {flagged:?}"));
            };
            let p = running
                .iter()
                .copied()
                .find(|i| self.addr(*i).to_string() == *parent)
                .ok_or(format!("set-{k}'s parent {parent} is not running"))?;
            parents.insert(p, k);
        }
        let want: BTreeSet<String> = parents.keys().map(|i| self.addr(*i).to_string()).collect();
        let views: Vec<Option<Value>> = parents
            .keys()
            .map(|i| trees.get(i).map(|t| t["levels"][1].clone()))
            .collect();
        let top = testkit::cluster::agreement(&views, &want).map_err(|e| format!("top: {e}"))?;
        if top["level"] != 2 || top["group"] != "top" || !top["parent_group"].is_null() {
            return Err(format!("top group's view: {top}"));
        }
        for (i, k) in &parents {
            let row = top["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["addr"] == self.addr(*i).to_string())
                .cloned()
                .unwrap_or_default();
            if row["child_group"] != format!("set-{k}") {
                return Err(format!("top row of mserver {i}: {row}"));
            }
        }
        for (i, t) in &trees {
            let levels = t["levels"].as_array().map_or(0, Vec::len);
            let expect = if parents.contains_key(i) { 2 } else { 1 };
            if levels != expect {
                return Err(format!("mserver {i} is in {levels} levels, not {expect}"));
            }
            if t["levels"][0]["parent_group"]["name"] != "top" {
                return Err(format!(
                    "mserver {i}'s set records {}",
                    t["levels"][0]["parent_group"]
                ));
            }
        }
        Ok(parents)
    }

    /// Waits until the tree is whole: its parents (mserver -> set).
    fn wait_whole(&self, what: &str) -> BTreeMap<usize, usize> {
        let started = std::time::Instant::now();
        let mut last = String::new();
        let found = testkit::wait::until(TREE_PATIENCE, Duration::from_millis(200), || match self
            .whole()
        {
            Ok(p) => Some(p),
            Err(e) => {
                last = e;
                None
            }
        });
        let parents = found.unwrap_or_else(|| {
            self.fail(&format!(
                "{what}: the tree is not whole within {TREE_PATIENCE:?}: {last}"
            ))
        });
        println!(
            "{what}: whole after {:?}, parents {parents:?}",
            started.elapsed()
        );
        parents
    }

    fn fail(&self, msg: &str) -> ! {
        let mut text = format!("{msg}\n");
        for (i, p) in &self.servers {
            text.push_str(&format!(
                "--- mserver {i} ({}) ---\n{}\n",
                self.addr(*i),
                p.log_tail(30)
            ));
        }
        panic!("{text}");
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.servers.clear();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn two_level_tree_forms_and_reforms_after_kill_stop_and_cut() {
    let mut t = Tree::new("faults");
    for i in 0..8 {
        t.start(i);
    }
    let parents = t.wait_whole("formation");
    assert_eq!(parents.len(), 3);

    // 1. SIGKILL of set-0's parent: set-0 reforms without it and
    //    re-parents; the top group drops it and admits the new parent.
    let (&killed, _) = parents
        .iter()
        .find(|(_, k)| **k == 0)
        .expect("set-0 parent");
    // The other top members stream their events meanwhile (`msctl
    // events`): the one that detects the crash reports it (the others
    // learn it from the failure change, a view event).
    let watchers: Vec<usize> = parents.keys().copied().filter(|i| *i != killed).collect();
    let mut streams = Vec::new();
    for w in &watchers {
        let file = t.dir.join(format!("events-{w}.jsonl"));
        let p = Proc::spawn(
            "msctl events",
            std::process::Command::new(msctl_bin())
                .args(["--server", &t.addr(*w).to_string(), "events", "--json"])
                .stdout(testkit::procs::log_file(&file))
                .stderr(std::process::Stdio::null()),
        );
        streams.push((p, file));
    }
    std::thread::sleep(Duration::from_millis(300));
    if let Some(mut p) = t.servers.remove(&killed) {
        p.signal("KILL");
        let _ = p.wait_exit(Duration::from_secs(5));
    }
    let after_kill = t.wait_whole("after SIGKILL of a parent");
    assert!(!after_kill.contains_key(&killed));
    let read_all = || -> Vec<Value> {
        streams
            .iter()
            .flat_map(|(_, f)| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let addr = t.addr(killed).to_string();
    let detected = testkit::wait::until_true(TREE_PATIENCE, Duration::from_millis(100), || {
        read_all().iter().any(|e| {
            e["kind"] == DETECTION
                && e["level"] == 2
                && e["group"] == "top"
                && e["member"]["addr"] == addr
        })
    });
    let seen = read_all();
    for (mut p, _) in streams {
        p.kill();
    }
    assert!(
        detected,
        "msctl events at the top group did not report the crash: {seen:#?}"
    );
    // It comes back (same configuration): a standby member of set-0.
    t.start(killed);
    let back = t.wait_whole("after the killed parent restarted");
    assert!(
        !back.contains_key(&killed),
        "the restarted mserver took over: {back:?}"
    );

    // 2. SIGSTOP of set-1's parent for longer than its detection, then
    //    SIGCONT: both levels exclude it; it rejoins set-1.
    let (&stopped, _) = back.iter().find(|(_, k)| **k == 1).expect("set-1 parent");
    t.servers[&stopped].signal("STOP");
    std::thread::sleep(Duration::from_secs(3));
    t.servers[&stopped].signal("CONT");
    t.wait_whole("after SIGSTOP and SIGCONT of a parent");

    // 3. set-2 cut from every other mserver (both directions), then
    //    healed: each side reforms, and after the heal one tree again.
    let inside: Vec<usize> = SETS[2].to_vec();
    let outside: Vec<usize> = t
        .servers
        .keys()
        .copied()
        .filter(|i| !inside.contains(i))
        .collect();
    let block = |from: &[usize], to: &[usize]| {
        for i in from {
            let mut args = vec!["fault".to_string(), "--clear".to_string()];
            for j in to {
                args.push("--block".into());
                args.push(t.addr(*j).to_string());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            assert!(t.msctl(*i, &args), "msctl fault at mserver {i}");
        }
    };
    block(&inside, &outside);
    block(&outside, &inside);
    // The cut is seen: set-2's parent leaves the top group's view of the
    // others (bounded wait; the heal below is the check that matters).
    let seen = testkit::wait::until_true(TREE_PATIENCE, Duration::from_millis(200), || {
        outside.iter().filter_map(|i| t.tree(*i)).any(|tr| {
            tr["levels"][1]["members"]
                .as_array()
                .is_some_and(|m| m.len() == 2)
        })
    });
    assert!(
        seen,
        "the top group never lost set-2's parent during the cut"
    );
    for i in t.servers.keys().copied().collect::<Vec<_>>() {
        assert!(
            t.msctl(i, &["fault", "--clear"]),
            "msctl fault --clear at {i}"
        );
    }
    t.wait_whole("after the cut healed");
}

#[test]
fn operator_changes_and_their_errors() {
    let mut t = Tree::new("operator");
    for i in 0..8 {
        t.start(i);
    }
    let parents = t.wait_whole("formation");
    let parent_of = |ps: &BTreeMap<usize, usize>, k: usize| {
        ps.iter()
            .find(|(_, s)| **s == k)
            .map(|(i, _)| *i)
            .expect("a parent")
    };
    let p = parent_of(&parents, 0);
    let plain = SETS[0]
        .iter()
        .copied()
        .find(|i| *i != p)
        .expect("a plain member");

    // Bad requests: typed errors, one line, nothing changes.
    t.refused(plain, &["del-parent"], 1, "del-parent-at-level-1");
    t.refused(plain, &["view", "--level", "2"], 1, "no level 2");
    t.refused(plain, &["view", "--level", "0"], 2, "levels go from 1");
    t.refused(plain, &["leave", "--level", "0"], 2, "levels start at 1");
    t.refused(plain, &["add-parent", "not-a-group"], 2, "NAME@IP:PORT");
    t.refused(
        plain,
        &["add-parent", "top@10.1.1.1:7301"],
        2,
        "not a multicast",
    );
    t.refused(
        plain,
        &["add-parent", "set-0@239.255.99.1:7301"],
        1,
        "in-chain",
    );
    t.refused(plain, &["add-parent", &t.top.clone()], 1, "max-parents");
    t.refused(p, &["leave", "--level", "3"], 1, "no-such-level");
    assert_eq!(t.whole().map(|ps| ps == parents), Ok(true));

    // del-parent: the parent leaves the top group and declines; its child
    // set re-parents with another member.
    let (code, out, err) = t.msctl_out(p, &["del-parent", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let view: Value = serde_json::from_str(&out).expect("a view");
    assert_eq!(view["level"], 1, "{view}");
    let after = t.wait_whole("after del-parent");
    let q = parent_of(&after, 0);
    assert_ne!(q, p, "the one that stepped down came back: {after:?}");
    let tree = t.tree(p).expect("tree");
    let me = tree["levels"][0]["members"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|m| m["addr"] == t.addr(p).to_string())
                .cloned()
        })
        .expect("row");
    assert_eq!(me["declined"], true, "{me}");

    // leave --level 2 at the new parent: the same, the third member takes
    // over.
    let (code, out, err) = t.msctl_out(q, &["leave", "--level", "2"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let after = t.wait_whole("after leave --level 2");
    let r = parent_of(&after, 0);
    assert!(r != p && r != q, "{after:?}");

    // add-parent at a group that has its parent: refused; after its
    // parent steps down, the declined member p asks to be parent again.
    t.refused(p, &["add-parent", &t.top.clone()], 1, "max-parents");
    let (code, out, err) = t.msctl_out(r, &["del-parent"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // Nobody in set-0 is a candidate now (all declined): no parent until
    // an operator adds one.
    let (code, out, err) = t.msctl_out(p, &["add-parent", &t.top.clone(), "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let view: Value = serde_json::from_str(&out).expect("a view");
    assert_eq!(
        (view["level"].clone(), view["group"].clone()),
        (2.into(), "top".into()),
        "{view}"
    );
    let after = t.wait_whole("after add-parent");
    assert_eq!(parent_of(&after, 0), p, "{after:?}");
    println!("operator changes: {} -> {} -> {} -> {}", p, q, r, p);
}
