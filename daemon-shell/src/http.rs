//! The HTTP endpoint every daemon may serve (`--http ADDR`, issue 16
//! item 4): actix-web 4 with one worker thread, `/healthz`, and
//! `/metrics` in the Prometheus text format (`prometheus-client`, every
//! name under one `ms_` prefix, base units, `_total` counters). Each daemon
//! adds its own routes and metrics; what they share is here:
//!
//! - [`parse_http`]: the setting's value, an address or `off`;
//! - [`bind`] then [`serve`]: binds (first, before the daemon starts
//!   anything) and runs the server. A port in use is fatal (exit 2) when
//!   the address was asked for, and one warning line when it is the
//!   daemon's built-in default, so that a second mserver on one host still
//!   runs (without its HTTP endpoint);
//! - [`Exporter`]: the registry and the scrape (counters read from a
//!   daemon's snapshot are brought up to date under one lock, then
//!   encoded);
//! - [`SocketMetrics`]: traffic by protocol and drops by reason of a
//!   runtime socket, which every daemon has;
//! - [`CoreEndpoint`]: what the handlers of a daemon around one core
//!   share: asking the core (503 when it no longer runs), the scrape of
//!   its socket and core, `/readyz` from a readiness check the daemon's
//!   core answers ([`ready`]), and JSON from a snapshot of the core. A
//!   daemon's own `http.rs` then holds only its routes and metrics.
//!
//! The handlers never block the daemon: they ask its actors (a message,
//! answered from the actor's thread) and read atomics. Bad requests (an
//! unknown path, a bad query) get a 4xx, never a panic.

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};
use membership::id::ProtocolId;
use membership::runtime::{CoreHandle, ProtocolStats, SocketStats};
use membership::sansio::Core;
use membership::time::Instant;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The value of `--http` that turns the endpoint off.
pub const OFF: &str = "off";

/// The prefix of every metric name.
pub const PREFIX: &str = "ms";

/// Parses the `http` setting: `off` (or empty) is `None`, anything else
/// must be an address.
///
/// # Errors
///
/// Not `off` and not an `IP:PORT` address: one line naming the value.
pub fn parse_http(value: &str) -> anyhow::Result<Option<SocketAddr>> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case(OFF) {
        return Ok(None);
    }
    v.parse::<SocketAddr>().map(Some).map_err(|_| {
        anyhow::anyhow!("http {value:?}: give an address IP:PORT (e.g. 127.0.0.1:9200) or `off`")
    })
}

/// A running HTTP endpoint.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on (the port the kernel chose for port 0).
    pub addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

impl Running {
    /// Stops it (open connections are closed at once).
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Binds the endpoint of `daemon` on `addr`, before anything else of the
/// daemon starts (a port in use then stops nothing half-started).
/// `is_default`: the address is the daemon's built-in default rather than
/// one the operator gave.
///
/// Answers `Ok(None)` when the default address cannot be bound (a warning
/// line says so and how to choose another).
///
/// # Errors
///
/// An address the operator gave cannot be bound: one line
/// (`cannot serve HTTP on ADDR: ...`), a startup error (exit 2).
pub fn bind(
    daemon: &str,
    addr: SocketAddr,
    is_default: bool,
) -> anyhow::Result<Option<std::net::TcpListener>> {
    match std::net::TcpListener::bind(addr) {
        Ok(l) => Ok(Some(l)),
        Err(e) if is_default => {
            tracing::warn!(
                http = %addr,
                "cannot serve HTTP on {addr} (the default): {e}; /metrics and the status page are off \
                 for this {daemon} (another daemon has the port? give --http ADDR, or --http off)"
            );
            Ok(None)
        }
        Err(e) => anyhow::bail!("cannot serve HTTP on {addr}: {e}"),
    }
}

/// Serves the routes `configure` adds (plus `/healthz`, and 404 for
/// anything else) on `listener` (from [`bind`]), in the current actix
/// system, with one worker thread.
///
/// # Errors
///
/// The listener cannot be used (rare: it was bound a moment ago).
pub fn serve<F>(listener: std::net::TcpListener, configure: F) -> anyhow::Result<Running>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .route("/healthz", web::get().to(healthz))
            .configure(configure.clone())
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .max_connections(256)
    .client_request_timeout(Duration::from_secs(5))
    .listen(listener)
    .map_err(|e| anyhow::anyhow!("cannot serve HTTP on {addr}: {e}"))?;
    let server = server.run();
    let handle = server.handle();
    actix::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "the HTTP endpoint stopped");
        }
    });
    tracing::info!(http = %addr, "serving /metrics, /healthz and /readyz on http://{addr}/");
    Ok(Running { addr, handle })
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("not found\n")
}

/// A plain-text answer with `status`.
pub fn text(status: actix_web::http::StatusCode, body: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body.into())
}

/// A JSON answer (200), or 500 if `value` does not serialize.
pub fn json<T: serde::Serialize>(value: &T) -> HttpResponse {
    match serde_json::to_string(value) {
        Ok(body) => HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(("Cache-Control", "no-store"))
            .body(body),
        Err(e) => text(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode: {e}\n"),
        ),
    }
}

/// The answer of `/readyz`: 200 `ready` for `Ok`, else 503 `not ready:
/// WHY` (one line; a line break in `why` becomes a space).
pub fn ready(check: Result<(), String>) -> HttpResponse {
    match check {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(why) => {
            let why = why.replace(['\r', '\n'], " ");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", why.trim()),
            )
        }
    }
}

/// What the HTTP handlers of a daemon around one core share: the core's
/// handle, the daemon's metrics [`Exporter`], and the answers every such
/// daemon gives the same way. The daemon's own module adds its metrics
/// and says what its core answers; nothing here knows a protocol.
pub struct CoreEndpoint<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    daemon: &'static str,
    handle: CoreHandle<C>,
    exporter: Arc<Exporter>,
}

impl<C> Clone for CoreEndpoint<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    fn clone(&self) -> Self {
        CoreEndpoint {
            daemon: self.daemon,
            handle: self.handle.clone(),
            exporter: Arc::clone(&self.exporter),
        }
    }
}

impl<C> std::fmt::Debug for CoreEndpoint<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreEndpoint")
            .field("daemon", &self.daemon)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<C> CoreEndpoint<C>
where
    C: Core + Unpin + 'static,
    C::Event: Send + 'static,
{
    /// The endpoint of `daemon` (`mcaster`, `member interface`: it names
    /// the daemon in answers) whose core runs behind `handle`, with the
    /// metrics in `registry` (from [`Exporter::registry`]).
    pub fn new(daemon: &'static str, handle: CoreHandle<C>, registry: Registry) -> Self {
        CoreEndpoint {
            daemon,
            handle,
            exporter: Arc::new(Exporter::new(registry)),
        }
    }

    /// The core's handle.
    pub fn handle(&self) -> &CoreHandle<C> {
        &self.handle
    }

    /// 503: the core (or its socket) no longer answers.
    pub fn unavailable(&self) -> HttpResponse {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the {}'s core is not running\n", self.daemon),
        )
    }

    /// Runs `f` on the core (one message, answered on the daemon's
    /// thread); [`CoreEndpoint::unavailable`] when the core is gone.
    pub async fn ask<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut C, Instant) -> R + Send + 'static,
    ) -> Result<R, HttpResponse> {
        self.handle
            .with_core(f)
            .await
            .map_err(|_| self.unavailable())
    }

    /// The socket's counters, and `snapshot` of the core; either missing
    /// is [`CoreEndpoint::unavailable`].
    pub async fn socket_and_core<S: Send + 'static>(
        &self,
        snapshot: impl FnOnce(&mut C, Instant) -> S + Send + 'static,
    ) -> Result<(SocketStats, S), HttpResponse> {
        let socket = self.handle.socket_stats().await;
        let core = self.handle.with_core(snapshot).await;
        match (socket, core) {
            (Ok(socket), Ok(core)) => Ok((socket, core)),
            _ => Err(self.unavailable()),
        }
    }

    /// `/metrics`: takes `snapshot` of the core and the socket's
    /// counters, then `update` brings the daemon's metrics up to them
    /// under the scrape lock, and every metric is encoded.
    pub async fn scrape<S: Send + 'static>(
        &self,
        snapshot: impl FnOnce(&mut C, Instant) -> S + Send + 'static,
        update: impl FnOnce(&SocketStats, S),
    ) -> HttpResponse {
        match self.socket_and_core(snapshot).await {
            Ok((socket, core)) => self.exporter.scrape(|| update(&socket, core)),
            Err(unavailable) => unavailable,
        }
    }

    /// `/readyz`: the daemon's socket answers (it is bound and its actor
    /// runs) and its core's `check` is `Ok` ([`ready`]).
    pub async fn readyz(
        &self,
        check: impl FnOnce(&mut C, Instant) -> Result<(), String> + Send + 'static,
    ) -> HttpResponse {
        match self.socket_and_core(check).await {
            Ok((_, check)) => ready(check),
            Err(_) => ready(Err(format!(
                "the {}'s socket or core is not running",
                self.daemon
            ))),
        }
    }

    /// A JSON answer made from the socket's counters and the core (see
    /// [`json`]).
    pub async fn json_from<T: serde::Serialize + Send + 'static>(
        &self,
        f: impl FnOnce(&SocketStats, &mut C, Instant) -> T + Send + 'static,
    ) -> HttpResponse {
        let socket = match self.handle.socket_stats().await {
            Ok(s) => s,
            Err(_) => return self.unavailable(),
        };
        match self.ask(move |c, now| f(&socket, c, now)).await {
            Ok(value) => json(&value),
            Err(unavailable) => unavailable,
        }
    }
}

/// A counter brought up to `value`, a total the daemon keeps itself
/// (counters only go up: a smaller value changes nothing).
pub fn set_total(counter: &Counter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

/// A daemon's metrics registry and its scrape.
#[derive(Debug)]
pub struct Exporter {
    registry: Registry,
    scrape: Mutex<()>,
}

impl Exporter {
    /// Wraps `registry` (made with [`Exporter::registry`]).
    pub fn new(registry: Registry) -> Self {
        Exporter {
            registry,
            scrape: Mutex::new(()),
        }
    }

    /// An empty registry with the `ms_` prefix.
    pub fn registry() -> Registry {
        Registry::with_prefix(PREFIX)
    }

    /// Runs `update` (bringing counters up to a snapshot) and encodes
    /// every metric, under one lock so that two scrapes at once do not
    /// count a delta twice.
    pub fn scrape(&self, update: impl FnOnce()) -> HttpResponse {
        let _guard = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        update();
        let mut body = String::new();
        match prometheus_client::encoding::prometheus_text::encode(&mut body, &self.registry) {
            Ok(()) => HttpResponse::Ok()
                .content_type(prometheus_client::encoding::prometheus_text::CONTENT_TYPE)
                .body(body),
            Err(e) => text(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the metrics: {e}\n"),
            ),
        }
    }
}

/// Labels of the traffic counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    /// `coreset`, `mcaster`, `rpc`, ...
    pub protocol: String,
    /// `sent` or `received`.
    pub direction: &'static str,
}

/// Labels of the drop counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// Where it was dropped: `socket` (the wire checks, queues,
    /// interceptors) or a protocol (`coreset`).
    pub layer: &'static str,
    /// Why.
    pub reason: String,
}

/// What every daemon's socket counts: traffic by protocol, drops by reason,
/// uptime.
#[derive(Debug)]
pub struct SocketMetrics {
    datagrams: Family<TrafficLabels, Counter>,
    bytes: Family<TrafficLabels, Counter>,
    /// Drops by layer and reason (daemons add their protocols' drops).
    pub drops: Family<DropLabels, Counter>,
    uptime: Gauge<f64, AtomicU64>,
    started: std::time::Instant,
}

impl SocketMetrics {
    /// Registers the socket's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = SocketMetrics {
            datagrams: Family::default(),
            bytes: Family::default(),
            drops: Family::default(),
            uptime: Gauge::default(),
            #[allow(clippy::disallowed_methods)] // a daemon owns the clock
            started: std::time::Instant::now(),
        };
        registry.register(
            "traffic_datagrams",
            "Datagrams sent and received on the daemon's socket, by protocol",
            m.datagrams.clone(),
        );
        registry.register_with_unit(
            "traffic",
            "Bytes sent and received on the daemon's socket (UDP payload), by protocol",
            prometheus_client::registry::Unit::Bytes,
            m.bytes.clone(),
        );
        registry.register(
            "dropped_datagrams",
            "Datagrams and messages dropped, by layer and reason",
            m.drops.clone(),
        );
        registry.register_with_unit(
            "uptime",
            "Time since the daemon started",
            prometheus_client::registry::Unit::Seconds,
            m.uptime.clone(),
        );
        m
    }

    /// Brings the counters up to `stats`.
    pub fn update(&self, stats: &SocketStats) {
        self.update_parts(&stats.per_protocol, &stats.drops);
    }

    /// Brings the counters up to the traffic `per_protocol` and the
    /// socket's `drops`.
    pub fn update_parts(
        &self,
        per_protocol: &BTreeMap<ProtocolId, ProtocolStats>,
        drops: &BTreeMap<String, u64>,
    ) {
        for (protocol, t) in per_protocol {
            let protocol = format!("{protocol:?}").to_lowercase();
            for (direction, datagrams, bytes) in [
                ("sent", t.sent, t.bytes_sent),
                ("received", t.received, t.bytes_received),
            ] {
                let labels = TrafficLabels {
                    protocol: protocol.clone(),
                    direction,
                };
                set_total(&self.datagrams.get_or_create(&labels), datagrams);
                set_total(&self.bytes.get_or_create(&labels), bytes);
            }
        }
        for (reason, n) in drops {
            let labels = DropLabels {
                layer: "socket",
                reason: reason.clone(),
            };
            set_total(&self.drops.get_or_create(&labels), *n);
        }
        self.uptime.set(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_is_an_address_or_off() {
        assert_eq!(parse_http("off").expect("off"), None);
        assert_eq!(parse_http("OFF").expect("off"), None);
        assert_eq!(parse_http("").expect("empty"), None);
        assert_eq!(
            parse_http("127.0.0.1:9200").expect("addr"),
            Some("127.0.0.1:9200".parse().expect("addr"))
        );
        let e = parse_http("9200").expect_err("no ip").to_string();
        assert!(e.contains("IP:PORT") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn totals_only_go_up_and_the_text_has_the_prefix_units_and_total() {
        let mut registry = Exporter::registry();
        let m = SocketMetrics::register(&mut registry);
        let mut drops = BTreeMap::new();
        drops.insert("bad_checksum".to_string(), 3);
        m.update_parts(&BTreeMap::new(), &drops);
        drops.insert("bad_checksum".to_string(), 2);
        m.update_parts(&BTreeMap::new(), &drops);
        let exporter = Exporter::new(registry);
        let response = exporter.scrape(|| {});
        assert_eq!(response.status(), actix_web::http::StatusCode::OK);
        let body = actix_web::body::to_bytes(response.into_body());
        let body = futures_lite_block_on(body).expect("body");
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(
            text.contains("ms_dropped_datagrams_total{layer=\"socket\",reason=\"bad_checksum\"} 3"),
            "{text}"
        );
        assert!(text.contains("# TYPE ms_uptime_seconds gauge"), "{text}");
    }

    #[test]
    fn ready_is_200_or_503_with_one_line() {
        let ok = ready(Ok(()));
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(body_text(ok), "ready\n");
        let not = ready(Err("attaching to 127.0.0.1:7200\nagain".into()));
        assert_eq!(not.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body_text(not),
            "not ready: attaching to 127.0.0.1:7200 again\n"
        );
    }

    fn body_text(response: HttpResponse) -> String {
        let body =
            futures_lite_block_on(actix_web::body::to_bytes(response.into_body())).expect("body");
        String::from_utf8(body.to_vec()).expect("utf-8")
    }

    /// Runs a future that is ready without I/O.
    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }
}
