//! A real link cut between two LAN halves, in network namespaces (issue 5;
//! DESIGN.md section 9; seed 003, section III.D).
//!
//! Seven namespaces `ms-pn-<pid>-*` (see `msbench/src/netns.rs`,
//! [`netns::Lan::build_halves`]): a switch namespace with two bridges
//! (multicast snooping off) joined by a veth pair, the "trunk"; hosts `a0`,
//! `a1`, `a2` on one bridge and `b0`, `b1`, `b2` on the other, all on
//! 10.231.9.0/24. One mserver per host, with real IP multicast
//! (`--multicast on`) and no mcaster (its address is a port where nothing
//! listens: every group message goes by IP multicast).
//!
//! The six form one group; the right half's end of the trunk is taken down
//! (`ip link set trunk1 down`: a real link cut, no fault injection), both
//! halves install views of their own three; the link comes back up and the
//! six agree on one view again. Assertions marked `// merge:` are specific
//! to the MERGE of DESIGN.md section 5 (see `partitions.rs`).
//!
//! Needs root and `ip`; otherwise it prints `SKIPPED: <reason>` and passes,
//! unless `CI=true` and root, where a skip fails. The mservers are killed,
//! then the namespaces deleted, by drop guards, also on failure; stale
//! namespaces of dead test processes are deleted at start.

mod common;

use common::{msctl_bin, mserver_bin, Proc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use testkit::cluster::{json_output, wait_agreement};
use testkit::netns::{self, skip};

const TAG: &str = "pn";
const SUBNET: [u8; 3] = [10, 231, 9];
const GROUP_ADDR: &str = "239.77.9.1:7300";
const PORT: u16 = 7200;
/// Where the mservers would find an mcaster: nothing listens there.
const NO_MCASTER_PORT: u16 = 7199;
const LEFT: [&str; 3] = ["a0", "a1", "a2"];
const RIGHT: [&str; 3] = ["b0", "b1", "b2"];
/// Generous bound on every wait (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(30);

/// The mservers and the namespaces they run in. Fields drop in order: the
/// processes are killed before the namespaces are deleted.
struct Net {
    servers: BTreeMap<usize, Proc>,
    lan: netns::Lan,
    dir: PathBuf,
}

impl Net {
    fn host(&self, i: usize) -> &netns::Host {
        &self.lan.hosts[i]
    }

    fn addr(&self, i: usize) -> String {
        format!("{}:{PORT}", self.host(i).ip)
    }

    /// Starts the mserver of host `i`.
    fn start(&mut self, i: usize) {
        let h = self.host(i).clone();
        let log = self.dir.join(format!("mserver-{}.log", h.name));
        let file = std::fs::File::create(&log).expect("log file");
        let child = self
            .lan
            .command(&h, &mserver_bin())
            .args([
                "--group",
                "pnetns",
                "--group-addr",
                GROUP_ADDR,
                "--listen",
                &self.addr(i),
                "--multicast",
                "on",
                "--multicast-interface",
                &h.ip.to_string(),
                "--mcaster",
                &format!("{}:{NO_MCASTER_PORT}", h.ip),
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start mserver in its namespace");
        self.servers.insert(
            i,
            Proc {
                name: format!("mserver {}", h.name),
                child,
                log: Some(log),
            },
        );
    }

    /// `msctl view --json` of mserver `i`, run in its namespace.
    fn view(&self, i: usize) -> Option<Value> {
        let mut cmd = self.lan.command(self.host(i), &msctl_bin());
        cmd.args(["--server", &self.addr(i), "--timeout-ms", "1000"])
            .args(["view", "--json"]);
        json_output(&mut cmd)
    }

    /// Waits until the mservers `ids` agree on an idle view of exactly
    /// themselves; that view. Panics with the logs after [`PATIENCE`].
    fn wait_converged(&self, ids: &[usize]) -> Value {
        let want: Vec<String> = ids.iter().map(|i| self.addr(*i)).collect();
        wait_agreement(PATIENCE, Duration::from_millis(100), &want, || {
            ids.iter().map(|i| self.view(*i)).collect()
        })
        .unwrap_or_else(|e| self.fail(&e))
    }

    /// Each mserver's own incarnation.
    fn incarnations(&self, ids: &[usize]) -> BTreeMap<usize, String> {
        ids.iter()
            .map(|&i| {
                let v = self
                    .view(i)
                    .unwrap_or_else(|| self.fail(&format!("mserver {i} did not answer")));
                (i, v["me"]["incarnation"].as_str().unwrap_or("").to_string())
            })
            .collect()
    }

    fn fail(&self, msg: &str) -> ! {
        let mut text = format!("{msg}\n");
        for (i, p) in &self.servers {
            text.push_str(&format!(
                "--- mserver {} ({}) ---\n{}\n",
                self.host(*i).name,
                self.addr(*i),
                p.log_tail(30)
            ));
        }
        panic!("{text}");
    }
}

#[test]
fn link_cut_between_lan_halves_and_merge() {
    if let Err(reason) = netns::available() {
        return skip(&reason);
    }
    netns::delete_stale(TAG);
    let lan = match netns::Lan::build_halves(TAG, SUBNET, &LEFT, &RIGHT) {
        Ok(lan) => lan,
        Err(e) => return skip(&format!("cannot build the namespaces: {e}")),
    };
    let dir = std::env::temp_dir().join(format!("ms-test-{}-pnetns", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut net = Net {
        servers: BTreeMap::new(),
        lan,
        dir,
    };
    let all: Vec<usize> = (0..6).collect();
    let (left, right) = ([0, 1, 2], [3, 4, 5]);
    for i in 0..6 {
        net.start(i);
        net.wait_converged(&(0..=i).collect::<Vec<_>>());
    }
    let before = net.wait_converged(&all);

    net.lan.set_trunk(false).expect("take the trunk down");
    let va = net.wait_converged(&left);
    let vb = net.wait_converged(&right);
    let number = |v: &Value| v["view"].as_u64().expect("a view number");
    assert!(number(&va) > number(&before) && number(&vb) > number(&before));
    // The lives at the heal: the merge keeps every one of them.
    let incarnations = net.incarnations(&all);

    net.lan.set_trunk(true).expect("bring the trunk up");
    let merged = net.wait_converged(&all);
    // merge: one view numbered above both halves' views, in which nobody
    // restarted.
    assert!(
        number(&merged) > number(&va).max(number(&vb)),
        "merged {merged}\nleft {va}\nright {vb}"
    );
    assert_eq!(
        net.incarnations(&all),
        incarnations,
        "a member took a new incarnation: the halves did not merge"
    );

    let Net { servers, lan, dir } = net;
    drop(servers);
    drop(lan);
    let left_over = netns::leftovers(TAG);
    assert!(left_over.is_empty(), "namespaces left: {left_over:?}");
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "partition netns ok: views {} before, {} | {} cut, {} merged",
        number(&before),
        number(&va),
        number(&vb),
        number(&merged)
    );
}
