//! The sans-IO contract every protocol core follows (DESIGN.md section 3).
//!
//! A core is a pure state machine. Its driver (the simulator in `sim`, or
//! the actix driver in `runtime`, both above this module) owns the clock,
//! the sockets and the timer, and calls it in this order:
//!
//! 1. an input: [`Core::handle_packet`] for a datagram that passed the wire
//!    checks, [`Core::handle_timeout`] when the deadline from
//!    `poll_timeout` has come, [`Core::handle_unreachable`] when the host
//!    reported a destination unreachable, or a core-specific command (e.g.
//!    `Rpc::call`), always with `now`;
//! 2. drain [`Core::poll_transmit`] until `None`, sealing each [`Transmit`]
//!    with the wire codec and sending it;
//! 3. drain [`Core::poll_event`] until `None`, handing events to the layer
//!    above;
//! 4. re-arm a single timer at [`Core::poll_timeout`] (`None`: no timer).
//!
//! A core never reads a clock, sleeps, spawns, touches a socket or uses a
//! thread RNG; it iterates in a deterministic order. `tests/purity.rs` and
//! clippy's `disallowed-methods` (clippy.toml) enforce the first part.

use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::time::Instant;
use std::fmt::Debug;

/// A datagram, as delivered to a core after the wire checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming<'a> {
    /// The original sender (even when relayed).
    pub source: NodeId,
    /// The sender's incarnation.
    pub source_incarnation: Incarnation,
    /// Where it was addressed (this node, or a multicast group).
    pub destination: NodeId,
    /// The protocol the body belongs to.
    pub protocol: ProtocolId,
    /// Relayed by an mcaster: the header says so, or the datagram came from
    /// a UDP peer other than `source` (the mcaster forwards byte-for-byte,
    /// so its copies name the original sender).
    pub relayed: bool,
    /// The encoded body.
    pub body: &'a [u8],
    /// The UDP address the datagram came from: `source` when it came
    /// straight from its sender, the relay (an mcaster) when relayed.
    pub peer: NodeId,
    /// The whole datagram as received (header, body, authentication
    /// trailer), for a relay that forwards it unchanged
    /// ([`Transmit::forward`]). Cores that only read `body` ignore it; a
    /// driver that has no datagram (a unit test) may leave it empty.
    pub datagram: &'a [u8],
}

impl<'a> Incoming<'a> {
    /// A datagram received straight from `source` (peer = source, no
    /// datagram bytes): a convenience for tests and hand-written drivers.
    pub fn direct(
        source: NodeId,
        source_incarnation: Incarnation,
        destination: NodeId,
        protocol: ProtocolId,
        body: &'a [u8],
    ) -> Self {
        Incoming {
            source,
            source_incarnation,
            destination,
            protocol,
            relayed: false,
            body,
            peer: source,
            datagram: &[],
        }
    }
}

/// A datagram a core wants sent.
///
/// Normally ([`Transmit::new`]) the driver adds the header (its own address
/// and incarnation as source, `destination` as destination), seals it, and
/// sends it by UDP to `via` if set, else to `destination` (a node, or a
/// multicast group address). The runtime may route group destinations to
/// an mcaster (`SocketOptions::mcaster`).
///
/// A *forward* ([`Transmit::forward`]) carries a datagram sealed elsewhere
/// in `body`: the driver sends those bytes unchanged to `destination`
/// (a node or a group address), without header, sealing or routing. This
/// is how the mcaster relays (seed 003, section IV.A): the datagram keeps
/// naming its original sender, and its authentication tag stays valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// A node or a multicast group address (for a forward: the UDP address
    /// to send the bytes to).
    pub destination: NodeId,
    /// The protocol of the body (for a forward: of the datagram, for the
    /// counters).
    pub protocol: ProtocolId,
    /// The encoded body (at most [`crate::wire::MAX_BODY`] bytes); for a
    /// forward, the whole sealed datagram.
    pub body: Vec<u8>,
    /// The UDP next hop when it is not `destination` (e.g. a packet whose
    /// header names a group, sent by unicast to an mcaster). Ignored for a
    /// forward.
    pub via: Option<NodeId>,
    /// `body` is a whole datagram sealed elsewhere, to send unchanged.
    pub sealed: bool,
}

impl Transmit {
    /// A body for `destination`, sealed by the driver.
    pub fn new(destination: NodeId, protocol: ProtocolId, body: Vec<u8>) -> Self {
        Transmit {
            destination,
            protocol,
            body,
            via: None,
            sealed: false,
        }
    }

    /// A datagram sealed elsewhere, sent unchanged by UDP to `to`.
    pub fn forward(to: NodeId, protocol: ProtocolId, datagram: Vec<u8>) -> Self {
        Transmit {
            destination: to,
            protocol,
            body: datagram,
            via: None,
            sealed: true,
        }
    }

    /// The same transmit, sent by UDP to `hop` (its header still names
    /// `destination`).
    pub fn with_via(mut self, hop: NodeId) -> Self {
        self.via = Some(hop);
        self
    }

    /// Where the UDP datagram goes, unless the runtime routes groups to an
    /// mcaster: `destination` for a forward, else `via` or `destination`.
    pub fn next_hop(&self) -> NodeId {
        if self.sealed {
            self.destination
        } else {
            self.via.unwrap_or(self.destination)
        }
    }
}

/// A sans-IO protocol state machine.
pub trait Core {
    /// What the core reports to the layer above.
    type Event: Debug;

    /// A datagram for one of this core's protocols arrived.
    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>);

    /// The deadline last returned by [`Core::poll_timeout`] has passed
    /// (calling it early or spuriously must be harmless).
    fn handle_timeout(&mut self, now: Instant);

    /// The host reported `node` unreachable (ICMP port unreachable, or a
    /// refused send): a strong hint that its process died. The default
    /// ignores it.
    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        let _ = (now, node);
    }

    /// The next datagram to send, if any.
    #[must_use]
    fn poll_transmit(&mut self) -> Option<Transmit>;

    /// The next event for the layer above, if any.
    #[must_use]
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// When [`Core::handle_timeout`] should next be called (`None`: no timer).
    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;

    /// A one-line description of a datagram body of this core's protocol,
    /// for traces (the simulator's `SIM_TRACE`). The default describes
    /// nothing.
    fn describe_packet(body: &[u8]) -> Option<String>
    where
        Self: Sized,
    {
        let _ = body;
        None
    }
}

/// A boxed core is a core (keeps a `sim::Either` of two cores of very
/// different sizes small).
impl<C: Core + ?Sized> Core for Box<C> {
    type Event = C::Event;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        (**self).handle_packet(now, packet)
    }

    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now)
    }

    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        (**self).handle_unreachable(now, node)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        (**self).poll_transmit()
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        (**self).poll_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
}
