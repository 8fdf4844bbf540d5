//! Operations with real processes (issue 16, items 4 and 6): the
//! mserver's HTTP endpoint (`/metrics`, `/healthz`, `/readyz`, `/v1/...`,
//! bad requests), the default port taken by another daemon, and `msctl
//! events` streaming a crash as it happens, with subscribers that stop or
//! vanish.
//!
//! Every wait is bounded; children are killed when dropped, also when a
//! test fails. Timing is never asserted.

#![allow(clippy::disallowed_methods)] // tests own the clock (bounded waits)

mod common;

use common::{msctl_bin, mserver_bin, Cluster, PATIENCE};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::http::{exchange, get};
use testkit::{wait, Lines, Proc};

const HTTP_LIMIT: Duration = Duration::from_secs(5);

fn http_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], testkit::free_port()))
}

fn get_ok(addr: SocketAddr, path: &str) -> String {
    match get(addr, path, HTTP_LIMIT) {
        Ok((200, body)) => body,
        other => panic!("GET {path} at {addr}: {other:?}"),
    }
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let body = get_ok(addr, path);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The value of the sample `name{labels}` (labels as printed) in a
/// Prometheus text body.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn http_endpoint_serves_metrics_health_and_the_msctl_json() {
    let mut c = Cluster::new("http");
    let http: Vec<SocketAddr> = (0..3).map(|_| http_addr()).collect();
    for (i, h) in http.iter().enumerate() {
        c.start(i, &["--http", &h.to_string()]);
    }
    c.wait_converged(&[0, 1, 2], PATIENCE);
    let group = c.name.clone();

    assert_eq!(get_ok(http[0], "/healthz").trim(), "ok");
    // Ready once idle in the view (it just converged; a moment to settle).
    let ready = wait::until_true(PATIENCE, Duration::from_millis(50), || {
        matches!(get(http[0], "/readyz", HTTP_LIMIT), Ok((200, _)))
    });
    assert!(ready, "/readyz: {:?}", get(http[0], "/readyz", HTTP_LIMIT));

    // /v1/view is msctl view --json; /v1/tree holds it as level 1.
    let view = get_json(http[1], "/v1/view");
    let msctl = c.view(1).expect("msctl view");
    for key in ["group", "view", "coordinator", "me", "members"] {
        assert_eq!(view[key], msctl[key], "{key}: {view} vs {msctl}");
    }
    let tree = get_json(http[1], "/v1/tree");
    assert_eq!(tree["levels"][0]["members"], msctl["members"], "{tree}");
    let groups = get_json(http[1], "/v1/groups");
    assert!(groups["groups"].is_array(), "{groups}");

    let m = get_ok(http[0], "/metrics");
    let g = format!("group=\"{group}\",level=\"1\"");
    assert_eq!(
        sample(&m, &format!("ms_view_members{{{g}}}")),
        Some(3.0),
        "{m}"
    );
    assert!(sample(&m, &format!("ms_views_installed_total{{{g}}}")).unwrap_or(0.0) >= 1.0);
    assert!(
        sample(&m, &format!("ms_view_change_duration_seconds_count{{{g}}}")).unwrap_or(0.0) >= 1.0
    );
    assert!(
        sample(
            &m,
            "ms_traffic_datagrams_total{protocol=\"coreset\",direction=\"sent\"}"
        )
        .unwrap_or(0.0)
            > 0.0,
        "{m}"
    );
    for name in [
        "ms_attached_mis",
        "ms_app_groups",
        "ms_app_members",
        "ms_ready",
        "ms_in_view",
    ] {
        assert!(sample(&m, name).is_some(), "{name} missing: {m}");
    }
    assert!(m.contains("# TYPE ms_view_changes_total counter"), "{m}");
    assert!(
        m.contains("# TYPE ms_view_change_duration_seconds histogram"),
        "{m}"
    );

    // A crash: the survivors count a failure change and a detection.
    c.kill(2);
    c.wait_converged(&[0, 1], PATIENCE);
    let failures = |h: SocketAddr| {
        let m = get_ok(h, "/metrics");
        let changes = sample(
            &m,
            &format!("ms_view_changes_total{{{g},kind=\"failure\"}}"),
        );
        let detected: f64 = ["heartbeat", "crash", "unresponsive", "restart"]
            .iter()
            .filter_map(|cause| {
                sample(
                    &m,
                    &format!("ms_failures_detected_total{{{g},cause=\"{cause}\"}}"),
                )
            })
            .sum();
        (changes, detected)
    };
    let (a, b) = (failures(http[0]), failures(http[1]));
    assert_eq!(a.0, Some(1.0), "mserver 0 counted no failure change");
    assert_eq!(b.0, Some(1.0), "mserver 1 counted no failure change");
    assert!(
        a.1 + b.1 >= 1.0,
        "nobody counted the detection: {a:?} {b:?}"
    );
    assert_eq!(
        sample(
            &get_ok(http[0], "/metrics"),
            &format!("ms_view_members{{{g}}}")
        ),
        Some(2.0)
    );

    // Bad requests: answered with 4xx, and the endpoint goes on.
    assert_eq!(get(http[0], "/nope", HTTP_LIMIT).map(|r| r.0), Ok(404));
    assert_eq!(
        get(http[0], "/v1/events?after=x", HTTP_LIMIT).map(|r| r.0),
        Ok(400)
    );
    assert_eq!(
        get(http[0], "/v1/status?wait_ms=-1", HTTP_LIMIT).map(|r| r.0),
        Ok(400)
    );
    let _ = exchange(http[0], b"\x00\xff garbage \r\n\r\n", HTTP_LIMIT);
    let _ = exchange(http[0], &vec![b'A'; 100_000], HTTP_LIMIT);
    let _ = exchange(
        http[0],
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
        Duration::from_millis(200),
    );
    let huge = format!("/v1/events?after={}", "9".repeat(10_000));
    assert!(matches!(
        get(http[0], &huge, HTTP_LIMIT),
        Ok((400..=431, _)) | Err(_)
    ));
    let events = get_json(http[0], "/v1/events?after=0");
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"view"), "{events}");
    let status = get_json(http[0], "/v1/status");
    assert_eq!(
        status["members"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    assert_eq!(get_ok(http[0], "/healthz").trim(), "ok");
}

/// The default HTTP port taken (by a test listener, or by another daemon):
/// an mserver without `--http` still runs and says why in one line; one
/// that asked for that address explicitly refuses to start (exit 2).
#[test]
fn a_taken_default_port_is_a_warning_an_asked_one_an_error() {
    // Hold 127.0.0.1:9200 unless someone else already does.
    let _holder = TcpListener::bind("127.0.0.1:9200").ok();
    let mut c = Cluster::new("http-default");
    let log = c.dir.join("default.log");
    let addr = c.addr(0);
    let mut cmd = Command::new(mserver_bin());
    cmd.args([
        "--group",
        &c.name,
        "--group-addr",
        &c.group_addr.to_string(),
    ])
    .args([
        "--listen",
        &addr.to_string(),
        "--mcaster",
        &c.mcaster_addr.to_string(),
    ])
    .args(["--multicast", "off"])
    .env_remove("MS_HTTP")
    .env("RUST_LOG", "info");
    let p = Proc::spawn_logged("mserver default http", &mut cmd, &log);
    c.servers.insert(0, p);
    c.addrs.insert(0, addr);
    c.wait_converged(&[0], PATIENCE);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let warned: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cannot serve HTTP on 127.0.0.1:9200"))
        .collect();
    assert_eq!(warned.len(), 1, "one warning line: {text}");
    assert!(warned[0].contains("--http"), "{}", warned[0]);

    let out = Command::new(mserver_bin())
        .args([
            "--group",
            &c.name,
            "--group-addr",
            &c.group_addr.to_string(),
        ])
        .args([
            "--listen",
            &c.addr(1).to_string(),
            "--mcaster",
            &c.mcaster_addr.to_string(),
        ])
        .args(["--multicast", "off", "--http", "127.0.0.1:9200"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("mserver runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("mserver: cannot serve HTTP on 127.0.0.1:9200")),
        "{stderr}"
    );
    let out = Command::new(mserver_bin())
        .args(["--http", "nowhere"])
        .stdin(Stdio::null())
        .output()
        .expect("mserver runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("IP:PORT"));
}

fn events_cmd(server: SocketAddr, json: bool) -> Command {
    let mut cmd = Command::new(msctl_bin());
    cmd.args([
        "--server",
        &server.to_string(),
        "--timeout-ms",
        "2000",
        "events",
    ]);
    if json {
        cmd.arg("--json");
    }
    cmd
}

#[test]
fn msctl_events_streams_a_crash_and_slow_subscribers_block_nothing() {
    let mut c = Cluster::new("events");
    for i in 0..4 {
        c.start(i, &[]);
    }
    c.wait_converged(&[0, 1, 2, 3], PATIENCE);
    let mut lines = Lines::new();
    let mut subscribers = Vec::new();
    for i in 0..3 {
        subscribers.push(lines.spawn(&format!("json {i}"), events_cmd(c.addr(i), true)));
    }
    subscribers.push(lines.spawn("human 0", events_cmd(c.addr(0), false)));
    // Subscribers that stop (SIGSTOP) or vanish (SIGKILL) must not matter.
    let stopped = lines.spawn("stopped", events_cmd(c.addr(0), true));
    let mut vanished = lines.spawn("vanished", events_cmd(c.addr(1), true));
    let hello = "msctl: watching the view changes";
    let names = [
        "json 0", "json 1", "json 2", "human 0", "stopped", "vanished",
    ];
    let all_watching = lines.wait(PATIENCE, |l| {
        names.iter().all(|n| {
            l.log
                .iter()
                .any(|x| x.starts_with(&format!("{n} (stderr): {hello}")))
        })
    });
    assert!(
        all_watching,
        "subscribers did not start: {}",
        lines.tail(40)
    );
    stopped.signal("STOP");
    vanished.kill();

    let crashed = c.addr(3).to_string();
    c.kill(3);
    c.wait_converged(&[0, 1, 2], PATIENCE);
    let seen = lines.wait(PATIENCE, |l| {
        let views = (0..3).all(|i| {
            l.json.get(&format!("json {i}")).is_some_and(|v| {
                v.iter().any(|e| {
                    e["kind"] == "view"
                        && e["change"] == "failure"
                        && e["failed"][0]["addr"] == crashed.as_str()
                })
            })
        });
        let detected = (0..3).any(|i| {
            l.json.get(&format!("json {i}")).is_some_and(|v| {
                v.iter().any(|e| {
                    e["kind"] == "failure_detected" && e["member"]["addr"] == crashed.as_str()
                })
            })
        });
        let human = l
            .of("human 0")
            .iter()
            .any(|x| x.contains("(failure)") && x.contains(&format!("failed=[{crashed}#")));
        views && detected && human
    });
    assert!(seen, "events not streamed: {}", lines.tail(60));
    // Every line is a complete event with a time and a sequence number.
    for e in lines.json.get("json 0").expect("json 0 lines") {
        assert!(
            e["seq"].as_u64().is_some() && e["time"].as_str().is_some(),
            "{e}"
        );
    }
    // The mserver with a stopped subscriber answers and changes on.
    c.start(4, &[]);
    c.wait_converged(&[0, 1, 2, 4], PATIENCE);
    stopped.signal("CONT");
    drop(stopped);
    // A subscriber of a crashed mserver ends with exit 1.
    let mut gone = lines.spawn("gone", events_cmd(c.addr(2), true));
    assert!(lines.wait(PATIENCE, |l| l
        .log
        .iter()
        .any(|x| x.starts_with(&format!("gone (stderr): {hello}")))));
    c.kill(2);
    assert_eq!(
        gone.wait_exit(PATIENCE),
        Some(Some(1)),
        "{}",
        lines.tail(20)
    );
    drop(subscribers);
}

/// SIGHUP reloads the log level from the config file; the mcaster and the
/// member interface serve `/metrics` when given `--http`.
#[test]
fn sighup_reloads_the_log_level_and_every_daemon_serves_metrics() {
    let mut c = Cluster::new("sighup");
    let toml = c.dir.join("ms.toml");
    std::fs::write(&toml, "log_level = \"warn\"\n").expect("config file");
    let log = c.dir.join("reload.log");
    let addr = c.addr(0);
    let mut cmd = testkit::cluster::mserver_command(
        &mserver_bin(),
        &c.name,
        c.group_addr,
        addr,
        c.mcaster_addr,
    );
    cmd.arg("--config").arg(&toml).env_remove("RUST_LOG");
    let p = Proc::spawn_logged("mserver reload", &mut cmd, &log);
    c.servers.insert(0, p);
    c.addrs.insert(0, addr);
    c.wait_converged(&[0], PATIENCE);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !read().contains("view installed"),
        "info lines at warn: {}",
        read()
    );
    std::fs::write(&toml, "log_level = \"info\"\n").expect("config file");
    c.signal(0, "HUP");
    let reloaded = wait::until_true(PATIENCE, Duration::from_millis(50), || {
        read().contains("SIGHUP: reloaded log level \"info\"")
    });
    assert!(reloaded, "no reload line: {}", read());
    c.start(1, &[]);
    c.wait_converged(&[0, 1], PATIENCE);
    let seen = wait::until_true(PATIENCE, Duration::from_millis(50), || {
        read().contains("view installed")
    });
    assert!(seen, "the new level is not in force: {}", read());
    // A bad file keeps the old level, in one line, and the daemon runs on.
    std::fs::write(&toml, "log_level = \"=[bad\"\n").expect("config file");
    c.signal(0, "HUP");
    let refused = wait::until_true(PATIENCE, Duration::from_millis(50), || {
        read().contains("SIGHUP: cannot reload the log level")
    });
    assert!(refused, "{}", read());
    assert!(c.view(0).is_some(), "the mserver stopped answering");

    // The mcaster and a member interface with --http.
    let mc_http = http_addr();
    let mut cmd = testkit::cluster::mcaster_command(&common::mcaster_bin(), {
        SocketAddr::from(([127, 0, 0, 1], testkit::free_port()))
    });
    cmd.args(["--http", &mc_http.to_string()]);
    let _mc = Proc::spawn_logged("mcaster http", &mut cmd, &c.dir.join("mc-http.log"));
    let mi_http = http_addr();
    let sock = c.dir.join("mi.sock");
    let mut cmd = Command::new(testkit::bin("member-interface", "member-interface"));
    cmd.args(["--mserver", &addr.to_string(), "--listen", "127.0.0.1:0"])
        .arg("--socket")
        .arg(&sock)
        .args(["--http", &mi_http.to_string()]);
    let _mi = Proc::spawn_logged("mi http", &mut cmd, &c.dir.join("mi-http.log"));
    for (h, name) in [
        (mc_http, "ms_relayed_datagrams_total"),
        (mi_http, "ms_mi_attached"),
    ] {
        let ok = wait::until_true(PATIENCE, Duration::from_millis(100), || {
            get(h, "/metrics", HTTP_LIMIT).is_ok_and(|(s, b)| s == 200 && b.contains(name))
        });
        assert!(ok, "{name} at {h}: {:?}", get(h, "/metrics", HTTP_LIMIT));
        assert_eq!(get_ok(h, "/healthz").trim(), "ok");
    }
    let attached = wait::until_true(PATIENCE, Duration::from_millis(100), || {
        sample(&get_ok(mi_http, "/metrics"), "ms_mi_attached") == Some(1.0)
    });
    assert!(attached, "the MI did not attach");
}
