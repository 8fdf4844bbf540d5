//! The chain of mserver groups one mserver belongs to: one core-set per
//! level, from level 1 up to its top, on one socket (seed 003, sections
//! II.A.3-5 and III.A.1; `docs/hierarchy.md`, "One mserver, several
//! levels").
//!
//! In every group below its top an mserver is a *parent*: it is flagged in
//! that group's view and is a member of the group one level up, the parent
//! group ("dual membership in the child-set as well as the original peer
//! group"). Because the parent is in its child set's ring, the child set
//! monitors it like any member: vertical monitoring with no protocol of
//! its own.
//!
//! [`Chain`] is a sans-IO core ([`Core`]) composed of one [`CoreSet`] per
//! level. It demultiplexes datagrams by the group name in the envelope (and
//! the group address for multicasts), hands unreachable reports to every
//! level that holds the node, arms the earliest timer of its levels and its
//! task, and takes every coupling decision itself from the views its levels
//! install; the daemon (or the simulator) only carries out what it reports:
//! [`ChainEvent::JoinGroup`] / [`ChainEvent::LeaveGroup`] for the
//! multicast memberships, [`ChainEvent::Watch`] for the crash watches, and
//! [`ChainEvent::NewIncarnation`] for the header (level 1's life; upper
//! levels carry their own lives in their envelopes and their new lives
//! never reach the daemon).
//!
//! What is built so far (`docs/hierarchy.md`, build plan steps 3 and 4):
//!
//! - **static chains** from configuration: once level k has a view and the
//!   configuration names a group above it, the mserver runs *Add_parent*
//!   ([`task`](self::task)): it flags itself as a parent in level k (a
//!   tree change committed by level k; `max_parents` decides between
//!   candidates there), then joins level k+1 claiming level k as its child
//!   set. A candidate the child set refuses stays a *standby*;
//! - **automatic re-parenting**: a group that records a parent group and
//!   has no parent is given one by its lowest-rank member that does not
//!   decline (every member decides from the same view, so exactly one
//!   acts);
//! - **stepping down** (*Del_parent*: leave above, then unflag) when a
//!   group has more parents than it keeps, or a parent is in another
//!   group than the one its child set records (both arise from heals);
//! - the **exclusion cascade**: excluded from level k, an mserver leaves
//!   every level above it (voluntarily, top first) and rejoins level k as
//!   a plain member.
//!
//! The operator's changes (`add-parent`, `del-parent`, `split`, `merge`)
//! and the daemon's use of the chain come with the next steps.

mod error;
mod request;
mod task;

use crate::coreset::invariants::CoreSets;
use crate::coreset::{
    ChildClaim, ConfigError, CoreSet, CoreSetConfig, CoreSetEvent, GroupRef, TreeOp, TreeSettings,
    TreeSubmitError, MAX_LEVEL,
};
use crate::id::{Incarnation, NodeId, ProtocolId};
use crate::sansio::{Core, Incoming, Transmit};
use crate::time::{earliest, Instant};
use crate::wire::decode_body;
pub use error::TreeError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use request::{ChainView, Pending, Start};
pub use request::{TreeRequest, MAX_QUEUED_REQUESTS};
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;
pub use task::StandbyReason;
use task::{AddParent, DelParent, Outcome, TaskHost};

/// The settings of one level above level 1 (a `--parent` entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelSettings {
    /// The group of that level.
    pub group: GroupRef,
    /// Its query interval (default: level 1's).
    pub query_interval: Duration,
    /// Its reply timeout (default: level 1's).
    pub reply_timeout: Duration,
    /// Its monitoring retries (default: level 1's).
    pub retries: u32,
}

/// What a chain is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainConfig {
    /// Level 1: this mserver, its group and timings. Its `tree` gives
    /// `max_parents` (for groups this mserver founds) and `declined`;
    /// `child` must be `None` and `parent_group` is taken from `parents`.
    pub level1: CoreSetConfig,
    /// The groups above, lowest first: this mserver becomes a parent of
    /// level k in the group of entry k (if the child set takes it).
    pub parents: Vec<LevelSettings>,
}

/// Why a chain configuration cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A level's core-set settings are invalid.
    #[error("level {level}: {error}")]
    Level {
        /// The level.
        level: u8,
        /// What is wrong.
        error: ConfigError,
    },
    /// A group name appears twice along the chain (names are the key that
    /// tells levels apart).
    #[error("group {0} appears twice in the chain (--group and --parent must all differ)")]
    ChainRepeatsGroup(String),
    /// More levels than [`MAX_LEVEL`].
    #[error("a chain has at most {MAX_LEVEL} levels")]
    TooDeep,
}

impl ChainConfig {
    /// A chain of one level: an mserver of `level1`'s group and nothing
    /// above (no `--parent`).
    pub fn one_level(level1: CoreSetConfig) -> Self {
        ChainConfig {
            level1,
            parents: Vec::new(),
        }
    }

    /// Checks the whole chain.
    pub fn validate(&self) -> Result<(), ChainError> {
        if self.parents.len() >= usize::from(MAX_LEVEL) {
            return Err(ChainError::TooDeep);
        }
        let mut names = BTreeSet::new();
        names.insert(self.level1.group.clone());
        for p in &self.parents {
            if !names.insert(p.group.name.clone()) {
                return Err(ChainError::ChainRepeatsGroup(p.group.name.clone()));
            }
        }
        for level in 1..=self.top() {
            if let Some(group) = self.group(level) {
                let claim = match level {
                    1 => None,
                    _ => self.group(level - 1).map(|group| ChildClaim {
                        group,
                        level: level - 1,
                    }),
                };
                self.level_config(&group, self.level1.incarnation, claim)
                    .validate()
                    .map_err(|error| ChainError::Level { level, error })?;
            }
        }
        Ok(())
    }

    /// The highest level this chain is configured to reach.
    pub fn top(&self) -> u8 {
        u8::try_from(self.parents.len() + 1).unwrap_or(MAX_LEVEL)
    }

    /// The configured group of `level` (1 ..= top).
    pub fn group(&self, level: u8) -> Option<GroupRef> {
        if level == 1 {
            return Some(GroupRef {
                name: self.level1.group.clone(),
                addr: self.level1.group_addr,
            });
        }
        self.parents
            .get(usize::from(level).checked_sub(2)?)
            .map(|p| p.group.clone())
    }

    /// The core-set settings for `group` with life `incarnation`, as a
    /// parent of `claim` (`None`: level 1). Timings are the configured
    /// entry's when `group` is one of the `--parent` entries, else level
    /// 1's (a group learned from a child set's record); the parent group a
    /// founder records is the entry after it in the chain.
    fn level_config(
        &self,
        group: &GroupRef,
        incarnation: Incarnation,
        claim: Option<ChildClaim>,
    ) -> CoreSetConfig {
        let mut c = self.level1.clone();
        c.incarnation = incarnation;
        c.group = group.name.clone();
        c.group_addr = group.addr;
        let entry = self.parents.iter().position(|p| p.group == *group);
        let next = if claim.is_none() {
            self.parents.first()
        } else {
            entry.and_then(|i| self.parents.get(i + 1))
        };
        if let Some(p) = entry.and_then(|i| self.parents.get(i)) {
            c.query_interval = p.query_interval;
            c.reply_timeout = p.reply_timeout;
            c.retries = p.retries;
            // Every derived timer follows this level's base timings.
            c.change_retries = None;
            c.commit_timeout = None;
            c.join_timeout = None;
            c.join_timeout_max = None;
            c.announce_interval = None;
            c.leave_timeout = None;
        }
        c.tree = TreeSettings {
            child: claim,
            parent_group: next.map(|p| p.group.clone()),
            max_parents: self.level1.tree.max_parents,
            declined: self.level1.tree.declined,
        };
        c
    }
}

/// What the chain reports to the daemon.
// `Level` carries a whole core-set event (views are the bulk of the
// traffic here); the other variants are rare. Events sit in a queue only
// until the driver drains them.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainEvent {
    /// An event of the core-set of `level`.
    Level {
        /// The level (1 = the lowest mserver group).
        level: u8,
        /// That level's group.
        group: GroupRef,
        /// The event.
        event: CoreSetEvent,
    },
    /// Listen on this group's address (a level was added).
    JoinGroup(GroupRef),
    /// Stop listening on this group's address (a level was dropped).
    LeaveGroup(GroupRef),
    /// The members whose crash the daemon should watch (the union of the
    /// levels' clockwise neighbours).
    Watch(BTreeSet<NodeId>),
    /// Level 1 took a new life: stamp it on every packet from now on.
    NewIncarnation(Incarnation),
    /// This mserver stays at `level`: the child set there did not take it
    /// as a parent (it has its parents, or they are in another group), or
    /// the parent group did not admit it.
    Standby {
        /// The highest level it belongs to.
        level: u8,
        /// Why.
        reason: StandbyReason,
    },
    /// This mserver stepped down as a parent of `level` (it left the
    /// levels above and is unflagged there).
    SteppedDown {
        /// The child set's level.
        level: u8,
    },
    /// An operator's request ([`Chain::request`]) is over: `Ok(level)`
    /// names the level whose view shows the result (the parent group's
    /// after an Add_parent, the child set's after a step-down).
    RequestDone {
        /// The id given with the request.
        id: u64,
        /// How it ended.
        result: Result<u8, TreeError>,
    },
    /// This mserver became a parent of `level` and a member of the group
    /// above it.
    Parent {
        /// The child set's level.
        level: u8,
        /// The parent group it joined.
        group: GroupRef,
    },
}

/// Counters of the chain itself (each level counts its own in
/// [`CoreSet::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainStats {
    /// Datagrams for no level of the chain (or undecodable).
    pub wrong_group: u64,
    /// Add_parent tasks that ended with this mserver a parent.
    pub parent_tasks_done: u64,
    /// Add_parent tasks undone or refused.
    pub parent_tasks_failed: u64,
    /// Step-downs (Del_parent) completed.
    pub step_downs: u64,
}

/// One level of the chain.
struct Level {
    number: u8,
    group: GroupRef,
    core: CoreSet,
    watching: Option<NodeId>,
}

/// The task in progress (one at a time).
enum Task {
    /// Becoming a parent.
    Add(AddParent),
    /// Stepping down as a parent.
    Del(DelParent),
}

impl Task {
    fn deadline(&self) -> Option<Instant> {
        match self {
            Task::Add(t) => t.deadline(),
            Task::Del(_) => None,
        }
    }

    fn child_level(&self) -> u8 {
        match self {
            Task::Add(t) => t.child_level(),
            Task::Del(t) => t.child_level(),
        }
    }

    fn on_event(&mut self, level: u8, event: &CoreSetEvent) {
        match self {
            Task::Add(t) => t.on_event(level, event),
            Task::Del(t) => t.on_event(level, event),
        }
    }
}

/// One mserver's chain of core-sets. See the [module docs](self).
pub struct Chain {
    config: ChainConfig,
    /// Level 1 first; each level a parent of the one below.
    levels: Vec<Level>,
    /// Levels dropped from the chain whose voluntary leave has not
    /// completed yet (still demultiplexed and timed until `Left`).
    leaving: Vec<Level>,
    task: Option<Task>,
    standby: Option<(u8, StandbyReason)>,
    /// After a parent join that was not admitted in time, automatic
    /// re-parenting waits until then (the parent group may be busy or
    /// cut off; we stay the candidate and try again).
    retry_after: Option<Instant>,
    rng: ChaCha8Rng,
    started: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ChainEvent>,
    watching: BTreeSet<NodeId>,
    stats: ChainStats,
    /// The whole chain is leaving (`leave`): no new task starts.
    leaving_all: bool,
    /// Operator requests waiting for their turn.
    requests: VecDeque<Pending>,
    /// The operator request the task in progress serves.
    running: Option<Pending>,
    /// The operator stepped this mserver down: the configured chain is
    /// not followed up again (until an operator's add-parent).
    withdrawn: bool,
}

impl Chain {
    /// A chain for `config`, starting at once with level 1 (its first
    /// `M_JOIN_REQ` is queued). `seed` seeds the levels' RNGs and the
    /// lives of upper levels.
    pub fn new(config: ChainConfig, now: Instant, seed: u64) -> Result<Self, ChainError> {
        config.validate()?;
        let group = config.group(1).ok_or(ChainError::TooDeep)?;
        let level1 = config.level_config(&group, config.level1.incarnation, None);
        let core = CoreSet::new(level1, now, seed)
            .map_err(|error| ChainError::Level { level: 1, error })?;
        let mut chain = Chain {
            config,
            levels: vec![Level {
                number: 1,
                group,
                core,
                watching: None,
            }],
            leaving: Vec::new(),
            task: None,
            standby: None,
            retry_after: None,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x7EE5),
            started: now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            watching: BTreeSet::new(),
            stats: ChainStats::default(),
            leaving_all: false,
            requests: VecDeque::new(),
            running: None,
            withdrawn: false,
        };
        chain.step(now);
        Ok(chain)
    }

    /// What the chain was configured with.
    pub fn config(&self) -> &ChainConfig {
        &self.config
    }

    /// Level 1's core-set (always there: the chain starts with it and
    /// never drops it).
    pub fn base(&self) -> &CoreSet {
        &self.levels[0].core
    }

    /// Level 1's core-set, to submit application changes to (the
    /// application groups live at level 1 for now). Call
    /// [`Chain::flush`] after using it, so that what it queued is
    /// collected.
    pub fn base_mut(&mut self) -> &mut CoreSet {
        &mut self.levels[0].core
    }

    /// Collects what the levels queued outside the chain's own inputs
    /// (after [`Chain::base_mut`]) and acts on it.
    pub fn flush(&mut self, now: Instant) {
        self.step(now);
    }

    /// Leaves every level (SIGTERM, `msctl leave`): the levels above 1 top
    /// first, level 1 at the same time, each voluntarily (the groups see a
    /// leave, not a failure). No task starts any more; the one in progress
    /// ends. Level 1's [`CoreSetEvent::Left`] comes last-but-not-least:
    /// [`Chain::has_left`] says when every level is done.
    pub fn leave(&mut self, now: Instant) {
        self.leaving_all = true;
        if self.task.take().is_some() {
            self.stats.parent_tasks_failed += 1;
        }
        for p in std::mem::take(&mut self.requests)
            .into_iter()
            .chain(self.running.take())
        {
            self.answer(
                p.id,
                Err(TreeError::Cancelled("the mserver is leaving".into())),
            );
        }
        self.drop_levels_above(now, 1);
        self.levels[0].core.leave(now);
        self.step(now);
    }

    /// Queues an operator's request (answered by
    /// [`ChainEvent::RequestDone`] with `id`, also when it is refused at
    /// once).
    pub fn request(&mut self, now: Instant, id: u64, request: TreeRequest) {
        if self.leaving_all {
            self.answer(
                id,
                Err(TreeError::Cancelled("the mserver is leaving".into())),
            );
        } else if self.requests.len() >= MAX_QUEUED_REQUESTS {
            self.answer(id, Err(TreeError::Busy(self.requests.len())));
        } else {
            let deadline = now + self.request_timeout();
            self.requests.push_back(Pending {
                id,
                request,
                deadline,
            });
        }
        self.step(now);
    }

    /// How long an operator's request may take before it is answered with
    /// [`TreeError::Timeout`]: a leave of the whole chain plus two parent
    /// join timeouts (a step-down and an Add_parent, the longest a request
    /// waits behind another and runs).
    pub fn request_timeout(&self) -> Duration {
        let join = self
            .levels
            .iter()
            .map(|l| TaskHost::parent_join_timeout(self, &l.group))
            .max()
            .unwrap_or_default();
        self.leave_budget() + join * 2
    }

    fn answer(&mut self, id: u64, result: Result<u8, TreeError>) {
        self.events
            .push_back(ChainEvent::RequestDone { id, result });
    }

    /// What the checks of a request need to know of the chain now.
    fn view_for_requests(&self) -> ChainView<'_> {
        let top = self.top();
        let core = self.level(top);
        let table = core.and_then(CoreSet::table);
        ChainView {
            top,
            names: self
                .levels
                .iter()
                .chain(self.leaving.iter())
                .map(|l| l.group.name.as_str())
                .collect(),
            top_member: core.is_some_and(CoreSet::is_member),
            top_parents: table.map_or(0, |t| t.tree.parents().len()),
            top_max_parents: table.map_or(1, |t| t.tree.max_parents),
            top_parent_group: table.and_then(|t| t.tree.parent_group.clone()),
        }
    }

    /// Answers the requests whose time is up (a running one's task goes
    /// on).
    fn expire_requests(&mut self, now: Instant) {
        let timeout = u64::try_from(self.request_timeout().as_millis()).unwrap_or(u64::MAX);
        if self.running.as_ref().is_some_and(|p| now >= p.deadline) {
            if let Some(p) = self.running.take() {
                let phase = self.task_kind().unwrap_or("ending").to_string();
                self.answer(
                    p.id,
                    Err(TreeError::Timeout {
                        phase,
                        timeout_ms: timeout,
                    }),
                );
            }
        }
        let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.requests)
            .into_iter()
            .partition(|p| now >= p.deadline);
        self.requests = waiting.into();
        for p in late {
            self.answer(
                p.id,
                Err(TreeError::Timeout {
                    phase: "queued".into(),
                    timeout_ms: timeout,
                }),
            );
        }
    }

    /// The next operator request that passes its checks, as the task to
    /// run (the ones that do not are answered).
    fn next_request(&mut self) -> Option<Task> {
        while let Some(p) = self.requests.pop_front() {
            match request::start(&p.request, &self.view_for_requests()) {
                Ok(Start::Add(t)) => {
                    self.withdrawn = false;
                    self.standby = None;
                    self.running = Some(p);
                    return Some(Task::Add(t));
                }
                Ok(Start::Del(t)) => {
                    self.withdrawn = true;
                    self.running = Some(p);
                    return Some(Task::Del(t));
                }
                Err(e) => self.answer(p.id, Err(e)),
            }
        }
        None
    }

    /// Whether [`Chain::leave`] completed at every level.
    pub fn has_left(&self) -> bool {
        self.leaving_all && self.leaving.is_empty() && self.levels[0].core.has_left()
    }

    /// The longest a leave of the whole chain may take: the slowest
    /// level's leave bound (each level's own, derived from its timings)
    /// plus one reply timeout for its report to arrive.
    pub fn leave_budget(&self) -> Duration {
        self.levels
            .iter()
            .chain(self.leaving.iter())
            .map(|l| l.core.leave_timeout() + l.core.monitor_timings().1)
            .max()
            .unwrap_or_default()
    }

    /// The levels' groups, level 1 first.
    pub fn groups(&self) -> impl Iterator<Item = &GroupRef> {
        self.levels.iter().map(|l| &l.group)
    }

    /// The number of levels this mserver belongs to (or is joining).
    pub fn top(&self) -> u8 {
        u8::try_from(self.levels.len()).unwrap_or(MAX_LEVEL)
    }

    /// The core-set of `level` (1 ..= top).
    pub fn level(&self, level: u8) -> Option<&CoreSet> {
        self.levels
            .get(usize::from(level).checked_sub(1)?)
            .map(|l| &l.core)
    }

    /// The group of `level`.
    pub fn group(&self, level: u8) -> Option<&GroupRef> {
        self.levels
            .get(usize::from(level).checked_sub(1)?)
            .map(|l| &l.group)
    }

    /// Whether a task (becoming or stepping down as a parent) is in
    /// progress.
    pub fn has_task(&self) -> bool {
        self.task.is_some()
    }

    /// The task in progress, in words: `add-parent` (becoming a parent of
    /// our top group) or `step-down`.
    pub fn task_kind(&self) -> Option<&'static str> {
        self.task.as_ref().map(|t| match t {
            Task::Add(_) => "add-parent",
            Task::Del(_) => "step-down",
        })
    }

    /// Whether an operator stepped this mserver down (`del-parent`,
    /// `leave --level N`): the configured chain is not followed up again
    /// until an operator's `add-parent`.
    pub fn withdrawn(&self) -> bool {
        self.withdrawn
    }

    /// Operator requests not answered yet (waiting or running).
    pub fn requests_pending(&self) -> usize {
        self.requests.len() + usize::from(self.running.is_some())
    }

    /// The level this mserver stays at as a standby, and why, if so.
    pub fn standby(&self) -> Option<(u8, StandbyReason)> {
        self.standby
    }

    /// The chain's own counters.
    pub fn stats(&self) -> &ChainStats {
        &self.stats
    }

    /// Whether nothing is in progress: every level a member of a view with
    /// no change in progress, no level still leaving, and no task.
    pub fn is_settled(&self) -> bool {
        self.task.is_none()
            && self.leaving.is_empty()
            && self
                .levels
                .iter()
                .all(|l| l.core.is_member() && l.core.change_role().is_none())
    }

    /// The level (index into `levels`, or into `leaving` when the second
    /// is true) whose group is `name` (and, for a datagram sent to a
    /// multicast address, whose address is `destination`).
    fn level_for(&self, name: &str, destination: NodeId) -> Option<(bool, usize)> {
        let to_group = destination.addr().ip().is_multicast();
        let fits = |l: &Level| l.group.name == name && (!to_group || l.group.addr == destination);
        self.levels
            .iter()
            .position(fits)
            .map(|i| (false, i))
            .or_else(|| self.leaving.iter().position(fits).map(|i| (true, i)))
    }

    /// A new life for an upper level: a UUID v7 a little after level 1's,
    /// with random bits from our RNG.
    fn new_life(&mut self, now: Instant) -> Incarnation {
        let b = self.config.level1.incarnation.to_bytes();
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&b[..6]);
        let base = u64::from_be_bytes(ms);
        let elapsed = u64::try_from(now.saturating_duration_since(self.started).as_millis())
            .unwrap_or(u64::MAX);
        let millis = base
            .saturating_add(elapsed)
            .saturating_add(1)
            .min((1 << 48) - 1);
        let mut random = [0u8; 10];
        self.rng.fill(&mut random[..]);
        Incarnation::from_parts(millis, random)
    }

    /// Adds `group` as level `top + 1`, a parent of level `top` (its
    /// core-set starts joining at once).
    fn add_level(&mut self, now: Instant, group: &GroupRef) -> bool {
        let child_level = self.top();
        let Some(child) = self.group(child_level).cloned() else {
            return false;
        };
        if self.levels.iter().any(|l| l.group.name == group.name) {
            return false;
        }
        let life = self.new_life(now);
        let claim = ChildClaim {
            group: child,
            level: child_level,
        };
        let config = self.config.level_config(group, life, Some(claim));
        let seed = self.rng.random::<u64>();
        let Ok(core) = CoreSet::new(config, now, seed) else {
            return false;
        };
        self.events.push_back(ChainEvent::JoinGroup(group.clone()));
        self.levels.push(Level {
            number: child_level + 1,
            group: group.clone(),
            core,
            watching: None,
        });
        true
    }

    /// Drops the levels above `level`, top first: each leaves its group
    /// voluntarily (its group sees a leave, not a failure) and stays
    /// demultiplexed until its `Left`.
    fn drop_levels_above(&mut self, now: Instant, level: u8) {
        while self.top() > level {
            if let Some(mut l) = self.levels.pop() {
                l.core.leave(now);
                l.watching = None;
                self.leaving.push(l);
            }
        }
    }

    /// The parent group of `level` the chain should be in, by the group's
    /// record.
    fn recorded_parent_group(&self, level: u8) -> Option<GroupRef> {
        self.level(level)
            .and_then(|c| c.table())
            .and_then(|t| t.tree.parent_group.clone())
    }

    /// After every input: collects the levels' outputs, runs the task, and
    /// starts the next one.
    fn step(&mut self, now: Instant) {
        // A task step (a submitted change, a new level) makes output that
        // the next round collects; a handful of rounds always suffices (a
        // task acts at most twice per input).
        for _ in 0..8 {
            let events = self.collect();
            let quiet = events.is_empty();
            for (level, group, leaving, event) in events {
                self.on_level_event(now, level, leaving, &event);
                self.events.push_back(ChainEvent::Level {
                    level,
                    group,
                    event,
                });
            }
            let acted = self.run_task(now);
            if quiet && !acted {
                break;
            }
        }
        self.sync_watch();
    }

    /// Drains every level's transmits and events (leaving levels too).
    fn collect(&mut self) -> Vec<(u8, GroupRef, bool, CoreSetEvent)> {
        let mut events = Vec::new();
        for (leaving, list) in [(false, &mut self.levels), (true, &mut self.leaving)] {
            for l in list.iter_mut() {
                while let Some(t) = l.core.poll_transmit() {
                    self.transmits.push_back(t);
                }
                while let Some(e) = l.core.poll_event() {
                    events.push((l.number, l.group.clone(), leaving, e));
                }
            }
        }
        events
    }

    /// What the chain itself does with a level's event.
    fn on_level_event(&mut self, now: Instant, level: u8, leaving: bool, event: &CoreSetEvent) {
        if leaving {
            if matches!(event, CoreSetEvent::Left) {
                if let Some(i) = self
                    .leaving
                    .iter()
                    .position(|l| l.number == level && l.core.has_left())
                {
                    let l = self.leaving.remove(i);
                    self.events.push_back(ChainEvent::LeaveGroup(l.group));
                }
            }
            if let Some(task) = self.task.as_mut() {
                task.on_event(level, event);
            }
            return;
        }
        let index = usize::from(level).saturating_sub(1);
        match event {
            CoreSetEvent::Watch(target) => {
                if let Some(l) = self.levels.get_mut(index) {
                    l.watching = *target;
                }
            }
            CoreSetEvent::NewIncarnation(life) if level == 1 => {
                self.events.push_back(ChainEvent::NewIncarnation(*life));
            }
            CoreSetEvent::Excluded { .. } => {
                // Exclusion cascade: no longer a parent of this group (its
                // row, flag and all, went with the old life), so the
                // levels above go, top first; this level rejoins as a
                // plain member. A task about them ends.
                self.drop_levels_above(now, level);
                if self.task.as_ref().is_some_and(|t| t.child_level() >= level) {
                    self.task = None;
                    self.stats.parent_tasks_failed += 1;
                    if let Some(p) = self.running.take() {
                        self.answer(
                            p.id,
                            Err(TreeError::Cancelled(format!(
                                "our level-{level} group excluded us meanwhile (paused or cut off)"
                            ))),
                        );
                    }
                }
            }
            _ => {}
        }
        if let Some(task) = self.task.as_mut() {
            task.on_event(level, event);
        }
    }

    /// Emits `Watch` if the union of the levels' targets changed.
    fn sync_watch(&mut self) {
        let set: BTreeSet<NodeId> = self.levels.iter().filter_map(|l| l.watching).collect();
        if set != self.watching {
            self.watching = set.clone();
            self.events.push_back(ChainEvent::Watch(set));
        }
    }

    /// The task to start now, if any, decided from the views the levels
    /// hold (the same inputs at every member of a group, so exactly one
    /// member acts where one must):
    ///
    /// 1. *step down* at the lowest level k where this mserver is a
    ///    parent it should not be: the group has more parents than it
    ///    keeps and we are not among the oldest, or our level-k+1 group is
    ///    not the one the group records;
    /// 2. *automatic re-parenting* at our top: the group records a parent
    ///    group, has no parent, and we are its lowest-rank member that
    ///    does not decline;
    /// 3. the *configured chain*: our top has room for a parent and the
    ///    configuration names a group above it.
    fn next_task(&self, now: Instant) -> Option<Task> {
        if self.leaving_all {
            return None;
        }
        for k in 1..self.top() {
            let core = self.level(k)?;
            let (table, rank) = (core.table()?, core.my_rank()?);
            if !core.is_member() || core.change_role().is_some() {
                return None;
            }
            let parents = table.tree.parents();
            let keep = usize::from(table.tree.max_parents);
            let excess = parents.len() > keep && !parents.iter().take(keep).any(|r| *r == rank);
            let wrong = table.tree.parent_group.as_ref() != self.group(k + 1);
            if excess || wrong {
                return Some(Task::Del(DelParent::new(k, false)));
            }
        }
        let top = self.top();
        let core = self.level(top)?;
        if !core.is_member() || core.change_role().is_some() || !self.leaving.is_empty() {
            return None;
        }
        let (table, rank) = (core.table()?, core.my_rank()?);
        let parents = table.tree.parents();
        let candidate = table
            .rows
            .iter()
            .find(|r| !table.tree.bits(r.rank).declined)
            .map(|r| r.rank);
        if let Some(p) = self.recorded_parent_group(top) {
            let waiting = self.retry_after.is_some_and(|t| now < t);
            if parents.is_empty()
                && candidate == Some(rank)
                && !self.config.level1.tree.declined
                && !waiting
            {
                return Some(Task::Add(AddParent::new(top, p)));
            }
        }
        if self.standby.is_none() && !self.withdrawn && top < self.config.top() {
            // Tried once: the child set decides (a full set refuses it,
            // and this mserver stays a standby).
            let group = self.config.group(top + 1)?;
            return Some(Task::Add(AddParent::new(top, group)));
        }
        None
    }

    /// Runs the task in progress, or starts the next one. Whether it acted
    /// (started, advanced or ended a task).
    fn run_task(&mut self, now: Instant) -> bool {
        let mut acted = false;
        if self.retry_after.is_some_and(|t| now >= t) {
            self.retry_after = None;
        }
        self.expire_requests(now);
        if self.task.is_none() && !self.leaving_all {
            self.task = self.next_request();
            if self.task.is_none() {
                self.task = self.next_task(now);
            }
            acted = self.task.is_some();
        }
        let Some(task) = self.task.take() else {
            return acted;
        };
        match task {
            Task::Add(mut t) => match t.advance(now, self) {
                Outcome::Running { acted: a } => {
                    self.task = Some(Task::Add(t));
                    acted || a
                }
                Outcome::Done => {
                    self.stats.parent_tasks_done += 1;
                    self.standby = None;
                    self.events.push_back(ChainEvent::Parent {
                        level: t.child_level(),
                        group: t.group().clone(),
                    });
                    if let Some(p) = self.running.take() {
                        self.answer(p.id, Ok(t.child_level() + 1));
                    }
                    true
                }
                Outcome::Standby(reason) => {
                    self.stats.parent_tasks_failed += 1;
                    let level = self.top();
                    self.standby = Some((level, reason));
                    self.events.push_back(ChainEvent::Standby { level, reason });
                    if let Some(p) = self.running.take() {
                        let error = request::standby_error(reason, t.child_level());
                        self.answer(p.id, Err(error));
                    }
                    true
                }
            },
            Task::Del(mut t) => match t.advance(now, self) {
                Outcome::Running { acted: a } => {
                    self.task = Some(Task::Del(t));
                    acted || a
                }
                Outcome::Done | Outcome::Standby(_) => {
                    self.stats.step_downs += 1;
                    self.events.push_back(ChainEvent::SteppedDown {
                        level: t.child_level(),
                    });
                    if let Some(p) = self.running.take() {
                        self.answer(p.id, Ok(t.child_level()));
                    }
                    true
                }
            },
        }
    }
}

impl Core for Chain {
    type Event = ChainEvent;

    fn describe_packet(body: &[u8]) -> Option<String> {
        CoreSet::describe_packet(body)
    }

    fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        if packet.protocol != ProtocolId::CoreSet {
            self.stats.wrong_group += 1;
            return;
        }
        // The group name picks the level; the level's core decodes the
        // body again and counts what it drops.
        let name = match decode_body::<crate::coreset::Envelope>(packet.body) {
            Ok(env) => env.group,
            Err(_) => {
                self.stats.wrong_group += 1;
                return;
            }
        };
        match self.level_for(&name, packet.destination) {
            Some((false, i)) => {
                if let Some(l) = self.levels.get_mut(i) {
                    l.core.handle_packet(now, packet);
                }
            }
            Some((true, i)) => {
                if let Some(l) = self.leaving.get_mut(i) {
                    l.core.handle_packet(now, packet);
                }
            }
            None => self.stats.wrong_group += 1,
        }
        self.step(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        for l in self.levels.iter_mut().chain(self.leaving.iter_mut()) {
            if l.core.poll_timeout().is_some_and(|t| t <= now) {
                l.core.handle_timeout(now);
            }
        }
        self.step(now);
    }

    fn handle_unreachable(&mut self, now: Instant, node: NodeId) {
        for l in self.levels.iter_mut().chain(self.leaving.iter_mut()) {
            if l.core.table().is_some_and(|t| t.by_addr(node).is_some()) {
                l.core.handle_unreachable(now, node);
            }
        }
        self.step(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<ChainEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let levels = self
            .levels
            .iter()
            .chain(self.leaving.iter())
            .filter_map(|l| l.core.poll_timeout())
            .min();
        let requests = self
            .requests
            .iter()
            .chain(self.running.iter())
            .map(|p| p.deadline)
            .min();
        earliest(
            earliest(levels, self.task.as_ref().and_then(Task::deadline)),
            earliest(self.retry_after, requests),
        )
    }
}

impl CoreSets for Chain {
    fn coreset_event(event: &ChainEvent) -> Option<(Option<&str>, &CoreSetEvent)> {
        match event {
            ChainEvent::Level { group, event, .. } => Some((Some(group.name.as_str()), event)),
            _ => None,
        }
    }

    fn coresets(&self, group: Option<&str>) -> Vec<&CoreSet> {
        self.levels
            .iter()
            .chain(self.leaving.iter())
            .filter(|l| Some(l.group.name.as_str()) == group)
            .map(|l| &l.core)
            .collect()
    }
}

impl TaskHost for Chain {
    fn level(&self, level: u8) -> Option<&CoreSet> {
        Chain::level(self, level)
    }

    fn submit_tree(&mut self, now: Instant, level: u8, op: TreeOp) -> Result<(), TreeSubmitError> {
        match self.levels.get_mut(usize::from(level).saturating_sub(1)) {
            Some(l) => l.core.submit_tree(now, op),
            None => Err(TreeSubmitError::NotMember),
        }
    }

    fn add_level(&mut self, now: Instant, group: &GroupRef) -> bool {
        Chain::add_level(self, now, group)
    }

    fn drop_levels_above(&mut self, now: Instant, level: u8) {
        Chain::drop_levels_above(self, now, level);
    }

    fn leaves_done(&self) -> bool {
        self.leaving.is_empty()
    }

    fn parent_join_timeout(&self, group: &GroupRef) -> Duration {
        self.config
            .level_config(group, self.config.level1.incarnation, None)
            .join_timeout_max()
            .saturating_mul(3)
    }

    fn declines(&self) -> bool {
        self.config.level1.tree.declined
    }

    fn retry_after(&mut self, at: Instant) {
        self.retry_after = Some(at);
    }
}
