//! Unit tests of the mcaster's rmcast NACK aggregation.

use super::*;
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::mcaster_reg::*;
use crate::rmcast::nack_cache::NackCacheConfig;
use crate::rmcast::{Data, Envelope, Nack, RmcastPacket};
use crate::rpc::Bytes;
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire::encode_body;

const RELAY: NodeId = NodeId::v4(10, 0, 0, 100, 7100);
const G: NodeId = NodeId::v4(239, 1, 1, 1, 7000);
const SENDER: NodeId = NodeId::v4(10, 0, 0, 1, 7000);

fn n(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7000)
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn inc() -> Incarnation {
    Incarnation::from_parts(5, [1; 10])
}

fn drain(r: &mut Mcaster) -> Vec<Transmit> {
    std::iter::from_fn(|| r.poll_transmit()).collect()
}

/// A relay with uc members 1 (the sender), 2, 3 and 4 in `G`.
fn setup(cache: NackCacheConfig) -> Mcaster {
    let mut r = Mcaster::new(
        RELAY,
        McasterConfig {
            nack_cache: cache,
            ..McasterConfig::default()
        },
    );
    for i in 1..=4 {
        let body = encode_body(&McasterMsg::JoinGroup {
            group: G,
            name: "g".into(),
            kind: ReceiveMode::Uc,
        })
        .unwrap();
        r.handle_packet(
            t(0),
            Incoming::direct(n(i), Incarnation::NIL, RELAY, ProtocolId::Mcaster, &body),
        );
    }
    let _ = drain(&mut r);
    assert_eq!(r.member_count(), 4);
    r
}

/// Sends `body` (with `raw` as its whole sealed datagram) from `from`.
fn send(r: &mut Mcaster, now: Instant, from: NodeId, body: &[u8], raw: &[u8]) -> Vec<Transmit> {
    let incarnation = if from == SENDER {
        inc()
    } else {
        Incarnation::NIL
    };
    r.handle_packet(
        now,
        Incoming {
            source: from,
            source_incarnation: incarnation,
            destination: G,
            protocol: ProtocolId::Rmcast,
            relayed: false,
            body,
            peer: from,
            datagram: raw,
        },
    );
    drain(r)
}

fn data_body(seq: u64, len: usize) -> Vec<u8> {
    Envelope {
        group: G,
        packet: RmcastPacket::Data(Data {
            seq,
            parcel: seq,
            index: 0,
            count: 1,
            len: len as u32,
            ttl_ms: None,
            retransmission: false,
            data: Bytes(vec![seq as u8; len]),
        }),
    }
    .encode()
    .unwrap()
}

fn nack_body(ranges: Vec<(u64, u64)>) -> Vec<u8> {
    Envelope {
        group: G,
        packet: RmcastPacket::Nack(Nack {
            sender: SENDER,
            sender_incarnation: inc(),
            epoch: 1,
            ranges,
        }),
    }
    .encode()
    .unwrap()
}

/// A stand-in for the sealed datagram of data `seq`: the relay never
/// looks inside it.
fn raw_data(seq: u64) -> Vec<u8> {
    let mut v = b"SEALED-DATA".to_vec();
    v.extend_from_slice(&seq.to_be_bytes());
    v
}

fn send_data(r: &mut Mcaster, now: Instant, seq: u64) -> Vec<Transmit> {
    send(r, now, SENDER, &data_body(seq, 8), &raw_data(seq))
}

fn send_nack(
    r: &mut Mcaster,
    now: Instant,
    from: NodeId,
    ranges: Vec<(u64, u64)>,
) -> Vec<Transmit> {
    send(r, now, from, &nack_body(ranges), b"SEALED-NACK")
}

fn dests(out: &[Transmit]) -> Vec<NodeId> {
    out.iter().map(|x| x.destination).collect()
}

#[test]
fn nack_for_a_cached_packet_is_answered_to_the_nacker_only() {
    let mut r = setup(NackCacheConfig::default());
    let out = send_data(&mut r, t(1), 7);
    assert_eq!(dests(&out), vec![n(2), n(3), n(4)]);
    let out = send_nack(&mut r, t(2), n(3), vec![(7, 8)]);
    // One copy: the original sealed datagram, unchanged, to the NACKer.
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].destination, n(3));
    assert!(out[0].sealed);
    assert_eq!(out[0].protocol, ProtocolId::Rmcast);
    assert_eq!(out[0].body, raw_data(7));
    let c = r.counters();
    assert_eq!(c.nacks_answered, 1);
    assert_eq!(c.nack_resends, 1);
    assert_eq!(c.nacks_suppressed, 1);
    assert_eq!(c.nacks_forwarded, 0);
    // The NACK itself was not relayed.
    assert_eq!(c.relayed, 1);
}

#[test]
fn nack_for_an_uncached_packet_is_forwarded_to_the_sender() {
    let mut r = setup(NackCacheConfig::default());
    let out = send_nack(&mut r, t(1), n(3), vec![(7, 8)]);
    let to = dests(&out);
    assert!(to.contains(&SENDER), "{to:?}");
    assert!(!to.contains(&n(3)));
    assert!(out.iter().all(|x| x.body == b"SEALED-NACK"));
    assert_eq!(r.counters().nacks_forwarded, 1);
    assert_eq!(r.counters().nacks_answered, 0);
}

#[test]
fn partly_cached_nack_is_answered_and_forwarded_unchanged() {
    let mut r = setup(NackCacheConfig::default());
    let _ = send_data(&mut r, t(1), 7);
    // 7 is cached, 8 is not: 7 goes to the NACKer, and the NACK (which
    // the mcaster cannot re-seal trimmed) goes on unchanged.
    let out = send_nack(&mut r, t(2), n(3), vec![(7, 9)]);
    assert_eq!(out[0].destination, n(3));
    assert_eq!(out[0].body, raw_data(7));
    let rest: Vec<_> = out[1..].iter().map(|x| x.body.clone()).collect();
    assert!(rest.iter().all(|b| b == b"SEALED-NACK"));
    assert!(dests(&out[1..]).contains(&SENDER));
    assert_eq!(r.counters().nacks_answered, 1);
    assert_eq!(r.counters().nacks_forwarded, 1);
}

#[test]
fn second_nack_within_the_table_lifetime_is_suppressed() {
    let timeout = NackCacheConfig::default().nack_timeout;
    let mut r = setup(NackCacheConfig::default());
    assert!(!send_nack(&mut r, t(10), n(3), vec![(7, 9)]).is_empty());
    // Same range, another member and the same member, within the lifetime.
    assert!(send_nack(&mut r, t(11), n(4), vec![(7, 9)]).is_empty());
    assert!(send_nack(&mut r, t(12), n(3), vec![(7, 9)]).is_empty());
    assert_eq!(r.counters().nacks_suppressed, 2);
    assert_eq!(r.counters().nacks_forwarded, 1);
    // After the lifetime, the next one goes upstream again.
    let later = t(10) + timeout;
    assert!(dests(&send_nack(&mut r, later, n(3), vec![(7, 9)])).contains(&SENDER));
    assert_eq!(r.counters().nacks_forwarded, 2);
}

#[test]
fn cache_bounds_hold() {
    let cfg = NackCacheConfig {
        cache_packets: 4,
        cache_bytes: 1 << 20,
        ..NackCacheConfig::default()
    };
    let mut r = setup(cfg);
    for seq in 0..100 {
        let _ = send_data(&mut r, t(1), seq);
        let (packets, _) = r.raw_cached();
        assert!(packets <= 4);
        assert!(r.nack_cache().cached_packets() <= 4);
    }
    // The oldest were evicted: a NACK for them goes upstream, the newest
    // is answered from the cache.
    assert!(dests(&send_nack(&mut r, t(2), n(2), vec![(0, 1)])).contains(&SENDER));
    let out = send_nack(&mut r, t(2), n(2), vec![(99, 100)]);
    assert_eq!(dests(&out), vec![n(2)]);

    // Bytes: each raw datagram is 19 bytes; 50 bytes hold two.
    let cfg = NackCacheConfig {
        cache_bytes: 50,
        ..NackCacheConfig::default()
    };
    let mut r = setup(cfg);
    for seq in 0..100 {
        let _ = send_data(&mut r, t(1), seq);
        let (packets, bytes) = r.raw_cached();
        assert!(bytes <= 50 && packets <= 2, "{packets} {bytes}");
        assert!(r.nack_cache().cached_bytes() <= 50);
    }
}

#[test]
fn malformed_rmcast_bodies_are_counted_and_forwarded_unchanged() {
    let mut r = setup(NackCacheConfig::default());
    let out = send(&mut r, t(1), n(2), &[0xff; 5], b"JUNK");
    assert_eq!(dests(&out), vec![n(1), n(3), n(4)]);
    assert!(out.iter().all(|x| x.body == b"JUNK"));
    // An ill-formed NACK (empty range) and an envelope for another group.
    let _ = send_nack(&mut r, t(1), n(2), vec![(5, 5)]);
    let other = Envelope {
        group: NodeId::v4(239, 9, 9, 9, 7000),
        packet: RmcastPacket::Nack(Nack {
            sender: SENDER,
            sender_incarnation: inc(),
            epoch: 1,
            ranges: vec![(1, 2)],
        }),
    }
    .encode()
    .unwrap();
    let _ = send(&mut r, t(1), n(2), &other, b"OTHER");
    assert_eq!(r.counters().rmcast_malformed, 3);
    assert_eq!(r.counters().nacks_forwarded, 0);
    assert_eq!(r.nack_cache().nack_entries(), 0);
}
