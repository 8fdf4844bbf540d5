//! Free port choice.
//!
//! [`free_port`] is for clusters that use one port on several loopback
//! addresses (127.0.0.10, 127.0.0.11, ...): a per-process counter from a
//! pid-derived offset, never the same port twice in one process, checked
//! free for UDP and TCP on 127.0.0.1. [`free_udp_port`] lets the kernel
//! choose one UDP port on a given address.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};

/// A port of 20,000 to 59,999 free for UDP and TCP on 127.0.0.1 that no
/// earlier call of this process answered; `None` if 2,000 tries found none.
pub fn try_free_port() -> Option<u16> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 20_000) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..2000 {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        let p = if p >= 60_000 { 20_000 + p % 1000 } else { p };
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok()
        {
            return Some(p);
        }
    }
    None
}

/// [`try_free_port`]; panics if none is found.
pub fn free_port() -> u16 {
    try_free_port().expect("testkit: no free port found on 127.0.0.1")
}

/// A UDP port on `ip` the kernel says is free (bound, then released).
pub fn try_free_udp_port(ip: &str) -> std::io::Result<u16> {
    UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
}

/// [`try_free_udp_port`]; panics with the reason.
pub fn free_udp_port(ip: &str) -> u16 {
    try_free_udp_port(ip).unwrap_or_else(|e| panic!("testkit: no free UDP port on {ip}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_free() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        assert!(UdpSocket::bind(("127.0.0.1", b)).is_ok());
        assert_ne!(free_udp_port("127.0.0.1"), 0);
    }
}
