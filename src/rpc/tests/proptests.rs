//! Property tests of the RPC codecs (BLAST packets, CHAN messages round-trip)
//! and of bad input: arbitrary bytes and arbitrary well-formed packets fed
//! to an endpoint never panic.

use super::*;

fn arb_inc() -> impl Strategy<Value = Incarnation> {
    any::<[u8; 16]>().prop_map(Incarnation::from_bytes)
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes)
}

fn arb_blast() -> impl Strategy<Value = BlastPacket> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            any::<u32>(),
            arb_bytes(3000)
        )
            .prop_map(
                |(
                    mid,
                    index,
                    count,
                    frag_size,
                    total_len,
                    window,
                    seq,
                    poll,
                    rtt_hint_ms,
                    data,
                )| {
                    BlastPacket::Fragment(Fragment {
                        mid,
                        index,
                        count,
                        frag_size,
                        total_len,
                        window,
                        seq,
                        poll,
                        rtt_hint_ms,
                        data,
                    })
                }
            ),
        (
            any::<u64>(),
            arb_inc(),
            any::<u32>(),
            any::<u32>(),
            arb_bytes(1100),
            any::<u32>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(mid, sender, prefix, upto, received, seen_seq, complete, stalled)| {
                    BlastPacket::Srr(Srr {
                        mid,
                        sender,
                        prefix,
                        upto,
                        received,
                        seen_seq,
                        complete,
                        stalled,
                    })
                }
            ),
    ]
}

fn arb_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        arb_bytes(2000).prop_map(Outcome::Ok),
        Just(Outcome::NoSuchProcedure),
        Just(Outcome::TooLarge),
    ]
}

fn arb_chan() -> impl Strategy<Value = ChanMessage> {
    prop_oneof![
        (any::<u64>(), any::<u32>())
            .prop_map(|(nonce, attempt)| ChanMessage::Hello { nonce, attempt }),
        (any::<u64>(), arb_inc(), any::<u32>()).prop_map(|(nonce, incarnation, echo)| {
            ChanMessage::Iam {
                nonce,
                incarnation,
                echo,
            }
        }),
        (
            any::<u64>(),
            arb_inc(),
            arb_inc(),
            any::<u16>(),
            any::<u64>(),
            prop::collection::vec(any::<u64>(), 0..80),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            arb_bytes(2000)
        )
            .prop_map(
                |(
                    mid,
                    client,
                    server,
                    procedure,
                    done_below,
                    acks,
                    patience_ms,
                    attempt,
                    rtt_hint_ms,
                    body,
                )| {
                    ChanMessage::Request(Request {
                        mid,
                        client,
                        server,
                        procedure,
                        done_below,
                        acks,
                        patience_ms,
                        attempt,
                        rtt_hint_ms,
                        body,
                    })
                }
            ),
        (any::<u64>(), arb_inc(), any::<u32>(), arb_outcome()).prop_map(
            |(mid, server, echo, outcome)| ChanMessage::Reply {
                mid,
                server,
                echo,
                outcome,
            }
        ),
        (any::<u64>(), arb_inc(), any::<u32>()).prop_map(|(mid, server, echo)| ChanMessage::Ack {
            mid,
            server,
            echo
        }),
        (
            any::<u64>(),
            arb_inc(),
            arb_inc(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(mid, client, server, patience_ms, attempt)| ChanMessage::Probe {
                    mid,
                    client,
                    server,
                    patience_ms,
                    attempt,
                }
            ),
        (any::<u64>(), arb_inc(), any::<u32>())
            .prop_map(|(mid, server, echo)| ChanMessage::Unknown { mid, server, echo }),
        (any::<u64>(), arb_inc(), any::<u32>())
            .prop_map(|(mid, server, echo)| ChanMessage::Forgotten { mid, server, echo }),
        (any::<u64>(), arb_inc(), any::<u32>())
            .prop_map(|(mid, server, echo)| ChanMessage::Restarted { mid, server, echo }),
        (
            arb_inc(),
            arb_inc(),
            prop::collection::vec(any::<u64>(), 0..80),
            any::<u64>()
        )
            .prop_map(|(client, server, mids, done_below)| ChanMessage::ReplyAck {
                client,
                server,
                mids,
                done_below
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn blast_packets_roundtrip(p in arb_blast()) {
        let bytes = wire::encode_body(&p).unwrap();
        prop_assert_eq!(wire::decode_body::<BlastPacket>(&bytes).unwrap(), p);
    }

    #[test]
    fn chan_messages_roundtrip(m in arb_chan()) {
        let bytes = wire::encode_body(&m).unwrap();
        prop_assert_eq!(wire::decode_message::<ChanMessage>(&bytes).unwrap(), m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..20),
        from in 2u8..5,
    ) {
        let mut rpc = victim();
        let mut now = Instant::ZERO;
        for b in &bodies {
            now += ms(7);
            feed(&mut rpc, now, from, b);
            rpc.handle_timeout(now);
        }
        // And it still works afterwards.
        prop_assert!(rpc.poll_timeout().is_some());
    }

    #[test]
    fn arbitrary_well_formed_packets_never_panic(
        packets in prop::collection::vec(
            prop_oneof![arb_blast().prop_map(|p| wire::encode_body(&p).unwrap()),
                        arb_chan().prop_map(|m| wrap(&m))],
            1..30),
        from in 2u8..5,
        unreachable in any::<bool>(),
    ) {
        let mut rpc = victim();
        let mut now = Instant::ZERO;
        for p in &packets {
            now += ms(3);
            feed(&mut rpc, now, from, p);
            if unreachable {
                rpc.handle_unreachable(now, node(from));
            }
        }
        // Run the timers for an hour of virtual time: nothing panics, every
        // call ends (only the server's periodic sweep may remain, for a
        // deferred request nobody answers).
        let horizon = now + Duration::from_secs(3600);
        let mut steps = 0;
        while let Some(t) = rpc.poll_timeout().filter(|t| *t <= horizon) {
            now = now.max(t);
            rpc.handle_timeout(now);
            while rpc.poll_transmit().is_some() {}
            while rpc.poll_event().is_some() {}
            steps += 1;
            prop_assert!(steps < 100_000, "timers never end");
        }
        prop_assert_eq!(rpc.pending_calls(), 0);
    }
}
