//! The UDP socket actor: the only place in `src/` that sends and receives
//! datagrams (DESIGN.md section 4).
//!
//! One [`SocketActor`] owns one UDP socket, the node's [`NodeId`] and
//! [`Incarnation`], a [`WireCodec`] (optionally authenticating) and the
//! interceptor [`Pipeline`].
//!
//! **Receive path.** A stream over the socket (registered with
//! `ctx.add_stream`) hands each datagram to the actor, which opens it with
//! [`WireCodec::open_counted`] (a reject is dropped, counted by kind and
//! logged at a limited rate), runs it through the inbound interceptors, and
//! pushes it into the bounded queue of its protocol ([`PacketQueue`]: the
//! oldest entry is dropped and counted as `"queue_full"` when full), waking
//! the subscriber with one [`PacketsReady`] per batch. Receive errors (e.g.
//! `ECONNREFUSED`) are counted and logged; the loop goes on.
//!
//! **Send path.** [`SendPackets`] carries [`Transmit`]s from a core: the
//! actor adds the header (its own id and incarnation as source), seals it,
//! runs it through the outbound interceptors and sends it. [`RelaySend`]
//! sends a datagram on behalf of another node (the mcaster): either
//! pre-sealed, or a header with `relayed = true` and a foreign source that
//! this actor seals.
//!
//! Delays asked for by interceptors are timers on this actor, at most
//! [`SocketOptions::max_delayed`] at a time (beyond that, packets are dropped
//! as `"delay_overflow"`).
//!
//! **Unreachable destinations.** On Linux an unconnected UDP socket only
//! learns of ICMP port-unreachable errors with `IP_RECVERR` set, and then has
//! to read them from the error queue with `recvmsg(MSG_ERRQUEUE)` to know
//! *which* destination failed. socket2 0.5 exposes `recvmsg` but no safe
//! setter for `IP_RECVERR`, and this crate forbids `unsafe`, so the actor does
//! not attribute unreachable errors: it never sends
//! [`crate::runtime::NodeUnreachable`] by itself. The driver handles that
//! message, so a future socket (or a daemon with another source of the
//! information) can feed it.

use super::clock::{new_incarnation, Clock};
use super::interceptor::{
    Direction, FaultConfig, FaultConfigError, FilterConfig, Interceptor, PacketInfo, Pipeline,
    TrafficSnapshot, Verdict,
};
use super::multicast::{self, MulticastOptions};
use super::queue::{InboundPacket, PacketQueue};
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::sansio::Transmit;
use crate::time::Instant;
use crate::wire::{AuthConfig, DecodeError, DropCounters, Header, KeyRing, WireCodec, HEADER_LEN};
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

/// Default capacity of each protocol queue, in packets.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Default socket buffer size requested from the kernel (which may grant
/// less; the granted size is logged and reported in [`SocketStats`]).
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Default bound on datagrams held back by interceptor delays.
pub const DEFAULT_MAX_DELAYED: usize = 10_000;
/// Bound on datagrams waiting for a full send buffer to drain.
const MAX_BACKLOG: usize = 1024;
/// Receive buffer: larger than the largest UDP payload.
const RECV_BUF: usize = 65_536;

/// How to bind and run a [`SocketActor`].
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// The address to bind (port 0: an ephemeral port).
    pub bind: SocketAddr,
    /// The [`NodeId`] this node puts in its headers. `None`: the bound
    /// address, which must then not be unspecified (`0.0.0.0`).
    pub advertise: Option<NodeId>,
    /// Set `SO_REUSEADDR` before binding.
    pub reuse_address: bool,
    /// `SO_RCVBUF` to request (0: leave the kernel default).
    pub recv_buffer: usize,
    /// `SO_SNDBUF` to request (0: leave the kernel default).
    pub send_buffer: usize,
    /// Join an IPv4 multicast group after binding.
    pub multicast: Option<MulticastOptions>,
    /// Authenticate every datagram with this key ring.
    pub auth: Option<AuthConfig>,
    /// This life's incarnation (`None`: a fresh one).
    pub incarnation: Option<Incarnation>,
    /// Seed of the fault injector's RNG (`None`: from entropy).
    pub fault_seed: Option<u64>,
    /// Faults to inject from the start.
    pub faults: FaultConfig,
    /// Rules of the filter (firewall) from the start.
    pub filter: FilterConfig,
    /// Capacity of each protocol queue, unless the subscriber asks otherwise.
    pub queue_capacity: usize,
    /// Most datagrams held back by interceptor delays at once.
    pub max_delayed: usize,
}

impl SocketOptions {
    /// Binding `bind` with the defaults.
    pub fn new(bind: SocketAddr) -> Self {
        SocketOptions {
            bind,
            advertise: None,
            reuse_address: false,
            recv_buffer: DEFAULT_SOCKET_BUFFER,
            send_buffer: DEFAULT_SOCKET_BUFFER,
            multicast: None,
            auth: None,
            incarnation: None,
            fault_seed: None,
            faults: FaultConfig::default(),
            filter: FilterConfig::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_delayed: DEFAULT_MAX_DELAYED,
        }
    }

    /// `127.0.0.1` on an ephemeral port (tests, benchmarks).
    pub fn localhost() -> Self {
        SocketOptions::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }
}

/// Wakes a driver: packets are waiting in the queue of `protocol`. At most
/// one is outstanding per queue until the driver takes the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct PacketsReady {
    /// The protocol whose queue has packets.
    pub protocol: ProtocolId,
}

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

/// Who this socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalInfo {
    /// The node id in our headers.
    pub node: NodeId,
    /// The current incarnation.
    pub incarnation: Incarnation,
    /// The address the socket is bound to.
    pub bound: SocketAddr,
}

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

/// Per-protocol counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Datagrams delivered to the protocol's queue (after the interceptors).
    pub received: u64,
    /// Bytes delivered to the protocol's queue.
    pub bytes_received: u64,
    /// Packets waiting in the queue now.
    pub queue_len: usize,
    /// Packets dropped because the queue was full.
    pub queue_full: u64,
}

/// A socket actor's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketStats {
    /// Who this socket is.
    pub local: LocalInfo,
    /// Datagrams read from the socket (before any check).
    pub datagrams_received: u64,
    /// Bytes read from the socket.
    pub bytes_received: u64,
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// Bytes handed to the kernel.
    pub bytes_sent: u64,
    /// Errors returned by receive calls (the loop goes on after each).
    pub recv_errors: u64,
    /// Per protocol.
    pub per_protocol: BTreeMap<ProtocolId, ProtocolStats>,
    /// Dropped datagrams by kind: the wire rejects ([`DecodeError::kind`]),
    /// `queue_full`, `no_subscriber`, interceptor drops (`filter_in`,
    /// `fault_drop_out`, `fault_block_in`, ...), `delay_overflow`,
    /// `send_error`, `send_backlog`, `encode_error`, `relay_bad_header`.
    pub drops: BTreeMap<String, u64>,
    /// Every drop.
    pub drops_total: u64,
    /// Datagrams held back by interceptor delays right now.
    pub delayed: usize,
    /// The traffic counter interceptor's counts.
    pub traffic: TrafficSnapshot,
    /// `SO_RCVBUF` as granted by the kernel (0 if unknown).
    pub recv_buffer: usize,
    /// `SO_SNDBUF` as granted by the kernel (0 if unknown).
    pub send_buffer: usize,
}

impl SocketStats {
    /// Drops of one kind.
    pub fn drops(&self, kind: &str) -> u64 {
        self.drops.get(kind).copied().unwrap_or(0)
    }

    /// Counts of one protocol (zero if it never had traffic).
    pub fn protocol(&self, protocol: ProtocolId) -> ProtocolStats {
        self.per_protocol
            .get(&protocol)
            .copied()
            .unwrap_or_default()
    }
}

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

/// One item of the receive stream.
#[derive(Debug)]
pub enum RecvEvent {
    /// A datagram and where it came from.
    Datagram(Vec<u8>, SocketAddr),
    /// A receive error (the stream goes on).
    Error(io::Error),
}

/// The receive loop as a stream: never ends; after a run of errors it backs
/// off for a millisecond so that a persistent error cannot spin the thread.
struct RecvStream {
    socket: Arc<UdpSocket>,
    buf: Vec<u8>,
    consecutive_errors: u32,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stream for RecvStream {
    type Item = RecvEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<RecvEvent>> {
        let this = self.get_mut();
        if let Some(sleep) = &mut this.backoff {
            std::task::ready!(sleep.as_mut().poll(cx));
            this.backoff = None;
        }
        let mut rb = ReadBuf::new(&mut this.buf);
        match this.socket.poll_recv_from(cx, &mut rb) {
            Poll::Ready(Ok(from)) => {
                this.consecutive_errors = 0;
                Poll::Ready(Some(RecvEvent::Datagram(rb.filled().to_vec(), from)))
            }
            Poll::Ready(Err(e)) => {
                this.consecutive_errors = this.consecutive_errors.saturating_add(1);
                if this.consecutive_errors > 8 {
                    this.backoff = Some(Box::pin(tokio::time::sleep(Duration::from_millis(1))));
                }
                Poll::Ready(Some(RecvEvent::Error(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

struct Subscriber {
    queue: Arc<PacketQueue>,
    waker: Recipient<PacketsReady>,
}

/// The UDP socket actor. Create it with [`SocketActor::bind`] (inside an
/// actix system), optionally [`SocketActor::subscribe`] before starting it,
/// then `start()` it.
pub struct SocketActor {
    socket: Arc<UdpSocket>,
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
    flushing: bool,
    drops: DropCounters,
    per_protocol: BTreeMap<ProtocolId, ProtocolStats>,
    datagrams_received: u64,
    bytes_received: u64,
    datagrams_sent: u64,
    bytes_sent: u64,
    recv_errors: u64,
    recv_buffer: usize,
    send_buffer: usize,
    drop_log: LogLimiter,
    error_log: LogLimiter,
}

impl std::fmt::Debug for SocketActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketActor")
            .field("local", &self.local)
            .field("bound", &self.bound)
            .field("incarnation", &self.incarnation)
            .field("protocols", &self.subscribers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SocketActor {
    /// Binds the socket as `options` say. Must be called within a tokio
    /// runtime (e.g. in an actix system), since the socket registers with
    /// its reactor.
    pub fn bind(options: SocketOptions) -> io::Result<SocketActor> {
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
        Ok(SocketActor {
            socket: Arc::new(socket),
            local,
            bound,
            incarnation: options.incarnation.unwrap_or_else(new_incarnation),
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
            recv_buffer,
            send_buffer,
            drop_log: LogLimiter::new(),
            error_log: LogLimiter::new(),
        })
    }

    /// Who this socket is.
    pub fn local(&self) -> LocalInfo {
        LocalInfo {
            node: self.local,
            incarnation: self.incarnation,
            bound: self.bound,
        }
    }

    /// Registers (or replaces) the queue of `protocol`, as [`Subscribe`]
    /// does; usable before the actor is started, so no packet is missed.
    pub fn subscribe(
        &mut self,
        protocol: ProtocolId,
        capacity: Option<usize>,
        waker: Recipient<PacketsReady>,
    ) -> Arc<PacketQueue> {
        let queue = Arc::new(PacketQueue::new(capacity.unwrap_or(self.queue_capacity)));
        let old = self.subscribers.insert(
            protocol,
            Subscriber {
                queue: queue.clone(),
                waker,
            },
        );
        if old.is_some() {
            tracing::debug!(?protocol, "protocol queue replaced by a new subscriber");
        }
        queue
    }

    /// The interceptor pipeline (e.g. to configure it before starting).
    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    fn stats(&self) -> SocketStats {
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

    fn on_datagram(&mut self, data: Vec<u8>, from: SocketAddr, ctx: &mut Context<Self>) {
        self.datagrams_received += 1;
        self.bytes_received += data.len() as u64;
        let now = Clock::now();
        let (header, body_len) = match self.codec.open_counted(&data) {
            Ok(p) => (p.header, p.body.len()),
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
        let packet = InboundPacket::new(header, from, now, data, HEADER_LEN..HEADER_LEN + body_len);
        let copies = 1 + verdict.extra_copies as usize;
        if verdict.delay.is_zero() {
            for _ in 1..copies {
                self.enqueue(packet.clone());
            }
            self.enqueue(packet);
        } else if self.delayed + copies > self.max_delayed {
            self.drop_packet("delay_overflow");
        } else {
            self.delayed += copies;
            ctx.run_later(verdict.delay, move |act, _| {
                act.delayed -= copies;
                for _ in 1..copies {
                    act.enqueue(packet.clone());
                }
                act.enqueue(packet);
            });
        }
    }

    fn log_reject(&mut self, now: Instant, from: SocketAddr, e: &DecodeError) {
        if let Some(suppressed) = self.drop_log.allow(now) {
            tracing::warn!(%from, kind = e.kind(), error = %e, suppressed, "dropped inbound datagram");
        }
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

    fn send_transmit(&mut self, t: Transmit, ctx: &mut Context<Self>) {
        let header = Header {
            protocol: t.protocol,
            relayed: false,
            source: self.local,
            source_incarnation: self.incarnation,
            destination: t.destination,
        };
        self.seal_and_send(header, &t.body, t.destination.addr(), ctx);
    }

    fn seal_and_send(
        &mut self,
        header: Header,
        body: &[u8],
        to: SocketAddr,
        ctx: &mut Context<Self>,
    ) {
        let mut datagram = Vec::with_capacity(HEADER_LEN + body.len() + 32);
        if let Err(e) = self.codec.seal(&header, body, &mut datagram) {
            self.drop_packet("encode_error");
            if let Some(suppressed) = self.error_log.allow(Clock::now()) {
                tracing::warn!(%to, protocol = ?header.protocol, error = %e, suppressed, "could not seal datagram");
            }
            return;
        }
        self.dispatch(header, datagram, to, ctx);
    }

    fn send_sealed(&mut self, datagram: Vec<u8>, to: SocketAddr, ctx: &mut Context<Self>) {
        match Header::parse(&datagram) {
            Ok(raw) => self.dispatch(raw.header, datagram, to, ctx),
            Err(_) => self.drop_packet("relay_bad_header"),
        }
    }

    /// Outbound interceptors, then send (now, later, and/or twice).
    fn dispatch(
        &mut self,
        header: Header,
        datagram: Vec<u8>,
        to: SocketAddr,
        ctx: &mut Context<Self>,
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
                self.send_now(protocol, &datagram, to, ctx);
            }
        } else if self.delayed + copies > self.max_delayed {
            self.drop_packet("delay_overflow");
        } else {
            self.delayed += copies;
            ctx.run_later(verdict.delay, move |act, ctx| {
                act.delayed -= copies;
                for _ in 0..copies {
                    act.send_now(protocol, &datagram, to, ctx);
                }
            });
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
        ctx: &mut Context<Self>,
    ) {
        if !self.backlog.is_empty() {
            self.push_backlog(protocol, datagram.to_vec(), to, ctx);
            return;
        }
        match socket2::SockRef::from(&*self.socket).send_to(datagram, &to.into()) {
            Ok(n) => self.count_sent(protocol, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.push_backlog(protocol, datagram.to_vec(), to, ctx)
            }
            Err(e) => self.send_failed(to, &e),
        }
    }

    fn push_backlog(
        &mut self,
        protocol: ProtocolId,
        datagram: Vec<u8>,
        to: SocketAddr,
        ctx: &mut Context<Self>,
    ) {
        if self.backlog.len() >= MAX_BACKLOG {
            // As a full UDP send buffer would.
            self.drop_packet("send_backlog");
            return;
        }
        self.backlog.push_back((protocol, datagram, to));
        self.wait_writable(ctx);
    }

    /// Drains the backlog once the socket is writable again.
    fn wait_writable(&mut self, ctx: &mut Context<Self>) {
        if self.flushing {
            return;
        }
        self.flushing = true;
        let socket = self.socket.clone();
        ctx.spawn(
            async move { socket.writable().await }
                .into_actor(self)
                .map(|_, act, ctx| {
                    act.flushing = false;
                    act.flush_backlog(ctx);
                }),
        );
    }

    fn flush_backlog(&mut self, ctx: &mut Context<Self>) {
        while let Some((protocol, datagram, to)) = self.backlog.front() {
            let (protocol, to) = (*protocol, *to);
            // tokio's own call here, so that a real `WouldBlock` clears its
            // readiness and `writable()` waits for the kernel.
            match self.socket.try_send_to(datagram, to) {
                Ok(n) => self.count_sent(protocol, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait_writable(ctx);
                    return;
                }
                Err(e) => self.send_failed(to, &e),
            }
            self.backlog.pop_front();
        }
    }
}

impl Actor for SocketActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.add_stream(RecvStream {
            socket: self.socket.clone(),
            buf: vec![0u8; RECV_BUF],
            consecutive_errors: 0,
            backoff: None,
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::debug!(node = %self.local, "socket actor stopped");
    }
}

impl StreamHandler<RecvEvent> for SocketActor {
    fn handle(&mut self, item: RecvEvent, ctx: &mut Self::Context) {
        match item {
            RecvEvent::Datagram(data, from) => self.on_datagram(data, from, ctx),
            RecvEvent::Error(e) => {
                // E.g. ECONNREFUSED after an ICMP port unreachable: not
                // attributable to a destination here (see the module docs).
                self.recv_errors += 1;
                if let Some(suppressed) = self.error_log.allow(Clock::now()) {
                    tracing::warn!(error = %e, suppressed, "receive error (ignored)");
                }
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The receive stream never ends; if it somehow did, keep the actor
        // alive for sending rather than stopping it.
        tracing::error!(node = %self.local, "receive stream ended");
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
        self.subscribers.remove(&msg.0).is_some()
    }
}

impl Handler<SendPackets> for SocketActor {
    type Result = ();
    fn handle(&mut self, msg: SendPackets, ctx: &mut Self::Context) {
        for t in msg.0 {
            self.send_transmit(t, ctx);
        }
    }
}

impl Handler<RelaySend> for SocketActor {
    type Result = ();
    fn handle(&mut self, msg: RelaySend, ctx: &mut Self::Context) {
        match msg.packet {
            RelayPacket::Sealed(datagram) => self.send_sealed(datagram, msg.to, ctx),
            RelayPacket::Unsealed { header, body } => {
                self.seal_and_send(header, &body, msg.to, ctx)
            }
        }
    }
}

impl Handler<SetFaults> for SocketActor {
    type Result = Result<FaultConfig, FaultConfigError>;
    fn handle(&mut self, msg: SetFaults, _: &mut Self::Context) -> Self::Result {
        let r = self.pipeline.faults.set_config(msg.0);
        match &r {
            Ok(_) => {
                tracing::info!(node = %self.local, faults = ?self.pipeline.faults.config(), "fault injection changed")
            }
            Err(e) => tracing::warn!(node = %self.local, error = %e, "fault config refused"),
        }
        r
    }
}

impl Handler<GetFaults> for SocketActor {
    type Result = MessageResult<GetFaults>;
    fn handle(&mut self, _: GetFaults, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.pipeline.faults.config().clone())
    }
}

impl Handler<SetFilter> for SocketActor {
    type Result = MessageResult<SetFilter>;
    fn handle(&mut self, msg: SetFilter, _: &mut Self::Context) -> Self::Result {
        let old = self.pipeline.filter.config().clone();
        self.pipeline.filter.set_config(msg.0);
        MessageResult(old)
    }
}

impl Handler<GetFilter> for SocketActor {
    type Result = MessageResult<GetFilter>;
    fn handle(&mut self, _: GetFilter, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.pipeline.filter.config().clone())
    }
}

impl Handler<AddInterceptor> for SocketActor {
    type Result = ();
    fn handle(&mut self, msg: AddInterceptor, _: &mut Self::Context) {
        self.pipeline.push(msg.0);
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
        self.incarnation = msg.0;
    }
}

impl Handler<SetKeyRing> for SocketActor {
    type Result = bool;
    fn handle(&mut self, msg: SetKeyRing, _: &mut Self::Context) -> bool {
        match self.codec.auth_mut() {
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
        multicast::join(&self.socket, &msg.0)
    }
}

impl Handler<LeaveMulticast> for SocketActor {
    type Result = io::Result<()>;
    fn handle(&mut self, msg: LeaveMulticast, _: &mut Self::Context) -> io::Result<()> {
        multicast::leave(&self.socket, msg.group, msg.interface)
    }
}

impl Handler<GetStats> for SocketActor {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.stats())
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
    async fn bad_initial_faults_are_refused() {
        let mut o = SocketOptions::localhost();
        o.faults = FaultConfig::clear().with_drop_pct(200.0);
        assert!(SocketActor::bind(o).is_err());
    }
}
