//! The mserver and msctl command lines (DESIGN.md sections 7 and 8): help,
//! and bad input giving one clear line and exit code 2.

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
}
