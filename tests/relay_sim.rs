//! The mcaster's relay core and member registrations in the simulator
//! (seed 003, section IV.A; seed 000, section 4; DESIGN.md section 9).
//!
//! One relay (multicast-capable: it joined the class D group), four
//! unicast-only members and two multicast members, each sending a numbered
//! message to the group every 100 ms. Per seed: a lossy, reordering phase
//! in which one uc member crashes for good; then a clean phase in which the
//! relay crashes and restarts.
//!
//! Checked after every step: a member never receives its own message, nor
//! one copy twice; every message names its original sender (in the header
//! and in the body) and a uc member only gets copies from the relay. At the
//! end: the crashed member expired; the restarted relay relearned every
//! live member within one refresh interval (plus a link latency); and
//! traffic flows between every pair of live members again.
//!
//! `SIM_RUNS=N cargo test --test relay_sim` runs more seeds;
//! `SIM_SEED=N cargo test --test relay_sim -- relay_many_seeds` replays one.

use membership::id::{Incarnation, NodeId, ProtocolId};
use membership::mcaster::{Mcaster, McasterConfig, McasterEvent};
use membership::mcaster_reg::{
    ReceiveMode, Registration, RegistrationConfig, RegistrationEvent, DEFAULT_REFRESH_INTERVAL,
};
use membership::sansio::{Core, Incoming, Transmit};
use membership::sim::{self, LinkConfig, NodeSpawn, SimConfig, Simulator};
use membership::sim_replay;
use membership::time::{earliest, Instant};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::Duration;

const RELAY: NodeId = NodeId::v4(10, 0, 0, 100, 7100);
const GROUP: NodeId = NodeId::v4(239, 0, 0, 9, 7000);
const SEND_EVERY: Duration = Duration::from_millis(100);

fn uc_members() -> Vec<NodeId> {
    (1..=4).map(|i| NodeId::v4(10, 0, 0, i, 7000)).collect()
}

fn mc_members() -> Vec<NodeId> {
    (11..=12).map(|i| NodeId::v4(10, 0, 0, i, 7000)).collect()
}

/// What the nodes report.
#[derive(Debug, Clone)]
enum Ev {
    Mcaster(McasterEvent),
    Reg(RegistrationEvent),
    Got {
        from: NodeId,
        from_inc: Incarnation,
        seq: u64,
        peer: NodeId,
        body_sender: NodeId,
    },
}

/// A member: the registration plus a sender of numbered group messages.
struct Member {
    id: NodeId,
    reg: Registration,
    next_send: Instant,
    seq: u64,
    out: VecDeque<Transmit>,
    events: VecDeque<Ev>,
}

impl Member {
    fn new(spawn: &NodeSpawn, kind: ReceiveMode) -> Self {
        let mut reg = Registration::new(RegistrationConfig::new(RELAY, kind));
        reg.join(spawn.now, GROUP, "test-group");
        Member {
            id: spawn.id,
            reg,
            next_send: spawn.now + SEND_EVERY,
            seq: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn drain_reg(&mut self) {
        while let Some(t) = self.reg.poll_transmit() {
            self.out.push_back(t);
        }
        while let Some(e) = self.reg.poll_event() {
            self.events.push_back(Ev::Reg(e));
        }
    }
}

/// The two kinds of node in one simulator (one relay per simulation, so
/// its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Node {
    Mcaster(Mcaster),
    Member(Member),
}

impl Core for Node {
    type Event = Ev;

    fn handle_packet(&mut self, now: Instant, p: Incoming<'_>) {
        match self {
            Node::Mcaster(r) => r.handle_packet(now, p),
            Node::Member(m) => {
                if !m.reg.handle(now, &p) && p.protocol == ProtocolId::Test && p.body.len() == 26 {
                    let mut seq = [0u8; 8];
                    seq.copy_from_slice(&p.body[..8]);
                    let mut id = [0u8; NodeId::WIRE_LEN];
                    id.copy_from_slice(&p.body[8..]);
                    m.events.push_back(Ev::Got {
                        from: p.source,
                        from_inc: p.source_incarnation,
                        seq: u64::from_be_bytes(seq),
                        peer: p.peer,
                        body_sender: NodeId::read_wire(&id),
                    });
                }
                m.drain_reg();
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Node::Mcaster(r) => r.handle_timeout(now),
            Node::Member(m) => {
                m.reg.handle_timeout(now);
                m.drain_reg();
                if now >= m.next_send {
                    m.next_send = now + SEND_EVERY;
                    let mut body = m.seq.to_be_bytes().to_vec();
                    let mut id = [0u8; NodeId::WIRE_LEN];
                    m.id.write_wire(&mut id);
                    body.extend_from_slice(&id);
                    m.seq += 1;
                    let t = m.reg.route(Transmit::new(GROUP, ProtocolId::Test, body));
                    m.out.push_back(t);
                }
            }
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            Node::Mcaster(r) => r.poll_transmit(),
            Node::Member(m) => m.out.pop_front(),
        }
    }

    fn poll_event(&mut self) -> Option<Ev> {
        match self {
            Node::Mcaster(r) => r.poll_event().map(Ev::Mcaster),
            Node::Member(m) => m.events.pop_front(),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Node::Mcaster(r) => r.poll_timeout(),
            Node::Member(m) => earliest(m.reg.poll_timeout(), Some(m.next_send)),
        }
    }
}

fn relay_members(sim: &Simulator<Node>) -> BTreeSet<NodeId> {
    match sim.core(RELAY) {
        Some(Node::Mcaster(r)) => r
            .group(GROUP)
            .map(|g| g.members.iter().map(|(m, _)| *m).collect())
            .unwrap_or_default(),
        _ => BTreeSet::new(),
    }
}

fn run(seed: u64, test: &str) -> String {
    let mut plan = ChaCha8Rng::seed_from_u64(seed ^ 0x4D43_4153);
    let uc = uc_members();
    let mc = mc_members();
    let link = LinkConfig::lan()
        .with_loss(plan.random_range(0.0..=0.1))
        .with_reorder(plan.random_range(0.0..=0.2), Duration::from_millis(5));
    let cfg = SimConfig::new(seed, sim_replay!(test))
        .with_link(link)
        .with_keep_events(false);
    let mc_set: BTreeSet<NodeId> = mc.iter().copied().collect();
    let mut sim = Simulator::new(cfg, move |spawn| {
        if spawn.id == RELAY {
            Node::Mcaster(Mcaster::new(
                RELAY,
                McasterConfig {
                    multicast: true,
                    ..McasterConfig::default()
                },
            ))
        } else if mc_set.contains(&spawn.id) {
            Node::Member(Member::new(&spawn, ReceiveMode::Mc))
        } else {
            Node::Member(Member::new(&spawn, ReceiveMode::Uc))
        }
    });

    let uc_set: BTreeSet<NodeId> = uc.iter().copied().collect();
    let heard: Rc<RefCell<BTreeMap<NodeId, BTreeSet<NodeId>>>> = Rc::default();
    let since = Rc::new(Cell::new(Instant::MAX));
    let relearned: Rc<RefCell<BTreeSet<NodeId>>> = Rc::default();
    let restarted_at = Rc::new(Cell::new(Instant::MAX));
    let (heard_c, since_c) = (heard.clone(), since.clone());
    let (relearned_c, restarted_c) = (relearned.clone(), restarted_at.clone());
    let mut seen: BTreeSet<(NodeId, Incarnation, NodeId, Incarnation, u64)> = BTreeSet::new();
    sim.add_checker("relayed messages: once, original sender", move |view| {
        for (t, node, event) in view.new_events() {
            let (from, from_inc, seq, peer, body_sender) = match event {
                Ev::Got {
                    from,
                    from_inc,
                    seq,
                    peer,
                    body_sender,
                } => (from, from_inc, seq, peer, body_sender),
                Ev::Reg(
                    RegistrationEvent::Relearned { group }
                    | RegistrationEvent::Registered { group },
                ) if *t >= restarted_c.get() && *group == GROUP => {
                    relearned_c.borrow_mut().insert(*node);
                    continue;
                }
                Ev::Mcaster(McasterEvent::MemberJoined { member, .. }) if member == node => {
                    return Err(format!("the relay listed itself at {t}"));
                }
                _ => continue,
            };
            if from == node {
                return Err(format!("{node} received its own message {seq} at {t}"));
            }
            if body_sender != from {
                return Err(format!(
                    "{node} got {seq} from {from}, but {body_sender} sent it"
                ));
            }
            if uc_set.contains(node) && *peer != RELAY {
                return Err(format!("uc member {node} got a copy from {peer}"));
            }
            if *peer != RELAY && peer != from {
                return Err(format!(
                    "{node} got a copy from {peer}, neither sender nor relay"
                ));
            }
            if *t >= since_c.get() {
                heard_c.borrow_mut().entry(*node).or_default().insert(*from);
            }
            let inc = view.incarnation(*node).ok_or("a down node reported")?;
            if !seen.insert((*node, inc, *from, *from_inc, *seq)) {
                return Err(format!("{node} got {from}'s message {seq} twice (at {t})"));
            }
        }
        Ok(())
    });

    sim.add_node(RELAY);
    sim.join_group(RELAY, GROUP);
    for m in &mc {
        sim.add_node(*m);
        sim.join_group(*m, GROUP);
    }
    for m in &uc {
        sim.add_node(*m);
    }

    // Lossy phase: one uc member dies without LEAVE_GROUP.
    let victim = uc[plan.random_range(0..uc.len())];
    let crash_at = Instant::from_millis(plan.random_range(500..=1000));
    sim.run_until(crash_at);
    sim.crash(victim);
    sim.run_until(Instant::from_millis(4100));
    let members = relay_members(&sim);
    if members.contains(&victim) {
        sim.fail(format!(
            "{victim} crashed at {crash_at} but is still listed: {members:?}"
        ));
    }

    // Clean phase: the relay crashes and restarts; members are not touched.
    sim.set_default_link(LinkConfig::lan());
    sim.run_until(Instant::from_millis(4500));
    sim.crash(RELAY);
    let down_for = Duration::from_millis(plan.random_range(0..=500));
    sim.run_for(down_for);
    sim.restart(RELAY);
    let restarted = sim.now();
    restarted_at.set(restarted);
    sim.run_for(DEFAULT_REFRESH_INTERVAL + Duration::from_millis(1));
    let live: BTreeSet<NodeId> = uc
        .iter()
        .chain(mc.iter())
        .copied()
        .filter(|m| *m != victim)
        .collect();
    let members = relay_members(&sim);
    if members != live {
        sim.fail(format!(
            "one refresh interval after the relay restarted at {restarted}: {members:?}, expected {live:?}"
        ));
    }

    if *relearned.borrow() != live {
        sim.fail(format!(
            "members that noticed the relay relearned them: {:?}, expected {live:?}",
            relearned.borrow()
        ));
    }

    // Traffic flows between every pair of live members again.
    since.set(sim.now());
    sim.run_for(Duration::from_millis(500));
    for a in &live {
        for b in &live {
            // mc members reach each other by IP multicast, not the relay.
            let heard_b = heard.borrow().get(a).is_some_and(|h| h.contains(b));
            if a != b && !heard_b {
                sim.fail(format!(
                    "{a} heard nothing from {b} after the relay restarted"
                ));
            }
        }
    }
    sim.trace_hex()
}

#[test]
fn relay_many_seeds() {
    let replay = sim_replay!("relay_many_seeds");
    sim::run_seeds(&replay, 200, |seed| {
        run(seed, "relay_many_seeds");
    });
}

#[test]
fn relay_is_deterministic() {
    let replay = sim_replay!("relay_is_deterministic");
    sim::run_seeds(&replay, 3, |seed| {
        let a = run(seed, "relay_is_deterministic");
        let b = run(seed, "relay_is_deterministic");
        assert_eq!(a, b, "seed {seed} is not deterministic");
    });
}
