//! The `mcaster` binary with a cluster key (DESIGN.md sections 4 and 8), as
//! a real process on loopback, with members driven from this test through
//! the runtime (`spawn_core` with `SocketOptions::auth`, and `SetKeyRing`
//! for rotation) and the member registration.
//!
//! Checked:
//! - an mcaster with the members' key registers them (its answers are
//!   signed, or the members would drop them) and relays their signed group
//!   traffic, which verifies at every receiver as the original sender's;
//! - a member with a wrong key gets nothing through (no answer, nothing
//!   relayed, nothing received) while the mcaster's `wire_bad_tag` drop
//!   counter rises and it warns about failed authentication;
//! - an mcaster without a key drops signed traffic (`wire_unexpected_auth`)
//!   and says in its log that it has no cluster key;
//! - key rotation without a restart: the mcaster's ring is reloaded from
//!   its config file on SIGHUP, the members' with `SetKeyRing`, and
//!   traffic flows at every step; a member left on the retired key is
//!   dropped (`wire_unknown_key`).
//!
//! Only loopback addresses; every wait is bounded in count and time.

mod common;

use common::{mcaster_bin, Ev, TestMember};
use membership::id::{NodeId, ProtocolId};
use membership::mcaster_reg::{ReceiveMode, RegistrationEvent};
use membership::runtime::{spawn_core, CoreHandle, SetKeyRing, SocketOptions, SpawnedCore};
use membership::wire::{AuthConfig, ClusterKey, KeyRing};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const GROUP: NodeId = NodeId::v4(239, 77, 0, 2, 7000);
/// Generous bound on every wait (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

const K1: &str = "1:5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
const K2: &str = "2:7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c";
/// Key id 1 again, with another secret.
const K1_WRONG: &str = "1:0badbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadbad";

fn ring(specs: &[&str]) -> KeyRing {
    KeyRing::new(
        specs
            .iter()
            .map(|s| ClusterKey::parse(s).unwrap())
            .collect(),
    )
    .unwrap()
}

fn free_port() -> u16 {
    testkit::free_udp_port("127.0.0.1")
}

/// The mcaster process and its log (JSON lines on stderr, read on a
/// thread). Killed when dropped, also when a test fails.
struct Daemon {
    child: testkit::Proc,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Daemon {
    fn start(listen: SocketAddr, args: &[&str]) -> Daemon {
        let mut cmd = Command::new(mcaster_bin());
        cmd.args(["--listen", &listen.to_string()])
            .args(["--multicast", "off", "--summary-interval-secs", "1"])
            .args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("MS_CLUSTER_KEYS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = testkit::Proc::spawn("mcaster", &mut cmd);
        let stderr = child.child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits (bounded) for a new log line matching `f`, and answers it.
    async fn wait_line(&mut self, what: &str, mut f: impl FnMut(&str) -> bool) -> String {
        for _ in 0..(PATIENCE.as_millis() / POLL.as_millis()) {
            while let Ok(line) = self.lines.try_recv() {
                self.log.push(line.clone());
                if f(&line) {
                    return line;
                }
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("mcaster log: no {what}:\n{}", self.log.join("\n"));
    }

    /// Waits for a summary in which wire drop counter `kind` exceeds
    /// `above`; answers its value.
    async fn wait_drops(&mut self, kind: &str, above: u64) -> u64 {
        let key = format!("wire_{kind}=");
        let line = self
            .wait_line(&format!("summary with {key} > {above}"), |l| {
                is_summary(l) && counter(l, &key).is_some_and(|v| v > above)
            })
            .await;
        counter(&line, &key).unwrap_or(0)
    }

    /// Like [`Daemon::wait_line`], but a line already seen counts too.
    async fn wait_logged(&mut self, what: &str, mut f: impl FnMut(&str) -> bool) -> String {
        if let Some(l) = self.log.iter().find(|l| f(l)) {
            return l.clone();
        }
        self.wait_line(what, f).await
    }

    /// Whether a line seen so far contains `text`.
    fn logged(&self, text: &str) -> bool {
        self.log.iter().any(|l| l.contains(text))
    }

    fn signal(&self, sig: &str) {
        self.child.signal(sig);
    }
}

fn is_summary(line: &str) -> bool {
    line.contains("\"message\":\"summary\"")
}

/// The number after `key` (e.g. `wire_bad_tag=`) in a line.
fn counter(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

struct Ep {
    handle: CoreHandle<TestMember>,
    events: UnboundedReceiver<Ev>,
}

impl Ep {
    fn node(&self) -> NodeId {
        self.handle.local
    }
}

/// A uc member on 127.0.0.`i` signing with `keys` (none: unsigned).
fn start_member(i: u8, mcaster: SocketAddr, keys: &[&str]) -> Ep {
    let mut o = SocketOptions::new(SocketAddr::from((Ipv4Addr::new(127, 0, 0, i), 0)));
    o.mcaster = Some(mcaster);
    o.auth = (!keys.is_empty()).then(|| AuthConfig::new(ring(keys)));
    let SpawnedCore { handle, events } =
        spawn_core(o, &[ProtocolId::Mcaster, ProtocolId::Test], |ctx| {
            TestMember::new(ctx.now, ctx.local, mcaster, ReceiveMode::Uc, GROUP, "auth")
        })
        .expect("bind a member");
    Ep { handle, events }
}

async fn registered(ep: &mut Ep) {
    let r = tokio::time::timeout(PATIENCE, async {
        while let Some(e) = ep.events.recv().await {
            if matches!(e, Ev::Reg(RegistrationEvent::Registered { .. })) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(r, Ok(true)), "{} never registered", ep.node());
}

/// `sender` sends every 100 ms until each of `receivers` got one of its
/// messages, relayed by `mcaster` and naming `sender` as the source.
async fn flows(sender: &Ep, receivers: &mut [&mut Ep], mcaster: NodeId) {
    let from = sender.node();
    let mut waiting: BTreeSet<usize> = (0..receivers.len()).collect();
    for _ in 0..(PATIENCE.as_millis() / 100) {
        if waiting.is_empty() {
            return;
        }
        sender
            .handle
            .with_core(|e: &mut TestMember, _| e.send_next(GROUP))
            .await
            .expect("sender alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (i, r) in receivers.iter_mut().enumerate() {
            while let Ok(e) = r.events.try_recv() {
                if let Ev::Got { from: f, peer, .. } = e {
                    assert_eq!(peer, mcaster, "copies come from the mcaster");
                    if f == from {
                        waiting.remove(&i);
                    }
                }
            }
        }
    }
    assert!(
        waiting.is_empty(),
        "no relayed message from {from} at {:?}",
        waiting
            .iter()
            .map(|i| receivers[*i].node())
            .collect::<Vec<_>>()
    );
}

/// Every member's messages reach every other member.
async fn all_flow(eps: &mut [Ep], mcaster: NodeId) {
    for i in 0..eps.len() {
        let (before, rest) = eps.split_at_mut(i);
        let (sender, after) = rest.split_first_mut().expect("sender");
        let mut others: Vec<&mut Ep> = before.iter_mut().chain(after.iter_mut()).collect();
        flows(sender, &mut others, mcaster).await;
    }
}

/// Auth failures a member's socket counted (none expected from a keyed
/// mcaster's answers and forwards).
async fn member_auth_drops(ep: &Ep) -> u64 {
    let s = ep.handle.socket_stats().await.expect("member socket");
    ["missing_auth", "bad_tag", "unknown_key", "unexpected_auth"]
        .iter()
        .map(|k| s.drops(k))
        .sum()
}

#[actix_rt::test]
async fn keyed_mcaster_relays_signed_traffic_and_drops_a_wrong_key() {
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mcaster = NodeId::new(listen);
    let mut daemon = Daemon::start(listen, &["--cluster-key", K1]);
    daemon
        .wait_line("start", |l| {
            l.contains("mcaster running") && l.contains("key ids 1, signing with 1")
        })
        .await;
    // Three members with the key: registered (the answers verified) and
    // their traffic relayed, verified at each receiver.
    let mut eps: Vec<Ep> = (2..=4).map(|i| start_member(i, listen, &[K1])).collect();
    for ep in &mut eps {
        registered(ep).await;
    }
    all_flow(&mut eps, mcaster).await;
    for ep in &eps {
        assert_eq!(member_auth_drops(ep).await, 0, "{}", ep.node());
    }

    // A member with key id 1 but the wrong secret.
    let mut intruder = start_member(5, listen, &[K1_WRONG]);
    let first = daemon.wait_drops("bad_tag", 0).await;
    for _ in 0..5 {
        intruder
            .handle
            .with_core(|e: &mut TestMember, _| e.send_next(GROUP))
            .await
            .expect("intruder alive");
    }
    // The counter rises past what the intruder sent since.
    let later = daemon.wait_drops("bad_tag", first + 4).await;
    assert!(later >= first + 5);
    daemon
        .wait_logged("authentication warning", |l| {
            l.contains("failed authentication") && l.contains("bad_tag=")
        })
        .await;
    // Nothing came back to it, and the members got nothing from it; they
    // still talk to each other.
    all_flow(&mut eps, mcaster).await;
    let stats = intruder
        .handle
        .socket_stats()
        .await
        .expect("intruder socket");
    assert_eq!(
        stats.datagrams_received, 0,
        "the mcaster answered a forgery"
    );
    assert!(intruder.events.try_recv().is_err(), "intruder got an event");
    for ep in &mut eps {
        while let Ok(e) = ep.events.try_recv() {
            if let Ev::Got { from, .. } = e {
                assert_ne!(from, intruder.node(), "a forgery was relayed");
            }
        }
    }
    assert!(!daemon.logged(&K1[2..]), "the secret is in the log");
    intruder.handle.stop();
    for ep in &eps {
        ep.handle.stop();
    }
}

#[actix_rt::test]
async fn mcaster_without_the_key_drops_signed_traffic() {
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut daemon = Daemon::start(listen, &[]);
    daemon
        .wait_line("start", |l| {
            l.contains("mcaster running") && l.contains("off (no cluster key)")
        })
        .await;
    let mut keyed = start_member(6, listen, &[K1]);
    // Its JOIN_GROUPs (one a second) are dropped, counted and explained.
    daemon.wait_drops("unexpected_auth", 1).await;
    daemon
        .wait_logged("no-key warning", |l| {
            l.contains("this mcaster has no cluster key") && l.contains("--cluster-key")
        })
        .await;
    let stats = keyed.handle.socket_stats().await.expect("member socket");
    assert_eq!(stats.datagrams_received, 0, "the mcaster answered");
    assert!(keyed.events.try_recv().is_err(), "registered without a key");
    keyed.handle.stop();
}

#[actix_rt::test]
async fn key_rotation_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("mcaster-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("mcaster.toml");
    let write_keys = |keys: &[&str]| {
        let list: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        std::fs::write(&path, format!("cluster_keys = [{}]\n", list.join(", ")))
            .expect("write config");
    };
    write_keys(&[K1]);
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mcaster = NodeId::new(listen);
    let config = path.to_str().expect("utf-8 path").to_string();
    let mut daemon = Daemon::start(listen, &["--config", &config]);
    daemon
        .wait_line("start", |l| l.contains("mcaster running"))
        .await;
    let mut eps: Vec<Ep> = (7..=9).map(|i| start_member(i, listen, &[K1])).collect();
    for ep in &mut eps {
        registered(ep).await;
    }
    all_flow(&mut eps, mcaster).await;

    let set = |ep: &Ep, keys: &[&str]| ep.handle.socket.send(SetKeyRing(ring(keys)));
    // Step 1: the new key second everywhere.
    write_keys(&[K1, K2]);
    daemon.signal("HUP");
    daemon
        .wait_line("reload 1", |l| {
            l.contains("cluster key ring reloaded") && l.contains("key ids 1,2, signing with 1")
        })
        .await;
    for ep in &eps {
        assert!(set(ep, &[K1, K2]).await.expect("socket"));
    }
    all_flow(&mut eps, mcaster).await;
    // Step 2: the new key first everywhere (the mcaster first: members
    // still signing with the old key get through meanwhile).
    write_keys(&[K2, K1]);
    daemon.signal("HUP");
    daemon
        .wait_line("reload 2", |l| {
            l.contains("cluster key ring reloaded") && l.contains("signing with 2")
        })
        .await;
    all_flow(&mut eps, mcaster).await;
    for ep in &eps {
        assert!(set(ep, &[K2, K1]).await.expect("socket"));
    }
    all_flow(&mut eps, mcaster).await;
    // Step 3: the old key removed; a member left on it is dropped.
    write_keys(&[K2]);
    daemon.signal("HUP");
    daemon
        .wait_line("reload 3", |l| {
            l.contains("cluster key ring reloaded") && l.contains("key ids 2, signing with 2")
        })
        .await;
    for ep in &eps[..2] {
        assert!(set(ep, &[K2]).await.expect("socket"));
    }
    assert!(set(&eps[2], &[K1]).await.expect("socket"));
    // Its refreshes are dropped; so are its messages.
    let base = daemon.wait_drops("unknown_key", 0).await;
    for _ in 0..3 {
        eps[2]
            .handle
            .with_core(|e: &mut TestMember, _| e.send_next(GROUP))
            .await
            .expect("member alive");
    }
    daemon.wait_drops("unknown_key", base + 2).await;
    {
        let (a, rest) = eps.split_at_mut(1);
        let mut b: Vec<&mut Ep> = rest[..1].iter_mut().collect();
        flows(&a[0], &mut b, mcaster).await;
    }
    let stale = eps[2].node();
    for ep in &mut eps[..2] {
        while let Ok(e) = ep.events.try_recv() {
            if let Ev::Got { from, .. } = e {
                assert_ne!(from, stale, "a retired key got through");
            }
        }
        assert_eq!(member_auth_drops(ep).await, 0, "{}", ep.node());
    }
    for ep in &eps {
        ep.handle.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
