//! The member interface's HTTP endpoint as a real process (issue 16 item
//! 4; `docs/operations.md`, "Metrics, health and the status page"): with
//! its mserver not yet running, `/healthz` is 200 and `/readyz` 503 with
//! the reason on one line, `/v1/status` says it is not attached; once an
//! mserver (behind an mcaster, unicast only) runs, `/readyz` turns 200 and
//! `/v1/status` names the mserver and counts a local client's members.
//!
//! Loopback only; every wait is bounded; every process is killed when its
//! `Proc` is dropped, also when the test fails. Timing is never asserted.

#![allow(clippy::disallowed_methods)] // tests own the clock (bounded waits)

use member_interface::blocking::Client;
use member_interface::{GroupOptions, MemberInfo, MemberName};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use testkit::http::get;
use testkit::{wait, Proc};

/// Generous bound on every wait (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(30);
const HTTP_LIMIT: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_millis(100);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn status(http: SocketAddr) -> Option<Value> {
    match get(http, "/v1/status", HTTP_LIMIT) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

#[test]
fn not_ready_until_attached_then_status_counts_the_members() {
    let dir = std::env::temp_dir().join(format!("ms-mi-http-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let mserver = loopback(testkit::free_udp_port("127.0.0.1"));
    let mcaster = loopback(testkit::free_udp_port("127.0.0.1"));
    let group_addr = SocketAddr::from(([239, 77, 9, 21], 7000));
    let http = loopback(testkit::free_port());
    let sock = dir.join("mi.sock");

    // The MI first, its mserver not running.
    let mut cmd = Command::new(testkit::bin("member-interface", "member-interface"));
    cmd.args(["--mserver", &mserver.to_string(), "--listen", "127.0.0.1:0"])
        .arg("--socket")
        .arg(&sock)
        .args(["--http", &http.to_string()]);
    let _mi = Proc::spawn_logged("mi http", &mut cmd, &dir.join("mi.log"));
    let up = wait::until_true(PATIENCE, EVERY, || {
        matches!(get(http, "/healthz", HTTP_LIMIT), Ok((200, _)))
    });
    assert!(up, "/healthz: {:?}", get(http, "/healthz", HTTP_LIMIT));
    let (code, body) = get(http, "/readyz", HTTP_LIMIT).expect("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.starts_with("not ready: not attached to an mserver"),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1, "one line: {body:?}");
    assert!(body.contains(&mserver.to_string()), "{body}");
    let s = status(http).expect("/v1/status");
    assert_eq!(s["attached"], false, "{s}");
    assert!(s["not_ready"].is_string(), "{s}");
    assert_eq!(s["members"], 0, "{s}");
    assert_eq!(s["candidates"][0], mserver.to_string(), "{s}");

    // Now the mcaster and the mserver: the MI attaches and is ready.
    let mut cmd = testkit::cluster::mcaster_command(&testkit::bin("mcaster", "mcaster"), mcaster);
    let _mc = Proc::spawn_logged("mcaster", &mut cmd, &dir.join("mcaster.log"));
    let mut cmd = testkit::cluster::mserver_command(
        &testkit::bin("mserver", "mserver"),
        "mi-http",
        group_addr,
        mserver,
        mcaster,
    );
    let _ms = Proc::spawn_logged("mserver", &mut cmd, &dir.join("mserver.log"));
    let ready = wait::until_true(PATIENCE, EVERY, || {
        matches!(get(http, "/readyz", HTTP_LIMIT), Ok((200, _)))
    });
    assert!(ready, "/readyz: {:?}", get(http, "/readyz", HTTP_LIMIT));
    let s = status(http).expect("/v1/status");
    assert_eq!(s["attached"], true, "{s}");
    assert_eq!(s["link"], "attached", "{s}");
    assert_eq!(s["mserver"], mserver.to_string(), "{s}");
    assert_eq!(s["not_ready"], Value::Null, "{s}");

    // A local client joins a group: one connection, one member.
    let client = Client::connect(&sock).expect("connect to the MI");
    client
        .create_group("web", GroupOptions::default())
        .expect("create");
    let name = MemberName::parse("w1").expect("name");
    let membership = client.join("web", MemberInfo::new(name)).expect("join");
    let counted = wait::until_true(PATIENCE, EVERY, || {
        status(http).is_some_and(|s| s["members"] == 1 && s["groups"]["web"] == 1)
    });
    assert!(counted, "/v1/status: {:?}", status(http));
    let s = status(http).expect("/v1/status");
    assert_eq!(s["connections"], 1, "{s}");
    let metrics = get(http, "/metrics", HTTP_LIMIT).expect("/metrics");
    assert_eq!(metrics.0, 200);
    assert!(
        metrics.1.lines().any(|l| l == "ms_mi_attached 1"),
        "{}",
        metrics.1
    );
    assert!(
        matches!(get(http, "/v1/nope", HTTP_LIMIT), Ok((404, _))),
        "unknown paths are 404"
    );
    membership.leave().expect("leave");
    drop(client);
    let _ = std::fs::remove_dir_all(&dir);
}
