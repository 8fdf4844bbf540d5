//! The mserver's metrics (`docs/operations.md`, "Metrics"). Counted in the
//! shell: view changes from the core-set's `ViewInstalled` events as the
//! daemon receives them, everything else from the cores' own counters
//! (plain stats structs), read at each scrape.

use daemon_shell::http::{set_total, DropLabels, SocketMetrics};
use membership::coreset::{CoreSetEvent, CoreSetStats};
use membership::mserver::events::change_kind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// A group and its level.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// The group's name.
    pub group: String,
    /// Its level (1: the lowest mserver groups).
    pub level: u32,
}

/// A view change's group, level and kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// The group's name.
    pub group: String,
    /// Its level.
    pub level: u32,
    /// `found`, `join`, `failure`, `leave` or `merge`.
    pub kind: &'static str,
}

/// An HTTP path of the endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// `/metrics`, `/v1/status`, ...
    pub path: &'static str,
}

/// A detected failure's group, level and cause.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    /// The group's name.
    pub group: String,
    /// Its level.
    pub level: u32,
    /// `heartbeat`, `crash`, `unresponsive` or `restart`.
    pub cause: &'static str,
}

fn duration_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// What the core tells at a scrape.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The group's name now.
    pub group: String,
    /// The installed view number (0 while joining).
    pub view: u64,
    /// Members of the view.
    pub members: usize,
    /// In a view.
    pub joined: bool,
    /// A change in progress.
    pub changing: bool,
    /// Ready (`/readyz`).
    pub ready: bool,
    /// The core-set's counters.
    pub coreset: CoreSetStats,
    /// Application groups in the registry.
    pub app_groups: usize,
    /// Their members.
    pub app_members: usize,
    /// MIs attached to this mserver.
    pub attached_mis: usize,
    /// Requests waiting for events (`msctl events` subscribers).
    pub event_waiters: usize,
}

/// The mserver's metrics.
#[derive(Debug)]
pub struct MserverMetrics {
    /// Socket traffic and drops.
    pub socket: SocketMetrics,
    level: u32,
    view: Family<GroupLabels, Gauge>,
    view_members: Family<GroupLabels, Gauge>,
    in_view: Gauge,
    changing: Gauge,
    ready: Gauge,
    views_installed: Family<GroupLabels, Counter>,
    view_changes: Family<ChangeLabels, Counter>,
    change_duration: Family<GroupLabels, Histogram, fn() -> Histogram>,
    failures: Family<CauseLabels, Counter>,
    app_groups: Gauge,
    app_members: Gauge,
    attached_mis: Gauge,
    event_subscribers: Gauge,
    http_requests: Family<PathLabels, Counter>,
}

impl MserverMetrics {
    /// Registers every metric in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = MserverMetrics {
            socket: SocketMetrics::register(registry),
            level: 1,
            view: Family::default(),
            view_members: Family::default(),
            in_view: Gauge::default(),
            changing: Gauge::default(),
            ready: Gauge::default(),
            views_installed: Family::default(),
            view_changes: Family::default(),
            change_duration: Family::new_with_constructor(duration_histogram),
            failures: Family::default(),
            app_groups: Gauge::default(),
            app_members: Gauge::default(),
            attached_mis: Gauge::default(),
            event_subscribers: Gauge::default(),
            http_requests: Family::default(),
        };
        registry.register(
            "http_requests",
            "Requests answered by this endpoint, by path (the status page asks /v1/status)",
            m.http_requests.clone(),
        );
        registry.register(
            "view",
            "The number of the view installed here, by group and level",
            m.view.clone(),
        );
        registry.register(
            "view_members",
            "Members of the view installed here, by group and level",
            m.view_members.clone(),
        );
        registry.register(
            "in_view",
            "1 when this mserver is a member of a view, 0 while joining or after leaving",
            m.in_view.clone(),
        );
        registry.register(
            "changing",
            "1 while this mserver holds an uncommitted change",
            m.changing.clone(),
        );
        registry.register(
            "ready",
            "1 when in a view and not stuck in a change (/readyz)",
            m.ready.clone(),
        );
        registry.register(
            "views_installed",
            "Views installed here, by group and level",
            m.views_installed.clone(),
        );
        registry.register(
            "view_changes",
            "View changes installed here by group, level and kind (found, join, failure, leave, merge)",
            m.view_changes.clone(),
        );
        registry.register_with_unit(
            "view_change_duration",
            "From the moment this mserver learned of a change to its installation",
            Unit::Seconds,
            m.change_duration.clone(),
        );
        registry.register(
            "failures_detected",
            "Members this mserver put on its fail list, by cause (heartbeat, crash, unresponsive, restart)",
            m.failures.clone(),
        );
        registry.register(
            "app_groups",
            "Application groups in this mserver's registry",
            m.app_groups.clone(),
        );
        registry.register(
            "app_members",
            "Members of the application groups in this mserver's registry",
            m.app_members.clone(),
        );
        registry.register(
            "attached_mis",
            "Member interfaces attached to this mserver",
            m.attached_mis.clone(),
        );
        registry.register(
            "event_subscribers",
            "msctl events requests waiting for an event",
            m.event_subscribers.clone(),
        );
        m
    }

    /// Counts a request to `path`.
    pub fn request(&self, path: &'static str) {
        self.http_requests.get_or_create(&PathLabels { path }).inc();
    }

    fn labels(&self, group: &str) -> GroupLabels {
        GroupLabels {
            group: group.to_string(),
            level: self.level,
        }
    }

    /// Counts a core-set event of `group` at `level` (the daemon calls it
    /// for each one), with `took` the change's duration for a view.
    pub fn on_coreset_event(&self, group: &str, level: u8, e: &CoreSetEvent, took: Duration) {
        let level = u32::from(level);
        if let CoreSetEvent::ViewInstalled {
            view,
            members,
            joined,
            failed,
            left,
            merged,
            ..
        } = e
        {
            let labels = GroupLabels {
                group: group.to_string(),
                level,
            };
            self.views_installed.get_or_create(&labels).inc();
            self.view_changes
                .get_or_create(&ChangeLabels {
                    group: group.to_string(),
                    level,
                    kind: change_kind(*merged, joined, failed, left, members),
                })
                .inc();
            self.change_duration
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
            self.view
                .get_or_create(&labels)
                .set(i64::try_from(view.number).unwrap_or(i64::MAX));
            self.view_members
                .get_or_create(&labels)
                .set(members.len() as i64);
        }
    }

    /// Brings the gauges and counters up to a scrape's snapshot.
    pub fn update(&self, s: &Snapshot) {
        let labels = self.labels(&s.group);
        if s.joined {
            self.view
                .get_or_create(&labels)
                .set(i64::try_from(s.view).unwrap_or(i64::MAX));
            self.view_members
                .get_or_create(&labels)
                .set(s.members as i64);
        }
        self.in_view.set(i64::from(s.joined));
        self.changing.set(i64::from(s.changing));
        self.ready.set(i64::from(s.ready));
        for (cause, n) in [
            ("heartbeat", s.coreset.monitor_failures),
            ("crash", s.coreset.hint_failures),
            ("unresponsive", s.coreset.silent_failures),
            ("restart", s.coreset.restarts_detected),
        ] {
            let c = self.failures.get_or_create(&CauseLabels {
                group: s.group.clone(),
                level: self.level,
                cause,
            });
            set_total(&c, n);
        }
        let drops = membership::mserver::admin::counters_of(&s.coreset);
        for (key, n) in drops {
            if let Some(reason) = key.strip_prefix("drops.") {
                let c = self.socket.drops.get_or_create(&DropLabels {
                    layer: "coreset",
                    reason: reason.to_string(),
                });
                set_total(&c, n);
            }
        }
        self.app_groups.set(s.app_groups as i64);
        self.app_members.set(s.app_members as i64);
        self.attached_mis.set(s.attached_mis as i64);
        self.event_subscribers.set(s.event_waiters as i64);
    }
}
