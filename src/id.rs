//! Identifiers shared by every layer (DESIGN.md sections 2 and 5).
//!
//! - [`NodeId`]: a node's network address (IP and UDP port). The thesis
//!   (seed 003, section III) names mservers by address, and the fault
//!   interceptor blocks by address, so the address *is* the identity.
//! - [`Incarnation`]: a UUID v7 taken at every start and every rejoin, so a
//!   restarted node is distinguishable from its previous life and "older" is
//!   comparable across subgroups.
//! - [`ViewId`]: a view number together with the incarnation of the member
//!   that coordinated it (JGroups writes `[coord|n]`).
//! - [`ProtocolId`]: which layer a packet belongs to (the demultiplexing key).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use uuid::Uuid;

/// A node's address: IP and UDP port. Encoded on the wire in 18 bytes
/// (IPv6, with IPv4 addresses mapped, then the port, big-endian).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(SocketAddr);

impl NodeId {
    /// Length of a `NodeId` in the fixed packet header.
    pub const WIRE_LEN: usize = 18;

    /// The node at `addr`.
    pub const fn new(addr: SocketAddr) -> Self {
        NodeId(addr)
    }

    /// A convenience for tests and the simulator: `127.0.0.1:port`... or any
    /// IPv4 address and port.
    pub const fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> Self {
        NodeId(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port))
    }

    /// The socket address of this node.
    pub const fn addr(&self) -> SocketAddr {
        self.0
    }

    /// Writes the 18-byte wire form into `out`.
    pub fn write_wire(&self, out: &mut [u8; Self::WIRE_LEN]) {
        let v6 = match self.0.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        out[..16].copy_from_slice(&v6.octets());
        out[16..].copy_from_slice(&self.0.port().to_be_bytes());
    }

    /// Reads the 18-byte wire form. IPv4-mapped addresses come back as IPv4.
    pub fn read_wire(bytes: &[u8; Self::WIRE_LEN]) -> Self {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&bytes[..16]);
        let v6 = Ipv6Addr::from(octets);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        };
        let port = u16::from_be_bytes([bytes[16], bytes[17]]);
        NodeId(SocketAddr::new(ip, port))
    }
}

impl From<SocketAddr> for NodeId {
    fn from(addr: SocketAddr) -> Self {
        NodeId(addr)
    }
}

impl FromStr for NodeId {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<SocketAddr>().map(NodeId)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One life of a node: a UUID v7, new at every start and every rejoin.
///
/// UUID v7 is time-ordered, so comparing two incarnations tells which was
/// taken first. Cores never generate one from the clock themselves: the
/// driver (runtime or simulator) hands them out, the simulator from its
/// seeded RNG via [`Incarnation::from_parts`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Incarnation(Uuid);

impl Incarnation {
    /// Length of an incarnation in the fixed packet header.
    pub const WIRE_LEN: usize = 16;

    /// The nil incarnation, used by packets that belong to no node life
    /// (e.g. a probe from a tool).
    pub const NIL: Incarnation = Incarnation(Uuid::nil());

    /// A UUID v7 from an explicit millisecond timestamp and random bits, for
    /// drivers that supply their own time and RNG (the simulator).
    pub fn from_parts(unix_millis: u64, random: [u8; 10]) -> Self {
        Incarnation(uuid::Builder::from_unix_timestamp_millis(unix_millis, &random).into_uuid())
    }

    /// Wraps an existing UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Incarnation(uuid)
    }

    /// The UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The 16 wire bytes.
    pub fn to_bytes(&self) -> [u8; 16] {
        *self.0.as_bytes()
    }

    /// From 16 wire bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Incarnation(Uuid::from_bytes(bytes))
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The last 8 hex digits are enough to tell lives apart in logs.
        let s = self.0.simple().to_string();
        write!(f, "inc:{}", &s[24..])
    }
}

/// Where a group stands in its history: the view (its membership) and the
/// application changes committed since that view was installed, with the
/// incarnation of the member that coordinated the latest commit.
///
/// A view is the group's membership (Kostrivas, 1995, chapter III), so its
/// `number` goes up only when the membership changes (a join, a failure, a
/// leave, a merge of subgroups). An application change committed by the
/// core-set protocol changes no membership: it keeps the number and takes
/// the next `seq` (its own sequence within the view, 0 at the view's
/// install). [`ViewId::position`] orders every commit of one history;
/// every commit has a distinct id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ViewId {
    /// The view number, incremented by every change of the membership.
    pub number: u64,
    /// Application commits since view `number` was installed (0 for the
    /// membership change itself).
    pub seq: u64,
    /// Who coordinated the commit that produced this id.
    pub coordinator: Incarnation,
}

impl ViewId {
    /// The id's place in the group's history: view number first, then the
    /// application commit within it. Comparing positions tells which of two
    /// ids is later (or ahead); equal positions with different coordinators
    /// are two subgroups that went separate ways.
    pub fn position(&self) -> CommitPosition {
        CommitPosition {
            view: self.number,
            seq: self.seq,
        }
    }

    /// The id of the next membership change coordinated by `coordinator`.
    pub fn next_view(&self, coordinator: Incarnation) -> ViewId {
        ViewId {
            number: self.number.saturating_add(1),
            seq: 0,
            coordinator,
        }
    }

    /// The id of the next application commit (same view) coordinated by
    /// `coordinator`.
    pub fn next_commit(&self, coordinator: Incarnation) -> ViewId {
        ViewId {
            number: self.number,
            seq: self.seq.saturating_add(1),
            coordinator,
        }
    }
}

/// A commit's place in a group's history (see [`ViewId::position`]):
/// ordered by view number, then by application commit within the view.
#[derive(
    Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize,
)]
pub struct CommitPosition {
    /// The view number.
    pub view: u64,
    /// Application commits since that view was installed.
    pub seq: u64,
}

impl fmt::Display for CommitPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.view, self.seq)
    }
}

/// The protocol a packet belongs to: the key by which the runtime
/// demultiplexes inbound packets into per-protocol queues.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[repr(u8)]
pub enum ProtocolId {
    /// RPC: BLAST fragments and SRRs carrying CHAN requests and replies.
    Rpc = 1,
    /// Reliable multicast (rmcast).
    Rmcast = 2,
    /// The core-set protocol between mservers.
    CoreSet = 3,
    /// mcaster group management and relaying.
    Mcaster = 4,
    /// Overlay routing between mcasters.
    Route = 5,
    /// Application-group traffic between mservers and member interfaces.
    AppGroup = 6,
    /// Test and benchmark traffic (e.g. the simulator's toy cores, ping).
    Test = 15,
}

impl ProtocolId {
    /// Every protocol id, in wire order.
    pub const ALL: [ProtocolId; 7] = [
        ProtocolId::Rpc,
        ProtocolId::Rmcast,
        ProtocolId::CoreSet,
        ProtocolId::Mcaster,
        ProtocolId::Route,
        ProtocolId::AppGroup,
        ProtocolId::Test,
    ];

    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses the wire byte; `None` for an unknown protocol.
    pub fn from_u8(b: u8) -> Option<Self> {
        ProtocolId::ALL.iter().copied().find(|p| p.as_u8() == b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_wire_roundtrip_v4_and_v6() {
        for s in ["127.0.0.3:7000", "[::1]:9", "[fe80::1]:65535", "0.0.0.0:0"] {
            let n: NodeId = s.parse().unwrap();
            let mut buf = [0u8; NodeId::WIRE_LEN];
            n.write_wire(&mut buf);
            assert_eq!(NodeId::read_wire(&buf), n, "{s}");
        }
    }

    #[test]
    fn incarnations_order_by_time() {
        let a = Incarnation::from_parts(1000, [9; 10]);
        let b = Incarnation::from_parts(1001, [0; 10]);
        assert!(a < b);
        assert_eq!(Incarnation::from_bytes(a.to_bytes()), a);
    }

    #[test]
    fn protocol_ids_roundtrip() {
        for p in ProtocolId::ALL {
            assert_eq!(ProtocolId::from_u8(p.as_u8()), Some(p));
        }
        assert_eq!(ProtocolId::from_u8(0), None);
        assert_eq!(ProtocolId::from_u8(200), None);
    }
}
