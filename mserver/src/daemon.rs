//! The mserver daemon: sockets, timers, signals and logs around
//! [`MserverNode`] (DESIGN.md section 3: no protocol logic here).
//!
//! - one UDP socket on `--listen`, driven by the runtime's core driver;
//! - with IP multicast, one more socket per group of the chain (one per
//!   level: [`ChainEvent::JoinGroup`] / [`ChainEvent::LeaveGroup`]), bound
//!   to the group's port and joined to its class D address, whose
//!   datagrams go to the same core;
//! - the crash watch: a TCP listener on the `--listen` port, and an idle
//!   TCP connection to each neighbour the levels monitor
//!   ([`ChainEvent::Watch`]), whose loss is reported to the core as a
//!   "port unreachable" hint;
//! - SIGTERM / SIGINT: a graceful leave (bounded in time), then exit.

use crate::admin::{FaultReply, ProtocolTraffic};
use crate::node::{MserverNode, NodeEvent};
use crate::settings::{MulticastMode, Settings};
use daemon_shell::multicast::{open_group_socket, use_multicast};
use daemon_shell::signals::{Signal, Signals};
use membership::coreset::{CoreSetConfig, CoreSetEvent, GroupRef, Member, TreeSettings};
use membership::id::{NodeId, ProtocolId};
use membership::mcaster_reg::{ReceiveMode, Registration, RegistrationConfig, RegistrationEvent};
use membership::rpc::{Rpc, RpcConfig};
use membership::runtime::{
    new_incarnation, spawn_core, Clock, CoreHandle, CrashWatch, CrashWatchListener, GetFaults,
    GroupSocket, MulticastSend, SetIncarnation, SetKeyRing, SocketOptions, SpawnedCore,
};
use membership::tree::{Chain, ChainConfig, ChainEvent, LevelSettings};
use membership::wire::{AuthConfig, KeyRing};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// The class D address the startup probe uses.
const PROBE_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 78);

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A graceful leave completed.
    Left,
    /// The leave gave up waiting for the group.
    LeaveTimedOut,
    /// The core stopped by itself (a bug; logged).
    CoreStopped,
}

type Handle = CoreHandle<MserverNode>;

/// Runs the mserver until it has left its group. Errors are startup
/// errors (exit code 2 in `main`).
#[allow(clippy::disallowed_methods)] // a daemon owns the clock
pub async fn run(s: Settings) -> anyhow::Result<Exit> {
    let forced = match s.multicast {
        MulticastMode::Off => Some(false),
        MulticastMode::On => Some(true),
        MulticastMode::Auto => None,
    };
    // The HTTP port first: a port in use stops nothing half-started.
    let http_listener = match s.http_addr() {
        (Some(addr), is_default) => daemon_shell::http::bind("mserver", addr, is_default)?,
        (None, _) => None,
    };
    let multicast = use_multicast(forced, PROBE_GROUP, s.multicast_interface).await;
    let me = NodeId::new(s.node_addr());
    let group_addr = NodeId::new(s.group_addr);
    let incarnation = new_incarnation();
    let now = Clock::now();
    let seed = seed_from(incarnation.to_bytes());
    let chain = Chain::new(chain_config(&s, me, incarnation)?, now, seed)
        .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
    let kind = if multicast {
        ReceiveMode::Mc
    } else {
        ReceiveMode::Uc
    };
    let registration = Registration::new(RegistrationConfig::new(NodeId::new(s.mcaster), kind));
    let rpc = Rpc::new(me, incarnation, RpcConfig::default(), seed ^ 0x5eed_5eed);
    let ring = crate::security::start_ring(&s)?;
    let policy = crate::security::policy(&s, ring.is_some())?;
    let node =
        MserverNode::new(now, chain, Some(registration), rpc).with_security(policy, ring.clone());
    let leave_budget = node.leave_budget();

    let mut options = SocketOptions::new(s.listen);
    options.advertise = s.advertise.map(NodeId::new);
    options.incarnation = Some(incarnation);
    options.auth = ring.clone().map(AuthConfig::new);
    if !multicast {
        // Group messages go by unicast to the mcaster, which relays them.
        options.mcaster = Some(s.mcaster);
    }
    let SpawnedCore { handle, events } = spawn_core(
        options,
        &[ProtocolId::CoreSet, ProtocolId::Mcaster, ProtocolId::Rpc],
        move |_| node,
    )
    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", s.listen))?;

    let mut group_sockets = BTreeMap::new();
    if multicast {
        let send = MulticastSend::new(s.multicast_interface);
        match open_group_socket(
            group_addr,
            send,
            ring.clone(),
            &[ProtocolId::CoreSet],
            &handle,
        ) {
            Ok(g) => {
                group_sockets.insert(group_addr, g);
            }
            Err(e) => {
                handle.stop();
                anyhow::bail!("cannot join the group address {}: {e}", s.group_addr);
            }
        }
    }
    let http_state = crate::http::HttpState::new(handle.clone());
    let metrics = http_state.metrics().clone();
    let http = match http_listener {
        Some(l) => Some(daemon_shell::http::serve(
            l,
            crate::http::routes(http_state),
        )?),
        None => None,
    };
    let listener = if s.crash_watch {
        match CrashWatchListener::bind(s.listen) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(
                    port = s.listen.port(),
                    error = %e,
                    "crash watch: cannot listen on the TCP port; crashes of this mserver will be detected by timeouts only"
                );
                None
            }
        }
    } else {
        None
    };
    let parents: Vec<String> = s
        .parents()
        .unwrap_or_default()
        .iter()
        .map(|p| p.group.to_string())
        .collect();
    tracing::info!(
        group = %s.group,
        group_addr = %s.group_addr,
        parents = %if parents.is_empty() { "-".to_string() } else { parents.join(" ") },
        node = %me,
        %incarnation,
        transport = if multicast { "ip-multicast" } else { "mcaster" },
        mcaster = %s.mcaster,
        query_interval_ms = s.query_interval_ms,
        reply_timeout_ms = s.reply_timeout_ms,
        retries = s.retries,
        commit_delay_ms = s.commit_delay_ms,
        "mserver started; joining the group"
    );
    let mut daemon = Daemon {
        handle: handle.clone(),
        watch: s
            .crash_watch
            .then(|| CrashWatch::new(handle.driver.clone().recipient())),
        leave_deadline: None,
        leave_budget,
        started: std::time::Instant::now(),
        deregistering: None,
        multicast,
        settings: s.clone(),
        group_sockets,
        ring,
        metrics,
    };
    let exit = daemon.event_loop(events).await;
    for (_, g) in std::mem::take(&mut daemon.group_sockets) {
        g.stop();
    }
    drop(daemon.watch.take());
    drop(listener);
    if let Some(h) = http {
        h.stop().await;
    }
    handle.stop();
    Ok(exit)
}

/// The chain this mserver runs: level 1 from the flags, the levels above
/// from `--parent` / `[[parent]]` (each with its own timings).
fn chain_config(
    s: &Settings,
    me: NodeId,
    incarnation: membership::id::Incarnation,
) -> anyhow::Result<ChainConfig> {
    let level1 = CoreSetConfig {
        query_interval: s.query_interval(),
        reply_timeout: s.reply_timeout(),
        retries: s.retries,
        commit_delay: s.commit_delay(),
        flap_window: Duration::from_millis(s.flap_window_ms),
        hold_down: Duration::from_millis(s.hold_down_ms),
        hold_down_max: Duration::from_millis(s.hold_down_max_ms),
        tree: TreeSettings {
            max_parents: s.max_parents,
            declined: !s.auto_parent,
            ..TreeSettings::default()
        },
        ..CoreSetConfig::new(me, incarnation, s.group.clone(), NodeId::new(s.group_addr))
    };
    let parents = s
        .parents()?
        .into_iter()
        .map(|p| LevelSettings {
            group: p.group,
            query_interval: Duration::from_millis(p.query_interval_ms),
            reply_timeout: Duration::from_millis(p.reply_timeout_ms),
            retries: p.retries,
        })
        .collect();
    Ok(ChainConfig { level1, parents })
}

/// The loop's state.
struct Daemon {
    handle: Handle,
    watch: Option<CrashWatch>,
    leave_deadline: Option<tokio::time::Instant>,
    leave_budget: Duration,
    started: std::time::Instant,
    /// We left the group and wait (at most until then) for the mcaster to
    /// confirm that our registration is withdrawn.
    deregistering: Option<tokio::time::Instant>,
    /// Group traffic goes by IP multicast (else through the mcaster).
    multicast: bool,
    /// The settings it started with (key reload, key-ring file).
    settings: Settings,
    /// The class D sockets, with IP multicast: one per group of the
    /// chain, by group address.
    group_sockets: BTreeMap<NodeId, GroupSocket>,
    /// The cluster key ring in force.
    ring: Option<KeyRing>,
    /// The metrics the HTTP endpoint exports (counted here from events).
    metrics: std::sync::Arc<crate::http::metrics::MserverMetrics>,
}

/// How long a member that left waits for the mcaster's LEAVE answer
/// before exiting anyway (the registration then expires on its own).
const DEREGISTER_GRACE: Duration = Duration::from_millis(300);

impl Daemon {
    async fn event_loop(&mut self, mut events: UnboundedReceiver<NodeEvent>) -> Exit {
        let Ok(mut signals) = Signals::stop_and_reload() else {
            tracing::error!("cannot install signal handlers; SIGTERM will not leave gracefully");
            return self.loop_without_signals(&mut events).await;
        };
        loop {
            let deadline = self.leave_deadline;
            let deregistered = self.deregistering;
            tokio::select! {
                e = events.recv() => match e {
                    Some(e) => if let Some(exit) = self.on_event(e).await {
                        return exit;
                    },
                    None => {
                        tracing::error!("the core stopped");
                        return Exit::CoreStopped;
                    }
                },
                signal = signals.recv() => match signal {
                    Signal::Hangup => {
                        daemon_shell::reload::on_hangup();
                        self.reload_keys().await;
                    }
                    _ => self.start_leave(signal.name()).await,
                },
                _ = sleep_until(deregistered) => {
                    tracing::info!("the mcaster did not confirm our deregistration; exiting anyway");
                    return Exit::Left;
                }
                _ = sleep_until(deadline), if deregistered.is_none() => {
                    tracing::warn!(budget_ms = self.leave_budget.as_millis() as u64, "leave: the group did not commit in time; exiting anyway");
                    return Exit::LeaveTimedOut;
                }
            }
        }
    }

    async fn loop_without_signals(&mut self, events: &mut UnboundedReceiver<NodeEvent>) -> Exit {
        while let Some(e) = events.recv().await {
            if let Some(exit) = self.on_event(e).await {
                return exit;
            }
        }
        Exit::CoreStopped
    }

    /// SIGHUP: reloads the key file (`crate::security::reload`).
    async fn reload_keys(&mut self) {
        match crate::security::reload(&self.settings, self.ring.as_ref()) {
            Some(ring) => {
                tracing::info!(keys = %daemon_shell::keys::describe(Some(&ring)), "SIGHUP: cluster key ring reloaded");
                let r = ring.clone();
                let _ = self
                    .handle
                    .with_core(move |n, _| n.set_key_ring(Some(r)))
                    .await;
                self.apply_ring(ring).await;
            }
            None if self.ring.is_none() => {
                tracing::info!("SIGHUP: no cluster key configured; nothing to reload")
            }
            None => {}
        }
    }

    /// Hands `ring` to the sockets and persists it.
    async fn apply_ring(&mut self, ring: KeyRing) {
        let _ = self.handle.socket.send(SetKeyRing(ring.clone())).await;
        for g in self.group_sockets.values() {
            let _ = g.socket().send(SetKeyRing(ring.clone())).await;
        }
        crate::security::persist(&self.settings, &ring);
        self.ring = Some(ring);
    }

    async fn start_leave(&mut self, why: &str) {
        if self.leave_deadline.is_some() {
            tracing::info!("{why}: already leaving");
            return;
        }
        tracing::info!("{why}: leaving the group gracefully");
        self.leave_deadline = Some(tokio::time::Instant::now() + self.leave_budget);
        if self.handle.with_core(|n, now| n.leave(now)).await.is_err() {
            tracing::error!("the core is gone");
        }
    }

    /// Acts on one event; `Some` ends the daemon.
    async fn on_event(&mut self, e: NodeEvent) -> Option<Exit> {
        match e {
            NodeEvent::Chain(e) => self.on_chain(e),
            NodeEvent::Left => {
                // The node withdraws the mcaster registrations now; their
                // answer (or the grace) ends the daemon.
                tracing::info!("left every group");
                self.deregistering = Some(tokio::time::Instant::now() + DEREGISTER_GRACE);
            }
            NodeEvent::Registration(e) => match e {
                RegistrationEvent::Registered { group } => {
                    tracing::info!(%group, "registered with the mcaster")
                }
                RegistrationEvent::Relearned { group } => {
                    tracing::info!(%group, "the mcaster had forgotten us (restarted?); registered again")
                }
                RegistrationEvent::Refused { group, answer } => {
                    tracing::warn!(%group, ?answer, "the mcaster refused our registration; retrying")
                }
                RegistrationEvent::Left { group, answer } if self.deregistering.is_some() => {
                    tracing::debug!(%group, ?answer, "deregistered from the mcaster");
                    return Some(Exit::Left);
                }
                RegistrationEvent::Withdrawn { group } if self.deregistering.is_some() => {
                    tracing::debug!(%group, "the mcaster never listed us: nothing to deregister");
                    return Some(Exit::Left);
                }
                RegistrationEvent::Unanswered {
                    mcaster,
                    silent_for,
                } => {
                    let silent_ms = u64::try_from(silent_for.as_millis()).unwrap_or(u64::MAX);
                    if self.multicast {
                        tracing::info!(
                            %mcaster,
                            silent_ms,
                            "no answer from the mcaster at {mcaster}; fine while every member has IP multicast \
                             (only members started with --multicast off need it)"
                        );
                    } else {
                        tracing::warn!(
                            %mcaster,
                            silent_ms,
                            "no answer from the mcaster at {mcaster}; is it running? Without it this mserver \
                             cannot reach the other members (--multicast off) and stays in a group of its own"
                        );
                    }
                }
                RegistrationEvent::Answering {
                    mcaster,
                    silent_for,
                } => {
                    tracing::info!(
                        %mcaster,
                        silent_ms = u64::try_from(silent_for.as_millis()).unwrap_or(u64::MAX),
                        "the mcaster at {mcaster} answers"
                    );
                }
                other => tracing::debug!(event = ?other, "registration"),
            },
            NodeEvent::FaultRequested { token, request } => {
                let current = self.handle.socket.send(GetFaults).await.unwrap_or_default();
                let next = request.apply_to(&current);
                let reply = match self.handle.set_faults(next.clone()).await {
                    Ok(_) => {
                        tracing::warn!(faults = ?next, "fault injection changed by msctl");
                        FaultReply {
                            error: None,
                            now: format!("{next:?}"),
                        }
                    }
                    Err(e) => FaultReply {
                        error: Some(e.to_string()),
                        now: format!("{current:?}"),
                    },
                };
                let _ = self
                    .handle
                    .with_core(move |n, now| n.answer_fault(now, token, reply))
                    .await;
            }
            NodeEvent::StatsRequested { token, mut reply } => {
                if let Ok(stats) = self.handle.socket_stats().await {
                    reply.uptime_ms = self.started.elapsed().as_millis() as u64;
                    reply.datagrams_sent = stats.datagrams_sent;
                    reply.bytes_sent = stats.bytes_sent;
                    reply.datagrams_received = stats.datagrams_received;
                    reply.bytes_received = stats.bytes_received;
                    reply.drops = stats.drops.clone();
                    reply.protocols = stats
                        .per_protocol
                        .iter()
                        .map(|(p, t)| {
                            (
                                format!("{p:?}").to_lowercase(),
                                ProtocolTraffic {
                                    sent: t.sent,
                                    bytes_sent: t.bytes_sent,
                                    received: t.received,
                                    bytes_received: t.bytes_received,
                                },
                            )
                        })
                        .collect();
                }
                let _ = self
                    .handle
                    .with_core(move |n, now| n.answer_stats(now, token, reply))
                    .await;
            }
            NodeEvent::KeyRingChanged { ring, at } => {
                tracing::info!(view = at.view, commit = at.seq, keys = %daemon_shell::keys::describe(Some(&ring)), "key ring changed by the group");
                self.apply_ring(ring).await;
            }
            NodeEvent::LeaveRequested => {
                tracing::info!("msctl leave: leaving the group gracefully");
                if self.leave_deadline.is_none() {
                    self.leave_deadline = Some(tokio::time::Instant::now() + self.leave_budget);
                }
            }
        }
        None
    }

    /// Carries out a chain event: group sockets, crash watches, the
    /// header's incarnation; logs the rest.
    fn on_chain(&mut self, e: ChainEvent) {
        match e {
            ChainEvent::Level {
                level,
                group,
                event,
            } => self.on_coreset(level, &group, event),
            ChainEvent::JoinGroup(group) => {
                tracing::info!(group = %group.name, group_addr = %group.addr, "joining the group of the level above");
                self.open_group_socket(&group);
            }
            ChainEvent::LeaveGroup(group) => {
                tracing::info!(group = %group.name, group_addr = %group.addr, "left the group of the level above");
                if let Some(g) = self.group_sockets.remove(&group.addr) {
                    g.stop();
                }
            }
            ChainEvent::Watch(targets) => {
                if let Some(w) = self.watch.as_mut() {
                    tracing::debug!(targets = ?targets, "crash watch targets");
                    w.watch_all(&targets);
                }
            }
            ChainEvent::NewIncarnation(inc) => {
                tracing::info!(incarnation = %inc, "new incarnation: rejoining");
                self.handle.socket.do_send(SetIncarnation(inc));
            }
            ChainEvent::Standby { level, reason } => {
                tracing::info!(level, %reason, "standby: staying at level {level} ({reason})");
            }
            ChainEvent::SteppedDown { level } => {
                tracing::info!(level, "stepped down as a parent of our level-{level} group");
            }
            ChainEvent::RequestDone { id, result } => match result {
                Ok(level) => tracing::info!(request = id, level, "tree request done"),
                Err(e) => tracing::warn!(request = id, error = %e, "tree request failed"),
            },
            ChainEvent::Parent { level, group } => {
                tracing::info!(
                    level,
                    parent_group = %group,
                    "became a parent of our level-{level} group, a member of {}",
                    group.name
                );
            }
        }
    }

    /// With IP multicast, listens on `group`'s class D address (a level
    /// was added); through the mcaster, nothing to open (the node
    /// registered the group).
    fn open_group_socket(&mut self, group: &GroupRef) {
        if !self.multicast || self.group_sockets.contains_key(&group.addr) {
            return;
        }
        let send = MulticastSend::new(self.settings.multicast_interface);
        match open_group_socket(
            group.addr,
            send,
            self.ring.clone(),
            &[ProtocolId::CoreSet],
            &self.handle,
        ) {
            Ok(g) => {
                self.group_sockets.insert(group.addr, g);
            }
            Err(e) => tracing::error!(
                group = %group.name,
                group_addr = %group.addr,
                error = %e,
                "cannot join the group address of the level above; that level hears only unicast"
            ),
        }
    }

    fn on_coreset(&mut self, level: u8, group: &GroupRef, e: CoreSetEvent) {
        if let CoreSetEvent::ViewInstalled { change_started, .. } = &e {
            let took = Clock::now().saturating_duration_since(*change_started);
            self.metrics.on_coreset_event(&group.name, level, &e, took);
        }
        let name = group.name.as_str();
        match e {
            CoreSetEvent::ViewInstalled {
                view,
                members,
                joined,
                failed,
                left,
                change_started,
                ..
            } => {
                let took = Clock::now().saturating_duration_since(change_started);
                tracing::info!(
                    group = %name,
                    level,
                    view = view.number,
                    coordinator = %view.coordinator,
                    members = %list(&members),
                    joined = %list(&joined),
                    failed = %list(&failed),
                    left = %list(&left),
                    took_ms = round_ms(took),
                    "view installed"
                );
            }
            // The chain reports level 1's new life (and keeps the upper
            // levels' lives in their envelopes).
            CoreSetEvent::NewIncarnation(_) => {}
            CoreSetEvent::Excluded { view } => {
                tracing::warn!(
                    group = %name,
                    level,
                    view = view.number,
                    "the group excluded us (we were paused or cut off); rejoining with a new incarnation"
                );
            }
            CoreSetEvent::AppCommitted {
                view,
                originator,
                payloads,
            } => {
                // The node's application-group service applies them; the
                // core-set's view (its membership) stays as it is.
                tracing::info!(
                    group = %name,
                    level,
                    view = view.number,
                    commit = view.seq,
                    changes = payloads.len(),
                    originator = %originator.map_or_else(|| "-".to_string(), |m| m.addr.to_string()),
                    "application changes committed"
                );
            }
            CoreSetEvent::HeldDown { remaining } => {
                tracing::warn!(
                    group = %name,
                    level,
                    remaining_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
                    "the group holds our rejoin down: we were failed again and again after rejoining \
                     (a one-way or flapping link to a member?); we keep asking"
                );
            }
            CoreSetEvent::TreeCommitted {
                view,
                originator,
                op,
            } => {
                tracing::info!(
                    group = %name,
                    level,
                    view = view.number,
                    originator = %originator.map_or_else(|| "-".to_string(), |m| m.addr.to_string()),
                    change = ?op,
                    "tree change committed"
                );
            }
            CoreSetEvent::TreeRefused { op, error } => {
                tracing::warn!(group = %name, level, change = ?op, %error, "tree change dropped: it no longer fits the group");
            }
            CoreSetEvent::JoinRefused { reason } => {
                tracing::warn!(
                    group = %name,
                    level,
                    reason = ?reason,
                    "a group of our name at this address refuses us: it is a group of another \
                     level of the hierarchy; choose another --group or --group-addr (we keep asking)"
                );
            }
            // The chain watches the union of the levels' targets.
            CoreSetEvent::Watch(_) => {}
            CoreSetEvent::Left => tracing::info!(group = %name, level, "left the group"),
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn list(members: &[Member]) -> String {
    let items: Vec<String> = members
        .iter()
        .map(|m| format!("{}#{}", m.addr, m.rank))
        .collect();
    format!("[{}]", items.join(" "))
}

/// A seed for the cores' RNGs from the incarnation's random bits.
fn seed_from(bytes: [u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[8..16]);
    u64::from_le_bytes(b)
}

/// A duration in milliseconds for a log line, rounded to a tenth
/// (`0.4`, `12.3`; a number in JSON logs).
fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
