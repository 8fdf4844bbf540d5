//! The socket's I/O state and its two paths, as plain code without an actor
//! (DESIGN.md section 4): [`SocketIo`] owns the UDP socket, the node's
//! identity, the [`WireCodec`], the interceptor [`Pipeline`], the protocol
//! queues, the send backlog and every counter.
//!
//! It is shared (`Rc<RefCell<SocketIo>>`) between the
//! [`SocketActor`](super::SocketActor) and the drivers started with it on the
//! same thread by [`spawn_core`](super::spawn_core), so that the hot path
//! needs no actor message:
//!
//! - **send**: a driver calls [`SocketIo::send_transmit`] from its flush: our
//!   header, the outbound interceptors, sealing, and a non-blocking `sendto`
//!   (or the backlog when the kernel's send buffer is full), all in the same
//!   call;
//! - **receive**: whoever owns the receive loop ([`Receiver`]: the primary
//!   driver, or the socket actor when there is none) reads every datagram
//!   that is ready and runs it through [`SocketIo`]'s inbound path (opening
//!   with the codec, drops counted, inbound interceptors); packets of the
//!   receiving driver's own protocols go straight to its core, the others
//!   into their subscribers' bounded queues.
//!
//! What needs a timer or a future is handed back to the caller as a
//! [`Deferred`], which the socket actor schedules (a driver forwards it in a
//! message): interceptor delays (both directions) and waiting for a full
//! send buffer to drain. These are the rare paths.
//!
//! `RefCell` borrows never span an `await` or a call into another actor:
//! every borrow lasts one synchronous step of one actor, and all the actors
//! sharing a `SocketIo` run on one thread (`Rc` makes sure of that), so
//! borrows never overlap.

use super::clock::Clock;
use super::interceptor::{Direction, PacketInfo, Pipeline, Verdict};
use super::multicast::{self, MulticastOptions};
use super::queue::{InboundPacket, PacketQueue};
use super::recverr::{self, ErrorWatch, HintLimiter, QueuedError};
use super::socket_types::{LocalInfo, PacketsReady, ProtocolStats, SocketOptions, SocketStats};
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::sansio::{Incoming, Transmit};
use crate::time::Instant;
use crate::wire::{DecodeError, DropCounters, Header, WireCodec};
use actix::Recipient;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

/// Bound on datagrams waiting for a full send buffer to drain.
const MAX_BACKLOG: usize = 1024;
/// Receive buffer: larger than the largest UDP payload.
const RECV_BUF: usize = 65_536;
/// Most datagrams (or receive errors) the receiving actor handles in one
/// batch before it yields to its mailbox and other futures.
pub(crate) const RECV_BATCH: usize = 64;
/// Consecutive receive errors after which the loop backs off.
const MAX_CONSECUTIVE_ERRORS: u32 = 8;
/// How long the loop backs off after a run of errors.
const ERROR_BACKOFF: Duration = Duration::from_millis(1);

/// Lets through a bounded number of log lines per window and says how many
/// it held back.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    const PER_WINDOW: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(10);

    pub(crate) const fn new() -> Self {
        LogLimiter {
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)`: log now, mentioning `n` lines suppressed since the last
    /// one; `None`: stay quiet.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        let fresh = match self.window_start {
            Some(start) => now.saturating_duration_since(start) >= Self::WINDOW,
            None => true,
        };
        if fresh {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < Self::PER_WINDOW {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Work of the I/O paths that needs a timer or a future: the socket actor
/// runs it (see the module docs).
#[derive(Debug)]
pub(crate) enum Deferred {
    /// Send `copies` copies of a sealed datagram after `delay` (an outbound
    /// interceptor delay; already counted in `delayed`).
    SendLater {
        protocol: ProtocolId,
        datagram: Vec<u8>,
        to: SocketAddr,
        copies: usize,
        delay: Duration,
    },
    /// Queue `copies` copies of an inbound packet after `delay` (an inbound
    /// interceptor delay; already counted in `delayed`).
    DeliverLater {
        packet: InboundPacket,
        copies: usize,
        delay: Duration,
    },
    /// The send backlog is not empty: wait until the socket is writable,
    /// then [`SocketIo::flush_backlog`].
    WaitWritable,
}

/// What the receive loop hands to the receiving driver's core.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Delivered<'a> {
    /// A packet of one of its direct protocols.
    Packet(Incoming<'a>),
    /// The host reported this node unreachable (the socket's error queue;
    /// see [`recverr`]).
    Unreachable(NodeId),
}

/// Where the receive loop hands packets of its direct subscribers and
/// unreachable hints (the receiving driver's core); `None` when the socket
/// actor receives (hints are then dropped: there is no core to tell).
pub(crate) type Deliver<'f> = Option<&'f mut dyn FnMut(Instant, Delivered<'_>)>;

/// Who runs the receive loop of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvOwner {
    /// Nobody yet (the socket actor takes it when it starts).
    Nobody,
    /// The socket actor: every packet goes to a queue.
    Socket,
    /// The primary driver: packets of its protocols go to its core.
    Driver,
}

struct Subscriber {
    queue: Arc<PacketQueue>,
    waker: Recipient<PacketsReady>,
    /// Delivered straight to the receiving driver's core (its queue is then
    /// only used for packets an interceptor delayed).
    direct: bool,
}

/// The socket's state and both I/O paths; see the module docs.
pub(crate) struct SocketIo {
    /// `None` once the socket actor has stopped: the socket is closed and
    /// both paths are shut.
    socket: Option<Arc<UdpSocket>>,
    local: NodeId,
    bound: SocketAddr,
    incarnation: Incarnation,
    codec: WireCodec,
    pipeline: Pipeline,
    subscribers: BTreeMap<ProtocolId, Subscriber>,
    queue_capacity: usize,
    max_delayed: usize,
    delayed: usize,
    /// Datagrams waiting for the send buffer, in order (see `send_now`).
    backlog: VecDeque<(ProtocolId, Vec<u8>, SocketAddr)>,
    /// A [`Deferred::WaitWritable`] is outstanding.
    flushing: bool,
    drops: DropCounters,
    per_protocol: BTreeMap<ProtocolId, ProtocolStats>,
    datagrams_received: u64,
    bytes_received: u64,
    datagrams_sent: u64,
    bytes_sent: u64,
    recv_errors: u64,
    /// Unreachable entries read from the error queue.
    icmp_errors: u64,
    /// Unreachable hints handed to the receiving driver's core.
    unreachable_hints: u64,
    /// One hint per destination per 10 ms.
    hint_limiter: HintLimiter,
    recv_buffer: usize,
    send_buffer: usize,
    drop_log: LogLimiter,
    error_log: LogLimiter,
    recv_owner: RecvOwner,
    /// Where datagrams to multicast groups go (see
    /// [`SocketOptions::mcaster`]).
    mcaster: Option<SocketAddr>,
    /// The receive loop's task, to wake when the socket closes.
    recv_waker: Option<Waker>,
    /// Reused buffer for sealing.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for SocketIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo")
            .field("local", &self.local)
            .field("bound", &self.bound)
            .field("incarnation", &self.incarnation)
            .field("protocols", &self.subscribers.keys().collect::<Vec<_>>())
            .field("recv_owner", &self.recv_owner)
            .field("open", &self.socket.is_some())
            .finish_non_exhaustive()
    }
}

impl SocketIo {
    /// Binds the socket as `options` say (see
    /// [`SocketActor::bind`](super::SocketActor::bind)).
    pub(crate) fn bind(options: SocketOptions) -> io::Result<SocketIo> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(
            Domain::for_address(options.bind),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        if options.reuse_address {
            s.set_reuse_address(true)?;
        }
        if options.recv_buffer > 0 {
            if let Err(e) = s.set_recv_buffer_size(options.recv_buffer) {
                tracing::warn!(error = %e, "could not set SO_RCVBUF");
            }
        }
        if options.send_buffer > 0 {
            if let Err(e) = s.set_send_buffer_size(options.send_buffer) {
                tracing::warn!(error = %e, "could not set SO_SNDBUF");
            }
        }
        s.set_nonblocking(true)?;
        // "Port unreachable" reports (see the `recverr` module).
        if let Err(e) = recverr::enable(&s, options.bind.is_ipv6()) {
            tracing::warn!(error = %e, "could not set IP_RECVERR: no unreachable reports");
        }
        s.bind(&options.bind.into())?;
        let recv_buffer = s.recv_buffer_size().unwrap_or(0);
        let send_buffer = s.send_buffer_size().unwrap_or(0);
        let socket = UdpSocket::from_std(s.into())?;
        let bound = socket.local_addr()?;
        let local = match options.advertise {
            Some(n) => n,
            None if bound.ip().is_unspecified() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bound to {bound}: an unspecified address needs `advertise`"),
                ))
            }
            None => NodeId::new(bound),
        };
        if let Some(m) = &options.multicast_send {
            multicast::set_send_options(&socket, m)?;
        }
        if let Some(m) = &options.multicast {
            multicast::join(&socket, m)?;
        }
        tracing::info!(
            %bound,
            node = %local,
            requested_rcvbuf = options.recv_buffer,
            granted_rcvbuf = recv_buffer,
            requested_sndbuf = options.send_buffer,
            granted_sndbuf = send_buffer,
            "UDP socket bound"
        );
        let mut pipeline = Pipeline::new(options.fault_seed);
        pipeline
            .faults
            .set_config(options.faults)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        pipeline.filter.set_config(options.filter);
        Ok(SocketIo {
            socket: Some(Arc::new(socket)),
            local,
            bound,
            incarnation: options
                .incarnation
                .unwrap_or_else(super::clock::new_incarnation),
            codec: match options.auth {
                Some(a) => WireCodec::with_auth(a),
                None => WireCodec::new(),
            },
            pipeline,
            subscribers: BTreeMap::new(),
            queue_capacity: options.queue_capacity,
            max_delayed: options.max_delayed,
            delayed: 0,
            backlog: VecDeque::new(),
            flushing: false,
            drops: DropCounters::default(),
            per_protocol: BTreeMap::new(),
            datagrams_received: 0,
            bytes_received: 0,
            datagrams_sent: 0,
            bytes_sent: 0,
            recv_errors: 0,
            icmp_errors: 0,
            unreachable_hints: 0,
            hint_limiter: HintLimiter::default(),
            recv_buffer,
            send_buffer,
            drop_log: LogLimiter::new(),
            error_log: LogLimiter::new(),
            recv_owner: RecvOwner::Nobody,
            mcaster: options.mcaster,
            recv_waker: None,
            scratch: Vec::new(),
        })
    }

    // ---- state -------------------------------------------------------------

    /// Who this socket is.
    pub(crate) fn local(&self) -> LocalInfo {
        LocalInfo {
            node: self.local,
            incarnation: self.incarnation,
            bound: self.bound,
        }
    }

    pub(crate) fn set_incarnation(&mut self, incarnation: Incarnation) {
        self.incarnation = incarnation;
    }

    pub(crate) fn codec_mut(&mut self) -> &mut WireCodec {
        &mut self.codec
    }

    pub(crate) fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub(crate) fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    /// The socket, while it is open.
    pub(crate) fn socket(&self) -> io::Result<&Arc<UdpSocket>> {
        self.socket
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "socket stopped"))
    }

    pub(crate) fn is_open(&self) -> bool {
        self.socket.is_some()
    }

    pub(crate) fn join_multicast(&self, options: &MulticastOptions) -> io::Result<()> {
        multicast::join(self.socket()?, options)
    }

    pub(crate) fn leave_multicast(&self, group: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
        multicast::leave(self.socket()?, group, interface)
    }

    /// Registers (or replaces) the queue of `protocol`; `direct`: its
    /// packets go straight to the receiving driver's core (see
    /// [`RecvOwner::Driver`]), the queue only gets delayed ones.
    pub(crate) fn subscribe(
        &mut self,
        protocol: ProtocolId,
        capacity: Option<usize>,
        waker: Recipient<PacketsReady>,
        direct: bool,
    ) -> Arc<PacketQueue> {
        let queue = Arc::new(PacketQueue::new(capacity.unwrap_or(self.queue_capacity)));
        let old = self.subscribers.insert(
            protocol,
            Subscriber {
                queue: queue.clone(),
                waker,
                direct,
            },
        );
        if old.is_some() {
            tracing::debug!(?protocol, "protocol queue replaced by a new subscriber");
        }
        queue
    }

    pub(crate) fn unsubscribe(&mut self, protocol: ProtocolId) -> bool {
        self.subscribers.remove(&protocol).is_some()
    }

    pub(crate) fn recv_owner(&self) -> RecvOwner {
        self.recv_owner
    }

    /// Hands the receive loop to `owner` (or takes it back with
    /// [`RecvOwner::Nobody`], which also turns direct delivery off: the
    /// protocols of a driver that stopped go back to their queues).
    pub(crate) fn set_recv_owner(&mut self, owner: RecvOwner) {
        self.recv_owner = owner;
        if owner != RecvOwner::Driver {
            for s in self.subscribers.values_mut() {
                s.direct = false;
            }
        }
    }

    /// Closes the socket (the socket actor stopped): drops the socket, the
    /// subscribers and the backlog, and wakes the receive loop so that it
    /// ends.
    pub(crate) fn close(&mut self) {
        self.socket = None;
        self.subscribers.clear();
        self.backlog.clear();
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
    }

    pub(crate) fn stats(&self) -> SocketStats {
        let mut per_protocol = self.per_protocol.clone();
        let mut drops: BTreeMap<String, u64> = BTreeMap::new();
        for (k, v) in self.codec.drops().iter().chain(self.drops.iter()) {
            *drops.entry(k.to_string()).or_insert(0) += v;
        }
        for (p, s) in &self.subscribers {
            per_protocol.entry(*p).or_default().queue_len = s.queue.len();
        }
        SocketStats {
            local: self.local(),
            datagrams_received: self.datagrams_received,
            bytes_received: self.bytes_received,
            datagrams_sent: self.datagrams_sent,
            bytes_sent: self.bytes_sent,
            recv_errors: self.recv_errors,
            icmp_errors: self.icmp_errors,
            unreachable_hints: self.unreachable_hints,
            per_protocol,
            drops_total: self.codec.drops().total() + self.drops.total(),
            drops,
            delayed: self.delayed,
            traffic: self.pipeline.counter.snapshot().clone(),
            recv_buffer: self.recv_buffer,
            send_buffer: self.send_buffer,
        }
    }

    fn drop_packet(&mut self, kind: &'static str) {
        self.drops.record_kind(kind);
    }

    // ---- receive path ----------------------------------------------------

    fn recv_error(&mut self, e: &io::Error) {
        self.recv_errors += 1;
        if recverr::is_icmp_error(e) {
            // E.g. ECONNREFUSED after an ICMP port unreachable: the entry is
            // on the error queue, which the caller drains.
            return;
        }
        if let Some(suppressed) = self.error_log.allow(Clock::now()) {
            tracing::warn!(error = %e, suppressed, "receive error (ignored)");
        }
    }

    /// One datagram from the socket: counted, opened, passed through the
    /// inbound interceptors, then handed to `direct` (the receiving
    /// driver's core, for its own protocols), queued, or deferred.
    fn on_datagram(
        &mut self,
        data: &[u8],
        from: SocketAddr,
        direct: &mut Deliver<'_>,
        deferred: &mut Vec<Deferred>,
    ) {
        self.datagrams_received += 1;
        self.bytes_received += data.len() as u64;
        let now = Clock::now();
        let (header, body) = match self.codec.open_counted(data) {
            Ok(p) => (p.header, p.body),
            Err(e) => {
                self.log_reject(now, from, &e);
                return;
            }
        };
        let verdict = self.pipeline.inbound(&PacketInfo {
            direction: Direction::Inbound,
            header: &header,
            len: data.len(),
            peer: from,
        });
        if let Some(kind) = verdict.drop {
            self.drop_packet(kind);
            return;
        }
        let copies = 1 + verdict.extra_copies as usize;
        if !verdict.delay.is_zero() {
            if self.delayed + copies > self.max_delayed {
                self.drop_packet("delay_overflow");
            } else {
                self.delayed += copies;
                deferred.push(Deferred::DeliverLater {
                    packet: InboundPacket::opened(header, from, now, data, &body),
                    copies,
                    delay: verdict.delay,
                });
            }
            return;
        }
        let protocol = header.protocol;
        if let Some(deliver) = direct.as_mut() {
            if self.subscribers.get(&protocol).is_some_and(|s| s.direct) {
                let stats = self.per_protocol.entry(protocol).or_default();
                stats.received += copies as u64;
                stats.bytes_received += (copies * body.len()) as u64;
                let peer = NodeId::new(from);
                let incoming = Incoming {
                    source: header.source,
                    source_incarnation: header.source_incarnation,
                    destination: header.destination,
                    protocol,
                    relayed: header.relayed || peer != header.source,
                    body: &body,
                    peer,
                    datagram: data,
                };
                for _ in 0..copies {
                    deliver(now, Delivered::Packet(incoming));
                }
                return;
            }
        }
        let packet = InboundPacket::opened(header, from, now, data, &body);
        self.enqueue_copies(packet, copies);
    }

    fn log_reject(&mut self, now: Instant, from: SocketAddr, e: &DecodeError) {
        if let Some(suppressed) = self.drop_log.allow(now) {
            tracing::warn!(%from, kind = e.kind(), error = %e, suppressed, "dropped inbound datagram");
        }
    }

    /// Queues the copies of a packet whose interceptor delay is over.
    pub(crate) fn deliver_delayed(&mut self, packet: InboundPacket, copies: usize) {
        self.delayed = self.delayed.saturating_sub(copies);
        self.enqueue_copies(packet, copies);
    }

    fn enqueue_copies(&mut self, packet: InboundPacket, copies: usize) {
        for _ in 1..copies {
            self.enqueue(packet.clone());
        }
        self.enqueue(packet);
    }

    fn enqueue(&mut self, packet: InboundPacket) {
        let protocol = packet.header.protocol;
        let connected = match self.subscribers.get(&protocol) {
            None => {
                self.drop_packet("no_subscriber");
                return;
            }
            Some(s) => s.waker.connected(),
        };
        if !connected {
            tracing::debug!(?protocol, "subscriber gone; removing its queue");
            self.subscribers.remove(&protocol);
            self.drop_packet("no_subscriber");
            return;
        }
        let len = packet.body().len() as u64;
        let Some(sub) = self.subscribers.get(&protocol) else {
            return;
        };
        let outcome = sub.queue.push(packet);
        if outcome.wake {
            sub.waker.do_send(PacketsReady { protocol });
        }
        let stats = self.per_protocol.entry(protocol).or_default();
        stats.received += 1;
        stats.bytes_received += len;
        if outcome.evicted {
            stats.queue_full += 1;
            self.drop_packet("queue_full");
        }
    }

    // ---- send path -------------------------------------------------------

    /// Sends a core's datagram: our header, seal, outbound interceptors,
    /// `sendto` (or the backlog).
    ///
    /// A forward ([`Transmit::forward`]) is sent unchanged to its
    /// destination. Otherwise the UDP next hop is `via` if the core set one,
    /// else the mcaster ([`SocketOptions::mcaster`]) when the destination
    /// is a multicast group and an mcaster is configured, else the
    /// destination itself.
    pub(crate) fn send_transmit(&mut self, t: &Transmit, deferred: &mut Vec<Deferred>) {
        if t.sealed {
            self.send_sealed(&t.body, t.destination.addr(), deferred);
            return;
        }
        let header = Header {
            protocol: t.protocol,
            relayed: false,
            source: self.local,
            source_incarnation: self.incarnation,
            destination: t.destination,
        };
        let to = match (t.via, self.mcaster) {
            (Some(hop), _) => hop.addr(),
            (None, Some(mcaster)) if t.destination.addr().ip().is_multicast() => mcaster,
            (None, _) => t.destination.addr(),
        };
        self.seal_and_send(header, &t.body, to, deferred);
    }

    /// Seals `body` under `header` with this socket's codec and sends it.
    pub(crate) fn seal_and_send(
        &mut self,
        header: Header,
        body: &[u8],
        to: SocketAddr,
        deferred: &mut Vec<Deferred>,
    ) {
        let mut datagram = std::mem::take(&mut self.scratch);
        match self.codec.seal(&header, body, &mut datagram) {
            Ok(()) => self.dispatch(header, &datagram, to, deferred),
            Err(e) => {
                self.drop_packet("encode_error");
                if let Some(suppressed) = self.error_log.allow(Clock::now()) {
                    tracing::warn!(%to, protocol = ?header.protocol, error = %e, suppressed, "could not seal datagram");
                }
            }
        }
        self.scratch = datagram;
    }

    /// Sends a datagram sealed elsewhere (a relay), whose header is parsed
    /// for the interceptors.
    pub(crate) fn send_sealed(
        &mut self,
        datagram: &[u8],
        to: SocketAddr,
        deferred: &mut Vec<Deferred>,
    ) {
        match Header::parse(datagram) {
            Ok(raw) => self.dispatch(raw.header, datagram, to, deferred),
            Err(_) => self.drop_packet("relay_bad_header"),
        }
    }

    /// Outbound interceptors, then send (now, later, and/or twice).
    fn dispatch(
        &mut self,
        header: Header,
        datagram: &[u8],
        to: SocketAddr,
        deferred: &mut Vec<Deferred>,
    ) {
        let verdict: Verdict = self.pipeline.outbound(&PacketInfo {
            direction: Direction::Outbound,
            header: &header,
            len: datagram.len(),
            peer: to,
        });
        if let Some(kind) = verdict.drop {
            self.drop_packet(kind);
            return;
        }
        let copies = 1 + verdict.extra_copies as usize;
        let protocol = header.protocol;
        if verdict.delay.is_zero() {
            for _ in 0..copies {
                self.send_now(protocol, datagram, to, deferred);
            }
        } else if self.delayed + copies > self.max_delayed {
            self.drop_packet("delay_overflow");
        } else {
            self.delayed += copies;
            deferred.push(Deferred::SendLater {
                protocol,
                datagram: datagram.to_vec(),
                to,
                copies,
                delay: verdict.delay,
            });
        }
    }

    /// Sends the copies of a datagram whose interceptor delay is over.
    pub(crate) fn send_delayed(
        &mut self,
        protocol: ProtocolId,
        datagram: &[u8],
        to: SocketAddr,
        copies: usize,
        deferred: &mut Vec<Deferred>,
    ) {
        self.delayed = self.delayed.saturating_sub(copies);
        for _ in 0..copies {
            self.send_now(protocol, datagram, to, deferred);
        }
    }

    fn count_sent(&mut self, protocol: ProtocolId, n: usize) {
        self.datagrams_sent += 1;
        self.bytes_sent += n as u64;
        let s = self.per_protocol.entry(protocol).or_default();
        s.sent += 1;
        s.bytes_sent += n as u64;
    }

    fn send_failed(&mut self, to: SocketAddr, e: &io::Error) {
        self.drop_packet("send_error");
        if let Some(suppressed) = self.error_log.allow(Clock::now()) {
            tracing::warn!(%to, error = %e, suppressed, "send failed");
        }
    }

    /// Sends one datagram now, or queues it behind earlier ones waiting for
    /// the send buffer, so that datagrams leave in the order they were
    /// handed over.
    ///
    /// The first attempt is a plain non-blocking `sendto` (through
    /// socket2), not tokio's `try_send_to`: the latter answers `WouldBlock`
    /// without trying until the reactor has reported the socket writable
    /// once, which would push every datagram sent right after binding onto
    /// the slow path.
    fn send_now(
        &mut self,
        protocol: ProtocolId,
        datagram: &[u8],
        to: SocketAddr,
        deferred: &mut Vec<Deferred>,
    ) {
        let Some(socket) = &self.socket else {
            self.drop_packet("socket_stopped");
            return;
        };
        if !self.backlog.is_empty() {
            self.push_backlog(protocol, datagram.to_vec(), to, deferred);
            return;
        }
        let sock = socket2::SockRef::from(&**socket);
        let mut result = sock.send_to(datagram, &to.into());
        if result.as_ref().is_err_and(recverr::is_icmp_error) {
            // The pending error of an earlier datagram (its entry stays on
            // the error queue for the receive loop): this one was not sent.
            result = sock.send_to(datagram, &to.into());
        }
        match result {
            Ok(n) => self.count_sent(protocol, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.push_backlog(protocol, datagram.to_vec(), to, deferred)
            }
            Err(e) => self.send_failed(to, &e),
        }
    }

    fn push_backlog(
        &mut self,
        protocol: ProtocolId,
        datagram: Vec<u8>,
        to: SocketAddr,
        deferred: &mut Vec<Deferred>,
    ) {
        if self.backlog.len() >= MAX_BACKLOG {
            // As a full UDP send buffer would.
            self.drop_packet("send_backlog");
            return;
        }
        self.backlog.push_back((protocol, datagram, to));
        if !self.flushing {
            self.flushing = true;
            deferred.push(Deferred::WaitWritable);
        }
    }

    /// Sends what waits in the backlog; answers `true` if the send buffer
    /// filled up again (wait for writability once more), `false` when the
    /// backlog is empty.
    pub(crate) fn flush_backlog(&mut self) -> bool {
        let Some(socket) = self.socket.clone() else {
            self.backlog.clear();
            self.flushing = false;
            return false;
        };
        while let Some((protocol, datagram, to)) = self.backlog.front() {
            let (protocol, to) = (*protocol, *to);
            // tokio's own call here, so that a real `WouldBlock` clears its
            // readiness and `writable()` waits for the kernel.
            let mut result = socket.try_send_to(datagram, to);
            if result.as_ref().is_err_and(recverr::is_icmp_error) {
                // An earlier datagram's pending error (see `send_now`).
                result = socket.try_send_to(datagram, to);
            }
            match result {
                Ok(n) => self.count_sent(protocol, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => self.send_failed(to, &e),
            }
            self.backlog.pop_front();
        }
        self.flushing = false;
        false
    }
}

/// What one [`Receiver::poll_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// One datagram (or receive error) was handled: poll again.
    Handled,
    /// Nothing more is ready: the task is registered for the next
    /// readiness (or for the end of an error back-off).
    Pending,
    /// The socket is closed: the loop is over.
    Closed,
}

/// The receive loop, polled by whichever actor owns it (see
/// [`RecvOwner`]), one datagram per [`Receiver::poll_step`]; the owner
/// loops for a batch of at most [`RECV_BATCH`]. Never ends while the socket
/// is open; after a run of errors it backs off for a millisecond so that a
/// persistent error cannot spin the thread.
pub(crate) struct Receiver {
    io: Rc<RefCell<SocketIo>>,
    buf: Box<[u8]>,
    consecutive_errors: u32,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Waits for entries on the socket's error queue.
    errors: ErrorWatch,
    /// The last drain hit its budget: drain again before waiting.
    errors_pending: bool,
    /// Reused for the error-queue entries of one drain.
    queued: Vec<QueuedError>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("consecutive_errors", &self.consecutive_errors)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    pub(crate) fn new(io: Rc<RefCell<SocketIo>>) -> Self {
        Receiver {
            io,
            buf: vec![0u8; RECV_BUF].into_boxed_slice(),
            consecutive_errors: 0,
            backoff: None,
            errors: ErrorWatch::new(),
            errors_pending: false,
            queued: Vec::new(),
        }
    }

    /// Reads one datagram if one is ready and runs it through the inbound
    /// path: packets of `direct` subscribers go to `direct` when it is
    /// given; work that needs a timer is appended to `deferred`. The shared
    /// state is borrowed only during the call.
    pub(crate) fn poll_step(
        &mut self,
        cx: &mut TaskContext<'_>,
        mut direct: Deliver<'_>,
        deferred: &mut Vec<Deferred>,
    ) -> Step {
        let mut io = self.io.borrow_mut();
        if io.socket.is_none() {
            self.errors.clear();
            return Step::Closed;
        }
        if let Some(sleep) = &mut self.backoff {
            if sleep.as_mut().poll(cx).is_pending() {
                io.register_recv_waker(cx.waker());
                return Step::Pending;
            }
            self.backoff = None;
        }
        let Some(socket) = io.socket.clone() else {
            self.errors.clear();
            return Step::Closed;
        };
        let mut rb = ReadBuf::new(&mut self.buf);
        match socket.poll_recv_from(cx, &mut rb) {
            Poll::Pending => {
                if self.errors_pending || self.errors.poll(cx, &socket) {
                    self.errors_pending = io.drain_errors(&socket, &mut self.queued, &mut direct);
                    return Step::Handled;
                }
                io.register_recv_waker(cx.waker());
                Step::Pending
            }
            Poll::Ready(Ok(from)) => {
                let len = rb.filled().len();
                self.consecutive_errors = 0;
                io.on_datagram(&self.buf[..len], from, &mut direct, deferred);
                Step::Handled
            }
            Poll::Ready(Err(e)) => {
                io.recv_error(&e);
                if recverr::is_icmp_error(&e) {
                    self.errors_pending = io.drain_errors(&socket, &mut self.queued, &mut direct);
                }
                self.consecutive_errors = self.consecutive_errors.saturating_add(1);
                if self.consecutive_errors > MAX_CONSECUTIVE_ERRORS {
                    self.backoff = Some(Box::pin(tokio::time::sleep(ERROR_BACKOFF)));
                }
                Step::Handled
            }
        }
    }
}

impl SocketIo {
    /// Reads the socket's error queue (bounded) and hands a hint to the
    /// receiving driver's core for every unreachable entry that names its
    /// destination: the datagram's header says which node it was for, and
    /// it must have gone straight there (not via a relay or the mcaster,
    /// whose own failure says nothing of the destination). At most one
    /// hint per destination per 10 ms. Answers whether entries may remain.
    fn drain_errors(
        &mut self,
        socket: &UdpSocket,
        queued: &mut Vec<QueuedError>,
        direct: &mut Deliver<'_>,
    ) -> bool {
        queued.clear();
        let more = recverr::drain(socket, queued);
        let now = Clock::now();
        for q in queued.drain(..) {
            self.icmp_errors += 1;
            let Ok(raw) = Header::parse(&q.payload) else {
                continue;
            };
            let destination = raw.header.destination;
            let straight = q.to.map_or(true, |to| same_addr(to, destination.addr()));
            if !straight || destination.addr().ip().is_multicast() {
                continue;
            }
            let Some(deliver) = direct.as_mut() else {
                continue;
            };
            if self.hint_limiter.allow(now, destination) {
                self.unreachable_hints += 1;
                tracing::debug!(node = %destination, "destination unreachable (ICMP)");
                deliver(now, Delivered::Unreachable(destination));
            }
        }
        more
    }

    fn register_recv_waker(&mut self, waker: &Waker) {
        match &self.recv_waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.recv_waker = Some(waker.clone()),
        }
    }
}

/// The same address, an IPv4-mapped IPv6 address equal to its IPv4 form.
fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_limits_per_window() {
        let mut l = LogLimiter::new();
        let t0 = Instant::from_millis(1);
        let allowed = (0..100).filter(|_| l.allow(t0).is_some()).count();
        assert_eq!(allowed, LogLimiter::PER_WINDOW as usize);
        // The next window reports what was held back.
        assert_eq!(l.allow(t0 + LogLimiter::WINDOW), Some(90));
        assert_eq!(l.allow(t0 + LogLimiter::WINDOW), Some(0));
    }
}
