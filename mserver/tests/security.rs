//! Real processes with a cluster key ring (docs/security.md): a group of
//! three mservers (and their mcaster, and a member interface with a
//! member) under a key rotates it with the three commands (`msctl keys
//! install`, `use`, `remove`) without leaving its view and with no other
//! step: the mserver hands each new ring to the member interface and the
//! mcaster, which keep working (a member joins after the rotation, through
//! the mcaster's relay) and persist it; `msctl` without the key (or with the removed one) is not
//! answered; `msctl fault` on an mserver without `--allow-faults` is
//! refused; a key file others can read is refused with one line.
#![allow(clippy::disallowed_methods)] // process tests use the wall clock

mod common;

use common::{mcaster_bin, msctl_bin, mserver_bin, Proc, PATIENCE};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::cluster::{mcaster_command, mserver_command, wait_agreement};

const K1: &str = "1:11111111111111111111111111111111";
const K2: &str = "2:22222222222222222222222222222222";

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ms-sec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn write_keys(path: &Path, keys: &[&str], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, keys.join("\n") + "\n").expect("key file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `msctl --server SERVER --timeout-ms 1000 [--cluster-key KEY] ARGS`:
/// exit code, stdout, stderr.
fn msctl(server: SocketAddr, key: Option<&str>, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(msctl_bin());
    cmd.args(["--server", &server.to_string(), "--timeout-ms", "1000"])
        .env_remove("MS_CLUSTER_KEYS");
    if let Some(k) = key {
        cmd.args(["--cluster-key", k]);
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("msctl runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `msctl --mi SOCKET join GROUP --name NAME --json` process (no key:
/// the MI's Unix socket is protected by its file mode) and its output.
fn joiner(dir: &Path, sock: &Path, group: &str, name: &str) -> (Proc, PathBuf) {
    let out = dir.join(format!("{name}.out"));
    let err = dir.join(format!("{name}.err"));
    let child = Command::new(msctl_bin())
        .arg("--mi")
        .arg(sock)
        .args(["join", group, "--name", name, "--json"])
        .env_remove("MS_CLUSTER_KEYS")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("out file"))
        .stderr(std::fs::File::create(&err).expect("err file"))
        .spawn()
        .expect("msctl join runs");
    (
        Proc {
            name: name.to_string(),
            child,
            log: Some(err),
        },
        out,
    )
}

/// The member names of the last view a joiner printed, sorted.
fn last_members(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let Some(view) = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
    else {
        return Vec::new();
    };
    testkit::cluster::member_field(&view, "name")
}

fn view(server: SocketAddr, key: &str) -> Option<Value> {
    let (code, out, _) = msctl(server, Some(key), &["view", "--json"]);
    (code == Some(0)).then(|| serde_json::from_str(&out).ok())?
}

#[test]
fn a_keyed_group_rotates_its_key_with_three_commands_in_one_view() {
    let dir = temp_dir("rotate");
    let mc_keys = dir.join("mcaster.keys");
    write_keys(&mc_keys, &[K1], 0o600);
    let keys = dir.join("cluster.keys");
    write_keys(&keys, &[K1], 0o600);
    let mcaster_addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let group_addr = SocketAddr::from(([239, 255, 72, 1], testkit::free_port()));
    let port = testkit::free_port();
    let mut cmd = mcaster_command(&mcaster_bin(), mcaster_addr);
    cmd.arg("--key-file")
        .arg(&mc_keys)
        .arg("--keyring-file")
        .arg(dir.join("ring-mcaster"))
        .env("RUST_LOG", "info");
    let mcaster = Proc::spawn_logged("mcaster", &mut cmd, &dir.join("mcaster.log"));
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|i| SocketAddr::from(([127, 0, 0, 20 + i as u8], port)))
        .collect();
    let mut servers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut cmd = mserver_command(&mserver_bin(), "keyed", group_addr, *addr, mcaster_addr);
        cmd.arg("--key-file")
            .arg(&keys)
            .arg("--keyring-file")
            .arg(dir.join(format!("ring-{i}")))
            .env("RUST_LOG", "info");
        servers.push(Proc::spawn_logged(
            &format!("mserver {i}"),
            &mut cmd,
            &dir.join(format!("mserver-{i}.log")),
        ));
        std::thread::sleep(Duration::from_millis(300));
    }
    let want: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let views = |key: &'static str| {
        let addrs = addrs.clone();
        move || addrs.iter().map(|a| view(*a, key)).collect::<Vec<_>>()
    };
    let before = wait_agreement(PATIENCE, Duration::from_millis(100), &want, views(K1))
        .unwrap_or_else(|e| panic!("{e}\n{}", servers[0].log_tail(30)));

    // A member interface attached to the group, under the key, with a
    // member.
    let mi_keys = dir.join("mi.keys");
    write_keys(&mi_keys, &[K1], 0o600);
    let sock = dir.join("mi.sock");
    let mut cmd = Command::new(testkit::bin("member-interface", "member-interface"));
    cmd.args(["--mserver", &addrs[0].to_string()])
        .args(["--mserver", &addrs[1].to_string()])
        .arg("--socket")
        .arg(&sock)
        .args(["--listen", "127.0.0.1:0", "--host", "h1"])
        .arg("--key-file")
        .arg(&mi_keys)
        .arg("--keyring-file")
        .arg(dir.join("ring-mi"))
        .env("MS_LOG_LEVEL", "info")
        .env_remove("MS_CLUSTER_KEYS")
        .stdin(Stdio::null());
    let mi = Proc::spawn_logged("member-interface", &mut cmd, &dir.join("mi.log"));
    assert!(
        testkit::wait::until_true(PATIENCE, Duration::from_millis(20), || sock.exists()),
        "{}",
        mi.log_tail(20)
    );
    let created = testkit::wait::until_true(PATIENCE, Duration::from_millis(200), || {
        Command::new(msctl_bin())
            .arg("--mi")
            .arg(&sock)
            .args(["create", "chat"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(created, "create chat:\n{}", mi.log_tail(20));
    let (mut alice, alice_out) = joiner(&dir, &sock, "chat", "alice");
    assert!(
        testkit::wait::until_true(PATIENCE, Duration::from_millis(50), || {
            last_members(&alice_out) == ["alice"]
        }),
        "alice never joined:\n{}",
        mi.log_tail(20)
    );

    // Without the key, msctl gets no answer (its datagrams are dropped
    // before any core sees them); so does a wrong key.
    let (code, _, err) = msctl(addrs[0], None, &["view", "--json"]);
    assert_eq!(code, Some(1), "{err}");
    let (code, _, _) = msctl(addrs[0], Some(K2), &["leave"]);
    assert_eq!(code, Some(1));

    // The three commands, and nothing else: the mserver hands each new
    // ring to the member interface and the mcaster (no key file edited, no
    // SIGHUP). During the rotation the operator's msctl holds both keys
    // (the first signs, either opens the answers, which are sealed with
    // the new key once `use` committed).
    let (code, out, err) = msctl(
        addrs[0],
        Some(K1),
        &["--cluster-key", K2, "keys", "install", K2],
    );
    assert_eq!(code, Some(0), "install: {out} {err}");
    let (code, out, err) = msctl(
        addrs[1],
        Some(K1),
        &["--cluster-key", K2, "keys", "use", "2"],
    );
    assert_eq!(code, Some(0), "use: {out} {err}");
    let (code, out, err) = msctl(addrs[2], Some(K2), &["keys", "remove", "1"]);
    assert_eq!(code, Some(0), "remove: {out} {err}");
    let (code, _, err) = msctl(addrs[2], Some(K2), &["keys", "remove", "2"]);
    assert_eq!(code, Some(1), "the primary cannot be removed");
    assert!(err.contains("primary"), "{err}");

    // Every member holds key 2 alone, and the group never left its view.
    let listed = testkit::wait::until(PATIENCE, Duration::from_millis(100), || {
        let (code, out, _) = msctl(addrs[0], Some(K2), &["keys", "list", "--json"]);
        let v: Value = serde_json::from_str(&out).ok()?;
        let members = v["members"].as_array()?;
        let all_two = members.len() == 3
            && members
                .iter()
                .all(|m| m["keys"] == serde_json::json!([{"id": 2, "primary": true}]));
        (code == Some(0) && all_two).then_some(v)
    });
    assert!(
        listed.is_some(),
        "keys list never showed key 2 alone everywhere"
    );
    let after = wait_agreement(PATIENCE, Duration::from_millis(100), &want, views(K2))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        after["view"], before["view"],
        "the rotation changed the view"
    );
    assert_eq!(after["coordinator"], before["coordinator"]);
    // The removed key opens nothing any more.
    assert_eq!(msctl(addrs[1], Some(K1), &["view", "--json"]).0, Some(1));
    // The member interface kept its member, and works under key 2 alone: a
    // second member joins (its change commits through the mcaster's
    // relay: the mservers run without IP multicast) and alice sees it.
    assert_eq!(alice.try_exit(), None, "alice's membership ended");
    let (bob, bob_out) = joiner(&dir, &sock, "chat", "bob");
    let both = ["alice".to_string(), "bob".to_string()];
    assert!(
        testkit::wait::until_true(PATIENCE, Duration::from_millis(50), || {
            last_members(&alice_out) == both && last_members(&bob_out) == both
        }),
        "bob's join did not reach alice after the rotation:\n{}\n{}",
        mi.log_tail(30),
        mcaster.log_tail(30)
    );
    // The mcaster still lists every mserver (their refreshes, sealed with
    // key 2, open there), and the group is still one view.
    std::thread::sleep(Duration::from_secs(4));
    let still = wait_agreement(PATIENCE, Duration::from_millis(100), &want, views(K2))
        .unwrap_or_else(|e| panic!("{e}\n{}", mcaster.log_tail(30)));
    assert_eq!(still["view"], before["view"], "{}", mcaster.log_tail(30));
    // The member interface and the mcaster persisted the ring, owner-only.
    for name in ["ring-mi", "ring-mcaster"] {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            text.contains("2:2222") && !text.contains("1:1111"),
            "{name}: {text}"
        );
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(!mi.log_tail(200).contains("SIGHUP"));
    for (who, log) in [("MI", mi.log_tail(200)), ("mcaster", mcaster.log_tail(200))] {
        assert!(
            log.contains("cluster key ring changed by the group"),
            "{who} never took a ring from its mserver:\n{log}"
        );
    }
    drop(bob);
    drop(alice);
    drop(mi);
    // The rings were persisted, owner-only.
    for i in 0..3 {
        use std::os::unix::fs::PermissionsExt;
        let ring = dir.join(format!("ring-{i}"));
        let text = std::fs::read_to_string(&ring).expect("ring file");
        assert!(
            text.contains("2:2222") && !text.contains("1:1111"),
            "{text}"
        );
        let mode = std::fs::metadata(&ring).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    drop(servers);
    drop(mcaster);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fault_needs_allow_faults_and_world_readable_key_files_are_refused() {
    let dir = temp_dir("faults");
    let addr = SocketAddr::from(([127, 0, 0, 30], testkit::free_port()));
    let group_addr = SocketAddr::from(([239, 255, 72, 2], testkit::free_port()));
    let mcaster = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let mut cmd = Command::new(mserver_bin());
    cmd.args(["--group", "nofaults", "--listen", &addr.to_string()])
        .args(["--group-addr", &group_addr.to_string()])
        .args(["--mcaster", &mcaster.to_string(), "--multicast", "off"])
        .stdin(Stdio::null());
    let server = Proc::spawn_logged("mserver", &mut cmd, &dir.join("mserver.log"));
    let answered = testkit::wait::until(PATIENCE, Duration::from_millis(100), || {
        let (code, out, err) = msctl(addr, None, &["fault", "--drop", "10"]);
        // Until the daemon has bound its port, msctl hears a refusal or
        // nothing at all.
        let up = !err.contains("did not answer") && !err.contains("nothing listens");
        (code.is_some() && up).then_some((code, out, err))
    });
    let (code, _, err) = answered.expect("the mserver answers");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--allow-faults"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    drop(server);

    // A key file others can read: one line, exit 2, no secret shown.
    let keys = dir.join("open.keys");
    write_keys(&keys, &[K1], 0o644);
    let out = Command::new(mserver_bin())
        .args(["--listen", &addr.to_string(), "--key-file"])
        .arg(&keys)
        .stdin(Stdio::null())
        .output()
        .expect("mserver runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("readable by group or others"), "{err}");
    assert!(!err.contains("1111"), "{err}");
    let out = Command::new(msctl_bin())
        .args(["--server", &addr.to_string(), "--key-file"])
        .arg(&keys)
        .arg("view")
        .stdin(Stdio::null())
        .output()
        .expect("msctl runs");
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_reloads_the_mservers_key_file() {
    let dir = temp_dir("sighup");
    let keys = dir.join("keys");
    write_keys(&keys, &[K1], 0o600);
    let addr = SocketAddr::from(([127, 0, 0, 31], testkit::free_port()));
    let group_addr = SocketAddr::from(([239, 255, 72, 3], testkit::free_port()));
    let mcaster = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let mut cmd = mserver_command(&mserver_bin(), "hup", group_addr, addr, mcaster);
    cmd.arg("--key-file").arg(&keys);
    let server = Proc::spawn_logged("mserver", &mut cmd, &dir.join("mserver.log"));
    let answered = |key: &str| msctl(addr, Some(key), &["view", "--json"]).0 == Some(0);
    assert!(
        testkit::wait::until_true(PATIENCE, Duration::from_millis(100), || answered(K1)),
        "{}",
        server.log_tail(20)
    );
    assert!(!answered(K2), "key 2 is not in the ring yet");
    // The new key first: after SIGHUP the mserver seals with it, opens both.
    write_keys(&keys, &[K2, K1], 0o600);
    server.signal("HUP");
    assert!(
        testkit::wait::until_true(PATIENCE, Duration::from_millis(100), || answered(K2)),
        "SIGHUP did not reload the key file:\n{}",
        server.log_tail(20)
    );
    // A key file made readable by others is refused; the ring stays.
    write_keys(&keys, &[K1], 0o644);
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(answered(K2), "a refused reload changed the ring");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn msctl_events_streams_a_keyed_mservers_view_changes_only_with_the_key() {
    use testkit::lines::Lines;
    let dir = temp_dir("events");
    let keys = dir.join("keys");
    write_keys(&keys, &[K1], 0o600);
    let mcaster_addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let group_addr = SocketAddr::from(([239, 255, 72, 4], testkit::free_port()));
    let port = testkit::free_port();
    let a = SocketAddr::from(([127, 0, 0, 40], port));
    let b = SocketAddr::from(([127, 0, 0, 41], port));
    let mut cmd = mcaster_command(&mcaster_bin(), mcaster_addr);
    cmd.arg("--key-file").arg(&keys);
    let mcaster = Proc::spawn_logged("mcaster", &mut cmd, &dir.join("mcaster.log"));
    let mut cmd = mserver_command(&mserver_bin(), "evk", group_addr, a, mcaster_addr);
    cmd.arg("--key-file").arg(&keys);
    let first = Proc::spawn_logged("mserver a", &mut cmd, &dir.join("a.log"));
    assert!(
        testkit::wait::until_true(PATIENCE, Duration::from_millis(100), || view(a, K1)
            .is_some()),
        "{}",
        first.log_tail(20)
    );
    let events = |key: Option<&str>| {
        let mut cmd = Command::new(msctl_bin());
        cmd.args(["--server", &a.to_string(), "--timeout-ms", "1500"])
            .env_remove("MS_CLUSTER_KEYS");
        if let Some(k) = key {
            cmd.args(["--cluster-key", k]);
        }
        cmd.args(["events", "--json"]);
        cmd
    };
    let mut lines = Lines::new();
    let _keyed = lines.spawn("keyed", events(Some(K1)));
    let mut unkeyed = lines.spawn("unkeyed", events(None));
    assert!(
        lines.wait(PATIENCE, |l| {
            l.log
                .iter()
                .any(|x| x.starts_with("keyed (stderr): msctl: watching the view changes"))
        }),
        "the keyed subscriber did not start: {}",
        lines.tail(20)
    );
    // A second mserver joins: a view change, streamed to the key holder.
    let mut cmd = mserver_command(&mserver_bin(), "evk", group_addr, b, mcaster_addr);
    cmd.arg("--key-file").arg(&keys);
    let second = Proc::spawn_logged("mserver b", &mut cmd, &dir.join("b.log"));
    let b_str = b.to_string();
    let streamed = lines.wait(PATIENCE, |l| {
        l.json.get("keyed").is_some_and(|v| {
            v.iter().any(|e| {
                e["kind"] == "view"
                    && e["joined"]
                        .as_array()
                        .is_some_and(|j| j.iter().any(|m| m["addr"] == b_str.as_str()))
            })
        })
    });
    assert!(
        streamed,
        "no view change streamed: {}\n{}",
        lines.tail(30),
        second.log_tail(20)
    );
    // Without the key: nothing on stdout, a clear error and exit 1.
    let code = unkeyed.wait_exit(PATIENCE);
    lines.pump(Duration::from_millis(200), |_| false);
    assert_eq!(code, Some(Some(1)), "{}", lines.tail(20));
    assert!(
        lines.json.get("unkeyed").map_or(true, |v| v.is_empty()),
        "{}",
        lines.tail(20)
    );
    let said: Vec<&String> = lines
        .log
        .iter()
        .filter(|l| l.starts_with("unkeyed (stderr)"))
        .collect();
    assert!(
        said.iter()
            .any(|l| l.contains("no answer from") && l.contains("--cluster-key")),
        "{}",
        lines.tail(20)
    );
    drop(second);
    drop(first);
    drop(mcaster);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_reloads_the_member_interfaces_key_file() {
    let dir = temp_dir("mi-hup");
    let keys = dir.join("server.keys");
    write_keys(&keys, &[K1], 0o600);
    let addr = SocketAddr::from(([127, 0, 0, 42], testkit::free_port()));
    let group_addr = SocketAddr::from(([239, 255, 72, 5], testkit::free_port()));
    let mcaster = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let mut cmd = mserver_command(&mserver_bin(), "mihup", group_addr, addr, mcaster);
    cmd.arg("--key-file").arg(&keys);
    let server = Proc::spawn_logged("mserver", &mut cmd, &dir.join("mserver.log"));
    // The MI starts with the wrong key: it cannot attach.
    let mi_keys = dir.join("mi.keys");
    write_keys(&mi_keys, &[K2], 0o600);
    let sock = dir.join("mi.sock");
    let mut cmd = Command::new(testkit::bin("member-interface", "member-interface"));
    cmd.args(["--mserver", &addr.to_string()])
        .arg("--socket")
        .arg(&sock)
        .args(["--listen", "127.0.0.1:0"])
        .arg("--key-file")
        .arg(&mi_keys)
        .env("MS_LOG_LEVEL", "info")
        .env_remove("MS_CLUSTER_KEYS")
        .stdin(Stdio::null());
    let mi = Proc::spawn_logged("member-interface", &mut cmd, &dir.join("mi.log"));
    // A fresh group name each time: a create that timed out at msctl may
    // still commit later.
    let n = std::cell::Cell::new(0);
    let create = || {
        n.set(n.get() + 1);
        Command::new(msctl_bin())
            .arg("--mi")
            .arg(&sock)
            .args(["--timeout-ms", "1500", "create", &format!("g{}", n.get())])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        testkit::wait::until_true(PATIENCE, Duration::from_millis(20), || sock.exists()),
        "{}",
        mi.log_tail(20)
    );
    assert!(
        testkit::wait::until_true(PATIENCE, Duration::from_millis(100), || view(addr, K1)
            .is_some()),
        "{}",
        server.log_tail(20)
    );
    assert!(!create(), "an MI with the wrong key got an answer");
    // The right key goes into its key file; SIGHUP reloads it (no
    // restart): it attaches and serves.
    write_keys(&mi_keys, &[K1], 0o600);
    mi.signal("HUP");
    assert!(
        testkit::wait::until_true(PATIENCE, Duration::from_millis(200), create),
        "SIGHUP did not reload the MI's key file:\n{}",
        mi.log_tail(20)
    );
    assert!(
        mi.log_tail(50)
            .contains("SIGHUP: cluster key ring reloaded"),
        "{}",
        mi.log_tail(50)
    );
    drop(mi);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
