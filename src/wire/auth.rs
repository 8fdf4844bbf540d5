//! Optional authentication of every datagram with a cluster key ring, and
//! replay protection (DESIGN.md section 4).
//!
//! - **Key ring.** A list of [`ClusterKey`]s, each with a one-byte id. The
//!   first key signs; any key in the ring verifies (looked up by the id in the
//!   header). To rotate: add the new key second everywhere, then move it
//!   first everywhere, then remove the old one; no restart, no downtime.
//! - **Seal.** XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`, an AEAD):
//!   the body is encrypted, the header (all of it but the checksum) is the
//!   associated data, and the 16-byte Poly1305 tag closes the datagram. The
//!   cipher key is derived from the configured secret with HMAC-SHA256
//!   (`HMAC(secret, "membership-service wire aead v1")`). The 24-byte nonce
//!   is `SHA-256(flags | source | incarnation)[..16] | counter`: unique per
//!   key as long as no sender reuses a counter within one incarnation
//!   (counters start at 1 for each incarnation and only grow).
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
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

type HmacSha256 = Hmac<Sha256>;

/// Length of the AEAD tag (Poly1305).
pub const TAG_LEN: usize = 16;
/// Length of the AEAD nonce (XChaCha20).
pub const NONCE_LEN: usize = 24;
/// The label the cipher key is derived with.
const KDF_LABEL: &[u8] = b"membership-service wire aead v1";
/// Shortest secret accepted for a cluster key.
pub const MIN_SECRET_LEN: usize = 16;

/// One key of the cluster key ring: an id, the configured secret and the
/// AEAD cipher derived from it.
#[derive(Clone)]
pub struct ClusterKey {
    id: u8,
    secret: Vec<u8>,
    cipher: XChaCha20Poly1305,
}

impl PartialEq for ClusterKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.id == other.id && bool::from(self.secret.ct_eq(&other.secret))
    }
}

impl Eq for ClusterKey {}

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
    /// A key id the ring does not hold.
    #[error("key {0} is not in the key ring")]
    NotInRing(u8),
    /// The signing (primary) key cannot be removed.
    #[error("key {0} is the primary key and cannot be removed; `keys use` another key first")]
    RemovePrimary(u8),
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
        let mut kdf = match <HmacSha256 as Mac>::new_from_slice(&secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        kdf.update(KDF_LABEL);
        let derived = kdf.finalize().into_bytes();
        let cipher = XChaCha20Poly1305::new(&derived);
        Ok(ClusterKey { id, secret, cipher })
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

    /// The key as `ID:HEX`, the form [`ClusterKey::parse`] reads: what a
    /// key-ring file holds and what `keys install` carries (encrypted, as
    /// every datagram under a ring). Never log it.
    pub fn to_spec(&self) -> String {
        format!("{}:{}", self.id, hex::encode(&self.secret))
    }
}

/// The nonce of a datagram: a digest of the flags byte, the source and its
/// incarnation (`prefix_input`: header bytes 4 and 8..42), then the counter.
pub(crate) fn nonce_prefix(flags: u8, source_and_incarnation: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"ms-nonce");
    h.update([flags]);
    h.update(source_and_incarnation);
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

fn nonce(prefix: &[u8; 16], counter: u64) -> XNonce {
    let mut n = [0u8; NONCE_LEN];
    n[..16].copy_from_slice(prefix);
    n[16..].copy_from_slice(&counter.to_be_bytes());
    XNonce::from(n)
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

    /// Every key, the signing key first.
    pub fn keys(&self) -> &[ClusterKey] {
        &self.keys
    }

    /// The key ids, the signing key's first.
    pub fn ids(&self) -> Vec<u8> {
        self.keys.iter().map(|k| k.id).collect()
    }

    /// This ring with `key` added last (a verifying key). Installing a key
    /// the ring already holds with the same secret changes nothing; the
    /// same id with another secret is refused.
    pub fn with_installed(&self, key: ClusterKey) -> Result<KeyRing, KeyError> {
        match self.key(key.id) {
            Some(k) if *k == key => Ok(self.clone()),
            Some(_) => Err(KeyError::DuplicateId(key.id)),
            None => {
                let mut keys = self.keys.clone();
                keys.push(key);
                KeyRing::new(keys)
            }
        }
    }

    /// This ring with key `id` made the signing key.
    pub fn with_primary(&self, id: u8) -> Result<KeyRing, KeyError> {
        let pos = self
            .keys
            .iter()
            .position(|k| k.id == id)
            .ok_or(KeyError::NotInRing(id))?;
        let mut keys = self.keys.clone();
        let k = keys.remove(pos);
        keys.insert(0, k);
        KeyRing::new(keys)
    }

    /// This ring without key `id`; the signing key cannot be removed.
    pub fn without(&self, id: u8) -> Result<KeyRing, KeyError> {
        if self.signing_key().id == id {
            return Err(KeyError::RemovePrimary(id));
        }
        if self.key(id).is_none() {
            return Err(KeyError::NotInRing(id));
        }
        KeyRing::new(self.keys.iter().filter(|k| k.id != id).cloned().collect())
    }

    /// Encrypts `body` in place with the signing key; `aad` is the
    /// associated data (the header without its checksum). Returns the key
    /// id and the tag.
    pub(crate) fn seal(
        &self,
        prefix: &[u8; 16],
        counter: u64,
        aad: &[u8],
        body: &mut [u8],
    ) -> (u8, [u8; TAG_LEN]) {
        let key = self.signing_key();
        let tag = match key
            .cipher
            .encrypt_in_place_detached(&nonce(prefix, counter), aad, body)
        {
            Ok(t) => t,
            // Only for buffers beyond 256 GiB; datagrams are < 64 KiB.
            Err(_) => unreachable!("XChaCha20-Poly1305 seals any datagram-sized buffer"),
        };
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag);
        (key.id, out)
    }

    /// Decrypts `body` in place with key `id` if `tag` verifies over it and
    /// `aad` (constant time); on failure `body` is unspecified.
    pub(crate) fn open(
        &self,
        id: u8,
        prefix: &[u8; 16],
        counter: u64,
        aad: &[u8],
        body: &mut [u8],
        tag: &[u8],
    ) -> Result<(), DecodeError> {
        let key = self.key(id).ok_or(DecodeError::UnknownKey(id))?;
        if tag.len() != TAG_LEN {
            return Err(DecodeError::BadTag);
        }
        key.cipher
            .decrypt_in_place_detached(&nonce(prefix, counter), aad, body, Tag::from_slice(tag))
            .map_err(|_| DecodeError::BadTag)
    }
}

/// A key ring as one daemon hands it to another (the mserver to its
/// member interfaces and its mcaster after `msctl keys` committed): every
/// key as `ID:HEX`, the signing key first. It only travels inside sealed
/// datagrams (so encrypted under the sender's signing key); its `Debug`
/// output never shows a secret. Decoding is bounded like every body, and
/// [`SharedRing::ring`] checks it as a ring (at most 255 keys, distinct
/// ids, every secret long enough).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SharedRing(Vec<String>);

impl SharedRing {
    /// The ring `ring`, to send.
    pub fn of(ring: &KeyRing) -> Self {
        SharedRing(ring.keys().iter().map(ClusterKey::to_spec).collect())
    }

    /// The ring it carries, checked.
    pub fn ring(&self) -> Result<KeyRing, KeyError> {
        if self.0.len() > 255 {
            return Err(KeyError::Syntax(format!("{} keys", self.0.len())));
        }
        let keys = self
            .0
            .iter()
            .map(|s| ClusterKey::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        KeyRing::new(keys)
    }

    /// The key ids it carries, the signing key's first (no secret).
    pub fn ids(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|s| s.split_once(':').map_or("?", |(id, _)| id).to_string())
            .collect()
    }
}

impl std::fmt::Debug for SharedRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedRing(ids {:?})", self.ids())
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
    fn shared_rings_round_trip_checked_and_redacted() {
        let ring = KeyRing::new(vec![
            ClusterKey::new(2, [0xabu8; 16]).unwrap(),
            ClusterKey::new(1, [0xcdu8; 16]).unwrap(),
        ])
        .unwrap();
        let shared = SharedRing::of(&ring);
        let bytes = crate::wire::encode_body(&shared).unwrap();
        let back: SharedRing = crate::wire::decode_body(&bytes).unwrap();
        assert_eq!(back.ring().unwrap(), ring);
        assert_eq!(back.ids(), vec!["2", "1"]);
        let dbg = format!("{back:?}");
        assert!(!dbg.contains("abab") && !dbg.contains("cdcd"), "{dbg}");
        // Not a ring: empty, duplicate ids, short or unreadable secrets.
        assert_eq!(SharedRing(vec![]).ring(), Err(KeyError::Empty));
        let dup = SharedRing(vec![ring.keys()[0].to_spec(), ring.keys()[0].to_spec()]);
        assert_eq!(dup.ring(), Err(KeyError::DuplicateId(2)));
        assert!(SharedRing(vec!["1:00".into()]).ring().is_err());
        assert!(SharedRing(vec!["junk".into()]).ring().is_err());
        assert!(SharedRing(vec!["1:00".into(); 300]).ring().is_err());
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
    fn any_key_opens_first_seals() {
        let old = ClusterKey::new(1, [1u8; 16]).unwrap();
        let new = ClusterKey::new(2, [2u8; 16]).unwrap();
        let signer = KeyRing::new(vec![new.clone(), old.clone()]).unwrap();
        let verifier_old_first = KeyRing::new(vec![old.clone(), new]).unwrap();
        let verifier_old_only = KeyRing::new(vec![old]).unwrap();
        let prefix = nonce_prefix(1, b"src");
        let mut body = *b"hello";
        let (id, tag) = signer.seal(&prefix, 1, b"aad", &mut body);
        assert_eq!(id, 2);
        assert_ne!(&body, b"hello", "encrypted");
        let mut b = body;
        assert!(verifier_old_first
            .open(id, &prefix, 1, b"aad", &mut b, &tag)
            .is_ok());
        assert_eq!(&b, b"hello");
        let mut b = body;
        assert_eq!(
            verifier_old_only.open(id, &prefix, 1, b"aad", &mut b, &tag),
            Err(DecodeError::UnknownKey(2))
        );
        for (aad, counter) in [(&b"aaD"[..], 1), (&b"aad"[..], 2)] {
            let mut b = body;
            assert_eq!(
                verifier_old_first.open(id, &prefix, counter, aad, &mut b, &tag),
                Err(DecodeError::BadTag)
            );
        }
    }

    #[test]
    fn ring_edits() {
        let a = ClusterKey::new(1, [1u8; 16]).unwrap();
        let b = ClusterKey::new(2, [2u8; 16]).unwrap();
        let r = KeyRing::new(vec![a.clone()]).unwrap();
        let r2 = r.with_installed(b.clone()).unwrap();
        assert_eq!(r2.ids(), vec![1, 2]);
        assert_eq!(r2.with_installed(b).unwrap(), r2, "idempotent");
        assert_eq!(
            r2.with_installed(ClusterKey::new(2, [9u8; 16]).unwrap()),
            Err(KeyError::DuplicateId(2))
        );
        let r3 = r2.with_primary(2).unwrap();
        assert_eq!(r3.ids(), vec![2, 1]);
        assert_eq!(r3.without(2), Err(KeyError::RemovePrimary(2)));
        assert_eq!(r3.without(7), Err(KeyError::NotInRing(7)));
        assert_eq!(r3.without(1).unwrap().ids(), vec![2]);
        assert_eq!(r.with_primary(5), Err(KeyError::NotInRing(5)));
        assert_eq!(ClusterKey::parse(&a.to_spec()).unwrap(), a);
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
