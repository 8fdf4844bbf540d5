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
//! The files, bottom-up (each imports only files listed before it):
//! `config.rs` and [`table`] (the core table); `event.rs` (what the core
//! reports: [`Member`], [`CoreSetEvent`], [`ViewSnapshot`]); [`msg`] (the
//! messages, and applying a change to a table); `stats.rs`; `context.rs`
//! (what every handler works with: timings, outputs, and the handler
//! context made for each input); `holddown.rs` (flap records); `member.rs`
//! (a member's state and the dispatch of what it receives); the handlers
//! of a member, one `impl` each: `change.rs` (proposing, phases I and II),
//! `election.rs` (coordinator failure), `admit.rs` (join requests),
//! `monitor.rs` (ring monitoring), `merge.rs` (subgroup merges),
//! `flap.rs` (one-way and flapping links); `join.rs` (the newcomer's
//! side); this file, [`CoreSet`], which composes them; and
//! [`invariants`], the view invariants of DESIGN.md section 5, one checker
//! per file, for the simulator.

mod admit;
mod change;
mod config;
mod context;
mod election;
mod event;
mod flap;
mod holddown;
pub mod invariants;
mod join;
mod member;
mod merge;
mod monitor;
pub mod msg;
mod stats;
pub mod table;
pub mod tree;

#[cfg(test)]
mod tests;

pub use config::{ConfigError, CoreSetConfig, MAX_RETRIES, MAX_TIMER};
pub use event::{ChangeRole, ChangeState, CoreSetEvent, HeldDown, Member, ViewSnapshot};
pub use msg::{
    CoStatus, Commit, Envelope, JoinRefusal, Joiner, Layer, Msg, MsgKind, PriorityKey, Proposal,
    Removal, RemovalReason, Subject, MAX_APP_BATCH, MAX_APP_BATCH_BYTES, MAX_APP_PAYLOAD,
    MAX_JOIN_BATCH, NO_VIEW,
};
pub use stats::{CoreSetStats, DropCounts, MsgCounts};
pub use table::{Row, Table, FLAG_ACTIVE, MAX_MEMBERS};
pub use tree::{
    valid_group_name, ChildClaim, GroupRef, GroupRefError, MemberBits, TreeOp, TreeOpError,
    TreeRecord, TreeSettings, MAX_GROUP_NAME, MAX_LEVEL, MAX_PARENTS, MAX_UPPER_MEMBERS,
};

use crate::id::{Incarnation, NodeId, ProtocolId, ViewId};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::Instant;
use crate::wire::decode_body;
use context::{Ctx, HandlerCtx, Io, LeaveRequest, Timings, Transition};
use join::Joining;
use member::Joined;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
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

/// Most tree changes queued at one member.
pub const MAX_TREE_QUEUE: usize = 8;

/// Why [`CoreSet::submit_tree`] refused a tree change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TreeSubmitError {
    /// This mserver is not a member of a view (joining, leaving or left).
    #[error("not a member of a view (joining, leaving or left)")]
    NotMember,
    /// [`MAX_TREE_QUEUE`] tree changes are waiting already.
    #[error("{MAX_TREE_QUEUE} tree changes are queued already")]
    QueueFull,
    /// The change does not fit the group as it is now.
    #[error("{0}")]
    Invalid(TreeOpError),
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
        let upper = config.tree.is_upper();
        let cx = Ctx {
            me: config.me,
            incarnation: config.incarnation,
            group_addr: config.group_addr,
            t,
            tree: config.tree.clone(),
        };
        let mut core = CoreSet {
            cx,
            group: config.group.clone(),
            incarnation_taken: now,
            rng: ChaCha8Rng::seed_from_u64(seed),
            io: Io {
                group: config.group,
                life: upper.then_some(config.incarnation),
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
                    let mut h = HandlerCtx::new(now, &self.cx, &mut self.io, self.leave);
                    j.maybe_propose(&mut h);
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
        self.propose_queued(now);
        Ok(())
    }

    /// Submits a tree change for the group to commit: this member proposes
    /// it once no membership change is pending (priority rule 2: after
    /// membership changes, before application changes), and every member
    /// reports it in [`CoreSetEvent::TreeCommitted`] after the view that
    /// applied it. It is checked now against the group's record, and again
    /// at the base it finally applies to: if a race made it invalid by
    /// then, [`CoreSetEvent::TreeRefused`] says so and nothing of it is
    /// committed. It is lost if this member is excluded, leaves or fails
    /// before it commits.
    pub fn submit_tree(&mut self, now: Instant, op: TreeOp) -> Result<(), TreeSubmitError> {
        if self.leave.is_some() {
            return Err(TreeSubmitError::NotMember);
        }
        let State::Joined(j) = &mut self.state else {
            return Err(TreeSubmitError::NotMember);
        };
        if j.tree_queue.len() >= MAX_TREE_QUEUE {
            return Err(TreeSubmitError::QueueFull);
        }
        let ranks: Vec<u64> = j.table.rows.iter().map(|r| r.rank).collect();
        j.table
            .tree
            .check(&op, j.my_rank, &ranks)
            .map_err(TreeSubmitError::Invalid)?;
        j.tree_queue.push_back((op, now));
        self.propose_queued(now);
        Ok(())
    }

    /// After a submission: proposes what is queued if this member can now,
    /// then carries out what that asked for.
    fn propose_queued(&mut self, now: Instant) {
        if let State::Joined(j) = &mut self.state {
            j.maybe_propose(&mut HandlerCtx::new(
                now,
                &self.cx,
                &mut self.io,
                self.leave,
            ));
        }
        self.apply_transition(now);
        self.rearm();
    }

    /// This member's rank in its view, if a member.
    pub fn my_rank(&self) -> Option<u64> {
        match &self.state {
            State::Joined(j) => Some(j.my_rank),
            _ => None,
        }
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
                tree: j.table.tree.clone(),
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
                tree: TreeRecord {
                    level: self.cx.tree.level(),
                    ..TreeRecord::default()
                },
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

    /// How long a voluntary leave may take before it completes anyway
    /// ([`CoreSetConfig::leave_timeout`], as derived for this core-set).
    pub fn leave_timeout(&self) -> Duration {
        self.cx.t.leave_timeout
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
                if self.io.life.is_some() {
                    self.io.life = Some(inc);
                }
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
        let mut h = HandlerCtx::new(now, &self.cx, &mut self.io, self.leave);
        if let Some(mut joined) = jn.on_packet(&mut h, source, env) {
            joined.maybe_propose(&mut h);
            self.state = State::Joined(joined);
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
        let mut h = HandlerCtx::new(now, &self.cx, &mut self.io, self.leave);
        if let Some(joined) = jn.on_timeout(&mut h, late, jitter) {
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
        // Above level 1 the sender's life in this group travels in the
        // envelope (the header's is its level-1 life).
        let source_incarnation = match (self.io.life.is_some(), env.life) {
            (true, Some(life)) => life,
            (true, None) => {
                self.io.stats.drops.malformed += 1;
                return;
            }
            (false, _) => packet.source_incarnation,
        };
        match &mut self.state {
            State::Left => self.io.stats.drops.after_leave += 1,
            State::Joining(_) => self.joining_packet(now, packet.source, env),
            State::Joined(j) => {
                let mut h = HandlerCtx::new(now, &self.cx, &mut self.io, self.leave);
                j.on_packet(&mut h, packet.source, source_incarnation, env);
            }
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
                    j.on_timeout(
                        &mut HandlerCtx::new(now, &self.cx, &mut self.io, self.leave),
                        late,
                    );
                }
            }
        }
        self.apply_transition(now);
        self.rearm();
    }

    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        match &mut self.state {
            State::Joined(j) => {
                let mut h = HandlerCtx::new(now, &self.cx, &mut self.io, self.leave);
                j.on_unreachable(&mut h, node);
            }
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
