//! Application groups with real processes (issue 6): three mservers, three
//! member-interface daemons and six `msctl --mi ... join` processes in two
//! groups. Kills an application process, suspends and resumes one, kills
//! an MI, and kills the mserver an MI is attached to; checks that every
//! member sees the same views and that a name clash is `NameTaken`.

#![allow(clippy::disallowed_methods)] // a process test waits on the wall clock

mod common;

use common::{Cluster, Proc};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The `member-interface` binary (another package of the workspace).
fn mi_bin() -> PathBuf {
    testkit::bin("member-interface", "member-interface")
}

fn start_mi(c: &Cluster, i: usize, mservers: &[usize]) -> Proc {
    let sock = c.dir.join(format!("mi{i}.sock"));
    let log = c.dir.join(format!("mi{i}.log"));
    let mut cmd = Command::new(mi_bin());
    for m in mservers {
        cmd.args(["--mserver", &c.addr(*m).to_string()]);
    }
    cmd.args([
        "--socket",
        &sock.to_string_lossy(),
        "--host",
        &format!("h{i}"),
        "--listen",
        "127.0.0.1:0",
    ])
    .env("MS_LOG_LEVEL", "info");
    let p = Proc::spawn_logged(&format!("MI {i}"), &mut cmd, &log);
    testkit::wait::until_true(Duration::from_secs(10), Duration::from_millis(20), || {
        sock.exists()
    });
    assert!(sock.exists(), "MI {i} did not create its socket");
    p
}

fn msctl_mi(c: &Cluster, mi: usize, args: &[&str]) -> (Option<i32>, String) {
    let sock = c.dir.join(format!("mi{mi}.sock"));
    let out = Command::new(common::msctl_bin())
        .arg("--mi")
        .arg(&sock)
        .args(args)
        .output()
        .expect("run msctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// A `msctl --mi ... join --json` process and its output file.
struct Joiner {
    proc: Proc,
    out: PathBuf,
}

impl Joiner {
    fn start(c: &Cluster, mi: usize, group: &str, name: &str) -> Joiner {
        let out = c.dir.join(format!("{name}.out"));
        let log = c.dir.join(format!("{name}.err"));
        let sock = c.dir.join(format!("mi{mi}.sock"));
        let child = Command::new(common::msctl_bin())
            .arg("--mi")
            .arg(&sock)
            .args(["join", group, "--name", name, "--json"])
            .stdout(std::fs::File::create(&out).expect("out file"))
            .stderr(std::fs::File::create(&log).expect("err file"))
            .spawn()
            .expect("start msctl join");
        Joiner {
            proc: Proc {
                name: name.to_string(),
                child,
                log: Some(log),
            },
            out,
        }
    }

    fn views(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn last(&self) -> Option<Value> {
        self.views().pop()
    }
}

/// The member names of a view, sorted.
fn names(view: &Value) -> Vec<String> {
    testkit::cluster::member_field(view, "name")
}

/// Waits until every joiner in `who` has a last view with exactly `want`
/// (sorted names), the same number everywhere; returns that number.
fn wait_views(c: &Cluster, joiners: &[&Joiner], want: &[&str], limit: Duration) -> u64 {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    let end = Instant::now() + limit;
    loop {
        let lasts: Vec<Option<Value>> = joiners.iter().map(|j| j.last()).collect();
        let ok = lasts
            .iter()
            .all(|v| v.as_ref().is_some_and(|v| names(v) == want));
        let numbers: Vec<u64> = lasts
            .iter()
            .filter_map(|v| v.as_ref().and_then(|v| v["view"].as_u64()))
            .collect();
        if ok && numbers.windows(2).all(|w| w[0] == w[1]) {
            return numbers.first().copied().unwrap_or(0);
        }
        if Instant::now() > end {
            c.fail(&format!(
                "members never agreed on {want:?}: {:?}",
                lasts
                    .iter()
                    .map(|v| v.as_ref().map(|v| (v["view"].clone(), names(v))))
                    .collect::<Vec<_>>()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every joiner's views are numbered one by one (no gap, no repeat).
fn assert_gap_free(j: &Joiner, name: &str) {
    let numbers: Vec<u64> = j
        .views()
        .iter()
        .filter_map(|v| v["view"].as_u64())
        .collect();
    for w in numbers.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{name} saw views {numbers:?}");
    }
}

#[test]
fn three_mservers_three_mis_six_processes() {
    let mut c = Cluster::new("apps");
    for i in 0..3 {
        c.start(i, &[]);
    }
    let formed = c.wait_converged(&[0, 1, 2], Duration::from_secs(20));
    let formed_view = formed["view"].as_u64().expect("a view number");
    // MI i prefers mserver i, then the others.
    let mut mis: Vec<Proc> = (0..3)
        .map(|i| start_mi(&c, i, &[i, (i + 1) % 3, (i + 2) % 3]))
        .collect();
    for g in ["g1", "g2"] {
        let (code, out) = msctl_mi(&c, 0, &["create", g]);
        assert_eq!(code, Some(0), "create {g}: {out}");
    }
    // p{i} joins through MI i % 3, group g1 for even i, g2 for odd i.
    let joiners: Vec<Joiner> = (0..6)
        .map(|i| {
            let g = if i % 2 == 0 { "g1" } else { "g2" };
            Joiner::start(&c, i % 3, g, &format!("p{i}"))
        })
        .collect();
    let g1 = |v: &[usize]| v.iter().map(|i| &joiners[*i]).collect::<Vec<_>>();
    wait_views(
        &c,
        &g1(&[0, 2, 4]),
        &["p0", "p2", "p4"],
        Duration::from_secs(15),
    );
    wait_views(
        &c,
        &g1(&[1, 3, 5]),
        &["p1", "p3", "p5"],
        Duration::from_secs(15),
    );

    // A name clash.
    let (code, out) = msctl_mi(&c, 1, &["join", "g1", "--name", "p0"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("name taken"), "{out}");

    // An application process killed: its MI sees the connection close.
    joiners[0].proc.signal("KILL");
    wait_views(&c, &g1(&[2, 4]), &["p2", "p4"], Duration::from_secs(5));

    // A suspended process stays a member, and gets the views it missed
    // when resumed.
    joiners[2].proc.signal("STOP");
    let late = Joiner::start(&c, 0, "g1", "late");
    wait_views(&c, &g1(&[4]), &["late", "p2", "p4"], Duration::from_secs(5));
    joiners[2].proc.signal("CONT");
    wait_views(
        &c,
        &[&joiners[2], &joiners[4], &late],
        &["late", "p2", "p4"],
        Duration::from_secs(5),
    );

    // An MI killed: all its members go, in one view per group.
    mis[1].signal("KILL");
    wait_views(
        &c,
        &[&joiners[2], &late],
        &["late", "p2"],
        Duration::from_secs(10),
    );
    wait_views(&c, &g1(&[3, 5]), &["p3", "p5"], Duration::from_secs(10));

    // All that application traffic changed no mserver's membership: the
    // core-set's view number is the one it formed with (its application
    // commits have their own sequence), at every mserver.
    for i in 0..3 {
        let v = c.view(i).expect("a view");
        assert_eq!(
            v["view"].as_u64(),
            Some(formed_view),
            "mserver {i}: application changes must not change the core-set's view: {v}"
        );
        assert!(
            v["commit"].as_u64().is_some_and(|n| n > 0),
            "mserver {i}: the application commits are counted within the view: {v}"
        );
    }

    // The mserver MI 2 is attached to killed: MI 2 fails over, its members
    // stay, and it takes new joins.
    c.kill(2);
    let after_kill = c.wait_converged(&[0, 1], Duration::from_secs(20));
    assert_eq!(
        after_kill["view"].as_u64(),
        Some(formed_view + 1),
        "one membership change, one view: {after_kill}"
    );
    let after = Joiner::start(&c, 2, "g2", "after");
    wait_views(
        &c,
        &[&joiners[3], &joiners[5], &after],
        &["after", "p3", "p5"],
        Duration::from_secs(15),
    );
    wait_views(
        &c,
        &[&joiners[2], &late],
        &["late", "p2"],
        Duration::from_secs(5),
    );

    for (i, j) in joiners.iter().enumerate() {
        if i != 0 && i != 1 && i != 4 {
            assert_gap_free(j, &format!("p{i}"));
        }
    }
    assert_gap_free(&late, "late");
    mis.clear();
}

/// Issue 14: an mserver polling every second (`--query-interval-ms 1000`)
/// keeps its MI attached. The MI's silence timeout used to be a fixed
/// 700 ms, shorter than the poll period, so the MI re-attached every poll;
/// now the mserver tells it how it polls and the MI waits accordingly. The
/// MI attaches once, never takes its mserver for silent over several
/// polls, and serves a request at the end.
#[test]
fn an_mi_stays_attached_at_a_one_second_query_interval() {
    let mut c = Cluster::new("slowpoll");
    c.start(0, &["--query-interval-ms", "1000"]);
    c.wait_converged(&[0], Duration::from_secs(20));
    let mi = start_mi(&c, 0, &[0]);
    let log = || {
        mi.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !log().contains("attached to mserver") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        log().contains("attached to mserver"),
        "the MI never attached: {}",
        mi.log_tail(20)
    );
    // Six poll periods.
    std::thread::sleep(Duration::from_secs(6));
    let text = log();
    let attachments = text.matches("attached to mserver").count();
    let silences = text.matches("mserver silent").count();
    assert_eq!(
        (attachments, silences),
        (1, 0),
        "the MI re-attached at a 1 s query interval: {}",
        mi.log_tail(30)
    );
    let (code, out) = msctl_mi(&c, 0, &["create", "slow"]);
    assert_eq!(code, Some(0), "create through the MI: {out}");
}
