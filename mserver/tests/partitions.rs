//! Partitions, pauses and one-way links with real processes (issue 5;
//! DESIGN.md sections 5 and 9; seed 003, section III.D): mservers on
//! 127.0.0.x through an mcaster, cut apart with the fault interceptor
//! (`msctl fault --block`, `--block-in`: [`Cluster::partition`],
//! [`Cluster::block_one_way`], [`Cluster::heal`]) and paused with
//! SIGSTOP/SIGCONT. Every check is on the public `msctl view --json` of
//! the members: the same view id, state `idle` and exactly the expected
//! members everywhere ([`Cluster::wait_converged`]).
//!
//! Assertions marked `// merge:` are specific to the MERGE of DESIGN.md
//! section 5 (one change whose view is numbered above every side's, in
//! which no member restarts), as opposed to the older behaviour in which
//! the losing subgroup dissolves and its members rejoin one by one.
//!
//! Timing is never asserted: waits are bounded by [`PATIENCE`] and only
//! the outcome is checked.

#![allow(clippy::disallowed_methods)] // tests own the clock (bounded waits)

mod common;

use common::{incarnation_in, Cluster, PATIENCE};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn view_number(v: &Value) -> u64 {
    v["view"].as_u64().expect("a view number")
}

/// Starts mservers `0..n` one at a time (each join converged before the
/// next), with `extra(i)` as additional flags.
fn form(c: &mut Cluster, n: usize, extra: impl Fn(usize) -> Vec<&'static str>) -> Value {
    let mut last = Value::Null;
    for i in 0..n {
        c.start(i, &extra(i));
        last = c.wait_converged(&(0..=i).collect::<Vec<_>>(), PATIENCE);
    }
    last
}

/// Each mserver's own incarnation (`me.incarnation` of its `msctl view`).
fn own_incarnations(c: &Cluster, ids: &[usize]) -> BTreeMap<usize, String> {
    ids.iter()
        .map(|&i| {
            let v = c
                .view(i)
                .unwrap_or_else(|| c.fail(&format!("mserver {i} did not answer msctl view")));
            let inc = v["me"]["incarnation"]
                .as_str()
                .unwrap_or_else(|| c.fail(&format!("no me.incarnation in {v}")))
                .to_string();
            (i, inc)
        })
        .collect()
}

/// Six mservers split 3|3 with the fault interceptor: each side installs a
/// view of its own three; after the heal all six agree on one view.
#[test]
fn split_3_3_and_heal() {
    let mut c = Cluster::new("split33");
    let all: Vec<usize> = (0..6).collect();
    let before = form(&mut c, 6, |_| vec![]);
    let incarnations = own_incarnations(&c, &all);
    let (a, b) = ([0, 1, 2], [3, 4, 5]);

    c.partition(&a, &b);
    let va = c.wait_converged(&a, PATIENCE);
    let vb = c.wait_converged(&b, PATIENCE);
    assert!(view_number(&va) > view_number(&before), "{va}");
    assert!(view_number(&vb) > view_number(&before), "{vb}");
    // Each side's members are still the ones that were there before the
    // split (nobody restarted while cut off).
    assert_eq!(own_incarnations(&c, &all), incarnations);

    c.heal(&all);
    let merged = c.wait_converged(&all, PATIENCE);
    // merge: one view numbered above both sides' views.
    assert!(
        view_number(&merged) > view_number(&va).max(view_number(&vb)),
        "merged {merged}\nside a {va}\nside b {vb}"
    );
    // merge: no member restarted (every member keeps the incarnation it
    // had before the split)...
    assert_eq!(
        own_incarnations(&c, &all),
        incarnations,
        "a member took a new incarnation: the sides did not merge"
    );
    // merge: ...and the ranks stay in age order: incarnations are UUID v7,
    // whose first 48 bits (the first 13 characters of the text) are the
    // millisecond they were taken, so by rank these never go down.
    let taken_ms: Vec<String> = merged["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let inc = m["incarnation"].as_str().expect("incarnation");
            inc.get(..13).unwrap_or(inc).to_string()
        })
        .collect();
    assert!(
        taken_ms.windows(2).all(|w| w[0] <= w[1]),
        "ranks not in age order: {merged}"
    );
}

/// The coordinator of a change is paused with SIGSTOP between its phases
/// for (at least) 5 s, until the others excluded it, then resumed: the
/// others finish the change without it (CO_FAIL), its stale COMMIT is
/// installed by nobody, and it rejoins with a new incarnation, so the
/// group ends in one view with everyone.
#[test]
fn coordinator_paused_mid_change_then_resumed() {
    let mut c = Cluster::new("copause");
    // Member 0 founds the group, so it has the lowest rank and coordinates
    // every join; it waits 3 s before phase II (`--fault commit-delay-ms`,
    // as in `scenarios.rs`), so it can be caught between the phases.
    form(&mut c, 3, |i| {
        if i == 0 {
            vec!["--fault", "commit-delay-ms=3000"]
        } else {
            vec![]
        }
    });
    let incarnations = own_incarnations(&c, &[0, 1, 2]);
    c.start(3, &[]);
    // Wait (bounded) until the join of 3 is in phase I at member 1.
    let end = Instant::now() + PATIENCE;
    loop {
        if c.view(1).is_some_and(|v| v["state"] == "changing") {
            break;
        }
        if Instant::now() >= end {
            c.fail("the join of mserver 3 never started");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    c.signal(0, "STOP");
    let stopped = Instant::now();
    // The others finish the join without their coordinator and exclude it.
    let without = c.wait_converged(&[1, 2, 3], PATIENCE);
    assert!(incarnation_in(&without, &c.addr(0).to_string()).is_none());
    // Keep it stopped for 5 s in all.
    let pause = Duration::from_secs(5);
    if let Some(rest) = pause.checked_sub(stopped.elapsed()) {
        std::thread::sleep(rest);
    }
    c.signal(0, "CONT");
    let back = c.wait_converged(&[0, 1, 2, 3], PATIENCE);
    assert!(view_number(&back) > view_number(&without));
    let now = own_incarnations(&c, &[0, 1, 2]);
    assert_ne!(
        now[&0], incarnations[&0],
        "the excluded coordinator rejoined with a new incarnation"
    );
    assert_eq!(now[&1], incarnations[&1], "member 1 did not restart");
    assert_eq!(now[&2], incarnations[&2], "member 2 did not restart");
}

/// A one-way block between two ring neighbours: mserver 1 monitors 2 (its
/// clockwise neighbour, the next rank) but no longer hears it, while 2
/// still hears 1. The group must settle in ONE view without one side of
/// the bad link and stay in it, instead of excluding and readmitting the
/// same member again and again.
#[test]
fn one_way_block_converges() {
    let mut c = Cluster::new("oneway");
    let before = form(&mut c, 4, |_| vec![]);
    c.block_one_way(2, 1);
    let candidates = vec![vec![0, 2, 3], vec![0, 1, 3]];
    let (k, settled) = c.wait_converged_any(&candidates, PATIENCE);
    assert!(view_number(&settled) > view_number(&before));
    let survivors = &candidates[k];
    // Stable: for 3 s the survivors stay in exactly that view. A sample in
    // which some member did not answer (a loaded machine) is skipped.
    let window = Instant::now() + Duration::from_secs(3);
    let mut samples = 0;
    while Instant::now() < window {
        let views: Vec<Option<Value>> = survivors.iter().map(|i| c.view(*i)).collect();
        if views.iter().all(Option::is_some) {
            samples += 1;
            for v in views.iter().flatten() {
                if v["view"] != settled["view"] || v["members"] != settled["members"] {
                    c.fail(&format!(
                        "the view changed after settling on {settled}: now {v} (samples so far {samples})"
                    ));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(samples >= 3, "too few answered samples ({samples})");
}
