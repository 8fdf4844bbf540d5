//! What the sender and receiver halves of BLAST (and the core composing
//! them, `mod.rs`) share, below all three: the events, errors and counters
//! the layer above sees, the timer keys, and [`Shared`]: the identity,
//! settings, timers and outputs of one endpoint.

use super::config::BlastConfig;
use super::packet::BlastPacket;
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::rpc::timers::Timers;
use crate::sansio::Transmit;
use crate::wire::{self, DropCounters, MAX_BODY};
use std::collections::VecDeque;
use thiserror::Error;

/// What BLAST reports to the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlastEvent {
    /// A whole message arrived.
    Delivered {
        /// The sender.
        from: NodeId,
        /// The sender's incarnation (from the packet header).
        from_incarnation: Incarnation,
        /// The reassembled message.
        message: Vec<u8>,
    },
    /// The receiver confirmed every fragment of a multi-fragment message.
    Acked {
        /// The destination.
        to: NodeId,
        /// The message id returned by [`Blast::send`](super::Blast::send).
        mid: u64,
    },
    /// DONE expired: the sender gave up on a multi-fragment message.
    Abandoned {
        /// The destination.
        to: NodeId,
        /// The message id returned by [`Blast::send`](super::Blast::send).
        mid: u64,
    },
}

/// Why [`Blast::send`](super::Blast::send) refused a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlastError {
    /// Larger than [`BlastConfig::max_message`].
    #[error("message of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// Bytes allowed.
        limit: usize,
    },
}

/// What [`Blast::send`](super::Blast::send) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendInfo {
    /// The message id (appears in [`BlastEvent::Acked`] / `Abandoned`).
    pub mid: u64,
    /// Number of fragments; 1 means no state was kept and no event follows.
    pub fragments: u32,
}

/// BLAST counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlastStats {
    /// Messages handed to [`Blast::send`](super::Blast::send).
    pub messages_sent: u64,
    /// Of which fit in one fragment.
    pub single_fragment_messages: u64,
    /// Fragment datagrams transmitted (first sends, resends and polls).
    pub fragments_sent: u64,
    /// Of which were resends requested by an SRR.
    pub fragments_retransmitted: u64,
    /// Of which were POLLs.
    pub polls_sent: u64,
    /// Multi-fragment messages fully acknowledged.
    pub messages_acked: u64,
    /// Multi-fragment messages given up by DONE.
    pub messages_abandoned: u64,
    /// SRRs transmitted.
    pub srrs_sent: u64,
    /// SRRs accepted.
    pub srrs_received: u64,
    /// SRRs for messages no longer (or never) held (e.g. duplicates).
    pub srrs_unknown: u64,
    /// Messages delivered up.
    pub messages_delivered: u64,
    /// Reassemblies begun.
    pub reassemblies_started: u64,
    /// Reassemblies completed.
    pub reassemblies_completed: u64,
    /// Reassemblies freed after the last RETRY.
    pub reassemblies_given_up: u64,
    /// Reassemblies evicted to admit another (limits).
    pub reassemblies_evicted: u64,
    /// Fragments already held, or of an already delivered message.
    pub duplicate_fragments: u64,
    /// Dropped datagrams and fragments, by kind.
    pub drops: DropCounters,
}

pub(super) type ReasmKey = (NodeId, Incarnation, u64);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKey {
    /// A held message's POLL or DONE.
    Sender(u64),
    /// A reassembly's LAST_FRAG or RETRY.
    Receiver(ReasmKey),
}

/// What the sender and the receiver of a BLAST endpoint share: its identity
/// and settings, the timers, the outgoing datagrams, the events and the
/// counters.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) incarnation: Incarnation,
    pub(super) config: BlastConfig,
    pub(super) timers: Timers<TimerKey>,
    pub(super) transmits: VecDeque<Transmit>,
    pub(super) events: VecDeque<BlastEvent>,
    pub(super) stats: BlastStats,
}

impl Shared {
    /// Fragments a message of `len` bytes takes.
    pub(super) fn fragments_for(&self, len: usize) -> u32 {
        let n = len.div_ceil(self.config.fragment_payload).max(1);
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Queues `packet` for `dest`.
    pub(super) fn push_packet(&mut self, dest: NodeId, packet: &BlastPacket) {
        match wire::encode_body(packet) {
            Ok(body) if body.len() <= MAX_BODY => {
                self.transmits
                    .push_back(Transmit::new(dest, ProtocolId::Rpc, body))
            }
            // Unreachable with sanitized limits; counted rather than panicking.
            _ => self.stats.drops.record_kind("encode_failed"),
        }
    }
}
