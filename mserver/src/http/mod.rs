//! The mserver's HTTP endpoint (`--http`, default `127.0.0.1:9200`;
//! `docs/operations.md`, "Metrics, health and the status page"):
//!
//! | path | answer |
//! |---|---|
//! | `/` | the status page (one HTML file, no external assets) |
//! | `/metrics` | Prometheus text ([`metrics`]) |
//! | `/healthz` | 200 `ok` while the daemon runs |
//! | `/readyz` | 200 in a view and not stuck in a change, else 503 and why |
//! | `/v1/view` | the object `msctl view --json` prints |
//! | `/v1/tree` | `{"levels": [view, ...], ...}`, lowest first (`msctl tree --json`) |
//! | `/v1/groups` | the application groups |
//! | `/v1/events?after=SEQ` | the event log after SEQ (`msctl events --json`'s entries) |
//! | `/v1/status?after=SEQ&wait_ms=MS` | what the status page shows, held up to MS (at most 5000) until an event after SEQ |
//!
//! Every answer comes from the node through the core driver's mailbox (one
//! message, answered on the daemon's thread); nothing here decides
//! anything about the protocol.

pub mod metrics;

use crate::node::MserverNode;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use daemon_shell::http::{json, text, Exporter};
use membership::mserver::events::LoggedEvent;
use membership::runtime::CoreHandle;
use metrics::{MserverMetrics, Snapshot};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The status page.
const STATUS_PAGE: &str = include_str!("../status.html");

/// Entries of the event log the status page shows.
const STATUS_EVENTS: usize = 30;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    handle: CoreHandle<MserverNode>,
    metrics: Arc<MserverMetrics>,
    exporter: Arc<Exporter>,
}

impl HttpState {
    /// The state of an mserver whose node runs behind `handle`.
    pub fn new(handle: CoreHandle<MserverNode>) -> Self {
        let mut registry = Exporter::registry();
        let metrics = Arc::new(MserverMetrics::register(&mut registry));
        HttpState {
            handle,
            metrics,
            exporter: Arc::new(Exporter::new(registry)),
        }
    }

    /// The metrics, for the daemon to count events in.
    pub fn metrics(&self) -> &Arc<MserverMetrics> {
        &self.metrics
    }
}

/// The routes, for [`daemon_shell::http::serve`].
pub fn routes(state: HttpState) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(state.clone()))
            .route("/", web::get().to(status_page))
            .route("/metrics", web::get().to(metrics_text))
            .route("/readyz", web::get().to(readyz))
            .route("/v1/view", web::get().to(view))
            .route("/v1/tree", web::get().to(tree))
            .route("/v1/groups", web::get().to(groups))
            .route("/v1/events", web::get().to(events))
            .route("/v1/status", web::get().to(status));
    }
}

fn unavailable() -> HttpResponse {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the mserver's core is not running\n",
    )
}

async fn status_page(state: web::Data<HttpState>) -> HttpResponse {
    state.metrics.request("/");
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(STATUS_PAGE)
}

async fn metrics_text(state: web::Data<HttpState>) -> HttpResponse {
    state.metrics.request("/metrics");
    let socket = state.handle.socket_stats().await;
    let snapshot = state
        .handle
        .with_core(|n, now| {
            let (app_groups, app_members) = n
                .apps()
                .registry()
                .groups()
                .fold((0, 0), |(g, m), (_, view)| (g + 1, m + view.members.len()));
            let coreset = n.coreset();
            Snapshot {
                group: coreset.group_name().to_string(),
                view: coreset.view().map_or(0, |v| v.number),
                members: coreset.table().map_or(0, |t| t.rows.len()),
                joined: coreset.is_member(),
                changing: coreset.change_state() == membership::coreset::ChangeState::Changing,
                ready: n.ready(now).is_ok(),
                coreset: coreset.stats().clone(),
                app_groups,
                app_members,
                attached_mis: n.apps().attached().count(),
                event_waiters: n.events().waiting(),
            }
        })
        .await;
    let (Ok(socket), Ok(snapshot)) = (socket, snapshot) else {
        return unavailable();
    };
    state.exporter.scrape(|| {
        state.metrics.socket.update(&socket);
        state.metrics.update(&snapshot);
    })
}

async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    state.metrics.request("/readyz");
    match state.handle.with_core(|n, now| n.ready(now)).await {
        Ok(Ok(())) => text(StatusCode::OK, "ready\n"),
        Ok(Err(why)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
        Err(_) => unavailable(),
    }
}

async fn view(state: web::Data<HttpState>) -> HttpResponse {
    match state.handle.with_core(|n, now| n.view_reply(now)).await {
        Ok(v) => json(&v),
        Err(_) => unavailable(),
    }
}

async fn tree(state: web::Data<HttpState>) -> HttpResponse {
    match state.handle.with_core(|n, now| n.tree_reply(now)).await {
        Ok(t) => json(&t),
        Err(_) => unavailable(),
    }
}

/// One application group, as `/v1/groups` and the status page show it.
#[derive(Debug, Serialize)]
struct AppGroup {
    group: String,
    view: u64,
    suspended: bool,
    members: Vec<membership::appgroup::AppMember>,
}

fn app_groups(n: &MserverNode) -> Vec<AppGroup> {
    n.apps()
        .groups()
        .into_iter()
        .map(|g| AppGroup {
            group: g.view.group.to_string(),
            view: g.view.number,
            suspended: g.suspended,
            members: g.view.members,
        })
        .collect()
}

async fn groups(state: web::Data<HttpState>) -> HttpResponse {
    match state.handle.with_core(|n, _| app_groups(n)).await {
        Ok(g) => json(&serde_json::json!({ "groups": g })),
        Err(_) => unavailable(),
    }
}

/// The query of `/v1/events` and `/v1/status`.
#[derive(Debug, Deserialize)]
struct After {
    after: Option<u64>,
    wait_ms: Option<u64>,
}

async fn events(state: web::Data<HttpState>, q: web::Query<After>) -> HttpResponse {
    let after = q.after.unwrap_or(0);
    match state
        .handle
        .with_core(move |n, now| n.events().since(now, Some(after)))
        .await
    {
        Ok(r) => json(&r.to_json()),
        Err(_) => unavailable(),
    }
}

/// A member as the status page shows it.
#[derive(Debug, Serialize)]
struct StatusMember {
    rank: u64,
    addr: String,
    incarnation: String,
    /// Whether it is a parent (a member of the group one level up).
    parent: bool,
    /// `up`, or `suspected` (on this mserver's fail list).
    state: &'static str,
    /// This mserver.
    me: bool,
}

/// What the status page shows (`/v1/status`).
#[derive(Debug, Serialize)]
struct Status {
    group: String,
    level: u32,
    view: u64,
    coordinator: String,
    state: String,
    ready: bool,
    not_ready: Option<String>,
    me: String,
    members: Vec<StatusMember>,
    /// The groups of the levels above ours this mserver belongs to (as a
    /// parent), lowest first: `msctl view --level N --json` objects.
    upper: Vec<membership::mserver::admin::ViewReply>,
    groups: Vec<AppGroup>,
    /// The newest entries of the event log, oldest first
    /// ([`LoggedEvent::to_json`]).
    events: Vec<serde_json::Value>,
    /// The newest entry's `seq` (ask `after` it to wait for the next).
    last: u64,
    /// The mserver's clock (the events' `at_us` are on it).
    now_us: u64,
}

fn status_of(n: &MserverNode, now: membership::time::Instant) -> Status {
    let v = n.view_reply(now);
    let suspected = n.coreset().fail_list();
    let ready = n.ready(now);
    Status {
        members: v
            .members
            .iter()
            .map(|m| StatusMember {
                rank: m.rank,
                addr: m.addr.clone(),
                incarnation: m.incarnation.clone(),
                parent: m.parent,
                state: if suspected.contains(&m.rank) {
                    "suspected"
                } else {
                    "up"
                },
                me: m.addr == v.me.addr,
            })
            .collect(),
        upper: (2..=n.chain().top())
            .filter_map(|l| n.view_reply_at(now, l))
            .collect(),
        group: v.group,
        level: u32::from(v.level),
        view: v.view,
        coordinator: v.coordinator,
        state: v.state,
        ready: ready.is_ok(),
        not_ready: ready.err(),
        me: v.me.addr,
        groups: app_groups(n),
        events: n
            .events()
            .recent(STATUS_EVENTS)
            .iter()
            .map(LoggedEvent::to_json)
            .collect(),
        last: n.events().last_seq(),
        now_us: now.as_micros(),
    }
}

/// Most time `/v1/status` is held waiting for an event.
const MAX_STATUS_WAIT: Duration = Duration::from_secs(5);
/// How often a held `/v1/status` looks for an event.
const STATUS_POLL: Duration = Duration::from_millis(50);

async fn status(state: web::Data<HttpState>, q: web::Query<After>) -> HttpResponse {
    state.metrics.request("/v1/status");
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_STATUS_WAIT);
    if let Some(after) = q.after {
        // Held until an entry after `after` or the wait ends: a bounded
        // number of cheap mailbox reads.
        let rounds = (wait.as_millis() / STATUS_POLL.as_millis()) as usize;
        for _ in 0..rounds {
            match state.handle.with_core(|n, _| n.events().last_seq()).await {
                Ok(last) if last > after => break,
                Ok(_) => tokio::time::sleep(STATUS_POLL).await,
                Err(_) => return unavailable(),
            }
        }
    }
    match state.handle.with_core(|n, now| status_of(n, now)).await {
        Ok(s) => json(&s),
        Err(_) => unavailable(),
    }
}
