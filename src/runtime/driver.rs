//! The generic driver: one actix actor that runs any sans-IO [`Core`]
//! (DESIGN.md section 3).
//!
//! [`CoreDriver<C>`] subscribes to the queues of its core's protocols on a
//! [`SocketActor`] and follows the contract of [`crate::sansio`]:
//!
//! 1. an input, always with `now` from [`Clock::now`]:
//!    - a [`PacketsReady`] from the socket: every waiting packet goes to
//!      [`Core::handle_packet`];
//!    - its single timer: [`Core::handle_timeout`];
//!    - a [`NodeUnreachable`] message: [`Core::handle_unreachable`];
//!    - a [`WithCore`] message: a closure run on the core (commands such as
//!      `rpc.call(..)`, or queries), whose result goes back to the caller;
//! 2. drain [`Core::poll_transmit`] into [`SendPackets`] on the socket actor
//!    (one message per batch of inputs, in order);
//! 3. drain [`Core::poll_event`] into the [`EventSink`];
//! 4. re-arm its one timer at [`Core::poll_timeout`] (the previous timer is
//!    cancelled when the deadline changes; `None`: no timer).
//!
//! The driver has no protocol logic: it never looks at what a packet, event
//! or deadline means.
//!
//! **Events.** They reach the owner through an [`EventSink`]: by default an
//! unbounded tokio mpsc channel (what [`crate::runtime::spawn_core`] returns;
//! easy to await from `#[actix_rt::main]` programs and `#[actix_rt::test]`
//! tests), or an actix [`Recipient`] of [`CoreEvent`] for actor owners. The
//! channel is unbounded because events (view changes, RPC replies) must not
//! be lost: the owner must keep reading it. If the owner drops its end,
//! events are discarded (logged once).

use super::clock::Clock;
use super::queue::PacketQueue;
use super::socket::{PacketsReady, SendPackets, SocketActor, Subscribe};
use crate::id::{NodeId, ProtocolId};
use crate::sansio::{Core, Transmit};
use crate::time::Instant;
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::mpsc;

/// An event from a core, for owners that are actors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreEvent<E>(pub E);

impl<E: 'static> Message for CoreEvent<E> {
    type Result = ();
}

/// Where a driver hands its core's events.
#[derive(Debug)]
pub enum EventSink<E: Send + 'static> {
    /// An unbounded tokio channel.
    Channel(mpsc::UnboundedSender<E>),
    /// An actor.
    Recipient(Recipient<CoreEvent<E>>),
    /// Nowhere (the core's events are not wanted).
    Discard,
}

impl<E: Send + 'static> EventSink<E> {
    /// A channel sink and its receiving end.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<E>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSink::Channel(tx), rx)
    }

    /// Hands over one event; returns `false` (and becomes [`EventSink::Discard`])
    /// if the receiver is gone.
    fn deliver(&mut self, event: E) -> bool {
        let delivered = match self {
            EventSink::Channel(tx) => tx.send(event).is_ok(),
            EventSink::Recipient(r) => {
                if r.connected() {
                    r.do_send(CoreEvent(event));
                    true
                } else {
                    false
                }
            }
            EventSink::Discard => return true,
        };
        if !delivered {
            tracing::debug!("event receiver gone; discarding further events");
            *self = EventSink::Discard;
        }
        delivered
    }
}

/// Runs a closure on the core with the current time, then drains its
/// outputs and re-arms its timer; answers the closure's result. This is how
/// an owner issues commands (e.g. `rpc.call(..)`) and queries.
pub struct WithCore<C, R> {
    f: CoreFn<C, R>,
}

/// The closure inside a [`WithCore`].
type CoreFn<C, R> = Box<dyn FnOnce(&mut C, Instant) -> R + Send>;

impl<C, R> WithCore<C, R> {
    /// Wraps `f`.
    pub fn new(f: impl FnOnce(&mut C, Instant) -> R + Send + 'static) -> Self {
        WithCore { f: Box::new(f) }
    }
}

impl<C, R> std::fmt::Debug for WithCore<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WithCore(..)")
    }
}

impl<C: 'static, R: 'static> Message for WithCore<C, R> {
    type Result = R;
}

/// The host reported `0` unreachable: calls [`Core::handle_unreachable`].
/// (The socket actor cannot attribute ICMP errors yet; see
/// [`crate::runtime::socket`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct NodeUnreachable(pub NodeId);

/// Answers the driver's [`DriverStats`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "DriverStats")]
pub struct GetDriverStats;

/// Stops the driver (its queues are dropped by the socket at their next
/// packet).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopDriver;

/// What a driver has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverStats {
    /// Packets handed to the core.
    pub packets: u64,
    /// Timer expiries handed to the core.
    pub timeouts: u64,
    /// Commands ([`WithCore`]) run.
    pub commands: u64,
    /// Unreachable reports handed to the core.
    pub unreachable: u64,
    /// Datagrams the core asked to send.
    pub transmits: u64,
    /// Events the core reported.
    pub events: u64,
    /// Times a new timer was set.
    pub timer_arms: u64,
}

/// Runs a core `C` on a [`SocketActor`]; see the module docs.
pub struct CoreDriver<C: Core>
where
    C::Event: Send + 'static,
{
    core: C,
    socket: Addr<SocketActor>,
    queues: Vec<Arc<PacketQueue>>,
    events: EventSink<C::Event>,
    timer: Option<(Instant, SpawnHandle)>,
    outbox: Vec<Transmit>,
    stats: DriverStats,
}

impl<C: Core> std::fmt::Debug for CoreDriver<C>
where
    C::Event: Send + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreDriver")
            .field("timer", &self.timer.as_ref().map(|t| t.0))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<C> CoreDriver<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    /// A driver for `core` that has already subscribed to its `queues` on
    /// `socket` (see [`SocketActor::subscribe`]); start it with
    /// `Context::run` on the context whose address the queues wake.
    pub fn new(
        core: C,
        socket: Addr<SocketActor>,
        queues: Vec<Arc<PacketQueue>>,
        events: EventSink<C::Event>,
    ) -> Self {
        CoreDriver {
            core,
            socket,
            queues,
            events,
            timer: None,
            outbox: Vec::new(),
            stats: DriverStats::default(),
        }
    }

    /// Starts a driver for `core` on a running socket actor, subscribed to
    /// `protocols` (queues of the socket's default capacity). No packet for
    /// those protocols is lost between subscribing and starting: they wait
    /// in the queues.
    pub async fn start_on(
        socket: Addr<SocketActor>,
        protocols: &[ProtocolId],
        core: C,
        events: EventSink<C::Event>,
    ) -> Result<Addr<Self>, MailboxError> {
        let ctx: Context<Self> = Context::new();
        let addr = ctx.address();
        let mut queues = Vec::with_capacity(protocols.len());
        for &protocol in protocols {
            let q = socket
                .send(Subscribe {
                    protocol,
                    capacity: None,
                    waker: addr.clone().recipient(),
                })
                .await?;
            queues.push(q);
        }
        Ok(ctx.run(CoreDriver::new(core, socket, queues, events)))
    }

    /// Steps 2-4 of the contract after an input: drain transmits and events,
    /// flush transmits to the socket, re-arm the timer.
    fn after_input(&mut self, ctx: &mut Context<Self>) {
        self.drain();
        self.flush();
        self.rearm(ctx);
    }

    fn drain(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            self.stats.transmits += 1;
            self.outbox.push(t);
        }
        while let Some(e) = self.core.poll_event() {
            self.stats.events += 1;
            self.events.deliver(e);
        }
    }

    fn flush(&mut self) {
        if !self.outbox.is_empty() {
            self.socket
                .do_send(SendPackets(std::mem::take(&mut self.outbox)));
        }
    }

    fn rearm(&mut self, ctx: &mut Context<Self>) {
        let next = self.core.poll_timeout();
        if self.timer.as_ref().map(|t| t.0) == next {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(deadline) = next {
            self.stats.timer_arms += 1;
            let handle = ctx.run_later(Clock::until(deadline), |act, ctx| {
                act.timer = None;
                act.stats.timeouts += 1;
                act.core.handle_timeout(Clock::now());
                act.after_input(ctx);
            });
            self.timer = Some((deadline, handle));
        }
    }
}

impl<C> Actor for CoreDriver<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A fresh core may already have datagrams, events or a deadline.
        self.after_input(ctx);
    }
}

impl<C> Handler<PacketsReady> for CoreDriver<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    type Result = ();

    fn handle(&mut self, _: PacketsReady, ctx: &mut Self::Context) {
        // Any wake-up drains every queue of this core; later wake-ups for
        // queues already drained find them empty.
        for i in 0..self.queues.len() {
            let batch = self.queues[i].take_all();
            for packet in batch {
                self.stats.packets += 1;
                self.core.handle_packet(Clock::now(), packet.incoming());
                self.drain();
            }
        }
        self.flush();
        self.rearm(ctx);
    }
}

impl<C, R> Handler<WithCore<C, R>> for CoreDriver<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
    R: 'static,
{
    type Result = MessageResult<WithCore<C, R>>;

    fn handle(&mut self, msg: WithCore<C, R>, ctx: &mut Self::Context) -> Self::Result {
        self.stats.commands += 1;
        let r = (msg.f)(&mut self.core, Clock::now());
        self.after_input(ctx);
        MessageResult(r)
    }
}

impl<C> Handler<NodeUnreachable> for CoreDriver<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    type Result = ();

    fn handle(&mut self, msg: NodeUnreachable, ctx: &mut Self::Context) {
        self.stats.unreachable += 1;
        self.core.handle_unreachable(Clock::now(), msg.0);
        self.after_input(ctx);
    }
}

impl<C> Handler<GetDriverStats> for CoreDriver<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    type Result = MessageResult<GetDriverStats>;

    fn handle(&mut self, _: GetDriverStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.stats)
    }
}

impl<C> Handler<StopDriver> for CoreDriver<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    type Result = ();

    fn handle(&mut self, _: StopDriver, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Addresses of a running core and its socket, with shortcuts for the
/// common messages.
pub struct CoreHandle<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    /// The driver.
    pub driver: Addr<CoreDriver<C>>,
    /// The socket actor.
    pub socket: Addr<SocketActor>,
    /// The node id in this socket's headers.
    pub local: NodeId,
    /// The incarnation the socket started with.
    pub incarnation: crate::id::Incarnation,
}

impl<C> Clone for CoreHandle<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    fn clone(&self) -> Self {
        CoreHandle {
            driver: self.driver.clone(),
            socket: self.socket.clone(),
            local: self.local,
            incarnation: self.incarnation,
        }
    }
}

impl<C> std::fmt::Debug for CoreHandle<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreHandle")
            .field("local", &self.local)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl<C> CoreHandle<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    /// Bundles the addresses.
    pub fn new(
        driver: Addr<CoreDriver<C>>,
        socket: Addr<SocketActor>,
        local: NodeId,
        incarnation: crate::id::Incarnation,
    ) -> Self {
        CoreHandle {
            driver,
            socket,
            local,
            incarnation,
        }
    }

    /// Runs `f` on the core (see [`WithCore`]) and answers its result.
    pub async fn with_core<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut C, Instant) -> R + Send + 'static,
    ) -> Result<R, MailboxError> {
        self.driver.send(WithCore::new(f)).await
    }

    /// Replaces the socket's fault injection (see
    /// [`crate::runtime::SetFaults`]); answers the previous faults.
    pub async fn set_faults(
        &self,
        faults: super::interceptor::FaultConfig,
    ) -> Result<super::interceptor::FaultConfig, super::RuntimeError> {
        Ok(self.socket.send(super::socket::SetFaults(faults)).await??)
    }

    /// The socket's counters.
    pub async fn socket_stats(&self) -> Result<super::socket::SocketStats, MailboxError> {
        self.socket.send(super::socket::GetStats).await
    }

    /// The driver's counters.
    pub async fn driver_stats(&self) -> Result<DriverStats, MailboxError> {
        self.driver.send(GetDriverStats).await
    }

    /// Stops the driver and the socket.
    pub fn stop(&self) {
        self.driver.do_send(StopDriver);
        self.socket.do_send(super::socket::StopSocket);
    }
}
