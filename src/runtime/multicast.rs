//! IPv4 multicast: joining and leaving a group on a socket, the send
//! options of a socket that sends to groups, and a capability probe for
//! `--multicast auto` (DESIGN.md section 7).
//!
//! **Send options** ([`MulticastSend`]) are always set explicitly, never left
//! to the kernel's defaults: the outgoing interface (`IP_MULTICAST_IF`; an
//! address of the interface, `0.0.0.0` for the kernel's choice by routing
//! table), the TTL (`IP_MULTICAST_TTL`, 1 by default: datagrams never leave
//! the local network) and loopback (`IP_MULTICAST_LOOP`, on by default: other
//! sockets of this host that joined the group get our datagrams too, which is
//! what several nodes on one host need). A socket that joins a group
//! ([`MulticastOptions`]) gets them with the join; a socket that only sends
//! to groups gets them through `SocketOptions::multicast_send`.
//!
//! Many machines (containers, loopback-only hosts, cloud VMs) have no working
//! IP multicast; the service then falls back to the mcaster. The probe
//! [`probe_multicast`] answers "does multicast work here?" by trying it:
//! bind a socket, join the group on the given interface, send one datagram to
//! the group (and only to the group) with loopback enabled, and wait for it to
//! come back. "No" is a normal answer; the probe never panics and always
//! returns within its timeout (plus the time of a few non-blocking system
//! calls).

use serde::{Deserialize, Serialize};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;
use tokio::net::UdpSocket;

/// How a socket takes part in an IPv4 multicast group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MulticastOptions {
    /// The group (224.0.0.0/4).
    pub group: Ipv4Addr,
    /// The local interface address to join on and send from
    /// (`0.0.0.0`: let the kernel choose).
    pub interface: Ipv4Addr,
    /// Whether our own multicast datagrams are looped back to local sockets
    /// (needed when several nodes share one host).
    pub loopback: bool,
    /// Time-to-live of multicast datagrams we send (1: the local network).
    pub ttl: u32,
}

impl MulticastOptions {
    /// Joining `group` on `interface`, with loopback on and TTL 1.
    pub fn new(group: Ipv4Addr, interface: Ipv4Addr) -> Self {
        MulticastOptions {
            group,
            interface,
            loopback: true,
            ttl: 1,
        }
    }
}

impl MulticastOptions {
    /// The send options that go with this membership: the same interface,
    /// loopback and TTL.
    pub fn send_options(&self) -> MulticastSend {
        MulticastSend {
            interface: self.interface,
            loopback: self.loopback,
            ttl: self.ttl,
        }
    }
}

/// How a socket sends to IPv4 multicast groups, whether or not it joined
/// one (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MulticastSend {
    /// The local interface address datagrams to groups leave from
    /// (`IP_MULTICAST_IF`; `0.0.0.0`: the kernel's choice by routing table).
    pub interface: Ipv4Addr,
    /// Whether our own multicast datagrams are looped back to local sockets
    /// (`IP_MULTICAST_LOOP`).
    pub loopback: bool,
    /// Time-to-live of multicast datagrams (`IP_MULTICAST_TTL`; 1: the
    /// local network).
    pub ttl: u32,
}

impl MulticastSend {
    /// Sending from `interface`, with loopback on and TTL 1.
    pub fn new(interface: Ipv4Addr) -> Self {
        MulticastSend {
            interface,
            loopback: true,
            ttl: 1,
        }
    }
}

/// Sets the send options (interface, loopback, TTL) on a socket, every one
/// explicitly.
pub fn set_send_options(socket: &UdpSocket, options: &MulticastSend) -> io::Result<()> {
    let sock = socket2::SockRef::from(socket);
    sock.set_multicast_if_v4(&options.interface)?;
    sock.set_multicast_loop_v4(options.loopback)?;
    sock.set_multicast_ttl_v4(options.ttl)?;
    Ok(())
}

/// Joins the group on its interface and applies the matching send options
/// (interface, loopback, TTL: [`MulticastOptions::send_options`]).
pub fn join(socket: &UdpSocket, options: &MulticastOptions) -> io::Result<()> {
    if !options.group.is_multicast() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not an IPv4 multicast group", options.group),
        ));
    }
    socket.join_multicast_v4(options.group, options.interface)?;
    set_send_options(socket, &options.send_options())
}

/// Leaves the group.
pub fn leave(socket: &UdpSocket, group: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
    socket.leave_multicast_v4(group, interface)
}

/// The answer of [`probe_multicast`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MulticastCapability {
    /// A datagram to the group was accepted by the kernel.
    pub can_send: bool,
    /// That datagram came back to a socket that joined the group.
    pub can_receive: bool,
    /// Why not (or "ok").
    pub reason: String,
}

impl MulticastCapability {
    /// Whether multicast can be used (send and receive).
    pub fn usable(&self) -> bool {
        self.can_send && self.can_receive
    }

    fn no(can_send: bool, reason: impl Into<String>) -> Self {
        MulticastCapability {
            can_send,
            can_receive: false,
            reason: reason.into(),
        }
    }
}

/// Probes whether IPv4 multicast to `group` works on `iface`, answering
/// within about `timeout`.
///
/// Binds a socket to the group address (port 0 in `group` picks a free port),
/// joins the group on `iface`, enables loopback, sends one datagram carrying
/// a random nonce to the group, and waits for the nonce to come back. Nothing
/// is ever sent anywhere but to `group`; with `iface` = 127.0.0.1 the
/// datagram stays on this host. Must be called within a tokio runtime (e.g.
/// under actix-rt).
pub async fn probe_multicast(
    group: SocketAddrV4,
    iface: Ipv4Addr,
    timeout: Duration,
) -> MulticastCapability {
    if !group.ip().is_multicast() {
        return MulticastCapability::no(false, format!("{} is not a multicast group", group.ip()));
    }
    let socket = match bind_probe_socket(group) {
        Ok(s) => s,
        Err(e) => return MulticastCapability::no(false, format!("bind: {e}")),
    };
    let port = match socket.local_addr() {
        Ok(a) => a.port(),
        Err(e) => return MulticastCapability::no(false, format!("local_addr: {e}")),
    };
    let options = MulticastOptions::new(*group.ip(), iface);
    if let Err(e) = join(&socket, &options) {
        return MulticastCapability::no(false, format!("join {} on {iface}: {e}", group.ip()));
    }
    let target = SocketAddr::V4(SocketAddrV4::new(*group.ip(), port));
    let nonce = *uuid::Uuid::now_v7().as_bytes();
    let mut datagram = b"ms-mcast-probe:".to_vec();
    datagram.extend_from_slice(&nonce);
    let probe = async {
        if let Err(e) = socket.send_to(&datagram, target).await {
            return MulticastCapability::no(false, format!("send to {target}: {e}"));
        }
        let mut buf = [0u8; 128];
        // Other datagrams to the same group and port are ignored; the loop is
        // bounded by the timeout around it and by a count.
        for _ in 0..1024 {
            match socket.recv_from(&mut buf).await {
                Ok((n, _)) if buf[..n] == datagram[..] => {
                    return MulticastCapability {
                        can_send: true,
                        can_receive: true,
                        reason: "ok".into(),
                    }
                }
                Ok(_) => continue,
                Err(e) => return MulticastCapability::no(true, format!("receive: {e}")),
            }
        }
        MulticastCapability::no(true, "the probe datagram did not come back")
    };
    let result = tokio::time::timeout(timeout, probe).await;
    let _ = leave(&socket, *group.ip(), iface);
    match result {
        Ok(answer) => answer,
        Err(_) => MulticastCapability::no(
            true,
            format!("the probe datagram did not come back within {timeout:?}"),
        ),
    }
}

/// A non-blocking socket bound to the group address (so it only receives
/// that group's datagrams), with SO_REUSEADDR so that it can share the port
/// with a running node.
fn bind_probe_socket(group: SocketAddrV4) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(group).into())?;
    UdpSocket::from_std(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn probe_refuses_a_unicast_group_without_sending() {
        let c = probe_multicast(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9),
            Ipv4Addr::LOCALHOST,
            Duration::from_millis(50),
        )
        .await;
        assert!(!c.can_send && !c.usable(), "{c:?}");
        assert!(c.reason.contains("not a multicast group"));
    }

    fn read_back(s: &UdpSocket) -> MulticastSend {
        let sock = socket2::SockRef::from(s);
        MulticastSend {
            interface: sock.multicast_if_v4().unwrap(),
            loopback: sock.multicast_loop_v4().unwrap(),
            ttl: sock.multicast_ttl_v4().unwrap(),
        }
    }

    #[actix_rt::test]
    async fn send_options_are_applied_explicitly() {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let o = MulticastSend {
            interface: Ipv4Addr::LOCALHOST,
            loopback: false,
            ttl: 3,
        };
        set_send_options(&s, &o).unwrap();
        assert_eq!(read_back(&s), o);
        // The defaults, set explicitly: the kernel's interface choice, TTL 1,
        // loopback on.
        let d = MulticastSend::new(Ipv4Addr::UNSPECIFIED);
        set_send_options(&s, &d).unwrap();
        assert_eq!(read_back(&s), d);
        assert_eq!((d.ttl, d.loopback), (1, true));
    }

    #[actix_rt::test]
    async fn join_sets_the_interface_for_sending_too() {
        let s = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let mut o = MulticastOptions::new(Ipv4Addr::new(239, 255, 77, 78), Ipv4Addr::LOCALHOST);
        o.loopback = false;
        match join(&s, &o) {
            Ok(()) => assert_eq!(read_back(&s), o.send_options()),
            // A host whose loopback interface cannot join groups: nothing to
            // check here (the netns test covers a real interface).
            Err(e) => eprintln!("join on 127.0.0.1 not possible here: {e}"),
        }
    }

    #[actix_rt::test]
    async fn join_refuses_a_unicast_group() {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let o = MulticastOptions::new(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST);
        assert!(join(&s, &o).is_err());
    }
}
