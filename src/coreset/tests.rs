//! Unit tests of the core-set core driven by hand: bad input of every kind
//! (DESIGN.md section 8; issue 4, "Bad input"), local health, unreachable
//! hints, leaving. The protocol under faults is tested in
//! `tests/sim_coreset.rs`.

use super::context::MAX_RATE_LIMITS;
use super::*;
use crate::coreset::msg::ProposalError;
use crate::sansio::{Core, Incoming};
use crate::wire::encode_body;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn addr(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7000)
}
fn group() -> NodeId {
    NodeId::v4(239, 1, 2, 3, 7000)
}
fn inc(i: u8) -> Incarnation {
    Incarnation::from_parts(1_700_000_000_000 + u64::from(i), [i; 10])
}
fn ms(x: u64) -> Instant {
    Instant::from_millis(x)
}

fn config(i: u8) -> CoreSetConfig {
    CoreSetConfig::new(addr(i), inc(i), "unit", group())
}

/// Everything a core sent and reported since the last drain.
fn drain(c: &mut CoreSet) -> (Vec<(NodeId, Envelope)>, Vec<CoreSetEvent>) {
    let mut t = Vec::new();
    while let Some(x) = c.poll_transmit() {
        let env: Envelope = decode_body(&x.body).expect("own messages decode");
        t.push((x.destination, env));
    }
    let mut e = Vec::new();
    while let Some(x) = c.poll_event() {
        e.push(x);
    }
    (t, e)
}

fn deliver(
    c: &mut CoreSet,
    now: Instant,
    from: NodeId,
    from_inc: Incarnation,
    to: NodeId,
    env: &Envelope,
) {
    let body = encode_body(env).expect("encodes");
    c.handle_packet(
        now,
        Incoming::direct(from, from_inc, to, ProtocolId::CoreSet, &body),
    );
}

fn env(view: ViewId, msg: Msg) -> Envelope {
    Envelope {
        group: "unit".into(),
        view,
        msg,
        life: None,
    }
}

/// Runs `c`'s timers until `until` (or it stops arming one).
fn run_timers(c: &mut CoreSet, until: Instant) -> Instant {
    let mut now = Instant::ZERO;
    for _ in 0..10_000 {
        match c.poll_timeout() {
            Some(t) if t <= until => {
                now = t;
                c.handle_timeout(t);
            }
            _ => break,
        }
    }
    now
}

/// Node 1 founded alone, then admitted node 2: returns both cores, in the
/// same two-member view, at time `now`.
fn pair() -> (CoreSet, CoreSet, Instant) {
    let mut a = CoreSet::new(config(1), Instant::ZERO, 1).expect("config");
    let now = run_timers(&mut a, ms(2000));
    assert!(a.is_member(), "founded alone");
    drain(&mut a);
    let mut b = CoreSet::new(config(2), now, 2).expect("config");
    let (t, _) = drain(&mut b);
    let (dest, req) = t.into_iter().next().expect("a join request");
    assert_eq!(dest, group());
    deliver(&mut a, now, addr(2), inc(2), group(), &req);
    // Alone, the coordinator commits at once.
    let (t, _) = drain(&mut a);
    let commit = t
        .iter()
        .find(|(_, e)| matches!(e.msg, Msg::Commit(_)))
        .expect("a COMMIT")
        .1
        .clone();
    deliver(&mut b, now, addr(1), inc(1), group(), &commit);
    assert!(b.is_member());
    assert_eq!(a.view(), b.view());
    drain(&mut a);
    drain(&mut b);
    (a, b, now)
}

#[test]
fn config_errors_are_refused_by_new() {
    let mut c = config(1);
    c.group = "no spaces".into();
    assert!(matches!(
        CoreSet::new(c, Instant::ZERO, 1),
        Err(ConfigError::BadGroupName(_))
    ));
}

#[test]
fn founding_alone_after_the_retries() {
    let mut c = CoreSet::new(config(1), Instant::ZERO, 1).expect("config");
    let (t, _) = drain(&mut c);
    assert!(matches!(
        t[0].1.msg,
        Msg::MJoinReq {
            attempt: 0,
            rejoin: false,
            child: None,
            declined: false,
        }
    ));
    let mut at = Instant::ZERO;
    while !c.is_member() {
        at = c.poll_timeout().expect("a timer while joining");
        c.handle_timeout(at);
    }
    // Three silent intervals of 100 ms (plus jitter).
    assert!(at >= ms(300) && at < ms(400), "founded at {at:?}");
    let snap = c.snapshot(Instant::ZERO);
    assert!(snap.joined);
    assert_eq!(snap.view.number, 1);
    assert_eq!(snap.members.len(), 1);
    assert_eq!(snap.me.rank, 0);
    assert_eq!(c.stats().founded, 1);
}

#[test]
fn a_lower_newcomer_heard_keeps_us_asking() {
    let mut c = CoreSet::new(config(5), Instant::ZERO, 1).expect("config");
    drain(&mut c);
    // Node 1 is also asking: it founds; we keep asking.
    let req = env(
        NO_VIEW,
        Msg::MJoinReq {
            attempt: 0,
            rejoin: false,
            child: None,
            declined: false,
        },
    );
    for t in [0, 100, 200, 300, 400] {
        deliver(&mut c, ms(t), addr(1), inc(1), group(), &req);
        run_timers(&mut c, ms(t + 99));
    }
    assert!(!c.is_member(), "must not found while a lower address asks");
    run_timers(&mut c, ms(3000));
    assert!(c.is_member(), "founds once the lower one is gone");
}

#[test]
fn malformed_and_foreign_bodies_change_nothing() {
    let (mut a, _b, now) = pair();
    let before = a.snapshot(Instant::ZERO);
    let good = encode_body(&env(a.view().unwrap(), Msg::Query)).unwrap();
    let mut bad: Vec<Vec<u8>> = vec![vec![], vec![0xFF; 40], good[..good.len() / 2].to_vec()];
    let mut trailing = good.clone();
    trailing.push(0);
    bad.push(trailing);
    for b in &bad {
        a.handle_packet(
            now,
            Incoming::direct(addr(2), inc(2), addr(1), ProtocolId::CoreSet, b),
        );
    }
    assert_eq!(a.stats().drops.malformed, bad.len() as u64);
    // Another group's name, and our name on another group address.
    let mut other = env(a.view().unwrap(), Msg::Query);
    other.group = "other".into();
    deliver(&mut a, now, addr(2), inc(2), addr(1), &other);
    let q = env(a.view().unwrap(), Msg::Query);
    deliver(
        &mut a,
        now,
        addr(2),
        inc(2),
        NodeId::v4(239, 9, 9, 9, 1),
        &q,
    );
    assert_eq!(a.stats().drops.wrong_group, 2);
    // Another protocol.
    a.handle_packet(
        now,
        Incoming::direct(addr(2), inc(2), addr(1), ProtocolId::Rpc, &good),
    );
    let (t, e) = drain(&mut a);
    assert!(t.is_empty() && e.is_empty());
    assert_eq!(a.snapshot(Instant::ZERO), before);
}

#[test]
fn a_stranger_is_told_not_member_and_changes_nothing() {
    let (mut a, _b, now) = pair();
    let before = a.snapshot(Instant::ZERO);
    let v = a.view().unwrap();
    deliver(&mut a, now, addr(9), inc(9), addr(1), &env(v, Msg::Query));
    let (t, _) = drain(&mut a);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].0, addr(9));
    assert_eq!(t[0].1.msg, Msg::NotMember);
    // Rate-limited: a second query right away gets nothing.
    deliver(&mut a, now, addr(9), inc(9), addr(1), &env(v, Msg::Query));
    assert!(drain(&mut a).0.is_empty());
    // A stranger's AGREE, ACK, ABORT, COMMIT: nothing changes.
    let p = Proposal {
        view: ViewId {
            number: v.number + 1,
            seq: 0,
            coordinator: inc(9),
        },
        originator: 0,
        layer: Layer::Physical,
        coordinator_failure: false,
        removals: vec![Removal {
            rank: 1,
            reason: RemovalReason::Failed,
        }],
        joins: vec![],
        merges: Vec::new(),
        app: Vec::new(),
        tree: Vec::new(),
    };
    let table = a.table().unwrap().apply(&p);
    for m in [
        Msg::agree(p.clone(), false),
        Msg::AgreeAck { proposal: p.view },
        Msg::Abort { proposal: p.view },
        Msg::Commit(Commit {
            proposal: p.clone(),
            table,
        }),
    ] {
        deliver(&mut a, now, addr(9), inc(9), group(), &env(v, m));
    }
    assert!(a.stats().drops.non_member >= 5);
    drain(&mut a);
    assert_eq!(a.snapshot(Instant::ZERO), before);
}

#[test]
fn stale_views_and_unacked_commits_change_nothing() {
    let (mut a, mut b, now) = pair();
    let v = a.view().unwrap();
    let before = b.snapshot(Instant::ZERO);
    // A COMMIT for a change B never ACKed (it keeps B, so it is not an
    // exclusion): ignored.
    let p = Proposal {
        view: ViewId {
            number: v.number + 1,
            seq: 0,
            coordinator: inc(1),
        },
        originator: 0,
        layer: Layer::Physical,
        coordinator_failure: false,
        removals: vec![],
        joins: vec![Joiner {
            addr: addr(7),
            incarnation: inc(7),
            rejoin: false,
            declined: false,
            child_group: None,
        }],
        merges: Vec::new(),
        app: Vec::new(),
        tree: Vec::new(),
    };
    let table = b.table().unwrap().apply(&p);
    let commit = Commit {
        proposal: p.clone(),
        table,
    };
    deliver(
        &mut b,
        now,
        addr(1),
        inc(1),
        group(),
        &env(v, Msg::Commit(commit)),
    );
    assert_eq!(b.stats().drops.unacked_commit, 1);
    // An AGREE on a base that is not our view (a fork of the same number).
    let fork = ViewId {
        number: v.number,
        seq: 0,
        coordinator: inc(42),
    };
    deliver(
        &mut b,
        now,
        addr(1),
        inc(1),
        group(),
        &env(fork, Msg::agree(p.clone(), false)),
    );
    assert_eq!(b.stats().drops.stale_view, 1);
    // A message from an older life of a member.
    let older = Incarnation::from_parts(1, [0; 10]);
    deliver(&mut b, now, addr(1), older, addr(2), &env(v, Msg::Query));
    assert_eq!(b.stats().drops.stale_incarnation, 1);
    // An AGREE that does not fit the table (a removal of a rank we lack).
    let mut wrong = p.clone();
    wrong.joins.clear();
    wrong.removals = vec![Removal {
        rank: 77,
        reason: RemovalReason::Failed,
    }];
    deliver(
        &mut b,
        now,
        addr(1),
        inc(1),
        group(),
        &env(v, Msg::agree(wrong, false)),
    );
    assert_eq!(b.stats().drops.invalid_proposal, 1);
    let (t, e) = drain(&mut b);
    assert!(t.is_empty() && e.is_empty(), "{t:?} {e:?}");
    assert_eq!(b.snapshot(Instant::ZERO), before);
    let _ = &mut a;
}

#[test]
fn duplicated_phase_messages_install_once() {
    let (mut a, mut b, now) = pair();
    let v = a.view().unwrap();
    // Node 3 asks to join: A coordinates, B must ACK.
    deliver(
        &mut a,
        now,
        addr(3),
        inc(3),
        group(),
        &env(
            NO_VIEW,
            Msg::MJoinReq {
                attempt: 0,
                rejoin: false,
                child: None,
                declined: false,
            },
        ),
    );
    let (t, _) = drain(&mut a);
    let agree = t
        .iter()
        .find(|(_, e)| matches!(e.msg, Msg::AgreeJ { .. }))
        .expect("AGREE_J")
        .1
        .clone();
    // Twice: two identical ACKs, one lock.
    deliver(&mut b, now, addr(1), inc(1), group(), &agree);
    deliver(&mut b, now, addr(1), inc(1), group(), &agree);
    let (t, _) = drain(&mut b);
    assert_eq!(t.len(), 2);
    let ack = t[0].1.clone();
    assert!(matches!(ack.msg, Msg::AgreeAck { .. }));
    assert_eq!(b.snapshot(Instant::ZERO).state, ChangeState::Changing);
    // A gets the ACK twice: one commit, one duplicate.
    deliver(&mut a, now, addr(2), inc(2), addr(1), &ack);
    deliver(&mut a, now, addr(2), inc(2), addr(1), &ack);
    let (t, _) = drain(&mut a);
    let commit = t
        .iter()
        .find(|(_, e)| matches!(e.msg, Msg::Commit(_)))
        .expect("COMMIT")
        .1
        .clone();
    assert!(a.stats().drops.duplicate >= 1);
    assert_eq!(a.view().unwrap().number, v.number + 1);
    // B installs once; the replay is a duplicate.
    deliver(&mut b, now, addr(1), inc(1), group(), &commit);
    deliver(&mut b, now, addr(1), inc(1), group(), &commit);
    assert_eq!(b.view(), a.view());
    assert_eq!(b.table(), a.table());
    assert_eq!(b.stats().drops.duplicate, 1);
    let installs = drain(&mut b)
        .1
        .into_iter()
        .filter(|e| matches!(e, CoreSetEvent::ViewInstalled { .. }))
        .count();
    assert_eq!(installs, 1);
    // A replayed old AGREE now refers to an old base: not ACKed.
    deliver(&mut b, now, addr(1), inc(1), group(), &agree);
    let (t, _) = drain(&mut b);
    assert!(t
        .iter()
        .all(|(_, e)| !matches!(e.msg, Msg::AgreeAck { .. })));
}

#[test]
fn join_requests_from_a_member_address() {
    let (mut a, _b, now) = pair();
    let v = a.view().unwrap();
    let req = env(
        NO_VIEW,
        Msg::MJoinReq {
            attempt: 3,
            rejoin: false,
            child: None,
            declined: false,
        },
    );
    // The same life asks again: it missed its COMMIT, which is re-sent.
    deliver(&mut a, now, addr(2), inc(2), group(), &req);
    let (t, _) = drain(&mut a);
    assert!(t
        .iter()
        .any(|(d, e)| *d == addr(2) && matches!(e.msg, Msg::Commit(_))));
    assert_eq!(a.view(), Some(v));
    // An older life: ignored.
    deliver(
        &mut a,
        now,
        addr(2),
        Incarnation::from_parts(5, [1; 10]),
        group(),
        &req,
    );
    assert_eq!(a.stats().drops.stale_incarnation, 1);
    assert_eq!(a.view(), Some(v));
    // A newer life: the old one failed (a view without it), then the new
    // one admitted.
    let newer = Incarnation::from_parts(1_800_000_000_000, [2; 10]);
    deliver(&mut a, now, addr(2), newer, group(), &req);
    assert_eq!(a.stats().restarts_detected, 1);
    let t = run_timers(&mut a, now + Duration::from_millis(50));
    let _ = t;
    let members = a.snapshot(Instant::ZERO).members;
    assert!(
        members.iter().all(|m| m.incarnation != inc(2)),
        "{members:?}"
    );
    assert!(
        members.iter().any(|m| m.incarnation == newer),
        "{members:?}"
    );
    assert_eq!(a.view().unwrap().number, v.number + 2);
}

#[test]
fn a_late_timer_requeries_instead_of_accusing() {
    let (mut a, _b, now) = pair();
    let v = a.view();
    drain(&mut a);
    // The process was stopped for 5 s: every deadline is long past.
    let later = now + Duration::from_secs(5);
    a.handle_timeout(later);
    assert!(a.fail_list().is_empty(), "accused on its own lateness");
    assert_eq!(a.stats().late_timers, 1);
    let (t, _) = drain(&mut a);
    assert!(t
        .iter()
        .any(|(d, e)| *d == addr(2) && matches!(e.msg, Msg::Query)));
    assert_eq!(a.view(), v);
    // On time from now on, silence does count: 1 + retries queries.
    run_timers(&mut a, later + Duration::from_millis(400));
    assert_eq!(
        a.snapshot(Instant::ZERO).members.len(),
        1,
        "B failed after the retries"
    );
}

#[test]
fn an_unreachable_hint_is_confirmed_by_a_second_one() {
    let (mut a, _b, now) = pair();
    let v = a.view().unwrap();
    a.handle_unreachable(now, addr(2));
    let (t, _) = drain(&mut a);
    assert_eq!(t.len(), 1);
    assert!(matches!(t[0].1.msg, Msg::Query));
    assert!(a.fail_list().is_empty());
    // A hint about a non-member is counted and ignored.
    a.handle_unreachable(now, addr(9));
    assert_eq!(a.stats().drops.unreachable_non_member, 1);
    a.handle_unreachable(now + Duration::from_millis(1), addr(2));
    // Confirmed: alone with B gone, the change commits at once.
    assert_eq!(a.view().unwrap().number, v.number + 1);
    assert_eq!(a.snapshot(Instant::ZERO).members.len(), 1);
    let (_, e) = drain(&mut a);
    assert!(e.iter().any(|e| matches!(
        e,
        CoreSetEvent::ViewInstalled { failed, .. } if failed.len() == 1
    )));
}

#[test]
fn an_answered_hint_accuses_nobody() {
    let (mut a, _b, now) = pair();
    a.handle_unreachable(now, addr(2));
    drain(&mut a);
    let v = a.view().unwrap();
    deliver(
        &mut a,
        now + Duration::from_millis(1),
        addr(2),
        inc(2),
        addr(1),
        &env(v, Msg::Reply { heartbeat: false }),
    );
    run_timers(&mut a, now + Duration::from_millis(150));
    assert!(a.fail_list().is_empty());
    assert_eq!(a.view(), Some(v));
}

#[test]
fn not_member_from_a_newer_view_excludes_and_rejoins() {
    let (_a, mut b, now) = pair();
    let v = b.view().unwrap();
    let newer = ViewId {
        number: v.number + 3,
        seq: 0,
        coordinator: inc(1),
    };
    deliver(
        &mut b,
        now,
        addr(1),
        inc(1),
        addr(2),
        &env(newer, Msg::NotMember),
    );
    let (t, e) = drain(&mut b);
    assert!(
        t.is_empty(),
        "nothing sent under the old incarnation: {t:?}"
    );
    assert!(matches!(e[0], CoreSetEvent::Excluded { view } if view == v));
    let new_inc = match e
        .iter()
        .find(|e| matches!(e, CoreSetEvent::NewIncarnation(_)))
    {
        Some(CoreSetEvent::NewIncarnation(i)) => *i,
        _ => panic!("no new incarnation: {e:?}"),
    };
    assert!(new_inc > inc(2), "later than the old life");
    assert_eq!(b.incarnation(), new_inc);
    assert!(!b.is_member());
    // The rejoin's first request goes in a later input.
    run_timers(&mut b, now + Duration::from_millis(5));
    let (t, _) = drain(&mut b);
    assert!(matches!(t[0].1.msg, Msg::MJoinReq { .. }));
    // A NOT_MEMBER from an older view is no evidence.
    let (_a, mut b, now) = pair();
    let old = ViewId {
        number: 0,
        seq: 0,
        coordinator: inc(1),
    };
    deliver(
        &mut b,
        now,
        addr(1),
        inc(1),
        addr(2),
        &env(old, Msg::NotMember),
    );
    assert!(b.is_member());
}

/// Issue 15: an excluded member says `rejoin: true` (a flap if it is
/// failed again) only if it heard the group until then. One that stopped
/// hearing its lowest rank's ANNOUNCE was cut off itself (a partition both
/// ways), and says no.
#[test]
fn a_member_cut_off_itself_rejoins_as_no_flap() {
    for hears_announces in [true, false] {
        let (_a, mut b, start) = pair();
        let v = b.view().unwrap();
        // 700 ms of heartbeats from node 1 (b's neighbour), with or
        // without its ANNOUNCEs (every 400 ms).
        let mut now = start;
        for step in 1..=7u64 {
            now = start + Duration::from_millis(100 * step);
            let until = now;
            while let Some(t) = b.poll_timeout().filter(|t| *t <= until) {
                b.handle_timeout(t);
            }
            if step % 2 == 0 {
                let hb = env(v, Msg::Reply { heartbeat: true });
                deliver(&mut b, now, addr(1), inc(1), addr(2), &hb);
            }
            if hears_announces && step % 4 == 0 {
                let ann = env(v, Msg::Announce { size: 2 });
                deliver(&mut b, now, addr(1), inc(1), group(), &ann);
            }
        }
        assert!(b.is_member() && b.fail_list().is_empty());
        drain(&mut b);
        let newer = ViewId {
            number: v.number + 1,
            seq: 0,
            coordinator: inc(1),
        };
        deliver(
            &mut b,
            now,
            addr(1),
            inc(1),
            addr(2),
            &env(newer, Msg::NotMember),
        );
        assert!(!b.is_member());
        run_timers(&mut b, now + Duration::from_millis(5));
        let (t, _) = drain(&mut b);
        let rejoin = t.iter().find_map(|(_, e)| match e.msg {
            Msg::MJoinReq { rejoin, .. } => Some(rejoin),
            _ => None,
        });
        assert_eq!(
            rejoin,
            Some(hears_announces),
            "hears announces: {hears_announces}"
        );
    }
}

#[test]
fn leaving() {
    // Alone: at once.
    let mut a = CoreSet::new(config(1), Instant::ZERO, 1).expect("config");
    let now = run_timers(&mut a, ms(2000));
    a.leave(now);
    assert!(a.has_left());
    assert!(drain(&mut a).1.contains(&CoreSetEvent::Left));
    // While joining: at once.
    let mut c = CoreSet::new(config(3), Instant::ZERO, 1).expect("config");
    c.leave(Instant::ZERO);
    assert!(c.has_left());
    // In a pair: B coordinates its own removal; A installs a view without
    // B; B reports Left.
    let (mut a, mut b, now) = pair();
    b.leave(now);
    let (t, _) = drain(&mut b);
    let agree = t
        .iter()
        .find(|(_, e)| matches!(e.msg, Msg::AgreeL { .. }))
        .expect("AGREE_L")
        .1
        .clone();
    deliver(&mut a, now, addr(2), inc(2), group(), &agree);
    let (t, _) = drain(&mut a);
    deliver(&mut b, now, addr(1), inc(1), addr(2), &t[0].1);
    let (t, e) = drain(&mut b);
    assert!(e.contains(&CoreSetEvent::Left), "{e:?}");
    let commit = t
        .iter()
        .find(|(_, e)| matches!(e.msg, Msg::Commit(_)))
        .expect("COMMIT")
        .1
        .clone();
    deliver(&mut a, now, addr(2), inc(2), group(), &commit);
    let (_, e) = drain(&mut a);
    assert!(e.iter().any(|e| matches!(
        e,
        CoreSetEvent::ViewInstalled { left, .. } if left.len() == 1
    )));
    assert_eq!(a.snapshot(Instant::ZERO).members.len(), 1);
    // After leaving, everything is ignored.
    deliver(
        &mut b,
        now,
        addr(1),
        inc(1),
        addr(2),
        &env(a.view().unwrap(), Msg::Query),
    );
    assert_eq!(b.stats().drops.after_leave, 1);
    assert_eq!(b.poll_timeout(), None);
}

/// Seeded fuzzing: random and mutated messages from members and strangers
/// never panic, and every buffer stays bounded.
#[test]
fn hostile_input_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xF0F0);
    for round in 0..40 {
        let (mut a, mut b, mut now) = pair();
        for _ in 0..400 {
            now += Duration::from_micros(rng.random_range(0..20_000));
            let target = if rng.random_bool(0.5) { &mut a } else { &mut b };
            let v = target.view().unwrap_or(NO_VIEW);
            let from = addr(rng.random_range(1..=4));
            let from_inc = match rng.random_range(0..3) {
                0 => inc(from.addr().port() as u8),
                1 => target
                    .table()
                    .and_then(|t| t.by_addr(from))
                    .map_or(Incarnation::NIL, |r| r.incarnation),
                _ => Incarnation::from_parts(rng.random(), rng.random()),
            };
            let near = ViewId {
                number: v
                    .number
                    .saturating_add(rng.random_range(0..3))
                    .saturating_sub(1),
                seq: v.seq.saturating_add(rng.random_range(0..2)),
                coordinator: if rng.random_bool(0.7) {
                    v.coordinator
                } else {
                    inc(9)
                },
            };
            let p = Proposal {
                view: ViewId {
                    number: near.number + 1,
                    seq: 0,
                    coordinator: from_inc,
                },
                originator: rng.random_range(0..4),
                layer: if rng.random_bool(0.9) {
                    Layer::Physical
                } else {
                    Layer::Application
                },
                coordinator_failure: rng.random(),
                removals: (0..rng.random_range(0..3))
                    .map(|_| Removal {
                        rank: rng.random_range(0..5),
                        reason: RemovalReason::Failed,
                    })
                    .collect(),
                joins: (0..rng.random_range(0..3))
                    .map(|_| Joiner {
                        addr: addr(rng.random_range(1..=9)),
                        incarnation: inc(rng.random_range(1..=9)),
                        rejoin: rng.random(),
                        declined: false,
                        child_group: None,
                    })
                    .collect(),
                merges: Vec::new(),
                app: Vec::new(),
                tree: Vec::new(),
            };
            let table = target
                .table()
                .cloned()
                .unwrap_or_else(|| Table::founding(from, from_inc));
            let msg = match rng.random_range(0..13) {
                0 => Msg::MJoinReq {
                    attempt: rng.random(),
                    rejoin: rng.random(),
                    child: None,
                    declined: false,
                },
                1 => Msg::JoinWait {
                    held_down_ms: rng.random(),
                },
                2 => Msg::AgreeJ {
                    proposal: p.clone(),
                    takeover: rng.random(),
                },
                3 => Msg::AgreeL {
                    proposal: p.clone(),
                    takeover: rng.random(),
                },
                4 => Msg::AgreeAck { proposal: p.view },
                5 => Msg::Busy {
                    refused: p.view,
                    locked: near,
                    key: p.key(rng.random()),
                },
                6 => Msg::Abort { proposal: p.view },
                7 => Msg::Commit(Commit {
                    table: table.apply(&p),
                    proposal: p.clone(),
                }),
                8 => Msg::CoFail {
                    proposal: p.view,
                    suspect: rng.random_range(0..4),
                    status: match rng.random_range(0..4) {
                        0 => CoStatus::Unknown,
                        1 => CoStatus::PhaseI,
                        2 => CoStatus::Committed,
                        _ => CoStatus::Driving,
                    },
                    reply: rng.random(),
                },
                9 => Msg::Query,
                10 => Msg::Reply {
                    heartbeat: rng.random(),
                },
                11 => Msg::NotMember,
                _ => Msg::Announce { size: rng.random() },
            };
            let mut bytes = encode_body(&env(near, msg)).unwrap();
            if rng.random_bool(0.2) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            if rng.random_bool(0.1) {
                bytes.truncate(rng.random_range(0..bytes.len()));
            }
            let dest = if rng.random_bool(0.5) {
                group()
            } else {
                target.me()
            };
            target.handle_packet(
                now,
                Incoming::direct(from, from_inc, dest, ProtocolId::CoreSet, &bytes),
            );
            if rng.random_bool(0.1) {
                target.handle_unreachable(now, addr(rng.random_range(1..=5)));
            }
            if let Some(t) = target.poll_timeout() {
                if t <= now {
                    target.handle_timeout(now);
                }
            }
            let (t, e) = drain(target);
            assert!(
                t.len() < 64 && e.len() < 16,
                "round {round}: {} {}",
                t.len(),
                e.len()
            );
        }
        for c in [&a, &b] {
            if let State::Joined(j) = &c.state {
                assert!(j.join_queue.len() <= member::MAX_JOIN_QUEUE);
                assert!(j.probes.len() <= j.table.len());
                assert!(j.fail_list.len() <= j.table.len());
            }
            assert!(c.io.limits.len() <= MAX_RATE_LIMITS);
        }
    }
}

#[test]
fn app_changes_are_checked_then_committed_alone() {
    let mut c = CoreSet::new(config(1), Instant::ZERO, 1).expect("config");
    assert_eq!(
        c.submit_app(Instant::ZERO, b"x".to_vec()),
        Err(AppSubmitError::NotMember),
        "not before the first view"
    );
    let mut at = Instant::ZERO;
    while !c.is_member() {
        at = c.poll_timeout().expect("a timer while joining");
        c.handle_timeout(at);
    }
    drain(&mut c);
    assert_eq!(c.submit_app(at, Vec::new()), Err(AppSubmitError::Empty));
    assert_eq!(
        c.submit_app(at, vec![0; MAX_APP_PAYLOAD + 1]),
        Err(AppSubmitError::TooLarge(MAX_APP_PAYLOAD + 1))
    );
    let before = c.view().expect("a view");
    assert_eq!(c.submit_app(at, b"create g".to_vec()), Ok(()));
    // Alone in the group: the change commits at once, within the same
    // view (an application change is no change of the membership): the
    // view number stays, the commit sequence goes up by one, no view is
    // installed, and the payload is reported.
    let (_, events) = drain(&mut c);
    let view = c.view().expect("a view");
    assert_eq!(view.number, before.number);
    assert_eq!(view.seq, before.seq + 1);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, CoreSetEvent::ViewInstalled { .. })),
        "an application change installs no view: {events:?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        CoreSetEvent::AppCommitted { payloads, .. } if payloads == &vec![b"create g".to_vec()]
    )));
}

// ----- the tree's part (docs/hierarchy.md, build plan steps 1 and 2) ------

fn parent_group() -> GroupRef {
    GroupRef::new("bldg", NodeId::v4(239, 1, 2, 4, 7001)).expect("valid")
}

fn flag(rank: u64) -> TreeOp {
    TreeOp::SetParent {
        rank,
        parent: true,
        declined: false,
        group: Some(parent_group()),
    }
}

/// A core founded alone (level 1 unless `config` claims a child set).
fn founded(config: CoreSetConfig) -> (CoreSet, Instant) {
    let mut c = CoreSet::new(config, Instant::ZERO, 1).expect("config");
    let now = run_timers(&mut c, ms(2000));
    assert!(c.is_member(), "founded alone");
    drain(&mut c);
    (c, now)
}

#[test]
fn tree_changes_are_views_checked_before_and_at_their_base() {
    let mut c = CoreSet::new(config(1), Instant::ZERO, 1).expect("config");
    assert_eq!(
        c.submit_tree(Instant::ZERO, flag(0)),
        Err(TreeSubmitError::NotMember),
        "not before the first view"
    );
    let now = run_timers(&mut c, ms(2000));
    drain(&mut c);
    let before = c.view().expect("a view");
    assert_eq!(c.table().map(|t| t.tree.level), Some(1));
    // Refused before anything is sent: every validation error.
    assert_eq!(
        c.submit_tree(now, flag(7)),
        Err(TreeSubmitError::Invalid(TreeOpError::NotMember))
    );
    let no_group = TreeOp::SetParent {
        rank: 0,
        parent: true,
        declined: false,
        group: None,
    };
    assert_eq!(
        c.submit_tree(now, no_group),
        Err(TreeSubmitError::Invalid(TreeOpError::BadGroup))
    );
    let unflag = TreeOp::SetParent {
        rank: 0,
        parent: false,
        declined: true,
        group: None,
    };
    assert_eq!(
        c.submit_tree(now, unflag.clone()),
        Err(TreeSubmitError::Invalid(TreeOpError::NotParent))
    );
    let (t, _) = drain(&mut c);
    assert!(t.is_empty(), "a refused change sends nothing: {t:?}");
    // Alone, a tree change commits at once as a new view (+1, commit 0).
    assert_eq!(c.submit_tree(now, flag(0)), Ok(()));
    let (_, events) = drain(&mut c);
    let view = c.view().expect("a view");
    assert_eq!(view.number, before.number + 1);
    assert_eq!(view.seq, 0);
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            CoreSetEvent::ViewInstalled { .. } => Some("view"),
            CoreSetEvent::TreeCommitted { op, .. } if *op == flag(0) => Some("tree"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec!["view", "tree"], "{events:?}");
    let table = c.table().expect("a table");
    assert_eq!(table.tree.parents(), vec![0]);
    assert_eq!(table.tree.parent_group, Some(parent_group()));
    assert_eq!(table.validate(), Ok(()));
    assert_eq!(
        c.submit_tree(now, flag(0)),
        Err(TreeSubmitError::Invalid(TreeOpError::AlreadyParent))
    );
    let other = TreeOp::SetParentGroup {
        group: Some(GroupRef::new("campus", NodeId::v4(239, 1, 2, 5, 7002)).expect("valid")),
    };
    assert_eq!(c.submit_tree(now, other), Ok(()));
    assert_eq!(c.submit_tree(now, unflag), Ok(()));
    let table = c.table().expect("a table");
    assert!(table.tree.parents().is_empty());
    assert!(table.tree.bits(0).declined);
    assert_eq!(c.view().map(|v| v.number), Some(before.number + 3));
    let snap = c.snapshot(now);
    assert_eq!(snap.tree, table.tree);
    assert_eq!(c.stats().tree_commits, 3);
}

#[test]
fn membership_changes_go_before_tree_changes_before_application_changes() {
    let view = ViewId {
        number: 4,
        seq: 0,
        coordinator: inc(1),
    };
    let base = Proposal {
        view,
        originator: 0,
        layer: Layer::Physical,
        coordinator_failure: false,
        removals: Vec::new(),
        joins: Vec::new(),
        merges: Vec::new(),
        app: Vec::new(),
        tree: Vec::new(),
    };
    let failure = Proposal {
        removals: vec![Removal {
            rank: 9,
            reason: RemovalReason::Failed,
        }],
        originator: 5,
        ..base.clone()
    };
    let tree = Proposal {
        layer: Layer::Tree,
        tree: vec![flag(0)],
        ..base.clone()
    };
    let app = Proposal {
        layer: Layer::Application,
        app: vec![b"x".to_vec()],
        ..base
    };
    assert!(failure.key(false).outranks(&tree.key(false)));
    assert!(tree.key(false).outranks(&app.key(false)));
    // Among tree changes, the lower subject (the flagged rank) first.
    let higher = Proposal {
        tree: vec![flag(3)],
        originator: 0,
        ..tree.clone()
    };
    assert!(tree.key(false).outranks(&higher.key(false)));
    // A tree change carries exactly one op and nothing else.
    let table = Table::founding(addr(1), inc(1));
    let base_view = ViewId {
        number: 3,
        seq: 0,
        coordinator: inc(1),
    };
    assert_eq!(tree.validate(base_view, &table), Ok(()));
    let two = Proposal {
        tree: vec![flag(0), flag(0)],
        ..tree.clone()
    };
    assert_eq!(two.validate(base_view, &table), Err(ProposalError::Shape));
    let wrong_layer = Proposal {
        layer: Layer::Physical,
        ..tree.clone()
    };
    assert_eq!(
        wrong_layer.validate(base_view, &table),
        Err(ProposalError::Layer)
    );
    let not_member = Proposal {
        tree: vec![flag(5)],
        ..tree
    };
    assert_eq!(
        not_member.validate(base_view, &table),
        Err(ProposalError::Tree(TreeOpError::NotMember))
    );
}

fn upper_config(i: u8) -> CoreSetConfig {
    let mut c = CoreSetConfig::new(addr(i), inc(i + 100), "bldg", parent_group().addr);
    c.tree.child = Some(ChildClaim {
        group: GroupRef::new(format!("dept-{i}"), NodeId::v4(239, 1, 3, i, 7000)).expect("valid"),
        level: 1,
    });
    c
}

#[test]
fn a_parent_founds_one_level_up_and_speaks_with_its_life_in_the_envelope() {
    let (mut a, now) = founded(upper_config(1));
    let table = a.table().expect("a table").clone();
    assert_eq!(table.tree.level, 2);
    assert_eq!(
        table.tree.bits(0).child_group.map(|g| g.name),
        Some("dept-1".to_string())
    );
    // A second parent joins with its claim; its envelopes carry its
    // level-2 life, and the header's incarnation (its level-1 life) is
    // another one.
    let mut b = CoreSet::new(upper_config(2), now, 2).expect("config");
    let (t, _) = drain(&mut b);
    let (_, req) = t.into_iter().next().expect("a join request");
    assert_eq!(req.life, Some(inc(102)));
    assert!(matches!(
        req.msg,
        Msg::MJoinReq {
            child: Some(ChildClaim { level: 1, .. }),
            ..
        }
    ));
    // Without the life it is dropped as malformed.
    let bare = Envelope {
        life: None,
        ..req.clone()
    };
    let malformed = a.stats().drops.malformed;
    deliver(&mut a, now, addr(2), inc(2), parent_group().addr, &bare);
    assert_eq!(a.stats().drops.malformed, malformed + 1);
    assert!(drain(&mut a).0.is_empty());
    deliver(&mut a, now, addr(2), inc(2), parent_group().addr, &req);
    let (t, _) = drain(&mut a);
    let commit = t
        .iter()
        .find(|(_, e)| matches!(e.msg, Msg::Commit(_)))
        .expect("a COMMIT")
        .1
        .clone();
    assert_eq!(commit.life, Some(inc(101)));
    deliver(&mut b, now, addr(1), inc(1), parent_group().addr, &commit);
    assert!(b.is_member());
    let table = b.table().expect("a table");
    assert_eq!(
        table.by_addr(addr(2)).map(|r| r.incarnation),
        Some(inc(102))
    );
    assert_eq!(
        table
            .by_addr(addr(2))
            .and_then(|r| table.tree.bits(r.rank).child_group)
            .map(|g| g.name),
        Some("dept-2".to_string())
    );
    assert_eq!(a.table(), b.table());
}

#[test]
fn a_claim_of_the_wrong_level_is_refused_for_good() {
    // A level-1 group; a newcomer claims a child set of level 1, so it
    // wants a level-2 group of that name: the coordinator refuses it.
    let (mut a, now) = founded(config(1));
    let mut upper = upper_config(2);
    upper.group = "unit".into();
    upper.group_addr = group();
    let mut b = CoreSet::new(upper, now, 2).expect("config");
    let (t, _) = drain(&mut b);
    let (_, req) = t.into_iter().next().expect("a join request");
    deliver(&mut a, now, addr(2), inc(2), group(), &req);
    let (t, _) = drain(&mut a);
    let refusal = t
        .iter()
        .find(|(_, e)| matches!(e.msg, Msg::JoinRefused { .. }))
        .expect("a JOIN_REFUSED")
        .1
        .clone();
    assert!(
        !t.iter().any(|(_, e)| matches!(e.msg, Msg::Commit(_))),
        "nothing committed"
    );
    assert_eq!(a.stats().join_refusals, 1);
    // The newcomer reports it (upper envelopes need a life).
    let refusal = Envelope {
        life: Some(inc(101)),
        ..refusal
    };
    deliver(&mut b, now, addr(1), inc(1), addr(2), &refusal);
    let (_, events) = drain(&mut b);
    assert!(events.iter().any(|e| matches!(
        e,
        CoreSetEvent::JoinRefused {
            reason: JoinRefusal::LevelMismatch {
                level: 1,
                claimed: 1
            }
        }
    )));
    assert!(!b.is_member());
}

#[test]
fn tree_settings_are_checked_by_new() {
    let mut c = config(1);
    c.tree.max_parents = 0;
    assert!(matches!(
        CoreSet::new(c, Instant::ZERO, 1),
        Err(ConfigError::BadMaxParents(0))
    ));
    let mut c = upper_config(1);
    c.tree.child = Some(ChildClaim {
        group: GroupRef {
            name: "bldg".into(),
            addr: NodeId::v4(239, 1, 1, 1, 1),
        },
        level: 1,
    });
    assert!(matches!(
        CoreSet::new(c, Instant::ZERO, 1),
        Err(ConfigError::BadTree(_))
    ));
    let mut c = upper_config(1);
    c.tree.child = Some(ChildClaim {
        group: parent_group(),
        level: MAX_LEVEL,
    });
    assert!(matches!(
        CoreSet::new(c, Instant::ZERO, 1),
        Err(ConfigError::BadTree(_))
    ));
}
