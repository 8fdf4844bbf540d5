//! Optional authentication of every datagram with a cluster key ring, and
//! replay protection (DESIGN.md section 4).
//!
//! - **Key ring.** A list of [`ClusterKey`]s, each with a one-byte id. The
//!   first key signs; any key in the ring verifies (looked up by the id in the
//!   header). To rotate: add the new key second everywhere, then move it
//!   first everywhere, then remove the old one; no restart, no downtime.
//! - **Tag.** HMAC-SHA256 over the whole datagram up to the tag (header with
//!   its checksum, body, counter), truncated to 16 bytes, compared in
//!   constant time.
//! - **Replay.** Every sealed datagram carries a counter that starts at 1 for
//!   each incarnation and increases by one per datagram. [`ReplayWindow`]
//!   keeps, per source address, the newest incarnation seen and a 1024-wide
//!   sliding window of counters: a counter seen before or older than the
//!   window is `Replayed`; a datagram from an older incarnation of the same
//!   address is `StaleIncarnation`. The window remembers at most
//!   [`ReplayWindow::MAX_SENDERS`] addresses and forgets the least recently
//!   heard first; replay checks only run on authenticated datagrams, since
//!   without a key anyone can forge a counter.

use super::error::DecodeError;
use crate::id::{Incarnation, NodeId};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;

type HmacSha256 = Hmac<Sha256>;

/// Length of the truncated tag.
pub const TAG_LEN: usize = 16;
/// Shortest secret accepted for a cluster key.
pub const MIN_SECRET_LEN: usize = 16;

/// One key of the cluster key ring.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey {
    id: u8,
    secret: Vec<u8>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        write!(
            f,
            "ClusterKey {{ id: {}, secret: <{} bytes> }}",
            self.id,
            self.secret.len()
        )
    }
}

/// Why a key could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Key id 0 means "no key" on the wire.
    #[error("key id 0 is reserved; use 1-255")]
    ZeroId,
    /// Secret shorter than [`MIN_SECRET_LEN`].
    #[error("secret is {0} bytes; at least {MIN_SECRET_LEN} are required")]
    TooShort(usize),
    /// Not of the form `ID:HEX`.
    #[error("expected ID:HEXSECRET (e.g. 1:00112233445566778899aabbccddeeff), got {0:?}")]
    Syntax(String),
    /// Two keys with one id.
    #[error("key id {0} appears twice in the key ring")]
    DuplicateId(u8),
    /// An empty ring.
    #[error("the key ring is empty")]
    Empty,
}

impl ClusterKey {
    /// A key with id `id` (1-255) and a secret of at least 16 bytes.
    pub fn new(id: u8, secret: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let secret = secret.into();
        if id == 0 {
            return Err(KeyError::ZeroId);
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::TooShort(secret.len()));
        }
        Ok(ClusterKey { id, secret })
    }

    /// Parses `ID:HEXSECRET`, the form used in configuration files.
    pub fn parse(spec: &str) -> Result<Self, KeyError> {
        let (id, hex_secret) = spec
            .split_once(':')
            .ok_or_else(|| KeyError::Syntax(redact(spec)))?;
        let id: u8 = id
            .trim()
            .parse()
            .map_err(|_| KeyError::Syntax(redact(spec)))?;
        let secret = hex::decode(hex_secret.trim()).map_err(|_| KeyError::Syntax(redact(spec)))?;
        ClusterKey::new(id, secret)
    }

    /// The key id carried in the header.
    pub fn id(&self) -> u8 {
        self.id
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        match HmacSha256::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }
}

fn redact(spec: &str) -> String {
    match spec.split_once(':') {
        Some((id, _)) => format!("{id}:<redacted>"),
        None => "<redacted>".to_string(),
    }
}

/// The cluster key ring: the first key signs, every key verifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<ClusterKey>,
}

impl KeyRing {
    /// A ring of at least one key with distinct ids; the first signs.
    pub fn new(keys: Vec<ClusterKey>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut seen = [false; 256];
        for k in &keys {
            if std::mem::replace(&mut seen[k.id as usize], true) {
                return Err(KeyError::DuplicateId(k.id));
            }
        }
        Ok(KeyRing { keys })
    }

    /// The signing key.
    pub fn signing_key(&self) -> &ClusterKey {
        &self.keys[0]
    }

    /// The key with this id, if the ring holds it.
    pub fn key(&self, id: u8) -> Option<&ClusterKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Computes the truncated tag of `data` with the signing key.
    pub(crate) fn sign(&self, data: &[u8]) -> (u8, [u8; TAG_LEN]) {
        let key = self.signing_key();
        let mut mac = key.mac();
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        (key.id, tag)
    }

    /// Verifies `tag` over `data` with key `id`, in constant time.
    pub(crate) fn verify(&self, id: u8, data: &[u8], tag: &[u8]) -> Result<(), DecodeError> {
        let key = self.key(id).ok_or(DecodeError::UnknownKey(id))?;
        let mut mac = key.mac();
        mac.update(data);
        mac.verify_truncated_left(tag)
            .map_err(|_| DecodeError::BadTag)
    }
}

/// Authentication settings of one endpoint: the key ring and the counter of
/// the datagrams it has sealed.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// The cluster key ring.
    pub ring: KeyRing,
    pub(crate) next_counter: u64,
    pub(crate) replay: ReplayWindow,
}

impl AuthConfig {
    /// Authentication with `ring`, counters from 1.
    pub fn new(ring: KeyRing) -> Self {
        AuthConfig {
            ring,
            next_counter: 1,
            replay: ReplayWindow::default(),
        }
    }

    /// Replaces the key ring (rotation) without resetting counters or the
    /// replay window.
    pub fn set_ring(&mut self, ring: KeyRing) {
        self.ring = ring;
    }
}

const WINDOW_BITS: u64 = 1024;
const WINDOW_WORDS: usize = (WINDOW_BITS / 64) as usize;

#[derive(Clone, Debug)]
struct SenderWindow {
    incarnation: Incarnation,
    /// Highest counter accepted.
    highest: u64,
    /// Bit i set: counter `highest - i` was accepted.
    bits: [u64; WINDOW_WORDS],
    last_heard: u64,
}

impl SenderWindow {
    fn new(incarnation: Incarnation, tick: u64) -> Self {
        SenderWindow {
            incarnation,
            highest: 0,
            bits: [0; WINDOW_WORDS],
            last_heard: tick,
        }
    }

    fn get(&self, offset: u64) -> bool {
        let (w, b) = ((offset / 64) as usize, offset % 64);
        self.bits[w] & (1 << b) != 0
    }

    fn set(&mut self, offset: u64) {
        let (w, b) = ((offset / 64) as usize, offset % 64);
        self.bits[w] |= 1 << b;
    }

    fn shift(&mut self, by: u64) {
        if by >= WINDOW_BITS {
            self.bits = [0; WINDOW_WORDS];
            return;
        }
        // Shift the whole bit array towards higher offsets by `by`.
        let words = (by / 64) as usize;
        let bits = by % 64;
        for i in (0..WINDOW_WORDS).rev() {
            let src = i.checked_sub(words);
            let hi = src.map(|s| self.bits[s]).unwrap_or(0);
            let lo = src
                .and_then(|s| s.checked_sub(1))
                .map(|s| self.bits[s])
                .unwrap_or(0);
            self.bits[i] = if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (64 - bits))
            };
        }
    }

    /// Checks a counter without recording it.
    fn check(&self, counter: u64) -> Result<(), DecodeError> {
        if counter == 0 {
            return Err(DecodeError::Replayed);
        }
        if counter > self.highest {
            return Ok(());
        }
        let offset = self.highest - counter;
        if offset >= WINDOW_BITS || self.get(offset) {
            return Err(DecodeError::Replayed);
        }
        Ok(())
    }

    fn record(&mut self, counter: u64) {
        if counter > self.highest {
            self.shift(counter - self.highest);
            self.highest = counter;
            self.set(0);
        } else {
            self.set(self.highest - counter);
        }
    }
}

/// Per-sender replay windows (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    senders: BTreeMap<NodeId, SenderWindow>,
    tick: u64,
}

impl ReplayWindow {
    /// Addresses remembered at most; the least recently heard is forgotten
    /// first.
    pub const MAX_SENDERS: usize = 4096;

    /// Checks a datagram's counter; call [`ReplayWindow::accept`] only after
    /// its tag verified, so forgeries cannot move the window.
    pub fn check(&self, source: NodeId, inc: Incarnation, counter: u64) -> Result<(), DecodeError> {
        match self.senders.get(&source) {
            None => {
                if counter == 0 {
                    Err(DecodeError::Replayed)
                } else {
                    Ok(())
                }
            }
            Some(w) if inc < w.incarnation => Err(DecodeError::StaleIncarnation),
            Some(w) if inc > w.incarnation => {
                if counter == 0 {
                    Err(DecodeError::Replayed)
                } else {
                    Ok(())
                }
            }
            Some(w) => w.check(counter),
        }
    }

    /// Records an authenticated datagram's counter (after [`Self::check`]).
    pub fn accept(&mut self, source: NodeId, inc: Incarnation, counter: u64) {
        self.tick += 1;
        let tick = self.tick;
        if !self.senders.contains_key(&source) && self.senders.len() >= Self::MAX_SENDERS {
            if let Some(oldest) = self
                .senders
                .iter()
                .min_by_key(|(_, w)| w.last_heard)
                .map(|(k, _)| *k)
            {
                self.senders.remove(&oldest);
            }
        }
        let w = self
            .senders
            .entry(source)
            .or_insert_with(|| SenderWindow::new(inc, tick));
        if inc > w.incarnation {
            *w = SenderWindow::new(inc, tick);
        }
        w.last_heard = tick;
        w.record(counter);
    }

    /// How many senders are remembered.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether no sender is remembered.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(n: u64) -> Incarnation {
        Incarnation::from_parts(n, [0; 10])
    }

    #[test]
    fn key_parsing() {
        let k = ClusterKey::parse("3:00112233445566778899aabbccddeeff").unwrap();
        assert_eq!(k.id(), 3);
        assert_eq!(
            ClusterKey::parse("0:00112233445566778899aabbccddeeff"),
            Err(KeyError::ZeroId)
        );
        assert_eq!(ClusterKey::parse("1:0011"), Err(KeyError::TooShort(2)));
        assert!(matches!(
            ClusterKey::parse("nonsense"),
            Err(KeyError::Syntax(_))
        ));
        assert!(matches!(
            ClusterKey::parse("1:zz"),
            Err(KeyError::Syntax(_))
        ));
        // Secrets never appear in errors or Debug output.
        let e = ClusterKey::parse("x:deadbeefdeadbeefdeadbeefdeadbeef").unwrap_err();
        assert!(!e.to_string().contains("deadbeef"));
        assert!(!format!("{k:?}").contains("0011"));
    }

    #[test]
    fn ring_rejects_duplicates_and_empty() {
        let a = ClusterKey::new(1, [1u8; 16]).unwrap();
        assert_eq!(KeyRing::new(vec![]), Err(KeyError::Empty));
        assert_eq!(
            KeyRing::new(vec![a.clone(), a]),
            Err(KeyError::DuplicateId(1))
        );
    }

    #[test]
    fn any_key_verifies_first_signs() {
        let old = ClusterKey::new(1, [1u8; 16]).unwrap();
        let new = ClusterKey::new(2, [2u8; 16]).unwrap();
        let signer = KeyRing::new(vec![new.clone(), old.clone()]).unwrap();
        let verifier_old_first = KeyRing::new(vec![old.clone(), new]).unwrap();
        let verifier_old_only = KeyRing::new(vec![old]).unwrap();
        let (id, tag) = signer.sign(b"hello");
        assert_eq!(id, 2);
        assert!(verifier_old_first.verify(id, b"hello", &tag).is_ok());
        assert_eq!(
            verifier_old_only.verify(id, b"hello", &tag),
            Err(DecodeError::UnknownKey(2))
        );
        assert_eq!(
            verifier_old_first.verify(id, b"hellO", &tag),
            Err(DecodeError::BadTag)
        );
    }

    #[test]
    fn replay_window_semantics() {
        let n = NodeId::v4(127, 0, 0, 1, 1);
        let mut w = ReplayWindow::default();
        for c in [5u64, 1, 3, 2000, 1500] {
            assert!(w.check(n, inc(1), c).is_ok(), "{c}");
            w.accept(n, inc(1), c);
        }
        for c in [5u64, 1, 3, 2000, 1500] {
            assert_eq!(w.check(n, inc(1), c), Err(DecodeError::Replayed), "{c}");
        }
        // 5 is now more than 1024 behind 2000: too old.
        assert_eq!(w.check(n, inc(1), 6), Err(DecodeError::Replayed));
        assert!(w.check(n, inc(1), 1999).is_ok());
        assert_eq!(w.check(n, inc(1), 0), Err(DecodeError::Replayed));
        // A newer incarnation starts afresh; an older one is stale.
        assert!(w.check(n, inc(2), 1).is_ok());
        w.accept(n, inc(2), 1);
        assert_eq!(w.check(n, inc(1), 2001), Err(DecodeError::StaleIncarnation));
    }

    #[test]
    fn replay_window_shift_is_exact() {
        let n = NodeId::v4(127, 0, 0, 1, 1);
        let mut w = ReplayWindow::default();
        // Accept every odd counter up to 300, then every even one must still pass.
        for c in (1..=300u64).step_by(2) {
            w.accept(n, inc(1), c);
        }
        for c in (2..=300u64).step_by(2) {
            assert!(w.check(n, inc(1), c).is_ok(), "{c}");
        }
        for c in (1..=299u64).step_by(2) {
            assert!(w.check(n, inc(1), c).is_err(), "{c}");
        }
    }

    #[test]
    fn replay_window_is_bounded() {
        let mut w = ReplayWindow::default();
        for i in 0..(ReplayWindow::MAX_SENDERS as u32 + 10) {
            let n = NodeId::v4(127, 0, (i >> 8) as u8, i as u8, (i >> 16) as u16 + 1);
            w.accept(n, inc(1), 1);
        }
        assert_eq!(w.len(), ReplayWindow::MAX_SENDERS);
    }
}
