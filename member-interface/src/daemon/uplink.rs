//! The MI daemon's core runner: the sans-IO [`MiNode`] (the MI's link to
//! its mserver plus its local sessions) driven by the runtime's core driver
//! on one UDP socket, and the bridge between it and the Unix-socket
//! server's [`CorePort`] (seed 003, section II.B.4; DESIGN.md section 3:
//! the protocol is in the core, this module only carries messages). A key
//! ring the mserver hands over ([`MiNodeEvent::KeyRing`]) goes to the
//! socket, and to the key-ring file when there is one.

use super::server::{CorePort, FromCore, ServerConfig, ToCore};
use membership::appgroup::agent::MiAgentConfig;
use membership::id::{NodeId, ProtocolId};
use membership::mi::{MiNode, MiNodeEvent};
use membership::rpc::RpcConfig;
use membership::runtime::{new_incarnation, spawn_core, CoreHandle, SocketOptions, SpawnedCore};
use std::net::SocketAddr;
use tokio::sync::mpsc;
use uuid::Uuid;

/// What [`start`] gives the daemon.
pub struct Uplink {
    /// The server's side of the core.
    pub port: CorePort,
    /// The MI's id.
    pub mi: Uuid,
    /// The UDP address the MI's mservers query.
    pub local: NodeId,
    /// The core (to stop it).
    pub handle: CoreHandle<MiNode>,
    /// The bridge task: it ends once the server dropped its side of the
    /// port and every input before that reached the core.
    pub bridge: tokio::task::JoinHandle<()>,
}

/// Binds the MI's UDP socket on `listen`, starts the core (it attaches to
/// the first of `mservers` that accepts) and the bridge task. `server` gives
/// the sessions' settings and the one request timeout. Must run inside an
/// actix system.
#[allow(clippy::disallowed_methods)] // a daemon owns the clock and draws its id
pub fn start(
    listen: SocketAddr,
    mservers: &[SocketAddr],
    server: &ServerConfig,
) -> std::io::Result<Uplink> {
    start_with_ring(listen, mservers, server, None, None)
}

/// [`start`] with a cluster key ring on the mserver link (`None`: no
/// authentication): every datagram is sealed with it and anything it does
/// not open is dropped and counted before the core sees it. A ring the
/// mserver hands over later replaces it, and is written to `keyring_file`
/// when given (mode 0600).
#[allow(clippy::disallowed_methods)] // a daemon owns the clock and draws its id
pub fn start_with_ring(
    listen: SocketAddr,
    mservers: &[SocketAddr],
    server: &ServerConfig,
    ring: Option<membership::wire::KeyRing>,
    keyring_file: Option<std::path::PathBuf>,
) -> std::io::Result<Uplink> {
    let incarnation = new_incarnation();
    let mi = Uuid::now_v7();
    let mut options = SocketOptions::new(listen);
    options.incarnation = Some(incarnation);
    options.auth = ring.map(membership::wire::AuthConfig::new);
    let servers: Vec<NodeId> = mservers.iter().map(|a| NodeId::new(*a)).collect();
    let seed = u64::from_le_bytes(incarnation.to_bytes()[..8].try_into().unwrap_or([7; 8]));
    // The Unix time at the core's `Instant::ZERO`: member ids are stamped
    // from it and the core's `now` (the core reads no clock).
    let unix_ms_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let since_zero = membership::runtime::clock::Clock::now().as_micros() / 1_000;
    let unix_ms_at_zero = unix_ms_now.saturating_sub(since_zero);
    let sessions = server.session_config(unix_ms_at_zero, seed.rotate_left(17));
    let host = server.host.clone();
    let op_timeout = server.request_timeout;
    let mut local = None;
    let SpawnedCore { handle, events } = spawn_core(options, &[ProtocolId::Rpc], |cx| {
        local = Some(cx.local);
        let mut config = MiAgentConfig::new(cx.local, cx.incarnation, mi, host);
        config.mservers = servers;
        config.op_timeout = op_timeout;
        MiNode::new(cx.now, config, sessions, RpcConfig::default(), seed)
    })?;
    let local = local.unwrap_or_else(|| NodeId::new(listen));
    let (to_core, inputs) = mpsc::unbounded_channel();
    let (out, from_core) = mpsc::unbounded_channel();
    let bridge =
        tokio::task::spawn_local(bridge(handle.clone(), events, inputs, out, keyring_file));
    tracing::info!(%mi, %local, mservers = ?mservers, "member-interface uplink started");
    Ok(Uplink {
        port: CorePort { to_core, from_core },
        mi,
        local,
        handle,
        bridge,
    })
}

/// Carries the server's inputs to the core and the core's events back,
/// until the server drops its sender (every input before is handed over)
/// or the core stops.
async fn bridge(
    handle: CoreHandle<MiNode>,
    mut events: mpsc::UnboundedReceiver<MiNodeEvent>,
    mut inputs: mpsc::UnboundedReceiver<ToCore>,
    out: mpsc::UnboundedSender<FromCore>,
    keyring_file: Option<std::path::PathBuf>,
) {
    loop {
        tokio::select! {
            input = inputs.recv() => {
                let Some(input) = input else { break };
                let closed = match input {
                    ToCore::Open { conn, client } => handle
                        .with_core(move |n, now| n.open(now, conn, client))
                        .await
                        .map(|()| None),
                    ToCore::Request { conn, id, op } => handle
                        .with_core(move |n, now| n.request(now, conn, id, op))
                        .await
                        .map(|()| None),
                    ToCore::Close { conn } => handle
                        .with_core(move |n, now| n.close(now, conn))
                        .await
                        .map(|memberships| Some(FromCore::Closed { conn, memberships })),
                    ToCore::Undeliverable { conn, membership } => handle
                        .with_core(move |n, now| n.undeliverable(now, conn, membership))
                        .await
                        .map(|()| None),
                };
                match closed {
                    Ok(Some(report)) => {
                        let _ = out.send(report);
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                match event {
                    MiNodeEvent::Send { conn, msg } => {
                        if out.send(FromCore::Send { conn, msg }).is_err() {
                            break;
                        }
                    }
                    MiNodeEvent::Lost { group, member } => {
                        tracing::warn!(%group, %member, "a local member was removed from its group")
                    }
                    MiNodeEvent::Attached { mserver } => tracing::info!(%mserver, "attached to mserver"),
                    MiNodeEvent::Detached { mserver } => {
                        tracing::warn!(%mserver, "mserver silent: looking for another")
                    }
                    MiNodeEvent::KeyRing { mserver, ring } => {
                        apply_ring(&handle, keyring_file.as_deref(), mserver, ring).await
                    }
                }
            }
        }
    }
}

/// A ring the mserver handed over: to the socket, then to the key-ring
/// file (a failure to write it is logged: the ring is in force anyway).
async fn apply_ring(
    handle: &CoreHandle<MiNode>,
    keyring_file: Option<&std::path::Path>,
    mserver: NodeId,
    ring: membership::wire::KeyRing,
) {
    let keys = daemon_shell::keys::describe(Some(&ring));
    let applied = handle
        .socket
        .send(membership::runtime::SetKeyRing(ring.clone()))
        .await
        .unwrap_or(false);
    if let Some(path) = keyring_file {
        if let Err(e) = daemon_shell::keys::save_keyring_file(path, &ring) {
            tracing::warn!(error = %format!("{e:#}"), "cannot persist the key ring");
        }
    }
    tracing::info!(%mserver, %keys, applied, "cluster key ring changed by the group");
}
