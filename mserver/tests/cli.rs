//! The mserver and msctl command lines: help, and bad input giving one clear
//! line and exit code 2.
#![allow(clippy::disallowed_methods)] // a process test waits on the wall clock

mod common;

use common::{msctl_bin, mserver_bin};
use std::net::UdpSocket;
use std::process::Command;

fn run(bin: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_explains() {
    let (code, out, _) = run(&mserver_bin(), &["--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--group",
        "--group-addr",
        "--listen",
        "--mcaster",
        "--multicast",
        "--config",
        "--query-interval-ms",
        "--reply-timeout-ms",
        "--retries",
        "--fault",
    ] {
        assert!(out.contains(flag), "mserver --help mentions {flag}");
    }
    let (code, out, _) = run(&msctl_bin(), &["--help"]);
    assert_eq!(code, Some(0));
    for cmd in ["view", "leave", "fault"] {
        assert!(out.contains(cmd), "msctl --help mentions {cmd}");
    }
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let cases: &[&[&str]] = &[
        &["--group-addr", "10.1.2.3:7300"],
        &["--group-addr", "239.1.2.3"],
        &["--group", "no spaces allowed"],
        &["--config", "/nonexistent/mserver.toml"],
        &["--listen", "not-an-address"],
        &["--fault", "commit-delay-ms=soon"],
        &["--query-interval-ms", "0"],
        &["--multicast", "sometimes"],
    ];
    for args in cases {
        let (code, _, err) = run(&mserver_bin(), args);
        assert_eq!(code, Some(2), "mserver {args:?}: {err}");
        assert!(!err.trim().is_empty(), "mserver {args:?} says why");
    }
    let (code, _, err) = run(&msctl_bin(), &["--server", "127.0.0.1:0", "view"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, _) = run(&msctl_bin(), &["explode"]);
    assert_eq!(code, Some(2));
}

#[test]
fn unreadable_config_exits_2() {
    let dir = std::env::temp_dir().join(format!("mserver-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "query_interval_ms = \"often\"\n[[[").expect("write");
    let (code, _, err) = run(&mserver_bin(), &["--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn port_in_use_exits_2() {
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, _, err) = run(
        &mserver_bin(),
        &[
            "--listen",
            &addr,
            "--multicast",
            "off",
            "--log-level",
            "error",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot listen"), "{err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one line, not a log line and the error: {err}"
    );
}

#[test]
fn unknown_config_key_and_misspelt_variable_exit_2() {
    let dir = std::env::temp_dir().join(format!("mserver-cli-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("typo.toml");
    std::fs::write(&path, "lisen = \"127.0.0.1:7299\"\n").expect("write");
    let shown = path.to_str().expect("utf-8");
    let (code, _, err) = run(&mserver_bin(), &["--config", shown]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("unknown key `lisen`"), "{err}");
    assert!(err.contains("did you mean `listen`"), "{err}");
    assert!(
        err.contains(shown),
        "names the file as given ({shown}): {err}"
    );
    // A misspelt variable of ours is refused; another daemon's (the
    // mcaster's MS_MEMBER_TTL_MS) is not ours to judge.
    let out = std::process::Command::new(mserver_bin())
        .args(["--listen", "127.0.0.1:0"])
        .env("MS_QUERY_INTERVAL", "300")
        .env("MS_MEMBER_TTL_MS", "3000")
        .env_remove("RUST_LOG")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("MS_QUERY_INTERVAL") && err.contains("did you mean MS_QUERY_INTERVAL_MS"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A free UDP port on loopback (bound, then released).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// An mserver with `--multicast off` and no mcaster warns within seconds
/// that the mcaster does not answer (it would otherwise sit in a group of
/// its own without a word), and at SIGINT says nothing about a
/// deregistration that never was.
#[test]
fn missing_mcaster_is_warned_about_and_exit_is_quiet() {
    let dir = std::env::temp_dir().join(format!("mserver-cli-mcaster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let log_path = dir.join("mserver.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let listen = format!("127.0.0.1:{}", free_port());
    let mcaster = format!("127.0.0.1:{}", free_port());
    let group = format!("239.255.72.1:{}", free_port());
    let mut child = Command::new(mserver_bin())
        .args([
            "--listen",
            &listen,
            "--mcaster",
            &mcaster,
            "--group-addr",
            &group,
            "--multicast",
            "off",
        ])
        .env_remove("RUST_LOG")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start mserver");
    let started = std::time::Instant::now();
    let warning = format!("no answer from the mcaster at {mcaster}; is it running?");
    let mut text = String::new();
    while started.elapsed() < std::time::Duration::from_secs(15) {
        text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains(&warning) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let warned_after = started.elapsed();
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let mut code = None;
    for _ in 0..100 {
        if let Ok(Some(status)) = child.try_wait() {
            code = status.code();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if code.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text_at_exit = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(text.contains(&warning), "no warning in 15 s: {text}");
    assert!(
        warned_after < std::time::Duration::from_secs(10),
        "warned only after {warned_after:?}"
    );
    assert_eq!(code, Some(0), "SIGINT: a clean exit: {text_at_exit}");
    assert!(
        !text_at_exit.contains("deregistration"),
        "nothing was registered, so nothing about deregistering: {text_at_exit}"
    );
}

/// msctl against an address where no mserver listens says what to check,
/// not just "peer unreachable" or "timed out".
#[test]
fn msctl_errors_point_at_the_cause() {
    let nobody = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = run(
        &msctl_bin(),
        &["--server", &nobody, "--timeout-ms", "1500", "view"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&nobody), "{err}");
    assert!(err.contains("is an mserver running there"), "{err}");
    // Something else listens (a plain UDP socket that never answers, as an
    // mcaster's port would not answer msctl).
    let other = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let other_addr = other.local_addr().expect("addr").to_string();
    let (code, _, err) = run(
        &msctl_bin(),
        &["--server", &other_addr, "--timeout-ms", "800", "stats"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no answer from") && err.contains("within 800ms") && err.contains("--server"),
        "{err}"
    );
}
