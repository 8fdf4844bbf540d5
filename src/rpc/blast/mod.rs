//! BLAST: fragmentation, reassembly and selective retransmission of messages
//! larger than one datagram (seed 004, section 5.3.1, "BLAST Algorithm" and
//! "BLAST Message Format").
//!
//! A message of up to [`BlastConfig::max_message`] bytes (at most
//! [`wire::MAX_MESSAGE`], 4 MiB) is cut into fragments of
//! [`BlastConfig::fragment_payload`] bytes; every fragment is one datagram
//! whose body is a [`BlastPacket::Fragment`]. The receiver answers with
//! selective retransmission requests ([`BlastPacket::Srr`]) that say which
//! fragments arrived; the sender retransmits exactly the missing ones.
//!
//! Timers, as in the book:
//!
//! - receiver, **LAST_FRAG**: re-armed by every new fragment; when it expires
//!   the receiver sends an SRR and arms RETRY;
//! - receiver, **RETRY**: armed by the LAST_FRAG SRR and by the SRR sent when
//!   the last fragment arrives with others missing; the first
//!   `max_srr_retries - 1` expirations resend the SRR, the next one gives up
//!   and frees the fragments (with the default of 3: "at most 3 times");
//! - sender, **DONE**: re-armed by every SRR that acknowledges something
//!   new; when it expires the sender gives up and frees its copy
//!   ([`BlastEvent::Abandoned`]).
//!
//! Deviations from the book, and why:
//!
//! - **Window.** The book sends all fragments back to back; a 1 MiB message
//!   is ~800 datagrams, more than a ~200 KB kernel socket buffer holds. The
//!   sender keeps at most [`BlastConfig::window`] fragments sent but not yet
//!   acknowledged, and the receiver sends a progress SRR every `window / 2`
//!   new fragments (the window travels in every fragment header), besides
//!   the book's SRRs on the last fragment and on LAST_FRAG.
//! - **SRR format.** The book's 32-bit `FragMask` limits a message to 32
//!   fragments. An [`Srr`] carries a contiguous prefix count and a bitmap of
//!   the range after it (at most [`MAX_FRAGMENTS`] bits, 1 KiB), plus the
//!   highest per-transmission sequence number seen, so the sender resends a
//!   missing fragment only if something it sent *later* arrived (no duplicate
//!   resends when two SRRs cross a retransmission). An SRR sent by a timer
//!   (or in answer to a POLL) is marked `stalled`: then every missing
//!   fragment sent more than about one round trip ago is resent (the sender
//!   measures the round trip from the transmission an SRR reports last), so
//!   a LAST_FRAG that fires early on a long path does not resend fragments
//!   still on their way.
//! - **POLL.** When no SRR arrives for [`BlastConfig::poll_timeout`] (the
//!   last SRR or the whole tail of the window was lost), the sender resends
//!   its lowest unacknowledged fragment flagged `poll`, which the receiver
//!   answers with an SRR at once (a "complete" SRR if it already delivered
//!   the message). Without it, losing the final "complete" SRR of a 1 MiB
//!   message would cost a DONE timeout and a retransmission of the whole
//!   message by CHAN. Polls back off exponentially; DONE still bounds them.
//! - **Long paths.** The sender measures the round trip (from the
//!   transmission an SRR reports last) and sends its estimate in every
//!   fragment; the receiver stretches LAST_FRAG and RETRY to at least twice
//!   it, and the sender its POLL, so a path whose round trip exceeds the
//!   configured timers (the window makes the receiver wait one round trip
//!   per window) is not mistaken for a stalled one.
//! - **One-fragment messages** carry no state on either side and are never
//!   acknowledged by BLAST (CHAN's reply or ACK is the acknowledgement).
//!
//! Bounds on the receiver (all in [`BlastConfig`]): concurrent reassemblies
//! per peer and in total, and buffered bytes in total; when a new reassembly
//! or fragment does not fit, the least recently active *other* reassembly is
//! evicted (counted in [`BlastStats::reassemblies_evicted`]), so a flood of
//! first fragments from many fake peers displaces idle entries, not the
//! transfers that are making progress. Fragment headers with impossible
//! counts, sizes, offsets or lengths are dropped and counted by kind. The
//! ids of recently completed messages are remembered (a bounded number per
//! peer, for a bounded number of peers) so that a late fragment of a
//! delivered message is answered with a "complete" SRR instead of starting a
//! new reassembly.
//!
//! The module follows those seams: [`packet`] holds the [`BlastPacket`]s,
//! the fragment limits and the receiver's check of a fragment header;
//! [`config`] the settings and their defaults; `sender.rs` the sending side
//! (fragmenting, the window, resends on SRRs, POLL, DONE); `receiver.rs` the
//! receiving side (reassembly, SRRs, LAST_FRAG, RETRY, bounds, completed
//! ids); this file the [`Blast`] core that composes the two over their
//! shared timers and output. Its tests are in `src/rpc/tests/blast.rs`.

use super::timers::Timers;
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

pub mod config;
pub mod packet;

pub use config::{BlastConfig, DEFAULT_FRAGMENT_PAYLOAD, DEFAULT_WINDOW, MAX_RTT_HINT};
pub use packet::{
    BlastPacket, Fragment, Srr, FRAGMENT_OVERHEAD, MAX_FRAGMENTS, MAX_FRAGMENT_PAYLOAD,
    MIN_FRAGMENT_PAYLOAD,
};
pub use shared::{BlastError, BlastEvent, BlastStats, SendInfo};

mod receiver;
mod sender;
mod shared;

use shared::{Shared, TimerKey};

/// The BLAST core: a sender and a receiver (`sender.rs`, `receiver.rs`)
/// sharing timers and output. It implements [`Core`] on its own (for tests
/// and for protocols that want bare fragmentation); CHAN drives one inside.
#[derive(Debug)]
pub struct Blast {
    shared: Shared,
    sender: sender::Sender,
    receiver: receiver::Receiver,
}

impl Blast {
    /// A BLAST endpoint for this node's `incarnation`. `initial_mid` seeds
    /// the message-id counter (drawn from the owner's seeded RNG).
    pub fn new(incarnation: Incarnation, config: BlastConfig, initial_mid: u64) -> Self {
        Blast {
            shared: Shared {
                incarnation,
                config: config.sanitized(),
                timers: Timers::default(),
                transmits: VecDeque::new(),
                events: VecDeque::new(),
                stats: BlastStats::default(),
            },
            sender: sender::Sender::new(initial_mid),
            receiver: receiver::Receiver::default(),
        }
    }

    /// The (sanitized) configuration.
    pub fn config(&self) -> &BlastConfig {
        &self.shared.config
    }

    /// Counters.
    pub fn stats(&self) -> &BlastStats {
        &self.shared.stats
    }

    /// Fragments a message would take with this configuration.
    pub fn fragments_for(&self, len: usize) -> u32 {
        self.shared.fragments_for(len)
    }

    /// Multi-fragment messages still held by the sender.
    pub fn outgoing_len(&self) -> usize {
        self.sender.outgoing_len()
    }

    /// Reassemblies in progress.
    pub fn reassemblies_len(&self) -> usize {
        self.receiver.reassemblies_len()
    }

    /// Fragment bytes buffered by reassemblies.
    pub fn buffered_bytes(&self) -> usize {
        self.receiver.buffered_bytes()
    }

    /// Whether the sender still holds multi-fragment message `mid`.
    pub fn is_sending(&self, mid: u64) -> bool {
        self.sender.is_sending(mid)
    }

    /// Fragments sent and not yet acknowledged, for each multi-fragment
    /// message the sender holds (tests check the window with it).
    #[cfg(test)]
    pub(crate) fn in_flight_counts(&self) -> Vec<u32> {
        self.sender.in_flight_counts()
    }

    /// Sends `message` to `dest`: fragments it and transmits the first
    /// window. A one-fragment message is sent and forgotten.
    pub fn send(
        &mut self,
        now: Instant,
        dest: NodeId,
        message: Arc<[u8]>,
    ) -> Result<SendInfo, BlastError> {
        self.send_with_rtt_hint(now, dest, message, None)
    }

    /// [`Blast::send`], with the round trip to `dest` as the layer above
    /// knows it: until BLAST has measured its own, it uses this for POLL and
    /// tells the receiver (see [`Fragment::rtt_hint_ms`]).
    pub fn send_with_rtt_hint(
        &mut self,
        now: Instant,
        dest: NodeId,
        message: Arc<[u8]>,
        rtt_hint: Option<Duration>,
    ) -> Result<SendInfo, BlastError> {
        self.sender
            .send(&mut self.shared, now, dest, message, rtt_hint)
    }

    /// Stops sending `mid` (no event follows). Returns whether it was held.
    pub fn cancel(&mut self, mid: u64) -> bool {
        self.sender.cancel(&mut self.shared, mid)
    }
}

impl Core for Blast {
    type Event = BlastEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        if packet.protocol != ProtocolId::Rpc {
            self.shared.stats.drops.record_kind("wrong_protocol");
            return;
        }
        match wire::decode_body::<BlastPacket>(packet.body) {
            Ok(BlastPacket::Fragment(f)) => self.receiver.on_fragment(
                &mut self.shared,
                now,
                packet.source,
                packet.source_incarnation,
                f,
            ),
            Ok(BlastPacket::Srr(s)) => self.sender.on_srr(&mut self.shared, now, packet.source, s),
            Err(_) => self.shared.stats.drops.record_kind("malformed_packet"),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(key) = self.shared.timers.pop_due(now) {
            match key {
                TimerKey::Sender(mid) => self.sender.on_sender_timer(&mut self.shared, now, mid),
                TimerKey::Receiver(k) => self.receiver.on_receiver_timer(&mut self.shared, now, k),
            }
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.shared.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<BlastEvent> {
        self.shared.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.shared.timers.next()
    }
}
