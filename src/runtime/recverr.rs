//! "Destination unreachable" reports from the UDP socket's error queue
//! (DESIGN.md section 10; seed 003's crash detection: a crash on a live
//! host is detected from the host's port-unreachable answer).
//!
//! An unconnected UDP socket ignores the ICMP errors its datagrams cause,
//! unless `IP_RECVERR` (`IPV6_RECVERR`) is set. Then the kernel queues each
//! error on the socket's *error queue*: the offending datagram (the start of
//! our own sent bytes, hence our wire header naming the destination node),
//! its original destination address, and a `sock_extended_err` (origin
//! ICMP, type 3 code 3 for port unreachable). The socket also reports the
//! error once to the next `recv` (or `send`: see
//! [`is_icmp_error`]) and signals `EPOLLERR` to the reactor.
//!
//! This module only talks to the kernel: [`enable`] sets the options at
//! bind time, [`ErrorWatch`] waits for the error readiness, and
//! [`read_queue`] drains at most a budget of entries. The
//! [`SocketIo`](super::socket_io::SocketIo) attributes the entries to nodes
//! and rate-limits them ([`HintLimiter`]); the receive loop hands the hints
//! to the primary driver's core as
//! [`Core::handle_unreachable`](crate::sansio::Core::handle_unreachable).
//!
//! Linux only: elsewhere [`enable`] does nothing, [`ErrorWatch`] never
//! fires and [`read_queue`] reads nothing, so the cores wait out their
//! timeouts as before. The kernel calls go through `nix`'s safe wrappers
//! (the crate forbids `unsafe`).

use crate::id::NodeId;
use crate::time::Instant;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Most error-queue entries read per wake-up.
pub(crate) const ERRQUEUE_BUDGET: usize = 64;
/// At most [`HINT_BURST`] hints per destination in this window.
pub(crate) const HINT_INTERVAL: Duration = Duration::from_millis(10);
/// Hints per destination per [`HINT_INTERVAL`]: more than one, because a
/// core confirms a first hint with one immediate retry whose answer is the
/// second hint (DESIGN.md section 10); few, so a burst of errors cannot
/// flood the core.
pub(crate) const HINT_BURST: u32 = 4;
/// Most destinations the [`HintLimiter`] remembers.
const MAX_TRACKED: usize = 1024;
/// Bytes of the offending datagram read back: our header is all we need.
const PAYLOAD_BUF: usize = 256;

/// One entry of the error queue that says a destination is unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueuedError {
    /// Where the offending datagram was sent (the UDP next hop), if the
    /// kernel said.
    pub to: Option<SocketAddr>,
    /// The start of the offending datagram.
    pub payload: Vec<u8>,
}

/// Whether `e` is the pending ICMP error the kernel reports once to the
/// next `recv`/`send` of a socket with `IP_RECVERR` (the entry itself stays
/// on the error queue). A `send` that fails so has not sent its datagram.
pub(crate) fn is_icmp_error(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        use nix::libc;
        matches!(
            e.raw_os_error(),
            Some(
                libc::ECONNREFUSED
                    | libc::EHOSTUNREACH
                    | libc::ENETUNREACH
                    | libc::EHOSTDOWN
                    | libc::EPROTO
                    | libc::EMSGSIZE
            )
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        false
    }
}

/// Sets `IP_RECVERR` (and `IPV6_RECVERR` on IPv6 sockets, which may carry
/// IPv4-mapped traffic too) on a socket before it is bound.
#[cfg(target_os = "linux")]
pub(crate) fn enable(socket: &socket2::Socket, v6: bool) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    if v6 {
        setsockopt(socket, sockopt::Ipv6RecvErr, &true)?;
        // For IPv4-mapped destinations; not fatal if refused.
        let _ = setsockopt(socket, sockopt::Ipv4RecvErr, &true);
    } else {
        setsockopt(socket, sockopt::Ipv4RecvErr, &true)?;
    }
    Ok(())
}

/// Not Linux: nothing to set.
#[cfg(not(target_os = "linux"))]
pub(crate) fn enable(_socket: &socket2::Socket, _v6: bool) -> io::Result<()> {
    Ok(())
}

/// Reads at most `budget` entries of the error queue of `socket` without
/// blocking, keeping the unreachable ones (ICMP/ICMPv6 destination
/// unreachable: port, host, network) in `out`. Answers `Ok(true)` when the
/// queue was found empty, `Ok(false)` when the budget ran out first.
#[cfg(target_os = "linux")]
pub(crate) fn read_queue(
    socket: &tokio::net::UdpSocket,
    budget: usize,
    out: &mut Vec<QueuedError>,
) -> io::Result<bool> {
    use nix::errno::Errno;
    use nix::libc;
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage};
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    /// `SO_EE_ORIGIN_ICMP`, `SO_EE_ORIGIN_ICMP6` (linux/errqueue.h).
    const ORIGIN_ICMP: u8 = 2;
    const ORIGIN_ICMP6: u8 = 3;
    /// ICMP destination unreachable: network, host, port (RFC 792).
    const ICMP_DEST_UNREACH: u8 = 3;
    const ICMP_UNREACHABLE_CODES: [u8; 3] = [0, 1, 3];
    /// ICMPv6 destination unreachable: no route, address, port (RFC 4443).
    const ICMP6_DEST_UNREACH: u8 = 1;
    const ICMP6_UNREACHABLE_CODES: [u8; 3] = [0, 3, 4];

    let fd = socket.as_raw_fd();
    let mut buf = [0u8; PAYLOAD_BUF];
    let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
    for _ in 0..budget {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<SockaddrStorage>(
            fd,
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(Errno::EAGAIN) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let len = msg.bytes.min(PAYLOAD_BUF);
        let to = msg.address.as_ref().and_then(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(SocketAddr::V4((*v4).into()))
            } else if let Some(v6) = a.as_sockaddr_in6() {
                Some(SocketAddr::V6((*v6).into()))
            } else {
                let _ = a.family();
                None
            }
        });
        let mut unreachable = false;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                let ee = match c {
                    ControlMessageOwned::Ipv4RecvErr(ee, _) => ee,
                    ControlMessageOwned::Ipv6RecvErr(ee, _) => ee,
                    _ => continue,
                };
                unreachable |= match ee.ee_origin {
                    ORIGIN_ICMP => {
                        ee.ee_type == ICMP_DEST_UNREACH
                            && ICMP_UNREACHABLE_CODES.contains(&ee.ee_code)
                    }
                    ORIGIN_ICMP6 => {
                        ee.ee_type == ICMP6_DEST_UNREACH
                            && ICMP6_UNREACHABLE_CODES.contains(&ee.ee_code)
                    }
                    _ => false,
                };
            }
        }
        if unreachable {
            out.push(QueuedError {
                to,
                payload: buf[..len].to_vec(),
            });
        }
    }
    Ok(false)
}

/// Not Linux: there is no error queue.
#[cfg(not(target_os = "linux"))]
pub(crate) fn read_queue(
    _socket: &tokio::net::UdpSocket,
    _budget: usize,
    _out: &mut Vec<QueuedError>,
) -> io::Result<bool> {
    Ok(true)
}

/// Waits for the socket's error readiness (`EPOLLERR`: the error queue is
/// not empty), which does not wake a reader waiting for datagrams.
pub(crate) struct ErrorWatch {
    #[cfg(target_os = "linux")]
    wait:
        Option<std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<tokio::io::Ready>>>>>,
}

impl std::fmt::Debug for ErrorWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorWatch").finish_non_exhaustive()
    }
}

impl ErrorWatch {
    pub(crate) fn new() -> Self {
        ErrorWatch {
            #[cfg(target_os = "linux")]
            wait: None,
        }
    }

    /// `true` when the error queue may hold entries (then drain it with
    /// [`drain`]); otherwise the task is registered for the error readiness.
    #[cfg(target_os = "linux")]
    pub(crate) fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
        socket: &std::sync::Arc<tokio::net::UdpSocket>,
    ) -> bool {
        let wait = self.wait.get_or_insert_with(|| {
            let s = socket.clone();
            Box::pin(async move { s.ready(tokio::io::Interest::ERROR).await })
        });
        match wait.as_mut().poll(cx) {
            std::task::Poll::Pending => false,
            std::task::Poll::Ready(_) => {
                self.wait = None;
                true
            }
        }
    }

    /// Not Linux: never fires.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn poll(
        &mut self,
        _cx: &mut std::task::Context<'_>,
        _socket: &std::sync::Arc<tokio::net::UdpSocket>,
    ) -> bool {
        false
    }

    /// Drops the wait (and its reference to the socket).
    pub(crate) fn clear(&mut self) {
        #[cfg(target_os = "linux")]
        {
            self.wait = None;
        }
    }
}

/// Drains the error queue after the error readiness fired (or a receive
/// returned the pending error): at most [`ERRQUEUE_BUDGET`] entries.
/// Clears tokio's error readiness when the queue is found empty, so that
/// the next [`ErrorWatch::poll`] waits for a new error. Answers whether
/// entries may remain (read again soon).
pub(crate) fn drain(socket: &tokio::net::UdpSocket, out: &mut Vec<QueuedError>) -> bool {
    let mut called = false;
    let mut more = false;
    let r = socket.try_io(tokio::io::Interest::ERROR, || {
        called = true;
        match read_queue(socket, ERRQUEUE_BUDGET, out) {
            Ok(true) => Err(io::ErrorKind::WouldBlock.into()),
            Ok(false) => {
                more = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    });
    if !called {
        // No readiness recorded yet (a receive saw the error first).
        match read_queue(socket, ERRQUEUE_BUDGET, out) {
            Ok(empty) => more = !empty,
            Err(e) => tracing::debug!(error = %e, "reading the socket error queue failed"),
        }
    } else if let Err(e) = r {
        if e.kind() != io::ErrorKind::WouldBlock {
            tracing::debug!(error = %e, "reading the socket error queue failed");
        }
    }
    more
}

/// At most one hint per destination per [`HINT_INTERVAL`], remembering at
/// most a bounded number of destinations, so that a flood of ICMP errors
/// cannot flood the core.
#[derive(Debug, Default)]
pub(crate) struct HintLimiter {
    /// Per destination: the start of its current window and the hints
    /// given in it.
    last: BTreeMap<NodeId, (Instant, u32)>,
}

impl HintLimiter {
    /// Whether a hint for `node` may go to the core now (and records it).
    pub(crate) fn allow(&mut self, now: Instant, node: NodeId) -> bool {
        if let Some((start, count)) = self.last.get_mut(&node) {
            if now.saturating_duration_since(*start) < HINT_INTERVAL {
                if *count >= HINT_BURST {
                    return false;
                }
                *count += 1;
                return true;
            }
            *start = now;
            *count = 1;
            return true;
        }
        if self.last.len() >= MAX_TRACKED {
            self.last
                .retain(|_, (t, _)| now.saturating_duration_since(*t) < HINT_INTERVAL);
            if self.last.len() >= MAX_TRACKED {
                return false;
            }
        }
        self.last.insert(node, (now, 1));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_a_small_burst_per_destination_per_interval() {
        let mut l = HintLimiter::default();
        let a = NodeId::v4(127, 0, 0, 1, 1);
        let b = NodeId::v4(127, 0, 0, 1, 2);
        let t0 = Instant::from_millis(100);
        for _ in 0..HINT_BURST {
            assert!(l.allow(t0, a));
        }
        assert!(!l.allow(t0, a));
        assert!(l.allow(t0, b));
        assert!(!l.allow(t0 + Duration::from_millis(9), a));
        assert!(l.allow(t0 + HINT_INTERVAL, a));
    }

    #[test]
    fn limiter_is_bounded() {
        let mut l = HintLimiter::default();
        let t0 = Instant::from_millis(100);
        for p in 0..MAX_TRACKED as u16 {
            assert!(l.allow(t0, NodeId::v4(127, 0, 0, 1, p)));
        }
        // Full of fresh entries: a new destination waits.
        assert!(!l.allow(t0, NodeId::v4(127, 0, 0, 2, 1)));
        assert_eq!(l.last.len(), MAX_TRACKED);
        // Once they are stale, they are forgotten.
        assert!(l.allow(t0 + HINT_INTERVAL, NodeId::v4(127, 0, 0, 2, 1)));
        assert_eq!(l.last.len(), 1);
    }
}
