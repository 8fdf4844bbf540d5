//! Sealing and opening whole datagrams: pure functions over bytes that the
//! drivers (the runtime's socket layer, the simulator) call before any
//! protocol core sees a datagram.

use super::auth::{nonce_prefix, AuthConfig, TAG_LEN};
use super::error::{DecodeError, DropCounters, EncodeError};
use super::header::{
    Flags, Header, HEADER_LEN, OFF_CHECKSUM, OFF_FLAGS, OFF_INCARNATION, OFF_SOURCE,
};
use super::limits::{AUTH_TRAILER_LEN, MAX_BODY, MAX_DATAGRAM};
use std::borrow::Cow;

/// A datagram that passed every check: its header and its body (borrowed
/// from the datagram when it travelled in the clear, decrypted into a
/// buffer of its own under a key ring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The typed header.
    pub header: Header,
    /// Whether it carried a valid authentication tag (and was decrypted).
    pub authenticated: bool,
    /// The body bytes in the clear (still bincode-encoded; the protocol
    /// core decodes them).
    pub body: Cow<'a, [u8]>,
}

/// Header bytes 8..42: the source node and its incarnation.
const NONCE_SPAN: std::ops::Range<usize> = OFF_SOURCE..OFF_INCARNATION + 16;

/// One endpoint's codec: seals outbound datagrams and opens inbound ones,
/// with optional authentication and its replay window, and counts drops.
#[derive(Debug, Default)]
pub struct WireCodec {
    auth: Option<AuthConfig>,
    drops: DropCounters,
}

impl WireCodec {
    /// A codec without authentication.
    pub fn new() -> Self {
        WireCodec::default()
    }

    /// A codec that signs and requires authentication with `auth`.
    pub fn with_auth(auth: AuthConfig) -> Self {
        WireCodec {
            auth: Some(auth),
            drops: DropCounters::default(),
        }
    }

    /// The authentication settings, if any (e.g. to rotate the key ring).
    pub fn auth_mut(&mut self) -> Option<&mut AuthConfig> {
        self.auth.as_mut()
    }

    /// Drops counted so far by [`WireCodec::open_counted`].
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Builds a datagram from `header` and `body` into `out` (cleared first).
    pub fn seal(
        &mut self,
        header: &Header,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if body.len() > MAX_BODY {
            return Err(EncodeError::TooLarge {
                len: body.len(),
                limit: MAX_BODY,
            });
        }
        out.clear();
        let mut h = [0u8; HEADER_LEN];
        let (flags, key_id) = match &self.auth {
            Some(a) => (Flags::AUTH, a.ring.signing_key().id()),
            None => (Flags::empty(), 0),
        };
        header.write(flags, key_id, body.len() as u32, &mut h);
        out.extend_from_slice(&h);
        out.extend_from_slice(body);
        let mut tag = None;
        if let Some(a) = &mut self.auth {
            let counter = a.next_counter;
            a.next_counter = a.next_counter.wrapping_add(1).max(1);
            let prefix = nonce_prefix(h[OFF_FLAGS], &h[NONCE_SPAN]);
            let (head, rest) = out.split_at_mut(HEADER_LEN);
            tag = Some(a.ring.seal(&prefix, counter, &head[..OFF_CHECKSUM], rest));
            out.extend_from_slice(&counter.to_be_bytes());
        }
        let crc = crc32fast::hash(out);
        out[OFF_CHECKSUM..OFF_CHECKSUM + 4].copy_from_slice(&crc.to_be_bytes());
        if let Some((_, tag)) = tag {
            out.extend_from_slice(&tag);
        }
        Ok(())
    }

    /// Opens a datagram and counts it in [`WireCodec::drops`] if it is
    /// rejected.
    pub fn open_counted<'a>(&mut self, bytes: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let r = self.open(bytes);
        if let Err(e) = &r {
            self.drops.record(e);
        }
        r
    }

    /// Checks a datagram: length, magic, version, protocol, flags, length
    /// field, checksum, then (when configured) replay window, tag and
    /// decryption (the window records the counter only after the tag
    /// verified).
    pub fn open<'a>(&mut self, bytes: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(DecodeError::TooLong(bytes.len()));
        }
        let raw = Header::parse(bytes)?;
        let has_auth = raw.flags.contains(Flags::AUTH);
        let trailer = if has_auth { AUTH_TRAILER_LEN } else { 0 };
        let expected = HEADER_LEN
            .checked_add(raw.body_len)
            .and_then(|n| n.checked_add(trailer))
            .unwrap_or(usize::MAX);
        if expected != bytes.len() {
            return Err(DecodeError::LengthMismatch {
                declared: raw.body_len,
                actual: bytes.len().saturating_sub(HEADER_LEN + trailer),
            });
        }
        if !has_auth && raw.key_id != 0 {
            return Err(DecodeError::ReservedNonZero);
        }
        let signed_len = bytes.len() - if has_auth { TAG_LEN } else { 0 };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&bytes[..OFF_CHECKSUM]);
        hasher.update(&[0u8; 4]);
        hasher.update(&bytes[OFF_CHECKSUM + 4..signed_len]);
        if hasher.finalize() != raw.checksum {
            return Err(DecodeError::BadChecksum);
        }
        let body = &bytes[HEADER_LEN..HEADER_LEN + raw.body_len];
        let body = match (&mut self.auth, has_auth) {
            (None, false) => Cow::Borrowed(body),
            (None, true) => return Err(DecodeError::UnexpectedAuth),
            (Some(_), false) => return Err(DecodeError::MissingAuth),
            (Some(a), true) => {
                let mut c = [0u8; 8];
                c.copy_from_slice(&bytes[signed_len - 8..signed_len]);
                let counter = u64::from_be_bytes(c);
                let h = &raw.header;
                a.replay.check(h.source, h.source_incarnation, counter)?;
                let prefix = nonce_prefix(bytes[OFF_FLAGS], &bytes[NONCE_SPAN]);
                let mut clear = body.to_vec();
                a.ring.open(
                    raw.key_id,
                    &prefix,
                    counter,
                    &bytes[..OFF_CHECKSUM],
                    &mut clear,
                    &bytes[signed_len..],
                )?;
                a.replay.accept(h.source, h.source_incarnation, counter);
                Cow::Owned(clear)
            }
        };
        Ok(Packet {
            header: raw.header,
            authenticated: has_auth,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Incarnation, NodeId, ProtocolId};
    use crate::wire::{ClusterKey, KeyRing};

    fn header() -> Header {
        Header {
            protocol: ProtocolId::Rpc,
            relayed: false,
            source: NodeId::v4(127, 0, 0, 1, 4000),
            source_incarnation: Incarnation::from_parts(42, [7; 10]),
            destination: NodeId::v4(127, 0, 0, 2, 4000),
        }
    }

    fn auth(keys: &[(u8, u8)]) -> AuthConfig {
        let ring = KeyRing::new(
            keys.iter()
                .map(|(id, fill)| ClusterKey::new(*id, [*fill; 32]).unwrap())
                .collect(),
        )
        .unwrap();
        AuthConfig::new(ring)
    }

    #[test]
    fn plain_roundtrip_and_relayed_flag() {
        let mut c = WireCodec::new();
        let mut out = Vec::new();
        let mut h = header();
        h.relayed = true;
        c.seal(&h, b"body", &mut out).unwrap();
        assert_eq!(out.len(), HEADER_LEN + 4);
        let p = c.open(&out).unwrap();
        assert_eq!(p.header, h);
        assert_eq!(&*p.body, b"body");
        assert!(!p.authenticated);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let mut c = WireCodec::new();
        let mut out = Vec::new();
        c.seal(&header(), b"some body bytes", &mut out).unwrap();
        for i in 0..out.len() * 8 {
            let mut m = out.clone();
            m[i / 8] ^= 1 << (i % 8);
            assert!(c.open(&m).is_err(), "bit {i} flipped but accepted");
        }
    }

    #[test]
    fn auth_roundtrip_replay_and_mismatch() {
        let mut tx = WireCodec::with_auth(auth(&[(1, 1)]));
        let mut rx = WireCodec::with_auth(auth(&[(1, 1)]));
        let mut plain = WireCodec::new();
        let mut out = Vec::new();
        tx.seal(&header(), b"x", &mut out).unwrap();
        assert_eq!(out.len(), HEADER_LEN + 1 + AUTH_TRAILER_LEN);
        let p = rx.open(&out).unwrap();
        assert!(p.authenticated);
        assert_eq!(&*p.body, b"x");
        assert_eq!(rx.open(&out), Err(DecodeError::Replayed));
        assert_eq!(plain.open(&out), Err(DecodeError::UnexpectedAuth));
        let mut p = Vec::new();
        plain.seal(&header(), b"x", &mut p).unwrap();
        assert_eq!(rx.open(&p), Err(DecodeError::MissingAuth));
        // Wrong key: same id, other secret.
        let mut other = WireCodec::with_auth(auth(&[(1, 9)]));
        tx.seal(&header(), b"y", &mut out).unwrap();
        assert_eq!(other.open(&out), Err(DecodeError::BadTag));
        rx.open_counted(&out).unwrap();
        assert_eq!(rx.open_counted(&out), Err(DecodeError::Replayed));
        assert_eq!(rx.drops().get("replayed"), 1);
    }

    #[test]
    fn key_rotation_without_downtime() {
        // Step 1: everyone has old (1) first and new (2) second.
        let mut a = WireCodec::with_auth(auth(&[(1, 1), (2, 2)]));
        let mut b = WireCodec::with_auth(auth(&[(1, 1), (2, 2)]));
        // Step 2: `a` moves the new key first; `b` has not yet.
        a.auth_mut().unwrap().set_ring(auth(&[(2, 2), (1, 1)]).ring);
        let mut out = Vec::new();
        a.seal(&header(), b"r", &mut out).unwrap();
        assert!(b.open(&out).is_ok());
        let mut h = header();
        std::mem::swap(&mut h.source, &mut h.destination);
        b.seal(&h, b"s", &mut out).unwrap();
        assert!(a.open(&out).is_ok());
    }

    #[test]
    fn the_body_is_encrypted_and_every_flip_or_truncation_is_refused() {
        let mut tx = WireCodec::with_auth(auth(&[(1, 1)]));
        let mut out = Vec::new();
        let secret_body = b"a secret body that must not show";
        tx.seal(&header(), secret_body, &mut out).unwrap();
        assert!(
            !out.windows(8).any(|w| w == &secret_body[..8]),
            "body travels encrypted"
        );
        for i in 0..out.len() * 8 {
            let mut rx = WireCodec::with_auth(auth(&[(1, 1)]));
            let mut m = out.clone();
            m[i / 8] ^= 1 << (i % 8);
            assert!(rx.open(&m).is_err(), "bit {i} flipped but accepted");
        }
        for n in 0..out.len() {
            let mut rx = WireCodec::with_auth(auth(&[(1, 1)]));
            assert!(rx.open(&out[..n]).is_err(), "truncated to {n}");
        }
        // A forgery with a valid CRC (an attacker can always recompute
        // it) is refused by the tag, and does not move the replay window.
        let mut rx = WireCodec::with_auth(auth(&[(1, 1)]));
        let mut forged = out.clone();
        forged[HEADER_LEN] ^= 0x55;
        let tag_at = forged.len() - TAG_LEN;
        forged[OFF_CHECKSUM..OFF_CHECKSUM + 4].fill(0);
        let crc = crc32fast::hash(&forged[..tag_at]);
        forged[OFF_CHECKSUM..OFF_CHECKSUM + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(rx.open(&forged), Err(DecodeError::BadTag));
        assert_eq!(&*rx.open(&out).unwrap().body, secret_body);
        // A removed key: the ring no longer opens what it sealed.
        let mut rotated = WireCodec::with_auth(auth(&[(2, 2)]));
        assert_eq!(rotated.open(&out), Err(DecodeError::UnknownKey(1)));
    }

    #[test]
    fn truncations_and_garbage_are_typed_errors() {
        let mut c = WireCodec::new();
        let mut out = Vec::new();
        c.seal(&header(), b"abcdef", &mut out).unwrap();
        for n in 0..out.len() {
            assert!(c.open(&out[..n]).is_err());
        }
        assert_eq!(c.open(&[]), Err(DecodeError::TooShort(0)));
        assert_eq!(
            c.open(&vec![0u8; MAX_DATAGRAM + 1]),
            Err(DecodeError::TooLong(MAX_DATAGRAM + 1))
        );
        assert!(c
            .seal(&header(), &vec![0u8; MAX_BODY + 1], &mut out)
            .is_err());
    }
}
