//! rmcast over REAL IP multicast, in network namespaces: a mixed LAN as in
//! seed 003, section IV.A, figure 6 (DESIGN.md section 9).
//!
//! Six namespaces `ms-rn-<pid>-*` (see `msbench/src/netns.rs`): a
//! bridge with multicast snooping off and five hosts on 10.231.8.0/24:
//!
//! - `m`: the `mcaster` (`--multicast auto`: its probe must succeed, so it
//!   joins the group's class D address and bridges mc and uc members);
//! - `a`, `b`: `mc` members (`msbench mcast-peer --kind mc`): they join the
//!   class D address and send to it, and register as `mc`;
//! - `c`, `d`: `uc` members: everything goes through the mcaster.
//!
//! One mc member (`a`) and one uc member (`c`) each send 200 reliable
//! parcels (every tenth 64 KiB) at the same time; every other member must
//! deliver every parcel of both, exactly once, in order, intact. So the
//! class D copies reach mc members straight and uc members through the
//! mcaster, and the mcaster's single class D copy of uc traffic reaches
//! the mc members.
//!
//! Needs root and `ip`; otherwise it prints `SKIPPED: <reason>` and passes,
//! unless `CI=true` and root, where a skip fails. The namespaces are
//! deleted by a drop guard, also on failure, after the processes in them
//! were killed; stale ones of dead test processes are deleted at start.

mod common;

use common::{mcaster, msbench};
use std::time::Duration;
use testkit::netns;
use testkit::{Lines, Proc};

const TAG: &str = "rn";
const SUBNET: [u8; 3] = [10, 231, 8];
const GROUP: &str = "239.77.8.1:7000";
const PORT: u16 = 7000;
const MCASTER_PORT: u16 = 7100;
const PARCELS: u64 = 200;
/// Generous bound on every wait (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn rmcast_mixed_lan_in_network_namespaces() {
    if let Err(reason) = netns::available() {
        return netns::skip(&reason);
    }
    netns::delete_stale(TAG);
    let lan = match netns::Lan::build(TAG, SUBNET, &["m", "a", "b", "c", "d"]) {
        Ok(lan) => lan,
        Err(e) => return netns::skip(&format!("cannot build the namespaces: {e}")),
    };
    let host = |n: &str| lan.host(n).expect("a host").clone();
    let mcaster_addr = format!("{}:{MCASTER_PORT}", host("m").ip);
    let addr = |n: &str| format!("{}:{PORT}", host(n).ip);
    let members = ["a", "b", "c", "d"];
    let view: Vec<String> = members.iter().map(|m| addr(m)).collect();
    let mut lines = Lines::new();
    // Children are declared after `lan`, so they are killed first.
    let mut procs: Vec<Proc> = Vec::new();

    let mut cmd = lan.command(&host("m"), &mcaster());
    cmd.args([
        "--listen",
        &mcaster_addr,
        "--multicast",
        "auto",
        "--multicast-interface",
        &host("m").ip.to_string(),
        "--summary-interval-secs",
        "0",
        "--log-format",
        "json",
    ])
    .env("RUST_LOG", "info");
    procs.push(lines.spawn("mcaster", cmd));
    let probed = lines.pump(PATIENCE, |l| {
        l.log
            .iter()
            .any(|x| x.contains("mcaster running") && x.contains("\"multicast\":true"))
    });
    assert!(
        probed,
        "the mcaster did not start with a usable multicast probe:\n{}",
        lines.tail(30)
    );

    let start = |lines: &mut Lines, name: &str, send: bool| {
        let h = host(name);
        let mc = name == "a" || name == "b";
        let mut cmd = lan.command(&h, &msbench());
        cmd.args([
            "mcast-peer",
            "--group",
            GROUP,
            "--group-name",
            "netns-rmcast",
        ]);
        if mc {
            cmd.args([
                "--kind",
                "mc",
                "--listen",
                &format!("0.0.0.0:{PORT}"),
                "--advertise",
                &addr(name),
                "--multicast-interface",
                &h.ip.to_string(),
                "--multicast-loopback",
                "false",
            ]);
        } else {
            cmd.args(["--kind", "uc", "--listen", &addr(name)]);
        }
        cmd.args([
            "--mcaster",
            &mcaster_addr,
            "--receivers",
            &view.join(","),
            "--expect",
            &PARCELS.to_string(),
            "--max-runtime-secs",
            "120",
        ]);
        if send {
            cmd.args([
                "--send",
                &PARCELS.to_string(),
                "--big-every",
                "10",
                "--start-delay-ms",
                "300",
            ]);
        }
        cmd.env("RUST_LOG", "warn");
        lines.spawn(name, cmd)
    };
    for name in ["b", "d"] {
        procs.push(start(&mut lines, name, false));
    }
    let ready = lines.pump(PATIENCE, |l| {
        l.has("b", "registered") && l.has("d", "registered")
    });
    assert!(ready, "receivers not registered:\n{}", lines.tail(30));
    for name in ["a", "c"] {
        procs.push(start(&mut lines, name, true));
    }

    let senders = ["a", "c"];
    let complete = |l: &Lines, r: &str, s: &str| {
        l.events(r, "complete")
            .any(|v| v["from"] == addr(s).as_str() && v["delivered"].as_u64() == Some(PARCELS))
    };
    let done = lines.pump(PATIENCE, |l| {
        senders.iter().all(|s| l.has(s, "plan_done"))
            && members
                .iter()
                .all(|r| senders.iter().all(|s| r == s || complete(l, r, s)))
    });
    assert!(done, "not every parcel delivered:\n{}", lines.tail(80));
    for r in members {
        for s in senders {
            if r == s {
                continue;
            }
            let got: Vec<u64> = lines
                .events(r, "delivered")
                .filter(|v| v["from"] == addr(s).as_str())
                .map(|v| {
                    assert_eq!(v["intact"], true, "{r}: damaged parcel {v}");
                    v["index"].as_u64().expect("an index")
                })
                .collect();
            assert_eq!(
                got,
                (0..PARCELS).collect::<Vec<_>>(),
                "{r} from {s}: not every parcel exactly once in order"
            );
        }
    }
    // The mc members really used IP multicast: the mcaster relays an mc
    // sender's datagrams to uc members only (figure 8), so b can only
    // have a's parcels by the class D address; and a and b got c's
    // parcels from the mcaster's class D copies, which its final summary
    // counts.
    for p in procs.iter_mut() {
        p.term();
    }
    let exited = lines.pump(PATIENCE, |l| members.iter().all(|m| l.has(m, "exit")));
    assert!(exited, "peers did not exit:\n{}", lines.tail(40));
    for m in members {
        let e = lines.events(m, "exit").next().expect("exit");
        assert_eq!(e["reason"], "sigterm", "{e}");
        assert_eq!(e["suspects"], 0, "{m}: {e}");
    }
    let summary = |l: &Lines| {
        l.log
            .iter()
            .filter(|x| x.contains("final summary"))
            .find_map(|x| {
                let json = &x[x.find('{')?..];
                serde_json::from_str::<serde_json::Value>(json).ok()
            })
    };
    let summarized = lines.pump(PATIENCE, |l| summary(l).is_some());
    assert!(summarized, "no final summary:\n{}", lines.tail(20));
    let s = summary(&lines).expect("a summary");
    let copies = s["fields"]["multicast_copies"].as_u64().unwrap_or(0);
    assert!(copies > 0, "the mcaster sent no class D copy: {s}");
    drop(procs);
    drop(lan);
    let left = netns::leftovers(TAG);
    assert!(left.is_empty(), "namespaces left: {left:?}");
    println!(
        "rmcast netns mixed LAN ok: mcaster relayed {}, class D copies {copies}, NACKs answered {}",
        s["fields"]["relayed"], s["fields"]["nacks_answered"]
    );
}
