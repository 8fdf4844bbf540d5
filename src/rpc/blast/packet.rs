//! BLAST's packets (seed 004, section 5.3.1, "BLAST Message Format"): the
//! [`Fragment`] (the book's DATA) and the selective retransmission request
//! [`Srr`], the two variants of a [`BlastPacket`], with the limits on
//! fragment sizes and counts and the receiver's check of a fragment header.
//!
//! The SRR deviates from the book's 32-bit `FragMask` (which limits a
//! message to 32 fragments): it carries a prefix count and a bitmap of the
//! range after it; see the [`blast`](super) module docs.

use crate::id::Incarnation;
use crate::rpc::bytes::Bytes;
use crate::wire::{MAX_BODY, MAX_MESSAGE};
use serde::{Deserialize, Serialize};

/// Upper bound on the bytes an encoded [`BlastPacket::Fragment`] adds to its
/// payload (enum tag, varint header fields, the payload's length prefix).
pub const FRAGMENT_OVERHEAD: usize = 48;

/// Smallest fragment payload for a message of more than one fragment. It
/// bounds the number of fragments of a message to [`MAX_FRAGMENTS`].
pub const MIN_FRAGMENT_PAYLOAD: usize = 512;

/// Largest fragment payload: a fragment must fit in one datagram body.
pub const MAX_FRAGMENT_PAYLOAD: usize = MAX_BODY - FRAGMENT_OVERHEAD;

/// Largest number of fragments of one message (4 MiB / 512 B = 8192).
pub const MAX_FRAGMENTS: u32 = (MAX_MESSAGE / MIN_FRAGMENT_PAYLOAD) as u32;

/// One fragment of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    /// The message id, unique per sender incarnation (the book's MID).
    pub mid: u64,
    /// Which fragment, `0..count`.
    pub index: u32,
    /// Fragments in the message (the book's NumFrags).
    pub count: u32,
    /// Payload bytes of every fragment but the last.
    pub frag_size: u32,
    /// Bytes in the whole message.
    pub total_len: u32,
    /// The sender's window: the receiver sends a progress SRR every
    /// `window / 2` new fragments.
    pub window: u32,
    /// Per-message transmission counter (every send and resend gets the next).
    pub seq: u32,
    /// "Answer with an SRR now" (the sender's POLL).
    pub poll: bool,
    /// The sender's round-trip estimate in milliseconds (0: none yet); the
    /// receiver stretches LAST_FRAG and RETRY to twice it (at most
    /// [`MAX_RTT_HINT`](super::MAX_RTT_HINT)) so that a long path does not look stalled.
    pub rtt_hint_ms: u32,
    /// The payload.
    pub data: Bytes,
}

/// A selective retransmission request: which fragments of `mid` arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Srr {
    /// The message.
    pub mid: u64,
    /// The sender's incarnation as the receiver saw it, so a restarted
    /// sender never takes an SRR for its previous life's message.
    pub sender: Incarnation,
    /// Fragments `0..prefix` all arrived.
    pub prefix: u32,
    /// The bitmap covers `prefix..upto`; nothing at or above `upto` arrived.
    pub upto: u32,
    /// Bit `i` (LSB first) set: fragment `prefix + i` arrived.
    pub received: Bytes,
    /// The highest fragment `seq` the receiver has seen.
    pub seen_seq: u32,
    /// All fragments arrived: the message was delivered.
    pub complete: bool,
    /// Sent by a receiver timer (LAST_FRAG, RETRY) or in answer to a POLL:
    /// resend every unacknowledged fragment.
    pub stalled: bool,
}

/// The body of every datagram with protocol [`ProtocolId::Rpc`](crate::id::ProtocolId::Rpc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlastPacket {
    /// Data (the book's `Type = DATA`).
    Fragment(Fragment),
    /// A selective retransmission request (the book's `Type = SRR`).
    Srr(Srr),
}

/// Bytes of a bitmap of `bits` bits.
pub(crate) fn bitmap_len(bits: u32) -> usize {
    (bits as usize).div_ceil(8)
}

pub(super) fn bit(bitmap: &[u8], i: u32) -> bool {
    bitmap
        .get((i / 8) as usize)
        .is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Why a fragment header is impossible, as a drop-counter kind.
pub(super) fn check_fragment(f: &Fragment, max_message: usize) -> Result<(), &'static str> {
    let total = u64::from(f.total_len);
    if total > max_message as u64 {
        return Err("fragment_message_too_large");
    }
    if f.count == 0 || f.count > MAX_FRAGMENTS || f.index >= f.count {
        return Err("absurd_fragment_index");
    }
    let fs = u64::from(f.frag_size);
    if fs == 0 || fs > MAX_FRAGMENT_PAYLOAD as u64 {
        return Err("absurd_fragment_size");
    }
    if f.count > 1 && fs < MIN_FRAGMENT_PAYLOAD as u64 {
        return Err("absurd_fragment_size");
    }
    let expected_count = if total == 0 { 1 } else { total.div_ceil(fs) };
    if expected_count != u64::from(f.count) {
        return Err("absurd_fragment_count");
    }
    let start = u64::from(f.index) * fs;
    let len = fs.min(total.saturating_sub(start));
    if f.data.len() as u64 != len {
        return Err("absurd_fragment_length");
    }
    Ok(())
}
