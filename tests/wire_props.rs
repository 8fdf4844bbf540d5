//! Property tests of the wire format (DESIGN.md section 4, issue "Bad input"):
//! `decode(encode(x)) == x`, and any mutation of a valid datagram is either
//! rejected with a typed error or decodes to a valid value; nothing panics.

use membership::id::{Incarnation, NodeId, ProtocolId};
use membership::wire::{
    decode_body, encode_body, AuthConfig, ClusterKey, DecodeError, Header, KeyRing, WireCodec,
    HEADER_LEN, MAX_DATAGRAM,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fn node() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(o, p)| NodeId::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), p))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(o, p)| {
            let v6 = Ipv6Addr::from(o);
            // An IPv4-mapped v6 address reads back as v4 by design.
            let ip = match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            };
            NodeId::new(SocketAddr::new(ip, p))
        }),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (
        prop::sample::select(ProtocolId::ALL.to_vec()),
        any::<bool>(),
        node(),
        any::<[u8; 16]>(),
        node(),
    )
        .prop_map(|(protocol, relayed, source, inc, destination)| Header {
            protocol,
            relayed,
            source,
            source_incarnation: Incarnation::from_bytes(inc),
            destination,
        })
}

fn auth() -> AuthConfig {
    let ring =
        KeyRing::new(vec![ClusterKey::new(7, [0x5a; 32]).expect("valid key")]).expect("valid ring");
    AuthConfig::new(ring)
}

/// A sender's and a receiver's codec, both authenticated or both not.
fn codec_pair(authed: bool) -> (WireCodec, WireCodec) {
    if authed {
        (WireCodec::with_auth(auth()), WireCodec::with_auth(auth()))
    } else {
        (WireCodec::new(), WireCodec::new())
    }
}

/// A body type with the shapes real protocol messages have.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Msg {
    Ping {
        seq: u64,
    },
    Join {
        name: String,
        members: Vec<(u32, u64)>,
    },
    Data(Vec<u8>),
    Nothing,
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        any::<u64>().prop_map(|seq| Msg::Ping { seq }),
        (".{0,40}", prop::collection::vec(any::<(u32, u64)>(), 0..20))
            .prop_map(|(name, members)| Msg::Join { name, members }),
        prop::collection::vec(any::<u8>(), 0..2000).prop_map(Msg::Data),
        Just(Msg::Nothing),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn seal_open_roundtrip(h in header(), m in msg(), authed in any::<bool>()) {
        let body = encode_body(&m).expect("encodes");
        let (mut tx, mut rx) = codec_pair(authed);
        let mut out = Vec::new();
        tx.seal(&h, &body, &mut out).expect("seals");
        let p = rx.open(&out).expect("opens");
        prop_assert_eq!(p.header, h);
        prop_assert_eq!(p.authenticated, authed);
        prop_assert_eq!(decode_body::<Msg>(&p.body).expect("decodes"), m);
    }

    #[test]
    fn mutations_are_rejected_or_valid(
        h in header(),
        m in msg(),
        authed in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let body = encode_body(&m).expect("encodes");
        let (mut tx, mut rx) = codec_pair(authed);
        let mut out = Vec::new();
        tx.seal(&h, &body, &mut out).expect("seals");
        let mut mutated = out.clone();
        for (i, b) in &edits {
            let idx = i.index(mutated.len());
            mutated[idx] = *b;
        }
        if let Some(c) = cut {
            mutated.truncate(c.index(mutated.len() + 1));
        }
        match rx.open(&mutated) {
            Err(e) => {
                // A typed error with a stable kind.
                prop_assert!(!e.kind().is_empty());
            }
            Ok(p) => {
                // Accepted: either the mutation was a no-op, or (checksum
                // collisions aside, and never with auth) it is still a
                // well-formed packet whose body decodes or is rejected cleanly.
                if authed {
                    prop_assert_eq!(&mutated, &out, "authenticated packet accepted after mutation");
                }
                prop_assert!(p.body.len() + HEADER_LEN <= mutated.len());
                let _ = decode_body::<Msg>(&p.body);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        let mut plain = WireCodec::new();
        let mut authed = WireCodec::with_auth(auth());
        let _ = plain.open(&bytes);
        let _ = authed.open(&bytes);
        let _ = decode_body::<Msg>(&bytes);
    }

    #[test]
    fn body_decoder_never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_body::<Msg>(&bytes);
        let _ = decode_body::<Vec<String>>(&bytes);
        let _ = decode_body::<(u8, Vec<Vec<u64>>)>(&bytes);
    }
}

#[test]
fn oversized_datagram_is_typed() {
    let mut rx = WireCodec::new();
    let big = vec![0u8; MAX_DATAGRAM + 1];
    assert_eq!(rx.open(&big), Err(DecodeError::TooLong(MAX_DATAGRAM + 1)));
}
