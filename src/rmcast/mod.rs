//! Reliable multicast (DESIGN.md section 4, "rmcast"; seed 000 section 6
//! RMTP, seed 002 XUDP): per-sender sequence numbers, NACKs with
//! suppression, retransmission from the sender's window, flow control by
//! maximum acceptable sequence (MAB), and parcels in three delivery modes.
//!
//! One [`Rmcast`] runs per node per group; every node is both a sender (of
//! its own stream) and a receiver (of every other member's stream). The
//! layer above gives it the current view with [`Rmcast::set_receivers`] and
//! sends parcels with [`Rmcast::send`]; it drives it through [`Core`] like
//! every other core. `docs/rmcast.md` has the timelines and the guarantees;
//! in short:
//!
//! - **Sequencing.** A sequenced parcel (reliable or timed) of `n`
//!   fragments takes `n` consecutive sequence numbers of its sender's
//!   stream when [`Rmcast::send`] accepts it. Fragments go to the group
//!   address as [`RmcastPacket::Data`].
//! - **Loss recovery.** Receivers detect gaps (a later sequence, a
//!   [`Sync`], another receiver's NACK) and multicast a [`Nack`] after a
//!   random delay; a receiver that hears a NACK for a gap it also has
//!   waits instead (suppression). The sender retransmits from its window,
//!   at most once per [`RmcastConfig::retransmit_holdoff`] per sequence.
//! - **Flow control.** Every receiver advertises a MAB (`next + window`)
//!   by unicast [`Status`]; the sender never transmits a sequence at or
//!   above the smallest MAB of its current receivers, and a receiver it has
//!   not heard from yet holds it at that receiver's start. A receiver with
//!   data outstanding whose advertisements stop for
//!   [`RmcastConfig::suspect_after`] is reported as
//!   [`RmcastEvent::Suspect`], never dropped silently: only the layer above
//!   removes receivers.
//! - **Parcels** are reassembled whole or not at all and delivered in FIFO
//!   order per sender: [`Delivery::Reliable`], [`Delivery::Timed`] (purged
//!   everywhere at its deadline, never delivered late or partially, never
//!   blocking later parcels past its deadline) and [`Delivery::BestEffort`]
//!   (an unsequenced channel: never retransmitted, never duplicated, never
//!   out of order among the sender's best-effort parcels).
//! - **Joining.** A receiver added mid-stream is owed exactly the sequenced
//!   parcels its sender accepted after adding it; it learns where that is
//!   with a [`Hello`]/[`Start`] handshake.
//!
//! [`nack_cache`] holds the RMTP middle layer for the mcaster: NACK aggregation
//! and a small retransmission cache.
//!
//! Every input is bounded: windows, queues, caches and reassembly buffers
//! have configured limits ([`RmcastConfig`]), and packets that are absurd,
//! stale, from non-members or out of window are dropped and counted in
//! [`RmcastStats::drops`], never a panic.

pub mod endpoint;
pub mod nack_cache;
mod packet;
mod ranges;
mod receiver;
mod sender;

#[cfg(test)]
mod tests;

pub use endpoint::{
    EndpointConfig, EndpointError, EndpointEvent, EndpointStats, GroupEndpoint, Transport,
};
pub use packet::{
    BestEffortFragment, Data, Envelope, Hello, Nack, NotReceiver, Obsolete, RmcastPacket, Start,
    Status, Sync, DATA_OVERHEAD, MAX_FRAGMENT_PAYLOAD, MAX_NACK_RANGES,
};

use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::rpc::blast::MIN_FRAGMENT_PAYLOAD;
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::{earliest, Instant};
use crate::wire::{DropCounters, MAX_BODY, MAX_MESSAGE};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use receiver::{BeMemory, Stream};
use sender::Sender;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;
use thiserror::Error;

/// Default fragment payload: 1280 bytes. With the wire header (68 B), the
/// authentication trailer (24 B), the rmcast data header (at most
/// [`DATA_OVERHEAD`], about 45 B in practice with an IPv4 group) and IPv6 +
/// UDP headers (48 B) a fragment fits a 1500-byte Ethernet MTU.
pub const DEFAULT_FRAGMENT_PAYLOAD: usize = 1280;

/// Default window: 256 packets (about 330 KB of payload).
pub const DEFAULT_WINDOW: u32 = 256;

/// Largest window a receiver advertises or a sender honours.
pub const MAX_WINDOW: u32 = 65_536;

/// Default largest parcel: 1 MiB.
pub const DEFAULT_MAX_PARCEL: usize = 1 << 20;

/// rmcast settings. Every field has a documented default
/// ([`RmcastConfig::default`], sized for a LAN); out-of-range values are
/// clamped when the core is built ([`RmcastConfig::sanitized`]). All nodes
/// of a group should use the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RmcastConfig {
    /// Payload bytes per fragment. Default [`DEFAULT_FRAGMENT_PAYLOAD`]
    /// (1280); clamped to 512..=[`MAX_FRAGMENT_PAYLOAD`].
    pub fragment_payload: usize,
    /// Receive window in packets: a receiver advertises `MAB = next +
    /// window` and buffers at most this many packets beyond its next
    /// expected sequence; a sender keeps at most this many transmitted,
    /// unacknowledged sequences. Default [`DEFAULT_WINDOW`] (256); clamped
    /// to 4..=[`MAX_WINDOW`].
    pub window: u32,
    /// Largest parcel, in bytes. Default [`DEFAULT_MAX_PARCEL`] (1 MiB);
    /// clamped to ..=[`wire::MAX_MESSAGE`](crate::wire::MAX_MESSAGE).
    pub max_parcel: usize,
    /// Sender: most bytes of sequenced parcels held (queued behind the
    /// window, or sent and not acknowledged by every receiver); `send`
    /// answers [`SendError::QueueFull`] beyond. Default 8 MiB; at least
    /// `max_parcel`.
    pub send_buffer_bytes: usize,
    /// Sender: most sequenced parcels held. Default 1024.
    pub send_buffer_parcels: usize,
    /// Receiver: a newly detected gap is NACKed after a uniformly random
    /// delay in `[0, nack_delay]` (suppression). Default 10 ms.
    pub nack_delay: Duration,
    /// Receiver: wait before NACKing a sequence again (after its own NACK,
    /// or after hearing another receiver's); doubles with every NACK of the
    /// same sequence, plus a random `[0, nack_delay]`. Default 20 ms.
    pub nack_retry: Duration,
    /// Receiver: cap of the NACK back-off. Default 250 ms.
    pub nack_retry_max: Duration,
    /// Sender: a sequence is retransmitted at most once per this interval,
    /// so that NACKs from several receivers for one loss cause one
    /// retransmission. Default 5 ms.
    pub retransmit_holdoff: Duration,
    /// Receiver: progress smaller than a quarter window is acknowledged
    /// after this delay (a quarter window at once). Default 5 ms.
    pub ack_delay: Duration,
    /// Sender: the first [`Sync`] after a receiver became outstanding (sent
    /// at once when a receiver never heard from blocks the window); doubles
    /// while nothing progresses. Default 10 ms.
    pub sync_interval: Duration,
    /// Sender: cap of the Sync back-off; receivers also send [`Hello`]s at
    /// most this often once backed off. Default 100 ms.
    pub sync_max: Duration,
    /// Receiver: the first [`Hello`] of a stream goes at once, repeats at
    /// most once per this interval, doubling up to `sync_max`. Default 10 ms.
    pub hello_interval: Duration,
    /// Sender: a current receiver that has data outstanding (unacknowledged,
    /// or blocking the window) and has not advertised for this long is
    /// reported as [`RmcastEvent::Suspect`] (once per episode). Default 1 s.
    pub suspect_after: Duration,
    /// Receiver: incomplete best-effort parcels kept per sender (the oldest
    /// is dropped for a new one). Default 4.
    pub best_effort_partials: usize,
    /// Receiver: an incomplete best-effort parcel is dropped after this long
    /// without a new fragment. Default 500 ms.
    pub best_effort_timeout: Duration,
    /// Receiver: senders whose last delivered best-effort parcel is
    /// remembered (across view changes; least recently used forgotten).
    /// Default 1024.
    pub remembered_senders: usize,
}

impl Default for RmcastConfig {
    fn default() -> Self {
        RmcastConfig {
            fragment_payload: DEFAULT_FRAGMENT_PAYLOAD,
            window: DEFAULT_WINDOW,
            max_parcel: DEFAULT_MAX_PARCEL,
            send_buffer_bytes: 8 << 20,
            send_buffer_parcels: 1024,
            nack_delay: Duration::from_millis(10),
            nack_retry: Duration::from_millis(20),
            nack_retry_max: Duration::from_millis(250),
            retransmit_holdoff: Duration::from_millis(5),
            ack_delay: Duration::from_millis(5),
            sync_interval: Duration::from_millis(10),
            sync_max: Duration::from_millis(100),
            hello_interval: Duration::from_millis(10),
            suspect_after: Duration::from_secs(1),
            best_effort_partials: 4,
            best_effort_timeout: Duration::from_millis(500),
            remembered_senders: 1024,
        }
    }
}

impl RmcastConfig {
    /// This configuration with every field clamped to its valid range.
    pub fn sanitized(&self) -> RmcastConfig {
        let us100 = Duration::from_micros(100);
        let max_parcel = self.max_parcel.min(MAX_MESSAGE);
        let sync_interval = self.sync_interval.max(us100);
        let nack_retry = self.nack_retry.max(us100);
        RmcastConfig {
            fragment_payload: self
                .fragment_payload
                .clamp(MIN_FRAGMENT_PAYLOAD, MAX_FRAGMENT_PAYLOAD),
            window: self.window.clamp(4, MAX_WINDOW),
            max_parcel,
            send_buffer_bytes: self.send_buffer_bytes.max(max_parcel).max(1),
            send_buffer_parcels: self.send_buffer_parcels.max(1),
            nack_delay: self.nack_delay,
            nack_retry,
            nack_retry_max: self.nack_retry_max.max(nack_retry),
            retransmit_holdoff: self.retransmit_holdoff,
            ack_delay: self.ack_delay,
            sync_interval,
            sync_max: self.sync_max.max(sync_interval),
            hello_interval: self.hello_interval.max(us100),
            suspect_after: self.suspect_after.max(us100),
            best_effort_partials: self.best_effort_partials.max(1),
            best_effort_timeout: self.best_effort_timeout.max(us100),
            remembered_senders: self.remembered_senders.max(1),
        }
    }
}

/// A parcel, as numbered by its sender: unique per sender incarnation,
/// increasing in `send` order across all modes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ParcelId(pub u64);

/// How a parcel travels.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Delivery {
    /// Retransmitted until every current receiver has it.
    Reliable,
    /// Retransmitted until every current receiver has it or this time has
    /// passed since `send`; then purged by the sender and the receivers,
    /// and never delivered late or partially. In a
    /// [`RmcastEvent::Delivered`] the time left before the receiver's
    /// deadline.
    Timed(Duration),
    /// Sent once, never retransmitted nor flow controlled; delivered whole
    /// or not at all.
    BestEffort,
}

/// Why [`Rmcast::send`] refused a parcel.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    /// Larger than [`RmcastConfig::max_parcel`].
    #[error("parcel of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// Bytes allowed.
        limit: usize,
    },
    /// The send buffer is full (backpressure): try again after
    /// [`RmcastEvent::SendWindowOpen`].
    #[error("send buffer full")]
    QueueFull,
}

/// What rmcast reports to the layer above.
#[derive(Clone, PartialEq, Eq)]
pub enum RmcastEvent {
    /// A whole parcel from another member.
    Delivered {
        /// The sender.
        from: NodeId,
        /// The sender's incarnation.
        from_incarnation: Incarnation,
        /// The sender's parcel id.
        parcel: ParcelId,
        /// How it travelled (for `Timed`, the time left before this
        /// receiver's deadline).
        mode: Delivery,
        /// The parcel.
        payload: Vec<u8>,
    },
    /// Sender: every current receiver acknowledged this sequenced parcel
    /// (also when the receiver set is empty).
    Acknowledged {
        /// The parcel.
        parcel: ParcelId,
    },
    /// Sender: a timed parcel reached its deadline before every current
    /// receiver acknowledged it; it is purged.
    Expired {
        /// The parcel.
        parcel: ParcelId,
    },
    /// Sender: this current receiver has data outstanding and has not
    /// advertised for [`RmcastConfig::suspect_after`]. Reported once per
    /// episode (a new episode begins when it is heard again); rmcast keeps
    /// waiting for it until the layer above removes it.
    Suspect {
        /// The receiver.
        node: NodeId,
    },
    /// Sender: after a [`SendError::QueueFull`], the send buffer is at most
    /// half full again.
    SendWindowOpen,
}

impl fmt::Debug for RmcastEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Never print a megabyte: the length and the first bytes.
            RmcastEvent::Delivered {
                from,
                from_incarnation,
                parcel,
                mode,
                payload,
            } => {
                write!(
                    f,
                    "Delivered {{ from: {from:?}, from_incarnation: {from_incarnation:?}, \
                     parcel: {parcel:?}, mode: {mode:?}, payload: {} bytes ",
                    payload.len()
                )?;
                for b in payload.iter().take(8) {
                    write!(f, "{b:02x}")?;
                }
                write!(f, " }}")
            }
            RmcastEvent::Acknowledged { parcel } => write!(f, "Acknowledged({parcel:?})"),
            RmcastEvent::Expired { parcel } => write!(f, "Expired({parcel:?})"),
            RmcastEvent::Suspect { node } => write!(f, "Suspect({node:?})"),
            RmcastEvent::SendWindowOpen => write!(f, "SendWindowOpen"),
        }
    }
}

/// rmcast counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RmcastStats {
    /// Sender: parcels accepted by `send` (all modes).
    pub parcels_sent: u64,
    /// Sender: sequenced fragments transmitted for the first time.
    pub data_sent: u64,
    /// Sender: sequenced fragments retransmitted (answering NACKs).
    pub retransmitted: u64,
    /// Sender: best-effort fragments transmitted.
    pub best_effort_sent: u64,
    /// Sender: `Sync`s transmitted.
    pub syncs_sent: u64,
    /// Sender: `Obsolete` notices transmitted.
    pub obsolete_sent: u64,
    /// Sender: `Start`s transmitted.
    pub starts_sent: u64,
    /// Sender: `NotReceiver`s transmitted.
    pub not_receiver_sent: u64,
    /// Sender: NACKs accepted from current receivers.
    pub nacks_received: u64,
    /// Sender: `Status` advertisements accepted.
    pub statuses_received: u64,
    /// Sender: sequenced parcels acknowledged by every receiver.
    pub parcels_acknowledged: u64,
    /// Sender: timed parcels purged at their deadline.
    pub parcels_expired: u64,
    /// Sender: `send` calls refused with `QueueFull`.
    pub queue_full: u64,
    /// Sender: `Suspect` events.
    pub suspects: u64,
    /// Receiver: sequenced fragments accepted.
    pub data_received: u64,
    /// Receiver: fragments already held, delivered, skipped or not owed.
    pub duplicates: u64,
    /// Receiver: `Hello`s transmitted.
    pub hellos_sent: u64,
    /// Receiver: `Status` advertisements transmitted.
    pub statuses_sent: u64,
    /// Receiver: NACK packets transmitted.
    pub nacks_sent: u64,
    /// Receiver: times a pending NACK was postponed because another
    /// receiver's NACK for the same sequences was heard.
    pub nacks_suppressed: u64,
    /// Receiver: sequenced parcels delivered.
    pub parcels_delivered: u64,
    /// Receiver: best-effort parcels delivered.
    pub best_effort_delivered: u64,
    /// Receiver: timed parcels purged (deadline passed before they could be
    /// delivered).
    pub timed_purged: u64,
    /// Receiver: incomplete best-effort parcels given up.
    pub best_effort_abandoned: u64,
    /// Receiver: stream states dropped (sender removed from the set, new
    /// sender incarnation, `NotReceiver`).
    pub stream_resets: u64,
    /// Dropped packets and fragments, by kind.
    pub drops: DropCounters,
}

/// The sender's side, for introspection ([`Rmcast::sender_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// The next sequence `send` will assign.
    pub next_seq: u64,
    /// Every sequence below this was transmitted (or is obsolete).
    pub next_tx: u64,
    /// Every current receiver acknowledged every sequence below this.
    pub base: u64,
    /// The highest sequence ever transmitted (first send or resend).
    pub max_sent: Option<u64>,
    /// The transmission limit: the smallest MAB of the current receivers
    /// (`u64::MAX` with none).
    pub limit: u64,
    /// Sequenced parcels held (queued or unacknowledged).
    pub held_parcels: usize,
    /// Their bytes.
    pub held_bytes: usize,
    /// Obsolete ranges remembered to answer NACKs.
    pub obsolete_ranges: usize,
}

/// What a sender knows about one receiver ([`Rmcast::receiver_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverInfo {
    /// The receiver's incarnation, once heard.
    pub incarnation: Option<Incarnation>,
    /// The receiver's handshake epoch, once heard.
    pub epoch: Option<u64>,
    /// The receiver is owed the sequenced parcels from this sequence on.
    pub start: u64,
    /// It acknowledged every sequence below this.
    pub acked: u64,
    /// Its MAB as advertised (its `start` until it is heard).
    pub mab: u64,
    /// When it last advertised.
    pub heard_at: Option<Instant>,
    /// Reported as suspect in the current episode.
    pub suspected: bool,
}

/// What a receiver holds for one sender's stream ([`Rmcast::stream_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// The sender's incarnation.
    pub incarnation: Incarnation,
    /// This receiver's handshake epoch for it.
    pub epoch: u64,
    /// `Some` once the handshake is done: (start, next expected sequence,
    /// largest MAB advertised).
    pub synced: Option<(u64, u64, u64)>,
    /// Fragments buffered (held for reassembly, out of order, or waiting
    /// for the handshake).
    pub buffered_fragments: usize,
    /// Sequences waiting to be NACKed or re-NACKed.
    pub missing: usize,
    /// Obsolete ranges remembered ahead of the delivery point.
    pub skipped_ranges: usize,
    /// Incomplete best-effort parcels.
    pub best_effort_partials: usize,
    /// Their bytes.
    pub best_effort_bytes: usize,
}

/// Output and shared state of the two halves: identity, config, RNG, and
/// the queues the driver drains.
#[derive(Debug)]
struct Ctx {
    me: NodeId,
    incarnation: Incarnation,
    group: NodeId,
    config: RmcastConfig,
    rng: ChaCha8Rng,
    next_epoch: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<RmcastEvent>,
    stats: RmcastStats,
}

impl Ctx {
    fn send(&mut self, destination: NodeId, packet: RmcastPacket) {
        let env = Envelope {
            group: self.group,
            packet,
        };
        match env.encode() {
            Ok(body) if body.len() <= MAX_BODY => {
                self.transmits
                    .push_back(Transmit::new(destination, ProtocolId::Rmcast, body))
            }
            // Unreachable with sanitized limits; counted rather than panicking.
            _ => self.stats.drops.record_kind("encode_failed"),
        }
    }

    fn multicast(&mut self, packet: RmcastPacket) {
        let group = self.group;
        self.send(group, packet);
    }

    /// A uniformly random duration in `[0, max]`.
    fn jitter(&mut self, max: Duration) -> Duration {
        let us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        if us == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.rng.random_range(0..=us))
    }

    fn new_epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }
}

/// The reliable multicast core of one node in one group. See the
/// [module docs](self) and `docs/rmcast.md`.
#[derive(Debug)]
pub struct Rmcast {
    ctx: Ctx,
    members: BTreeSet<NodeId>,
    sender: Sender,
    streams: BTreeMap<NodeId, Stream>,
    be_memory: BeMemory,
}

impl Rmcast {
    /// The core of node `me` (in its life `incarnation`) in the group whose
    /// class D address is `group`. `seed` seeds the RNG that draws NACK
    /// delays (the only randomness). The receiver set starts empty.
    pub fn new(
        me: NodeId,
        incarnation: Incarnation,
        group: NodeId,
        config: RmcastConfig,
        seed: u64,
    ) -> Self {
        let config = config.sanitized();
        let remembered = config.remembered_senders;
        Rmcast {
            ctx: Ctx {
                me,
                incarnation,
                group,
                config,
                rng: ChaCha8Rng::seed_from_u64(seed),
                next_epoch: 0,
                transmits: VecDeque::new(),
                events: VecDeque::new(),
                stats: RmcastStats::default(),
            },
            members: BTreeSet::new(),
            sender: Sender::new(),
            streams: BTreeMap::new(),
            be_memory: BeMemory::new(remembered),
        }
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.ctx.me
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.ctx.incarnation
    }

    /// The group address.
    pub fn group(&self) -> NodeId {
        self.ctx.group
    }

    /// The effective (sanitized) configuration.
    pub fn config(&self) -> &RmcastConfig {
        &self.ctx.config
    }

    /// Counters.
    pub fn stats(&self) -> &RmcastStats {
        &self.ctx.stats
    }

    /// The current receiver set (the view, without this node).
    pub fn receivers(&self) -> &BTreeSet<NodeId> {
        &self.members
    }

    /// Sets the current view: the nodes this node sends to (and waits for)
    /// and receives from. This node is ignored if present.
    ///
    /// A node added here is owed every sequenced parcel `send` accepts from
    /// now on (and no earlier one); a node removed no longer holds back the
    /// window, and its stream's state here is dropped (nothing more is
    /// delivered from it).
    pub fn set_receivers(&mut self, now: Instant, receivers: BTreeSet<NodeId>) {
        let mut members = receivers;
        members.remove(&self.ctx.me);
        let gone: Vec<NodeId> = self
            .streams
            .keys()
            .filter(|n| !members.contains(n))
            .copied()
            .collect();
        for n in gone {
            self.streams.remove(&n);
            self.ctx.stats.stream_resets += 1;
        }
        self.members = members;
        self.sender.set_receivers(now, &self.members, &mut self.ctx);
    }

    /// Sends `payload` to the group in mode `mode`; returns its parcel id.
    /// A sequenced parcel waits in the send buffer while the window does
    /// not admit it; a best-effort parcel is transmitted at once.
    pub fn send(
        &mut self,
        now: Instant,
        payload: Vec<u8>,
        mode: Delivery,
    ) -> Result<ParcelId, SendError> {
        self.sender.send(now, payload, mode, &mut self.ctx)
    }

    /// The sender's state.
    pub fn sender_info(&self) -> SenderInfo {
        self.sender.info()
    }

    /// What the sender knows about current receiver `node`.
    pub fn receiver_info(&self, node: NodeId) -> Option<ReceiverInfo> {
        self.sender.receiver_info(node)
    }

    /// What this node holds of `sender`'s stream.
    pub fn stream_info(&self, sender: NodeId) -> Option<StreamInfo> {
        self.streams.get(&sender).map(|s| s.info())
    }
}

/// The stream of `source`, creating it (or starting it over for a new
/// incarnation) for a member; `None` (counted) for a non-member or a stale
/// incarnation.
fn stream_for<'a>(
    streams: &'a mut BTreeMap<NodeId, Stream>,
    members: &BTreeSet<NodeId>,
    ctx: &mut Ctx,
    source: NodeId,
    inc: Incarnation,
) -> Option<&'a mut Stream> {
    if !members.contains(&source) {
        ctx.stats.drops.record_kind("data_from_non_member");
        return None;
    }
    match streams.get(&source).map(|s| s.incarnation) {
        Some(known) if inc < known => {
            ctx.stats.drops.record_kind("stale_incarnation");
            return None;
        }
        Some(known) if inc > known => {
            streams.remove(&source);
            ctx.stats.stream_resets += 1;
        }
        _ => {}
    }
    Some(
        streams
            .entry(source)
            .or_insert_with(|| Stream::new(inc, ctx.new_epoch(), &ctx.config)),
    )
}

impl Core for Rmcast {
    type Event = RmcastEvent;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        let drops = |s: &mut Self, kind| s.ctx.stats.drops.record_kind(kind);
        if packet.protocol != ProtocolId::Rmcast {
            return drops(self, "wrong_protocol");
        }
        if packet.body.len() > MAX_BODY {
            return drops(self, "oversized_body");
        }
        let Ok(env) = Envelope::decode(packet.body) else {
            return drops(self, "bad_body");
        };
        if env.group != self.ctx.group {
            return drops(self, "wrong_group");
        }
        let (source, inc) = (packet.source, packet.source_incarnation);
        if source == self.ctx.me {
            return drops(self, "own_packet");
        }
        if packet.destination != self.ctx.group && packet.destination != self.ctx.me {
            return drops(self, "wrong_destination");
        }
        let max_parcel = self.ctx.config.max_parcel;
        match env.packet {
            RmcastPacket::Data(d) => {
                if let Err(kind) = d.check(max_parcel) {
                    return drops(self, kind);
                }
                if let Some(s) =
                    stream_for(&mut self.streams, &self.members, &mut self.ctx, source, inc)
                {
                    s.on_data(now, source, d, &mut self.ctx);
                }
            }
            RmcastPacket::BestEffort(f) => {
                if let Err(kind) = f.check(max_parcel) {
                    return drops(self, kind);
                }
                if let Some(s) =
                    stream_for(&mut self.streams, &self.members, &mut self.ctx, source, inc)
                {
                    s.on_best_effort(now, source, f, &mut self.be_memory, &mut self.ctx);
                }
            }
            RmcastPacket::Sync(y) => {
                if let Some(s) =
                    stream_for(&mut self.streams, &self.members, &mut self.ctx, source, inc)
                {
                    s.on_sync(now, source, y, &mut self.ctx);
                }
            }
            RmcastPacket::Obsolete(o) => {
                if o.from >= o.to {
                    return drops(self, "malformed_obsolete");
                }
                if let Some(s) =
                    stream_for(&mut self.streams, &self.members, &mut self.ctx, source, inc)
                {
                    s.on_obsolete(now, source, o, &mut self.ctx);
                }
            }
            RmcastPacket::Nack(n) => {
                if !n.is_well_formed() {
                    return drops(self, "malformed_nack");
                }
                if n.sender == self.ctx.me {
                    if n.sender_incarnation != self.ctx.incarnation {
                        return drops(self, "wrong_incarnation");
                    }
                    self.sender.on_nack(now, source, inc, &n, &mut self.ctx);
                } else if self.members.contains(&source) {
                    // Another receiver's NACK: suppression.
                    if let Some(s) = self
                        .streams
                        .get_mut(&n.sender)
                        .filter(|s| s.incarnation == n.sender_incarnation)
                    {
                        s.on_nack_heard(now, &n, &mut self.ctx);
                    }
                }
            }
            RmcastPacket::Hello(h) => {
                if h.sender_incarnation != self.ctx.incarnation {
                    return drops(self, "wrong_incarnation");
                }
                self.sender.on_hello(now, source, inc, h, &mut self.ctx);
            }
            RmcastPacket::Status(st) => {
                if st.sender_incarnation != self.ctx.incarnation {
                    return drops(self, "wrong_incarnation");
                }
                self.sender.on_status(now, source, inc, st, &mut self.ctx);
            }
            RmcastPacket::Start(st) => {
                if st.receiver_incarnation != self.ctx.incarnation {
                    return drops(self, "wrong_incarnation");
                }
                match self.streams.get_mut(&source) {
                    Some(s) if s.incarnation == inc && self.members.contains(&source) => {
                        s.on_start(now, source, st, &mut self.ctx)
                    }
                    _ => drops(self, "unexpected_start"),
                }
            }
            RmcastPacket::NotReceiver(nr) => {
                if nr.receiver_incarnation != self.ctx.incarnation {
                    return drops(self, "wrong_incarnation");
                }
                match self.streams.get_mut(&source) {
                    Some(s) if s.incarnation == inc => s.on_not_receiver(nr, &mut self.ctx),
                    _ => drops(self, "unexpected_not_receiver"),
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.sender.on_timeout(now, &mut self.ctx);
        for (node, s) in self.streams.iter_mut() {
            s.on_timeout(now, *node, &mut self.ctx);
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.ctx.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<RmcastEvent> {
        self.ctx.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.sender.next_deadline(&self.ctx.config);
        for s in self.streams.values() {
            t = earliest(t, s.next_deadline());
        }
        t
    }
}
