//! IP multicast for the daemon shells: the startup probe behind
//! `--multicast auto`, and the group sockets (a socket bound to a group's
//! port and joined to its class D address, whose datagrams go to the core
//! that already runs on the daemon's main socket).
//!
//! The I/O itself is the runtime's ([`membership::runtime::probe_multicast`],
//! [`GroupSocket`]); this module is what the mserver and the mcaster made of
//! it, once.

use membership::id::{NodeId, ProtocolId};
use membership::runtime::{
    probe_multicast, CoreHandle, GroupSocket, MulticastOptions, MulticastSend, SocketOptions,
};
use membership::sansio::Core;
use membership::wire::{AuthConfig, KeyRing};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// How long the startup probe waits for its datagram to come back.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether to use IP multicast: `forced` as configured (`Some(true)` for
/// `--multicast on`, `Some(false)` for `off`), or, for `auto` (`None`),
/// whether a probe datagram to `probe_group` sent on `interface` comes back
/// within [`PROBE_TIMEOUT`]. The probe's answer is logged
/// (`multicast probe`, with `usable` and `reason`).
///
/// Each daemon probes its own class D address, so that an mserver and an
/// mcaster starting together on one host do not hear each other's probes.
pub async fn use_multicast(
    forced: Option<bool>,
    probe_group: Ipv4Addr,
    interface: Ipv4Addr,
) -> bool {
    if let Some(on) = forced {
        return on;
    }
    let c = probe_multicast(SocketAddrV4::new(probe_group, 0), interface, PROBE_TIMEOUT).await;
    tracing::info!(usable = c.usable(), reason = %c.reason, "multicast probe");
    c.usable()
}

/// Opens a socket bound to the address and port of `group` (with address
/// reuse, so that several nodes of one host can join it), joined to its
/// class D address as `send` says (interface, loopback, TTL), that opens
/// datagrams with `ring` when there is one and hands those of `protocols`
/// to the core of `handle`. Must be called inside an actix system.
///
/// # Errors
///
/// An IPv6 group ("only IPv4 groups can be joined"), or the bind or the
/// join failing.
pub fn open_group_socket<C>(
    group: NodeId,
    send: MulticastSend,
    ring: Option<KeyRing>,
    protocols: &[ProtocolId],
    handle: &CoreHandle<C>,
) -> anyhow::Result<GroupSocket>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    let IpAddr::V4(ip) = group.addr().ip() else {
        anyhow::bail!("only IPv4 groups can be joined");
    };
    let mut o = SocketOptions::new(group.addr());
    o.reuse_address = true;
    o.advertise = Some(handle.local);
    o.auth = ring.map(AuthConfig::new);
    o.multicast = Some(MulticastOptions {
        group: ip,
        interface: send.interface,
        loopback: send.loopback,
        ttl: send.ttl,
    });
    Ok(GroupSocket::open(o, protocols, handle.driver.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn on_and_off_do_not_probe() {
        // A group no probe could use: a forced answer never touches it.
        let nowhere = Ipv4Addr::UNSPECIFIED;
        assert!(use_multicast(Some(true), nowhere, Ipv4Addr::UNSPECIFIED).await);
        assert!(!use_multicast(Some(false), nowhere, Ipv4Addr::UNSPECIFIED).await);
    }
}
