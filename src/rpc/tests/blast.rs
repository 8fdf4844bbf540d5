//! BLAST (seed 004, section 5.3.1) alone: two endpoints passing datagrams
//! by hand. Fragmentation edge cases (1 B, one fragment, one byte more,
//! 64 KiB, 1 MiB), selective retransmission of exactly the missing
//! fragments, the window, the LAST_FRAG, RETRY, POLL and DONE timers,
//! reassembly bounds under a flood, bad fragment headers and SRRs, and
//! random lossy transfers.

use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::rpc::blast::packet::bitmap_len;
use crate::rpc::blast::*;
use crate::rpc::Bytes;
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire::{self, MAX_BODY, MAX_MESSAGE};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

const A: NodeId = NodeId::v4(10, 0, 0, 1, 7000);
const B: NodeId = NodeId::v4(10, 0, 0, 2, 7000);

fn inc(n: u8) -> Incarnation {
    Incarnation::from_parts(1_000 + u64::from(n), [n; 10])
}

fn pair(config: BlastConfig) -> (Blast, Blast) {
    (
        Blast::new(inc(1), config.clone(), 100),
        Blast::new(inc(2), config, 5_000),
    )
}

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random()).collect()
}

fn decode(t: &Transmit) -> BlastPacket {
    wire::decode_body(&t.body).expect("own packets decode")
}

fn drain(b: &mut Blast) -> Vec<Transmit> {
    std::iter::from_fn(|| b.poll_transmit()).collect()
}

fn events(b: &mut Blast) -> Vec<BlastEvent> {
    std::iter::from_fn(|| b.poll_event()).collect()
}

fn deliver(now: Instant, to: &mut Blast, from: NodeId, from_inc: Incarnation, t: &Transmit) {
    to.handle_packet(
        now,
        Incoming {
            source: from,
            source_incarnation: from_inc,
            destination: t.destination,
            protocol: ProtocolId::Rpc,
            relayed: false,
            body: &t.body,
            peer: from,
            datagram: &[],
        },
    );
}

/// Runs a transfer A -> B with `keep(packet, from_a)` deciding delivery,
/// checking the window after every step. Returns B's delivered messages
/// and A's events.
fn run(
    a: &mut Blast,
    b: &mut Blast,
    mut now: Instant,
    mut keep: impl FnMut(&BlastPacket, bool) -> bool,
) -> (Vec<Vec<u8>>, Vec<BlastEvent>, Instant) {
    let mut delivered = Vec::new();
    let mut a_events = Vec::new();
    for _ in 0..100_000 {
        let mut progressed = false;
        for t in drain(a) {
            progressed = true;
            if keep(&decode(&t), true) {
                deliver(now, b, A, inc(1), &t);
            }
        }
        for t in drain(b) {
            progressed = true;
            if keep(&decode(&t), false) {
                deliver(now, a, B, inc(2), &t);
            }
        }
        for in_flight in a.in_flight_counts() {
            assert!(in_flight <= a.config().window, "window exceeded");
        }
        for e in events(b) {
            if let BlastEvent::Delivered { message, .. } = e {
                delivered.push(message);
            }
        }
        a_events.extend(events(a));
        if progressed {
            continue;
        }
        match crate::time::earliest(a.poll_timeout(), b.poll_timeout()) {
            Some(t) => {
                now = now.max(t);
                a.handle_timeout(now);
                b.handle_timeout(now);
            }
            None => break,
        }
    }
    (delivered, a_events, now)
}

#[test]
fn sizes_roundtrip_losslessly() {
    let cfg = BlastConfig::default();
    let fs = cfg.fragment_payload;
    for (len, frags) in [
        (0, 1),
        (1, 1),
        (fs - 1, 1),
        (fs, 1),
        (fs + 1, 2),
        (64 * 1024, (64 * 1024usize).div_ceil(fs) as u32),
        (1 << 20, (1usize << 20).div_ceil(fs) as u32),
        (MAX_MESSAGE, MAX_MESSAGE.div_ceil(fs) as u32),
    ] {
        let (mut a, mut b) = pair(cfg.clone());
        let msg = payload(len, len as u64);
        let info = a.send(Instant::ZERO, B, Arc::from(msg.clone())).unwrap();
        assert_eq!(info.fragments, frags, "len {len}");
        let (delivered, a_events, _) = run(&mut a, &mut b, Instant::ZERO, |_, _| true);
        assert_eq!(delivered, vec![msg], "len {len}");
        if frags == 1 {
            assert!(a_events.is_empty());
            assert_eq!(b.stats().srrs_sent, 0, "one fragment needs no SRR");
        } else {
            assert_eq!(
                a_events,
                vec![BlastEvent::Acked {
                    to: B,
                    mid: info.mid
                }]
            );
            assert_eq!(a.stats().fragments_retransmitted, 0);
        }
        assert_eq!(a.outgoing_len(), 0);
        assert_eq!(b.reassemblies_len(), 0);
        assert_eq!(b.buffered_bytes(), 0);
    }
}

#[test]
fn too_large_refused() {
    let (mut a, _) = pair(BlastConfig::default());
    let err = a
        .send(Instant::ZERO, B, Arc::from(vec![0u8; MAX_MESSAGE + 1]))
        .unwrap_err();
    assert!(matches!(err, BlastError::TooLarge { .. }));
    assert!(a.poll_transmit().is_none());
}

#[test]
fn default_fragment_fits_ethernet_mtu() {
    // Worst-case header values for a maximal message.
    let f = BlastPacket::Fragment(Fragment {
        mid: u64::MAX,
        index: MAX_FRAGMENTS - 1,
        count: MAX_FRAGMENTS,
        frag_size: DEFAULT_FRAGMENT_PAYLOAD as u32,
        total_len: MAX_MESSAGE as u32,
        window: MAX_FRAGMENTS,
        seq: u32::MAX,
        poll: true,
        rtt_hint_ms: u32::MAX,
        data: Bytes(vec![0; DEFAULT_FRAGMENT_PAYLOAD]),
    });
    let body = wire::encode_body(&f).unwrap();
    assert!(body.len() - DEFAULT_FRAGMENT_PAYLOAD <= FRAGMENT_OVERHEAD);
    let ip_udp = 48; // IPv6 + UDP
    let datagram = wire::HEADER_LEN + body.len() + wire::AUTH_TRAILER_LEN;
    assert!(ip_udp + datagram <= 1500, "{}", ip_udp + datagram);
    // And the largest payload still fits a datagram body.
    let g = BlastPacket::Fragment(Fragment {
        data: Bytes(vec![0; MAX_FRAGMENT_PAYLOAD]),
        frag_size: MAX_FRAGMENT_PAYLOAD as u32,
        ..match f {
            BlastPacket::Fragment(f) => f,
            BlastPacket::Srr(_) => unreachable!(),
        }
    });
    assert!(wire::encode_body(&g).unwrap().len() <= MAX_BODY);
}

#[test]
fn srr_retransmits_exactly_the_missing_fragments() {
    let (mut a, mut b) = pair(BlastConfig::default());
    let msg = payload(10 * DEFAULT_FRAGMENT_PAYLOAD, 7);
    a.send(Instant::ZERO, B, Arc::from(msg.clone())).unwrap();
    let first = drain(&mut a);
    assert_eq!(first.len(), 10);
    for t in &first {
        let BlastPacket::Fragment(f) = decode(t) else {
            panic!()
        };
        if f.index != 3 && f.index != 7 {
            deliver(Instant::ZERO, &mut b, A, inc(1), t);
        }
    }
    // The last fragment arrived with 3 and 7 missing: one SRR.
    let srrs = drain(&mut b);
    assert_eq!(srrs.len(), 1);
    let BlastPacket::Srr(s) = decode(&srrs[0]) else {
        panic!()
    };
    assert!(!s.complete && !s.stalled);
    assert_eq!((s.prefix, s.upto), (3, 10));
    deliver(Instant::ZERO, &mut a, B, inc(2), &srrs[0]);
    let resent: Vec<u32> = drain(&mut a)
        .iter()
        .map(|t| match decode(t) {
            BlastPacket::Fragment(f) => f.index,
            BlastPacket::Srr(_) => panic!(),
        })
        .collect();
    assert_eq!(resent, vec![3, 7]);
    assert_eq!(a.stats().fragments_retransmitted, 2);
    // A duplicate of the same SRR does not resend them again.
    deliver(Instant::ZERO, &mut a, B, inc(2), &srrs[0]);
    assert!(drain(&mut a).is_empty());
}

#[test]
fn window_is_never_exceeded_and_progress_srrs_slide_it() {
    let cfg = BlastConfig {
        window: 16,
        ..BlastConfig::default()
    };
    let (mut a, mut b) = pair(cfg);
    let msg = payload(1 << 20, 3);
    a.send(Instant::ZERO, B, Arc::from(msg.clone())).unwrap();
    let first = drain(&mut a);
    assert_eq!(first.len(), 16, "exactly one window");
    for t in &first[..8] {
        deliver(Instant::ZERO, &mut b, A, inc(1), t);
    }
    let srr = drain(&mut b);
    assert_eq!(srr.len(), 1, "progress SRR after window/2");
    deliver(Instant::ZERO, &mut a, B, inc(2), &srr[0]);
    let next = drain(&mut a);
    assert_eq!(next.len(), 8, "the window slid by the 8 acknowledged");
    // The rest, with 20% loss in both directions: the window check runs
    // after every step.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for t in &first[8..] {
        deliver(Instant::ZERO, &mut b, A, inc(1), t);
    }
    for t in &next {
        deliver(Instant::ZERO, &mut b, A, inc(1), t);
    }
    let (delivered, _, _) = run(&mut a, &mut b, Instant::ZERO, |_, _| rng.random_bool(0.8));
    assert_eq!(delivered, vec![msg]);
}

#[test]
fn stalled_srr_spares_fragments_sent_less_than_a_round_trip_ago() {
    let (mut a, _) = pair(BlastConfig {
        window: 16,
        ..BlastConfig::default()
    });
    let msg = payload(64 * DEFAULT_FRAGMENT_PAYLOAD, 8);
    let info = a.send(Instant::ZERO, B, Arc::from(msg)).unwrap();
    assert_eq!(drain(&mut a).len(), 16);
    let srr = |prefix: u32, upto: u32, missing: &[u32], seen_seq: u32, stalled: bool| {
        let mut bits = vec![0u8; bitmap_len(upto - prefix)];
        for i in prefix..upto {
            if !missing.contains(&i) {
                bits[((i - prefix) / 8) as usize] |= 1 << ((i - prefix) % 8);
            }
        }
        Transmit::new(
            A,
            ProtocolId::Rpc,
            wire::encode_body(&BlastPacket::Srr(Srr {
                mid: info.mid,
                sender: inc(1),
                prefix,
                upto,
                received: Bytes(bits),
                seen_seq,
                complete: false,
                stalled,
            }))
            .unwrap(),
        )
    };
    let indices = |ts: Vec<Transmit>| -> Vec<u32> {
        ts.iter()
            .map(|t| match decode(t) {
                BlastPacket::Fragment(f) => f.index,
                BlastPacket::Srr(_) => panic!(),
            })
            .collect()
    };
    // A progress SRR 20 ms after the first window: an RTT sample of 20 ms.
    deliver(
        Instant::from_millis(20),
        &mut a,
        B,
        inc(2),
        &srr(8, 8, &[], 7, false),
    );
    assert_eq!(indices(drain(&mut a)), (16..24).collect::<Vec<_>>());
    // 5 ms later a stalled SRR (12 missing): 12 is resent, 16..24 (sent
    // 5 ms ago, less than a round trip) are not; the 7 acknowledged
    // slide the window (24..31).
    let stalled = srr(8, 16, &[12], 15, true);
    deliver(Instant::from_millis(25), &mut a, B, inc(2), &stalled);
    let mut want = vec![12];
    want.extend(24..31);
    assert_eq!(indices(drain(&mut a)), want);
    // Much later the same report: now everything missing is overdue.
    deliver(Instant::from_millis(80), &mut a, B, inc(2), &stalled);
    let mut want = vec![12];
    want.extend(16..31);
    assert_eq!(indices(drain(&mut a)), want);
    assert!(a.in_flight_counts().iter().all(|&n| n <= 16));
}

#[test]
fn retry_gives_up_after_three_and_frees() {
    let cfg = BlastConfig::default();
    let (mut a, mut b) = pair(cfg.clone());
    a.send(
        Instant::ZERO,
        B,
        Arc::from(payload(10 * DEFAULT_FRAGMENT_PAYLOAD, 1)),
    )
    .unwrap();
    for t in drain(&mut a).iter().take(5) {
        deliver(Instant::ZERO, &mut b, A, inc(1), t);
    }
    assert_eq!(b.reassemblies_len(), 1);
    assert!(b.buffered_bytes() > 0);
    assert!(drain(&mut b).is_empty(), "no SRR before LAST_FRAG");
    let mut srr_times = Vec::new();
    while let Some(t) = b.poll_timeout() {
        b.handle_timeout(t);
        for p in drain(&mut b) {
            let BlastPacket::Srr(s) = decode(&p) else {
                panic!()
            };
            assert!(s.stalled);
            assert_eq!(s.prefix, 5);
            srr_times.push(t.as_micros() / 1000);
        }
    }
    // LAST_FRAG at 50 ms, then RETRY at 150 and 250; the third RETRY
    // expiry (350 ms) gives up.
    assert_eq!(srr_times, vec![50, 150, 250]);
    assert_eq!(b.stats().reassemblies_given_up, 1);
    assert_eq!(b.reassemblies_len(), 0);
    assert_eq!(b.buffered_bytes(), 0);
    assert!(events(&mut b).is_empty());
}

#[test]
fn done_frees_the_sender_after_polls() {
    let (mut a, _) = pair(BlastConfig::default());
    let info = a
        .send(Instant::ZERO, B, Arc::from(payload(5000, 2)))
        .unwrap();
    drain(&mut a);
    let mut last = Instant::ZERO;
    while let Some(t) = a.poll_timeout() {
        a.handle_timeout(t);
        last = t;
        drain(&mut a);
    }
    assert_eq!(last, Instant::from_millis(2000), "DONE");
    assert!(a.stats().polls_sent >= 2);
    assert_eq!(
        events(&mut a),
        vec![BlastEvent::Abandoned {
            to: B,
            mid: info.mid
        }]
    );
    assert_eq!(a.outgoing_len(), 0);
    assert!(!a.is_sending(info.mid));
}

#[test]
fn poll_recovers_a_lost_complete_srr() {
    let (mut a, mut b) = pair(BlastConfig::default());
    let msg = payload(3000, 5);
    a.send(Instant::ZERO, B, Arc::from(msg.clone())).unwrap();
    let mut lost_complete = false;
    let (delivered, a_events, end) = run(&mut a, &mut b, Instant::ZERO, |p, _| {
        if let BlastPacket::Srr(s) = p {
            if s.complete && !lost_complete {
                lost_complete = true;
                return false;
            }
        }
        true
    });
    assert!(lost_complete);
    assert_eq!(delivered, vec![msg], "delivered once");
    assert!(matches!(a_events[..], [BlastEvent::Acked { .. }]));
    assert_eq!(end, Instant::from_millis(200), "one POLL");
    assert_eq!(a.stats().polls_sent, 1);
    assert_eq!(b.stats().duplicate_fragments, 1);
    assert_eq!(b.reassemblies_len(), 0);
}

#[test]
fn duplicate_of_completed_message_gets_complete_srr() {
    let (mut a, mut b) = pair(BlastConfig::default());
    a.send(Instant::ZERO, B, Arc::from(payload(3000, 5)))
        .unwrap();
    let frags = drain(&mut a);
    for t in &frags {
        deliver(Instant::ZERO, &mut b, A, inc(1), t);
    }
    assert_eq!(events(&mut b).len(), 1);
    drain(&mut b);
    let last = frags.last().unwrap();
    deliver(Instant::ZERO, &mut b, A, inc(1), last);
    let out = drain(&mut b);
    assert_eq!(out.len(), 1);
    assert!(matches!(
        decode(&out[0]),
        BlastPacket::Srr(Srr { complete: true, .. })
    ));
    assert_eq!(b.reassemblies_len(), 0, "no new reassembly");
    assert!(events(&mut b).is_empty(), "not delivered twice");
}

fn first_fragment(mid: u64, count: u32) -> Vec<u8> {
    wire::encode_body(&BlastPacket::Fragment(Fragment {
        mid,
        index: 0,
        count,
        frag_size: 512,
        total_len: 512 * count,
        window: 128,
        seq: 0,
        poll: false,
        rtt_hint_ms: 0,
        data: Bytes(vec![7; 512]),
    }))
    .unwrap()
}

fn inject(b: &mut Blast, now: Instant, from: NodeId, body: &[u8]) {
    b.handle_packet(
        now,
        Incoming {
            source: from,
            source_incarnation: inc(9),
            destination: B,
            protocol: ProtocolId::Rpc,
            relayed: false,
            body,
            peer: from,
            datagram: &[],
        },
    );
}

#[test]
fn reassemblies_stay_bounded_under_a_flood() {
    let cfg = BlastConfig {
        max_reassemblies_per_peer: 4,
        max_reassemblies: 32,
        max_reassembly_bytes: 100_000,
        ..BlastConfig::default()
    };
    let mut b = Blast::new(inc(2), cfg, 0);
    // Many fake peers, one first fragment each.
    for i in 0..1000u16 {
        let peer = NodeId::v4(10, 1, (i >> 8) as u8, i as u8, 9000);
        inject(
            &mut b,
            Instant::from_micros(u64::from(i)),
            peer,
            &first_fragment(1, 100),
        );
        assert!(b.reassemblies_len() <= 32);
        assert!(b.buffered_bytes() <= 100_000);
    }
    assert!(b.stats().reassemblies_evicted >= 1000 - 32);
    // One peer, many messages.
    let mut b = Blast::new(
        inc(2),
        BlastConfig {
            max_reassemblies_per_peer: 4,
            ..BlastConfig::default()
        },
        0,
    );
    for mid in 0..100 {
        inject(&mut b, Instant::ZERO, A, &first_fragment(mid, 10));
        assert!(b.reassemblies_len() <= 4);
    }
    assert_eq!(b.stats().reassemblies_evicted, 96);
}

#[test]
fn busy_transfer_survives_a_flood_of_idle_ones() {
    let cfg = BlastConfig {
        max_reassemblies: 8,
        ..BlastConfig::default()
    };
    let (mut a, mut b) = pair(cfg);
    let msg = payload(200 * DEFAULT_FRAGMENT_PAYLOAD, 11);
    a.send(Instant::ZERO, B, Arc::from(msg.clone())).unwrap();
    let mut now = Instant::ZERO;
    let mut pending: VecDeque<Transmit> = VecDeque::new();
    let mut got = Vec::new();
    for round in 0..100_000u32 {
        // A fake peer's first fragment, then one real fragment.
        let peer = NodeId::v4(10, 2, (round >> 8) as u8, round as u8, 1);
        inject(&mut b, now, peer, &first_fragment(u64::from(round), 50));
        assert!(b.reassemblies_len() <= 8);
        pending.extend(drain(&mut a));
        if let Some(t) = pending.pop_front() {
            deliver(now, &mut b, A, inc(1), &t);
        }
        for t in drain(&mut b) {
            if t.destination == A {
                deliver(now, &mut a, B, inc(2), &t);
            }
        }
        for e in events(&mut b) {
            if let BlastEvent::Delivered { message, .. } = e {
                got.push(message);
            }
        }
        if !got.is_empty() {
            break;
        }
        now += Duration::from_micros(10);
        if pending.is_empty() {
            now = now.max(a.poll_timeout().unwrap_or(now));
            a.handle_timeout(now);
        }
    }
    assert_eq!(got, vec![msg], "the active transfer was never evicted");
    assert!(b.stats().reassemblies_evicted >= 190);
    assert_eq!(a.stats().fragments_retransmitted, 0);
}

#[test]
fn absurd_headers_are_dropped_and_counted() {
    let good = Fragment {
        mid: 1,
        index: 0,
        count: 4,
        frag_size: 512,
        total_len: 2000,
        window: 128,
        seq: 0,
        poll: false,
        rtt_hint_ms: 3,
        data: Bytes(vec![0; 512]),
    };
    let cases: Vec<(Fragment, &str)> = vec![
        (
            Fragment {
                count: 0,
                ..good.clone()
            },
            "absurd_fragment_index",
        ),
        (
            Fragment {
                index: 4,
                ..good.clone()
            },
            "absurd_fragment_index",
        ),
        (
            Fragment {
                count: MAX_FRAGMENTS + 1,
                total_len: 512 * (MAX_FRAGMENTS + 1),
                ..good.clone()
            },
            "fragment_message_too_large",
        ),
        (
            Fragment {
                index: u32::MAX,
                count: u32::MAX,
                ..good.clone()
            },
            "absurd_fragment_index",
        ),
        (
            Fragment {
                frag_size: 0,
                ..good.clone()
            },
            "absurd_fragment_size",
        ),
        (
            Fragment {
                frag_size: 100,
                count: 20,
                total_len: 2000,
                data: Bytes(vec![0; 100]),
                ..good.clone()
            },
            "absurd_fragment_size",
        ),
        (
            Fragment {
                frag_size: u32::MAX,
                ..good.clone()
            },
            "absurd_fragment_size",
        ),
        (
            Fragment {
                count: 5,
                ..good.clone()
            },
            "absurd_fragment_count",
        ),
        (
            Fragment {
                total_len: u32::MAX,
                ..good.clone()
            },
            "fragment_message_too_large",
        ),
        (
            Fragment {
                data: Bytes(vec![0; 511]),
                ..good.clone()
            },
            "absurd_fragment_length",
        ),
        (
            Fragment {
                index: 3,
                data: Bytes(vec![0; 512]),
                ..good.clone()
            },
            "absurd_fragment_length",
        ),
    ];
    let mut b = Blast::new(inc(2), BlastConfig::default(), 0);
    for (i, (f, kind)) in cases.into_iter().enumerate() {
        let before = b.stats().drops.get(kind);
        let body = wire::encode_body(&BlastPacket::Fragment(f)).unwrap();
        inject(&mut b, Instant::ZERO, A, &body);
        assert_eq!(b.stats().drops.get(kind), before + 1, "case {i}: {kind}");
    }
    assert_eq!(b.reassemblies_len(), 0);
    assert!(drain(&mut b).is_empty());
    assert!(events(&mut b).is_empty());
    // The good one is accepted; an inconsistent follow-up is not.
    inject(
        &mut b,
        Instant::ZERO,
        A,
        &wire::encode_body(&BlastPacket::Fragment(good.clone())).unwrap(),
    );
    assert_eq!(b.reassemblies_len(), 1);
    let odd = Fragment {
        index: 1,
        total_len: 1800,
        count: 4,
        ..good
    };
    inject(
        &mut b,
        Instant::ZERO,
        A,
        &wire::encode_body(&BlastPacket::Fragment(odd)).unwrap(),
    );
    assert_eq!(b.stats().drops.get("inconsistent_fragment"), 1);
    // Garbage and a wrong protocol.
    inject(&mut b, Instant::ZERO, A, &[0xff, 0x00, 0x13]);
    assert_eq!(b.stats().drops.get("malformed_packet"), 1);
}

#[test]
fn malformed_or_foreign_srrs_are_ignored() {
    let (mut a, _) = pair(BlastConfig::default());
    let info = a
        .send(Instant::ZERO, B, Arc::from(payload(5000, 1)))
        .unwrap();
    drain(&mut a);
    let srr = |sender, prefix, upto, bits: usize| {
        wire::encode_body(&BlastPacket::Srr(Srr {
            mid: info.mid,
            sender,
            prefix,
            upto,
            received: Bytes(vec![0xff; bits]),
            seen_seq: 0,
            complete: true,
            stalled: false,
        }))
        .unwrap()
    };
    let feed = |a: &mut Blast, from: NodeId, body: &[u8]| {
        a.handle_packet(
            Instant::ZERO,
            Incoming {
                source: from,
                source_incarnation: inc(2),
                destination: A,
                protocol: ProtocolId::Rpc,
                relayed: false,
                body,
                peer: from,
                datagram: &[],
            },
        )
    };
    feed(&mut a, B, &srr(inc(7), 0, 0, 0));
    feed(&mut a, NodeId::v4(1, 2, 3, 4, 5), &srr(inc(1), 0, 0, 0));
    feed(&mut a, B, &srr(inc(1), 3, 2, 0));
    feed(&mut a, B, &srr(inc(1), 0, 99, 13));
    feed(&mut a, B, &srr(inc(1), 0, 4, 9));
    assert_eq!(a.stats().drops.get("srr_wrong_incarnation"), 1);
    assert_eq!(a.stats().drops.get("srr_wrong_source"), 1);
    assert_eq!(a.stats().drops.get("malformed_srr"), 3);
    assert!(a.is_sending(info.mid));
    feed(&mut a, B, &srr(inc(1), 4, 4, 0));
    assert!(!a.is_sending(info.mid));
    assert_eq!(
        events(&mut a),
        vec![BlastEvent::Acked {
            to: B,
            mid: info.mid
        }]
    );
}

/// Random sizes over a lossy, duplicating, reordering link: every
/// message arrives intact or not at all, and the sender always ends.
#[test]
fn lossy_link_intact_or_nothing() {
    let mut total_delivered = 0;
    for seed in 0..40u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut a, mut b) = pair(BlastConfig {
            window: 32,
            ..BlastConfig::default()
        });
        let mut sent = Vec::new();
        for k in 0..3 {
            let len = if k == 0 {
                300_000
            } else {
                rng.random_range(1..50_000)
            };
            let msg = payload(len, seed * 10 + k);
            a.send(Instant::ZERO, B, Arc::from(msg.clone())).unwrap();
            sent.push(msg);
        }
        // A queue with random delays gives reordering; duplicates too.
        let mut queue: BTreeMap<(Instant, u64), (bool, Transmit)> = BTreeMap::new();
        let mut seq = 0u64;
        let mut now = Instant::ZERO;
        let mut delivered = Vec::new();
        let mut ended = Vec::new();
        for _ in 0..1_000_000 {
            for (to_b, t) in drain(&mut a)
                .into_iter()
                .map(|t| (true, t))
                .chain(drain(&mut b).into_iter().map(|t| (false, t)))
            {
                for _ in 0..if rng.random_bool(0.1) { 2 } else { 1 } {
                    if rng.random_bool(0.3) {
                        continue;
                    }
                    let at = now + Duration::from_micros(rng.random_range(100..5_000));
                    seq += 1;
                    queue.insert((at, seq), (to_b, t.clone()));
                }
            }
            for in_flight in a.in_flight_counts() {
                assert!(in_flight <= a.config().window);
            }
            for e in events(&mut b) {
                if let BlastEvent::Delivered { message, .. } = e {
                    delivered.push(message);
                }
            }
            ended.extend(events(&mut a));
            let next_pkt = queue.keys().next().map(|k| k.0);
            let next = crate::time::earliest(
                next_pkt,
                crate::time::earliest(a.poll_timeout(), b.poll_timeout()),
            );
            let Some(next) = next else { break };
            now = now.max(next);
            if next_pkt == Some(next) {
                let (_, (to_b, t)) = queue.pop_first().unwrap();
                if to_b {
                    deliver(now, &mut b, A, inc(1), &t);
                } else {
                    deliver(now, &mut a, B, inc(2), &t);
                }
            } else {
                a.handle_timeout(now);
                b.handle_timeout(now);
            }
        }
        assert_eq!(a.outgoing_len(), 0, "seed {seed}: sender ended");
        let multi = sent
            .iter()
            .filter(|m| m.len() > DEFAULT_FRAGMENT_PAYLOAD)
            .count();
        assert_eq!(
            ended.len(),
            multi,
            "seed {seed}: one Acked/Abandoned per message"
        );
        for m in &delivered {
            assert!(sent.contains(m), "seed {seed}: corrupted delivery");
            if m.len() > DEFAULT_FRAGMENT_PAYLOAD {
                // (One-fragment messages carry no state: a duplicated
                // datagram is delivered twice, and CHAN sorts it out.)
                let n = delivered.iter().filter(|d| *d == m).count();
                assert_eq!(n, 1, "seed {seed}: twice");
            }
        }
        for e in &ended {
            if let BlastEvent::Acked { mid, .. } = e {
                let k = (mid - 100) as usize;
                assert!(
                    delivered.contains(&sent[k]),
                    "seed {seed}: acked, not delivered"
                );
            }
        }
        total_delivered += delivered.len();
        assert_eq!(b.reassemblies_len(), 0);
        assert_eq!(b.buffered_bytes(), 0);
    }
    assert!(total_delivered >= 108, "{total_delivered} of 120");
}
