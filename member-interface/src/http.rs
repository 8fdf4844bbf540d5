//! The member interface's routes on its HTTP endpoint (`--http ADDR`, off
//! by default; the plumbing is [`daemon_shell::http`]):
//!
//! | path | answer |
//! |---|---|
//! | `/healthz` | 200 `ok` while the daemon runs |
//! | `/readyz` | 200 `ready` while attached to an mserver, else 503 and why, on one line |
//! | `/metrics` | socket traffic and drops, whether it is attached, local connections |
//! | `/v1/status` | JSON: its mserver (attached or not), local connections and members |
//!
//! Everything is read from the MI's core ([`MiNode`]) at each request;
//! whether it is ready is the core's answer ([`MiNode::ready`]).

use actix_web::{web, HttpResponse};
use daemon_shell::http::{CoreEndpoint, Exporter, SocketMetrics};
use membership::appgroup::agent::LinkStatus;
use membership::mi::MiNode;
use membership::runtime::CoreHandle;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug)]
struct Metrics {
    socket: SocketMetrics,
    attached: Gauge,
    connections: Gauge,
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    endpoint: CoreEndpoint<MiNode>,
    metrics: Arc<Metrics>,
}

impl HttpState {
    /// The state of the MI whose core runs behind `handle`.
    pub fn new(handle: CoreHandle<MiNode>) -> Self {
        let mut registry = Exporter::registry();
        let metrics = Metrics {
            socket: SocketMetrics::register(&mut registry),
            attached: Gauge::default(),
            connections: Gauge::default(),
        };
        registry.register(
            "mi_attached",
            "1 when the member interface is attached to an mserver",
            metrics.attached.clone(),
        );
        registry.register(
            "mi_connections",
            "Local processes connected to the member interface",
            metrics.connections.clone(),
        );
        HttpState {
            endpoint: CoreEndpoint::new("member interface", handle, registry),
            metrics: Arc::new(metrics),
        }
    }
}

/// The routes, for [`daemon_shell::http::serve`].
pub fn routes(state: HttpState) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(state.clone()))
            .route("/metrics", web::get().to(metrics_text))
            .route("/readyz", web::get().to(readyz))
            .route("/v1/status", web::get().to(status));
    }
}

async fn metrics_text(state: web::Data<HttpState>) -> HttpResponse {
    let m = &state.metrics;
    state
        .endpoint
        .scrape(
            |n, _| {
                (
                    n.agent().attached_to().is_some(),
                    n.sessions().connections(),
                )
            },
            |socket, (attached, connections)| {
                m.socket.update(socket);
                m.attached.set(i64::from(attached));
                m.connections.set(connections as i64);
            },
        )
        .await
}

async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    state.endpoint.readyz(|n, now| n.ready(now)).await
}

/// `/v1/status`.
#[derive(Debug, Serialize)]
struct Status {
    /// The MI's id.
    mi: String,
    /// Its UDP address (where its mserver polls it).
    udp: String,
    /// The mserver it is attached to, or the one it is attaching to;
    /// `null` between attempts.
    mserver: Option<String>,
    /// Attached to `mserver`.
    attached: bool,
    /// `attached`, `attaching` or `idle`.
    link: &'static str,
    /// Why it is not ready (`null` when attached).
    not_ready: Option<String>,
    /// The mservers it tries, in order.
    candidates: Vec<String>,
    /// Local processes connected to its Unix socket.
    connections: usize,
    /// Local members over all groups.
    members: usize,
    /// Local members per group.
    groups: BTreeMap<String, usize>,
    /// Requests in progress.
    in_progress: usize,
}

async fn status(state: web::Data<HttpState>) -> HttpResponse {
    state
        .endpoint
        .json_from(|socket, n, now| {
            let agent = n.agent();
            let (link, mserver) = match agent.link_status() {
                LinkStatus::Attached { to } => ("attached", Some(to.to_string())),
                LinkStatus::Attaching { to } => ("attaching", Some(to.to_string())),
                LinkStatus::Idle { .. } => ("idle", None),
            };
            let mut groups = BTreeMap::new();
            for group in agent.members().values() {
                *groups.entry(group.to_string()).or_insert(0) += 1;
            }
            Status {
                mi: agent.mi().to_string(),
                udp: socket.local.bound.to_string(),
                mserver,
                attached: link == "attached",
                link,
                not_ready: n.ready(now).err(),
                candidates: agent.candidates().iter().map(|c| c.to_string()).collect(),
                connections: n.sessions().connections(),
                members: agent.members().len(),
                groups,
                in_progress: n.in_progress(),
            }
        })
        .await
}
