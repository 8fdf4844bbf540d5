//! Smoke (temporary).
use membership::coreset::{invariants, CoreSet, CoreSetConfig, CoreSetEvent};
use membership::id::NodeId;
use membership::sim::{LinkConfig, SimConfig, Simulator};
use membership::sim_replay;
use std::time::Duration;

fn group_addr() -> NodeId {
    NodeId::v4(239, 9, 9, 9, 7000)
}
fn node(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7000)
}

#[test]
fn smoke() {
    let config = SimConfig::new(1, sim_replay!("smoke"))
        .with_link(LinkConfig::lan())
        .with_trace_tail(200);
    let mut sim = Simulator::new(config, move |spawn| {
        let c = CoreSetConfig::new(spawn.id, spawn.incarnation, "sim", group_addr());
        CoreSet::new(c, spawn.now, spawn.seed).expect("valid")
    });
    sim.track_incarnation(|e| match e {
        CoreSetEvent::NewIncarnation(i) => Some(*i),
        _ => None,
    });
    let _report = invariants::add_all(&mut sim, Duration::from_secs(5));
    for i in 1..=3 {
        sim.join_group(node(i), group_addr());
        sim.add_node(node(i));
        sim.run_for(Duration::from_millis(500));
    }
    sim.run_for(Duration::from_secs(2));
    for (t, n, e) in sim.take_events() {
        println!("{t:?} {n} {e:?}");
    }
    for i in 1..=3 {
        let c = sim.core(node(i)).unwrap();
        println!("{} {:?} {:?}", node(i), c.snapshot(), c.stats());
    }
    let s = sim.node_stats(node(1)).unwrap();
    println!("sent bytes {}", s.sent_bytes);
    // pause node 2
    sim.pause(node(2));
    sim.run_for(Duration::from_secs(1));
    sim.resume(node(2));
    sim.run_for(Duration::from_secs(2));
    for (t, n, e) in sim.take_events() {
        println!("{t:?} {n} {e:?}");
    }
    sim.crash(node(1));
    sim.run_for(Duration::from_secs(1));
    for (t, n, e) in sim.take_events() {
        println!("{t:?} {n} {e:?}");
    }
}
