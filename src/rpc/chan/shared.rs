//! What the client and server halves of CHAN (and the core composing
//! them, `mod.rs`) share, below all three: the ids, events, errors and
//! counters the layer above sees, the timer keys, and [`Shared`]: the
//! identity, settings, BLAST layer, timers and outputs of one endpoint.

use super::config::ChanConfig;
use super::message::{ChanMessage, MESSAGE_OVERHEAD};
use crate::id::{Incarnation, NodeId};
use crate::rpc::blast::Blast;
use crate::rpc::timers::Timers;
use crate::time::Instant;
use crate::wire::{self, DropCounters};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    /// No answer within the deadline or the retry count.
    #[error("timed out")]
    Timeout,
    /// The server restarted (a different incarnation answered); the call
    /// may or may not have run in the previous life.
    #[error("peer restarted")]
    PeerRestarted,
    /// The server has no handler for the procedure.
    #[error("no such procedure")]
    NoSuchProcedure,
    /// The request or the reply exceeds the message size limit.
    #[error("message too large")]
    TooLarge,
    /// Cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// The host reported the server unreachable twice in a row.
    #[error("peer unreachable")]
    Unreachable,
    /// The server executed (or may have executed) the call but no longer
    /// holds its reply (freed by a bound or the retention time).
    #[error("reply lost")]
    ReplyLost,
}

/// A call, as returned by [`Chan::call`](super::Chan::call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// A request handed up for execution; answer it with
/// [`Chan::respond`](super::Chan::respond).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestToken(pub u64);

/// What CHAN reports to the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChanEvent {
    /// A new request to execute; answer with
    /// [`Chan::respond`](super::Chan::respond) (and call
    /// [`Chan::acknowledge`](super::Chan::acknowledge) first if the answer
    /// will take a while).
    Execute {
        /// Identifies the request in `respond`.
        token: RequestToken,
        /// The client.
        from: NodeId,
        /// The client's incarnation.
        from_incarnation: Incarnation,
        /// The procedure number.
        procedure: u16,
        /// The argument.
        body: Vec<u8>,
    },
    /// A call ended (exactly once per [`CallId`]).
    Completed {
        /// The call.
        id: CallId,
        /// The server.
        node: NodeId,
        /// The reply, or why there is none.
        result: Result<Vec<u8>, CallError>,
    },
}

/// CHAN counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChanStats {
    /// Calls started.
    pub calls: u64,
    /// Calls that got a reply.
    pub calls_succeeded: u64,
    /// Calls that failed (any [`CallError`]).
    pub calls_failed: u64,
    /// Of which [`CallError::Timeout`].
    pub timeouts: u64,
    /// Of which [`CallError::PeerRestarted`].
    pub peer_restarted: u64,
    /// Of which [`CallError::Unreachable`].
    pub unreachable: u64,
    /// Of which [`CallError::Cancelled`].
    pub cancelled: u64,
    /// `Hello`s sent (first contact), including retransmissions.
    pub hellos_sent: u64,
    /// Requests sent, including retransmissions.
    pub requests_sent: u64,
    /// Retransmissions of `Hello`s and requests (timer or unreachable hint).
    pub retransmissions: u64,
    /// Probes sent.
    pub probes_sent: u64,
    /// Valid RTT samples taken.
    pub rtt_samples: u64,
    /// Explicit `ReplyAck`s sent.
    pub reply_acks_sent: u64,
    /// Requests received (all, including duplicates).
    pub requests_received: u64,
    /// Requests handed up for execution (each call at most once).
    pub executions: u64,
    /// Duplicate requests or probes answered with the saved reply.
    pub duplicates_answered_from_cache: u64,
    /// Duplicate requests answered with `Ack` (still running).
    pub duplicates_while_executing: u64,
    /// Answers `Forgotten`.
    pub forgotten_answers: u64,
    /// Answers `Unknown`.
    pub unknown_answers: u64,
    /// Answers `Restarted` (request for another incarnation).
    pub restarted_answers: u64,
    /// Replies sent (first sends and resends).
    pub replies_sent: u64,
    /// Replies whose client was gone or had moved on.
    pub replies_discarded: u64,
    /// Saved replies freed by a bound before being acknowledged.
    pub saved_replies_evicted: u64,
    /// Saved replies freed by the retention time.
    pub saved_replies_expired: u64,
    /// Client tables dropped after `client_retention`.
    pub clients_expired: u64,
    /// Dropped messages, by kind.
    pub drops: DropCounters,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKey {
    /// A client call's RETRANSMIT or PROBE timer, or its deadline.
    Call(u64),
    /// The client's delayed `ReplyAck` to a server.
    AckFlush(NodeId),
    /// The server's expiry of saved replies and silent clients.
    Sweep,
}

/// What the client and the server sides of a CHAN endpoint share: its
/// identity and settings, the BLAST layer below, the timers, and what it
/// reports (events and counters).
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) incarnation: Incarnation,
    pub(super) config: ChanConfig,
    pub(super) blast: Blast,
    pub(super) timers: Timers<TimerKey>,
    pub(super) events: VecDeque<ChanEvent>,
    pub(super) stats: ChanStats,
}

impl Shared {
    /// The largest call body: BLAST's message limit minus
    /// [`MESSAGE_OVERHEAD`].
    pub(super) fn max_body(&self) -> usize {
        self.blast
            .config()
            .max_message
            .saturating_sub(MESSAGE_OVERHEAD)
    }

    /// Encodes and sends `msg`; returns the BLAST id if it is
    /// multi-fragment. `rtt_hint` is our idea of the round trip to `to`.
    pub(super) fn send_message(
        &mut self,
        now: Instant,
        to: NodeId,
        msg: &ChanMessage,
        rtt_hint: Option<Duration>,
    ) -> Option<u64> {
        let Ok(bytes) = wire::encode_body(msg) else {
            self.stats.drops.record_kind("encode_failed");
            return None;
        };
        self.send_bytes(now, to, Arc::from(bytes), rtt_hint)
    }

    /// Sends an encoded message; returns the BLAST id if it is
    /// multi-fragment.
    pub(super) fn send_bytes(
        &mut self,
        now: Instant,
        to: NodeId,
        bytes: Arc<[u8]>,
        rtt_hint: Option<Duration>,
    ) -> Option<u64> {
        match self.blast.send_with_rtt_hint(now, to, bytes, rtt_hint) {
            Ok(info) if info.fragments > 1 => Some(info.mid),
            Ok(_) => None,
            Err(_) => {
                self.stats.drops.record_kind("message_too_large");
                None
            }
        }
    }
}
