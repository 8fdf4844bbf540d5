//! Prints the cost of sealing and opening a 64-byte datagram with and
//! without a key ring (a quick check, `cargo test --release --test seal_cost -- --nocapture`).
#![allow(clippy::disallowed_methods)]
use membership::id::{Incarnation, NodeId, ProtocolId};
use membership::wire::{AuthConfig, ClusterKey, Header, KeyRing, WireCodec};

#[test]
fn seal_and_open_cost() {
    let h = Header {
        protocol: ProtocolId::Rpc,
        relayed: false,
        source: NodeId::v4(127, 0, 0, 1, 1),
        source_incarnation: Incarnation::from_parts(1, [1; 10]),
        destination: NodeId::v4(127, 0, 0, 2, 2),
    };
    let ring = || KeyRing::new(vec![ClusterKey::new(1, [7u8; 32]).expect("key")]).expect("ring");
    for keyed in [false, true] {
        let (mut tx, mut rx) = if keyed {
            (
                WireCodec::with_auth(AuthConfig::new(ring())),
                WireCodec::with_auth(AuthConfig::new(ring())),
            )
        } else {
            (WireCodec::new(), WireCodec::new())
        };
        let body = [0x42u8; 64];
        let mut out = Vec::new();
        let n = 20_000u32;
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            tx.seal(&h, &body, &mut out).expect("seal");
            let p = rx.open(&out).expect("open");
            assert_eq!(p.body.len(), 64);
        }
        eprintln!("keyed {keyed}: {:?} per seal+open", t0.elapsed() / n);
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            tx.seal(&h, &body, &mut out).expect("seal");
        }
        eprintln!("keyed {keyed}: {:?} per seal", t0.elapsed() / n);
    }
}
