//! The mcaster's routes on its HTTP endpoint (`--http ADDR`, off by
//! default; the plumbing is [`daemon_shell::http`]):
//!
//! | path | answer |
//! |---|---|
//! | `/healthz` | 200 `ok` while the daemon runs |
//! | `/readyz` | 200 `ready` while its socket is bound and its core answers, else 503 and why |
//! | `/metrics` | socket traffic and drops, relayed datagrams and their copies, groups and members |
//! | `/v1/status` | JSON: the socket, and the registered members of every group |
//!
//! Everything is read from the relay core at each request; nothing here
//! decides anything about the protocol.

use actix_web::{web, HttpResponse};
use daemon_shell::http::{set_total, CoreEndpoint, DropLabels, Exporter, SocketMetrics};
use membership::mcaster::{GroupInfo, Mcaster};
use membership::runtime::CoreHandle;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use std::sync::Arc;

/// The mcaster's metrics.
#[derive(Debug)]
struct Metrics {
    socket: SocketMetrics,
    relayed: Counter,
    copies: Counter,
    groups: Gauge,
    members: Gauge,
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    endpoint: CoreEndpoint<Mcaster>,
    metrics: Arc<Metrics>,
}

impl HttpState {
    /// The state of the mcaster whose core runs behind `handle`.
    pub fn new(handle: CoreHandle<Mcaster>) -> Self {
        let mut registry = Exporter::registry();
        let metrics = Metrics {
            socket: SocketMetrics::register(&mut registry),
            relayed: Counter::default(),
            copies: Counter::default(),
            groups: Gauge::default(),
            members: Gauge::default(),
        };
        registry.register(
            "relayed_datagrams",
            "Group datagrams the mcaster accepted for relaying",
            metrics.relayed.clone(),
        );
        registry.register(
            "relayed_copies",
            "Copies the mcaster sent of relayed datagrams (unicast and class D)",
            metrics.copies.clone(),
        );
        registry.register(
            "mcaster_groups",
            "Groups the mcaster serves",
            metrics.groups.clone(),
        );
        registry.register(
            "mcaster_members",
            "Members registered with the mcaster, over all groups",
            metrics.members.clone(),
        );
        HttpState {
            endpoint: CoreEndpoint::new("mcaster", handle, registry),
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
            |r, _| (r.counters().clone(), r.group_count(), r.member_count()),
            |socket, (c, groups, members)| {
                m.socket.update(socket);
                set_total(&m.relayed, c.relayed);
                set_total(&m.copies, c.copies);
                for (reason, n) in c.dropped.iter() {
                    let labels = DropLabels {
                        layer: "mcaster",
                        reason: reason.to_string(),
                    };
                    set_total(&m.socket.drops.get_or_create(&labels), n);
                }
                m.groups.set(groups as i64);
                m.members.set(members as i64);
            },
        )
        .await
}

/// Ready once the socket is bound and both its actor and the relay core
/// answer: the mcaster relays from then on. (An mcaster with no group yet
/// is ready: members register with it.)
async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    state.endpoint.readyz(|_, _| Ok(())).await
}

/// `/v1/status`.
#[derive(Debug, Serialize)]
struct Status {
    /// The address the socket is bound to.
    listen: String,
    /// The node id in the mcaster's headers.
    node: String,
    /// Groups served.
    groups: usize,
    /// Members over all groups.
    members: usize,
    /// Group datagrams accepted for relaying.
    relayed: u64,
    /// Every group, in address order.
    group_list: Vec<GroupStatus>,
}

/// One group of `/v1/status`.
#[derive(Debug, Serialize)]
struct GroupStatus {
    /// The class D address.
    group: String,
    /// Its name.
    name: String,
    /// Registered members, in address order.
    members: Vec<MemberStatus>,
}

/// One registered member.
#[derive(Debug, Serialize)]
struct MemberStatus {
    /// Its address.
    addr: String,
    /// `uc` (gets unicast copies) or `mc` (receives the class D address).
    kind: String,
}

impl From<GroupInfo> for GroupStatus {
    fn from(g: GroupInfo) -> Self {
        GroupStatus {
            group: g.group.to_string(),
            name: g.name,
            members: g
                .members
                .into_iter()
                .map(|(addr, kind)| MemberStatus {
                    addr: addr.to_string(),
                    kind: kind.to_string(),
                })
                .collect(),
        }
    }
}

async fn status(state: web::Data<HttpState>) -> HttpResponse {
    state
        .endpoint
        .json_from(|socket, r, _| Status {
            listen: socket.local.bound.to_string(),
            node: socket.local.node.to_string(),
            groups: r.group_count(),
            members: r.member_count(),
            relayed: r.counters().relayed,
            group_list: r.groups().into_iter().map(GroupStatus::from).collect(),
        })
        .await
}
