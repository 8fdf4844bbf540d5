//! The `mcaster` binary as a real process (DESIGN.md section 9), with four
//! unicast-only endpoints on 127.0.0.2-5 driven from this test through the
//! runtime (`spawn_core`, `SocketOptions::mcaster` routing their group
//! traffic to the mcaster) and the member registration.
//!
//! Checked: a group message from one endpoint reaches the other three
//! naming its original sender (the mcaster only as UDP peer); a stopped
//! endpoint expires (its address then gets no more copies); after SIGKILL
//! and a restart of the mcaster, traffic flows again without restarting
//! any endpoint; `--help`, bad flags (exit 2) and SIGTERM (graceful, final
//! counter summary). Only loopback addresses; every wait is bounded.

mod common;

use common::{mcaster_bin, Ev, TestMember};
use membership::id::{NodeId, ProtocolId};
use membership::mcaster_reg::{ReceiveMode, RegistrationEvent};
use membership::runtime::{spawn_core, CoreHandle, SocketOptions, SpawnedCore};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::{Lines, Proc};
use tokio::sync::mpsc::UnboundedReceiver;

const GROUP: NodeId = NodeId::v4(239, 77, 0, 1, 7000);
const MEMBER_TTL_MS: u64 = 1500;
/// Generous bound on every wait (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(10);

/// A free UDP port on 127.0.0.1.
fn free_port() -> u16 {
    testkit::free_udp_port("127.0.0.1")
}

/// Starts the mcaster; it is killed when dropped (also when a test fails).
fn start_mcaster(listen: SocketAddr) -> Proc {
    let mut cmd = Command::new(mcaster_bin());
    cmd.args([
        "--listen",
        &listen.to_string(),
        "--multicast",
        "off",
        "--member-ttl-ms",
        &MEMBER_TTL_MS.to_string(),
        "--summary-interval-secs",
        "1",
    ])
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    Proc::spawn("mcaster", &mut cmd)
}

struct Ep {
    handle: CoreHandle<TestMember>,
    events: UnboundedReceiver<Ev>,
}

fn start_endpoint(i: u8, mcaster: SocketAddr) -> Ep {
    let mut o = SocketOptions::new(SocketAddr::from((Ipv4Addr::new(127, 0, 0, i), 0)));
    o.mcaster = Some(mcaster);
    let SpawnedCore { handle, events } =
        spawn_core(o, &[ProtocolId::Mcaster, ProtocolId::Test], |ctx| {
            TestMember::new(
                ctx.now,
                ctx.local,
                mcaster,
                ReceiveMode::Uc,
                GROUP,
                "process-test",
            )
        })
        .expect("bind an endpoint");
    Ep { handle, events }
}

/// Waits (bounded) for an event matching `f` on `ep`.
async fn wait_for(ep: &mut Ep, what: &str, mut f: impl FnMut(&Ev) -> bool) {
    let r = tokio::time::timeout(PATIENCE, async {
        while let Some(e) = ep.events.recv().await {
            if f(&e) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(r, Ok(true)), "{}: no {what}", ep.handle.local);
}

/// `sender` sends every 100 ms until each of `receivers` got one of its
/// messages, relayed by `mcaster` and naming `sender` as the source.
async fn flows(sender: &Ep, receivers: &mut [&mut Ep], mcaster: NodeId) {
    let from = sender.handle.local;
    let mut waiting: BTreeSet<usize> = (0..receivers.len()).collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !waiting.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no relayed message from {from} at {:?}",
            waiting
                .iter()
                .map(|i| receivers[*i].handle.local)
                .collect::<Vec<_>>()
        );
        sender
            .handle
            .with_core(|e: &mut TestMember, _| e.send_next(GROUP))
            .await
            .expect("sender alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (i, r) in receivers.iter_mut().enumerate() {
            while let Ok(e) = r.events.try_recv() {
                if let Ev::Got { from: f, peer, .. } = e {
                    assert_ne!(f, r.handle.local, "received its own message");
                    assert_eq!(peer, mcaster, "copies come from the mcaster");
                    if f == from {
                        waiting.remove(&i);
                    }
                }
            }
        }
    }
}

#[actix_rt::test]
async fn relays_expires_and_survives_a_restart() {
    let mcaster = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mcaster_id = NodeId::new(mcaster);
    let mut daemon = start_mcaster(mcaster);
    let mut eps: Vec<Ep> = (2..=5).map(|i| start_endpoint(i, mcaster)).collect();
    for ep in &mut eps {
        wait_for(ep, "registration", |e| {
            matches!(e, Ev::Reg(RegistrationEvent::Registered { .. }))
        })
        .await;
    }

    // One message reaches the other three, naming its original sender.
    {
        let (first, rest) = eps.split_at_mut(1);
        let mut others: Vec<&mut Ep> = rest.iter_mut().collect();
        flows(&first[0], &mut others, mcaster_id).await;
    }

    // Stop the last endpoint: once it expired, its address gets nothing.
    let gone = eps.pop().expect("four endpoints");
    let gone_addr = gone.handle.local.addr();
    gone.handle.stop();
    drop(gone);
    let mut raw = None;
    for _ in 0..100 {
        if let Ok(s) = StdUdpSocket::bind(gone_addr) {
            raw = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let raw = raw.expect("rebind the stopped endpoint's address");
    raw.set_nonblocking(true).expect("non-blocking");
    tokio::time::sleep(Duration::from_millis(MEMBER_TTL_MS + 1500)).await;
    let mut buf = [0u8; 2048];
    while raw.recv_from(&mut buf).is_ok() {}
    {
        let (first, rest) = eps.split_at_mut(1);
        let mut others: Vec<&mut Ep> = rest.iter_mut().collect();
        flows(&first[0], &mut others, mcaster_id).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        raw.recv_from(&mut buf).is_err(),
        "the stopped endpoint still gets copies: it did not expire"
    );

    // SIGKILL the mcaster and start a new one on the same address: the
    // endpoints' refreshes teach it the group again.
    daemon.kill();
    drop(daemon);
    let _daemon = start_mcaster(mcaster);
    let (first, rest) = eps.split_at_mut(1);
    let mut others: Vec<&mut Ep> = rest.iter_mut().collect();
    flows(&first[0], &mut others, mcaster_id).await;
    let (last, before) = eps.split_last_mut().expect("endpoints");
    let mut others: Vec<&mut Ep> = before.iter_mut().collect();
    flows(last, &mut others, mcaster_id).await;
    for ep in &eps {
        ep.handle.stop();
    }
}

#[test]
fn help_bad_flags_and_sigterm() {
    let bin = mcaster_bin();
    let help = Command::new(&bin)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--listen") && text.contains("--config"),
        "{text}"
    );
    assert!(
        text.contains("--cluster-key") && text.contains("--multicast-interface"),
        "{text}"
    );

    let bad = Command::new(&bin)
        .args(["--max-groups", "many"])
        .output()
        .expect("run with a bad flag");
    assert_eq!(bad.status.code(), Some(2));
    let bad = Command::new(&bin)
        .args(["--config", "/nonexistent/mcaster.toml"])
        .output()
        .expect("run with a missing config");
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);
    // A port in use is unusable settings too: exit 2, one line.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let bad = Command::new(&bin)
        .args(["--listen", &taken_addr, "--multicast", "off"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run on a port in use");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot listen"), "{err}");
    // An unknown key in the file.
    let dir = std::env::temp_dir().join(format!("mcaster-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("typo.toml");
    std::fs::write(&path, "member_ttl = 5000\n").expect("write");
    let bad = Command::new(&bin)
        .args(["--config", path.to_str().expect("utf-8")])
        .output()
        .expect("run with an unknown key");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown key `member_ttl`") && err.contains("member_ttl_ms"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut cmd = Command::new(&bin);
    cmd.args(["--listen", &listen.to_string(), "--multicast", "off"])
        .env("RUST_LOG", "info");
    // Read its log; wait (bounded) until it runs.
    let mut lines = Lines::new();
    let mut child = lines.spawn("mcaster", cmd);
    let running = lines.pump(PATIENCE, |l| {
        l.log.iter().any(|x| x.contains("mcaster running"))
    });
    assert!(running, "mcaster did not start: {}", lines.tail(usize::MAX));
    child.signal("TERM");
    let exit = child.wait_exit(Duration::from_secs(10));
    assert!(exit.is_some(), "mcaster ignored SIGTERM");
    lines.pump(PATIENCE, |l| {
        l.log.iter().any(|x| x == "mcaster (stderr): <eof>")
    });
    let log = lines.tail(usize::MAX);
    assert_eq!(exit, Some(Some(0)), "{log}");
    assert!(
        log.contains("SIGTERM") && log.contains("final summary"),
        "{log}"
    );
}
