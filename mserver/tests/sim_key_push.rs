//! The committed key ring reaches the member interfaces and the mcaster
//! (issue 16, item 3), in the deterministic simulator: three mservers (the
//! real [`MserverNode`], registered with the real [`Mcaster`] core), two
//! member interfaces (the real [`MiNode`]) with a member each, every
//! datagram sealed and opened with each node's own ring (the simulator's
//! codec, as the daemons' sockets), on a duplicating, reordering LAN that
//! also loses datagrams between the mservers and to and from the mcaster.
//! (The MIs' links lose nothing: an MI whose answer to a poll is lost
//! after the RPC layer acknowledged the poll is failed, since the RPC
//! probe interval, 1 s, is longer than the poll timeout; that is so with
//! or without keys.) `install`, `use` and `remove` are submitted at random members, each
//! as soon as the previous one committed everywhere; each node's codec
//! takes a ring when its core reports one (the mserver's
//! `KeyRingChanged`, the MI's and the mcaster's `KeyRing`), as the daemons
//! do, and nobody is told anything else.
//!
//! Checked for every seed: at the end every mserver, MI and the mcaster
//! holds key 2 alone; no MI was failed and both stay attached; the
//! mservers stay registered with the mcaster; a join submitted after the
//! rotation is answered; no mserver's sockets signed with a key before
//! every MI attached to it and the mcaster acknowledged the ring that
//! holds it, unless the bound ran out (`rollout::HOLD_MAX`, never here).
//!
//! `SIM_RUNS=N` runs more seeds, `SIM_SEED=S` one seed; a failure prints
//! its replay line.

use membership::appgroup::agent::MiAgentConfig;
use membership::appgroup::{GroupName, GroupOptions, MemberInfo, MemberName};
use membership::coreset::{CoreSetConfig, CoreSetEvent};
use membership::id::NodeId;
use membership::mcaster::{Mcaster, McasterConfig, McasterEvent};
use membership::mcaster_reg::{ReceiveMode, Registration, RegistrationConfig};
use membership::mi::{ConnId, MiNode, MiNodeEvent, Op, Reply, SessionConfig, ToClient};
use membership::mserver::access::AdminPolicy;
use membership::mserver::keys::KeyOp;
use membership::rpc::{Rpc, RpcConfig};
use membership::sim::{run_seeds, Either, EitherEvent, Fault, LinkConfig, SimConfig, Simulator};
use membership::sim_replay;
use membership::tree::{Chain, ChainConfig, ChainEvent};
use membership::wire::{ClusterKey, KeyRing};
use mserver::node::{MserverNode, NodeEvent};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

const SERVERS: u8 = 3;
const MIS: u8 = 2;

type Host = Either<Box<MserverNode>, Either<Box<MiNode>, Box<Mcaster>>>;
type HostEvent = EitherEvent<NodeEvent, EitherEvent<MiNodeEvent, McasterEvent>>;

fn group_addr() -> NodeId {
    NodeId::v4(239, 9, 9, 7, 7000)
}

fn server(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7200)
}

fn mi_addr(i: u8) -> NodeId {
    NodeId::v4(10, 0, 1, i, 7400)
}

fn mcaster() -> NodeId {
    NodeId::v4(10, 0, 2, 1, 7100)
}

fn key(id: u8) -> ClusterKey {
    ClusterKey::new(id, [id; 32]).expect("key")
}

fn ring1() -> KeyRing {
    KeyRing::new(vec![key(1)]).expect("ring")
}

fn gname() -> GroupName {
    GroupName::parse("chat").expect("name")
}

fn simulator(seed: u64) -> Simulator<Host> {
    let mut link = LinkConfig::lan();
    link.loss = 0.02;
    link.duplicate = 0.02;
    link.reorder = 0.05;
    let config = SimConfig::new(seed, sim_replay!("sim_key_push"))
        .with_link(link)
        .with_auth(ring1())
        .with_trace_tail(if std::env::var("SIM_DEBUG").is_ok() {
            500_000
        } else {
            0
        });
    let mut sim = Simulator::new(config, move |spawn| match spawn.id.addr().port() {
        7200 => {
            let c = CoreSetConfig::new(spawn.id, spawn.incarnation, "lan", group_addr());
            let chain =
                Chain::new(ChainConfig::one_level(c), spawn.now, spawn.seed).expect("config");
            let rpc = Rpc::new(
                spawn.id,
                spawn.incarnation,
                RpcConfig::default(),
                spawn.seed ^ 0x5eed,
            );
            // Group traffic by (simulated) IP multicast; registered with
            // the mcaster as a multicast member.
            let reg = Registration::new(RegistrationConfig::new(mcaster(), ReceiveMode::Mc));
            Host::Left(Box::new(
                MserverNode::new(spawn.now, chain, Some(reg), rpc)
                    .with_security(AdminPolicy::open(), Some(ring1())),
            ))
        }
        7400 => {
            let k = spawn.id.addr().ip().to_string();
            let mut c = MiAgentConfig::new(
                spawn.id,
                spawn.incarnation,
                Uuid::from_bytes(spawn.incarnation.to_bytes()),
                format!("host-{k}"),
            );
            c.mservers = (1..=SERVERS).map(server).collect();
            let sessions = SessionConfig {
                host: format!("host-{k}"),
                max_inflight: 64,
                max_buffered: 1024,
                unix_ms_at_zero: 0,
                seed: spawn.seed ^ 0x1d,
            };
            Host::Right(Either::Left(Box::new(MiNode::new(
                spawn.now,
                c,
                sessions,
                RpcConfig::default(),
                spawn.seed,
            ))))
        }
        _ => Host::Right(Either::Right(Box::new(Mcaster::new(
            spawn.id,
            McasterConfig {
                multicast: true,
                ..McasterConfig::default()
            },
        )))),
    });
    sim.track_incarnation(|e| match e {
        HostEvent::Left(NodeEvent::Chain(ChainEvent::NewIncarnation(i))) => Some(*i),
        _ => None,
    });
    sim
}

/// What the test saw so far.
#[derive(Default)]
struct Seen {
    /// Answers to local requests: (MI, request id) -> reply.
    answers: BTreeMap<(NodeId, u64), Result<Reply, String>>,
    /// The key ids each node's codec holds.
    rings: BTreeMap<NodeId, Vec<u8>>,
}

/// Runs for `d`, then hands every reported ring to its node's codec (as
/// the daemons hand it to their sockets) and keeps the answers.
fn run(sim: &mut Simulator<Host>, seen: &mut Seen, d: Duration) {
    sim.run_for(d);
    let events = sim.take_events();
    if std::env::var("SIM_DEBUG").is_ok() {
        for (t, id, e) in &events {
            let show = matches!(
                e,
                HostEvent::Left(NodeEvent::KeyRingChanged { .. })
                    | HostEvent::Right(EitherEvent::Left(
                        MiNodeEvent::KeyRing { .. }
                            | MiNodeEvent::Attached { .. }
                            | MiNodeEvent::Detached { .. }
                    ))
                    | HostEvent::Right(EitherEvent::Right(McasterEvent::KeyRing { .. }))
            ) || matches!(
                e,
                HostEvent::Left(NodeEvent::Chain(ChainEvent::Level {
                    event: CoreSetEvent::AppCommitted { .. },
                    ..
                }))
            );
            if show {
                eprintln!("{t:?} {id} {e:?}");
            }
        }
        let failed: Vec<u64> = (1..=SERVERS)
            .filter_map(|i| match sim.core(server(i)) {
                Some(Host::Left(n)) => Some(n.apps().stats().mis_failed),
                _ => None,
            })
            .collect();
        eprintln!("{:?} MIs failed {failed:?}", sim.now());
    }
    for (_, id, e) in events {
        let ring = match e {
            HostEvent::Left(NodeEvent::KeyRingChanged { ring, .. }) => {
                // A new signing key reaches an mserver's sockets only once
                // the mcaster and the MIs attached to it hold it.
                let signing = ring.signing_key().id();
                let before = seen.rings.get(&id).and_then(|r| r.first().copied());
                if before.is_some_and(|b| b != signing) {
                    let attached: Vec<NodeId> = (1..=MIS)
                        .map(mi_addr)
                        .filter(|m| match sim.core(*m) {
                            Some(Host::Right(Either::Left(n))) => {
                                n.agent().attached_to() == Some(id)
                            }
                            _ => false,
                        })
                        .collect();
                    for r in attached.iter().chain([&mcaster()]) {
                        let holds = seen.rings.get(r).is_some_and(|k| k.contains(&signing));
                        if !holds {
                            sim.fail(format!(
                                "{id} signs with key {signing} before {r} holds it; rings {:?}",
                                seen.rings
                            ));
                        }
                    }
                }
                ring
            }
            HostEvent::Right(EitherEvent::Left(MiNodeEvent::KeyRing { ring, .. })) => ring,
            HostEvent::Right(EitherEvent::Right(McasterEvent::KeyRing { ring, .. })) => ring,
            HostEvent::Right(EitherEvent::Left(MiNodeEvent::Send {
                msg: ToClient::Response { id: rid, result },
                ..
            })) => {
                seen.answers
                    .insert((id, rid), result.map_err(|e| e.to_string()));
                continue;
            }
            _ => continue,
        };
        seen.rings.insert(id, ring.ids());
        if let Some(a) = sim.codec_mut(id).and_then(|c| c.auth_mut()) {
            a.set_ring(ring);
        }
    }
}

/// Request `id` of MI `mi`'s connection `id / 10` (one membership per
/// connection and group), answered.
fn ask(sim: &mut Simulator<Host>, seen: &mut Seen, mi: NodeId, id: u64, op: Op) -> Reply {
    let conn: ConnId = id / 10;
    sim.with_core(mi, |h, now| {
        if let Host::Right(Either::Left(n)) = h {
            n.open(now, conn, format!("process {conn}"));
            n.request(now, conn, id, op);
        }
    });
    for _ in 0..500 {
        run(sim, seen, Duration::from_millis(10));
        if let Some(r) = seen.answers.remove(&(mi, id)) {
            return r.unwrap_or_else(|e| sim.fail(format!("request {id} at {mi}: {e}")));
        }
    }
    sim.fail(format!("request {id} at {mi} never answered"))
}

fn mserver(sim: &Simulator<Host>, i: u8) -> &MserverNode {
    match sim.core(server(i)) {
        Some(Host::Left(n)) => n,
        _ => sim.fail(format!("mserver {i} is not running")),
    }
}

fn mi(sim: &Simulator<Host>, i: u8) -> &MiNode {
    match sim.core(mi_addr(i)) {
        Some(Host::Right(Either::Left(n))) => n,
        _ => sim.fail(format!("MI {i} is not running")),
    }
}

fn rotate(seed: u64) {
    let mut sim = simulator(seed);
    let mut seen = Seen::default();
    for n in (1..=SERVERS)
        .map(server)
        .chain((1..=MIS).map(mi_addr))
        .chain([mcaster()])
    {
        seen.rings.insert(n, vec![1]);
    }
    let mut mi_link = LinkConfig::lan();
    mi_link.duplicate = 0.02;
    mi_link.reorder = 0.05;
    for i in 1..=MIS {
        for j in 1..=SERVERS {
            for (from, to) in [(mi_addr(i), server(j)), (server(j), mi_addr(i))] {
                sim.apply(Fault::SetLink {
                    from,
                    to,
                    link: mi_link.clone(),
                });
            }
        }
    }
    sim.add_node(mcaster());
    for i in 1..=SERVERS {
        sim.join_group(server(i), group_addr());
        sim.add_node(server(i));
        run(&mut sim, &mut seen, Duration::from_millis(300));
    }
    for i in 1..=MIS {
        sim.add_node(mi_addr(i));
    }
    run(&mut sim, &mut seen, Duration::from_millis(500));
    let create = Op::CreateGroup {
        name: gname(),
        options: GroupOptions::default(),
    };
    assert!(matches!(
        ask(&mut sim, &mut seen, mi_addr(1), 1, create),
        Reply::Created
    ));
    for i in 1..=MIS {
        let member = MemberInfo::new(MemberName::parse(&format!("m{i}")).expect("name"));
        let join = Op::Join {
            group: gname(),
            member,
        };
        let r = ask(&mut sim, &mut seen, mi_addr(i), 10, join);
        assert!(matches!(r, Reply::Joined { .. }), "{r:?}");
    }

    // The three commands, each submitted at a random mserver as soon as
    // the previous one committed at every mserver.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ops = [
        (KeyOp::Install(key(2).to_spec()), vec![1u8, 2]),
        (KeyOp::Use(2), vec![2, 1]),
        (KeyOp::Remove(1), vec![2]),
    ];
    for (op, want) in ops {
        let mut submitted = false;
        for _ in 0..200 {
            if !submitted {
                let at = server(rng.random_range(1..=SERVERS));
                let op = op.clone();
                submitted = sim
                    .with_core(at, |h, now| match h {
                        Host::Left(n) => n.submit_key_op(now, op).is_ok(),
                        _ => false,
                    })
                    .unwrap_or(false);
            }
            run(&mut sim, &mut seen, Duration::from_millis(5));
            let committed = (1..=SERVERS)
                .all(|i| mserver(&sim, i).key_ring().map(|r| r.ids()).as_ref() == Some(&want));
            if submitted && committed {
                break;
            }
        }
    }
    // Everyone settles on key 2 alone.
    let everyone: Vec<NodeId> = (1..=SERVERS)
        .map(server)
        .chain((1..=MIS).map(mi_addr))
        .chain([mcaster()])
        .collect();
    for _ in 0..400 {
        if everyone.iter().all(|n| seen.rings.get(n) == Some(&vec![2])) {
            break;
        }
        run(&mut sim, &mut seen, Duration::from_millis(10));
    }
    for n in &everyone {
        assert_eq!(
            seen.rings.get(n),
            Some(&vec![2]),
            "{n} does not hold key 2 alone; rings {:?}\n{}",
            seen.rings,
            sim.replay_line()
        );
    }
    // A while later: nobody failed, everyone still attached and registered.
    run(&mut sim, &mut seen, Duration::from_secs(3));
    if std::env::var("SIM_DEBUG").is_ok() {
        for l in sim.trace_tail() {
            eprintln!("TRACE {l}");
        }
    }
    for i in 1..=SERVERS {
        let s = mserver(&sim, i);
        assert_eq!(
            s.apps().stats().mis_failed,
            0,
            "mserver {i} failed an MI\n{}",
            sim.replay_line()
        );
        assert_eq!(s.apps().stats().rings_abandoned, 0);
        assert!(
            s.registration()
                .is_some_and(|r| r.is_registered(group_addr())),
            "mserver {i} fell out of the mcaster\n{}",
            sim.replay_line()
        );
        assert_eq!(
            s.registration().map(|r| r.counters().rings_abandoned),
            Some(0)
        );
        assert_eq!(
            s.coreset().snapshot(sim.now()).members.len(),
            SERVERS as usize
        );
    }
    for i in 1..=MIS {
        assert!(
            mi(&sim, i).agent().attached_to().is_some(),
            "MI {i} is not attached\n{}",
            sim.replay_line()
        );
    }
    // The MIs still work: a new member joins under key 2.
    let member = MemberInfo::new(MemberName::parse("late").expect("name"));
    let r = ask(
        &mut sim,
        &mut seen,
        mi_addr(2),
        20,
        Op::Join {
            group: gname(),
            member,
        },
    );
    match r {
        Reply::Joined { view, .. } => assert_eq!(view.members.len(), MIS as usize + 1),
        other => sim.fail(format!("late join: {other:?}")),
    }
}

#[test]
fn a_rotation_reaches_the_member_interfaces_and_the_mcaster() {
    run_seeds(
        &sim_replay!("a_rotation_reaches_the_member_interfaces_and_the_mcaster"),
        8,
        rotate,
    );
}
