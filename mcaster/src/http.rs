//! The mcaster's HTTP endpoint (`--http ADDR`, off by default): `/healthz`
//! and `/metrics` (socket traffic and drops, relayed datagrams and their
//! copies, groups and members), read from the relay core's counters at
//! each scrape.

use actix_web::{web, HttpResponse};
use daemon_shell::http::{set_total, text, DropLabels, Exporter, SocketMetrics};
use membership::mcaster::Mcaster;
use membership::runtime::CoreHandle;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
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
    handle: CoreHandle<Mcaster>,
    metrics: Arc<Metrics>,
    exporter: Arc<Exporter>,
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
            handle,
            metrics: Arc::new(metrics),
            exporter: Arc::new(Exporter::new(registry)),
        }
    }
}

/// The routes, for [`daemon_shell::http::serve`].
pub fn routes(state: HttpState) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(state.clone()))
            .route("/metrics", web::get().to(metrics_text));
    }
}

async fn metrics_text(state: web::Data<HttpState>) -> HttpResponse {
    let socket = state.handle.socket_stats().await;
    let relay = state
        .handle
        .with_core(|r, _| (r.counters().clone(), r.group_count(), r.member_count()))
        .await;
    let (Ok(socket), Ok((c, groups, members))) = (socket, relay) else {
        return text(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "the mcaster's core is not running\n",
        );
    };
    let m = &state.metrics;
    state.exporter.scrape(|| {
        m.socket.update(&socket);
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
    })
}
