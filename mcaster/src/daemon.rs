//! The daemon around [`Relay`]: the socket, the timer, the multicast
//! group sockets, the periodic summary and the signals. No protocol logic
//! lives here (DESIGN.md section 3): the relay core decides who gets what.

use crate::settings::{MulticastMode, Settings};
use actix::prelude::*;
use membership::id::{NodeId, ProtocolId};
use membership::relay::{Relay, RelayConfig, RelayEvent};
use membership::runtime::{
    probe_multicast, spawn_core, CoreDriver, CoreHandle, MulticastOptions, PacketQueue,
    PacketsReady, SocketActor, SocketOptions, SpawnedCore, StopSocket, WithCore,
};
use membership::sansio::Core;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// The class D address the startup probe uses (administratively scoped;
/// with TTL 1 and loopback it never leaves the host's LAN).
const PROBE_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 77);
/// How long the probe waits for its datagram to come back.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs the mcaster until SIGTERM or SIGINT.
pub async fn run(s: Settings) -> anyhow::Result<()> {
    let multicast = match s.multicast {
        MulticastMode::Off => false,
        MulticastMode::On => true,
        MulticastMode::Auto => {
            let c = probe_multicast(
                SocketAddrV4::new(PROBE_GROUP, 0),
                s.multicast_interface,
                PROBE_TIMEOUT,
            )
            .await;
            tracing::info!(usable = c.usable(), reason = %c.reason, "multicast probe");
            c.usable()
        }
    };
    let mut options = SocketOptions::new(s.listen);
    options.advertise = s.advertise.map(NodeId::new);
    let config = RelayConfig {
        member_ttl: Duration::from_millis(s.member_ttl_ms),
        max_groups: s.max_groups,
        max_members: s.max_members,
        multicast,
        ..RelayConfig::default()
    };
    let SpawnedCore { handle, mut events } = spawn_core(options, &ProtocolId::ALL, move |ctx| {
        Relay::new(ctx.local, config)
    })
    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", s.listen))?;
    tracing::info!(
        listen = %s.listen,
        node = %handle.local,
        multicast,
        member_ttl_ms = s.member_ttl_ms,
        max_groups = s.max_groups,
        max_members = s.max_members,
        "mcaster running"
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut summary = (s.summary_interval_secs > 0).then(|| {
        let period = Duration::from_secs(s.summary_interval_secs);
        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
    });
    let mut groups: BTreeMap<NodeId, GroupSocket> = BTreeMap::new();
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(e) => on_event(e, &handle, &mut groups, multicast, s.multicast_interface),
                None => {
                    tracing::error!("the relay stopped");
                    break;
                }
            },
            _ = tick(&mut summary) => log_summary(&handle, "summary").await,
            _ = term.recv() => {
                tracing::info!("SIGTERM: shutting down");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: shutting down");
                break;
            }
        }
    }
    log_summary(&handle, "final summary").await;
    for (_, g) in std::mem::take(&mut groups) {
        g.stop();
    }
    handle.stop();
    Ok(())
}

async fn tick(summary: &mut Option<tokio::time::Interval>) {
    match summary {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn on_event(
    e: RelayEvent,
    handle: &CoreHandle<Relay>,
    groups: &mut BTreeMap<NodeId, GroupSocket>,
    multicast: bool,
    iface: Ipv4Addr,
) {
    match e {
        RelayEvent::GroupCreated { group, name } => {
            tracing::info!(%group, %name, "group created");
            if multicast {
                match GroupSocket::open(group, iface, handle) {
                    Ok(g) => {
                        tracing::info!(%group, "joined the class D address");
                        groups.insert(group, g);
                    }
                    Err(err) => {
                        tracing::warn!(%group, error = %err, "could not join the class D address")
                    }
                }
            }
        }
        RelayEvent::GroupDeleted { group, name } => {
            tracing::info!(%group, %name, "group deleted (its last member is gone)");
            if let Some(g) = groups.remove(&group) {
                g.stop();
                tracing::info!(%group, "left the class D address");
            }
        }
        RelayEvent::MemberJoined {
            group,
            member,
            kind,
        } => tracing::info!(%group, %member, %kind, "member joined"),
        RelayEvent::MemberLeft { group, member } => {
            tracing::info!(%group, %member, "member left")
        }
        RelayEvent::MemberExpired { group, member } => {
            tracing::info!(%group, %member, "member expired (no refresh)")
        }
    }
}

async fn log_summary(handle: &CoreHandle<Relay>, what: &'static str) {
    let relay = handle
        .with_core(|r, _| (r.counters().clone(), r.group_count(), r.member_count()))
        .await;
    let socket = handle.socket_stats().await;
    let (Ok((c, groups, members)), Ok(sock)) = (relay, socket) else {
        return;
    };
    let dropped: Vec<String> = c
        .dropped
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(sock.drops.iter().map(|(k, v)| format!("wire_{k}={v}")))
        .collect();
    let answers: Vec<String> = c.answers.iter().map(|(k, v)| format!("{k}={v}")).collect();
    tracing::info!(
        groups,
        members,
        relayed = c.relayed,
        copies = c.copies,
        multicast_copies = c.multicast_copies,
        no_receivers = c.no_receivers,
        control = c.control,
        expired = c.expired,
        nacks_answered = c.nacks_answered,
        nack_resends = c.nack_resends,
        nacks_forwarded = c.nacks_forwarded,
        nacks_suppressed = c.nacks_suppressed,
        rmcast_malformed = c.rmcast_malformed,
        dropped = c.dropped.total() + sock.drops_total,
        dropped_by_kind = %dropped.join(" "),
        answers = %answers.join(" "),
        datagrams_received = sock.datagrams_received,
        datagrams_sent = sock.datagrams_sent,
        "{what}"
    );
}

/// A socket bound to a group's class D address and port, joined to the
/// group, whose datagrams (from multicast members) go to the relay core.
struct GroupSocket {
    socket: Addr<SocketActor>,
    feed: Addr<GroupFeed>,
}

impl GroupSocket {
    fn open(group: NodeId, iface: Ipv4Addr, handle: &CoreHandle<Relay>) -> anyhow::Result<Self> {
        let IpAddr::V4(ip) = group.addr().ip() else {
            anyhow::bail!("only IPv4 groups can be joined");
        };
        let mut o = SocketOptions::new(group.addr());
        o.reuse_address = true;
        o.advertise = Some(handle.local);
        o.multicast = Some(MulticastOptions::new(ip, iface));
        let mut socket = SocketActor::bind(o)?;
        let ctx: Context<GroupFeed> = Context::new();
        let queues = ProtocolId::ALL
            .iter()
            .filter(|p| **p != ProtocolId::Mcaster)
            .map(|p| socket.subscribe(*p, None, ctx.address().recipient()))
            .collect();
        let socket = socket.start();
        let feed = ctx.run(GroupFeed {
            relay: handle.driver.clone(),
            queues,
        });
        Ok(GroupSocket { socket, feed })
    }

    fn stop(self) {
        self.socket.do_send(StopSocket);
        drop(self.feed);
    }
}

/// Hands the packets of a group socket to the relay core.
struct GroupFeed {
    relay: Addr<CoreDriver<Relay>>,
    queues: Vec<Arc<PacketQueue>>,
}

impl Actor for GroupFeed {
    type Context = Context<Self>;
}

impl Handler<PacketsReady> for GroupFeed {
    type Result = ();

    fn handle(&mut self, _: PacketsReady, _: &mut Self::Context) {
        let packets: Vec<_> = self.queues.iter().flat_map(|q| q.take_all()).collect();
        if packets.is_empty() {
            return;
        }
        self.relay.do_send(WithCore::new(move |r: &mut Relay, now| {
            for p in &packets {
                r.handle_packet(now, p.incoming());
            }
        }));
    }
}
