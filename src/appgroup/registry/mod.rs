//! The replicated registry of application groups (seed 003, chapter II,
//! sections B and C; DESIGN.md section 6; `docs/appgroups-design.md`).
//!
//! Every mserver of a core-set holds one [`Registry`] and applies to it, in
//! commit order, the [`AppOp`]s that the core-set commits as application
//! changes (`CoreSet::submit_app`, `CoreSetEvent::AppCommitted`). The
//! registry is a deterministic state machine: the same ops in the same
//! order give the same groups, the same per-group views and the same
//! outcome of each op ([`Applied`]) at every mserver. So the mserver that
//! submitted an op answers its MI with an outcome every other mserver
//! agrees on, and each mserver pushes the new views to the MIs attached to
//! it.
//!
//! - Each group has its own view number: 0 when it is created (no
//!   members), then one more for every core-set commit whose ops change
//!   its membership ([`Registry::apply_payloads`]). Members are kept in
//!   join order.
//! - Ops carry a [`RequestId`] (the MI and its request counter); an op
//!   seen before is answered with the remembered outcome and changes
//!   nothing, so an MI may resubmit after its mserver failed.
//! - [`AppOp::MiFailed`] removes every member the MIs hosted, in one view
//!   per group (an MI failure is batched like mserver failures); then each
//!   group's survive rule decides whether the rest keeps running (if not,
//!   it is removed too, reported lost, and the group suspended).
//! - Everything is bounded ([`MAX_GROUPS`], [`MAX_GROUP_MEMBERS`],
//!   [`MAX_REMEMBERED`]); an op beyond a bound is refused with a typed
//!   error, at every mserver alike.
//!
//! - [`AppOp::Attach`] records which mserver an MI is attached to, so
//!   every mserver knows the MIs an mserver that failed leaves behind; a
//!   join through an MI that is not attached is refused
//!   ([`AppError::Disconnected`]): an MI declared failed cannot add members.
//! - The last views of each group are kept ([`VIEW_HISTORY`] views, at
//!   most [`HISTORY_MEMBERS`] member entries in all per group), so an MI
//!   that re-attached after a failover is sent the views it missed.
//! - [`Registry::encode`] / [`Registry::decode`]: the copy a newcomer to
//!   the core-set fetches (state transfer).
//! - After a core-set merge, [`AppOp::Readmit`] and [`AppOp::Reform`]
//!   bring an absorbed side's attachments and group parts in; the merge
//!   rule decides which members join (one view, numbered above both
//!   sides').
//!
//! The files: this one holds the state ([`Registry`], its groups) and what
//! can be asked of it; `ops.rs` the ops and their outcomes ([`AppOp`],
//! [`Applied`]); `apply.rs` how one commit's ops are applied, one handler
//! per op; `tests.rs` the unit tests.

mod apply;
mod ops;
#[cfg(test)]
mod tests;

pub use ops::{AppOp, AppReply, Applied, MiRecord, RequestId};

use super::error::AppError;
use super::names::GroupName;
use super::rules::GroupOptions;
use super::view::{AppMember, AppView};
use crate::wire::{decode_message, encode_body};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use uuid::Uuid;

/// Most views an MI may be behind on one group before its members there
/// are excluded rather than caught up: the views each group keeps
/// (`link` re-exports it).
pub const VIEW_HISTORY: usize = 32;
/// Most application groups one core-set holds.
pub const MAX_GROUPS: usize = 4096;
/// Most members of one application group.
pub const MAX_GROUP_MEMBERS: usize = 10_000;
/// Most request outcomes remembered for duplicate detection.
pub const MAX_REMEMBERED: usize = 8192;
/// Most MIs attached to one core-set.
pub const MAX_MIS: usize = 4096;
/// Longest MI host name, in bytes.
pub const MAX_HOST: usize = 255;
/// Most member entries the view history of one group holds (a group of
/// 10,000 members keeps only its last view or so).
pub const HISTORY_MEMBERS: usize = 20_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Group {
    options: GroupOptions,
    number: u64,
    /// Members in join order, with the MI that hosts each.
    members: Vec<(AppMember, Uuid)>,
    /// The latest views, oldest first (the current one last).
    history: VecDeque<AppView>,
    /// The members before the latest MI failure that removed some (the
    /// "last view before the partition" the merge rule compares with).
    base: Option<Vec<AppMember>>,
    /// Its survive rule failed here: the part was terminated, and joins are
    /// refused ([`AppError::Busy`]) until a merge brings members back.
    suspended: bool,
}

impl Group {
    fn view(&self, name: &GroupName) -> AppView {
        AppView {
            group: name.clone(),
            number: self.number,
            members: self.members.iter().map(|(m, _)| m.clone()).collect(),
        }
    }

    /// Moves to the next view number and records the new view.
    fn advance(&mut self, name: &GroupName) -> AppView {
        self.number += 1;
        let view = self.view(name);
        self.history.push_back(view.clone());
        let mut entries: usize = self.history.iter().map(|v| v.members.len().max(1)).sum();
        while self.history.len() > VIEW_HISTORY
            || (entries > HISTORY_MEMBERS && self.history.len() > 1)
        {
            match self.history.pop_front() {
                Some(old) => entries -= old.members.len().max(1),
                None => break,
            }
        }
        view
    }
}

/// An op refused before it was applied (undecodable).
fn refused(e: AppError) -> Applied {
    Applied {
        req: None,
        result: Err(e),
        views: Vec::new(),
        duplicate: false,
        lost: Vec::new(),
    }
}

/// The application groups of one core-set. See the module docs of `appgroup::registry` (re-exported in [`crate::appgroup`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Registry {
    groups: BTreeMap<GroupName, Group>,
    mis: BTreeMap<Uuid, MiRecord>,
    remembered: BTreeMap<RequestId, Result<AppReply, AppError>>,
    order: VecDeque<RequestId>,
    applied: u64,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ops applied so far (duplicates included).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The current view of `group`.
    pub fn view(&self, group: &GroupName) -> Option<AppView> {
        self.groups.get(group).map(|g| g.view(group))
    }

    /// The options `group` was created with.
    pub fn options(&self, group: &GroupName) -> Option<&GroupOptions> {
        self.groups.get(group).map(|g| &g.options)
    }

    /// Every group's current view, by name.
    pub fn views(&self) -> Vec<AppView> {
        self.groups.iter().map(|(n, g)| g.view(n)).collect()
    }

    /// Every group's options and current view, by name.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupOptions, AppView)> + '_ {
        self.groups.iter().map(|(n, g)| (&g.options, g.view(n)))
    }

    /// Where MI `mi` is attached, if it is.
    pub fn mi(&self, mi: &Uuid) -> Option<&MiRecord> {
        self.mis.get(mi)
    }

    /// Every attached MI.
    pub fn mis(&self) -> impl Iterator<Item = (&Uuid, &MiRecord)> + '_ {
        self.mis.iter()
    }

    /// The MI that hosts member `member` of `group`.
    pub fn host_of(&self, group: &GroupName, member: Uuid) -> Option<Uuid> {
        self.groups
            .get(group)?
            .members
            .iter()
            .find(|(m, _)| m.id == member)
            .map(|(_, mi)| *mi)
    }

    /// Whether `group`'s part was terminated here by its survive rule (no
    /// members, joins refused, until a merge).
    pub fn suspended(&self, group: &GroupName) -> bool {
        self.groups.get(group).is_some_and(|g| g.suspended)
    }

    /// The members of `group` before the latest MI failure that removed
    /// some (what a merge rule compares with).
    pub fn base_of(&self, group: &GroupName) -> Option<Vec<AppMember>> {
        self.groups.get(group)?.base.clone()
    }

    /// The MIs that host members of `group`.
    pub fn hosts_of(&self, group: &GroupName) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = self
            .groups
            .get(group)
            .map(|g| g.members.iter().map(|(_, mi)| *mi).collect())
            .unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }

    /// The views of `group` after number `after`, oldest first, up to the
    /// current one; `None` if the group is gone or the history does not
    /// reach back that far.
    pub fn views_since(&self, group: &GroupName, after: u64) -> Option<Vec<AppView>> {
        let g = self.groups.get(group)?;
        if after >= g.number {
            return Some(Vec::new());
        }
        let oldest = g.history.front()?.number;
        if oldest > after + 1 {
            return None;
        }
        Some(
            g.history
                .iter()
                .filter(|v| v.number > after)
                .cloned()
                .collect(),
        )
    }

    /// The registry's encoding, for the state transfer to a newcomer.
    pub fn encode(&self) -> Result<Vec<u8>, AppError> {
        encode_body(self)
            .map_err(|e| AppError::Internal(format!("cannot encode the registry: {e}")))
    }

    /// A registry from [`Registry::encode`]'s bytes (bounded to the
    /// largest message the codec takes).
    pub fn decode(bytes: &[u8]) -> Result<Registry, AppError> {
        decode_message(bytes).map_err(|e| AppError::Internal(format!("bad registry copy: {e}")))
    }

    /// Applies one committed op (a commit of its own: see
    /// [`Registry::apply_payloads`]).
    pub fn apply(&mut self, op: &AppOp) -> Applied {
        let mut out = self.apply_all(vec![Ok(op.clone())]);
        out.pop()
            .unwrap_or_else(|| refused(AppError::Internal("nothing applied".into())))
    }

    /// Applies a committed payload as a commit of its own (an undecodable
    /// one is refused, alike everywhere).
    pub fn apply_payload(&mut self, payload: &[u8]) -> Applied {
        let mut out = self.apply_all(vec![AppOp::decode(payload)]);
        out.pop()
            .unwrap_or_else(|| refused(AppError::Internal("nothing applied".into())))
    }

    /// Applies the payloads of one core-set commit, in order. Each group
    /// they change gets **one** new view for the whole commit (like the
    /// core-set's batched changes): a bootstrap of thousands of joins makes
    /// one view per commit, not one per join. Every op's outcome is as if
    /// applied one by one; a join's answer is the commit's view of its
    /// group. One [`Applied`] per payload, in order.
    pub fn apply_payloads(&mut self, payloads: &[Vec<u8>]) -> Vec<Applied> {
        self.apply_all(payloads.iter().map(|p| AppOp::decode(p)).collect())
    }
}
