//! Key rotation through the core-set (`msctl keys`, Serf's `keys` over our
//! own change protocol): `install` adds a key to every member's ring,
//! `use` makes it the signing key, `remove` drops a key (never the
//! signing one). Each is a [`KeyOp`] committed as an application change of
//! the core-set ([`crate::coreset::CoreSet::submit_app`], marked with
//! [`KEY_OP_MAGIC`] so the application-group layer never sees it): every
//! member applies it at the same commit position, in the same order, to
//! the same ring. Like every datagram under a ring, the op (and the new
//! secret in it) travels encrypted under the current signing key.

use crate::wire::{decode_body, encode_body, ClusterKey, KeyError, KeyRing};
use serde::{Deserialize, Serialize};

/// `keys`: list or change the cluster key ring. Request: [`KeysRequest`];
/// reply: [`KeysReply`] (for a change: once it committed here).
pub const PROC_KEYS: u16 = 5;

/// The prefix that marks a core-set application payload as a [`KeyOp`].
pub const KEY_OP_MAGIC: &[u8; 8] = b"\xffMSKEYS1";

/// What `msctl keys` asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeysRequest {
    /// This mserver's ring.
    List,
    /// A change of every member's ring.
    Change(KeyOp),
}

/// A change of the ring, committed by the core-set.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyOp {
    /// Add a key (`ID:HEX`) as a verifying key.
    Install(String),
    /// Make key `id` the signing (primary) key.
    Use(u8),
    /// Remove key `id` (not the primary).
    Remove(u8),
}

impl std::fmt::Debug for KeyOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOp::Install(spec) => match spec.split_once(':') {
                Some((id, _)) => write!(f, "Install({}:<redacted>)", id.trim()),
                None => f.write_str("Install(<redacted>)"),
            },
            KeyOp::Use(id) => write!(f, "Use({id})"),
            KeyOp::Remove(id) => write!(f, "Remove({id})"),
        }
    }
}

impl KeyOp {
    /// The ring after this op.
    pub fn apply(&self, ring: &KeyRing) -> Result<KeyRing, KeyError> {
        match self {
            KeyOp::Install(spec) => ring.with_installed(ClusterKey::parse(spec)?),
            KeyOp::Use(id) => ring.with_primary(*id),
            KeyOp::Remove(id) => ring.without(*id),
        }
    }

    /// The core-set payload carrying this op.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = KEY_OP_MAGIC.to_vec();
        if let Ok(body) = encode_body(self) {
            out.extend_from_slice(&body);
        }
        out
    }

    /// The op in a core-set payload, if it is one.
    pub fn from_payload(payload: &[u8]) -> Option<KeyOp> {
        let body = payload.strip_prefix(&KEY_OP_MAGIC[..])?;
        decode_body(body).ok()
    }

    /// Whether a payload is marked as a key op (even an unreadable one).
    pub fn is_key_payload(payload: &[u8]) -> bool {
        payload.starts_with(&KEY_OP_MAGIC[..])
    }
}

/// One key as `msctl keys list` shows it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key id.
    pub id: u8,
    /// Whether it signs.
    pub primary: bool,
}

/// The reply to `keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysReply {
    /// `None`: done; otherwise why it was refused.
    pub error: Option<String>,
    /// The answering mserver.
    pub member: String,
    /// Its view number.
    pub view: u64,
    /// Its commit sequence within the view.
    pub commit: u64,
    /// Its ring, the primary first (empty: no ring).
    pub keys: Vec<KeyInfo>,
}

/// The key list of a ring.
pub fn key_infos(ring: Option<&KeyRing>) -> Vec<KeyInfo> {
    match ring {
        None => Vec::new(),
        Some(r) => r
            .ids()
            .into_iter()
            .enumerate()
            .map(|(i, id)| KeyInfo {
                id,
                primary: i == 0,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_garbage_is_none() {
        for op in [
            KeyOp::Install("2:00112233445566778899aabbccddeeff".into()),
            KeyOp::Use(2),
            KeyOp::Remove(1),
        ] {
            let p = op.to_payload();
            assert!(KeyOp::is_key_payload(&p));
            assert_eq!(KeyOp::from_payload(&p), Some(op));
        }
        assert_eq!(KeyOp::from_payload(b"\xffMSKEYS1\xff\xff"), None);
        assert_eq!(KeyOp::from_payload(b"other"), None);
        assert!(!format!("{:?}", KeyOp::Install("2:0011aabb".into())).contains("aabb"));
    }

    #[test]
    fn ops_apply_to_rings() {
        let ring = KeyRing::new(vec![ClusterKey::new(1, [1u8; 16]).expect("key")]).expect("ring");
        let spec = ClusterKey::new(2, [2u8; 16]).expect("key").to_spec();
        let r = KeyOp::Install(spec).apply(&ring).expect("install");
        let r = KeyOp::Use(2).apply(&r).expect("use");
        assert!(KeyOp::Remove(2).apply(&r).is_err(), "primary");
        let r = KeyOp::Remove(1).apply(&r).expect("remove");
        assert_eq!(r.ids(), vec![2]);
        assert_eq!(
            key_infos(Some(&r)),
            vec![KeyInfo {
                id: 2,
                primary: true
            }]
        );
        assert!(KeyOp::Install("junk".into()).apply(&r).is_err());
    }
}
