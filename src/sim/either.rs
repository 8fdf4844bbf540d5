//! Two kinds of core in one simulation: [`Either`] runs one or the other on
//! each node (for example mservers and member interfaces on one simulated
//! LAN), and reports [`EitherEvent`]s. It only forwards (DESIGN.md
//! section 3); the [`Simulator`](super::Simulator) is generic over one core
//! type, and this is that type.

use crate::id::NodeId;
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;

/// A node running core `A` or core `B`.
#[derive(Debug)]
pub enum Either<A, B> {
    /// A node of the first kind.
    Left(A),
    /// A node of the second kind.
    Right(B),
}

/// An event of an [`Either`] node: its core's event.
#[derive(Debug)]
pub enum EitherEvent<A, B> {
    /// From a [`Either::Left`] node.
    Left(A),
    /// From a [`Either::Right`] node.
    Right(B),
}

impl<A: Core, B: Core> Core for Either<A, B> {
    type Event = EitherEvent<A::Event, B::Event>;

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        match self {
            Either::Left(a) => a.handle_packet(now, packet),
            Either::Right(b) => b.handle_packet(now, packet),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Either::Left(a) => a.handle_timeout(now),
            Either::Right(b) => b.handle_timeout(now),
        }
    }

    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        match self {
            Either::Left(a) => a.handle_unreachable(now, node),
            Either::Right(b) => b.handle_unreachable(now, node),
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            Either::Left(a) => a.poll_transmit(),
            Either::Right(b) => b.poll_transmit(),
        }
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        match self {
            Either::Left(a) => a.poll_event().map(EitherEvent::Left),
            Either::Right(b) => b.poll_event().map(EitherEvent::Right),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Either::Left(a) => a.poll_timeout(),
            Either::Right(b) => b.poll_timeout(),
        }
    }
}
