//! The UDP socket actor: with its I/O state (`socket_io.rs`), the only place
//! in `src/` that sends and receives datagrams (DESIGN.md section 4).
//!
//! One [`SocketActor`] owns one UDP socket, the node's [`NodeId`](crate::id::NodeId) and
//! [`Incarnation`], a [`WireCodec`](crate::wire::WireCodec) (optionally
//! authenticating) and the interceptor [`Pipeline`]. That state and both
//! I/O paths live in a plain struct (`SocketIo`) which the actor shares with
//! the driver that [`spawn_core`](super::spawn_core) starts with it on the
//! same thread, so that the hot path is plain function calls rather than
//! actor messages. The actor answers the control messages below
//! ([`SetFaults`], [`GetStats`], [`Subscribe`], ...) on that same state, and
//! runs what needs a timer.
//!
//! **Receive path.** The receive loop belongs to the primary driver (the one
//! started by [`spawn_core`](super::spawn_core)) or, when there is none (a
//! socket bound and started alone) or once it has stopped, to this actor. It
//! reads every datagram that is ready (up to a batch of 64, then yields),
//! opens each with the codec ([`WireCodec::open_counted`]: a reject is
//! dropped, counted by kind and logged at a limited rate) and runs it
//! through the inbound interceptors. A packet of one of the primary
//! driver's own protocols goes straight to its core; any other goes into
//! the bounded queue of its protocol ([`PacketQueue`]: the oldest entry is
//! dropped and counted as `"queue_full"` when full), and the queue's
//! subscriber is woken with one [`PacketsReady`] per batch. Receive errors
//! (e.g. `ECONNREFUSED`) are counted and logged; the loop goes on.
//!
//! **Bounds.** Nothing between the kernel and a core grows without bound.
//! Queued protocols are bounded by their queue's capacity (drop-oldest).
//! Direct delivery has no queue at all: the primary core runs inside the
//! receive loop, so a slow primary core slows reading, and datagrams then
//! wait in the kernel's receive buffer (`SO_RCVBUF`, see
//! [`SocketStats::recv_buffer`]), which drops what does not fit (counted by
//! the kernel, not here) and never blocks the sender. The loop yields after
//! each batch, so commands and the control messages still get their turn.
//!
//! **Send path.** The primary driver hands its core's [`Transmit`]s to the
//! shared state directly; [`SendPackets`] does the same for anyone else
//! (e.g. cores added later with [`CoreDriver::start_on`]).
//! Each datagram gets our header (our id and incarnation as source), is
//! sealed, passes the outbound interceptors and goes to a non-blocking
//! `sendto`; when the kernel's send buffer is full it waits, in order, in a
//! backlog of at most 1024 datagrams (beyond that: `"send_backlog"` drops)
//! that this actor drains once the socket is writable. [`RelaySend`] sends a
//! datagram on behalf of another node (the mcaster): either pre-sealed, or a
//! header with `relayed = true` and a foreign source that this actor seals.
//!
//! Delays asked for by interceptors (either direction) are timers on this
//! actor, at most [`SocketOptions::max_delayed`] at a time (beyond that,
//! packets are dropped as `"delay_overflow"`); a delayed inbound packet
//! goes to its protocol's queue, even for the primary driver.
//!
//! **Stopping.** [`StopSocket`] stops the actor and closes the socket at
//! once (the shared state drops it): the receive loop ends, wherever it
//! runs, and later sends from a driver are dropped (`"socket_stopped"`). If
//! the primary driver stops first, this actor takes the receive loop back,
//! so that the other subscribers keep receiving.
//!
//! **Unreachable destinations.** On Linux the socket is bound with
//! `IP_RECVERR` (`IPV6_RECVERR`), so the ICMP errors its datagrams cause are
//! queued on its error queue; the receive loop drains it (at most 64
//! entries per wake-up) whenever the reactor reports the error readiness or
//! a receive returns the pending error, and hands the receiving driver's
//! core one [`crate::runtime::NodeUnreachable`]-equivalent hint
//! ([`Core::handle_unreachable`](crate::sansio::Core::handle_unreachable))
//! per destination per 10 ms, naming the destination of the offending
//! datagram's header (see `runtime/recverr.rs`). When this actor owns the
//! receive loop there is no core to tell: entries are counted
//! (`icmp_errors`) and dropped. Elsewhere than Linux nothing is reported.
//!
//! [`WireCodec::open_counted`]: crate::wire::WireCodec::open_counted
//! [`CoreDriver::start_on`]: super::CoreDriver::start_on

use super::interceptor::{FaultConfig, FaultConfigError, FilterConfig, Interceptor, Pipeline};
use super::multicast::MulticastOptions;
use super::queue::PacketQueue;
use super::socket_io::{Deferred, Receiver, RecvOwner, SocketIo, Step, RECV_BATCH};
pub use super::socket_types::{
    LocalInfo, PacketsReady, ProtocolStats, SocketOptions, SocketStats, DEFAULT_MAX_DELAYED,
    DEFAULT_QUEUE_CAPACITY, DEFAULT_SOCKET_BUFFER,
};
use crate::id::{Incarnation, ProtocolId};
use crate::sansio::Transmit;
use crate::wire::{Header, KeyRing};
use actix::prelude::*;
use std::cell::{RefCell, RefMut};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

/// Registers (or replaces) the queue of `protocol`: inbound packets for it
/// go to the returned queue, and `waker` gets a [`PacketsReady`] when it
/// becomes non-empty. A subscriber whose actor has stopped is removed when
/// its next packet arrives.
#[derive(Message)]
#[rtype(result = "Arc<PacketQueue>")]
pub struct Subscribe {
    /// The protocol to receive.
    pub protocol: ProtocolId,
    /// The queue's capacity (`None`: [`SocketOptions::queue_capacity`]).
    pub capacity: Option<usize>,
    /// Who to wake.
    pub waker: Recipient<PacketsReady>,
}

/// Removes the queue of a protocol (its packets are then dropped as
/// `"no_subscriber"`). Answers whether there was one.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct Unsubscribe(pub ProtocolId);

/// Datagrams from a core to seal and send, in order.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SendPackets(pub Vec<Transmit>);

/// What a relay sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayPacket {
    /// A datagram already sealed by its source (e.g. received and forwarded
    /// unchanged, authentication trailer included). Its header is parsed for
    /// the interceptors; a datagram whose header does not parse is dropped
    /// (`"relay_bad_header"`).
    Sealed(Vec<u8>),
    /// A header (normally with `relayed = true` and the original `source`)
    /// and a body, sealed by this socket's codec. With authentication,
    /// prefer [`RelayPacket::Sealed`]: receivers keep one replay window per
    /// header source, and this socket's counter is not the source's, so
    /// mixing the two can make receivers drop packets as `"replayed"`.
    Unsealed {
        /// The header to send, as is.
        header: Header,
        /// The encoded body.
        body: Vec<u8>,
    },
}

/// Sends a datagram on behalf of another node to the UDP address `to`
/// (through the outbound interceptors, which see the packet's own header).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RelaySend {
    /// Where to send it.
    pub to: SocketAddr,
    /// What to send.
    pub packet: RelayPacket,
}

/// Replaces the fault injector's configuration; answers the previous one,
/// or why the new one was refused (the old one then stays).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<FaultConfig, FaultConfigError>")]
pub struct SetFaults(pub FaultConfig);

/// Answers the fault injector's configuration.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "FaultConfig")]
pub struct GetFaults;

/// Replaces the filter's rules; answers the previous ones.
#[derive(Debug, Clone, Message)]
#[rtype(result = "FilterConfig")]
pub struct SetFilter(pub FilterConfig);

/// Answers the filter's rules.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "FilterConfig")]
pub struct GetFilter;

/// Appends a custom interceptor to both pipelines.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddInterceptor(pub Box<dyn Interceptor>);

/// Answers the socket's [`LocalInfo`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "LocalInfo")]
pub struct GetLocal;

/// Starts a new life: later datagrams carry this incarnation.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct SetIncarnation(pub Incarnation);

/// Replaces the authentication key ring (rotation); answers `false` if the
/// socket has no authentication configured.
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct SetKeyRing(pub KeyRing);

/// Joins an IPv4 multicast group.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "io::Result<()>")]
pub struct JoinMulticast(pub MulticastOptions);

/// Leaves an IPv4 multicast group.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "io::Result<()>")]
pub struct LeaveMulticast {
    /// The group.
    pub group: Ipv4Addr,
    /// The interface it was joined on.
    pub interface: Ipv4Addr,
}

/// Answers the socket's [`SocketStats`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "SocketStats")]
pub struct GetStats;

/// Stops the socket actor (its socket is closed once the last reference to
/// it is gone).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopSocket;

/// Runs [`Deferred`] work of a driver that shares this socket's state (an
/// interceptor delay, or a full send buffer): the rare paths that need a
/// timer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct RunDeferred(pub(crate) Deferred);

/// The primary driver stopped: the socket actor takes the receive loop
/// back.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct ResumeReceiving;

/// The receive loop when the socket actor owns it: every packet goes to a
/// queue.
struct SocketReceive {
    receiver: Receiver,
    deferred: Vec<Deferred>,
}

impl ActorFuture<SocketActor> for SocketReceive {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut SocketActor,
        ctx: &mut Context<SocketActor>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        let mut handled = 0;
        let closed = loop {
            if handled == RECV_BATCH {
                // Let the mailbox and the other futures run.
                task.waker().wake_by_ref();
                break false;
            }
            match this.receiver.poll_step(task, None, &mut this.deferred) {
                Step::Handled => handled += 1,
                Step::Pending => break false,
                Step::Closed => break true,
            }
        };
        for d in this.deferred.drain(..) {
            act.run_deferred(d, ctx);
        }
        if closed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The UDP socket actor. Create it with [`SocketActor::bind`] (inside an
/// actix system), optionally [`SocketActor::subscribe`] before starting it,
/// then `start()` it. It is not `Send`: it shares its state with drivers on
/// its own thread.
pub struct SocketActor {
    io: Rc<RefCell<SocketIo>>,
}

impl std::fmt::Debug for SocketActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketActor")
            .field("io", &*self.io.borrow())
            .finish()
    }
}

impl SocketActor {
    /// Binds the socket as `options` say. Must be called within a tokio
    /// runtime (e.g. in an actix system), since the socket registers with
    /// its reactor.
    pub fn bind(options: SocketOptions) -> io::Result<SocketActor> {
        Ok(SocketActor {
            io: Rc::new(RefCell::new(SocketIo::bind(options)?)),
        })
    }

    /// Who this socket is.
    pub fn local(&self) -> LocalInfo {
        self.io.borrow().local()
    }

    /// Registers (or replaces) the queue of `protocol`, as [`Subscribe`]
    /// does; usable before the actor is started, so no packet is missed.
    pub fn subscribe(
        &mut self,
        protocol: ProtocolId,
        capacity: Option<usize>,
        waker: Recipient<PacketsReady>,
    ) -> Arc<PacketQueue> {
        self.io
            .borrow_mut()
            .subscribe(protocol, capacity, waker, false)
    }

    /// Before starting: makes a driver on this thread the owner of the
    /// receive loop, with direct delivery for `protocols` (each also gets a
    /// queue, woken through `waker`, for packets an interceptor delayed).
    /// Answers the queues and the shared state for
    /// [`CoreDriver::primary`](super::CoreDriver).
    pub(crate) fn attach_primary(
        &mut self,
        protocols: &[ProtocolId],
        waker: Recipient<PacketsReady>,
    ) -> (Vec<Arc<PacketQueue>>, Rc<RefCell<SocketIo>>) {
        let mut io = self.io.borrow_mut();
        let mut seen = Vec::new();
        let mut queues = Vec::new();
        for &p in protocols {
            if !seen.contains(&p) {
                seen.push(p);
                queues.push(io.subscribe(p, None, waker.clone(), true));
            }
        }
        io.set_recv_owner(RecvOwner::Driver);
        drop(io);
        (queues, self.io.clone())
    }

    /// The interceptor pipeline (e.g. to configure it before starting).
    pub fn pipeline_mut(&mut self) -> RefMut<'_, Pipeline> {
        RefMut::map(self.io.borrow_mut(), SocketIo::pipeline_mut)
    }

    fn start_receiving(&mut self, ctx: &mut Context<Self>) {
        let mut io = self.io.borrow_mut();
        if io.recv_owner() == RecvOwner::Nobody && io.is_open() {
            io.set_recv_owner(RecvOwner::Socket);
            drop(io);
            ctx.spawn(SocketReceive {
                receiver: Receiver::new(self.io.clone()),
                deferred: Vec::new(),
            });
        }
    }

    /// Schedules work that needs a timer or a future.
    fn run_deferred(&mut self, d: Deferred, ctx: &mut Context<Self>) {
        match d {
            Deferred::SendLater {
                protocol,
                datagram,
                to,
                copies,
                delay,
            } => {
                ctx.run_later(delay, move |act, ctx| {
                    let mut more = Vec::new();
                    act.io
                        .borrow_mut()
                        .send_delayed(protocol, &datagram, to, copies, &mut more);
                    act.run_all(more, ctx);
                });
            }
            Deferred::DeliverLater {
                packet,
                copies,
                delay,
            } => {
                ctx.run_later(delay, move |act, _| {
                    act.io.borrow_mut().deliver_delayed(packet, copies);
                });
            }
            Deferred::WaitWritable => {
                let Ok(socket) = self.io.borrow().socket().cloned() else {
                    return;
                };
                ctx.spawn(async move { socket.writable().await }.into_actor(self).map(
                    |_, act, ctx| {
                        if act.io.borrow_mut().flush_backlog() {
                            act.run_deferred(Deferred::WaitWritable, ctx);
                        }
                    },
                ));
            }
        }
    }

    fn run_all(&mut self, deferred: Vec<Deferred>, ctx: &mut Context<Self>) {
        for d in deferred {
            self.run_deferred(d, ctx);
        }
    }
}

impl Actor for SocketActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Unless a primary driver has taken it.
        self.start_receiving(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let mut io = self.io.borrow_mut();
        io.close();
        tracing::debug!(node = %io.local().node, "socket actor stopped");
    }
}

impl Handler<RunDeferred> for SocketActor {
    type Result = ();
    fn handle(&mut self, msg: RunDeferred, ctx: &mut Self::Context) {
        self.run_deferred(msg.0, ctx);
    }
}

impl Handler<ResumeReceiving> for SocketActor {
    type Result = ();
    fn handle(&mut self, _: ResumeReceiving, ctx: &mut Self::Context) {
        self.start_receiving(ctx);
    }
}

impl Handler<Subscribe> for SocketActor {
    type Result = Arc<PacketQueue>;
    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) -> Self::Result {
        self.subscribe(msg.protocol, msg.capacity, msg.waker)
    }
}

impl Handler<Unsubscribe> for SocketActor {
    type Result = bool;
    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) -> bool {
        self.io.borrow_mut().unsubscribe(msg.0)
    }
}

impl Handler<SendPackets> for SocketActor {
    type Result = ();
    fn handle(&mut self, msg: SendPackets, ctx: &mut Self::Context) {
        let mut deferred = Vec::new();
        {
            let mut io = self.io.borrow_mut();
            for t in &msg.0 {
                io.send_transmit(t, &mut deferred);
            }
        }
        self.run_all(deferred, ctx);
    }
}

impl Handler<RelaySend> for SocketActor {
    type Result = ();
    fn handle(&mut self, msg: RelaySend, ctx: &mut Self::Context) {
        let mut deferred = Vec::new();
        {
            let mut io = self.io.borrow_mut();
            match msg.packet {
                RelayPacket::Sealed(datagram) => io.send_sealed(&datagram, msg.to, &mut deferred),
                RelayPacket::Unsealed { header, body } => {
                    io.seal_and_send(header, &body, msg.to, &mut deferred)
                }
            }
        }
        self.run_all(deferred, ctx);
    }
}

impl Handler<SetFaults> for SocketActor {
    type Result = Result<FaultConfig, FaultConfigError>;
    fn handle(&mut self, msg: SetFaults, _: &mut Self::Context) -> Self::Result {
        let mut io = self.io.borrow_mut();
        let node = io.local().node;
        let faults = &mut io.pipeline_mut().faults;
        let r = faults.set_config(msg.0);
        match &r {
            Ok(_) => {
                tracing::info!(%node, faults = ?faults.config(), "fault injection changed")
            }
            Err(e) => tracing::warn!(%node, error = %e, "fault config refused"),
        }
        r
    }
}

impl Handler<GetFaults> for SocketActor {
    type Result = MessageResult<GetFaults>;
    fn handle(&mut self, _: GetFaults, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.io.borrow().pipeline().faults.config().clone())
    }
}

impl Handler<SetFilter> for SocketActor {
    type Result = MessageResult<SetFilter>;
    fn handle(&mut self, msg: SetFilter, _: &mut Self::Context) -> Self::Result {
        let mut io = self.io.borrow_mut();
        let filter = &mut io.pipeline_mut().filter;
        let old = filter.config().clone();
        filter.set_config(msg.0);
        MessageResult(old)
    }
}

impl Handler<GetFilter> for SocketActor {
    type Result = MessageResult<GetFilter>;
    fn handle(&mut self, _: GetFilter, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.io.borrow().pipeline().filter.config().clone())
    }
}

impl Handler<AddInterceptor> for SocketActor {
    type Result = ();
    fn handle(&mut self, msg: AddInterceptor, _: &mut Self::Context) {
        self.io.borrow_mut().pipeline_mut().push(msg.0);
    }
}

impl Handler<GetLocal> for SocketActor {
    type Result = MessageResult<GetLocal>;
    fn handle(&mut self, _: GetLocal, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.local())
    }
}

impl Handler<SetIncarnation> for SocketActor {
    type Result = ();
    fn handle(&mut self, msg: SetIncarnation, _: &mut Self::Context) {
        self.io.borrow_mut().set_incarnation(msg.0);
    }
}

impl Handler<SetKeyRing> for SocketActor {
    type Result = bool;
    fn handle(&mut self, msg: SetKeyRing, _: &mut Self::Context) -> bool {
        match self.io.borrow_mut().codec_mut().auth_mut() {
            Some(a) => {
                a.set_ring(msg.0);
                true
            }
            None => false,
        }
    }
}

impl Handler<JoinMulticast> for SocketActor {
    type Result = io::Result<()>;
    fn handle(&mut self, msg: JoinMulticast, _: &mut Self::Context) -> io::Result<()> {
        self.io.borrow().join_multicast(&msg.0)
    }
}

impl Handler<LeaveMulticast> for SocketActor {
    type Result = io::Result<()>;
    fn handle(&mut self, msg: LeaveMulticast, _: &mut Self::Context) -> io::Result<()> {
        self.io.borrow().leave_multicast(msg.group, msg.interface)
    }
}

impl Handler<GetStats> for SocketActor {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.io.borrow().stats())
    }
}

impl Handler<StopSocket> for SocketActor {
    type Result = ();
    fn handle(&mut self, _: StopSocket, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::super::multicast::MulticastSend;
    use super::*;
    use crate::id::NodeId;

    #[actix_rt::test]
    async fn unspecified_bind_needs_advertise() {
        let o = SocketOptions::new("0.0.0.0:0".parse().unwrap());
        assert!(SocketActor::bind(o.clone()).is_err());
        let mut o = o;
        o.advertise = Some(NodeId::v4(127, 0, 0, 1, 1));
        let s = SocketActor::bind(o).unwrap();
        assert_eq!(s.local().node, NodeId::v4(127, 0, 0, 1, 1));
    }

    #[actix_rt::test]
    async fn multicast_send_options_are_applied_at_bind() {
        let mut o = SocketOptions::localhost();
        o.multicast_send = Some(MulticastSend {
            interface: Ipv4Addr::LOCALHOST,
            loopback: false,
            ttl: 2,
        });
        let s = SocketActor::bind(o).unwrap();
        let io = s.io.borrow();
        let sock = socket2::SockRef::from(&**io.socket().unwrap());
        assert_eq!(sock.multicast_if_v4().unwrap(), Ipv4Addr::LOCALHOST);
        assert!(!sock.multicast_loop_v4().unwrap());
        assert_eq!(sock.multicast_ttl_v4().unwrap(), 2);
    }

    #[actix_rt::test]
    async fn bad_initial_faults_are_refused() {
        let mut o = SocketOptions::localhost();
        o.faults = FaultConfig::clear().with_drop_pct(200.0);
        assert!(SocketActor::bind(o).is_err());
    }
}
