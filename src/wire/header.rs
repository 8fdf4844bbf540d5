//! The fixed packet header, parsed smoltcp-style: every field is read from a
//! checked slice of exactly [`HEADER_LEN`] bytes, then turned into a typed
//! [`Header`]. Layout (big-endian, offsets in bytes; also in `docs/wire.md`):
//!
//! | offset | len | field |
//! |---|---|---|
//! | 0 | 2 | magic `"MS"` |
//! | 2 | 1 | version (1) |
//! | 3 | 1 | protocol ([`ProtocolId`]) |
//! | 4 | 1 | flags ([`Flags`]) |
//! | 5 | 1 | key id (0 unless `AUTH`) |
//! | 6 | 2 | reserved, zero |
//! | 8 | 18 | source node ([`NodeId`]) |
//! | 26 | 16 | source incarnation ([`Incarnation`]) |
//! | 42 | 18 | destination node or group |
//! | 60 | 4 | body length |
//! | 64 | 4 | CRC-32 (IEEE) of the datagram with this field zeroed, up to the tag |

use super::error::DecodeError;
use crate::id::{Incarnation, NodeId, ProtocolId};

/// Bytes in the fixed header.
pub const HEADER_LEN: usize = 68;
/// The two magic bytes that open every datagram.
pub const MAGIC: [u8; 2] = *b"MS";
/// The wire version this build speaks.
pub const VERSION: u8 = 1;

pub(crate) const OFF_VERSION: usize = 2;
pub(crate) const OFF_PROTOCOL: usize = 3;
pub(crate) const OFF_FLAGS: usize = 4;
pub(crate) const OFF_KEY_ID: usize = 5;
pub(crate) const OFF_RESERVED: usize = 6;
pub(crate) const OFF_SOURCE: usize = 8;
pub(crate) const OFF_INCARNATION: usize = 26;
pub(crate) const OFF_DESTINATION: usize = 42;
pub(crate) const OFF_LENGTH: usize = 60;
pub(crate) const OFF_CHECKSUM: usize = 64;

/// Header flag bits.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug, Hash)]
pub struct Flags(u8);

impl Flags {
    /// An authentication trailer follows the body.
    pub const AUTH: Flags = Flags(0x01);
    /// Relayed by an mcaster on behalf of `source` (the thesis's extended
    /// header): receivers treat `source` as the sender, never the relay.
    pub const RELAYED: Flags = Flags(0x02);
    const KNOWN: u8 = 0x03;

    /// No flags.
    pub const fn empty() -> Self {
        Flags(0)
    }
    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Parses raw bits, rejecting bits this version does not define.
    pub fn from_bits(bits: u8) -> Result<Self, DecodeError> {
        if bits & !Self::KNOWN != 0 {
            return Err(DecodeError::UnknownFlags(bits));
        }
        Ok(Flags(bits))
    }
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    /// `self` with the bits of `other` set or cleared.
    pub const fn with(self, other: Flags, on: bool) -> Self {
        if on {
            Flags(self.0 | other.0)
        } else {
            Flags(self.0 & !other.0)
        }
    }
}

/// The typed header of one datagram. `key id`, length and checksum are
/// filled in by [`super::WireCodec::seal`] and checked by `open`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Header {
    /// Which layer the body is for.
    pub protocol: ProtocolId,
    /// Whether the packet was relayed (see [`Flags::RELAYED`]). `AUTH` is
    /// managed by the codec and ignored here on encode.
    pub relayed: bool,
    /// The original sender.
    pub source: NodeId,
    /// The original sender's current life.
    pub source_incarnation: Incarnation,
    /// The node or multicast group the packet is addressed to.
    pub destination: NodeId,
}

/// What the header says, before the body and auth are checked.
pub(crate) struct RawHeader {
    pub header: Header,
    pub flags: Flags,
    pub key_id: u8,
    pub body_len: usize,
    pub checksum: u32,
}

impl Header {
    /// Writes the header into `out` (exactly [`HEADER_LEN`] bytes) with the
    /// given flags, key id and body length, and a zero checksum.
    pub(crate) fn write(
        &self,
        flags: Flags,
        key_id: u8,
        body_len: u32,
        out: &mut [u8; HEADER_LEN],
    ) {
        out.fill(0);
        out[..2].copy_from_slice(&MAGIC);
        out[OFF_VERSION] = VERSION;
        out[OFF_PROTOCOL] = self.protocol.as_u8();
        out[OFF_FLAGS] = flags.with(Flags::RELAYED, self.relayed).bits();
        out[OFF_KEY_ID] = key_id;
        let mut node = [0u8; NodeId::WIRE_LEN];
        self.source.write_wire(&mut node);
        out[OFF_SOURCE..OFF_SOURCE + NodeId::WIRE_LEN].copy_from_slice(&node);
        out[OFF_INCARNATION..OFF_INCARNATION + Incarnation::WIRE_LEN]
            .copy_from_slice(&self.source_incarnation.to_bytes());
        self.destination.write_wire(&mut node);
        out[OFF_DESTINATION..OFF_DESTINATION + NodeId::WIRE_LEN].copy_from_slice(&node);
        out[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&body_len.to_be_bytes());
    }

    /// Parses the fixed header of a datagram, checking everything that can be
    /// checked without the body.
    pub(crate) fn parse(bytes: &[u8]) -> Result<RawHeader, DecodeError> {
        let h: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(DecodeError::TooShort(bytes.len()))?;
        if h[..2] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if h[OFF_VERSION] != VERSION {
            return Err(DecodeError::UnsupportedVersion(h[OFF_VERSION]));
        }
        let protocol = ProtocolId::from_u8(h[OFF_PROTOCOL])
            .ok_or(DecodeError::UnknownProtocol(h[OFF_PROTOCOL]))?;
        let flags = Flags::from_bits(h[OFF_FLAGS])?;
        if h[OFF_RESERVED] != 0 || h[OFF_RESERVED + 1] != 0 {
            return Err(DecodeError::ReservedNonZero);
        }
        let source = NodeId::read_wire(&field::<18>(h, OFF_SOURCE));
        let source_incarnation = Incarnation::from_bytes(field::<16>(h, OFF_INCARNATION));
        let destination = NodeId::read_wire(&field::<18>(h, OFF_DESTINATION));
        let body_len = u32::from_be_bytes(field::<4>(h, OFF_LENGTH)) as usize;
        let checksum = u32::from_be_bytes(field::<4>(h, OFF_CHECKSUM));
        Ok(RawHeader {
            header: Header {
                protocol,
                relayed: flags.contains(Flags::RELAYED),
                source,
                source_incarnation,
                destination,
            },
            flags,
            key_id: h[OFF_KEY_ID],
            body_len,
            checksum,
        })
    }
}

/// Copies `N` bytes at `off` out of the (fixed-size) header.
fn field<const N: usize>(h: &[u8; HEADER_LEN], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&h[off..off + N]);
    out
}
