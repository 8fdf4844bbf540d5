//! The member interface's HTTP endpoint (`--http ADDR`, off by default):
//! `/healthz` and `/metrics` (socket traffic and drops, whether it is
//! attached to an mserver, local connections), read from its core at each
//! scrape.

use actix_web::{web, HttpResponse};
use daemon_shell::http::{text, Exporter, SocketMetrics};
use membership::mi::MiNode;
use membership::runtime::CoreHandle;
use prometheus_client::metrics::gauge::Gauge;
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
    handle: CoreHandle<MiNode>,
    metrics: Arc<Metrics>,
    exporter: Arc<Exporter>,
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
    let core = state
        .handle
        .with_core(|n, _| {
            (
                n.agent().attached_to().is_some(),
                n.sessions().connections(),
            )
        })
        .await;
    let (Ok(socket), Ok((attached, connections))) = (socket, core) else {
        return text(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "the member interface's core is not running\n",
        );
    };
    let m = &state.metrics;
    state.exporter.scrape(|| {
        m.socket.update(&socket);
        m.attached.set(i64::from(attached));
        m.connections.set(connections as i64);
    })
}
