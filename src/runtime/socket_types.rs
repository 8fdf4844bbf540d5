//! What the socket actor (`socket.rs`) and its I/O state (`socket_io.rs`)
//! both speak of, kept below both: how a socket is bound
//! ([`SocketOptions`]), who it is ([`LocalInfo`]), its counters
//! ([`SocketStats`], [`ProtocolStats`]) and the wake-up its subscribers get
//! ([`PacketsReady`]). `socket.rs` re-exports them all.

use super::interceptor::{FilterConfig, TrafficSnapshot};
use super::multicast::{MulticastOptions, MulticastSend};
use crate::fault::FaultConfig;
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::wire::AuthConfig;
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

/// Default capacity of each protocol queue, in packets.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Default socket buffer size requested from the kernel (which may grant
/// less; the granted size is logged and reported in [`SocketStats`]).
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Default bound on datagrams held back by interceptor delays.
pub const DEFAULT_MAX_DELAYED: usize = 10_000;

/// How to bind and run a [`SocketActor`](super::SocketActor).
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
    /// Join an IPv4 multicast group after binding (with its send options:
    /// interface, loopback, TTL).
    pub multicast: Option<MulticastOptions>,
    /// Send options for IPv4 multicast (outgoing interface, loopback, TTL)
    /// of a socket that sends to groups without joining one, e.g. the
    /// mcaster's class D copies. Applied after binding, before `multicast`
    /// (whose own send options then win). `None`: the kernel's defaults.
    pub multicast_send: Option<MulticastSend>,
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
    /// An mcaster (seed 003, section IV.A) for a unicast-only host: a
    /// transmit addressed to a multicast group, without an explicit `via`,
    /// goes by unicast to this address instead of the class D address (its
    /// header still names the group, and the mcaster relays it). `None`:
    /// groups are sent to by IP multicast.
    pub mcaster: Option<SocketAddr>,
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
            multicast_send: None,
            auth: None,
            incarnation: None,
            fault_seed: None,
            faults: FaultConfig::default(),
            filter: FilterConfig::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_delayed: DEFAULT_MAX_DELAYED,
            mcaster: None,
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

/// Per-protocol counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Datagrams delivered to the protocol's core (direct) or queue, after
    /// the interceptors (each duplicate counts).
    pub received: u64,
    /// Body bytes delivered to the protocol's core or queue.
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
    /// "Destination unreachable" entries read from the socket's error
    /// queue (Linux, `IP_RECVERR`; see the runtime module docs).
    #[serde(default)]
    pub icmp_errors: u64,
    /// Unreachable hints handed to the primary driver's core
    /// ([`Core::handle_unreachable`](crate::sansio::Core::handle_unreachable)),
    /// at most one per destination per 10 ms.
    #[serde(default)]
    pub unreachable_hints: u64,
    /// Per protocol.
    pub per_protocol: BTreeMap<ProtocolId, ProtocolStats>,
    /// Dropped datagrams by kind: the wire rejects ([`DecodeError::kind`](crate::wire::DecodeError::kind)),
    /// `queue_full`, `no_subscriber`, interceptor drops (`filter_in`,
    /// `fault_drop_out`, `fault_block_in`, ...), `delay_overflow`,
    /// `send_error`, `send_backlog`, `encode_error`, `relay_bad_header`,
    /// `socket_stopped`.
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
