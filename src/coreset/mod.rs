//! The core-set protocol: the mserver group that monitors itself in a ring
//! and commits every join, leave and failure so that all members see the
//! same numbered views in the same order (seed 003, chapters III and IV.C;
//! DESIGN.md section 5).
//!
//! [`CoreSet`] is one mserver's sans-IO state machine ([`Core`]): the
//! daemon (or the simulator) feeds it datagrams, timeouts and unreachable
//! reports, and drains its transmits and [`CoreSetEvent`]s. In short
//! (`docs/protocol.md` has the timelines, the message list, the timers and
//! the arithmetic):
//!
//! - **State** (seed 003 IV.C.2): the core [`Table`] (address, incarnation,
//!   rank, cw, ccw, flag), the view ([`ViewId`]: number and the
//!   incarnation of the member that proposed the change), the fail list.
//! - **Join** (IV.C.1.a, figures 18, 23, 26, 27): `M_JOIN_REQ` to the group
//!   address, retried; the lowest-rank member coordinates `AGREE_J` ->
//!   `AGREE_ACK`s -> `COMMIT` with the whole table, which the newcomer
//!   installs. Nobody answers -> it founds the group alone; the group is
//!   heard but busy -> it asks again with a longer wait; other newcomers
//!   with lower addresses are heard -> it keeps asking, so that newcomers
//!   started at once end in one group (the lowest address founds it).
//! - **Ring monitoring** (IV.C.4.c), only while no change is in progress:
//!   every member sends its counter-clockwise neighbour (its monitor) an
//!   unprompted `REPLY` each query interval; a monitor whose heartbeat is
//!   overdue sends `QUERY`s and, after the retries, puts the neighbour on
//!   the fail list. A query from a non-member gets `NOT_MEMBER`. Unreachable
//!   reports are strong hints, confirmed by one immediate `QUERY`; a timer
//!   that fires late restarts its round instead of accusing anyone.
//! - **Failure and leave** (III.B, figure 25): the detector coordinates an
//!   `AGREE_L` naming its whole fail list (batched), then `COMMIT`;
//!   members that do not answer phase I go on the fail list, processed
//!   right after. A leave is the same change asked for by the leaver.
//! - **Coordinator failure** (III.C, figure 28): a member whose `COMMIT`
//!   does not come multicasts `CO_FAIL`; members exchange their status;
//!   one that committed re-sends the `COMMIT` (compressed three-phase),
//!   else the lowest-rank member that finished phase I reruns the same
//!   change, then the old coordinator's failure is processed.
//! - **Virtually simultaneous changes** (III.A.2): a member that ACKed a
//!   change refuses every other (`BUSY`) until it commits or is withdrawn;
//!   coordinators compare [`PriorityKey`]s and the loser withdraws
//!   (`ABORT`) and requeues.
//! - **Excluded members** rejoin with a new incarnation; stale messages
//!   (old incarnation, old view) change nothing anywhere.
//!
//! [`invariants`] holds the view invariants of DESIGN.md section 5, one
//! checker per file, for the simulator.

mod change;
mod config;
mod flap;
pub mod invariants;
mod join;
mod member;
mod merge;
mod monitor;
pub mod msg;
mod stats;
pub mod table;

#[cfg(test)]
mod tests;

pub use config::{
    valid_group_name, ConfigError, CoreSetConfig, MAX_GROUP_NAME, MAX_RETRIES, MAX_TIMER,
};
pub use flap::HeldDown;
pub use msg::{
    CoStatus, Commit, Envelope, Joiner, Layer, Msg, MsgKind, PriorityKey, Proposal, Removal,
    RemovalReason, Subject, MAX_APP_BATCH, MAX_APP_BATCH_BYTES, MAX_APP_PAYLOAD, MAX_JOIN_BATCH,
    MAX_MEMBERS, NO_VIEW,
};
pub use stats::{CoreSetStats, DropCounts, MsgCounts};
pub use table::{Row, Table, FLAG_ACTIVE};

use crate::id::{Incarnation, NodeId, ProtocolId, ViewId};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire::{decode_body, encode_body};
use join::Joining;
use member::Joined;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Most application payloads queued at one member.
pub const MAX_APP_QUEUE: usize = 1024;

/// Why [`CoreSet::submit_app`] refused a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppSubmitError {
    /// This mserver is not a member of a view (joining, leaving or left).
    #[error("not a member of a view (joining, leaving or left)")]
    NotMember,
    /// An empty payload.
    #[error("empty application change")]
    Empty,
    /// Longer than [`MAX_APP_PAYLOAD`].
    #[error("application change of {0} bytes is longer than {MAX_APP_PAYLOAD}")]
    TooLarge(usize),
    /// [`MAX_APP_QUEUE`] payloads are waiting already.
    #[error("{MAX_APP_QUEUE} application changes are queued already")]
    QueueFull,
}

/// Most (destination, kind) pairs remembered for answer rate limits.
const MAX_RATE_LIMITS: usize = 256;

/// A member as the layer above sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Its rank (0 for the founder; never reused). While this mserver is
    /// not a member yet, its own `me.rank` is `u64::MAX`.
    pub rank: u64,
    /// Its address.
    pub addr: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
}

impl From<&Row> for Member {
    fn from(r: &Row) -> Self {
        Member {
            rank: r.rank,
            addr: r.addr,
            incarnation: r.incarnation,
        }
    }
}

/// Whether a change is in progress at this member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeState {
    /// No change in progress: ring monitoring runs.
    Idle,
    /// This member holds a change (ACKed or coordinates it), or is joining.
    Changing,
}

/// What `msctl view --json` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewSnapshot {
    /// The group name.
    pub group: String,
    /// The latest commit: the view number and the application commits
    /// since ([`NO_VIEW`] while joining).
    pub view: ViewId,
    /// The membership change that installed the view (its number, commit
    /// 0, and the member that coordinated it; [`NO_VIEW`] while joining).
    pub installed: ViewId,
    /// Idle or changing.
    pub state: ChangeState,
    /// This mserver.
    pub me: Member,
    /// The members, sorted by rank (empty while joining).
    pub members: Vec<Member>,
    /// Whether this mserver is a member of a view.
    pub joined: bool,
    /// Addresses whose rejoin the group holds down (they were failed
    /// again and again after rejoining: a one-way or flapping link).
    pub held_down: Vec<HeldDown>,
}

/// What the core reports to the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreSetEvent {
    /// A new view is installed here.
    ViewInstalled {
        /// Its id.
        view: ViewId,
        /// Its members, sorted by rank.
        members: Vec<Member>,
        /// Members admitted by this change (a newcomer also lists itself).
        joined: Vec<Member>,
        /// Members removed as failed.
        failed: Vec<Member>,
        /// Members removed because they left.
        left: Vec<Member>,
        /// When this member first learned of the change: the coordinator
        /// when it detected the failure, got the first join request or was
        /// asked to leave; a member when the AGREE came; a newcomer when it
        /// started joining.
        change_started: Instant,
        /// This member in the new view.
        me: Member,
        /// The table's rank high-water mark (part of the table, so that
        /// checkers can compare whole tables).
        next_rank: u64,
        /// The view came from a merge of subgroups: its number may jump
        /// (by more than one) and every member's rank is new.
        merged: bool,
    },
    /// This member took a new incarnation (on a rejoin after exclusion):
    /// the daemon must stamp its packets with it from now on (the runtime's
    /// `SetIncarnation`). The core sends nothing with the new incarnation
    /// until a later input.
    NewIncarnation(Incarnation),
    /// This member learned that the group failed it (`NOT_MEMBER`, a view
    /// without it, or a member already past its view); a rejoin with a new
    /// incarnation follows at once.
    Excluded {
        /// The last view it had installed.
        view: ViewId,
    },
    /// The voluntary leave is done (or timed out); the daemon exits.
    Left,
    /// Application changes committed by the core-set (in the view `view`,
    /// right after its `ViewInstalled`): every member of the view gets the
    /// same payloads in the same order, views in order.
    AppCommitted {
        /// The view the change installed.
        view: ViewId,
        /// The member that submitted them (in the base view).
        originator: Option<Member>,
        /// The payloads, in submission order.
        payloads: Vec<Vec<u8>>,
    },
    /// The group holds this (rejoining) member down: it was failed again
    /// and again after rejoining (a one-way or flapping link). It keeps
    /// asking, and is admitted when the hold-down ends.
    HeldDown {
        /// How long the group said the hold-down still lasts.
        remaining: Duration,
    },
    /// The member this one monitors (its clockwise neighbour) changed: the
    /// daemon keeps an OS-level watch on it (e.g. a TCP connection) and
    /// reports its death with [`Core::handle_unreachable`].
    Watch(Option<NodeId>),
}

/// This member's part in the change in progress, for tests and tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeRole {
    /// It coordinates the change.
    Coordinator {
        /// The change's id (the view it installs).
        proposal: ViewId,
        /// It took over from a failed coordinator.
        takeover: bool,
        /// Phase I is over and it waits `commit_delay` before the COMMIT.
        delaying: bool,
        /// ACKs received.
        acked: usize,
        /// ACKs expected.
        expected: usize,
        /// An AGREE_J (a join) rather than an AGREE_L.
        join: bool,
    },
    /// It ACKed the change and waits for the COMMIT.
    Participant {
        /// The change's id.
        proposal: ViewId,
        /// The coordinator it waits for.
        coordinator: NodeId,
        /// A coordinator-failure election is running.
        electing: bool,
    },
}

/// The timers, resolved from the config (see [`CoreSetConfig`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timings {
    pub(crate) query_interval: Duration,
    pub(crate) reply_timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) change_retries: u32,
    pub(crate) commit_timeout: Duration,
    pub(crate) commit_delay: Option<Duration>,
    pub(crate) join_timeout: Duration,
    pub(crate) join_timeout_max: Duration,
    pub(crate) announce_interval: Duration,
    pub(crate) leave_timeout: Duration,
    /// A heartbeat is overdue this long after the last one.
    pub(crate) overdue_after: Duration,
    /// A member that keeps refusing an AGREE this long is taken as failed.
    pub(crate) refuse_limit: Duration,
    /// A member waiting for its COMMIT re-sends its ACK this often.
    pub(crate) nudge_interval: Duration,
    /// A queued join request is forgotten this long after it was last heard.
    pub(crate) join_ttl: Duration,
    /// A rejoin's first request waits this long (so the daemon switches
    /// its socket to the new incarnation first).
    pub(crate) rejoin_delay: Duration,
    /// After withdrawing its change, a coordinator waits this long before
    /// proposing again.
    pub(crate) abort_backoff: Duration,
    /// See [`CoreSetConfig::flap_window`].
    pub(crate) flap_window: Duration,
    /// See [`CoreSetConfig::hold_down`].
    pub(crate) hold_down: Duration,
    /// See [`CoreSetConfig::hold_down_max`].
    pub(crate) hold_down_max: Duration,
    /// An exclusion learned this soon after a late timer was caused by a
    /// pause (SIGSTOP, a starved process): the rejoin is not a flap.
    pub(crate) pause_memory: Duration,
    /// An exclusion this soon after this member saw members of its own
    /// view fail was a cut both ways: the rejoin is not a flap.
    pub(crate) cut_memory: Duration,
}

impl Timings {
    fn from_config(c: &CoreSetConfig) -> Self {
        Timings {
            query_interval: c.query_interval,
            reply_timeout: c.reply_timeout,
            retries: c.retries,
            change_retries: c.change_retries(),
            commit_timeout: c.commit_timeout(),
            commit_delay: c.commit_delay.filter(|d| !d.is_zero()),
            join_timeout: c.join_timeout(),
            join_timeout_max: c.join_timeout_max(),
            announce_interval: c.announce_interval(),
            leave_timeout: c.leave_timeout(),
            overdue_after: c.query_interval + c.reply_timeout / 2,
            refuse_limit: c.commit_timeout().saturating_mul(2),
            nudge_interval: c.reply_timeout.saturating_mul(2),
            join_ttl: c.join_timeout_max().saturating_mul(3),
            rejoin_delay: (c.reply_timeout / 100).max(Duration::from_micros(1)),
            abort_backoff: c.reply_timeout.saturating_mul(2),
            flap_window: c.flap_window,
            hold_down: c.hold_down,
            hold_down_max: c.hold_down_max.max(c.hold_down),
            pause_memory: (c.query_interval + c.reply_timeout).saturating_mul(4),
            cut_memory: (c.query_interval + c.reply_timeout).saturating_mul(8),
        }
    }
}

/// Who this node is (changes only on a rejoin).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    pub(crate) me: NodeId,
    pub(crate) incarnation: Incarnation,
    pub(crate) group_addr: NodeId,
    pub(crate) t: Timings,
}

/// A change of the whole state that a handler asks for; applied by
/// [`CoreSet`] after the handler returns. Once one is set, nothing more is
/// sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    /// We learned we are not a member: rejoin with a new incarnation.
    Exclude,
    /// The voluntary leave is done.
    Leave,
}

/// Outputs and counters, kept apart from the protocol state so that
/// handlers can borrow both.
pub(crate) struct Io {
    group: String,
    group_addr: NodeId,
    reply_timeout: Duration,
    transmits: VecDeque<Transmit>,
    events: VecDeque<CoreSetEvent>,
    pub(crate) stats: CoreSetStats,
    limits: BTreeMap<(NodeId, MsgKind), Instant>,
    pub(crate) transition: Option<Transition>,
}

impl Io {
    /// Sends `msg` with envelope view `view` to `to` (a member, or the
    /// group address).
    pub(crate) fn send(&mut self, to: NodeId, view: ViewId, msg: Msg) {
        if self.transition.is_some() {
            return;
        }
        let kind = msg.kind();
        let env = Envelope {
            group: self.group.clone(),
            view,
            msg,
        };
        // A body over the limit would be a table above MAX_MEMBERS, which
        // validation prevents; if it ever happens, nothing is sent.
        if let Ok(body) = encode_body(&env) {
            self.stats.sent.count(kind);
            self.transmits
                .push_back(Transmit::new(to, ProtocolId::CoreSet, body));
        }
    }

    /// Sends `msg` to the group address.
    pub(crate) fn multicast(&mut self, view: ViewId, msg: Msg) {
        self.send(self.group_addr, view, msg);
    }

    /// Reports an event.
    pub(crate) fn event(&mut self, e: CoreSetEvent) {
        self.events.push_back(e);
    }

    /// Whether an answer of `kind` to `to` may go now (at most one per
    /// reply timeout per destination and kind); records it if so.
    pub(crate) fn allow(&mut self, now: Instant, to: NodeId, kind: MsgKind) -> bool {
        let key = (to, kind);
        if let Some(t) = self.limits.get(&key) {
            if now < *t + self.reply_timeout {
                return false;
            }
        }
        if self.limits.len() >= MAX_RATE_LIMITS && !self.limits.contains_key(&key) {
            let oldest = self
                .limits
                .iter()
                .min_by_key(|(k, t)| (**t, **k))
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.limits.remove(&k);
            }
        }
        self.limits.insert(key, now);
        true
    }

    /// Asks for a transition (the first one asked wins).
    pub(crate) fn transition(&mut self, t: Transition) {
        if self.transition.is_none() {
            self.transition = Some(t);
        }
    }
}

/// A voluntary leave in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeaveRequest {
    pub(crate) since: Instant,
    pub(crate) deadline: Instant,
}

enum State {
    Joining(Joining),
    Joined(Box<Joined>),
    Left,
}

/// One mserver's core-set protocol state machine. See the [module
/// docs](self).
pub struct CoreSet {
    cx: Ctx,
    group: String,
    incarnation_taken: Instant,
    rng: ChaCha8Rng,
    io: Io,
    state: State,
    leave: Option<LeaveRequest>,
    watching: Option<NodeId>,
    /// The deadline returned by `poll_timeout` (kept to tell late timers).
    armed: Option<Instant>,
    /// When this node last ran late (a timer or a datagram handled more
    /// than a reply timeout after the armed deadline): it was paused or
    /// starved.
    late_seen: Option<Instant>,
}

impl CoreSet {
    /// A new mserver for `config`, which starts joining at once (the first
    /// `M_JOIN_REQ` is in the transmit queue). `seed` seeds its RNG (retry
    /// jitter, new incarnations).
    pub fn new(config: CoreSetConfig, now: Instant, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        let t = Timings::from_config(&config);
        let cx = Ctx {
            me: config.me,
            incarnation: config.incarnation,
            group_addr: config.group_addr,
            t,
        };
        let mut core = CoreSet {
            cx,
            group: config.group.clone(),
            incarnation_taken: now,
            rng: ChaCha8Rng::seed_from_u64(seed),
            io: Io {
                group: config.group,
                group_addr: config.group_addr,
                reply_timeout: t.reply_timeout,
                transmits: VecDeque::new(),
                events: VecDeque::new(),
                stats: CoreSetStats::default(),
                limits: BTreeMap::new(),
                transition: None,
            },
            state: State::Joining(Joining::new(now, now)),
            leave: None,
            watching: None,
            armed: None,
            late_seen: None,
        };
        core.joining_timeout(now, false);
        core.rearm();
        Ok(core)
    }

    /// Leaves the group voluntarily (SIGTERM, `msctl leave`): this member
    /// coordinates its own removal (an `AGREE_L` naming itself, with its
    /// fail list), then reports [`CoreSetEvent::Left`]. Alone or not yet a
    /// member, it leaves at once; a leave that cannot commit within
    /// `leave_timeout` completes anyway.
    pub fn leave(&mut self, now: Instant) {
        match &mut self.state {
            State::Left => {}
            State::Joining(_) => self.io.transition(Transition::Leave),
            State::Joined(j) => {
                if self.leave.is_none() {
                    let req = LeaveRequest {
                        since: now,
                        deadline: now + self.cx.t.leave_timeout,
                    };
                    self.leave = Some(req);
                }
                if j.table.len() <= 1 {
                    self.io.transition(Transition::Leave);
                } else {
                    j.maybe_propose(now, &self.cx, &mut self.io, self.leave);
                }
            }
        }
        self.apply_transition(now);
        self.rearm();
    }

    /// Submits an application change (an opaque payload of the
    /// application-group layer) for the core-set to commit: this member
    /// proposes it (with others queued here, in order) once no physical
    /// change is pending (priority rule 2), and every member reports it in
    /// `CoreSetEvent::AppCommitted`. A payload is lost if this member is
    /// excluded, leaves or fails before its change commits: the layer
    /// above resubmits what it does not see committed.
    pub fn submit_app(&mut self, now: Instant, payload: Vec<u8>) -> Result<(), AppSubmitError> {
        if payload.is_empty() {
            return Err(AppSubmitError::Empty);
        }
        if payload.len() > MAX_APP_PAYLOAD {
            return Err(AppSubmitError::TooLarge(payload.len()));
        }
        if self.leave.is_some() {
            return Err(AppSubmitError::NotMember);
        }
        let State::Joined(j) = &mut self.state else {
            return Err(AppSubmitError::NotMember);
        };
        if j.app_queue.len() >= MAX_APP_QUEUE {
            return Err(AppSubmitError::QueueFull);
        }
        j.app_queue.push_back((payload, now));
        j.maybe_propose(now, &self.cx, &mut self.io, self.leave);
        self.apply_transition(now);
        self.rearm();
        Ok(())
    }

    /// The view as `msctl view --json` shows it, at time `now`.
    pub fn snapshot(&self, now: Instant) -> ViewSnapshot {
        let not_member = Member {
            rank: u64::MAX,
            addr: self.cx.me,
            incarnation: self.cx.incarnation,
        };
        match &self.state {
            State::Joined(j) => ViewSnapshot {
                group: self.group.clone(),
                view: j.view,
                installed: j.installed,
                state: if j.busy() {
                    ChangeState::Changing
                } else {
                    ChangeState::Idle
                },
                me: j
                    .table
                    .by_rank(j.my_rank)
                    .map(Member::from)
                    .unwrap_or(not_member),
                members: j.table.rows.iter().map(Member::from).collect(),
                joined: true,
                held_down: j.flaps.held_down(now, &self.cx),
            },
            State::Joining(_) | State::Left => ViewSnapshot {
                group: self.group.clone(),
                view: NO_VIEW,
                installed: NO_VIEW,
                state: if matches!(self.state, State::Left) {
                    ChangeState::Idle
                } else {
                    ChangeState::Changing
                },
                me: not_member,
                members: Vec::new(),
                joined: false,
                held_down: Vec::new(),
            },
        }
    }

    /// The current incarnation (it changes on a rejoin).
    pub fn incarnation(&self) -> Incarnation {
        self.cx.incarnation
    }

    /// This mserver's address.
    pub fn me(&self) -> NodeId {
        self.cx.me
    }

    /// The monitoring timings: query interval, reply timeout, retries
    /// (the layers above poll their own clients with the same).
    pub fn monitor_timings(&self) -> (Duration, Duration, u32) {
        (
            self.cx.t.query_interval,
            self.cx.t.reply_timeout,
            self.cx.t.retries,
        )
    }

    /// The counters.
    pub fn stats(&self) -> &CoreSetStats {
        &self.io.stats
    }

    /// The installed core table, if a member.
    pub fn table(&self) -> Option<&Table> {
        match &self.state {
            State::Joined(j) => Some(&j.table),
            _ => None,
        }
    }

    /// The installed view, if a member.
    pub fn view(&self) -> Option<ViewId> {
        match &self.state {
            State::Joined(j) => Some(j.view),
            _ => None,
        }
    }

    /// Whether this mserver is a member of a view.
    pub fn is_member(&self) -> bool {
        matches!(self.state, State::Joined(_))
    }

    /// Idle or changing, as [`CoreSet::snapshot`] says it, without building
    /// the snapshot (a joining or departed mserver is idle here).
    pub fn change_state(&self) -> ChangeState {
        match &self.state {
            State::Joined(j) if j.busy() => ChangeState::Changing,
            _ => ChangeState::Idle,
        }
    }

    /// The group's name (it changes when an abandoned subgroup renames
    /// itself).
    pub fn group_name(&self) -> &str {
        &self.group
    }

    /// Whether the voluntary leave completed.
    pub fn has_left(&self) -> bool {
        matches!(self.state, State::Left)
    }

    /// This member's part in the change in progress.
    pub fn change_role(&self) -> Option<ChangeRole> {
        match &self.state {
            State::Joined(j) => j.role(),
            _ => None,
        }
    }

    /// The ranks on the fail list (suspected, not yet removed).
    pub fn fail_list(&self) -> Vec<u64> {
        match &self.state {
            State::Joined(j) => j.fail_list.keys().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// The member this one monitors (its clockwise neighbour), if any.
    pub fn watching(&self) -> Option<NodeId> {
        self.watching
    }

    // ----- internals ----------------------------------------------------

    fn compute_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Left => None,
            State::Joining(jn) => Some(jn.next_send),
            State::Joined(j) => {
                let leave = self.leave.map(|l| l.deadline);
                crate::time::earliest(j.next_deadline(&self.cx), leave)
            }
        }
    }

    fn rearm(&mut self) {
        self.armed = self.compute_timeout();
    }

    /// Applies a transition a handler asked for: exclusion (rejoin with a
    /// new incarnation) or the end of a leave.
    fn apply_transition(&mut self, now: Instant) {
        let Some(t) = self.io.transition.take() else {
            self.sync_watch();
            return;
        };
        let (view, cut_off) = match &self.state {
            State::Joined(j) => (Some(j.view), j.was_cut_off(now, &self.cx)),
            _ => (None, false),
        };
        match t {
            Transition::Leave => self.finish_leave(),
            Transition::Exclude => {
                if let Some(view) = view {
                    self.io.event(CoreSetEvent::Excluded { view });
                }
                self.io.stats.excluded += 1;
                if self.leave.is_some() {
                    self.finish_leave();
                    return;
                }
                self.set_watch(None);
                let inc = self.next_incarnation(now);
                self.cx.incarnation = inc;
                self.incarnation_taken = now;
                self.io.event(CoreSetEvent::NewIncarnation(inc));
                // Excluded while running normally (not just resumed from
                // a pause): the group counts it if it happens again.
                let paused = self
                    .late_seen
                    .is_some_and(|t| now.saturating_duration_since(t) <= self.cx.t.pause_memory);
                // We had stopped hearing the group too (a symmetric
                // partition, healed or flapping), not the unheard side of
                // a one-way link: no flap either.
                let mut joining = Joining::new(now, now + self.cx.t.rejoin_delay);
                joining.rejoin = !paused && !cut_off;
                self.state = State::Joining(joining);
            }
        }
    }

    fn finish_leave(&mut self) {
        self.set_watch(None);
        self.leave = None;
        self.state = State::Left;
        self.io.event(CoreSetEvent::Left);
    }

    /// Emits `Watch` if the monitored neighbour changed.
    fn sync_watch(&mut self) {
        let target = match &self.state {
            State::Joined(j) => j.watch_target(),
            _ => None,
        };
        self.set_watch(target);
    }

    fn set_watch(&mut self, target: Option<NodeId>) {
        if self.watching != target {
            self.watching = target;
            self.io.event(CoreSetEvent::Watch(target));
        }
    }

    /// A new, later incarnation: the UUID v7 timestamp of the current one
    /// plus the time since it was taken (at least 1 ms later), and random
    /// bits from our RNG.
    fn next_incarnation(&mut self, now: Instant) -> Incarnation {
        let b = self.cx.incarnation.to_bytes();
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&b[..6]);
        let old = u64::from_be_bytes(ms);
        let elapsed = now.saturating_duration_since(self.incarnation_taken);
        let elapsed = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let millis = old.saturating_add(elapsed.max(1)).min((1 << 48) - 1);
        let mut random = [0u8; 10];
        self.rng.fill(&mut random[..]);
        Incarnation::from_parts(millis, random)
    }

    /// Handles a datagram while joining.
    fn joining_packet(&mut self, now: Instant, source: NodeId, env: Envelope) {
        let State::Joining(jn) = &mut self.state else {
            return;
        };
        if let Some(joined) = jn.on_packet(now, &self.cx, &mut self.io, source, env) {
            self.state = State::Joined(joined);
            if let State::Joined(j) = &mut self.state {
                j.maybe_propose(now, &self.cx, &mut self.io, self.leave);
            }
        }
    }

    fn joining_timeout(&mut self, now: Instant, late: bool) {
        let jitter = {
            let State::Joining(jn) = &self.state else {
                return;
            };
            let quarter = u64::try_from((jn.wait / 4).as_micros()).unwrap_or(u64::MAX);
            Duration::from_micros(self.rng.random_range(0..=quarter))
        };
        let State::Joining(jn) = &mut self.state else {
            return;
        };
        if let Some(joined) = jn.on_timeout(now, late, jitter, &self.cx, &mut self.io) {
            self.state = State::Joined(joined);
        }
    }
}

impl Core for CoreSet {
    type Event = CoreSetEvent;

    fn describe_packet(body: &[u8]) -> Option<String> {
        let env: Envelope = decode_body(body).ok()?;
        Some(format!("{:?} in view {}", env.msg, env.view.number))
    }

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        // A datagram handled long after our timer was due: we were paused
        // (the datagrams queued meanwhile come before the timer).
        if self
            .armed
            .is_some_and(|a| now.saturating_duration_since(a) > self.cx.t.reply_timeout)
        {
            self.late_seen = Some(now);
        }
        if packet.protocol != ProtocolId::CoreSet {
            self.io.stats.drops.unexpected += 1;
            return;
        }
        let env: Envelope = match decode_body(packet.body) {
            Ok(env) => env,
            Err(_) => {
                self.io.stats.drops.malformed += 1;
                return;
            }
        };
        self.io.stats.received.count(env.msg.kind());
        let to_group = packet.destination.addr().ip().is_multicast();
        if env.group != self.group || (to_group && packet.destination != self.cx.group_addr) {
            self.io.stats.drops.wrong_group += 1;
            return;
        }
        if packet.source == self.cx.me {
            // Our own multicast, looped back.
            self.io.stats.drops.unexpected += 1;
            return;
        }
        match &mut self.state {
            State::Left => self.io.stats.drops.after_leave += 1,
            State::Joining(_) => self.joining_packet(now, packet.source, env),
            State::Joined(j) => j.on_packet(
                now,
                &self.cx,
                &mut self.io,
                self.leave,
                packet.source,
                packet.source_incarnation,
                env,
            ),
        }
        self.apply_transition(now);
        self.rearm();
    }

    fn handle_timeout(&mut self, now: Instant) {
        let Some(armed) = self.armed else {
            return;
        };
        if now < armed {
            return;
        }
        let late = now.saturating_duration_since(armed) > self.cx.t.reply_timeout;
        if late {
            self.io.stats.late_timers += 1;
            self.late_seen = Some(now);
        }
        match &mut self.state {
            State::Left => {}
            State::Joining(_) => self.joining_timeout(now, late),
            State::Joined(j) => {
                if self.leave.is_some_and(|l| now >= l.deadline) {
                    self.io.transition(Transition::Leave);
                } else {
                    j.on_timeout(now, late, &self.cx, &mut self.io, self.leave);
                }
            }
        }
        self.apply_transition(now);
        self.rearm();
    }

    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        match &mut self.state {
            State::Joined(j) => j.on_unreachable(now, &self.cx, &mut self.io, self.leave, node),
            _ => self.io.stats.drops.unreachable_non_member += 1,
        }
        self.apply_transition(now);
        self.rearm();
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.io.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<CoreSetEvent> {
        self.io.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.armed
    }
}
