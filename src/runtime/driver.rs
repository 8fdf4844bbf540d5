//! The generic driver: one actix actor that runs any sans-IO [`Core`]
//! (DESIGN.md section 3).
//!
//! [`CoreDriver<C>`] runs its core on a [`SocketActor`] and follows the
//! contract of [`crate::sansio`]:
//!
//! 1. an input, always with `now` from [`Clock::now`]:
//!    - datagrams for its protocols (see below): [`Core::handle_packet`];
//!    - its single timer: [`Core::handle_timeout`];
//!    - a [`NodeUnreachable`] message: [`Core::handle_unreachable`];
//!    - a [`WithCore`] message: a closure run on the core (commands such as
//!      `rpc.call(..)`, or queries), whose result goes back to the caller;
//! 2. drain [`Core::poll_transmit`] to the socket (in order, once per batch
//!    of inputs);
//! 3. drain [`Core::poll_event`] into the [`EventSink`];
//! 4. re-arm its one timer at [`Core::poll_timeout`] (`None`: no timer).
//!    The timer is one tokio sleep, reset rather than replaced; it moves
//!    earlier at once, and later lazily (when it wakes before the core's
//!    current deadline it sleeps again, without calling the core), so a
//!    deadline that changes with every call and reply costs little.
//!
//! The driver has no protocol logic: it never looks at what a packet, event
//! or deadline means.
//!
//! **Two ways to the socket.** The *primary* driver, started by
//! [`crate::runtime::spawn_core`] together with its socket on the same
//! thread, shares the socket's I/O state (see [`crate::runtime::socket`]),
//! and its hot path has no actor hop:
//!
//! - it owns the socket's receive loop (a future on its own context): each
//!   wake-up reads every datagram that is ready (up to a batch of 64, then it
//!   yields to its mailbox), runs each through the socket's inbound path
//!   (codec, drop counters, interceptors), hands packets of its own
//!   protocols straight to its core and pushes the others into their
//!   subscribers' bounded queues. What the core sends in answer leaves at
//!   once (there is no `sendmmsg` to batch into, so waiting would only put
//!   the read that finds the socket empty before the reply); the timer is
//!   re-armed once per batch. When a datagram produced events, the loop
//!   lets the event receiver run (tokio's `yield_now`) before that last
//!   read, once per batch;
//! - it sends its core's datagrams itself, synchronously, through the
//!   socket's outbound path (header, interceptors, seal, non-blocking
//!   `sendto`, the backlog when the kernel's buffer is full); only what
//!   needs a timer (interceptor delays, waiting for a full send buffer) goes
//!   to the socket actor as a message.
//!
//! A driver started with [`CoreDriver::start_on`] (or [`CoreDriver::new`])
//! on a running socket uses messages: the socket wakes it with
//! [`PacketsReady`] when its bounded queues have packets (drop-oldest, see
//! [`crate::runtime::queue`]), and it sends with [`SendPackets`]. The
//! primary driver also drains its queues on [`PacketsReady`]: they receive
//! the packets an interceptor delayed.
//!
//! A slow primary core slows the receive loop; datagrams then wait in the
//! kernel's receive buffer, which is bounded and drops what does not fit,
//! so memory never grows and senders never block. When the socket stops,
//! the receive loop ends; when the primary driver stops, the socket actor
//! takes the receive loop back for its other subscribers.
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
use super::socket::{
    PacketsReady, ResumeReceiving, RunDeferred, SendPackets, SocketActor, Subscribe,
};
use super::socket_io::{Deferred, Delivered, Receiver, RecvOwner, SocketIo, Step, RECV_BATCH};
use crate::id::{NodeId, ProtocolId};
use crate::sansio::{Core, Transmit};
use crate::time::Instant;
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
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
    /// Packets handed to the core (directly or from its queues).
    pub packets: u64,
    /// Receive batches the driver read from the socket itself (primary
    /// driver only; each is one wake-up of the receive loop).
    pub batches: u64,
    /// [`PacketsReady`] wake-ups handled (packets taken from its queues).
    pub queue_wakeups: u64,
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

/// The driver's one timer: a tokio `Sleep` that is reset rather than
/// replaced. It only moves *earlier* eagerly; when the core's deadline
/// moves later, the sleep is left alone and, when it wakes early, re-armed
/// at the current deadline without bothering the core. A request/reply core
/// that arms a retransmission timer per call and cancels it on the reply
/// thus costs the timer wheel nothing per call.
#[derive(Default)]
struct Timer {
    /// The core's deadline, as last polled.
    deadline: Option<Instant>,
    /// The sleep's deadline, while it is armed (not yet seen to fire).
    armed: Option<Instant>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Timer {
    /// Arms the sleep at `at`.
    fn arm(&mut self, at: Instant) {
        let when = tokio::time::Instant::from_std(Clock::to_std(at));
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(when),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(when))),
        }
        self.armed = Some(at);
    }
}

/// Runs a core `C` on a [`SocketActor`]; see the module docs.
pub struct CoreDriver<C: Core>
where
    C::Event: Send + 'static,
{
    core: C,
    socket: Addr<SocketActor>,
    /// The socket's shared I/O state (primary driver only): sends and the
    /// receive loop without messages.
    io: Option<Rc<RefCell<SocketIo>>>,
    queues: Vec<Arc<PacketQueue>>,
    events: EventSink<C::Event>,
    timer: Timer,
    /// A [`DriverIo`] future runs on the context.
    io_running: bool,
    outbox: Vec<Transmit>,
    deferred: Vec<Deferred>,
    stats: DriverStats,
}

impl<C: Core> std::fmt::Debug for CoreDriver<C>
where
    C::Event: Send + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreDriver")
            .field("timer", &self.timer.deadline)
            .field("primary", &self.io.is_some())
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
    /// `Context::run` on the context whose address the queues wake. It
    /// sends with [`SendPackets`].
    pub fn new(
        core: C,
        socket: Addr<SocketActor>,
        queues: Vec<Arc<PacketQueue>>,
        events: EventSink<C::Event>,
    ) -> Self {
        CoreDriver {
            core,
            socket,
            io: None,
            queues,
            events,
            timer: Timer::default(),
            io_running: false,
            outbox: Vec::new(),
            deferred: Vec::new(),
            stats: DriverStats::default(),
        }
    }

    /// The primary driver of a socket not started yet, on this thread:
    /// `io` is the socket's shared state, whose receive loop this driver
    /// owns (see [`SocketActor::attach_primary`]).
    pub(crate) fn primary(
        core: C,
        socket: Addr<SocketActor>,
        io: Rc<RefCell<SocketIo>>,
        queues: Vec<Arc<PacketQueue>>,
        events: EventSink<C::Event>,
    ) -> Self {
        let mut driver = CoreDriver::new(core, socket, queues, events);
        driver.io = Some(io);
        driver
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

    /// Sends the outbox: straight through the socket's outbound path for
    /// the primary driver, with [`SendPackets`] otherwise.
    fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        match &self.io {
            Some(io) => {
                let mut io = io.borrow_mut();
                for t in self.outbox.drain(..) {
                    io.send_transmit(&t, &mut self.deferred);
                }
                drop(io);
                self.forward_deferred();
            }
            None => self
                .socket
                .do_send(SendPackets(std::mem::take(&mut self.outbox))),
        }
    }

    /// Hands work that needs a timer to the socket actor (rare).
    fn forward_deferred(&mut self) {
        for d in self.deferred.drain(..) {
            self.socket.do_send(RunDeferred(d));
        }
    }

    /// Step 4: follows the core's deadline (see [`Timer`]). The sleep is
    /// polled by the [`DriverIo`] future, which runs after every message
    /// and every other input, so a sleep reset here is registered before
    /// the task parks.
    fn rearm(&mut self, ctx: &mut Context<Self>) {
        let next = self.core.poll_timeout();
        self.timer.deadline = next;
        let Some(deadline) = next else {
            return;
        };
        let earlier = match self.timer.armed {
            Some(armed) => deadline < armed,
            None => true,
        };
        if earlier {
            self.timer.arm(deadline);
            self.stats.timer_arms += 1;
        }
        if !self.io_running {
            self.io_running = true;
            ctx.spawn(DriverIo {
                receiver: None,
                deferred: Vec::new(),
                yielding: None,
                may_yield: true,
            });
        }
    }

    /// Polls the sleep; when it fires at the core's deadline, runs
    /// [`Core::handle_timeout`] (and the rest of the contract), as often as
    /// the new deadlines have passed too. Answers whether a sleep is still
    /// armed.
    fn poll_timer(&mut self, ctx: &mut Context<Self>, task: &mut TaskContext<'_>) -> bool {
        loop {
            let (Some(armed), Some(sleep)) = (self.timer.armed, &mut self.timer.sleep) else {
                return false;
            };
            if sleep.as_mut().poll(task).is_pending() {
                return true;
            }
            self.timer.armed = None;
            match self.timer.deadline {
                // The deadline moved later since the sleep was armed.
                Some(deadline) if deadline > armed => {
                    self.timer.arm(deadline);
                }
                Some(_) => {
                    self.stats.timeouts += 1;
                    self.core.handle_timeout(Clock::now());
                    self.after_input(ctx);
                }
                None => return false,
            }
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
        if let Some(io) = &self.io {
            self.io_running = true;
            ctx.spawn(DriverIo {
                receiver: Some(Receiver::new(io.clone())),
                deferred: Vec::new(),
                yielding: None,
                may_yield: true,
            });
        }
        // A fresh core may already have datagrams, events or a deadline.
        self.after_input(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Give the receive loop back, so that the socket's other
        // subscribers keep receiving.
        if let Some(io) = self.io.take() {
            let mut io = io.borrow_mut();
            if io.is_open() && io.recv_owner() == RecvOwner::Driver {
                io.set_recv_owner(RecvOwner::Nobody);
                self.socket.do_send(ResumeReceiving);
            }
        }
    }
}

/// The driver's I/O future: the socket's receive loop (primary driver
/// only; see the module docs) and the timer. Polled after every message the
/// driver handles. Ends when there is neither (the socket closed, no timer
/// armed), so that an unreferenced driver can stop; [`CoreDriver::rearm`]
/// starts a new one when needed.
struct DriverIo {
    receiver: Option<Receiver>,
    deferred: Vec<Deferred>,
    /// Letting the event receiver run before reading again (see `receive`).
    yielding: Option<Pin<Box<dyn Future<Output = ()>>>>,
    /// No yield since the socket was last found empty.
    may_yield: bool,
}

impl DriverIo {
    /// One batch of the receive loop: reads and handles every datagram that
    /// is ready, at most [`RECV_BATCH`] (then it wakes its task and
    /// yields); what the core sends goes out at once, the timer is re-armed
    /// once per batch. Answers `false` once the socket is closed.
    fn receive<C>(
        &mut self,
        act: &mut CoreDriver<C>,
        ctx: &mut Context<CoreDriver<C>>,
        task: &mut TaskContext<'_>,
    ) -> bool
    where
        C: Core + Unpin + 'static,
        C::Event: Send + 'static,
    {
        let Some(receiver) = &mut self.receiver else {
            return false;
        };
        if let Some(y) = &mut self.yielding {
            if y.as_mut().poll(task).is_pending() {
                return true;
            }
            self.yielding = None;
        }
        let mut handled = 0;
        let closed = loop {
            if handled == RECV_BATCH {
                task.waker().wake_by_ref();
                break false;
            }
            let events_before = act.stats.events;
            let step = {
                let mut deliver = |now: Instant, delivered: Delivered<'_>| {
                    match delivered {
                        Delivered::Packet(packet) => {
                            act.stats.packets += 1;
                            act.core.handle_packet(now, packet);
                        }
                        Delivered::Unreachable(node) => {
                            act.stats.unreachable += 1;
                            act.core.handle_unreachable(now, node);
                        }
                    }
                    act.drain();
                };
                receiver.poll_step(task, Some(&mut deliver), &mut self.deferred)
            };
            match step {
                Step::Handled => {
                    handled += 1;
                    // Send what the core produced now: holding it back to
                    // the end of the batch would save no system call, and
                    // would put the read that finds the socket empty on the
                    // reply's critical path.
                    act.flush();
                    // Likewise, let whoever receives the events run before
                    // that read (once per drain of the socket, so that
                    // bursts still come in batches): tokio's `yield_now`
                    // wakes this task again once the scheduler has run the
                    // others and polled the reactor.
                    if act.stats.events != events_before && self.may_yield {
                        self.may_yield = false;
                        let mut y: Pin<Box<dyn Future<Output = ()>>> =
                            Box::pin(tokio::task::yield_now());
                        if y.as_mut().poll(task).is_pending() {
                            self.yielding = Some(y);
                            break false;
                        }
                    }
                }
                Step::Pending => {
                    self.may_yield = true;
                    break false;
                }
                Step::Closed => break true,
            }
        };
        for d in self.deferred.drain(..) {
            act.socket.do_send(RunDeferred(d));
        }
        if handled > 0 {
            act.stats.batches += 1;
            act.rearm(ctx);
        }
        if closed {
            tracing::debug!("socket closed; the driver's receive loop ends");
            self.receiver = None;
        }
        !closed
    }
}

impl<C> ActorFuture<CoreDriver<C>> for DriverIo
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut CoreDriver<C>,
        ctx: &mut Context<CoreDriver<C>>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        let receiving = this.receive(act, ctx, task);
        let timing = act.poll_timer(ctx, task);
        if receiving || timing {
            Poll::Pending
        } else {
            act.io_running = false;
            Poll::Ready(())
        }
    }
}

impl<C> Handler<PacketsReady> for CoreDriver<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    type Result = ();

    fn handle(&mut self, _: PacketsReady, ctx: &mut Self::Context) {
        self.stats.queue_wakeups += 1;
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
    ) -> Result<super::interceptor::FaultConfig, RuntimeError> {
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

/// Errors of the runtime's convenience calls.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The actor is gone (stopped) or did not answer.
    #[error("actor mailbox: {0}")]
    Mailbox(#[from] MailboxError),
    /// A fault configuration was refused.
    #[error(transparent)]
    Faults(#[from] super::interceptor::FaultConfigError),
    /// A socket call failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
