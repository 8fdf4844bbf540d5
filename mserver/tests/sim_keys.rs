//! Key rotation through the core-set in the deterministic simulator: three
//! mservers (the real [`MserverNode`]) under a cluster key ring, on a lossy,
//! duplicating, reordering LAN, rotate their key with `install`, `use`,
//! `remove` submitted at random members at random times. Every datagram is
//! sealed and opened with the node's ring (the simulator's codec, as the
//! daemon's socket), and each node's codec takes the new ring when its core
//! reports it, as the daemon does.
//!
//! Checked after every step, for every seed: two members that report a ring
//! change at the same commit position report the same ring; each member's
//! ring changes come at increasing commit positions. At the end: every
//! member went through the same ring changes at the same positions and
//! holds key 2 alone, and they share one view.
//!
//! `SIM_RUNS=N` runs more seeds, `SIM_SEED=S` one seed; a failure prints
//! its replay line.

use membership::coreset::CoreSetConfig;
use membership::id::{CommitPosition, NodeId};
use membership::mserver::access::AdminPolicy;
use membership::mserver::keys::KeyOp;
use membership::rpc::{Rpc, RpcConfig};
use membership::sim::{run_seeds, LinkConfig, SimConfig, Simulator};
use membership::sim_replay;
use membership::tree::{Chain, ChainConfig, ChainEvent};
use membership::wire::{ClusterKey, KeyRing};
use mserver::node::{MserverNode, NodeEvent};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

const SERVERS: u8 = 3;

fn group_addr() -> NodeId {
    NodeId::v4(239, 9, 9, 8, 7000)
}

fn server(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7200)
}

fn key(id: u8) -> ClusterKey {
    ClusterKey::new(id, [id; 32]).expect("key")
}

fn ring1() -> KeyRing {
    KeyRing::new(vec![key(1)]).expect("ring")
}

type Changes = Rc<RefCell<BTreeMap<NodeId, Vec<(CommitPosition, Vec<u8>)>>>>;

fn run(seed: u64) {
    let mut link = LinkConfig::lan();
    link.loss = 0.02;
    link.duplicate = 0.02;
    link.reorder = 0.05;
    let config = SimConfig::new(seed, sim_replay!("sim_keys"))
        .with_link(link)
        .with_auth(ring1());
    let mut sim = Simulator::new(config, move |spawn| {
        let chain = Chain::new(
            ChainConfig::one_level(CoreSetConfig::new(
                spawn.id,
                spawn.incarnation,
                "lan",
                group_addr(),
            )),
            spawn.now,
            spawn.seed,
        )
        .expect("config");
        let rpc = Rpc::new(
            spawn.id,
            spawn.incarnation,
            RpcConfig::default(),
            spawn.seed ^ 0x5eed,
        );
        MserverNode::new(spawn.now, chain, None, rpc)
            .with_security(AdminPolicy::open(), Some(ring1()))
    });
    sim.track_incarnation(|e| match e {
        NodeEvent::Chain(ChainEvent::NewIncarnation(i)) => Some(*i),
        _ => None,
    });
    let changes: Changes = Rc::default();
    let seen = changes.clone();
    sim.add_checker("key changes agree", move |view| {
        let mut seen = seen.borrow_mut();
        for (_, id, e) in view.new_events() {
            if let NodeEvent::KeyRingChanged { ring, at } = e {
                let list = seen.entry(*id).or_default();
                if let Some((last, _)) = list.last() {
                    if (last.view, last.seq) >= (at.view, at.seq) {
                        return Err(format!("{id}: ring change at {at:?} after one at {last:?}"));
                    }
                }
                list.push((*at, ring.ids()));
            }
        }
        let mut by_pos: BTreeMap<(u64, u64), &Vec<u8>> = BTreeMap::new();
        for (id, list) in seen.iter() {
            for (at, ids) in list {
                if let Some(other) = by_pos.insert((at.view, at.seq), ids) {
                    if other != ids {
                        return Err(format!(
                            "{id}: ring {ids:?} at {at:?}, another member {other:?}"
                        ));
                    }
                }
            }
        }
        Ok(())
    });
    for i in 1..=SERVERS {
        sim.join_group(server(i), group_addr());
        sim.add_node(server(i));
        sim.run_for(Duration::from_millis(300));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ops = [
        KeyOp::Install(key(2).to_spec()),
        KeyOp::Use(2),
        KeyOp::Remove(1),
    ];
    let mut next = 0;
    let mut tries = 0;
    let end = sim.now() + Duration::from_secs(30);
    while sim.now() < end {
        sim.run_for(Duration::from_millis(rng.random_range(20..200)));
        // The codecs take the rings their cores report.
        for (_, id, e) in sim.take_events() {
            if let NodeEvent::KeyRingChanged { ring, .. } = e {
                if let Some(a) = sim.codec_mut(id).and_then(|c| c.auth_mut()) {
                    a.set_ring(ring);
                }
            }
        }
        let done = |sim: &Simulator<MserverNode>, op: usize| {
            (1..=SERVERS).all(|i| {
                sim.core(server(i))
                    .and_then(|n| n.key_ring().map(|r| r.ids()))
                    .as_deref()
                    == Some(match op {
                        0 => &[1u8, 2][..],
                        1 => &[2, 1][..],
                        _ => &[2][..],
                    })
            })
        };
        if next < ops.len() && (next == 0 || done(&sim, next - 1)) {
            let at = server(rng.random_range(1..=SERVERS));
            let op = ops[next].clone();
            let ok = sim
                .with_core(at, |n, now| n.submit_key_op(now, op))
                .unwrap_or(Err("down".into()));
            tries += 1;
            if ok.is_ok() {
                next += 1;
            }
            assert!(tries < 200, "key ops never accepted: {ok:?}");
        }
        if next == ops.len() && done(&sim, 2) {
            break;
        }
    }
    assert_eq!(next, ops.len(), "{}", sim.replay_line());
    let views: Vec<_> = (1..=SERVERS)
        .map(|i| {
            let n = sim.core(server(i)).expect("up");
            assert_eq!(
                n.key_ring().map(|r| r.ids()),
                Some(vec![2]),
                "{}",
                sim.replay_line()
            );
            n.coreset().snapshot(sim.now()).members.len()
        })
        .collect();
    assert!(views.iter().all(|m| *m == SERVERS as usize), "{views:?}");
    let seen = changes.borrow();
    let first = seen.get(&server(1)).cloned().unwrap_or_default();
    assert_eq!(first.len(), 3, "{first:?}");
    for i in 2..=SERVERS {
        assert_eq!(seen.get(&server(i)), Some(&first), "{}", sim.replay_line());
    }
}

#[test]
fn key_rotation_commits_at_one_position_everywhere() {
    run_seeds(
        &sim_replay!("key_rotation_commits_at_one_position_everywhere"),
        12,
        run,
    );
}
