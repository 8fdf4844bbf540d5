//! The sans-IO contract every protocol core follows (DESIGN.md section 3).
//!
//! A core is a pure state machine. Its driver (the simulator in
//! [`crate::sim`], or the actix driver in `crate::runtime`) owns the clock,
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
    /// Relayed by an mcaster.
    pub relayed: bool,
    /// The encoded body.
    pub body: &'a [u8],
}

/// A datagram a core wants sent. The driver adds the header (its own
/// address and incarnation as source) and seals it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// A node or a multicast group address.
    pub destination: NodeId,
    /// The protocol of the body.
    pub protocol: ProtocolId,
    /// The encoded body (at most [`crate::wire::MAX_BODY`] bytes).
    pub body: Vec<u8>,
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
}
