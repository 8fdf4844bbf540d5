//! Typed errors for everything that can be wrong with a datagram, and the
//! counters that record each dropped packet by kind.

use std::collections::BTreeMap;
use thiserror::Error;

/// Why an inbound datagram was rejected. Every variant is a drop: the caller
/// counts it (see [`DropCounters`]) and moves on; none changes protocol state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    #[error("datagram of {0} bytes is shorter than the header")]
    TooShort(usize),
    /// More bytes than the largest datagram we accept.
    #[error("datagram of {0} bytes exceeds the maximum")]
    TooLong(usize),
    /// The first two bytes are not the protocol magic.
    #[error("bad magic")]
    BadMagic,
    /// A version this build does not speak.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// A protocol number nobody registered.
    #[error("unknown protocol {0}")]
    UnknownProtocol(u8),
    /// Flag bits this version does not define.
    #[error("unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    /// Reserved header bytes are not zero.
    #[error("reserved header bytes are not zero")]
    ReservedNonZero,
    /// The declared body length does not match the datagram.
    #[error("declared length {declared} does not match {actual} bytes present")]
    LengthMismatch {
        /// What the header says.
        declared: usize,
        /// What arrived.
        actual: usize,
    },
    /// The CRC-32 over the datagram does not match.
    #[error("checksum mismatch")]
    BadChecksum,
    /// A cluster key is configured but the datagram carries no tag.
    #[error("missing authentication")]
    MissingAuth,
    /// The datagram carries a tag but no cluster key is configured here.
    #[error("authenticated datagram but no cluster key configured")]
    UnexpectedAuth,
    /// The tag names a key id our key ring does not hold.
    #[error("unknown key id {0}")]
    UnknownKey(u8),
    /// The tag does not verify.
    #[error("authentication tag does not verify")]
    BadTag,
    /// The counter was already seen from this sender, or is too old.
    #[error("replayed or too old")]
    Replayed,
    /// The sender's incarnation is older than one already seen from its address.
    #[error("stale incarnation")]
    StaleIncarnation,
    /// The body did not decode.
    #[error("body: {0}")]
    Body(#[from] BodyError),
}

impl DecodeError {
    /// A short stable name for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TooShort(_) => "too_short",
            DecodeError::TooLong(_) => "too_long",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::UnsupportedVersion(_) => "bad_version",
            DecodeError::UnknownProtocol(_) => "unknown_protocol",
            DecodeError::UnknownFlags(_) => "unknown_flags",
            DecodeError::ReservedNonZero => "reserved_nonzero",
            DecodeError::LengthMismatch { .. } => "length_mismatch",
            DecodeError::BadChecksum => "bad_checksum",
            DecodeError::MissingAuth => "missing_auth",
            DecodeError::UnexpectedAuth => "unexpected_auth",
            DecodeError::UnknownKey(_) => "unknown_key",
            DecodeError::BadTag => "bad_tag",
            DecodeError::Replayed => "replayed",
            DecodeError::StaleIncarnation => "stale_incarnation",
            DecodeError::Body(_) => "bad_body",
        }
    }
}

/// A body that bincode could not decode within its limits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BodyError {
    /// Larger than the limit for this kind of body.
    #[error("body of {len} bytes exceeds limit {limit}")]
    TooLarge {
        /// Bytes present.
        len: usize,
        /// Bytes allowed.
        limit: usize,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// A valid value followed by extra bytes.
    #[error("{0} trailing bytes after body")]
    TrailingBytes(usize),
}

/// Why an outbound packet could not be built (a bug in the caller, or a body
/// too large for one datagram).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The body does not fit in one datagram.
    #[error("body of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// Bytes allowed.
        limit: usize,
    },
    /// serde/bincode refused the value.
    #[error("encode: {0}")]
    Encode(String),
}

/// Counts of dropped packets by [`DecodeError::kind`], plus the total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounters {
    by_kind: BTreeMap<&'static str, u64>,
    total: u64,
}

impl DropCounters {
    /// Records one dropped packet.
    pub fn record(&mut self, err: &DecodeError) {
        *self.by_kind.entry(err.kind()).or_insert(0) += 1;
        self.total += 1;
    }

    /// Records a drop of a kind that is not a [`DecodeError`] (e.g. a full
    /// queue, `"queue_full"`).
    pub fn record_kind(&mut self, kind: &'static str) {
        *self.by_kind.entry(kind).or_insert(0) += 1;
        self.total += 1;
    }

    /// Drops of one kind.
    pub fn get(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Every kind with its count, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.by_kind.iter().map(|(k, v)| (*k, *v))
    }
}
