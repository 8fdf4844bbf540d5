//! The status page in a real browser (issue 16, item 5): headless
//! Chromium (Debian's `chromium`, which `.ci/run` installs) opens the page
//! of a three-mserver group, the members are shown; one mserver is killed
//! (SIGKILL) while the page is open, and the page shows it gone. A
//! screenshot is saved as `target/status-page.png`.
//!
//! The page refreshes itself with `/v1/status`, which the mserver holds up
//! to a second until something happens; Chromium's virtual time stands
//! still while a request is pending, so `--virtual-time-budget` keeps the
//! page open for many real seconds. The test skips (with a printed line)
//! only where `/usr/bin/chromium` is missing.

#![allow(clippy::disallowed_methods)] // tests own the clock (bounded waits)

mod common;

use common::{Cluster, PATIENCE};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::Proc;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium with the flags it needs here (no sandbox as root, no GPU, no
/// background connections on a closed network), a fresh profile in `dir`.
fn chromium(dir: &Path, args: &[&str]) -> Command {
    let profile = dir.join(format!("profile-{}", testkit::free_port()));
    let _ = std::fs::create_dir_all(&profile);
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` with stdout to `out` and stderr to `err`, killed after
/// `limit`: whether it exited 0 in time.
fn run_bounded(name: &str, cmd: &mut Command, out: &Path, err: &Path, limit: Duration) -> bool {
    let mut p = Proc::spawn(
        name,
        cmd.stdout(testkit::procs::log_file(out))
            .stderr(testkit::procs::log_file(err)),
    );
    p.wait_exit(limit) == Some(Some(0))
}

/// The `<tbody id="members">` of a dumped page.
fn members_table(dom: &str) -> &str {
    let start = dom.find("<tbody id=\"members\">").unwrap_or(dom.len());
    let end = dom[start..]
        .find("</tbody>")
        .map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

fn target_dir() -> PathBuf {
    // target/<profile>/deps/this-test -> target/
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

#[test]
fn status_page_shows_members_and_a_killed_one_disappears() {
    if !Path::new(CHROMIUM).exists() {
        println!(
            "SKIPPED status_page_shows_members_and_a_killed_one_disappears: {CHROMIUM} is missing \
             (apt-get install chromium; .ci/run installs it)"
        );
        return;
    }
    let mut c = Cluster::new("status-page");
    let http = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    c.start(0, &["--http", &http.to_string()]);
    c.start(1, &[]);
    c.start(2, &[]);
    c.wait_converged(&[0, 1, 2], PATIENCE);
    let url = format!("http://{http}/");
    let dir = c.dir.clone();

    // 1. The page shows the three members.
    let dom = dir.join("dom-1.html");
    let ok = run_bounded(
        "chromium dump",
        &mut chromium(&dir, &["--virtual-time-budget=500", "--dump-dom", &url]),
        &dom,
        &dir.join("chromium-1.log"),
        Duration::from_secs(90),
    );
    let text = std::fs::read_to_string(&dom).unwrap_or_default();
    assert!(
        ok,
        "chromium failed: {}",
        testkit::procs::tail(&dir.join("chromium-1.log"), 20)
    );
    let table = members_table(&text);
    for i in 0..3 {
        let addr = c.addr(i).to_string();
        assert!(
            table.contains(&format!("data-addr=\"{addr}\"")),
            "{addr} not shown: {text}"
        );
    }

    // 2. The page stays open (about 1 s of real time per 100 ms of its
    //    virtual time while idle) while mserver 2 is killed.
    let dom = dir.join("dom-2.html");
    let mut live = Proc::spawn(
        "chromium live",
        chromium(&dir, &["--virtual-time-budget=2500", "--dump-dom", &url])
            .stdout(testkit::procs::log_file(&dom))
            .stderr(testkit::procs::log_file(&dir.join("chromium-2.log"))),
    );
    // Wait until the page has loaded and rendered (its first /v1/status
    // answered, the second asked), then a moment more.
    let asked = |n: f64| {
        testkit::wait::until_true(Duration::from_secs(90), Duration::from_millis(100), || {
            testkit::http::get(http, "/metrics", Duration::from_secs(5)).is_ok_and(|(_, m)| {
                m.lines().any(|l| {
                    l.strip_prefix("ms_http_requests_total{path=\"/v1/status\"} ")
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v >= n)
                })
            })
        })
    };
    // The first page (step 1) asked a few times already: count from there.
    let before = testkit::http::get(http, "/metrics", Duration::from_secs(5))
        .ok()
        .and_then(|(_, m)| {
            m.lines().find_map(|l| {
                l.strip_prefix("ms_http_requests_total{path=\"/v1/status\"} ")
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0);
    assert!(asked(before + 2.0), "the live page never asked /v1/status");
    std::thread::sleep(Duration::from_millis(500));
    let killed = c.addr(2).to_string();
    c.kill(2);
    c.wait_converged(&[0, 1], PATIENCE);
    let exited = live.wait_exit(Duration::from_secs(120));
    let text = std::fs::read_to_string(&dom).unwrap_or_default();
    assert_eq!(
        exited,
        Some(Some(0)),
        "chromium (live) did not finish: {}",
        testkit::procs::tail(&dir.join("chromium-2.log"), 20)
    );
    let table = members_table(&text);
    assert!(
        !table.contains(&format!("data-addr=\"{killed}\"")),
        "the killed mserver is still shown: {table}"
    );
    assert!(
        table.contains(&format!("data-addr=\"{}\"", c.addr(0))),
        "{table}"
    );
    assert!(
        table.contains(&format!("data-addr=\"{}\"", c.addr(1))),
        "{table}"
    );
    // The same page had shown it before: it saw it go, live.
    let gone_start = text.find("id=\"gone\"").expect("the gone list");
    let gone = &text[gone_start
        ..text[gone_start..]
            .find("</span>")
            .map_or(text.len(), |e| gone_start + e)];
    assert!(
        gone.contains(&killed),
        "the page did not see {killed} go: {gone}"
    );
    assert!(
        text.contains("failed "),
        "the view change is not listed: {text}"
    );

    // 3. A screenshot for people.
    let shot = target_dir().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let ok = run_bounded(
        "chromium screenshot",
        &mut chromium(
            &dir,
            &[
                "--virtual-time-budget=300",
                "--window-size=1100,900",
                "--hide-scrollbars",
                &format!("--screenshot={}", shot.display()),
                &url,
            ],
        ),
        &dir.join("shot.out"),
        &dir.join("chromium-3.log"),
        Duration::from_secs(90),
    );
    assert!(
        ok,
        "screenshot failed: {}",
        testkit::procs::tail(&dir.join("chromium-3.log"), 20)
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1000, "no screenshot at {}", shot.display());
    println!("status page screenshot: {}", shot.display());
}
