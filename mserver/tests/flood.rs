//! Bad input and attacks at every daemon (docs/security.md): 100,000
//! datagrams at each daemon's UDP port (the mserver, the mcaster, the
//! member interface's mserver link), of every kind:
//!
//! - random bytes of random lengths;
//! - valid headers (right CRC) with random bodies, for every protocol,
//!   without a tag;
//! - forgeries: valid headers with the AUTH flag, random bodies sealed
//!   with the right key id but a wrong secret (`bad_tag`);
//! - single-bit flips and truncations of datagrams sealed with the real
//!   key (the test seals them with the daemons' own codec);
//! - replays: one datagram sealed with the real key, sent once and then
//!   replayed again and again;
//! - datagrams sealed with a removed key (an id the ring no longer holds).
//!
//! Checked: no daemon exits, each one's RSS (from /proc) grows by less
//! than [`RSS_GROWTH_BOUND`], with the key ring the mservers' view, the
//! application groups' registry and the group's member list do not change,
//! the drops are counted, and the member interface still serves a real
//! client. A second test does the same without a key ring (where valid
//! headers with random bodies reach every protocol's decoder): no crash,
//! bounded memory, the MI serves on. A third test attacks the MI's Unix
//! socket: garbage, oversized and half-written frames and 1,000
//! connections that never speak; a real client is served throughout.
#![allow(clippy::disallowed_methods)] // process tests use the wall clock

mod common;

use common::{mcaster_bin, msctl_bin, mserver_bin, Proc, PATIENCE};
use membership::id::{Incarnation, NodeId, ProtocolId};
use membership::wire::{AuthConfig, ClusterKey, Header, KeyRing, WireCodec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::cluster::{mcaster_command, mserver_command, wait_agreement};

const K1: &str = "1:11111111111111111111111111111111";
/// Datagrams sent at each daemon's port.
const PER_DAEMON: usize = 100_000;
/// The most a daemon's resident memory may grow during the flood.
const RSS_GROWTH_BOUND: u64 = 64 * 1024 * 1024;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ms-flood-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn mi_bin() -> PathBuf {
    testkit::bin("member-interface", "member-interface")
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn msctl(args: &[&str], key: Option<&str>) -> Option<Value> {
    let mut cmd = Command::new(msctl_bin());
    cmd.args(["--timeout-ms", "1000"])
        .env_remove("MS_CLUSTER_KEYS");
    if let Some(k) = key {
        cmd.args(["--cluster-key", k]);
    }
    let out = cmd.args(args).stdin(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn ring(spec: &str) -> KeyRing {
    KeyRing::new(vec![ClusterKey::parse(spec).expect("key")]).expect("ring")
}

/// A header from a made-up sender.
fn header(rng: &mut ChaCha8Rng, protocol: ProtocolId, to: SocketAddr) -> Header {
    Header {
        protocol,
        relayed: false,
        source: NodeId::v4(127, 0, 0, 99, rng.random_range(1000..60000)),
        source_incarnation: Incarnation::from_parts(rng.random(), rng.random()),
        destination: NodeId::new(to),
    }
}

fn random_body(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let n = match rng.random_range(0..10) {
        0 => rng.random_range(0..4000),
        _ => rng.random_range(0..200),
    };
    (0..n).map(|_| rng.random()).collect()
}

/// The flood at one address: `PER_DAEMON` datagrams of every kind.
fn flood(to: SocketAddr, keyed: bool, seed: u64) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plain = WireCodec::new();
    let mut real = WireCodec::with_auth(AuthConfig::new(ring(K1)));
    let mut forger =
        WireCodec::with_auth(AuthConfig::new(ring("1:99999999999999999999999999999999")));
    let mut removed =
        WireCodec::with_auth(AuthConfig::new(ring("7:77777777777777777777777777777777")));
    let mut replayed = Vec::new();
    real.seal(
        &header(&mut rng, ProtocolId::Test, to),
        b"replay me",
        &mut replayed,
    )
    .expect("seal");
    let mut buf = Vec::new();
    for i in 0..PER_DAEMON {
        let protocol = ProtocolId::ALL[i % ProtocolId::ALL.len()];
        let h = header(&mut rng, protocol, to);
        let body = random_body(&mut rng);
        let kind = rng.random_range(0..100);
        let datagram: Vec<u8> = match kind {
            0..=19 => {
                let n = rng.random_range(0..1500);
                (0..n).map(|_| rng.random()).collect()
            }
            20..=39 => {
                plain.seal(&h, &body, &mut buf).expect("seal");
                buf.clone()
            }
            40..=54 => {
                forger.seal(&h, &body, &mut buf).expect("seal");
                buf.clone()
            }
            55..=69 => {
                let codec = if keyed { &mut real } else { &mut plain };
                codec.seal(&h, &body, &mut buf).expect("seal");
                let bit = rng.random_range(0..buf.len() * 8);
                buf[bit / 8] ^= 1 << (bit % 8);
                buf.clone()
            }
            70..=84 => {
                let codec = if keyed { &mut real } else { &mut plain };
                codec.seal(&h, &body, &mut buf).expect("seal");
                let n = rng.random_range(0..buf.len());
                buf[..n].to_vec()
            }
            85..=94 => replayed.clone(),
            _ => {
                removed.seal(&h, &body, &mut buf).expect("seal");
                buf.clone()
            }
        };
        let _ = sock.send_to(&datagram, to);
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

struct Setup {
    dir: PathBuf,
    mcaster: Proc,
    servers: Vec<Proc>,
    addrs: Vec<SocketAddr>,
    mcaster_addr: SocketAddr,
    mi: Proc,
    mi_udp: SocketAddr,
    mi_sock: PathBuf,
    member: Proc,
    key: Option<&'static str>,
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn setup(name: &str, keyed: bool) -> Setup {
    let dir = temp_dir(name);
    let keys = dir.join("keys");
    write_private(&keys, &format!("{K1}\n"));
    let key_args: Vec<String> = if keyed {
        vec!["--key-file".into(), keys.display().to_string()]
    } else {
        vec![]
    };
    let mcaster_addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let group_addr = SocketAddr::from(([239, 255, 73, 1], testkit::free_port()));
    let port = testkit::free_port();
    let mut cmd = mcaster_command(&mcaster_bin(), mcaster_addr);
    cmd.args(&key_args);
    let mcaster = Proc::spawn_logged("mcaster", &mut cmd, &dir.join("mcaster.log"));
    let base = if keyed { 40 } else { 50 };
    let addrs: Vec<SocketAddr> = (0..2)
        .map(|i| SocketAddr::from(([127, 0, 0, base + i], port)))
        .collect();
    let mut servers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut cmd = mserver_command(&mserver_bin(), name, group_addr, *addr, mcaster_addr);
        cmd.args(&key_args).env("RUST_LOG", "warn");
        servers.push(Proc::spawn_logged(
            &format!("mserver {i}"),
            &mut cmd,
            &dir.join(format!("mserver-{i}.log")),
        ));
        std::thread::sleep(Duration::from_millis(300));
    }
    let key = keyed.then_some(K1);
    let want: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    wait_agreement(PATIENCE, Duration::from_millis(100), &want, || {
        addrs
            .iter()
            .map(|a| msctl(&["--server", &a.to_string(), "view", "--json"], key))
            .collect()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let mi_udp = SocketAddr::from(([127, 0, 0, base + 5], testkit::free_port()));
    let mi_sock = dir.join("mi.sock");
    let mut cmd = Command::new(mi_bin());
    cmd.args([
        "--mserver",
        &addrs[0].to_string(),
        "--listen",
        &mi_udp.to_string(),
    ])
    .arg("--socket")
    .arg(&mi_sock)
    .args(&key_args)
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null());
    let mi = Proc::spawn_logged("member-interface", &mut cmd, &dir.join("mi.log"));
    assert!(
        testkit::wait::until_true(PATIENCE, Duration::from_millis(50), || mi_sock.exists()),
        "MI socket never appeared"
    );
    let created = testkit::wait::until_true(PATIENCE, Duration::from_millis(200), || {
        Command::new(msctl_bin())
            .arg("--mi")
            .arg(&mi_sock)
            .args(["create", "flooded"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(created, "the group was never created");
    let mut cmd = Command::new(msctl_bin());
    cmd.arg("--mi")
        .arg(&mi_sock)
        .args(["join", "flooded", "--name", "steady", "--json"])
        .stdin(Stdio::null());
    let member = Proc::spawn_logged("member", &mut cmd, &dir.join("member.log"));
    let s = Setup {
        dir,
        mcaster,
        servers,
        addrs,
        mcaster_addr,
        mi,
        mi_udp,
        mi_sock,
        member,
        key,
    };
    assert!(
        testkit::wait::until_true(PATIENCE, Duration::from_millis(100), || app_view(&s)
            .is_some_and(|v| v["members"].as_array().is_some_and(|m| m.len() == 1))),
        "the member never joined"
    );
    s
}

/// `msctl --mi SOCK view flooded --json`: a real client of the MI.
fn app_view(s: &Setup) -> Option<Value> {
    let mut cmd = Command::new(msctl_bin());
    let out = cmd
        .args(["--timeout-ms", "2000", "--mi"])
        .arg(&s.mi_sock)
        .args(["view", "flooded", "--json"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())?
}

/// What must not change: each mserver's view and registry.
fn state(s: &Setup) -> Vec<Option<Value>> {
    let mut out = Vec::new();
    for a in &s.addrs {
        let v = msctl(&["--server", &a.to_string(), "view", "--json"], s.key);
        out.push(v.map(|v| serde_json::json!([v["view"], v["coordinator"], v["members"]])));
        out.push(msctl(
            &["--server", &a.to_string(), "groups", "--json"],
            s.key,
        ));
    }
    out
}

fn drops_total(s: &Setup, a: SocketAddr) -> u64 {
    msctl(&["--server", &a.to_string(), "stats", "--json"], s.key)
        .and_then(|v| {
            v["drops"]
                .as_object()
                .map(|m| m.values().filter_map(Value::as_u64).sum())
        })
        .unwrap_or(0)
}

fn run_flood(name: &str, keyed: bool) {
    let mut s = setup(name, keyed);
    let before = state(&s);
    assert!(before.iter().all(Option::is_some), "{before:?}");
    let drops_before = drops_total(&s, s.addrs[0]);
    let mut pids: Vec<(String, u32)> = vec![
        ("mcaster".into(), s.mcaster.pid()),
        ("mi".into(), s.mi.pid()),
    ];
    for (i, p) in s.servers.iter().enumerate() {
        pids.push((format!("mserver {i}"), p.pid()));
    }
    let rss_before: Vec<u64> = pids.iter().map(|(_, p)| rss(*p)).collect();
    let targets = [
        ("mserver", s.addrs[0]),
        ("mcaster", s.mcaster_addr),
        ("mi", s.mi_udp),
    ];
    for (k, (_, to)) in targets.iter().enumerate() {
        flood(*to, keyed, 1000 + k as u64);
    }
    std::thread::sleep(Duration::from_millis(500));
    for (i, (name, pid)) in pids.iter().enumerate() {
        let after = rss(*pid);
        eprintln!(
            "{name}: RSS {} KiB -> {} KiB",
            rss_before[i] / 1024,
            after / 1024
        );
        assert!(after > 0, "{name} is gone");
        assert!(
            after < rss_before[i] + RSS_GROWTH_BOUND,
            "{name}: RSS grew from {} to {} bytes",
            rss_before[i],
            after
        );
    }
    for p in s.servers.iter_mut().chain([&mut s.mcaster, &mut s.mi]) {
        assert_eq!(p.try_exit(), None, "a daemon exited:\n{}", p.log_tail(20));
    }
    assert_eq!(s.member.try_exit(), None, "the member's msctl exited");
    // The MI serves a real client.
    let v = testkit::wait::until(PATIENCE, Duration::from_millis(100), || app_view(&s));
    assert!(
        v.is_some(),
        "the MI does not serve after the flood:\n{}",
        s.mi.log_tail(20)
    );
    if keyed {
        assert_eq!(state(&s), before, "a view, registry or group list changed");
        let drops = drops_total(&s, s.addrs[0]);
        assert!(
            drops >= drops_before + 10_000,
            "drops {drops_before} -> {drops}"
        );
    }
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn a_flood_at_every_daemon_changes_nothing_with_a_key_ring() {
    run_flood("floodkeyed", true);
}

#[test]
fn a_flood_at_every_daemon_without_a_key_ring_crashes_nothing() {
    run_flood("floodplain", false);
}

#[test]
fn the_mi_socket_survives_garbage_and_idle_connections() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let s = setup("flood-mi-socket", false);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut idle = Vec::new();
    for _ in 0..1000 {
        if let Ok(c) = UnixStream::connect(&s.mi_sock) {
            idle.push(c);
        }
    }
    assert!(idle.len() >= 900, "only {} idle connections", idle.len());
    for i in 0..300 {
        let Ok(mut c) = UnixStream::connect(&s.mi_sock) else {
            continue;
        };
        let _ = c.set_write_timeout(Some(Duration::from_millis(200)));
        let frame: Vec<u8> = match i % 4 {
            // Garbage.
            0 => (0..rng.random_range(1..2000))
                .map(|_| rng.random())
                .collect(),
            // An oversized frame: a prefix far above MAX_FRAME.
            1 => {
                let mut f = u32::MAX.to_be_bytes().to_vec();
                f.extend_from_slice(&[0u8; 64]);
                f
            }
            // Half a frame, then silence.
            2 => {
                let mut f = 1000u32.to_be_bytes().to_vec();
                f.extend_from_slice(&[1u8; 10]);
                f
            }
            // A frame of the right size whose content is nonsense.
            _ => {
                let mut f = 16u32.to_be_bytes().to_vec();
                f.extend((0..16).map(|_| rng.random::<u8>()));
                f
            }
        };
        let _ = c.write_all(&frame);
        if i % 2 == 0 {
            idle.push(c);
        }
    }
    // A real client is served while the idle connections are open.
    let v = testkit::wait::until(PATIENCE, Duration::from_millis(100), || app_view(&s));
    assert!(v.is_some(), "no service with idle connections open");
    drop(idle);
    let v = app_view(&s);
    assert!(v.is_some(), "no service after the garbage");
    let _ = std::fs::remove_dir_all(&s.dir);
}
