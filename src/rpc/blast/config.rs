//! BLAST's settings (seed 004, section 5.3.1): fragment size, the window,
//! the receiver's LAST_FRAG and RETRY timers, the sender's POLL and DONE
//! timers, and the receiver's bounds, with their defaults and valid ranges.

use super::packet::{MAX_FRAGMENTS, MAX_FRAGMENT_PAYLOAD, MIN_FRAGMENT_PAYLOAD};
use crate::wire::MAX_MESSAGE;
use std::time::Duration;

/// Default fragment payload: 1300 bytes, so that a fragment with the wire
/// header (68 B), the authentication trailer (24 B), the fragment header
/// (at most 36 B in practice) and IPv6 + UDP headers (48 B) fits a 1500-byte
/// Ethernet MTU (1476 B worst case).
pub const DEFAULT_FRAGMENT_PAYLOAD: usize = 1300;

/// Largest round-trip hint a receiver honours (10 s): an absurd hint cannot
/// pin a reassembly for longer than a few times this.
pub const MAX_RTT_HINT: Duration = Duration::from_secs(10);

/// Default window: fragments sent but not yet acknowledged by an SRR.
pub const DEFAULT_WINDOW: u32 = 128;

/// BLAST settings. Every field has a documented default
/// ([`BlastConfig::default`]); out-of-range values are clamped when the
/// core is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlastConfig {
    /// Payload bytes per fragment. Default [`DEFAULT_FRAGMENT_PAYLOAD`]
    /// (1300); clamped to [`MIN_FRAGMENT_PAYLOAD`]..=[`MAX_FRAGMENT_PAYLOAD`].
    pub fragment_payload: usize,
    /// Most fragments in flight (sent, not acknowledged) per message.
    /// Default [`DEFAULT_WINDOW`] (128); clamped to 2..=[`MAX_FRAGMENTS`].
    pub window: u32,
    /// Receiver LAST_FRAG timer: silence after the last fragment before an
    /// SRR is sent. Default 50 ms.
    pub last_frag_timeout: Duration,
    /// Receiver RETRY timer: between SRRs once stalled. Default 100 ms.
    pub retry_timeout: Duration,
    /// Receiver: RETRY expirations before giving up (the last one gives up).
    /// Default 3.
    pub max_srr_retries: u32,
    /// Sender POLL timer: silence before soliciting an SRR. Default 200 ms,
    /// doubling after every unanswered poll.
    pub poll_timeout: Duration,
    /// Sender DONE timer: silence (no SRR) before giving up. Default 2 s.
    pub done_timeout: Duration,
    /// Largest message sent or reassembled. Default and maximum
    /// [`wire::MAX_MESSAGE`](crate::wire::MAX_MESSAGE) (4 MiB).
    pub max_message: usize,
    /// Most concurrent reassemblies from one peer. Default 16.
    pub max_reassemblies_per_peer: usize,
    /// Most concurrent reassemblies in total. Default 128.
    pub max_reassemblies: usize,
    /// Most fragment bytes buffered by all reassemblies. Default 32 MiB.
    pub max_reassembly_bytes: usize,
    /// Completed message ids remembered per peer. Default 64.
    pub completed_per_peer: usize,
    /// Peers whose completed message ids are remembered. Default 1024.
    pub max_completed_peers: usize,
}

impl Default for BlastConfig {
    fn default() -> Self {
        BlastConfig {
            fragment_payload: DEFAULT_FRAGMENT_PAYLOAD,
            window: DEFAULT_WINDOW,
            last_frag_timeout: Duration::from_millis(50),
            retry_timeout: Duration::from_millis(100),
            max_srr_retries: 3,
            poll_timeout: Duration::from_millis(200),
            done_timeout: Duration::from_secs(2),
            max_message: MAX_MESSAGE,
            max_reassemblies_per_peer: 16,
            max_reassemblies: 128,
            max_reassembly_bytes: 32 * 1024 * 1024,
            completed_per_peer: 64,
            max_completed_peers: 1024,
        }
    }
}

impl BlastConfig {
    /// This configuration with every field clamped to its valid range.
    pub fn sanitized(&self) -> BlastConfig {
        let ms1 = Duration::from_millis(1);
        BlastConfig {
            fragment_payload: self
                .fragment_payload
                .clamp(MIN_FRAGMENT_PAYLOAD, MAX_FRAGMENT_PAYLOAD),
            window: self.window.clamp(2, MAX_FRAGMENTS),
            last_frag_timeout: self.last_frag_timeout.max(ms1),
            retry_timeout: self.retry_timeout.max(ms1),
            max_srr_retries: self.max_srr_retries.max(1),
            poll_timeout: self.poll_timeout.max(ms1),
            done_timeout: self.done_timeout.max(ms1),
            max_message: self.max_message.min(MAX_MESSAGE),
            max_reassemblies_per_peer: self.max_reassemblies_per_peer.max(1),
            max_reassemblies: self.max_reassemblies.max(1),
            max_reassembly_bytes: self.max_reassembly_bytes.max(MAX_FRAGMENT_PAYLOAD),
            completed_per_peer: self.completed_per_peer.max(1),
            max_completed_peers: self.max_completed_peers.max(1),
        }
    }
}
