//! The mcaster's HTTP endpoint as a real process (issue 16 item 4;
//! `docs/operations.md`, "Metrics, health and the status page"):
//! `/healthz`, `/readyz` once its socket is bound and serving,
//! `/v1/status` with the registered members of every group, `/metrics`,
//! and 404 for anything else. Two unicast-only endpoints on 127.0.0.2-3
//! register with it through the runtime, as in `mcaster_process.rs`.
//!
//! Loopback only; every wait is bounded; the daemon is killed when its
//! `Proc` is dropped, also when the test fails. Timing is never asserted.

#![allow(clippy::disallowed_methods)] // tests own the clock (bounded waits)

mod common;

use common::{mcaster_bin, Ev, TestMember};
use membership::id::{NodeId, ProtocolId};
use membership::mcaster_reg::{ReceiveMode, RegistrationEvent};
use membership::runtime::{spawn_core, CoreHandle, SocketOptions, SpawnedCore};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;
use testkit::http::get;
use testkit::Proc;
use tokio::sync::mpsc::UnboundedReceiver;

const GROUP: NodeId = NodeId::v4(239, 77, 0, 9, 7000);
/// Generous bound on every wait (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(15);
const HTTP_LIMIT: Duration = Duration::from_secs(5);

/// GET `path` (blocking, on a thread of its own so that the actix test
/// runtime keeps driving the endpoints meanwhile).
async fn fetch(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || get(addr, &path, HTTP_LIMIT))
        .await
        .map_err(|e| e.to_string())?
}

/// Polls `path` every 100 ms (bounded by [`PATIENCE`]) until `ok` holds
/// for its answer; the last answer either way.
async fn until(
    addr: SocketAddr,
    path: &str,
    mut ok: impl FnMut(&Result<(u16, String), String>) -> bool,
) -> (bool, Result<(u16, String), String>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = fetch(addr, path).await;
        if ok(&r) {
            return (true, r);
        }
        if tokio::time::Instant::now() >= deadline {
            return (false, r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_json(r: &Result<(u16, String), String>) -> Option<Value> {
    match r {
        Ok((200, body)) => serde_json::from_str(body).ok(),
        _ => None,
    }
}

/// The registered members of `GROUP` in a `/v1/status` answer.
fn members_of_group(status: &Value) -> Vec<(String, String)> {
    let group = GROUP.to_string();
    status["group_list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["group"].as_str() == Some(group.as_str()))
        .flat_map(|g| g["members"].as_array().cloned().unwrap_or_default())
        .map(|m| {
            (
                m["addr"].as_str().unwrap_or_default().to_string(),
                m["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
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
                "http-test",
            )
        })
        .expect("bind an endpoint");
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
    assert!(matches!(r, Ok(true)), "{}: not registered", ep.handle.local);
}

#[actix_rt::test]
async fn health_readiness_status_and_metrics() {
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, testkit::free_udp_port("127.0.0.1")));
    let http = SocketAddr::from((Ipv4Addr::LOCALHOST, testkit::free_port()));
    let dir = std::env::temp_dir().join(format!("ms-mcaster-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("log dir");
    let mut cmd = Command::new(mcaster_bin());
    cmd.args(["--listen", &listen.to_string(), "--multicast", "off"])
        .args(["--summary-interval-secs", "0", "--http", &http.to_string()]);
    let _daemon = Proc::spawn_logged("mcaster http", &mut cmd, &dir.join("mcaster.log"));

    // Ready as soon as it serves at all (its socket is bound before the
    // HTTP endpoint starts), with no group yet.
    let (ok, r) = until(http, "/readyz", |r| matches!(r, Ok((200, _)))).await;
    assert!(ok, "/readyz: {r:?}");
    assert_eq!(r.map(|(_, b)| b), Ok("ready\n".to_string()));
    assert_eq!(fetch(http, "/healthz").await, Ok((200, "ok\n".to_string())));
    let empty = status_json(&fetch(http, "/v1/status").await).expect("/v1/status");
    assert_eq!(empty["groups"], 0, "{empty}");
    assert_eq!(empty["listen"], listen.to_string(), "{empty}");
    assert_eq!(empty["group_list"], Value::Array(Vec::new()), "{empty}");

    // Two members register: both are listed under the group, as `uc`.
    let mut eps: Vec<Ep> = (2..=3).map(|i| start_endpoint(i, listen)).collect();
    for ep in &mut eps {
        registered(ep).await;
    }
    let mut want: Vec<(String, String)> = eps
        .iter()
        .map(|e| (e.handle.local.to_string(), "uc".to_string()))
        .collect();
    want.sort();
    let (ok, r) = until(http, "/v1/status", |r| {
        status_json(r).is_some_and(|s| members_of_group(&s) == want)
    })
    .await;
    assert!(ok, "/v1/status never listed {want:?}: {r:?}");
    let status = status_json(&r).expect("json");
    assert_eq!(status["groups"], 1, "{status}");
    assert_eq!(status["members"], 2, "{status}");
    let group = &status["group_list"][0];
    assert_eq!(group["name"], "http-test", "{status}");

    let (ok, r) = until(
        http,
        "/metrics",
        |r| matches!(r, Ok((200, b)) if b.lines().any(|l| l == "ms_mcaster_members 2")),
    )
    .await;
    assert!(ok, "/metrics: {r:?}");
    assert!(
        matches!(fetch(http, "/v1/nope").await, Ok((404, _))),
        "unknown paths are 404"
    );
    for ep in &eps {
        ep.handle.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
