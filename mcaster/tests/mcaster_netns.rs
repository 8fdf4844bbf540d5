//! The `mcaster` binary with REAL IP multicast, in network namespaces: a
//! mixed LAN as in seed 003, section IV.A, figure 6.
//!
//! Six namespaces named `ms-nt-<pid>-*` (`testkit::netns`): a "switch" (`sw`, one bridge with
//! multicast snooping off) and five hosts joined to it by veth pairs, with
//! addresses from 10.231.7.0/24 that exist only inside these namespaces,
//! multicast on and a route for 224.0.0.0/4 on each host's `eth0`:
//!
//! - `m`: the mcaster (`--multicast auto`: its probe must say yes, so it
//!   joins the group's class D address). Its host also has a decoy
//!   interface (`decoy0`, a veth pair going nowhere) that its routing table
//!   prefers for 224.0.0.0/4; it listens on `0.0.0.0` (so the kernel does
//!   not take the outgoing interface from a bound source address), and its
//!   class D copies reach the LAN only because `--multicast-interface` sets
//!   their outgoing interface;
//! - `a`, `b`: multicast-capable members (`mc`): they join the class D
//!   address themselves and send to it;
//! - `c`, `d`: unicast-only members (`uc`): they send through the mcaster.
//!
//! The members are this test binary re-executed inside their namespace
//! (`ip netns exec NS <this binary> --exact netns_member_role`, with
//! `MS_NETNS_ROLE=member`); the role function returns at once otherwise.
//! A member prints `READY` once registered, takes `SEND <seq>` and `QUIT`
//! on stdin, and prints `RECV from=<addr> seq=<n> peer=<addr>`; it exits
//! on its own after `MEMBER_LIFETIME`.
//!
//! Checked: a message from a uc member reaches both mc members exactly
//! once (the mcaster's single class D copy) and the other uc member exactly
//! once (unicast from the mcaster); a message from an mc member reaches the
//! other mc member exactly once (straight IP multicast) and both uc members
//! exactly once (via the mcaster); every receiver sees the original sender
//! in the header, never the mcaster. All of it twice: without
//! authentication, then with one cluster key everywhere (the mcaster's from
//! `MS_CLUSTER_KEYS`, so its class D sockets verify the mc members'
//! datagrams too), where the mcaster must drop nothing for authentication.
//!
//! Needs root and `ip`; otherwise it prints `SKIPPED: <reason>` and passes,
//! unless `CI=true` and root, where a skip fails. All namespaces (and so all
//! links) are deleted by a drop guard, also on failure or panic, and stale
//! ones of dead test processes are deleted at start.

mod common;

use common::{mcaster_bin, Ev, TestMember};
use membership::id::{NodeId, ProtocolId};
use membership::mcaster_reg::{ReceiveMode, RegistrationEvent};
use membership::runtime::{spawn_core, MulticastOptions, SocketOptions, SpawnedCore};
use membership::wire::{AuthConfig, ClusterKey, KeyRing};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{ChildStdin, Stdio};
use std::time::Duration;
use testkit::netns::{self, ip, skip};
use testkit::{Lines, Proc};

const GROUP_IP: Ipv4Addr = Ipv4Addr::new(239, 77, 0, 1);
const GROUP_PORT: u16 = 7000;
const GROUP: NodeId = NodeId::v4(239, 77, 0, 1, GROUP_PORT);
const MCASTER_PORT: u16 = 7100;
/// Namespaces `ms-nt-<pid>-*` (`testkit::netns`).
const TAG: &str = "nt";
const SUBNET: [u8; 3] = [10, 231, 7];
/// Generous bound on every wait (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(15);
/// A member process exits on its own after this long.
const MEMBER_LIFETIME: Duration = Duration::from_secs(40);
/// The cluster key of the authenticated run.
const CLUSTER_KEY: &str = "3:a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
/// How long we keep listening for duplicates after a message arrived.
const QUIET: Duration = Duration::from_millis(1000);

fn host_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 231, 7, i)
}

// ---------------------------------------------------------------- member

/// The member role: does nothing unless `MS_NETNS_ROLE=member` (set only
/// by `mixed_lan_in_network_namespaces` for the processes it starts).
#[test]
fn netns_member_role() {
    if std::env::var("MS_NETNS_ROLE").as_deref() != Ok("member") {
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let kind = match var("MS_NETNS_KIND").as_str() {
        "mc" => ReceiveMode::Mc,
        _ => ReceiveMode::Uc,
    };
    let ip: Ipv4Addr = var("MS_NETNS_ADDR").parse().expect("MS_NETNS_ADDR");
    let mcaster: SocketAddr = var("MS_NETNS_MCASTER").parse().expect("MS_NETNS_MCASTER");
    let key = std::env::var("MS_NETNS_KEY").unwrap_or_default();
    let auth = (!key.is_empty()).then(|| {
        let k = ClusterKey::parse(&key).expect("MS_NETNS_KEY");
        AuthConfig::new(KeyRing::new(vec![k]).expect("a key ring"))
    });
    actix_rt::System::new().block_on(run_member(kind, ip, mcaster, auth));
}

async fn run_member(
    kind: ReceiveMode,
    ip: Ipv4Addr,
    mcaster: SocketAddr,
    auth: Option<AuthConfig>,
) {
    let local = NodeId::new(SocketAddr::from((ip, GROUP_PORT)));
    let options = if kind == ReceiveMode::Mc {
        // One socket on 0.0.0.0:GROUP_PORT joined to the group receives
        // both the class D datagrams and unicast to ip:GROUP_PORT; group
        // traffic is sent to the class D address itself.
        let mut o = SocketOptions::new(SocketAddr::from((Ipv4Addr::UNSPECIFIED, GROUP_PORT)));
        o.advertise = Some(local);
        o.multicast = Some(MulticastOptions::new(GROUP_IP, ip));
        o
    } else {
        let mut o = SocketOptions::new(local.addr());
        o.mcaster = Some(mcaster);
        o
    };
    let mut options = options;
    options.auth = auth;
    let SpawnedCore { handle, mut events } =
        spawn_core(options, &[ProtocolId::Mcaster, ProtocolId::Test], |ctx| {
            TestMember::new(ctx.now, local, mcaster, kind, GROUP, "netns-test")
        })
        .expect("bind the member socket");

    // Commands from stdin, read on a thread (it ends with stdin).
    let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().take(1000) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let out = |s: String| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    };
    let deadline = tokio::time::sleep(MEMBER_LIFETIME);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            e = events.recv() => match e {
                Some(Ev::Reg(RegistrationEvent::Registered { .. })) => out("READY".into()),
                Some(Ev::Reg(e)) => out(format!("REG {e:?}")),
                Some(Ev::Got { from, peer, seq }) => {
                    out(format!("RECV from={from} seq={seq} peer={peer}"))
                }
                None => break,
            },
            c = commands.recv() => match c.as_deref().map(str::split_whitespace).map(|mut w| (w.next(), w.next())) {
                Some((Some("SEND"), Some(n))) => {
                    let seq: u64 = n.parse().expect("SEND <seq>");
                    let _ = handle
                        .with_core(move |m: &mut TestMember, _| m.send(GROUP, seq))
                        .await;
                    out(format!("SENT seq={seq}"));
                }
                Some(_) => break,
                None => break,
            },
        }
    }
    handle.stop();
}

// ---------------------------------------------------------- orchestrator

/// The hosts: (name, last address byte, role). `testkit::netns::Lan::build`
/// gives them 10.231.7.1, .2, ... in this order.
const HOSTS: [(&str, u8, &str); 5] = [
    ("m", 1, "mcaster"),
    ("a", 2, "mc"),
    ("b", 3, "mc"),
    ("c", 4, "uc"),
    ("d", 5, "uc"),
];

/// The mcaster's host gets a second interface, a decoy, that its routing
/// table prefers for multicast: its class D copies reach the LAN only if
/// `--multicast-interface` picks eth0 for them too (IP_MULTICAST_IF), not
/// just for the joins.
fn add_decoy(ns: &str) -> Result<(), String> {
    let route = |verb: &str, dev: &str, metric: Option<&str>| {
        let mut args = vec!["-n", ns, "route", verb, "224.0.0.0/4", "dev", dev];
        args.extend(metric.map(|m| ["metric", m]).into_iter().flatten());
        ip(&args)
    };
    route("del", "eth0", None)?;
    route("add", "eth0", Some("100"))?;
    ip(&[
        "-n", ns, "link", "add", "decoy0", "type", "veth", "peer", "name", "decoy1",
    ])?;
    ip(&["-n", ns, "addr", "add", "10.232.7.1/24", "dev", "decoy0"])?;
    for dev in ["decoy0", "decoy1"] {
        ip(&["-n", ns, "link", "set", dev, "multicast", "on"])?;
        ip(&["-n", ns, "link", "set", dev, "up"])?;
    }
    route("add", "decoy0", Some("10"))
}

/// A message: (sender, seq, [(receiver, the UDP peer it must come from)]).
type Case = (&'static str, u64, [(&'static str, String); 3]);

/// A RECV line: (from, seq, peer).
fn parse_recv(line: &str) -> Option<(String, u64, String)> {
    // libtest may print "test netns_member_role ... " before the first line.
    let rest = &line[line.find("RECV ")? + 5..];
    let mut from = None;
    let mut seq = None;
    let mut peer = None;
    for w in rest.split_whitespace() {
        if let Some(v) = w.strip_prefix("from=") {
            from = Some(v.to_owned());
        } else if let Some(v) = w.strip_prefix("seq=") {
            seq = v.parse().ok();
        } else if let Some(v) = w.strip_prefix("peer=") {
            peer = Some(v.to_owned());
        }
    }
    Some((from?, seq?, peer?))
}

/// What the members received: (receiver host, from, seq) -> the peers it
/// came from.
type Got = BTreeMap<(&'static str, String, u64), Vec<String>>;

/// The receptions in the members' lines so far.
fn got(lines: &Lines) -> Got {
    let mut got = Got::new();
    for (host, _, _) in HOSTS.iter().skip(1) {
        for (from, seq, peer) in lines.of(host).iter().filter_map(|l| parse_recv(l)) {
            got.entry((*host, from, seq)).or_default().push(peer);
        }
    }
    got
}

/// How many members said `READY`.
fn ready_count(lines: &Lines) -> usize {
    lines.log.iter().filter(|l| l.ends_with("READY")).count()
}

#[test]
fn mixed_lan_in_network_namespaces() {
    if std::env::var("MS_NETNS_ROLE").is_ok() {
        return; // a member process runs only the role function
    }
    if let Err(reason) = netns::available() {
        return skip(&reason);
    }
    netns::delete_stale(TAG);
    let names = HOSTS.map(|h| h.0);
    let lan = match netns::Lan::build(TAG, SUBNET, &names) {
        Ok(lan) => lan,
        Err(e) => return skip(&format!("cannot build the namespaces: {e}")),
    };
    if let Err(e) = add_decoy(&lan.hosts[0].ns) {
        drop(lan);
        return skip(&format!("cannot add the decoy interface: {e}"));
    }
    let pid = std::process::id();
    // The same LAN twice: without authentication, then with a cluster key
    // everywhere (the mcaster's from MS_CLUSTER_KEYS).
    run_lan(&lan, None);
    run_lan(&lan, Some(CLUSTER_KEY));
    drop(lan);
    let left = netns::leftovers(TAG);
    assert!(left.is_empty(), "namespaces left: {left:?}");
    println!("netns mixed LAN ok (pid {pid})");
}

/// Starts the mcaster and the four members in the namespaces of `lan`,
/// checks the receptions, and stops them all. With `key`, everything is
/// authenticated with it.
fn run_lan(net: &netns::Lan, key: Option<&str>) {
    let host = |name: &str| net.host(name).expect("a host of the LAN");
    let mcaster = SocketAddr::from((host_ip(1), MCASTER_PORT));
    let mut lines = Lines::new();

    // The mcaster in `m`, probing multicast itself.
    let mut daemon = net.command(host("m"), &mcaster_bin());
    daemon
        .args([
            // On every interface, as on a real host: the kernel does not
            // pick the outgoing interface from a bound source address then.
            "--listen",
            &format!("0.0.0.0:{MCASTER_PORT}"),
            "--advertise",
            &mcaster.to_string(),
            "--multicast",
            "auto",
            "--multicast-interface",
            &host_ip(1).to_string(),
            "--summary-interval-secs",
            "0",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .envs(key.map(|k| ("MS_CLUSTER_KEYS", k)));
    let _daemon = lines.spawn("m", daemon);

    // The members: this binary, re-executed in its namespace.
    let exe = std::env::current_exe().expect("current_exe");
    let mut members: Vec<(&'static str, Proc, ChildStdin)> = Vec::new();
    for (name, i, role) in HOSTS.iter().skip(1) {
        let mut child = net.command(host(name), &exe);
        child
            .args([
                "--exact",
                "netns_member_role",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MS_NETNS_ROLE", "member")
            .env("MS_NETNS_KIND", role)
            .env("MS_NETNS_ADDR", host_ip(*i).to_string())
            .env("MS_NETNS_MCASTER", mcaster.to_string())
            .env("MS_NETNS_KEY", key.unwrap_or(""))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let child = child
            .spawn()
            .unwrap_or_else(|e| panic!("start member {name}: {e}"));
        let mut child = Proc::adopt(name, child);
        lines.attach(name, &mut child.child);
        let stdin = child.child.stdin.take().expect("piped");
        members.push((name, child, stdin));
    }

    let auth = if key.is_some() { "on (" } else { "off (" };
    let probed = lines.pump(PATIENCE, |l| {
        l.log.iter().any(|x| {
            x.contains("mcaster running") && x.contains("\"multicast\":true") && x.contains(auth)
        })
    });
    assert!(
        probed,
        "the mcaster did not start with a usable multicast probe:\n{}",
        lines.tail(usize::MAX)
    );
    let ready = lines.pump(PATIENCE, |l| ready_count(l) >= 4);
    assert!(
        ready,
        "not every member registered:\n{}",
        lines.tail(usize::MAX)
    );
    // Let the mcaster's class D join (on the first JOIN_GROUP) settle.
    lines.pump(QUIET, |_| false);

    let addr = |name: &str| {
        let i = HOSTS.iter().find(|h| h.0 == name).expect("host").1;
        SocketAddr::from((host_ip(i), GROUP_PORT)).to_string()
    };
    let mc_str = mcaster.to_string();
    let mut send = |name: &str, seq: u64| {
        let (_, _, stdin) = members.iter_mut().find(|m| m.0 == name).expect("member");
        writeln!(stdin, "SEND {seq}").expect("write SEND");
        stdin.flush().expect("flush");
    };

    // Each case: (sender, seq, [(receiver, expected UDP peer)]).
    let cases: [Case; 2] = [
        // uc -> mcaster: one class D copy to a and b, unicast to d.
        (
            "c",
            1,
            [
                ("a", mc_str.clone()),
                ("b", mc_str.clone()),
                ("d", mc_str.clone()),
            ],
        ),
        // mc -> class D: b straight from a, c and d via the mcaster.
        (
            "a",
            2,
            [
                ("b", addr("a")),
                ("c", mc_str.clone()),
                ("d", mc_str.clone()),
            ],
        ),
    ];
    for (sender, seq, receivers) in &cases {
        send(sender, *seq);
        let from = addr(sender);
        let all = lines.pump(PATIENCE, |l| {
            let got = got(l);
            receivers
                .iter()
                .all(|(r, _)| got.contains_key(&(*r, from.clone(), *seq)))
        });
        assert!(
            all,
            "message {seq} from {sender} not received by all:\n{}",
            lines.tail(usize::MAX)
        );
        // Any duplicate would arrive right after.
        lines.pump(QUIET, |_| false);
    }
    for (_, _, stdin) in &mut members {
        let _ = writeln!(stdin, "QUIT");
    }
    let mut eofs = 0;
    lines.pump(PATIENCE, |l| {
        eofs = l.log.iter().filter(|x| x.ends_with(": <eof>")).count();
        eofs >= 4
    });

    // Exactly once, from the original sender, through the expected peer;
    // nothing else received at all.
    let mut expected = BTreeMap::new();
    for (sender, seq, receivers) in &cases {
        for (r, peer) in receivers {
            expected.insert((*r, addr(sender), *seq), vec![peer.clone()]);
        }
    }
    let log = lines.tail(usize::MAX);
    let got = got(&lines);
    assert_eq!(got, expected, "receptions differ:\n{log}");
    assert!(
        !got.keys().any(|(_, from, _)| *from == mc_str),
        "the mcaster named as a sender"
    );
    assert!(
        !log.contains("failed authentication") && !log.contains("no cluster key, so"),
        "the mcaster dropped datagrams for authentication:\n{log}"
    );
    drop(members);
    drop(_daemon);
}
