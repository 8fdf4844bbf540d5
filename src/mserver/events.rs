//! The mserver's event log: its view changes and failure detections, as
//! `msctl events` streams them and the status page lists them (issue 16,
//! items 5 and 6). Sans-IO like the rest of the node: it is fed the
//! core-set's events and observes the core-set after every input, with the
//! `now` of that input; it reads no clock and does no I/O.
//!
//! - **Bounded.** The log keeps the last [`LOG_CAPACITY`] entries, each
//!   numbered (`seq`, from 1). A subscriber asks for the entries after the
//!   last `seq` it saw; one that fell behind by more than the log holds is
//!   told how many it `missed`, and goes on from the oldest entry kept.
//! - **Never blocking.** A subscriber's request (`PROC_EVENTS`,
//!   [`EventsRequest`]) waits at most `wait_ms` (at most
//!   [`MAX_EVENTS_WAIT`]) for a new entry, in a waiting list of at most
//!   [`MAX_EVENT_WAITERS`]; beyond that it is answered at once. A
//!   subscriber that vanished costs one answer into the void when its wait
//!   ends. Nothing here holds per-subscriber state beyond a waiting
//!   request.
//! - **Failure detections** are the members that appear on the core-set's
//!   fail list, with their cause read from the counters that moved with
//!   them (ring monitoring, a crash hint, silence during a change).
//! - **Readiness** ([`EventLog::ready`]): this mserver is in a view and not
//!   in a change for longer than [`EventLog::stuck_after`].

use crate::coreset::{ChangeState, CoreSet, CoreSetEvent, CoreSetStats, Member, TreeRecord};
use crate::mserver::admin::{self, MemberInfo};
use crate::rpc::RequestToken;
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// `events`: this mserver's view changes and failure detections after a
/// given point, waiting (bounded) for one if there is none yet. Request:
/// [`EventsRequest`]; reply: [`EventsReply`].
pub const PROC_EVENTS: u16 = 6;

/// Entries the log keeps.
pub const LOG_CAPACITY: usize = 256;
/// Most requests waiting for an entry at once (further ones are answered
/// at once, empty).
pub const MAX_EVENT_WAITERS: usize = 64;
/// The longest a request waits for an entry.
pub const MAX_EVENTS_WAIT: Duration = Duration::from_secs(5);
/// Most entries in one reply.
pub const MAX_EVENTS_PER_REPLY: usize = 64;

/// Arguments of `events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsRequest {
    /// The last `seq` the subscriber saw; `None`: only what happens from
    /// now on (the reply is immediate and carries `next`).
    pub after: Option<u64>,
    /// How long to wait for an entry if there is none after `after`
    /// (capped at [`MAX_EVENTS_WAIT`]); 0 answers at once.
    pub wait_ms: u32,
}

/// The reply to `events`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventsReply {
    /// The entries after the request's `after`, oldest first.
    pub events: Vec<LoggedEvent>,
    /// The `seq` to ask after next time (the last one seen).
    pub last: u64,
    /// Entries the subscriber can no longer get (they left the log).
    pub missed: u64,
    /// The mserver's clock when it answered, in microseconds (the same
    /// clock as [`LoggedEvent::at_us`]: the age of an entry is `now_us -
    /// at_us`).
    pub now_us: u64,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// Its number in this mserver's log, from 1.
    pub seq: u64,
    /// When it happened, on the mserver's clock (microseconds).
    pub at_us: u64,
    /// What happened.
    pub event: Event,
}

/// What happened. On the wire (bincode) an externally tagged enum; as
/// JSON ([`LoggedEvent::to_json`]) one flat object with a `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A view was installed here.
    View {
        /// The group's name.
        group: String,
        /// The group's level (1: the lowest mserver groups).
        level: u32,
        /// The view number.
        view: u64,
        /// The incarnation of the member that coordinated it.
        coordinator: String,
        /// Why: `found`, `join`, `failure`, `leave`, `merge` (the
        /// weightiest reason when one change has several).
        change: String,
        /// Its members, by rank.
        members: Vec<MemberInfo>,
        /// Members it admitted.
        joined: Vec<MemberInfo>,
        /// Members it removed as failed.
        failed: Vec<MemberInfo>,
        /// Members it removed because they left.
        left: Vec<MemberInfo>,
        /// From the moment this mserver learned of the change to its
        /// installation, in milliseconds.
        took_ms: f64,
    },
    /// A member went on this mserver's fail list.
    FailureDetected {
        /// The group's name.
        group: String,
        /// The group's level.
        level: u32,
        /// The member.
        member: MemberInfo,
        /// `heartbeat` (ring monitoring: no heartbeat, no reply),
        /// `crash` (its host said its port is unreachable, confirmed),
        /// `unresponsive` (no answer during a change or an election),
        /// `restart` (a newer incarnation at its address), or `other`.
        cause: String,
    },
    /// The group excluded this mserver (it rejoins).
    Excluded {
        /// The group's name.
        group: String,
        /// The last view it had installed.
        view: u64,
    },
    /// This mserver left its group.
    Left {
        /// The group's name.
        group: String,
    },
}

impl LoggedEvent {
    /// The entry as JSON: `{"seq", "at_us", "kind", ...the event's
    /// fields}` (`msctl events --json` replaces `at_us` with `time`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        out.insert("seq".into(), self.seq.into());
        out.insert("at_us".into(), self.at_us.into());
        out.insert("kind".into(), self.event.kind().into());
        if let Ok(serde_json::Value::Object(tagged)) = serde_json::to_value(&self.event) {
            for (_, fields) in tagged {
                if let serde_json::Value::Object(fields) = fields {
                    out.extend(fields);
                }
            }
        }
        serde_json::Value::Object(out)
    }
}

impl EventsReply {
    /// The reply as JSON (`/v1/events`): `{"events": [entry, ...], "last",
    /// "missed", "now_us"}`, each entry as [`LoggedEvent::to_json`].
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "events": self.events.iter().map(LoggedEvent::to_json).collect::<Vec<_>>(),
            "last": self.last,
            "missed": self.missed,
            "now_us": self.now_us,
        })
    }
}

impl Event {
    /// The entry's kind as in its JSON (`view`, `failure_detected`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::View { .. } => "view",
            Event::FailureDetected { .. } => "failure_detected",
            Event::Excluded { .. } => "excluded",
            Event::Left { .. } => "left",
        }
    }
}

/// The weightiest reason of a view change, as [`Event::View`]'s `change`
/// and the `kind` label of `ms_view_changes_total`: `merge`, `failure`,
/// `leave`, `join`, or `found` (a first view with no other member).
pub fn change_kind(
    merged: bool,
    joined: &[Member],
    failed: &[Member],
    left: &[Member],
    members: &[Member],
) -> &'static str {
    if merged {
        "merge"
    } else if !failed.is_empty() {
        "failure"
    } else if !left.is_empty() {
        "leave"
    } else if members.len() <= 1 && joined.len() <= 1 {
        "found"
    } else {
        "join"
    }
}

/// A member as the event log shows it: who it is (the view's tree bits
/// are in `msctl view`).
fn member_info(m: &Member) -> MemberInfo {
    admin::member_info(m, &TreeRecord::default())
}

/// A request waiting for an entry.
#[derive(Debug)]
struct Waiter {
    token: RequestToken,
    after: u64,
    deadline: Instant,
}

/// The failure counters whose movement tells a detection's cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Causes {
    monitor: u64,
    hint: u64,
    silent: u64,
    restart: u64,
}

impl Causes {
    fn of(s: &CoreSetStats) -> Causes {
        Causes {
            monitor: s.monitor_failures,
            hint: s.hint_failures,
            silent: s.silent_failures,
            restart: s.restarts_detected,
        }
    }
}

/// A core-set's fail list and failure counters as last observed.
#[derive(Debug, Default)]
struct Observed {
    suspects: BTreeSet<u64>,
    causes: Causes,
}

/// The event log (see the module docs).
#[derive(Debug)]
pub struct EventLog {
    entries: VecDeque<LoggedEvent>,
    next_seq: u64,
    level: u32,
    waiters: Vec<Waiter>,
    /// Level 1's fail list and failure counters at the last observation.
    base: Observed,
    /// The same for each group above level 1, by name.
    upper: BTreeMap<String, Observed>,
    /// Since when this mserver has been in a change (or joining).
    changing_since: Option<Instant>,
    stuck_after: Duration,
}

impl EventLog {
    /// An empty log for a group of `level`; a change (or a join) that
    /// lasts longer than `stuck_after` makes the mserver not ready.
    pub fn new(level: u32, stuck_after: Duration) -> Self {
        EventLog {
            entries: VecDeque::new(),
            next_seq: 1,
            level,
            waiters: Vec::new(),
            base: Observed::default(),
            upper: BTreeMap::new(),
            changing_since: None,
            stuck_after,
        }
    }

    /// How long a change may last before the mserver counts as stuck.
    pub fn stuck_after(&self) -> Duration {
        self.stuck_after
    }

    /// The `seq` of the newest entry (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Requests waiting for an entry.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    fn push(&mut self, now: Instant, event: Event) {
        if self.entries.len() >= LOG_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(LoggedEvent {
            seq: self.next_seq,
            at_us: now.as_micros(),
            event,
        });
        self.next_seq += 1;
    }

    /// Records what the core-set of `group` (at `level` of the hierarchy)
    /// reported.
    pub fn on_coreset_event(&mut self, now: Instant, group: &str, level: u8, e: &CoreSetEvent) {
        let group = group.to_string();
        let level = u32::from(level);
        match e {
            CoreSetEvent::ViewInstalled {
                view,
                members,
                joined,
                failed,
                left,
                change_started,
                merged,
                ..
            } => {
                let took = now.saturating_duration_since(*change_started);
                let event = Event::View {
                    group,
                    level,
                    view: view.number,
                    coordinator: view.coordinator.to_string(),
                    change: change_kind(*merged, joined, failed, left, members).into(),
                    members: members.iter().map(member_info).collect(),
                    joined: joined.iter().map(member_info).collect(),
                    failed: failed.iter().map(member_info).collect(),
                    left: left.iter().map(member_info).collect(),
                    took_ms: (took.as_secs_f64() * 10_000.0).round() / 10.0,
                };
                self.push(now, event);
            }
            CoreSetEvent::Excluded { view } => self.push(
                now,
                Event::Excluded {
                    group,
                    view: view.number,
                },
            ),
            CoreSetEvent::Left => self.push(now, Event::Left { group }),
            _ => {}
        }
    }

    /// Looks at level 1's core-set after an input: members new on its fail
    /// list become [`Event::FailureDetected`] entries; the change state is
    /// tracked for [`EventLog::ready`].
    pub fn observe(&mut self, now: Instant, coreset: &CoreSet) {
        let busy = !coreset.is_member() || coreset.change_state() == ChangeState::Changing;
        match (busy, self.changing_since) {
            (true, None) => self.changing_since = Some(now),
            (false, Some(_)) => self.changing_since = None,
            _ => {}
        }
        let level = self.level;
        let mut seen = std::mem::take(&mut self.base);
        self.detect(now, level, coreset, &mut seen);
        self.base = seen;
    }

    /// Looks at the core-set of a level above 1 after an input (failure
    /// detections only: readiness is level 1's). `groups` are the names of
    /// the levels above 1 the mserver belongs to now; what was kept for
    /// others is dropped.
    pub fn observe_upper<'c>(
        &mut self,
        now: Instant,
        levels: impl Iterator<Item = (u8, &'c CoreSet)>,
    ) {
        let mut kept = BTreeMap::new();
        for (level, coreset) in levels {
            let name = coreset.group_name().to_string();
            let mut seen = self.upper.remove(&name).unwrap_or_default();
            self.detect(now, u32::from(level), coreset, &mut seen);
            kept.insert(name, seen);
        }
        self.upper = kept;
    }

    /// Members new on `coreset`'s fail list since `seen` become
    /// [`Event::FailureDetected`] entries, with the cause its counters
    /// moved by.
    fn detect(&mut self, now: Instant, level: u32, coreset: &CoreSet, seen: &mut Observed) {
        let causes = Causes::of(coreset.stats());
        let fail_list = coreset.fail_list();
        let fresh: Vec<u64> = fail_list
            .iter()
            .copied()
            .filter(|r| !seen.suspects.contains(r))
            .collect();
        if !fresh.is_empty() {
            let snapshot = coreset.snapshot(now);
            let mut moved = [
                (
                    "heartbeat",
                    causes.monitor.saturating_sub(seen.causes.monitor),
                ),
                ("crash", causes.hint.saturating_sub(seen.causes.hint)),
                (
                    "unresponsive",
                    causes.silent.saturating_sub(seen.causes.silent),
                ),
                (
                    "restart",
                    causes.restart.saturating_sub(seen.causes.restart),
                ),
            ];
            for rank in fresh {
                let cause = match moved.iter_mut().find(|(_, n)| *n > 0) {
                    Some((name, n)) => {
                        *n -= 1;
                        *name
                    }
                    None => "other",
                };
                let member = snapshot
                    .members
                    .iter()
                    .find(|m| m.rank == rank)
                    .map(member_info)
                    .unwrap_or(MemberInfo {
                        rank,
                        addr: String::new(),
                        incarnation: String::new(),
                        parent: false,
                        declined: false,
                        child_group: None,
                        child_group_addr: None,
                    });
                self.push(
                    now,
                    Event::FailureDetected {
                        group: snapshot.group.clone(),
                        level,
                        member,
                        cause: cause.into(),
                    },
                );
            }
        }
        seen.suspects = fail_list.into_iter().collect();
        seen.causes = causes;
    }

    /// Whether this mserver is in a view and not stuck in a change, at
    /// `now` (`/readyz`); `Err` says why not.
    pub fn ready(&self, now: Instant, coreset: &CoreSet) -> Result<(), String> {
        if !coreset.is_member() {
            return Err("not in a view yet (joining)".into());
        }
        if let Some(since) = self.changing_since {
            let for_ = now.saturating_duration_since(since);
            if for_ > self.stuck_after {
                return Err(format!(
                    "in a change for {} ms (more than {} ms)",
                    for_.as_millis(),
                    self.stuck_after.as_millis()
                ));
            }
        }
        Ok(())
    }

    /// The entries after `after` (`None`: none, only the position), at
    /// most [`MAX_EVENTS_PER_REPLY`].
    pub fn since(&self, now: Instant, after: Option<u64>) -> EventsReply {
        let last = self.last_seq();
        let Some(after) = after else {
            return EventsReply {
                events: Vec::new(),
                last,
                missed: 0,
                now_us: now.as_micros(),
            };
        };
        let after = after.min(last);
        let oldest = self.entries.front().map_or(self.next_seq, |e| e.seq);
        let missed = oldest.saturating_sub(after + 1);
        let events: Vec<LoggedEvent> = self
            .entries
            .iter()
            .filter(|e| e.seq > after)
            .take(MAX_EVENTS_PER_REPLY)
            .cloned()
            .collect();
        let last = events.last().map_or(after.max(oldest - 1), |e| e.seq);
        EventsReply {
            events,
            last,
            missed,
            now_us: now.as_micros(),
        }
    }

    /// The newest `n` entries, oldest first.
    pub fn recent(&self, n: usize) -> Vec<LoggedEvent> {
        let skip = self.entries.len().saturating_sub(n);
        self.entries.iter().skip(skip).cloned().collect()
    }

    /// A request: `Some(reply)` to send now, or `None` when it waits (it
    /// comes out of [`EventLog::poll_answers`] later).
    pub fn request(
        &mut self,
        now: Instant,
        token: RequestToken,
        req: &EventsRequest,
    ) -> Option<EventsReply> {
        let wait = Duration::from_millis(u64::from(req.wait_ms)).min(MAX_EVENTS_WAIT);
        match req.after {
            Some(after)
                if after >= self.last_seq()
                    && !wait.is_zero()
                    && self.waiters.len() < MAX_EVENT_WAITERS =>
            {
                self.waiters.push(Waiter {
                    token,
                    after,
                    deadline: now.saturating_add(wait),
                });
                None
            }
            after => Some(self.since(now, after)),
        }
    }

    /// The waiting requests to answer now (an entry came, or their wait is
    /// over), with their replies.
    pub fn poll_answers(&mut self, now: Instant) -> Vec<(RequestToken, EventsReply)> {
        if self.waiters.is_empty() {
            return Vec::new();
        }
        let last = self.last_seq();
        let (due, keep): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.after < last || w.deadline <= now);
        self.waiters = keep;
        due.into_iter()
            .map(|w| (w.token, self.since(now, Some(w.after))))
            .collect()
    }

    /// The next deadline of a waiting request.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.waiters.iter().map(|w| w.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Incarnation, NodeId};

    fn member(rank: u64) -> Member {
        Member {
            rank,
            addr: NodeId::v4(127, 0, 0, 10 + rank as u8, 7200),
            incarnation: Incarnation::from_parts(1_000 + rank, [rank as u8; 10]),
        }
    }

    fn view_event(number: u64, failed: Vec<Member>) -> CoreSetEvent {
        CoreSetEvent::ViewInstalled {
            view: crate::id::ViewId {
                number,
                seq: 0,
                coordinator: member(0).incarnation,
            },
            members: vec![member(0), member(1)],
            joined: Vec::new(),
            failed,
            left: Vec::new(),
            change_started: Instant::ZERO,
            me: member(0),
            next_rank: 3,
            merged: false,
        }
    }

    #[test]
    fn entries_are_numbered_bounded_and_missed_ones_counted() {
        let mut log = EventLog::new(1, Duration::from_secs(5));
        let now = Instant::ZERO.saturating_add(Duration::from_millis(3));
        for n in 0..(LOG_CAPACITY as u64 + 10) {
            log.on_coreset_event(now, "lan", 1, &view_event(n + 1, vec![member(2)]));
        }
        assert_eq!(log.last_seq(), LOG_CAPACITY as u64 + 10);
        let r = log.since(now, Some(0));
        assert_eq!(r.missed, 10);
        assert_eq!(r.events.len(), MAX_EVENTS_PER_REPLY);
        assert_eq!(r.events[0].seq, 11);
        assert_eq!(r.last, 10 + MAX_EVENTS_PER_REPLY as u64);
        match &r.events[0].event {
            Event::View {
                change, took_ms, ..
            } => {
                assert_eq!(change, "failure");
                assert_eq!(*took_ms, 3.0);
            }
            other => panic!("{other:?}"),
        }
        // From now on: nothing, at the end.
        let r = log.since(now, None);
        assert!(r.events.is_empty());
        assert_eq!(r.last, log.last_seq());
        // A subscriber from the future is brought back to the end.
        let r = log.since(now, Some(u64::MAX));
        assert!(r.events.is_empty());
        assert_eq!(r.missed, 0);
    }

    #[test]
    fn waiting_requests_are_bounded_and_answered_by_an_entry_or_their_deadline() {
        let mut log = EventLog::new(1, Duration::from_secs(5));
        let t0 = Instant::ZERO;
        let req = EventsRequest {
            after: Some(0),
            wait_ms: 1000,
        };
        for i in 0..(MAX_EVENT_WAITERS as u64) {
            assert!(log.request(t0, RequestToken(i), &req).is_none());
        }
        // The list is full: answered at once, empty.
        let r = log
            .request(t0, RequestToken(999), &req)
            .expect("answered at once");
        assert!(r.events.is_empty());
        assert_eq!(
            log.poll_timeout(),
            Some(t0.saturating_add(Duration::from_secs(1)))
        );
        assert!(log.poll_answers(t0).is_empty());
        log.on_coreset_event(t0, "lan", 1, &view_event(2, Vec::new()));
        let answers = log.poll_answers(t0);
        assert_eq!(answers.len(), MAX_EVENT_WAITERS);
        assert!(answers.iter().all(|(_, r)| r.events.len() == 1));
        // A waiter nobody answers by an entry goes at its deadline.
        assert!(log
            .request(
                t0,
                RequestToken(5),
                &EventsRequest {
                    after: Some(1),
                    wait_ms: 50
                }
            )
            .is_none());
        assert!(log.poll_answers(t0).is_empty());
        let later = t0.saturating_add(Duration::from_millis(50));
        let answers = log.poll_answers(later);
        assert_eq!(answers.len(), 1);
        assert!(answers[0].1.events.is_empty());
        assert_eq!(log.waiting(), 0);
        // A huge wait is capped.
        assert!(log
            .request(
                t0,
                RequestToken(6),
                &EventsRequest {
                    after: Some(1),
                    wait_ms: u32::MAX
                }
            )
            .is_none());
        assert_eq!(log.poll_timeout(), Some(t0.saturating_add(MAX_EVENTS_WAIT)));
    }

    #[test]
    fn entries_travel_by_bincode_and_show_as_flat_json() {
        let mut log = EventLog::new(1, Duration::from_secs(5));
        log.on_coreset_event(Instant::ZERO, "lan", 1, &view_event(2, vec![member(1)]));
        let reply = log.since(Instant::ZERO, Some(0));
        let bytes = crate::wire::encode_body(&reply).expect("encode");
        let back: EventsReply = crate::wire::decode_body(&bytes).expect("decode");
        assert_eq!(back, reply);
        let j = back.events[0].to_json();
        assert_eq!(j["kind"], "view");
        assert_eq!(j["seq"], 1);
        assert_eq!(j["view"], 2);
        assert_eq!(j["change"], "failure");
        assert_eq!(j["failed"][0]["addr"], "127.0.0.11:7200");
        assert_eq!(back.to_json()["events"][0]["kind"], "view");
    }

    #[test]
    fn change_kinds() {
        let (a, b) = (member(0), member(1));
        assert_eq!(change_kind(true, &[], &[], &[], &[]), "merge");
        assert_eq!(change_kind(false, &[], &[b], &[], &[]), "failure");
        assert_eq!(change_kind(false, &[], &[], &[b], &[]), "leave");
        assert_eq!(change_kind(false, &[a], &[], &[], &[a]), "found");
        assert_eq!(change_kind(false, &[b], &[], &[], &[a, b]), "join");
    }
}
