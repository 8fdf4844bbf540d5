//! The mcaster with a cluster key, sans-IO: every datagram goes through a
//! real [`WireCodec`] on its way in (as the daemon's sockets open it) and
//! every transmit on its way out (forwards unchanged, answers sealed by the
//! mcaster's codec), and the members open what they get with their own
//! codecs. Checked: good traffic is verified and forwarded byte-for-byte,
//! and verifies at the receivers as coming from the original sender;
//! forged tags, unknown key ids, wrong secrets, replays and unsigned
//! datagrams are dropped and counted before the relay sees them; answers
//! are signed with the first key of the ring; the `RELAYED` bit cannot be
//! set on a forward; a datagram that reaches a receiver twice is dropped as
//! `replayed`; a cached resend that a receiver's replay window refuses does
//! not stall its NACKs.

use super::*;
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::mcaster_reg::*;
use crate::rmcast::{Data, Envelope, Nack, RmcastPacket};
use crate::rpc::Bytes;
use crate::sansio::{Core, Incoming};
use crate::time::Instant;
use crate::wire::header::{Flags, OFF_CHECKSUM, OFF_FLAGS, OFF_KEY_ID};
use crate::wire::{
    decode_body, encode_body, AuthConfig, ClusterKey, DecodeError, Header, KeyRing, WireCodec,
};

const MCASTER: NodeId = NodeId::v4(10, 0, 0, 100, 7100);
const G: NodeId = NodeId::v4(239, 1, 1, 1, 7000);

fn n(i: u8) -> NodeId {
    NodeId::v4(10, 0, 0, i, 7000)
}

fn inc(i: u8) -> Incarnation {
    Incarnation::from_parts(1000 + u64::from(i), [i; 10])
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// A ring of `(id, secret byte)` keys; the first signs.
fn ring(keys: &[(u8, u8)]) -> KeyRing {
    KeyRing::new(
        keys.iter()
            .map(|(id, fill)| ClusterKey::new(*id, [*fill; 32]).unwrap())
            .collect(),
    )
    .unwrap()
}

fn codec(keys: &[(u8, u8)]) -> WireCodec {
    if keys.is_empty() {
        WireCodec::new()
    } else {
        WireCodec::with_auth(AuthConfig::new(ring(keys)))
    }
}

/// A member: its address, incarnation and codec.
struct Member {
    node: NodeId,
    incarnation: Incarnation,
    codec: WireCodec,
}

/// What a member got: the header, whether it was relayed, the body.
type Got = (Header, bool, Vec<u8>);

impl Member {
    fn new(i: u8, keys: &[(u8, u8)]) -> Self {
        Member {
            node: n(i),
            incarnation: inc(i),
            codec: codec(keys),
        }
    }

    /// Seals `body` for `destination` as this member's runtime does.
    fn seal(&mut self, destination: NodeId, protocol: ProtocolId, body: &[u8]) -> Vec<u8> {
        let h = Header {
            protocol,
            relayed: false,
            source: self.node,
            source_incarnation: self.incarnation,
            destination,
        };
        let mut out = Vec::new();
        self.codec.seal(&h, body, &mut out).unwrap();
        out
    }

    fn join(&mut self, kind: ReceiveMode) -> Vec<u8> {
        let body = encode_body(&McasterMsg::JoinGroup {
            group: G,
            name: "g".into(),
            kind,
        })
        .unwrap();
        self.seal(MCASTER, ProtocolId::Mcaster, &body)
    }

    /// Opens a datagram that came from UDP peer `peer`, as the runtime does.
    fn receive(&mut self, peer: NodeId, bytes: &[u8]) -> Result<Got, DecodeError> {
        let p = self.codec.open_counted(bytes)?;
        let relayed = p.header.relayed || peer != p.header.source;
        Ok((p.header, relayed, p.body.to_vec()))
    }

    fn answer(&mut self, bytes: &[u8]) -> Answer {
        let (h, _, body) = self.receive(MCASTER, bytes).expect("answer opens");
        assert_eq!(h.source, MCASTER);
        match decode_body::<McasterMsg>(&body).unwrap() {
            McasterMsg::Reply { answer, .. } => answer,
            m => panic!("not a reply: {m:?}"),
        }
    }
}

/// The mcaster: the mcaster core behind a codec, as the daemon runs it.
struct KeyedMcaster {
    relay: Mcaster,
    codec: WireCodec,
    incarnation: Incarnation,
}

impl KeyedMcaster {
    fn new(keys: &[(u8, u8)], multicast: bool) -> Self {
        KeyedMcaster {
            relay: Mcaster::new(
                MCASTER,
                McasterConfig {
                    multicast,
                    ..McasterConfig::default()
                },
            ),
            codec: codec(keys),
            incarnation: inc(100),
        }
    }

    /// One datagram from UDP peer `peer`: opened by the codec (a reject is
    /// counted and goes no further), handed to the relay; answers what goes
    /// out on the wire, as (UDP destination, bytes).
    fn ingest(
        &mut self,
        now: Instant,
        peer: NodeId,
        bytes: &[u8],
    ) -> Result<Vec<(NodeId, Vec<u8>)>, DecodeError> {
        let p = self.codec.open_counted(bytes)?;
        let h = p.header;
        self.relay.handle_packet(
            now,
            Incoming {
                source: h.source,
                source_incarnation: h.source_incarnation,
                destination: h.destination,
                protocol: h.protocol,
                relayed: h.relayed || peer != h.source,
                body: &p.body,
                peer,
                datagram: bytes,
            },
        );
        let mut wire = Vec::new();
        while let Some(tx) = self.relay.poll_transmit() {
            if tx.sealed {
                wire.push((tx.destination, tx.body));
            } else {
                let h = Header {
                    protocol: tx.protocol,
                    relayed: false,
                    source: MCASTER,
                    source_incarnation: self.incarnation,
                    destination: tx.destination,
                };
                let mut out = Vec::new();
                self.codec.seal(&h, &tx.body, &mut out).unwrap();
                wire.push((tx.next_hop(), out));
            }
        }
        Ok(wire)
    }

    /// A member's `JOIN_GROUP`; answers the mcaster's (signed) answer.
    fn join(&mut self, m: &mut Member, kind: ReceiveMode) -> Answer {
        let bytes = m.join(kind);
        let out = self.ingest(t(0), m.node, &bytes).expect("join opens");
        assert_eq!(out.len(), 1, "one answer");
        assert_eq!(out[0].0, m.node);
        m.answer(&out[0].1)
    }
}

const K1: &[(u8, u8)] = &[(1, 1)];

/// An mcaster and uc members 1, 2, 3 in `G`, all with key 1.
fn cluster() -> (KeyedMcaster, Vec<Member>) {
    let mut mc = KeyedMcaster::new(K1, false);
    let mut members: Vec<Member> = (1..=3).map(|i| Member::new(i, K1)).collect();
    for m in &mut members {
        assert_eq!(mc.join(m, ReceiveMode::Uc), Answer::JoinAck);
    }
    (mc, members)
}

#[test]
fn signed_traffic_is_verified_and_forwarded_unchanged() {
    let (mut mc, mut members) = cluster();
    let a = members[0].node;
    let bytes = members[0].seal(G, ProtocolId::Test, b"hello");
    let out = mc.ingest(t(1), a, &bytes).unwrap();
    assert_eq!(
        out.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
        vec![n(2), n(3)]
    );
    for (to, copy) in &out {
        assert_eq!(copy, &bytes, "forwarded byte-for-byte");
        let m = members.iter_mut().find(|m| m.node == *to).unwrap();
        let (h, relayed, body) = m.receive(MCASTER, copy).unwrap();
        assert_eq!((h.source, h.source_incarnation), (a, inc(1)));
        assert_eq!(h.destination, G);
        assert!(relayed && !h.relayed, "relayed by peer, header bit clear");
        assert_eq!(body, b"hello");
    }
    assert_eq!(mc.relay.counters().relayed, 1);
    assert_eq!(mc.codec.drops().total(), 0);
}

#[test]
fn forged_tag_and_forged_body_are_dropped_and_counted() {
    let (mut mc, mut members) = cluster();
    let a = members[0].node;
    let good = members[0].seal(G, ProtocolId::Test, b"hello");
    // A flipped tag bit.
    let mut forged = good.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(mc.ingest(t(1), a, &forged), Err(DecodeError::BadTag));
    // Another body with a correct CRC (anyone can compute one): the tag
    // still does not verify.
    let mut forged = good.clone();
    forged[crate::wire::HEADER_LEN] ^= 0xff;
    let tag_at = forged.len() - crate::wire::auth::TAG_LEN;
    let mut crc_input = forged[..tag_at].to_vec();
    crc_input[OFF_CHECKSUM..OFF_CHECKSUM + 4].fill(0);
    let crc = crc32fast::hash(&crc_input);
    forged[OFF_CHECKSUM..OFF_CHECKSUM + 4].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(mc.ingest(t(1), a, &forged), Err(DecodeError::BadTag));
    // Forgeries did not move the replay window: the real one still passes.
    assert_eq!(mc.ingest(t(1), a, &good).unwrap().len(), 2);
    assert_eq!(mc.codec.drops().get("bad_tag"), 2);
    assert_eq!(mc.relay.counters().relayed, 1);
}

#[test]
fn unknown_key_id_and_wrong_secret_get_nothing_through() {
    let (mut mc, mut members) = cluster();
    // Key id 2, which the mcaster does not hold; id 1 with another secret.
    for (i, keys, err) in [
        (4, &[(2u8, 2u8)][..], DecodeError::UnknownKey(2)),
        (5, &[(1, 9)][..], DecodeError::BadTag),
    ] {
        let mut m = Member::new(i, keys);
        let join = m.join(ReceiveMode::Uc);
        assert_eq!(mc.ingest(t(1), m.node, &join), Err(err.clone()));
        let data = m.seal(G, ProtocolId::Test, b"intruder");
        assert_eq!(mc.ingest(t(1), m.node, &data), Err(err));
        assert!(mc.relay.group(G).unwrap().members.len() == 3);
    }
    // Impersonating member 1 with the wrong key fails the same way (its
    // counter 1, already seen, fails the replay check first; under a newer
    // incarnation, the tag check), and does not move 1's replay window to
    // the forged incarnation.
    let mut fake = Member::new(1, &[(1, 9)]);
    let data = fake.seal(G, ProtocolId::Test, b"impostor");
    assert_eq!(mc.ingest(t(1), n(1), &data), Err(DecodeError::Replayed));
    fake.incarnation = inc(200);
    let data = fake.seal(G, ProtocolId::Test, b"impostor");
    assert_eq!(mc.ingest(t(1), n(1), &data), Err(DecodeError::BadTag));
    assert_eq!(mc.codec.drops().get("unknown_key"), 2);
    assert_eq!(mc.codec.drops().get("bad_tag"), 3);
    assert_eq!(mc.relay.counters().relayed, 0);
    assert_eq!(mc.relay.counters().control, 3, "only the three good joins");
    let real = members[0].seal(G, ProtocolId::Test, b"real");
    assert_eq!(mc.ingest(t(2), n(1), &real).unwrap().len(), 2);
}

#[test]
fn replayed_datagram_is_relayed_once() {
    let (mut mc, mut members) = cluster();
    let a = members[0].node;
    let bytes = members[0].seal(G, ProtocolId::Test, b"once");
    assert_eq!(mc.ingest(t(1), a, &bytes).unwrap().len(), 2);
    assert_eq!(mc.ingest(t(2), a, &bytes), Err(DecodeError::Replayed));
    // A replayed JOIN_GROUP is refused too (an old join cannot re-register
    // a member that left).
    let join = members[1].join(ReceiveMode::Uc);
    assert_eq!(mc.ingest(t(3), n(2), &join).unwrap().len(), 1);
    assert_eq!(mc.ingest(t(3), n(2), &join), Err(DecodeError::Replayed));
    assert_eq!(mc.codec.drops().get("replayed"), 2);
    assert_eq!(mc.relay.counters().relayed, 1);
}

#[test]
fn unsigned_and_signed_traffic_with_mismatched_configuration() {
    // An mcaster with a key drops unsigned datagrams.
    let (mut mc, _) = cluster();
    let mut plain = Member::new(7, &[]);
    let join = plain.join(ReceiveMode::Uc);
    assert_eq!(mc.ingest(t(1), n(7), &join), Err(DecodeError::MissingAuth));
    assert_eq!(mc.codec.drops().get("missing_auth"), 1);
    // One without a key drops signed ones (and its own answers are
    // unsigned, so keyed members drop those).
    let mut bare = KeyedMcaster::new(&[], false);
    let mut keyed = Member::new(1, K1);
    let join = keyed.join(ReceiveMode::Uc);
    assert_eq!(
        bare.ingest(t(1), n(1), &join),
        Err(DecodeError::UnexpectedAuth)
    );
    assert_eq!(bare.codec.drops().get("unexpected_auth"), 1);
    assert_eq!(bare.relay.group_count(), 0);
    assert_eq!(bare.join(&mut plain, ReceiveMode::Uc), Answer::JoinAck);
    let answer = bare
        .ingest(t(2), n(7), &plain.join(ReceiveMode::Uc))
        .unwrap();
    assert_eq!(
        keyed.receive(MCASTER, &answer[0].1),
        Err(DecodeError::MissingAuth)
    );
}

#[test]
fn answers_are_signed_with_the_first_key_and_rotation_keeps_working() {
    // Rotation step 2 at the mcaster: the new key (2) first, the old second.
    let mut mc = KeyedMcaster::new(&[(2, 2), (1, 1)], false);
    // A member still at step 1 (old key first) and one at step 2.
    let mut old_first = Member::new(1, &[(1, 1), (2, 2)]);
    let mut new_first = Member::new(2, &[(2, 2), (1, 1)]);
    let bytes = old_first.join(ReceiveMode::Uc);
    let out = mc.ingest(t(0), n(1), &bytes).unwrap();
    assert_eq!(out[0].1[OFF_KEY_ID], 2, "signed with the first key");
    assert_eq!(old_first.answer(&out[0].1), Answer::JoinAck);
    assert_eq!(mc.join(&mut new_first, ReceiveMode::Uc), Answer::JoinAck);
    // Each one's traffic reaches the other, whatever key signed it.
    let data = old_first.seal(G, ProtocolId::Test, b"k1");
    let out = mc.ingest(t(1), n(1), &data).unwrap();
    assert_eq!(out[0].1[OFF_KEY_ID], 1);
    assert!(new_first.receive(MCASTER, &out[0].1).is_ok());
    let data = new_first.seal(G, ProtocolId::Test, b"k2");
    let out = mc.ingest(t(1), n(2), &data).unwrap();
    assert!(old_first.receive(MCASTER, &out[0].1).is_ok());
    // Step 3 (the old key removed at the mcaster): a member still signing
    // with it is dropped; its ring rotated (SetKeyRing), it gets through.
    mc.codec.auth_mut().unwrap().set_ring(ring(&[(2, 2)]));
    let data = old_first.seal(G, ProtocolId::Test, b"late");
    assert_eq!(
        mc.ingest(t(2), n(1), &data),
        Err(DecodeError::UnknownKey(1))
    );
    old_first
        .codec
        .auth_mut()
        .unwrap()
        .set_ring(ring(&[(2, 2)]));
    let data = old_first.seal(G, ProtocolId::Test, b"rotated");
    assert_eq!(mc.ingest(t(3), n(1), &data).unwrap().len(), 1);
}

#[test]
fn relayed_bit_cannot_be_set_on_a_forward() {
    let (mut mc, mut members) = cluster();
    let bytes = members[0].seal(G, ProtocolId::Test, b"x");
    let out = mc.ingest(t(1), n(1), &bytes).unwrap();
    let mut flagged = out[0].1.clone();
    assert_eq!(flagged[OFF_FLAGS], Flags::AUTH.bits());
    flagged[OFF_FLAGS] |= Flags::RELAYED.bits();
    let b = &mut members[1];
    assert_eq!(b.receive(MCASTER, &flagged), Err(DecodeError::BadChecksum));
    // Even with the CRC recomputed, the tag covers the flags.
    let tag_at = flagged.len() - crate::wire::auth::TAG_LEN;
    let mut crc_input = flagged[..tag_at].to_vec();
    crc_input[OFF_CHECKSUM..OFF_CHECKSUM + 4].fill(0);
    let crc = crc32fast::hash(&crc_input);
    flagged[OFF_CHECKSUM..OFF_CHECKSUM + 4].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(b.receive(MCASTER, &flagged), Err(DecodeError::BadTag));
    // The unchanged forward is accepted, as relayed (its peer is the
    // mcaster).
    let (_, relayed, _) = b.receive(MCASTER, &out[0].1).unwrap();
    assert!(relayed);
}

#[test]
fn a_copy_by_multicast_and_one_through_the_mcaster_count_once() {
    // Members 1 and 2 uc, 3 mc; 2 is misconfigured: registered uc but also
    // listening to the class D address.
    let mut mc = KeyedMcaster::new(K1, true);
    let mut members: Vec<Member> = (1..=3).map(|i| Member::new(i, K1)).collect();
    for (m, kind) in members
        .iter_mut()
        .zip([ReceiveMode::Uc, ReceiveMode::Uc, ReceiveMode::Mc])
    {
        assert_eq!(mc.join(m, kind), Answer::JoinAck);
    }
    let bytes = members[0].seal(G, ProtocolId::Test, b"twice");
    let out = mc.ingest(t(1), n(1), &bytes).unwrap();
    let mut to: Vec<NodeId> = out.iter().map(|(to, _)| *to).collect();
    to.sort();
    assert_eq!(to, vec![n(2), G]);
    let b = &mut members[1];
    for (_, copy) in &out {
        // Both copies arrive at 2 (the class D one from the mcaster too).
        let _ = b.receive(MCASTER, copy);
    }
    assert_eq!(b.codec.drops().get("replayed"), 1);
    assert_eq!(b.codec.drops().total(), 1);
    // The mcaster's own class D copy looping back is opened once more by
    // its group socket (another codec) and dropped by the relay.
    let mut group_socket = codec(K1);
    let p = group_socket.open(&bytes).unwrap();
    assert_eq!(p.header.source, n(1));
    let before = mc.relay.counters().dropped.get("own_echo");
    mc.relay.handle_packet(
        t(2),
        Incoming {
            source: p.header.source,
            source_incarnation: p.header.source_incarnation,
            destination: G,
            protocol: ProtocolId::Test,
            relayed: true,
            body: &p.body,
            peer: MCASTER,
            datagram: &bytes,
        },
    );
    assert!(mc.relay.poll_transmit().is_none());
    assert_eq!(mc.relay.counters().dropped.get("own_echo"), before + 1);
}

fn data(seq: u64) -> Vec<u8> {
    Envelope {
        group: G,
        packet: RmcastPacket::Data(Data {
            seq,
            parcel: seq,
            index: 0,
            count: 1,
            len: 4,
            ttl_ms: None,
            retransmission: false,
            data: Bytes(vec![7; 4]),
        }),
    }
    .encode()
    .unwrap()
}

fn nack(sender: NodeId, sender_incarnation: Incarnation, seq: u64) -> Vec<u8> {
    Envelope {
        group: G,
        packet: RmcastPacket::Nack(Nack {
            sender,
            sender_incarnation,
            epoch: 1,
            ranges: vec![(seq, seq + 1)],
        }),
    }
    .encode()
    .unwrap()
}

#[test]
fn a_cached_resend_refused_by_the_replay_window_does_not_stall_nacks() {
    let (mut mc, mut members) = cluster();
    let (s, r) = (n(1), n(2));
    // Data 7 from 1 is relayed (and cached); 2 loses its copy.
    let d7 = members[0].seal(G, ProtocolId::Rmcast, &data(7));
    let out = mc.ingest(t(1), s, &d7).unwrap();
    assert!(out.iter().any(|(to, _)| *to == r));
    // Then 2 hears more than a replay window's worth of 1's datagrams.
    for _ in 0..1100 {
        let other = members[0].seal(r, ProtocolId::Test, b"rpc");
        members[1].receive(s, &other).unwrap();
    }
    // 2 NACKs 7: the cache answers with the original, whose counter is now
    // too old for 2's window; the NACK is absorbed the first time.
    let n1 = members[1].seal(G, ProtocolId::Rmcast, &nack(s, inc(1), 7));
    let out = mc.ingest(t(2), r, &n1).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, &out[0].1), (r, &d7));
    assert_eq!(
        members[1].receive(MCASTER, &out[0].1),
        Err(DecodeError::Replayed)
    );
    assert_eq!(mc.relay.counters().nacks_suppressed, 1);
    // 2 NACKs 7 again: resent once more, and this time the NACK goes
    // upstream, so that the sender retransmits a freshly sealed copy.
    let n2 = members[1].seal(G, ProtocolId::Rmcast, &nack(s, inc(1), 7));
    let out = mc.ingest(t(3), r, &n2).unwrap();
    let to: Vec<NodeId> = out.iter().map(|(to, _)| *to).collect();
    assert!(to.contains(&s), "NACK forwarded to the sender: {to:?}");
    assert!(to.contains(&r), "cached copy resent: {to:?}");
    let c = mc.relay.counters();
    assert_eq!((c.nack_repeats, c.nacks_forwarded), (1, 1));
    // The forwarded NACK verifies at the sender as 2's own.
    let nack_copy = out.iter().find(|(to, _)| *to == s).unwrap();
    let (h, relayed, _) = members[0].receive(MCASTER, &nack_copy.1).unwrap();
    assert_eq!(h.source, r);
    assert!(relayed);
}
