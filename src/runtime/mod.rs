//! The runtime: the only real I/O in this crate (DESIGN.md section 4).
//!
//! The protocol cores are sans-IO state machines ([`crate::sansio`]); this
//! module runs them for real, under actix (0.13, on the actix-rt/tokio
//! runtime):
//!
//! - [`clock`]: maps `std::time::Instant` to the cores' [`Instant`] and back,
//!   and mints incarnations. With the daemons, the only code that reads a
//!   clock.
//! - [`socket`]: [`SocketActor`], one per UDP socket, the owner of the
//!   socket, the wire codec, the interceptor pipeline, the protocol queues
//!   and the counters. Inbound datagrams are checked by the wire codec
//!   (rejects are dropped, counted and logged at a limited rate), passed
//!   through the inbound interceptors and demultiplexed by [`ProtocolId`].
//!   Outbound [`Transmit`](crate::sansio::Transmit)s get our header, pass
//!   the outbound interceptors, are sealed and sent.
//! - [`interceptor`]: the interceptor pipelines (seed 001, section 5.6): a
//!   traffic counter, a filter (firewall), and the fault injector (loss,
//!   delay, duplication, `block`, one-way `block_in`) that tests and
//!   `msctl fault` switch at run time with [`SetFaults`].
//! - [`driver`]: [`CoreDriver`], a generic actor that runs any [`Core`] on a
//!   socket: inputs in, `poll_transmit` to the socket, `poll_event` to the
//!   owner, one timer at `poll_timeout`. No protocol logic.
//! - [`queue`]: the bounded drop-oldest queues between the socket and the
//!   cores added with [`CoreDriver::start_on`].
//! - [`multicast`]: joining IPv4 groups, the explicit send options of
//!   sockets that send to groups ([`MulticastSend`]: interface, TTL,
//!   loopback) and [`probe_multicast`] for `--multicast auto`.
//! - [`watch`]: [`CrashWatch`] and [`CrashWatchListener`], idle TCP
//!   connections that turn a watched process's death into an immediate
//!   [`NodeUnreachable`] hint.
//! - `recverr` (private): on Linux, `IP_RECVERR` on the UDP sockets and
//!   the reading of their error queue, which turns an ICMP "port
//!   unreachable" (a crashed process on a live host) into an immediate
//!   hint.
//!
//! # Unreachable reports
//!
//! A core learns that a node is unreachable
//! ([`Core::handle_unreachable`]) from two sources. The crash watch
//! ([`watch`]): the watched process's idle TCP connection closes when it
//! dies, and the watcher sends [`NodeUnreachable`] to the driver. And the
//! UDP error queue: the socket is bound with `IP_RECVERR`, so the host's
//! ICMP port-unreachable answer to one of our datagrams is queued with the
//! start of that datagram; the receive loop of the primary driver reads
//! it (at most 64 entries per wake-up), takes the destination from our wire
//! header in it, and calls the core directly, at most once per destination
//! per 10 ms (`SocketStats::unreachable_hints`). Only datagrams sent
//! straight to their destination count (not via a relay or the mcaster);
//! cores added with [`CoreDriver::start_on`] get no UDP hints, and on other
//! systems than Linux there are none.
//!
//! # Running a core
//!
//! Inside an actix system (`#[actix_rt::main]`, `#[actix_rt::test]`, or
//! `actix::System::new().block_on(..)`):
//!
//! ```no_run
//! # use membership::runtime::*;
//! # use membership::id::ProtocolId;
//! # use membership::sansio::{Core, Incoming, Transmit};
//! # use membership::time::Instant;
//! # struct Echo;
//! # impl Core for Echo {
//! #     type Event = u32;
//! #     fn handle_packet(&mut self, _: Instant, _: Incoming<'_>) {}
//! #     fn handle_timeout(&mut self, _: Instant) {}
//! #     fn poll_transmit(&mut self) -> Option<Transmit> { None }
//! #     fn poll_event(&mut self) -> Option<u32> { None }
//! #     fn poll_timeout(&self) -> Option<Instant> { None }
//! # }
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let SpawnedCore { handle, mut events } =
//!     spawn_core(SocketOptions::localhost(), &[ProtocolId::Test], |_ctx| Echo)?;
//! // A command: a closure run on the core, its result returned.
//! let answer = handle.with_core(|_core, _now| 42).await?;
//! // Faults at run time.
//! handle.set_faults(FaultConfig::clear().with_drop_pct(20.0)).await?;
//! // Events.
//! let first = events.recv().await;
//! # Ok(()) }
//! ```
//!
//! Several cores can share one socket (distinct protocols): start the first
//! with [`spawn_core`], the others with [`CoreDriver::start_on`].
//!
//! # The hot path
//!
//! [`spawn_core`] starts the socket actor and its *primary* driver on the
//! same thread (the current arbiter), sharing the socket's state (a plain
//! struct behind `Rc<RefCell<..>>`: the socket, codec, interceptors, queues,
//! backlog and counters), so that a datagram needs no actor message on its
//! way in or out:
//!
//! - **out**: the driver drains its core's transmits and calls the socket's
//!   outbound path itself (header, outbound interceptors, seal, a
//!   non-blocking `sendto`; when the kernel's send buffer is full, a backlog
//!   of at most 1024 datagrams in order, beyond which they are dropped as
//!   `"send_backlog"`);
//! - **in**: the driver owns the socket's receive loop. One wake-up reads
//!   every datagram that is ready (at most 64, then it yields to its
//!   mailbox), runs each through the inbound path (codec, drop counters,
//!   inbound interceptors), hands packets of its own protocols straight to
//!   its core and sends what the core answers at once; packets of other
//!   protocols go into their subscribers' bounded queues, with one
//!   [`PacketsReady`] wake-up per batch. The timer is re-armed once per
//!   batch.
//!
//! Only what needs a timer goes through the socket actor: interceptor
//! delays (a delayed inbound packet then reaches even the primary core
//! through its queue) and waiting for a full send buffer to drain. The
//! control messages ([`SetFaults`], [`GetStats`], [`Subscribe`],
//! [`RelaySend`], [`JoinMulticast`], [`StopSocket`], ...) still go to the
//! socket actor and act on the same shared state. Cores added with
//! [`CoreDriver::start_on`] (possibly from another thread) use messages both
//! ways: [`PacketsReady`] and their queue in, [`SendPackets`] out.
//!
//! # Bounds
//!
//! Nothing between the kernel and a core grows without bound, and the
//! receive loop never waits for a core other than the primary one. Queued
//! protocols are bounded by their queue (drop-oldest, counted as
//! `"queue_full"`, seed 000 section 1.2). The primary core has no queue: it
//! runs inside the receive loop, so a slow primary core slows reading, and
//! datagrams then wait in the kernel's receive buffer (`SO_RCVBUF`,
//! [`SocketOptions::recv_buffer`], 4 MiB requested by default), which drops
//! what does not fit (counted by the kernel, not here) and never blocks a
//! sender. Interceptor delays are bounded by [`SocketOptions::max_delayed`].
//!
//! # Stopping
//!
//! [`CoreHandle::stop`] stops both actors. [`StopSocket`] alone closes the
//! socket at once and ends the receive loop wherever it runs (the driver's
//! later sends are dropped as `"socket_stopped"`); [`StopDriver`] alone on
//! the primary driver hands the receive loop back to the socket actor, so
//! that the other cores on the socket keep receiving.

pub mod clock;
pub mod driver;
pub mod group_socket;
pub mod interceptor;
pub mod logging;
pub mod multicast;
pub mod queue;
mod recverr;
pub mod socket;
mod socket_io;
mod socket_types;
pub mod watch;

pub use clock::{new_incarnation, Clock};
pub use driver::{
    CoreDriver, CoreEvent, CoreHandle, DriverStats, EventSink, GetDriverStats, NodeUnreachable,
    RuntimeError, StopDriver, WithCore,
};
pub use group_socket::GroupSocket;
pub use interceptor::{
    Direction, FaultConfig, FaultConfigError, FaultInjector, Filter, FilterConfig, Interceptor,
    PacketInfo, Pipeline, TrafficCounter, TrafficCounts, TrafficSnapshot, Verdict,
};
pub use multicast::{probe_multicast, MulticastCapability, MulticastOptions, MulticastSend};
pub use queue::{BoundedQueue, InboundPacket, PacketQueue};
pub use socket::{
    AddInterceptor, GetFaults, GetFilter, GetLocal, GetStats, JoinMulticast, LeaveMulticast,
    LocalInfo, PacketsReady, ProtocolStats, RelayPacket, RelaySend, SendPackets, SetFaults,
    SetFilter, SetIncarnation, SetKeyRing, SocketActor, SocketOptions, SocketStats, StopSocket,
    Subscribe, Unsubscribe,
};
pub use watch::{CrashWatch, CrashWatchListener};

use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::sansio::Core;
use crate::time::Instant;
use actix::prelude::*;
use std::io;
use tokio::sync::mpsc;

/// What a core factory gets to build its core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreContext {
    /// This node's id (the address in its headers).
    pub local: NodeId,
    /// This node's incarnation.
    pub incarnation: Incarnation,
    /// The current time.
    pub now: Instant,
}

/// A core started by [`spawn_core`]: its handle and its events.
#[derive(Debug)]
pub struct SpawnedCore<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    /// Addresses of the driver and the socket.
    pub handle: CoreHandle<C>,
    /// The core's events, in order.
    pub events: mpsc::UnboundedReceiver<C::Event>,
}

/// Binds a socket as `options` say, builds a core with `factory` (which
/// learns the bound address and the incarnation), and starts a
/// [`CoreDriver`] for it subscribed to `protocols`. Events arrive on the
/// returned channel. Must be called inside a running actix system.
pub fn spawn_core<C, F>(
    options: SocketOptions,
    protocols: &[ProtocolId],
    factory: F,
) -> io::Result<SpawnedCore<C>>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
    F: FnOnce(CoreContext) -> C,
{
    let (sink, events) = EventSink::channel();
    let handle = spawn_core_with(options, protocols, sink, factory)?;
    Ok(SpawnedCore { handle, events })
}

/// [`spawn_core`] with an explicit [`EventSink`] (e.g. an actor's
/// [`Recipient`] of [`CoreEvent`]).
pub fn spawn_core_with<C, F>(
    options: SocketOptions,
    protocols: &[ProtocolId],
    events: EventSink<C::Event>,
    factory: F,
) -> io::Result<CoreHandle<C>>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
    F: FnOnce(CoreContext) -> C,
{
    let mut socket = SocketActor::bind(options)?;
    let local = socket.local();
    // The driver's address exists before the driver runs, so its queues are
    // registered and the receive loop is its own before the socket starts:
    // nothing is missed.
    let ctx: Context<CoreDriver<C>> = Context::new();
    let (queues, io) = socket.attach_primary(protocols, ctx.address().recipient());
    let socket = socket.start();
    let core = factory(CoreContext {
        local: local.node,
        incarnation: local.incarnation,
        now: Clock::now(),
    });
    let driver = ctx.run(CoreDriver::primary(
        core,
        socket.clone(),
        io,
        queues,
        events,
    ));
    Ok(CoreHandle::new(
        driver,
        socket,
        local.node,
        local.incarnation,
    ))
}
