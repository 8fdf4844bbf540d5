//! The toy ping/echo core under random faults, over many seeds
//! (DESIGN.md sections 3 and 9).
//!
//! Chaos phase: lossy (up to 30%), duplicating, reordering, corrupting and
//! truncating links, plus random crashes, restarts, pauses, partitions,
//! one-way blocks and clogs. Safety is checked after every step: every pong a
//! toy accepts answers a distinct ping of its *current* life, and multicast
//! never loops back to the sender. Healed phase: faults removed, everyone
//! resumed or restarted; liveness: every node hears a pong from every other.
//!
//! `SIM_RUNS=10000 cargo test --test sim_toy` runs more seeds;
//! `SIM_SEED=N cargo test --test sim_toy -- chaos_many_seeds` replays one.

use membership::id::{Incarnation, NodeId};
use membership::sim::toy::{Toy, ToyConfig, ToyEvent};
use membership::sim::{self, Fault, LinkConfig, ResumeOrder, SimConfig, Simulator};
use membership::sim_replay;
use membership::time::Instant;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const NODES: u8 = 5;
const GROUP: NodeId = NodeId::v4(239, 0, 0, 7, 7000);
const CHAOS: Duration = Duration::from_secs(3);
const HEALED: Duration = Duration::from_secs(1);
const INTERVAL: Duration = Duration::from_millis(100);

fn ids() -> Vec<NodeId> {
    (1..=NODES).map(|i| NodeId::v4(10, 0, 0, i, 7000)).collect()
}

/// One chaotic run; returns its trace hash.
fn run(seed: u64, test: &str) -> String {
    let ids = ids();
    // The fault plan has its own RNG, derived from the seed.
    let mut plan = ChaCha8Rng::seed_from_u64(seed ^ 0xFA17_FA17);
    let max_latency = Duration::from_micros(plan.random_range(200..=5000));
    let link = LinkConfig::lan()
        .with_latency(Duration::from_micros(100), max_latency)
        .with_loss(plan.random_range(0.0..=0.3))
        .with_duplicate(plan.random_range(0.0..=0.1))
        .with_reorder(plan.random_range(0.0..=0.2), Duration::from_millis(5))
        .with_corrupt(plan.random_range(0.0..=0.05))
        .with_truncate(plan.random_range(0.0..=0.05));
    let cfg = SimConfig::new(seed, sim_replay!(test))
        .with_link(link)
        .with_resume_order(ResumeOrder::Random)
        .with_socket_buffer(plan.random_range(300..=5000))
        .with_keep_events(false);
    let mut sim = Simulator::new(cfg, {
        let ids = ids.clone();
        move |spawn| {
            let mut c = ToyConfig::pinging(ids.clone(), INTERVAL);
            c.group = Some(GROUP);
            Toy::new(&spawn, c)
        }
    });

    // Safety, after every step.
    let mut accepted: BTreeMap<(NodeId, Incarnation), BTreeSet<u64>> = BTreeMap::new();
    sim.add_checker("pongs answer distinct pings of this life", move |view| {
        for (t, node, event) in view.new_events() {
            match event {
                ToyEvent::Pong { from, seq, echo } => {
                    let inc = view
                        .incarnation(*node)
                        .ok_or(format!("{node} is down but reported {event:?}"))?;
                    if *echo != inc {
                        return Err(format!("{node} ({inc:?}) accepted a pong for {echo:?}"));
                    }
                    let core = view.core(*node).ok_or("no core")?;
                    if *seq >= core.next_seq() {
                        return Err(format!("{node} accepted pong {seq} never pinged"));
                    }
                    if from == node {
                        return Err(format!("{node} ponged itself"));
                    }
                    if !accepted.entry((*node, inc)).or_default().insert(*seq) {
                        return Err(format!("{node} accepted pong {seq} twice at {t}"));
                    }
                }
                ToyEvent::PingReceived {
                    from, destination, ..
                } => {
                    if from == node {
                        return Err(format!("{node} received its own ping"));
                    }
                    if destination != node && *destination != GROUP {
                        return Err(format!("{node} received a ping for {destination}"));
                    }
                }
                ToyEvent::Tick | ToyEvent::Unreachable { .. } => {}
            }
        }
        Ok(())
    });

    for id in &ids {
        sim.add_node(*id);
        sim.join_group(*id, GROUP);
    }

    // Chaos phase: a random fault schedule.
    let pick = |plan: &mut ChaCha8Rng| ids[plan.random_range(0..ids.len())];
    let faults = plan.random_range(3..=12);
    for _ in 0..faults {
        let at = Instant::from_micros(plan.random_range(0..CHAOS.as_micros() as u64));
        let fault = match plan.random_range(0..8) {
            0 => Fault::Crash(pick(&mut plan)),
            1 => Fault::Restart(pick(&mut plan)),
            2 => Fault::Pause(pick(&mut plan)),
            3 => Fault::Resume(pick(&mut plan)),
            4 => {
                let mut sets = vec![Vec::new(), Vec::new()];
                for id in &ids {
                    sets[plan.random_range(0..2)].push(*id);
                }
                Fault::Partition(sets)
            }
            5 => Fault::BlockOneWay {
                from: pick(&mut plan),
                to: pick(&mut plan),
            },
            6 => Fault::Clog {
                node: pick(&mut plan),
                until: at + Duration::from_millis(plan.random_range(1..300)),
            },
            _ => Fault::Heal,
        };
        sim.schedule_fault(at, fault);
    }
    sim.run_until(Instant::ZERO + CHAOS);

    // Healed phase.
    sim.heal();
    sim.set_default_link(LinkConfig::lan());
    for id in &ids {
        if sim.is_paused(*id) {
            sim.resume(*id);
        } else if !sim.is_up(*id) {
            sim.restart(*id);
        }
    }
    let healed_at = sim.now();
    sim.run_for(HEALED);

    // Liveness: everyone hears from everyone.
    for a in &ids {
        let core = sim
            .core(*a)
            .unwrap_or_else(|| sim.fail(format!("{a} is down")));
        for b in &ids {
            if a != b && !core.last_pong(*b).is_some_and(|t| t >= healed_at) {
                sim.fail(format!("{a} heard no pong from {b} after healing"));
            }
        }
    }
    sim.trace_hex()
}

#[test]
fn chaos_many_seeds() {
    let replay = sim_replay!("chaos_many_seeds");
    sim::run_seeds(&replay, 1000, |seed| {
        run(seed, "chaos_many_seeds");
    });
}

#[test]
fn chaos_is_deterministic() {
    let replay = sim_replay!("chaos_is_deterministic");
    sim::run_seeds(&replay, 5, |seed| {
        let a = run(seed, "chaos_is_deterministic");
        let b = run(seed, "chaos_is_deterministic");
        assert_eq!(a, b, "seed {seed} is not deterministic");
        let c = run(seed + 1_000_000, "chaos_is_deterministic");
        assert_ne!(a, c);
    });
}

#[test]
fn thousand_nodes_on_a_ring() {
    let n = 1000u16;
    let id = |i: u16| NodeId::v4(10, (i / 250) as u8, (i % 250) as u8 + 1, 1, 7000);
    let neighbours = move |i: u16| (1..=4).map(move |k| id((i + k) % n));
    let cfg = SimConfig::new(7, sim_replay!("thousand_nodes_on_a_ring"))
        .with_link(LinkConfig::lan().with_loss(0.01))
        .with_keep_events(false);
    let index: BTreeMap<NodeId, u16> = (0..n).map(|i| (id(i), i)).collect();
    let mut sim = Simulator::new(cfg, move |spawn| {
        let peers = neighbours(index[&spawn.id]).collect();
        Toy::new(&spawn, ToyConfig::pinging(peers, INTERVAL))
    });
    for i in 0..n {
        sim.add_node(id(i));
    }
    sim.run_for(Duration::from_secs(1));
    for i in 0..n {
        let core = sim.core(id(i)).expect("up");
        for p in neighbours(i) {
            if core.last_pong(p).is_none() {
                sim.fail(format!("{} never heard from {p}", id(i)));
            }
        }
    }
    assert!(sim.stats().totals.delivered > 70_000);
}
