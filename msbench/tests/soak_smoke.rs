//! `msbench soak` as a smoke run (issue 16): a few seconds instead of ten
//! minutes, one spinner, and its JSON checked for shape and the final
//! agreement. The figure that matters (0 false failures in 10 minutes with
//! both cores busy) is measured by the benchmark itself, not here: a test
//! machine running other tests at the same time is no measurement.

#![allow(clippy::disallowed_methods)] // tests own the clock

mod common;

use std::process::{Command, Stdio};

#[test]
fn soak_smoke_run_prints_its_figures() {
    // The binaries msbench starts live next to it (testkit builds them
    // when they are missing).
    let _ = [
        testkit::bin("mserver", "mserver"),
        testkit::bin("mserver", "msctl"),
        testkit::bin("member-interface", "member-interface"),
        common::mcaster(),
    ];
    let out = Command::new(common::msbench())
        .args(["soak", "--minutes", "0.05", "--spinners", "1", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("msbench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "msbench soak failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["scenario"], "soak");
    assert_eq!(v["mservers"], 5);
    assert_eq!(v["app_members"], 4);
    assert!(v["false_failures"].as_u64().is_some(), "{v}");
    assert_eq!(
        v["views_installed_after_baseline"].as_array().map(Vec::len),
        Some(5),
        "{v}"
    );
    assert_eq!(v["final_agreement"], true, "{v}");
    println!("soak smoke: {v}");
}
