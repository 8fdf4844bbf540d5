//! The daemon around [`Mcaster`]: the socket, the timer, the multicast
//! group sockets, the periodic summary and the signals. No protocol logic
//! lives here (DESIGN.md section 3): the mcaster core decides who gets what.
//!
//! With a cluster key ring every socket (the main one and each class D
//! one) opens datagrams with an authenticating codec, so forged,
//! unauthenticated and replayed datagrams are dropped and counted before
//! the core sees them, and the core's answers are signed; SIGHUP applies
//! a reloaded ring to every socket, and so does a ring a registered
//! mserver hands over after `msctl keys` committed
//! ([`McasterEvent::KeyRing`]); both are written to `--keyring-file`. Authentication failures
//! (or, without a key, signed datagrams) are explained in a warning at a
//! limited rate ([`AuthWatch`]). The class D copies leave from the main
//! socket with explicit multicast send options (interface, TTL, loopback).

use crate::settings::{MulticastMode, Settings};
use daemon_shell::multicast::{open_group_socket, use_multicast};
use daemon_shell::signals::{Signal, Signals};
use membership::id::{NodeId, ProtocolId};
use membership::mcaster::{Mcaster, McasterConfig, McasterEvent};
use membership::runtime::{
    spawn_core, CoreHandle, GetStats, GroupSocket, MulticastSend, SetKeyRing, SocketOptions,
    SpawnedCore,
};
use membership::wire::{AuthConfig, KeyRing};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The class D address the startup probe uses (administratively scoped;
/// with TTL 1 and loopback it never leaves the host's LAN).
const PROBE_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 77);
/// How often the wire drop counters are checked for authentication
/// failures.
const AUTH_CHECK: Duration = Duration::from_secs(1);
/// After the first warning about authentication failures, at most one more
/// per this many checks (with the count since the last one).
const AUTH_LOG_EVERY: u32 = 30;
/// Wire drop kinds that mean "failed authentication" with a key ring.
const AUTH_FAILURES: [&str; 5] = [
    "missing_auth",
    "bad_tag",
    "unknown_key",
    "replayed",
    "stale_incarnation",
];
/// The wire drop kind of a signed datagram at an mcaster without a key.
const UNEXPECTED_AUTH: &str = "unexpected_auth";

/// Runs the mcaster until SIGTERM or SIGINT; SIGHUP calls `reload` and
/// applies the cluster key ring it answers.
pub async fn run(s: Settings, reload: impl Fn() -> anyhow::Result<Settings>) -> anyhow::Result<()> {
    let forced = match s.multicast {
        MulticastMode::Off => Some(false),
        MulticastMode::On => Some(true),
        MulticastMode::Auto => None,
    };
    let multicast = use_multicast(forced, PROBE_GROUP, s.multicast_interface).await;
    let ring = s.start_ring()?;
    let send = MulticastSend {
        interface: s.multicast_interface,
        loopback: s.multicast_loop,
        ttl: s.multicast_ttl,
    };
    let mut options = SocketOptions::new(s.listen);
    options.advertise = s.advertise.map(NodeId::new);
    options.auth = ring.clone().map(AuthConfig::new);
    // The class D copies leave from the main socket: through the
    // configured interface, with the configured TTL and loopback.
    options.multicast_send = multicast.then_some(send);
    let config = McasterConfig {
        member_ttl: Duration::from_millis(s.member_ttl_ms),
        max_groups: s.max_groups,
        max_members: s.max_members,
        multicast,
        ..McasterConfig::default()
    };
    // The HTTP port first: a port in use stops nothing half-started.
    let http_listener = match s.http.as_deref().map(daemon_shell::http::parse_http) {
        Some(Ok(Some(addr))) => daemon_shell::http::bind("mcaster", addr, false)?,
        _ => None,
    };
    let SpawnedCore { handle, mut events } = spawn_core(options, &ProtocolId::ALL, move |ctx| {
        Mcaster::new(ctx.local, config)
    })
    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", s.listen))?;
    let http = match http_listener {
        Some(l) => Some(daemon_shell::http::serve(
            l,
            crate::http::routes(crate::http::HttpState::new(handle.clone())),
        )?),
        None => None,
    };
    // Before "mcaster running": a SIGTERM sent on that line is handled.
    let mut signals = Signals::stop_and_reload()?;
    tracing::info!(
        listen = %s.listen,
        node = %handle.local,
        multicast,
        multicast_interface = %s.multicast_interface,
        multicast_ttl = s.multicast_ttl,
        multicast_loop = s.multicast_loop,
        authentication = %describe(ring.as_ref()),
        member_ttl_ms = s.member_ttl_ms,
        max_groups = s.max_groups,
        max_members = s.max_members,
        "mcaster running"
    );
    let mut d = Daemon {
        settings: s.clone(),
        watch: AuthWatch::new(ring.is_some()),
        handle,
        groups: BTreeMap::new(),
        multicast,
        send,
        ring,
    };
    let mut summary = (s.summary_interval_secs > 0).then(|| {
        let period = Duration::from_secs(s.summary_interval_secs);
        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
    });
    let mut auth_check =
        tokio::time::interval_at(tokio::time::Instant::now() + AUTH_CHECK, AUTH_CHECK);
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(McasterEvent::KeyRing { from, ring }) => d.ring_handed_over(from, ring).await,
                Some(e) => d.on_event(e),
                None => {
                    tracing::error!("the relay stopped");
                    break;
                }
            },
            _ = tick(&mut summary) => d.log_summary("summary").await,
            _ = auth_check.tick() => {
                let drops = d.wire_drops().await;
                d.watch.check(&drops);
            }
            signal = signals.recv() => match signal {
                Signal::Hangup => {
                    daemon_shell::reload::on_hangup();
                    d.reload_keys(reload()).await
                }
                Signal::Terminate | Signal::Interrupt => {
                    tracing::info!("{signal}: shutting down");
                    break;
                }
            },
        }
    }
    d.log_summary("final summary").await;
    for (_, g) in std::mem::take(&mut d.groups) {
        g.stop();
    }
    if let Some(h) = http {
        h.stop().await;
    }
    d.handle.stop();
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

/// The key ids of a ring, for logs (never the secrets).
fn describe(ring: Option<&KeyRing>) -> String {
    match ring {
        None => "off (no cluster key)".into(),
        Some(r) => {
            let ids: Vec<String> = (1..=255u8)
                .filter(|i| r.key(*i).is_some())
                .map(|i| i.to_string())
                .collect();
            format!(
                "on (key ids {}, signing with {})",
                ids.join(","),
                r.signing_key().id()
            )
        }
    }
}

/// The daemon's state: the core's handle and the class D sockets.
struct Daemon {
    /// The settings it started with.
    settings: Settings,
    handle: CoreHandle<Mcaster>,
    groups: BTreeMap<NodeId, GroupSocket>,
    multicast: bool,
    /// Interface, TTL and loopback for class D joins.
    send: MulticastSend,
    /// The current cluster key ring (new group sockets get it too).
    ring: Option<KeyRing>,
    watch: AuthWatch,
}

impl Daemon {
    fn on_event(&mut self, e: McasterEvent) {
        match e {
            McasterEvent::GroupCreated { group, name } => {
                tracing::info!(%group, %name, "group created");
                if self.multicast {
                    let protocols: Vec<ProtocolId> = ProtocolId::ALL
                        .iter()
                        .copied()
                        .filter(|p| *p != ProtocolId::Mcaster)
                        .collect();
                    let ring = self.ring.clone();
                    match open_group_socket(group, self.send, ring, &protocols, &self.handle) {
                        Ok(g) => {
                            tracing::info!(%group, "joined the class D address");
                            self.groups.insert(group, g);
                        }
                        Err(err) => {
                            tracing::warn!(%group, error = %err, "could not join the class D address")
                        }
                    }
                }
            }
            McasterEvent::GroupDeleted { group, name } => {
                tracing::info!(%group, %name, "group deleted (its last member is gone)");
                if let Some(g) = self.groups.remove(&group) {
                    g.stop();
                    tracing::info!(%group, "left the class D address");
                }
            }
            McasterEvent::MemberJoined {
                group,
                member,
                kind,
            } => tracing::info!(%group, %member, %kind, "member joined"),
            McasterEvent::MemberLeft { group, member } => {
                tracing::info!(%group, %member, "member left")
            }
            McasterEvent::MemberExpired { group, member } => {
                tracing::info!(%group, %member, "member expired (no refresh)")
            }
            McasterEvent::KeyRing { from, .. } => {
                tracing::debug!(%from, "key ring event handled by the loop")
            }
        }
    }

    /// A registered mserver handed over the ring its core-set committed:
    /// to every socket, and to the key-ring file.
    async fn ring_handed_over(&mut self, from: NodeId, ring: KeyRing) {
        if self.ring.is_none() {
            tracing::warn!(%from, "an mserver handed over a cluster key ring, but this mcaster runs without authentication; turning it on needs a restart");
            return;
        }
        let applied = self.apply_ring(ring.clone()).await;
        self.persist(&ring);
        tracing::info!(%from, authentication = %describe(Some(&ring)), applied, "cluster key ring changed by the group");
    }

    /// Hands `ring` to the main socket and every class D socket; answers
    /// whether every one took it.
    async fn apply_ring(&mut self, ring: KeyRing) -> bool {
        let mut applied = self
            .handle
            .socket
            .send(SetKeyRing(ring.clone()))
            .await
            .unwrap_or(false);
        for g in self.groups.values() {
            applied &= g
                .socket()
                .send(SetKeyRing(ring.clone()))
                .await
                .unwrap_or(false);
        }
        self.ring = Some(ring);
        applied
    }

    /// Writes `ring` to the key-ring file, when there is one.
    fn persist(&self, ring: &KeyRing) {
        if let Some(path) = self.settings.keyring_file.as_deref() {
            if let Err(e) = daemon_shell::keys::save_keyring_file(path, ring) {
                tracing::warn!(error = %format!("{e:#}"), "cannot persist the key ring");
            }
        }
    }

    /// The wire drops (codec rejects, queue and interceptor drops) of the
    /// main socket and of the class D sockets of the groups served now.
    async fn wire_drops(&self) -> BTreeMap<String, u64> {
        let mut drops = BTreeMap::new();
        let mut add = |s: membership::runtime::SocketStats| {
            for (k, v) in s.drops {
                *drops.entry(k).or_insert(0) += v;
            }
        };
        if let Ok(s) = self.handle.socket_stats().await {
            add(s);
        }
        for g in self.groups.values() {
            if let Ok(s) = g.socket().send(GetStats).await {
                add(s);
            }
        }
        drops
    }

    /// SIGHUP: applies the reloaded key ring to every socket.
    async fn reload_keys(&mut self, reloaded: anyhow::Result<Settings>) {
        let (ring, reloaded) = match reloaded.and_then(|s| Ok((s.key_ring()?, s))) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "SIGHUP: settings not reloaded; the key ring is unchanged");
                return;
            }
        };
        let without_keys = |s: &Settings| Settings {
            cluster_keys: Vec::new(),
            ..s.clone()
        };
        if without_keys(&reloaded) != without_keys(&self.settings) {
            tracing::info!(
                "SIGHUP: only the cluster key ring is reloaded; the other changed settings take effect at the next start"
            );
        }
        match (&self.ring, ring) {
            (Some(_), Some(ring)) => {
                let applied = self.apply_ring(ring.clone()).await;
                self.persist(&ring);
                tracing::info!(
                    authentication = %describe(Some(&ring)),
                    applied,
                    "SIGHUP: cluster key ring reloaded"
                );
            }
            (None, None) => tracing::info!("SIGHUP: no cluster key configured; nothing to reload"),
            (_, ring) => tracing::warn!(
                now = %describe(self.ring.as_ref()),
                configured = %describe(ring.as_ref()),
                "SIGHUP: turning authentication on or off needs a restart; the key ring is unchanged"
            ),
        }
    }

    async fn log_summary(&self, what: &'static str) {
        let h = &self.handle;
        let relay = h
            .with_core(|r, _| (r.counters().clone(), r.group_count(), r.member_count()))
            .await;
        let socket = h.socket_stats().await;
        let (Ok((c, groups, members)), Ok(sock)) = (relay, socket) else {
            return;
        };
        let wire = self.wire_drops().await;
        let wire_total: u64 = wire.values().sum();
        let auth_dropped: u64 = wire
            .iter()
            .filter(|(k, _)| *k == UNEXPECTED_AUTH || AUTH_FAILURES.contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum();
        let dropped: Vec<String> = c
            .dropped
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(wire.iter().map(|(k, v)| format!("wire_{k}={v}")))
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
            nack_repeats = c.nack_repeats,
            nacks_forwarded = c.nacks_forwarded,
            nacks_suppressed = c.nacks_suppressed,
            rmcast_malformed = c.rmcast_malformed,
            dropped = c.dropped.total() + wire_total,
            auth_dropped,
            dropped_by_kind = %dropped.join(" "),
            answers = %answers.join(" "),
            datagrams_received = sock.datagrams_received,
            datagrams_sent = sock.datagrams_sent,
            "{what}"
        );
    }
}

/// Watches the wire drop counters for authentication failures and says
/// what they mean, at a limited rate: at once the first time, then at most
/// once per [`AUTH_LOG_EVERY`] checks, with the counts since the last line.
struct AuthWatch {
    keyed: bool,
    /// Counts at the last check, by kind.
    last: BTreeMap<&'static str, u64>,
    /// Counts not yet reported, by kind.
    pending: BTreeMap<&'static str, u64>,
    checks_since_log: u32,
    logged: bool,
}

impl AuthWatch {
    fn new(keyed: bool) -> Self {
        AuthWatch {
            keyed,
            last: BTreeMap::new(),
            pending: BTreeMap::new(),
            checks_since_log: 0,
            logged: false,
        }
    }

    fn kinds(&self) -> &'static [&'static str] {
        if self.keyed {
            &AUTH_FAILURES
        } else {
            std::slice::from_ref(&UNEXPECTED_AUTH)
        }
    }

    /// Takes the current wire drop counts (which may go down when a class D
    /// socket closes; only increases count).
    fn check(&mut self, drops: &BTreeMap<String, u64>) {
        for kind in self.kinds() {
            let now = drops.get(*kind).copied().unwrap_or(0);
            let before = self.last.insert(kind, now).unwrap_or(0);
            let new = now.saturating_sub(before);
            if new > 0 {
                *self.pending.entry(kind).or_insert(0) += new;
            }
        }
        self.checks_since_log = self.checks_since_log.saturating_add(1);
        if self.pending.is_empty() || (self.logged && self.checks_since_log < AUTH_LOG_EVERY) {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let dropped: u64 = pending.values().sum();
        self.logged = true;
        self.checks_since_log = 0;
        if self.keyed {
            let by_kind: Vec<String> = pending.iter().map(|(k, v)| format!("{k}={v}")).collect();
            tracing::warn!(
                dropped,
                by_kind = %by_kind.join(" "),
                "dropped datagrams that failed authentication (unsigned, forged, signed with a key \
                 that is not in this mcaster's ring, or replayed): check the senders' cluster keys"
            );
        } else {
            tracing::warn!(
                dropped,
                "dropped signed datagrams: this mcaster has no cluster key, so it cannot verify \
                 them; give it the members' key ring (--cluster-key, cluster_keys in the config \
                 file, or MS_CLUSTER_KEYS)"
            );
        }
    }
}
