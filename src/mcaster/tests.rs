//! Unit tests of the mcaster core and the member registration.

use super::*;
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::mcaster_reg::*;
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire::{decode_body, encode_body, Header, WireCodec};
use std::collections::BTreeSet;
use std::time::Duration;

const RELAY: NodeId = NodeId::v4(10, 0, 0, 100, 7100);
const G: NodeId = NodeId::v4(239, 1, 1, 1, 7000);
const G2: NodeId = NodeId::v4(239, 1, 1, 2, 7000);

fn n(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7000)
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn relay(multicast: bool) -> Mcaster {
    Mcaster::new(
        RELAY,
        McasterConfig {
            multicast,
            ..McasterConfig::default()
        },
    )
}

fn send_control(r: &mut Mcaster, now: Instant, from: NodeId, msg: McasterMsg) -> Vec<Transmit> {
    let body = encode_body(&msg).unwrap();
    r.handle_packet(
        now,
        Incoming::direct(from, Incarnation::NIL, RELAY, ProtocolId::Mcaster, &body),
    );
    drain(r)
}

fn drain(r: &mut Mcaster) -> Vec<Transmit> {
    std::iter::from_fn(|| r.poll_transmit()).collect()
}

fn events(r: &mut Mcaster) -> Vec<McasterEvent> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

fn join(r: &mut Mcaster, now: Instant, from: NodeId, group: NodeId, kind: ReceiveMode) -> Answer {
    join_named(r, now, from, group, &name_of(group), kind)
}

fn name_of(group: NodeId) -> String {
    format!("g{}", group.addr().ip())
}

fn join_named(
    r: &mut Mcaster,
    now: Instant,
    from: NodeId,
    group: NodeId,
    name: &str,
    kind: ReceiveMode,
) -> Answer {
    let out = send_control(
        r,
        now,
        from,
        McasterMsg::JoinGroup {
            group,
            name: name.into(),
            kind,
        },
    );
    answer_of(&out, from, group)
}

fn leave(r: &mut Mcaster, now: Instant, from: NodeId, group: NodeId) -> Answer {
    let out = send_control(r, now, from, McasterMsg::LeaveGroup { group });
    answer_of(&out, from, group)
}

fn answer_of(out: &[Transmit], to: NodeId, group: NodeId) -> Answer {
    assert_eq!(out.len(), 1, "one answer: {out:?}");
    let tx = &out[0];
    assert_eq!(tx.destination, to);
    assert_eq!(tx.protocol, ProtocolId::Mcaster);
    assert!(!tx.sealed);
    match decode_body::<McasterMsg>(&tx.body).unwrap() {
        McasterMsg::Reply { group: g, answer } => {
            assert_eq!(g, group);
            answer
        }
        m => panic!("not a reply: {m:?}"),
    }
}

/// A real sealed datagram from `from` to `group`.
fn datagram(from: NodeId, group: NodeId, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    WireCodec::new()
        .seal(
            &Header {
                protocol: ProtocolId::Rmcast,
                relayed: false,
                source: from,
                source_incarnation: Incarnation::NIL,
                destination: group,
            },
            body,
            &mut out,
        )
        .unwrap();
    out
}

/// Relays a group datagram from `from` (arriving from UDP peer `peer`);
/// answers the destinations of the copies (sorted) after checking each is a
/// byte-for-byte forward.
fn relay_from(r: &mut Mcaster, from: NodeId, peer: NodeId, group: NodeId) -> Vec<NodeId> {
    let d = datagram(from, group, b"payload");
    let incoming = Incoming {
        source: from,
        source_incarnation: Incarnation::NIL,
        destination: group,
        protocol: ProtocolId::Rmcast,
        relayed: peer != from,
        body: &d[crate::wire::HEADER_LEN..crate::wire::HEADER_LEN + 7],
        peer,
        datagram: &d,
    };
    r.handle_packet(t(0), incoming);
    let out = drain(r);
    for tx in &out {
        assert!(tx.sealed, "forwards only");
        assert_eq!(tx.body, d, "byte-for-byte");
        assert_eq!(tx.protocol, ProtocolId::Rmcast);
        // The receiver sees the original sender.
        let p = WireCodec::new().open(&tx.body).unwrap();
        assert_eq!(p.header.source, from);
        assert_eq!(p.header.destination, group);
    }
    let mut to: Vec<NodeId> = out.iter().map(|tx| tx.destination).collect();
    to.sort();
    to
}

#[test]
fn join_creates_the_group_and_answers_join_ack() {
    let mut r = relay(false);
    assert_eq!(
        join(&mut r, t(0), n(1), G, ReceiveMode::Uc),
        Answer::JoinAck
    );
    assert_eq!(
        events(&mut r),
        vec![
            McasterEvent::GroupCreated {
                group: G,
                name: name_of(G)
            },
            McasterEvent::MemberJoined {
                group: G,
                member: n(1),
                kind: ReceiveMode::Uc
            }
        ]
    );
    assert_eq!(
        join(&mut r, t(0), n(2), G, ReceiveMode::Uc),
        Answer::JoinAck
    );
    let info = r.group(G).unwrap();
    assert_eq!(
        info.members,
        vec![(n(1), ReceiveMode::Uc), (n(2), ReceiveMode::Uc)]
    );
    assert_eq!(r.counters().answers.get("JOIN_ACK"), Some(&2));
}

#[test]
fn duplicate_join_answers_dup_member_and_refreshes() {
    let mut r = relay(false);
    join(&mut r, t(0), n(1), G, ReceiveMode::Uc);
    events(&mut r);
    assert_eq!(
        join(&mut r, t(2000), n(1), G, ReceiveMode::Uc),
        Answer::DupMember
    );
    assert!(events(&mut r).is_empty(), "a refresh is no change");
    // Refreshed at 2 s: still there at 4.5 s, gone at 5 s.
    r.handle_timeout(t(4500));
    assert!(r.group(G).is_some());
    assert_eq!(r.poll_timeout(), Some(t(5000)));
    r.handle_timeout(t(5000));
    assert!(r.group(G).is_none());
}

#[test]
fn neg_join_for_bad_groups_names_and_unsupported_kind() {
    let mut r = relay(false);
    // Not a multicast address.
    assert_eq!(
        join(&mut r, t(0), n(1), n(9), ReceiveMode::Uc),
        Answer::NegJoin
    );
    // Bad names.
    assert_eq!(
        join_named(&mut r, t(0), n(1), G, "", ReceiveMode::Uc),
        Answer::NegJoin
    );
    let long = "x".repeat(MAX_NAME_LEN + 1);
    assert_eq!(
        join_named(&mut r, t(0), n(1), G, &long, ReceiveMode::Uc),
        Answer::NegJoin
    );
    // A multicast member on an mcaster that cannot multicast.
    assert_eq!(
        join(&mut r, t(0), n(1), G, ReceiveMode::Mc),
        Answer::NegJoin
    );
    assert_eq!(r.group_count(), 0);
    assert!(events(&mut r).is_empty());
    let mut r = relay(true);
    assert_eq!(
        join(&mut r, t(0), n(1), G, ReceiveMode::Mc),
        Answer::JoinAck
    );
}

#[test]
fn group_exists_for_name_or_address_conflicts() {
    let mut r = relay(false);
    join_named(&mut r, t(0), n(1), G, "alpha", ReceiveMode::Uc);
    // Same address, other name.
    assert_eq!(
        join_named(&mut r, t(0), n(2), G, "beta", ReceiveMode::Uc),
        Answer::GroupExists
    );
    // Same name, other address.
    assert_eq!(
        join_named(&mut r, t(0), n(2), G2, "alpha", ReceiveMode::Uc),
        Answer::GroupExists
    );
    assert_eq!(r.group_count(), 1);
    assert_eq!(r.member_count(), 1);
    // After the group is gone, the name is free again.
    assert_eq!(leave(&mut r, t(0), n(1), G), Answer::LeaveAck);
    assert_eq!(
        join_named(&mut r, t(0), n(2), G2, "alpha", ReceiveMode::Uc),
        Answer::JoinAck
    );
}

#[test]
fn leave_answers() {
    let mut r = relay(false);
    assert_eq!(leave(&mut r, t(0), n(1), n(9)), Answer::NegLeave);
    assert_eq!(leave(&mut r, t(0), n(1), G), Answer::NoGroup);
    join(&mut r, t(0), n(1), G, ReceiveMode::Uc);
    join(&mut r, t(0), n(2), G, ReceiveMode::Uc);
    assert_eq!(leave(&mut r, t(0), n(3), G), Answer::NoMember);
    events(&mut r);
    assert_eq!(leave(&mut r, t(0), n(1), G), Answer::LeaveAck);
    assert_eq!(
        events(&mut r),
        vec![McasterEvent::MemberLeft {
            group: G,
            member: n(1)
        }]
    );
    // The last member takes the group with it.
    assert_eq!(leave(&mut r, t(0), n(2), G), Answer::LeaveAck);
    assert_eq!(
        events(&mut r),
        vec![
            McasterEvent::MemberLeft {
                group: G,
                member: n(2)
            },
            McasterEvent::GroupDeleted {
                group: G,
                name: name_of(G)
            }
        ]
    );
    assert_eq!(r.group_count(), 0);
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(leave(&mut r, t(0), n(2), G), Answer::NoGroup);
}

#[test]
fn figure_8_for_every_sender_and_member_kind() {
    // Members: uc 1, 2; mc 3, 4. The mcaster can multicast.
    let mut r = relay(true);
    for (i, k) in [
        (1, ReceiveMode::Uc),
        (2, ReceiveMode::Uc),
        (3, ReceiveMode::Mc),
        (4, ReceiveMode::Mc),
    ] {
        join(&mut r, t(0), n(i), G, k);
    }
    // uc sender: the other uc member by unicast, and one class D copy.
    assert_eq!(relay_from(&mut r, n(1), n(1), G), vec![n(2), G]);
    // mc sender: uc members only.
    assert_eq!(relay_from(&mut r, n(3), n(3), G), vec![n(1), n(2)]);
    assert_eq!(r.counters().multicast_copies, 1);
    assert_eq!(r.counters().copies, 4);
    assert_eq!(r.counters().relayed, 2);

    // Only uc members: unicast copies, no class D.
    let mut r = relay(true);
    for i in 1..=3 {
        join(&mut r, t(0), n(i), G, ReceiveMode::Uc);
    }
    assert_eq!(relay_from(&mut r, n(2), n(2), G), vec![n(1), n(3)]);

    // Only mc members: an mc sender needs nothing; a uc sender (joined
    // after) one class D copy however many mc members there are.
    let mut r = relay(true);
    for i in 1..=3 {
        join(&mut r, t(0), n(i), G, ReceiveMode::Mc);
    }
    assert_eq!(relay_from(&mut r, n(1), n(1), G), Vec::<NodeId>::new());
    assert_eq!(r.counters().no_receivers, 1);
    join(&mut r, t(0), n(9), G, ReceiveMode::Uc);
    assert_eq!(relay_from(&mut r, n(9), n(9), G), vec![G]);

    // A lone sender: nothing.
    let mut r = relay(false);
    join(&mut r, t(0), n(1), G, ReceiveMode::Uc);
    assert_eq!(relay_from(&mut r, n(1), n(1), G), Vec::<NodeId>::new());
}

#[test]
fn relay_drops_are_counted_never_forwarded() {
    let mut r = relay(true);
    join(&mut r, t(0), n(1), G, ReceiveMode::Uc);
    join(&mut r, t(0), n(2), G, ReceiveMode::Uc);
    // Unknown group.
    assert!(relay_from(&mut r, n(1), n(1), G2).is_empty());
    // Not a member.
    assert!(relay_from(&mut r, n(5), n(5), G).is_empty());
    // Already relayed, or a forged source.
    assert!(relay_from(&mut r, n(1), n(7), G).is_empty());
    // Our own class D copy looped back.
    assert!(relay_from(&mut r, n(1), RELAY, G).is_empty());
    // Not addressed to a group.
    assert!(relay_from(&mut r, n(1), n(1), n(2)).is_empty());
    // No datagram bytes from the driver.
    r.handle_packet(
        t(0),
        Incoming::direct(n(1), Incarnation::NIL, G, ProtocolId::Rmcast, b"x"),
    );
    assert!(drain(&mut r).is_empty());
    let d = &r.counters().dropped;
    for kind in [
        "unknown_group",
        "not_member",
        "relayed_data",
        "own_echo",
        "not_group",
        "no_datagram",
    ] {
        assert_eq!(d.get(kind), 1, "{kind}");
    }
    assert_eq!(r.counters().relayed, 0);
}

#[test]
fn malformed_and_forged_control_is_dropped() {
    let mut r = relay(false);
    for body in [&b""[..], b"\xff\xff\xff", &[9u8; 300][..]] {
        r.handle_packet(
            t(0),
            Incoming::direct(n(1), Incarnation::NIL, RELAY, ProtocolId::Mcaster, body),
        );
    }
    // A reply sent to the mcaster.
    let reply = encode_body(&McasterMsg::Reply {
        group: G,
        answer: Answer::JoinAck,
    })
    .unwrap();
    r.handle_packet(
        t(0),
        Incoming::direct(n(1), Incarnation::NIL, RELAY, ProtocolId::Mcaster, &reply),
    );
    // A join whose header names another node than the UDP peer.
    let body = encode_body(&McasterMsg::JoinGroup {
        group: G,
        name: "g".into(),
        kind: ReceiveMode::Uc,
    })
    .unwrap();
    let mut forged = Incoming::direct(n(1), Incarnation::NIL, RELAY, ProtocolId::Mcaster, &body);
    forged.peer = n(6);
    r.handle_packet(t(0), forged);
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.group_count(), 0);
    assert_eq!(r.counters().dropped.get("malformed_control"), 3);
    assert_eq!(r.counters().dropped.get("unexpected_reply"), 1);
    assert_eq!(r.counters().dropped.get("relayed_control"), 1);
}

#[test]
fn members_expire_and_the_group_with_the_last() {
    let mut r = relay(false);
    join(&mut r, t(0), n(1), G, ReceiveMode::Uc);
    join(&mut r, t(500), n(2), G, ReceiveMode::Uc);
    join(&mut r, t(0), n(3), G2, ReceiveMode::Uc);
    events(&mut r);
    assert_eq!(r.poll_timeout(), Some(t(3000)));
    // Early or spurious timeouts are harmless.
    r.handle_timeout(t(100));
    assert_eq!(r.member_count(), 3);
    // n(2) keeps refreshing.
    join(&mut r, t(2500), n(2), G, ReceiveMode::Uc);
    r.handle_timeout(t(3000));
    let ev = events(&mut r);
    assert!(ev.contains(&McasterEvent::MemberExpired {
        group: G,
        member: n(1)
    }));
    assert!(ev.contains(&McasterEvent::GroupDeleted {
        group: G2,
        name: name_of(G2)
    }));
    assert_eq!(r.group(G).unwrap().members, vec![(n(2), ReceiveMode::Uc)]);
    assert_eq!(r.counters().expired, 2);
    r.handle_timeout(t(5500));
    assert_eq!(r.group_count(), 0);
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn bounds_answer_neg_join() {
    let mut r = Mcaster::new(
        RELAY,
        McasterConfig {
            max_groups: 2,
            max_members: 3,
            ..McasterConfig::default()
        },
    );
    for i in 1..=3 {
        assert_eq!(
            join(&mut r, t(0), n(i), G, ReceiveMode::Uc),
            Answer::JoinAck
        );
    }
    assert_eq!(
        join(&mut r, t(0), n(4), G, ReceiveMode::Uc),
        Answer::NegJoin
    );
    // A listed member still refreshes.
    assert_eq!(
        join(&mut r, t(0), n(3), G, ReceiveMode::Uc),
        Answer::DupMember
    );
    assert_eq!(
        join(&mut r, t(0), n(1), G2, ReceiveMode::Uc),
        Answer::JoinAck
    );
    let g3 = NodeId::v4(239, 1, 1, 3, 7000);
    assert_eq!(
        join(&mut r, t(0), n(1), g3, ReceiveMode::Uc),
        Answer::NegJoin
    );
    assert_eq!(r.group_count(), 2);
    assert_eq!(r.member_count(), 4);
}

#[test]
fn many_distinct_joiners_stay_bounded() {
    let mut r = Mcaster::new(
        RELAY,
        McasterConfig {
            max_groups: 8,
            max_members: 8,
            ..McasterConfig::default()
        },
    );
    for gi in 0..50u8 {
        let g = NodeId::v4(239, 2, 0, gi, 7000);
        for mi in 0..50u8 {
            let _ = join(
                &mut r,
                t(0),
                NodeId::v4(10, 1, gi, mi, 7000),
                g,
                ReceiveMode::Uc,
            );
        }
    }
    assert_eq!(r.group_count(), 8);
    assert_eq!(r.member_count(), 64);
}

// ---- member registration -------------------------------------------------

fn reg() -> Registration {
    Registration::new(RegistrationConfig::new(RELAY, ReceiveMode::Uc))
}

fn reg_out(m: &mut Registration) -> Vec<McasterMsg> {
    std::iter::from_fn(|| m.poll_transmit())
        .map(|tx| {
            assert_eq!(tx.destination, RELAY);
            decode_body::<McasterMsg>(&tx.body).unwrap()
        })
        .collect()
}

fn reg_events(m: &mut Registration) -> Vec<RegistrationEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

fn answer(m: &mut Registration, group: NodeId, answer: Answer) {
    answer_at(m, t(0), group, answer);
}

fn answer_at(m: &mut Registration, now: Instant, group: NodeId, answer: Answer) {
    let body = encode_body(&McasterMsg::Reply { group, answer }).unwrap();
    assert!(m.handle(
        now,
        &Incoming::direct(RELAY, Incarnation::NIL, n(1), ProtocolId::Mcaster, &body)
    ));
}

#[test]
fn registration_joins_refreshes_and_notices_a_relearn() {
    let mut m = reg();
    m.join(t(0), G, "g");
    assert!(matches!(
        reg_out(&mut m)[..],
        [McasterMsg::JoinGroup { group: G, .. }]
    ));
    // An unanswered first join is repeated a tenth of the interval later.
    assert_eq!(m.poll_timeout(), Some(t(100)));
    answer(&mut m, G, Answer::JoinAck);
    assert_eq!(
        reg_events(&mut m),
        vec![RegistrationEvent::Registered { group: G }]
    );
    assert!(m.is_registered(G));
    // Answered: that early timer sends nothing; the refresh is at 1 s.
    m.handle_timeout(t(100));
    assert!(reg_out(&mut m).is_empty());
    assert_eq!(m.poll_timeout(), Some(t(1000)));
    m.handle_timeout(t(1000));
    assert_eq!(reg_out(&mut m).len(), 1);
    answer(&mut m, G, Answer::DupMember);
    assert!(reg_events(&mut m).is_empty());
    // The mcaster restarted: the refresh is a new join to it.
    answer(&mut m, G, Answer::JoinAck);
    assert_eq!(
        reg_events(&mut m),
        vec![RegistrationEvent::Relearned { group: G }]
    );
    // Packets of other protocols are not the registration's.
    assert!(!m.handle(
        t(0),
        &Incoming::direct(RELAY, Incarnation::NIL, n(1), ProtocolId::Test, b"")
    ));
}

#[test]
fn registration_refusal_retries_and_leave_gives_up() {
    let mut m = reg();
    m.join(t(0), G, "g");
    reg_out(&mut m);
    answer(&mut m, G, Answer::GroupExists);
    answer(&mut m, G, Answer::GroupExists);
    assert_eq!(
        reg_events(&mut m),
        vec![RegistrationEvent::Refused {
            group: G,
            answer: Answer::GroupExists
        }]
    );
    m.handle_timeout(t(1000));
    assert_eq!(reg_out(&mut m).len(), 1, "retried");
    m.leave(t(1000), G);
    assert!(matches!(
        reg_out(&mut m)[..],
        [McasterMsg::LeaveGroup { group: G }]
    ));
    m.handle_timeout(t(2000));
    m.handle_timeout(t(3000));
    assert_eq!(reg_out(&mut m).len(), 2);
    m.handle_timeout(t(4000));
    assert_eq!(
        reg_events(&mut m),
        vec![RegistrationEvent::Left {
            group: G,
            answer: None
        }]
    );
    assert_eq!(m.poll_timeout(), None);
}

/// An mcaster that never answers is reported after two seconds, then
/// every 30 s; its first answer ends the silence (and says so). Leaving a
/// group it never listed sends nothing and reports `Withdrawn` at once.
#[test]
fn registration_reports_a_silent_mcaster_and_withdraws_unconfirmed_groups() {
    let mut m = reg();
    m.join(t(0), G, "g");
    let mut now = 0;
    let mut warnings = Vec::new();
    while now < 65_000 {
        now = m
            .poll_timeout()
            .expect("a timer while joining")
            .as_micros()
            .div_ceil(1000);
        m.handle_timeout(t(now));
        reg_out(&mut m);
        for e in reg_events(&mut m) {
            match e {
                RegistrationEvent::Unanswered { silent_for, .. } => {
                    warnings.push(silent_for.as_millis() as u64)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(warnings, vec![2_000, 32_000, 62_000]);
    answer_at(&mut m, t(now), G, Answer::JoinAck);
    assert_eq!(
        reg_events(&mut m),
        vec![
            RegistrationEvent::Answering {
                mcaster: RELAY,
                silent_for: Duration::from_millis(now),
            },
            RegistrationEvent::Registered { group: G },
        ]
    );
    // A refresh answered within the two seconds: no report.
    for s in 1..10u64 {
        m.handle_timeout(t(now + s * 1000));
        reg_out(&mut m);
        answer(&mut m, G, Answer::DupMember);
        assert!(reg_events(&mut m).is_empty());
    }
    // This process paused (SIGSTOP) for 2.5 s right after a refresh: on
    // waking, the silence is long but only one join besides the new
    // refresh went unanswered, and the refresh is answered at once.
    let mut p = reg();
    p.join(t(0), G, "g");
    answer(&mut p, G, Answer::JoinAck);
    reg_events(&mut p);
    p.handle_timeout(t(1000));
    reg_out(&mut p);
    p.handle_timeout(t(3500));
    assert_eq!(reg_out(&mut p).len(), 1, "the refresh on waking");
    answer_at(&mut p, t(3501), G, Answer::DupMember);
    assert!(
        reg_events(&mut p).is_empty(),
        "a pause of ours is no silence of the mcaster"
    );
    // Never listed: nothing to deregister.
    let mut q = reg();
    q.join(t(0), G, "g");
    reg_out(&mut q);
    q.leave(t(10), G);
    assert!(reg_out(&mut q).is_empty(), "no LEAVE_GROUP");
    assert_eq!(
        reg_events(&mut q),
        vec![RegistrationEvent::Withdrawn { group: G }]
    );
    assert_eq!(q.poll_timeout(), None);
}

#[test]
fn registration_leave_answered_and_routing() {
    let mut m = reg();
    m.join(t(0), G, "g");
    answer(&mut m, G, Answer::JoinAck);
    reg_events(&mut m);
    m.leave(t(0), G);
    reg_out(&mut m);
    answer(&mut m, G, Answer::LeaveAck);
    assert_eq!(
        reg_events(&mut m),
        vec![RegistrationEvent::Left {
            group: G,
            answer: Some(Answer::LeaveAck)
        }]
    );
    // Replies from someone else, or garbage, are ignored.
    let body = encode_body(&McasterMsg::Reply {
        group: G,
        answer: Answer::JoinAck,
    })
    .unwrap();
    assert!(m.handle(
        t(0),
        &Incoming::direct(n(5), Incarnation::NIL, n(1), ProtocolId::Mcaster, &body)
    ));
    assert!(m.handle(
        t(0),
        &Incoming::direct(RELAY, Incarnation::NIL, n(1), ProtocolId::Mcaster, b"zz")
    ));
    assert_eq!(m.counters().ignored, 2);
    // A uc member sends group traffic via the mcaster; unicast unchanged.
    let tx = m.route(Transmit::new(G, ProtocolId::Test, vec![1]));
    assert_eq!(tx.next_hop(), RELAY);
    assert_eq!(tx.destination, G);
    let tx = m.route(Transmit::new(n(2), ProtocolId::Test, vec![1]));
    assert_eq!(tx.next_hop(), n(2));
    let mc = Registration::new(RegistrationConfig::new(RELAY, ReceiveMode::Mc));
    assert_eq!(
        mc.route(Transmit::new(G, ProtocolId::Test, vec![]))
            .next_hop(),
        G
    );
}

#[test]
fn registration_and_relay_together_over_many_steps() {
    // Three uc members and the relay, wired by hand, lossless: everyone
    // registers, traffic reaches the others, a silent member expires.
    let mut r = relay(false);
    let mut ms: Vec<(NodeId, Registration)> = (1..=3).map(|i| (n(i), reg())).collect();
    for (_, m) in &mut ms {
        m.join(t(0), G, "g");
    }
    let mut now = t(0);
    for step in 0..10 {
        for (id, m) in &mut ms {
            if step >= 2 && *id == n(3) {
                continue; // n(3) died after two refreshes
            }
            m.handle_timeout(now);
            while let Some(tx) = m.poll_transmit() {
                r.handle_packet(
                    now,
                    Incoming::direct(*id, Incarnation::NIL, RELAY, ProtocolId::Mcaster, &tx.body),
                );
            }
        }
        r.handle_timeout(now);
        for tx in drain(&mut r) {
            if let Some((_, m)) = ms.iter_mut().find(|(id, _)| *id == tx.destination) {
                m.handle(
                    now,
                    &Incoming::direct(
                        RELAY,
                        Incarnation::NIL,
                        tx.destination,
                        ProtocolId::Mcaster,
                        &tx.body,
                    ),
                );
            }
        }
        now += Duration::from_secs(1);
    }
    let members: BTreeSet<NodeId> = r.group(G).unwrap().members.iter().map(|m| m.0).collect();
    assert_eq!(members, [n(1), n(2)].into_iter().collect());
    assert!(ms[0].1.is_registered(G));
}

#[test]
fn an_unanswered_first_join_is_repeated_soon() {
    let mut m = reg();
    m.join(t(0), G, "g");
    reg_out(&mut m);
    // The mcaster is not up yet: every tenth of the interval, again.
    for k in 1..=3u64 {
        assert_eq!(m.poll_timeout(), Some(t(100 * k)));
        m.handle_timeout(t(100 * k));
        assert!(matches!(
            reg_out(&mut m)[..],
            [McasterMsg::JoinGroup { group: G, .. }]
        ));
    }
    answer(&mut m, G, Answer::JoinAck);
    assert!(m.is_registered(G));
    m.handle_timeout(t(400));
    assert!(reg_out(&mut m).is_empty(), "answered: back to the refresh");
    assert_eq!(m.poll_timeout(), Some(t(1000)));
}
