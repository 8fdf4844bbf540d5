//! The uplink: the MI daemon's link to its mserver, the sans-IO
//! [`MiAgent`] driven by the runtime's core driver on one UDP socket, and
//! the bridge between it and the Unix-socket server's channels
//! ([`super::uplink_api`]) (seed 003, section II.B.4; DESIGN.md section 3:
//! the protocol is in the agent, this module only carries messages).

use super::uplink_api::{Downcall, UpCall, UpReply};
use membership::appgroup::agent::{MiAgent, MiAgentConfig, MiEvent};
use membership::appgroup::AppError;
use membership::id::{NodeId, ProtocolId};
use membership::rpc::RpcConfig;
use membership::runtime::{new_incarnation, spawn_core, CoreHandle, SocketOptions, SpawnedCore};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Capacity of the server -> uplink request channel.
pub const UP_QUEUE: usize = 4096;
/// Capacity of the uplink -> server downcall channel.
pub const DOWN_QUEUE: usize = 65_536;

/// What [`start`] gives the server.
pub struct Uplink {
    /// Requests for the mservers.
    pub up: mpsc::Sender<UpCall>,
    /// Views and forced ends.
    pub down: mpsc::Receiver<Downcall>,
    /// The MI's id.
    pub mi: Uuid,
    /// The UDP address the MI's mservers query.
    pub local: NodeId,
    /// The agent (to stop it).
    pub handle: CoreHandle<MiAgent>,
}

/// Binds the MI's UDP socket on `listen`, starts the agent (it attaches
/// to the first of `mservers` that accepts) and the bridge task. Must run
/// inside an actix system.
#[allow(clippy::disallowed_methods)] // a daemon owns the clock and draws its id
pub fn start(listen: SocketAddr, mservers: &[SocketAddr], host: String) -> std::io::Result<Uplink> {
    let incarnation = new_incarnation();
    let mi = Uuid::now_v7();
    let mut options = SocketOptions::new(listen);
    options.incarnation = Some(incarnation);
    let servers: Vec<NodeId> = mservers.iter().map(|a| NodeId::new(*a)).collect();
    let seed = u64::from_le_bytes(incarnation.to_bytes()[..8].try_into().unwrap_or([7; 8]));
    let mut local = None;
    let SpawnedCore { handle, events } = spawn_core(options, &[ProtocolId::Rpc], |cx| {
        local = Some(cx.local);
        let mut config = MiAgentConfig::new(cx.local, cx.incarnation, mi, host);
        config.mservers = servers;
        MiAgent::new(cx.now, config, RpcConfig::default(), seed)
    })?;
    let local = local.unwrap_or_else(|| NodeId::new(listen));
    let (up_tx, up_rx) = mpsc::channel(UP_QUEUE);
    let (down_tx, down_rx) = mpsc::channel(DOWN_QUEUE);
    tokio::task::spawn_local(bridge(handle.clone(), events, up_rx, down_tx));
    tracing::info!(%mi, %local, mservers = ?mservers, "member-interface uplink started");
    Ok(Uplink {
        up: up_tx,
        down: down_rx,
        mi,
        local,
        handle,
    })
}

/// Carries requests to the agent and its events back, until the server
/// drops its sender and the agent stops.
async fn bridge(
    handle: CoreHandle<MiAgent>,
    mut events: mpsc::UnboundedReceiver<MiEvent>,
    mut up: mpsc::Receiver<UpCall>,
    down: mpsc::Sender<Downcall>,
) {
    let mut waiting: BTreeMap<u64, oneshot::Sender<Result<UpReply, AppError>>> = BTreeMap::new();
    let mut next: u64 = 1;
    loop {
        tokio::select! {
            call = up.recv() => {
                let Some(call) = call else { break };
                let handle_id = next;
                next += 1;
                waiting.insert(handle_id, call.reply);
                let request = call.request;
                if handle
                    .with_core(move |agent, now| agent.request(now, handle_id, request))
                    .await
                    .is_err()
                {
                    if let Some(tx) = waiting.remove(&handle_id) {
                        let _ = tx.send(Err(AppError::Disconnected));
                    }
                    break;
                }
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                match event {
                    MiEvent::Answered { handle: h, result } => {
                        if let Some(tx) = waiting.remove(&h) {
                            let _ = tx.send(result);
                        }
                    }
                    MiEvent::View(v) => {
                        if down.send(Downcall::View(v)).await.is_err() {
                            break;
                        }
                    }
                    MiEvent::Lost { group, member } => {
                        tracing::warn!(%group, %member, "a local member was removed from its group");
                        let lost = Downcall::Lost { group, member, reason: AppError::Excluded };
                        if down.send(lost).await.is_err() {
                            break;
                        }
                    }
                    MiEvent::Attached { mserver } => tracing::info!(%mserver, "attached to mserver"),
                    MiEvent::Detached { mserver } => {
                        tracing::warn!(%mserver, "mserver silent: looking for another")
                    }
                }
            }
        }
    }
    for (_, tx) in waiting {
        let _ = tx.send(Err(AppError::Disconnected));
    }
}
