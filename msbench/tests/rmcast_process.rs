//! rmcast between real processes on a unicast-only LAN (loopback
//! 127.0.0.0/8), so through a real `mcaster` process (DESIGN.md section
//! 9; seed 003, section IV.A): four receivers and one sender, each an
//! `msbench mcast-peer` process running a `rmcast::GroupEndpoint` as a `uc`
//! member.
//!
//! - `all_parcels_once_in_order`: 300 reliable parcels (every tenth
//!   64 KiB) reach all four receivers exactly once, in order, intact; the
//!   sender sees every one acknowledged; SIGTERM ends every peer cleanly
//!   (it leaves the group at the mcaster, answered `LEAVE_ACK`).
//! - `killed_receiver_is_suspected_not_dropped`: a receiver SIGKILLed
//!   mid-stream is reported by the sender as `suspect` (the window waits
//!   for it until then, so the stream cannot finish before), the sender
//!   (as the layer above) removes it, and the other three deliver every
//!   parcel.
//! - `mcaster_restart_loses_nothing`: the mcaster is SIGKILLed mid-stream
//!   and restarted on the same port: every peer is relearned (its next
//!   refresh is answered `JOIN_ACK`), and every receiver still delivers
//!   every parcel exactly once, in order. (That the relearning takes at
//!   most one refresh interval is checked on virtual time in
//!   `tests/relay_sim.rs`; here waits are only bounded.)
//!
//! Each test uses its own addresses (127.0.N.x), so they can run in
//! parallel; every child is killed when the test ends, also on failure.

mod common;

use common::{mcaster, msbench};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use testkit::{free_udp_port, Lines, Proc};

const GROUP: &str = "239.77.3.1:7000";
/// Generous bound on every wait (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(60);

/// The addresses of one test: the mcaster, then peers 1..=5 (1-4
/// receivers, 5 the sender).
struct Net {
    mcaster: String,
    peers: Vec<String>,
}

impl Net {
    fn new(block: u8) -> Self {
        let ip = |i: u8| format!("127.0.{block}.{i}");
        let mcaster = format!("{}:{}", ip(1), free_udp_port(&ip(1)));
        let peers = (2..=6)
            .map(|i| format!("{}:{}", ip(i), free_udp_port(&ip(i))))
            .collect();
        Net { mcaster, peers }
    }

    fn sender(&self) -> &str {
        &self.peers[4]
    }

    fn receivers(&self) -> &[String] {
        &self.peers[..4]
    }
}

fn start_mcaster(lines: &mut Lines, net: &Net) -> Proc {
    let mut cmd = Command::new(mcaster());
    cmd.args([
        "--listen",
        &net.mcaster,
        "--multicast",
        "off",
        "--summary-interval-secs",
        "0",
        "--log-format",
        "json",
    ])
    .env("RUST_LOG", "info");
    lines.spawn("mcaster", cmd)
}

/// A peer at `net.peers[i]`, everyone else its view, plus `extra` flags.
fn start_peer(lines: &mut Lines, net: &Net, i: usize, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(msbench());
    cmd.args([
        "mcast-peer",
        "--listen",
        &net.peers[i],
        "--group",
        GROUP,
        "--group-name",
        "process-test",
        "--kind",
        "uc",
        "--mcaster",
        &net.mcaster,
        "--receivers",
        &net.peers.join(","),
        "--max-runtime-secs",
        "120",
    ])
    .args(extra)
    .env("RUST_LOG", "warn");
    lines.spawn(&net.peers[i], cmd)
}

/// Starts the mcaster, the four receivers (registered), then the sender
/// with `sender_flags`; receivers get `receiver_flags`.
fn start_lan(
    lines: &mut Lines,
    net: &Net,
    receiver_flags: &[&str],
    sender_flags: &[&str],
) -> (Proc, Vec<Proc>) {
    let daemon = start_mcaster(lines, net);
    let up = lines.pump(PATIENCE, |l| {
        l.log.iter().any(|x| x.contains("mcaster running"))
    });
    assert!(up, "the mcaster did not start:\n{}", lines.tail(30));
    let mut peers = Vec::new();
    for i in 0..4 {
        peers.push(start_peer(lines, net, i, receiver_flags));
    }
    let registered = lines.pump(PATIENCE, |l| {
        net.receivers().iter().all(|r| l.has(r, "registered"))
    });
    assert!(registered, "receivers not registered:\n{}", lines.tail(40));
    peers.push(start_peer(lines, net, 4, sender_flags));
    (daemon, peers)
}

/// The indices `receiver` delivered from `sender`, in delivery order;
/// panics on a damaged parcel.
fn indices(lines: &Lines, receiver: &str, sender: &str) -> Vec<u64> {
    lines
        .events(receiver, "delivered")
        .filter(|v| v["from"] == sender)
        .map(|v| {
            assert_eq!(v["intact"], true, "{receiver}: damaged parcel {v}");
            v["index"].as_u64().expect("an index")
        })
        .collect()
}

fn complete(lines: &Lines, receiver: &str, n: u64) -> bool {
    lines
        .events(receiver, "complete")
        .any(|v| v["delivered"].as_u64() == Some(n))
}

/// SIGTERM to every peer; each prints `exit` (reason sigterm) and exits 0.
fn stop_all(lines: &mut Lines, net: &Net, peers: &mut [Proc], live: &[usize]) {
    for &i in live {
        peers[i].term();
    }
    let exited = lines.pump(PATIENCE, |l| {
        live.iter().all(|&i| l.has(&net.peers[i], "exit"))
    });
    assert!(exited, "peers did not exit on SIGTERM:\n{}", lines.tail(40));
    for &i in live {
        let e: Vec<&Value> = lines.events(&net.peers[i], "exit").collect();
        assert_eq!(e[0]["reason"], "sigterm", "{}", e[0]);
        assert_eq!(
            peers[i].wait_exit(PATIENCE),
            Some(Some(0)),
            "{}",
            net.peers[i]
        );
    }
}

#[test]
fn all_parcels_once_in_order() {
    let net = Net::new(31);
    let mut lines = Lines::new();
    let n: u64 = 300;
    let (_daemon, mut peers) = start_lan(
        &mut lines,
        &net,
        &["--expect", "300"],
        &["--send", "300", "--big-every", "10", "--big-size", "65536"],
    );
    let done = lines.pump(PATIENCE, |l| {
        l.has(net.sender(), "plan_done") && net.receivers().iter().all(|r| complete(l, r, n))
    });
    assert!(done, "stream not complete:\n{}", lines.tail(60));
    for r in net.receivers() {
        assert_eq!(
            indices(&lines, r, net.sender()),
            (0..n).collect::<Vec<_>>(),
            "{r}: not every parcel exactly once in order"
        );
        let c: Vec<&Value> = lines.events(r, "complete").collect();
        assert_eq!(c[0]["duplicates"], 0);
        assert_eq!(c[0]["gaps"], 0);
        assert_eq!(c[0]["bytes"], 270 * 1024 + 30 * 65_536);
    }
    // Let late duplicates show, then stop everyone.
    lines.pump(Duration::from_millis(300), |_| false);
    stop_all(&mut lines, &net, &mut peers, &[0, 1, 2, 3, 4]);
    let exit = lines.events(net.sender(), "exit").next().expect("exit");
    assert_eq!(exit["settled"], n, "every parcel acknowledged: {exit}");
    assert_eq!(exit["suspects"], 0, "{exit}");
    // A graceful exit leaves the group at the mcaster.
    for p in &net.peers {
        let left = lines.events(p, "left").next();
        assert_eq!(
            left.map(|v| v["answer"].clone()),
            Some("LEAVE_ACK".into()),
            "{p} did not leave the group:\n{}",
            lines.tail(20)
        );
    }
    for r in net.receivers() {
        let e = lines.events(r, "exit").next().expect("exit");
        let from = &e["from"][net.sender()];
        assert_eq!(from["delivered"], n, "{r}: {e}");
        assert_eq!(from["duplicates"], 0, "{r}: {e}");
    }
}

#[test]
fn killed_receiver_is_suspected_not_dropped() {
    let net = Net::new(32);
    let mut lines = Lines::new();
    let n: u64 = 400;
    let (_daemon, mut peers) = start_lan(
        &mut lines,
        &net,
        &["--expect", "400", "--quiet"],
        &[
            "--send",
            "400",
            "--interval-ms",
            "5",
            "--remove-suspects",
            "--suspect-after-ms",
            "1000",
        ],
    );
    let victim = net.receivers()[1].clone();
    // Mid-stream: once some parcels were acknowledged by everyone.
    let started = lines.pump(PATIENCE, |l| {
        l.events(net.sender(), "acknowledged").count() >= 30
    });
    assert!(started, "the stream did not start:\n{}", lines.tail(40));
    peers[1].kill();
    let suspected = lines.pump(PATIENCE, |l| {
        l.events(net.sender(), "suspect")
            .any(|v| v["node"] == victim.as_str())
    });
    assert!(
        suspected,
        "the killed receiver was never reported:\n{}",
        lines.tail(60)
    );
    let done = lines.pump(PATIENCE, |l| {
        l.has(net.sender(), "plan_done") && [0, 2, 3].iter().all(|&i| complete(l, &net.peers[i], n))
    });
    assert!(
        done,
        "the others did not get everything:\n{}",
        lines.tail(60)
    );
    // Until the layer above removed it, the window waited for it: the
    // stream finished only after the removal.
    let removed = lines.position(net.sender(), "removed").expect("removed");
    let plan_done = lines.position(net.sender(), "plan_done").expect("done");
    assert!(
        removed < plan_done,
        "the stream finished before the removal"
    );
    let removed_node = lines
        .events(net.sender(), "removed")
        .next()
        .expect("removed");
    assert_eq!(removed_node["node"], victim.as_str());
    for i in [0, 2, 3] {
        let c = lines
            .events(&net.peers[i], "complete")
            .next()
            .expect("complete");
        assert_eq!(c["duplicates"], 0, "{c}");
        assert_eq!(c["gaps"], 0, "{c}");
        assert_eq!(c["damaged"], 0, "{c}");
    }
    stop_all(&mut lines, &net, &mut peers, &[0, 2, 3, 4]);
}

#[test]
fn mcaster_restart_loses_nothing() {
    let net = Net::new(33);
    let mut lines = Lines::new();
    let n: u64 = 600;
    let (mut daemon, mut peers) = start_lan(
        &mut lines,
        &net,
        &["--expect", "600", "--quiet", "--suspect-after-ms", "10000"],
        &[
            "--send",
            "600",
            "--interval-ms",
            "5",
            "--suspect-after-ms",
            "10000",
        ],
    );
    let started = lines.pump(PATIENCE, |l| {
        l.events(net.sender(), "acknowledged").count() >= 50
    });
    assert!(started, "the stream did not start:\n{}", lines.tail(40));
    daemon.kill();
    lines.pump(Duration::from_millis(200), |_| false);
    let _daemon = start_mcaster(&mut lines, &net);
    let relearned = lines.pump(PATIENCE, |l| {
        net.peers.iter().all(|p| l.has(p, "relearned"))
    });
    assert!(
        relearned,
        "not every peer was relearned by the new mcaster:\n{}",
        lines.tail(60)
    );
    let done = lines.pump(PATIENCE, |l| {
        l.has(net.sender(), "plan_done") && net.receivers().iter().all(|r| complete(l, r, n))
    });
    assert!(done, "delivery did not resume:\n{}", lines.tail(60));
    for r in net.receivers() {
        let c = lines.events(r, "complete").next().expect("complete");
        assert_eq!(c["duplicates"], 0, "{c}");
        assert_eq!(c["gaps"], 0, "{c}");
        assert_eq!(c["damaged"], 0, "{c}");
        assert_eq!(c["next"], n, "{c}");
    }
    stop_all(&mut lines, &net, &mut peers, &[0, 1, 2, 3, 4]);
    let exit = lines.events(net.sender(), "exit").next().expect("exit");
    assert_eq!(exit["settled"], n, "{exit}");
}
