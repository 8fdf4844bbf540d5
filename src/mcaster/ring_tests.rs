//! Unit tests of the key-ring hand-over between a registered mserver
//! ([`Registration::push_key_ring`]) and the mcaster core
//! ([`McasterMsg::KeyRing`] / [`McasterMsg::KeyRingAck`]).

use super::*;
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::mcaster_reg::*;
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire::{decode_body, encode_body, ClusterKey, KeyRing, SharedRing};

const RELAY: NodeId = NodeId::v4(10, 0, 0, 100, 7100);
const G: NodeId = NodeId::v4(239, 1, 1, 1, 7000);
const MS: NodeId = NodeId::v4(10, 0, 0, 1, 7200);

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn ring(ids: &[u8]) -> KeyRing {
    KeyRing::new(
        ids.iter()
            .map(|i| ClusterKey::new(*i, [*i; 16]).expect("key"))
            .collect(),
    )
    .expect("ring")
}

fn inc(n: u64) -> Incarnation {
    Incarnation::from_parts(n, [3; 10])
}

fn control(r: &mut Mcaster, from: NodeId, inc: Incarnation, msg: &McasterMsg) -> Vec<McasterMsg> {
    let body = encode_body(msg).expect("encode");
    r.handle_packet(
        t(0),
        Incoming::direct(from, inc, RELAY, ProtocolId::Mcaster, &body),
    );
    std::iter::from_fn(|| r.poll_transmit())
        .map(|tx: Transmit| {
            assert_eq!(tx.destination, from);
            decode_body::<McasterMsg>(&tx.body).expect("decode")
        })
        .collect()
}

fn rings(r: &mut Mcaster) -> Vec<(NodeId, Vec<u8>)> {
    std::iter::from_fn(|| r.poll_event())
        .filter_map(|e| match e {
            McasterEvent::KeyRing { from, ring } => Some((from, ring.ids())),
            _ => None,
        })
        .collect()
}

fn push(epoch: u64, ids: &[u8]) -> McasterMsg {
    McasterMsg::KeyRing {
        epoch,
        ring: SharedRing::of(&ring(ids)),
    }
}

#[test]
fn the_mcaster_takes_rings_from_registered_members_only() {
    let mut r = Mcaster::new(RELAY, McasterConfig::default());
    // Not registered: dropped, not acknowledged.
    assert!(control(&mut r, MS, inc(1), &push(1, &[1, 2])).is_empty());
    assert!(rings(&mut r).is_empty());
    assert_eq!(r.counters().dropped.get("ring_not_member"), 1);
    // Registered: taken, reported, acknowledged.
    let join = McasterMsg::JoinGroup {
        group: G,
        name: "lan".into(),
        kind: ReceiveMode::Uc,
    };
    control(&mut r, MS, inc(1), &join);
    let _ = rings(&mut r);
    assert_eq!(
        control(&mut r, MS, inc(1), &push(1, &[1, 2])),
        vec![McasterMsg::KeyRingAck { epoch: 1 }]
    );
    assert_eq!(rings(&mut r), vec![(MS, vec![1, 2])]);
    assert_eq!(r.counters().rings_taken, 1);
    // A repeat or an older epoch of the same sender's life: acknowledged,
    // not taken again.
    control(&mut r, MS, inc(1), &push(2, &[2, 1]));
    assert_eq!(rings(&mut r), vec![(MS, vec![2, 1])]);
    assert_eq!(
        control(&mut r, MS, inc(1), &push(1, &[1, 2])),
        vec![McasterMsg::KeyRingAck { epoch: 1 }]
    );
    assert!(rings(&mut r).is_empty());
    assert_eq!(r.counters().dropped.get("stale_ring"), 1);
    // The sender's next life starts its epochs again.
    control(&mut r, MS, inc(2), &push(1, &[2]));
    assert_eq!(rings(&mut r), vec![(MS, vec![2])]);
    // Not a ring: dropped, not acknowledged.
    let bad = McasterMsg::KeyRing {
        epoch: 9,
        ring: SharedRing::of(&ring(&[1])),
    };
    let mut body = encode_body(&bad).expect("encode");
    // Corrupt the secret's hex (the last byte of the body) into a non-hex
    // character.
    if let Some(b) = body.last_mut() {
        *b = b'z';
    }
    r.handle_packet(
        t(0),
        Incoming::direct(MS, inc(2), RELAY, ProtocolId::Mcaster, &body),
    );
    assert!(r.poll_transmit().is_none());
    assert!(rings(&mut r).is_empty());
    assert_eq!(r.counters().dropped.get("bad_ring"), 1);
    // An acknowledgement sent to the mcaster is not for it.
    assert!(control(&mut r, MS, inc(2), &McasterMsg::KeyRingAck { epoch: 1 }).is_empty());
}

fn reg() -> Registration {
    Registration::new(RegistrationConfig::new(RELAY, ReceiveMode::Uc))
}

fn reg_out(m: &mut Registration) -> Vec<McasterMsg> {
    std::iter::from_fn(|| m.poll_transmit())
        .map(|tx| decode_body::<McasterMsg>(&tx.body).expect("decode"))
        .collect()
}

fn to_reg(m: &mut Registration, now: Instant, msg: &McasterMsg) {
    let body = encode_body(msg).expect("encode");
    assert!(m.handle(
        now,
        &Incoming::direct(RELAY, Incarnation::NIL, MS, ProtocolId::Mcaster, &body)
    ));
}

fn ring_sends(out: &[McasterMsg]) -> Vec<u64> {
    out.iter()
        .filter_map(|m| match m {
            McasterMsg::KeyRing { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect()
}

#[test]
fn a_registration_repeats_the_ring_until_acknowledged_within_bounds() {
    let mut m = reg();
    // No mcaster lists us yet: nothing to send, nothing to wait for.
    m.push_key_ring(t(0), &ring(&[1, 2]));
    assert!(ring_sends(&reg_out(&mut m)).is_empty());
    assert!(m.key_ring_settled());
    m.join(t(0), G, "lan");
    let _ = reg_out(&mut m);
    // Registered: the ring goes at once, and again every RING_RESEND.
    to_reg(
        &mut m,
        t(10),
        &McasterMsg::Reply {
            group: G,
            answer: Answer::JoinAck,
        },
    );
    assert_eq!(ring_sends(&reg_out(&mut m)), vec![1]);
    assert!(!m.key_ring_settled());
    assert!(m.poll_timeout().is_some_and(|at| at <= t(10) + RING_RESEND));
    m.handle_timeout(t(10) + RING_RESEND);
    assert_eq!(ring_sends(&reg_out(&mut m)), vec![1]);
    // A newer ring replaces it; an acknowledgement of the old one does
    // not settle it.
    m.push_key_ring(t(120), &ring(&[2, 1]));
    assert_eq!(ring_sends(&reg_out(&mut m)), vec![2]);
    to_reg(&mut m, t(121), &McasterMsg::KeyRingAck { epoch: 1 });
    assert!(!m.key_ring_settled());
    to_reg(&mut m, t(122), &McasterMsg::KeyRingAck { epoch: 2 });
    assert!(m.key_ring_settled());
    assert_eq!(m.counters().rings_acked, 1);
    m.handle_timeout(t(500));
    assert!(ring_sends(&reg_out(&mut m)).is_empty(), "acknowledged");
    // A silent mcaster: RING_ATTEMPTS sends, then given up.
    m.push_key_ring(t(1000), &ring(&[2]));
    let mut sent = ring_sends(&reg_out(&mut m)).len();
    let mut now = t(1000);
    for _ in 0..(2 * RING_ATTEMPTS) {
        now += RING_RESEND;
        m.handle_timeout(now);
        sent += ring_sends(&reg_out(&mut m)).len();
        // Keep the registration answered (the refreshes).
        to_reg(
            &mut m,
            now,
            &McasterMsg::Reply {
                group: G,
                answer: Answer::DupMember,
            },
        );
    }
    assert_eq!(sent, RING_ATTEMPTS as usize);
    assert!(m.key_ring_settled());
    assert_eq!(m.counters().rings_abandoned, 1);
    // The mcaster restarted and relearned us: the ring goes again.
    to_reg(
        &mut m,
        now,
        &McasterMsg::Reply {
            group: G,
            answer: Answer::JoinAck,
        },
    );
    assert_eq!(ring_sends(&reg_out(&mut m)), vec![3]);
    assert!(!m.key_ring_settled());
}
