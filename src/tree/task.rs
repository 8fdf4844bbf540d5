//! *Add_parent* (seed 003, section III.A.1; `docs/hierarchy.md`, "Add_parent"
//! and "The one rule that orders every two-level change"): an mserver of
//! level k becomes a parent of its level-k group X and a member of the
//! parent group P, in two commits in a fixed order:
//!
//! 1. flag: X commits `SetParent { me, parent: true, group: P }` (the child
//!    set is the arbiter: two candidates are serialized in X's total order
//!    and `max_parents` is enforced by validation there);
//! 2. join: a new core-set joins P claiming X (level k) as its child set.
//!
//! Between the two, the mserver is flagged in X and not a member of P; if
//! it crashes there, X removes it like any failed member. A refused flag
//! leaves it a *standby*; a join that P refuses (another level) or does not
//! admit within `parent_join_timeout` is undone (X unflags it) and leaves
//! it a standby too: declined after a refusal, so the next candidate is
//! chosen; still a candidate after a timeout, retried a timeout later.
//!
//! *Del_parent* runs the same two steps the other way round: leave P (and
//! every level above it, top first; each a voluntary leave, so those
//! groups see `Left`, not a failure), then unflag in X. The in-between
//! state is again "flagged in X, not in P". An automatic step-down (too
//! many parents after a merge, or a parent in another group than X
//! records) leaves the member a candidate (`declined` false).

use crate::coreset::{CoreSet, CoreSetEvent, GroupRef, TreeOp, TreeOpError, TreeSubmitError};
use crate::time::Instant;
use std::time::Duration;

/// Why an mserver stays below the top of its configured chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StandbyReason {
    /// The child set refused the flag (it keeps `max_parents` parents
    /// already, or they belong to another parent group).
    #[error("the child set did not take us as a parent: {0}")]
    Refused(TreeOpError),
    /// The parent group refused the claim (it is of another level).
    #[error("the parent group is of another level")]
    LevelMismatch,
    /// The parent group did not admit us within the parent join timeout
    /// (held down, or busy for too long); the flag was undone.
    #[error("the parent group did not admit us in time")]
    NotAdmitted,
}

/// What the tasks need of the chain that runs them (the chain implements
/// it; the tasks know nothing else of it).
pub(super) trait TaskHost {
    /// The core-set of `level`, if the chain has that level.
    fn level(&self, level: u8) -> Option<&CoreSet>;
    /// Submits a tree change at `level`.
    fn submit_tree(&mut self, now: Instant, level: u8, op: TreeOp) -> Result<(), TreeSubmitError>;
    /// Adds `group` as the level above the top (joining it at once).
    fn add_level(&mut self, now: Instant, group: &GroupRef) -> bool;
    /// Leaves every level above `level`, top first.
    fn drop_levels_above(&mut self, now: Instant, level: u8);
    /// Whether every level the chain dropped has finished its leave.
    fn leaves_done(&self) -> bool;
    /// How long a flagged parent waits to be admitted to `group`.
    fn parent_join_timeout(&self, group: &GroupRef) -> Duration;
    /// Whether this mserver declines automatic re-parenting.
    fn declines(&self) -> bool;
    /// Automatic re-parenting waits until `at`.
    fn retry_after(&mut self, at: Instant);
}

/// Where the task is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Submit the flag to the child set.
    Flag,
    /// The flag is submitted; waiting for it to commit (or be refused).
    WaitFlag(TreeOp),
    /// Flagged: join the parent group.
    Join,
    /// Joining the parent group, until `deadline`.
    WaitJoin {
        /// The end of `parent_join_timeout`.
        deadline: Instant,
    },
}

/// How a step of the task ended.
pub(super) enum Outcome {
    /// Still running (`acted`: it submitted or started something now).
    Running {
        /// It made output this step.
        acted: bool,
    },
    /// Done: for Add_parent, this mserver is a parent of the child level
    /// and a member of P; for Del_parent, it left P and is unflagged.
    Done,
    /// It stays at its top level.
    Standby(StandbyReason),
}

/// One Add_parent in progress.
pub(super) struct AddParent {
    child_level: u8,
    group: GroupRef,
    phase: Phase,
    /// The flag committed (seen in the child level's events).
    flagged: bool,
    /// The flag was refused at its base.
    refused: Option<TreeOpError>,
    /// The parent group refused our claim.
    join_refused: bool,
}

impl AddParent {
    /// Makes this mserver a parent of `child_level` in `group`.
    pub(super) fn new(child_level: u8, group: GroupRef) -> Self {
        AddParent {
            child_level,
            group,
            phase: Phase::Flag,
            flagged: false,
            refused: None,
            join_refused: false,
        }
    }

    /// The child set's level.
    pub(super) fn child_level(&self) -> u8 {
        self.child_level
    }

    /// The parent group.
    pub(super) fn group(&self) -> &GroupRef {
        &self.group
    }

    /// The task's own deadline, if it has one now.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::WaitJoin { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// Notes what the levels report about the task's changes.
    pub(super) fn on_event(&mut self, level: u8, event: &CoreSetEvent) {
        let Phase::WaitFlag(op) = &self.phase else {
            if level == self.child_level + 1 {
                if let CoreSetEvent::JoinRefused { .. } = event {
                    self.join_refused = true;
                }
            }
            return;
        };
        if level != self.child_level {
            return;
        }
        match event {
            CoreSetEvent::TreeCommitted { op: done, .. } if done == op => self.flagged = true,
            CoreSetEvent::TreeRefused { op: dropped, error } if dropped == op => {
                self.refused = Some(*error);
            }
            _ => {}
        }
    }

    /// Advances the task as far as it can go now.
    pub(super) fn advance(&mut self, now: Instant, chain: &mut impl TaskHost) -> Outcome {
        let k = self.child_level;
        match self.phase.clone() {
            Phase::Flag => {
                let Some(core) = chain.level(k) else {
                    return Outcome::Standby(StandbyReason::NotAdmitted);
                };
                let Some(rank) = core.my_rank() else {
                    return Outcome::Running { acted: false };
                };
                if core.table().is_some_and(|t| t.tree.is_parent(rank)) {
                    // Flagged already (a task that was cut short): join.
                    self.phase = Phase::Join;
                    return self.advance(now, chain);
                }
                let op = TreeOp::SetParent {
                    rank,
                    parent: true,
                    declined: chain.declines(),
                    group: Some(self.group.clone()),
                };
                match chain.submit_tree(now, k, op.clone()) {
                    Ok(()) => {
                        self.phase = Phase::WaitFlag(op);
                        Outcome::Running { acted: true }
                    }
                    Err(TreeSubmitError::Invalid(e)) => Outcome::Standby(StandbyReason::Refused(e)),
                    // Not a member right now, or the queue is full: the
                    // next input tries again.
                    Err(TreeSubmitError::NotMember | TreeSubmitError::QueueFull) => {
                        Outcome::Running { acted: false }
                    }
                }
            }
            Phase::WaitFlag(_) => {
                if let Some(e) = self.refused {
                    return Outcome::Standby(StandbyReason::Refused(e));
                }
                if self.flagged {
                    self.phase = Phase::Join;
                    return self.advance(now, chain);
                }
                Outcome::Running { acted: false }
            }
            Phase::Join => {
                let timeout = chain.parent_join_timeout(&self.group);
                if !chain.add_level(now, &self.group) {
                    return self.undo(now, chain, StandbyReason::NotAdmitted);
                }
                self.phase = Phase::WaitJoin {
                    deadline: now + timeout,
                };
                Outcome::Running { acted: true }
            }
            Phase::WaitJoin { deadline } => {
                if chain.level(k + 1).is_some_and(|c| c.is_member()) {
                    return Outcome::Done;
                }
                if self.join_refused {
                    return self.undo(now, chain, StandbyReason::LevelMismatch);
                }
                if now >= deadline {
                    return self.undo(now, chain, StandbyReason::NotAdmitted);
                }
                Outcome::Running { acted: false }
            }
        }
    }

    /// Undoes step 1: drops the parent level and unflags this mserver in
    /// the child set (declined after a level mismatch, so the next
    /// candidate is chosen; after a timeout it stays the candidate and
    /// automatic re-parenting waits one more parent join timeout).
    fn undo(&mut self, now: Instant, chain: &mut impl TaskHost, reason: StandbyReason) -> Outcome {
        let k = self.child_level;
        chain.drop_levels_above(now, k);
        // A parent group of the wrong level is a configuration mistake:
        // decline, so that the next candidate is chosen. One that did not
        // admit us in time may be busy or cut off: stay the candidate and
        // try again after a while.
        let declined = reason == StandbyReason::LevelMismatch;
        if !declined {
            let at = now + chain.parent_join_timeout(&self.group);
            chain.retry_after(at);
        }
        if let Some(rank) = chain.level(k).and_then(|c| c.my_rank()) {
            let op = TreeOp::SetParent {
                rank,
                parent: false,
                declined,
                group: None,
            };
            // A refusal means we are not flagged any more: nothing to undo.
            let _ = chain.submit_tree(now, k, op);
        }
        Outcome::Standby(reason)
    }
}

/// Where a step-down is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DelPhase {
    /// Leave the levels above the child set.
    Leave,
    /// Waiting for their leaves to complete (each bounded by its group's
    /// leave timeout).
    WaitLeft,
    /// Unflag in the child set.
    Unflag,
    /// The unflag is submitted; waiting for it to commit (or be refused:
    /// then we are not flagged any more either).
    WaitUnflag(TreeOp),
}

/// One Del_parent in progress.
pub(super) struct DelParent {
    child_level: u8,
    declined: bool,
    phase: DelPhase,
    /// The unflag committed or was refused.
    ended: bool,
}

impl DelParent {
    /// Steps down as a parent of `child_level`; `declined` is written into
    /// our row (a voluntary step-down declines, an automatic one does not).
    pub(super) fn new(child_level: u8, declined: bool) -> Self {
        DelParent {
            child_level,
            declined,
            phase: DelPhase::Leave,
            ended: false,
        }
    }

    /// The child set's level.
    pub(super) fn child_level(&self) -> u8 {
        self.child_level
    }

    /// Notes what the child level reports about the unflag.
    pub(super) fn on_event(&mut self, level: u8, event: &CoreSetEvent) {
        let DelPhase::WaitUnflag(op) = &self.phase else {
            return;
        };
        if level != self.child_level {
            return;
        }
        match event {
            CoreSetEvent::TreeCommitted { op: done, .. } if done == op => self.ended = true,
            CoreSetEvent::TreeRefused { op: dropped, .. } if dropped == op => self.ended = true,
            _ => {}
        }
    }

    /// Advances the step-down as far as it can go now.
    pub(super) fn advance(&mut self, now: Instant, chain: &mut impl TaskHost) -> Outcome {
        let k = self.child_level;
        match self.phase.clone() {
            DelPhase::Leave => {
                chain.drop_levels_above(now, k);
                self.phase = DelPhase::WaitLeft;
                Outcome::Running { acted: true }
            }
            DelPhase::WaitLeft => {
                if !chain.leaves_done() {
                    return Outcome::Running { acted: false };
                }
                self.phase = DelPhase::Unflag;
                self.advance(now, chain)
            }
            DelPhase::Unflag => {
                let Some(core) = chain.level(k) else {
                    return Outcome::Done;
                };
                let Some(rank) = core.my_rank() else {
                    // Not a member now (excluded meanwhile): no flag left.
                    return Outcome::Done;
                };
                if !core.table().is_some_and(|t| t.tree.is_parent(rank)) {
                    return Outcome::Done;
                }
                let op = TreeOp::SetParent {
                    rank,
                    parent: false,
                    declined: self.declined,
                    group: None,
                };
                match chain.submit_tree(now, k, op.clone()) {
                    Ok(()) => {
                        self.phase = DelPhase::WaitUnflag(op);
                        Outcome::Running { acted: true }
                    }
                    Err(TreeSubmitError::Invalid(_)) => Outcome::Done,
                    Err(TreeSubmitError::NotMember | TreeSubmitError::QueueFull) => {
                        Outcome::Running { acted: false }
                    }
                }
            }
            DelPhase::WaitUnflag(_) => {
                if self.ended || !chain.level(k).is_some_and(|c| c.is_member()) {
                    return Outcome::Done;
                }
                Outcome::Running { acted: false }
            }
        }
    }
}
